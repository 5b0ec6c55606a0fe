"""Stage `report`: the students × strategies table (markdown, and every number as JSON), the headline numbers
as DVC metrics (one small file per student × strategy), averaged over training seeds, and its plots."""

import json
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from caft import report, report_markdown
from caft.cli import stage
from caft.io import atomic_path, write_json
from caft.params import load_params


@stage
def main(
    out_md: Annotated[Path, typer.Option(help="markdown table")] = Path("reports/summary.md"),
    report_json: Annotated[Path, typer.Option(help="every number, as JSON (student.strategy.number)")] = Path(
        "reports/report.json"
    ),
    metrics: Annotated[Path, typer.Option(help="folder of the headline metrics (student/strategy.json)")] = Path(
        "metrics/summary"
    ),
    plots: Annotated[Path, typer.Option(help="folder for plot data")] = Path("plots/report"),
    eval_dir: Annotated[Path, typer.Option()] = Path("data/eval"),
    split_dir: Annotated[Path, typer.Option()] = Path("data/split"),
    train_metrics: Annotated[Path, typer.Option()] = Path("metrics/train"),
    sets_dir: Annotated[Path, typer.Option()] = Path("data/sets"),
    traces: Annotated[Path, typer.Option()] = Path("data/teacher/traces.parquet"),
    test: Annotated[Path, typer.Option(help="prepare's test.parquet (true step counts)")] = Path(
        "data/prepared/test.parquet"
    ),
    entropy_metrics: Annotated[Path, typer.Option(help="the entropy stage's metrics folder")] = Path("metrics/entropy"),
    train_plots: Annotated[Path, typer.Option(help="the train stages' dvclive folders")] = Path("plots/train"),
    epochs_dir: Annotated[Path, typer.Option(help="the train stages' per-epoch answers")] = Path("data/epochs"),
    params: Annotated[Path, typer.Option()] = Path("params.yaml"),
) -> None:
    p = load_params(params)
    dirs = {"eval": eval_dir, "split": split_dir, "train": train_metrics, "sets": sets_dir}
    trace_table = pd.read_parquet(traces)
    difficulty = pd.read_parquet(test, columns=["question_id", "difficulty"]).set_index("question_id")["difficulty"]
    runs, differences = [], {}
    for s in p.students:
        student_runs, differences[s] = report.student_rows(s, dirs, trace_table, difficulty, p)
        runs += student_runs
    runs = report.savings(pd.DataFrame(runs))
    rows = report.over_seeds(runs, differences)
    numbers = report.to_metrics(rows)
    write_json(numbers, report_json)
    entropy = {s: json.loads((entropy_metrics / f"{s}.json").read_text()) for s in p.students}
    with atomic_path(metrics, directory=True) as tmp:
        for name, values in report.headline(numbers, entropy).items():
            write_json(values, tmp / name)
    text = report_markdown.summary(runs, rows, entropy, report.rebanded_trainings(train_metrics, p))
    with atomic_path(out_md) as tmp:
        tmp.write_text(text)
    with atomic_path(plots, directory=True) as tmp:
        cols = [
            "student",
            "strategy",
            "balanced_set_accuracy",
            "accuracy",
            "balanced_set_accuracy_ci_low",
            "balanced_set_accuracy_ci_high",
            "cot_target_tokens",
            "teacher_calls",
        ]
        # (several seeds: no per-run intervals, so the interval columns are empty)
        accuracy = rows.reindex(columns=cols).assign(run=rows["student"] + "/" + rows["strategy"])
        accuracy.to_csv(tmp / "accuracy.csv", index=False)
        report.band_table(rows).to_csv(tmp / "bands.csv", index=False)
        curves = [
            report.loss_curve(train_plots / s / x / str(seed), s, x).assign(seed=seed)
            for s in p.students
            for x in p.strategies
            for seed in p.seeds
        ]
        pd.concat(curves, ignore_index=True).to_csv(tmp / "loss.csv", index=False)
        epochs = [  # pooled over seeds: the same validation questions, once per seed
            report.epoch_curve(
                pd.concat([pd.read_parquet(epochs_dir / s / x / f"{seed}.parquet") for seed in p.seeds]),
                pd.read_parquet(split_dir / s / "assignments.parquet"),
                s,
                x,
            )
            for s in p.students
            for x in p.strategies
        ]
        epochs = pd.concat(epochs, ignore_index=True)
        epochs.to_csv(tmp / "epochs.csv", index=False)
        report.log_epoch_curves(epochs, tmp / "live")
    typer.echo(text)


if __name__ == "__main__":
    typer.run(main)

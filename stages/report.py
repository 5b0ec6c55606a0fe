"""Stage `report`: the students × strategies table (markdown, and every number as JSON), the headline numbers
as DVC metrics (one small file per student × strategy), averaged over training seeds, and its plots."""

import json
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from caft import report, strategies
from caft.cli import stage
from caft.errors import CaftError
from caft.io import atomic_path, write_json
from caft.metrics import score
from caft.params import load_params


def _predictions(eval_dir: Path, student: str, strategy: str, seed: int) -> pd.DataFrame:
    preds_file = eval_dir / student / strategy / str(seed) / "predictions.parquet"
    if not preds_file.exists():
        raise CaftError(f"no predictions for {student}/{strategy}/{seed}: {preds_file} (run `dvc repro`)")
    return pd.read_parquet(preds_file)


def _student_rows(student: str, dirs: dict[str, Path], traces, difficulty, p) -> tuple[list[dict], dict]:
    """One student's runs (strategy x seed: each one's own numbers) and, per strategy, its paired differences
    against the baselines over questions and seeds."""
    preds = {(x, seed): _predictions(dirs["eval"], student, x, seed) for x in p.strategies for seed in p.seeds}
    assignments = pd.read_parquet(dirs["split"] / student / "assignments.parquet")
    runs = [
        _row(student, x, seed, preds[x, seed], assignments, dirs, traces, difficulty, p)
        for x in p.strategies
        for seed in p.seeds
    ]
    return runs, report.paired(preds, assignments, p.eval.seed, p.eval.n_boot)


def _row(
    student: str,
    strategy: str,
    seed: int,
    preds: pd.DataFrame,
    assignments: pd.DataFrame,
    dirs: dict[str, Path],
    traces: pd.DataFrame,
    difficulty: pd.Series,
    p,
) -> dict:
    trained = json.loads((dirs["train"] / student / strategy / f"{seed}.json").read_text())
    sets = pd.read_parquet(dirs["sets"] / student / strategy / f"{seed}.parquet")
    usage = report.teacher_usage(sets[sets["subset"] == "train"], traces)
    tokens = {
        k: trained[k]
        for k in ("n_items", "cot_target_tokens", "target_tokens_one_pass", "target_tokens_epoch_weighted")
    }
    selection = {k: trained.get(k) for k in report.SELECTION}
    return {
        "student": student,
        "strategy": strategy,
        "seed": seed,
        **score(preds, p.eval.seed),
        **report.band_metrics(preds, assignments, p.eval.seed, parsed_only=p.eval.compat_parsed_only),
        **report.step_accuracy(preds, difficulty),
        **usage,
        **tokens,
        **selection,
    }


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
        student_runs, differences[s] = _student_rows(s, dirs, trace_table, difficulty, p)
        runs += student_runs
    runs = report.savings(pd.DataFrame(runs))
    rows = report.over_seeds(runs, differences)
    numbers = report.to_metrics(rows)
    write_json(numbers, report_json)
    entropy = {s: json.loads((entropy_metrics / f"{s}.json").read_text()) for s in p.students}
    with atomic_path(metrics, directory=True) as tmp:
        for name, values in report.headline(numbers, entropy).items():
            write_json(values, tmp / name)
    control = [report.control_line(s, entropy[s]) for s in p.students]
    text = "# caft: students × strategies\n\n" + "\n".join(control) + "\n\n" + report.to_markdown(runs)
    rebanded = [
        {"student": s, "strategy": x, "seed": seed, **json.loads((train_metrics / s / x / f"{seed}.json").read_text())}
        for s in p.students
        for x in p.strategies
        for seed in p.seeds
        if strategies.get(x).rebands
    ]
    extras = (report.seeds_markdown(rows), report.paired_markdown(rows), report.epoch_markdown(runs))
    for extra in (*extras, report.reband_markdown(rebanded)):
        text += "\n" + extra if extra else ""
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

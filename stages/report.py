"""Stage `report`: the students × strategies table (markdown + JSON metrics) and its plots."""

import json
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from caft import report
from caft.cli import stage
from caft.errors import CaftError
from caft.io import atomic_path, write_json
from caft.metrics import score
from caft.params import load_params


def _predictions(eval_dir: Path, student: str, strategy: str) -> pd.DataFrame:
    preds_file = eval_dir / student / strategy / "predictions.parquet"
    if not preds_file.exists():
        raise CaftError(f"no predictions for {student}/{strategy}: {preds_file} (run `dvc repro`)")
    return pd.read_parquet(preds_file)


def _student_rows(student: str, strategies: list[str], dirs: dict[str, Path], traces, difficulty, p) -> list[dict]:
    """The report's rows of one student: each strategy's own numbers, and its paired differences."""
    preds = {x: _predictions(dirs["eval"], student, x) for x in strategies}
    assignments = pd.read_parquet(dirs["split"] / student / "assignments.parquet")
    differences = report.paired(preds, assignments, p.eval.seed, p.eval.n_boot)
    return [
        _row(student, x, preds[x], assignments, dirs, traces, difficulty, p.eval.seed, p.eval.compat_parsed_only)
        | differences[x]
        for x in strategies
    ]


def _row(
    student: str,
    strategy: str,
    preds: pd.DataFrame,
    assignments: pd.DataFrame,
    dirs: dict[str, Path],
    traces: pd.DataFrame,
    difficulty: pd.Series,
    seed: int,
    compat: bool,
) -> dict:
    trained = json.loads((dirs["train"] / student / f"{strategy}.json").read_text())
    sets = pd.read_parquet(dirs["sets"] / student / f"{strategy}.parquet")
    usage = report.teacher_usage(sets[sets["subset"] == "train"], traces)
    tokens = {
        k: trained[k]
        for k in ("n_items", "cot_target_tokens", "target_tokens_one_pass", "target_tokens_epoch_weighted")
    }
    selection = {k: trained.get(k) for k in report.SELECTION}
    return {
        "student": student,
        "strategy": strategy,
        **score(preds, seed),
        **report.band_metrics(preds, assignments, seed, parsed_only=compat),
        **report.step_accuracy(preds, difficulty),
        **usage,
        **tokens,
        **selection,
    }


@stage
def main(
    out_md: Annotated[Path, typer.Option(help="markdown table")] = Path("reports/summary.md"),
    metrics: Annotated[Path, typer.Option(help="metrics JSON (student.strategy.metric)")] = Path("metrics/report.json"),
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
    rows = pd.DataFrame(
        [row for s in p.students for row in _student_rows(s, p.strategies, dirs, trace_table, difficulty, p)]
    )
    rows = report.savings(rows)
    write_json(report.to_metrics(rows), metrics)
    control = [report.control_line(s, json.loads((entropy_metrics / f"{s}.json").read_text())) for s in p.students]
    text = "# caft: students × strategies\n\n" + "\n".join(control) + "\n\n" + report.to_markdown(rows)
    for extra in (report.paired_markdown(rows), report.epoch_markdown(rows)):
        text += "\n" + extra if extra else ""
    with atomic_path(out_md) as tmp:
        tmp.write_text(text)
    with atomic_path(plots, directory=True) as tmp:
        cols = [
            "student",
            "strategy",
            "balanced_accuracy",
            "accuracy",
            "balanced_accuracy_ci_low",
            "balanced_accuracy_ci_high",
            "cot_target_tokens",
            "teacher_calls",
        ]
        rows[cols].assign(run=rows["student"] + "/" + rows["strategy"]).to_csv(tmp / "accuracy.csv", index=False)
        report.band_table(rows).to_csv(tmp / "bands.csv", index=False)
        curves = [report.loss_curve(train_plots / s / x, s, x) for s in p.students for x in p.strategies]
        pd.concat(curves, ignore_index=True).to_csv(tmp / "loss.csv", index=False)
        epochs = [
            report.epoch_curve(
                pd.read_parquet(epochs_dir / s / f"{x}.parquet"),
                pd.read_parquet(split_dir / s / "assignments.parquet"),
                s,
                x,
            )
            for s in p.students
            for x in p.strategies
        ]
        pd.concat(epochs, ignore_index=True).to_csv(tmp / "epochs.csv", index=False)
    typer.echo(text)


if __name__ == "__main__":
    typer.run(main)

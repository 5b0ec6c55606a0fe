"""Stage `compare_estimators`: ROC AUC of every complexity estimator for the student's wrong answer."""

from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from caft.cli import stage
from caft.errors import CaftError
from caft.estimators import load_all
from caft.estimators.compare import comparable, compare
from caft.io import atomic_path, write_json
from caft.params import load_params
from caft.roc import curve_wrong


@stage
def main(
    student: Annotated[str, typer.Option(help="student key under params.yaml `models`")],
    scores: Annotated[Path, typer.Option(help="the entropy stage's scores.parquet (the wrong-answer labels)")],
    estimators: Annotated[Path, typer.Option(help="folder of estimator outputs (<method>/scores.parquet)")],
    out_md: Annotated[Path, typer.Option(help="markdown table")],
    metrics: Annotated[Path, typer.Option(help="metrics JSON")],
    plot: Annotated[Path, typer.Option(help="ROC curves, one per estimator (CSV)")],
    params: Annotated[Path, typer.Option()] = Path("params.yaml"),
) -> None:
    p = load_params(params)
    everything = load_all(estimators)
    if everything is None:
        raise CaftError(f"no estimator outputs under {estimators}")
    long, n_scored, n_rows = comparable(everything)
    entropy = pd.read_parquet(scores)
    outcome = entropy.loc[entropy["validity"] == "option", ["question_id", "correct", "category"]]
    table = compare(long, outcome, n_boot=p.estimators.n_boot, seed=p.seed)
    common = (
        outcome.set_index("question_id")
        .join(long.pivot_table(index="question_id", columns="estimator", values="score", aggfunc="first"), how="inner")
        .dropna()
    )
    curves = [curve_wrong(common["correct"], common[e]).assign(estimator=e) for e in sorted(long["estimator"].unique())]
    with atomic_path(plot) as tmp:
        pd.concat(curves, ignore_index=True)[["estimator", "fpr", "tpr"]].to_csv(tmp, index=False)
    summary: dict = {name: {"n_scored": int(n)} for name, n in n_scored.items()}
    for row in table.to_dict(orient="records"):
        summary.setdefault(row["estimator"], {})[row["category"]] = {
            k: row[k] for k in ("n", "roc_auc", "ci_low", "ci_high")
        }
    write_json(summary, metrics)
    overall = table[table["category"] == "all"].sort_values("roc_auc", ascending=False)
    lines = ["| estimator | ROC AUC → wrong answer [95 % bootstrap CI] | n |", "|---|---|---|"]
    lines += [
        f"| {r.estimator} | {r.roc_auc:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}] | {r.n} |" for r in overall.itertuples()
    ]
    skipped = [(name, n) for name, n in n_scored.items() if name not in set(overall["estimator"])]
    lines += [f"| {name} | not compared: scored {n} of the {n_rows} rows (outputs malformed or failed) | {n} |"
              for name, n in skipped]  # fmt: skip
    with atomic_path(out_md) as tmp:
        tmp.write_text(f"# Complexity estimators for {student}\n\n" + "\n".join(lines) + "\n")
    typer.echo("\n".join(lines))


if __name__ == "__main__":
    typer.run(main)

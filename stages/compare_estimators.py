"""Stage `compare_estimators`: ROC AUC of every complexity estimator for the student's wrong answer."""

from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from caft.cli import stage
from caft.errors import CaftError
from caft.estimators import compare
from caft.io import atomic_path, write_json
from caft.params import load_params
from caft.scores import load_all, valid_rows


@stage
def main(
    student: Annotated[str, typer.Option(help="student key under params.yaml `models`")],
    scores: Annotated[Path, typer.Option(help="the entropy stage's scores.parquet (the wrong-answer labels)")],
    estimators: Annotated[Path, typer.Option(help="folder of estimator files (<estimator>.parquet)")],
    out_md: Annotated[Path, typer.Option(help="markdown table")],
    metrics: Annotated[Path, typer.Option(help="metrics JSON")],
    plot: Annotated[Path, typer.Option(help="ROC curves, one per estimator (CSV)")],
    params: Annotated[Path, typer.Option()] = Path("params.yaml"),
) -> None:
    p = load_params(params)
    everything = load_all(estimators)
    if everything is None:
        raise CaftError(f"no estimator outputs under {estimators}")
    entropy = pd.read_parquet(scores)
    outcome = valid_rows(entropy)[["question_id", "correct", "category"]]
    curves, summary, markdown = compare.report(
        everything, outcome, f"Complexity estimators for {student}", p.estimators.n_boot, p.seed
    )
    with atomic_path(plot) as tmp:
        curves.to_csv(tmp, index=False)
    write_json(summary, metrics)
    with atomic_path(out_md) as tmp:
        tmp.write_text(markdown)
    typer.echo(markdown)


if __name__ == "__main__":
    typer.run(main)

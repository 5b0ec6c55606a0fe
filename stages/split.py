"""Stage `split`: easy / medium / hard bands from one student's entropy table."""

from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from caft.cli import stage
from caft.io import write_json, write_table
from caft.params import load_params
from caft.scores import read
from caft.split import make_split, select_score


@stage
def main(
    model: Annotated[str, typer.Option(help="student key under params.yaml `models`")],
    scores: Annotated[Path, typer.Option(help="the entropy stage's scores.parquet")],
    estimator: Annotated[
        Path, typer.Option(help="the split.estimator's file (data/estimators/<student>/<name>.parquet)")
    ],
    out: Annotated[Path, typer.Option(help="output folder (assignments.parquet)")],
    metrics: Annotated[Path, typer.Option(help="metrics JSON")],
    params: Annotated[Path, typer.Option()] = Path("params.yaml"),
) -> None:
    p = load_params(params)
    rows, kind = read(estimator)
    table = select_score(pd.read_parquet(scores), p.split.estimator, rows)
    assignments, summary = make_split(table, p.split, p.seed, kind)
    write_table(assignments, out / "assignments.parquet")
    write_json(summary, metrics)
    typer.echo(
        f"split[{model}]: {p.split.estimator} cuts {summary['cut_easy']:.4f} / {summary['cut_hard']:.4f} "
        f"{summary['cut_units']}; "
        f"train easy/medium/hard = {summary['train_easy_n']}/{summary['train_medium_n']}/{summary['train_hard_n']}"
    )


if __name__ == "__main__":
    typer.run(main)

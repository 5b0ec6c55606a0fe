"""Stages `estimate_<family>`: one complexity-estimator family on one student's questions (one file per
estimator in the common shape of `caft.scores`, plus the family's per-question details).

The family's module comes as `--module` (its entry in `caft.estimators.registry`), so this script imports no
family but the one it runs and each family's stage depends on its own code only."""

import importlib
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from caft.cli import stage
from caft.errors import CaftError
from caft.io import write_table
from caft.params import load_params
from caft.prepare import load_prepared
from caft.scores import sample_questions, write_each


@stage
def main(
    module: Annotated[str, typer.Option(help="the family's module (caft.estimators.cot, .judge, .imported)")],
    student: Annotated[str, typer.Option(help="student key under params.yaml `models`")],
    scores: Annotated[Path, typer.Option(help="the entropy stage's scores.parquet (which rows are compared)")],
    out_dir: Annotated[Path, typer.Option(help="folder for the <estimator>.parquet files")],
    details: Annotated[Path, typer.Option(help="the family's per-question details (parquet)")],
    variant: Annotated[str | None, typer.Option(help="the family's variant (the judge's scale)")] = None,
    workdir: Annotated[Path | None, typer.Option(help="the family's own state (the judge's response cache)")] = None,
    data: Annotated[Path, typer.Option(help="prepare's output folder")] = Path("data/prepared"),
    params: Annotated[Path, typer.Option()] = Path("params.yaml"),
) -> None:
    p = load_params(params)
    if not module.startswith("caft.estimators."):
        raise CaftError(f"--module {module}: an estimator family lives under caft.estimators")
    try:
        family = importlib.import_module(module)
    except ModuleNotFoundError:
        raise CaftError(f"--module {module}: no such estimator family module") from None
    chosen = sample_questions(pd.read_parquet(scores), load_prepared(data), p.estimators.max_questions, p.seed)
    table, per_question = family.run(chosen, p, student, variant, workdir)
    write_table(per_question, details)
    write_each(table, out_dir)
    for name, part in table.groupby("estimator"):
        scored = part.dropna(subset=["score"])["question_id"].nunique()
        typer.echo(f"estimate[{student}/{name}]: {scored} of {len(chosen)} questions scored")


if __name__ == "__main__":
    typer.run(main)

"""Stage `estimate`: one complexity estimator on one student's questions (common long shape)."""

from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from caft.cli import stage
from caft.errors import CaftError
from caft.estimators import run
from caft.io import write_table
from caft.params import load_params
from caft.prepare import load_prepared


@stage
def main(
    student: Annotated[str, typer.Option(help="student key under params.yaml `models`")],
    method: Annotated[str, typer.Option(help="cot_entropy | masj_education_level | masj_reasoning_steps | import")],
    scores: Annotated[Path, typer.Option(help="the entropy stage's scores.parquet (which rows are compared)")],
    out: Annotated[Path, typer.Option(help="output folder (scores.parquet, details.parquet; judge cache)")],
    data: Annotated[Path, typer.Option(help="prepare's output folder")] = Path("data/prepared"),
    params: Annotated[Path, typer.Option()] = Path("params.yaml"),
) -> None:
    p = load_params(params)
    questions = load_prepared(data)
    chosen = run.sample_questions(pd.read_parquet(scores), questions, p.estimators.max_questions, p.seed)
    if method == "cot_entropy":
        table, details = run.cot_entropy(chosen, p.model(student), p.estimators, p.teacher.marker)
    elif method in ("masj_education_level", "masj_reasoning_steps"):
        table, details = run.masj(chosen, method.removeprefix("masj_"), p.estimators.judge, out / "judge_cache")
    elif method == "import":
        table, details = run.imported(chosen, p.estimators.import_, student)
    else:
        raise CaftError(f"unknown estimator method {method!r} (known: {', '.join(run.METHODS)})")
    write_table(details, out / "details.parquet")
    write_table(table, out / "scores.parquet")
    scored = table.dropna(subset=["score"])
    typer.echo(f"estimate[{student}/{method}]: {scored['question_id'].nunique()} of {len(chosen)} questions scored")


if __name__ == "__main__":
    typer.run(main)

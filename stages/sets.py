"""Stage `sets`: one student's training set per strategy (one file each, so DVC re-runs only what changed)."""

import json
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from caft import sets
from caft.cli import stage
from caft.io import atomic_path, write_json
from caft.params import load_params


@stage
def main(
    student: Annotated[str, typer.Option(help="student key under params.yaml `models`")],
    split: Annotated[Path, typer.Option(help="the split stage's assignments.parquet")],
    out: Annotated[
        Path,
        typer.Option(help="output folder: <strategy>.parquet and <strategy>.json per strategy, validation.parquet"),
    ],
    metrics: Annotated[Path, typer.Option(help="metrics JSON (rows per phase, CoT items without a trace)")],
    data: Annotated[Path, typer.Option(help="prepare's output folder")] = Path("data/prepared"),
    traces: Annotated[Path, typer.Option(help="the teacher stage's traces")] = Path("data/teacher/traces.parquet"),
    params: Annotated[Path, typer.Option()] = Path("params.yaml"),
) -> None:
    p = load_params(params)
    questions = pd.read_parquet(data / "train.parquet")
    assignments, trace_table = pd.read_parquet(split), pd.read_parquet(traces)
    counts: dict = {}
    with atomic_path(out, directory=True) as tmp:
        for name in p.strategies:
            table, c = sets.build(name, assignments, questions, trace_table, p)
            table.to_parquet(tmp / f"{name}.parquet", index=False)
            (tmp / f"{name}.json").write_text(json.dumps(sets.reading(name, p), indent=2, sort_keys=True) + "\n")
            counts.update(c)
        sets.validation_questions(assignments, questions).to_parquet(tmp / "validation.parquet", index=False)
    write_json(counts, metrics)
    typer.echo(f"sets[{student}]: {json.dumps(counts)}")


if __name__ == "__main__":
    typer.run(main)

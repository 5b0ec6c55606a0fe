"""Stage `sets`: one student's training set per strategy and training seed (one file each, so DVC re-runs only
what changed: only the random control's set differs between seeds)."""

import json
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from caft import sets
from caft.cli import stage
from caft.io import atomic_path, write_json
from caft.params import load_params
from caft.split import random_control


@stage
def main(
    student: Annotated[str, typer.Option(help="student key under params.yaml `models`")],
    split: Annotated[Path, typer.Option(help="the split stage's assignments.parquet")],
    out: Annotated[
        Path,
        typer.Option(help="output folder: <strategy>/<seed>.parquet, <strategy>.json (its card), validation.parquet"),
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
        for seed in p.seeds:
            drawn = random_control(assignments, seed, p.split.random_control)
            for name in p.strategies:
                table, c = sets.build(name, drawn, questions, trace_table, p)
                (tmp / name).mkdir(exist_ok=True)
                table.to_parquet(tmp / name / f"{seed}.parquet", index=False)
                counts.update({k if len(p.seeds) == 1 else f"{k}@{seed}": v for k, v in c.items()})
        for name in p.strategies:
            (tmp / f"{name}.json").write_text(json.dumps(sets.card(name, p), indent=2, sort_keys=True) + "\n")
        sets.validation_questions(assignments, questions).to_parquet(tmp / "validation.parquet", index=False)
    write_json(counts, metrics)
    typer.echo(f"sets[{student}]: {json.dumps(counts)}")


if __name__ == "__main__":
    typer.run(main)

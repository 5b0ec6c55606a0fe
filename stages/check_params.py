"""Stage `check_params`: the whole params.yaml, validated before any other stage runs.

DVC re-runs a stage only when one of *its* params changed, and removes a stage's outputs before running it, so a
misspelt key (`split.treshold`) would otherwise pass unnoticed and an out-of-range value would fail only inside
its stage, after DVC had already removed that stage's outputs. This stage depends on the whole file and
`prepare` depends on its output, so every `dvc repro` / `dvc exp run` checks the file first. Its output is the
same bytes whatever the params, so a valid change re-runs nothing downstream on its account."""

from pathlib import Path
from typing import Annotated

import typer

from caft.cli import stage
from caft.io import atomic_path
from caft.params import load_params

CHECKED = "params.yaml passed caft.params validation\n"


@stage
def main(
    out: Annotated[Path, typer.Option(help="marker file that `prepare` depends on")] = Path("data/params.checked"),
    params: Annotated[Path, typer.Option()] = Path("params.yaml"),
) -> None:
    load_params(params)
    with atomic_path(out) as tmp:
        tmp.write_text(CHECKED)


if __name__ == "__main__":
    typer.run(main)

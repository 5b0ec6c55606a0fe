"""Stage `check_params`: the whole params.yaml (its types and the registries' names in it), and the files it names
(the question file, the accelerate config), validated before any other stage.

DVC re-runs a stage only when one of *its* params changed, and removes a stage's outputs before running it, so a
misspelt key (`split.treshold`) would otherwise pass unnoticed and an out-of-range value would fail only inside
its stage, after DVC had already removed that stage's outputs. This stage depends on the whole file (and on
`data.file.path` and `train.accelerate_config`) and `prepare` depends on its output, so every `dvc repro` /
`dvc exp run` checks them first. Its output is the same bytes whatever the params, so a valid change re-runs
nothing downstream on its account.

A rejected experiment (`dvc exp run -S ...`) gets its baseline params.yaml back (the rejected file is kept under
.caft/rejected/), and, as after any failed stage, the outputs `dvc exp run` removed come back from the DVC cache
(`caft.rollback`): the workspace is as it was."""

import os
from pathlib import Path
from typing import Annotated

import typer

from caft.cli import stage
from caft.errors import CaftError
from caft.io import atomic_path
from caft.launch import check_config
from caft.names import check_names
from caft.params import Params, load_params
from caft.prepare import load_source, source
from caft.rollback import revert_params, under_dvc

CHECKED = "params.yaml passed caft.params validation\n"
REJECTED = Path(".caft") / "rejected"


def check_files(p: Params) -> None:
    """A user's question file is read and validated here, before `prepare` (whose outputs DVC removes first), and
    the accelerate config before the first training (a sharded one would hang at its first epoch end)."""
    if source(p.data.source).user_file:
        load_source(p.data, p.seed)
    check_config(Path(p.train.accelerate_config))


@stage
def main(
    out: Annotated[Path, typer.Option(help="marker file that `prepare` depends on")] = Path("data/params.checked"),
    params: Annotated[Path, typer.Option()] = Path("params.yaml"),
) -> None:
    try:
        check_files(check_names(load_params(params)))
    except CaftError as exc:
        baseline = os.environ.get("DVC_EXP_BASELINE_REV")
        kept = revert_params(params, baseline, REJECTED) if under_dvc() and baseline else None
        if kept is not None:
            raise CaftError(
                f"{exc}; {params} is back to the experiment's baseline ({baseline[:7]}), the rejected one is kept "
                f"as {kept}"
            ) from None
        raise
    with atomic_path(out) as tmp:
        tmp.write_text(CHECKED)


if __name__ == "__main__":
    typer.run(main)

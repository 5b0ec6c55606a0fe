"""The `caft` command: the entry points a person runs outside `dvc repro` (stages have their own scripts).

    caft profile PROFILE.yaml [MORE.yaml ...] [dvc exp run args]   apply profiles as one DVC experiment
    caft plan RECIPE.yaml [MORE.yaml ...] [--n-questions N] [--json OUT]   what a recipe will run and cost
    caft compare [--out FILE] [dvc exp show args]   one table of the experiments
    caft reset   back to the committed params, their outputs checked out from the DVC cache

Both validate the merged params first, so a bad profile fails with one line before DVC touches anything.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Annotated

import typer

from caft.cli import stage
from caft.errors import CaftError

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__.split("\n\n")[0])


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@stage
def profile(
    ctx: typer.Context,
    files: Annotated[list[str], typer.Argument(help="profile files (.yaml), applied in order on params.yaml")],
) -> None:
    """Validate the profiles (later files win), then apply them through `dvc exp run -S key=value ...`; any
    other argument (a target such as `split@qwen2_5_3b`, `--queue`, `-S ...`) goes to `dvc exp run`."""
    from caft.profile import hydra_args, resolve

    yaml_files = [f for f in files if f.endswith((".yaml", ".yml"))]
    if not yaml_files:
        raise CaftError("caft profile needs at least one profile file (.yaml)")
    overrides, _ = resolve(yaml_files)
    targets = [f for f in files if f not in yaml_files]
    cmd = ["dvc", "exp", "run", *hydra_args(overrides), *targets, *ctx.args]
    typer.echo("+ " + " ".join(cmd))
    raise typer.Exit(subprocess.call(cmd))


@app.command()
@stage
def plan(
    recipes: Annotated[list[Path], typer.Argument(help="recipe / profile files, applied in order on params.yaml")],
    n_questions: Annotated[int | None, typer.Option(help="stand-in data size (default: the source's)")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="also write the plan as JSON")] = None,
) -> None:
    """Print what a recipe will run: stages, teacher calls and tokens (and cost, where priced), training
    tokens and GPU-hours, from stand-in data of the recipe's size; nothing is downloaded or run."""
    from caft.plan import plan as make_plan
    from caft.plan import questions_in_source, render
    from caft.profile import resolve

    _, p = resolve(recipes)
    result = make_plan(p, n_questions or questions_in_source(p))
    typer.echo(render(result))
    if json_out:
        json_out.write_text(json.dumps(result, indent=2) + "\n")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@stage
def compare(
    ctx: typer.Context,
    out: Annotated[Path | None, typer.Option(help="also write the table here (markdown)")] = None,
) -> None:
    """One table of the experiments `dvc exp show` lists (extra arguments such as `-A` or `-n 3` go to it):
    per experiment the params it changes, and per student x strategy balanced accuracy [95 % CI], hard-band
    accuracy, teacher calls, CoT target tokens, saving vs distill and the entropy's ROC AUC."""
    from caft import experiments

    table = experiments.markdown(experiments.rows(experiments.show(ctx.args)))
    typer.echo(table, nl=False)
    if out:
        out.write_text(table)


@app.command()
@stage
def reset() -> None:
    """Return the workspace to the committed params: `params.yaml` and `dvc.lock` from the last commit, and
    every output checked out from the DVC cache to match them, so a profile's files and results never mix with
    the default's. Outputs the committed lock does not know (another profile's students) are left on disk but
    belong to no stage, so `dvc metrics show` and `dvc exp show` do not list them."""
    in_git = ["params.yaml", "dvc.lock", *_uncached_outputs(Path("dvc.yaml"))]
    for cmd in (["git", "checkout", "HEAD", "--", *in_git], ["dvc", "checkout", "--quiet"]):
        typer.echo("+ " + " ".join(cmd))
        if subprocess.call(cmd) != 0:
            raise CaftError(f"{' '.join(cmd)} failed (is this a caft project with its outputs in the DVC cache?)")


def _uncached_outputs(dvc_yaml: Path) -> list[str]:
    """The outputs kept in git (`cache: false`: the report's), which `dvc checkout` does not restore."""
    import yaml

    paths = []
    for body in yaml.safe_load(dvc_yaml.read_text())["stages"].values():
        stage_def = body.get("do", body)
        for kind in ("outs", "metrics", "plots"):
            for out in stage_def.get(kind, []):
                if isinstance(out, dict):
                    (path, flags), *_ = out.items()
                    if (flags or {}).get("cache") is False and "${" not in path:
                        paths.append(path)
    return paths

"""The `caft` command: the entry points a person runs outside `dvc repro` (stages have their own scripts).

    caft profile PROFILE.yaml [MORE.yaml ...] [dvc exp run args]   apply profiles as one DVC experiment
    caft plan RECIPE.yaml [MORE.yaml ...] [--n-questions N] [--json OUT]   what a recipe will run and cost
    caft compare [--out FILE] [dvc exp show args]   one table of the experiments
    caft sweep [--thresholds 0.5,0.6,0.9] [--jobs 2]   a queued threshold sweep, then its frontier
    caft frontier [--out-dir DIR] [dvc exp show args]   accuracy against teacher tokens over the experiments
    caft card MODEL --out DIR [--license ID]   a trained model with a card that carries its eval results, ready to share
    caft reset [--force]   back to the committed params, their outputs checked out from the DVC cache
    caft push [-r REMOTE]   dvc push --run-cache, the outputs of every run record, the teacher's responses
    caft pull [-r REMOTE]   dvc pull --run-cache (run records included), the teacher's responses

Both validate the merged params first, so a bad profile fails with one line before DVC touches anything.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Annotated

import typer
import yaml

from caft.cli import EXIT_INTERRUPTED, file_in_the_way, foreground, stage
from caft.errors import CaftError

# markdown: a docstring's line breaks are soft, so `caft --help` rewraps each command's summary to the terminal
app = typer.Typer(
    add_completion=False, no_args_is_help=True, rich_markup_mode="markdown", help=__doc__.split("\n\n")[0]
)


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
    raw = yaml.safe_load(Path("params.yaml").read_text())
    cmd = ["dvc", "exp", "run", *hydra_args(overrides, raw), *targets, *ctx.args]
    typer.echo("+ " + " ".join(cmd))
    raise typer.Exit(foreground(cmd))


@app.command()
@stage
def plan(
    recipes: Annotated[list[Path], typer.Argument(help="recipe / profile files, applied in order on params.yaml")],
    # the stand-in table takes about 400 bytes a question (1 million: 0.4 GB, 5 s); ten times MedMCQA's 183k is
    # ample, and a size beyond memory would end in a numpy traceback
    n_questions: Annotated[
        int | None, typer.Option(min=1, max=10_000_000, help="stand-in data size (default: the source's)")
    ] = None,
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
        _write(json.dumps(result, indent=2) + "\n", json_out)


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
        _write(table, out)


@app.command()
@stage
def card(
    model_dir: Annotated[Path, typer.Argument(help="a trained model's folder, e.g. models/smollm2/caft/42")],
    out: Annotated[Path, typer.Option(help="a new folder: the model's files and its card (README.md)")],
    license: Annotated[str | None, typer.Option(help="the licence id for the card's metadata, e.g. apache-2.0")] = None,
) -> None:
    """A trained model ready to share (`hf upload NAME OUT`): its folder copied to OUT with a model
    card that carries its eval results (model-index), the dataset, the licence and how to load it. The eval
    stage must be up to date with the model; the model folder itself is left as DVC wrote it."""
    from caft.card import export

    typer.echo(f"caft card: wrote {export(Path.cwd(), model_dir, out, license)}")


@app.command()
@stage
def reset(
    force: Annotated[
        bool, typer.Option("--force", help="go on over files DVC did not produce, keeping a copy of each")
    ] = False,
) -> None:
    """Return the workspace to the committed params: `params.yaml` and `dvc.lock` from the last commit, and
    every output checked out from the DVC cache to match them, so a profile's files and results never mix with
    the default's. What other runs left in the folders the report reads (another seed's, student's or
    strategy's files, and DVC's `.gitignore` entries for them) is removed: DVC produced it and keeps it in its
    cache. It says what it will change first, and refuses (changing nothing) to discard anything DVC did not
    produce (an edit no commit or experiment holds, a file of yours among the outputs) unless --force, which
    keeps a copy of each in a folder it names."""
    from caft import reset as resetting

    resetting.run(Path.cwd(), force, typer.echo)


def _remote_args(remote: str | None) -> list[str]:
    """`-r REMOTE` for dvc, after checking there is a remote to talk to, by that name if one is given (one line
    if not: a misspelt name would otherwise fail in DVC's push, or in the responses' pull after DVC's own)."""
    if remote is None:
        if subprocess.run(["dvc", "remote", "default"], capture_output=True).returncode != 0:
            raise CaftError("no DVC remote: `dvc remote add -d NAME URL`, then commit .dvc/config (or pass -r NAME)")
        return []
    # `dvc config --list` is one `key=value` a line (`dvc remote list` is a table that wraps a long URL)
    listed = subprocess.run(["dvc", "config", "--list"], capture_output=True, text=True).stdout
    keys = [line.split("=", 1)[0].removeprefix("remote.") for line in listed.splitlines() if line.startswith("remote.")]
    names = sorted({key.rsplit(".", 1)[0] for key in keys})  # remote.<name>.<option>: a name may hold a dot
    if remote not in names:
        raise CaftError(f"no DVC remote named {remote!r} (this project's: {', '.join(names) or 'none'})")
    return ["-r", remote]


def _echo_call(cmd: list[str], hint: str = "") -> None:
    """Run a git / dvc command as the user would see it typed; its failure is one line."""
    typer.echo("+ " + " ".join(cmd))
    if foreground(cmd) != 0:
        raise CaftError(f"{' '.join(cmd)} failed{hint}")


def _check_thresholds(values: list[str]) -> None:
    """Every point's params valid before anything is queued: a bad value would otherwise fail in its worker
    while the good points run for an hour, and a repeated one would queue the same experiment name twice."""
    from caft.profile import validate

    parsed = [_threshold_value(v) for v in values]  # 0.5 and 0.50 are one threshold, under two point names
    repeated = sorted({v for v, x in zip(values, parsed, strict=True) if parsed.count(x) > 1})
    if repeated:
        raise CaftError(f"--thresholds repeats {', '.join(repeated)}")
    raw = yaml.safe_load(Path("params.yaml").read_text())
    for value, threshold in zip(values, parsed, strict=True):
        try:
            validate(raw, {"split.threshold": threshold})
        except CaftError as exc:
            raise CaftError(f"--thresholds {value}: {exc}") from None


def _threshold_value(value: str) -> object:
    """One --thresholds value as `dvc exp run -S key=value` reads it (YAML); text that is no YAML is one line."""
    try:
        return yaml.safe_load(value)
    except yaml.YAMLError:
        raise CaftError(f"--thresholds {value}: not a value (a number such as 0.6)") from None


def _write(text: str, dest: Path) -> None:
    """A command's output file (a path the user gave: `--json`, `--out`, `--out-dir`), written atomically, its
    folder made if missing; a path that cannot be written (no permission, a file where a folder should be) is
    one line naming it instead of a traceback after the work is done."""
    from caft.io import atomic_path

    try:
        with atomic_path(dest) as tmp:
            tmp.write_text(text)
    except OSError as exc:
        blocked = file_in_the_way(dest)
        why = f"{blocked} is a file, not a folder" if blocked else exc.strerror or str(exc)
        raise CaftError(f"cannot write {dest}: {why}") from None


RemoteOption = Annotated[str | None, typer.Option("-r", "--remote", help="DVC remote (default: the project's)")]


@app.command()
@stage
def push(remote: RemoteOption = None) -> None:
    """`dvc push --run-cache`, then the outputs every run record names, which DVC's push leaves out unless a
    commit references them: a collaborator's `dvc exp run --pull` (or `dvc repro --pull`) then restores any
    parameter combination run here, committed or not, instead of recomputing it. Then every teacher and judge
    response this repository's runs received or used, so a collaborator never pays for them again."""
    from caft.remote import push_responses, push_run_outputs

    _echo_call(["dvc", "push", "--run-cache", *_remote_args(remote)])
    records, sent, failed = push_run_outputs(remote)
    typer.echo(f"caft push: {records} run records; {sent} of their output files uploaded now (the rest were there)")
    if failed:
        raise CaftError(f"{failed} output files of run records are not in the local cache (removed by dvc gc?)")
    held, uploaded = push_responses(remote)
    typer.echo(f"caft push: {held} teacher / judge responses; {uploaded} uploaded now (the rest were there)")


@app.command()
@stage
def pull(remote: RemoteOption = None) -> None:
    """`dvc pull --run-cache`: the committed outputs and every run record; `dvc exp run --pull` then restores the
    runs others pushed with `caft push` (their outputs are fetched as each stage is restored). Then every
    teacher and judge response on the remote into this machine's response store, so no run here pays for one."""
    from caft.remote import pull_responses

    cmd = ["dvc", "pull", "--run-cache", *_remote_args(remote)]
    typer.echo("+ " + " ".join(cmd))
    pulled = foreground(cmd) == 0  # it fails on outputs the commit never ran: the responses come anyway
    there, fetched = pull_responses(remote)
    typer.echo(f"caft pull: {there} teacher / judge responses on the remote; {fetched} new on this machine")
    if not pulled:
        raise CaftError(f"{' '.join(cmd)} failed (its errors are above); the teacher / judge responses were pulled")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@stage
def frontier(
    ctx: typer.Context,
    out_dir: Annotated[Path, typer.Option(help="frontier.md, frontier.json, frontier.vl.json (+ .svg)")] = Path(
        "reports/frontier"
    ),
) -> None:
    """The threshold frontier of the experiments `dvc exp show` lists (extra arguments go to it): balanced
    accuracy against teacher CoT tokens, caft at each `split.threshold`, sft and distill as the end points."""
    typer.echo(_write_frontier(ctx.args, out_dir), nl=False)


def _write_frontier(show_args: list[str], out_dir: Path) -> str:
    """frontier.md (the table it returns), frontier.json (the points), frontier.vl.json (the chart's Vega-Lite
    spec; frontier_cost.vl.json against the teacher's cost, when the teacher is priced) and, where the docs
    extra is installed, their .svg."""
    from caft import experiments

    points = experiments.frontier(experiments.rows(experiments.show(show_args)))
    charts = {"frontier": experiments.frontier_chart(points)}
    if experiments.priced(points):
        charts["frontier_cost"] = experiments.frontier_chart(points, "teacher_cost_usd")
    table = experiments.frontier_markdown(points)
    _write(table, out_dir / "frontier.md")
    _write(json.dumps(points, indent=2) + "\n", out_dir / "frontier.json")
    for name, chart in charts.items():
        _write(json.dumps(chart, indent=2) + "\n", out_dir / f"{name}.vl.json")
    try:
        import vl_convert  # the docs extra
    except ImportError:
        return table
    for name, chart in charts.items():
        _write(vl_convert.vegalite_to_svg(chart), out_dir / f"{name}.svg")
    return table


@app.command()
@stage
def sweep(
    thresholds: Annotated[str, typer.Option(help="comma-separated split.threshold values")] = "0.5,0.6,0.9",
    jobs: Annotated[int, typer.Option(min=1, help="queue workers (`dvc queue start -j`)")] = 2,
    out_dir: Annotated[Path, typer.Option(help="where `caft frontier` writes")] = Path("reports/frontier"),
) -> None:
    """Queue one experiment per threshold (`dvc exp run --queue -S split.threshold=t`), run them on `jobs`
    workers, wait, then write the frontier (`caft frontier`). Queued points run in copies of the last commit:
    commit the base run first (anything not committed is not in the sweep)."""
    from caft import exp_queue

    values = [v.strip() for v in thresholds.split(",") if v.strip()]
    if not values:
        raise CaftError("caft sweep needs --thresholds, e.g. 0.5,0.6,0.9")
    dirty = subprocess.run(["git", "status", "--porcelain", "params.yaml", "dvc.lock"], capture_output=True, text=True)
    if dirty.stdout.strip():
        raise CaftError(
            "params.yaml / dvc.lock differ from the last commit: queued points run copies of the last "
            "commit, so commit the base run first (`git add -A && git commit`)"
        )
    _check_thresholds(values)
    points = {f"sweep-t{v.replace('.', '')}": v for v in values}
    done = exp_queue.experiments_of_head() & set(points)
    for name in sorted(done):
        typer.echo(
            f"sweep: {name} is already an experiment of this commit: kept (`dvc exp remove {name}` to run it again)"
        )
    pending = [name for name in points if name not in done]
    busy = {name: state for name, state in exp_queue.listed(pending).items() if state in exp_queue.BUSY}
    for name, state in busy.items():
        typer.echo(f"sweep: {name} is already in the queue ({state.lower()}): waiting for it, not queued again")
    if pending:
        _run_points({name: points[name] for name in pending if name not in busy}, pending, jobs)
    typer.echo(_write_frontier([], out_dir), nl=False)


def _run_points(queue: dict[str, str], pending: list[str], jobs: int) -> None:
    """Queue each (name, threshold) of `queue`, run the queue on `jobs` workers and wait for every `pending`
    point; a failed point is one line naming it. Ctrl-C stops the waiting only: the workers run on, and
    `caft sweep` with the same thresholds waits for them again."""
    from caft import exp_queue

    for name, value in queue.items():
        _echo_call(["dvc", "exp", "run", "--queue", "-S", f"split.threshold={value}", "-n", name])
    typer.echo(f"+ dvc queue start -j {jobs}")
    # the workers are daemons: they must not hold this command's output open (a caller reading it would wait
    # for them); they are stopped below once the queue has nothing left to do
    started = subprocess.run(
        ["dvc", "queue", "start", "-j", str(jobs)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    if started.returncode != 0:
        raise CaftError("dvc queue start failed")
    try:
        final = exp_queue.wait(pending, typer.echo)
    except KeyboardInterrupt:
        typer.echo(
            "sweep: stopped waiting; the points run on in the queue's workers (`dvc queue status`; "
            "`dvc queue kill NAME` stops one). The same `caft sweep` waits for them again.",
            err=True,
        )
        raise typer.Exit(EXIT_INTERRUPTED) from None
    if not exp_queue.any_busy():
        subprocess.run(["dvc", "queue", "stop"], capture_output=True)
    failed = [name for name, state in final.items() if state == "Failed"]
    if failed:
        raise CaftError(f"sweep points failed: {', '.join(failed)} (`dvc queue logs NAME` shows why)")

"""Stage `teacher`: CoT traces for exactly the questions the configured strategies need, through the cache."""

import json
from pathlib import Path
from typing import Annotated

import typer

from caft.cli import stage
from caft.io import write_json, write_table
from caft.params import load_params
from caft.prepare import load_prepared
from caft.teacher import run
from caft.teacher.cache import TraceCache


@stage
def main(
    out: Annotated[Path, typer.Option(help="trace table (parquet)")] = Path("data/teacher/traces.parquet"),
    cache: Annotated[Path, typer.Option(help="the workspace's response store (no DVC output: none resets it)")] = Path(
        "data/teacher/cache"
    ),
    metrics: Annotated[Path, typer.Option(help="metrics JSON")] = Path("metrics/teacher.json"),
    run_log: Annotated[Path, typer.Option(help="what this run requested and paid (JSON)")] = Path(
        "data/teacher/run.json"
    ),
    data: Annotated[Path, typer.Option(help="prepare's output folder")] = Path("data/prepared"),
    splits: Annotated[Path, typer.Option(help="folder of the split stages' outputs")] = Path("data/split"),
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print what a run would pay for; write nothing")] = False,
    params: Annotated[Path, typer.Option()] = Path("params.yaml"),
) -> None:
    p = load_params(params)
    questions = load_prepared(data)
    ids = run.needed_ids(run.load_assignments(splits, p.students), p.strategies, p.seeds, p.split.random_control)
    requests = run.build_requests(questions, ids, p.teacher, p.prompt.dataset)
    store = TraceCache(cache)
    if dry_run:
        typer.echo(
            json.dumps({"teacher": run.teacher_label(p.teacher), **run.plan(requests, store, p.teacher)}, indent=2)
        )
        return
    outcome, fresh = run.execute(requests, store, p.teacher)
    table = run.assemble(requests, store, outcome, fresh, p.teacher)
    summary = run.summarize(table, outcome, fresh, p.teacher)
    run.check_failures(summary, p.teacher)
    write_table(table, out)
    result, this_run = run.split_summary(summary)
    write_json(this_run, run_log)
    write_json(result, metrics)
    typer.echo(
        f"teacher[{summary['teacher']}]: {summary['requested']} needed, {summary['cache_hits']} cached, "
        f"{summary['new_calls']} requested now, {summary['failures']} failed, {summary['truncated']} truncated, "
        f"{summary['kept']} kept"
    )


if __name__ == "__main__":
    typer.run(main)

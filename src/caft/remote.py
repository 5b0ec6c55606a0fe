"""Sharing runs through a DVC remote, outputs included.

DVC's `push --run-cache` uploads the run records (`.dvc/cache/runs`: stage inputs -> output hashes) but not
the outputs they name, unless a commit or a pushed experiment references them too (a DVC maintainer:
treeverse/dvc#10472, "this operation doesn't push anything except the runs files"). A collaborator's
`dvc exp run --pull` then finds the record of a combination someone ran and cannot restore it, so it
recomputes. `push_run_outputs` uploads what every local record names, through DVC's own objects (the same
`get_used_objs` that `dvc repro --pull` uses to fetch them on the other side).
"""

from __future__ import annotations

from pathlib import Path


def run_entries(repo) -> list[tuple[str, str]]:
    """(key, value) of every local run record (`runs/<key[:2]>/<key>/<value>`)."""
    runs = Path(repo.cache.legacy.path) / "runs"
    return sorted((p.parent.name, p.name) for p in runs.glob("*/*/*") if p.is_file())


def push_run_outputs(remote: str | None = None) -> tuple[int, int, int]:
    """Upload the outputs of every local run record to `remote` (default: the project's): (records, objects
    uploaded now, objects that could not be uploaded, e.g. removed from the local cache by `dvc gc`)."""
    from dvc.repo import Repo

    with Repo() as repo:
        entries = run_entries(repo)
        sent, failed = 0, 0
        for objs in repo.stage_cache.get_used_objs(entries).values():
            result = repo.cloud.push(objs, remote=remote)
            sent, failed = sent + len(result.transferred), failed + len(result.failed)
    return len(entries), sent, failed

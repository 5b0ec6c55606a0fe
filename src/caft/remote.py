"""Sharing runs through a DVC remote, outputs included.

DVC's `push --run-cache` uploads the run records (`.dvc/cache/runs`: stage inputs -> output hashes) but not
the outputs they name, unless a commit or a pushed experiment references them too (a DVC maintainer:
treeverse/dvc#10472, "this operation doesn't push anything except the runs files"). A collaborator's
`dvc exp run --pull` then finds the record of a combination someone ran and cannot restore it, so it
recomputes. `push_run_outputs` uploads what every local record names, through DVC's own objects (the same
`get_used_objs` that `dvc repro --pull` uses to fetch them on the other side).

Teacher and judge responses travel too (`push_responses` / `pull_responses`): the teacher stage always runs and
pays only for what no store holds, so a collaborator who pulled them pays for nothing that was paid here.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

import pandas as pd

from caft.paths import response_store
from caft.teacher.cache import ResponseStore


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


# Teacher and judge responses on the remote, beside DVC's own `files/` and `runs/`: one file per key, the layout
# of the stores themselves (caft.teacher.cache), so a push or pull moves only the keys the other side lacks.
RESPONSES = ("caft", "responses")
KEY = re.compile(r"[0-9a-f]{64}")


def workspace_stores(root: Path) -> list[ResponseStore]:
    """Every response store in the workspace's data folder (the teacher's, each judge's), found by its layout."""
    folders = {p.parent.parent for p in (root / "data").glob("**/??/*.json") if KEY.fullmatch(p.stem)}
    return [ResponseStore(folder) for folder in sorted(folders)]


def used_keys(repo) -> set[str]:
    """The keys of every teacher trace a run of this repository used: the workspace's, every branch's and every
    experiment's (a queued sweep point's traces live in the machine store and in its experiment's outputs)."""
    keys: set[str] = set()
    for _ in repo.brancher(all_branches=True, all_experiments=True):
        for stage in repo.index.stages:
            for out in stage.outs if stage.name == "teacher" else []:
                oid = out.hash_info.value if out.hash_info else None
                path = repo.cache.local.oid_to_path(oid) if oid and out.def_path.endswith(".parquet") else None
                if path and os.path.exists(path):
                    keys |= set(pd.read_parquet(path, columns=["key"])["key"].dropna())
    return keys


def _remote_keys(remote) -> tuple[str, set[str]]:
    root = remote.fs.join(remote.path, *RESPONSES)
    found = remote.fs.find(root) if remote.fs.exists(root) else []
    return root, {Path(p).stem for p in found if KEY.fullmatch(Path(p).stem)}


def push_responses(remote_name: str | None = None) -> tuple[int, int]:
    """Upload every response this repository's runs received or used that the remote lacks: (responses here,
    uploaded now)."""
    from dvc.repo import Repo

    with Repo() as repo:
        mine = {key: store.path(key) for store in workspace_stores(Path(repo.root_dir)) for key in store.stored_keys()}
        machine = ResponseStore(response_store())
        for key in used_keys(repo) - set(mine):
            if machine.path(key).exists():
                mine[key] = machine.path(key)
        remote = repo.cloud.get_remote(remote_name, "push")
        root, there = _remote_keys(remote)
        todo = sorted(set(mine) - there)
        for prefix in sorted({key[:2] for key in todo}):
            remote.fs.makedirs(remote.fs.join(root, prefix), exist_ok=True)
        remote.fs.put([str(mine[k]) for k in todo], [remote.fs.join(root, k[:2], f"{k}.json") for k in todo])
    return len(mine), len(todo)


def pull_responses(remote_name: str | None = None) -> tuple[int, int]:
    """Download into this machine's store every response on the remote it lacks: (on the remote, new here)."""
    from dvc.repo import Repo

    machine = ResponseStore(response_store())
    with Repo() as repo, tempfile.TemporaryDirectory() as tmp:
        remote = repo.cloud.get_remote(remote_name, "pull")
        root, there = _remote_keys(remote)
        todo = sorted(key for key in there if not machine.path(key).exists())
        local = [str(Path(tmp) / f"{key}.json") for key in todo]
        remote.fs.get([remote.fs.join(root, k[:2], f"{k}.json") for k in todo], local)
        for path in local:  # through the store's atomic write: a pull beside a running worker is safe
            machine.put(json.loads(Path(path).read_text()))
    return len(there), len(todo)

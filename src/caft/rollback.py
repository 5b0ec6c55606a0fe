"""What a stage that fails under DVC gives back, so that a rejected run loses nothing.

DVC removes a stage's outputs before running it, and `dvc exp run` goes further before any stage runs: it
applies `-S` to params.yaml and checks the workspace out for the new pipeline, which deletes the outputs of
every stage the new params drop (a strategy or a student left out). A run that then fails (a value
`check_params` rejects, a question file that does not parse) would leave the workspace without outputs that
the DVC cache still holds. So a stage that fails under DVC (`DVC_STAGE` is set):

- copies back from the DVC cache every output that `dvc.lock` records and the workspace lacks
  (`restore_outputs`);
- in an experiment (`DVC_EXP_BASELINE_REV` is set), when `check_params` rejects the params, puts the
  experiment's baseline params.yaml back and keeps the rejected file beside the other things caft keeps
  (`revert_params`): the `-S` values are undone, and a hand edit among them is not lost.

Both say what they did in one line each.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import yaml


def under_dvc() -> bool:
    return bool(os.environ.get("DVC_STAGE"))


def restore_outputs(root: Path) -> tuple[list[str], list[str]]:
    """Copy back every locked output missing from the workspace: (restored, not in the cache). Each output is
    written beside its place and renamed into it, so none is half there."""
    lock = root / "dvc.lock"
    if not lock.exists():
        return [], []
    outs = [
        out
        for stage in (yaml.safe_load(lock.read_text()) or {}).get("stages", {}).values()
        for out in stage.get("outs", [])
        if out.get("md5") and not (root / out["path"]).exists()
    ]
    if not outs:
        return [], []
    cache = cache_dir(root)
    restored, absent = [], []
    for out in outs:
        files = cached_files(cache, out["md5"])
        if files is None:
            absent.append(out["path"])
            continue
        _place(root / out["path"], files, directory=out["md5"].endswith(".dir"))
        restored.append(out["path"])
    return restored, absent


def cache_dir(root: Path) -> Path:
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        return Path(repo.cache.local.path)


def _object(cache: Path, md5: str) -> Path:
    return cache / md5[:2] / md5[2:]


def cached_files(cache: Path, md5: str) -> dict[str, Path] | None:
    """relative path -> cached object of an output (a file: one entry, ""), or None when any is missing."""
    if not md5.endswith(".dir"):
        path = _object(cache, md5)
        return {"": path} if path.exists() else None
    manifest = _object(cache, md5)
    if not manifest.exists():
        return None
    files = {entry["relpath"]: _object(cache, entry["md5"]) for entry in json.loads(manifest.read_text())}
    return files if all(p.exists() for p in files.values()) else None


def _place(dest: Path, files: dict[str, Path], directory: bool) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".restore", dir=dest.parent))
    try:
        target = tmp / dest.name
        for rel, obj in files.items():
            path = target / rel if directory else target
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(obj, path)
        if directory:
            target.mkdir(exist_ok=True)
        os.replace(target, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def revert_params(params_file: Path, baseline: str, keep_in: Path) -> Path | None:
    """An experiment's params.yaml rejected by the check: the baseline commit's file put back, byte for byte, and
    the rejected one kept in `keep_in` (it may hold hand edits besides the `-S` values): the copy's path, or
    None when the file already is the baseline's."""
    shown = subprocess.run(["git", "show", f"{baseline}:{params_file.name}"], capture_output=True, text=True)
    if shown.returncode != 0 or shown.stdout == params_file.read_text():
        return None
    keep_in.mkdir(parents=True, exist_ok=True)
    kept = keep_in / f"{params_file.stem}-{time.strftime('%Y%m%d-%H%M%S')}{params_file.suffix}"
    shutil.copy2(params_file, kept)
    params_file.write_text(shown.stdout)
    return kept


def after_failure(root: Path) -> None:
    """A failed stage under DVC: put back the outputs DVC removed, and say so (one process of a distributed
    run does it)."""
    if not under_dvc() or os.environ.get("RANK", "0") != "0":
        return
    restored, absent = restore_outputs(root)
    if restored:
        print(f"caft: {len(restored)} output(s) DVC had removed are back from its cache, as dvc.lock records them")
    if absent:
        print(f"caft: {len(absent)} output(s) are not in the DVC cache and stay removed (e.g. {absent[0]})")

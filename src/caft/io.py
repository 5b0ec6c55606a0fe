"""Atomic writes: DVC caches whatever an output path holds when a stage exits, so a crash must never leave a
half-written file or folder behind. Everything is written next to its destination and renamed into place."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from caft.errors import CaftError


def digest(payload: Any, length: int = 64) -> str:
    """sha256 of `payload` as canonical JSON (keys sorted), cut to `length` hex digits: the one content key of
    the response store, the resumable entropy rows and the training checkpoints. Those stores find earlier
    results by it, so its form must never change."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:length]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# tempfile makes its files owner-only (0600, folders 0700); what lands in place gets the modes any other new file
# would, so results are readable by the group and the others as the user's umask allows
UMASK = _umask()


def umask_modes(folder: Path) -> None:
    """Give `folder` and everything in it the modes a new file gets under the user's umask: libraries write some
    files owner-only (safetensors' adapter weights, tempfile's folders), and results are meant to be shared."""
    for path in [folder, *folder.rglob("*")]:
        path.chmod((0o777 if path.is_dir() else 0o666) & ~UMASK)


@contextlib.contextmanager
def atomic_path(dest: str | Path, *, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of `dest`; on success it replaces `dest`, on error it is removed."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
        tmp.chmod(0o777 & ~UMASK)
    else:
        fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
        os.close(fd)
        tmp = Path(name)
        tmp.chmod(0o666 & ~UMASK)
    try:
        yield tmp
        if directory:
            umask_modes(tmp)
            if dest.exists():
                shutil.rmtree(dest)
        os.replace(tmp, dest)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def exclusive(lock: Path) -> Iterator[None]:
    """Hold an exclusive `flock` on the file `lock` (made if missing) for the block: processes on one machine
    take turns, and the kernel lets go of a killed holder's lock, so nobody waits on a dead process."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def built_once(folder: Path, build: Callable[[Path], None]) -> Path:
    """`folder`, made by `build` (into a temporary sibling renamed into place) the first time any process asks
    for it. Processes asking at once (two queue workers, the ranks of one data-parallel run) take turns on a lock
    file beside it: one builds, the others wait and read that folder, so none replaces a folder another process
    is reading, and the work (minutes for a GGUF conversion) is done once."""
    if not folder.is_dir():
        with exclusive(folder.with_name(f".{folder.name}.lock")):
            if not folder.is_dir():
                with atomic_path(folder, directory=True) as tmp:
                    build(tmp)
    return folder


def metric_key(text: object) -> str:
    """A name as a metric key: lower-case letters, digits and `_` (`"unit conversion"` -> `unit_conversion`),
    so `dvc exp show` / `dvc metrics diff` columns are identifiers."""
    return re.sub(r"[^a-z0-9]+", "_", str(text).lower()).strip("_")


def write_json(data: Any, dest: str | Path) -> None:
    """Write JSON (sorted keys, so diffs between runs stay readable) atomically; a NaN or infinite number (a
    ROC AUC with no valid row) is written as null: JSON has no NaN, and DVC and other readers refuse it."""
    with atomic_path(dest) as tmp:
        tmp.write_text(
            json.dumps(_finite(data), indent=2, sort_keys=True, default=_json_default, allow_nan=False) + "\n"
        )


def _finite(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str):  # a numpy scalar
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_table(df: pd.DataFrame, dest: str | Path) -> None:
    """Write a DataFrame as parquet or CSV (by suffix) atomically."""
    dest = Path(dest)
    with atomic_path(dest) as tmp:
        if dest.suffix == ".csv":
            df.to_csv(tmp, index=False)
        else:
            df.to_parquet(tmp, index=False)


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a table written by `write_table` (or a user's JSONL / CSV / TSV / parquet file)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return pd.read_parquet(path)
    if suffix in {".jsonl", ".json"}:
        return pd.read_json(path, lines=suffix == ".jsonl", dtype=False)
    if suffix == ".csv":
        return pd.read_csv(path)
    if suffix == ".tsv":
        return pd.read_csv(path, sep="\t")
    raise CaftError(f"unsupported table format {suffix!r} for {path} (use .parquet, .jsonl, .csv or .tsv)")


def _json_default(value: Any) -> Any:
    """numpy scalars and NaN-free conversion for metrics files."""
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")

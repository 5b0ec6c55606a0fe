"""`caft reset`: the workspace back to the committed params and their outputs, with nothing of the user's lost.

What it changes, it decides first (`plan`) and says before doing it:
- the files git keeps for the pipeline (params.yaml, dvc.lock, the report's outputs) back to the last commit;
- every output to the committed dvc.lock's version, from the DVC cache (`dvc checkout --force`);
- the files other runs left in the folders the report reads (another seed's, strategy's or student's), and
  DVC's `.gitignore` entries for them. They were produced by DVC and stay in its cache, or in the experiment
  commit `dvc exp run` made (the outputs git keeps): the run-cache or `dvc exp apply` brings them back.

It refuses, changing nothing, when the committed outputs are not all in the DVC cache, and when it would
discard something DVC did not produce: an edit of those files that no commit or experiment holds, or a file of
the user's among the outputs or in the report's folders. `--force` then keeps a copy of each in a folder it
names, and goes on. If a step fails, the files it changed are put back: the workspace is reset or as it was.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from caft.errors import CaftError
from caft.rollback import cache_dir, cached_files

BACKUPS = Path(".caft") / "reset-backup"


@dataclass
class Plan:
    revert: list[str] = field(default_factory=list)  # files git keeps that differ from the last commit
    unsaved: list[str] = field(default_factory=list)  # of those, edits no commit or experiment holds
    outputs: list[str] = field(default_factory=list)  # outputs whose version changes
    committed: list[str] = field(default_factory=list)  # every cached output of the committed run
    stale: list[Path] = field(default_factory=list)  # other runs' files in the report's folders (DVC's, cached)
    user: list[Path] = field(default_factory=list)  # files DVC did not produce, among outputs / report folders
    missing: list[str] = field(default_factory=list)  # committed outputs not in the DVC cache


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout


def _committed_lock() -> dict:
    shown = subprocess.run(["git", "show", "HEAD:dvc.lock"], capture_output=True, text=True)
    if shown.returncode != 0:
        raise CaftError("no dvc.lock in the last commit: commit a run before `caft reset` can return to it")
    return (yaml.safe_load(shown.stdout) or {}).get("stages", {})


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _kept_by_git(files: list[str]) -> list[str]:
    """Files git keeps for the pipeline that differ from the last commit."""
    changed = set(_git("status", "--porcelain", "--no-renames", "--", *files).splitlines())
    return [f for f in files if any(line[3:] == f for line in changed)]


def _saved_elsewhere(path: str) -> bool:
    """Whether the file's content is held by the last commit or by an experiment (`dvc exp run` commits each
    one under refs/exps), so that resetting it loses nothing."""
    if not Path(path).exists():
        return True
    blob = _git("hash-object", path).strip()
    refs = _git("for-each-ref", "--format=%(objectname)", "refs/exps").split()
    for ref in ["HEAD", *refs]:
        held = subprocess.run(["git", "rev-parse", f"{ref}:{path}"], capture_output=True, text=True)
        if held.returncode == 0 and held.stdout.strip() == blob:
            return True
    return False


def plan(root: Path, in_git: list[str], folders: list[Path]) -> Plan:
    """What a reset of the workspace at `root` would do; `in_git`: the pipeline files git keeps; `folders`: the
    folders the report reads (where other runs leave files)."""
    committed = _committed_lock()
    lock = root / "dvc.lock"
    current = (yaml.safe_load(lock.read_text()) or {}).get("stages", {}) if lock.exists() else {}
    target = {
        out["path"]: out["md5"]
        for body in committed.values()
        for out in body.get("outs", [])
        if "md5" in out and out["path"] not in in_git  # git keeps those (cache: false)
    }
    now = {out["path"]: out.get("md5") for body in current.values() for out in body.get("outs", [])}
    cache = cache_dir(root)
    out = Plan(revert=_kept_by_git(in_git))
    out.unsaved = [f for f in out.revert if not _saved_elsewhere(f)]
    out.missing = sorted(p for p, md5 in target.items() if cached_files(cache, md5) is None)
    out.outputs = sorted(p for p, md5 in target.items() if now.get(p) != md5 or not (root / p).exists())
    out.committed = sorted(target)
    tracked = set(_git("ls-files").splitlines())
    area = {root / p for p in {*target, *now}} | set(folders)
    files = {f for a in area for f in ([a] if a.is_file() else a.rglob("*")) if f.is_file()}
    held = {root / p for p in target}
    for f in sorted(files):
        rel = f.relative_to(root).as_posix()
        if f.name == ".gitignore" or rel in tracked:
            continue
        if cached_files(cache, _md5(f)) is None and not _saved_elsewhere(rel):
            out.user.append(f)
        elif not any(parent in held for parent in (f, *f.parents)) and any(f.is_relative_to(d) for d in folders):
            out.stale.append(f)
    return out


def describe(p: Plan, root: Path) -> list[str]:
    lines = []
    if p.revert:
        lines.append(f"back to the last commit: {', '.join(p.revert)}")
    if p.outputs:
        lines.append(f"{len(p.outputs)} output(s) checked out from the DVC cache at their committed version")
    lines = [f"caft reset: {line}" for line in lines]
    lines += [f"- {f.relative_to(root)} (another run's; the DVC cache or its experiment keeps it)" for f in p.stale]
    return lines or ["caft reset: nothing to change, the workspace is at the last commit"]


def apply(p: Plan, root: Path, force: bool, in_git: list[str], say: Callable[[str], None]) -> Path | None:
    """Carry out `p` after saying what it does (`say`); `in_git`: the pipeline files git returns. Returns the
    backup folder when `force` kept a copy of the user's files."""
    if p.missing:
        raise CaftError(
            f"{len(p.missing)} output(s) of the last commit are not in the DVC cache (e.g. {p.missing[0]}): "
            "`make demo` (or `dvc repro`) or `caft pull` first; nothing was changed"
        )
    yours = [*p.unsaved, *(f.relative_to(root).as_posix() for f in p.user)]
    if yours and not force:
        shown = ", ".join(yours[:3]) + (f" and {len(yours) - 3} more" if len(yours) > 3 else "")
        raise CaftError(
            f"caft reset would discard {len(yours)} file(s) DVC did not produce: {shown}; commit or move them, "
            "or `caft reset --force` to keep a copy of each and go on; nothing was changed"
        )
    for line in describe(p, root):
        say(line)
    backup = root / BACKUPS / time.strftime("%Y%m%d-%H%M%S") if yours else None
    kept = {f: (root / f).read_bytes() for f in p.revert if (root / f).exists()}
    moved: list[tuple[Path, Path]] = []
    try:
        for rel in p.unsaved:
            _copy(root / rel, backup / rel)
        for f in p.user:
            dest = backup / f.relative_to(root)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(f, dest)
            moved.append((dest, f))
        if in_git and subprocess.call(["git", "checkout", "HEAD", "--", *in_git]) != 0:
            raise CaftError("git checkout failed")
        # its exit status also counts the outputs of stages the commit never ran: what matters is checked below
        subprocess.call(["dvc", "checkout", "--force", "--quiet"])
        absent = [rel for rel in p.committed if not (root / rel).exists()]
        if absent:
            raise CaftError(f"dvc checkout left {len(absent)} output(s) out, e.g. {absent[0]}")
    except (CaftError, OSError) as exc:
        _undo(root, kept, moved)
        raise CaftError(f"caft reset stopped ({exc}); the workspace is as it was") from None
    for f in p.stale:  # what dvc checkout left of other runs' files
        f.unlink(missing_ok=True)
        if f.parent.exists():
            _prune(f.parent, root)
    return backup


def _copy(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dest)


def _undo(root: Path, kept: dict[str, bytes], moved: list[tuple[Path, Path]]) -> None:
    for rel, data in kept.items():
        (root / rel).write_bytes(data)
    subprocess.call(["dvc", "checkout", "--force", "--quiet"])
    for src, dest in moved:
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(src, dest)


def _prune(folder: Path, root: Path) -> None:
    """Remove the folders a removed file leaves empty (up to the workspace root)."""
    for parent in (folder, *folder.parents):
        if parent == root or any(parent.iterdir()):
            break
        parent.rmdir()


def run(root: Path, force: bool, say: Callable[[str], None]) -> None:
    """`caft reset` in `root` (the current directory): plan, say, apply; then DVC's `.gitignore` entries for
    outputs that are gone, and those it added to committed ones for other runs."""
    uncached = _uncached_outputs(root)
    kept = ["params.yaml", "dvc.lock", *uncached]
    in_git = [p for p in kept if _git("ls-tree", "--name-only", "HEAD", "--", p).strip()]  # in the last commit
    # where other runs leave files: the report's input folders, the folders git keeps (a file the commit lacks
    # there is another run's), and outputs git would keep that the commit lacks
    folders = _report_folders(root) + [root / p for p in uncached if (root / p).is_dir() or p not in in_git]
    folders = [f for f in folders if f.exists()]
    todo = plan(root, in_git, folders)
    backup = apply(todo, root, force, in_git, say)
    if backup is not None:
        say(f"caft reset: your files are kept in {backup.relative_to(root)}")
    tracked = set(_git("ls-files").splitlines())
    for path in orphan_ignores(root, folders, tracked, gone=set()):
        say(f"- {path.relative_to(root)}")
        path.unlink()
    top = sorted({Path(p).parts[0] for p in todo.committed if len(Path(p).parts) > 1})
    modified = _git("ls-files", "--modified", "--", *top).splitlines() if top else []
    ignores = [f for f in modified if Path(f).name == ".gitignore"]
    if ignores:  # DVC added other runs' entries; the committed ones go with the committed dvc.lock
        cmd = ["git", "checkout", "HEAD", "--", *ignores]
        say("+ " + " ".join(cmd))
        if subprocess.call(cmd) != 0:
            raise CaftError(f"{' '.join(cmd)} failed")


def _report_folders(root: Path) -> list[Path]:
    """The folders the report stage depends on (absolute paths)."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        report = next(s for s in repo.index.stages if s.addressing == "report")
        return [Path(d.fs_path) for d in report.deps if Path(d.fs_path).is_dir()]


def _uncached_outputs(root: Path) -> list[str]:
    """The outputs kept in git (`cache: false`: the report's, the headline metrics, every plot), as the
    workspace's params expand dvc.yaml; `dvc checkout` does not restore them."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        return sorted({out.def_path for stage in repo.index.stages for out in stage.outs if not out.use_cache})


def orphan_ignores(root: Path, folders: list[Path], tracked: set[str], gone: set[Path]) -> list[Path]:
    """`.gitignore` files DVC wrote for outputs that are gone: untracked by git (`tracked`: paths relative to
    `root`) and alone in their folder once `gone` is removed. DVC hashes them as part of a
    folder dependency, so one left behind keeps the report out of date."""
    return sorted(
        ignore
        for folder in folders
        for ignore in folder.rglob(".gitignore")
        if str(ignore.relative_to(root)) not in tracked
        and all(f == ignore or f in gone for f in ignore.parent.rglob("*") if f.is_file())
    )

"""Helpers for tests that run the pipeline the way a user does: a fresh git repository holding the project's
pipeline files, driven by `caft profile`, `dvc repro` and `dvc exp run` as subprocesses."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import REPO, committed

# Guards against a hang only, never against a slow machine: a loaded 2-core box ran the whole suite in 23 min
# and a single DVC run in over 10. A wall-time limit must not decide pass or fail.
HANG_GUARD_S = 2400


# The project's Makefile targets as a user types them, run in a test project (which has no .venv of its own):
# this environment's tools, and the venv set-up target taken as done.
MAKE = ["make", "-s", "-f", str(REPO / "Makefile"), f"BIN={Path(sys.executable).parent}", "-o", "setup"]


def env(**extra: str) -> dict[str, str]:
    out = dict(os.environ)
    out["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{out['PATH']}"
    for key, value in {
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@localhost",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@localhost",
    }.items():
        out.setdefault(key, value)
    return {**out, **extra}


def call(cmd: list[str], cwd: Path, **extra_env: str) -> subprocess.CompletedProcess:
    """Run a command as a user would; the caller asserts on the exit code and output."""
    return subprocess.run(cmd, cwd=cwd, env=env(**extra_env), capture_output=True, text=True, timeout=HANG_GUARD_S)


def run(cmd: list[str], cwd: Path, **extra_env: str) -> str:
    """Run a command that must succeed; its stdout + stderr."""
    proc = call(cmd, cwd, **extra_env)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


def ran_stages(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


# dvc.yaml's `always_changed` stages (the teacher, the judges): they run on every `dvc repro` and pay only for what
# no response store holds, so whether they "ran" says nothing about what was recomputed.
ALWAYS_RUN = {
    name
    for name, body in yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"].items()
    if body.get("always_changed")
}


def always_run(stage: str) -> bool:
    return stage.split("@")[0] in ALWAYS_RUN


def recomputed(output: str) -> set[str]:
    """The stages a run re-ran, the always-run ones left out."""
    return {s for s in ran_stages(output) if not always_run(s)}


def up_to_date(root: Path) -> bool:
    """`dvc status` lists nothing but the always-run stages (DVC calls each of them "always changed")."""
    listed = re.findall(r"^(\S+):\s*$", run(["dvc", "status"], root), re.MULTILINE)
    return all(always_run(stage) for stage in listed)


def copy_project(root: Path) -> Path:
    """A fresh git repository holding the project's pipeline files (what a clone has, minus data)."""
    listed = ["git", "ls-files", "--cached", "--others", "--exclude-standard"]
    tracked = subprocess.run(listed, cwd=REPO, capture_output=True, text=True, check=True).stdout
    wanted_dirs = {"stages", "src", "profiles", "recipes", "configs", "tools", ".dvc"}
    wanted_files = {"dvc.yaml", "params.yaml", ".dvcignore", ".gitignore"}
    for rel in tracked.split():
        if (
            rel.split("/")[0] in wanted_dirs
            or rel in wanted_files
            or rel.startswith(("data/examples/", "tests/fixtures/"))
        ):
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            # params.yaml as committed: a profile or an experiment in the workspace must not change a test
            shutil.copy2(committed(rel) if rel == "params.yaml" else REPO / rel, root / rel)
    run(["git", "init", "-q"], root)
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "init"], root)
    return root


def make_project(root: Path, *profiles: str) -> Path:
    """`copy_project`, then `profiles` applied through DVC (`caft profile`, the whole pipeline)."""
    copy_project(root)
    run(["caft", "profile", *profiles], root)
    return root


def lock(root: Path) -> dict:
    return yaml.safe_load((root / "dvc.lock").read_text())["stages"]

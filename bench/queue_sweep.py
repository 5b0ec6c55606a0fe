"""A queued threshold sweep on the tiny profile, measured: which stages each point ran and how long it took.

In a fresh git repository holding the project (what a clone has), the tiny profile runs once and is committed;
then `split.threshold` values are queued (`dvc exp run --queue`) and run on two workers (`dvc queue start -j
2`). Each queued point runs in a copy of that commit whose outputs come from the DVC cache, so a stage the
threshold does not change is not recomputed. Writes, per point, the stages its log shows running and the ones
it did not run, the sweep's wall time, and `caft compare`'s table.

    python bench/queue_sweep.py --out bench/results/queue_sweep.json
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer
from record import stamp, write

ROOT = Path(__file__).resolve().parents[1]
PROJECT = ("stages", "src", "profiles", "recipes", "configs", ".dvc")
FILES = ("dvc.yaml", "params.yaml", ".dvcignore", ".gitignore")


def sh(cmd: list[str], cwd: Path, env: dict[str, str]) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return proc.stdout + proc.stderr


def project_copy(dest: Path, env: dict[str, str]) -> None:
    tracked = sh(["git", "ls-files", "--cached", "--others", "--exclude-standard"], ROOT, env).split()
    for rel in tracked:
        if rel.split("/")[0] in PROJECT or rel in FILES:
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dest / rel)
    sh(["git", "init", "-q"], dest, env)
    sh(["git", "add", "-A"], dest, env)
    sh(["git", "commit", "-qm", "init"], dest, env)


def to_markdown(result: dict) -> str:
    lines = [
        f"# Queued threshold sweep on the tiny profile ({result['date']}, {result['machine']})",
        "",
        f"Base run (`caft profile profiles/tiny.yaml`): {result['base_s']} s. Sweep of {len(result['points'])} "
        f"points on 2 workers: {result['sweep_s']} s.",
        "",
        "| point | stages run | not run (unchanged: checked out from the cache or restored from the run-cache) |",
        "|---|---|---|",
    ]
    for name, point in result["points"].items():
        lines.append(f"| {name} | {', '.join(point['ran'])} | {', '.join(point['not_run'])} |")
    return "\n".join([*lines, "", result["compare"]])


def main(
    out: Annotated[Path, typer.Option(help="results JSON (a .md beside it)")] = Path("bench/results/queue_sweep.json"),
    thresholds: Annotated[str, typer.Option(help="comma-separated split.threshold values")] = "0.5,0.6,0.9",
) -> None:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env |= {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    for key, value in {"GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@localhost"}.items():
        env.setdefault(key, value)
        env.setdefault(key.replace("AUTHOR", "COMMITTER"), value)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        project_copy(root, env)
        began = time.perf_counter()
        sh(["caft", "profile", "profiles/tiny.yaml"], root, env)
        base_s = round(time.perf_counter() - began, 1)
        sh(["git", "add", "-A"], root, env)
        sh(["git", "commit", "-qm", "tiny"], root, env)
        names = {}
        for value in thresholds.split(","):
            name = f"t{value.replace('.', '')}"
            sh(["dvc", "exp", "run", "--queue", "-S", f"split.threshold={value}", "-n", name], root, env)
            names[name] = value
        began = time.perf_counter()
        sh(["dvc", "queue", "start", "-j", "2"], root, env)
        while re.search(r"\b(Queued|Running)\b", sh(["dvc", "queue", "status"], root, env)):
            time.sleep(2)
        sweep_s = round(time.perf_counter() - began, 1)
        every = set(sh(["dvc", "stage", "list", "--all", "--name-only"], root, env).split())
        points = {}
        for name, value in names.items():
            ran = set(re.findall(r"Running stage '([^']+)'", sh(["dvc", "queue", "logs", name], root, env)))
            points[f"split.threshold={value}"] = {"ran": sorted(ran), "not_run": sorted(every - ran)}
        table = sh(["caft", "compare"], root, env)
    result = {
        **stamp(),
        "base_s": base_s,
        "sweep_s": sweep_s,
        "points": points,
        "compare": table,
    }
    write(out, result, to_markdown(result) + "\n")
    typer.echo(to_markdown(result))


if __name__ == "__main__":
    typer.run(main)

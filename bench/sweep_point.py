"""One threshold sweep point of the demo, measured: where its wall time goes, stage by stage.

In a fresh clone of the last commit, the demo runs once (`dvc repro`, cold: an
empty model cache) and is committed; then one point of a threshold sweep runs the way a user runs it, `dvc exp
run -S split.threshold=<value>`. Both are timed from DVC's own output: a stage's time runs from its "Running
stage" line to the next stage's line (or the end), so it holds DVC's hashing and lock writing too. Stages the
point did not run are listed with how DVC skipped them (unchanged, or restored from the run-cache).

    python bench/sweep_point.py --out bench/results/sweep_point.json [--threshold 0.6]
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer
from queue_sweep import sh
from record import stamp, write

ROOT = Path(__file__).resolve().parents[1]
RUNNING = re.compile(r"Running stage '([^']+)'")
RESTORED = re.compile(r"Stage '([^']+)' is cached - skipping run")
UNCHANGED = re.compile(r"Stage '([^']+)' didn't change, skipping")


def timed_stages(cmd: list[str], cwd: Path, env: dict[str, str]) -> dict:
    """Run `cmd` (a `dvc repro` or `dvc exp run`), timing each stage it runs from the lines it prints."""
    began = time.perf_counter()
    marks: list[tuple[str, float]] = []
    restored, unchanged, tail = [], [], []
    with subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        for line in proc.stdout:
            tail = [*tail[-40:], line]
            if m := RUNNING.search(line):
                marks.append((m.group(1), time.perf_counter()))
            elif m := RESTORED.search(line):
                restored.append(m.group(1))
            elif m := UNCHANGED.search(line):
                unchanged.append(m.group(1))
    ended = time.perf_counter()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n{''.join(tail)}")
    ends = [t for _, t in marks[1:]] + [ended]
    stages = {name: round(end - start, 1) for (name, start), end in zip(marks, ends, strict=True)}
    return {"total_s": round(ended - began, 1), "stages_s": stages, "restored": restored, "unchanged": unchanged}


def to_markdown(result: dict) -> str:
    base, point = result["base"], result["point"]
    lines = [
        f"# One threshold sweep point of the demo ({result['date']}, {result['machine']})",
        "",
        f"The demo, cold (`dvc repro` in a fresh copy): {base['total_s']} s. Then `{result['command']}`: "
        f"**{point['total_s']} s** (target {result['target_s']} s).",
        "",
        "| stage the point ran | s | share of the point |",
        "|---|---|---|",
    ]
    for name, seconds in sorted(point["stages_s"].items(), key=lambda kv: -kv[1]):
        lines.append(f"| {name} | {seconds} | {seconds / point['total_s']:.0%} |")
    lines += [
        "",
        f"Restored from the run-cache: {', '.join(point['restored']) or 'none'}.",
        f"Unchanged, skipped: {', '.join(point['unchanged']) or 'none'}.",
        "",
        "| demo stage (base run) | s |",
        "|---|---|",
        *(f"| {name} | {seconds} |" for name, seconds in base["stages_s"].items()),
    ]
    return "\n".join(lines) + "\n"


def main(
    out: Annotated[Path, typer.Option(help="results JSON (a .md beside it)")] = Path("bench/results/sweep_point.json"),
    threshold: Annotated[float, typer.Option(help="the point's split.threshold (the demo's is 0.75)")] = 0.6,
) -> None:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env |= {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env["PYTHONUNBUFFERED"] = "1"  # DVC's lines arrive when printed: they time the stages
    for key, value in {"GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@localhost"}.items():
        env.setdefault(key, value)
        env.setdefault(key.replace("AUTHOR", "COMMITTER"), value)
    command = f"dvc exp run -S split.threshold={threshold}"
    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryDirectory() as cache:
        env["CAFT_CACHE_DIR"] = cache
        root = Path(tmp) / "caft"
        sh(["git", "clone", "-q", str(ROOT), str(root)], ROOT, env)
        base = timed_stages(["dvc", "repro"], root, env)
        sh(["git", "add", "-A"], root, env)
        sh(["git", "commit", "-qm", "demo"], root, env)
        point = timed_stages(command.split(), root, env)
    result = {**stamp(), "command": command, "target_s": 480, "base": base, "point": point}
    write(out, result, to_markdown(result))
    typer.echo(to_markdown(result))


if __name__ == "__main__":
    typer.run(main)

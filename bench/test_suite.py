"""The test suite as CI runs it, timed: a fresh `git clone` of the last commit, then `.ci/run` (set-up from
nothing, then `make test`). Writes the wall times, the pytest counts and the slowest tests, which the README
and docs/testing.md quote through `make docs`.

    python bench/test_suite.py --out bench/results/test_suite.json
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer
from record import stamp

ROOT = Path(__file__).resolve().parents[1]
COUNTS = re.compile(r"(\d+) (passed|failed|errors?|skipped|deselected|xfailed|xpassed)")
# pytest's closing line: "=== 357 passed in 1099.01s (0:18:19) ===", or under -q "357 passed, 2 warnings in 1099.01s"
SUMMARY = re.compile(r"^(?:=+ )?((?:\d+ \w+, )*\d+ \w+) in ([\d.]+)s\b", re.M)
SLOW = re.compile(r"^([\d.]+)s (call|setup|teardown)\s+(\S+)$", re.M)


def summary(log: str) -> dict:
    """pytest's closing line ('=== 357 passed in 1099.01s (0:18:19) ===') as counts and seconds, plus the
    slowest tests it lists (`--durations`)."""
    closing = SUMMARY.findall(log)
    if not closing:
        raise SystemExit(f"no pytest summary line in the CI log; its end:\n{log[-3000:]}")
    counts_text, seconds = closing[-1]
    return {
        "counts": {kind.rstrip("s"): int(n) for n, kind in COUNTS.findall(counts_text)},
        "tests_s": float(seconds),
        "slowest": [{"test": name, "phase": phase, "s": float(s)} for s, phase, name in SLOW.findall(log)],
    }


def main(out: Annotated[Path, typer.Option(help="the JSON result")] = Path("bench/results/test_suite.json")) -> None:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    with tempfile.TemporaryDirectory(prefix="caft-ci-") as tmp:
        clone = Path(tmp) / "caft"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        start = time.perf_counter()
        proc = subprocess.run([".ci/run"], cwd=clone, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
    log = proc.stdout + proc.stderr
    if proc.returncode:  # pytest's report is on stdout; stderr ends with the set-up's pip warnings
        typer.echo(proc.stdout[-6000:] + proc.stderr[-2000:], err=True)
    result = {
        **stamp(),
        "commit": commit.stdout.strip(),
        "returncode": proc.returncode,
        "wall_s": round(wall, 1),
        **summary(log),
    }
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    typer.echo(f"rc {proc.returncode}: {result['counts']} in {result['wall_s']} s ({result['tests_s']} s of tests)")
    raise typer.Exit(proc.returncode)


if __name__ == "__main__":
    typer.run(main)

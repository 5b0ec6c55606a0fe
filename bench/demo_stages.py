"""Per-stage wall times of the default demo (`make demo`), cold and warm, measured in one run so that later
changes compare as ratios.

Each stage of the pipeline runs alone (`dvc repro --single-item --force <stage>`), in the order `dvc repro`
would run them: *cold* with an empty model cache (the one-time GGUF conversion lands in `entropy`) and no
partial results, then *warm*, the same again with the model cache filled and every input already on disk.
Run in the workspace: it leaves the demo's outputs, dvc.lock and metrics exactly as `dvc repro` would, so
`--passes cold` is also the demo re-run after a change of code, timed.

    python bench/demo_stages.py --out bench/results/demo_stages.json [--passes cold]
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer
from record import stamp, write

ROOT = Path(__file__).resolve().parents[1]


def stage_order(root: Path = ROOT, *targets: str) -> list[str]:
    """The stages `dvc repro` runs for `targets` (all: none given), in its order (a forced dry run lists them)."""
    dry = ["dvc", "repro", "--dry", "--force", *targets]
    out = subprocess.run(dry, cwd=root, capture_output=True, text=True, check=True)
    return list(dict.fromkeys(re.findall(r"Running stage '([^']+)'", out.stdout)))


def timed_pass(stages: list[str], env: dict[str, str], root: Path = ROOT) -> dict[str, float]:
    """Wall seconds of each stage run alone, forced."""
    times = {}
    for name in stages:
        began = time.perf_counter()
        subprocess.run(
            ["dvc", "repro", "--single-item", "--force", name], cwd=root, env=env, check=True, stdout=subprocess.DEVNULL
        )
        times[name] = round(time.perf_counter() - began, 1)
        typer.echo(f"{name}: {times[name]} s", err=True)
    return times


def to_markdown(result: dict) -> str:
    warm_s = result.get("warm_s")
    head = "| stage | cold s | warm s | warm / cold |" if warm_s else "| stage | cold s |"
    lines = [f"# Demo per-stage wall times ({result['date']}, {result['machine']})", "", head, head_rule(head)]
    for name, cold in result["cold_s"].items():
        warm = f" {warm_s[name]} | {warm_s[name] / cold:.2f} |" if warm_s else ""
        lines.append(f"| {name} | {cold} |{warm}")
    total_cold = sum(result["cold_s"].values())
    total_warm = f" **{sum(warm_s.values()):.0f}** | {sum(warm_s.values()) / total_cold:.2f} |" if warm_s else ""
    lines.append(f"| **total** | **{total_cold:.0f}** |{total_warm}")
    return "\n".join(lines) + "\n"


def head_rule(head: str) -> str:
    return "|" + "---|" * head.count(" | ") + "---|"


def main(
    out: Annotated[Path, typer.Option(help="results JSON (a .md table is written beside it)")],
    passes: Annotated[str, typer.Option(help="cold,warm (both) or cold (the demo once, timed)")] = "cold,warm",
) -> None:
    wanted = [p.strip() for p in passes.split(",")]
    if wanted not in (["cold"], ["cold", "warm"]):
        raise typer.BadParameter("cold,warm or cold", param_hint="--passes")
    stages = stage_order()
    result = stamp()
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "CAFT_CACHE_DIR": cache, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
        shutil.rmtree(ROOT / ".caft", ignore_errors=True)
        for name in wanted:
            result[f"{name}_s"] = timed_pass(stages, env)
    write(out, result, to_markdown(result))
    typer.echo(to_markdown(result))


if __name__ == "__main__":
    typer.run(main)

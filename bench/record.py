"""Where a benchmark's result goes: a JSON file (what `make docs` quotes) with the date and the machine, and the
same result as a markdown table beside it (what a person reads)."""

from __future__ import annotations

import json
import os
import platform
from datetime import date
from pathlib import Path


def processor() -> str:
    """The processor's name where the system states it (Linux: /proc/cpuinfo): two machines with the same
    architecture and core count can differ threefold in speed, and a result must say which one it had."""
    cpuinfo = Path("/proc/cpuinfo")
    names = (
        [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")]
        if cpuinfo.exists()
        else []
    )
    return names[0] if names else platform.processor() or platform.machine()


def stamp(extra: str = "") -> dict:
    """The date and the machine a result was measured on (`extra`: e.g. the torch build)."""
    machine = f"{platform.machine()}, {processor()}, {os.cpu_count()} cores" + (f", {extra}" if extra else "")
    return {"date": date.today().isoformat(), "machine": machine}


def write(out: Path, result: dict, markdown: str) -> None:
    """`result` to `out` (JSON) and `markdown` to the .md beside it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown)

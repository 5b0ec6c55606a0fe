"""Render the pipeline's `dvc plots` (vega-lite) to PNG files for the README.

python tools/render_plots.py --out docs/img
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Annotated

import typer


def main(
    out: Annotated[Path, typer.Option(help="folder for the PNG files")] = Path("docs/img"),
    match: Annotated[str, typer.Option(help="regex on plot names to render")] = r"^(?!plots/train/)|/loss\.tsv$",
) -> None:
    import vl_convert

    shown = json.loads(
        subprocess.run(["dvc", "plots", "show", "--json"], capture_output=True, text=True, check=True).stdout
    )
    out.mkdir(parents=True, exist_ok=True)
    for name, renders in shown.get("data", {}).items():
        if not re.search(match, name):
            continue
        for render in renders:
            if render.get("type") != "vega":
                continue
            slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
            (out / f"{slug}.png").write_bytes(vl_convert.vegalite_to_png(render["content"], scale=1.5))
            typer.echo(out / f"{slug}.png")


if __name__ == "__main__":
    typer.run(main)

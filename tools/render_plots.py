"""Render the pipeline's `dvc plots` (vega-lite) to PNG files, and optionally one self-contained HTML page (the
summary rendered, every plot as inline SVG; no script or network needed) beside `reports/summary.md`.

python tools/render_plots.py --out reports/img --html reports/plots.html   # make report: reports/ only
python tools/render_plots.py --out docs/img                                # make docs-plots: the README's figures
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Annotated

import typer
from markdown_it import MarkdownIt


def main(
    out: Annotated[Path, typer.Option(help="folder for the PNG files")] = Path("docs/img"),
    match: Annotated[str, typer.Option(help="regex on plot names to render")] = r"^(?!plots/train/)",
    page: Annotated[Path | None, typer.Option("--html", help="also one self-contained HTML page of every plot")] = None,
    summary: Annotated[Path, typer.Option(help="the report's markdown, shown at the top of the page")] = Path(
        "reports/summary.md"
    ),
) -> None:
    import vl_convert

    shown = json.loads(
        subprocess.run(["dvc", "plots", "show", "--json"], capture_output=True, text=True, check=True).stdout
    )
    out.mkdir(parents=True, exist_ok=True)
    figures = []
    for name, renders in shown.get("data", {}).items():
        if not re.search(match, name):
            continue
        for render in renders:
            if render.get("type") != "vega":
                continue
            slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
            (out / f"{slug}.png").write_bytes(vl_convert.vegalite_to_png(render["content"], scale=1.5))
            typer.echo(out / f"{slug}.png")
            if page is not None:
                figures.append(f"<figure>{vl_convert.vegalite_to_svg(render['content'])}</figure>")
    if page is not None:
        # the summary rendered (its tables as tables); markdown-it escapes any HTML in the text
        text = MarkdownIt("commonmark").enable("table").render(summary.read_text()) if summary.exists() else ""
        page.parent.mkdir(parents=True, exist_ok=True)
        page.write_text(
            "<!doctype html><meta charset='utf-8'><title>caft report</title>"
            "<style>body{font-family:sans-serif;margin:2em} table{border-collapse:collapse} "
            "td,th{border:1px solid #ccc;padding:2px 6px}</style>"
            f"{text}{''.join(figures)}\n"
        )
        typer.echo(page)


if __name__ == "__main__":
    typer.run(main)

"""Stage `prepare`: questions from the configured source → validated train/test tables + counts."""

from pathlib import Path
from typing import Annotated

import typer

from caft.cli import stage
from caft.io import atomic_path, write_json
from caft.params import load_params
from caft.prepare import carve, load_source, summary


@stage
def main(
    out_dir: Annotated[Path, typer.Option(help="folder for train.parquet and test.parquet")] = Path("data/prepared"),
    metrics: Annotated[Path, typer.Option(help="counts per subset and category")] = Path("metrics/prepare.json"),
    params: Annotated[Path, typer.Option()] = Path("params.yaml"),
) -> None:
    p = load_params(params)
    questions, acted = load_source(p.data, p.seed)
    for line in acted:
        typer.echo(f"prepare: {p.data.file.bad_rows} {line}", err=True)
    train, test = carve(questions, p.data, p.seed)
    with atomic_path(out_dir, directory=True) as tmp:
        train.to_parquet(tmp / "train.parquet", index=False)
        test.to_parquet(tmp / "test.parquet", index=False)
    write_json(summary(train, test, p.data, acted), metrics)
    typer.echo(f"prepare: {len(train)} train / {len(test)} test questions ({p.data.source}) -> {out_dir}")


if __name__ == "__main__":
    typer.run(main)

"""Stage `eval`: one trained student × strategy on every test question."""

from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from caft.cli import stage
from caft.evaluate import predict
from caft.io import write_json, write_table
from caft.metrics import summarize
from caft.params import load_params


@stage
def main(
    model_dir: Annotated[Path, typer.Option(help="the train stage's output folder")],
    out: Annotated[Path, typer.Option(help="output folder (predictions.parquet)")],
    metrics: Annotated[Path, typer.Option(help="metrics JSON")],
    test: Annotated[Path, typer.Option(help="prepare's test.parquet")] = Path("data/prepared/test.parquet"),
    params: Annotated[Path, typer.Option()] = Path("params.yaml"),
) -> None:
    p = load_params(params)
    questions = pd.read_parquet(test)
    preds = predict(model_dir, questions, p.eval)
    summary = summarize(preds, p.eval.seed)
    write_table(preds, out / "predictions.parquet")
    write_json(summary, metrics)
    typer.echo(
        f"eval[{model_dir}]: accuracy {summary['accuracy']:.3f} [{summary['accuracy_ci_low']:.3f}, "
        f"{summary['accuracy_ci_high']:.3f}], parse failures {summary['parse_fail_rate']:.3f}, n={summary['n']}"
    )


if __name__ == "__main__":
    typer.run(main)

"""Stage `entropy`: one student's single-token answer entropy on every train and test question."""

from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from caft import entropy, entropy_import
from caft.cli import stage
from caft.io import atomic_path, digest, write_json, write_table
from caft.models import load_model, load_tokenizer, pick_device, pick_dtype, weights
from caft.params import Params, load_params
from caft.prepare import load_prepared
from caft.roc import curve_wrong
from caft.scores import ENTROPY, SINGLE_TOKEN, long, valid_rows, write_each


def _from_model(
    p: Params, name: str, questions: pd.DataFrame, partial_dir: Path
) -> tuple[pd.DataFrame, entropy.PartialStore, str]:
    """Score with the model; the partial store is discarded only after the outputs are written. Also returns the
    exact weights scored with (`caft.models.weights`)."""
    spec = p.model(name)
    device = pick_device(p.entropy.device)
    dtype = pick_dtype(spec.dtype, device)
    tokenizer = load_tokenizer(spec)
    model = load_model(spec, device, dtype)
    settings = {
        "model": spec.loading(),
        "prompt": p.prompt.model_dump(),
        "dtype": str(dtype),
        "id_collision": p.entropy.id_collision,
        "max_new_tokens": p.entropy.max_new_tokens,
        "locate": p.entropy.locate,
    }
    store = entropy.PartialStore(partial_dir / name / f"{digest(settings, 16)}.jsonl")
    table = entropy.compute(
        questions,
        model,
        tokenizer,
        p.prompt,
        batch_size=p.entropy.batch_size,
        max_length=p.entropy.max_length,
        id_collision=p.entropy.id_collision,
        store=store,
        max_new_tokens=p.entropy.max_new_tokens,
        locate=p.entropy.locate,
    )
    return table, store, weights(spec, model)


@stage
def main(
    model: Annotated[str, typer.Option(help="student key under params.yaml `models`")],
    out: Annotated[Path, typer.Option(help="output folder (scores.parquet)")],
    metrics: Annotated[Path, typer.Option(help="metrics JSON")],
    plots: Annotated[Path, typer.Option(help="folder for ROC curve CSVs")],
    estimators_out: Annotated[Path, typer.Option(help="folder for the single-token estimators' files")],
    data: Annotated[Path, typer.Option(help="prepare's output folder")] = Path("data/prepared"),
    partial_dir: Annotated[Path, typer.Option(help="resumable partial results")] = Path(".caft/partial/entropy"),
    params: Annotated[Path, typer.Option()] = Path("params.yaml"),
) -> None:
    p = load_params(params)
    questions = load_prepared(data)
    store = None
    if p.entropy.source == "import":
        key = p.model(model).import_key or model
        raw = entropy_import.load_raw(p.entropy.import_, key)
        table = entropy_import.join(questions, raw, p.entropy.import_, key)
        scored_with = f"published: {p.entropy.import_.hub_id or Path(p.entropy.import_.path).name}"
    else:
        table, store, scored_with = _from_model(p, model, questions, partial_dir)
    summary = entropy.summarize(table)
    summary["weights"] = scored_with
    summary["n_unmatched"] = len(questions) - len(table)
    valid = valid_rows(table)
    with atomic_path(plots, directory=True) as tmp:
        for score in ("entropy", "entropy_options"):
            if valid[score].notna().all():
                curve_wrong(valid["correct"], valid[score]).to_csv(tmp / f"roc_{score}.csv", index=False)
    write_table(table, out / "scores.parquet")
    write_each(long(valid, {col: name for name, col in SINGLE_TOKEN.items()}, ENTROPY), estimators_out, SINGLE_TOKEN)
    write_json(summary, metrics)
    if store is not None:
        store.discard()
    auc = summary["roc_auc"]
    typer.echo(
        f"entropy[{model}]: n={summary['n']} valid={summary['valid_rate']:.3f} "
        f"accuracy={summary['accuracy']:.3f} ROC AUC (entropy -> wrong)="
        f"{'n/a' if auc is None else f'{auc:.3f}'}; metrics in {metrics}, ROC curve in {plots}"
    )


if __name__ == "__main__":
    typer.run(main)

"""What stopping CoT generation at the answer marker could save, measured on a built demo's predictions.

Evaluation already ends a row at its end token and drops it from the batch (caft.generation). A stop rule at
the marker could only save the tokens a row writes after its answer is complete. For each CoT prediction this
finds the earliest token after which the answer, read exactly as eval reads it (the last marker wins), never
changes again: no rule that keeps every reading can stop sooner, so the tokens after it bound the saving.

    python bench/cot_stop.py --root . --out bench/results/cot_stop.json   # after `make demo`
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
from record import stamp, write
from transformers import AutoTokenizer

from caft.evaluate import extract


def oracle_stop(ids: list[int], read: Callable[[list[int]], object]) -> int:
    """The fewest leading tokens whose reading, and that of every longer prefix, is the full output's (all of
    them where no answer was read: a marker stop never fires there)."""
    final = read(ids)
    k = len(ids)
    while final is not None and k > 0 and read(ids[: k - 1]) == final:
        k -= 1
    return k


def _read(tokenizer, n_options: int, reading: dict, ids: list[int]) -> object:
    return extract(tokenizer.decode(ids, skip_special_tokens=True), n_options, reading)


def measure(predictions: Path, model_dir: Path) -> dict:
    """Generated tokens, and those after each row's answer became final, for one eval run."""
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    reading = json.loads((model_dir / "caft_model.json").read_text())["reading"]
    df = pd.read_parquet(predictions)
    generated = after = 0
    for text, n in zip(df["output"], df["n_options"], strict=True):
        ids = tokenizer.encode(text, add_special_tokens=False)
        stop = oracle_stop(ids, partial(_read, tokenizer, int(n), reading))
        generated += len(ids)
        after += len(ids) - stop
    return {
        "rows": len(df),
        "cut_at_budget": int(df["cut"].sum()),
        "generated_tokens": generated,
        "tokens_after_final_answer": after,
        "share": round(after / generated, 4),
    }


def main(
    root: Annotated[Path, typer.Option(help="a project where the demo was built")] = Path("."),
    out: Annotated[Path, typer.Option(help="the JSON result")] = Path("bench/results/cot_stop.json"),
) -> None:
    evals = {}
    for pred in sorted(root.glob("data/eval/*/*/*/predictions.parquet")):
        if (pd.read_parquet(pred, columns=["mode"])["mode"] == "cot").all():
            run = "/".join(pred.parts[-4:-1])
            evals[run] = measure(pred, root / "models" / run)
    result = {**stamp(), "evals": evals}
    rows = [
        f"| {run} | {e['rows']} | {e['cut_at_budget']} | {e['generated_tokens']} | {e['tokens_after_final_answer']} "
        f"| {e['share']:.1%} |"
        for run, e in evals.items()
    ]
    write(
        out,
        result,
        "\n".join(
            [
                f"# CoT tokens a stop at the marker could save ({result['date']}, {result['machine']})",
                "",
                "Per CoT eval of the demo: the tokens each answer wrote after its reading (eval's: the last marker"
                " wins) became final, summed; an upper bound on what any stop rule that keeps every reading saves."
                " Rows cut at the budget keep their batch open to the budget whatever the others do.",
                "",
                "| run | rows | cut at budget | generated tokens | after the final answer | share |",
                "|---|---|---|---|---|---|",
                *rows,
            ]
        ),
    )


if __name__ == "__main__":
    typer.run(main)

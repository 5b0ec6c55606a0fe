"""Evaluation's generation, side by side in one run: transformers' `generate` on left-padded batches of 32 (the
loop evaluation used before caft.generation had its own) against caft.generation.greedy (shared prompt
opening computed once per batch, finished rows leaving the batch) at several batch sizes. Same trained demo
students, same 308 test questions, the eval stage's prompts and budgets: a CoT student (caft) and an
answer-only one (sft). Besides seconds, how many outputs are identical to the baseline's and the accuracy each
gives, so a faster loop is seen to answer the same. Run after `make demo` (it reads models/ and data/).

    python bench/generation.py --out bench/results/generation.json
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated

import pandas as pd
import torch
import typer
from record import stamp, write

from caft import evaluate
from caft.generation import Generated, greedy
from caft.params import load_params

STUDENT, SEED = "smollm2", 42
BATCH_SIZES = [32, 64, 128, 256]


@torch.inference_mode()
def baseline(model, tokenizer, texts: list[str], max_new_tokens: int, batch_size: int) -> list[Generated]:
    """The earlier loop: left-padded batches, longest prompt first, transformers' greedy `generate` until every
    row of the batch has ended."""
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    out: list[Generated | None] = [None] * len(texts)
    eos = tokenizer.eos_token_id
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        enc = tokenizer([texts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False)
        gen = model.generate(
            **enc, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, pad_token_id=tokenizer.pad_token_id,
            temperature=None, top_p=None, top_k=None, repetition_penalty=1.0,
        )  # fmt: skip
        for row, i in enumerate(gen[:, enc["input_ids"].shape[1] :].tolist()):
            ended = eos in i
            ids = i[: i.index(eos)] if ended else i
            out[idx[row]] = Generated(ids, tokenizer.decode(ids, skip_special_tokens=True), cut=not ended)
    return out  # type: ignore[return-value]


def run(loop, model, tokenizer, texts, budget, batch_size, questions, reading) -> tuple[float, list[str], float]:
    """Seconds, outputs and accuracy of one pass over the test questions."""
    began = time.perf_counter()
    generated = loop(model, tokenizer, texts, budget, batch_size)
    seconds = time.perf_counter() - began
    preds = evaluate.read_outputs(questions, generated, reading)
    return seconds, [g.text for g in generated], float(preds["correct"].mean())


def measure(strategy: str, questions: pd.DataFrame, cfg, batch_sizes: list[int]) -> dict:
    model, tokenizer, card = evaluate.load_trained(Path(f"models/{STUDENT}/{strategy}/{SEED}"), torch.device("cpu"))
    reading = card["reading"]
    texts = evaluate.prompt_texts(questions, reading, tokenizer)
    budget = evaluate.max_new_tokens(reading, cfg, questions, tokenizer)
    variants = {"generate, batch 32": (baseline, 32)}
    variants |= {f"caft greedy, batch {b}": (lambda *a: greedy(*a, desc="bench"), b) for b in batch_sizes}
    rows, reference = {}, None
    for name, (loop, batch_size) in variants.items():
        seconds, outputs, accuracy = run(loop, model, tokenizer, texts, budget, batch_size, questions, reading)
        reference = reference or (seconds, outputs)
        rows[name] = {
            "seconds": round(seconds, 1),
            "vs_generate": round(seconds / reference[0], 2),
            "identical_outputs": sum(a == b for a, b in zip(outputs, reference[1], strict=True)),
            "accuracy": round(accuracy, 4),
        }
        typer.echo(f"{strategy} {name}: {rows[name]}", err=True)
    return {"mode": reading["mode"], "budget": budget, "questions": len(texts), "variants": rows}


def to_markdown(result: dict) -> str:
    lines = [f"# Evaluation's generation ({result['date']}, {result['machine']})", ""]
    for strategy, r in result["students"].items():
        lines += [
            f"## {STUDENT} {strategy} ({r['mode']}, budget {r['budget']} tokens, {r['questions']} questions)",
            "",
            "| loop | seconds | vs generate | outputs identical | accuracy |",
            "|---|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {name} | {v['seconds']} | {v['vs_generate']} | {v['identical_outputs']} / {r['questions']} | "
            f"{v['accuracy']} |"
            for name, v in r["variants"].items()
        ]
        lines.append("")
    return "\n".join(lines)


def main(
    out: Annotated[Path, typer.Option(help="the JSON result; a markdown table is written beside it")] = Path(
        "bench/results/generation.json"
    ),
    batch_sizes: Annotated[list[int], typer.Option("--batch-size", help="caft greedy's batch sizes")] = BATCH_SIZES,
) -> None:
    torch.set_num_threads(os.cpu_count() or 1)
    cfg = load_params(Path("params.yaml")).eval
    questions = pd.read_parquet("data/prepared/test.parquet")
    students = {s: measure(s, questions, cfg, batch_sizes) for s in ("caft", "sft")}
    result = {**stamp(f"torch {torch.__version__}"), "students": students}
    write(out, result, to_markdown(result))


if __name__ == "__main__":
    typer.run(main)

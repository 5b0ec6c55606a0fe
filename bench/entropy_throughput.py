"""Entropy throughput: our batched stage vs the authors' per-item `generate(output_scores=True)` vs a bare
batched forward pass, on the same model and the same rendered prompts, measured side by side in one run.

    python bench/entropy_throughput.py --out bench/results/entropy_throughput.json
"""

from __future__ import annotations

import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
import typer

from caft import entropy, tokens
from caft.models import load_model, load_tokenizer
from caft.params import ModelSpec, PromptParams, SyntheticData
from caft.sources.synthetic import generate

# The measured setup: multiple-choice questions asked with the paper's prompt (subject, fallback, letters).
PROMPT = PromptParams(variant="fallback", option_ids="letter", subject=True, answer_prefix="", dataset="generic")


def ours(model, tok, questions, batch_size: int) -> np.ndarray:
    """The entropy stage's library call (rendering, tokenisation, batching, resume store included)."""
    with tempfile.TemporaryDirectory() as tmp:
        store = entropy.PartialStore(Path(tmp) / "p.jsonl")
        table = entropy.compute(
            questions,
            model,
            tok,
            PROMPT,
            batch_size=batch_size,
            max_length=4096,
            id_collision="error",
            store=store,
            progress=False,
        )
    return table["entropy"].to_numpy()


@torch.inference_mode()
def per_item_generate(model, tok, prompts: list[str]) -> np.ndarray:
    """The authors' approach: one `generate(max_new_tokens=1, output_scores=True)` call per question."""
    out = []
    for text in prompts:
        enc = tok(text, return_tensors="pt", add_special_tokens=False)
        gen = model.generate(
            **enc,
            max_new_tokens=1,
            do_sample=False,
            output_scores=True,
            return_dict_in_generate=True,
            pad_token_id=tok.pad_token_id,
        )
        out.append(float(tokens.entropy_nats(gen.scores[0][0])))
    return np.array(out)


@torch.inference_mode()
def bare_forward(model, tok, prompts: list[str], batch_size: int) -> np.ndarray:
    """Lower bound: left-padded batches through `model(...)`, full logits, nothing else."""
    out = []
    for start in range(0, len(prompts), batch_size):
        enc = tok(prompts[start : start + batch_size], return_tensors="pt", padding=True, add_special_tokens=False)
        out.extend(tokens.entropy_nats(model(**enc).logits[:, -1, :]).tolist())
    return np.array(out)


def _timed(fn, *args) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    values = fn(*args)
    return time.perf_counter() - start, values


def bench_model(ref: str, n: int, batch_size: int) -> dict:
    spec = ModelSpec(ref=ref, dtype="float32")
    model, tok = load_model(spec, torch.device("cpu"), torch.float32), load_tokenizer(spec)
    data = SyntheticData(
        n_questions=n, min_steps=1, max_steps=4, min_options=4, max_options=10, families=["arithmetic", "units"]
    )
    questions = generate(data, seed=123)
    questions["subset"] = "train"
    prompts = entropy.render_prompts(questions, tok, PROMPT)
    ours(model, tok, questions.head(batch_size), batch_size)  # warm-up (first-call allocations)
    t_ours, h_ours = _timed(ours, model, tok, questions, batch_size)
    t_item, h_item = _timed(per_item_generate, model, tok, prompts)
    t_bare, _ = _timed(bare_forward, model, tok, prompts, batch_size)
    return {
        "model": ref,
        "n_questions": n,
        "batch_size": batch_size,
        "mean_prompt_tokens": float(np.mean([len(tok.encode(p, add_special_tokens=False)) for p in prompts])),
        "seconds": {"ours": round(t_ours, 3), "per_item_generate": round(t_item, 3), "bare_forward": round(t_bare, 3)},
        "questions_per_second": {
            "ours": round(n / t_ours, 2),
            "per_item_generate": round(n / t_item, 2),
            "bare_forward": round(n / t_bare, 2),
        },
        "speedup_vs_per_item": round(t_item / t_ours, 2),
        "slowdown_vs_bare_forward": round(t_ours / t_bare, 2),
        "max_abs_entropy_diff_vs_per_item": float(np.abs(h_ours - h_item).max()),
    }


def main(
    out: Annotated[Path, typer.Option(help="results JSON (a .md table is written beside it)")] = Path(
        "bench/results/entropy_throughput.json"
    ),
    n_tiny: int = 256,
    n_smollm2: int = 96,
    batch_size: int = 16,
) -> None:
    torch.manual_seed(0)
    results = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
        },
        "date": time.strftime("%Y-%m-%d"),
        "runs": [
            bench_model("tiny", n_tiny, batch_size),
            bench_model("packaged:smollm2-135m-instruct", n_smollm2, batch_size),
        ],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    lines = [
        "| model | n | batch | ours q/s | per-item generate q/s | bare forward q/s | speed-up vs per-item | "
        "ours / bare time | max abs ΔH |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["runs"]:
        q = r["questions_per_second"]
        lines.append(
            f"| {r['model']} | {r['n_questions']} | {r['batch_size']} | {q['ours']} | "
            f"{q['per_item_generate']} | {q['bare_forward']} | {r['speedup_vs_per_item']}× | "
            f"{r['slowdown_vs_bare_forward']}× | {r['max_abs_entropy_diff_vs_per_item']:.2e} |"
        )
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    typer.run(main)

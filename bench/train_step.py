"""One training step of the demo, three ways, side by side in one run: a bare PEFT step (the model's own
causal-LM loss over every position, backward, AdamW), TRL's SFTTrainer step (its fused LM head), and the
trainer train.py builds (the head at the label positions only, caft.sft_head). Same model, same LoRA init, same
batch: the demo's answer-only (sft) and CoT (distill) batches from data/sets (run `make demo`, or at least
`dvc repro sets@smollm2`, first). The losses of the three are compared too: the faster step must compute the
same loss.

    python bench/train_step.py --out bench/results/train_step.json
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Annotated

import pandas as pd
import torch
import typer
from record import stamp, write
from trl import SFTTrainer

from caft import train
from caft.models import load_tokenizer
from caft.params import load_params
from caft.sft_head import CompactHeadSFTTrainer

STUDENT, SEED = "smollm2", 42


def trainers(kind: type, setup: train.Setup, rows: pd.DataFrame, out: Path):
    """A trainer of `kind` as train.py configures it, and one batch from its own data loader."""
    model = train._base_model(setup, on_gpu=False)
    config = train._sft_config(setup.params, out, 1.0, False, False, SEED)
    trainer = kind(
        model=model,
        args=config,
        train_dataset=train.to_dataset(rows),
        processing_class=load_tokenizer(setup.spec),
    )
    trainer.create_optimizer_and_scheduler(num_training_steps=10)
    batch = next(iter(trainer.get_train_dataloader()))
    return trainer, batch


def bare_step(trainer, batch) -> float:
    """A plain PEFT step: the model's own loss (every position through the head), backward, AdamW."""
    model = trainer.model
    loss = model(**batch).loss
    loss.backward()
    trainer.optimizer.step()
    trainer.optimizer.zero_grad()
    return loss.item()


def trainer_step(trainer, batch) -> float:
    """What the Trainer does per step: compute_loss (normalised by the batch's label count), backward, AdamW."""
    items = (batch["labels"][:, 1:] != -100).sum()
    loss = trainer.compute_loss(trainer.model, dict(batch), num_items_in_batch=items)
    loss.backward()
    trainer.optimizer.step()
    trainer.optimizer.zero_grad()
    return loss.item()


def measure(variants: dict, rounds: int, reps: int) -> dict:
    """Per-step seconds, alternating the variants ABAB… so machine load falls on all alike; each variant's
    first step (warm-up) is not counted; its loss at that first step is kept for the comparison."""
    times = {name: [] for name in variants}
    first = {name: step(*args) for name, (step, args) in variants.items()}
    for _ in range(rounds):
        for name, (step, args) in variants.items():
            for _ in range(reps):
                start = time.perf_counter()
                step(*args)
                times[name].append(time.perf_counter() - start)
    return {"first_loss": first, "times": times}


def main(
    out: Annotated[Path, typer.Option(help="the JSON result; a markdown table is written beside it")] = Path(
        "bench/results/train_step.json"
    ),
    rounds: Annotated[int, typer.Option(help="ABAB rounds")] = 3,
    reps: Annotated[int, typer.Option(help="steps per variant per round")] = 3,
) -> None:
    torch.set_num_threads(os.cpu_count() or 1)
    p = load_params(Path("params.yaml"))
    results = {}
    for strategy in ("sft", "distill"):
        rows = pd.read_parquet(f"data/sets/{STUDENT}/{strategy}/{SEED}.parquet")
        rows = rows[(rows["phase"] == 0) & (rows["subset"] == "train")]
        setup = train.Setup(p.model(STUDENT), strategy, p, "bench", SEED)
        with tempfile.TemporaryDirectory() as tmp:
            variants = {}
            for name, kind, step in (
                ("bare PEFT step", SFTTrainer, bare_step),
                ("TRL SFTTrainer (fused head)", SFTTrainer, trainer_step),
                ("caft's trainer (head at labels)", CompactHeadSFTTrainer, trainer_step),
            ):
                torch.manual_seed(SEED)
                trainer, batch = trainers(kind, setup, rows, Path(tmp) / name.replace(" ", "_"))
                variants[name] = (step, (trainer, batch))
            shape = list(variants["bare PEFT step"][1][1]["input_ids"].shape)
            labels = int((variants["bare PEFT step"][1][1]["labels"] != -100).sum())
            measured = measure(variants, rounds, reps)
        bare = statistics.median(measured["times"]["bare PEFT step"])
        results[strategy] = {
            "batch": shape,
            "label_tokens": labels,
            "variants": {
                name: {
                    "median_s": round(statistics.median(t), 3),
                    "min_s": round(min(t), 3),
                    "median_vs_bare": round(statistics.median(t) / bare, 2),
                    "min_vs_bare": round(min(t) / min(measured["times"]["bare PEFT step"]), 2),
                    "first_loss": measured["first_loss"][name],
                }
                for name, t in measured["times"].items()
            },
        }
    report = {**stamp(f"torch {torch.__version__}"), "rounds": rounds, "reps": reps, "results": results}
    write(out, report, markdown(report))
    typer.echo(markdown(report))


def markdown(report: dict) -> str:
    lines = [
        f"# One training step of the demo ({report['date']}, {report['machine']})",
        "",
        f"Seconds per step (forward, loss, backward, AdamW), {report['rounds']} rounds x {report['reps']} steps each, "
        "the variants alternating; ratios to the bare PEFT step. The bare step's loss is the mean over every "
        "position with a label of the model's own loss; the trainers normalise by the same label count, so "
        "their first losses agree to float precision.",
        "",
        "| batch | variant | median s | min s | median / bare | min / bare | first loss |",
        "|---|---|---|---|---|---|---|",
    ]
    for strategy, r in report["results"].items():
        what = f"{strategy} {r['batch'][0]}x{r['batch'][1]}, {r['label_tokens']} label tokens"
        for name, v in r["variants"].items():
            lines.append(
                f"| {what} | {name} | {v['median_s']} | {v['min_s']} | {v['median_vs_bare']} | "
                f"{v['min_vs_bare']} | {v['first_loss']:.6f} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    typer.run(main)

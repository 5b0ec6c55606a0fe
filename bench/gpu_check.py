"""The GPU check (`make gpu-check`): the demo's entropy, one training (caft) and its evaluation on a device, in
the precision the pipeline picks there (bf16 on a GPU), checked against the same run on CPU in float32.

The run is the pipeline itself, nothing re-implemented: a copy of the project (the files git lists, and
params.yaml with any --profile applied) in which each stage that `eval@<student>-caft-<seed>` needs
runs alone through `dvc repro --single-item`, timed, with an empty model cache (the packaged model's one-time
conversion lands in the entropy stage). Nothing is downloaded. The workspace is not touched.

What it compares with the CPU reference (bench/results/gpu_check_cpu.json, recorded by `--device cpu`):
per-question first-answer-token entropies, the training loss of each phase, the per-question answers and the
accuracy, each within TOLERANCE; and it prints each stage's time beside the reference's.

    python bench/gpu_check.py --device cuda --reference bench/results/gpu_check_cpu.json \\
        --out bench/results/gpu_check.json                                            # make gpu-check
    python bench/gpu_check.py --device cpu --out bench/results/gpu_check_cpu.json    # records the reference
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
import yaml
from demo_stages import ROOT, head_rule, stage_order, timed_pass
from record import stamp, write
from scipy.stats import spearmanr

from caft.params import Params, parse_params
from caft.profile import apply, merged_overrides

STRATEGY = "caft"  # the one training the check runs: the paper's own strategy, both of its phases

# How each device is asked for. The training stage uses the GPU whenever torch sees one, so the CPU run hides it.
DEVICES: dict[str, tuple[dict[str, object], dict[str, str]]] = {
    "cpu": (
        {"entropy.device": "cpu", "eval.device": "cpu", "train.accelerate_config": "configs/accelerate/cpu.yaml"},
        {"CUDA_VISIBLE_DEVICES": ""},
    ),
    "cuda": (
        {"entropy.device": "cuda", "eval.device": "cuda", "train.accelerate_config": "configs/accelerate/gpu.yaml"},
        {},
    ),
}

# bf16 keeps 8 bits of mantissa (about 0.4 % per value), float32 24. So a GPU run cannot repeat the CPU's
# numbers, only their science: the entropies must rank the questions the same way (the split uses ranks), the
# losses must agree to a few per cent, and a greedy answer may flip only where the top two tokens are nearly
# tied. A CPU run against the CPU reference agrees to ~1e-6 on every line.
TOLERANCE = {
    "entropy_spearman": ("min", 0.98),  # rank correlation of the per-question entropies
    "entropy_mean_abs_diff": ("max", 0.05),  # nats, averaged over questions
    "train_loss_rel_diff": ("max", 0.05),  # the largest over the phases, relative to the reference
    "answers_agree": ("min", 0.85),  # share of test questions given the same parsed answer
    "accuracy_abs_diff": ("max", 0.05),
}


def copy_project(root: Path) -> None:
    """The files git lists (a clone's content, uncommitted edits included), as a fresh git repository."""
    listed = ["git", "ls-files", "--cached", "--others", "--exclude-standard"]
    for rel in subprocess.run(listed, cwd=ROOT, capture_output=True, text=True, check=True).stdout.splitlines():
        if (ROOT / rel).is_file():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, root / rel)
    for cmd in (
        ["init", "-q"],
        ["add", "-A"],
        ["-c", "user.name=caft", "-c", "user.email=caft@localhost", "commit", "-qm", "gpu check"],
    ):
        subprocess.run(["git", *cmd], cwd=root, check=True, stdout=subprocess.DEVNULL)


def checked_params(params_file: Path, profiles: list[Path]) -> tuple[dict, Params, str]:
    """The params with the profiles applied, validated, and their digest: a reference recorded with other
    params is another experiment, and comparing with it would say nothing."""
    raw = apply(yaml.safe_load(params_file.read_text()), merged_overrides(profiles))
    params = parse_params(raw)
    if STRATEGY not in params.strategies:
        raise typer.BadParameter(f"the params run no {STRATEGY} strategy, which is what the check trains")
    digest = hashlib.sha256(json.dumps(raw, sort_keys=True).encode()).hexdigest()[:16]
    return raw, params, digest


def collect(root: Path, student: str, seed: int) -> dict:
    """What the stages computed, per question where it is per question."""
    scores = pd.read_parquet(root / f"data/entropy/{student}/scores.parquet").dropna(subset=["entropy"])
    train = json.loads((root / f"metrics/train/{student}/{STRATEGY}/{seed}.json").read_text())
    preds = pd.read_parquet(root / f"data/eval/{student}/{STRATEGY}/{seed}/predictions.parquet")
    evaluation = json.loads((root / f"metrics/eval/{student}/{STRATEGY}/{seed}.json").read_text())
    return {
        "entropy": {q: round(float(v), 6) for q, v in zip(scores["question_id"], scores["entropy"], strict=True)},
        "train_loss": {k: v for k, v in train.items() if k.startswith("phase") and k.endswith("_train_loss")},
        "answers": dict(zip(preds["question_id"], preds["parsed_answer"], strict=True)),
        "accuracy": evaluation["accuracy"],
    }


def distances(run: dict, reference: dict) -> dict[str, float]:
    """How far the run is from the reference, one number per TOLERANCE line."""
    questions = sorted(reference["entropy"])
    if sorted(run["entropy"]) != questions or sorted(run["answers"]) != sorted(reference["answers"]):
        raise ValueError("the run and the reference scored different questions")
    ours = [run["entropy"][q] for q in questions]
    theirs = [reference["entropy"][q] for q in questions]
    losses = reference["train_loss"]
    return {
        "entropy_spearman": round(float(spearmanr(ours, theirs).statistic), 6),
        "entropy_mean_abs_diff": round(sum(abs(a - b) for a, b in zip(ours, theirs, strict=True)) / len(ours), 6),
        "train_loss_rel_diff": round(max(abs(run["train_loss"][k] - v) / abs(v) for k, v in losses.items()), 6),
        "answers_agree": round(
            sum(run["answers"][q] == a for q, a in reference["answers"].items()) / len(reference["answers"]), 6
        ),
        "accuracy_abs_diff": round(abs(run["accuracy"] - reference["accuracy"]), 6),
    }


def failures(measured: dict[str, float]) -> list[str]:
    """The TOLERANCE lines a run does not meet, one sentence each."""
    out = []
    for name, (side, bound) in TOLERANCE.items():
        value = measured[name]
        if (side == "min" and value < bound) or (side == "max" and value > bound):
            out.append(f"{name} = {value}, outside the tolerance ({side} {bound})")
    return out


def to_markdown(result: dict, reference: dict | None) -> str:
    """Each stage's time beside the reference's, then each check beside its tolerance."""
    times = {**result["stage_s"], "**total**": round(sum(result["stage_s"].values()), 1)}
    head = f"| stage | {result['device']} s |"
    lines = [f"# GPU check: {result['device']} ({result['date']}, {result['machine']})", ""]
    if reference:
        ref_s = {**reference["stage_s"], "**total**": round(sum(reference["stage_s"].values()), 1)}
        head += f" reference ({reference['device']}) s | ratio |"
        lines += [f"Reference: {reference['device']} ({reference['date']}, {reference['machine']}).", ""]
    lines += [head, head_rule(head)]
    for name, s in times.items():
        lines.append(f"| {name} | {s} |" + (f" {ref_s[name]} | {s / ref_s[name]:.2f} |" if reference else ""))
    losses = ", ".join(f"{k.split('_')[0]} {v:.4f}" for k, v in result["train_loss"].items())
    lines += ["", f"The {STRATEGY} model's accuracy: {result['accuracy']}; its mean training loss per phase: {losses}."]
    if reference:
        lines += ["", "| check | measured | tolerance |", "|---|---|---|"]
        lines += [f"| {k} | {v} | {TOLERANCE[k][0]} {TOLERANCE[k][1]} |" for k, v in result["distances"].items()]
    return "\n".join(lines) + "\n"


def main(
    device: Annotated[str, typer.Option(help="cuda (the check) or cpu (records the reference)")],
    out: Annotated[Path, typer.Option(help="results JSON (a .md table is written beside it)")],
    reference: Annotated[Path | None, typer.Option(help="a CPU run's results JSON to check against")] = None,
    profile: Annotated[
        list[Path] | None, typer.Option(help="params overrides applied on top (as `caft profile`)")
    ] = None,
    params: Annotated[Path, typer.Option(help="the params to start from")] = ROOT / "params.yaml",
) -> None:
    if device not in DEVICES:
        raise typer.BadParameter(f"{device} is not one of {', '.join(DEVICES)}", param_hint="--device")
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        typer.echo(f"gpu-check: torch {torch.__version__} sees no CUDA device (a CPU build, or no GPU here)", err=True)
        raise typer.Exit(2)
    raw, checked, digest = checked_params(params, profile or [])
    ref = json.loads(reference.read_text()) if reference else None
    if ref is not None and ref["params_sha256"] != digest:
        typer.echo(f"gpu-check: {reference} was recorded with other params (re-record it with --device cpu)", err=True)
        raise typer.Exit(2)
    overrides, device_env = DEVICES[device]
    # dvc and the stages' python: this interpreter's, also where its folder is not on PATH (`.venv/bin/python ...`)
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    student, seed = checked.students[0], checked.seeds[0]
    result = {**stamp(f"torch {torch.__version__}"), "device": device, "params_sha256": digest, "tolerance": TOLERANCE}
    with tempfile.TemporaryDirectory() as tmp:
        root, cache = Path(tmp) / "project", Path(tmp) / "cache"
        copy_project(root)
        (root / "params.yaml").write_text(yaml.safe_dump(apply(raw, overrides), sort_keys=False))
        env = {
            **os.environ,
            **device_env,
            "CAFT_CACHE_DIR": str(cache),
            "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
        }
        stages = stage_order(root, f"eval@{student}-{STRATEGY}-{seed}")
        try:
            result["stage_s"] = timed_pass(stages, env, root)
        except subprocess.CalledProcessError as exc:  # the stage's own error is above; nothing is written
            typer.echo(f"gpu-check: {exc.cmd[-1]} failed (exit {exc.returncode}); nothing written", err=True)
            raise typer.Exit(1) from None
        result.update(collect(root, student, seed))
    if ref is not None:
        result["distances"] = distances(result, ref)
    write(out, result, to_markdown(result, ref))
    typer.echo(to_markdown(result, ref))
    missed = failures(result["distances"]) if ref is not None else []
    for line in missed:
        typer.echo(f"gpu-check: {line}", err=True)
    if missed:
        raise typer.Exit(1)


if __name__ == "__main__":
    typer.run(main)

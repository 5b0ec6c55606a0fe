"""Supervised fine-tuning of one student with one strategy: TRL's SFTTrainer on prompt–completion data in the
student's chat template (completion-only loss), PEFT LoRA or full fine-tuning, phase after phase on the same
model object (so phase 2 starts from phase 1's weights), resumable from the last checkpoint of the current
phase after an interruption.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from datasets import Dataset
from transformers import TrainerCallback, set_seed
from transformers.trainer_utils import get_last_checkpoint

from caft import epochs as epochs_mod
from caft import reestimate, strategies
from caft.epochs import EpochEval
from caft.errors import CaftError
from caft.faults import kill_point
from caft.io import atomic_path, digest
from caft.models import MODEL_CARD, load_model, load_tokenizer, pick_device, public_name, weights, write_card
from caft.params import ModelSpec, Params

DONE = "PHASE_DONE"
# What a checkpoint folder holds (trainer checkpoints, finished phases, per-epoch records): bumped when that
# changes, so a run resumed after an upgrade starts afresh instead of reading a folder of the old layout.
CHECKPOINT_FORMAT = 2


def to_dataset(rows: pd.DataFrame) -> Dataset:
    """Conversational prompt–completion rows: TRL applies the chat template and masks the prompt."""
    return Dataset.from_list(
        [
            {"prompt": json.loads(m), "completion": [{"role": "assistant", "content": c}]}
            for m, c in zip(rows["messages"], rows["completion"], strict=True)
        ]
    )


def example_length(tokenizer, messages: list[dict], completion: str) -> int:
    """Tokens of prompt + completion in the chat template, as the trainer will see them."""
    full = [*messages, {"role": "assistant", "content": completion}]
    return len(tokenizer.apply_chat_template(full, tokenize=True, return_dict=True)["input_ids"])


def check_lengths(tokenizer, rows: pd.DataFrame, max_length: int) -> None:
    """TRL truncates silently at max_length, which would cut the answer off a long CoT target: refuse."""
    for qid, messages, completion in zip(rows["question_id"], rows["messages"], rows["completion"], strict=True):
        n = example_length(tokenizer, json.loads(messages), completion)
        if n > max_length:
            raise CaftError(
                f"training example {qid!r} has {n} tokens, above train.max_length={max_length}; raise it "
                "(targets are never truncated)"
            )


def target_tokens(tokenizer, rows: pd.DataFrame, epochs: list[float]) -> dict:
    """Training-target (response) tokens, counted the two ways the paper does: one pass over the data, and
    weighted by each phase's epochs."""
    n = rows["completion"].map(lambda c: len(tokenizer.encode(c, add_special_tokens=False)))
    out = {
        "target_tokens_one_pass": int(n.sum()),
        "target_tokens_epoch_weighted": float(sum(n[rows["phase"] == k].sum() * e for k, e in enumerate(epochs))),
        "answer_target_tokens": int(n[rows["kind"] == "answer"].sum()),
        "cot_target_tokens": int(n[rows["kind"] == "cot"].sum()),
    }
    return out


class LiveLogger(TrainerCallback):
    """Training curves to dvclive, one step axis across phases (the stock callback ends its run per phase)."""

    CURVES = ("loss", "learning_rate", "grad_norm", "mean_token_accuracy", "eval_loss", "eval_mean_token_accuracy")

    def __init__(self, live, phase: int, step_offset: int):
        self.live, self.phase, self.offset = live, phase, step_offset

    def on_train_begin(self, args, state, control, **kwargs):
        """On a resume the trainer state comes back from the checkpoint with the log of the steps before the
        kill, while the stage's curve folder started empty: replay it, so the curve covers the whole run."""
        if state.is_world_process_zero:
            self.replay(state.log_history)

    def replay(self, log_history: list[dict]) -> None:
        """Log steps already trained (before a kill, or a whole phase finished before it) as they were logged."""
        for logs in log_history:
            self._log(logs, logs.get("step", 0))

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            self._log(logs, state.global_step)

    def _log(self, logs: dict, step: int) -> None:
        curves = {k: v for k, v in logs.items() if k in self.CURVES and isinstance(v, int | float)}
        if not curves:
            return
        self.live.step = self.offset + step
        for key, value in curves.items():
            prefix = "eval" if key.startswith("eval_") else "train"
            self.live.log_metric(f"{prefix}/{key.removeprefix('eval_')}", value)
        self.live.log_metric("train/phase", self.phase)
        self.live.make_summary()


def at_epoch_end(state) -> bool:
    """Whether the trainer state is where an epoch ended (a checkpoint there resumes with the next epoch)."""
    return bool(state.global_step) and round(state.epoch or 0, 6).is_integer()


class EvalAtResume(TrainerCallback):
    """The trainer's own end-of-epoch evaluation (eval_loss) for a run resumed from a checkpoint taken where an
    epoch ended: that checkpoint is written before the epoch's evaluation, and the resumed trainer goes on with
    the next epoch, so without this the curve would lack that epoch's point (the phase's last, after a kill
    during its per-epoch pass or while saving)."""

    def __init__(self):
        self.trainer = None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        evaluated = any("eval_loss" in e and e.get("step") == state.global_step for e in state.log_history)
        if self.trainer is not None and self.trainer.eval_dataset is not None and at_epoch_end(state) and not evaluated:
            was_training = model.training
            self.trainer.evaluate()
            model.train(was_training)


class KillPoints(TrainerCallback):
    """`caft.faults` points inside a phase: after optimizer step n (`train:phase{k}:step{n}`)."""

    def __init__(self, phase: int):
        self.phase = phase

    def on_step_end(self, args, state, control, **kwargs):
        kill_point(f"train:phase{self.phase}:step{state.global_step}")


@dataclass
class Setup:
    """Everything that decides the trained weights, hashed to name the checkpoint folder."""

    spec: ModelSpec
    strategy: str
    params: Params
    sets_digest: str
    seed: int = 42  # the training seed (one of `seeds`): LoRA init, data order, dropout
    reband: dict | None = None  # a re-banded phase's settings (the sets stage's card; caft.reestimate)

    def fingerprint(self) -> str:
        payload = {
            "checkpoint_format": CHECKPOINT_FORMAT,
            "spec": self.spec.loading(),
            "strategy": self.strategy,
            "seed": self.seed,
            "train": self.params.train.model_dump(),
            "eval": self.params.eval.model_dump(include={"every_epoch", "every_epoch_test", "select", "backend"}),
            "sets": self.sets_digest,
            **({"reband": self.reband} if self.reband else {}),
        }
        return digest(payload, 16)


def _sft_config(p: Params, out: Path, epochs: float, has_eval: bool, on_gpu: bool, seed: int):
    from trl import SFTConfig

    t = p.train
    return SFTConfig(
        output_dir=str(out),
        num_train_epochs=epochs,
        learning_rate=t.learning_rate,
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        max_length=t.max_length,
        max_grad_norm=t.max_grad_norm,
        warmup_steps=t.warmup_steps,
        lr_scheduler_type=t.lr_scheduler,
        weight_decay=t.weight_decay,
        bf16=on_gpu and torch.cuda.is_bf16_supported(),
        fp16=False,
        use_cpu=not on_gpu,
        activation_checkpointing=t.gradient_checkpointing,  # transformers 5's name for gradient checkpointing
        completion_only_loss=True,
        seed=seed,
        data_seed=seed,
        logging_steps=1,
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=1,
        eval_strategy="epoch" if has_eval else "no",
        report_to="none",
        dataloader_num_workers=0,
        # every trainable parameter (the LoRA adapters, or the whole model) takes part in each forward: DDP's search
        # for unused ones is an extra pass over the autograd graph every step, which torch warns about on each run
        # (and which breaks gradient checkpointing); transformers turns it on for a PEFT model or without checkpointing
        ddp_find_unused_parameters=False,
    )


def _base_model(setup: Setup, on_gpu: bool):
    """The student to train: LoRA adapters on a frozen base, or the full model."""
    t = setup.params.train
    dtype = torch.bfloat16 if on_gpu and t.lora.enabled and torch.cuda.is_bf16_supported() else torch.float32
    model = load_model(setup.spec, torch.device("cpu"), dtype)
    model.train()
    if not t.lora.enabled:
        return model
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=t.lora.r,
        lora_alpha=t.lora.alpha,
        lora_dropout=t.lora.dropout,
        target_modules=lora_targets(model, t.lora.target_modules),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


# Architectures that fuse projections (Phi-3 / Phi-4-mini: qkv_proj, gate_up_proj) carry the separate names'
# weights in one layer: a list written for Llama / Qwen means the fused layer there.
FUSED = {
    "q_proj": "qkv_proj",
    "k_proj": "qkv_proj",
    "v_proj": "qkv_proj",
    "gate_proj": "gate_up_proj",
    "up_proj": "gate_up_proj",
}


def lora_targets(model, listed: list[str]) -> list[str]:
    """`train.lora.target_modules` as names that exist in this model, so that no listed projection is skipped.

    PEFT wraps whatever names match and silently ignores the rest: on Phi-3 the usual seven names adapt only
    `o_proj` and `down_proj`. Here each name maps to itself, or to its fused layer, or stops the run with one
    line. The head (`lm_head`) is never a default target."""
    linear = sorted(
        {name.rsplit(".", 1)[-1] for name, mod in model.named_modules() if isinstance(mod, torch.nn.Linear)}
    )
    out: list[str] = []
    for name in listed:
        found = name if name in linear else FUSED.get(name) if FUSED.get(name) in linear else None
        if found is None:
            kind = type(model).__name__
            raise CaftError(
                f"train.lora.target_modules: {name!r} matches no linear layer of {kind} (its linear "
                f"layers: {', '.join(linear)})"
            )
        if found not in out:
            out.append(found)
    return out


def _restore(model, folder: Path, lora: bool):
    """Load a finished phase's weights into the live model (after an interruption in a later phase)."""
    from safetensors.torch import load_file

    if lora:
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, load_file(folder / "adapter_model.safetensors"))
    else:
        missing, unexpected = model.load_state_dict(load_file(folder / "model.safetensors"), strict=False)
        if unexpected or [k for k in missing if "lm_head" not in k]:
            raise CaftError(f"checkpoint {folder} does not match the model (missing {missing[:3]})")
    return model


def run_loss(log_history: list[dict]) -> float | None:
    """Mean training loss over every logged step of the phase. The trainer's own `training_loss` averages only
    the steps of the last process, so after a resume it would describe part of the run; the log history comes
    back with the checkpoint and covers all of it."""
    losses = [entry["loss"] for entry in log_history if "loss" in entry]
    return sum(losses) / len(losses) if losses else None


def run(
    setup: Setup,
    sets: pd.DataFrame,
    ckpt_root: Path,
    live=None,
    callbacks: list | None = None,
    epoch_eval: EpochEval | None = None,
) -> tuple:
    """Train every phase in order; returns (model, tokenizer, per-phase results). With `epoch_eval`, the
    validation carve is answered after every epoch, and under `eval.select: best` the weights returned are
    the best epoch's."""
    from caft.sft_head import CompactHeadSFTTrainer

    p, strategy = setup.params, strategies.get(setup.strategy)
    epochs = p.train.epochs[setup.strategy]
    on_gpu = pick_device("auto").type == "cuda"
    tokenizer = load_tokenizer(setup.spec)
    check_lengths(tokenizer, sets, p.train.max_length)
    set_seed(setup.seed)
    model = _base_model(setup, on_gpu)
    results, step_offset = [], 0
    for k, phase in enumerate(strategy.phases):
        rows = sets[sets["phase"] == k]
        folder = ckpt_root / f"phase{k}"
        if (folder / "final" / DONE).exists():
            model = _restore(model, folder / "final", p.train.lora.enabled)
            done = json.loads((folder / "final" / DONE).read_text())
            if live is not None:  # the phase's curve, as it was logged before the kill
                LiveLogger(live, k, step_offset).replay(done.pop("log_history", []))
            results.append({key: v for key, v in done.items() if key != "log_history"})
            step_offset += results[-1]["steps"]
            continue
        if phase.reband:
            rows = _rebanded_rows(model, tokenizer, setup, rows, ckpt_root, k)
        train_rows, eval_rows = rows[rows["subset"] == "train"], rows[rows["subset"] == "validation"]
        if train_rows.empty:
            raise CaftError(f"strategy {setup.strategy!r} phase {k} ({phase.items}) has no training rows")
        cbs = list(callbacks or []) + ([LiveLogger(live, k, step_offset)] if live is not None else [])
        cbs.append(KillPoints(k))
        if epoch_eval is not None:
            cbs.append(epoch_eval.callback(k, epochs_mod.epochs_run(epochs[:k]), step_offset))
        resumed_eval = EvalAtResume()
        trainer = CompactHeadSFTTrainer(
            model=model,
            args=_sft_config(p, folder, epochs[k], not eval_rows.empty, on_gpu, setup.seed),
            train_dataset=to_dataset(train_rows),
            eval_dataset=to_dataset(eval_rows) if len(eval_rows) else None,
            processing_class=tokenizer,
            callbacks=[*cbs, resumed_eval],
        )
        resumed_eval.trainer = trainer
        last = get_last_checkpoint(str(folder)) if folder.exists() else None
        output = trainer.train(resume_from_checkpoint=last)
        model = trainer.model
        state = trainer.state
        result = {
            "phase": k,
            "kind": phase.kind,
            "items": phase.items,
            "n": len(train_rows),
            "epochs": epochs[k],
            "steps": state.global_step,
            "train_loss": run_loss(state.log_history),
            "runtime_s": output.metrics.get("train_runtime"),
            "resumed_from": Path(last).name if last else None,
        }
        if trainer.is_world_process_zero():
            kill_point(f"train:phase{k}:save")
            trainer.save_model(str(folder / "final"))
            with atomic_path(folder / "final" / DONE) as tmp:  # the marker is whole, or the phase is not done
                tmp.write_text(json.dumps({**result, "log_history": state.log_history}))
        results.append(result)
        step_offset += trainer.state.global_step
    if epoch_eval is not None and epoch_eval.main and p.eval.select == "best":  # the main process saves the model
        best, last = epochs_mod.best_epoch(epoch_eval.records), epochs_mod.epochs_run(epochs)
        if best != last:
            model = _restore(model, ckpt_root / epochs_mod.BEST, p.train.lora.enabled)
    return model, tokenizer, results


def leave_process_group() -> None:
    """Every process of a distributed run leaves torch.distributed together once training is over, as torch asks
    of each process before it exits. Without it, the other ranks returned while rank 0 still wrote the outputs and
    exited with their gloo group up; one such rank died of SIGABRT at exit after rank 0 had finished, and the
    launcher failed the training. A no-op in a single process."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def _rebanded_rows(model, tokenizer, setup: Setup, rows: pd.DataFrame, ckpt_root: Path, k: int) -> pd.DataFrame:
    """A re-banded phase's rows: its candidates that the model trained so far puts in the hard band."""
    if setup.reband is None:
        raise CaftError(f"strategy {setup.strategy!r} re-bands phase {k}, but its card has no reband settings")
    table = reestimate.rebanded(model, tokenizer, rows, setup.reband, ckpt_root, k)
    return rows[rows["question_id"].isin(reestimate.hard_ids(table))]


def selection(p: Params, epoch_eval: EpochEval | None, epochs: list[float]) -> dict:
    """Which epoch's weights the stage keeps, and the validation accuracy of the last and the best epoch."""
    last = epochs_mod.epochs_run(epochs)
    if epoch_eval is None:
        return {"select": p.eval.select, "selected_epoch": last}
    c = epochs_mod.curve(epoch_eval.records).set_index("epoch")["accuracy"]
    best = epochs_mod.best_epoch(epoch_eval.records)
    return {
        "select": p.eval.select,
        "selected_epoch": best if p.eval.select == "best" else last,
        "best_epoch": best,
        "val_accuracy_final": round(float(c[last]), 6),
        "val_accuracy_best": round(float(c[best]), 6),
    }


CARD_PHASE_KEYS = ("phase", "kind", "items", "n", "epochs", "steps", "train_loss")  # no runtimes: same run, same card
PAPER = "https://arxiv.org/abs/2506.21220"


def save(
    model, tokenizer, setup: Setup, out: Path, reading: dict, phases: list[dict], selection: dict | None = None
) -> None:
    """The final adapter (LoRA) or model with its tokenizer, and two cards: `caft_model.json`, everything eval
    needs (how to load the base, how to prompt the model and read its answers), and a Hugging Face model card
    (README.md) in place of PEFT's placeholder. Both name the base model by its hub id, never by this machine's
    cache path (also rewritten in adapter_config.json), so the same training gives the same files anywhere."""
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    base, revision = public_name(setup.spec)
    lora = setup.params.train.lora.enabled
    card = {
        "base": setup.spec.loading(),
        "base_model": base,
        "base_revision": revision,
        "base_weights": weights(setup.spec, model),  # what was trained on (a packaged model: its quantised file)
        "strategy": setup.strategy,
        "seed": setup.seed,
        "lora": lora,
        "reading": reading,
        "phases": [{k: r[k] for k in CARD_PHASE_KEYS} | {"train_loss": _rounded(r["train_loss"])} for r in phases],
        "selection": selection,  # which epoch's weights these are (eval.select), with the validation evidence
    }
    write_card(out, card)
    if lora:
        config_file = out / "adapter_config.json"
        config = json.loads(config_file.read_text())
        config.update(base_model_name_or_path=base, revision=revision)
        config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    (out / "README.md").write_text(str(hub_card(card)))


def _rounded(loss: float | None) -> float | None:
    return None if loss is None else round(loss, 4)


def hub_card(card: dict):
    """The model card the HF ecosystem expects: metadata (base model, library, tags) and what was trained how."""
    from huggingface_hub import ModelCard, ModelCardData

    strategy = strategies.get(card["strategy"])
    data = ModelCardData(
        base_model=card["base_model"] if "/" in card["base_model"] else None,
        library_name="peft" if card["lora"] else "transformers",
        pipeline_tag="text-generation",
        tags=[
            "caft",
            "complexity-aware-fine-tuning",
            f"strategy:{card['strategy']}",
            "lora" if card["lora"] else "full",
        ],
    )
    rows = ["| " + " | ".join(str(r[k]) for k in CARD_PHASE_KEYS) + " |" for r in card["phases"]]
    reading = ", ".join(f"{k} `{v}`" for k, v in sorted(card["reading"].items()))
    body = "\n".join(
        [
            f"`{card['base_model']}`{' (revision ' + card['base_revision'] + ')' if card['base_revision'] else ''} "
            f"fine-tuned with the **{card['strategy']}** strategy of [Complexity-aware fine-tuning]({PAPER}) "
            f"by the caft pipeline: {strategy.summary}.",
            "",
            f"Trained on the weights: {card['base_weights']}. Load the adapter on exactly these weights: on any "
            "others (another revision, or the hub's full-precision model for a quantised file) it is a different "
            "model from the one evaluated.",
            "",
            "| phase | target | items | questions | epochs | steps | train loss |",
            "|---|---|---|---|---|---|---|",
            *rows,
            "",
            f"Evaluated with: {reading} (from `{MODEL_CARD}`, which caft's eval stage reads).",
        ]
    )
    template = "---\n{{ card_data }}\n---\n\n# {{ title }}\n\n{{ body }}\n"
    return ModelCard.from_template(
        data, template_str=template, title=f"{card['base_model']}, {card['strategy']} (caft)", body=body
    )


def clear_checkpoints(ckpt_root: Path) -> None:
    shutil.rmtree(ckpt_root, ignore_errors=True)

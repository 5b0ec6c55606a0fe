"""Accuracy per epoch, during training: after every epoch of every phase the model being trained answers the
validation carve, read exactly as the eval stage reads the finished model (`caft.evaluate.generate_and_read`,
the same batched greedy generation and answer reading, or the same vLLM engine with `eval.backend: vllm`), so
the paper's accuracy-vs-epoch curves cost one validation pass per epoch and no saved checkpoint per epoch.
With `eval.every_epoch_test` the test questions are answered too (off by default: the test set is then seen
once per epoch, never to pick an epoch); they are all the prepared test questions, whatever the threshold, so
a threshold change never re-runs a training: the report keeps the balanced ones.

The records survive an interruption (they live in the run's checkpoint folder, beside the trainer's
checkpoints) and, with `eval.select: best`, so do the weights of the best epoch so far (earliest on a tie):
only those are kept, never one folder per epoch.

Under data parallel every process answers its share of the questions (every `world`-th, from its rank) with its
own copy of the model, which DDP keeps equal on every process, and the shares are gathered in every process in
the questions' order: no process waits on another for longer than one share (the trainer's `ddp_timeout` bounds
any wait), and every process holds the same records, so a resumed run decides alike in each. The main process
alone writes them, logs the curve and keeps the best weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch.distributed as dist
from transformers import TrainerCallback

from caft.evaluate import Vllm, generate_and_read, max_new_tokens, prompt_texts, read_outputs, token_ids
from caft.faults import kill_point
from caft.io import atomic_path, write_table
from caft.params import EvalParams

DTYPES = {
    "subset": str,  # validation (the curves, the selection) or test (eval.every_epoch_test)
    "epoch": "int64",
    "phase": "int64",
    "step": "int64",  # the run-wide optimiser step the epoch ended at (the training curves' x axis)
    "question_id": str,
    "correct": bool,
    "parsed": bool,
    "output": str,
}
COLUMNS = list(DTYPES)
RECORDS = "epochs.parquet"
BEST = "best"
SERVED = "epoch-adapter"  # the adapter of the epoch just ended, as the per-epoch vLLM engine reads it


def empty() -> pd.DataFrame:
    """The records table of a run without per-epoch eval (the stage's output exists either way)."""
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in DTYPES.items()})


def curve(records: pd.DataFrame) -> pd.DataFrame:
    """Per epoch: its phase, its last step, validation accuracy and the number of validation questions."""
    grouped = records[records["subset"] == "validation"].groupby("epoch", sort=True)
    return pd.DataFrame(
        {
            "phase": grouped["phase"].first(),
            "step": grouped["step"].first(),
            "accuracy": grouped["correct"].mean(),
            "n": grouped.size(),
        }
    ).reset_index()


def best_epoch(records: pd.DataFrame) -> int | None:
    """The epoch with the highest validation accuracy, the earliest of those tied (fewer epochs, same evidence)."""
    c = curve(records)
    return None if c.empty else int(c.loc[c["accuracy"].idxmax(), "epoch"])


def epochs_run(phase_epochs: list[float]) -> int:
    """Run-wide epochs over phases of `phase_epochs` (a fractional last epoch of a phase counts as one): the
    number of the last epoch, and the offset of the phase after them."""
    return sum(math.ceil(e) for e in phase_epochs)


def epoch_number(offset: int, trainer_epoch: float) -> int:
    """The run-wide epoch (1, 2, ...) of an epoch end: epochs of the earlier phases, plus this phase's epochs so
    far, a fractional last epoch counting as one."""
    return offset + math.ceil(round(trainer_epoch, 6))


def engine(cfg: EvalParams, location: str, revision: str | None, lora_rank: int | None, world: int) -> Vllm | None:
    """The per-epoch pass's vLLM engine under `eval.backend: vllm`, beside the model being trained on the same
    GPU (`eval.vllm_memory_epoch` of its memory). It serves each epoch's LoRA adapter on the frozen base, so it
    needs LoRA and one process (an engine in each data-parallel process would join the ranks' process group):
    otherwise the pass generates with the model in memory, and says so."""
    if cfg.backend != "vllm" or not cfg.every_epoch:
        return None
    if lora_rank is None or world > 1:
        why = "full fine-tuning" if lora_rank is None else f"{world} processes"
        print(f"per-epoch eval: transformers generation ({why}: vLLM serves one process's LoRA adapters)")
        return None
    return Vllm(location, revision, lora_rank, cfg.vllm_memory_epoch)


@dataclass
class EpochEval:
    """The validation carve (and, optionally, the test questions), how the model is read, and where the
    records (and the best weights) are kept."""

    questions: pd.DataFrame
    reading: dict
    cfg: EvalParams
    tokenizer: Any
    root: Path
    keep_best: bool
    live: Any = None  # the training curves' dvclive run: validation accuracy beside the loss, per step
    test: pd.DataFrame | None = None  # eval.every_epoch_test: answered too, never used to pick an epoch
    vllm: Vllm | None = None  # eval.backend=vllm (see `engine`)
    rank: int = 0  # this process's place among `world` data-parallel processes: its share of the questions
    world: int = 1
    records: pd.DataFrame = field(init=False)

    def __post_init__(self) -> None:
        stored = self.root / RECORDS
        self.records = pd.read_parquet(stored) if stored.exists() else empty()
        for row in curve(self.records).itertuples(index=False):  # a resumed run's curve starts complete
            self._log(int(row.step), int(row.epoch), float(row.accuracy))

    def callback(self, phase: int, epoch_offset: int, step_offset: int) -> TrainerCallback:
        return _EpochEnd(self, phase, epoch_offset, step_offset)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def measure(self, model, epoch: int, phase: int, step: int) -> float:
        """Answer the validation carve with `model` as it is now; record it (and keep its weights if best)."""
        was_training = model.training
        model.eval()
        asked = {"validation": self.questions} | ({"test": self.test} if self.test is not None else {})
        share = {subset: self._answer(model, self.share(questions)) for subset, questions in asked.items()}
        answered = gathered(share, asked, self.world)
        kill_point(f"train:epoch{epoch}:eval")
        model.train(was_training)
        accuracy = float(answered["validation"]["correct"].mean())
        before = curve(self.records[self.records["epoch"] != epoch])
        if self.main and self.keep_best and (before.empty or accuracy > before["accuracy"].max()):
            with atomic_path(self.root / BEST, directory=True) as tmp:
                model.save_pretrained(tmp, max_shard_size="1000GB")  # one file: what train._restore loads
        rows = pd.concat(
            [
                preds[["question_id", "correct", "parsed", "output"]].assign(subset=subset)
                for subset, preds in answered.items()
            ],
            ignore_index=True,
        )
        rows = rows.assign(epoch=epoch, phase=phase, step=step)[COLUMNS]
        kept = self.records[self.records["epoch"] != epoch]  # an epoch re-run after a kill replaces its record
        self.records = pd.concat([kept, rows], ignore_index=True) if len(kept) else rows.reset_index(drop=True)
        if self.main:
            write_table(self.records, self.root / RECORDS)
        self._log(step, epoch, accuracy)
        return accuracy

    def share(self, questions: pd.DataFrame) -> pd.DataFrame:
        """This process's share of `questions`: every `world`-th row, from its rank."""
        return questions.iloc[self.rank :: self.world]

    def _answer(self, model, questions: pd.DataFrame) -> pd.DataFrame:
        """The model's answers as it is now: generated in memory, or by the vLLM engine from the adapter saved
        for it (the same prompts, token for token, and the same reading)."""
        if self.vllm is None:
            return generate_and_read(model, self.tokenizer, questions, self.reading, self.cfg)
        model.save_pretrained(self.root / SERVED)
        ids = token_ids(prompt_texts(questions, self.reading, self.tokenizer), self.tokenizer)
        budget = max_new_tokens(self.reading, self.cfg, questions, self.tokenizer)
        outputs = self.vllm.generate(ids, budget, self.root / SERVED)
        return read_outputs(questions, outputs, self.reading)

    def _log(self, step: int, epoch: int, accuracy: float) -> None:
        """dvclive has one step axis per run: the curve sits at the step each epoch ended, with the epoch
        number beside it (the report's chart puts epochs on the x axis)."""
        if self.live is None:
            return
        self.live.step = step
        self.live.log_metric("validation/accuracy", accuracy)
        self.live.log_metric("validation/epoch", epoch)
        self.live.make_summary()


def gathered(share: dict[str, pd.DataFrame], asked: dict[str, pd.DataFrame], world: int) -> dict[str, pd.DataFrame]:
    """Every process's answers to its share, in every process, each subset in the order of its questions."""
    if world == 1:
        return share
    shares: list[Any] = [None] * world
    dist.all_gather_object(shares, share)
    out = {}
    for subset, questions in asked.items():
        order = {qid: k for k, qid in enumerate(questions["question_id"])}
        whole = pd.concat([part[subset] for part in shares], ignore_index=True)
        out[subset] = whole.sort_values("question_id", key=lambda ids: ids.map(order)).reset_index(drop=True)
    return out


class _EpochEnd(TrainerCallback):
    def __init__(self, owner: EpochEval, phase: int, epoch_offset: int, step_offset: int):
        self.owner, self.phase, self.offset, self.step_offset = owner, phase, epoch_offset, step_offset

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        """A run resumed from a checkpoint taken where an epoch ended, whose answers were not recorded (killed
        during that epoch's pass): the trainer goes on with the next epoch and never ends this one again, so
        answer it now, with the checkpoint's weights, which are that epoch's."""
        if state.global_step and round(state.epoch or 0, 6).is_integer():
            epoch = epoch_number(self.offset, state.epoch)
            if epoch not in set(self.owner.records["epoch"]):
                self.owner.measure(model, epoch, self.phase, self.step_offset + state.global_step)

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        epoch = epoch_number(self.offset, state.epoch)
        self.owner.measure(model, epoch, self.phase, self.step_offset + state.global_step)

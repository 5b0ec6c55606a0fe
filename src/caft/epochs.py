"""Accuracy per epoch, during training: after every epoch of every phase the model being trained answers the
validation carve, read exactly as the eval stage reads the finished model (`caft.evaluate.generate_and_read`,
the same batched greedy generation and answer reading), so the paper's accuracy-vs-epoch curves cost one
validation pass per epoch and no saved checkpoint per epoch.

The records survive an interruption (they live in the run's checkpoint folder, beside the trainer's
checkpoints) and, with `eval.select: best`, so do the weights of the best epoch so far (earliest on a tie):
only those are kept, never one folder per epoch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from transformers import TrainerCallback

from caft.evaluate import generate_and_read
from caft.io import atomic_path, write_table
from caft.params import EvalParams

DTYPES = {
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


def empty() -> pd.DataFrame:
    """The records table of a run without per-epoch eval (the stage's output exists either way)."""
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in DTYPES.items()})


def curve(records: pd.DataFrame) -> pd.DataFrame:
    """Per epoch: its phase, its last step, validation accuracy and the number of questions."""
    grouped = records.groupby("epoch", sort=True)
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


@dataclass
class EpochEval:
    """The validation carve, how the model is read, and where the records (and the best weights) are kept."""

    questions: pd.DataFrame
    reading: dict
    cfg: EvalParams
    tokenizer: Any
    root: Path
    keep_best: bool
    live: Any = None  # the training curves' dvclive run: validation accuracy beside the loss, per step
    records: pd.DataFrame = field(init=False)

    def __post_init__(self) -> None:
        stored = self.root / RECORDS
        self.records = pd.read_parquet(stored) if stored.exists() else empty()
        for row in curve(self.records).itertuples(index=False):  # a resumed run's curve starts complete
            self._log(int(row.step), int(row.epoch), float(row.accuracy))

    def callback(self, phase: int, epoch_offset: int, step_offset: int) -> TrainerCallback:
        return _EpochEnd(self, phase, epoch_offset, step_offset)

    def measure(self, model, epoch: int, phase: int, step: int) -> float:
        """Answer the validation carve with `model` as it is now; record it (and keep its weights if best)."""
        was_training = model.training
        model.eval()
        preds = generate_and_read(model, self.tokenizer, self.questions, self.reading, self.cfg)
        model.train(was_training)
        accuracy = float(preds["correct"].mean())
        before = curve(self.records[self.records["epoch"] != epoch])
        if self.keep_best and (before.empty or accuracy > before["accuracy"].max()):
            with atomic_path(self.root / BEST, directory=True) as tmp:
                model.save_pretrained(tmp, max_shard_size="1000GB")  # one file: what train._restore loads
        rows = preds[["question_id", "correct", "parsed", "output"]].assign(epoch=epoch, phase=phase, step=step)
        rows = rows[COLUMNS]
        kept = self.records[self.records["epoch"] != epoch]  # an epoch re-run after a kill replaces its record
        self.records = pd.concat([kept, rows], ignore_index=True) if len(kept) else rows.reset_index(drop=True)
        write_table(self.records, self.root / RECORDS)
        self._log(step, epoch, accuracy)
        return accuracy

    def _log(self, step: int, epoch: int, accuracy: float) -> None:
        """dvclive has one step axis per run: the curve sits at the step each epoch ended, with the epoch
        number beside it (the report's chart puts epochs on the x axis)."""
        if self.live is None:
            return
        self.live.step = step
        self.live.log_metric("validation/accuracy", accuracy)
        self.live.log_metric("validation/epoch", epoch)
        self.live.make_summary()


class _EpochEnd(TrainerCallback):
    def __init__(self, owner: EpochEval, phase: int, epoch_offset: int, step_offset: int):
        self.owner, self.phase, self.offset, self.step_offset = owner, phase, epoch_offset, step_offset

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        if state.is_world_process_zero:
            epoch = epoch_number(self.offset, state.epoch)
            self.owner.measure(model, epoch, self.phase, self.step_offset + state.global_step)

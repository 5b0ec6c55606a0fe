"""The training strategies, as data: their phases, which items each phase trains on, and whether with the
answer only or with a teacher trace.

The teacher stage requests exactly the union of CoT items over the configured strategies and students, and
the training sets are built from the same definitions, so the two can never disagree.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import pandas as pd

from caft.errors import CaftError

Selector = Callable[[pd.DataFrame], pd.Series]


def _all(a: pd.DataFrame) -> pd.Series:
    return pd.Series(True, index=a.index)


def _bands(*names: str) -> Selector:
    return lambda a: a["band"].isin(names)


def _random(chosen: bool) -> Selector:
    return lambda a: a["random_cot"].astype(bool) == chosen


@dataclass(frozen=True)
class Phase:
    kind: Literal["answer", "cot"]  # answer-only target, or the teacher's chain of thought
    select: Selector
    items: str  # what `select` picks, for humans
    # Train only on the candidates (`select`'s rows) that the model trained so far puts in the hard band
    # (caft.reestimate): which ones is known only after the earlier phases, so the set, and the teacher, cover
    # every candidate.
    reband: bool = False


@dataclass(frozen=True)
class Strategy:
    name: str
    summary: str
    phases: tuple[Phase, ...]
    # An end point the report and the frontier compare every strategy with: answer-only or CoT on every item.
    baseline: Literal["answer", "cot"] | None = None

    @property
    def eval_mode(self) -> Literal["direct", "cot"]:
        """Models trained on CoT are evaluated with CoT generation, answer-only models with a direct answer
        (as the paper)."""
        return "cot" if any(p.kind == "cot" for p in self.phases) else "direct"

    @property
    def rebands(self) -> bool:
        """Whether a phase re-bands with the model trained so far: such a strategy needs the re-band settings,
        the question columns in its set and a single-token estimator."""
        return any(p.reband for p in self.phases)

    def phase_masks(self, assignments: pd.DataFrame) -> list[pd.Series]:
        """Per phase, the train + validation rows it uses."""
        trainable = assignments["subset"].isin(["train", "validation"])
        return [trainable & phase.select(assignments) for phase in self.phases]

    def cot_mask(self, assignments: pd.DataFrame) -> pd.Series:
        mask = pd.Series(False, index=assignments.index)
        for phase, rows in zip(self.phases, self.phase_masks(assignments), strict=True):
            if phase.kind == "cot":
                mask |= rows
        return mask


STRATEGIES = {
    s.name: s
    for s in (
        Strategy("sft", "answer-only SFT on all training items", (Phase("answer", _all, "all"),), "answer"),
        Strategy("distill", "SFT on teacher CoT for all training items", (Phase("cot", _all, "all"),), "cot"),
        Strategy(
            "caft",
            "the paper: answer-only SFT on easy+medium, then CoT SFT on hard from phase 1's weights",
            (Phase("answer", _bands("easy", "medium"), "easy+medium"), Phase("cot", _bands("hard"), "hard")),
        ),
        Strategy(
            "caft_reestimate",
            "beyond the paper: caft, with the hard band re-estimated by the phase-1 model before phase 2",
            (
                Phase("answer", _bands("easy", "medium"), "easy+medium"),
                Phase("cot", _all, "hard after phase 1", reband=True),
            ),
        ),
        Strategy(
            "curriculum",
            "answer-only SFT easy -> medium -> hard",
            tuple(Phase("answer", _bands(b), b) for b in ("easy", "medium", "hard")),
        ),
        Strategy(
            "random",
            "control: caft's budget, but the CoT items are drawn at random",
            (Phase("answer", _random(False), "not random_cot"), Phase("cot", _random(True), "random_cot")),
        ),
        Strategy(
            "alternative",
            "reversed: answer-only on medium+hard, then CoT on easy",
            (Phase("answer", _bands("medium", "hard"), "medium+hard"), Phase("cot", _bands("easy"), "easy")),
        ),
    )
}


def baselines() -> tuple[str, ...]:
    """The end points (sft, distill), in the registry's order."""
    return tuple(name for name, s in STRATEGIES.items() if s.baseline)


def baseline(kind: Literal["answer", "cot"]) -> str:
    """The end point that trains on `kind` targets for every item (cot: distill, what savings are measured from)."""
    return next(name for name, s in STRATEGIES.items() if s.baseline == kind)


def get(name: str) -> Strategy:
    if name not in STRATEGIES:
        raise CaftError(f"unknown strategy {name!r} (known: {', '.join(STRATEGIES)})")
    return STRATEGIES[name]


def cot_question_ids(assignments: pd.DataFrame, strategies: list[str]) -> set[str]:
    """Question ids that need a teacher trace for any of `strategies` on this student's split."""
    needed: set[str] = set()
    for name in strategies:
        needed |= set(assignments.loc[get(name).cot_mask(assignments), "question_id"])
    return needed

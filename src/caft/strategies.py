"""The training strategies, as data: which items each one trains on, and which of those need teacher CoT.

The teacher stage requests exactly the union of CoT items over the configured strategies and students; the
train stage (later) reads the same definitions, so the two can never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from caft.errors import CaftError


@dataclass(frozen=True)
class Strategy:
    name: str
    summary: str
    uses_split: bool  # reads split.* (bands): re-runs when the threshold changes

    def cot_mask(self, assignments: pd.DataFrame) -> pd.Series:
        """Rows (train + validation) that this strategy trains on with a teacher trace."""
        train = assignments["subset"].isin(["train", "validation"])
        band = assignments["band"]
        return (
            train
            & {
                "sft": pd.Series(False, index=assignments.index),
                "curriculum": pd.Series(False, index=assignments.index),
                "distill": pd.Series(True, index=assignments.index),
                "caft": band == "hard",
                "random": assignments["random_cot"].astype(bool),
                "alternative": band == "easy",
            }[self.name]
        )


STRATEGIES = {
    s.name: s
    for s in (
        Strategy("sft", "answer-only SFT on all training items", False),
        Strategy("distill", "SFT on teacher CoT for all training items", False),
        Strategy("caft", "phase 1 answer-only SFT on easy+medium, phase 2 CoT SFT on hard (the paper)", True),
        Strategy("curriculum", "answer-only SFT easy -> medium -> hard", True),
        Strategy("random", "caft's budget, but the CoT items are drawn at random (control)", True),
        Strategy("alternative", "reversed: CoT on the easy band, answer-only on medium+hard", True),
    )
}


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

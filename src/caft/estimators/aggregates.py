"""Chain-of-thought entropy aggregates (the authors' MMLU-Pro-chain-of-thought-entropy measures).

Given the per-token entropies of a CoT answer, the index of the token that states the answer option, and the
probabilities of the option-id tokens at that position: the answer token's entropy, mean and max entropy
over the whole sequence and over the reasoning part (the tokens before the answer marker), and the margin
between the two most likely options (reported as 1 − margin, so that higher = harder like every estimator).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

AGGREGATES = (
    "answer_entropy",
    "mean_entropy",
    "max_entropy",
    "reasoning_mean_entropy",
    "reasoning_max_entropy",
    "answer_margin",
)


def aggregate(
    entropies: Sequence[float], answer_pos: int | None, reasoning_end: int | None, option_probs: Sequence[float]
) -> dict[str, float]:
    """`answer_pos`: index of the answer-id token (None when no marker was found); `reasoning_end`: index of
    the first marker token (None: everything is reasoning); `option_probs`: option-id probabilities at
    `answer_pos`."""
    nan = math.nan
    if not entropies:
        return dict.fromkeys(AGGREGATES, nan)
    reasoning = list(entropies[: reasoning_end if reasoning_end is not None else len(entropies)])
    top = sorted(option_probs, reverse=True)
    margin = top[0] - (top[1] if len(top) > 1 else 0.0) if top and answer_pos is not None else nan
    return {
        "answer_entropy": float(entropies[answer_pos]) if answer_pos is not None else nan,
        "mean_entropy": float(sum(entropies) / len(entropies)),
        "max_entropy": float(max(entropies)),
        "reasoning_mean_entropy": float(sum(reasoning) / len(reasoning)) if reasoning else nan,
        "reasoning_max_entropy": float(max(reasoning)) if reasoning else nan,
        "answer_margin": 1.0 - margin if not math.isnan(margin) else nan,
    }

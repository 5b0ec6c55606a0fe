"""Accuracy from saved predictions, with no model in sight: strict accuracy and its Wilson 95 % interval,
TIGER-Lab's MMLU-Pro scoring, parse failures, lm-evaluation-harness's flexible match for numbers, per
category. `eval` computes them after generating; `report` recomputes them per band and on the balanced test
set from the predictions files, so it never imports torch or a model.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import binomtest, bootstrap

from caft import answers
from caft.answers import LETTERS
from caft.io import metric_key


def wilson(k: int, n: int) -> tuple[float, float]:
    """Wilson score 95 % interval for k successes out of n (scipy's); (0, 0) for n = 0."""
    if n == 0:
        return 0.0, 0.0
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    return float(ci.low), float(ci.high)


def tiger_correct(preds: pd.DataFrame, seed: int) -> pd.Series:
    """TIGER-Lab's MMLU-Pro scoring: their extraction (`answers.tiger_letter`) on letter answers, ours on
    numeric ones (their script has none), and an unparseable answer becomes a (seeded) random option."""
    rng = np.random.default_rng(seed)
    # a number-format question has nothing to guess among: scored as strict (below)
    guesses = np.array([rng.integers(n) if n else -1 for n in preds["n_options"]])
    letters = [
        answers.tiger_letter(o) if is_letter else None
        for o, is_letter in zip(preds["output"], preds["letters"], strict=True)
    ]
    parsed = np.where(preds["letters"], [x is not None for x in letters], preds["parsed"])
    index = np.where(preds["letters"], [-1 if x is None else LETTERS.index(x) for x in letters], preds["parsed_index"])
    gold = preds["answer_index"].to_numpy()
    choice = np.where(parsed, index == gold, guesses == gold)
    return pd.Series(np.where(preds["n_options"] > 0, choice, preds["correct"]), index=preds.index)


def score(preds: pd.DataFrame, seed: int, prefix: str = "") -> dict:
    """Strict accuracy with its Wilson 95 % CI, TIGER-style accuracy, parse failures, n."""
    n, k = len(preds), int(preds["correct"].sum())
    low, high = wilson(k, n)
    out = {
        f"{prefix}n": n,
        f"{prefix}accuracy": round(k / n, 6) if n else None,
        f"{prefix}accuracy_ci_low": round(low, 6),
        f"{prefix}accuracy_ci_high": round(high, 6),
        f"{prefix}accuracy_tiger": round(float(tiger_correct(preds, seed).mean()), 6) if n else None,
        f"{prefix}parse_fail_rate": round(float((~preds["parsed"]).mean()), 6) if n else None,
    }
    if n and "flexible_correct" in preds and (preds["n_options"] == 0).any():
        out[f"{prefix}accuracy_flexible"] = round(float(preds["flexible_correct"].mean()), 6)
    return out


def summarize(preds: pd.DataFrame, seed: int) -> dict:
    out = score(preds, seed)
    for category, part in sorted(preds.groupby("category")):
        out[f"category_{metric_key(category)}_accuracy"] = round(float(part["correct"].mean()), 6)
    return out


def paired_difference(a: pd.Series, b: pd.Series, seed: int, n_boot: int) -> dict:
    """Accuracy of `a` minus accuracy of `b` on the same questions (aligned 0/1 correctness), with a percentile
    bootstrap 95 % interval over questions, paired: a resampled question brings both models' answers, so the
    interval is the difference's own, narrower than two independent intervals side by side."""
    diff = a.astype(float).to_numpy() - b.astype(float).to_numpy()
    if diff.size == 0:
        return {"mean": None, "ci_low": None, "ci_high": None, "n": 0}
    ci = bootstrap(
        (diff,), np.mean, n_resamples=n_boot, method="percentile", random_state=np.random.default_rng(seed)
    ).confidence_interval
    low, high = round(float(ci.low), 6), round(float(ci.high), 6)
    return {"mean": round(float(diff.mean()), 6), "ci_low": low, "ci_high": high, "n": int(diff.size)}

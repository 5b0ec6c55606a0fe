"""Accuracy from saved predictions, with no model in sight: strict accuracy and its Wilson 95 % interval,
TIGER-Lab's MMLU-Pro scoring, parse failures, lm-evaluation-harness's flexible match for numbers, per
category. `eval` computes them after generating; `report` recomputes them per band and on the balanced test
set from the predictions files, so it never imports torch or a model.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import binomtest

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
    # the generation budget, and the answers it cut off (no end token within it)
    out["max_new_tokens"] = int(preds["budget"].max()) if "budget" in preds and len(preds) else None
    out["n_cut_at_budget"] = int(preds["cut"].sum()) if "cut" in preds else None
    for category, part in sorted(preds.groupby("category")):
        out[f"category_{metric_key(category)}_accuracy"] = round(float(part["correct"].mean()), 6)
    return out


def paired_difference(a: np.ndarray, b: np.ndarray, seed: int, n_boot: int) -> dict:
    """Accuracy of `a` minus accuracy of `b` on the same questions, both (training seeds x questions) of 0/1
    correctness, with a percentile bootstrap 95 % interval over questions and seeds: each resample draws seeds
    and questions with replacement and keeps both models' answers of a drawn (seed, question), so the interval
    is the paired difference's own and carries the seed-to-seed spread. (Two-level resampling, which
    scipy.stats.bootstrap does not do; with one seed it is the plain paired bootstrap over questions.)"""
    diff = np.atleast_2d(np.asarray(a, dtype=float) - np.asarray(b, dtype=float))
    n_seeds, n_questions = diff.shape
    if diff.size == 0:
        return {"mean": None, "ci_low": None, "ci_high": None, "n": 0}
    rng = np.random.default_rng(seed)
    seeds = rng.integers(0, n_seeds, size=(n_boot, n_seeds))
    questions = rng.integers(0, n_questions, size=(n_boot, n_questions))
    per_seed = np.stack([diff[:, q].mean(axis=1) for q in questions])  # n_boot x seeds: each resample's questions
    means = np.take_along_axis(per_seed, seeds, axis=1).mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {
        "mean": round(float(diff.mean()), 6),
        "ci_low": round(float(low), 6),
        "ci_high": round(float(high), 6),
        "n": int(diff.size),
    }

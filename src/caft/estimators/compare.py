"""How well each complexity estimator predicts the student's wrong answer: ROC AUC on the same rows, with
percentile-bootstrap 95 % intervals, overall and per category."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score


def bootstrap_auc(wrong: np.ndarray, score: np.ndarray, n_boot: int, seed: int) -> tuple[float, float, float]:
    """(AUC, 2.5 %, 97.5 %) over `n_boot` resamples of the rows; resamples with one class are skipped."""
    wrong, score = np.asarray(wrong, dtype=bool), np.asarray(score, dtype=float)
    auc = float(roc_auc_score(wrong, score))
    rng = np.random.default_rng(seed)
    stats = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(wrong), len(wrong))
        if wrong[idx].all() or not wrong[idx].any():
            continue
        stats.append(roc_auc_score(wrong[idx], score[idx]))
    low, high = np.percentile(stats, [2.5, 97.5]) if stats else (np.nan, np.nan)
    return auc, float(low), float(high)


def compare(scores: pd.DataFrame, outcome: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """`scores`: question_id, estimator, score. `outcome`: question_id, correct, category. Every estimator is
    evaluated on the rows that all estimators scored (the same rows), overall and per category."""
    wide = scores.pivot_table(index="question_id", columns="estimator", values="score", aggfunc="first")
    rows = outcome.set_index("question_id").join(wide, how="inner").dropna(subset=list(wide.columns))
    out = []
    for estimator in wide.columns:
        for category, part in [("all", rows), *sorted(rows.groupby("category"))]:
            wrong = ~part["correct"].astype(bool).to_numpy()
            if wrong.all() or not wrong.any():
                continue
            auc, low, high = bootstrap_auc(wrong, part[estimator].to_numpy(), n_boot, seed)
            out.append({"estimator": estimator, "category": category, "n": len(part), "roc_auc": round(auc, 6),
                        "ci_low": round(low, 6), "ci_high": round(high, 6)})  # fmt: skip
    return pd.DataFrame(out, columns=["estimator", "category", "n", "roc_auc", "ci_low", "ci_high"])


def comparable(everything: pd.DataFrame, min_share: float = 0.5) -> tuple[pd.DataFrame, pd.Series, int]:
    """The rows every estimator attempted (estimators may run on a sample), and the estimators that scored at
    least `min_share` of them: one with mostly malformed outputs would shrink the common rows for all, so it
    is reported, not compared. Returns (long table of those, scored rows per estimator, rows attempted)."""
    attempted = set.intersection(*(set(g["question_id"]) for _, g in everything.groupby("estimator")))
    on_rows = everything[everything["question_id"].isin(attempted)]
    names = sorted(everything["estimator"].unique())
    n_scored = on_rows.dropna(subset=["score"]).groupby("estimator")["question_id"].nunique()
    n_scored = n_scored.reindex(names, fill_value=0)
    keep = n_scored[n_scored >= min_share * len(attempted)].index
    return on_rows[on_rows["estimator"].isin(keep)].dropna(subset=["score"]), n_scored, len(attempted)

"""How well each complexity estimator predicts the student's wrong answer: ROC AUC on the same rows, with
percentile-bootstrap 95 % intervals, overall and per category."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from caft.io import metric_key
from caft.roc import curve_wrong


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


def common_rows(scores: pd.DataFrame, outcome: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """`outcome` (question_id, correct, category) joined with one score column per estimator of `scores`
    (question_id, estimator, score), on the rows that every estimator scored; and the estimator names."""
    wide = scores.pivot_table(index="question_id", columns="estimator", values="score", aggfunc="first")
    rows = outcome.set_index("question_id").join(wide, how="inner").dropna(subset=list(wide.columns))
    return rows, list(wide.columns)


def compare_rows(rows: pd.DataFrame, estimators: list[str], n_boot: int, seed: int) -> pd.DataFrame:
    """ROC AUC with a bootstrap interval per estimator on `common_rows`, overall and per category; a category
    whose rows are all right or all wrong has no AUC and is left out."""
    out = []
    for estimator in estimators:
        for category, part in [("all", rows), *sorted(rows.groupby("category"))]:
            wrong = ~part["correct"].astype(bool).to_numpy()
            if wrong.all() or not wrong.any():
                continue
            auc, low, high = bootstrap_auc(wrong, part[estimator].to_numpy(), n_boot, seed)
            out.append(
                {
                    "estimator": estimator,
                    "category": category,
                    "n": len(part),
                    "roc_auc": round(auc, 6),
                    "ci_low": round(low, 6),
                    "ci_high": round(high, 6),
                }
            )
    return pd.DataFrame(out, columns=["estimator", "category", "n", "roc_auc", "ci_low", "ci_high"])


def report(
    everything: pd.DataFrame, outcome: pd.DataFrame, title: str, n_boot: int, seed: int
) -> tuple[pd.DataFrame, dict, str]:
    """The whole comparison from every estimator's output and the student's outcomes: ROC curves (estimator,
    fpr, tpr) for `dvc plots`, the metrics (scored rows per estimator, AUC and interval per category) and a
    markdown table ranking the compared estimators, with the ones left out (mostly unscored) named."""
    scores, n_scored, n_rows = comparable(everything)
    rows, estimators = common_rows(scores, outcome)
    table = compare_rows(rows, estimators, n_boot, seed)
    curves = pd.concat(
        [curve_wrong(rows["correct"], rows[e]).assign(estimator=e) for e in estimators], ignore_index=True
    )[["estimator", "fpr", "tpr"]]
    metrics: dict = {name: {"n_scored": int(n)} for name, n in n_scored.items()}
    for r in table.to_dict(orient="records"):
        metrics.setdefault(r["estimator"], {})[metric_key(r["category"])] = {
            k: r[k] for k in ("n", "roc_auc", "ci_low", "ci_high")
        }
    overall = table[table["category"] == "all"].sort_values("roc_auc", ascending=False)
    lines = [f"# {title}", "", "| estimator | ROC AUC → wrong answer [95 % bootstrap CI] | n |", "|---|---|---|"]
    lines += [
        f"| {r.estimator} | {r.roc_auc:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}] | {r.n} |" for r in overall.itertuples()
    ]
    lines += [
        f"| {name} | not compared: scored {n} of the {n_rows} rows (outputs malformed or failed) | {n} |"
        for name, n in n_scored.items()
        if name not in set(overall["estimator"])
    ]
    return curves, metrics, "\n".join(lines) + "\n"


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

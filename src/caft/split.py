"""Easy / medium / hard bands by complexity score, cut on train and applied to test.

`threshold` is the boundary at and above which a question is hard (it gets teacher CoT); `easy_threshold`
the easy/medium boundary. Units: `quantile` of the train scores (paper: 0.25 / 0.75), `normalized` (score /
max train score, the authors' norm_entropy) or raw `nats`. Bands are half-open intervals, so they are
disjoint and cover every valid row — unlike the authors' released medium band, which overlaps hard.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from caft.answers import labels
from caft.errors import CaftError
from caft.params import SplitParams
from caft.scores import ENTROPY, SINGLE_TOKEN, Kind

BANDS = ("easy", "medium", "hard")


def cut_points(train_scores: np.ndarray, cfg: SplitParams) -> tuple[float, float]:
    """(easy/medium cut, medium/hard cut) in the score's own units (nats for entropy); the thresholds were
    checked when the params were loaded (caft.params.SplitParams)."""
    scores = np.asarray(train_scores, dtype=float)
    if scores.size == 0:
        raise CaftError("no valid train rows to compute split cut points from")
    if cfg.units == "quantile":
        return float(np.quantile(scores, cfg.easy_threshold)), float(np.quantile(scores, cfg.threshold))
    if cfg.units == "normalized":
        top = float(scores.max())
        return cfg.easy_threshold * top, cfg.threshold * top
    return cfg.easy_threshold, cfg.threshold


def assign_bands(scores: np.ndarray, easy_cut: float, hard_cut: float) -> np.ndarray:
    """easy: score < easy_cut; medium: easy_cut <= score < hard_cut; hard: score >= hard_cut."""
    scores = np.asarray(scores, dtype=float)
    return np.where(scores >= hard_cut, "hard", np.where(scores < easy_cut, "easy", "medium"))


def _sample(index: pd.Index, n: int | None, rng: np.random.Generator) -> pd.Index:
    if n is None or n >= len(index):
        return index
    return pd.Index(sorted(rng.choice(index.to_numpy(), size=n, replace=False)))


def select_score(scores: pd.DataFrame, name: str, estimator: pd.DataFrame | None = None) -> pd.DataFrame:
    """The entropy table with a `score` column: estimator `name`'s (question_id, score) rows when given (rows
    it did not score get NaN), else one of the entropy table's own single-token entropies."""
    if estimator is not None:
        chosen = estimator[["question_id", "score"]].drop_duplicates("question_id")
        return scores.drop(columns="score", errors="ignore").merge(chosen, on="question_id", how="left")
    if name not in SINGLE_TOKEN:
        raise CaftError(f"split.estimator={name}: no such column of the entropy table (has: {', '.join(SINGLE_TOKEN)})")
    return scores.assign(score=scores[SINGLE_TOKEN[name]].astype(float))


def make_split(scores: pd.DataFrame, cfg: SplitParams, seed: int, kind: Kind = ENTROPY) -> tuple[pd.DataFrame, dict]:
    """Assign bands and roles to the valid rows of an entropy table.

    Cut points come from all valid train rows; `max_train` then keeps a seeded, threshold-independent subset
    of them as the training pool, `val_size` carves a seeded, threshold-independent validation set off it, and
    the optional per-band caps draw train / validation rows from the rest.

    A categorical estimator (its `kind` declares ordinal levels 0..levels-1) bands by level instead of
    thresholds: the lowest level is easy, the highest hard, the rest medium.

    Returns one row per used question: question_id, subset (train / validation / test), band, score,
    correct (the student's single-token answer) and balanced (test rows of the equal-per-band test set). The
    random control is drawn per training seed, from these rows (`random_control`).
    """
    if "score" not in scores.columns:
        scores = select_score(scores, cfg.estimator)
    readable = scores["validity"].isin(labels()) & scores["score"].notna()
    if not readable.any():
        raise CaftError(f"split.estimator={cfg.estimator} scored none of the rows with a valid answer")
    # Every test question is kept (the headline accuracy counts them all): one whose single-token run gave no
    # readable answer (no option id, no closed [[n]]) or no score is banded hard, as the highest entropy would
    # be. Training rows need a score to be banded, so such train rows are left out (as the authors do).
    valid = scores[readable | (scores["subset"] == "test")].copy()
    is_train = valid["subset"] == "train"
    if kind.levels:  # ordinal levels 0..levels-1: band boundaries at level 1 and at the top level
        easy_cut, hard_cut = 1.0, float(kind.levels - 1)
    else:
        easy_cut, hard_cut = cut_points(valid.loc[is_train, "score"].to_numpy(), cfg)
    valid["band"] = assign_bands(valid["score"].to_numpy(), easy_cut, hard_cut)
    valid.loc[~readable[valid.index], "band"] = "hard"
    if cfg.max_train is not None:
        # Drawn with its own generator and before any band-dependent choice: the training pool (and so the
        # sft / distill data) does not move when the thresholds do.
        pool = valid.index[is_train]
        keep = _sample(pool, cfg.max_train, np.random.default_rng([seed, 1]))
        valid = valid.drop(index=pool.difference(keep))
    rng = np.random.default_rng(seed)

    valid["role"] = np.where(valid["subset"] == "train", "pool", "test")
    valid = valid.drop(columns="subset")
    if cfg.val_size:  # before banding decides anything, with its own generator: threshold-independent
        pool = valid.index[valid["role"] == "pool"]
        valid.loc[_sample(pool, cfg.val_size, np.random.default_rng([seed, 2])), "role"] = "validation"
    for band in BANDS:
        members = ("medium", "hard") if band == "medium" and cfg.compat_medium_overlap else (band,)
        pool = valid.index[(valid["role"] == "pool") & valid["band"].isin(members)]
        val = _sample(pool, cfg.val_per_band, rng) if cfg.val_per_band else pd.Index([])
        valid.loc[val, "role"] = "validation"
        train = _sample(pool.difference(val), cfg.train_per_band, rng)
        valid.loc[train, "role"] = "train"
        valid.loc[val.union(train), "band"] = band  # only differs from the score's band in compat mode
    valid = valid[valid["role"] != "pool"].rename(columns={"role": "subset"})

    valid["balanced"] = False
    test = valid[valid["subset"] == "test"]
    if cfg.balanced_test and len(test):
        per_band = test["band"].value_counts().reindex(BANDS, fill_value=0).min()
        for band in BANDS:
            picked = _sample(test.index[test["band"] == band], int(per_band), rng)
            valid.loc[picked, "balanced"] = True

    out = valid[["question_id", "subset", "band", "score", "correct", "balanced"]]
    out = out.sort_values(["subset", "question_id"]).reset_index(drop=True)
    return out, _metrics(out, scores, cfg, (easy_cut, hard_cut), kind)


def random_control(assignments: pd.DataFrame, seed: int, enabled: bool = True) -> pd.DataFrame:
    """The assignments with `random_cot` for one training seed: the random control's CoT items, as many train
    rows as the hard band, drawn from all train rows with that seed's own generator. Each seed is a fresh draw,
    and adding a seed leaves the other seeds' draws (and their trainings) alone."""
    out = assignments.assign(random_cot=False)
    if enabled:
        train_idx = out.index[out["subset"] == "train"]
        n_hard = int((out.loc[train_idx, "band"] == "hard").sum())
        out.loc[_sample(train_idx, n_hard, np.random.default_rng([seed, 3])), "random_cot"] = True
    return out


def _metrics(out: pd.DataFrame, scores: pd.DataFrame, cfg: SplitParams, cuts: tuple[float, float], kind: Kind) -> dict:
    trained = out[out["subset"].isin(["train", "validation"])]
    easy_cut, hard_cut = cuts
    metrics: dict = {
        "estimator": cfg.estimator,
        "cut_units": kind.units,
        "cut_easy": round(easy_cut, 6),
        "cut_hard": round(hard_cut, 6),
        "n_excluded_invalid": int(((scores["subset"] == "train") & ~scores["validity"].isin(labels())).sum()),
        "n_excluded_unscored": int(
            ((scores["subset"] == "train") & scores["validity"].isin(labels()) & scores["score"].isna()).sum()
        ),
        # test questions kept without a readable single-token answer or a score: banded hard
        "n_test_unreadable_banded_hard": int(
            ((scores["subset"] == "test") & ~(scores["validity"].isin(labels()) & scores["score"].notna())).sum()
        ),
        "medium_above_hard_cut_n": int(((trained["band"] == "medium") & (trained["score"] >= hard_cut)).sum()),
        "n_balanced_test": int(out["balanced"].sum()),
        "n_random_cot": int(((out["subset"] == "train") & (out["band"] == "hard")).sum()) if cfg.random_control else 0,
    }
    for subset in ("train", "validation", "test"):
        part = out[out["subset"] == subset]
        for band in BANDS:
            rows = part[part["band"] == band]
            metrics[f"{subset}_{band}_n"] = len(rows)
            metrics[f"{subset}_{band}_accuracy"] = round(float(rows["correct"].mean()), 6) if len(rows) else None
    return metrics

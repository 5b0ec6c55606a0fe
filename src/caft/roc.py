"""How well a complexity score predicts a wrong answer (the paper's ROC AUC analysis), via sklearn."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score, roc_curve


def auc_wrong(correct: pd.Series | np.ndarray, score: pd.Series | np.ndarray) -> float | None:
    """ROC AUC of `score` (higher = harder) for predicting `not correct`; None when only one class exists."""
    wrong = ~np.asarray(correct, dtype=bool)
    score = np.asarray(score, dtype=float)
    if wrong.all() or not wrong.any():
        return None
    return float(roc_auc_score(wrong, score))


def curve_wrong(correct: pd.Series | np.ndarray, score: pd.Series | np.ndarray) -> pd.DataFrame:
    """ROC curve points (fpr, tpr, threshold) for the same task; empty when only one class exists."""
    wrong = ~np.asarray(correct, dtype=bool)
    if wrong.all() or not wrong.any():
        return pd.DataFrame(columns=["fpr", "tpr", "threshold"])
    fpr, tpr, thr = roc_curve(wrong, np.asarray(score, dtype=float))
    thr = np.where(np.isinf(thr), np.nan, thr)
    return pd.DataFrame({"fpr": fpr.round(6), "tpr": tpr.round(6), "threshold": thr.round(6)})

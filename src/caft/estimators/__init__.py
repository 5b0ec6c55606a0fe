"""Complexity estimators beyond single-token entropy, all in one table shape: question_id, estimator, score
(higher = harder), so the split can band by any of them and `compare_estimators` can rank them."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

ESTIMATOR_COLUMNS = ["question_id", "estimator", "score"]
# The entropy stage's own estimators: name -> its column of the scores table (entropy and split both use it).
SINGLE_TOKEN = {"single_token_entropy": "entropy", "single_token_entropy_options": "entropy_options"}
# The model-as-judge estimators are ordinal (banded by level, not by thresholds): the sizes of
# caft.estimators.judge.SCALES, written out so that the entropy and split stages do not depend on the judge's
# prompt module (a test keeps the two in step).
SCALE_SIZES = {"masj_education_level": 4, "masj_reasoning_steps": 3}


def long(table: pd.DataFrame, columns: dict[str, str]) -> pd.DataFrame:
    """Wide score columns -> the common long shape (column -> estimator name)."""
    parts = [table[["question_id", col]].rename(columns={col: "score"}).assign(estimator=name)
             for col, name in columns.items()]  # fmt: skip
    return pd.concat(parts, ignore_index=True)[ESTIMATOR_COLUMNS]


def load_all(folder: str | Path) -> pd.DataFrame | None:
    """Every estimator output under `folder` (<method>/scores.parquet) in one long table, or None."""
    tables = [pd.read_parquet(f) for f in sorted(Path(folder).glob("*/scores.parquet"))]
    return pd.concat(tables, ignore_index=True) if tables else None


def levels_of(name: str, imported_name: str, imported_levels: list[str]) -> int | None:
    """Number of ordinal levels of a categorical estimator (banded by level, not threshold), else None."""
    if name in SCALE_SIZES:
        return SCALE_SIZES[name]
    if name == imported_name and imported_levels:
        return len(imported_levels)
    return None

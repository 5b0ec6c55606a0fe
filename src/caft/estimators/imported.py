"""A published estimator table (e.g. LabARSS/MMLU-Pro-education-level) joined on question id: the estimator
family for scores someone else computed. Text levels map to their index in `estimators.import.levels`
(a categorical estimator, banded by level); without levels the column is read as a continuous score."""

from __future__ import annotations

import math

import pandas as pd

from caft.errors import CaftError
from caft.params import Params
from caft.scores import Kind, long
from caft.tables import load_table


def run(questions: pd.DataFrame, p: Params, student: str, variant: None, workdir) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The family's entry (`caft.estimators.registry.FAMILIES["import"]`); unknown text levels get no score."""
    cfg = p.estimators.import_
    raw = load_table(cfg, "published estimator table", student)
    column = cfg.score_column.format(model=student)
    for col in (cfg.id_column, column):
        if col not in raw.columns:
            raise CaftError(f"published estimator table lacks column {col!r} (has: {sorted(raw.columns)[:20]})")
    table = raw[[cfg.id_column, column]].rename(columns={cfg.id_column: "question_id", column: "raw"})
    table["question_id"] = table["question_id"].astype(str)
    levels = [level.lower() for level in cfg.levels]
    if levels:
        texts = [str(v).strip().lower() for v in table["raw"]]
        table["score"] = [float(levels.index(t)) if t in levels else math.nan for t in texts]
    else:
        table["score"] = pd.to_numeric(table["raw"], errors="coerce")
    wide = questions[["question_id"]].merge(table.drop_duplicates("question_id"), on="question_id", how="inner")
    if wide.empty:
        raise CaftError("no question id of the prepared data appears in the published estimator table")
    kind = Kind(units="level", levels=len(levels)) if levels else Kind()
    return long(wide, {"score": cfg.name}, kind), wide

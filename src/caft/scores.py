"""The one shape every complexity score is stored in, whichever estimator wrote it.

One parquet file per estimator, `data/estimators/<student>/<estimator>.parquet`, rows (question_id, estimator,
score; higher = harder) plus the estimator's kind on every row (`units`, `levels`). The file declares its own
kind so that `split` (which depends only on the file of the estimator it bands by) and `compare_estimators`
read it from the data, never from a list of estimator names in code.

Torch-free and free of any estimator's code: the entropy stage writes its single-token scores through it
without depending on the other estimators, and split reads them without depending on any estimator module.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from caft.answers import labels
from caft.errors import CaftError
from caft.io import write_table

COLUMNS = ["question_id", "estimator", "score", "units", "levels"]
# The entropy stage's own estimators: name -> its column of the entropy table.
SINGLE_TOKEN = {"single_token_entropy": "entropy", "single_token_entropy_options": "entropy_options"}


@dataclass(frozen=True)
class Kind:
    """`units`: what the score is measured in (a split's cut points are reported in it); `levels`: the number
    of ordinal levels 0..levels-1 of a categorical estimator (banded by level, not by thresholds), 0 when the
    score is continuous."""

    units: str = "score"
    levels: int = 0


ENTROPY = Kind(units="nats")


def long(table: pd.DataFrame, columns: dict[str, str], kind: Kind) -> pd.DataFrame:
    """Wide score columns -> the common shape (column -> estimator name), each row carrying `kind`."""
    parts = [
        table[["question_id", col]].rename(columns={col: "score"}).assign(estimator=name)
        for col, name in columns.items()
    ]
    out = pd.concat(parts, ignore_index=True).assign(units=kind.units, levels=kind.levels)
    out["score"] = out["score"].astype(float)
    return out[COLUMNS]


def write_each(table: pd.DataFrame, folder: str | Path, names: Iterable[str] = ()) -> list[Path]:
    """One file per estimator of a common-shape table, named after it, and one for each of `names` even when
    it scored nothing (the stage's declared outputs exist whatever the model answered); returns the paths."""
    paths = []
    for name in sorted(set(table["estimator"]) | set(names)):
        paths.append(Path(folder) / f"{name}.parquet")
        write_table(table[table["estimator"] == name].reset_index(drop=True), paths[-1])
    return paths


def read(path: str | Path) -> tuple[pd.DataFrame, Kind]:
    """One estimator's file: its (question_id, score) rows and the kind it declares."""
    path = Path(path)
    if not path.exists():
        raise CaftError(f"no estimator output {path} (is the stage that writes it enabled for this student?)")
    table = pd.read_parquet(path)
    if table.empty:
        return table[["question_id", "score"]], Kind()
    first = table.iloc[0]
    return table[["question_id", "score"]], Kind(units=str(first["units"]), levels=int(first["levels"]))


def load_all(folder: str | Path) -> pd.DataFrame | None:
    """Every estimator file directly under `folder` in one common-shape table, or None."""
    tables = [pd.read_parquet(f) for f in sorted(Path(folder).glob("*.parquet"))]
    return pd.concat(tables, ignore_index=True) if tables else None


def valid_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of an entropy table whose single-token answer is valid (an option id or a number): the rows
    the paper scores (IDK and invalid answers dropped), whichever stage asks."""
    return table[table["validity"].isin(labels())]


def sample_questions(scores: pd.DataFrame, questions: pd.DataFrame, n: int | None, seed: int) -> pd.DataFrame:
    """A seeded subset of the questions the entropy stage scored with a valid answer: the rows an estimator
    beyond single-token entropy is run on (the same subset for every estimator, so they compare)."""
    pool = questions[questions["question_id"].isin(set(valid_rows(scores)["question_id"]))].sort_values("question_id")
    if n is not None and n < len(pool):
        pool = pool.iloc[np.sort(np.random.default_rng([seed, 6]).choice(len(pool), n, replace=False))]
    return pool.reset_index(drop=True)

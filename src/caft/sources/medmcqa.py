"""openlifescienceai/medmcqa at a pinned revision, in the question schema (4-option `choice` format).

Hub schema (dataset card): `id`, `question`, `opa`..`opd`, gold `cop` (0..3 = a..d), `choice_type`
(`single` / `multi`), `exp` (the explanation, may be empty or null), `subject_name`, `topic_name`. Every row
has one gold letter, and the authors keep `multi` rows too: so does this source, unless
`data.medmcqa.drop_multi`. The question is stripped of surrounding whitespace, as the authors' prompt does
(`question.strip()`). `subject_name` is the category, `exp` the rationale (the `dataset` teacher backend's
trace; a row without one gets no trace from it). The public `test` split has no labels: `validation` is the
test set (params: `data.medmcqa.test_split`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import pandas as pd

from caft.params import MedMCQAData
from caft.sources.hub import load_split

OPTION_FIELDS = ("opa", "opb", "opc", "opd")


def from_records(records: Iterable[Mapping], subset: str, drop_multi: bool = False) -> pd.DataFrame:
    """MedMCQA rows of one split -> question rows with `subset` (train / test)."""
    rows = [
        {
            "question_id": str(rec["id"]),
            "question": str(rec["question"]).strip(),
            "options": [rec[f] for f in OPTION_FIELDS],
            "answer_index": int(rec["cop"]),
            "category": rec["subject_name"],
            "rationale": rec.get("exp") or "",
            "source": f"medmcqa/{rec.get('topic_name') or ''}",
            "subset": subset,
        }
        for rec in records
        if not (drop_multi and rec["choice_type"] == "multi")
    ]
    return pd.DataFrame(rows)


def load(cfg: MedMCQAData) -> pd.DataFrame:
    """The pinned train split (the pool) and the labelled test split (validation)."""
    return pd.concat(
        [
            from_records(load_split(cfg.repo, cfg.config, cfg.revision, split, "MedMCQA"), subset, cfg.drop_multi)
            for split, subset in ((cfg.train_split, "train"), (cfg.test_split, "test"))
        ],
        ignore_index=True,
    )

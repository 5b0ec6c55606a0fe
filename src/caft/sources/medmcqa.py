"""openlifescienceai/medmcqa at a pinned revision, in the question schema (4-option `choice` format).

Hub schema (dataset card): `id`, `question`, `opa`..`opd`, gold `cop` (0..3 = a..d), `choice_type`
(`single` / `multi`), `exp` (the explanation, may be empty), `subject_name`, `topic_name`. Only `single` rows are
kept: a `multi` row is a several-answers question scored against one option, which a one-letter answer cannot
state. `subject_name` is the category, `exp` the rationale (the `dataset` teacher backend's trace). The public
`test` split has no labels: `validation` is the test set (params: `data.medmcqa.test_split`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import pandas as pd

from caft.params import HubSplits
from caft.sources.hub import load_split

OPTION_FIELDS = ("opa", "opb", "opc", "opd")


def from_records(records: Iterable[Mapping], subset: str) -> pd.DataFrame:
    """MedMCQA rows of one split -> single-answer question rows with `subset` (train / test)."""
    rows = [
        {
            "question_id": str(rec["id"]),
            "question": rec["question"],
            "options": [rec[f] for f in OPTION_FIELDS],
            "answer_index": int(rec["cop"]),
            "category": rec["subject_name"],
            "rationale": rec.get("exp") or "",
            "source": f"medmcqa/{rec.get('topic_name') or ''}",
            "subset": subset,
        }
        for rec in records
        if rec["choice_type"] == "single"
    ]
    return pd.DataFrame(rows)


def load(cfg: HubSplits) -> pd.DataFrame:
    """The pinned train split (the pool) and the labelled test split (validation)."""
    return pd.concat(
        [
            from_records(load_split(cfg.repo, cfg.config, cfg.revision, split, "MedMCQA"), subset)
            for split, subset in ((cfg.train_split, "train"), (cfg.test_split, "test"))
        ],
        ignore_index=True,
    )

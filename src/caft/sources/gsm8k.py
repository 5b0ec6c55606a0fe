"""openai/gsm8k (config `main`) at a pinned revision, in the question schema (`number` format).

Each row's `answer` is a human-written solution, then `#### <number>`: the number is the gold, the text before
it the `rationale` (the `dataset` teacher backend's trace). The solutions carry calculator annotations
(`<<48/2=24>>`) that the dataset's authors inserted for their calculator tool, not part of the reasoning a
reader sees: they are removed from the rationale, so a trace trains the student to write plain steps.
GSM8K has no ids: `gsm8k-<split>-<row>` (stable: the pinned revision fixes the row order).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import pandas as pd

from caft.errors import CaftError
from caft.params import HubSplits
from caft.sources.hub import load_split

CATEGORY = "grade school math"
_CALCULATOR = re.compile(r"<<[^<>]*>>")


def from_records(records: Iterable[Mapping], split: str, subset: str) -> pd.DataFrame:
    """GSM8K rows of one split -> question rows with `subset` (train / test)."""
    rows = []
    for i, rec in enumerate(records):
        solution, sep, gold = str(rec["answer"]).rpartition("####")
        if not sep:
            raise CaftError(f"GSM8K {split} row {i}: its answer has no '#### <number>' line")
        rows.append(
            {
                "question_id": f"gsm8k-{split}-{i:05d}",
                "question": rec["question"],
                "answer": gold.strip(),
                "category": CATEGORY,
                "rationale": _CALCULATOR.sub("", solution).strip(),
                "source": f"gsm8k/{split}",
                "subset": subset,
            }
        )
    return pd.DataFrame(rows)


def load(cfg: HubSplits) -> pd.DataFrame:
    """Both pinned splits: the train split is the entropy / split / training pool, the test split the test."""
    return pd.concat(
        [
            from_records(load_split(cfg.repo, cfg.config, cfg.revision, split, "GSM8K"), split, subset)
            for split, subset in ((cfg.train_split, "train"), (cfg.test_split, "test"))
        ],
        ignore_index=True,
    )

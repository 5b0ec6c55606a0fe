"""TIGER-Lab/MMLU-Pro from the Hugging Face Hub, at a pinned revision, in the canonical question schema."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import pandas as pd

from caft.errors import CaftError
from caft.params import HubData
from caft.sources.hub import load_split

NA_OPTION = "N/A"


def from_records(records: Iterable[Mapping]) -> pd.DataFrame:
    """Convert MMLU-Pro rows: drop the "N/A" padding options (re-indexing the answer), category = subject."""
    rows = []
    for rec in records:
        options = list(rec["options"])
        answer = int(rec["answer_index"])
        kept = [i for i, opt in enumerate(options) if str(opt).strip() != NA_OPTION]
        if answer not in kept:
            raise CaftError(f"MMLU-Pro question {rec['question_id']}: the answer is an N/A option")
        rows.append(
            {
                "question_id": str(rec["question_id"]),
                "question": rec["question"],
                "options": [options[i] for i in kept],
                "answer_index": kept.index(answer),
                "category": rec["category"],
                "rationale": rec.get("cot_content") or "",
                "difficulty": -1,
                "source": f"mmlu-pro/{rec.get('src', '')}",
            }
        )
    return pd.DataFrame(rows)


def load(cfg: HubData) -> pd.DataFrame:
    """Download (or read from the local HF cache) the pinned split; offline misses become one clear line."""
    return from_records(load_split(cfg.repo, None, cfg.revision, cfg.split))

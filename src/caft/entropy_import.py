"""Published per-question entropies (the authors' LabARSS files and hub datasets) in our entropy table shape,
so users without a GPU can reproduce the split and the ROC analysis from the released numbers."""

from __future__ import annotations

import numpy as np
import pandas as pd

from caft import answers, prompts
from caft.errors import CaftError
from caft.params import EntropyImport
from caft.tables import load_table


def load_raw(cfg: EntropyImport, model: str) -> pd.DataFrame:
    """The published table, from the hub (`{model}` in `config` is the student) or a local file."""
    return load_table(cfg, "published entropy table", model)


def _pred_index(answer: object, n_options: int) -> tuple[int, str]:
    """Published answers are option ids as text ("3", "C", 3.0) or "0" for do-not-know."""
    text = str(answer).strip()
    if text.endswith(".0"):
        text = text[:-2]
    if text == prompts.IDK_ID:
        return -1, "idk"
    for kind in ("numeric", "letter"):
        ids = prompts.option_ids(kind, n_options)
        if text in ids:
            return ids.index(text), "option"
    return -1, "other"


def join(questions: pd.DataFrame, raw: pd.DataFrame, cfg: EntropyImport, model: str) -> pd.DataFrame:
    """Our questions joined with the published scores on question id; rows without a score are dropped
    (their count is reported), and a table with no match at all is an error."""
    cols = {
        "id": cfg.id_column,
        "score": cfg.score_column.format(model=model),
        "published_answer": cfg.answer_column.format(model=model),
    }
    missing = [c for c in cols.values() if c not in raw.columns]
    if missing:
        raise CaftError(f"imported entropy table lacks column(s) {missing} (has: {sorted(raw.columns)[:20]})")
    pub = raw[list(cols.values())].rename(columns={v: k for k, v in cols.items()})
    pub["id"] = pub["id"].astype(str)
    pub = pub.drop_duplicates("id")
    merged = questions.merge(pub, left_on="question_id", right_on="id", how="inner")
    if merged.empty:
        raise CaftError("no question id of the prepared data appears in the imported entropy table")
    parsed = [
        _pred_index(a, len(o)) if len(o) else (-1, "other")
        for a, o in zip(merged["published_answer"], merged["options"], strict=True)
    ]
    merged["pred_index"] = [p for p, _ in parsed]
    merged["validity"] = [v for _, v in parsed]
    merged["correct"] = (merged["validity"] == "option") & (merged["pred_index"] == merged["answer_index"])
    # a question without options: the published answer read in its format (the authors' GSM8K files: numbers)
    free = merged["options"].map(len) == 0
    formats = [answers.free_form_of(g) if f else None for g, f in zip(merged["answer"], free, strict=True)]
    merged["pred_answer"] = [
        (fmt.canonical(a) or "") if fmt else "" for a, fmt in zip(merged["published_answer"], formats, strict=True)
    ]
    merged.loc[free, "validity"] = [
        fmt.label if a else "other" for a, fmt in zip(merged["pred_answer"], formats, strict=True) if fmt
    ]
    merged.loc[free, "correct"] = (merged["pred_answer"] != "") & (merged["pred_answer"] == merged["answer"])
    merged["entropy"] = merged["score"].astype(float)
    merged["entropy_options"] = np.nan
    merged["n_options"] = merged["options"].map(len)
    merged["prompt"] = ""
    merged["pred_token"] = merged["published_answer"].astype(str)
    return merged.drop(columns=["id", "score", "published_answer"])

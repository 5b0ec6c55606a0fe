"""Re-estimated caft (`caft_reestimate`; beyond the paper, the authors' follow-up direction).

Phase 1 changes the student, and with it what the student finds hard. Before a re-banded phase (`Phase.reband`)
the model trained so far re-scores that phase's candidates with the split's own estimator (the first answer
token's entropy, by the entropy stage's code and prompt), the candidates are re-banded by the split's rule (cut
points from the train rows' new scores, in `split.units`), and the phase trains on the new hard band only.

Which items those are is known only once phase 1 is done, so the sets and the teacher cover every candidate
(for `caft_reestimate`, the whole training pool, as for distill): the report's teacher calls are what this
pipeline requested up front, its CoT target tokens what was trained on. What moved is kept beside the model
(`rebanded_phase<k>.parquet`) and summarised in the train metrics: the hard band's overlap with the split's,
and the ROC AUC of entropy for a wrong answer before and after phase 1 on the same items.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from caft import entropy, split
from caft.answers import labels
from caft.io import write_table
from caft.params import PromptParams, SplitParams
from caft.roc import auc_wrong
from caft.sets import REBAND_QUESTION


def file_name(phase: int) -> str:
    return f"rebanded_phase{phase}.parquet"


def rebanded(model, tokenizer, candidates: pd.DataFrame, settings: dict, folder: Path, phase: int) -> pd.DataFrame:
    """Per candidate: the split's band, score and correctness, and the same after re-scoring with `model`.

    Kept in the checkpoint `folder`, so an interrupted phase resumes on the same items; the scoring itself
    resumes from its partial store."""
    path = folder / file_name(phase)
    if path.exists():
        return pd.read_parquet(path)
    # the card holds the four split keys re-banding reads (estimator, thresholds, units), validated when the
    # params loaded: nothing else of the section is needed, or present
    cfg = SplitParams.model_construct(**settings["split"])
    e = settings["entropy"]
    questions = candidates[["question_id", *REBAND_QUESTION]].reset_index(drop=True)
    rank = os.environ.get("RANK", "0")  # under DDP every process scores (the same model): a store each
    store = entropy.PartialStore(folder / f"rescore_phase{phase}_rank{rank}.jsonl")
    was_training = model.training
    model.eval()
    table = entropy.compute(
        questions,
        model,
        tokenizer,
        PromptParams(**settings["prompt"]),
        batch_size=e["batch_size"],
        max_length=e["max_length"],
        id_collision=e["id_collision"],
        store=store,
        max_new_tokens=e["max_new_tokens"],
        locate=e["locate"],
        progress=False,
    )
    model.train(was_training)
    after = split.select_score(table, cfg.estimator)
    out = band_after(candidates.reset_index(drop=True), after, cfg)
    if rank == "0":
        write_table(out, path)
    return out


def band_after(candidates: pd.DataFrame, after: pd.DataFrame, cfg: SplitParams) -> pd.DataFrame:
    """The split's rule on the new scores: cut points from the train candidates with a valid answer, bands for
    all; a candidate the re-scoring cannot read (no valid answer) is in no band, as the split drops such rows."""
    valid = after["validity"].isin(labels()).to_numpy() & after["score"].notna().to_numpy()
    on_train = (candidates["subset"] == "train").to_numpy()
    easy_cut, hard_cut = split.cut_points(after.loc[valid & on_train, "score"].to_numpy(), cfg)
    bands = np.where(valid, split.assign_bands(after["score"].fillna(0).to_numpy(), easy_cut, hard_cut), "none")
    return pd.DataFrame(
        {
            "question_id": candidates["question_id"],
            "subset": candidates["subset"],
            "band_before": candidates["band"],
            "score_before": candidates["score"].astype(float),
            "correct_before": candidates["correct"].astype(bool),
            "band_after": bands,
            "score_after": after["score"].astype(float),
            "correct_after": after["correct"].astype(bool),
            "validity_after": after["validity"],
        }
    )


def hard_ids(table: pd.DataFrame) -> set[str]:
    return set(table.loc[table["band_after"] == "hard", "question_id"])


def trained(sets: pd.DataFrame, phases: dict[int, pd.DataFrame]) -> pd.DataFrame:
    """The set's rows a run trained on: a re-banded phase's rows only for its new hard band."""
    drop = pd.Series(False, index=sets.index)
    for phase, table in phases.items():
        drop |= (sets["phase"] == phase) & ~sets["question_id"].isin(hard_ids(table))
    return sets[~drop]


def load(folder: Path, phases: list[int]) -> dict[int, pd.DataFrame]:
    return {k: pd.read_parquet(folder / file_name(k)) for k in phases if (folder / file_name(k)).exists()}


def summary(table: pd.DataFrame) -> dict:
    """How the hard band moved on the train candidates, and how well entropy flags a wrong answer before and
    after (ROC AUC on the candidates the re-scoring could read, the same items for both)."""
    train = table[table["subset"] == "train"]
    before, after = set(train.loc[train["band_before"] == "hard", "question_id"]), hard_ids(train)
    readable = train[train["band_after"] != "none"]
    return {
        "candidates_n": len(train),
        "hard_before_n": len(before),
        "hard_after_n": len(after),
        "hard_kept_n": len(before & after),
        "hard_kept_share": round(len(before & after) / len(before), 6) if before else None,
        "hard_jaccard": round(len(before & after) / len(before | after), 6) if before | after else None,
        "unreadable_after_n": len(train) - len(readable),
        "accuracy_before": round(float(train["correct_before"].mean()), 6) if len(train) else None,
        "accuracy_after": round(float(train["correct_after"].mean()), 6) if len(train) else None,
        "roc_auc_before": _auc(readable["correct_before"], readable["score_before"]),
        "roc_auc_after": _auc(readable["correct_after"], readable["score_after"]),
    }


def _auc(correct: pd.Series, score: pd.Series) -> float | None:
    value = auc_wrong(correct, score)
    return None if value is None else round(value, 6)

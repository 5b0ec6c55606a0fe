"""Running each estimator on one student's questions, into the common long shape (question_id, estimator,
score; higher = harder)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from caft.answers import VALID
from caft.errors import CaftError
from caft.estimators import judge, long
from caft.estimators.aggregates import AGGREGATES
from caft.params import EstimatorImport, EstimatorParams, ModelSpec, TeacherParams
from caft.sources.table import load_table
from caft.teacher import backends
from caft.teacher.cache import TraceCache, item_key
from caft.teacher.run import execute, teacher_label

METHODS = ("cot_entropy", "masj_education_level", "masj_reasoning_steps", "import")


def sample_questions(scores: pd.DataFrame, questions: pd.DataFrame, n: int | None, seed: int) -> pd.DataFrame:
    """A seeded subset of the questions the entropy stage scored with a valid answer (the compared rows)."""
    valid = scores.loc[scores["validity"].isin(VALID), "question_id"]
    pool = questions[questions["question_id"].isin(set(valid))].sort_values("question_id")
    if n is not None and n < len(pool):
        pool = pool.iloc[np.sort(np.random.default_rng([seed, 6]).choice(len(pool), n, replace=False))]
    return pool.reset_index(drop=True)


def cot_entropy(
    questions: pd.DataFrame, spec: ModelSpec, cfg: EstimatorParams, marker: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The student's CoT-entropy aggregates per question (long shape) and the per-question details."""
    from caft.estimators import cot  # torch and transformers, only for the method that needs them
    from caft.models import load_model, load_tokenizer, pick_device, pick_dtype

    device = pick_device(cfg.device)
    model, tok = load_model(spec, device, pick_dtype(spec.dtype, device)), load_tokenizer(spec)
    wide = cot.estimate(questions, model, tok, marker, cfg.cot_max_new_tokens, cfg.batch_size)
    return long(wide, {a: f"cot_{a}" for a in AGGREGATES}), wide


def judge_requests(questions: pd.DataFrame, kind: str, cfg: TeacherParams) -> list[backends.Request]:
    label, sampling = f"{teacher_label(cfg)}:judge:{kind}", cfg.sampling()
    out = []
    for row in questions.itertuples(index=False):
        msgs = judge.messages(kind, row.question, list(row.options))
        out.append(backends.Request(key=item_key(msgs, list(row.options), label, sampling),
                                    question_id=row.question_id, messages=msgs, n_options=len(row.options),
                                    answer_index=int(row.answer_index)))  # fmt: skip
    return out


def masj(questions: pd.DataFrame, kind: str, cfg: TeacherParams, cache_dir) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The judge's rating per question; malformed or failed judgements get no score (never a level)."""
    requests = judge_requests(questions, kind, cfg)
    cache = TraceCache(cache_dir)
    outcome, _ = execute(requests, cache, cfg)
    rows = []
    for req in requests:
        text = cache.get(req.key)["text"] if req.key in cache else None
        level = judge.parse(kind, text) if text is not None else None
        verdict = judge.SCALES[kind][level] if level is not None else (
            "malformed" if text is not None else outcome.failures.get(req.key, "failed"))  # fmt: skip
        rows.append({"question_id": req.question_id, "score": math.nan if level is None else float(level),
                     "judgement": verdict, "output": text or ""})  # fmt: skip
    wide = pd.DataFrame(rows)
    return long(wide, {"score": f"masj_{kind}"}), wide


def imported(questions: pd.DataFrame, cfg: EstimatorImport, student: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A published LabARSS estimator table joined on question id; text levels map to their index in
    `levels` (unknown text: no score)."""
    raw = load_table(cfg, "published estimator table", student)
    column = cfg.score_column.format(model=student)
    for col in (cfg.id_column, column):
        if col not in raw.columns:
            raise CaftError(f"published estimator table lacks column {col!r} (has: {sorted(raw.columns)[:20]})")
    table = raw[[cfg.id_column, column]].rename(columns={cfg.id_column: "question_id", column: "raw"})
    table["question_id"] = table["question_id"].astype(str)
    levels = [level.lower() for level in cfg.levels]
    if levels:
        table["score"] = [float(levels.index(str(v).strip().lower())) if str(v).strip().lower() in levels
                          else math.nan for v in table["raw"]]  # fmt: skip
    else:
        table["score"] = pd.to_numeric(table["raw"], errors="coerce")
    wide = questions[["question_id"]].merge(table.drop_duplicates("question_id"), on="question_id", how="inner")
    if wide.empty:
        raise CaftError("no question id of the prepared data appears in the published estimator table")
    return long(wide, {"score": cfg.name}), wide

"""Model-as-judge complexity (the paper's MASJ baselines): a judge model rates each question's education
level or number of reasoning steps, ending with a fixed marker that is parsed strictly. A judgement without
the marker, or with a value outside the scale, is recorded as malformed — never as a level."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd

from caft.params import Params, TeacherParams
from caft.prompts import render_options
from caft.scores import Kind, long
from caft.teacher import backends
from caft.teacher.cache import TraceCache, item_key, legacy_key, usable
from caft.teacher.run import execute, teacher_label

SCALES = {
    "education_level": ("high school and easier", "undergraduate", "graduate", "postgraduate"),
    "reasoning_steps": ("low", "medium", "high"),
}
MARKERS = {"education_level": "Level", "reasoning_steps": "Steps"}
QUESTIONS = {
    "education_level": "What is the minimal education level needed to answer this question correctly?",
    "reasoning_steps": "How many reasoning steps does answering this question correctly require?",
}


def messages(kind: str, question: str, options: list[str]) -> list[dict[str, str]]:
    scale = ", ".join(SCALES[kind])
    what = "multiple choice questions" if options else "questions"
    system = (
        f"You rate the complexity of {what}. Do not answer the question. "
        f"{QUESTIONS[kind]} Choose one of: {scale}. End with a line '{MARKERS[kind]}: <your choice>'."
    )
    user = f"Question: {question}"
    if options:
        user += f"\nOptions:\n{render_options(options, 'letter')}"
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def parse(kind: str, text: str) -> int | None:
    """The 0-based level named by the last `<Marker>: <value>` line, or None (malformed)."""
    values = "|".join(re.escape(v) for v in sorted(SCALES[kind], key=len, reverse=True))
    hits = re.findall(rf"{MARKERS[kind]}\s*:\s*\**\s*({values})\b\s*\**\s*\.?\s*$", text, re.IGNORECASE | re.MULTILINE)
    if not hits:
        return None
    return [v.lower() for v in SCALES[kind]].index(hits[-1].lower())


def requests(questions: pd.DataFrame, kind: str, cfg: TeacherParams) -> list[backends.Request]:
    """One judge request per question, keyed like a teacher trace (so cached, resumable, never paid twice)."""
    label, sampling = f"{teacher_label(cfg)}:judge:{kind}", cfg.sampling()
    out = []
    for row in questions.itertuples(index=False):
        msgs = messages(kind, row.question, list(row.options))
        key = item_key(msgs, list(row.options), label, sampling)
        out.append(
            backends.Request(
                key=key,
                question_id=row.question_id,
                messages=msgs,
                n_options=len(row.options),
                answer_index=int(row.answer_index),
                legacy_key=legacy_key(msgs, list(row.options), label, sampling),
            )
        )
    return out


def run(
    questions: pd.DataFrame, p: Params, student: str, kind: str, workdir: Path
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The family's entry (`caft.estimators.registry.FAMILIES["judge"]`, one scale per stage): the judge's level per
    question; malformed or failed judgements get no score (never a level). `workdir`: the workspace's response store."""
    todo = requests(questions, kind, p.estimators.judge)
    cache = TraceCache(workdir)
    outcome, _ = execute(todo, cache, p.estimators.judge)
    rows = []
    for req in todo:
        stored = cache.get(req.key)
        text = stored["text"] if usable(stored, p.estimators.judge.max_tokens) else None
        level = parse(kind, text) if text is not None else None
        if level is not None:
            verdict = SCALES[kind][level]
        else:
            verdict = "malformed" if text is not None else outcome.failures.get(req.key, "failed")
        score = math.nan if level is None else float(level)
        rows.append({"question_id": req.question_id, "score": score, "judgement": verdict, "output": text or ""})
    wide = pd.DataFrame(rows)
    return long(wide, {"score": f"masj_{kind}"}, Kind(units="level", levels=len(SCALES[kind]))), wide

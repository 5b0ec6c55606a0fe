"""Training sets per strategy: for one student, every (phase, question) with its chat messages and target.

Written as one file per strategy, so that DVC re-runs a strategy's training only when *its* data changes:
with no per-band caps, the `sft` and `distill` sets are identical whatever the threshold, and their training
is not repeated by a threshold sweep. (For the same reason a set holds no band labels.)
"""

from __future__ import annotations

import json

import pandas as pd

from caft import answers, prompts, strategies
from caft.params import Params
from caft.teacher import prompt as teacher_prompt

SET_COLUMNS = ["question_id", "subset", "phase", "kind", "messages", "completion"]
# A re-banded phase's candidates (caft.reestimate) also carry what the entropy stage's prompt and scoring read
# of a question, and the split's verdict on it (to compare with the new one): only such a strategy's set has
# band labels, and it moves with the thresholds anyway (its phase 1 is easy + medium).
REBAND_QUESTION = ["question", "options", "answer_index", "category", "answer", "expression"]
REBAND_BEFORE = ["band", "score", "correct"]


def answer_example(row, p: Params) -> tuple[list[dict], str]:
    """The single-token prompt (the entropy stage's wording, `train.answer_variant`) and the answer: the option
    id, or the number, as the dataset's prompt asks for it (GSM8K: `[[n]]`); after `prompt.answer_prefix`, which
    the target repeats (the model learns to answer from the prefix on, as the entropy and direct eval prompts
    open it)."""
    category = row.category if p.prompt.subject else None
    dataset = p.prompt.dataset
    n = len(row.options)
    messages = prompts.build_messages(
        row.question,
        list(row.options),
        category,
        p.train.answer_variant,
        p.prompt.option_ids,
        dataset,
        answer_format=answers.format_name(n, row.answer),
    )
    answer = (
        prompts.option_ids(prompts.answer_ids(p.prompt.option_ids, dataset), n)[row.answer_index] if n else row.answer
    )
    return messages, prompts.answer_prefix(p.prompt.answer_prefix, row.expression) + prompts.answer_target(
        answer, dataset
    )


def cot_example(row, p: Params, trace: str) -> tuple[list[dict], str]:
    """The teacher's CoT prompt and its (kept) trace."""
    category = row.category if p.teacher.subject else None
    answer_format = answers.format_name(len(row.options), row.answer)
    messages = teacher_prompt.messages(
        row.question, list(row.options), category, p.teacher.marker, p.prompt.dataset, answer_format=answer_format
    )
    return messages, trace


def reading(strategy: str, p: Params) -> dict:
    """How a model trained on this strategy's set is prompted and its answers read at eval: the settings of its
    eval mode only (written beside the set, then into the model's card, so `eval` reads the model, not the
    params). A setting of the other mode is left out: changing it leaves this card, and the training, alone."""
    if strategies.get(strategy).eval_mode == "cot":
        return {"mode": "cot", "marker": p.teacher.marker, "subject": p.teacher.subject, "dataset": p.prompt.dataset}
    return {
        "mode": "direct",
        "dataset": p.prompt.dataset,
        "variant": p.train.answer_variant,
        "option_ids": prompts.answer_ids(p.prompt.option_ids, p.prompt.dataset),
        "subject": p.prompt.subject,
        "answer_prefix": p.prompt.answer_prefix,
    }


def card(strategy: str, p: Params) -> dict:
    """What the train stage reads beside the set: how its model is read at eval (`reading`, into the model's
    card) and, for a strategy with a re-banded phase, the settings its re-band uses (`reband`, else null: a
    change to them re-runs only such trainings). `split.estimator` is then a single-token entropy (checked when
    the params are loaded)."""
    if not strategies.get(strategy).rebands:
        return {"reading": reading(strategy, p), "reband": None}
    reband = {
        "split": p.split.model_dump(include={"estimator", "threshold", "easy_threshold", "units"}),
        "entropy": p.entropy.model_dump(
            include={"batch_size", "max_length", "id_collision", "max_new_tokens", "locate"}
        ),
        "prompt": p.prompt.model_dump(),
    }
    return {"reading": reading(strategy, p), "reband": reband}


def validation_questions(assignments: pd.DataFrame, questions: pd.DataFrame) -> pd.DataFrame:
    """The validation carve's questions, as prepare wrote them: what the train stage's per-epoch eval asks
    (every strategy the same questions, whatever its phases train on). No band labels, for the reason above;
    the report joins them from the split."""
    ids = set(assignments.loc[assignments["subset"] == "validation", "question_id"])
    rows = questions[questions["question_id"].isin(ids)]
    return rows.sort_values("question_id").reset_index(drop=True)


def build(
    name: str, assignments: pd.DataFrame, questions: pd.DataFrame, traces: pd.DataFrame, p: Params
) -> tuple[pd.DataFrame, dict]:
    """Rows of one strategy's training set, and counts (CoT items without a kept trace are dropped)."""
    strategy = strategies.get(name)
    joined = assignments.merge(questions.drop(columns=["subset"], errors="ignore"), on="question_id")
    kept = traces.loc[traces["kept"], ["question_id", "trace"]].set_index("question_id")["trace"].to_dict()
    rows, dropped = [], 0
    for phase_no, (phase, mask) in enumerate(zip(strategy.phases, strategy.phase_masks(joined), strict=True)):
        for row in joined[mask].sort_values("question_id").itertuples(index=False):
            if phase.kind == "cot":
                if row.question_id not in kept:
                    dropped += 1
                    continue
                messages, target = cot_example(row, p, kept[row.question_id])
            else:
                messages, target = answer_example(row, p)
            record = {
                "question_id": row.question_id,
                "subset": row.subset,
                "phase": phase_no,
                "kind": phase.kind,
                "messages": json.dumps(messages),
                "completion": target,
            }
            if phase.reband:  # what the re-scoring asks, and the split's verdict to compare with
                record |= {c: getattr(row, c) for c in (*REBAND_QUESTION, *REBAND_BEFORE)}
            rows.append(record)
    extra = REBAND_QUESTION + REBAND_BEFORE if strategy.rebands else []
    table = pd.DataFrame(rows, columns=SET_COLUMNS + extra)
    counts = {f"{name}_phase{k}_n": int((table["phase"] == k).sum()) for k in range(len(strategy.phases))}
    counts[f"{name}_dropped_no_trace"] = dropped
    return table, counts

"""The teacher stage's logic: which questions need a trace, what the cache already holds, what a run would
cost (dry run), calling the backend for the rest, and the per-item trace table with its metrics."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pandas as pd

from caft import answers, split, strategies
from caft.errors import CaftError
from caft.params import GenerationParams, TeacherParams
from caft.prompts import GENERIC
from caft.teacher import backends, prompt
from caft.teacher.cache import TraceCache, item_key, legacy_key, usable

TRACE_COLUMNS = [
    "question_id",
    "key",
    "teacher",
    "backend",
    "trace",
    "parsed_index",
    "parsed_answer",
    "correct",
    "truncated",
    "unparsed",
    "kept",
    "finish_reason",
    "prompt_tokens",
    "completion_tokens",
    "latency_s",
    "attempts",
    "error",
]


def teacher_label(cfg: GenerationParams) -> str:
    """Names the teacher in every output (and in the cache key): the oracle is never mistaken for a model."""
    return backends.backend(cfg.backend).label(cfg)


def needed_ids(
    assignments: dict[str, pd.DataFrame], strategy_names: list[str], seeds: list[int], random_control: bool = True
) -> set[str]:
    """Union over students and training seeds (each seed's random control is its own draw) of the questions
    any configured strategy trains on with CoT."""
    out: set[str] = set()
    for table in assignments.values():
        for seed in seeds:
            out |= strategies.cot_question_ids(split.random_control(table, seed, random_control), strategy_names)
    return out


def build_requests(
    questions: pd.DataFrame, ids: set[str], cfg: TeacherParams, dataset: str = GENERIC
) -> list[backends.Request]:
    """One request per needed question, in the prompt of `dataset` (`prompt.dataset`)."""
    rows = questions[questions["question_id"].isin(ids)].sort_values("question_id")
    label, sampling = teacher_label(cfg), cfg.sampling()
    requests = []
    for row in rows.itertuples(index=False):
        options = list(row.options)
        category = row.category if cfg.subject else None
        answer_format = answers.format_name(len(options), row.answer)
        msgs = prompt.messages(row.question, options, category, cfg.marker, dataset, answer_format=answer_format)
        requests.append(
            backends.Request(
                key=item_key(msgs, options, label, sampling),
                question_id=row.question_id,
                messages=msgs,
                n_options=len(options),
                answer_index=int(row.answer_index),
                rationale=row.rationale,
                answer=row.answer,
                option_ids=prompt.id_kind(cfg.marker, dataset),
                legacy_key=legacy_key(msgs, options, label, sampling),
            )
        )
    return requests


def missing(requests: list[backends.Request], cache: TraceCache, max_tokens: int, adopt: bool = True) -> list:
    """The requests no store answers under this budget (`caft.teacher.cache.usable`)."""
    return [r for r in requests if not usable(cache.get(r.key, r.legacy_key, adopt=adopt), max_tokens)]


def plan(requests: list[backends.Request], cache: TraceCache, cfg: TeacherParams) -> dict:
    """What a run would pay for: calls, and token estimates (prompt ≈ characters / 4; completion = the
    cached mean where the cache has responses, else the max_tokens upper bound)."""
    todo = missing(requests, cache, cfg.max_tokens, adopt=False)
    generated = todo if backends.backend(cfg.backend).paid else []  # the oracle, datasets and imports are free
    prompt_tokens = sum(sum(len(m["content"]) for m in r.messages) // 4 for r in generated)
    stored = (cache.get(r.key, r.legacy_key, adopt=False) for r in requests)
    cached = [rec["completion_tokens"] for rec in stored if rec and rec.get("completion_tokens")]
    per_call = sum(cached) / len(cached) if cached else cfg.max_tokens
    completion_tokens = round(per_call * len(generated))
    return {
        "requested": len(requests),
        "cache_hits": len(requests) - len(todo),
        "calls": len(generated),
        "prompt_tokens_est": prompt_tokens,
        "completion_tokens_est": completion_tokens,
        "completion_tokens_max": cfg.max_tokens * len(generated),
        "cost_est_usd": round(cost(prompt_tokens, completion_tokens, cfg.prices()), 4),
        "cost_max_usd": round(cost(prompt_tokens, cfg.max_tokens * len(generated), cfg.prices()), 4),
    }


# How often a run waiting for keys that another process is requesting looks again (seconds).
WAIT_POLL_S = 0.5


def execute(
    requests: list[backends.Request], cache: TraceCache, cfg: GenerationParams, poll_s: float = WAIT_POLL_S
) -> tuple[backends.Outcome, set[str]]:
    """Call the backend for every request no store answers; responses are stored the moment they arrive.

    Keys are claimed machine-wide before they are requested (`caft.teacher.cache.Claims`): a key another
    process is requesting is waited for and read from the store when it lands, or requested here if that
    process fails it or dies."""
    outcome, fresh = backends.Outcome(), set()
    label, budget = teacher_label(cfg), cfg.max_tokens
    paid = backends.backend(cfg.backend).paid

    def sink(req: backends.Request, response: dict) -> None:
        record = {"key": req.key, "question_id": req.question_id, "teacher": label, "backend": cfg.backend}
        record = {**record, "max_tokens": budget, **response}
        if paid:
            cache.put(record)
        else:  # made again from the data every run: kept for this run only
            cache.memory[req.key] = record
        fresh.add(req.key)

    if not paid:
        if requests:
            _run_backend(requests, cfg, sink, outcome)
        return outcome, fresh

    pending, told = missing(requests, cache, budget), False
    try:
        while pending:
            mine, others = cache.claims.take(r.key for r in pending)
            try:
                todo = missing([r for r in pending if r.key in mine], cache, budget)  # landed since: not asked
                if todo:
                    _run_backend(todo, cfg, sink, outcome)
            finally:
                cache.claims.release(mine)
            pending = [r for r in pending if r.key in others]
            if pending:
                if not told:
                    print(f"teacher: {len(pending)} item(s) in flight in another run on this machine: waiting for them")
                    told = True
                time.sleep(poll_s)
                pending = missing(pending, cache, budget)
    except backends.TeacherFatal as exc:
        kept = f"{len(fresh)} trace(s) received in this run are kept in the cache"
        raise backends.TeacherFatal(f"{exc}; {kept}") from None
    finally:
        cache.close()
    return outcome, fresh


def _run_backend(todo: list[backends.Request], cfg: GenerationParams, sink, outcome: backends.Outcome) -> None:
    result = backends.backend(cfg.backend).run(todo, cfg, sink)
    outcome.failures.update(result.failures)
    outcome.unavailable.update(result.unavailable)
    outcome.attempts += result.attempts


def assemble(
    requests: list[backends.Request], cache: TraceCache, outcome: backends.Outcome, fresh: set[str], cfg: TeacherParams
) -> pd.DataFrame:
    """One row per requested question: the trace and its checks, or the error class."""
    rows = []
    for req in requests:
        rec = cache.get(req.key)
        if not usable(rec, cfg.max_tokens):
            rows.append(
                {
                    "question_id": req.question_id,
                    "key": req.key,
                    "teacher": teacher_label(cfg),
                    "backend": cfg.backend,
                    "error": outcome.failures.get(req.key) or outcome.unavailable.get(req.key, "not_requested"),
                    "kept": False,
                    "correct": False,
                    "truncated": False,
                    "unparsed": False,
                }
            )
            continue
        parsed = answers.cot_answer(rec["text"], req.n_options, req.answer, cfg.marker)
        truncated = rec["finish_reason"] == "length"
        unparsed = not truncated and parsed is None
        gold = answers.gold(req.n_options, req.answer_index, req.answer)
        correct = not truncated and parsed is not None and parsed == gold
        rows.append(
            {
                "question_id": req.question_id,
                "key": req.key,
                "teacher": rec["teacher"],
                "backend": rec["backend"],
                "trace": rec["text"],
                "parsed_index": parsed if isinstance(parsed, int) else -1,
                "parsed_answer": "" if parsed is None else str(parsed),
                "correct": correct,
                "truncated": truncated,
                "unparsed": unparsed,
                "kept": not truncated and not unparsed and (correct or cfg.keep == "all"),
                "finish_reason": rec["finish_reason"],
                "prompt_tokens": rec["prompt_tokens"],
                "completion_tokens": rec["completion_tokens"],
                "latency_s": rec["latency_s"],
                "attempts": rec["attempts"],
                "error": "",
            }
        )
    table = pd.DataFrame(rows, columns=TRACE_COLUMNS)
    return table.astype(
        {"parsed_index": "Int64", "prompt_tokens": "Int64", "completion_tokens": "Int64", "attempts": "Int64"}
    )


def summarize(table: pd.DataFrame, outcome: backends.Outcome, fresh: set[str], cfg: TeacherParams) -> dict:
    answered = table[table["error"] == ""]
    # which traces came from the cache is what this run did, not what the traces are: it is counted here (and
    # goes to the run log), never stored in the table, so the same inputs give the same table whatever ran before
    new = answered[answered["key"].isin(fresh)]
    missing = table[table["error"] != ""]
    unavailable = Counter(missing.loc[missing["key"].isin(outcome.unavailable), "error"])
    failures = Counter(missing.loc[~missing["key"].isin(outcome.unavailable), "error"])
    out = {
        "teacher": teacher_label(cfg),
        "requested": len(table),
        "cache_hits": len(answered) - len(new),
        "new_calls": (len(fresh) + sum(failures.values())) if backends.backend(cfg.backend).paid else 0,
        "new_traces": len(fresh),
        "api_attempts": outcome.attempts,
        "failures": sum(failures.values()),
        "kept": int(table["kept"].sum()),
        "kept_rate": round(float(table["kept"].mean()), 6) if len(table) else None,
        "correct_rate": round(float(answered["correct"].mean()), 6) if len(answered) else None,
        "truncated": int(answered["truncated"].sum()),
        "unparsed": int(answered["unparsed"].sum()),
        "prompt_tokens": int(answered["prompt_tokens"].sum()),
        "completion_tokens": int(answered["completion_tokens"].sum()),
        "new_prompt_tokens": int(new["prompt_tokens"].sum()),
        "new_completion_tokens": int(new["completion_tokens"].sum()),
    }
    out["cost_usd"] = round(cost(out["prompt_tokens"], out["completion_tokens"], cfg.prices()), 6)
    out["new_cost_usd"] = round(cost(out["new_prompt_tokens"], out["new_completion_tokens"], cfg.prices()), 6)
    for error_class, count in sorted(failures.items()):
        out[f"failures_{error_class}"] = count
    out["unavailable"] = sum(unavailable.values())  # items the backend has no trace for (left out, counted)
    for why, count in sorted(unavailable.items()):
        out[f"unavailable_{why}"] = count
    return out


# What this run did, rather than what the traces are: moved out of the metrics into the stage's run log, so two
# runs at the same params do not "differ" in `dvc exp show`.
RUN_KEYS = (
    "cache_hits",
    "new_calls",
    "new_traces",
    "api_attempts",
    "new_prompt_tokens",
    "new_completion_tokens",
    "new_cost_usd",
)


def split_summary(summary: dict) -> tuple[dict, dict]:
    """(metrics: what the kept traces are and cost, the run log: what this run requested and paid)."""
    return {k: v for k, v in summary.items() if k not in RUN_KEYS}, {k: summary[k] for k in RUN_KEYS if k in summary}


def check_failures(summary: dict, cfg: TeacherParams) -> None:
    """Items that failed after every retry, or whose trace was cut at `max_tokens`, must not vanish from the CoT
    sets while the stage reports success: beyond `teacher.max_failures` of them together the stage stops (what
    was received is already stored). Every run asks again for the failed items (the stage always runs), and a
    cut trace is asked again under a larger `teacher.max_tokens`, alone."""
    gaps = summary["failures"] + summary["truncated"]
    if gaps <= cfg.max_failures:
        return
    classes = [f"{k.removeprefix('failures_')}: {v}" for k, v in summary.items() if k.startswith("failures_")]
    if summary["truncated"]:
        classes.append(f"cut at max_tokens={cfg.max_tokens}: {summary['truncated']}")
    raise CaftError(
        f"teacher: {gaps} of {summary['requested']} item(s) have no usable trace ({', '.join(classes)}); "
        f"{summary['new_traces']} trace(s) received now and {summary['cache_hits']} cached are kept; run again to "
        "request only the failed items (raise teacher.max_tokens to re-ask only the cut ones), or tolerate up to "
        f"N with teacher.max_failures (now {cfg.max_failures})"
    )


def load_assignments(split_dir: str | Path, students: list[str]) -> dict[str, pd.DataFrame]:
    out = {}
    for name in students:
        path = Path(split_dir) / name / "assignments.parquet"
        if not path.exists():
            raise CaftError(f"split output for student {name!r} not found: {path} (run `dvc repro split@{name}`)")
        out[name] = pd.read_parquet(path)
    return out


def cost(prompt_tokens: float, completion_tokens: float, prices: tuple[float, float]) -> float:
    """US dollars at per-million-token prices (prompt, completion; 0 when unpriced)."""
    return (prompt_tokens * prices[0] + completion_tokens * prices[1]) / 1e6

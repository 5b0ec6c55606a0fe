"""Teacher backends. Each takes the requests not yet cached and hands every received response to `sink`
(which stores it at once); per-item failures are returned by error class; a fatal error (bad key, bad
request) raises TeacherFatal after everything already received has been stored."""

from __future__ import annotations

import asyncio
import email.utils
import json
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd
from tqdm.auto import tqdm

from caft.errors import CaftError
from caft.params import (
    GenerationParams,
    ModelSpec,
    OpenAIBackend,
    Settings,
    TeacherHF,
    TeacherImport,
    TeacherParams,
    declared_block,
)
from caft.prompts import apply_chat_template
from caft.tables import load_table
from caft.teacher.prompt import answer_marker, free_marker

RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
LONG_WAIT_S = 10.0  # a server-asked wait this long or longer is said on stderr (item and seconds)


class TeacherFatal(CaftError):
    """A non-retryable error: the stage stops; received traces stay in the cache."""


@dataclass
class Request:
    key: str
    question_id: str
    messages: list[dict[str, str]]
    n_options: int
    answer_index: int
    rationale: str = ""
    answer: str = ""  # the gold of a question without options (a number, yes / no)
    option_ids: str | None = None  # the ids the prompt named, if not the marker's (how a conclusion names them)
    legacy_key: str = ""  # the key an earlier version stored this response under (caft.teacher.cache)


@dataclass
class Outcome:
    """What one backend run did: responses go to the sink as they arrive; failures are counted here."""

    failures: dict[str, str] = field(default_factory=dict)  # question key -> error class
    unavailable: dict[str, str] = field(default_factory=dict)  # key -> why the backend has no trace (not a failure)
    attempts: int = 0


Sink = Callable[[Request, dict], None]


def _response(
    text: str, finish: str, prompt_tokens: int, completion_tokens: int, latency: float, attempts: int
) -> dict:
    return {
        "text": text,
        "finish_reason": finish,
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "latency_s": round(latency, 4),
        "attempts": attempts,
    }


# --- oracle -------------------------------------------------------------------------------------------------


def _conclusion(req: Request, marker: str) -> str:
    """The trace's last sentence: the answer in the configured marker."""
    if not req.n_options:
        return free_marker(req.answer, marker)
    return f"So {answer_marker(req.answer_index, marker, req.option_ids)}."


def oracle(requests: list[Request], cfg: TeacherParams, sink: Sink) -> Outcome:
    """The synthetic generator's own correct rationale, ending with the configured answer marker.
    Only for synthetic data; every output labels it `oracle`."""
    missing = [r.question_id for r in requests if not r.rationale]
    if missing:
        raise CaftError(
            f"teacher.backend=oracle needs questions with a rationale (synthetic data); {len(missing)} have none, "
            f"e.g. {missing[0]!r}"
        )
    for req in requests:
        *steps, final = req.rationale.splitlines()
        # a chain's rationale ends with "The answer is n.", which the marker sentence restates
        text = "\n".join([*steps, (f"{final} " if req.n_options else "") + _conclusion(req, cfg.marker)])
        sink(req, _response(text, "stop", 0, 0, 0.0, 0))
    return Outcome()


# --- a dataset's own solutions -----------------------------------------------------------------------------


def dataset_rationale(requests: list[Request], cfg: TeacherParams, sink: Sink) -> Outcome:
    """The source's own written solution (GSM8K's human-written steps, MedMCQA's explanations) as the trace,
    closed with the configured answer marker. A question the dataset gives no solution (MedMCQA's null `exp`)
    has no trace (`no_rationale`): not a failure (asking again changes nothing), left out of the CoT sets and
    counted in the metrics; the openai backend asks a model for them."""
    outcome = Outcome()
    for req in requests:
        if not req.rationale.strip():
            outcome.unavailable[req.key] = "no_rationale"
            continue
        sink(req, _response(f"{req.rationale.strip()}\n{_conclusion(req, cfg.marker)}", "stop", 0, 0, 0.0, 0))
    return outcome


# --- published traces ---------------------------------------------------------------------------------------


def imported(requests: list[Request], cfg: TeacherImport, sink: Sink) -> Outcome:
    table = load_table(cfg, "published teacher traces")
    for col in (cfg.id_column, cfg.text_column):
        if col not in table.columns:
            raise CaftError(f"imported trace table lacks column {col!r} (has: {sorted(table.columns)[:20]})")
    texts = dict(zip(table[cfg.id_column].astype(str), table[cfg.text_column], strict=True))
    outcome = Outcome()
    for req in requests:
        text = texts.get(req.question_id)
        if text is None or (isinstance(text, float) and pd.isna(text)) or not str(text).strip():
            outcome.failures[req.key] = "missing_in_import"
            continue
        sink(req, _response(str(text), "stop", 0, 0, 0.0, 0))
    return outcome


# --- local transformers model -------------------------------------------------------------------------------


def hf_generate(requests: list[Request], cfg: TeacherHF, sampling: dict, sink: Sink) -> Outcome:
    """A local model (a GPU teacher, or the judge) through `caft.generation`, the loops evaluation uses: greedy
    at temperature 0 or null, else sampled with exactly the temperature and top-p asked for. Either way the
    model's own generation config adds nothing (Qwen2.5-Instruct's would add a repetition penalty of 1.05 and
    top-k 20, even to a "greedy" `model.generate`) and an answer ends at any of the model's end tokens."""
    # torch and the model code load only for a local teacher: check_params and the `caft` commands read this
    # registry's names without them.
    from caft.generation import Generated, greedy, sampled
    from caft.models import load_model, load_tokenizer, pick_device, pick_dtype

    spec = ModelSpec(ref=cfg.ref, revision=cfg.revision, dtype=cfg.dtype, trust_remote_code=cfg.trust_remote_code)
    device = pick_device(cfg.device)
    tok, model = load_tokenizer(spec), load_model(spec, device, pick_dtype(cfg.dtype, device))
    texts = [apply_chat_template(tok, r.messages) for r in requests]
    prompt_tokens = [len(ids) for ids in tok(texts, add_special_tokens=False)["input_ids"]]
    began = time.monotonic()

    def store(positions: list[int], batch: list[Generated]) -> None:
        """Each finished batch into the store at once (a kill loses at most the batch being generated)."""
        nonlocal began
        latency, began = (time.monotonic() - began) / len(batch), time.monotonic()
        for i, out in zip(positions, batch, strict=True):
            finish = "length" if out.cut else "stop"
            sink(requests[i], _response(out.text, finish, prompt_tokens[i], len(out.token_ids), latency, 1))

    budget, temperature = sampling["max_tokens"], sampling["temperature"] or 0.0  # null: the greedy default
    if temperature > 0:
        draw = {"temperature": temperature, "top_p": sampling["top_p"], "seed": sampling["seed"]}
        sampled(model, tok, texts, budget, cfg.batch_size, **draw, desc="teacher(hf)", on_batch=store)
    else:
        greedy(model, tok, texts, budget, cfg.batch_size, desc="teacher(hf)", on_batch=store)
    return Outcome(attempts=len(requests))


# --- OpenAI-compatible API ----------------------------------------------------------------------------------


def _retry_after(value: str | None) -> float | None:
    """Retry-After as seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def backoff(attempt: int, cfg: OpenAIBackend, retry_after: float | None, rng: random.Random) -> float:
    """Seconds to wait before retry `attempt` (1-based): the server's Retry-After when given (at most
    `retry_after_max_s`), otherwise
    exponential backoff with jitter in [50 %, 100 %] of min(max, base * 2^(attempt-1))."""
    if retry_after is not None:
        return min(retry_after, cfg.retry_after_max_s)
    return min(cfg.backoff_max_s, cfg.backoff_base_s * 2 ** (attempt - 1)) * rng.uniform(0.5, 1.0)


def _fatal_message(status: int, body: str, model: str) -> str:
    try:
        detail = json.loads(body).get("error", {})
        detail = detail.get("message", "") if isinstance(detail, dict) else str(detail)
    except (ValueError, AttributeError):
        detail = body
    detail = " ".join(str(detail).split())[:200]
    return f"teacher API returned HTTP {status} for model {model!r} (not retried): {detail}"


async def _call(
    client, req: Request, cfg: OpenAIBackend, sampling: dict, rng: random.Random, slots: asyncio.Semaphore
) -> tuple[dict | None, str, int]:
    """One item with retries: (response or None, error class of the last failure, attempts). A concurrency slot
    is held only while a request is in flight, never while waiting to retry, so a long Retry-After on one item
    does not hold back the others."""
    import httpx

    body = {
        "model": cfg.model,
        "messages": req.messages,
        "max_tokens": sampling["max_tokens"],
        "top_p": sampling["top_p"],
    }
    for optional in ("temperature", "seed"):  # null: not sent (the provider's default)
        if sampling[optional] is not None:
            body[optional] = sampling[optional]
    error, attempt = "", 0
    while True:
        attempt += 1
        retry_after = None
        began = time.monotonic()
        try:
            async with slots:
                resp = await client.post("chat/completions", json=body)
            if resp.status_code == 200:
                data = resp.json()
                choice = data["choices"][0]
                usage = data.get("usage") or {}
                return (
                    _response(
                        str(choice["message"]["content"] or ""),
                        str(choice.get("finish_reason") or "unknown"),
                        int(usage.get("prompt_tokens") or 0),
                        int(usage.get("completion_tokens") or 0),
                        time.monotonic() - began,
                        attempt,
                    ),
                    "",
                    attempt,
                )
            if resp.status_code not in RETRYABLE_STATUS and resp.status_code < 500:
                raise TeacherFatal(_fatal_message(resp.status_code, resp.text, cfg.model))
            error, retry_after = f"http_{resp.status_code}", _retry_after(resp.headers.get("retry-after"))
        except httpx.TimeoutException:
            error = "timeout"
        except httpx.TransportError:
            error = "connection"
        except (ValueError, KeyError, IndexError, TypeError):
            error = "malformed_response"
        if attempt > cfg.max_retries:
            return None, error, attempt
        wait = backoff(attempt, cfg, retry_after, rng)
        if retry_after is not None and wait >= LONG_WAIT_S:
            capped = f", capped by retry_after_max_s={cfg.retry_after_max_s:g}" if retry_after > wait else ""
            tqdm.write(
                f"teacher: {req.question_id}: {error}, the server asks for {retry_after:g} s; "
                f"retry {attempt} in {wait:g} s{capped}",
                file=sys.stderr,
            )
        await asyncio.sleep(wait)


async def _run_api(requests: list[Request], cfg: OpenAIBackend, sampling: dict, api_key: str, sink: Sink) -> Outcome:
    import httpx

    outcome = Outcome()
    slots = asyncio.Semaphore(cfg.concurrency)
    rng = random.Random(0)
    headers = {"Authorization": f"Bearer {api_key}"}
    base_url = cfg.base_url.rstrip("/") + "/"

    async def one(req: Request):
        return req, *(await _call(client, req, cfg, sampling, rng, slots))

    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=cfg.timeout_s) as client:
        tasks = [asyncio.create_task(one(r)) for r in requests]
        try:
            for fut in tqdm(asyncio.as_completed(tasks), total=len(tasks), desc="teacher(api)", unit="q"):
                req, response, error, attempts = await fut
                outcome.attempts += attempts
                if response is None:
                    outcome.failures[req.key] = error
                else:
                    sink(req, response)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    return outcome


def openai_api(requests: list[Request], cfg: OpenAIBackend, sampling: dict, api_key: str, sink: Sink) -> Outcome:
    return asyncio.run(_run_api(requests, cfg, sampling, api_key, sink))


def api_key(cfg: TeacherParams) -> str:
    """The key comes from the environment only; params name the variable, never hold the value. Whitespace
    around it (a key pasted with its newline) is dropped; anything else a key cannot hold is one line that
    never shows the key."""
    key = os.environ.get(cfg.openai.api_key_env, "").strip()
    if not key:
        raise CaftError(f"teacher.openai.api_key_env names {cfg.openai.api_key_env}, which is not set")
    if not (key.isascii() and key.isprintable()) or any(c.isspace() for c in key):
        raise CaftError(
            f"the value of {cfg.openai.api_key_env} is not an API key: it holds spaces or non-ASCII characters "
            "(the value is not shown)"
        )
    return key


# --- the registry -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Backend:
    """A teacher backend: the label it writes into every output (and cache key), whether its calls cost tokens or
    compute (`paid`: the dry run and the plan price only those, and only their responses are stored; a free
    backend's traces are made again from the data every run, so an edited rationale is never read stale), and
    how it answers the requests."""

    label: Callable[[TeacherParams], str]
    paid: bool
    run: Callable[[list[Request], TeacherParams, Sink], Outcome]
    # the model of its params block (`teacher.<name>`, and `estimators.judge.<name>` where the judge uses it), for
    # a backend `caft.params` does not name (read with `backend_params`; its leaves go in the stage's params)
    settings: type[Settings] | None = None


def _hf_label(cfg: TeacherParams) -> str:
    return f"hf:{cfg.hf.ref}" + (f"@{cfg.hf.revision}" if cfg.hf.revision else "")


BACKENDS: dict[str, Backend] = {
    "oracle": Backend(lambda cfg: "oracle:synthetic-rationale", False, oracle),
    "dataset": Backend(lambda cfg: "dataset:own-rationale", False, dataset_rationale),
    "import": Backend(
        lambda cfg: f"import:{cfg.import_.label}", False, lambda reqs, cfg, sink: imported(reqs, cfg.import_, sink)
    ),
    "hf": Backend(_hf_label, True, lambda reqs, cfg, sink: hf_generate(reqs, cfg.hf, cfg.sampling(), sink)),
    "openai": Backend(
        lambda cfg: f"openai:{cfg.openai.model}",
        True,
        lambda reqs, cfg, sink: openai_api(reqs, cfg.openai, cfg.sampling(), api_key(cfg), sink),
    ),
}


def backend(name: str) -> Backend:
    """The registry's entry for `teacher.backend`; a name it does not hold is one line listing those it does."""
    if name not in BACKENDS:
        raise CaftError(f"unknown teacher backend {name!r} (known: {', '.join(BACKENDS)})")
    return BACKENDS[name]


def backend_params(cfg: GenerationParams, name: str) -> Settings:
    """The params block of a backend added as one entry (under the teacher's or the judge's settings), validated
    by the entry's own model."""
    return declared_block(cfg, name, backend(name).settings, "teacher backend")

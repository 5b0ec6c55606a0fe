import json
import time

import pandas as pd
import pytest

from caft import strategies
from caft.errors import CaftError
from caft.names import check_names
from caft.split import make_split
from caft.teacher import backends, run
from caft.teacher.cache import ResponseStore, TraceCache, item_key
from tests.conftest import make_questions, model_entry, params, section
from tests.fake_openai import FakeOpenAI

KEY = "sk-test-SECRET-0123456789"


def _params(base_url: str = "http://127.0.0.1:9/v1", **teacher) -> object:
    openai = {
        "base_url": base_url,
        "model": "m",
        "api_key_env": "CAFT_TEST_KEY",
        "concurrency": 4,
        "timeout_s": 3.0,  # far above a loaded machine's local round trip, so only a scripted hang times out
        "max_retries": 3,
        "backoff_base_s": 0.01,
        "backoff_max_s": 0.05,
    }
    openai.update(teacher.pop("openai", {}))
    raw = {
        "students": ["tiny"],
        "models": {"tiny": {"ref": "tiny"}},
        "strategies": ["distill"],
        "teacher": {"backend": "openai", "max_tokens": 64, "openai": openai, **teacher},
    }
    return params(raw)


def _questions(n: int = 6) -> pd.DataFrame:
    q = make_questions(n)
    q["question"] = [f"Q{i}?" for i in range(n)]
    q["answer_index"] = [i % 2 for i in range(n)]
    return q


def _requests(p, questions):
    return run.build_requests(questions, set(questions["question_id"]), p.teacher)


def _run(p, questions, cache_dir):
    cache = TraceCache(cache_dir)
    requests = _requests(p, questions)
    outcome, fresh = run.execute(requests, cache, p.teacher)
    table = run.assemble(requests, cache, outcome, fresh, p.teacher)
    return table.set_index("question_id"), run.summarize(table, outcome, fresh, p.teacher)


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv("CAFT_TEST_KEY", KEY)


def test_faults_are_retried_with_exact_call_counts(tmp_path):
    q = _questions(6)
    answers = dict(zip(q["question"], q["answer_index"], strict=True))
    script = {
        "Q1?": ["429", "ok"],
        "Q2?": ["500", "500", "ok"],
        "Q3?": ["hang", "ok"],
        "Q4?": ["badjson", "ok"],
        "Q5?": ["length"],
    }
    with FakeOpenAI(answers, script, retry_after="0.3", hang_s=6.0) as api:
        table, m = _run(_params(api.base_url), q, tmp_path)
    assert {f"Q{i}?": api.count(f"Q{i}?") for i in range(6)} == {
        "Q0?": 1,
        "Q1?": 2,
        "Q2?": 3,
        "Q3?": 2,
        "Q4?": 2,
        "Q5?": 1,
    }
    (first, _), (second, _) = api.calls["Q1?"]
    assert second - first >= 0.3  # Retry-After honoured
    assert api.auth == {f"Bearer {KEY}"}
    assert list(table.loc[["q0", "q1", "q2", "q3", "q4"], "kept"]) == [True] * 5
    assert table.loc["q5", "truncated"] and not table.loc["q5", "kept"] and not table.loc["q5", "correct"]
    assert table.loc["q5", "finish_reason"] == "length"
    assert list(table["attempts"]) == [1, 2, 3, 2, 2, 1]
    assert (m["requested"], m["new_calls"], m["api_attempts"], m["failures"], m["kept"], m["truncated"]) == (
        6,
        6,
        11,
        0,
        5,
        1,
    )
    assert (m["prompt_tokens"], m["completion_tokens"]) == (300, 60)


def test_exhausted_retries_are_failures_and_retried_next_run(tmp_path):
    q = _questions(2)
    with FakeOpenAI({"Q0?": 0, "Q1?": 1}, {"Q1?": ["500"] * 4}) as api:
        table, m = _run(_params(api.base_url, openai={"max_retries": 2}), q, tmp_path)
        assert api.count("Q1?") == 3 and table.loc["q1", "error"] == "http_500"
        assert (m["failures"], m["failures_http_500"]) == (1, 1)
        table, m = _run(_params(api.base_url, openai={"max_retries": 2}), q, tmp_path)
    # the cached success is not requested again; the failed item is (its 4th 500, then success)
    assert (api.count("Q0?"), api.count("Q1?")) == (1, 5)
    assert table.loc["q1", "kept"] and (m["cache_hits"], m["new_calls"], m["api_attempts"]) == (1, 1, 2)


def test_401_stops_with_one_line_and_keeps_what_was_received(tmp_path):
    q = _questions(4)
    with FakeOpenAI({}, {"Q2?": ["401"]}) as api:
        p = _params(api.base_url, openai={"concurrency": 1})
        with pytest.raises(backends.TeacherFatal) as exc:
            _run(p, q, tmp_path)
    assert str(exc.value) == (
        "teacher API returned HTTP 401 for model 'm' (not retried): Invalid API key; "
        "2 trace(s) received in this run are kept in the cache"
    )
    store = ResponseStore(tmp_path)
    assert {store.get(key)["question_id"] for key in store.stored_keys()} == {"q0", "q1"}
    assert api.count("Q3?") == 0 and KEY not in str(exc.value)


def test_missing_key_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("CAFT_TEST_KEY")
    with pytest.raises(CaftError, match="^teacher.openai.api_key_env names CAFT_TEST_KEY, which is not set$"):
        _run(_params(), _questions(1), tmp_path)


def test_threshold_change_requests_exactly_the_newly_hard_uncached_items(tmp_path):
    scores = pd.DataFrame(
        {
            "question_id": [f"q{i}" for i in range(40)],
            "subset": ["train"] * 40,
            "entropy": [i / 10 for i in range(40)],
            "validity": "option",
            "correct": False,
        }
    )
    questions = make_questions(40).assign(question=[f"Q{i}?" for i in range(40)])
    old, _ = make_split(scores, section("split", threshold=0.75, max_train=None, val_size=0), seed=0)
    new, _ = make_split(scores, section("split", threshold=0.5, max_train=None, val_size=0), seed=0)
    hard_old = run.needed_ids({"tiny": old}, ["caft"], [42])
    hard_new = run.needed_ids({"tiny": new}, ["caft"], [42])
    with FakeOpenAI({}) as api:
        p = _params(api.base_url)
        for ids in (hard_old, hard_new):
            requests = run.build_requests(questions, ids, p.teacher)
            cache = TraceCache(tmp_path)
            before = sum(api.count(f"Q{i}?") for i in range(40))
            run.execute(requests, cache, p.teacher)
            made = sum(api.count(f"Q{i}?") for i in range(40)) - before
        assert made == len(hard_new - hard_old) == 10
    assert (len(hard_old), len(hard_new)) == (10, 20)
    assert all(api.count(f"Q{i}?") == 1 for i in range(20, 40)) and api.count("Q0?") == 0


def test_dry_run_plan_counts_calls_tokens_and_cost(tmp_path):
    q = _questions(4)
    p = _params(price_prompt_per_m=1.0, price_completion_per_m=2.0)
    requests = _requests(p, q)
    cache = TraceCache(tmp_path)
    cache.put(
        {
            "key": requests[0].key,
            "question_id": "q0",
            "teacher": "x",
            "backend": "openai",
            "text": "t",
            "finish_reason": "stop",
            "prompt_tokens": 40,
            "completion_tokens": 100,
            "latency_s": 0.1,
            "attempts": 1,
        }
    )
    plan = run.plan(requests, cache, p.teacher)
    chars = sum(sum(len(m["content"]) for m in r.messages) // 4 for r in requests[1:])
    assert plan == {
        "requested": 4,
        "cache_hits": 1,
        "calls": 3,
        "prompt_tokens_est": chars,
        "completion_tokens_est": 300,
        "completion_tokens_max": 192,
        "cost_est_usd": round((chars * 1 + 300 * 2) / 1e6, 4),
        "cost_max_usd": round((chars * 1 + 192 * 2) / 1e6, 4),
    }


def test_cache_key_depends_on_prompt_model_and_sampling_but_not_the_budget():
    q = _questions(1)
    base = _requests(_params(), q)[0].key
    assert _requests(_params(), q)[0].key == base
    assert _requests(_params(temperature=0.7), q)[0].key != base
    assert _requests(_params(openai={"model": "other"}), q)[0].key != base
    assert _requests(_params(marker="brackets"), q)[0].key != base
    assert _requests(_params(), q.assign(options=[["x", "y"]]))[0].key != base
    assert _requests(_params(max_tokens=4096), q)[0].key == base  # a budget decides only whether a cut trace stands


def test_a_store_holds_whole_responses_only(tmp_path):
    """One file per key, renamed into place: a writer killed mid-write leaves a temporary file, never a half
    record under the key; a stray half-written file is read as absent."""
    store = ResponseStore(tmp_path)
    store.put({"key": "ab" + "0" * 62, "text": "1"})
    assert store.get("ab" + "0" * 62) == {"key": "ab" + "0" * 62, "text": "1"}
    store.path("cd" + "0" * 62).parent.mkdir()
    store.path("cd" + "0" * 62).write_text('{"key": "cd00')
    assert store.get("cd" + "0" * 62) is None and store.get("ef" + "0" * 62) is None
    assert sorted(store.stored_keys()) == ["ab" + "0" * 62, "cd" + "0" * 62]
    assert not list(tmp_path.rglob("*.tmp"))


def test_a_cut_trace_stands_until_the_budget_grows(tmp_path):
    """Raising teacher.max_tokens asks again for the traces cut at the old budget, and only for those; lowering it
    re-asks nothing (a trace that ended on its own is the same answer under any budget)."""
    q = _questions(3)
    with FakeOpenAI({}, {"Q1?": ["length", "ok"]}) as api:
        table, m = _run(_params(api.base_url, max_tokens=64), q, tmp_path)
        assert list(table["truncated"]) == [False, True, False] and m["truncated"] == 1
        table, m = _run(_params(api.base_url, max_tokens=32), q, tmp_path)
        assert list(table["truncated"]) == [False, True, False] and m["new_calls"] == 0
        table, m = _run(_params(api.base_url, max_tokens=128), q, tmp_path)
        assert not table["truncated"].any() and (m["new_calls"], m["cache_hits"]) == (1, 2)
    assert [api.count(f"Q{i}?") for i in range(3)] == [1, 2, 1]


def test_an_earlier_versions_store_is_read_not_paid_again(tmp_path, response_store):
    """The one-file JSON-lines store of earlier versions (keyed with the budget): its responses are found under
    the new key, copied into the new layout, and never requested."""
    q = _questions(2)
    p = _params()
    reqs = _requests(p, q)
    old = [
        {
            "key": r.legacy_key,
            "question_id": r.question_id,
            "teacher": "openai:m",
            "backend": "openai",
            "text": "So the answer is (A).",
            "finish_reason": "stop",
            "prompt_tokens": 50,
            "completion_tokens": 9,
            "latency_s": 0.1,
            "attempts": 1,
        }
        for r in reqs
    ]
    (response_store / "traces.jsonl").write_text("".join(json.dumps(rec) + "\n" for rec in old))
    table, m = _run(p, q, tmp_path)  # the server does not exist: any request would fail
    assert (m["cache_hits"], m["new_calls"], m["failures"]) == (2, 0, 0)
    assert ResponseStore(tmp_path).get(reqs[0].key)["text"] == "So the answer is (A)."


def test_oracle_traces_and_label():
    from caft.sources.synthetic import generate

    q = generate(section("data.synthetic", n_questions=4, families=["arithmetic", "units"]), seed=1)
    for marker, ending in (("answer_is", "the answer is ({})."), ("brackets", "[[{}]].")):
        p = params({"students": ["t"], "models": {"t": model_entry()}, "teacher": {"marker": marker}})
        requests = run.build_requests(q, set(q["question_id"]), p.teacher)
        got: dict[str, str] = {}

        def sink(req, resp, got=got):
            got[req.question_id] = resp["text"]

        backends.oracle(requests, p.teacher, sink)
        row = q.iloc[0]
        ident = "ABCDEFGHIJ"[row["answer_index"]] if marker == "answer_is" else str(row["answer_index"] + 1)
        assert got[row["question_id"]] == row["rationale"] + " So " + ending.format(ident)
    assert run.teacher_label(p.teacher) == "oracle:synthetic-rationale"
    with pytest.raises(CaftError, match="teacher.backend=oracle needs questions with a rationale"):
        backends.oracle(run.build_requests(q.assign(rationale=""), {"syn-1-00000"}, p.teacher), p.teacher, print)


def test_import_backend_joins_on_id(tmp_path):
    q = _questions(3)
    pd.DataFrame(
        {"question_id": ["q0", "q1"], "distill_response": ["So the answer is (A).", "the answer is (A)"]}
    ).to_csv(tmp_path / "traces.csv", index=False)
    p = _params(backend="import", **{"import": {"path": str(tmp_path / "traces.csv"), "label": "deepseek-v3"}})
    table, m = _run(p, q, tmp_path / "cache")
    assert list(table["correct"]) == [True, False, False]
    assert table.loc["q2", "error"] == "missing_in_import" and m["failures_missing_in_import"] == 1
    assert set(table.loc[["q0", "q1"], "teacher"]) == {"import:deepseek-v3"}


def test_hf_backend_on_the_tiny_model(tmp_path):
    p = _params(backend="hf", max_tokens=6, hf={"ref": "tiny", "batch_size": 2, "dtype": "float32"})
    table, m = _run(p, _questions(3), tmp_path)
    assert m["new_traces"] == 3 and m["failures"] == 0
    for row in table.itertuples():
        assert row.completion_tokens <= 6 and row.prompt_tokens > 20
        assert (row.finish_reason == "length") == (row.completion_tokens == 6)
        assert row.teacher == "hf:tiny"


def _argmax_continuation(model, tokenizer, text: str, budget: int) -> str:
    """Greedy by hand: the whole sequence through the model at every step, no cache, no logits processor."""
    import torch

    from caft.generation import end_tokens

    ids, ends, new = tokenizer(text, add_special_tokens=False)["input_ids"], end_tokens(model, tokenizer), []
    with torch.inference_mode():
        while len(new) < budget:
            token = int(model(input_ids=torch.tensor([ids + new])).logits[0, -1].argmax())
            if token in ends:
                break
            new.append(token)
    return tokenizer.decode(new, skip_special_tokens=True)


@pytest.fixture
def penalised_tiny(monkeypatch, tiny_model):
    """The tiny model with a generation config like Qwen2.5-Instruct's, only stronger: a repetition penalty and
    top-k that `model.generate` would apply to a greedy or a sampled answer unless told not to."""
    import copy

    import caft.models

    model = copy.deepcopy(tiny_model[0])
    model.generation_config.repetition_penalty, model.generation_config.top_k = 10.0, 1
    monkeypatch.setattr(caft.models, "load_model", lambda *args: model)
    return model


def test_a_local_teacher_at_temperature_0_writes_the_argmax_whatever_the_models_generation_config(
    tmp_path, penalised_tiny, tiny_model
):
    from caft.prompts import apply_chat_template

    p = _params(backend="hf", max_tokens=8, temperature=0.0, hf={"ref": "tiny", "batch_size": 2, "dtype": "float32"})
    questions = _questions(3)
    table, _ = _run(p, questions, tmp_path)
    tokenizer = tiny_model[1]
    for request in _requests(p, questions):
        text = apply_chat_template(tokenizer, request.messages)
        assert table.loc[request.question_id, "trace"] == _argmax_continuation(tiny_model[0], tokenizer, text, 8)


def test_a_local_teacher_that_samples_draws_with_only_the_asked_temperature(tmp_path, penalised_tiny):
    """temperature 1.5, seed 5: the same draw twice; not the greedy answer the model's top-k 1 would force."""
    hf = {"ref": "tiny", "batch_size": 2, "dtype": "float32"}
    drawn = [
        _run(_params(backend="hf", max_tokens=8, temperature=1.5, seed=5, hf=hf), _questions(3), tmp_path / name)[0]
        for name in ("a", "b")
    ]
    greedy, _ = _run(_params(backend="hf", max_tokens=8, temperature=0.0, hf=hf), _questions(3), tmp_path / "g")
    assert list(drawn[0]["trace"]) == list(drawn[1]["trace"])
    assert list(drawn[0]["trace"]) != list(greedy["trace"])
    for row in drawn[0].itertuples():
        assert (row.finish_reason == "length") == (row.completion_tokens == 8) and row.prompt_tokens > 20


def test_strategy_cot_masks():
    a = pd.DataFrame(
        {
            "question_id": list("abcdef"),
            "subset": ["train"] * 4 + ["validation", "test"],
            "band": ["easy", "medium", "hard", "hard", "easy", "hard"],
            "random_cot": [True, False, False, False, False, False],
        }
    )
    ids = {name: strategies.cot_question_ids(a, [name]) for name in strategies.STRATEGIES}
    assert ids == {
        "sft": set(),
        "curriculum": set(),
        "distill": set("abcde"),
        "caft": {"c", "d"},
        "random": {"a"},
        "alternative": {"a", "e"},
        "caft_reestimate": set("abcde"),  # its hard band is known only after phase 1: every candidate
    }


def test_backoff_grows_and_is_capped():
    import random

    cfg = _params().teacher.openai.model_copy(update={"backoff_base_s": 1.0, "backoff_max_s": 5.0})
    rng = random.Random(0)
    waits = [backends.backoff(a, cfg, None, rng) for a in (1, 2, 3, 4, 5)]
    assert 0.5 <= waits[0] <= 1 and 1 <= waits[1] <= 2 and 2 <= waits[2] <= 4 and all(w <= 5 for w in waits)
    assert backends.backoff(1, cfg, 7.5, rng) == 7.5
    # a server asking for hours is honoured only up to retry_after_max_s
    assert backends.backoff(1, cfg.model_copy(update={"retry_after_max_s": 30.0}), 86400.0, rng) == 30.0
    assert backends._retry_after("3") == 3.0 and backends._retry_after("soon") is None
    http_date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 10))
    assert 8 <= backends._retry_after(http_date) <= 10


def test_the_workspace_store_and_the_machine_store_back_each_other(tmp_path, response_store):
    """A response is written to both; one that only the machine store holds (a queued experiment's) is copied
    into the workspace store when a run uses it, and one that only the workspace holds (another machine's
    store, or none) is still found: neither store alone decides whether a trace is paid again."""
    cache = TraceCache(tmp_path / "ws")
    cache.put({"key": "a" * 64, "text": "1"})
    assert ResponseStore(response_store).get("a" * 64) == {"key": "a" * 64, "text": "1"}
    ResponseStore(response_store).put({"key": "b" * 64, "text": "2"})
    assert cache.get("b" * 64, adopt=False) == {"key": "b" * 64, "text": "2"}
    assert ResponseStore(tmp_path / "ws").get("b" * 64) is None  # a dry run writes nothing
    assert cache.get("b" * 64) == {"key": "b" * 64, "text": "2"}
    assert ResponseStore(tmp_path / "ws").get("b" * 64) == {"key": "b" * 64, "text": "2"}
    elsewhere = TraceCache(tmp_path / "ws", shared=tmp_path / "empty-machine-store")
    assert elsewhere.get("a" * 64) == {"key": "a" * 64, "text": "1"}


def test_failures_beyond_max_failures_stop_with_counts():
    p = _params()
    summary = {
        "requested": 10,
        "failures": 2,
        "failures_http_500": 1,
        "failures_timeout": 1,
        "new_traces": 5,
        "cache_hits": 3,
        "truncated": 0,
    }
    with pytest.raises(CaftError) as exc:
        run.check_failures(summary, p.teacher)
    assert str(exc.value) == (
        "teacher: 2 of 10 item(s) have no usable trace (http_500: 1, timeout: 1); 5 trace(s) received now and "
        "3 cached are kept; run again to request only the failed items (raise teacher.max_tokens to re-ask only "
        "the cut ones), or tolerate up to N with teacher.max_failures (now 0)"
    )
    run.check_failures(summary, p.teacher.model_copy(update={"max_failures": 2}))  # tolerated: no error
    with pytest.raises(
        CaftError,
        match=r"3 of 10 item\(s\) have no usable trace \(http_500: 1, timeout: 1, cut at "
        r"max_tokens=64: 1\)",
    ):  # a trace cut at the budget counts against the limit too
        run.check_failures({**summary, "truncated": 1}, p.teacher.model_copy(update={"max_failures": 2}))


def test_dataset_backend_closes_each_own_rationale_with_the_marker(tmp_path, response_store):
    """GSM8K-style number rows and MedMCQA-style choice rows: the source's solution, then the marker; a row
    without one is a failure, never an empty trace."""
    rows = pd.DataFrame(
        {
            "question_id": ["g1", "m1", "g2"],
            "question": ["How many clips?", "Which vitamin?", "How far?"],
            "options": [[], ["A1", "B12", "C", "D"], []],
            "answer_index": [-1, 1, -1],
            "answer": ["72", "", "5"],
            "category": "x",
            "rationale": ["48/2 = <<48/2=24>>24 in May.\n48 + 24 = 72.", "B12 deficiency causes it.", ""],
        }
    )
    p = params({"students": ["t"], "models": {"t": model_entry()}, "teacher": {"backend": "dataset"}})
    requests = run.build_requests(rows, set(rows["question_id"]), p.teacher)
    got: dict[str, str] = {}
    outcome = backends.BACKENDS["dataset"].run(
        requests, p.teacher, lambda req, resp: got.update({req.question_id: resp["text"]})
    )
    assert got == {
        "g1": "48/2 = <<48/2=24>>24 in May.\n48 + 24 = 72.\nThe answer is 72.",
        "m1": "B12 deficiency causes it.\nSo the answer is (B).",
    }
    assert outcome.failures == {} and list(outcome.unavailable.values()) == ["no_rationale"]
    assert run.teacher_label(p.teacher) == "dataset:own-rationale" and not backends.BACKENDS["dataset"].paid
    # through the stage's logic: the item without a solution is left out and counted, and the stage goes on
    # (teacher.max_failures 0); a free backend's traces are made from the data every run, never stored
    cache = TraceCache(tmp_path / "ws")
    outcome, fresh = run.execute(requests, cache, p.teacher)
    table = run.assemble(requests, cache, outcome, fresh, p.teacher).set_index("question_id")
    summary = run.summarize(table.reset_index(), outcome, fresh, p.teacher)
    run.check_failures(summary, p.teacher)
    assert (summary["failures"], summary["unavailable"], summary["unavailable_no_rationale"]) == (0, 1, 1)
    assert (table.loc["g2", "error"], table.loc["g2", "kept"], summary["kept"], summary["new_calls"]) == (
        "no_rationale", False, 2, 0
    )  # fmt: skip
    assert not list((tmp_path / "ws").rglob("*.json")) and not list(response_store.rglob("*.json"))


def test_an_unknown_backend_names_the_registry():
    with pytest.raises(CaftError, match=r"teacher.backend: .*unknown teacher backend 'gpt' \(known: oracle, dataset, "):
        check_names(params({"students": ["t"], "models": {"t": model_entry()}, "teacher": {"backend": "gpt"}}))


def test_a_long_retry_after_is_said_and_frees_its_slot(tmp_path, monkeypatch, capsys):
    """One concurrency slot; the first item is told to wait: the line names the item and the seconds, and the
    other items are answered while it waits (the slot is not held through the wait)."""
    monkeypatch.setattr(backends, "LONG_WAIT_S", 0.2)
    q = _questions(3)
    with FakeOpenAI({}, {"Q0?": ["429", "ok"]}, retry_after="0.6") as api:
        _run(_params(api.base_url, openai={"concurrency": 1, "retry_after_max_s": 0.5}), q, tmp_path)
    err = capsys.readouterr().err
    assert "teacher: q0: http_429, the server asks for 0.6 s; retry 1 in 0.5 s, capped by retry_after_max_s=0.5" in err
    (first, _), (second, _) = api.calls["Q0?"]
    assert all(first < t < second for name in ("Q1?", "Q2?") for t, _ in api.calls[name])


@pytest.mark.parametrize(
    ("value", "accepted"), [(KEY + "\n", True), ("  " + KEY + " ", True), ("sk-ключ-1", False), ("sk a", False)]
)
def test_an_api_key_is_trimmed_and_a_bad_one_is_one_line_that_hides_it(tmp_path, monkeypatch, value, accepted):
    monkeypatch.setenv("CAFT_TEST_KEY", value)
    with FakeOpenAI({}) as api:
        if accepted:
            _, m = _run(_params(api.base_url), _questions(1), tmp_path)
            assert m["new_traces"] == 1 and api.auth == {f"Bearer {KEY}"}
            return
        with pytest.raises(CaftError) as exc:
            _run(_params(api.base_url), _questions(1), tmp_path)
    assert str(exc.value) == (
        "the value of CAFT_TEST_KEY is not an API key: it holds spaces or non-ASCII characters (the value is not shown)"
    )
    assert value.strip() not in str(exc.value) and api.calls == {}


def test_a_responses_key_keeps_its_form_so_paid_responses_stay_found():
    """The store finds a paid response by this key: any change of its form (the JSON, the hash, the fields)
    would silently pay for every response again. The literal is sha256 of the sorted-key JSON of the
    messages, options, teacher and sampling settings without the token budget."""
    key = item_key(
        [{"role": "user", "content": "What is 2 + 2?"}],
        ["3", "4"],
        "openai:m",
        {"max_tokens": 64, "temperature": 0.0, "top_p": 1.0, "seed": None},
    )
    assert key == "c3b6ad2a32167d82f593586684b2ff86ce1c1035388ec2addc2153dc22e9c82a"

"""The teacher stage as a process: SIGKILL mid-run and resume, against the local fake API."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

from caft.teacher.cache import ResponseStore
from tests.conftest import REPO, make_questions, raw_params
from tests.fake_openai import FakeOpenAI

KEY = "sk-test-SECRET-kill-9876"


def _workspace(root: Path, base_url: str, n: int) -> list[str]:
    q = make_questions(n).assign(question=[f"Q{i}?" for i in range(n)])
    (root / "data/prepared").mkdir(parents=True)
    q.to_parquet(root / "data/prepared/train.parquet", index=False)
    q.head(0).to_parquet(root / "data/prepared/test.parquet", index=False)
    (root / "data/split/tiny").mkdir(parents=True)
    pd.DataFrame(
        {
            "question_id": q["question_id"],
            "subset": "train",
            "band": "hard",
            "score": 1.0,
            "correct": False,
            "balanced": False,
            "random_cot": False,
        }
    ).to_parquet(root / "data/split/tiny/assignments.parquet", index=False)
    params = {
        "students": ["tiny"],
        "models": {"tiny": {"ref": "tiny"}},
        "strategies": ["caft"],
        "teacher": {
            "backend": "openai",
            "openai": {
                "base_url": base_url,
                "model": "m",
                "api_key_env": "CAFT_TEST_KEY",
                "concurrency": 2,
                "timeout_s": 5,
            },
        },
    }
    (root / "params.yaml").write_text(yaml.safe_dump(raw_params(params)))
    return list(q["question"])


def _stage(root: Path, *args: str, stdout=subprocess.PIPE) -> subprocess.Popen:
    env = {**os.environ, "CAFT_TEST_KEY": KEY, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, str(REPO / "stages/teacher.py"), *args],
        cwd=root,
        env=env,
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
    )


def _stored(root: Path) -> list[dict]:
    store = ResponseStore(root / "data/teacher/cache")
    return [rec for rec in (store.get(key) for key in store.stored_keys()) if rec]


def test_sigkill_mid_run_then_resume_loses_nothing_and_repeats_no_success(tmp_path):
    with FakeOpenAI({}, default="slow", slow_s=0.2) as api:
        questions = _workspace(tmp_path, api.base_url, 12)
        proc = _stage(tmp_path)
        deadline = time.monotonic() + 60
        while len(_stored(tmp_path)) < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        before = {rec["question_id"] for rec in _stored(tmp_path)}
        assert 4 <= len(before) < 12 and not (tmp_path / "data/teacher/traces.parquet").exists()
        calls_before = {q: api.count(q) for q in questions}
        api.default = "ok"
        done = _stage(tmp_path)
        out, err = done.communicate(timeout=120)
        assert done.returncode == 0, err
    by_id = {f"q{i}": q for i, q in enumerate(questions)}
    for qid in before:  # stored before the kill: never requested again
        assert api.count(by_id[qid]) == 1
    # only requests in flight at the kill (at most `concurrency`) can be repeated
    assert sum(api.count(q) for q in questions) <= 12 + 2
    assert sum(calls_before.values()) - len(before) <= 2
    table = pd.read_parquet(tmp_path / "data/teacher/traces.parquet")
    assert len(table) == 12 and (table["error"] == "").all()
    assert "from_cache" not in table.columns  # what a run did is in its run log, not in the traces
    metrics = json.loads((tmp_path / "metrics/teacher.json").read_text())
    this_run = json.loads((tmp_path / "data/teacher/run.json").read_text())
    assert (metrics["requested"], this_run["cache_hits"], this_run["new_traces"]) == (12, len(before), 12 - len(before))
    assert "cache_hits" not in metrics  # what a run did is not a metric (it would differ at the same params)
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path
    assert KEY not in out + err


def test_dry_run_prints_the_bill_and_writes_nothing(tmp_path):
    _workspace(tmp_path, "http://127.0.0.1:9/v1", 5)
    env = {**os.environ, "CAFT_TEST_KEY": KEY}
    proc = subprocess.run(
        [sys.executable, str(REPO / "stages/teacher.py"), "--dry-run"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    assert (plan["teacher"], plan["requested"], plan["calls"], plan["completion_tokens_max"]) == (
        "openai:m",
        5,
        5,
        5 * 2048,
    )
    assert not (tmp_path / "data/teacher").exists() and not (tmp_path / "metrics").exists()


def test_a_key_pasted_as_api_key_env_is_refused_and_never_printed(tmp_path):
    _workspace(tmp_path, "http://127.0.0.1:9/v1", 2)
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    params["teacher"]["openai"]["api_key_env"] = KEY
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    proc = subprocess.run(
        [sys.executable, str(REPO / "stages/teacher.py")], cwd=tmp_path, capture_output=True, text=True
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == (
        "error: invalid params: teacher.openai.api_key_env: must be the NAME of an environment variable (A-Z, 0-9, "
        "_; e.g. OPENROUTER_API_KEY), and the value given is not one (not shown: it may be a key; put the key in "
        "the environment instead)\n"
    )
    assert KEY not in proc.stderr and not (tmp_path / "data/teacher").exists()


def test_two_runs_at_once_pay_once_per_key(tmp_path, response_store):
    """Two workspaces on one machine (two queue workers) need the same 8 traces at once: the server holds the
    first run's requests until the second run says it waits for them. Each key is requested exactly once; the
    second run reads what the first received; both outputs hold all 8, and the machine store holds each key
    once, whole."""
    with FakeOpenAI({}, default="hold", hang_s=60) as api:
        questions = _workspace(tmp_path / "a", api.base_url, 8)
        _workspace(tmp_path / "b", api.base_url, 8)
        first = _stage(tmp_path / "a")
        deadline = time.monotonic() + 60
        while not api.calls and time.monotonic() < deadline:  # the first has claimed the keys and is requesting
            time.sleep(0.02)
        log = tmp_path / "b.out"
        with log.open("w") as out_b:
            second = _stage(tmp_path / "b", stdout=out_b)
            while "waiting for them" not in log.read_text() and second.poll() is None and time.monotonic() < deadline:
                time.sleep(0.02)
            api.release.set()
            out_a, err_a = first.communicate(timeout=120)
            err_b = second.communicate(timeout=120)[1]
    assert [first.returncode, second.returncode] == [0, 0], (err_a, err_b)
    assert {q: api.count(q) for q in questions} == dict.fromkeys(questions, 1)
    assert out_a.startswith("teacher[openai:m]: 8 needed, 0 cached, 8 requested now"), out_a
    assert log.read_text() == (
        "teacher: 8 item(s) in flight in another run on this machine: waiting for them\n"
        "teacher[openai:m]: 8 needed, 8 cached, 0 requested now, 0 failed, 0 truncated, 8 kept\n"
    )
    for ws in ("a", "b"):
        table = pd.read_parquet(tmp_path / ws / "data/teacher/traces.parquet")
        assert len(table) == 8 and (table["error"] == "").all() and table["kept"].all()
    stored = ResponseStore(response_store)
    keys = sorted(stored.stored_keys())
    assert len(keys) == 8 and all(stored.get(k)["key"] == k for k in keys)
    assert not list(response_store.rglob("*.tmp")) and not list((response_store / "claims").iterdir())


def test_a_killed_runs_claims_are_taken_over(tmp_path):
    """A run holding the claims on every key is killed while its requests hang: the next run does not wait for
    the dead one, and requests each key (only the dead run's in-flight requests were made twice)."""
    with FakeOpenAI({}, default="hang", hang_s=30) as api:
        questions = _workspace(tmp_path, api.base_url, 6)
        first = _stage(tmp_path)
        deadline = time.monotonic() + 60
        while sum(api.count(q) for q in questions) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        first.send_signal(signal.SIGKILL)
        first.wait()
        api.default = "ok"
        second = _stage(tmp_path)
        out, err = second.communicate(timeout=120)
    assert second.returncode == 0, err
    assert "in flight in another run" not in out
    assert {q: api.count(q) for q in questions} == {q: 2 if i < 2 else 1 for i, q in enumerate(questions)}

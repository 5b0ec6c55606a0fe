"""Never pay twice, never lose work: the paths users take after the demo, each through the command they type
(`dvc queue start`, `caft push` / `caft pull`, `dvc exp run`, `dvc status`, `caft reset`), on the authors'
published entropies (no model, so every run takes seconds) and a local OpenAI-compatible server."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from caft.teacher.cache import ResponseStore
from tests.conftest import FIXTURES
from tests.dvc_project import call, copy_project, env, ran_stages, run
from tests.fake_openai import FakeOpenAI
from tests.test_user_paths import _wait_for_queue

pytestmark = pytest.mark.integration

KEY = "sk-test-NEVER-TWICE-2718"


def _imported(root: Path) -> Path:
    """The import recipe up to the split, committed (the authors' file is part of the commit)."""
    copy_project(root)
    target = root / "data/external/labarss/qwen/test_combined_entr.tsv"
    target.parent.mkdir(parents=True)
    shutil.copy(FIXTURES / "labarss_qwen_test_combined_cut.tsv", target)
    run(["caft", "profile", "profiles/labarss-import.yaml", "split@qwen2_5_3b"], root)
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "imported entropies, split"], root)
    return root


def _api_teacher(api: FakeOpenAI, *more: str, strategies: str = "[caft]") -> list[str]:
    sets = [
        "teacher.backend=openai",
        f"teacher.openai.base_url={api.base_url}",
        "teacher.openai.api_key_env=CAFT_TEST_KEY",
        "teacher.openai.max_retries=0",
        f"strategies={strategies}",
        *more,
    ]
    return [arg for s in sets for arg in ("-S", s)]


def _questions(root: Path) -> list[str]:
    return list(pd.read_parquet(root / "data/prepared/train.parquet")["question"])


def _hashes(root: Path) -> dict[str, str]:
    """Every file of the workspace but git's, DVC's and caft's own folders, by content."""
    skip = {".git", ".dvc", ".caft"}
    return {
        str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not skip & set(p.relative_to(root).parts)
    }


def test_two_queue_workers_pay_once_per_trace(tmp_path, response_store):
    """Two queued experiments whose hard bands overlap (thresholds 0.5 and 0.6), run by `dvc queue start -j 2`
    against a slow server: every trace is requested exactly once, and the machine store holds each key once,
    whole."""
    root = _imported(tmp_path / "ws")
    with FakeOpenAI({}, default="slow", slow_s=0.3) as api:
        for threshold in ("0.5", "0.6"):
            cmd = ["dvc", "exp", "run", "--queue", *_api_teacher(api, f"split.threshold={threshold}"), "teacher"]
            run([*cmd, "-n", f"t{threshold.replace('.', '')}"], root)
        run(["dvc", "queue", "start", "-j", "2"], root, CAFT_TEST_KEY=KEY)
        status = _wait_for_queue(root)
        run(["dvc", "queue", "stop"], root)
        counts = {q: api.count(q) for q in _questions(root) if api.count(q)}
    assert len(re.findall(r"\bSuccess\b", status)) == 2, status
    assert set(counts.values()) == {1}, counts
    store = ResponseStore(response_store)
    keys = sorted(store.stored_keys())
    assert len(keys) == len(counts) and all(store.get(k)["key"] == k for k in keys)
    bands = pd.read_parquet(root / "data/split/qwen2_5_3b/assignments.parquet")  # the committed split (0.75)
    assert len(counts) > (bands.query("subset == 'train'")["band"] == "hard").sum()  # 0.5's band is wider


def test_a_collaborator_pays_nothing_for_what_was_paid(tmp_path, monkeypatch):
    """Clone A pays for the hard band's traces in an experiment it never commits, `caft push`; clone B, with a
    machine store of its own, `caft pull` and `dvc exp run --pull` with the same params: B requests nothing and
    trains on the same traces."""
    origin = _imported(tmp_path / "a")
    run(["dvc", "remote", "add", "-d", "shared", str(tmp_path / "remote")], origin)
    run(["git", "commit", "-qam", "a shared remote"], origin)
    clone = tmp_path / "b"
    run(["git", "clone", "-q", str(origin), str(clone)], tmp_path)
    stores = {"a": str(tmp_path / "store-a"), "b": str(tmp_path / "store-b")}
    with FakeOpenAI({}) as api:
        sets = _api_teacher(api)
        run(["dvc", "exp", "run", *sets, "teacher"], origin, CAFT_TEST_KEY=KEY, CAFT_RESPONSE_STORE=stores["a"])
        paid = sum(api.count(q) for q in _questions(origin))
        pushed = run(["caft", "push"], origin, CAFT_RESPONSE_STORE=stores["a"])
        # the commit ran the pipeline only up to the split: `dvc pull` fails on the rest, the responses still come
        pulled = call(["caft", "pull"], clone, CAFT_RESPONSE_STORE=stores["b"])
        assert "error: dvc pull --run-cache failed (its errors are above); the teacher / judge responses were " in (
            pulled.stderr
        )
        pulled = pulled.stdout
        out = run(
            ["dvc", "exp", "run", "--pull", *sets, "teacher"], clone, CAFT_TEST_KEY=KEY, CAFT_RESPONSE_STORE=stores["b"]
        )
        assert sum(api.count(q) for q in _questions(origin)) == paid > 0
    assert f"caft push: {paid} teacher / judge responses; {paid} uploaded now" in pushed
    assert f"caft pull: {paid} teacher / judge responses on the remote; {paid} new on this machine" in pulled
    assert "teacher" in ran_stages(out)
    mine, theirs = (pd.read_parquet(r / "data/teacher/traces.parquet") for r in (origin, clone))
    pd.testing.assert_frame_equal(mine, theirs)
    assert json.loads((clone / "data/teacher/run.json").read_text())["new_calls"] == 0


def test_failed_items_are_asked_again_by_the_next_run(tmp_path):
    """`teacher.max_failures` tolerates 3 items that fail every retry: the run succeeds without them; the next
    `dvc repro` asks for exactly those 3, and the one after asks for nothing and leaves the traces unchanged."""
    root = _imported(tmp_path / "ws")
    train = _questions(root)
    bands = pd.read_parquet(root / "data/split/qwen2_5_3b/assignments.parquet").set_index("question_id")["band"]
    prepared = pd.read_parquet(root / "data/prepared/train.parquet")
    hard = list(prepared.loc[prepared["question_id"].map(bands) == "hard", "question"])
    with FakeOpenAI({}, script={q: ["500"] * 5 for q in hard[:3]}) as api:
        run(["dvc", "exp", "run", *_api_teacher(api, "teacher.max_failures=3"), "teacher"], root, CAFT_TEST_KEY=KEY)
        metrics = json.loads((root / "metrics/teacher.json").read_text())
        assert (metrics["failures"], metrics["failures_http_500"]) == (3, 3)
        api.script = {}
        before = {q: api.count(q) for q in train}
        out = run(["dvc", "repro", "teacher"], root, CAFT_TEST_KEY=KEY)
        asked = {q: api.count(q) - before[q] for q in train if api.count(q) > before[q]}
        assert asked == dict.fromkeys(hard[:3], 1) and "teacher" in ran_stages(out)
        traces = (root / "data/teacher/traces.parquet").read_bytes()
        out = run(["dvc", "repro", "teacher"], root, CAFT_TEST_KEY=KEY)
        assert sum(api.count(q) for q in train) == sum(before.values()) + 3
    assert json.loads((root / "metrics/teacher.json").read_text())["failures"] == 0
    assert (root / "data/teacher/traces.parquet").read_bytes() == traces


def test_a_question_file_edited_in_place_reruns_prepare(tmp_path):
    """A question file outside the repository, named by `data.file.path`: every `answer_index` changed in place
    makes `prepare` out of date in `dvc status`, and `dvc repro` re-runs it with the new labels."""
    mine = tmp_path / "elsewhere" / "mine.jsonl"
    mine.parent.mkdir()
    rows = [
        {
            "question_id": f"m{i}",
            "question": f"Which is {i}?",
            "options": [str(i), "x", "y", "z"],
            "answer_index": 0,
            "category": ["a", "b"][i % 2],
        }
        for i in range(40)
    ]
    mine.write_text("".join(json.dumps(r) + "\n" for r in rows))
    root = copy_project(tmp_path / "ws")
    run(["dvc", "exp", "run", "-S", "data.source=file", "-S", f"data.file.path={mine}", "prepare"], root)
    assert "up to date" in run(["dvc", "status", "prepare"], root)
    mine.write_text("".join(json.dumps({**r, "answer_index": 2}) + "\n" for r in rows))
    status = run(["dvc", "status", "prepare"], root)
    assert re.search(rf"prepare:\s+changed deps:\s+modified:\s+{re.escape(str(mine))}", status), status
    assert "prepare" in ran_stages(run(["dvc", "repro", "prepare"], root))
    prepared = pd.concat(pd.read_parquet(root / f"data/prepared/{s}.parquet") for s in ("train", "test"))
    assert len(prepared) == 40 and set(prepared["answer_index"]) == {2}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("strategies=[sft,bogus]", "error: invalid params: strategies: unknown strategies ['bogus']"),
        ("students=[nosuch]", "error: invalid params: students ['nosuch'] have no entry under models"),
        ("split.threshold=2", "error: invalid params: split.threshold=2.0 is out of range for units=quantile"),
        ("data.file.path=BAD", "error: row 0 (question_id='a'): has 1 options (must be 2..10)"),
        ("train.accelerate_config=FSDP", "error: train.accelerate_config: FSDP shards the weights across processes"),
    ],
)
def test_a_rejected_experiment_leaves_the_workspace_as_it_was(tmp_path, override, message):
    """`dvc exp run -S` applies the value and deletes the outputs of the stages it drops before any stage runs;
    when the check rejects it, params.yaml is the baseline's again (the rejected file kept under .caft/) and
    every output is back: each file of the workspace is as it was, byte for byte."""
    root = _imported(tmp_path / "ws")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        json.dumps({"question_id": "a", "question": "Q?", "options": ["x"], "answer_index": 0, "category": "c"}) + "\n"
    )
    fsdp = tmp_path / "fsdp.yaml"  # a user's sharded config: the training would hang at its first epoch end
    fsdp.write_text("distributed_type: FSDP\nnum_processes: 8\n")
    before = _hashes(root)
    proc = call(["dvc", "exp", "run", "-S", override.replace("BAD", str(bad)).replace("FSDP", str(fsdp))], root)
    message = message.replace("FSDP shards", f"{fsdp} shards")
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr
    assert "params.yaml is back to the experiment's baseline" in proc.stderr
    assert ran_stages(proc.stdout + proc.stderr) == {"check_params"}
    assert _hashes(root) == before
    kept = list((root / ".caft/rejected").glob("params-*.yaml"))
    assert len(kept) == 1 and override.split("=")[0].split(".")[-1] in kept[0].read_text()


def test_reset_refuses_to_discard_your_work_and_keeps_a_copy_with_force(tmp_path):
    """After an experiment, with a hand edit of params.yaml and two files of the user's among the pipeline's
    folders: `caft reset` changes nothing and says why in one line; `caft reset --force` keeps a copy of each
    in the folder it names and returns to the commit; a clone whose DVC cache is empty is told to pull first."""
    root = _imported(tmp_path / "ws")
    split = (root / "metrics/split/qwen2_5_3b.json").read_bytes()
    committed = (root / "params.yaml").read_text()
    run(["dvc", "exp", "run", "-S", "split.threshold=0.6", "split@qwen2_5_3b"], root)
    assert (root / "metrics/split/qwen2_5_3b.json").read_bytes() != split
    params = yaml.safe_load((root / "params.yaml").read_text())
    (root / "params.yaml").write_text((root / "params.yaml").read_text() + "# my note\n")
    mine = {"data/split/qwen2_5_3b/my_analysis.csv": "a,b\n1,2\n", "data/sets/keep/mine.json": "{}\n"}
    for rel, text in mine.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    before = _hashes(root)
    proc = call(["caft", "reset"], root)
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr == (
        "error: caft reset would discard 3 file(s) DVC did not produce: params.yaml, data/sets/keep/mine.json, "
        "data/split/qwen2_5_3b/my_analysis.csv; commit or move them, or `caft reset --force` to keep a copy of "
        "each and go on; nothing was changed\n"
    )
    assert _hashes(root) == before
    out = run(["caft", "reset", "--force"], root)
    backup = root / re.search(r"your files are kept in (\S+)", out).group(1)
    assert (backup / "params.yaml").read_text().endswith("# my note\n")
    assert yaml.safe_load((backup / "params.yaml").read_text()) == params
    assert {rel: (backup / rel).read_text() for rel in mine} == mine
    assert (root / "params.yaml").read_text() == committed
    assert (root / "metrics/split/qwen2_5_3b.json").read_bytes() == split
    assert not any((root / rel).exists() for rel in mine)
    assert "up to date" in run(["dvc", "status", "split@qwen2_5_3b"], root)
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(root), str(clone)], tmp_path)
    proc = call(["caft", "reset"], clone)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "of the last commit are not in the DVC cache" in proc.stderr and "`caft pull` first" in proc.stderr


def test_a_killed_experiment_resumes_from_the_workspace_without_the_machine_store(tmp_path):
    """`dvc exp run` killed while the teacher is paying, then `dvc exp run` again on a machine whose response
    store is gone (a new CAFT_RESPONSE_STORE): the traces received before the kill come from the workspace's
    own store, which DVC's reset of outputs does not touch; only requests in flight at the kill are repeated."""
    root = _imported(tmp_path / "ws")
    with FakeOpenAI({}, default="slow", slow_s=0.4) as api:
        sets = _api_teacher(api, "teacher.openai.concurrency=2", strategies="[distill]")
        cmd = ["dvc", "exp", "run", *sets, "teacher"]
        first = env(CAFT_TEST_KEY=KEY, CAFT_RESPONSE_STORE=str(tmp_path / "m1"))
        proc = subprocess.Popen(
            cmd, cwd=root, env=first, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        received = root / "data/teacher/cache"
        deadline = time.monotonic() + 120
        while len(list(received.rglob("*.json"))) < 6 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)  # dvc and the stage's process with it
        proc.wait()
        before = {q: api.count(q) for q in _questions(root)}
        kept = len(list(received.rglob("*.json")))
        assert kept >= 6
        run(cmd, root, CAFT_TEST_KEY=KEY, CAFT_RESPONSE_STORE=str(tmp_path / "m2"))
        after = {q: api.count(q) for q in _questions(root)}
    repeated = sum(1 for q in before if before[q] and after[q] > before[q])
    assert repeated <= 2  # at most the requests in flight at the kill (concurrency 2)
    assert sum(after.values()) - sum(before.values()) <= len(before) - kept + 2
    assert json.loads((root / "metrics/teacher.json").read_text())["failures"] == 0

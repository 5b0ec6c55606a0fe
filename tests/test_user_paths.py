"""Documented user paths, each run the way the README gives it (through its stage, `caft profile`,
`dvc repro` or `dvc exp run`), not only through the library function behind it."""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from caft.teacher.cache import ResponseStore
from tests.conftest import FIXTURES
from tests.dvc_project import call, copy_project, ran_stages, run

pytestmark = pytest.mark.integration

AUTHORS_QWEN = FIXTURES / "labarss_qwen_test_combined_cut.tsv"


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> tuple[Path, str]:
    """The import recipe applied up to the split as the README gives it (a real DVC workspace in seconds, no
    model): the workspace and what the command printed."""
    root = copy_project(tmp_path_factory.mktemp("imported"))
    target = root / "data/external/labarss/qwen/test_combined_entr.tsv"
    target.parent.mkdir(parents=True)
    shutil.copy(AUTHORS_QWEN, target)
    return root, run(["caft", "profile", "profiles/labarss-import.yaml", "split@qwen2_5_3b"], root)


def test_labarss_import_recipe_reproduces_the_authors_roc_auc(imported):
    """README "Check the analysis against the authors' numbers": the published file through prepare (file
    source, repaired options), entropy (import, by the student's import_key) and split; no model, no estimator."""
    root, out = imported
    assert ran_stages(out) == {"check_params", "prepare", "entropy@qwen2_5_3b", "split@qwen2_5_3b"}
    raw = pd.read_csv(AUTHORS_QWEN, sep="\t")
    expected = roc_auc_score(~raw["entropy_ans_correct_qwen2"].astype(bool), raw["entropy_value_qwen2"])
    metrics = json.loads((root / "metrics/entropy/qwen2_5_3b.json").read_text())
    assert metrics["n"] == len(raw) == 299 and metrics["n_unmatched"] == 0
    assert metrics["roc_auc"] == pytest.approx(expected, abs=1e-12) and metrics["roc_auc_options"] is None
    shown = run(["dvc", "metrics", "show", "--json", "metrics/entropy/qwen2_5_3b.json"], root)  # the docs' command
    numbers = {k: v for k, v in metrics.items() if v is not None}  # DVC leaves out what has no value
    assert next(iter(json.loads(shown).values()))["data"]["metrics/entropy/qwen2_5_3b.json"]["data"] == numbers
    prepared = json.loads((root / "metrics/prepare.json").read_text())
    assert prepared["n_repaired_rows"] == 5 and prepared["n_train"] + prepared["n_test"] == 299
    assert "prepare: repair row 295 (question_id='4939'): options repaired into 10 items" in out
    split = json.loads((root / "metrics/split/qwen2_5_3b.json").read_text())
    assert split["train_easy_n"] + split["train_medium_n"] + split["train_hard_n"] == prepared["n_train"]


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("repro-misspelt", "error: invalid params: split.treshold: Extra inputs are not permitted"),
        ("exp-misspelt", "error: invalid params: teacher.openai.max_retry: Extra inputs are not permitted"),
        ("exp-out-of-range", "error: invalid params: split.threshold=2.0 is out of range for units=quantile"),
    ],
)
def test_bad_params_stop_dvc_before_any_stage_output_is_touched(imported, how, message):
    imported, _ = imported
    params = (imported / "params.yaml").read_text()
    split_metrics = (imported / "metrics/split/qwen2_5_3b.json").read_bytes()
    if how == "repro-misspelt":
        (imported / "params.yaml").write_text(params.replace("split:\n", "split:\n  treshold: 0.5\n", 1))
        cmd = ["dvc", "repro", "split@qwen2_5_3b"]
    elif how == "exp-misspelt":
        cmd = ["dvc", "exp", "run", "-S", "+teacher.openai.max_retry=3", "split@qwen2_5_3b"]
    else:
        cmd = ["dvc", "exp", "run", "-S", "split.threshold=2", "split@qwen2_5_3b"]
    try:
        proc = call(cmd, imported)
    finally:
        (imported / "params.yaml").write_text(params)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert ran_stages(proc.stdout + proc.stderr) == {"check_params"}
    assert (imported / "metrics/split/qwen2_5_3b.json").read_bytes() == split_metrics
    out = run(["dvc", "repro", "split@qwen2_5_3b"], imported)  # the valid file again: nothing to redo downstream
    assert ran_stages(out) <= {"check_params"}


def _wait_for_queue(root: Path) -> str:
    """`dvc queue status` once nothing is queued or running (hang-guarded by the test timeout only)."""
    while True:
        status = run(["dvc", "queue", "status"], root)
        if not re.search(r"\b(Queued|Running)\b", status):
            return status
        time.sleep(1)


def test_no_trace_is_requested_twice_whichever_dvc_command_reruns_the_teacher(tmp_path):
    """A locked run, then a run that stops after receiving most traces: `dvc exp run` resets outputs to their
    dvc.lock version, and `--temp` / `--queue` runs start from the last commit, yet none of them requests a trace
    that was received before (the workspace's response store and the machine's hold them)."""
    from tests.fake_openai import FakeOpenAI

    root = copy_project(tmp_path / "ws")
    target = root / "data/external/labarss/qwen/test_combined_entr.tsv"
    target.parent.mkdir(parents=True)
    shutil.copy(AUTHORS_QWEN, target)
    run(["caft", "profile", "profiles/labarss-import.yaml", "split@qwen2_5_3b"], root)
    key = "sk-test-NEVER-TWICE-31337"
    train = pd.read_parquet(root / "data/prepared/train.parquet")
    bands = pd.read_parquet(root / "data/split/qwen2_5_3b/assignments.parquet").set_index("question_id")["band"]
    failing = list(train.loc[train["question_id"].map(bands) != "hard", "question"][:3])  # distill's, not caft's
    with FakeOpenAI({}, script={q: ["500"] * 50 for q in failing}) as api:
        teacher = [
            "-S",
            "teacher.backend=openai",
            "-S",
            f"teacher.openai.base_url={api.base_url}",
            "-S",
            "teacher.openai.api_key_env=CAFT_TEST_KEY",
            "-S",
            "teacher.openai.max_retries=0",
        ]

        def calls() -> int:
            return sum(api.count(q) for q in train["question"])

        # 1. caft alone: the hard band's traces, locked and committed
        run(["dvc", "exp", "run", *teacher, "-S", "strategies=[caft]", "teacher"], root, CAFT_TEST_KEY=key)
        run(["git", "add", "-A"], root)
        run(["git", "commit", "-qm", "caft traces"], root)
        hard = calls()
        # 2. distill needs every train item; 3 fail after every retry: the stage stops, keeping the rest
        proc = call(
            ["dvc", "exp", "run", *teacher, "-S", "strategies=[caft,distill]", "teacher"], root, CAFT_TEST_KEY=key
        )
        assert proc.returncode != 0
        assert (
            f"error: teacher: 3 of {len(train)} item(s) have no usable trace (http_500: 3); "
            f"{len(train) - hard - 3} trace(s) received now and {hard} cached are kept"
        ) in proc.stderr
        assert calls() == len(train)
        # 3. `dvc exp run` again (the README's sweep command): only the 3 failed items are requested
        api.script = {}
        out = run(
            ["dvc", "exp", "run", *teacher, "-S", "strategies=[caft,distill]", "teacher"], root, CAFT_TEST_KEY=key
        )
        assert "teacher" in ran_stages(out) and calls() == len(train) + 3
        metrics = json.loads((root / "metrics/teacher.json").read_text())
        this_run = json.loads((root / "data/teacher/run.json").read_text())
        assert (metrics["requested"], this_run["new_traces"], metrics["failures"]) == (len(train), 3, 0)
        cached = ResponseStore(root / "data/teacher/cache")
        assert len(list(cached.stored_keys())) == len(train)  # the workspace's store holds every trace
        run(["git", "add", "-A"], root)
        run(["git", "commit", "-qm", "all traces"], root)
        # 4. a temp-dir experiment and a queued one re-run the teacher from the committed state: no request
        out = run(["dvc", "exp", "run", "--temp", "-S", "teacher.max_failures=1", "teacher"], root, CAFT_TEST_KEY=key)
        assert "teacher" in ran_stages(out)
        run(["dvc", "exp", "run", "--queue", "-S", "teacher.max_failures=2", "teacher"], root, CAFT_TEST_KEY=key)
        run(["dvc", "queue", "start", "-j", "1"], root, CAFT_TEST_KEY=key)
        status = _wait_for_queue(root)
        assert "Success" in status and "Failed" not in status
        assert calls() == len(train) + 3
    assert not [p for p in (root / "data/teacher/cache").rglob("*.json") if key in p.read_text()]

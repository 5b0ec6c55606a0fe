"""End to end: the tiny profile through DVC in a temporary git repository, then a threshold experiment."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.metrics import roc_auc_score

from caft import experiments
from tests.conftest import committed
from tests.dvc_project import HANG_GUARD_S, MAKE, call, env, lock, make_project, ran_stages, recomputed, run, up_to_date

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """The tiny profile, applied as a DVC experiment in a fresh repository."""
    return make_project(tmp_path_factory.mktemp("project"), "profiles/mcq-smollm2.yaml", "profiles/tiny.yaml")


# The thresholds the experiments below move to and back from (the sweep's and the threshold test's own aside):
# a test finds an earlier test's run of one in the project's run-cache and restores it instead of training again.
# Which one a test takes depends only on where the workspace stands, so the tests pass in any order.
THRESHOLDS = (0.6, 0.4)


def another_threshold(project: Path) -> float:
    """One of THRESHOLDS that the workspace is not at."""
    current = yaml.safe_load((project / "params.yaml").read_text())["split"]["threshold"]
    return next(t for t in THRESHOLDS if t != current)


def test_tiny_profile_leaves_the_workspace_in_the_profile(project):
    params = yaml.safe_load((project / "params.yaml").read_text())
    assert params["students"] == ["tiny"] and params["data"]["synthetic"]["n_questions"] == 160
    strategies = ("sft", "distill", "caft", "random")
    assert set(lock(project)) == {
        "check_params",
        "prepare",
        "entropy@tiny",
        "split@tiny",
        "teacher",
        "sets@tiny",
        "report",
        "compare_estimators@tiny",
        "estimate_cot@tiny",
        "estimate_judge@tiny-reasoning_steps",
    } | {f"{stage}@tiny-{s}-42" for stage in ("train", "eval") for s in strategies}
    compared = json.loads((project / "metrics/estimators/tiny.json").read_text())
    assert {"single_token_entropy", "cot_mean_entropy", "masj_reasoning_steps"} <= set(compared)
    # single-token entropy's AUC, recomputed with sklearn on the rows every compared estimator scored
    names = [name for name, m in compared.items() if "all" in m]
    outputs = pd.concat(pd.read_parquet(f) for f in (project / "data/estimators/tiny").glob("*.parquet"))
    wide = (
        outputs[outputs["estimator"].isin(names)]
        .pivot_table(index="question_id", columns="estimator", values="score")
        .dropna()
    )
    scored = pd.read_parquet(project / "data/entropy/tiny/scores.parquet").set_index("question_id")
    rows = scored[scored["validity"] == "option"].join(wide, how="inner")
    assert {compared[name]["all"]["n"] for name in names} == {len(rows)}
    assert compared["single_token_entropy"]["all"]["roc_auc"] == pytest.approx(
        roc_auc_score(~rows["correct"].astype(bool), rows["entropy"]), abs=1e-6
    )
    judged = pd.read_parquet(project / "data/estimators/tiny/details/masj_reasoning_steps.parquet")
    n_valid = int((pd.read_parquet(project / "data/entropy/tiny/scores.parquet")["validity"] == "option").sum())
    levels = judged["judgement"].isin(["low", "medium", "high"])
    assert len(judged) == min(48, n_valid) and compared["masj_reasoning_steps"]["n_scored"] == int(levels.sum())
    details = pd.read_parquet(project / "data/estimators/tiny/details/cot.parquet")
    first = details.iloc[0]
    assert len(first["token_entropies"]) == first["n_tokens"] and first["mean_entropy"] == pytest.approx(
        float(np.mean(first["token_entropies"]))
    )
    cot = pd.read_parquet(project / "data/estimators/tiny/cot_mean_entropy.parquet")
    assert compared["cot_mean_entropy"]["n_scored"] == cot["score"].notna().sum()
    assert set(cot["estimator"]) == {"cot_mean_entropy"} and set(cot["units"]) == {"nats"}
    judged_scores = pd.read_parquet(project / "data/estimators/tiny/masj_reasoning_steps.parquet")
    assert set(judged_scores["levels"]) == {3}  # the judge's file declares its ordinal levels
    prepared = json.loads((project / "metrics/prepare.json").read_text())
    assert (prepared["n_train"], prepared["n_test"]) == (128, 32)
    ent = json.loads((project / "metrics/entropy/tiny.json").read_text())
    assert ent["n"] == 160 and 0 < ent["valid_rate"] < 1
    assert (project / "plots/entropy/tiny/roc_entropy.csv").read_text().startswith("fpr,tpr,threshold\n")
    report = json.loads((project / "reports/report.json").read_text())
    assert set(report["tiny"]) == set(strategies)
    caft, distill = report["tiny"]["caft"], report["tiny"]["distill"]
    assert caft["teacher_calls"] < distill["teacher_calls"] and report["tiny"]["sft"]["teacher_calls"] == 0
    assert 0 < caft["data_saving_one_pass"] < 1 and distill["data_saving_one_pass"] == 0
    summary = (project / "reports/summary.md").read_text()
    auc = json.loads((project / "metrics/entropy/tiny.json").read_text())["roc_auc"]
    assert summary.startswith(f"# caft: students × strategies\n\n- **tiny**: entropy → wrong answer ROC AUC {auc:.3f};")
    assert "\n\n| student | strategy | balanced-set acc. [95 % CI] |" in summary
    assert (project / "models/tiny/caft/42/adapter_model.safetensors").exists()
    assert up_to_date(project)


def test_the_html_report_holds_the_summary_and_every_plot(project):
    """`make report`: one self-contained page (inline SVG, no script) with the summary rendered (its tables as
    tables) and one figure per plot, and the PNG files, all under reports/: nothing tracked changes."""
    tracked = run(["git", "ls-files", "-s"], project)
    run([*MAKE, "report"], project)
    text = (project / "reports/plots.html").read_text()
    pngs = list((project / "reports/img").glob("*.png"))
    assert text.count("<figure><svg") == len(pngs) >= 5 and "<script" not in text
    assert "<h1>caft: students × strategies</h1>" in text and "<th>balanced-set acc. [95 % CI]</th>" in text
    assert "| student |" not in text and "accuracy-on-the-balanced-test-set-with-95-cis.png" in {p.name for p in pngs}
    assert run(["git", "ls-files", "-s"], project) == tracked
    assert run(["git", "status", "--porcelain", "--", "reports/img", "reports/plots.html"], project) == ""


def test_threshold_experiment_reruns_only_split(project):
    before = lock(project)
    out = run(["dvc", "exp", "run", "-S", "split.threshold=0.5"], project)
    # a normal run is quiet: no library deprecation noise, no DVC warnings about missing outputs
    assert "FutureWarning" not in out and "No file hash info found" not in out and "WARNING" not in out, out
    assert "num_cpu_threads_per_process" not in out and "train@tiny-caft-42" in ran_stages(out), out
    ran = recomputed(out)
    assert ran == {
        "check_params",
        "split@tiny",
        "sets@tiny",
        "train@tiny-caft-42",
        "train@tiny-random-42",
        "eval@tiny-caft-42",
        "eval@tiny-random-42",
        "report",
    }
    after = lock(project)
    assert after["entropy@tiny"] == before["entropy@tiny"] and after["prepare"] == before["prepare"]
    assert after["split@tiny"]["params"]["params.yaml"]["split.threshold"] == 0.5
    split = json.loads((project / "metrics/split/tiny.json").read_text())
    # hard now starts at the train median: about half of the valid train rows
    n_train = sum(split[f"train_{b}_n"] for b in ("easy", "medium", "hard"))
    assert abs(split["train_hard_n"] - n_train / 2) <= 1


def test_compat_parsed_only_reaches_the_report(project):
    """eval.compat_parsed_only through `dvc exp run`: only the report re-runs, and it adds the authors' accuracy
    over parsed answers, recomputed here from the predictions and the balanced test set."""
    out = run(["dvc", "exp", "run", "-S", "eval.compat_parsed_only=true"], project)
    assert recomputed(out) == {"check_params", "report"}
    report = json.loads((project / "reports/report.json").read_text())["tiny"]
    assignments = pd.read_parquet(project / "data/split/tiny/assignments.parquet")
    balanced = set(assignments.loc[(assignments["subset"] == "test") & assignments["balanced"], "question_id"])
    for strategy, metrics in report.items():
        preds = pd.read_parquet(project / f"data/eval/tiny/{strategy}/42/predictions.parquet")
        parsed = preds[preds["question_id"].isin(balanced) & preds["parsed"]]
        expected = round(float(parsed["correct"].mean()), 6) if len(parsed) else None
        assert metrics["balanced_set_accuracy_parsed_only"] == expected, strategy
    assert "acc. over parsed answers (authors' convention)" in (project / "reports/summary.md").read_text()
    run(["dvc", "exp", "run", "-S", "eval.compat_parsed_only=false"], project)


def test_estimator_switch_reruns_split_not_the_estimators(project):
    """Up to the split, the stage under test (the trainings a new banding needs are the threshold test's); back
    on single-token entropy, the split is restored and nothing after it runs again."""
    out = run(["dvc", "exp", "run", "-S", "split.estimator=cot_mean_entropy", "split@tiny"], project)
    ran = recomputed(out)
    assert "split@tiny" in ran and not {s for s in ran if s.startswith(("estimate_", "entropy@", "prepare"))}
    split = json.loads((project / "metrics/split/tiny.json").read_text())
    assert split["estimator"] == "cot_mean_entropy"
    out = run(["dvc", "exp", "run", "-S", "split.estimator=single_token_entropy"], project)
    assert recomputed(out) <= {"check_params", "report"}, out


def test_stage_errors_are_one_line_and_leave_no_output(project):
    cmd = [
        sys.executable,
        "stages/split.py",
        "--model",
        "tiny",
        "--scores",
        "data/entropy/tiny/scores.parquet",
        "--estimator",
        "data/estimators/tiny/single_token_entropy.parquet",
        "--out",
        "bad-out",
        "--metrics",
        "bad.json",
        "--params",
        "bad-params.yaml",
    ]
    proc = subprocess.run(cmd, cwd=project, env=env(), capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr == "error: params file not found: bad-params.yaml\n"
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["split"]["easy_threshold"] = 0.9
    (project / "bad-params.yaml").write_text(yaml.safe_dump(params))
    proc = subprocess.run(cmd, cwd=project, env=env(), capture_output=True, text=True)
    assert proc.returncode == 2
    threshold = params["split"]["threshold"]  # wherever an earlier test left the workspace
    assert proc.stderr == f"error: invalid params: split.easy_threshold=0.9 is above threshold={threshold}\n"
    assert not (project / "bad-out").exists() and not (project / "bad.json").exists()


def test_bad_question_file_stops_prepare(project, tmp_path):
    bad = tmp_path / "q.jsonl"
    bad.write_text(
        '{"question_id": "a", "question": "Q?", "options": ["x", "y"], "answer_index": 0, "category": "c"}\n'
        '{"question_id": "b", "question": "Q?", "options": ["x", "y"], "answer_index": 2, "category": "c"}\n'
    )
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["data"]["source"] = "file"
    params["data"]["file"]["path"] = str(bad)
    (project / "file-params.yaml").write_text(yaml.safe_dump(params))
    proc = subprocess.run(
        [
            sys.executable,
            "stages/prepare.py",
            "--out-dir",
            "bad-prep",
            "--metrics",
            "bad-prep.json",
            "--params",
            "file-params.yaml",
        ],
        cwd=project,
        env=env(),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr == "error: row 1 (question_id='b'): answer_index 2 is out of range for 2 options\n"
    assert not (project / "bad-prep").exists() and not (project / "bad-prep.json").exists()
    assert not list(project.glob(".bad-prep*"))


def test_api_teacher_key_never_reaches_outputs_lock_or_cache(project):
    from tests.fake_openai import FakeOpenAI

    key = "sk-or-v1-THIS-IS-SECRET-42"
    with FakeOpenAI({}) as api:
        key_env = env(CAFT_TEST_KEY=key)
        sets = [
            "teacher.backend=openai",
            f"teacher.openai.base_url={api.base_url}",
            "teacher.openai.api_key_env=CAFT_TEST_KEY",
            "teacher.openai.backoff_base_s=0.01",
        ]
        # the teacher stage alone: it is the only one that reads the key, and what it writes (the traces, its
        # response store, its lock entry) is all a later stage could carry it from
        cmd = ["dvc", "exp", "run", *[arg for s in sets for arg in ("-S", s)], "teacher"]
        proc = subprocess.run(cmd, cwd=project, env=key_env, capture_output=True, text=True, timeout=HANG_GUARD_S)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    assert api.auth == {f"Bearer {key}"}
    metrics = json.loads((project / "metrics/teacher.json").read_text())
    this_run = json.loads((project / "data/teacher/run.json").read_text())
    assert metrics["teacher"] == "openai:deepseek/deepseek-chat-v3-0324" and this_run["new_traces"] > 0
    assert key not in proc.stdout + proc.stderr
    leaks = [p for p in project.rglob("*") if p.is_file() and key.encode() in p.read_bytes()]
    assert leaks == []
    # back to the oracle: its traces are those of the earlier runs, so nothing after the teacher runs again (the
    # teacher itself always runs; it pays nothing). check_params hashes params.yaml, whose bytes a `-S` round trip
    # may change (DVC rewrites the file: a blank line goes) while every value is back.
    defaults = yaml.safe_load(committed("params.yaml").read_text())["teacher"]
    back = ["teacher.backend=oracle"] + [
        f"teacher.openai.{k}={defaults['openai'][k]}" for k in ("base_url", "api_key_env", "backoff_base_s")
    ]
    out = run(["dvc", "exp", "run", *[arg for s in back for arg in ("-S", s)]], project)
    assert recomputed(out) <= {"check_params", "report"}, out


def test_fresh_clone_pulls_everything_from_a_local_remote(project, tmp_path):
    remote = tmp_path / "remote"
    run(["dvc", "remote", "add", "-d", "store", str(remote)], project)
    run(["dvc", "push", "--run-cache"], project)
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "tiny results"], project)
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(project), str(clone)], tmp_path)
    # before any pull, the committed results read from git alone: the headline metrics and every plot
    metrics = run(["dvc", "metrics", "show"], clone).splitlines()
    assert metrics[0].split() == ["Path", "acc", "acc_balanced_set", "acc_hard_band", "cot_tokens",
                                  "entropy_roc_auc", "teacher_calls"]  # fmt: skip
    assert len(metrics) == 6 and max(map(len, metrics)) <= 200, metrics
    assert run(["dvc", "metrics", "diff", "HEAD"], clone).strip() == ""  # nothing differs from the commit
    plots = subprocess.run(["dvc", "plots", "show", "--json"], cwd=clone, env=env(), capture_output=True, text=True)
    assert plots.returncode == 0 and "failed" not in plots.stderr.lower() and not json.loads(plots.stdout).get("errors")
    compared = run([*MAKE, "compare"], clone)
    assert {line.split(" | ")[2] for line in compared.splitlines() if line.startswith("| workspace | tiny |")} == {
        "sft", "distill", "caft", "random"
    }  # fmt: skip
    run(["dvc", "pull"], clone)
    assert up_to_date(clone)
    out = run(["dvc", "repro"], clone)
    assert recomputed(out) == set() and "didn't change, skipping" in out
    for path in (
        "data/teacher/traces.parquet",
        "models/tiny/caft/42/adapter_model.safetensors",
        "data/split/tiny/assignments.parquet",
        "data/eval/tiny/caft/42/predictions.parquet",
    ):
        assert (clone / path).read_bytes() == (project / path).read_bytes(), path
    # one threshold experiment: `dvc exp show --only-changed` fits a screen (the metrics are a few keys a run)
    run(["dvc", "exp", "run", "-S", "split.threshold=0.55"], clone)
    header = run(["dvc", "exp", "show", "--only-changed", "--csv"], clone).splitlines()[0].split(",")
    assert "split.threshold" in header and len(header) <= 60, header


def test_a_collaborator_restores_a_run_nobody_committed(project, tmp_path):
    """`make push` (caft push) uploads the run records *and* the outputs they name: a clone that pulls restores a
    threshold the other side ran as a workspace experiment and never committed, instead of recomputing it
    (DVC's own `dvc push --run-cache` uploads the records only, treeverse/dvc#10472)."""
    run(["dvc", "remote", "add", "-d", "-f", "shared", str(tmp_path / "remote")], project)
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "tiny results, shared remote"], project)
    threshold = another_threshold(project)
    run(["dvc", "exp", "run", "-S", f"split.threshold={threshold}"], project)  # an experiment, never committed
    ran_here = json.loads((project / "metrics/eval/tiny/caft/42.json").read_text())
    run(["caft", "reset"], project)  # the workspace back at the commit: the threshold is only an experiment now

    pushed = run([*MAKE, "push"], project)
    assert "caft push: " in pushed and "output files uploaded now" in pushed
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(project), str(clone)], tmp_path)
    run([*MAKE, "pull"], clone)  # dvc pull --run-cache
    out = run(["dvc", "exp", "run", "--pull", "-S", f"split.threshold={threshold}"], clone)
    assert json.loads((clone / "metrics/eval/tiny/caft/42.json").read_text()) == ran_here
    assert recomputed(out) <= {"check_params", "report"}, out
    assert "Stage 'train@tiny-caft-42' is cached - skipping run, checking out outputs" in out


def test_revisiting_a_threshold_restores_every_stage_from_the_run_cache(project):
    """threshold A -> B -> A: the third run restores split, sets, trainings and evals from DVC's run-cache
    (every expensive stage's outputs are cached, metrics and plots included); only the teacher (its response
    store is a `persist` output, which DVC never run-caches; it pays nothing) and the report (git-visible
    outputs) run again."""
    params = yaml.safe_load((project / "params.yaml").read_text())
    start = params["split"]["threshold"]
    a = another_threshold(project)
    b = next(t for t in THRESHOLDS if t != a)
    run(["dvc", "exp", "run", "-S", f"split.threshold={a}"], project)
    before = json.loads((project / "metrics/eval/tiny/caft/42.json").read_text())
    run(["dvc", "exp", "run", "-S", f"split.threshold={b}"], project)
    out = run(["dvc", "exp", "run", "-S", f"split.threshold={a}"], project)
    assert recomputed(out) <= {"report"}, out
    assert "Stage 'train@tiny-caft-42' is cached - skipping run, checking out outputs" in out
    assert json.loads((project / "metrics/eval/tiny/caft/42.json").read_text()) == before
    assert (project / ".dvc/cache/runs").is_dir()
    run(["dvc", "exp", "run", "-S", f"split.threshold={start}"], project)


def test_an_experiment_holds_exactly_the_metrics_of_what_it_ran(project):
    """Dropping strategies leaves their old files in the workspace, but the declared metrics are the report's
    headline files, one per strategy in params: `dvc metrics show` lists only those, one short row each."""
    run(["dvc", "exp", "run", "-S", "strategies=[sft,caft]"], project)
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], project))
    data = {path: m["data"] for path, m in next(iter(shown.values()))["data"].items()}
    assert sorted(data) == [f"metrics/summary/tiny/{name}.json" for name in ("caft", "entropy", "sft")]
    report = json.loads((project / "reports/report.json").read_text())["tiny"]
    assert set(report) == {"sft", "caft"}
    caft = report["caft"]
    assert data["metrics/summary/tiny/caft.json"] == {
        "acc": caft["accuracy"],
        "acc_balanced_set": caft["balanced_set_accuracy"],
        "acc_hard_band": caft["band_hard_accuracy"],
        "teacher_calls": caft["teacher_calls"],
        "cot_tokens": caft["cot_target_tokens"],
    }
    auc = json.loads((project / "metrics/entropy/tiny.json").read_text())["roc_auc"]
    assert data["metrics/summary/tiny/entropy.json"] == {"entropy_roc_auc": auc}
    table = run(["dvc", "metrics", "show"], project).splitlines()
    assert len(table) == 4 and max(map(len, table)) <= 200, table
    run(["dvc", "exp", "run", "-S", "strategies=[sft,distill,caft,random]"], project)


def test_queued_experiments_recompute_nothing_the_workspace_has(project, monkeypatch):
    """`make sweep THRESHOLDS=0.55,0.65` (caft sweep): two queued thresholds on two workers, each in a copy of
    the last commit, restoring prepare, entropy, the estimators and the sft / distill trainings from the
    run-cache and running only what the threshold changes; then `caft compare` lists both and the frontier's
    caft points equal their experiments' reports, with sft and distill as the end points."""
    commit_state(project)
    out = run([*MAKE, "sweep", "THRESHOLDS=0.55,0.65"], project)
    assert out.count("dvc exp run --queue") == 2 and "| student | strategy | threshold |" in out
    assert "sweep: point 1 of 2 (sweep-t055): running" in out, out  # a point runs far longer than a poll
    assert "sweep: point 2 of 2 (sweep-t065): success, " in out, out
    status = run(["dvc", "queue", "status"], project)
    assert all(re.search(rf"\b{name}\b.*\bSuccess\b", status) for name in ("sweep-t055", "sweep-t065")), status
    upstream = {"prepare", "entropy@tiny", "estimate_cot@tiny", "train@tiny-sft-42", "train@tiny-distill-42"}
    for name in ("sweep-t055", "sweep-t065"):
        ran = ran_stages(run(["dvc", "queue", "logs", name], project))
        assert "split@tiny" in ran and "train@tiny-caft-42" in ran and not ran & upstream, (name, ran)
    table = run(["caft", "compare"], project)
    assert "- sweep-t055: split.threshold=0.55" in table and "- sweep-t065: split.threshold=0.65" in table
    assert re.search(r"^\| sweep-t055 \| tiny \| caft \| 0\.\d{3} \[", table, re.M), table
    assert re.search(r"^\| sweep-t065 \| tiny \| sft \|", table, re.M), table
    assert max(len(line) for line in table.splitlines()) <= 160, table
    points = json.loads((project / "reports/frontier/frontier.json").read_text())
    by_threshold = {p["threshold"]: p for p in points if p["strategy"] == "caft"}
    assert {0.55, 0.65} <= set(by_threshold) and {"sft", "distill"} <= {p["strategy"] for p in points}
    monkeypatch.chdir(project)  # each experiment's report is read from its commit in the project's git
    swept = [
        r
        for r in experiments.rows(json.loads(run(["dvc", "exp", "show", "--json"], project)))
        if r["name"] in ("sweep-t055", "sweep-t065")
    ]
    assert len(swept) == 2
    for row in swept:
        report = row["report"]["tiny"]["caft"]
        point = by_threshold[row["params"]["split.threshold"]]
        assert (point["accuracy"], point["cot_target_tokens"], point["teacher_calls"]) == (
            report["accuracy"],
            report["cot_target_tokens"],
            report["teacher_calls"],
        )


def test_a_second_seed_trains_only_its_own_runs(project):
    """`make seeds SEEDS=42,7` as a user types it: the seed axis adds seed 7's trainings and evals (seed 42's
    stay), seed 7's random control is its own draw, and the report's mean over seeds and paired differences
    equal what the two seeds' predictions give, recomputed here."""
    out = run([*MAKE, "seeds", "SEEDS=42,7"], project)
    strategies = ("sft", "distill", "caft", "random")
    assert recomputed(out) == {"check_params", "sets@tiny", "report"} | {
        f"{stage}@tiny-{x}-7" for stage in ("train", "eval") for x in strategies
    }
    sets = project / "data/sets/tiny"
    pd.testing.assert_frame_equal(pd.read_parquet(sets / "sft/7.parquet"), pd.read_parquet(sets / "sft/42.parquet"))
    cot = {s: set(pd.read_parquet(sets / f"random/{s}.parquet").query("kind == 'cot'")["question_id"]) for s in (42, 7)}
    assert len(cot[42]) == len(cot[7]) > 0 and cot[42] != cot[7]
    assert json.loads((project / "models/tiny/caft/7/caft_model.json").read_text())["seed"] == 7
    assignments = pd.read_parquet(project / "data/split/tiny/assignments.parquet")
    balanced = sorted(assignments.loc[(assignments["subset"] == "test") & assignments["balanced"], "question_id"])

    def correct(x, seed):
        preds = pd.read_parquet(project / f"data/eval/tiny/{x}/{seed}/predictions.parquet")
        return preds.set_index("question_id").loc[balanced, "correct"].to_numpy(float)

    report = json.loads((project / "reports/report.json").read_text())["tiny"]
    for x in strategies:
        per_seed = [correct(x, s).mean() for s in (42, 7)]
        assert report[x]["n_seeds"] == 2
        assert report[x]["balanced_set_accuracy"] == pytest.approx(np.mean(per_seed), abs=1e-6)
        assert report[x]["balanced_set_accuracy_sd"] == pytest.approx(np.std(per_seed, ddof=1), abs=1e-6)
    diff = np.mean([correct("caft", s) - correct("sft", s) for s in (42, 7)])
    assert report["caft"]["minus_sft_mean"] == pytest.approx(diff, abs=1e-6)
    assert report["caft"]["minus_sft_ci_low"] <= diff <= report["caft"]["minus_sft_ci_high"]
    summary = (project / "reports/summary.md").read_text()
    assert "Over training seeds" in summary and "| tiny | caft · seed 7 |" in summary
    run(["caft", "reset"], project)  # back to one seed: seed 7's files and DVC's .gitignore entries for them go
    for folder, kept in {
        "data/eval": "42",
        "models": "42",
        "metrics/train": "42.json",
        "data/epochs": "42.parquet",
    }.items():
        assert sorted(p.name for p in (project / folder / "tiny/caft").iterdir()) == [".gitignore", kept], folder
        assert (project / folder / "tiny/caft/.gitignore").read_text() == f"/{kept}\n"
    # the training curves are in git (cache: false): seed 7's are gone, seed 42's as committed
    assert sorted(p.name for p in (project / "plots/train/tiny/caft").iterdir() if any(p.iterdir())) == ["42"]
    assert run(["git", "status", "--porcelain", "--untracked-files=no"], project) == ""
    assert up_to_date(project)


def test_a_trained_model_is_shared_with_its_results(project, tmp_path):
    """`caft card models/tiny/caft/42 --out DIR`: the model's files copied, with a card whose model-index holds
    the accuracy of its eval metrics, the licence given and a loading snippet; the model folder (a DVC output)
    untouched; an existing folder, a folder that is no model, or a model outside the project refused with one
    line, nothing written."""
    import os
    import shutil
    import stat

    from huggingface_hub import ModelCard

    model = project / "models/tiny/caft/42"
    kept = {f.name: f.read_bytes() for f in model.iterdir()}
    out = tmp_path / "tiny-caft-42"
    said = run(["caft", "card", "models/tiny/caft/42", "--out", str(out), "--license", "apache-2.0"], project)
    assert said == f"caft card: wrote {out / 'README.md'}\n"
    metrics = json.loads((project / "metrics/eval/tiny/caft/42.json").read_text())
    card = ModelCard.load(out / "README.md")
    (result,) = card.data.eval_results
    assert (result.metric_type, result.metric_value, result.dataset_split) == ("accuracy", metrics["accuracy"], "test")
    assert result.dataset_name == "caft's synthetic questions" and card.data.datasets is None
    assert (card.data.license, card.data.model_name) == ("apache-2.0", "tiny-caft-42")
    ci = f"| {metrics['accuracy']:.3f} [{metrics['accuracy_ci_low']:.3f}, {metrics['accuracy_ci_high']:.3f}] |"
    assert ci in card.text and f"test split, {metrics['n']} questions" in card.text
    lora = json.loads(kept["caft_model.json"])["lora"]
    loader = "AutoPeftModelForCausalLM" if lora else "AutoModelForCausalLM"
    assert f'model = {loader}.from_pretrained("tiny-caft-42")' in card.text
    assert card.text.startswith(ModelCard(kept["README.md"].decode()).text.rstrip("\n"))  # the train-time card, then
    assert {f.name: f.read_bytes() for f in model.iterdir()} == kept
    copied = {f.name: f.read_bytes() for f in out.iterdir() if f.name != "README.md"}
    assert copied == {k: v for k, v in kept.items() if k not in ("README.md", ".gitignore")}
    umask = os.umask(0)
    os.umask(umask)
    assert {stat.S_IMODE(f.stat().st_mode) for f in out.iterdir()} == {0o666 & ~umask}
    elsewhere = tmp_path / "copied"  # a model folder, but not one this project's eval stages read
    shutil.copytree(model, elsewhere)
    for args, message in (
        (["models/tiny/caft/42", "--out", str(out)], f"{out} exists and is not empty: give a new folder"),
        (["data/prepared", "--out", str(tmp_path / "x")], "data/prepared is not a caft model folder"),
        ([str(elsewhere), "--out", str(tmp_path / "x")], f"{elsewhere} is outside this project"),
        (
            ["models/tiny/caft/42", "--out", str(out / "README.md" / "x")],
            f"cannot write {out / 'README.md' / 'x'}: {out / 'README.md'} is a file, not a folder",
        ),
    ):
        proc = call(["caft", "card", *args], project)
        assert proc.returncode == 2 and proc.stderr.splitlines()[0].startswith(f"error: {message}"), proc.stderr
    assert not (tmp_path / "x").exists() and ModelCard.load(out / "README.md").text == card.text


def commit_state(project: Path) -> None:
    """Commit whatever state earlier tests left (a sweep's points and `caft reset` start from the last commit),
    so that a test passes run alone or after any other."""
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "tiny state", "--allow-empty"], project)


def test_reset_returns_to_the_committed_params_and_their_outputs(project):
    commit_state(project)
    committed = run(["git", "show", "HEAD:params.yaml"], project)
    split = (project / "metrics/split/tiny.json").read_bytes()
    run(["dvc", "exp", "run", "-S", f"split.threshold={another_threshold(project)}"], project)
    assert (project / "metrics/split/tiny.json").read_bytes() != split
    run(["caft", "reset"], project)
    assert (project / "params.yaml").read_text() == committed
    assert (project / "metrics/split/tiny.json").read_bytes() == split
    assert up_to_date(project)


def test_reestimated_caft_through_dvc(project):
    """`caft_reestimate` added by `dvc exp run -S strategies=[...]`: only its own set, training and eval run
    (the other strategies' sets are unchanged), the teacher covers the whole pool, phase 2 trains on the hard
    band its model file records, and the report's section repeats the train metrics."""
    commit_state(project)
    out = run(["dvc", "exp", "run", "-S", "strategies=[sft,distill,caft,random,caft_reestimate]"], project)
    assert recomputed(out) == {
        "check_params",
        "sets@tiny",
        "train@tiny-caft_reestimate-42",
        "eval@tiny-caft_reestimate-42",
        "report",
    }, out
    moved = pd.read_parquet(project / "models/tiny/caft_reestimate/42/rebanded_phase1.parquet")
    train_rows = moved[moved["subset"] == "train"]
    hard = set(train_rows.loc[train_rows["band_after"] == "hard", "question_id"])
    trained = json.loads((project / "metrics/train/tiny/caft_reestimate/42.json").read_text())
    assert trained["n_cot_items"] == trained["phase1_rebanded_hard_after_n"] == len(hard) > 0
    before = set(train_rows.loc[train_rows["band_before"] == "hard", "question_id"])
    assert trained["phase1_rebanded_hard_kept_n"] == len(before & hard)
    card = json.loads((project / "models/tiny/caft_reestimate/42/caft_model.json").read_text())
    assert [ph["n"] for ph in card["phases"]] == [trained["phase0_n"], len(hard)]
    report = json.loads((project / "reports/report.json").read_text())["tiny"]
    assert report["caft_reestimate"]["teacher_calls"] == report["distill"]["teacher_calls"]  # requested up front
    assert report["caft_reestimate"]["cot_target_tokens"] < report["distill"]["cot_target_tokens"]
    summary = (project / "reports/summary.md").read_text()
    assert "Re-estimated hard band" in summary
    row = (
        f"| tiny | caft_reestimate · seed 42 | 1 | {len(train_rows)} | {len(before)} → {len(hard)} | "
        f"{len(before & hard)} ("
    )
    assert row in summary, summary
    run(["caft", "reset"], project)
    assert up_to_date(project)

"""`caft compare` (caft.experiments): the experiments table from `dvc exp show --json`; `caft push` / `pull`."""

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml

from caft import experiments
from caft.errors import CaftError
from tests.conftest import committed
from tests.dvc_project import HANG_GUARD_S, MAKE, env


def _report(caft_acc):
    return {
        "s": {
            "caft": {
                "balanced_set_accuracy": caft_acc,
                "balanced_set_accuracy_ci_low": caft_acc - 0.1,
                "balanced_set_accuracy_ci_high": caft_acc + 0.1,
                "accuracy": 0.3,
                "band_hard_accuracy": 0.25,
                "teacher_calls": 16,
                "cot_target_tokens": 576,
                "data_saving_one_pass": 0.4617,
            },
        }
    }


def _entry(rev, name, threshold):
    data = {
        "params": {"params.yaml": {"data": {"seed": 42, "split": {"threshold": threshold, "units": "quantile"}}}},
        "metrics": {"metrics/summary/s/entropy.json": {"data": {"entropy_roc_auc": 0.866}}},
    }
    return {"rev": rev, "name": name, "data": data, "error": None}


def test_the_table_keeps_changed_params_and_the_headline_metrics():
    head = _entry("a" * 40, "main", 0.75)
    running = {"state": "running", "name": "dvc-task"}  # DVC lists it with the workspace's metrics: left out
    head["experiments"] = [
        {"revs": [_entry("c" * 40, "exp-2", 0.6)], "name": "exp-2", "executor": running},
        {"revs": [_entry("b" * 40, "exp-1", 0.5)], "name": "exp-1", "executor": {"state": "success"}},
    ]
    shown = [_entry("workspace", None, 0.75), head]
    # each row's numbers come from its own revision's reports/report.json
    reports = {"workspace": _report(0.385), "a" * 40: _report(0.385), "b" * 40: _report(0.4), "c" * 40: {}}
    rows = experiments.rows(shown, read=reports.__getitem__)
    assert [r["name"] for r in rows] == ["workspace", "main", "exp-1"] and experiments.changed(rows) == [
        "split.threshold"
    ]
    table = experiments.markdown(rows).splitlines()
    assert table == [
        "Params that differ between the experiments:",
        "",
        "- workspace: split.threshold=0.75",
        "- main: split.threshold=0.75",
        "- exp-1: split.threshold=0.5",
        "",
        "| experiment | student | strategy | balanced-set acc. [95 % CI] | acc. (all test) | hard acc. | teacher calls "
        "| CoT tokens | saved vs distill | ROC AUC |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        "| workspace | s | caft | 0.385 [0.285, 0.485] | 0.300 | 0.250 | 16 | 576 | 46.2% | 0.866 |",
        "| main | s | caft | 0.385 [0.285, 0.485] | 0.300 | 0.250 | 16 | 576 | 46.2% | 0.866 |",
        "| exp-1 | s | caft | 0.400 [0.300, 0.500] | 0.300 | 0.250 | 16 | 576 | 46.2% | 0.866 |",
    ]
    assert max(map(len, table)) <= 160  # a row fits a terminal: the params are said once per experiment


def test_no_report_is_one_line():
    with pytest.raises(CaftError, match=r"^no experiment has reports/report.json"):
        experiments.markdown([{"name": "x", "params": {}, "metrics": {}, "report": {}}])


def test_push_and_pull_without_a_remote_are_one_line(tmp_path):
    """`make push` / `make pull` (caft push / pull) in a project with no DVC remote: one line, exit status 2."""
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"]):
        subprocess.run(cmd, cwd=tmp_path, env=env(), check=True)
    for verb in ("push", "pull"):
        proc = subprocess.run(["caft", verb], cwd=tmp_path, env=env(), capture_output=True, text=True)
        assert (proc.returncode, proc.stderr) == (
            2,
            "error: no DVC remote: `dvc remote add -d NAME URL`, then commit .dvc/config (or pass -r NAME)\n",
        )
    # a misspelt remote name, beside a real one: one line naming the project's remotes, nothing sent or fetched
    subprocess.run(["dvc", "remote", "add", "shared", str(tmp_path / "remote")], cwd=tmp_path, env=env(), check=True)
    for verb in ("push", "pull"):
        proc = subprocess.run(["caft", verb, "-r", "shraed"], cwd=tmp_path, env=env(), capture_output=True, text=True)
        assert (proc.returncode, proc.stderr) == (2, "error: no DVC remote named 'shraed' (this project's: shared)\n")
    assert not (tmp_path / "remote").exists()
    proc = subprocess.run(["caft", "push", "-r", "shared"], cwd=tmp_path, env=env(), capture_output=True, text=True)
    assert proc.returncode == 0 and "caft push: 0 run records" in proc.stdout, proc.stderr  # the right name goes


PRICES = {"teacher.price_prompt_per_m": 0.5, "teacher.price_completion_per_m": 2.0}


def _sweep_row(name, threshold, caft, prices=PRICES, random=None):
    """A `dvc exp show` row of a sweep point: its threshold, the teacher's prices and its report (sft / distill
    do not move with the threshold; the balanced accuracy, on the threshold's own bands, is what the frontier
    must not read); each teacher call took 100 prompt and 1000 completion tokens."""
    strategies = {
        "sft": (0.40, 0, 0),
        "distill": (0.55, 80, 3000),
        "caft": caft,
        **({"random": random} if random else {}),
    }
    report = {
        "s": {
            k: {
                "accuracy": acc,
                "accuracy_ci_low": acc - 0.05,
                "accuracy_ci_high": acc + 0.05,
                "balanced_set_accuracy": 1.0 - acc,
                "teacher_calls": calls,
                "teacher_prompt_tokens": 100 * calls,
                "teacher_completion_tokens": 1000 * calls,
                "cot_target_tokens": tokens,
            }
            for k, (acc, calls, tokens) in strategies.items()
        }
    }
    params = {"split.threshold": threshold, **prices}
    return {"name": name, "params": params, "metrics": {}, "report": report}


def test_frontier_points_and_pareto_by_hand():
    rows = [
        _sweep_row("workspace", 0.75, (0.50, 20, 750)),
        _sweep_row("t05", 0.5, (0.52, 40, 1500), random=(0.53, 40, 1400)),  # its control dominates caft there
        _sweep_row("t09", 0.9, (0.38, 8, 300)),  # fewer tokens than 0.75 but worse than sft (0 tokens): dominated
        _sweep_row("t075-again", 0.75, (0.99, 20, 750)),  # the same point twice: the first row counts
    ]
    points = experiments.frontier(rows)
    got = [(p["strategy"], p["threshold"], p["cot_target_tokens"], p["accuracy"], p["pareto"]) for p in points]
    assert got == [
        ("sft", None, 0, 0.40, True),
        ("caft", 0.9, 300, 0.38, False),
        ("caft", 0.75, 750, 0.50, True),
        ("random", 0.5, 1400, 0.53, True),
        ("caft", 0.5, 1500, 0.52, False),
        ("distill", None, 3000, 0.55, True),
    ]
    # cost = calls x (100 x 0.5 + 1000 x 2.0) / 1e6 USD: 8 calls 0.0164, distill's 80 calls 0.164
    assert [p["teacher_cost_usd"] for p in points] == [0.0, 0.0164, 0.041, 0.082, 0.082, 0.164]
    table = experiments.frontier_markdown(points)
    assert table.splitlines()[3] == "| s | caft | 0.9 | 300 | 8 | 0.016 | 0.380 | 0.330 | 0.430 |  |"
    mean_over_seeds = [{**points[0], "cot_target_tokens": 880.5}]  # random's draw follows the seed
    assert experiments.frontier_markdown(mean_over_seeds).splitlines()[2].split(" | ")[3] == "880.5"
    chart = experiments.frontier_chart(points)
    assert [v["label"] for v in chart["data"]["values"]] == ["", "t=0.9", "t=0.75", "t=0.5", "t=0.5", ""]
    assert experiments.priced(points)
    by_cost = experiments.frontier_chart(points, "teacher_cost_usd")["spec"]["layer"][1]["encoding"]["x"]
    assert by_cost == {"field": "teacher_cost_usd", "type": "quantitative", "title": "teacher cost (USD)"}
    unpriced = experiments.frontier([_sweep_row("w", 0.75, (0.5, 20, 750), prices={})])
    assert [p["teacher_cost_usd"] for p in unpriced] == [0.0, 0.0, 0.0] and not experiments.priced(unpriced)
    with pytest.raises(CaftError, match="no experiment has sft / caft / distill results"):
        experiments.frontier([{"name": "w", "params": {}, "metrics": {}, "report": {}}])


def test_a_sweep_from_an_uncommitted_base_is_one_line(tmp_path):
    """Queued points run copies of the last commit: a sweep over uncommitted params would silently sweep the
    commit instead, so `caft sweep` refuses first (one line, exit 2)."""
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"]):
        subprocess.run(cmd, cwd=tmp_path, env=env(), check=True)
    (tmp_path / "params.yaml").write_text("seed: 1\n")
    subprocess.run(["git", "add", "-A"], cwd=tmp_path, env=env(), check=True)
    subprocess.run(["git", "commit", "-qm", "base"], cwd=tmp_path, env=env(), check=True)
    (tmp_path / "params.yaml").write_text("seed: 2\n")
    proc = subprocess.run(
        ["caft", "sweep", "--thresholds", "0.5"], cwd=tmp_path, env=env(), capture_output=True, text=True
    )
    assert proc.returncode == 2 and proc.stderr.startswith("error: params.yaml / dvc.lock differ from the last commit")
    assert proc.stderr.count("\n") == 1


def test_a_sweep_with_a_bad_threshold_queues_nothing(tmp_path):
    """`caft sweep --thresholds 0.5,abc` (or 1.5, or 0.5 twice): one line naming the value, exit 2, and no
    point queued (the good ones would otherwise run for an hour beside a failed one)."""
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"]):
        subprocess.run(cmd, cwd=tmp_path, env=env(), check=True)
    (tmp_path / "params.yaml").write_text(committed("params.yaml").read_text())
    subprocess.run(["git", "add", "-A"], cwd=tmp_path, env=env(), check=True)
    subprocess.run(["git", "commit", "-qm", "base"], cwd=tmp_path, env=env(), check=True)
    expected = {
        "0.5,abc": "error: --thresholds abc: invalid params: split.threshold: Input should be a valid number, "
        "unable to parse string as a number\n",
        "1.5": "error: --thresholds 1.5: invalid params: split.threshold=1.5 is out of range for units=quantile "
        "([0.0, 1.0])\n",
        "0.5,0.6,0.5": "error: --thresholds repeats 0.5\n",
        "0.5,0.50": "error: --thresholds repeats 0.5, 0.50\n",  # one threshold, two point names
        "0.5,[": "error: --thresholds [: not a value (a number such as 0.6)\n",  # no YAML: no parser traceback
    }
    for thresholds, stderr in expected.items():
        proc = subprocess.run(
            ["caft", "sweep", "--thresholds", thresholds], cwd=tmp_path, env=env(), capture_output=True, text=True
        )
        assert (proc.returncode, proc.stdout, proc.stderr) == (2, "", stderr)
    # no worker to run the points (`SWEEP_JOBS=0`): refused before anything is queued, not a wait for ever
    proc = subprocess.run(["caft", "sweep", "--thresholds", "0.5", "--jobs", "0"], cwd=tmp_path, env=env(),
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 2 and "Invalid value for '--jobs'" in proc.stderr, proc.stderr
    # `make sweep THRESHOLDS=` (an empty list, as a shell variable gives it): caft's own line, not a usage box
    proc = subprocess.run([*MAKE, "sweep", "THRESHOLDS="], cwd=tmp_path, env=env(), capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[0] == "error: caft sweep needs --thresholds, e.g. 0.5,0.6,0.9", proc.stderr
    queued = subprocess.run(["dvc", "queue", "status"], cwd=tmp_path, env=env(), capture_output=True, text=True)
    assert "sweep-t" not in queued.stdout


def test_a_sweep_keeps_the_points_this_commit_already_ran(tmp_path):
    """Widening a sweep (`--thresholds 0.5,...` after 0.5 ran on this commit): DVC would refuse the name, so the
    point is kept as it is, said so, and not queued again."""
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"]):
        subprocess.run(cmd, cwd=tmp_path, env=env(), check=True)
    (tmp_path / "params.yaml").write_text(committed("params.yaml").read_text())
    stage = {"cmd": "python -c \"print('ran')\" > out.txt", "params": ["split.threshold"], "outs": ["out.txt"]}
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"point": stage}}))
    subprocess.run(["dvc", "repro", "-q"], cwd=tmp_path, env=env(), check=True)
    subprocess.run(["git", "add", "-A"], cwd=tmp_path, env=env(), check=True)
    subprocess.run(["git", "commit", "-qm", "base"], cwd=tmp_path, env=env(), check=True)
    subprocess.run(["dvc", "exp", "run", "--temp", "-q", "-S", "split.threshold=0.5", "-n", "sweep-t05"],
                   cwd=tmp_path, env=env(), check=True)  # fmt: skip
    proc = subprocess.run(
        ["caft", "sweep", "--thresholds", "0.5"], cwd=tmp_path, env=env(), capture_output=True, text=True
    )
    # kept, nothing queued; the frontier then has no trained strategy to draw in this toy project
    assert proc.stdout == (
        "sweep: sweep-t05 is already an experiment of this commit: kept (`dvc exp remove sweep-t05` to run it again)\n"
    )
    assert proc.returncode == 2 and proc.stderr == (
        "error: no experiment has sft / caft / distill results in reports/report.json (run the sweep first)\n"
    )


def _toy_sweep_project(root: Path, go: Path) -> None:
    """A committed DVC project with the real params.yaml and one stage that reads split.threshold, touches
    `started` beside `go`, and runs until the file `go` exists or a Ctrl-C (a queued run works in a copy of the
    project, so the paths are absolute). A Ctrl-C takes it 2 s to answer, as a real stage's clean-up."""
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"]):
        subprocess.run(cmd, cwd=root, env=env(), check=True)
    (root / "params.yaml").write_text(committed("params.yaml").read_text())
    (root / "point.py").write_text(
        "import pathlib, time\n\n"
        f"pathlib.Path({str(go.with_name('started'))!r}).touch()\n"
        "try:\n"
        f"    while not pathlib.Path({str(go)!r}).exists():\n"
        "        time.sleep(0.2)\n"
        "except KeyboardInterrupt:\n"
        "    time.sleep(2)  # a stage's clean-up (caft's puts DVC's outputs back) takes a while\n"
        "    raise SystemExit(130) from None\n"
    )
    stage = {"cmd": "python point.py > out.txt", "deps": ["point.py"], "params": ["split.threshold"]}
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"point": {**stage, "outs": ["out.txt"]}}}))
    go.touch()
    subprocess.run(["dvc", "repro", "-q"], cwd=root, env=env(), check=True)
    go.unlink()
    go.with_name("started").unlink()
    subprocess.run(["git", "add", "-A"], cwd=root, env=env(), check=True)
    subprocess.run(["git", "commit", "-qm", "base"], cwd=root, env=env(), check=True)


def _read_until(proc: subprocess.Popen, text: str) -> list[str]:
    """stdout lines up to and including the first that contains `text` (a hang is guarded by a kill timer)."""
    lines: list[str] = []
    while not lines or text not in lines[-1]:
        line = proc.stdout.readline()
        assert line, f"caft sweep ended before saying {text!r}: {lines}"
        lines.append(line)
    return lines


def test_ctrl_c_leaves_a_sweep_running_and_the_same_sweep_waits_for_it(tmp_path):
    """Ctrl-C while `caft sweep` waits: one line on stderr, exit 130, the point runs on in its worker; the same
    `caft sweep` again waits for that point instead of queueing it a second time."""
    go = tmp_path / "go"
    _toy_sweep_project(tmp_path, go)

    def sweep() -> subprocess.Popen:
        proc = subprocess.Popen(["caft", "sweep", "--thresholds", "0.5"], cwd=tmp_path, env=env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        guard = threading.Timer(HANG_GUARD_S, proc.kill)
        guard.daemon = True
        guard.start()
        return proc

    try:
        first = sweep()
        _read_until(first, "running")
        first.send_signal(signal.SIGINT)
        assert first.wait() == 130
        assert first.stderr.read() == (
            "sweep: stopped waiting; the points run on in the queue's workers (`dvc queue status`; `dvc queue "
            "kill NAME` stops one). The same `caft sweep` waits for them again.\n"
        )
        second = sweep()
        assert _read_until(second, "already in the queue")[-1] == (
            "sweep: sweep-t05 is already in the queue (running): waiting for it, not queued again\n"
        )
        go.touch()
        out, err = second.communicate()
        assert "sweep: point 1 of 1 (sweep-t05): success" in out and "dvc exp run --queue" not in out
        assert err == (
            "error: no experiment has sft / caft / distill results in reports/report.json (run the sweep first)\n"
        )
        status = subprocess.run(["dvc", "queue", "status"], cwd=tmp_path, env=env(), capture_output=True, text=True)
        assert status.stdout.count("sweep-t05") == 1
    finally:
        go.touch()
        subprocess.run(["dvc", "queue", "stop", "--kill"], cwd=tmp_path, env=env(), capture_output=True)


def test_ctrl_c_in_caft_profile_lets_dvc_stop_its_stage_first(tmp_path):
    """Ctrl-C reaches `caft profile`, `dvc exp run` and the stage alike: caft waits while DVC stops the stage and
    says so, then says `interrupted` (exit 130); DVC is not killed mid-clean-up, so the next DVC command runs."""
    go = tmp_path / "go"
    _toy_sweep_project(tmp_path, go)
    (tmp_path / "point.yaml").write_text("split.threshold: 0.6\n")
    proc = subprocess.Popen(["caft", "profile", "point.yaml"], cwd=tmp_path, env=env(), start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    guard = threading.Timer(HANG_GUARD_S, proc.kill)
    guard.daemon = True
    guard.start()
    try:
        while not (tmp_path / "started").exists():
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate()
    finally:
        go.touch()
    assert proc.returncode == 130 and "Traceback" not in out + err
    assert "ERROR: failed to reproduce 'point'" in err and err.endswith("\ninterrupted\n")
    status = subprocess.run(["dvc", "status"], cwd=tmp_path, env=env(), capture_output=True, text=True)
    assert status.returncode == 0, status.stderr


def test_a_profile_may_add_a_model_that_params_yaml_lacks(tmp_path):
    """A new student's block is new keys to Hydra, which refuses them in the plain `-S key=value` form: `caft
    profile` passes those as `-S ++key=value`, and DVC writes them into params.yaml."""
    go = tmp_path / "go"
    _toy_sweep_project(tmp_path, go)
    go.touch()
    mine = {"ref": "tiny", "revision": None, "dtype": "float32", "trust_remote_code": False, "import_key": None,
            "n_parameters": None}  # fmt: skip
    profile = {"models": {"mine": mine}, "students": ["mine"]}
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    proc = subprocess.run(["caft", "profile", "mine.yaml"], cwd=tmp_path, env=env(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == (
        "+ dvc exp run -S ++models.mine.ref=tiny -S ++models.mine.revision=null -S ++models.mine.dtype=float32 "
        "-S ++models.mine.trust_remote_code=false -S ++models.mine.import_key=null "
        "-S ++models.mine.n_parameters=null -S students=[mine]"
    )
    written = yaml.safe_load((tmp_path / "params.yaml").read_text())
    assert written["models"]["mine"] == mine and written["students"] == ["mine"]
    assert written["models"]["smollm2"] == yaml.safe_load(committed("params.yaml").read_text())["models"]["smollm2"]


def test_a_profile_adding_a_student_writes_every_leaf_the_stages_list(tmp_path):
    """An entry with its `ref` alone would reach DVC, which stops at the student's first stage (a listed param
    missing from params.yaml) after `check_params` and `prepare` ran: `caft profile` refuses it in one line
    before DVC runs, and params.yaml stays as it was."""
    (tmp_path / "params.yaml").write_text(committed("params.yaml").read_text())
    before = (tmp_path / "params.yaml").read_bytes()
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump({"models": {"mine": {"ref": "tiny"}}, "students": ["mine"]}))
    proc = subprocess.run(["caft", "profile", "mine.yaml"], cwd=tmp_path, env=env(), capture_output=True, text=True)
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr == (
        "error: invalid params: models.mine leaves out revision, dtype, trust_remote_code, import_key: the stages "
        "read each one as a DVC param (write it, null where unused, as under models.smollm2)\n"
    )
    assert (tmp_path / "params.yaml").read_bytes() == before


def test_reset_finds_dvcs_orphan_gitignores(tmp_path):
    """`caft reset`'s clean-up of DVC's `.gitignore` files on a hand-made tree: an untracked one left alone in its
    folder (a dropped student's) goes; a tracked one, or one beside a kept output, stays."""
    from caft.reset import orphan_ignores

    files = [
        "data/eval/s/caft/42/predictions.parquet",  # an output of the pipeline
        "data/eval/s/caft/.gitignore",  # tracked, beside the kept output
        "data/eval/q/sft/.gitignore",  # a dropped student's: its output already removed by dvc checkout
        "data/eval/r/sft/.gitignore",  # untracked, but its folder still holds a file
        "data/eval/r/sft/42/predictions.parquet",
        "data/eval/t/.gitignore",  # tracked and alone: git's to keep
    ]
    for rel in files:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    folders = [tmp_path / "data/eval"]
    tracked = {"data/eval/s/caft/.gitignore", "data/eval/t/.gitignore"}
    assert orphan_ignores(tmp_path, folders, tracked, gone=set()) == [tmp_path / "data/eval/q/sft/.gitignore"]
    gone = {tmp_path / "data/eval/r/sft/42/predictions.parquet"}
    assert orphan_ignores(tmp_path, folders, tracked, gone=gone) == [
        tmp_path / "data/eval/q/sft/.gitignore",
        tmp_path / "data/eval/r/sft/.gitignore",
    ]


def test_a_misspelt_make_variable_is_refused_before_anything_runs(tmp_path):
    """`make sweep THRESHOLD=0.5 SEED=3` (for THRESHOLDS / SEEDS) would run the defaults for an hour: one line,
    exit 2, the unknown names and the known ones; a known one passes."""
    from tests.conftest import REPO

    makefile = str(REPO / "Makefile")
    outer = ("MAKEFLAGS", "MAKELEVEL", "MFLAGS", "TORCH")  # as typed at a shell, not from inside `make test`
    clean = {k: v for k, v in env().items() if k not in outer}
    proc = subprocess.run(["make", "-f", makefile, "-n", "sweep", "THRESHOLD=0.5", "SEED=3"], cwd=tmp_path,
                          capture_output=True, text=True, env=clean)  # fmt: skip
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().endswith(
        "*** unknown variable(s) on the command line: SEED THRESHOLD (known: PYTHON BIN TORCH THRESHOLDS SWEEP_JOBS "
        "SEEDS TEST_JOBS DATASET LORA RECIPE RECIPE_EXTRA).  Stop."
    )
    ok = subprocess.run(["make", "-f", makefile, "-n", "-o", "setup", "sweep", "THRESHOLDS=0.5"], cwd=tmp_path,
                        capture_output=True, text=True, env=clean)  # fmt: skip
    assert ok.returncode == 0 and "sweep --thresholds '0.5' --jobs 2" in ok.stdout


def test_setup_asks_for_the_torch_build_before_creating_anything(tmp_path):
    """`make setup` with no torch installed and no TORCH=cpu|cuda: one line naming the choice, exit 2, no venv
    created (a plain machine's pip would otherwise pull the CUDA stack unasked)."""
    from tests.conftest import REPO

    for name in ("pyproject.toml", "requirements.lock"):
        (tmp_path / name).write_text((REPO / name).read_text())
    outer = ("MAKEFLAGS", "MAKELEVEL", "MFLAGS", "TORCH")  # `make test TORCH=cpu` exports its choice
    clean = {k: v for k, v in env().items() if k not in outer}
    for torch in ([], ["TORCH=gpu"]):
        proc = subprocess.run(["make", "-f", str(REPO / "Makefile"), "setup", f"BIN={tmp_path}/none", *torch],
                              cwd=tmp_path, capture_output=True, text=True, env=clean)  # fmt: skip
        assert proc.returncode == 2
        assert proc.stderr.splitlines()[0] == (
            "make: choose the torch build once: make setup TORCH=cpu, or TORCH=cuda on a GPU machine "
            "(to change it later: rm -rf .venv first)"
        )
        assert sorted(p.name for p in tmp_path.iterdir()) == ["pyproject.toml", "requirements.lock"]

"""The GPU check (bench/gpu_check.py, `make gpu-check`), kept working on CPU: its pipeline run on the tiny
profile, its distances and tolerances on hand-computed cases, and its refusals."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from tests.conftest import REPO, committed
from tests.dvc_project import HANG_GUARD_S, MAKE, env

sys.path.insert(0, str(REPO / "bench"))
import gpu_check  # noqa: E402  (bench/ holds scripts, not a package)

SCRIPT = [sys.executable, str(REPO / "bench/gpu_check.py")]


def check(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*SCRIPT, "--params", str(committed("params.yaml")), *args],
        cwd=REPO,
        env=env(),
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
    )


@pytest.mark.integration
def test_a_cpu_run_of_the_check_runs_the_caft_stages_and_matches_itself(tmp_path):
    proc = check("--device", "cpu", "--profile", "profiles/tiny.yaml", "--out", str(tmp_path / "run.json"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = json.loads((tmp_path / "run.json").read_text())
    # exactly what eval@tiny-caft-42 needs, in dvc's order: no other strategy, no estimator comparison
    assert list(run["stage_s"]) == [
        "check_params",
        "prepare",
        "entropy@tiny",
        "split@tiny",
        "teacher",
        "sets@tiny",
        "train@tiny-caft-42",
        "eval@tiny-caft-42",
    ]
    assert run["device"] == "cpu"
    # the tiny profile's 160 synthetic questions are all scored, and its 0.55 test share (88) answered
    assert len(run["entropy"]) == 160
    assert len(run["answers"]) == 88
    assert set(run["train_loss"]) == {"phase0_train_loss", "phase1_train_loss"}  # caft's two phases
    assert all(loss > 0 for loss in run["train_loss"].values())
    assert gpu_check.distances(run, run) == {
        "entropy_spearman": 1.0,
        "entropy_mean_abs_diff": 0.0,
        "train_loss_rel_diff": 0.0,
        "answers_agree": 1.0,
        "accuracy_abs_diff": 0.0,
    }
    table = (tmp_path / "run.md").read_text()
    assert "| train@tiny-caft-42 |" in table and "| **total** |" in table


def _result(entropy: list[float], answers: list[str], losses: list[float], accuracy: float) -> dict:
    return {
        "entropy": {f"q{i}": v for i, v in enumerate(entropy)},
        "answers": {f"q{i}": a for i, a in enumerate(answers)},
        "train_loss": {f"phase{k}_train_loss": v for k, v in enumerate(losses)},
        "accuracy": accuracy,
    }


def test_distances_and_the_lines_a_run_outside_the_tolerance_gets():
    reference = _result([0.1, 0.2, 0.3, 0.4], ["1", "2", "3", "4"], [2.0, 1.0], 0.5)
    # two neighbours swap ranks (Spearman 1 - 6*2/(4*15) = 0.8), each moving 0.1 nats: mean 0.05, on the bound;
    # the second phase's loss 10 % off; one answer of four differs; accuracy 0.25 lower
    run = _result([0.1, 0.2, 0.4, 0.3], ["1", "2", "3", "5"], [2.02, 1.1], 0.25)
    measured = gpu_check.distances(run, reference)
    assert measured == {
        "entropy_spearman": 0.8,
        "entropy_mean_abs_diff": 0.05,
        "train_loss_rel_diff": 0.1,
        "answers_agree": 0.75,
        "accuracy_abs_diff": 0.25,
    }
    assert gpu_check.failures(measured) == [
        "entropy_spearman = 0.8, outside the tolerance (min 0.98)",
        "train_loss_rel_diff = 0.1, outside the tolerance (max 0.05)",
        "answers_agree = 0.75, outside the tolerance (min 0.85)",
        "accuracy_abs_diff = 0.25, outside the tolerance (max 0.05)",
    ]
    other = _result([0.1, 0.2, 0.3], ["1", "2", "3"], [2.0, 1.0], 0.5)
    with pytest.raises(ValueError, match="different questions"):
        gpu_check.distances(other, reference)


def test_a_reference_recorded_with_other_params_is_refused_before_anything_runs(tmp_path):
    reference = tmp_path / "reference.json"
    reference.write_text(json.dumps({"params_sha256": "0" * 16}))
    out = tmp_path / "run.json"
    proc = check("--device", "cpu", "--reference", str(reference), "--out", str(out))
    assert proc.returncode == 2
    line = f"gpu-check: {reference} was recorded with other params (re-record it with --device cpu)"
    assert proc.stderr.strip() == line
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_make_gpu_check_without_a_gpu_says_so_and_writes_nothing():
    before = sorted(p.name for p in (REPO / "bench/results").iterdir())
    proc = subprocess.run(
        [*MAKE, "gpu-check"], cwd=REPO, env=env(), capture_output=True, text=True, timeout=HANG_GUARD_S
    )
    assert proc.returncode != 0
    assert f"gpu-check: torch {torch.__version__} sees no CUDA device (a CPU build, or no GPU here)" in proc.stderr
    assert sorted(p.name for p in (REPO / "bench/results").iterdir()) == before

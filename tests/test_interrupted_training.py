"""A training stage killed at any point, then `dvc repro`: the same adapter, metrics, curves and per-epoch records
as a run nobody interrupted. The kill is SIGKILL at a named point (`caft.faults`), through the stage as DVC runs
it; caft (two phases) on the tiny student, with a validation carve answered after every epoch and a checkpoint
every 2 steps (phase 0: 3 steps an epoch, 2 epochs; phase 1: 1 step an epoch, 2 epochs)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from tests.dvc_project import call, copy_project, ran_stages, run

pytestmark = pytest.mark.integration

STAGE = "train@tiny-caft-42"
OUTS = {
    "adapter": "models/tiny/caft/42/adapter_model.safetensors",
    "metrics": "metrics/train/tiny/caft/42.json",
    "epochs": "data/epochs/tiny/caft/42.parquet",
    "curves": "plots/train/tiny/caft/42",
}


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> tuple[Path, Path]:
    """The tiny profile up to the sets, committed; the training run once uninterrupted (its outputs kept aside as
    the reference), then the workspace back to "never trained"."""
    root = copy_project(tmp_path_factory.mktemp("interrupted"))
    sets = ["split.val_size=8", "eval.every_epoch=true", "train.batch_size=2", "train.save_steps=2"]
    run(["caft", "profile", "profiles/tiny.yaml", "sets@tiny", *[a for s in sets for a in ("-S", s)]], root)
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "up to the sets"], root)
    run(["dvc", "repro", STAGE], root)
    reference = tmp_path_factory.mktemp("reference")
    for rel in OUTS.values():
        (shutil.copytree if (root / rel).is_dir() else shutil.copy)(root / rel, reference / Path(rel).name)
    _never_trained(root)
    return root, reference


def _never_trained(root: Path) -> None:
    run(["git", "checkout", "dvc.lock"], root)
    for rel in ("models/tiny", "metrics/train", "data/epochs", "plots/train", "logs/train", ".caft/checkpoints"):
        shutil.rmtree(root / rel, ignore_errors=True)


def _curves(folder: Path) -> dict[str, pd.DataFrame]:
    """Every dvclive curve by name: its steps and values (timestamps differ between any two runs)."""
    return {
        str(f.relative_to(folder)): pd.read_csv(f, sep="\t").drop(columns="timestamp", errors="ignore")
        for f in sorted(folder.rglob("*.tsv"))
    }


@pytest.mark.parametrize(
    ("point", "signal"),
    [
        ("train:phase0:step5", "SIGKILL"),  # mid-epoch: resumed from the checkpoint of step 4
        ("train:epoch2:eval", "SIGKILL"),  # phase 0's last per-epoch pass: its checkpoint precedes the pass
        ("train:epoch4:eval", "SIGKILL"),  # the run's last per-epoch pass (the resume used to end in `KeyError: 4`)
        ("train:save", "SIGKILL"),  # both phases done, the stage's outputs not yet written
        ("train:phase1:step1", "SIGINT"),  # Ctrl-C in phase 1: Python's clean-up runs, then the same resume
    ],
)
def test_a_kill_then_dvc_repro_gives_the_uninterrupted_run(project, point, signal):
    """`--no-run-cache`: the reference run left a run-cache entry for these very inputs, which `dvc repro` would
    restore instead of resuming; a user's first run has none."""
    root, reference = project
    killed = call(["dvc", "repro", "--no-run-cache", STAGE], root, CAFT_KILL_AT=point, CAFT_KILL_SIGNAL=signal)
    try:
        said = killed.stdout + killed.stderr
        assert killed.returncode != 0 and "Traceback" not in said
        told = {  # the stage's line, and DVC's with the launcher's exit status
            "SIGKILL": ("caft: the training process was killed by SIGKILL\n", "exited with 137"),
            "SIGINT": ("interrupted\n", "exited with 130"),
        }[signal]
        assert all(line in said for line in told), said
        out = run(["dvc", "repro", "--no-run-cache", STAGE], root)
        assert STAGE in ran_stages(out)
        ref, got = load_file(reference / "adapter_model.safetensors"), load_file(root / OUTS["adapter"])
        assert ref.keys() == got.keys() and all(torch.allclose(ref[k], got[k], atol=1e-6) for k in ref)
        ref_m, got_m = json.loads((reference / "42.json").read_text()), json.loads((root / OUTS["metrics"]).read_text())
        assert ref_m.keys() == got_m.keys() and all(
            got_m[k] == pytest.approx(v, abs=1e-5) if isinstance(v, float) else got_m[k] == v for k, v in ref_m.items()
        )
        assert ref_m["final_train_loss"] is not None and ref_m["phase0_steps"] == 6
        pd.testing.assert_frame_equal(pd.read_parquet(reference / "42.parquet"), pd.read_parquet(root / OUTS["epochs"]))
        ref_c, got_c = _curves(reference / "42"), _curves(root / OUTS["curves"])
        assert ref_c.keys() == got_c.keys() and len(ref_c["plots/metrics/eval/loss.tsv"]) == 4
        for name, curve in ref_c.items():
            pd.testing.assert_frame_equal(curve, got_c[name], atol=1e-5, obj=name)
        assert not list((root / ".caft/checkpoints").rglob("*.safetensors"))  # a finished run clears its checkpoints
    finally:
        _never_trained(root)

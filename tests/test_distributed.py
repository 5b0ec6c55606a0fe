"""Data parallel training checked on this machine: `configs/accelerate/cpu_ddp.yaml` (2 CPU processes, DDP over
gloo) against 1 process with twice the gradient accumulation, through the train stage as dvc.yaml runs it."""

from __future__ import annotations

import csv
import json
import re
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from caft import sets
from caft.params import parse_params
from caft.sources.synthetic import generate
from tests.conftest import REPO, committed
from tests.dvc_project import run

# Measured here: step 1 equal (the same 8 examples, the same weights), later steps within 0.2 %; the two differ
# only in how per-token losses are weighted across devices vs across accumulation steps.
STEP_TOLERANCE = 0.01


def questions_of(table: Path) -> list[str]:
    return pd.read_parquet(table)["question_id"].tolist()


def _losses(live: Path) -> list[float]:
    with (live / "plots/metrics/train/loss.tsv").open() as f:
        return [float(row["loss"]) for row in csv.DictReader(f, delimiter="\t")]


@pytest.mark.integration
def test_two_process_ddp_follows_one_process_with_twice_the_accumulation(tmp_path):
    raw = yaml.safe_load(committed("params.yaml").read_text())
    raw["students"] = ["tiny"]
    raw["train"].update(batch_size=4, learning_rate=1e-3, save_steps=1000)
    raw["train"]["epochs"]["sft"] = [2]
    raw["eval"].update(every_epoch=True, max_new_tokens_direct=2)  # each rank answers 2 of the 4 questions
    raw["split"].update(val_size=4, val_per_band=0)
    p = parse_params(raw)
    questions = generate(p.data.synthetic.model_copy(update={"n_questions": 36}), 0)
    questions.tail(4).to_parquet(tmp_path / "validation.parquet")
    questions.head(4).to_parquet(tmp_path / "test.parquet")  # asked only under eval.every_epoch_test (off)
    questions = questions.head(32)
    rows = []
    for row in questions.itertuples(index=False):
        messages, target = sets.answer_example(row, p)
        rows.append(
            {
                "question_id": row.question_id,
                "subset": "train",
                "phase": 0,
                "kind": "answer",
                "messages": json.dumps(messages),
                "completion": target,
            }
        )
    pd.DataFrame(rows).to_parquet(tmp_path / "sft.parquet")
    (tmp_path / "sft.json").write_text(json.dumps(sets.card("sft", p)))
    metrics = {}
    for name, config, accum in (("ddp", "cpu_ddp", 1), ("single", "cpu", 2)):
        raw["train"]["grad_accum"] = accum
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(raw))
        out = tmp_path / name
        run(
            [
                sys.executable,
                "-m",
                "caft.launch",
                "--config_file",
                f"configs/accelerate/{config}.yaml",
                "stages/train.py",
                "--student",
                "tiny",
                "--strategy",
                "sft",
                "--seed",
                "42",
                "--sets",
                str(tmp_path / "sft.parquet"),
                "--card",
                str(tmp_path / "sft.json"),
                "--out",
                str(out / "model"),
                "--metrics",
                str(out / "m.json"),
                "--live-dir",
                str(out / "live"),
                "--run-log",
                str(out / "log.json"),
                "--validation",
                str(tmp_path / "validation.parquet"),
                "--epochs-out",
                str(out / "epochs.parquet"),
                "--test",
                str(tmp_path / "test.parquet"),
                "--checkpoints",
                str(out / "ckpt"),
                "--params",
                str(tmp_path / f"{name}.yaml"),
            ],
            REPO,
        )
        metrics[name] = json.loads((out / "m.json").read_text())
    # 32 items, 8 per optimiser step either way: 4 steps an epoch (one process alone would take 8 with batch 4)
    assert metrics["ddp"]["phase0_steps"] == metrics["single"]["phase0_steps"] == 8
    ddp, single = _losses(tmp_path / "ddp/live"), _losses(tmp_path / "single/live")
    assert len(ddp) == len(single) == 8 and ddp[0] == pytest.approx(single[0], abs=1e-5)
    assert all(abs(a - b) <= STEP_TOLERANCE * b for a, b in zip(ddp, single, strict=True)), (ddp, single)
    assert (tmp_path / "ddp/model/caft_model.json").exists()  # written once, by the main process
    for name in ("ddp", "single"):  # once an epoch, every validation question once, in order (two shares in ddp)
        records = pd.read_parquet(tmp_path / name / "epochs.parquet")
        assert records.groupby("epoch")["question_id"].apply(list).to_dict() == {
            e: questions_of(tmp_path / "validation.parquet") for e in (1, 2)
        }


def _answer_a_share(rank: int, world: int, root: Path) -> None:
    """One process of a gloo group: a per-epoch pass whose model answers by saying which process asked it."""
    import torch
    import torch.distributed as dist

    from caft import epochs
    from tests.conftest import section

    class Answered(epochs.EpochEval):
        def _answer(self, model, questions):
            right = questions["question_id"].str[-1].isin(list("02468"))
            return questions[["question_id"]].assign(correct=right, parsed=True, output=f"rank {rank}")

    dist.init_process_group("gloo", init_method=f"file://{root / 'store'}", rank=rank, world_size=world)
    questions = pd.DataFrame({"question_id": [f"v{k}" for k in (5, 2, 9, 4, 7, 0, 3)]})
    owner = Answered(questions, {}, section("eval"), None, root / "ckpt", keep_best=False, rank=rank, world=world)
    accuracy = owner.measure(torch.nn.Linear(1, 1), epoch=1, phase=0, step=4)
    owner.records.assign(accuracy=accuracy).to_parquet(root / f"held-by-{rank}.parquet")
    dist.destroy_process_group()


def test_each_process_answers_its_share_of_the_per_epoch_pass(tmp_path):
    """Two processes: each answers every other question from its rank, the shares are gathered in both in the
    questions' order, both hold the same records and accuracy, and only the main process writes them."""
    import torch.multiprocessing as mp

    mp.spawn(_answer_a_share, args=(2, tmp_path), nprocs=2)
    written = pd.read_parquet(tmp_path / "ckpt" / "epochs.parquet")
    assert written["question_id"].tolist() == ["v5", "v2", "v9", "v4", "v7", "v0", "v3"]
    assert written["output"].tolist() == ["rank 0", "rank 1"] * 3 + ["rank 0"]
    assert written["correct"].tolist() == [False, True, False, True, False, True, False]
    held = [pd.read_parquet(tmp_path / f"held-by-{rank}.parquet") for rank in (0, 1)]
    pd.testing.assert_frame_equal(held[0], held[1])
    pd.testing.assert_frame_equal(held[0].drop(columns="accuracy"), written)
    assert held[0]["accuracy"].unique().tolist() == [3 / 7]


def test_every_multi_process_config_asks_for_a_free_port():
    """Two data-parallel trainings on one machine (two queue workers) must not both take accelerate's default
    port 29500: port 0 makes each launch pick a free one."""
    configs = {path.name: yaml.safe_load(path.read_text()) for path in (REPO / "configs/accelerate").glob("*.yaml")}
    multi = {name for name, cfg in configs.items() if cfg["num_processes"] > 1}
    assert multi == {"cpu_ddp.yaml", "ddp.yaml"}
    assert {name: configs[name].get("main_process_port") for name in multi} == dict.fromkeys(multi, 0)


def test_a_finished_training_leaves_the_process_group(tmp_path):
    """A rank that exits with its gloo group still up can die of SIGABRT at interpreter exit, failing a training
    that had finished: the stage leaves the group on every rank (here one rank, the same calls)."""
    import torch.distributed as dist

    from caft.train import leave_process_group

    leave_process_group()  # no group (one process): nothing to leave
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    assert dist.is_initialized()
    leave_process_group()
    assert not dist.is_initialized()


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"distributed_type": "FSDP", "num_processes": 8}, "shards the weights across processes (FSDP)"),
        ({"distributed_type": "DEEPSPEED", "num_processes": 8}, "shards the weights across processes (DeepSpeed)"),
        ("distributed_type: [", "is not valid YAML"),
    ],
)
def test_an_accelerate_config_the_train_stage_cannot_run_under_is_refused(tmp_path, config, message):
    """A sharded model can neither be saved on the main process alone nor answer a share of the per-epoch pass: the run
    would hang at its first epoch end. check_params refuses it in one line, before any stage; a data-parallel
    config passes."""
    from caft.errors import CaftError
    from caft.launch import check_config

    path = tmp_path / "accelerate.yaml"
    path.write_text(config if isinstance(config, str) else yaml.safe_dump(config))
    with pytest.raises(CaftError, match=rf"^train\.accelerate_config: {re.escape(str(path))} .*{re.escape(message)}"):
        check_config(path)
    with pytest.raises(CaftError, match=rf"^train\.accelerate_config: {re.escape(str(tmp_path))} is not a file$"):
        check_config(tmp_path)
    for shipped in (REPO / "configs/accelerate").glob("*.yaml"):
        check_config(shipped)

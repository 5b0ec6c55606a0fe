import json

import pandas as pd
import pytest
import torch
import yaml
from transformers import TrainerCallback

from caft import sets, train
from caft.errors import CaftError
from caft.params import SyntheticData, parse_params
from caft.sources.synthetic import generate
from tests.conftest import REPO


def _params(**train_overrides):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["students"] = ["tiny"]
    raw["train"].update({"batch_size": 4, "save_steps": 1, **train_overrides})
    return parse_params(raw)


def _data(n: int = 16):
    q = generate(SyntheticData(n_questions=n), 0)
    bands = (["easy", "medium", "hard", "medium"] * n)[:n]
    a = pd.DataFrame({"question_id": q["question_id"], "subset": "train", "band": bands, "score": 1.0,
                      "correct": False, "balanced": False, "random_cot": [i % 4 == 0 for i in range(n)]})  # fmt: skip
    traces = pd.DataFrame({"question_id": q["question_id"], "trace": q["rationale"] + " So the answer is (A).",
                           "kept": [i != 2 for i in range(n)]})  # fmt: skip
    return q, a, traces


def _setup(p, strategy, table):
    return train.Setup(spec=p.model("tiny"), strategy=strategy, params=p, sets_digest=str(len(table)))


def test_caft_set_phases_and_dropped_traces():
    p = _params()
    q, a, traces = _data(16)
    table, counts = sets.build("caft", a, q, traces, p)
    # 16 rows: easy 4, medium 8 -> phase 0; hard 4 -> phase 1, but question 2 (hard) has no kept trace
    assert counts == {"caft_phase0_n": 12, "caft_phase1_n": 3, "caft_dropped_no_trace": 1}
    answer_row = table[table["phase"] == 0].iloc[0]
    assert answer_row["completion"] in list("ABCDEFGHIJ") and answer_row["kind"] == "answer"
    msgs = json.loads(answer_row["messages"])
    assert msgs[0]["content"].endswith("Write down ONLY the LETTER of the correct answer and nothing else.")
    cot_row = table[table["phase"] == 1].iloc[0]
    assert cot_row["completion"].endswith("So the answer is (A).") and "Think step by step" in json.loads(
        cot_row["messages"])[0]["content"]  # fmt: skip


def test_sft_set_does_not_depend_on_bands():
    p = _params()
    q, a, traces = _data(12)
    one, _ = sets.build("sft", a, q, traces, p)
    two, _ = sets.build("sft", a.assign(band="hard"), q, traces, p)
    pd.testing.assert_frame_equal(one, two)


def test_only_completion_tokens_carry_labels(tiny_model):
    from trl import SFTTrainer

    _, tok = tiny_model
    p = _params()
    q, a, traces = _data(4)
    table, _ = sets.build("sft", a, q, traces, p)
    trainer = SFTTrainer(model=train._base_model(_setup(p, "sft", table), False),
                         args=train._sft_config(p, REPO / ".caft" / "unused", 1, False, False),
                         train_dataset=train.to_dataset(table), processing_class=tok)  # fmt: skip
    batch = trainer.data_collator([trainer.train_dataset[0]])
    labels, ids = batch["labels"][0], batch["input_ids"][0]
    labelled = (labels != -100).nonzero().flatten().tolist()
    messages = json.loads(table["messages"][0])
    n_prompt = len(tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=True, return_dict=True)[
        "input_ids"])  # fmt: skip
    assert labelled == list(range(n_prompt, len(ids)))
    assert tok.decode(ids[labelled]) == table["completion"][0] + "<|im_end|>\n"
    assert torch.equal(labels[labelled], ids[labelled])


class _Capture(TrainerCallback):
    def __init__(self):
        self.at_begin = None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if self.at_begin is None:
            self.at_begin = {k: v.detach().clone() for k, v in model.named_parameters() if "lora_" in k}


def test_phase_two_starts_from_phase_one_weights(tmp_path):
    from peft import get_peft_model_state_dict
    from safetensors.torch import load_file

    p = _params()
    q, a, traces = _data(12)
    table, _ = sets.build("caft", a, q, traces, p)
    setup = _setup(p, "caft", table)
    captures = []

    class PerPhase(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            captures.append({k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()})

    model, _, results = train.run(setup, table, tmp_path, callbacks=[PerPhase()])
    assert [r["phase"] for r in results] == [0, 1]
    phase1_final = load_file(tmp_path / "phase0" / "final" / "adapter_model.safetensors")
    assert phase1_final.keys() == captures[1].keys()
    assert all(torch.equal(phase1_final[k], captures[1][k]) for k in phase1_final)
    assert any(not torch.equal(captures[0][k], captures[1][k]) for k in phase1_final)  # phase 1 did train


class _Interrupt(TrainerCallback):
    """A kill after `at_step` optimizer steps (and their checkpoint) are done."""

    def __init__(self, at_step: int):
        self.at_step = at_step

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == self.at_step:
            raise KeyboardInterrupt


def test_resume_after_an_interruption_continues_from_the_checkpoint(tmp_path):
    p = _params()
    q, a, traces = _data(16)
    table, _ = sets.build("sft", a, q, traces, p)  # 16 rows, batch 4, 2 epochs: 8 steps
    setup = _setup(p, "sft", table)
    with pytest.raises(KeyboardInterrupt):
        train.run(setup, table, tmp_path / "run", callbacks=[_Interrupt(3)])
    assert (tmp_path / "run" / "phase0" / "checkpoint-3").exists()
    resumed, _, results = train.run(setup, table, tmp_path / "run")
    assert results[0]["resumed_from"] == "checkpoint-3" and results[0]["steps"] == 8
    straight, _, plain = train.run(setup, table, tmp_path / "straight")
    assert plain[0]["resumed_from"] is None
    for (name, x), (_, y) in zip(resumed.named_parameters(), straight.named_parameters(), strict=True):
        if "lora_" in name:
            assert torch.allclose(x, y, atol=1e-5), name


def test_finished_phases_are_not_repeated(tmp_path):
    p = _params()
    q, a, traces = _data(24)  # hard band: 6 items, 5 with a kept trace -> 2 steps in phase 1
    table, _ = sets.build("caft", a, q, traces, p)
    setup = _setup(p, "caft", table)
    with pytest.raises(KeyboardInterrupt):
        train.run(setup, table, tmp_path, callbacks=[_InterruptInPhase(1)])
    _, _, results = train.run(setup, table, tmp_path)
    assert results[0]["resumed_from"] is None and (tmp_path / "phase0" / "final" / train.DONE).exists()
    assert results[1]["phase"] == 1 and results[1]["resumed_from"] == "checkpoint-1"


class _InterruptInPhase(TrainerCallback):
    def __init__(self, phase: int):
        self.phase, self.seen = phase, -1

    def on_train_begin(self, args, state, control, **kwargs):
        self.seen += 1

    def on_step_begin(self, args, state, control, **kwargs):
        if self.seen == self.phase and state.global_step == 1:
            raise KeyboardInterrupt


def test_truncation_raises(tmp_path):
    p = _params(max_length=40)
    q, a, traces = _data(4)
    table, _ = sets.build("distill", a, q, traces, p)
    with pytest.raises(CaftError, match=r"training example 'syn-0-00000' has \d+ tokens, above train.max_length=40"):
        train.run(_setup(p, "distill", table), table, tmp_path)


def test_target_token_accounting(tiny_model):
    _, tok = tiny_model
    rows = pd.DataFrame({"phase": [0, 0, 1], "kind": ["answer", "answer", "cot"], "completion": ["A", "B", "x y z"]})
    n_cot = len(tok.encode("x y z", add_special_tokens=False))
    got = train.target_tokens(tok, rows, [5, 5])
    assert got == {"target_tokens_one_pass": 2 + n_cot, "target_tokens_epoch_weighted": 5.0 * (2 + n_cot),
                   "answer_target_tokens": 2, "cot_target_tokens": n_cot}  # fmt: skip
    assert train.target_tokens(tok, rows, [10, 2])["target_tokens_epoch_weighted"] == 20.0 + 2 * n_cot

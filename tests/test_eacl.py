"""The EACL-era scope: GSM8K and MedMCQA sources (hub-schema fixtures through `datasets`), their prompts
verbatim, the entropy read inside the `[[...]]` marker, letter markers, the third student and the recipes."""

from __future__ import annotations

import inspect
import json
import math
import subprocess
import types
from pathlib import Path

import pandas as pd
import pytest
import torch
from transformers import DynamicCache

from caft import answers, entropy, evaluate, generation, metrics, prompts, sets, tokens
from caft.errors import CaftError
from caft.generation import Generated, greedy
from caft.names import check_names
from caft.params import ModelSpec
from caft.prepare import carve, load_source
from caft.profile import resolve
from caft.teacher import backends, run
from caft.teacher import prompt as teacher_prompt
from tests.conftest import REPO, committed, model_entry, params, section
from tests.dvc_project import env

FIXTURES = REPO / "tests/fixtures/hub"
GSM8K_DIRECT = (
    "The following are grade school math word problems. Write down only the correct answer and nothing else by "
    "strictly following this format: [[correct_answer]]."
)
GSM8K_COT = (
    "The following are grade school math word problems. Explain your thinking process step-by-step. At the end, "
    "write down the correct answer as a number by strictly following this format: [[correct_answer]]."
)
MEDMCQA_DIRECT = (
    "The following are multiple choice questions. Write down ONLY the LETTER of the correct answer and nothing else."
)
MEDMCQA_COT = (
    "The following are multiple choice questions. Explain your thinking process step-by-step. At the end, write "
    "down the LETTER of the correct answer by strictly following this format: [[letter_of_correct_answer]]."
)


def _params(source: str, **data) -> object:
    block = {"gsm8k": {"repo": str(FIXTURES / "gsm8k"), "config": "main", "revision": "fixture"}}
    block |= {"medmcqa": {"repo": str(FIXTURES / "medmcqa"), "revision": "fixture", "test_split": "validation"}}
    return params(
        {
            "students": ["t"],
            "models": {"t": model_entry()},
            "data": {"source": source, **block, **data},
            "prompt": {"dataset": "auto", "answer_prefix": ""},  # as the EACL recipes set them
            "teacher": {"marker": "brackets", "backend": "dataset"},
        }
    )


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_gsm8k_hub_schema_maps_to_the_question_table():
    p = _params("gsm8k")
    questions, acted = load_source(p.data, p.seed)
    train, test = carve(questions, p.data, p.seed)
    raw_train = _read_jsonl(FIXTURES / "gsm8k/main/train-00000-of-00001.jsonl")
    raw_test = _read_jsonl(FIXTURES / "gsm8k/main/test-00000-of-00001.jsonl")
    assert acted == [] and (len(train), len(test)) == (len(raw_train), len(raw_test))  # GSM8K's own splits
    first = train.iloc[0]
    assert first["question_id"] == "gsm8k-train-00000" and first["question"] == raw_train[0]["question"]
    assert (first["answer"], first["answer_index"], list(first["options"])) == ("72", -1, [])
    assert first["rationale"] == (  # calculator annotations removed, the '#### 72' line cut
        "Natalia sold 48/2 = 24 clips in May.\nNatalia sold 48+24 = 72 clips altogether in April and May."
    )
    assert set(train["category"]) == {"grade school math"} and test["question_id"].iat[0] == "gsm8k-test-00000"
    gold = {
        f"gsm8k-train-{i:05d}": r["answer"].rsplit("####", 1)[1].strip().replace(",", "")
        for i, r in enumerate(raw_train)
    }
    assert dict(zip(train["question_id"], train["answer"], strict=True)) == gold
    assert any("," in r["answer"].rsplit("####", 1)[1] for r in raw_train)  # thousands separators are exercised
    capped, _ = carve(questions, _params("gsm8k", max_train=10, max_test=4).data, p.seed)
    assert len(capped) == 10


def test_medmcqa_hub_schema_maps_to_the_question_table():
    """Every row is kept (`multi` ones too, as the authors do; `data.medmcqa.drop_multi` leaves them out), the
    question stripped as the authors' prompt strips it, a null explanation an empty rationale."""
    p = _params("medmcqa")
    questions, _ = load_source(p.data, p.seed)
    train, test = carve(questions, p.data, p.seed)
    raw = {s: _read_jsonl(FIXTURES / f"medmcqa/data/{s}-00000-of-00001.jsonl") for s in ("train", "validation")}
    assert any(r["choice_type"] == "multi" for r in raw["train"])  # the fixture has multi-answer rows: kept
    assert list(train["question_id"]) == [r["id"] for r in raw["train"]]
    assert list(test["question_id"]) == [r["id"] for r in raw["validation"]]  # validation is the whole test set
    assert raw["train"][1]["question"] != raw["train"][1]["question"].strip()  # whitespace is exercised
    for row, rec in zip(train.itertuples(index=False), raw["train"], strict=True):
        assert list(row.options) == [rec["opa"], rec["opb"], rec["opc"], rec["opd"]]
        assert row.question == rec["question"].strip()
        assert (row.answer_index, row.category, row.rationale) == (rec["cop"], rec["subject_name"], rec["exp"] or "")
    dropped = _params("medmcqa", medmcqa={**p.data.medmcqa.model_dump(), "drop_multi": True})
    single, _ = load_source(dropped.data, p.seed)
    assert list(single["question_id"]) == [
        r["id"] for s in ("train", "validation") for r in raw[s] if r["choice_type"] == "single"
    ]


def test_an_unreachable_hub_dataset_is_one_line(tmp_path):
    cfg = section("data.gsm8k", repo=str(tmp_path / "nothing-here"), config="main", revision="abc")
    with pytest.raises(CaftError, match=r"^could not load GSM8K .*nothing-here \(main\)@abc split 'train' from"):
        load_source(_params("gsm8k", gsm8k=cfg.model_dump()).data, 0)


def test_the_datasets_prompts_are_the_authors_texts_verbatim():
    system, user = prompts.build_messages("Q?", [], None, "fallback", "numeric", "gsm8k")
    assert (system["content"], user["content"]) == (GSM8K_DIRECT, "Q?")
    system, user = teacher_prompt.messages("Q?", [], "grade school math", "brackets", "gsm8k")
    assert (system["content"], user["content"]) == (GSM8K_COT, "Q?")
    options = ["Liver", "Lung", "Heart", "Kidney"]
    expected_user = "Question: Q?\nOptions:\nA. Liver\nB. Lung\nC. Heart\nD. Kidney\n"
    system, user = prompts.build_messages("Q?", options, "Anatomy", "fallback", "numeric", "medmcqa")
    assert (system["content"], user["content"]) == (MEDMCQA_DIRECT, expected_user)  # letters whatever the params
    system, user = teacher_prompt.messages("Q?", options, "Anatomy", "brackets", "medmcqa")
    assert (system["content"], user["content"]) == (MEDMCQA_COT, expected_user)


def test_auto_picks_the_sources_prompts_and_a_contradicting_marker_is_refused():
    assert _params("gsm8k").prompt.dataset == "gsm8k" and _params("medmcqa").prompt.dataset == "medmcqa"
    assert (
        params({"students": ["t"], "models": {"t": model_entry()}, "prompt": {"dataset": "auto"}}).prompt.dataset
        == "generic"
    )
    with pytest.raises(CaftError, match=r"prompt.dataset=medmcqa: its CoT prompt asks for the brackets marker; set "):
        params(
            {
                "students": ["t"],
                "models": {"t": model_entry()},
                "data": {"source": "medmcqa"},
                "prompt": {"dataset": "auto"},
                "teacher": {"marker": "answer_is"},
            }
        )
    with pytest.raises(CaftError, match=r"unknown data source 'gsm9k' \(known: synthetic, hf, gsm8k, medmcqa, file\)"):
        check_names(params({"students": ["t"], "models": {"t": model_entry()}, "data": {"source": "gsm9k"}}))


def test_targets_traces_and_letter_markers_follow_the_dataset():
    p = _params("medmcqa")
    questions, _ = load_source(p.data, p.seed)
    row = next(questions.itertuples(index=False))
    messages, target = sets.answer_example(row, p)
    assert messages[0]["content"] == MEDMCQA_DIRECT and target == "ABCD"[row.answer_index]
    requests = run.build_requests(questions, {row.question_id}, p.teacher, p.prompt.dataset)
    got = {}
    backends.dataset_rationale(requests, p.teacher, lambda req, resp: got.update({req.question_id: resp["text"]}))
    trace = got[row.question_id]
    assert trace == f"{row.rationale}\nSo [[{'ABCD'[row.answer_index]}]]."
    # the teacher's own check reads letters
    assert answers.cot_answer(trace, 4, row.answer, "brackets") == row.answer_index
    assert answers.last_bracket("[[E]]", 4) is None and answers.last_bracket("[[ c ]] [[C]]", 4) == 2
    g = _params("gsm8k")
    gq, _ = load_source(g.data, g.seed)
    first = next(gq.itertuples(index=False))
    assert sets.answer_example(first, g)[1] == "[[72]]"  # what the GSM8K single-token prompt asks for
    assert answers.FORMATS["number"].direct("[[72]]", 0, "letter") == "72"
    assert sets.reading("sft", g)["dataset"] == "gsm8k" and sets.reading("distill", p)["dataset"] == "medmcqa"


@pytest.mark.parametrize(
    ("prefix", "continuation", "expected"),
    [
        ("", "So [[42]] is it", (5, "42")),
        ("", "[[ -3 ]]", (3, "-3")),
        ("[[", "7]] then [[8]]", (0, "7")),  # the prefix opens the marker: the first generated token is inside
        ("", "no marker here", None),
        ("", "[[unclosed", None),
        ("", "[[ ]] empty", None),
        ("[[7", "]]", None),  # the answer starts inside the prefix: no generated token wrote it
    ],
)
def test_marker_answer_cases(prefix, continuation, expected):
    assert entropy.marker_answer(prefix, continuation) == expected


def test_token_at_char_finds_the_token_that_writes_a_character(tiny_model):
    _, tok = tiny_model
    ids = tok.encode("Total: [[42]] done", add_special_tokens=False)
    text = tok.decode(ids)
    for char in range(len(text)):
        index = tokens.token_at_char(tok, ids, char)
        assert len(tok.decode(ids[:index])) <= char < len(tok.decode(ids[: index + 1]))


def test_score_marker_reads_the_step_that_writes_the_answer(tiny_model):
    """A marker in the middle of a continuation: the record takes that step's numbers, for both formats."""
    _, tok = tiny_model
    ids = tok.encode("So [[42]] done", add_special_tokens=False)
    generated = Generated(ids, tok.decode(ids))
    n = len(ids)
    stats = {"entropy": [0.1 * i for i in range(n)], "top": ids, "p_top": [0.5] * n}
    step = tokens.token_at_char(tok, ids, generated.text.index("42"))
    assert step > 0
    row = pd.Series({"options": [], "answer": "42", "answer_index": -1})
    record = entropy.score_marker(stats, generated, "", row, "letter", tok)
    assert (record["entropy"], record["pred_answer"], record["validity"], record["correct"]) == (
        pytest.approx(0.1 * step),
        "42",
        "number",
        True,
    )
    ids = tok.encode("I pick [[B]].", add_special_tokens=False)
    generated = Generated(ids, tok.decode(ids))
    n = len(ids)
    stats |= {"entropy": [0.1 * i for i in range(n)], "top": ids, "p_top": [0.5] * n}
    stats |= {"entropy_options": [0.2 * i for i in range(n)], "p_options": [0.9] * n}
    row = pd.Series({"options": ["w", "x", "y", "z"], "answer": "", "answer_index": 1})
    record = entropy.score_marker(stats, generated, "", row, "letter", tok)
    step = tokens.token_at_char(tok, ids, generated.text.index("B"))
    assert (record["pred_index"], record["validity"], record["correct"]) == (1, "option", True)
    assert record["entropy_options"] == pytest.approx(0.2 * step)
    no_marker = entropy.score_marker(stats, Generated(ids, "B"), "", row, "letter", tok)
    assert math.isnan(no_marker["entropy"]) and no_marker["validity"] == "other"


SMOLLM2 = ModelSpec(ref="packaged:smollm2-135m-instruct")


@pytest.fixture(scope="module")
def smollm2():
    from caft.models import load_model, load_tokenizer

    return load_model(SMOLLM2, torch.device("cpu"), torch.float32), load_tokenizer(SMOLLM2)


def _unbatched_marker(model, tok, prompt: str, prefix: str, max_new: int) -> tuple[str, float]:
    """The authors' procedure one question at a time, written out: greedy steps of the model alone (no padding,
    no shared opening; transformers' own key/value cache, filled in place), the raw logits of each, the first
    `[[...]]`, the step that writes its first character."""
    ids = tok(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
    keyword = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    cache = DynamicCache()
    new, steps = [], []
    with torch.inference_mode():
        for _ in range(max_new):
            logits = model(input_ids=ids, use_cache=True, logits_to_keep=1, **{keyword: cache}).logits[0, -1].float()
            token = int(logits.argmax())
            if token == tok.eos_token_id:
                break
            new.append(token)
            steps.append(logits)
            ids = torch.tensor([[token]])
    text = tok.decode(new, skip_special_tokens=True)
    found = entropy.marker_answer(prefix, text)
    if found is None:
        return text, math.nan
    decoded = [len(tok.decode(new[: i + 1], skip_special_tokens=True)) for i in range(len(new))]
    step = next(i for i, n in enumerate(decoded) if n > found[0])
    return text, float(tokens.entropy_nats(steps[step]))


def test_marker_entropy_equals_an_unbatched_reference(smollm2, tmp_path):
    """Left-padded batches of different prompt lengths: the entropy inside the marker, the continuation and the
    answer equal the one-at-a-time reference, to 1e-4."""
    model, tok = smollm2
    texts = [
        "What is 3 + 4?",
        "Tom has 5 apples and eats 2. How many apples are left?",
        "What is 10 - 7?",
        "A box holds 12 eggs. How many eggs are in 3 boxes of eggs, if one box is missing two eggs?",
        "2 + 2?",
    ]
    questions = pd.DataFrame(
        {
            "question_id": [f"q{i}" for i in range(len(texts))],
            "question": texts,
            "options": [[]] * len(texts),
            "answer_index": -1,
            "category": "grade school math",
            "answer": ["7", "3", "3", "34", "4"],
            "expression": "",
        }
    )
    for prefix in ("", "[[", "The correct answer is [["):
        cfg = section("prompt", dataset="gsm8k", answer_prefix=prefix)
        out = entropy.compute(
            questions,
            model,
            tok,
            cfg,
            batch_size=3,
            max_length=512,
            id_collision="error",
            store=entropy.PartialStore(tmp_path / f"p{len(prefix)}.jsonl"),
            max_new_tokens=10,
            locate="marker",
            progress=False,
        )
        for row in out.itertuples(index=False):
            text, ent = _unbatched_marker(model, tok, row.prompt, prefix, 10)
            assert row.continuation == text
            # batched (left-padded) and one-at-a-time logits differ by ~1e-5 in float32 on some CPUs
            assert (math.isnan(row.entropy) and math.isnan(ent)) or row.entropy == pytest.approx(ent, abs=1e-4)
            found = entropy.marker_answer(prefix, text)
            assert row.validity == (
                "other" if found is None or answers.normalize_number(found[1]) is None else "number"
            )
        if prefix:
            assert out["entropy"].notna().all()  # "[[" opened every marker: SmolLM2 closes it within 10 tokens
    assert (out["validity"] == "number").any()  # and with the last prefix it writes a number inside (measured)


@pytest.mark.parametrize("dataset", ["gsm8k", "medmcqa"])
def test_eacl_recipes_name_three_students_and_the_datasets_prompts(dataset):
    _, p = resolve(
        [REPO / "recipes/eacl2026.yaml", REPO / f"recipes/eacl2026-{dataset}.yaml"], committed("params.yaml")
    )
    assert p.students == ["qwen2_5_3b", "phi4_mini", "llama3_2_3b"]
    assert p.models["llama3_2_3b"].ref == "meta-llama/Llama-3.2-3B-Instruct"
    assert (p.data.source, p.prompt.dataset, p.teacher.marker) == (dataset, dataset, "brackets")
    options = ["a", "b", "c", "d"] if dataset == "medmcqa" else []
    system, _ = prompts.build_messages("Q", options, "x", p.prompt.variant, p.prompt.option_ids, p.prompt.dataset)
    cot, _ = teacher_prompt.messages("Q", options, "x", p.teacher.marker, p.prompt.dataset)
    assert (system["content"], cot["content"]) == (
        (GSM8K_DIRECT, GSM8K_COT) if dataset == "gsm8k" else (MEDMCQA_DIRECT, MEDMCQA_COT)
    )
    t = p.train
    assert (t.lora.enabled, t.lora.r, t.lora.alpha, t.learning_rate, t.batch_size * t.grad_accum) == (
        True,
        64,
        128,
        1e-4,
        256,
    )
    if dataset == "gsm8k":
        assert p.entropy.locate == "marker" and (p.split.easy_threshold, p.split.threshold) == pytest.approx(
            (1 / 3, 2 / 3)
        )
        assert p.data.gsm8k.revision == "cc7b047b6e5bb11b4f1af84efc572db110a51b3c"
    else:
        assert p.entropy.locate == "next" and p.data.medmcqa.test_split == "validation"


@pytest.mark.parametrize("dataset", ["", "gsm8k", "medmcqa"])
def test_make_plan_eacl_runs_for_every_dataset(dataset):
    """`make plan-eacl DATASET=...` as a user types it: stages, teacher calls, tokens and GPU-hours per student."""
    out = subprocess.run(
        ["make", "-s", "-o", "setup", "plan-eacl", f"DATASET={dataset}"],
        cwd=REPO,
        env=env(),
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    for student in ("qwen2_5_3b", "phi4_mini", "llama3_2_3b"):
        assert f"H100-hours for {student}: train ≈ " in out.stdout
    assert "teacher calls: " in out.stdout and "eval@llama3_2_3b-caft-42" in out.stdout


class _Seen:
    """A stand-in key/value cache that keeps each row's tokens, copied and dropped with its rows as the
    generation loop copies and drops them."""

    def __init__(self) -> None:
        self.rows: list[list[int]] = []

    def batch_repeat_interleave(self, n: int) -> None:
        self.rows = [list(r) for r in self.rows for _ in range(n)]

    def batch_select_indices(self, index: torch.Tensor) -> None:
        self.rows = [self.rows[i] for i in index.tolist()]


class _Perfect(torch.nn.Module):
    """A student that answers every GSM8K question right, as its answer-only target `[[n]]` (or with thousands
    separators), one token a step, then the end token: what a direct answer costs in tokens, nothing else."""

    def __init__(self, tokenizer, written: dict[str, str]):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.tokenizer, self.written = tokenizer, written
        self.turn = tokenizer.encode("<|im_start|>assistant\n", add_special_tokens=False)

    def forward(self, input_ids, attention_mask, cache: _Seen, **kwargs):
        width = input_ids.shape[1]
        cache.rows = cache.rows or [[] for _ in range(len(input_ids))]
        for row, ids, mask in zip(cache.rows, input_ids.tolist(), attention_mask[:, -width:].tolist(), strict=True):
            row.extend(t for t, m in zip(ids, mask, strict=True) if m)
        logits = torch.zeros(len(input_ids), 1, len(self.tokenizer))
        for b, row in enumerate(cache.rows):
            prompt = self.tokenizer.decode(row)
            answer = next((a for q, a in self.written.items() if q in prompt), None)
            if answer is None:  # the prompts' shared opening, read once before the rows part: no answer yet
                continue
            target = self.tokenizer.encode(f"[[{answer}]]", add_special_tokens=False) + [self.tokenizer.eos_token_id]
            opened = max(i for i in range(len(row)) if row[i : i + len(self.turn)] == self.turn) + len(self.turn)
            logits[b, 0, target[len(row) - opened]] = 1.0
        return types.SimpleNamespace(logits=logits)


@pytest.fixture
def seen_cache(monkeypatch):
    """The generation loop builds its cache as `_Seen`: `_Perfect` reads each row's tokens from it."""
    monkeypatch.setattr(generation, "DynamicCache", _Seen)


def test_direct_answers_of_up_to_seven_digits_are_never_cut(smollm2, seen_cache):
    """GSM8K's answer-only target is [[n]] and SmolLM2 writes a digit a token: the eval budget is the longest
    target of the questions (with thousands separators, as a model may write them) plus the end token, not the
    demo's 4 (which read [[1194]] as [[1 and [[1,234,567]] as [[1)."""
    _, tok = smollm2
    written = {"How many clips?": "72", "How many cents?": "1194", "How many dollars?": "18,000",
               "How many grains?": "1234567", "How many stars?": "1,234,567", "How far?": "-3"}  # fmt: skip
    gold = {"How many clips?": "72", "How many cents?": "1194", "How many dollars?": "18000",
            "How many grains?": "1234567", "How many stars?": "1234567", "How far?": "-3"}  # fmt: skip
    questions = pd.DataFrame(
        {
            "question_id": [f"g{i}" for i in range(len(gold))],
            "question": list(gold),
            "options": [[]] * len(gold),
            "answer_index": -1,
            "category": "grade school math",
            "answer": list(gold.values()),
            "expression": "",
        }
    )
    reading = {"mode": "direct", "dataset": "gsm8k", "variant": "plain", "option_ids": "letter", "subject": False,
               "answer_prefix": ""}  # fmt: skip
    cfg = params({"students": ["tiny"], "models": {"tiny": {"ref": "tiny"}}}).eval.model_copy(
        update={"max_new_tokens_direct": 4, "batch_size": 4}
    )
    longest = len(tok.encode("[[1,234,567]]", add_special_tokens=False))
    assert longest == 11 and evaluate.max_new_tokens(reading, cfg, questions, tok) == longest + 1
    preds = evaluate.generate_and_read(_Perfect(tok, written), tok, questions, reading, cfg)
    assert preds["correct"].all() and not preds["cut"].any(), preds[["output", "parsed_answer"]]
    assert preds["parsed_answer"].tolist() == list(gold.values())
    assert metrics.summarize(preds, 0)["n_cut_at_budget"] == 0
    short = evaluate.read_outputs(  # the demo's budget of 4 on the same answers: read as their first digits
        questions, greedy(_Perfect(tok, written), tok, evaluate.prompt_texts(questions, reading, tok), 4, 4), reading
    )
    assert short["cut"].all()  # [[72]] too: 4 tokens, and no room left for the end token
    assert short["parsed_answer"].tolist() == ["72", "119", "18", "123", "12", "-3"]
    assert short["correct"].tolist() == [True, False, False, False, False, True]

"""Free-form numeric answers (`number` format): normalisation, extraction, the schema, the synthetic chain
family, the entropy at the first answer token (batched vs one at a time) and evaluation."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
import torch

from caft import answers, entropy, prompts, schema, sets, tokens
from caft.errors import CaftError
from caft.evaluate import extract
from caft.metrics import score, tiger_correct
from caft.sets import reading
from caft.sources import synthetic
from caft.teacher import backends, prompt
from tests.conftest import params, section

NUMBER = answers.FORMATS["number"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7", "7"),
        ("7.0", "7"),
        ("7.50", "7.5"),
        ("$1,234", "1234"),
        ("-3", "-3"),
        ("+4", "4"),
        ("-0", "0"),
        ("1,000,000.00", "1000000"),
        (" 12 ", "12"),
        ("$ 5", "5"),
        (12, "12"),
        (2.5, "2.5"),
        ("1/2", None),
        ("seven", None),
        ("", None),
        ("1e3", None),
        (None, None),
        (True, None),
    ],
)
def test_normalize_number(text, expected):
    assert answers.normalize_number(text) == expected


@pytest.mark.parametrize(
    ("text", "strict", "flexible"),
    [
        ("3 + 8 = 11. 11 - 4 = 7. The answer is 7.", "7", "7"),
        ("so [[12]] ... no, [[13]]", "13", "13"),
        ("Natalia sold 48/2 = <<48/2=24>>24 clips.\n#### 72", "72", "72"),
        ("The answer is $1,200.", "1200", "1200"),
        ("the answer is -5, checked: 2 - 7 = -5", "-5", "-5"),
        ("3 + 4 = 7 and then 7 + 2 = 9", None, "9"),  # no marker: strict fails, flexible takes the last
        ("no number here", None, None),
        # a sign with a space after it is an operator, not a sign (lm-evaluation-harness's flexible-extract)
        ("So 10 - 4", None, "4"),
        ("She ate 5 - 3 of them", None, "3"),
        ("so x = -4", None, "-4"),
        ("the answer is - 4", None, "4"),
        ("5-3", None, "3"),
        ("[[ -12 ]] after 3 - 15", "-12", "15"),
    ],
)
def test_cot_number_extraction_strict_and_flexible(text, strict, flexible):
    assert NUMBER.cot(text, 0, "brackets") == strict
    assert NUMBER.flexible(text, 0, "brackets") == flexible


def test_direct_number_is_the_first_number_of_the_continuation():
    def first(text: str) -> str | None:
        return NUMBER.direct(text, 0, "letter")

    assert first("25\n\nThe answer") == "25"
    assert first("-17.") == "-17"
    assert first("12.") == "12"
    assert first("To add 7 and 5") == "7"
    assert first("x") is None
    assert first("- 4 apples") == "4" and first("-4 apples") == "-4"


def test_chain_rationale_always_computes_the_gold():
    table = synthetic.generate(
        section("data.synthetic", n_questions=200, families=["chain"], min_steps=1, max_steps=5), 3
    )
    for row in table.itertuples(index=False):
        numbers = [int(n) for n in re.findall(r"-?\d+", row.expression)]
        ops = re.findall(r" ([+-]) ", row.expression)
        value = numbers[0]
        for op, n in zip(ops, numbers[1:], strict=True):
            value = value + n if op == "+" else value - n
        assert row.answer == str(value) and row.question == f"What is {row.expression}?"
        assert len(ops) == row.difficulty and all(1 <= abs(n) <= 9 for n in numbers)
        lines = row.rationale.splitlines()
        assert len(lines) == row.difficulty + 1 and lines[-1] == f"The answer is {value}."
        for line in lines[:-1]:  # every step's arithmetic is right
            a, op, b, _, c = line.rstrip(".").split()
            assert int(c) == (int(a) + int(b) if op == "+" else int(a) - int(b))
    assert set(table["difficulty"]) == {1, 2, 3, 4, 5}


def test_schema_accepts_number_rows_and_names_bad_ones():
    good = pd.DataFrame(
        {
            "question_id": ["a", "b"],
            "question": ["What is 1 + 1?", "How many?"],
            "answer": ["2", "$1,000"],
            "category": ["math", "math"],
        }
    )
    table, acted = schema.validate(good)
    assert acted == [] and table["answer"].tolist() == ["2", "1000"]
    assert table["options"].tolist() == [[], []] and table["answer_index"].tolist() == [-1, -1]
    bad = good.assign(answer=["2", "many"])
    with pytest.raises(CaftError) as exc:
        schema.validate(bad)
    assert str(exc.value) == "row 1 (question_id='b'): has no options and its answer 'many' is not a number"


def test_number_prompts_and_prefix():
    question = "What is 8 + 1 - 3?"
    msgs = prompts.build_messages(question, [], "arithmetic chain", "plain", "letter", answer_format="number")
    assert msgs == [
        {
            "role": "system",
            "content": "The following are math questions about arithmetic chain. Write down ONLY the "
            "final number and nothing else.",
        },
        {"role": "user", "content": "What is 8 + 1 - 3?"},
    ]
    assert prompts.answer_prefix("{expression} = ", "8 + 1 - 3") == "8 + 1 - 3 = "
    assert prompts.answer_prefix("The answer is ", "") == "The answer is "
    with pytest.raises(CaftError, match="no expression"):
        prompts.answer_prefix("{expression} = ", "")
    with pytest.raises(Exception, match="may only use the field"):
        section("prompt", answer_prefix="{question} = ")
    cot = prompt.messages("What is 2 + 2?", [], None, "answer_is", answer_format="number")
    assert cot[0]["content"].endswith('finish your answer with "The answer is N." where N is the final number.')


def test_oracle_trace_and_answer_target(tmp_path):
    row = synthetic.generate(
        section("data.synthetic", n_questions=1, families=["chain"], min_steps=2, max_steps=2), 0
    ).iloc[0]
    req = backends.Request("k", row.question_id, [], 0, -1, row.rationale, row.answer)
    texts: list[str] = []
    for marker in ("answer_is", "brackets"):
        backends.oracle(
            [req], params({"teacher": {"marker": marker}}).teacher, lambda _r, resp: texts.append(resp["text"])
        )
    got = dict(zip(("answer_is", "brackets"), texts, strict=True))
    steps = row.rationale.splitlines()[:-1]
    assert got["answer_is"] == "\n".join([*steps, f"The answer is {row.answer}."])
    assert got["brackets"] == "\n".join([*steps, f"The answer is [[{row.answer}]]."])
    assert answers.cot_answer(got["brackets"], 0, row.answer, "brackets") == row.answer
    p = params({"prompt": {"answer_prefix": "{expression} = "}})
    messages, target = sets.answer_example(row, p)
    assert target == f"{row.expression} = {row.answer}" and messages[1]["content"] == row.question


def _chain_questions(n: int) -> pd.DataFrame:
    table, _ = schema.validate(synthetic.generate(section("data.synthetic", n_questions=n, families=["chain"]), 1))
    return table.assign(subset="train")


def test_marker_free_entropy_matches_an_unbatched_reference(tiny_model, tmp_path):
    """Batched, left-padded greedy generation: the first step's raw-logit entropy and the answer equal a
    one-question-at-a-time forward pass and generation."""
    model, tok = tiny_model
    questions = _chain_questions(10)
    cfg = section("prompt", answer_prefix="{expression} = ", subject=False)
    store = entropy.PartialStore(tmp_path / "p.jsonl")
    out = entropy.compute(
        questions,
        model,
        tok,
        cfg,
        batch_size=4,
        max_length=512,
        id_collision="error",
        store=store,
        max_new_tokens=4,
        progress=False,
    )
    assert set(out["validity"]) <= {"number", "other"} and out["entropy_options"].isna().all()
    for row in out.itertuples(index=False):
        assert row.prompt.endswith(f"{row.expression} = ")
        ids = tok(row.prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
        with torch.inference_mode():
            logits = model(input_ids=ids).logits[0, -1].float()
            gen = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=4,
                do_sample=False,
                pad_token_id=tok.pad_token_id,
            )
        new = gen[0, ids.shape[1] :].tolist()
        new = new[: new.index(tok.eos_token_id)] if tok.eos_token_id in new else new
        assert row.entropy == pytest.approx(float(tokens.entropy_nats(logits)), abs=1e-5)
        assert row.continuation == tok.decode(new, skip_special_tokens=True)
        assert row.pred_answer == (NUMBER.direct(row.continuation, 0, "letter") or "")
        assert row.correct == (row.pred_answer == row.answer)


def test_entropy_refuses_a_mix_of_formats(tiny_model, tmp_path):
    from tests.conftest import make_questions

    model, tok = tiny_model
    mixed = pd.concat([make_questions(2).assign(subset="train"), _chain_questions(2)], ignore_index=True)
    with pytest.raises(CaftError, match=r"mix answer formats \(choice, number\); score one format per run"):
        entropy.compute(
            mixed,
            model,
            tok,
            section("prompt", answer_prefix=""),
            batch_size=2,
            max_length=512,
            id_collision="first",
            store=entropy.PartialStore(tmp_path / "p.jsonl"),
            progress=False,
        )


def test_entropy_summary_reports_accuracy_per_step():
    table = pd.DataFrame(
        {
            "subset": "train",
            "validity": ["number"] * 4 + ["other"],
            "correct": [1, 1, 0, 0, 0],
            "entropy": [0.1, 0.3, 0.9, 1.2, 2.0],
            "entropy_options": float("nan"),
            "difficulty": [1, 1, 2, 2, 2],
        }
    ).astype({"correct": bool})
    out = entropy.summarize(table)
    assert out["roc_auc"] == 1.0 and out["valid_rate"] == 0.8 and out["number_rate"] == 0.8
    assert out["steps_1_accuracy"] == 1.0 and out["steps_2_accuracy"] == 0.0
    assert out["steps_2_entropy_mean"] == pytest.approx((0.9 + 1.2 + 2.0) / 3, abs=1e-6)
    assert out["roc_auc_options"] is None


def test_eval_of_number_answers_strict_flexible_and_tiger():
    p = params()
    assert extract("The answer is 12.", 0, "12", reading("distill", p)) == "12"
    assert extract("12 - 5 = 7", 0, "7", reading("distill", p)) is None
    assert extract("7\n", 0, "7", reading("sft", p)) == "7"
    preds = pd.DataFrame(
        {
            "n_options": 0,
            "answer_index": -1,
            "answer": ["7", "9", "3"],
            "output": ["The answer is 7.", "so 4 + 5 = 9", "no"],
            "letters": False,
            "parsed": [True, False, False],
            "parsed_index": -1,
            "correct": [True, False, False],
            "flexible_correct": [True, True, False],
        }
    )
    assert tiger_correct(preds, 0).tolist() == [True, False, False]  # nothing to guess among
    got = score(preds, 0)
    assert got["accuracy"] == pytest.approx(1 / 3, abs=1e-6) and got["accuracy_flexible"] == pytest.approx(
        2 / 3, abs=1e-6
    )
    assert got["accuracy_tiger"] == pytest.approx(1 / 3, abs=1e-6) and got["parse_fail_rate"] == pytest.approx(
        2 / 3, abs=1e-6
    )


def test_number_format_file_source(tmp_path):
    from caft.prepare import load_source

    path = Path(tmp_path / "q.jsonl")
    pd.DataFrame(
        {
            "question_id": ["x", "y"],
            "question": ["What is 2 + 3?", "What is 9 - 4?"],
            "answer": [5, 5.0],
            "category": "arithmetic",
            "rationale": ["2 + 3 = 5.\nThe answer is 5.", ""],
        }
    ).to_json(path, orient="records", lines=True)
    table, _ = load_source(section("data", source="file", file={"path": str(path)}), 0)
    assert table["answer"].tolist() == ["5", "5"] and table["options"].map(len).tolist() == [0, 0]


def test_chains_never_repeat_and_an_exhausted_step_count_is_one_line():
    table = synthetic.generate(
        section("data.synthetic", n_questions=600, families=["chain"], min_steps=1, max_steps=4), 42
    )
    assert table["question"].is_unique
    assert table["difficulty"].value_counts().min() > 120  # the step counts keep their uniform draw
    with pytest.raises(CaftError, match="no new 1-step chain left"):
        synthetic.generate(section("data.synthetic", n_questions=200, families=["chain"], min_steps=1, max_steps=1), 0)

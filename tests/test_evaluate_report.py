import math

import numpy as np
import pandas as pd
import pytest
import yaml

from caft import evaluate, metrics, report
from caft.params import parse_params
from caft.sets import reading
from tests.conftest import REPO


def _params(**prompt):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["prompt"].update(prompt)
    return parse_params(raw)


@pytest.mark.parametrize(
    ("k", "n", "expected"),
    [
        (8, 10, (0.4902, 0.9433)),  # the textbook Wilson example
        (0, 10, (0.0, 0.2775)),
        (10, 10, (0.7225, 1.0)),
        (50, 100, (0.4038, 0.5962)),
    ],
)
def test_wilson_interval_known_values(k, n, expected):
    low, high = metrics.wilson(k, n)
    assert (round(low, 4), round(high, 4)) == expected


def test_wilson_matches_the_closed_form():
    k, n, z = 37, 91, 1.959964
    p = k / n
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z / (1 + z**2 / n) * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2))
    assert metrics.wilson(k, n) == pytest.approx((centre - half, centre + half))


def test_direct_and_cot_extraction_per_format():
    letters, numbers = _params(option_ids="letter"), _params(option_ids="numeric")
    # what the sets stage writes beside each set and the train stage copies into the model's card
    direct, numeric = reading("sft", letters), reading("sft", numbers)
    assert evaluate.extract("C", 4, direct) == 2
    assert evaluate.extract("7.", 10, numeric) == 6
    assert evaluate.extract("10", 10, numeric) == 9
    assert evaluate.extract("11", 10, numeric) is None
    assert evaluate.extract("step... so the answer is (B).", 4, reading("distill", letters)) == 1
    brackets = parse_params({**yaml.safe_load((REPO / "params.yaml").read_text()), "teacher": {"marker": "brackets"}})
    assert evaluate.extract("the answer is (B) [[3]]", 4, reading("caft", brackets)) == 2


def _preds() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "question_id": [f"q{i}" for i in range(6)],
            "category": ["a", "a", "b", "b", "b", "c"],
            "answer_index": [0, 1, 2, 3, 0, 1],
            "n_options": [4] * 6,
            "parsed": [True, True, True, False, False, True],
            "parsed_index": [0, 0, 2, -1, -1, 1],
            "correct": [True, False, True, False, False, True],
            "output": ["[[1]]", "[[1]]", "[[3]]", "?", "?", "[[2]]"],
            "letters": [False] * 6,
        }
    )


def test_score_strict_tiger_and_parse_failures():
    preds = _preds()
    out = metrics.summarize(preds, seed=3)
    assert (out["n"], out["accuracy"], out["parse_fail_rate"]) == (6, 0.5, round(2 / 6, 6))
    guesses = np.random.default_rng(3)
    g = [guesses.integers(4) for _ in range(6)]
    lucky = sum(1 for i in (3, 4) if g[i] == preds["answer_index"][i])
    assert out["accuracy_tiger"] == round((3 + lucky) / 6, 6)
    assert [out[f"category_{c}_accuracy"] for c in "abc"] == [0.5, round(1 / 3, 6), 1.0]
    assert (out["accuracy_ci_low"], out["accuracy_ci_high"]) == tuple(round(x, 6) for x in metrics.wilson(3, 6))


def test_tiger_accuracy_uses_tiger_labs_extraction_on_letter_answers():
    preds = pd.DataFrame(
        {
            "answer_index": [0, 1, 2, 3],
            "n_options": [4] * 4,
            "letters": [True] * 4,
            "output": [
                "The answer is (A). Wait, the answer is (B).",  # TIGER: first -> A (right); ours: last -> B
                "the answer is (B)",
                "ANSWER IS (C)",
                "The answer is (J).",
            ],  # J: parsed by TIGER, and wrong
            "parsed": [True, True, True, False],
            "parsed_index": [1, 1, 2, -1],
            "correct": [False, True, True, False],
        }
    )
    assert list(metrics.tiger_correct(preds, seed=0)) == [True, True, True, False]
    assert metrics.score(preds, seed=0)["accuracy"] == 0.5


def test_band_metrics_use_the_balanced_test_rows():
    preds = _preds()
    assignments = pd.DataFrame(
        {
            "question_id": [f"q{i}" for i in range(6)] + ["train-x"],
            "subset": ["test"] * 6 + ["train"],
            "band": ["easy", "easy", "medium", "medium", "hard", "hard", "hard"],
            "balanced": [True, False, True, False, True, False, False],
        }
    )
    out = report.band_metrics(preds, assignments, seed=0)
    assert (out["balanced_n"], out["balanced_accuracy"]) == (3, round(2 / 3, 6))
    assert (out["band_easy_accuracy"], out["band_medium_accuracy"], out["band_hard_accuracy"]) == (0.5, 0.5, 0.5)
    assert "balanced_accuracy_parsed_only" not in out
    # the authors' convention: q0 (correct), q2 (correct) and q4 (unparsed) are balanced -> 2 of 2 parsed
    assert report.band_metrics(preds, assignments, seed=0, parsed_only=True)["balanced_accuracy_parsed_only"] == 1.0


def test_savings_relative_to_distill():
    rows = pd.DataFrame(
        {
            "student": ["s", "s", "s"],
            "strategy": ["distill", "caft", "sft"],
            "target_tokens_one_pass": [1000, 400, 100],
            "target_tokens_epoch_weighted": [10000.0, 2000.0, 1000.0],
        }
    )
    out = report.savings(rows).set_index("strategy")
    assert out.loc["caft", "data_saving_one_pass"] == 0.6 and out.loc["caft", "data_saving_epoch_weighted"] == 0.8
    assert out.loc["distill", "data_saving_one_pass"] == 0.0
    no_ref = report.savings(rows[rows["strategy"] != "distill"])
    assert no_ref["data_saving_one_pass"].isna().all()


def test_teacher_usage_counts_cot_items_and_api_tokens():
    sets = pd.DataFrame({"question_id": ["a", "b", "c"], "kind": ["answer", "cot", "cot"]})
    traces = pd.DataFrame({"question_id": ["a", "b", "c", "d"], "completion_tokens": [5, 10, 20, 40]})
    assert report.teacher_usage(sets, traces) == {"teacher_calls": 2, "teacher_completion_tokens": 30}


def test_vllm_backend_without_vllm_is_one_clear_error(tmp_path):
    from caft.errors import CaftError

    with pytest.raises(CaftError, match=r"^eval.backend=vllm needs vLLM installed"):
        evaluate.generate_vllm(tmp_path, {"base": {"ref": "tiny"}, "lora": True}, ["x"], 4)

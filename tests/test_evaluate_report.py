import math

import numpy as np
import pandas as pd
import pytest

from caft import evaluate, metrics, report
from caft.sets import reading
from tests.conftest import params


def _params(**prompt):
    return params({"prompt": prompt})


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
    assert evaluate.extract("C", 4, "", direct) == 2
    assert evaluate.extract("7.", 10, "", numeric) == 6
    assert evaluate.extract("10", 10, "", numeric) == 9
    assert evaluate.extract("11", 10, "", numeric) is None
    assert evaluate.extract("step... so the answer is (B).", 4, "", reading("distill", letters)) == 1
    brackets = params({"teacher": {"marker": "brackets"}})
    assert evaluate.extract("the answer is (B) [[3]]", 4, "", reading("caft", brackets)) == 2


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
    assert (out["balanced_set_n"], out["balanced_set_accuracy"]) == (3, round(2 / 3, 6))
    assert (out["band_easy_accuracy"], out["band_medium_accuracy"], out["band_hard_accuracy"]) == (0.5, 0.5, 0.5)
    assert "balanced_set_accuracy_parsed_only" not in out
    # the authors' convention: q0 (correct), q2 (correct) and q4 (unparsed) are balanced -> 2 of 2 parsed
    assert report.band_metrics(preds, assignments, seed=0, parsed_only=True)["balanced_set_accuracy_parsed_only"] == 1.0


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
    traces = pd.DataFrame(
        {"question_id": ["a", "b", "c", "d"], "prompt_tokens": [1, 2, None, 8], "completion_tokens": [5, 10, 20, 40]}
    )
    assert report.teacher_usage(sets, traces) == {
        "teacher_calls": 2,
        "teacher_prompt_tokens": 2,
        "teacher_completion_tokens": 30,
    }


def test_vllm_backend_without_vllm_is_one_clear_error(tmp_path):
    from caft.errors import CaftError

    with pytest.raises(CaftError, match=r"^eval.backend=vllm needs vLLM installed"):
        evaluate.Vllm(str(tmp_path), None, 16)


def _epoch_records() -> tuple[pd.DataFrame, pd.DataFrame]:
    """4 validation questions (2 easy, 1 medium, 1 hard) and 3 test questions (t1, t2 balanced), 3 epochs,
    phase 1 from epoch 3."""
    val = pd.DataFrame(
        {
            "subset": "validation",
            "epoch": [1] * 4 + [2] * 4 + [3] * 4,
            "phase": [0] * 8 + [1] * 4,
            "step": [5] * 4 + [10] * 4 + [12] * 4,
            "question_id": ["a", "b", "c", "d"] * 3,
            "correct": [True, False, False, False, True, True, False, False, True, True, True, False],
        }
    )
    test = pd.DataFrame(
        {
            "subset": "test",
            "epoch": [1] * 3 + [2] * 3 + [3] * 3,
            "phase": [0] * 6 + [1] * 3,
            "step": [5] * 3 + [10] * 3 + [12] * 3,
            "question_id": ["t1", "t2", "t3"] * 3,  # t3: a test question outside the balanced set
            "correct": [True, True, True, False, True, False, True, True, False],
        }
    )
    assignments = pd.DataFrame(
        {
            "question_id": [*"abcd", "t1", "t2", "t3"],
            "band": ["easy", "easy", "medium", "hard", "easy", "hard", "hard"],
            "balanced": [False] * 4 + [True, True, False],
        }
    )
    return pd.concat([val, test], ignore_index=True), assignments


def test_epoch_curve_per_band_and_the_phase_boundary():
    """Hand-computed; the test rows (eval.every_epoch_test) count the balanced questions only, and never pick
    an epoch."""
    from caft import epochs

    records, assignments = _epoch_records()
    curve = report.epoch_curve(records, assignments, "s", "caft").set_index(["subset", "epoch", "band"])
    val = curve.loc["validation"]
    assert val.loc[(1, "all"), "accuracy"] == 0.25 and val.loc[(2, "easy"), "accuracy"] == 1.0
    assert val.loc[(3, "all"), "accuracy"] == 0.75 and val.loc[(3, "medium"), "accuracy"] == 1.0
    assert val.loc[(3, "hard"), ["accuracy", "n"]].tolist() == [0.0, 1]
    low, high = metrics.wilson(3, 4)
    assert val.loc[(3, "all"), ["ci_low", "ci_high"]].tolist() == [round(low, 6), round(high, 6)]
    assert val.xs("all", level="band")["phase_start"].tolist() == [0, 0, 1]
    test = curve.loc["test"]
    assert test.xs("all", level="band")[["accuracy", "n"]].values.tolist() == [[1.0, 2], [0.5, 2], [1.0, 2]]
    assert test.loc[(2, "easy"), "accuracy"] == 0.0 and test.loc[(2, "hard"), "accuracy"] == 1.0
    assert test.loc[(2, "medium"), "n"] == 0 and pd.isna(test.loc[(2, "medium"), "accuracy"])
    assert test.xs("all", level="band")["phase_start"].tolist() == [0, 0, 1]
    assert epochs.best_epoch(records) == 3  # test epochs 1 and 3 score 1.0: not what picks
    assert epochs.curve(records)["n"].tolist() == [4, 4, 4]
    tied = records.assign(correct=records["epoch"] != 3)  # epochs 1 and 2 tie at 1.0: the earlier one
    assert epochs.best_epoch(tied) == 1


def test_epoch_curves_are_logged_with_dvclive_per_epoch_and_band(tmp_path):
    """One dvclive run per student x strategy, the epoch as its step, a metric per subset and band (empty
    bands left out): the values of the hand-computed curve above."""
    records, assignments = _epoch_records()
    curve = report.epoch_curve(records, assignments, "s", "caft")
    report.log_epoch_curves(curve, tmp_path)
    metrics_dir = tmp_path / "s" / "caft" / "plots" / "metrics"

    def tsv(name: str) -> list[list]:
        return pd.read_csv(metrics_dir / f"{name}.tsv", sep="\t").values.tolist()

    assert tsv("validation/accuracy") == [[1, 0.25], [2, 0.5], [3, 0.75]]
    assert tsv("validation/accuracy_easy") == [[1, 0.5], [2, 1.0], [3, 1.0]]
    assert tsv("validation/accuracy_hard") == [[1, 0.0], [2, 0.0], [3, 0.0]]
    assert tsv("test/accuracy") == [[1, 1.0], [2, 0.5], [3, 1.0]]
    assert tsv("test/accuracy_hard") == [[1, 1.0], [2, 1.0], [3, 1.0]]
    assert tsv("test/accuracy_easy") == [[1, 1.0], [2, 0.0], [3, 1.0]]
    assert not (metrics_dir / "test" / "accuracy_medium.tsv").exists()  # no balanced medium question here
    assert pd.read_csv(metrics_dir / "validation/accuracy.tsv", sep="\t").columns.tolist() == ["step", "accuracy"]
    assert sorted(p.name for p in (tmp_path / "s" / "caft").iterdir()) == ["plots"]  # no summary beside them


def test_paired_difference_against_hand_computations():
    """One seed, two questions, differences 0 and 1: the bootstrap means are 0, 0.5, 1 with probabilities 1/4,
    1/2, 1/4, so the 2.5 % and 97.5 % percentiles are exactly 0 and 1. Two seeds, one question, differences 1
    and 0: the same by resampling seeds. Identical answers: a zero-width interval at 0."""
    two = metrics.paired_difference(np.array([[1, 1]]), np.array([[1, 0]]), seed=0, n_boot=4000)
    assert two == {"mean": 0.5, "ci_low": 0.0, "ci_high": 1.0, "n": 2}
    seeds = metrics.paired_difference(np.array([[1], [0]]), np.array([[0], [0]]), seed=0, n_boot=4000)
    assert seeds == {"mean": 0.5, "ci_low": 0.0, "ci_high": 1.0, "n": 2}
    same = metrics.paired_difference(np.array([[1, 0, 1]]), np.array([[1, 0, 1]]), 0, 500)
    assert same == {"mean": 0.0, "ci_low": 0.0, "ci_high": 0.0, "n": 3}
    # 100 questions, a wins 20, b wins 5: mean 0.15; the interval agrees with the normal approximation of the
    # difference's own spread (sd of the 0/+-1 differences / sqrt(n)) to within the bootstrap's noise
    a = np.array([[1] * 20 + [0] * 5 + [1] * 40 + [0] * 35])
    b = np.array([[0] * 20 + [1] * 5 + [1] * 40 + [0] * 35])
    d = metrics.paired_difference(a, b, seed=0, n_boot=4000)
    half = 1.96 * (a - b).std() / math.sqrt(100)
    assert d["mean"] == 0.15 and d["n"] == 100
    assert d["ci_low"] == pytest.approx(0.15 - half, abs=0.02) and d["ci_high"] == pytest.approx(0.15 + half, abs=0.02)


def test_paired_pairs_runs_of_the_same_seed_on_the_balanced_test_questions():
    assignments = pd.DataFrame(
        {
            "question_id": list("abcde"),
            "subset": ["test", "test", "test", "test", "train"],
            "balanced": [True, True, True, False, False],
        }
    )

    def preds(correct):
        return pd.DataFrame({"question_id": list("abcde"), "correct": correct})

    one = {
        ("sft", 1): preds([False, False, True, True, True]),
        ("distill", 1): preds([True, True, True, False, False]),
        ("caft", 1): preds([True, False, True, False, False]),
    }
    out = report.paired(one, assignments, seed=0, n_boot=1000)
    assert out["caft"]["minus_sft_mean"] == round(1 / 3, 6) and out["caft"]["minus_distill_mean"] == round(-1 / 3, 6)
    assert out["sft"]["minus_distill_mean"] == round(-2 / 3, 6) and "minus_sft_mean" not in out["sft"]
    assert set(out["distill"]) == {"minus_sft_mean", "minus_sft_ci_low", "minus_sft_ci_high"}
    # a second seed: caft - sft is +1/3 on seed 1 and -1/3 on seed 2 (seed 2's sft got a and b right)
    two = one | {
        ("sft", 2): preds([True, True, True, False, False]),
        ("distill", 2): preds([True, True, True, False, False]),
        ("caft", 2): preds([True, False, True, True, True]),
    }
    out = report.paired(two, assignments, seed=0, n_boot=1000)
    assert out["caft"]["minus_sft_mean"] == 0.0 and out["caft"]["minus_distill_mean"] == round(-1 / 3, 6)
    direct = metrics.paired_difference(
        np.array([[1, 0, 1], [1, 0, 1]]), np.array([[0, 0, 1], [1, 1, 1]]), seed=0, n_boot=1000
    )
    assert [out["caft"][f"minus_sft_{k}"] for k in ("mean", "ci_low", "ci_high")] == [
        direct[k] for k in ("mean", "ci_low", "ci_high")
    ]


def test_over_seeds_averages_runs_and_gives_the_seed_spread():
    runs = pd.DataFrame(
        {
            "student": "s",
            "strategy": ["sft", "sft", "caft", "caft"],
            "seed": [1, 2, 1, 2],
            "balanced_set_accuracy": [0.2, 0.4, 0.5, 0.5],
            "balanced_set_accuracy_ci_low": [0.1, 0.3, 0.4, 0.4],
            "select": "final",
        }
    )
    rows = report.over_seeds(runs, {"s": {"sft": {}, "caft": {"minus_sft_mean": 0.2}}}).set_index("strategy")
    assert rows.loc["sft", "balanced_set_accuracy"] == pytest.approx(0.3) and rows.loc["caft", "n_seeds"] == 2
    assert rows.loc["sft", "balanced_set_accuracy_sd"] == round(float(np.std([0.2, 0.4], ddof=1)), 6)
    assert rows.loc["caft", "balanced_set_accuracy_sd"] == 0.0 and rows.loc["caft", "minus_sft_mean"] == 0.2
    assert "balanced_set_accuracy_ci_low" not in rows.columns and rows.loc["caft", "select"] == "final"
    single = report.over_seeds(runs[runs["seed"] == 1], {"s": {"sft": {}, "caft": {}}}).set_index("strategy")
    assert single.loc["sft", "balanced_set_accuracy_ci_low"] == 0.1 and single["n_seeds"].tolist() == [1, 1]


def test_the_summary_table_says_n_a_where_a_run_has_no_value():
    """A user's own free-form file with the `dataset` teacher: a run can lack a band, its CIs or its token
    counts; the table says n/a there instead of failing on a None."""
    from caft.report_markdown import to_markdown

    row = {
        "student": "tiny", "strategy": "sft", "balanced_set_accuracy": 0.25, "balanced_set_accuracy_ci_low": 0.1,
        "balanced_set_accuracy_ci_high": 0.4, "balanced_set_n": 12, "accuracy": 0.5, "n": 40, "parse_fail_rate": 0.0,
        "band_easy_accuracy": 0.5, "band_easy_ci_low": 0.2, "band_easy_ci_high": 0.8, "band_medium_accuracy": None,
        "band_medium_ci_low": None, "band_medium_ci_high": None, "band_hard_accuracy": float("nan"),
        "band_hard_ci_low": None, "band_hard_ci_high": None, "teacher_calls": 0.0, "cot_target_tokens": None,
        "target_tokens_one_pass": 120, "target_tokens_epoch_weighted": None, "data_saving_one_pass": None,
    }  # fmt: skip
    table = to_markdown(pd.DataFrame([row]))
    assert table.splitlines()[2] == (
        "| tiny | sft | 0.250 [0.100, 0.400] | 12 | 0.500 | 40 | 0.000 | 0.500 [0.20, 0.80] / n/a / n/a | 0 | n/a | "
        "120 / n/a | n/a |"
    )

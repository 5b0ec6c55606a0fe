import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from caft.estimators import judge
from caft.estimators.aggregates import aggregate
from caft.estimators.compare import bootstrap_auc, common_rows, compare_rows
from caft.teacher.cache import ResponseStore


def compare(scores, outcome, n_boot, seed):
    """AUC per estimator and category on the rows every estimator scored (what `compare.report` tabulates)."""
    return compare_rows(*common_rows(scores, outcome), n_boot, seed)


def test_aggregates_on_hand_computed_entropies():
    got = aggregate([0.5, 1.0, 2.0, 0.2, 0.1], answer_pos=4, reasoning_end=3, option_probs=[0.6, 0.3, 0.05])
    assert got == pytest.approx(
        {
            "answer_entropy": 0.1,
            "mean_entropy": 0.76,
            "max_entropy": 2.0,
            "reasoning_mean_entropy": 3.5 / 3,
            "reasoning_max_entropy": 2.0,
            "answer_margin": 0.7,
        }
    )


def test_aggregates_without_an_answer_marker():
    got = aggregate([1.0, 3.0], answer_pos=None, reasoning_end=None, option_probs=[])
    assert math.isnan(got["answer_entropy"]) and math.isnan(got["answer_margin"])
    assert (got["mean_entropy"], got["reasoning_mean_entropy"], got["reasoning_max_entropy"]) == (2.0, 2.0, 3.0)
    assert all(math.isnan(v) for v in aggregate([], None, None, []).values())


@pytest.mark.parametrize(
    ("kind", "text", "level"),
    [
        ("education_level", "It needs calculus.\nLevel: undergraduate", 1),
        ("education_level", "Level: **Postgraduate**.", 3),
        ("education_level", "Level: high school and easier", 0),
        ("education_level", "Level: graduate\nWait, no.\nLevel: undergraduate", 1),
        ("reasoning_steps", "Two steps.\nSteps: low", 0),
        ("reasoning_steps", "steps: HIGH", 2),
        ("education_level", "I think this is graduate level.", None),
        ("education_level", "Level: PhD", None),
        ("education_level", "Level: graduate school", None),
        ("reasoning_steps", "Level: high", None),
        ("reasoning_steps", "", None),
    ],
)
def test_judge_parser(kind, text, level):
    assert judge.parse(kind, text) == level


def test_judge_prompt_names_the_scale_and_marker():
    system, user = judge.messages("education_level", "Q?", ["a", "b"])
    assert "high school and easier, undergraduate, graduate, postgraduate" in system["content"]
    assert system["content"].endswith("End with a line 'Level: <your choice>'.")
    assert user["content"] == "Question: Q?\nOptions:\nA. a\nB. b"


def _table(n: int = 60):
    rng = np.random.default_rng(5)
    correct = rng.random(n) < 0.5
    good = np.where(correct, rng.normal(0, 1, n), rng.normal(1, 1, n))
    noise = rng.normal(0, 1, n)
    ids = [f"q{i}" for i in range(n)]
    scores = pd.concat(
        [
            pd.DataFrame({"question_id": ids, "estimator": "good", "score": good}),
            pd.DataFrame({"question_id": ids, "estimator": "noise", "score": noise}),
        ]
    )
    outcome = pd.DataFrame({"question_id": ids, "correct": correct, "category": ["a", "b"] * (n // 2)})
    return scores, outcome, correct, good


def test_compare_matches_sklearn_on_the_same_rows():
    scores, outcome, correct, good = _table()
    scores = scores[~((scores["estimator"] == "noise") & (scores["question_id"] == "q0"))]  # noise lacks q0
    table = compare(scores, outcome, n_boot=200, seed=1).set_index(["estimator", "category"])
    assert table.loc[("good", "all"), "n"] == 59  # every estimator on the same rows: q0 dropped for all
    assert table.loc[("good", "all"), "roc_auc"] == pytest.approx(roc_auc_score(~correct[1:], good[1:]), abs=1e-6)
    sub = np.arange(1, 60)[np.arange(1, 60) % 2 == 1]
    assert table.loc[("good", "b"), "roc_auc"] == pytest.approx(roc_auc_score(~correct[sub], good[sub]), abs=1e-6)


def test_bootstrap_ci_against_an_independent_bootstrap():
    from scipy.stats import bootstrap

    _, _, correct, good = _table(200)
    auc, low, high = bootstrap_auc(~correct, good, n_boot=2000, seed=0)
    ref = bootstrap(
        (~correct, good),
        lambda w, s: roc_auc_score(w, s),
        paired=True,
        vectorized=False,
        n_resamples=2000,
        method="percentile",
        random_state=1,
    ).confidence_interval
    assert low < auc < high
    assert low == pytest.approx(ref.low, abs=0.02) and high == pytest.approx(ref.high, abs=0.02)


def test_import_of_a_published_categorical_estimator():
    from caft.estimators.imported import run
    from tests.conftest import FIXTURES, section

    cfg = section(
        "estimators.import",
        path=str(FIXTURES / "labarss_education_level.csv"),
        score_column="education_level",
        name="masj_education_level_published",
        levels=["high school and easier", "undergraduate", "graduate", "postgraduate"],
    )
    questions = pd.DataFrame({"question_id": ["970", "10600", "42", "7", "not-published"]})
    p = SimpleNamespace(estimators=SimpleNamespace(import_=cfg))
    table, wide = run(questions, p, "qwen", None, None)
    scores = table.set_index("question_id")["score"]
    assert scores["970"] == 2.0 and scores["10600"] == 0.0 and scores["42"] == 3.0
    assert math.isnan(scores["7"]) and "not-published" not in scores.index  # unknown text is no level
    assert set(table["estimator"]) == {"masj_education_level_published"}
    assert set(table["levels"]) == {4} and set(table["units"]) == {"level"}  # the file declares its kind


def test_locate_answer_finds_the_answer_token(tiny_model):
    from caft.estimators.cot import locate_answer

    _, tok = tiny_model
    ids = tok.encode("Step 1: add.\nSo the answer is (C).", add_special_tokens=False)
    answer_pos, marker_pos = locate_answer(tok, ids, "answer_is")
    assert tok.decode(ids[answer_pos : answer_pos + 1]).strip().endswith("C")
    assert "answer" in tok.decode(ids[marker_pos : answer_pos + 1]) or tok.decode(ids[marker_pos:]).startswith("answer")
    assert locate_answer(tok, tok.encode("no marker here", add_special_tokens=False), "answer_is") == (None, None)


def test_locate_answer_agrees_with_decoding_every_prefix(tiny_model):
    from caft.estimators.cot import locate_answer

    _, tok = tiny_model
    text = "First the answer is (A)? No: 12 × 3 → 36, é ü.\nThe answer is (H), finally [[2]] and the answer is (J)."
    ids = tok.encode(text, add_special_tokens=False)
    ends = [len(tok.decode(ids[: i + 1], skip_special_tokens=True)) for i in range(len(ids))]
    last = text.rindex("answer is (J)")  # the pattern starts at "answer"
    expected = (
        next(i for i, e in enumerate(ends) if e > text.rindex("J")),
        next(i for i, e in enumerate(ends) if e > last),
    )
    assert locate_answer(tok, ids, "answer_is") == expected
    brackets = text.index("[[2")
    assert locate_answer(tok, ids, "brackets") == (
        next(i for i, e in enumerate(ends) if e > brackets + 2),
        next(i for i, e in enumerate(ends) if e > brackets),
    )


def test_comparable_rows_and_estimators():
    from caft.estimators.compare import comparable

    ids = [f"q{i}" for i in range(10)]
    everything = pd.concat(
        [
            pd.DataFrame({"question_id": ids, "estimator": "single", "score": np.arange(10.0)}),
            pd.DataFrame({"question_id": ids[:4], "estimator": "cot", "score": [1.0, 2.0, np.nan, 4.0]}),
            pd.DataFrame({"question_id": ids[:4], "estimator": "judge", "score": [np.nan, np.nan, np.nan, 1.0]}),
        ]
    )
    long, n_scored, n_rows = comparable(everything)
    assert n_rows == 4 and n_scored.to_dict() == {"cot": 3, "judge": 1, "single": 4}
    assert set(long["estimator"]) == {"cot", "single"} and set(long["question_id"]) == {"q0", "q1", "q2", "q3"}


def test_report_curves_metrics_and_table():
    from caft.estimators.compare import report

    ids = [f"q{i}" for i in range(8)]
    correct = np.array([True, True, True, True, False, False, False, False])
    everything = pd.concat(
        [
            pd.DataFrame({"question_id": ids, "estimator": "perfect", "score": np.arange(8.0)}),  # wrong = high
            pd.DataFrame({"question_id": ids, "estimator": "reversed", "score": -np.arange(8.0)}),
            pd.DataFrame({"question_id": ids, "estimator": "judge", "score": [np.nan] * 7 + [1.0]}),
        ]
    )
    outcome = pd.DataFrame({"question_id": ids, "correct": correct, "category": "c"})
    curves, metrics, markdown = report(everything, outcome, "T", n_boot=50, seed=0)
    assert markdown.splitlines() == [
        "# T",
        "",
        "| estimator | ROC AUC → wrong answer [95 % bootstrap CI] | n |",
        "|---|---|---|",
        "| perfect | 1.000 [1.000, 1.000] | 8 |",
        "| reversed | 0.000 [0.000, 0.000] | 8 |",
        "| judge | not compared: scored 1 of the 8 rows (outputs malformed or failed) | 1 |",
    ]
    assert metrics["judge"] == {"n_scored": 1}
    assert metrics["perfect"]["c"] == {"n": 8, "roc_auc": 1.0, "ci_low": 1.0, "ci_high": 1.0}
    perfect = curves[curves["estimator"] == "perfect"]
    assert list(curves.columns) == ["estimator", "fpr", "tpr"] and set(curves["estimator"]) == {"perfect", "reversed"}
    assert ((perfect["fpr"] == 0) & (perfect["tpr"] == 1)).any()  # every wrong answer before any right one


def test_the_judge_scales_param_lists_the_judge_scales():
    from typing import get_args

    from caft.estimators.judge import SCALES
    from caft.params import JudgeParams

    (literal,) = get_args(JudgeParams.model_fields["scales"].annotation)
    assert set(get_args(literal)) == set(SCALES)


def test_a_judge_run_keeps_every_judgement_in_its_output_even_from_the_machine_store(monkeypatch, tmp_path):
    """A second workspace (a queued experiment, a fresh clone) finds the judgements in the machine-wide store:
    nothing is asked again, and its own response store still holds every one of them."""
    from caft.estimators.judge import run
    from caft.teacher import backends
    from tests.conftest import make_questions, model_entry, params

    calls = []

    def rater(requests, cfg, sink):
        for req in requests:
            calls.append(req.question_id)
            sink(req, backends._response("Two steps.\nSteps: low", "stop", 1, 1, 0.0, 1))
        return backends.Outcome()

    monkeypatch.setitem(backends.BACKENDS, "rater", backends.Backend(label=lambda cfg: "rater", paid=True, run=rater))
    p = params({"students": ["s"], "models": {"s": model_entry()}, "estimators": {"judge": {"backend": "rater"}}})
    questions = make_questions(4)
    first, _ = run(questions, p, "s", "reasoning_steps", tmp_path / "one")
    second, wide = run(questions, p, "s", "reasoning_steps", tmp_path / "two")
    assert len(calls) == 4 and first["score"].tolist() == second["score"].tolist() == [0.0] * 4
    assert set(wide["judgement"]) == {"low"} and set(second["levels"]) == {3}
    assert len(list(ResponseStore(tmp_path / "two").stored_keys())) == 4


@pytest.mark.parametrize("backend", ["oracle", "dataset", "import"])
def test_a_judge_needs_a_backend_that_generates(backend):
    """The free backends only return what the data already holds (a rationale, a published trace): they have
    nothing to judge with, so the params are refused before any stage runs."""
    from caft.errors import CaftError
    from caft.names import check_names
    from tests.conftest import params

    with pytest.raises(
        CaftError,
        match=r"^invalid params: estimators.judge.backend: the judge needs a backend that generates "
        r"\(hf, openai\)$",
    ):
        check_names(params({"estimators": {"judge": {"backend": backend}}}))

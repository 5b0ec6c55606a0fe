"""The default demo (the positive control on arithmetic chains): its params and DAG, and the same pipeline on
the tiny model through DVC (`make tiny`), with the report's numbers recomputed from the predictions."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from caft import answers
from caft.metrics import wilson
from caft.params import load_params
from tests.conftest import REPO, committed
from tests.dvc_project import make_project, ran_stages, recomputed, run, up_to_date

TINY_STRATEGIES = ["sft", "distill", "caft", "random"]  # profiles/tiny.yaml: the paper's four
DEMO_STRATEGIES = [*TINY_STRATEGIES, "caft_reestimate"]


def test_the_demo_params_validate_and_its_dag_holds_the_strategies():
    p = load_params(committed("params.yaml"))
    assert p.students == ["smollm2"] and p.strategies == DEMO_STRATEGIES
    assert p.data.source == "synthetic" and p.data.synthetic.families == ["chain"]
    assert p.prompt.answer_prefix == "{expression} = " and p.teacher.backend == "oracle"
    out = run(["dvc", "stage", "list", "--all"], REPO)
    stages = {line.split()[0] for line in out.splitlines() if line.strip()}
    expected = {f"{s}@smollm2-{x}-42" for s in ("train", "eval") for x in DEMO_STRATEGIES}
    assert expected <= stages and {"entropy@smollm2", "split@smollm2", "teacher", "report"} <= stages
    assert not any(s.startswith("estimate_") for s in stages)  # the demo compares no other estimators


@pytest.fixture(scope="module")
def chain(tmp_path_factory) -> Path:
    """`make tiny`: the default (number-format) pipeline with the tiny model, as a DVC experiment, committed: a
    test that moves the workspace elsewhere (the GSM8K run) returns to it with `caft reset`."""
    root = make_project(tmp_path_factory.mktemp("chain"), "profiles/tiny.yaml")
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "tiny chain"], root)
    return root


@pytest.mark.integration
def test_tiny_number_format_run_end_to_end(chain):
    root = chain
    scores = pd.read_parquet(root / "data/entropy/tiny/scores.parquet")
    assert (scores["options"].map(len) == 0).all() and set(scores["validity"]) <= {"number", "other"}
    assert all(p.endswith(f"{e} = ") for p, e in zip(scores["prompt"], scores["expression"], strict=True))
    traces = pd.read_parquet(root / "data/teacher/traces.parquet")
    prepared = pd.read_parquet(root / "data/prepared/train.parquet").set_index("question_id")
    assert traces["kept"].all() and (traces["teacher"] == "oracle:synthetic-rationale").all()
    assert (traces["parsed_answer"] == traces["question_id"].map(prepared["answer"])).all()
    sft = pd.read_parquet(root / "data/sets/tiny/sft/42.parquet")
    expr = sft["question_id"].map(prepared["expression"])
    assert (sft["completion"] == expr + " = " + sft["question_id"].map(prepared["answer"])).all()


@pytest.mark.integration
def test_the_report_per_band_numbers_equal_a_recount_of_the_predictions(chain):
    root = chain
    report = json.loads((root / "reports/report.json").read_text())["tiny"]
    split = pd.read_parquet(root / "data/split/tiny/assignments.parquet")
    test = pd.read_parquet(root / "data/prepared/test.parquet").set_index("question_id")
    for strategy in TINY_STRATEGIES:
        preds = pd.read_parquet(root / f"data/eval/tiny/{strategy}/42/predictions.parquet").set_index("question_id")
        # correctness recounted from the raw outputs and the gold numbers
        mode = preds["mode"].iloc[0]
        recount = {}
        for qid, out in preds["output"].items():
            number = answers.FORMATS["number"]
            got = number.cot(out, 0, "brackets") if mode == "cot" else number.direct(out, 0, "letter")
            recount[qid] = got is not None and got == test.at[qid, "answer"]
        assert preds["correct"].to_dict() == recount
        banded = split[split["subset"] == "test"].set_index("question_id")
        for band in ("easy", "medium", "hard"):
            ids = banded.index[banded["band"] == band]
            k, n = sum(recount[q] for q in ids), len(ids)
            got = report[strategy]
            assert got[f"band_{band}_n"] == n and got[f"band_{band}_accuracy"] == pytest.approx(k / n, abs=1e-6)
            low, high = wilson(k, n)
            assert (got[f"band_{band}_ci_low"], got[f"band_{band}_ci_high"]) == (round(low, 6), round(high, 6))
        balanced = banded.index[banded["balanced"]]
        assert report[strategy]["balanced_set_accuracy"] == pytest.approx(
            sum(recount[q] for q in balanced) / len(balanced), abs=1e-6
        )
        for steps in sorted(set(test["difficulty"])):
            ids = test.index[test["difficulty"] == steps]
            expected = sum(recount[q] for q in ids) / len(ids)
            assert report[strategy][f"steps_{steps}_accuracy"] == pytest.approx(expected, abs=1e-6)
    summary = (root / "reports/summary.md").read_text()
    assert "entropy → wrong answer ROC AUC" in summary and "Accuracy by the true number of reasoning steps" in summary
    params = yaml.safe_load((root / "params.yaml").read_text())
    assert params["students"] == ["tiny"]


@pytest.mark.integration
def test_rerunning_the_tiny_chain_run_is_a_no_op(chain):
    root = chain
    assert recomputed(run(["dvc", "repro"], root)) == set()


@pytest.mark.integration
def test_the_dataset_teacher_backend_through_dvc_exp_run(chain):
    """`teacher.backend: dataset` as a user switches to it (the teacher stage, the one under test): the source's
    own rationale closed with the marker, labelled as such, and nothing upstream re-run; back on the oracle, its
    traces are the earlier ones, so no stage after the teacher runs again (the GSM8K run below trains on a
    dataset's rationales end to end)."""
    out = run(["dvc", "exp", "run", "-S", "teacher.backend=dataset", "teacher"], chain)
    ran = ran_stages(out)
    assert "teacher" in ran and not {"prepare", "entropy@tiny", "split@tiny"} & ran
    metrics = json.loads((chain / "metrics/teacher.json").read_text())
    assert metrics["teacher"] == "dataset:own-rationale" and metrics["kept"] == metrics["requested"] > 0
    traces = pd.read_parquet(chain / "data/teacher/traces.parquet")
    prepared = pd.read_parquet(chain / "data/prepared/train.parquet").set_index("question_id")
    expected = traces["question_id"].map(prepared["rationale"]) + "\nThe answer is " + traces["parsed_answer"] + "."
    assert (traces["trace"] == expected).all() and (traces["backend"] == "dataset").all()
    back = run(["dvc", "exp", "run", "-S", "teacher.backend=oracle"], chain)
    assert recomputed(back) <= {"check_params", "report"}, back  # check_params: see test_pipeline's API key test


@pytest.mark.integration
def test_a_gsm8k_run_through_dvc_exp_run(chain):
    """`data.source: gsm8k` (the hub-schema fixture, through `datasets`), its prompts chosen by `auto`, its own
    solutions as traces (`teacher.backend: dataset`, [[n]]), every stage from prepare to report on the tiny model."""
    fixture = REPO / "tests/fixtures/hub/gsm8k"
    out = run(
        [
            "dvc",
            "exp",
            "run",
            "-S",
            "data.source=gsm8k",
            "-S",
            f"data.gsm8k.repo={fixture}",
            "-S",
            "teacher.backend=dataset",
            "-S",
            "teacher.marker=brackets",
            "-S",
            "prompt.answer_prefix=''",
        ],
        chain,
    )
    ran = ran_stages(out)
    assert {"prepare", "entropy@tiny", "split@tiny", "teacher", "report"} <= ran
    assert {f"{s}@tiny-{x}-42" for s in ("train", "eval") for x in TINY_STRATEGIES} <= ran
    scores = pd.read_parquet(chain / "data/entropy/tiny/scores.parquet")
    assert scores["question_id"].str.startswith("gsm8k-").all() and (scores["options"].map(len) == 0).all()
    assert scores["prompt"].str.contains("grade school math word problems. Write down only the correct answer").all()
    traces = pd.read_parquet(chain / "data/teacher/traces.parquet")
    prepared = pd.read_parquet(chain / "data/prepared/train.parquet").set_index("question_id")
    expected = traces["question_id"].map(prepared["rationale"]) + "\nThe answer is [[" + traces["parsed_answer"] + "]]."
    assert (traces["trace"] == expected).all() and traces["kept"].all() and "<<" not in "".join(traces["trace"])
    sft = pd.read_parquet(chain / "data/sets/tiny/sft/42.parquet")
    assert (sft["completion"] == "[[" + sft["question_id"].map(prepared["answer"]) + "]]").all()
    report = json.loads((chain / "reports/report.json").read_text())["tiny"]
    test = pd.read_parquet(chain / "data/prepared/test.parquet")
    for strategy in TINY_STRATEGIES:  # the headline counts every test question, each as its eval scored it
        preds = pd.read_parquet(chain / f"data/eval/tiny/{strategy}/42/predictions.parquet")
        assert sorted(preds["question_id"]) == sorted(test["question_id"])
        assert report[strategy]["n"] == len(test)
        assert report[strategy]["accuracy"] == pytest.approx(preds["correct"].mean(), abs=1e-6)
    run(["caft", "reset"], chain)  # back to the tiny chain, for the tests that read it, in any order
    assert up_to_date(chain) and yaml.safe_load((chain / "params.yaml").read_text())["data"]["source"] == "synthetic"

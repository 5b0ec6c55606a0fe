"""`make rehearse RECIPE=...`: each paper recipe (and a user's own file) end to end on CPU, on the tiny student and
a hub-shaped fixture of its dataset, with the recipe's prompts, markers, budgets, answer reading and test-set
rules. What a first GPU run must not get wrong is checked against the fixtures themselves: every test question
counted, no direct answer's budget below its longest target, no item dropped without a count, a report."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from caft import prompts
from caft.models import load_tokenizer
from caft.params import ModelSpec
from tests.conftest import FIXTURES
from tests.dvc_project import MAKE, call, copy_project, run

pytestmark = pytest.mark.integration


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# recipe -> (test questions the fixture gives under the recipe's test-set rule, the prompt set of its answers)
EXPECTED = {
    "emnlp2025": (round(120 * 0.1), "generic"),  # MMLU-Pro: the recipes carve 10 % of the rows off as the test
    "eacl2026": (round(120 * 0.1), "generic"),
    "eacl2026-gsm8k": (len(_rows(FIXTURES / "hub/gsm8k/main/test-00000-of-00001.jsonl")), "gsm8k"),
    # MedMCQA: the whole validation split is the test, `multi` rows included
    "eacl2026-medmcqa": (len(_rows(FIXTURES / "hub/medmcqa/data/validation-00000-of-00001.jsonl")), "medmcqa"),
    "file": (round(60 * 0.3), "generic"),
}


@pytest.mark.parametrize("recipe", sorted(EXPECTED))
def test_a_recipes_rehearsal_counts_everything_and_cuts_nothing(tmp_path, recipe):
    """(EMNLP's also answers the test questions every epoch, `eval.every_epoch_test`: its curves are checked.)"""
    root = copy_project(tmp_path / "ws")
    extra = ["RECIPE_EXTRA=-S eval.every_epoch_test=true"] if recipe == "emnlp2025" else []
    out = run([*MAKE, "rehearse", f"RECIPE={recipe}", *extra], root)
    n_test, dataset = EXPECTED[recipe]
    prepared = pd.read_parquet(root / "data/prepared/test.parquet")
    assert len(prepared) == n_test
    # every test question is counted: the whole-test accuracy of every strategy covers all of them, and the
    # split keeps the ones whose single-token run was unreadable (banded hard) instead of dropping them
    report = json.loads((root / "reports/report.json").read_text())["tiny"]
    assert set(report) == {"sft", "distill", "caft"}
    assert {s: r["n"] for s, r in report.items()} == dict.fromkeys(report, n_test)
    split = json.loads((root / "metrics/split/tiny.json").read_text())
    assert sum(split[f"test_{b}_n"] for b in ("easy", "medium", "hard")) == n_test
    # no direct answer cut by its budget: at least the longest answer-only target (thousands separators too)
    # under the student's tokenizer, plus the end token, counted here from the prepared answers
    tok = load_tokenizer(ModelSpec(ref="tiny"))
    longest = max(
        len(tok.encode(text, add_special_tokens=False))
        for options, answer in zip(prepared["options"], prepared["answer"], strict=True)
        for text in (
            [str(len(options)), "J"]
            if len(options)
            else [prompts.answer_target(a, dataset) for a in (answer, f"{int(answer.replace(',', '')):,}")]
        )
    )
    budget = json.loads((root / "metrics/eval/tiny/sft/42.json").read_text())["max_new_tokens"]
    assert budget >= longest + 1, (budget, longest)
    # no item dropped without a count: every requested trace is kept, or counted as wrong, cut, unparsed, failed
    # or unavailable (a dataset without a solution for it)
    teacher = json.loads((root / "metrics/teacher.json").read_text())
    traces = pd.read_parquet(root / "data/teacher/traces.parquet")
    answered = traces[traces["error"] == ""]
    wrong = int((~answered["correct"] & ~answered["truncated"] & ~answered["unparsed"]).sum())
    left_out = teacher["failures"] + teacher["unavailable"] + teacher["truncated"] + teacher["unparsed"]
    keep_all = yaml.safe_load((root / "params.yaml").read_text())["teacher"]["keep"] == "all"
    assert teacher["requested"] == len(traces) == teacher["kept"] + left_out + (0 if keep_all else wrong)
    if recipe == "eacl2026-medmcqa":  # the fixture's null explanations: no trace, counted
        no_exp = {r["id"] for r in _rows(FIXTURES / "hub/medmcqa/data/train-00000-of-00001.jsonl") if not r["exp"]}
        assert teacher["unavailable_no_rationale"] == len(no_exp & set(traces["question_id"])) > 0
    # a report
    summary = (root / "reports/summary.md").read_text()
    assert all(f"| tiny | {s} | " in summary for s in report) and "| tiny | caft | " in out
    if recipe == "emnlp2025":
        _epoch_curves(root, n_test)


def _epoch_curves(root: Path, n_test: int) -> None:
    """The v1 recipe's full fine-tuning and per-epoch curves (`eval.every_epoch`, caft 1 + 1 epochs here): the
    validation carve (the recipe's 1 a band) answered after each epoch, and every test question too, logged with
    dvclive at the step each epoch ended, charted by the report per band, the last epoch's weights kept."""
    params = yaml.safe_load((root / "params.yaml").read_text())
    assert (params["prompt"]["option_ids"], params["teacher"]["marker"], params["train"]["lora"]["enabled"]) == (
        "numeric",
        "brackets",
        False,
    )
    split = json.loads((root / "metrics/split/tiny.json").read_text())
    assert [split[f"train_{b}_n"] for b in ("easy", "medium", "hard")] == [6, 6, 6]
    assert [split[f"validation_{b}_n"] for b in ("easy", "medium", "hard")] == [1, 1, 1]
    trained = json.loads((root / "metrics/train/tiny/caft/42.json").read_text())
    assert (trained["phase0_epochs"], trained["phase1_epochs"]) == (1, 1)
    # the 12 easy and medium training items, and the hard ones whose trace was kept (teacher.keep: correct; every
    # 7th fixture trace names a wrong option)
    assignments = pd.read_parquet(root / "data/split/tiny/assignments.parquet")
    hard = set(assignments.query("subset == 'train' and band == 'hard'")["question_id"])
    traces = pd.read_parquet(root / "data/teacher/traces.parquet")
    assert trained["n_items"] == 12 + len(hard & set(traces.loc[traces["kept"], "question_id"]))
    assert (root / "models/tiny/caft/42/model.safetensors").exists()  # full fine-tuning, not an adapter
    everything = pd.read_parquet(root / "data/epochs/tiny/caft/42.parquet")
    records = everything[everything["subset"] == "validation"]
    assert records.groupby("epoch").size().to_dict() == {1: 3, 2: 3}
    assert everything[everything["subset"] == "test"].groupby("epoch").size().to_dict() == {1: n_test, 2: n_test}
    assert records.groupby("epoch")["phase"].first().tolist() == [0, 1]
    curves = root / "plots/train/tiny/caft/42/plots/metrics/validation"
    live = pd.read_csv(curves / "accuracy.tsv", sep="\t").merge(pd.read_csv(curves / "epoch.tsv", sep="\t"), on="step")
    assert live["epoch"].tolist() == [1, 2]
    assert live["step"].tolist() == records.groupby("epoch")["step"].first().tolist()
    assert live["accuracy"].round(6).tolist() == records.groupby("epoch")["correct"].mean().round(6).tolist()
    assert (trained["select"], trained["selected_epoch"]) == ("final", 2)
    assert trained["val_accuracy_final"] == round(float(records.loc[records["epoch"] == 2, "correct"].mean()), 6)
    chart = pd.read_csv(root / "plots/report/epochs.csv")
    caft = chart[(chart["strategy"] == "caft") & (chart["band"] == "all") & (chart["subset"] == "validation")]
    assert caft["epoch"].tolist() == [1, 2] and caft["phase_start"].tolist() == [0, 1]
    assert set(chart["band"]) == {"all", "easy", "medium", "hard"}
    # the test curve counts the balanced test set only, recomputed here from the split and the records
    balanced = set(assignments.loc[assignments["balanced"], "question_id"])
    test_rows = everything[(everything["subset"] == "test") & everything["question_id"].isin(balanced)]
    caft_test = chart[(chart["strategy"] == "caft") & (chart["band"] == "all") & (chart["subset"] == "test")]
    assert caft_test["n"].tolist() == [len(balanced)] * 2
    assert caft_test["accuracy"].tolist() == test_rows.groupby("epoch")["correct"].mean().round(6).tolist()
    # ... and the report logs each curve with dvclive, the epoch as its step, overall and per band
    logged = root / "plots/report/live/tiny/caft/plots/metrics"
    for subset in ("validation", "test"):
        tsv = pd.read_csv(logged / subset / "accuracy.tsv", sep="\t")
        rows = chart[(chart["strategy"] == "caft") & (chart["band"] == "all") & (chart["subset"] == subset)]
        assert tsv["step"].tolist() == [1, 2] and tsv["accuracy"].tolist() == rows["accuracy"].tolist()
    hard = chart[(chart["strategy"] == "caft") & (chart["band"] == "hard") & (chart["subset"] == "validation")]
    logged_hard = pd.read_csv(logged / "validation/accuracy_hard.tsv", sep="\t")
    assert logged_hard["accuracy_hard"].tolist() == hard["accuracy"].tolist()
    # the README's command for them: epochs on the x axis (DVC's own default x would be the row index)
    shown = call(["dvc", "plots", "show", "plots/report/live/tiny/caft", "-x", "step", "--json"], root)
    assert shown.returncode == 0, shown.stderr
    drawn = json.loads(shown.stdout)["data"]["plots/report/live/tiny/caft/plots/metrics/validation/accuracy.tsv"]
    assert [int(v["step"]) for v in drawn[0]["content"]["data"]["values"]] == [1, 2]
    assert "| tiny | caft | " in (root / "reports/summary.md").read_text().split("Validation accuracy per epoch")[1]

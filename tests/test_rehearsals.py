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
from tests.dvc_project import MAKE, copy_project, run

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
    root = copy_project(tmp_path / "ws")
    out = run([*MAKE, "rehearse", f"RECIPE={recipe}"], root)
    n_test, dataset = EXPECTED[recipe]
    prepared = pd.read_parquet(root / "data/prepared/test.parquet")
    assert len(prepared) == n_test
    # every test question is counted: the whole-test accuracy of every strategy covers all of them, and the
    # split keeps the ones whose single-token run was unreadable (banded hard) instead of dropping them
    report = json.loads((root / "metrics/report.json").read_text())["tiny"]
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

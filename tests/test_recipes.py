"""The paper recipes: schema, the paper's exact prompt texts, and plan mode."""

from __future__ import annotations

import json
import subprocess

import pandas as pd
import pytest
import yaml

from caft import plan, profile
from caft.prompts import build_messages
from caft.teacher.prompt import messages as cot_messages
from tests.conftest import REPO
from tests.dvc_project import env


def _recipe(*names: str):
    return profile.resolve([REPO / "recipes" / name for name in names], REPO / "params.yaml")[1]


@pytest.mark.parametrize("names", [("emnlp2025.yaml",), ("eacl2026.yaml",), ("eacl2026.yaml", "eacl2026-lora.yaml")])
def test_recipes_validate_and_encode_the_paper(names):
    p = _recipe(*names)
    v1 = names == ("emnlp2025.yaml",)
    third = [] if v1 else ["llama3_2_3b"]  # the published version's third student
    assert p.students == ["qwen2_5_3b", "phi4_mini", *third] and p.seed == 42
    assert p.models["qwen2_5_3b"].ref == "Qwen/Qwen2.5-3B-Instruct"
    assert p.models["phi4_mini"].ref == "microsoft/Phi-4-mini-instruct"
    assert (p.data.source, p.data.test_fraction) == ("hf", 0.1)
    assert (p.prompt.variant, p.prompt.option_ids) == ("fallback", "numeric")
    assert (p.split.units, p.split.easy_threshold, p.split.threshold) == ("quantile", 0.25, 0.75)
    assert (p.split.train_per_band, p.split.val_per_band, p.split.balanced_test) == (900, 100, True)
    assert (p.teacher.openai.model, p.teacher.max_tokens, p.teacher.marker) == (
        "deepseek/deepseek-chat-v3-0324",
        2048,
        "brackets",
    )
    assert p.teacher.openai.base_url == "https://openrouter.ai/api/v1"
    t = p.train
    assert (t.batch_size * t.grad_accum, t.max_length, t.max_grad_norm) == (16, 2000, 1.0)
    assert (t.epochs["caft"], t.epochs["sft"], t.epochs["distill"]) == (
        ([5, 5], [10], [10]) if v1 else ([10, 10], [20], [20])
    )
    if "eacl2026-lora.yaml" in names:
        assert (t.lora.enabled, t.lora.r, t.lora.alpha, t.lora.dropout, t.learning_rate) == (True, 64, 128, 0.05, 1e-4)
    else:
        assert (t.lora.enabled, t.learning_rate) == (False, 1e-5)


def test_recipe_renders_the_papers_exact_prompts():
    p = _recipe("emnlp2025.yaml")
    system, user = build_messages("What is 2+2?", ["3", "4"], "math", p.prompt.variant, p.prompt.option_ids)
    assert system["content"] == (
        "The following are multiple choice questions about math. If you are certain about the answer return the "
        "correct option number, otherwise return 0. Write down ONLY the NUMBER and nothing else."
    )
    assert user["content"] == (
        "Question: What is 2+2?\nOptions:\n1. 3\n2. 4\nChoose one of the answers. If you are certain about the "
        "answer return the correct option number, otherwise return 0. Write down ONLY the NUMBER and nothing else."
    )
    system, user = cot_messages("What is 2+2?", ["3", "4"], "math", p.teacher.marker)
    assert system["content"] == (
        "The following are multiple choice questions about math. Explain your thinking process step-by-step. At the "
        "end, write down the number of the correct answer by strictly following this format: "
        "[[number_of_correct_answer]]."
    )
    assert user["content"] == "Question: What is 2+2?\nOptions:\n1. 3\n2. 4\n"


def test_plan_mode_counts_teacher_calls_on_the_standin():
    p = _recipe("emnlp2025.yaml")
    result = plan.plan(p, plan.MMLU_PRO_TEST_QUESTIONS)
    # 900 train + 100 validation per band (the stand-in has >= 1,000 per band): caft pays for the hard band
    # (1,000), alternative for the easy band (1,000), random for as many train items as hard ones (900), and
    # distill for every train + validation item (3,000) — which covers all the others.
    assert result["teacher_calls_by_strategy"] == {
        "sft": 0,
        "distill": 3000,
        "caft": 1000,
        "curriculum": 0,
        "random": 900,
        "alternative": 1000,
    }
    assert result["teacher_calls"] == {"per_student": 3000, "lower": 3000, "upper": 6000}
    assert result["teacher_completion_tokens_max"] == {"lower": 3000 * 2048, "upper": 6000 * 2048}
    assert result["split"]["train_hard_n"] == 900 and result["split"]["validation_hard_n"] == 100
    # prepare, entropy / estimate (cot_entropy) / compare_estimators / split per student, teacher, sets,
    # train and eval per student x strategy, report
    assert len(result["stages"]) == 1 + 4 * 2 + 1 + 2 + 2 * 2 * 6 + 1
    assert "estimate_cot@qwen2_5_3b" in result["stages"] and not result["priced"]
    assert set(result["gpu_hours_h100"]) == {"qwen2_5_3b", "phi4_mini"}
    assert result["gpu_hours_h100"]["phi4_mini"]["train"] > result["gpu_hours_h100"]["qwen2_5_3b"]["train"] > 0


def test_caft_only_plan_pays_for_the_hard_band_only():
    p = _recipe("emnlp2025.yaml")
    p.strategies[:] = ["sft", "caft"]
    result = plan.plan(p, plan.MMLU_PRO_TEST_QUESTIONS)
    assert result["teacher_calls"] == {"per_student": 1000, "lower": 1000, "upper": 2000}


@pytest.mark.integration
def test_recipe_full_mode_end_to_end_on_the_tiny_profile(tmp_path):
    import json

    from tests.dvc_project import call, make_project

    root = make_project(tmp_path, "recipes/emnlp2025.yaml", "profiles/recipe-tiny.yaml")
    params = yaml.safe_load((root / "params.yaml").read_text())
    assert (params["prompt"]["option_ids"], params["teacher"]["marker"], params["train"]["lora"]["enabled"]) == (
        "numeric",
        "brackets",
        False,
    )
    report = json.loads((root / "metrics/report.json").read_text())
    assert set(report["tiny"]) == {"sft", "distill", "caft", "curriculum", "random", "alternative"}
    split = json.loads((root / "metrics/split/tiny.json").read_text())
    assert [split[f"train_{b}_n"] for b in ("easy", "medium", "hard")] == [8, 8, 8]
    assert [split[f"validation_{b}_n"] for b in ("easy", "medium", "hard")] == [2, 2, 2]
    trained = json.loads((root / "metrics/train/tiny/caft/42.json").read_text())
    assert (trained["phase0_epochs"], trained["phase1_epochs"]) == (5, 5) and trained["n_items"] == 24
    assert (root / "models/tiny/caft/42/model.safetensors").exists()  # full fine-tuning, not an adapter
    # the recipe's per-epoch curve (eval.every_epoch): 5 + 5 epochs on the 6 validation questions, logged with
    # dvclive per epoch, charted by the report; the last epoch's weights kept (eval.select: final)
    everything = pd.read_parquet(root / "data/epochs/tiny/caft/42.parquet")
    records = everything[everything["subset"] == "validation"]
    assert records.groupby("epoch").size().to_dict() == dict.fromkeys(range(1, 11), 6)
    # the profile's eval.every_epoch_test: every prepared test question, every epoch
    n_test = len(pd.read_parquet(root / "data/prepared/test.parquet"))
    assert everything[everything["subset"] == "test"].groupby("epoch").size().to_dict() == dict.fromkeys(
        range(1, 11), n_test
    )
    assert records.groupby("epoch")["phase"].first().tolist() == [0] * 5 + [1] * 5
    curves = root / "plots/train/tiny/caft/42/plots/metrics/validation"
    live = pd.read_csv(curves / "accuracy.tsv", sep="\t").merge(pd.read_csv(curves / "epoch.tsv", sep="\t"), on="step")
    assert live["epoch"].tolist() == list(range(1, 11))
    assert live["step"].tolist() == records.groupby("epoch")["step"].first().tolist()
    assert live["accuracy"].round(6).tolist() == records.groupby("epoch")["correct"].mean().round(6).tolist()
    assert (trained["select"], trained["selected_epoch"]) == ("final", 10)
    assert trained["val_accuracy_final"] == round(float(records.loc[records["epoch"] == 10, "correct"].mean()), 6)
    chart = pd.read_csv(root / "plots/report/epochs.csv")
    caft = chart[(chart["strategy"] == "caft") & (chart["band"] == "all") & (chart["subset"] == "validation")]
    assert caft["epoch"].tolist() == list(range(1, 11)) and caft["phase_start"].tolist() == [0] * 5 + [1] + [0] * 4
    assert set(chart["strategy"]) == set(report["tiny"]) and set(chart["band"]) == {"all", "easy", "medium", "hard"}
    # the test curve counts the balanced test set only, recomputed here from the split and the records
    assignments = pd.read_parquet(root / "data/split/tiny/assignments.parquet")
    balanced = set(assignments.loc[assignments["balanced"], "question_id"])
    test_rows = everything[(everything["subset"] == "test") & everything["question_id"].isin(balanced)]
    by_hand = test_rows.groupby("epoch")["correct"].mean().round(6).tolist()
    caft_test = chart[(chart["strategy"] == "caft") & (chart["band"] == "all") & (chart["subset"] == "test")]
    assert caft_test["n"].tolist() == [len(balanced)] * 10 and caft_test["accuracy"].tolist() == by_hand
    # ... and the report logs each curve with dvclive, the epoch as its step, overall and per band
    logged = root / "plots/report/live/tiny/caft/plots/metrics"
    for subset in ("validation", "test"):
        tsv = pd.read_csv(logged / subset / "accuracy.tsv", sep="\t")
        rows = chart[(chart["strategy"] == "caft") & (chart["band"] == "all") & (chart["subset"] == subset)]
        assert tsv["step"].tolist() == list(range(1, 11)) and tsv["accuracy"].tolist() == rows["accuracy"].tolist()
    hard = chart[(chart["strategy"] == "caft") & (chart["band"] == "hard") & (chart["subset"] == "validation")]
    logged_hard = pd.read_csv(logged / "validation/accuracy_hard.tsv", sep="\t")
    assert logged_hard["accuracy_hard"].tolist() == hard["accuracy"].tolist()
    # the README's command for them: epochs on the x axis (DVC's own default x would be the row index)
    shown = call(["dvc", "plots", "show", "plots/report/live/tiny/caft", "-x", "step", "--json"], root)
    assert shown.returncode == 0, shown.stderr
    drawn = json.loads(shown.stdout)["data"]["plots/report/live/tiny/caft/plots/metrics/validation/accuracy.tsv"]
    assert [int(v["step"]) for v in drawn[0]["content"]["data"]["values"]] == list(range(1, 11))
    assert "| tiny | caft | " in (root / "reports/summary.md").read_text().split("Validation accuracy per epoch")[1]


def test_the_caft_command_has_help_and_one_line_errors(tmp_path):
    """`caft profile` / `caft plan` as a user runs them: --help exits 0, a bad profile is one line, exit 2."""
    for args in (["--help"], ["profile", "--help"], ["plan", "--help"]):
        proc = subprocess.run(["caft", *args], capture_output=True, text=True, env=env())
        assert proc.returncode == 0 and "Usage: caft" in proc.stdout, args
    proc = subprocess.run(["caft", "profile", str(tmp_path / "nope.yaml")], capture_output=True, text=True, env=env())
    assert (proc.returncode, proc.stderr) == (2, f"error: profile not found: {tmp_path / 'nope.yaml'}\n")
    proc = subprocess.run(["caft", "profile", "split@x"], capture_output=True, text=True, env=env())
    assert (proc.returncode, proc.stderr) == (2, "error: caft profile needs at least one profile file (.yaml)\n")
    out = tmp_path / "plan.json"
    proc = subprocess.run(
        ["caft", "plan", "recipes/emnlp2025.yaml", "--n-questions", "100", "--json", str(out)],
        capture_output=True,
        text=True,
        env=env(),
        cwd=REPO,
    )
    assert proc.returncode == 0 and proc.stdout.startswith("stages (37): prepare, entropy@qwen2_5_3b")
    assert json.loads(out.read_text())["stages"][0] == "prepare"

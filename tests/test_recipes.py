"""The paper recipes: schema, the paper's exact prompt texts, and plan mode."""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml

from caft import plan, profile
from caft.prompts import build_messages
from caft.teacher.prompt import messages as cot_messages
from tests.conftest import REPO, committed
from tests.dvc_project import env


def _recipe(*names: str):
    return profile.resolve([REPO / "recipes" / name for name in names], committed("params.yaml"))[1]


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
    assert plan.questions_in_source(p) == 12_032  # TIGER-Lab/MMLU-Pro's test split, from the source's entry
    result = plan.plan(p, plan.questions_in_source(p))
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


def test_a_students_gpu_hours_come_from_its_params_entry(tmp_path):
    """`caft plan` with a student a profile adds: the H100-hours are 6·N·(training tokens) and 2·N·(generated
    tokens) at the stated utilisations, N from `models.<name>.n_parameters`; a student without one gets no
    estimate and a line that says which key to set."""
    entry = {"revision": None, "dtype": "auto", "trust_remote_code": False, "import_key": None}
    added = {
        "students": ["mine", "theirs"],
        "estimators.cot.students": [],
        "models.mine": {"ref": "org/mine-7b", **entry, "n_parameters": 7.0e9},
        "models.theirs": {"ref": "org/theirs", **entry},
    }
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(added))
    (tmp_path / "params.yaml").write_text(committed("params.yaml").read_text())  # not the workspace's
    out = tmp_path / "plan.json"
    proc = subprocess.run(
        ["caft", "plan", str(REPO / "recipes/emnlp2025.yaml"), "mine.yaml", "--json", str(out)],
        capture_output=True,
        text=True,
        env=env(),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    tokens = sum(result["training_tokens_per_student"].values())
    assert result["gpu_hours_h100"]["mine"]["train"] == round(6 * 7e9 * tokens / (989e12 * 0.40) / 3600, 2)
    assert result["gpu_hours_h100"]["theirs"] is None
    assert "H100-hours for theirs: unknown (set models.theirs.n_parameters for an estimate)" in proc.stdout


def test_caft_only_plan_pays_for_the_hard_band_only():
    p = _recipe("emnlp2025.yaml")
    p.strategies[:] = ["sft", "caft"]
    result = plan.plan(p, plan.questions_in_source(p))
    assert result["teacher_calls"] == {"per_student": 1000, "lower": 1000, "upper": 2000}


def test_the_caft_command_has_help_and_one_line_errors(tmp_path):
    """`caft profile` / `caft plan` as a user runs them: --help exits 0, a bad profile is one line, exit 2."""
    for args in (["--help"], ["profile", "--help"], ["plan", "--help"]):
        proc = subprocess.run(["caft", *args], capture_output=True, text=True, env=env())
        assert proc.returncode == 0 and "Usage: caft" in proc.stdout, args
    # the command list rewraps each summary: no docstring line break shows (COLUMNS=200: one line per summary)
    listing = subprocess.run(["caft", "--help"], capture_output=True, text=True, env={**env(), "COLUMNS": "200"})
    profile_line = next(line for line in listing.stdout.splitlines() if "│ profile" in line)
    assert "then apply them through dvc exp run -S key=value ...; any other argument" in profile_line
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
    # a size below one question or beyond memory, and a --json path through a file: refused, the second in one
    # line, no traceback
    plan = ["caft", "plan", "recipes/emnlp2025.yaml"]
    for size in ("0", "10000001", "99999999999999999999"):  # the last two: beyond memory, a numpy traceback before
        proc = subprocess.run([*plan, "--n-questions", size], capture_output=True, text=True, env=env(), cwd=REPO)
        assert proc.returncode == 2 and "Invalid value for '--n-questions'" in proc.stderr, proc.stderr
    blocked = tmp_path / "plan.json" / "again.json"
    proc = subprocess.run([*plan, "--json", str(blocked)], capture_output=True, text=True, env=env(), cwd=REPO)
    assert (proc.returncode, proc.stderr) == (2, f"error: cannot write {blocked}: {out} is a file, not a folder\n")
    assert json.loads(out.read_text())["stages"][0] == "prepare"  # the file in the way is untouched


def test_a_profile_in_params_yaml_shape_sets_only_the_leaves_it_names(tmp_path):
    """`split: {threshold: 0.5}` is `split.threshold: 0.5` (the section's other leaves stay), and a typo inside
    a nested section is named as a dotted key: one line, exit 2, no run."""
    (tmp_path / "params.yaml").write_text(committed("params.yaml").read_text())
    (tmp_path / "nested.yaml").write_text("split:\n  threshold: 0.5\n  easy_threshold: 0.1\nseed: 7\n")
    (tmp_path / "typo.yaml").write_text("split:\n  treshold: 0.5\n")

    def caft_profile(name: str) -> subprocess.CompletedProcess:
        return subprocess.run(["caft", "profile", name], capture_output=True, text=True, env=env(), cwd=tmp_path)

    # no DVC project here: dvc exp run fails after caft printed the command it built
    proc = caft_profile("nested.yaml")
    assert proc.stdout.splitlines()[0] == "+ dvc exp run -S split.threshold=0.5 -S split.easy_threshold=0.1 -S seed=7"
    assert profile.merged_overrides([tmp_path / "nested.yaml"]) == {
        "split.threshold": 0.5,
        "split.easy_threshold": 0.1,
        "seed": 7,
    }
    proc = caft_profile("typo.yaml")
    assert (proc.returncode, proc.stdout, proc.stderr) == (
        2,
        "",
        "error: invalid params: split.treshold: Extra inputs are not permitted\n",
    )

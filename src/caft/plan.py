"""Plan mode: what a recipe will run and pay for — stages, teacher calls, tokens, rough GPU-hours — before
any model is loaded or any API is called (no GPU needed).

Teacher calls depend on the split, which depends on entropies that do not exist yet: the plan uses a
deterministic synthetic stand-in (the recipe's data size, every answer valid, gamma-distributed scores) and
reports a range: every student needing the same items (lower bound) or disjoint items (upper bound).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from caft import strategies
from caft.estimators.registry import available
from caft.params import Params
from caft.prepare import source
from caft.prompts import build_messages
from caft.split import make_split, random_control
from caft.teacher.prompt import messages as cot_messages
from caft.teacher.run import cost, needed_ids

# The authors' token count of question + options, mean over 11,932 MMLU-Pro questions (their metadata).
QUESTION_TOKENS = 163
# The authors' DeepSeek-V3 traces: 1,956,671 Qwen tokens for the 2,700 distillation items (v1) ≈ 725 each.
COT_TRACE_TOKENS = 725
# Rough GPU throughput: 6·N FLOPs per trained token, 2·N per generated token, on an H100's 989 TFLOP/s
# (bf16 dense) at 40 % utilisation for training and 10 % for generation.
H100_FLOPS, TRAIN_MFU, GENERATE_MFU = 989e12, 0.40, 0.10


def sides(p: Params, n_questions: int) -> tuple[int, int]:
    """(train, test) questions the recipe's prepare would keep: the source's own splits or the carve, capped."""
    splits = source(p.data.source).splits
    if splits and n_questions == sum(splits):
        n_train, n_test = splits
    else:
        n_test = round(n_questions * p.data.test_fraction)
        n_train = n_questions - n_test
    return min(n_train, p.data.max_train or n_train), min(n_test, p.data.max_test or n_test)


def standin_scores(n_train: int, n_test: int, seed: int) -> pd.DataFrame:
    """An entropy table shaped like the real one: every answer valid, scores gamma(2, 0.5) nats."""
    rng = np.random.default_rng([seed, 2506])
    n_questions = n_train + n_test
    test = rng.permutation(n_questions) < n_test
    return pd.DataFrame(
        {
            "question_id": [f"standin-{i:05d}" for i in range(n_questions)],
            "subset": np.where(test, "test", "train"),
            "entropy": rng.gamma(2.0, 0.5, n_questions),
            "entropy_options": rng.gamma(1.5, 0.5, n_questions),
            "validity": "option",
            "correct": False,
        }
    )


def _instruction_tokens(p: Params) -> tuple[int, int]:
    """Prompt tokens besides the question (chars / 4) for the answer-only and the CoT prompt."""
    answer = build_messages("", ["x"], "subject", p.train.answer_variant, p.prompt.option_ids, p.prompt.dataset)
    cot = cot_messages("", ["x"], "subject", p.teacher.marker, p.prompt.dataset)
    return tuple(sum(len(m["content"]) for m in msgs) // 4 for msgs in (answer, cot))


def plan(p: Params, n_questions: int) -> dict:
    assignments, split_metrics = make_split(standin_scores(*sides(p, n_questions), p.seed), p.split, p.seed)
    per_strategy = {
        name: len(needed_ids({"s": assignments}, [name], p.seeds, p.split.random_control)) for name in p.strategies
    }
    per_student = len(needed_ids({"s": assignments}, p.strategies, p.seeds, p.split.random_control))
    assignments = random_control(assignments, p.seeds[0], p.split.random_control)  # training tokens: one seed's
    answer_extra, cot_extra = _instruction_tokens(p)
    prompt_tokens = QUESTION_TOKENS + cot_extra
    calls = {"per_student": per_student, "lower": per_student, "upper": per_student * len(p.students)}
    training = {}
    for name in p.strategies:
        tokens = 0.0
        for phase, rows, epochs in zip(
            strategies.get(name).phases,
            strategies.get(name).phase_masks(assignments),
            p.train.epochs[name],
            strict=True,
        ):
            per_item = QUESTION_TOKENS + (cot_extra + COT_TRACE_TOKENS if phase.kind == "cot" else answer_extra + 2)
            tokens += int((rows & (assignments["subset"] == "train")).sum()) * per_item * epochs
        training[name] = tokens
    n_eval = int(assignments["balanced"].sum())
    gpu_hours = {}
    for student in p.students:
        n_params = p.models[student].n_parameters
        if n_params is None:
            gpu_hours[student] = None
            continue
        train_h = 6 * n_params * sum(training.values()) * len(p.seeds) / (H100_FLOPS * TRAIN_MFU) / 3600
        generated = sum(
            n_eval
            * (p.eval.max_new_tokens_cot if strategies.get(s).eval_mode == "cot" else p.eval.max_new_tokens_direct)
            for s in p.strategies
        )
        eval_h = 2 * n_params * generated * len(p.seeds) / (H100_FLOPS * GENERATE_MFU) / 3600
        gpu_hours[student] = {"train": round(train_h, 2), "eval": round(eval_h, 2)}
    return {
        "stages": stage_names(p),
        "split": {k: v for k, v in split_metrics.items() if k.endswith("_n")},
        "teacher_calls": calls,
        "teacher_calls_by_strategy": per_strategy,
        "teacher_prompt_tokens": {k: v * prompt_tokens for k, v in calls.items() if k != "per_student"},
        "teacher_completion_tokens_max": {k: v * p.teacher.max_tokens for k, v in calls.items() if k != "per_student"},
        "teacher_cost_max_usd": {
            k: round(cost(v * prompt_tokens, v * p.teacher.max_tokens, p.teacher.prices()), 2)
            for k, v in calls.items()
            if k != "per_student"
        },
        "priced": bool(p.teacher.price_prompt_per_m or p.teacher.price_completion_per_m),
        "training_tokens_per_student": {k: int(v) for k, v in training.items()},
        "gpu_hours_h100": gpu_hours,
    }


def stage_names(p: Params) -> list[str]:
    names = ["prepare"] + [f"entropy@{s}" for s in p.students]
    names += list(
        dict.fromkeys(st for s in p.students for st in available(p, s).values() if st.startswith("estimate_"))
    )
    names += [f"{stage}@{s}" for stage in ("compare_estimators", "split") for s in p.students]
    names += ["teacher"] + [f"sets@{s}" for s in p.students]
    names += [
        f"{stage}@{s}-{x}-{seed}"
        for stage in ("train", "eval")
        for s in p.students
        for x in p.strategies
        for seed in p.seeds
    ]
    return names + ["report"]


def render(result: dict) -> str:
    """A short human-readable account of the plan."""
    c = result["teacher_calls"]
    lines = [
        f"stages ({len(result['stages'])}): " + ", ".join(result["stages"]),
        f"teacher calls: {c['lower']}..{c['upper']} ({c['per_student']} per student; by strategy: "
        + ", ".join(f"{k} {v}" for k, v in result["teacher_calls_by_strategy"].items())
        + ")",
        "teacher tokens: prompt {lower}..{upper}".format(**result["teacher_prompt_tokens"])
        + ", completion at most {lower}..{upper}".format(**result["teacher_completion_tokens_max"])
        + (
            ", cost at most ${lower}..${upper}".format(**result["teacher_cost_max_usd"])
            if result["priced"]
            else " (set teacher.price_prompt_per_m / price_completion_per_m for a cost bound)"
        ),
        "training tokens per student: "
        + ", ".join(f"{k} {v:,}" for k, v in result["training_tokens_per_student"].items()),
    ]
    for student, hours in result["gpu_hours_h100"].items():
        lines.append(
            f"H100-hours for {student}: "
            + (
                f"unknown (set models.{student}.n_parameters for an estimate)"
                if hours is None
                else f"train ≈ {hours['train']}, eval ≈ {hours['eval']}"
            )
        )
    return "\n".join(lines)


def questions_in_source(p: Params) -> int:
    """How many questions the recipe's data source holds (its registry entry says, without a download)."""
    return source(p.data.source).size(p.data)

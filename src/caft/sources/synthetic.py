"""Offline questions with a controlled number of reasoning steps.

Families `arithmetic` and `units` are MMLU-Pro-shaped multiple choice; `chain` is free-form (`number`
format): "What is 8 + 1 - 3?" with k single-digit `+` / `-` steps, its formula in `expression` and the exact
step-by-step rationale ("8 + 1 = 9.\n9 - 3 = 6.\nThe answer is 6."). The chain is the positive control: a
135M model answers one step well and four steps badly, and its first-token entropy knows it.

This is the embedded default's data: it needs no network, is deterministic per seed, and every question
carries a correct step-by-step rationale (the offline "oracle" teacher). Difficulty = number of steps, so
the complexity signal has a ground truth to be compared against.
"""

from __future__ import annotations

import random

import pandas as pd

from caft.errors import CaftError
from caft.params import SyntheticData

_OPS = ("add", "subtract", "multiply")
# Unit ladders: (unit names from large to small, factor from each unit to the next).
_LADDERS = {
    "time": (("weeks", "days", "hours", "minutes", "seconds"), (7, 24, 60, 60)),
    "length": (("kilometres", "metres", "centimetres", "millimetres"), (1000, 100, 10)),
    "mass": (("tonnes", "kilograms", "grams", "milligrams"), (1000, 1000, 1000)),
    "data": (("terabytes", "gigabytes", "megabytes", "kilobytes", "bytes"), (1000, 1000, 1000, 1000)),
}


def _arithmetic(rng: random.Random, steps: int) -> tuple[str, int, str, list[int], int]:
    """A chain of `steps` operations: question, answer, rationale, step-slip distractors, steps used."""
    value = rng.randint(2, 20)
    phrases, lines, slips = [], [f"Start with {value}."], []
    for step in range(1, steps + 1):
        op = rng.choice(_OPS)
        n = rng.randint(2, 4) if op == "multiply" else rng.randint(2, 15)
        new = {"add": value + n, "subtract": value - n, "multiply": value * n}[op]
        symbol = {"add": "+", "subtract": "-", "multiply": "×"}[op]
        phrases.append({"add": f"add {n}", "subtract": f"subtract {n}", "multiply": f"multiply by {n}"}[op])
        lines.append(f"Step {step}: {value} {symbol} {n} = {new}.")
        slips += [value, value + n if op != "add" else value - n]
        value = new
    start = lines[0].removeprefix("Start with ").rstrip(".")
    question = f"Start with {start}, then {', then '.join(phrases)}. What number do you get?"
    lines.append(f"The answer is {value}.")
    return question, value, "\n".join(lines), slips, steps


def _units(rng: random.Random, steps: int) -> tuple[str, int, str, list[int], int]:
    """Convert a quantity down `steps` rungs of a unit ladder (capped by the ladder's length)."""
    names, factors = _LADDERS[rng.choice(sorted(_LADDERS))]
    steps = min(steps, len(factors))
    top = rng.randint(0, len(factors) - steps)
    amount = rng.randint(2, 9)
    value, lines, slips = amount, [], []
    for k in range(top, top + steps):
        new = value * factors[k]
        lines.append(f"{value} {names[k]} = {value} × {factors[k]} = {new} {names[k + 1]}.")
        slips += [value, new * factors[k], new // 10 if new >= 10 else new + 1]
        value = new
    question = f"How many {names[top + steps]} are there in {amount} {names[top]}?"
    lines.append(f"The answer is {value}.")
    return question, value, "\n".join(lines), slips, steps


def _chain(rng: random.Random, steps: int) -> tuple[str, int, str, str]:
    """`steps` single-digit additions / subtractions: question, answer, rationale, expression."""
    value = rng.randint(1, 9)
    expression, lines = str(value), []
    for _ in range(steps):
        op, n = rng.choice("+-"), rng.randint(1, 9)
        new = value + n if op == "+" else value - n
        expression += f" {op} {n}"
        lines.append(f"{value} {op} {n} = {new}.")
        value = new
    lines.append(f"The answer is {value}.")
    return f"What is {expression}?", value, "\n".join(lines), expression


_FAMILIES = {"arithmetic": ("arithmetic", _arithmetic), "units": ("unit conversion", _units)}


def _distractors(rng: random.Random, answer: int, slips: list[int], k: int) -> list[int]:
    """k distinct wrong values: first the plausible slips of the worked solution, then near misses."""
    pool = [s for s in dict.fromkeys(slips) if s != answer]
    rng.shuffle(pool)
    chosen = pool[:k]
    spread = max(10, abs(answer) // 5)
    while len(chosen) < k:
        candidate = answer + rng.choice([-1, 1]) * rng.randint(1, spread)
        if candidate != answer and candidate not in chosen:
            chosen.append(candidate)
    return chosen


def generate(cfg: SyntheticData, seed: int) -> pd.DataFrame:
    """`cfg.n_questions` questions, each from its own RNG seeded by (seed, index): adding questions never
    changes the earlier ones."""
    rows, seen_chains = [], set()
    for i in range(cfg.n_questions):
        rng = random.Random(f"caft-synthetic:{seed}:{i}")
        family = cfg.families[i % len(cfg.families)]
        steps = rng.randint(cfg.min_steps, cfg.max_steps)
        if family == "chain":
            rows.append(_unique_chain_row(rng, steps, f"syn-{seed}-{i:05d}", seen_chains))
            continue
        category, make = _FAMILIES[family]
        question, answer, rationale, slips, steps = make(rng, steps)
        n_options = rng.randint(cfg.min_options, cfg.max_options)
        options = [answer, *_distractors(rng, answer, slips, n_options - 1)]
        rng.shuffle(options)
        rows.append(
            {
                "question_id": f"syn-{seed}-{i:05d}",
                "question": question,
                "options": [str(o) for o in options],
                "answer_index": options.index(answer),
                "category": category,
                "rationale": rationale,
                "difficulty": steps,
                "source": f"synthetic/{family}",
                "answer": "",
                "expression": "",
            }
        )
    return pd.DataFrame(rows)


def _unique_chain_row(rng: random.Random, steps: int, question_id: str, seen: set[str]) -> dict:
    """A chain not generated before (one-step chains are only 162: repeats would put the same question in
    train and test); re-drawn from the same RNG, so the number of steps keeps its distribution."""
    for _ in range(10_000):
        question, answer, rationale, expression = _chain(rng, steps)
        if expression not in seen:
            seen.add(expression)
            return {
                "question_id": question_id,
                "question": question,
                "options": [],
                "answer_index": -1,
                "category": "arithmetic chain",
                "rationale": rationale,
                "difficulty": steps,
                "source": "synthetic/chain",
                "answer": str(answer),
                "expression": expression,
            }
    raise CaftError(
        f"data.synthetic: no new {steps}-step chain left (there are 162 one-step chains); ask for "
        "fewer questions or raise min_steps"
    )

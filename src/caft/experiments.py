"""One compact table of DVC experiments (`caft compare`): per experiment, what its params change and, per
student x strategy, the numbers the paper compares — the experiments and their params from `dvc exp show
--json`, each one's numbers from its own `reports/report.json` (in git: `git show <rev>:reports/report.json`).
`frontier` reads the same rows as a threshold sweep (`caft sweep`): accuracy against teacher CoT tokens.

`dvc exp show` lists every param and metric (hundreds of columns); this keeps the params that differ between
the rows and the report's headline metrics: balanced accuracy with its 95 % interval (on the balanced test set,
which is drawn from the split's bands, so it moves with `split.threshold`), accuracy on all test questions (the
same questions in every experiment), hard-band accuracy, teacher calls, CoT target tokens, the saving against
distill, and the entropy's ROC AUC for a wrong answer.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

from caft.errors import CaftError
from caft.strategies import baselines
from caft.teacher.run import cost

REPORT = "reports/report.json"
HEADLINE = "metrics/summary"
COLUMNS = (
    "experiment",
    "student",
    "strategy",
    "balanced-set acc. [95 % CI]",
    "acc. (all test)",
    "hard acc.",
    "teacher calls",
    "CoT tokens",
    "saved vs distill",
    "ROC AUC",
)


def flatten(node: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in node.items():
        if isinstance(value, dict):
            out |= flatten(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def report_at(rev: str) -> dict:
    """The whole report of the workspace or of a commit / experiment (`reports/report.json` is committed with
    it, cache: false); {} where there is none. The declared metrics hold only the headline numbers, so the
    intervals, savings and teacher tokens come from here."""
    if rev == "workspace":
        path = Path(REPORT)
        return json.loads(path.read_text()) if path.exists() else {}
    proc = subprocess.run(["git", "show", f"{rev}:{REPORT}"], capture_output=True, text=True)
    return json.loads(proc.stdout) if proc.returncode == 0 else {}


def rows(shown: list[dict], read: Callable[[str], dict] = report_at) -> list[dict]:
    """(name, params, metrics per file, report) of the workspace, each listed commit and its finished
    experiments, in `dvc exp show` order; rows DVC could not read are left out, and so are experiments still
    queued or running (DVC lists a running one with the workspace's metrics) or failed."""
    rows = []

    def add(entry: dict, fallback: str) -> None:
        data = entry.get("data")
        if not data:
            return
        params = flatten(data.get("params", {}).get("params.yaml", {}).get("data", {}) or {})
        metrics = {path: m.get("data", {}) for path, m in (data.get("metrics") or {}).items()}
        name = entry.get("name") or fallback
        rows.append({"name": name, "params": params, "metrics": metrics, "report": read(entry["rev"])})

    for commit in shown:
        add(commit, "workspace" if commit["rev"] == "workspace" else commit["rev"][:7])
        for exp in commit.get("experiments") or []:
            if (exp.get("executor") or {}).get("state") not in (None, "success"):
                continue
            for rev in exp.get("revs", []):
                add(rev, rev["rev"][:7])
    return rows


def changed(rows: list[dict]) -> list[str]:
    """The params whose values differ between rows (in params.yaml order)."""
    keys = dict.fromkeys(k for row in rows for k in row["params"])
    return [k for k in keys if len({json.dumps(row["params"].get(k)) for row in rows}) > 1]


def _num(value: object, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _count(value: object) -> str:
    """A count (teacher calls, tokens): whole as an integer, a mean over seeds with one decimal."""
    if value is None:
        return "–"
    value = float(value)
    return f"{value:.0f}" if value.is_integer() else f"{value:.1f}"


def lines(rows: list[dict]) -> list[list[str]]:
    """One line per experiment x student x strategy of its report."""
    out = []
    for row in rows:
        for student, by_strategy in row["report"].items():
            auc = row["metrics"].get(f"{HEADLINE}/{student}/entropy.json", {}).get("entropy_roc_auc")
            for strategy, m in by_strategy.items():
                ci = f"[{_num(m.get('balanced_set_accuracy_ci_low'))}, {_num(m.get('balanced_set_accuracy_ci_high'))}]"
                saving = m.get("data_saving_one_pass")
                out.append(
                    [
                        row["name"],
                        student,
                        strategy,
                        f"{_num(m.get('balanced_set_accuracy'))} {ci}",
                        _num(m.get("accuracy")),
                        _num(m.get("band_hard_accuracy")),
                        _count(m.get("teacher_calls")),
                        _count(m.get("cot_target_tokens")),
                        "–" if saving is None else f"{saving:.1%}",  # the summary's unit
                        _num(auc),
                    ]
                )
    return out


def markdown(rows: list[dict]) -> str:
    """The params each experiment changes, once per experiment, then the table (a row per experiment x student
    x strategy, short enough for a terminal)."""
    body = lines(rows)
    if not body:
        raise CaftError(f"no experiment has {REPORT} (run the pipeline, or `dvc exp run`, first)")
    keys = changed(rows)
    settings = [
        f"- {row['name']}: " + (", ".join(f"{k}={json.dumps(row['params'].get(k))}" for k in keys) or "–")
        for row in rows
        if row["report"]
    ]
    table = [COLUMNS, tuple("---" for _ in COLUMNS), *body]
    head = ["Params that differ between the experiments:", "", *settings, ""] if keys else []
    return "\n".join([*head, *("| " + " | ".join(cells) + " |" for cells in table)]) + "\n"


def show(extra_args: list[str]) -> list[dict]:
    """`dvc exp show --json` (plus e.g. `-A` / `-n 3`), parsed."""
    proc = subprocess.run(["dvc", "exp", "show", "--json", *extra_args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise CaftError(f"dvc exp show failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")
    return json.loads(proc.stdout)


# answer-only (no CoT tokens) and CoT on everything: the end points, whatever the threshold
FRONTIER_ENDS = baselines()
FRONTIER_SWEPT = ("caft", "random")  # the paper, and its control: the same number of CoT items, drawn at random
FRONTIER_COLUMNS = (
    "student",
    "strategy",
    "threshold",
    "cot_target_tokens",
    "teacher_calls",
    "teacher_cost_usd",
    "accuracy",
    "ci_low",
    "ci_high",
    "pareto",
)


def _teacher_cost(params: dict, m: dict) -> float:
    """US dollars for a run's teacher tokens at its experiment's configured prices (`teacher.price_*_per_m`;
    0 when unpriced, or for a teacher that reports no tokens: the oracle)."""
    prices = (params.get("teacher.price_prompt_per_m") or 0.0, params.get("teacher.price_completion_per_m") or 0.0)
    return round(cost(m.get("teacher_prompt_tokens") or 0, m.get("teacher_completion_tokens") or 0, prices), 6)


def frontier(rows: list[dict]) -> list[dict]:
    """The accuracy-per-teacher-token frontier of a threshold sweep: one point per caft (and random-control) run
    at each `split.threshold`, and sft and distill (threshold-free) as the end points, each point once per
    student. Accuracy is over all test questions: the balanced test set is drawn from the split's bands, which
    move with the threshold, so balanced accuracies of two thresholds are not on the same questions.
    `pareto`: no other point of the student has at least its accuracy with at most its CoT target tokens (and
    is better in one)."""
    points, seen = [], set()
    for row in rows:
        threshold = row["params"].get("split.threshold")
        for student, by_strategy in row["report"].items():
            for strategy in (*FRONTIER_ENDS, *FRONTIER_SWEPT):
                m = by_strategy.get(strategy)
                key = (student, strategy, None if strategy in FRONTIER_ENDS else threshold)
                if m is None or m.get("accuracy") is None or key in seen:
                    continue
                seen.add(key)
                points.append(
                    {
                        "student": student,
                        "strategy": strategy,
                        "threshold": key[2],
                        "cot_target_tokens": m.get("cot_target_tokens") or 0,
                        "teacher_calls": m.get("teacher_calls") or 0,
                        "teacher_cost_usd": _teacher_cost(row["params"], m),
                        "accuracy": m["accuracy"],
                        "ci_low": m.get("accuracy_ci_low"),
                        "ci_high": m.get("accuracy_ci_high"),
                    }
                )
    for p in points:
        rivals = [q for q in points if q["student"] == p["student"] and q is not p]
        p["pareto"] = not any(
            q["accuracy"] >= p["accuracy"]
            and q["cot_target_tokens"] <= p["cot_target_tokens"]
            and (q["accuracy"] > p["accuracy"] or q["cot_target_tokens"] < p["cot_target_tokens"])
            for q in rivals
        )
    if not points:
        raise CaftError(f"no experiment has sft / caft / distill results in {REPORT} (run the sweep first)")
    return sorted(points, key=lambda p: (p["student"], p["cot_target_tokens"], p["accuracy"]))


def frontier_markdown(points: list[dict]) -> str:
    def cell(point: dict, column: str) -> str:
        if column == "pareto":
            return "yes" if point[column] else ""
        if column == "threshold":
            return "–" if point[column] is None else f"{point[column]:g}"
        if column in ("cot_target_tokens", "teacher_calls"):
            return _count(point[column])
        return _num(point[column])

    table = [FRONTIER_COLUMNS, tuple("---" for _ in FRONTIER_COLUMNS)]
    table += [tuple(cell(point, c) for c in FRONTIER_COLUMNS) for point in points]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in table) + "\n"


FRONTIER_AXES = {"cot_target_tokens": "teacher CoT target tokens", "teacher_cost_usd": "teacher cost (USD)"}


def priced(points: list[dict]) -> bool:
    """Whether any point has a teacher cost: only then is the chart against cost drawn."""
    return any(p["teacher_cost_usd"] for p in points)


def frontier_chart(points: list[dict], x_field: str = "cot_target_tokens") -> dict:
    """A Vega-Lite chart: test accuracy (with its 95 % interval) against CoT target tokens (or the teacher's
    cost), one colour per strategy, the swept points labelled by threshold, the Pareto points (by tokens)
    joined; one panel per student."""
    labelled = [{**p, "label": "" if p["threshold"] is None else f"t={p['threshold']}"} for p in points]
    x = {"field": x_field, "type": "quantitative", "title": FRONTIER_AXES[x_field]}
    y = {"field": "accuracy", "type": "quantitative", "title": "test accuracy (all questions)"}
    color = {"field": "strategy", "type": "nominal"}
    return {
        "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
        "title": f"Accuracy against {FRONTIER_AXES[x_field]}: the threshold frontier",
        "data": {"values": labelled},
        "facet": {"field": "student", "type": "nominal"},
        "spec": {
            "layer": [
                {
                    "mark": "rule",
                    "encoding": {"x": x, "y": {**y, "field": "ci_low"}, "y2": {"field": "ci_high"}, "color": color},
                },
                {"mark": {"type": "point", "filled": True, "size": 80}, "encoding": {"x": x, "y": y, "color": color}},
                {
                    "mark": {"type": "text", "dx": 8, "align": "left"},
                    "encoding": {"x": x, "y": y, "text": {"field": "label"}},
                },
                {
                    "transform": [{"filter": "datum.pareto"}],
                    "mark": {"type": "line", "strokeDash": [4, 3], "color": "gray"},
                    "encoding": {"x": x, "y": y},
                },
            ]
        },
    }

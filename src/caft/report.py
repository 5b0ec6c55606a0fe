"""The comparison table: students × strategies, accuracy on the balanced test set with its CI, per band,
teacher calls and tokens, and training-target tokens counted both ways the paper does (one pass → "62 % less
data"; epoch-weighted → "81 % less data"), relative to full distillation."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from caft.errors import CaftError
from caft.metrics import score, wilson
from caft.split import BANDS


def band_metrics(preds: pd.DataFrame, assignments: pd.DataFrame, seed: int, parsed_only: bool = False) -> dict:
    """Accuracy on the balanced test set and per band (test rows the split banded). With `parsed_only` (the
    authors' convention, behind eval.compat_parsed_only) also correct / parsed on the balanced set."""
    test = assignments.loc[assignments["subset"] == "test", ["question_id", "band", "balanced"]]
    joined = preds.merge(test, on="question_id", how="left")
    balanced = joined[joined["balanced"].fillna(False).astype(bool)]
    out = score(balanced, seed, prefix="balanced_")
    if parsed_only:
        parsed = balanced[balanced["parsed"]]
        out["balanced_accuracy_parsed_only"] = round(float(parsed["correct"].mean()), 6) if len(parsed) else None
    for band in BANDS:
        part = joined[joined["band"] == band]
        k, n = int(part["correct"].sum()), len(part)
        low, high = wilson(k, n)
        out[f"band_{band}_n"] = n
        out[f"band_{band}_accuracy"] = round(k / n, 6) if n else None
        out[f"band_{band}_ci_low"], out[f"band_{band}_ci_high"] = round(low, 6), round(high, 6)
    return out


def step_accuracy(preds: pd.DataFrame, difficulty: pd.Series) -> dict:
    """Accuracy per true number of reasoning steps (synthetic data knows it; -1 = unknown is left out)."""
    steps = preds["question_id"].map(difficulty)
    return {
        f"steps_{int(k)}_accuracy": round(float(part["correct"].mean()), 6)
        for k, part in preds.groupby(steps)
        if k >= 0
    }


def control_line(student: str, entropy: dict) -> str:
    """What the student's first-answer-token entropy knows: its ROC AUC for a wrong answer, its rank
    correlation with the true number of steps, and the single-token accuracy per step count."""
    auc, rho = entropy.get("roc_auc"), entropy.get("spearman_entropy_difficulty")
    per_step = {int(k.rsplit("_", 1)[1]): v for k, v in entropy.items() if k.startswith("accuracy_difficulty_")}
    line = f"- **{student}**: entropy → wrong answer ROC AUC {_fmt(auc)}; single-token accuracy "
    line += _fmt(entropy["accuracy"])
    if rho is not None:
        line += f"; Spearman ρ(entropy, true steps) {_fmt(rho)}"
    if per_step:
        line += "; accuracy by steps " + ", ".join(f"{k}: {_fmt(v)}" for k, v in sorted(per_step.items()))
    return line


def band_table(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per student × strategy × band (accuracy and its 95 % CI): the per-band bar chart's data."""
    return pd.DataFrame(
        [
            {
                "run": f"{r['student']}/{r['strategy']}",
                "strategy": r["strategy"],
                "band": band,
                "accuracy": r[f"band_{band}_accuracy"],
                "ci_low": r[f"band_{band}_ci_low"],
                "ci_high": r[f"band_{band}_ci_high"],
            }
            for r in rows.to_dict(orient="records")
            for band in BANDS
        ]
    )


def teacher_usage(sets: pd.DataFrame, traces: pd.DataFrame) -> dict:
    """Teacher calls and the teacher's completion tokens behind one strategy's CoT targets."""
    cot_ids = set(sets.loc[sets["kind"] == "cot", "question_id"])
    used = traces[traces["question_id"].isin(cot_ids)]
    return {"teacher_calls": len(cot_ids), "teacher_completion_tokens": int(used["completion_tokens"].fillna(0).sum())}


def savings(rows: pd.DataFrame) -> pd.DataFrame:
    """Share of training-target tokens saved relative to `distill` of the same student (None without it)."""
    rows = rows.copy()
    for kind in ("one_pass", "epoch_weighted"):
        ref = rows[rows["strategy"] == "distill"].set_index("student")[f"target_tokens_{kind}"]
        base = rows["student"].map(ref)
        rows[f"data_saving_{kind}"] = (1 - rows[f"target_tokens_{kind}"] / base).round(4).where(base.notna())
    return rows


def to_metrics(rows: pd.DataFrame) -> dict:
    """{student: {strategy: {metric: value}}}: DVC shows it as stable keys `student.strategy.metric`."""
    out: dict = {}
    for row in rows.to_dict(orient="records"):
        values = {k: (None if pd.isna(v) else v) for k, v in row.items() if k not in ("student", "strategy")}
        out.setdefault(row["student"], {})[row["strategy"]] = values
    return out


def _fmt(value) -> str:
    return "–" if value is None or pd.isna(value) else f"{value:.3f}"


def _band(r: dict, band: str) -> str:
    if r[f"band_{band}_accuracy"] is None or pd.isna(r[f"band_{band}_accuracy"]):
        return "–"
    return f"{r[f'band_{band}_accuracy']:.3f} [{r[f'band_{band}_ci_low']:.2f}, {r[f'band_{band}_ci_high']:.2f}]"


def to_markdown(rows: pd.DataFrame) -> str:
    head = (
        "| student | strategy | balanced acc. [95 % CI] | n | full acc. | parse fail | "
        "easy / medium / hard [95 % CI] | teacher calls | CoT target tokens | "
        "target tokens (1 pass / epoch-weighted) | saved vs distill |"
    )
    compat = "balanced_accuracy_parsed_only" in rows.columns
    if compat:
        head += " acc. over parsed answers (authors' convention) |"
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for r in rows.to_dict(orient="records"):
        bands = " / ".join(_band(r, b) for b in BANDS)
        saved = (
            "–"
            if pd.isna(r.get("data_saving_one_pass"))
            else f"{r['data_saving_one_pass']:.1%} / {r['data_saving_epoch_weighted']:.1%}"
        )
        lines.append(
            f"| {r['student']} | {r['strategy']} | {r['balanced_accuracy']:.3f} [{r['balanced_accuracy_ci_low']:.3f}, "
            f"{r['balanced_accuracy_ci_high']:.3f}] | {r['balanced_n']} | {r['accuracy']:.3f} | "
            f"{r['parse_fail_rate']:.3f} | {bands} | {r['teacher_calls']} | {r['cot_target_tokens']} | "
            f"{r['target_tokens_one_pass']} / {r['target_tokens_epoch_weighted']:.0f} | {saved} |"
            + (f" {_fmt(r['balanced_accuracy_parsed_only'])} |" if compat else "")
        )
    steps = sorted({c for c in rows.columns if c.startswith("steps_")}, key=lambda c: int(c.split("_")[1]))
    if steps:
        lines += [
            "",
            "Accuracy by the true number of reasoning steps (all test questions):",
            "",
            "| student | strategy | " + " | ".join(f"{c.split('_')[1]} steps" for c in steps) + " |",
            "|---|---|" + "---|" * len(steps),
        ]
        lines += [
            f"| {r['student']} | {r['strategy']} | " + " | ".join(_fmt(r.get(c)) for c in steps) + " |"
            for r in rows.to_dict(orient="records")
        ]
    return "\n".join(lines) + "\n"


def loss_curve(live_dir: Path, student: str, strategy: str) -> pd.DataFrame:
    """One training's loss per step (its dvclive `loss.tsv`), labelled, for the report's one chart per student
    with a curve per strategy (caft's phase 2 continues phase 1's steps)."""
    path = Path(live_dir) / "plots" / "metrics" / "train" / "loss.tsv"
    if not path.exists():
        raise CaftError(f"no training curve for {student}/{strategy}: {path} (run `dvc repro`)")
    curve = pd.read_csv(path, sep="\t")[["step", "loss"]]
    return curve.assign(student=student, strategy=strategy)[["student", "strategy", "step", "loss"]]

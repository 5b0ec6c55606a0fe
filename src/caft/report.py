"""The comparison table: students × strategies, accuracy on the balanced test set with its CI, per band,
teacher calls and tokens, and training-target tokens counted both ways the paper does (one pass → "62 % less
data"; epoch-weighted → "81 % less data"), relative to full distillation."""

from __future__ import annotations

import pandas as pd

from caft.evaluate import score
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
        out[f"band_{band}_n"] = len(part)
        out[f"band_{band}_accuracy"] = round(float(part["correct"].mean()), 6) if len(part) else None
    return out


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


def to_markdown(rows: pd.DataFrame) -> str:
    head = (
        "| student | strategy | balanced acc. [95 % CI] | n | full acc. | parse fail | easy / medium / hard | "
        "teacher calls | CoT target tokens | target tokens (1 pass / epoch-weighted) | saved vs distill |"
    )
    compat = "balanced_accuracy_parsed_only" in rows.columns
    if compat:
        head += " acc. over parsed answers (authors' convention) |"
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for r in rows.to_dict(orient="records"):
        bands = " / ".join(_fmt(r[f"band_{b}_accuracy"]) for b in BANDS)
        saved = ("–" if pd.isna(r.get("data_saving_one_pass"))
                 else f"{r['data_saving_one_pass']:.1%} / {r['data_saving_epoch_weighted']:.1%}")  # fmt: skip
        lines.append(
            f"| {r['student']} | {r['strategy']} | {r['balanced_accuracy']:.3f} [{r['balanced_accuracy_ci_low']:.3f}, "
            f"{r['balanced_accuracy_ci_high']:.3f}] | {r['balanced_n']} | {r['accuracy']:.3f} | "
            f"{r['parse_fail_rate']:.3f} | {bands} | {r['teacher_calls']} | {r['cot_target_tokens']} | "
            f"{r['target_tokens_one_pass']} / {r['target_tokens_epoch_weighted']:.0f} | {saved} |"
            + (f" {_fmt(r['balanced_accuracy_parsed_only'])} |" if compat else "")
        )
    return "\n".join(lines) + "\n"

"""The report's markdown (reports/summary.md): the runs' table, accuracy by true steps, the paired
differences, the seeds' spread, the per-epoch selection and the re-banded phases, each rendered from the numbers
`caft.report` computes."""

from __future__ import annotations

import re

import pandas as pd

from caft.split import BANDS
from caft.strategies import baseline, baselines


def _fmt(value, spec: str = ".3f") -> str:
    """A number of the report, or "n/a" where a run has none (a source or backend without it)."""
    if value is None or pd.isna(value):
        return "n/a"
    return format(int(value) if spec == "d" else value, spec)  # a count may come through a float column


def _band(r: dict, band: str) -> str:
    if r[f"band_{band}_accuracy"] is None or pd.isna(r[f"band_{band}_accuracy"]):
        return "n/a"
    return f"{r[f'band_{band}_accuracy']:.3f} [{_fmt(r.get(f'band_{band}_ci_low'), '.2f')}, " + (
        f"{_fmt(r.get(f'band_{band}_ci_high'), '.2f')}]"
    )


def _labeller(rows: pd.DataFrame):
    """A run's strategy cell: its name, and its training seed when the runs have several."""
    several = "seed" in rows.columns and rows["seed"].nunique() > 1
    return lambda r: f"{r['strategy']} · seed {r['seed']}" if several else r["strategy"]


def control_line(student: str, entropy: dict) -> str:
    """What the student's first-answer-token entropy knows: its ROC AUC for a wrong answer, its rank
    correlation with the true number of steps, and the single-token accuracy per step count."""
    auc, rho = entropy.get("roc_auc"), entropy.get("spearman_entropy_steps")
    per_step = {int(m[1]): v for k, v in entropy.items() if (m := re.fullmatch(r"steps_(\d+)_accuracy", k))}
    line = f"- **{student}**: entropy → wrong answer ROC AUC {_fmt(auc)}; single-token accuracy "
    line += _fmt(entropy["accuracy"])
    if rho is not None:
        line += f"; Spearman ρ(entropy, true steps) {_fmt(rho)}"
    if per_step:
        line += "; accuracy by steps " + ", ".join(f"{k}: {_fmt(v)}" for k, v in sorted(per_step.items()))
    return line


def to_markdown(rows: pd.DataFrame) -> str:
    """The runs' table (one row per strategy, or per strategy x seed), and accuracy by true steps."""
    label = _labeller(rows)
    head = (
        "| student | strategy | balanced-set acc. [95 % CI] | n | acc., all test questions | n | parse fail | "
        "easy / medium / hard [95 % CI] | teacher calls | CoT target tokens | "
        f"target tokens (1 pass / epoch-weighted) | saved vs {baseline('cot')} |"
    )
    compat = "balanced_set_accuracy_parsed_only" in rows.columns
    if compat:
        head += " acc. over parsed answers (authors' convention) |"
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for r in rows.to_dict(orient="records"):
        bands = " / ".join(_band(r, b) for b in BANDS)
        saved = (
            "n/a"
            if pd.isna(r.get("data_saving_one_pass"))
            else f"{r['data_saving_one_pass']:.1%} / {_fmt(r.get('data_saving_epoch_weighted'), '.1%')}"
        )
        cells = [
            r["student"],
            label(r),
            f"{_fmt(r['balanced_set_accuracy'])} [{_fmt(r.get('balanced_set_accuracy_ci_low'))}, "
            f"{_fmt(r.get('balanced_set_accuracy_ci_high'))}]",
            _fmt(r.get("balanced_set_n"), "d"),
            _fmt(r.get("accuracy")),
            _fmt(r.get("n"), "d"),
            _fmt(r.get("parse_fail_rate")),
            bands,
            _fmt(r.get("teacher_calls"), "d"),
            _fmt(r.get("cot_target_tokens"), "d"),
            f"{_fmt(r.get('target_tokens_one_pass'), 'd')} / {_fmt(r.get('target_tokens_epoch_weighted'), '.0f')}",
            saved,
            *([_fmt(r.get("balanced_set_accuracy_parsed_only"))] if compat else []),
        ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
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
            f"| {r['student']} | {label(r)} | " + " | ".join(_fmt(r.get(c)) for c in steps) + " |"
            for r in rows.to_dict(orient="records")
        ]
    return "\n".join(lines) + "\n"


def seeds_markdown(rows: pd.DataFrame) -> str:
    """Mean ± sd over the training seeds (only when there are several)."""
    if (rows["n_seeds"] <= 1).all():
        return ""
    lines = [
        "Over training seeds (`seeds`; mean ± sd of the runs above):",
        "",
        "| student | strategy | seeds | balanced-set acc. mean ± sd | easy / medium / hard (mean) |",
        "|---|---|---|---|---|",
    ]
    for r in rows.to_dict(orient="records"):
        bands = " / ".join(_fmt(r[f"band_{b}_accuracy"]) for b in BANDS)
        lines.append(
            f"| {r['student']} | {r['strategy']} | {r['n_seeds']} | {_fmt(r['balanced_set_accuracy'])} ± "
            f"{_fmt(r['balanced_set_accuracy_sd'])} | {bands} |"
        )
    return "\n".join(lines) + "\n"


def paired_markdown(rows: pd.DataFrame) -> str:
    """The paired differences as a table: one row per strategy, one column per baseline."""
    bases = [b for b in baselines() if f"minus_{b}_mean" in rows.columns]
    if not bases:
        return ""
    lines = [
        "Paired differences on the balanced test set (this strategy's accuracy minus the baseline's, question by "
        "question and seed by seed; percentile bootstrap 95 % CI over questions and seeds):",
        "",
        "| student | strategy | " + " | ".join(f"− {b} [95 % CI]" for b in bases) + " |",
        "|---|---|" + "---|" * len(bases),
    ]
    for r in rows.to_dict(orient="records"):
        cells = [
            "–"
            if pd.isna(r.get(f"minus_{b}_mean"))
            else f"{r[f'minus_{b}_mean']:+.3f} [{r[f'minus_{b}_ci_low']:+.3f}, {r[f'minus_{b}_ci_high']:+.3f}]"
            for b in bases
        ]
        lines.append(f"| {r['student']} | {r['strategy']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def epoch_markdown(rows: pd.DataFrame) -> str:
    """The paper's number (the last epoch) beside the best-by-validation one, and the epoch whose weights were
    kept and tested (eval.select); empty when no training measured its epochs."""
    if "best_epoch" not in rows.columns or rows["best_epoch"].isna().all():
        return ""
    lines = [
        "Validation accuracy per epoch (`eval.every_epoch`; the curves: `plots/report/epochs.csv`). The test set "
        "saw only the kept epoch's weights:",
        "",
        "| student | strategy | val. acc. last epoch | best val. acc. (epoch) | kept (eval.select) | "
        "balanced test acc. of the kept weights |",
        "|---|---|---|---|---|---|",
    ]
    label = _labeller(rows)
    for r in rows.to_dict(orient="records"):
        if pd.isna(r.get("best_epoch")):
            continue
        lines.append(
            f"| {r['student']} | {label(r)} | {_fmt(r['val_accuracy_final'])} | "
            f"{_fmt(r['val_accuracy_best'])} ({int(r['best_epoch'])}) | epoch {int(r['selected_epoch'])} "
            f"({r['select']}) | {_fmt(r['balanced_set_accuracy'])} |"
        )
    return "\n".join(lines) + "\n"


REBANDED = re.compile(r"^phase(\d+)_rebanded_(\w+)$")


def reband_markdown(trainings: list[dict]) -> str:
    """How a re-banded phase's hard band moved (caft_reestimate): per training (its train metrics, with
    student, strategy and seed), the split's hard band against the one the model trained so far picked, and the
    ROC AUC of entropy for a wrong answer before and after the earlier phases, on the same train candidates."""
    lines = []
    for t in trainings:
        found: dict[str, dict] = {}
        for key, value in t.items():
            if m := REBANDED.match(key):
                found.setdefault(m[1], {})[m[2]] = value
        for phase, r in sorted(found.items()):
            lines.append(
                f"| {t['student']} | {t['strategy']} · seed {t['seed']} | {phase} | {r['candidates_n']} | "
                f"{r['hard_before_n']} → {r['hard_after_n']} | {r['hard_kept_n']} ({_fmt(r['hard_kept_share'])}) | "
                f"{_fmt(r['hard_jaccard'])} | {_fmt(r['roc_auc_before'])} → {_fmt(r['roc_auc_after'])} | "
                f"{_fmt(r['accuracy_before'])} → {_fmt(r['accuracy_after'])} |"
            )
    if not lines:
        return ""
    head = [
        "Re-estimated hard band (`caft_reestimate`: the model trained so far re-scores the train candidates "
        "before the phase; ROC AUC of entropy for a wrong answer and single-token accuracy on them, before → "
        "after):",
        "",
        "| student | training | phase | candidates | hard before → after | still hard (share) | Jaccard | "
        "ROC AUC | accuracy |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    return "\n".join(head + lines) + "\n"


def summary(runs: pd.DataFrame, rows: pd.DataFrame, entropy: dict[str, dict], rebanded: list[dict]) -> str:
    """reports/summary.md: what each student's entropy knows, the runs' table, then the parts that apply (the
    seeds' spread, the paired differences, the per-epoch selection, the re-banded phases)."""
    control = [control_line(s, values) for s, values in entropy.items()]
    text = "# caft: students × strategies\n\n" + "\n".join(control) + "\n\n" + to_markdown(runs)
    extras = (seeds_markdown(rows), paired_markdown(rows), epoch_markdown(runs), reband_markdown(rebanded))
    for extra in extras:
        text += "\n" + extra if extra else ""
    return text

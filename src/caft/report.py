"""The report's numbers, students × strategies (× training seeds): accuracy on the balanced test set with its
CI, per band, teacher calls and tokens, and training-target tokens counted both ways the paper does (one pass →
"62 % less data"; epoch-weighted → "81 % less data"), relative to full distillation. `caft.report_markdown`
renders them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from pandas.api.types import is_numeric_dtype

from caft.errors import CaftError
from caft.metrics import paired_difference, score, wilson
from caft.params import Params
from caft.split import BANDS
from caft.strategies import baseline, baselines, get


def band_metrics(preds: pd.DataFrame, assignments: pd.DataFrame, seed: int, parsed_only: bool = False) -> dict:
    """Accuracy on the balanced test set and per band (test rows the split banded). With `parsed_only` (the
    authors' convention, behind eval.compat_parsed_only) also correct / parsed on the balanced set."""
    test = assignments.loc[assignments["subset"] == "test", ["question_id", "band", "balanced"]]
    joined = preds.merge(test, on="question_id", how="left")
    balanced = joined[joined["balanced"].fillna(False).astype(bool)]
    out = score(balanced, seed, prefix="balanced_set_")
    if parsed_only:
        parsed = balanced[balanced["parsed"]]
        out["balanced_set_accuracy_parsed_only"] = round(float(parsed["correct"].mean()), 6) if len(parsed) else None
    for band in BANDS:
        part = joined[joined["band"] == band]
        k, n = int(part["correct"].sum()), len(part)
        low, high = wilson(k, n)
        out[f"band_{band}_n"] = n
        out[f"band_{band}_accuracy"] = round(k / n, 6) if n else None
        out[f"band_{band}_ci_low"], out[f"band_{band}_ci_high"] = round(low, 6), round(high, 6)
    return out


BASELINES = baselines()


def paired(
    preds: dict[tuple[str, int], pd.DataFrame], assignments: pd.DataFrame, seed: int, n_boot: int
) -> dict[str, dict]:
    """Per strategy, its balanced-test accuracy minus each baseline's (sft, distill), question by question and
    seed by seed (the same seed's runs paired), with a bootstrap 95 % interval over questions and seeds
    (`minus_<baseline>_{mean,ci_low,ci_high}`): whether caft beats sft, or loses to distill, by more than the
    test set's and the seeds' noise."""
    balanced = sorted(assignments.loc[assignments["subset"].eq("test") & assignments["balanced"], "question_id"])
    strategies = list(dict.fromkeys(x for x, _ in preds))
    seeds = list(dict.fromkeys(s for _, s in preds))

    def matrix(strategy: str) -> np.ndarray:  # seeds x balanced questions, 0/1
        return np.stack(
            [preds[strategy, s].set_index("question_id")["correct"].reindex(balanced).to_numpy(float) for s in seeds]
        )

    out: dict[str, dict] = {name: {} for name in strategies}
    for name in strategies:
        for base in BASELINES:
            if base == name or base not in strategies:
                continue
            diff = paired_difference(matrix(name), matrix(base), seed, n_boot)
            out[name] |= {f"minus_{base}_{k}": v for k, v in diff.items() if k != "n"}
    return out


def over_seeds(runs: pd.DataFrame, differences: dict[str, dict[str, dict]]) -> pd.DataFrame:
    """One row per student x strategy: the mean over training seeds of every number of its runs, the seeds'
    standard deviation of the balanced accuracy, and the paired differences. With one seed the row is that
    run's; with several, the per-run Wilson intervals are dropped (they describe one run, not the mean)."""
    numeric = [c for c in runs.columns if c not in ("student", "strategy", "seed") and is_numeric_dtype(runs[c])]
    grouped = runs.groupby(["student", "strategy"], sort=False)
    rows = grouped[numeric].mean().reset_index()
    rows["n_seeds"] = grouped.size().to_numpy()
    rows["balanced_set_accuracy_sd"] = grouped["balanced_set_accuracy"].std(ddof=1).round(6).to_numpy()
    for c in [c for c in runs.columns if c not in numeric and c not in ("student", "strategy", "seed")]:
        rows[c] = grouped[c].first().to_numpy()
    if (rows["n_seeds"] > 1).any():
        rows = rows.drop(columns=[c for c in rows.columns if "_ci_" in c])
    extra = [differences[r.student][r.strategy] for r in rows.itertuples(index=False)]
    return pd.concat([rows, pd.DataFrame(extra, index=rows.index)], axis=1)


def step_accuracy(preds: pd.DataFrame, difficulty: pd.Series) -> dict:
    """Accuracy per true number of reasoning steps (synthetic data knows it; -1 = unknown is left out)."""
    steps = preds["question_id"].map(difficulty)
    return {
        f"steps_{int(k)}_accuracy": round(float(part["correct"].mean()), 6)
        for k, part in preds.groupby(steps)
        if k >= 0
    }


def band_table(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per student × strategy × band (accuracy and its 95 % CI): the per-band bar chart's data."""
    return pd.DataFrame(
        [
            {
                "run": f"{r['student']}/{r['strategy']}",
                "strategy": r["strategy"],
                "band": band,
                "accuracy": r[f"band_{band}_accuracy"],
                "ci_low": r.get(f"band_{band}_ci_low"),  # none over several seeds
                "ci_high": r.get(f"band_{band}_ci_high"),
            }
            for r in rows.to_dict(orient="records")
            for band in BANDS
        ]
    )


def predictions(eval_dir: Path, student: str, strategy: str, seed: int) -> pd.DataFrame:
    preds_file = eval_dir / student / strategy / str(seed) / "predictions.parquet"
    if not preds_file.exists():
        raise CaftError(f"no predictions for {student}/{strategy}/{seed}: {preds_file} (run `dvc repro`)")
    return pd.read_parquet(preds_file)


def student_rows(student: str, dirs: dict[str, Path], traces, difficulty, p: Params) -> tuple[list[dict], dict]:
    """One student's runs (strategy x seed: each one's own numbers) and, per strategy, its paired differences
    against the baselines over questions and seeds. `dirs`: the eval, split, train-metrics and sets folders."""
    preds = {(x, seed): predictions(dirs["eval"], student, x, seed) for x in p.strategies for seed in p.seeds}
    assignments = pd.read_parquet(dirs["split"] / student / "assignments.parquet")
    runs = [
        run_row(student, x, seed, preds[x, seed], assignments, dirs, traces, difficulty, p)
        for x in p.strategies
        for seed in p.seeds
    ]
    return runs, paired(preds, assignments, p.eval.seed, p.eval.n_boot)


def run_row(
    student: str,
    strategy: str,
    seed: int,
    preds: pd.DataFrame,
    assignments: pd.DataFrame,
    dirs: dict[str, Path],
    traces: pd.DataFrame,
    difficulty: pd.Series,
    p: Params,
) -> dict:
    """One training run's numbers: its scores, per band and per true step count, its teacher use, its target
    tokens and which epoch's weights it kept."""
    trained = json.loads((dirs["train"] / student / strategy / f"{seed}.json").read_text())
    sets = pd.read_parquet(dirs["sets"] / student / strategy / f"{seed}.parquet")
    tokens = {
        k: trained[k]
        for k in ("n_items", "cot_target_tokens", "target_tokens_one_pass", "target_tokens_epoch_weighted")
    }
    return {
        "student": student,
        "strategy": strategy,
        "seed": seed,
        **score(preds, p.eval.seed),
        **band_metrics(preds, assignments, p.eval.seed, parsed_only=p.eval.compat_parsed_only),
        **step_accuracy(preds, difficulty),
        **teacher_usage(sets[sets["subset"] == "train"], traces),
        **tokens,
        **{k: trained.get(k) for k in SELECTION},
    }


def rebanded_trainings(train_metrics: Path, p: Params) -> list[dict]:
    """The train metrics of every re-banded training (caft_reestimate), with its student, strategy and seed."""
    return [
        {"student": s, "strategy": x, "seed": seed, **json.loads((train_metrics / s / x / f"{seed}.json").read_text())}
        for s in p.students
        for x in p.strategies
        for seed in p.seeds
        if get(x).rebands
    ]


def teacher_usage(sets: pd.DataFrame, traces: pd.DataFrame) -> dict:
    """Teacher calls and the teacher's API tokens behind one strategy's CoT targets (what `caft frontier` prices
    at the configured per-token prices)."""
    cot_ids = set(sets.loc[sets["kind"] == "cot", "question_id"])
    used = traces[traces["question_id"].isin(cot_ids)]
    return {
        "teacher_calls": len(cot_ids),
        "teacher_prompt_tokens": int(used["prompt_tokens"].fillna(0).sum()),
        "teacher_completion_tokens": int(used["completion_tokens"].fillna(0).sum()),
    }


def savings(rows: pd.DataFrame) -> pd.DataFrame:
    """Share of training-target tokens saved relative to `distill` of the same student (and training seed)
    (None without it)."""
    rows = rows.copy()
    keys = ["student", "seed"] if "seed" in rows.columns else ["student"]
    for kind in ("one_pass", "epoch_weighted"):
        ref = rows[rows["strategy"] == baseline("cot")].set_index(keys)[f"target_tokens_{kind}"]
        base = pd.Series(ref.reindex(pd.MultiIndex.from_frame(rows[keys])).to_numpy(), index=rows.index)
        rows[f"data_saving_{kind}"] = (1 - rows[f"target_tokens_{kind}"] / base).round(4).where(base.notna())
    return rows


def to_metrics(rows: pd.DataFrame) -> dict:
    """{student: {strategy: {number: value}}}: the whole report, as `reports/report.json` keeps it."""
    out: dict = {}
    for row in rows.to_dict(orient="records"):
        values = {k: (None if pd.isna(v) else v) for k, v in row.items() if k not in ("student", "strategy")}
        out.setdefault(row["student"], {})[row["strategy"]] = values
    return out


# The declared DVC metrics: a few short keys per student x strategy file, the same in every file, so that
# `dvc metrics show` is one row per run and fits a screen, and `dvc metrics diff` between two experiments reads
# like the paper's table. `acc_balanced_set`: accuracy on the band-balanced test subset (not scikit-learn's
# balanced accuracy).
HEADLINE = {
    "acc": "accuracy",
    "acc_balanced_set": "balanced_set_accuracy",
    "acc_hard_band": "band_hard_accuracy",
    "teacher_calls": "teacher_calls",
    "cot_tokens": "cot_target_tokens",
}


def headline(report: dict, entropy: dict[str, dict]) -> dict[str, dict]:
    """{relative path: numbers}: `<student>/<strategy>.json` with HEADLINE's keys, and `<student>/entropy.json`
    with the entropy's ROC AUC for a wrong answer."""
    files = {f"{student}/entropy.json": {"entropy_roc_auc": entropy[student].get("roc_auc")} for student in entropy}
    for student, by_strategy in report.items():
        for strategy, numbers in by_strategy.items():
            files[f"{student}/{strategy}.json"] = {short: numbers.get(key) for short, key in HEADLINE.items()}
    return files


def loss_curve(live_dir: Path, student: str, strategy: str) -> pd.DataFrame:
    """One training's loss per step (its dvclive `loss.tsv`), labelled, for the report's one chart per student
    with a curve per strategy (caft's phase 2 continues phase 1's steps)."""
    path = Path(live_dir) / "plots" / "metrics" / "train" / "loss.tsv"
    if not path.exists():
        raise CaftError(f"no training curve for {student}/{strategy}: {path} (run `dvc repro`)")
    curve = pd.read_csv(path, sep="\t")[["step", "loss"]]
    return curve.assign(student=student, strategy=strategy)[["student", "strategy", "step", "loss"]]


# What the train stage's metrics say about its epochs (eval.every_epoch): carried into the report's rows.
SELECTION = ("select", "selected_epoch", "best_epoch", "val_accuracy_final", "val_accuracy_best")


def epoch_curve(records: pd.DataFrame, assignments: pd.DataFrame, student: str, strategy: str) -> pd.DataFrame:
    """One training's accuracy per epoch on the validation carve and, with `eval.every_epoch_test`, on the
    balanced test set (the train stage answered all test questions: the balanced ones move with the
    threshold), each overall (`band` = all) and per band (the split's bands), with 95 % Wilson intervals;
    `phase_start` marks a later phase's first epoch (caft's switch to the CoT targets), where the chart draws
    the boundary."""
    known = assignments.set_index("question_id")
    balanced = records["question_id"].map(known["balanced"]).fillna(False).astype(bool)
    records = records[(records["subset"] == "validation") | balanced]
    records = records.assign(band=records["question_id"].map(known["band"]))
    first = records.groupby("phase")["epoch"].min()
    out = []
    for (subset, epoch, phase), part in records.groupby(["subset", "epoch", "phase"], sort=True):
        for band, rows in [("all", part), *((b, part[part["band"] == b]) for b in BANDS)]:
            k, n = int(rows["correct"].sum()), len(rows)
            low, high = wilson(k, n)
            out.append(
                {
                    "student": student,
                    "strategy": strategy,
                    "subset": subset,
                    "epoch": int(epoch),
                    "phase": int(phase),
                    "band": band,
                    "accuracy": round(k / n, 6) if n else None,
                    "ci_low": round(low, 6),
                    "ci_high": round(high, 6),
                    "n": n,
                    "phase_start": int(phase > 0 and epoch == first[phase]),
                }
            )
    return pd.DataFrame(out, columns=EPOCH_CURVE_COLUMNS)


EPOCH_CURVE_COLUMNS = [
    "student", "strategy", "subset", "epoch", "phase", "band", "accuracy", "ci_low", "ci_high", "n", "phase_start"
]  # fmt: skip


def log_epoch_curves(curves: pd.DataFrame, root: Path) -> None:
    """The per-epoch curves logged with dvclive, one run per student x strategy in `root/<student>/<strategy>`,
    the epoch as dvclive's step: `<subset>/accuracy` (all questions of the subset) and
    `<subset>/accuracy_<band>`. Here, not in the train stage: a band is the split's, and a training that logged
    it would re-run whenever the threshold moves, though its answers do not. dvclive's summary (the last
    epoch's values) is dropped: `reports/report.json` has the numbers, and a JSON file among the curves would be
    read as one more plot (`dvc plots show plots/report/live/<student>/<strategy> -x step`)."""
    from dvclive import Live

    for (student, strategy), part in curves.groupby(["student", "strategy"], sort=False):
        folder = root / student / strategy
        live = Live(str(folder), dvcyaml=None, save_dvc_exp=False, report=None)
        for epoch, rows in part.groupby("epoch", sort=True):
            live.step = int(epoch)
            for r in rows[rows["n"] > 0].itertuples(index=False):
                live.log_metric(f"{r.subset}/accuracy" + ("" if r.band == "all" else f"_{r.band}"), float(r.accuracy))
        live.end()
        (folder / "metrics.json").unlink(missing_ok=True)

"""The `prepare` stage's logic: load questions, validate, filter, carve a seeded category-stratified
train/test split (MMLU-Pro has no train split; GSM8K and MedMCQA keep their own), apply size caps.

`SOURCES` is the registry of `data.source` values: a new source is one entry (a loader returning rows in the
question schema, with a `subset` column when the dataset ships its own train / test splits)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from caft import schema
from caft.errors import CaftError
from caft.io import metric_key, read_table
from caft.params import DataParams, Settings, declared_block
from caft.sources import gsm8k, medmcqa, mmlu_pro, synthetic


def _file(cfg: DataParams, seed: int) -> pd.DataFrame:
    try:
        return read_table(cfg.file.path)
    except FileNotFoundError:
        raise CaftError(f"data.file.path not found: {cfg.file.path}") from None
    except ValueError as exc:
        raise CaftError(f"could not read {cfg.file.path}: {exc}") from None


@dataclass(frozen=True)
class Source:
    """One `data.source`: its loader (rows in the question schema), how many questions it holds without loading
    a hub dataset (`caft plan` prices a recipe from it), the (train, test) sizes of the splits it ships when it
    has its own (kept as they are: no carve), and whether a user's bad-row policy (`data.file.bad_rows`) applies;
    a published dataset's bad row is an error (the pinned data is fixed)."""

    load: Callable[[DataParams, int], pd.DataFrame]
    size: Callable[[DataParams], int]
    splits: tuple[int, int] | None = None
    user_file: bool = False
    # the model of its params block `data.<name>`, for a source `caft.params` does not name (read with
    # `source_params`; its leaves go in the prepare stage's params)
    settings: type[Settings] | None = None


# (train, test) rows as the dataset cards state them: MedMCQA's test is its validation split, counted before
# its multi-answer rows are dropped; TIGER-Lab/MMLU-Pro's test split holds 12,032 questions.
SOURCES: dict[str, Source] = {
    "synthetic": Source(
        lambda cfg, seed: synthetic.generate(cfg.synthetic, seed), lambda cfg: cfg.synthetic.n_questions
    ),
    "hf": Source(lambda cfg, seed: mmlu_pro.load(cfg.hf), lambda cfg: 12_032),
    "gsm8k": Source(lambda cfg, seed: gsm8k.load(cfg.gsm8k), lambda cfg: 7_473 + 1_319, (7_473, 1_319)),
    "medmcqa": Source(lambda cfg, seed: medmcqa.load(cfg.medmcqa), lambda cfg: 182_822 + 4_183, (182_822, 4_183)),
    "file": Source(_file, lambda cfg: len(_file(cfg, 0)), user_file=True),
}


def source(name: str) -> Source:
    """The registry's entry for `data.source`; a name it does not hold is one line listing those it does."""
    if name not in SOURCES:
        raise CaftError(f"unknown data source {name!r} (known: {', '.join(SOURCES)})")
    return SOURCES[name]


def source_params(cfg: DataParams, name: str) -> Settings:
    """The params block `data.<name>` of a source added as one entry, validated by the entry's own model."""
    return declared_block(cfg, name, source(name).settings, "data source")


def load_source(cfg: DataParams, seed: int) -> tuple[pd.DataFrame, list[str]]:
    """Questions from the configured source, validated, and one line per row that `data.file.bad_rows` skipped
    or repaired (a user's file only; otherwise the first bad row is one CaftError)."""
    entry = source(cfg.source)
    return schema.validate(entry.load(cfg, seed), cfg.file.bad_rows if entry.user_file else "error")


def stratified_take(df: pd.DataFrame, n: int, rng: np.random.Generator) -> pd.Index:
    """Index labels of `n` rows drawn so that each category keeps its share (largest-remainder rounding).

    Written out instead of sklearn's stratified split because that refuses categories with one member,
    which category filters and small caps produce routinely.
    """
    counts = df["category"].value_counts().sort_index()
    quota = counts / counts.sum() * n
    alloc = np.floor(quota).astype(int)
    remainder = (quota - alloc).sort_values(ascending=False, kind="stable")
    for cat in remainder.index[: n - alloc.sum()]:
        alloc[cat] += 1
    picked = []
    for cat, k in alloc.items():
        members = df.index[df["category"] == cat].to_numpy()
        picked.extend(rng.choice(members, size=min(k, len(members)), replace=False).tolist())
    return pd.Index(sorted(picked))


def carve(df: pd.DataFrame, cfg: DataParams, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Filter by category, split train/test by `test_fraction` (a dataset's own splits, in its `subset` column,
    are kept instead), then cap each side (all seeded)."""
    if cfg.categories:
        unknown = sorted(set(cfg.categories) - set(df["category"]))
        if unknown:
            raise CaftError(f"data.categories not in the data: {unknown} (available: {sorted(set(df['category']))})")
        df = df[df["category"].isin(cfg.categories)].reset_index(drop=True)
    rng = np.random.default_rng(seed)
    if "subset" in df.columns:
        train, test = (df[df["subset"] == s].drop(columns="subset") for s in ("train", "test"))
        if train.empty or test.empty:
            raise CaftError(f"data.source={cfg.source}: {len(train)} train / {len(test)} test rows after filters")
    else:
        n_test = round(len(df) * cfg.test_fraction)
        if n_test == 0 or n_test == len(df):
            raise CaftError(f"test_fraction {cfg.test_fraction} leaves an empty side for {len(df)} questions")
        test_idx = stratified_take(df, n_test, rng)
        test, train = df.loc[test_idx], df.drop(index=test_idx)
    if cfg.max_train is not None and len(train) > cfg.max_train:
        train = train.loc[stratified_take(train, cfg.max_train, rng)]
    if cfg.max_test is not None and len(test) > cfg.max_test:
        test = test.loc[stratified_take(test, cfg.max_test, rng)]
    return train.reset_index(drop=True), test.reset_index(drop=True)


def summary(train: pd.DataFrame, test: pd.DataFrame, cfg: DataParams, acted: list[str]) -> dict:
    """Counts per subset and category for the metrics file, and the rows `data.file.bad_rows` acted on."""
    out: dict = {"source": cfg.source, "n_train": len(train), "n_test": len(test)}
    if cfg.source == "file" and cfg.file.bad_rows != "error":
        out[{"skip": "n_skipped_rows", "repair": "n_repaired_rows"}[cfg.file.bad_rows]] = len(acted)
    for name, part in (("train", train), ("test", test)):
        counts = part["category"].value_counts().sort_index()
        out[f"{name}_by_category"] = {metric_key(k): int(v) for k, v in counts.items()}
    return out


def load_prepared(folder: str | Path) -> pd.DataFrame:
    """prepare's train and test tables as one, with a `subset` column (options as lists)."""
    folder = Path(folder)
    parts = [pd.read_parquet(folder / f"{s}.parquet").assign(subset=s) for s in ("train", "test")]
    questions = pd.concat(parts, ignore_index=True)
    questions["options"] = questions["options"].map(list)
    return questions

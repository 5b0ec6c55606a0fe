"""The question table every stage shares (MMLU-Pro's shape) and its validation.

Every answer format shares it (`caft.answers`): `choice` rows have 2..10 options and a 0-based `answer_index`;
rows without options (`number`: arithmetic chains, GSM8K; any other free-form format) have `answer_index` -1
and their gold in `answer`, which must be an answer of some format (kept in its canonical spelling).
`expression` optionally holds the question's formula (synthetic chains), which `prompt.answer_prefix` may quote.

A bad row must stop `prepare` with one line that names the row and the problem: downstream stages index
options by `answer_index` and key everything on `question_id`, so silent bad rows would corrupt every number.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from typing import Literal

import pandas as pd

from caft import answers
from caft.errors import CaftError

REQUIRED = ("question_id", "question", "options", "answer_index", "category")
OPTIONAL_DEFAULTS = {"rationale": "", "difficulty": -1, "source": "", "answer": "", "expression": ""}
COLUMNS = REQUIRED + tuple(OPTIONAL_DEFAULTS)
MIN_OPTIONS, MAX_OPTIONS = 2, 10


BadRows = Literal["error", "skip", "repair"]
# Between two items of a Python list literal: a quote, a comma, a space, a quote.
_ITEM_BOUNDARY = re.compile(r"""(?<=['"]), (?=['"])""")


def normalize(df: pd.DataFrame, repair: bool = False) -> pd.DataFrame:
    """Bring a user's table to the canonical columns (letter `answer` accepted for `answer_index`)."""
    df = df.copy()
    if "options" not in df.columns and "answer" in df.columns:  # a number-format table: question + answer
        df["options"] = [[] for _ in range(len(df))]
        df["answer_index"] = -1
    if "answer_index" not in df.columns and "answer" in df.columns:
        df["answer_index"] = [
            answers.LETTERS.index(a) if isinstance(a, str) and len(a) == 1 and a in answers.LETTERS else -1
            for a in df["answer"]
        ]
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise CaftError(f"question table is missing required column(s): {', '.join(missing)}")
    for col, default in OPTIONAL_DEFAULTS.items():
        if col not in df.columns:
            df[col] = default
    df["rationale"] = df["rationale"].fillna("").astype(str)
    df["source"] = df["source"].fillna("").astype(str)
    df["expression"] = df["expression"].fillna("").astype(str)
    df["answer"] = [_answer_text(a) for a in df["answer"]]
    df["difficulty"] = df["difficulty"].fillna(-1).astype(int)
    df["question_id"] = df["question_id"].astype(str)
    df["options"] = [_as_list(o, repair) for o in df["options"]]
    # a source with its own train / test splits (GSM8K, MedMCQA) says which side each row is on
    return df[list(COLUMNS) + [c for c in ("subset",) if c in df.columns]].reset_index(drop=True)


def _answer_text(value: object) -> str:
    """The `answer` column as text (a JSONL number arrives as int / float; NaN as missing)."""
    if value is None or (pd.api.types.is_scalar(value) and pd.isna(value)):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


@dataclass(frozen=True)
class Unparsed:
    """An options field that looked like a list literal but did not parse (e.g. an unescaped quote in the
    authors' TSVs): kept so the row's error can say *why* and show the offending text."""

    text: str
    reason: str


@dataclass(frozen=True)
class Repaired:
    """Options recovered by `repair_list` (marks the row so prepare can name and count it)."""

    items: list[str]


def repair_list(text: str) -> list[str] | None:
    """The items of a list written with Python's repr but without escaping quotes inside items (5 of the 1,172
    rows of the authors' Qwen test file, e.g. `['33° 33' 30"', '32° 10' 05"']`): split at quote-comma-space-quote
    boundaries and strip each item's own quotes. None when the text does not have that shape."""
    body = text.strip()
    if not (body.startswith("[") and body.endswith("]")):
        return None
    parts = _ITEM_BOUNDARY.split(body[1:-1].strip())
    if not all(len(p) >= 2 and p[0] in "'\"" and p[-1] in "'\"" for p in parts):
        return None
    return [p[1:-1] for p in parts]


def _as_list(value: object, repair: bool = False) -> object:
    """Options arrive as lists (JSONL), numpy arrays (parquet) or Python-literal strings (the authors' TSVs)."""
    if isinstance(value, str) and value.startswith("["):
        try:
            return list(ast.literal_eval(value))
        except (ValueError, SyntaxError) as exc:
            items = repair_list(value) if repair else None
            return Repaired(items) if items is not None else Unparsed(value, type(exc).__name__)
    if value is not None and not isinstance(value, str) and hasattr(value, "__iter__"):
        return list(value)
    return value


def row_problem(row: pd.Series) -> str | None:
    """The first thing wrong with one row, or None."""
    for col in ("question_id", "question", "category"):
        value = row[col]
        if not isinstance(value, str) or not value.strip():
            return f"{col} is empty"
    options = row["options"]
    if isinstance(options, Unparsed):
        excerpt = options.text if len(options.text) <= 120 else options.text[:117] + "..."
        return f"options field is not a valid list literal ({options.reason}): {excerpt!r}"
    if not isinstance(options, list):
        return f"options must be a list of strings, got {type(options).__name__}"
    if not options:
        return _free_problem(row)
    if not MIN_OPTIONS <= len(options) <= MAX_OPTIONS:
        return f"has {len(options)} options (must be {MIN_OPTIONS}..{MAX_OPTIONS})"
    for i, opt in enumerate(options):
        if not isinstance(opt, str) or not opt.strip():
            return f"option {i} is empty"
    answer = row["answer_index"]
    if pd.api.types.is_scalar(answer) and pd.isna(answer):
        return "answer_index is missing"
    if isinstance(answer, bool) or not isinstance(answer, int | float) or int(answer) != answer:
        return f"answer_index {answer!r} is not an integer"
    if not 0 <= int(answer) < len(options):
        return f"answer_index {int(answer)} is out of range for {len(options)} options"
    return None


def _free_problem(row: pd.Series) -> str | None:
    """A row without options: some format must claim its gold; `answer_index` says nothing."""
    if answers.format_name(0, row["answer"]) is None:
        return f"has no options and its answer {row['answer']!r} is not a {' or '.join(answers.free_labels())}"
    answer = row["answer_index"]
    if not (pd.api.types.is_scalar(answer) and pd.isna(answer)) and answer != -1:
        return f"has no options but answer_index {answer!r} (rows without options carry their gold in `answer`)"
    return None


def validate(df: pd.DataFrame, bad_rows: BadRows = "error") -> tuple[pd.DataFrame, list[str]]:
    """Normalise and check every row; returns the table and one line per row the policy acted on.

    `error`: one CaftError for the first bad row (0-based row number). `skip`: bad rows are left out. `repair`:
    options written as an unescaped Python list are re-split (`repair_list`) and the row is checked like any
    other; a row still bad is an error. A table with no good row is always an error."""
    df = normalize(df, repair=bad_rows == "repair")
    seen: dict[str, int] = {}
    acted: list[str] = []
    keep: list[int] = []
    for i, row in enumerate(df.itertuples(index=False)):
        series = pd.Series(row._asdict())
        qid = series["question_id"]
        repaired = isinstance(series["options"], Repaired)
        if repaired:
            series["options"] = df.at[i, "options"] = series["options"].items
        problem = row_problem(series)
        if problem is None and qid in seen:
            problem = f"duplicate question_id (first seen at row {seen[qid]})"
        where = f"row {i} (question_id={qid!r})"
        if problem and bad_rows != "skip":
            raise CaftError(f"{where}: {problem}" + (" (after repairing its options)" if repaired else ""))
        if problem:
            acted.append(f"{where}: {problem}")
            continue
        if repaired:
            acted.append(f"{where}: options repaired into {len(series['options'])} items")
        seen[qid] = i
        keep.append(i)
    if not keep:
        raise CaftError(f"no valid row among {len(df)} (first problem: {acted[0]})")
    df = df.iloc[keep].reset_index(drop=True)
    df["answer_index"] = df["answer_index"].fillna(-1).astype(int)
    free = df["options"].map(len) == 0
    df.loc[free, "answer"] = df.loc[free, "answer"].map(lambda a: answers.free_form_of(a).canonical(a))
    return df, acted

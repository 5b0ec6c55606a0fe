"""The question table every stage shares (MMLU-Pro's shape) and its validation.

A bad row must stop `prepare` with one line that names the row and the problem: downstream stages index
options by `answer_index` and key everything on `question_id`, so silent bad rows would corrupt every number.
"""

from __future__ import annotations

import ast

import pandas as pd

from caft.errors import CaftError

REQUIRED = ("question_id", "question", "options", "answer_index", "category")
OPTIONAL_DEFAULTS = {"rationale": "", "difficulty": -1, "source": ""}
COLUMNS = REQUIRED + tuple(OPTIONAL_DEFAULTS)
MIN_OPTIONS, MAX_OPTIONS = 2, 10
LETTERS = "ABCDEFGHIJ"


def normalize(df: pd.DataFrame) -> pd.DataFrame:
    """Bring a user's table to the canonical columns (letter `answer` accepted for `answer_index`)."""
    df = df.copy()
    if "answer_index" not in df.columns and "answer" in df.columns:
        df["answer_index"] = [
            LETTERS.index(a) if isinstance(a, str) and len(a) == 1 and a in LETTERS else -1 for a in df["answer"]
        ]
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise CaftError(f"question table is missing required column(s): {', '.join(missing)}")
    for col, default in OPTIONAL_DEFAULTS.items():
        if col not in df.columns:
            df[col] = default
    df["rationale"] = df["rationale"].fillna("").astype(str)
    df["source"] = df["source"].fillna("").astype(str)
    df["difficulty"] = df["difficulty"].fillna(-1).astype(int)
    df["question_id"] = df["question_id"].astype(str)
    df["options"] = [_as_list(o) for o in df["options"]]
    return df[list(COLUMNS)].reset_index(drop=True)


def _as_list(value: object) -> object:
    """Options arrive as lists (JSONL), numpy arrays (parquet) or Python-literal strings (the authors' TSVs)."""
    if isinstance(value, str) and value.startswith("["):
        try:
            return list(ast.literal_eval(value))
        except (ValueError, SyntaxError):
            return value
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
    if not isinstance(options, list):
        return f"options must be a list of strings, got {type(options).__name__}"
    if not MIN_OPTIONS <= len(options) <= MAX_OPTIONS:
        return f"has {len(options)} options (must be {MIN_OPTIONS}..{MAX_OPTIONS})"
    for i, opt in enumerate(options):
        if not isinstance(opt, str) or not opt.strip():
            return f"option {i} is empty"
    answer = row["answer_index"]
    if isinstance(answer, bool) or not isinstance(answer, int | float) or int(answer) != answer:
        return f"answer_index {answer!r} is not an integer"
    if not 0 <= int(answer) < len(options):
        return f"answer_index {int(answer)} is out of range for {len(options)} options"
    return None


def validate(df: pd.DataFrame) -> pd.DataFrame:
    """Normalise and check every row; raise one CaftError for the first bad row (0-based row number)."""
    df = normalize(df)
    seen: dict[str, int] = {}
    for i, row in enumerate(df.itertuples(index=False)):
        series = pd.Series(row._asdict())
        problem = row_problem(series)
        qid = series["question_id"]
        if problem is None and qid in seen:
            problem = f"duplicate question_id (first seen at row {seen[qid]})"
        if problem:
            raise CaftError(f"row {i} (question_id={qid!r}): {problem}")
        seen[qid] = i
    df["answer_index"] = df["answer_index"].astype(int)
    return df

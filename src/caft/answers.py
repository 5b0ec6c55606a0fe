"""Answer extraction from generated text, one function per answer format.

`[[n]]` (paper v1, numeric ids): the last `[[n]]` in the text. Letters (MMLU-Pro convention): the MMLU-Pro
cascade — "answer is (X)" / "answer is X", then "Answer: X", then the last standalone capital letter among the
options. Every function returns a 0-based option index or None (unparseable).
"""

from __future__ import annotations

import re

from caft.schema import LETTERS

_BRACKETS = re.compile(r"\[\[\s*(\d+)\s*\]\]")
_ANSWER_IS = re.compile(r"answer is:?\s*\(?([A-J])\)?(?![A-Za-z])", re.IGNORECASE)
_ANSWER_COLON = re.compile(r"Answer:\s*\(?([A-J])\)?(?![A-Za-z])")
_STANDALONE = re.compile(r"(?<![A-Za-z])\(?([A-J])\)?(?![A-Za-z])")


def last_bracket(text: str, n_options: int) -> int | None:
    """The last `[[n]]` with 1 <= n <= n_options."""
    hits = [int(m) for m in _BRACKETS.findall(text)]
    if not hits or not 1 <= hits[-1] <= n_options:
        return None
    return hits[-1] - 1


def letter_cascade(text: str, n_options: int) -> int | None:
    """MMLU-Pro's extraction cascade, restricted to the letters of this question's options."""
    valid = LETTERS[:n_options]
    for pattern in (_ANSWER_IS, _ANSWER_COLON):
        hits = [h.upper() for h in pattern.findall(text)]
        if hits:
            return valid.index(hits[-1]) if hits[-1] in valid else None
    hits = [h for h in _STANDALONE.findall(text) if h in valid]
    return valid.index(hits[-1]) if hits else None


def extract(text: str, n_options: int, marker: str) -> int | None:
    """Dispatch on the answer format: `brackets` ([[n]]) or `answer_is` (letters)."""
    return last_bracket(text, n_options) if marker == "brackets" else letter_cascade(text, n_options)

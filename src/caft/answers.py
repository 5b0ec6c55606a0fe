"""Answer extraction from generated text, one function per answer format.

`[[n]]` (paper v1, numeric ids): the *last* `[[n]]` in the text is the answer; if it is out of range
(`[[4]] ... [[12]]` with 10 options) the answer is unparseable, never an earlier marker: the model's final
word is what it answered. Letters: our strict cascade — the *last* "answer is (X)" / "answer is X" (any case),
then the last "Answer: X", then the last standalone capital letter among the options. Every such function
returns a 0-based option index or None (unparseable).

`tiger_letter` is TIGER-Lab's MMLU-Pro extraction exactly (compute_accuracy.py: the *first* "answer is (X)",
case-sensitive; then the last "Answer: X" / "answer: X" on the first line that has one; then the last
standalone A-J), used only for the `accuracy_tiger` metric that claims their behaviour.
"""

from __future__ import annotations

import re

from caft.schema import LETTERS

_BRACKETS = re.compile(r"\[\[\s*(\d+)\s*\]\]")
_ANSWER_IS = re.compile(r"answer is:?\s*\(?([A-J])\)?(?![A-Za-z])", re.IGNORECASE)
_ANSWER_COLON = re.compile(r"Answer:\s*\(?([A-J])\)?(?![A-Za-z])")
_STANDALONE = re.compile(r"(?<![A-Za-z])\(?([A-J])\)?(?![A-Za-z])")
_TIGER = (
    (re.compile(r"answer is \(?([A-J])\)?"), 1),
    (re.compile(r".*[aA]nswer:\s*([A-J])"), 1),
    (re.compile(r"\b[A-J]\b(?!.*\b[A-J]\b)", re.DOTALL), 0),
)


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


def tiger_letter(text: str) -> str | None:
    """TIGER-Lab's MMLU-Pro answer letter (`re.search` in their order), or None; not restricted to the
    question's options (a letter past them is simply wrong there)."""
    for pattern, group in _TIGER:
        match = pattern.search(text)
        if match:
            return match.group(group)
    return None

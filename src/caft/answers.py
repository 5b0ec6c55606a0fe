"""Answer extraction from generated text, per answer format.

Two formats: `choice` (an option id: letters A..J or numbers 1..N) and `number` (a free-form
numeric answer: arithmetic chains, GSM8K). A question with options is `choice`, one without is `number`.

Numbers are compared after `normalize_number`: thousands separators, a currency `$`, a leading `+`, trailing
zeros of a decimal (`7.0` = `7`, `0.50` = `0.5`) and `-0` do not matter; `1/2` and `1e3` are not numbers here
(GSM8K's answers are integers). After CoT the strict answer is the last `[[n]]`, else the last `#### n`
(GSM8K's solutions), else the last "the answer is n"; `last_number` (the last number anywhere) is the
flexible fallback, reported separately as lm-evaluation-harness does for gsm8k (`flexible-extract`).
A direct answer (after the answer prefix) is the first number of the continuation.

`[[n]]` (paper v1, numeric ids; MedMCQA's `[[B]]`, letter ids): the *last* `[[...]]` in the text is the answer;
if it is out of range (`[[4]] ... [[12]]` with 10 options) the answer is unparseable, never an earlier marker:
the model's final word is what it answered. Letters: our strict cascade — the *last* "answer is (X)" /
"answer is X" (any case), then the last "Answer: X", then the last standalone capital letter among the
options. Every such function returns a 0-based option index or None (unparseable).

`tiger_letter` is TIGER-Lab's MMLU-Pro extraction exactly (compute_accuracy.py: the *first* "answer is (X)",
case-sensitive; then the last "Answer: X" / "answer: X" on the first line that has one; then the last
standalone A-J), used only for the `accuracy_tiger` metric that claims their behaviour.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

LETTERS = "ABCDEFGHIJ"
# The entropy stage's validity labels that mean "answered": an option id, or a number (free-form questions).
VALID = ("option", "number")

_BRACKETS = re.compile(r"\[\[\s*(\d+|[A-J])\s*\]\]")
_ANSWER_IS = re.compile(r"answer is:?\s*\(?([A-J])\)?(?![A-Za-z])", re.IGNORECASE)
_ANSWER_COLON = re.compile(r"Answer:\s*\(?([A-J])\)?(?![A-Za-z])")
_STANDALONE = re.compile(r"(?<![A-Za-z])\(?([A-J])\)?(?![A-Za-z])")
_TIGER = (
    (re.compile(r"answer is \(?([A-J])\)?"), 1),
    (re.compile(r".*[aA]nswer:\s*([A-J])"), 1),
    (re.compile(r"\b[A-J]\b(?!.*\b[A-J]\b)", re.DOTALL), 0),
)


def last_bracket(text: str, n_options: int) -> int | None:
    """The last `[[n]]` with 1 <= n <= n_options, or `[[X]]` with X among the options' letters."""
    hits = _BRACKETS.findall(text)
    if not hits:
        return None
    last = hits[-1]
    number = int(last) if last.isdigit() else LETTERS.index(last) + 1
    return number - 1 if 1 <= number <= n_options else None


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
    """Dispatch on the teacher marker: `brackets` ([[n]]) or `answer_is` (letters)."""
    return last_bracket(text, n_options) if marker == "brackets" else letter_cascade(text, n_options)


_FIRST_ID_NUMBER = re.compile(r"(?<!\d)(\d{1,2})(?!\d)")


def direct_option(text: str, n_options: int, option_ids: str) -> int | None:
    """A direct answer to a choice question: the letter cascade, or the first 1-2 digit number for numeric ids."""
    if option_ids == "letter":
        return letter_cascade(text, n_options)
    hit = _FIRST_ID_NUMBER.search(text)
    value = int(hit.group(1)) if hit else 0
    return value - 1 if 1 <= value <= n_options else None


def tiger_letter(text: str) -> str | None:
    """TIGER-Lab's MMLU-Pro answer letter (`re.search` in their order), or None; not restricted to the
    question's options (a letter past them is simply wrong there)."""
    for pattern, group in _TIGER:
        match = pattern.search(text)
        if match:
            return match.group(group)
    return None


# A sign belongs to a number only when it touches it ("x = -4"; "10 - 4" is 10, then 4, as lm-evaluation-harness
# reads it); a currency sign may have a space after it.
_NUMBER = r"[-+]?(?:\$\s?)?\d[\d,]*(?:\.\d+)?"
_NUMBER_ONLY = re.compile(rf"^\s*{_NUMBER}\s*$")
_NUMBER_ANY = re.compile(rf"(?<![\w.]){_NUMBER}")
_NUMBER_BRACKETS = re.compile(rf"\[\[\s*({_NUMBER})\s*\]\]")
_HASHES = re.compile(rf"####\s*({_NUMBER})")
_ANSWER_IS_NUMBER = re.compile(rf"answer is:?\s*({_NUMBER})", re.IGNORECASE)


def normalize_number(text: object) -> str | None:
    """The canonical text of a number (`"$1,234.50"` -> `"1234.5"`, `"7.0"` -> `"7"`), or None."""
    if not isinstance(text, str | int | float) or isinstance(text, bool):
        return None
    raw = str(text).strip()
    if not _NUMBER_ONLY.match(raw):
        return None
    cleaned = raw.replace("$", "").replace(",", "").replace(" ", "")
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        return None
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


def with_separators(text: str) -> str:
    """A number as a model may also write it, with thousands separators (`"18000"` -> `"18,000"`); other
    text as it is."""
    canonical = normalize_number(text)
    if canonical is None:
        return text
    whole, dot, frac = canonical.partition(".")
    return f"{int(whole):,}{dot}{frac}"


def number_answer(text: str) -> str | None:
    """The strict answer of a CoT text: last `[[n]]`, else last `#### n`, else last "the answer is n"."""
    for pattern in (_NUMBER_BRACKETS, _HASHES, _ANSWER_IS_NUMBER):
        hits = pattern.findall(text)
        if hits:
            return normalize_number(hits[-1])
    return None


def last_number(text: str) -> str | None:
    """The flexible fallback: the last number anywhere in the text."""
    hits = _NUMBER_ANY.findall(text)
    return normalize_number(hits[-1]) if hits else None


def first_number(text: str) -> str | None:
    """A direct answer: the first number of the continuation (`"7"` of `"7\n\nThe sum..."`)."""
    hit = _NUMBER_ANY.search(text)
    return normalize_number(hit.group(0)) if hit else None


Answer = int | str  # an option index (choice) or a canonical number (number)


@dataclass(frozen=True)
class AnswerFormat:
    """How one answer format is read; eval, the teacher's check and the CoT estimator all read through it.

    `cot(text, n_options, marker)`: the strict answer after a chain of thought; `direct(text, n_options,
    option_ids)`: the answer right after the prompt (and answer prefix); `flexible(text, n_options, marker)`:
    the lenient reading reported beside the strict one (None: there is none); `gold(answer_index, answer)`:
    the gold in the form the readers return; `answer_start[marker]`: a pattern whose group 1 starts where the
    answer is written after that marker (the CoT estimator reads the answer token's entropy there).
    """

    cot: Callable[[str, int, str], Answer | None]
    direct: Callable[[str, int, str], Answer | None]
    flexible: Callable[[str, int, str], Answer | None] | None  # None: the strict reading is the only one
    gold: Callable[[int, str], Answer]
    answer_start: dict[str, re.Pattern]


FORMATS: dict[str, AnswerFormat] = {
    "choice": AnswerFormat(
        cot=extract,
        direct=direct_option,
        flexible=None,  # an option id has no more lenient reading
        gold=lambda index, answer: index,
        answer_start={
            "brackets": re.compile(r"\[\[\s*(\d|[A-J])"),
            "answer_is": re.compile(r"answer is:?\s*\(?([A-J])"),
        },
    ),
    "number": AnswerFormat(
        cot=lambda text, n, marker: number_answer(text),
        direct=lambda text, n, ids: first_number(text),
        flexible=lambda text, n, marker: last_number(text),  # lm-evaluation-harness's flexible-extract
        gold=lambda index, answer: answer,
        answer_start={  # a number starts at its first character: a sign or a digit
            "brackets": re.compile(r"\[\[\s*\$?([-+]?\d)"),
            "answer_is": re.compile(r"answer is:?\s*\$?([-+]?\d)", re.IGNORECASE),
        },
    ),
}


def format_name(n_options: int) -> str:
    """A question's answer format: `choice` when it has options, else `number` (caft.schema's two shapes)."""
    return "choice" if n_options else "number"


def format_of(n_options: int) -> AnswerFormat:
    return FORMATS[format_name(n_options)]


def cot_answer(text: str, n_options: int, marker: str) -> Answer | None:
    """The answer a CoT text gives (the teacher's check and eval's CoT reading)."""
    return format_of(n_options).cot(text, n_options, marker)


def gold(n_options: int, answer_index: int, answer: str) -> Answer:
    """A question's gold in the form `cot_answer` returns."""
    return format_of(n_options).gold(answer_index, answer)

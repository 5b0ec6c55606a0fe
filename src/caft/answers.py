"""Answer formats: which questions have which, and how their answers are read from generated text.

Each format is one entry of `FORMATS`; a question has the first format that claims it. `choice` (an option id:
letters A..J or numbers 1..N) claims every question with options; `number` (a free-form numeric answer:
arithmetic chains, GSM8K) one without options whose gold is a number. A format without options is declared
by what one answer looks like (`free_form`: a yes / no format is one such entry, docs/extending.md), and
carries its prompt texts and budget with it.

Numbers are compared after `normalize_number`: thousands separators, a currency `$`, a leading `+`, trailing
zeros of a decimal (`7.0` = `7`, `0.50` = `0.5`) and `-0` do not matter; `1/2` and `1e3` are not numbers here
(GSM8K's answers are integers). After CoT the strict answer is the last `[[n]]`, else the last `#### n`
(GSM8K's solutions), else the last "the answer is n"; the last number anywhere is the flexible fallback,
reported separately as lm-evaluation-harness does for gsm8k (`flexible-extract`). A direct answer (after the
answer prefix) is the first number of the continuation.

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
MARKERS = ("brackets", "answer_is")  # how the teacher's CoT states its answer (`teacher.marker`)
# An entropy row's `validity` when no answer was read (else the label of the question's format)
NOT_ANSWERED = ("idk", "other", "ambiguous")

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


Answer = int | str  # an option index (choice) or a canonical answer text (a format without options)


@dataclass(frozen=True)
class AnswerFormat:
    """How one answer format is read; eval, the teacher's check, the entropy stage and the CoT estimator all read
    through it, and `format_name` gives each question the first format that `claims` it.

    `claims(n_options, answer)`: whether a question (its option count, its gold text) has this format; `label`:
    the entropy stage's validity of an answer read in it; `cot(text, n_options, marker)`: the strict answer after
    a chain of thought; `direct(text, n_options, option_ids)`: the answer right after the prompt (and answer
    prefix); `flexible(text, n_options, marker)`: the lenient reading reported beside the strict one (None: there
    is none); `gold(answer_index, answer)`: the gold in the form the readers return; `answer_start[marker]`: a
    pattern whose group 1 starts where the answer is written after that marker (the CoT estimator reads the
    answer token's entropy there).
    """

    claims: Callable[[int, object], bool]
    label: str
    cot: Callable[[str, int, str], Answer | None]
    direct: Callable[[str, int, str], Answer | None]
    flexible: Callable[[str, int, str], Answer | None] | None  # None: the strict reading is the only one
    gold: Callable[[int, str], Answer]
    answer_start: dict[str, re.Pattern]


@dataclass(frozen=True)
class FreeForm(AnswerFormat):
    """A format without options (a number, yes / no): its gold is the text in `answer`, and the whole format
    follows from what one answer looks like (`free_form`). Besides the readers it carries what the prompts and
    budgets need: `canonical(text)`, an answer's one spelling (the prepared gold, the text inside a marker, an
    imported answer; None: not an answer of this format); `spellings(gold)`, every way a direct answer to that
    gold may be written (the eval budget covers the longest); `system`, the generic single-token prompt's system
    text, and `cot_system[marker]`, the teacher's (both take `{about}`; a dataset's `caft.prompts.PromptSet`
    replaces them with its own)."""

    canonical: Callable[[object], str | None]
    spellings: Callable[[str], list[str]]
    system: str
    cot_system: dict[str, str]


def free_form(
    label: str,
    pattern: str,
    canonical: Callable[[object], str | None],
    *,
    start: str,
    system: str,
    cot_system: dict[str, str],
    spellings: Callable[[str], list[str]] = lambda gold: [gold],
    flags: int = 0,
) -> FreeForm:
    """A format without options from the pattern of one answer (no groups of its own) and `start`, a pattern
    whose group 1 is the answer's first character: strictly after CoT, the last `[[answer]]`, else the last
    `#### answer` (GSM8K's solutions), else the last "the answer is answer"; directly, the first answer of the
    continuation; leniently, the last answer anywhere (lm-evaluation-harness's `flexible-extract`). An entry
    that would fail later, in a stage (a CoT text missing for a marker, a label that means "not answered"), is
    refused here, when its module is imported."""
    if sorted(cot_system) != sorted(MARKERS):
        markers = ", ".join(MARKERS)
        raise ValueError(f"answer format {label!r}: cot_system needs one text per teacher marker ({markers})")
    if label in NOT_ANSWERED:
        raise ValueError(f"answer format {label!r}: {', '.join(NOT_ANSWERED)} label rows with no answer read")
    strict = (
        re.compile(rf"\[\[\s*({pattern})\s*\]\]", flags),
        re.compile(rf"####\s*({pattern})", flags),
        re.compile(rf"answer is:?\s*({pattern})", flags | re.IGNORECASE),
    )
    anywhere = re.compile(rf"(?<![\w.]){pattern}", flags)

    def cot(text: str, n_options: int, marker: str) -> str | None:
        for expr in strict:
            hits = expr.findall(text)
            if hits:
                return canonical(hits[-1])
        return None

    def first(text: str, n_options: int, option_ids: str) -> str | None:
        hit = anywhere.search(text)
        return canonical(hit.group(0)) if hit else None

    def last(text: str, n_options: int, marker: str) -> str | None:
        hits = anywhere.findall(text)
        return canonical(hits[-1]) if hits else None

    return FreeForm(
        claims=lambda n_options, answer: not n_options and canonical(answer) is not None,
        label=label,
        cot=cot,
        direct=first,
        flexible=last,
        gold=lambda index, answer: answer,
        answer_start={
            "brackets": re.compile(rf"\[\[\s*{start}", flags),
            "answer_is": re.compile(rf"answer is:?\s*{start}", flags | re.IGNORECASE),
        },
        canonical=canonical,
        spellings=spellings,
        system=system,
        cot_system=cot_system,
    )


FORMATS: dict[str, AnswerFormat] = {
    "choice": AnswerFormat(
        claims=lambda n_options, answer: n_options > 0,
        label="option",
        cot=extract,
        direct=direct_option,
        flexible=None,  # an option id has no more lenient reading
        gold=lambda index, answer: index,
        answer_start={
            "brackets": re.compile(r"\[\[\s*(\d|[A-J])"),
            "answer_is": re.compile(r"answer is:?\s*\(?([A-J])"),
        },
    ),
    # arithmetic chains, GSM8K: a number starts at its first character, a sign or a digit
    "number": free_form(
        "number",
        _NUMBER,
        normalize_number,
        start=r"\$?([-+]?\d)",
        spellings=lambda gold: [gold, with_separators(gold)],
        system="The following are math questions{about}. Write down ONLY the final number and nothing else.",
        cot_system={
            "brackets": "The following are math questions{about}. Explain your thinking process step-by-step. At "
            "the end, write down the correct answer as a number by strictly following this format: "
            "[[correct_answer]].",
            "answer_is": "The following are math questions{about}. Think step by step and then finish your answer "
            'with "The answer is N." where N is the final number.',
        },
    ),
}


def format_name(n_options: int, answer: object) -> str | None:
    """A question's answer format: the first entry of `FORMATS` that claims it (None: none does; `caft.schema`
    refuses such a row)."""
    return next((name for name, fmt in FORMATS.items() if fmt.claims(n_options, answer)), None)


def format_of(n_options: int, answer: object) -> AnswerFormat:
    """The format of a question of the prepared data (whose rows `caft.schema` checked each have one)."""
    name = format_name(n_options, answer)
    if name is None:
        raise ValueError(f"no answer format claims a question with {n_options} options and answer {answer!r}")
    return FORMATS[name]


def free_form_of(answer: object) -> FreeForm:
    """The format of a question without options (its prompt texts, budget and canonical spelling)."""
    fmt = format_of(0, answer)
    if not isinstance(fmt, FreeForm):
        raise TypeError(f"{fmt.label}: a format for questions without options is a FreeForm (caft.answers.free_form)")
    return fmt


def labels() -> tuple[str, ...]:
    """The entropy stage's validity labels that mean "answered": one per format (`option`, `number`, ...)."""
    return tuple(fmt.label for fmt in FORMATS.values())


def free_labels() -> tuple[str, ...]:
    """The labels of the formats without options (`number`, ...)."""
    return tuple(fmt.label for fmt in FORMATS.values() if isinstance(fmt, FreeForm))


def cot_answer(text: str, n_options: int, answer: object, marker: str) -> Answer | None:
    """The answer a CoT text gives (the teacher's check and eval's CoT reading)."""
    return format_of(n_options, answer).cot(text, n_options, marker)


def gold(n_options: int, answer_index: int, answer: str) -> Answer:
    """A question's gold in the form `cot_answer` returns."""
    return format_of(n_options, answer).gold(answer_index, answer)

import re

import pandas as pd
import pytest

from caft import answers, prompts, schema
from caft.answers import extract, last_bracket, letter_cascade, tiger_letter
from caft.errors import CaftError
from caft.teacher import prompt as teacher_prompt


@pytest.mark.parametrize(
    ("text", "n", "expected"),
    [
        ("Let me think. The answer is (C).", 10, 2),
        ("so the answer is C.", 10, 2),
        ("The answer is: D", 10, 3),
        ("Answer: J", 10, 9),
        ("(B)", 10, 1),
        ("I would pick B over D because of E", 10, 4),  # no marker: the last standalone letter
        ("The answer is (A). On reflection, the answer is (E).", 10, 4),  # several: the last one
        ("No idea at all.", 10, None),
        ("", 10, None),
        ("The answer is (J).", 4, None),  # J is not among 4 options
        ("Answer: Because", 4, None),
    ],
)
def test_letter_cascade(text, n, expected):
    assert letter_cascade(text, n) == expected


def test_answer_is_beats_answer_colon_and_standalone():
    assert letter_cascade("Answer: A ... therefore the answer is (B). C", 10) == 1
    assert letter_cascade("Answer: A then C", 10) == 0


@pytest.mark.parametrize(
    ("text", "n", "expected"),
    [
        ("Step 1 ... [[3]]", 4, 2),
        ("first [[1]] then [[ 4 ]]", 4, 3),
        ("[[10]]", 10, 9),
        ("[[5]]", 4, None),
        ("the answer is 3", 4, None),
        ("[[0]]", 4, None),
        ("[[4]] on second thought [[12]]", 10, None),  # the last marker is out of range: unparseable
        ("[[12]] no, [[4]]", 10, 3),
    ],
)
def test_last_bracket(text, n, expected):
    assert last_bracket(text, n) == expected


def test_extract_dispatches_on_marker():
    assert extract("[[2]] the answer is (C)", 4, "brackets") == 1
    assert extract("[[2]] the answer is (C)", 4, "answer_is") == 2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # the FIRST "answer is (X)", case-sensitive (ours: the last, any case)
        ("The answer is (A). On reflection, the answer is (E).", "A"),
        ("THE ANSWER IS (B). so C", "C"),  # upper case misses step 1; no "Answer:"; the last standalone letter
        ("the answer is B", "B"),
        # step 2: `.*[aA]nswer:\s*([A-J])` finds the first line holding it, and its last match on that line
        ("Answer: A and answer: C\nAnswer: D", "C"),
        # step 3: the last standalone letter, across lines
        ("I pick B\nor maybe D.", "D"),
        ("The answer is (J).", "J"),  # not restricted to the options
        ("no letter here", None),
        ("", None),
    ],
)
def test_tiger_letter_is_tiger_labs_extraction(text, expected):
    assert tiger_letter(text) == expected


def _yes_no(text: object) -> str | None:
    word = str(text).strip().lower()
    return word if word in ("yes", "no") else None


YES_NO = answers.free_form(
    "yesno",
    r"(?:yes|no)\b",
    _yes_no,
    start=r"([YyNn])",
    system="The following are yes / no questions{about}. Write down ONLY yes or no.",
    cot_system={"brackets": "Yes / no{about}: think, then write [[yes]] or [[no]].", "answer_is": "Yes / no{about}."},
    flags=re.IGNORECASE,
)


def test_a_question_has_the_first_format_that_claims_it(monkeypatch):
    assert [answers.format_name(n, a) for n, a in ((4, ""), (0, "1,234"), (0, "yes"))] == ["choice", "number", None]
    monkeypatch.setitem(answers.FORMATS, "yesno", YES_NO)
    assert [answers.format_name(n, a) for n, a in ((4, "yes"), (0, "12"), (0, " Yes"))] == ["choice", "number", "yesno"]
    assert answers.labels() == ("option", "number", "yesno")
    with pytest.raises(ValueError, match="no answer format claims a question with 0 options and answer 'maybe'"):
        answers.format_of(0, "maybe")
    # an entry that a stage would trip over later is refused where it is declared
    with pytest.raises(ValueError, match=r"'yn': cot_system needs one text per teacher marker \(brackets, answer_is\)"):
        answers.free_form("yn", "y|n", _yes_no, start="(y)", system="", cot_system={"brackets": ""})
    with pytest.raises(ValueError, match="'other': idk, other, ambiguous label rows with no answer read"):
        texts = dict.fromkeys(answers.MARKERS, "")
        answers.free_form("other", "y|n", _yes_no, start="(y)", system="", cot_system=texts)


def test_a_free_form_format_is_read_everywhere_from_its_one_entry(monkeypatch):
    """Readers built from the pattern (strict after CoT, direct, lenient), the gold in one spelling, the
    prompts in the format's words and a row no format claims refused by the schema in one line."""
    monkeypatch.setitem(answers.FORMATS, "yesno", YES_NO)
    text = "Nothing says no... [[ Yes ]] and then no"
    assert YES_NO.cot(text, 0, "brackets") == "yes"  # the last [[...]], in its one spelling
    assert YES_NO.cot("so the answer is No.", 0, "answer_is") == "no"
    assert YES_NO.direct(text, 0, "letter") == "no"  # the first answer: "Nothing" is not one
    assert YES_NO.flexible(text, 0, "brackets") == "no"  # the last anywhere
    assert YES_NO.answer_start["brackets"].search(text).start(1) == text.index("Yes")
    assert answers.cot_answer(text, 0, "yes", "brackets") == answers.gold(0, -1, "yes") == "yes"
    assert prompts.build_messages("Is 7 odd?", [], "maths", "plain", "letter", answer_format="yesno") == [
        {"role": "system", "content": "The following are yes / no questions about maths. Write down ONLY yes or no."},
        {"role": "user", "content": "Is 7 odd?"},
    ]
    assert teacher_prompt.messages("Is 7 odd?", [], None, "brackets", answer_format="yesno")[0]["content"] == (
        "Yes / no: think, then write [[yes]] or [[no]]."
    )
    rows = pd.DataFrame({"question_id": ["a", "b"], "question": ["Is 7 odd?", "Is 8 odd?"], "category": "maths"})
    table, _ = schema.validate(rows.assign(answer=["YES", "12"]))
    assert table["answer"].tolist() == ["yes", "12"]
    with pytest.raises(CaftError) as exc:
        schema.validate(rows.assign(answer=["yes", "maybe"]))
    assert str(exc.value) == "row 1 (question_id='b'): has no options and its answer 'maybe' is not a number or yesno"

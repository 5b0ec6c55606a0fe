import pytest

from caft.answers import extract, last_bracket, letter_cascade, tiger_letter


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

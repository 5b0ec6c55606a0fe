"""The teacher's CoT prompt (the paper's semantics: subject, think step by step, end with the answer marker).

`brackets`: the paper's v1 text, numeric option ids, answer as `[[n]]`. `answer_is`: the MMLU-Pro
convention, letter ids, answer as "the answer is (X)". A dataset with its own prompts (`caft.prompts.PROMPT_SETS`:
GSM8K, MedMCQA) uses its CoT text verbatim, with its own option ids (MedMCQA: `[[B]]`).
"""

from __future__ import annotations

from collections.abc import Sequence

from caft import answers
from caft.prompts import GENERIC, PROMPT_SETS, dataset_messages, option_ids, render_options

SYSTEM = {
    "brackets": "The following are multiple choice questions{about}. Explain your thinking process step-by-step. "
    "At the end, write down the number of the correct answer by strictly following this format: "
    "[[number_of_correct_answer]].",
    "answer_is": "The following are multiple choice questions{about}. Think step by step and then finish your "
    'answer with "the answer is (X)" where X is the correct letter choice.',
}
ID_KIND = {"brackets": "numeric", "answer_is": "letter"}


def id_kind(marker: str, dataset: str = GENERIC) -> str:
    """The option ids a CoT trace names: the dataset's own, else the marker's convention."""
    return (PROMPT_SETS[dataset].option_ids if dataset != GENERIC else None) or ID_KIND[marker]


def messages(
    question: str,
    options: Sequence[str],
    category: str | None,
    marker: str,
    dataset: str = GENERIC,
    *,
    answer_format: str = "choice",
) -> list[dict[str, str]]:
    """A question without options is asked in its answer format's words (`caft.answers.FreeForm.cot_system`)."""
    if dataset != GENERIC:
        return dataset_messages(PROMPT_SETS[dataset], PROMPT_SETS[dataset].cot, question, options, ID_KIND[marker])
    about = f" about {category}" if category else ""
    fmt = answers.FORMATS[answer_format]
    if isinstance(fmt, answers.FreeForm):
        return [
            {"role": "system", "content": fmt.cot_system[marker].format(about=about)},
            {"role": "user", "content": question},
        ]
    user = f"Question: {question}\nOptions:\n{render_options(options, ID_KIND[marker])}\n"
    return [{"role": "system", "content": SYSTEM[marker].format(about=about)}, {"role": "user", "content": user}]


def answer_marker(index: int, marker: str, kind: str | None = None) -> str:
    """How a trace states option `index` (0-based) in this format (`kind`: the ids, if not the marker's)."""
    ident = option_ids(kind or ID_KIND[marker], index + 1)[index]
    return f"[[{ident}]]" if marker == "brackets" else f"the answer is ({ident})"


def free_marker(answer: str, marker: str) -> str:
    """How a trace states the answer to a question without options (a number, yes / no) in this format."""
    return f"The answer is [[{answer}]]." if marker == "brackets" else f"The answer is {answer}."

"""The student's single-token answer prompt, as in the paper (arXiv 2506.21220 v1, the authors' code).

Variants: `plain` asks for the option id only; `fallback` adds "otherwise return 0" (the paper's v1 split
prompt), so a model can say it does not know. Option ids are `numeric` (1..N, the paper's v1) or `letter`
(A..J, the authors' later code, because "10" is two tokens in most tokenizers).

A question without options is asked in its answer format's words (`number`: the final number), with the
question text alone as the user message (the authors' GSM8K layout). `prompt.answer_prefix` opens the assistant
turn ("8 + 1 - 3 = "): measured on SmolLM2-135M, without it the model writes prose before any number.

Datasets whose authors wrote their own prompts (GSM8K, MedMCQA; arXiv 2506.21220 v3, the authors'
`src/reasoning_fine_tune/prompts/`) have a `PromptSet` in `PROMPT_SETS`: their texts verbatim, for the
single-token (answer-only) prompt and the teacher's CoT prompt. `prompt.dataset` names the set (`auto`: the
data source's own set if it has one, else `generic`, the MMLU-Pro texts above).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from jinja2 import TemplateError

from caft import answers
from caft.errors import CaftError

IDK_ID = "0"
_IDS = {"numeric": [str(i) for i in range(1, 11)], "letter": list("ABCDEFGHIJ")}
_WORD = {"numeric": ("NUMBER", "number"), "letter": ("LETTER", "letter")}

SYSTEM = {
    "plain": "The following are multiple choice questions{about}. "
    "Write down ONLY the {WORD} of the correct answer and nothing else.",
    "fallback": "The following are multiple choice questions{about}. "
    "If you are certain about the answer return the correct option {word}, otherwise return 0. "
    "Write down ONLY the {WORD} and nothing else.",
}
USER = {
    "plain": "Question: {question}\nOptions:\n{options}\n"
    "Choose one of the answers. Write down ONLY the {WORD} of the correct answer and nothing else.",
    "fallback": "Question: {question}\nOptions:\n{options}\n"
    "Choose one of the answers. If you are certain about the answer return the correct option {word}, "
    "otherwise return 0. Write down ONLY the {WORD} and nothing else.",
}


def option_ids(kind: str, n: int) -> list[str]:
    """The ids of the first `n` options (1..n or A..)."""
    if not 1 <= n <= len(_IDS[kind]):
        raise CaftError(f"{n} options cannot be labelled with {kind} ids (at most {len(_IDS[kind])})")
    return _IDS[kind][:n]


def render_options(options: Sequence[str], kind: str) -> str:
    """One option per line, `1. text` (the authors' format)."""
    return "\n".join(f"{i}. {text}" for i, text in zip(option_ids(kind, len(options)), options, strict=True))


@dataclass(frozen=True)
class PromptSet:
    """One dataset's own prompt texts, verbatim (no subject, no variants). `user` takes `{question}` and
    `{options}` (one per line, `A. text`); `target` is the answer-only training target around `{answer}` (what
    `direct` asks the model to write); `option_ids` and `marker` are what the texts themselves say (MedMCQA asks
    for the LETTER inside `[[...]]`), so params that contradict them are refused."""

    direct: str
    cot: str
    user: str
    target: str
    option_ids: str | None
    marker: str


GENERIC = "generic"  # the MMLU-Pro texts above (variants, option ids, subject) and the number prompt
PROMPT_SETS: dict[str, PromptSet] = {
    "gsm8k": PromptSet(
        direct="The following are grade school math word problems. Write down only the correct answer and nothing "
        "else by strictly following this format: [[correct_answer]].",
        cot="The following are grade school math word problems. Explain your thinking process step-by-step. At the "
        "end, write down the correct answer as a number by strictly following this format: [[correct_answer]].",
        user="{question}",
        target="[[{answer}]]",
        option_ids=None,
        marker="brackets",
    ),
    "medmcqa": PromptSet(
        direct="The following are multiple choice questions. Write down ONLY the LETTER of the correct answer and "
        "nothing else.",
        cot="The following are multiple choice questions. Explain your thinking process step-by-step. At the end, "
        "write down the LETTER of the correct answer by strictly following this format: "
        "[[letter_of_correct_answer]].",
        user="Question: {question}\nOptions:\n{options}\n",
        target="{answer}",
        option_ids="letter",
        marker="brackets",
    ),
}


def dataset_names() -> list[str]:
    """The values `prompt.dataset` resolves to."""
    return [GENERIC, *PROMPT_SETS]


def dataset_messages(prompt_set: PromptSet, system: str, question: str, options: Sequence[str], kind: str):
    """A dataset's own system text and user message."""
    ids = prompt_set.option_ids or kind
    user = prompt_set.user.format(question=question, options=render_options(options, ids) if options else "")
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def build_messages(
    question: str,
    options: Sequence[str],
    category: str | None,
    variant: str,
    kind: str,
    dataset: str = GENERIC,
    *,
    answer_format: str = "choice",
) -> list[dict[str, str]]:
    """System + user messages; without a subject the system text reads "...multiple choice questions."; a
    question without options is asked in its format's words (`caft.answers.FreeForm.system`)."""
    if dataset != GENERIC:
        return dataset_messages(PROMPT_SETS[dataset], PROMPT_SETS[dataset].direct, question, options, kind)
    about = f" about {category}" if category else ""
    fmt = answers.FORMATS[answer_format]
    if isinstance(fmt, answers.FreeForm):
        return [{"role": "system", "content": fmt.system.format(about=about)}, {"role": "user", "content": question}]
    upper, lower = _WORD[kind]
    system = SYSTEM[variant].format(about=about, WORD=upper, word=lower)
    user = USER[variant].format(question=question, options=render_options(options, kind), WORD=upper, word=lower)
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def answer_target(answer: str, dataset: str = GENERIC) -> str:
    """The answer-only training target (before the answer prefix): what the dataset's prompt asks for."""
    return PROMPT_SETS[dataset].target.format(answer=answer) if dataset != GENERIC else answer


def answer_ids(kind: str, dataset: str = GENERIC) -> str:
    """The option ids of the answer-only prompt: the dataset's own, else `prompt.option_ids`."""
    return (PROMPT_SETS[dataset].option_ids if dataset != GENERIC else None) or kind


def answer_prefix(template: str, expression: str) -> str:
    """`prompt.answer_prefix` for one question; `{expression}` needs the question's formula."""
    if "{expression}" in template and not expression:
        raise CaftError(
            "prompt.answer_prefix quotes {expression}, but a question has no expression (only "
            "synthetic chains and files with an `expression` column carry one)"
        )
    return template.format(expression=expression)


def apply_chat_template(tokenizer, messages: list[dict[str, str]], prefix: str = "") -> str:
    """The exact text the model sees, ending with the assistant turn's opening (and `prefix`, written as the
    start of the assistant's answer).

    Some templates (Gemma, Mistral v0.1) refuse a system role: then the system text is put in front of the
    user message, which is what those model cards recommend.
    """
    if not getattr(tokenizer, "chat_template", None):
        raise CaftError(f"tokenizer {tokenizer.name_or_path!r} has no chat template; use an instruct model")
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except TemplateError:
        merged = [{"role": "user", "content": messages[0]["content"] + "\n\n" + messages[1]["content"]}]
        text = tokenizer.apply_chat_template(merged, tokenize=False, add_generation_prompt=True)
    return text + prefix

"""The student's single-token answer prompt, as in the paper (arXiv 2506.21220 v1, the authors' code).

Variants: `plain` asks for the option id only; `fallback` adds "otherwise return 0" (the paper's v1 split
prompt), so a model can say it does not know. Option ids are `numeric` (1..N, the paper's v1) or `letter`
(A..J, the authors' later code, because "10" is two tokens in most tokenizers).
"""

from __future__ import annotations

from collections.abc import Sequence

from jinja2 import TemplateError

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


def build_messages(
    question: str, options: Sequence[str], category: str | None, variant: str, kind: str
) -> list[dict[str, str]]:
    """System + user messages; without a subject the system text reads "...multiple choice questions."."""
    upper, lower = _WORD[kind]
    about = f" about {category}" if category else ""
    system = SYSTEM[variant].format(about=about, WORD=upper, word=lower)
    user = USER[variant].format(question=question, options=render_options(options, kind), WORD=upper, word=lower)
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def apply_chat_template(tokenizer, messages: list[dict[str, str]]) -> str:
    """The exact text the model sees, ending with the assistant turn's opening.

    Some templates (Gemma, Mistral v0.1) refuse a system role: then the system text is put in front of the
    user message, which is what those model cards recommend.
    """
    if not getattr(tokenizer, "chat_template", None):
        raise CaftError(f"tokenizer {tokenizer.name_or_path!r} has no chat template; use an instruct model")
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except TemplateError:
        merged = [{"role": "user", "content": messages[0]["content"] + "\n\n" + messages[1]["content"]}]
        return tokenizer.apply_chat_template(merged, tokenize=False, add_generation_prompt=True)

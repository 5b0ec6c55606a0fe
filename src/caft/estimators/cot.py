"""CoT entropy: the student answers with a chain of thought (batched greedy generation); the raw logits of
every generated token give its entropy, and the aggregates of caft.estimators.aggregates are computed."""

from __future__ import annotations

import bisect
import re

import pandas as pd
import torch

from caft import prompts
from caft.entropy import entropy_nats, first_token
from caft.estimators.aggregates import aggregate
from caft.generation import greedy
from caft.teacher.prompt import ID_KIND, messages

MARKER_PATTERNS = {"brackets": re.compile(r"\[\[\s*(\d+)"), "answer_is": re.compile(r"answer is:?\s*\(?([A-J])")}
# Free-form (number) questions: the answer starts at the number's first character (a sign or a digit).
NUMBER_PATTERNS = {"brackets": re.compile(r"\[\[\s*\$?([-+]?\d)"),
                   "answer_is": re.compile(r"answer is:?\s*\$?([-+]?\d)", re.IGNORECASE)}  # fmt: skip
MARKER_CONTEXT = {"brackets": "[[", "answer_is": "the answer is ("}


def locate_answer(tokenizer, token_ids: list[int], marker: str, number: bool = False) -> tuple[int | None, int | None]:
    """(index of the token that writes the answer id, index of the first token of the marker), from the last
    marker in the decoded text; (None, None) when there is none.

    A token's position in the text is the length of the decoded prefix that ends with it, which only grows
    along the sequence: a binary search finds each token in O(log n) decodes instead of decoding every prefix.
    """
    text = tokenizer.decode(token_ids, skip_special_tokens=True)
    hits = list((NUMBER_PATTERNS if number else MARKER_PATTERNS)[marker].finditer(text))
    if not hits:
        return None, None

    def decoded_length(i: int) -> int:
        return len(tokenizer.decode(token_ids[: i + 1], skip_special_tokens=True))

    def first_token_past(char: int) -> int:
        """The first token whose decoded prefix extends beyond character `char`."""
        return bisect.bisect_right(range(len(token_ids)), char, key=decoded_length)

    return first_token_past(hits[-1].start(1)), first_token_past(hits[-1].start())


def generate(model, tokenizer, texts: list[str], max_new_tokens: int, batch_size: int, option_tokens: list[int]):
    """Per text: generated token ids, per-token entropies (raw logits) and the option-id probabilities per step."""

    def per_step(logits: torch.Tensor, ids: list[int]) -> tuple[list[float], list[list[float]]]:
        steps = logits[: len(ids)]
        return entropy_nats(steps).tolist(), torch.softmax(steps, dim=-1)[:, option_tokens].tolist()

    done = greedy(model, tokenizer, texts, max_new_tokens, batch_size, per_step=per_step, desc="cot-entropy")
    return [(g.token_ids, *g.reduced) for g in done]


def estimate(questions: pd.DataFrame, model, tokenizer, marker: str, max_new_tokens: int, batch_size: int,
             subject: bool = True) -> pd.DataFrame:  # fmt: skip
    """One row per question: every aggregate, the per-token entropies (so any other aggregate can be computed
    later), the answer and marker positions, and the generated text."""
    chat = [messages(r.question, list(r.options), r.category if subject else None, marker) for r in
            questions.itertuples(index=False)]  # fmt: skip
    texts = [prompts.apply_chat_template(tokenizer, m) for m in chat]
    ids = prompts.option_ids(ID_KIND[marker], 10)
    option_tokens = [first_token(tokenizer, MARKER_CONTEXT[marker], i) for i in ids]
    generated = generate(model, tokenizer, texts, max_new_tokens, batch_size, option_tokens)
    rows = []
    for (token_ids, ents, opt), row in zip(generated, questions.itertuples(index=False), strict=True):
        answer_pos, marker_pos = locate_answer(tokenizer, token_ids, marker, number=not len(row.options))
        probs = opt[answer_pos][: len(row.options)] if answer_pos is not None else []  # none for a number
        text = tokenizer.decode(token_ids, skip_special_tokens=True)
        rows.append({"question_id": row.question_id, **aggregate(ents, answer_pos, marker_pos, probs),
                     "n_tokens": len(token_ids), "answer_pos": answer_pos, "marker_pos": marker_pos,
                     "token_entropies": ents, "output": text})  # fmt: skip
    return pd.DataFrame(rows)

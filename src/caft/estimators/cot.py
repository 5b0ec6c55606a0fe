"""CoT entropy: the student answers with a chain of thought (batched greedy generation); the raw logits of
every generated token give its entropy, and the aggregates of caft.estimators.aggregates are computed."""

from __future__ import annotations

import pandas as pd
import torch

from caft import answers, prompts
from caft.estimators.aggregates import AGGREGATES, aggregate
from caft.generation import greedy
from caft.models import load_model, load_tokenizer, pick_device, pick_dtype
from caft.params import Params
from caft.scores import ENTROPY, Kind, long
from caft.teacher.prompt import id_kind, messages
from caft.tokens import entropy_nats, first_token, token_at_char

MARKER_CONTEXT = {"brackets": "[[", "answer_is": "the answer is ("}


def locate_answer(
    tokenizer, token_ids: list[int], marker: str, answer_format: str = "choice"
) -> tuple[int | None, int | None]:
    """(index of the token that writes the answer id, index of the first token of the marker), from the last
    marker in the decoded text; (None, None) when there is none."""
    text = tokenizer.decode(token_ids, skip_special_tokens=True)
    hits = list(answers.FORMATS[answer_format].answer_start[marker].finditer(text))
    if not hits:
        return None, None
    return token_at_char(tokenizer, token_ids, hits[-1].start(1)), token_at_char(tokenizer, token_ids, hits[-1].start())


def generate(model, tokenizer, texts: list[str], max_new_tokens: int, batch_size: int, option_tokens: list[int]):
    """Per text: generated token ids, per-token entropies (raw logits) and the option-id probabilities per step."""

    def per_step(logits: torch.Tensor, ids: list[int]) -> tuple[list[float], list[list[float]]]:
        steps = logits[: len(ids)]
        return entropy_nats(steps).tolist(), torch.softmax(steps, dim=-1)[:, option_tokens].tolist()

    done = greedy(model, tokenizer, texts, max_new_tokens, batch_size, per_step=per_step, desc="cot-entropy")
    return [(g.token_ids, *g.reduced) for g in done]


def estimate(
    questions: pd.DataFrame,
    model,
    tokenizer,
    marker: str,
    max_new_tokens: int,
    batch_size: int,
    subject: bool = True,
    dataset: str = prompts.GENERIC,
) -> pd.DataFrame:
    """One row per question: every aggregate, the per-token entropies (so any other aggregate can be computed
    later), the answer and marker positions, and the generated text."""
    formats = [answers.format_name(len(r.options), r.answer) for r in questions.itertuples(index=False)]
    chat = [
        messages(r.question, list(r.options), r.category if subject else None, marker, dataset, answer_format=f)
        for r, f in zip(questions.itertuples(index=False), formats, strict=True)
    ]
    texts = [prompts.apply_chat_template(tokenizer, m) for m in chat]
    ids = prompts.option_ids(id_kind(marker, dataset), 10)
    option_tokens = [first_token(tokenizer, MARKER_CONTEXT[marker], i) for i in ids]
    generated = generate(model, tokenizer, texts, max_new_tokens, batch_size, option_tokens)
    rows = []
    for (token_ids, ents, opt), row, answer_format in zip(
        generated, questions.itertuples(index=False), formats, strict=True
    ):
        answer_pos, marker_pos = locate_answer(tokenizer, token_ids, marker, answer_format)
        probs = opt[answer_pos][: len(row.options)] if answer_pos is not None else []  # none without options
        text = tokenizer.decode(token_ids, skip_special_tokens=True)
        rows.append(
            {
                "question_id": row.question_id,
                **aggregate(ents, answer_pos, marker_pos, probs),
                "n_tokens": len(token_ids),
                "answer_pos": answer_pos,
                "marker_pos": marker_pos,
                "token_entropies": ents,
                "output": text,
            }
        )
    return pd.DataFrame(rows)


def run(questions: pd.DataFrame, p: Params, student: str, variant: None, workdir) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The family's entry (`caft.estimators.registry.FAMILIES["cot"]`): every aggregate, in nats, per question."""
    cfg, spec = p.estimators.cot, p.model(student)
    device = pick_device(cfg.device)
    model, tok = load_model(spec, device, pick_dtype(spec.dtype, device)), load_tokenizer(spec)
    wide = estimate(
        questions, model, tok, p.teacher.marker, cfg.max_new_tokens, cfg.batch_size, p.teacher.subject, p.prompt.dataset
    )
    kinds = {a: Kind() if a == "answer_margin" else ENTROPY for a in AGGREGATES}  # 1 - margin: not in nats
    return pd.concat([long(wide, {a: f"cot_{a}"}, kinds[a]) for a in AGGREGATES], ignore_index=True), wide

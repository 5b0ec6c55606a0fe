"""Token-level helpers that the entropy stage and the CoT estimator share: the entropy of a distribution over
the vocabulary, the token that writes a given text after a context, and the token that writes a character of
a generated text. Kept apart from caft.entropy so that an estimator importing them does not depend on (and
re-run with) the whole single-token entropy stage."""

from __future__ import annotations

import bisect

import torch


def entropy_nats(logits: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (nats) of softmax(logits) along the last axis, computed in float32 from log-softmax
    (stable where the authors' `p * log(p + 1e-12)` is not)."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(dim=-1)


def first_token(tokenizer, context: str, text: str) -> int:
    """The token a model must emit first to write `text` right after `context`.

    Encoding `text` alone can differ from what follows the assistant header (SentencePiece prefix spaces), so
    the text is encoded in context and the context's tokens are stripped.
    """
    base = tokenizer.encode(context, add_special_tokens=False)
    full = tokenizer.encode(context + text, add_special_tokens=False)
    if full[: len(base)] == base and len(full) > len(base):
        return full[len(base)]
    return tokenizer.encode(text, add_special_tokens=False)[0]


def token_at_char(tokenizer, token_ids: list[int], char: int) -> int:
    """The index of the token that writes character `char` of `decode(token_ids)`.

    A token's position in the text is the length of the decoded prefix that ends with it, which only grows
    along the sequence: a binary search finds it in O(log n) decodes instead of decoding every prefix.
    """

    def decoded_length(i: int) -> int:
        return len(tokenizer.decode(token_ids[: i + 1], skip_special_tokens=True))

    return bisect.bisect_right(range(len(token_ids)), char, key=decoded_length)

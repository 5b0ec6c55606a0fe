"""caft.generation.greedy against transformers' own greedy `generate`, one prompt at a time (no padding, no
shared opening, no rows leaving the batch): the same tokens, the same cut, the same text and the same raw
logits per step, at every batch size, with prompts that share an opening and rows that end at different steps."""

from __future__ import annotations

import pytest
import torch

from caft import prompts
from caft.generation import end_tokens, greedy, shared_opening
from caft.models import load_model, load_tokenizer
from caft.params import ModelSpec

SMOLLM2 = ModelSpec(ref="packaged:smollm2-135m-instruct")  # Q4_1 GGUF, dequantized: not the hub weights
QUESTIONS = [
    "What is 2 + 2? Answer with one number.",
    "Name a colour.",
    "Write the word yes.",
    "Count from one to five, in words, separated by commas.",
    "What is the capital of France? Say only the city.",
]
BUDGET = 12


@pytest.fixture(scope="module")
def smollm2():
    model, tok = load_model(SMOLLM2, torch.device("cpu"), torch.float32), load_tokenizer(SMOLLM2)
    # a comma ends an answer too (a model may declare several end tokens): rows then end at different steps
    comma = tok.encode(",", add_special_tokens=False)[0]
    saved = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = [tok.eos_token_id, comma]
    yield model, tok, comma
    model.generation_config.eos_token_id = saved


def _reference(model, tok, text: str, ends: list[int]) -> tuple[list[int], bool, torch.Tensor]:
    """transformers' greedy generate on one prompt: the new tokens up to the first end token, whether the
    budget cut it, and the raw logits of the steps kept."""
    ids = tok(text, return_tensors="pt", add_special_tokens=False)
    out = model.generate(
        **ids, max_new_tokens=BUDGET, do_sample=False, num_beams=1, eos_token_id=ends, pad_token_id=tok.pad_token_id,
        temperature=None, top_p=None, top_k=None, repetition_penalty=1.0, output_logits=True,
        return_dict_in_generate=True,
    )  # fmt: skip
    new = out.sequences[0, ids["input_ids"].shape[1] :].tolist()
    stop = next((k for k, t in enumerate(new) if t in ends), None)
    kept = new if stop is None else new[:stop]
    logits = torch.stack(out.logits, dim=1)[0].float()
    return kept, stop is None, logits[: max(len(kept), 1)]


@pytest.mark.parametrize("batch_size", [1, 2, 5])
def test_greedy_matches_transformers_generate_one_prompt_at_a_time(smollm2, batch_size):
    model, tok, comma = smollm2
    texts = [prompts.apply_chat_template(tok, [{"role": "user", "content": q}]) for q in QUESTIONS]
    ends = sorted(end_tokens(model, tok))
    assert ends == sorted({tok.eos_token_id, comma})
    got = greedy(model, tok, texts, BUDGET, batch_size, per_step=lambda steps, ids: steps.clone())
    lengths = set()
    for text, g in zip(texts, got, strict=True):
        ids, cut, logits = _reference(model, tok, text, ends)
        assert g.token_ids == ids and g.cut == cut
        assert g.text == tok.decode(ids, skip_special_tokens=True)
        assert g.reduced.shape == logits.shape
        torch.testing.assert_close(g.reduced, logits, atol=1e-4, rtol=1e-4)
        lengths.add((len(ids), cut))
    assert len(lengths) >= 3, lengths  # rows really ended at different steps, some cut, some not


def test_on_batch_sees_every_item_once_in_input_positions(smollm2):
    model, tok, _ = smollm2
    texts = [prompts.apply_chat_template(tok, [{"role": "user", "content": q}]) for q in QUESTIONS]
    seen: dict[int, list[int]] = {}
    out = greedy(
        model,
        tok,
        texts,
        3,
        2,
        on_batch=lambda idx, done: seen.update({i: d.token_ids for i, d in zip(idx, done, strict=True)}),
    )
    assert sorted(seen) == list(range(len(texts)))
    assert [seen[i] for i in range(len(texts))] == [g.token_ids for g in out]


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ([], 0),
        ([[1, 2, 3]], 2),  # one row: all but its last token
        ([[1, 2, 3], [1, 2, 3]], 2),  # equal rows: each keeps one token of its own
        ([[1, 2, 3, 4], [1, 2, 5]], 2),
        ([[1, 2], [7, 2]], 0),
        ([[1], [1, 2, 3]], 0),  # the shortest row has only one token
    ],
)
def test_shared_opening_leaves_every_row_a_token_of_its_own(rows, expected):
    assert shared_opening(rows) == expected

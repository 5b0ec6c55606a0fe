"""Batched greedy generation: the one loop that evaluation, the CoT estimator, the free-form entropy and a local
teacher share (and, for a teacher that samples, `sampled`).

Greedy means the argmax of the raw logits at every step (no sampling, no logits processor: a repetition
penalty or temperature in a model's generation config would change both the answers and an entropy), as the
vLLM path's `temperature=0` does. The loop is written here rather than left to `model.generate` for two
costs that dominate evaluation on a small model:

- every prompt of a run opens the same way (chat template, system prompt, instruction), so that shared
  opening goes through the model once per batch, at batch size 1, and its key/value cache is copied to every
  row; each row is laid out `opening | padding | rest of its prompt`, positions counted over real tokens only;
- a row that has written an end token leaves the batch at once, so a batch costs what its open rows cost,
  not what its longest answer costs.

Batches take the longest prompts first (less padding per batch). With `per_step`, each item's raw float32
logits are reduced by that function as soon as the item ends, so a long generation never keeps
whole-vocabulary tensors of finished items.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import DynamicCache

# (raw float32 logits of the generated steps [steps x vocab], generated token ids) -> what to keep of them
StepReducer = Callable[[torch.Tensor, list[int]], Any]


@dataclass
class Generated:
    token_ids: list[int]  # up to (not including) the first end token
    text: str
    reduced: Any = None  # what `per_step` returned
    cut: bool = False  # the budget ran out before an end token


def end_tokens(model, tokenizer) -> set[int]:
    """The tokens that end an answer: the tokenizer's end-of-sequence token and every one the model's
    generation config declares (a chat model often ends a turn with a token other than the tokenizer's)."""
    ends = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    config = getattr(model, "generation_config", None)
    declared = getattr(config, "eos_token_id", None)
    ends.update([declared] if isinstance(declared, int) else declared or [])
    return ends


def shared_opening(rows: list[list[int]]) -> int:
    """How many leading tokens every row has in common, leaving each row at least one token of its own (the
    first step needs a position whose logits are the row's)."""
    if not rows:
        return 0
    n, shortest = 0, min(len(r) for r in rows)
    while n < shortest - 1 and all(r[n] == rows[0][n] for r in rows):
        n += 1
    return n


def _cache_keyword(model) -> str:
    """The keyword the model's forward takes its key/value cache under: `cache` from transformers 5,
    `past_key_values` before (a PEFT wrapper passes it through to the model it wraps)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


class _Batch:
    """The open rows of one batch: their cache, attention mask and next positions, kept in step."""

    def __init__(self, model, rows: list[list[int]], pad_id: int, device) -> None:
        self.model, self.keyword = model, _cache_keyword(model)
        opening = shared_opening(rows)
        rests = [r[opening:] for r in rows]
        width = max(len(r) for r in rests)
        ids = torch.tensor([[pad_id] * (width - len(r)) + r for r in rests], device=device)
        rest_mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rests], device=device)
        self.mask = torch.cat([torch.ones(len(rows), opening, dtype=torch.long, device=device), rest_mask], 1)
        positions = (self.mask.cumsum(-1) - 1).clamp(min=0)
        self.cache = DynamicCache()
        if opening:
            head = torch.tensor([rows[0][:opening]], device=device)
            self._forward(head, self.mask[:1, :opening], positions[:1, :opening])
            if len(rows) > 1:
                self.cache = copy.deepcopy(self.cache)
                self.cache.batch_repeat_interleave(len(rows))
        self.logits = self._forward(ids, self.mask, positions[:, opening:])
        self.next_position = positions[:, -1:] + 1

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            logits_to_keep=1,
            **{self.keyword: self.cache},
        )
        return out.logits[:, -1].float()

    def step(self, tokens: torch.Tensor) -> None:
        """Feed each open row its chosen token; `logits` become the next step's."""
        self.mask = torch.cat([self.mask, torch.ones_like(self.mask[:, :1])], 1)
        self.logits = self._forward(tokens[:, None], self.mask, self.next_position)
        self.next_position = self.next_position + 1

    def keep(self, rows: list[int]) -> None:
        """Only these rows (positions among the open ones) go on."""
        index = torch.tensor(rows, device=self.mask.device)
        self.cache.batch_select_indices(index)
        self.mask, self.next_position = self.mask[index], self.next_position[index]


def _finish(tokenizer, ids: list[int], steps: list[torch.Tensor], ended: bool, per_step) -> Generated:
    reduced = per_step(torch.stack(steps[: max(len(ids), 1)]), ids) if per_step is not None else None
    return Generated(ids, tokenizer.decode(ids, skip_special_tokens=True), reduced, cut=not ended)


def _generate_batch(model, tokenizer, rows, max_new_tokens, per_step, ends, device) -> list[Generated]:
    """Greedy continuations of one batch of tokenized prompts, in the batch's order."""
    batch = _Batch(model, rows, tokenizer.pad_token_id, device)
    ids: list[list[int]] = [[] for _ in rows]
    steps: list[list[torch.Tensor]] = [[] for _ in rows]
    out: list[Generated | None] = [None] * len(rows)
    open_rows = list(range(len(rows)))
    for step in range(max_new_tokens):
        chosen = batch.logits.argmax(-1)
        going, going_at = [], []
        for at, (row, token) in enumerate(zip(open_rows, chosen.tolist(), strict=True)):
            if per_step is not None:
                steps[row].append(batch.logits[at].clone())
            if token in ends:
                out[row] = _finish(tokenizer, ids[row], steps[row], True, per_step)
                steps[row] = []
                continue
            ids[row].append(token)
            going.append(row)
            going_at.append(at)
        if not going or step == max_new_tokens - 1:
            open_rows = going
            break
        if len(going) < len(open_rows):
            batch.keep(going_at)
            chosen = chosen[going_at]
        open_rows = going
        batch.step(chosen)
    for row in open_rows:
        out[row] = _finish(tokenizer, ids[row], steps[row], False, per_step)
    return out  # type: ignore[return-value]


@torch.inference_mode()
def greedy(
    model,
    tokenizer,
    texts: list[str],
    max_new_tokens: int,
    batch_size: int,
    per_step: StepReducer | None = None,
    desc: str = "generate",
    on_batch: Callable[[list[int], list[Generated]], None] | None = None,
) -> list[Generated]:
    """Greedy continuations of `texts` (already chat-templated), in input order; `on_batch` sees each finished
    batch (input positions, results) at once, for stores that must survive a kill."""
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    out: list[Generated | None] = [None] * len(texts)
    device = next(model.parameters()).device
    ends = end_tokens(model, tokenizer)
    for start in tqdm(range(0, len(order), batch_size), desc=desc, unit="batch"):
        idx = order[start : start + batch_size]
        rows = tokenizer([texts[i] for i in idx], add_special_tokens=False)["input_ids"]
        done = _generate_batch(model, tokenizer, rows, max_new_tokens, per_step, ends, device)
        for i, generated in zip(idx, done, strict=True):
            out[i] = generated
        if on_batch is not None:
            on_batch(idx, done)
    return out  # type: ignore[return-value]


@torch.inference_mode()
def sampled(
    model,
    tokenizer,
    texts: list[str],
    max_new_tokens: int,
    batch_size: int,
    temperature: float,
    top_p: float,
    seed: int | None,
    desc: str = "sample",
    on_batch: Callable[[list[int], list[Generated]], None] | None = None,
) -> list[Generated]:
    """Sampled continuations (a teacher or judge at temperature > 0) through `model.generate`, in input order.

    Only the temperature and top-p asked for shape the draw: `generate` fills every setting left unset from the
    model's generation config, so top-k and the repetition penalty are set to "off" here rather than left to
    the model's defaults (Qwen2.5-Instruct: top-k 20, penalty 1.05). An answer ends at any end token."""
    if seed is not None:
        torch.manual_seed(seed)
    device = next(model.parameters()).device
    ends = end_tokens(model, tokenizer)
    draw = {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": 0, "repetition_penalty": 1.0}
    out: list[Generated] = []
    for start in tqdm(range(0, len(texts), batch_size), desc=desc, unit="batch"):
        batch = texts[start : start + batch_size]
        enc = tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        new = model.generate(
            **enc, **draw, max_new_tokens=max_new_tokens, eos_token_id=sorted(ends), pad_token_id=tokenizer.pad_token_id
        )[:, enc["input_ids"].shape[1] :]
        done = [_until_end(tokenizer, row.tolist(), ends) for row in new]
        out += done
        if on_batch is not None:
            on_batch(list(range(start, start + len(batch))), done)
    return out


def _until_end(tokenizer, row: list[int], ends: set[int]) -> Generated:
    """A generated row up to its first end token (what follows is padding); cut when it has none."""
    stop = next((i for i, token in enumerate(row) if token in ends), None)
    ids = row if stop is None else row[:stop]
    return Generated(ids, tokenizer.decode(ids, skip_special_tokens=True), cut=stop is None)

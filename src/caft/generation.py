"""Batched greedy generation: the one loop that evaluation, the CoT estimator and the free-form entropy share.

Left-padded batches, longest prompt first (less padding per batch), explicit greedy settings (no sampling,
whatever the model's generation config says). With `per_step`, each item's *raw* logits (before any logits
processor: a repetition penalty or temperature in a model's generation config would change an entropy) are
reduced by that function while the batch is still on hand, so a long generation never keeps whole-vocabulary
tensors for every item.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

# (raw float32 logits of the generated steps [steps x vocab], generated token ids) -> what to keep of them
StepReducer = Callable[[torch.Tensor, list[int]], Any]


@dataclass
class Generated:
    token_ids: list[int]  # up to (not including) the first end-of-sequence token
    text: str
    reduced: Any = None  # what `per_step` returned
    cut: bool = False  # the budget ran out before an end-of-sequence token


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
    eos = tokenizer.eos_token_id
    for start in tqdm(range(0, len(order), batch_size), desc=desc, unit="batch"):
        idx = order[start : start + batch_size]
        enc = tokenizer([texts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False)
        gen = model.generate(
            **enc.to(device),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
            pad_token_id=tokenizer.pad_token_id,
            temperature=None,
            top_p=None,
            top_k=None,
            output_logits=per_step is not None,
            return_dict_in_generate=True,
        )
        logits = torch.stack(gen.logits, dim=1).float() if per_step is not None else None
        new = gen.sequences[:, enc["input_ids"].shape[1] :].tolist()
        for row, i in enumerate(idx):
            ids = new[row]
            ended = eos in ids
            ids = ids[: ids.index(eos)] if ended else ids
            reduced = per_step(logits[row, : max(len(ids), 1)], ids) if logits is not None else None
            out[i] = Generated(ids, tokenizer.decode(ids, skip_special_tokens=True), reduced, cut=not ended)
        if on_batch is not None:
            on_batch(idx, [out[i] for i in idx])
    return out  # type: ignore[return-value]

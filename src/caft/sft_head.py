"""The SFT step where TRL's fused LM head is slow: off Triton devices (a CPU), it projects every position of the
batch through the LM head, in tiles, and computes the per-token entropy and top-1 there too; only the label
positions count. With answer-only targets a few tokens long and a 49k vocabulary, that head is most of a step
(bench/results/train_step.md). Here the head is applied to the label positions alone, in one matmul: the same
loss, normalisation and logged metrics (`entropy`, `mean_token_accuracy`, `num_tokens`) as TRL's.

TRL's own path is kept where it is the better one or where this one would not be the same computation: on
Triton devices (it scores only the label positions there, tiled, never holding the logits), across processes
(the wrapped model's forward carries DDP / FSDP's hooks), and for losses or heads other than plain NLL on
unscaled logits.
"""

from __future__ import annotations

import torch
from trl import SFTTrainer

# config fields that change the logits after the head (TRL's fused head reads the same ones)
_HEAD_SCALING = ("final_logit_softcapping", "logit_scale", "output_multiplier", "lm_head_multiplier", "logits_scaling")


def _causal_lm(model: torch.nn.Module) -> torch.nn.Module:
    """The causal LM under a PEFT wrapper (LoRA layers are injected into it, so calling it trains them)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def applies(model: torch.nn.Module, device: torch.device, processes: int) -> bool:
    """Whether the compact head computes what TRL's would, and is the cheaper one, for this model and device."""
    if device.type != "cpu" or processes != 1:  # across processes `model` is DDP's wrapper: its forward counts
        return False
    config = _causal_lm(model).config.get_text_config()
    plain = all(getattr(config, name, None) is None for name in _HEAD_SCALING)
    return plain and not getattr(config, "output_router_logits", False)


def label_nll(model: torch.nn.Module, inputs: dict, num_items: int | torch.Tensor | None) -> tuple:
    """(loss, stats): the mean next-token NLL over the label positions (normalised by `num_items`, the labels of
    the whole accumulated batch, as the Trainer passes it), and the label count, summed entropy and top-1 hits
    of this micro-batch for the logged metrics."""
    causal = _causal_lm(model)
    features = {k: v for k, v in inputs.items() if k != "labels"}
    hidden = causal.base_model(**features, use_cache=False).last_hidden_state[:, :-1]
    labels = inputs["labels"][:, 1:]
    mask = labels != -100
    targets = labels[mask]
    logits = causal.get_output_embeddings()(hidden[mask]).float()
    log_probs = torch.log_softmax(logits, dim=-1)
    nll = -log_probs.gather(1, targets[:, None]).squeeze(1)
    count = mask.sum()
    loss = nll.sum() / torch.as_tensor(count if num_items is None else num_items).clamp(min=1)
    with torch.no_grad():
        entropy = -(log_probs.exp() * log_probs).sum(-1).sum()
        top1 = (logits.argmax(-1) == targets).sum()
    return loss, (count, entropy, top1)


class CompactHeadSFTTrainer(SFTTrainer):
    """TRL's SFTTrainer with the LM head applied only at the label positions where that is the same loss and
    cheaper (`applies`); everything else is TRL's."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        standard = self.compute_loss_func is None and self.label_smoother is None and self.args.loss_type == "nll"
        processes = self.accelerator.num_processes
        plain = standard and "attention_mask" in inputs  # not padding-free batches
        if return_outputs or not plain or not applies(model, self.accelerator.device, processes):
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        mode = "train" if self.model.training else "eval"
        loss, (count, entropy, top1) = label_nll(model, inputs, num_items_in_batch)
        valid = count.item()
        self._metrics[mode]["entropy"].append(entropy.item() / valid if valid else 0.0)
        self._metrics[mode]["mean_token_accuracy"].append(top1.item() / valid if valid else 0.0)
        if mode == "train":
            self._total_train_tokens += int(inputs["attention_mask"].sum().item())
        self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
        return loss

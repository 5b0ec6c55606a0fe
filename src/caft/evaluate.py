"""Evaluation: greedy generation on the test questions and answer extraction per format; the accuracy
measures live in `caft.metrics` (strict: unparseable = wrong; TIGER-style; parse failures; Wilson 95 %
interval; per category). Per-band and balanced-test accuracy are computed by the report, from the saved
predictions, so a threshold change never forces a re-generation for a model that did not change.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import torch

from caft import answers, prompts
from caft.errors import CaftError
from caft.generation import greedy
from caft.models import MODEL_CARD, load_model, pick_device, pick_dtype
from caft.params import ModelSpec, Params
from caft.teacher import prompt as teacher_prompt


def messages_for(row, mode: str, p: Params) -> list[dict[str, str]]:
    """The prompt a strategy's model is evaluated with: the answer-only prompt, or the teacher's CoT prompt."""
    if mode == "cot":
        category = row.category if p.teacher.subject else None
        return teacher_prompt.messages(row.question, list(row.options), category, p.teacher.marker)
    category = row.category if p.prompt.subject else None
    return prompts.build_messages(
        row.question, list(row.options), category, p.train.answer_variant, p.prompt.option_ids
    )


def extract(text: str, n_options: int, mode: str, p: Params) -> answers.Answer | None:
    """The answer read the way the model was trained to write it: after CoT, the teacher's marker (the teacher
    stage's own check); directly, after the answer prefix. The question's answer format does the reading."""
    fmt = answers.format_of(n_options)
    if mode == "cot":
        return fmt.cot(text, n_options, p.teacher.marker)
    return fmt.direct(text, n_options, p.prompt.option_ids)


def load_trained(model_dir: Path, device: torch.device):
    """A trained student from its folder: base + LoRA adapter (merged for speed), or a full model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    card_file = model_dir / MODEL_CARD
    if not card_file.exists():
        raise CaftError(f"{model_dir} is not a caft model folder (no {MODEL_CARD})")
    card = json.loads(card_file.read_text())
    spec = ModelSpec(**card["base"])
    dtype = pick_dtype(spec.dtype, device)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    if card["lora"]:
        from peft import PeftModel

        model = PeftModel.from_pretrained(load_model(spec, device, dtype), model_dir).merge_and_unload()
    else:
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(device)
    return model.eval(), tokenizer, card


def generate_vllm(model_dir: Path, card: dict, texts: list[str], max_new_tokens: int) -> list[str]:
    """The same greedy generation through vLLM (where installed): the base model plus the LoRA adapter."""
    try:
        from vllm import LLM, SamplingParams
        from vllm.lora.request import LoRARequest
    except ImportError:
        raise CaftError("eval.backend=vllm needs vLLM installed (pip install vllm, on a GPU machine)") from None
    from caft.models import resolve

    base = resolve(ModelSpec(**card["base"]))
    llm = LLM(
        model=base.location if card["lora"] else str(model_dir),
        revision=base.revision if card["lora"] else None,
        enable_lora=card["lora"],
        seed=0,
    )
    lora = LoRARequest("student", 1, str(model_dir)) if card["lora"] else None
    results = llm.generate(texts, SamplingParams(temperature=0.0, max_tokens=max_new_tokens), lora_request=lora)
    return [r.outputs[0].text for r in results]


def predict(model_dir: Path, questions: pd.DataFrame, p: Params) -> pd.DataFrame:
    """Per question: the prompt mode, the generated text, the parsed option and correctness."""
    device = pick_device(p.eval.device)
    model, tokenizer, card = (None, None, json.loads((model_dir / MODEL_CARD).read_text()))
    if p.eval.backend == "hf":
        model, tokenizer, card = load_trained(model_dir, device)
    mode = card["eval_mode"]
    max_new = p.eval.max_new_tokens_cot if mode == "cot" else p.eval.max_new_tokens_direct
    chat = [messages_for(row, mode, p) for row in questions.itertuples(index=False)]
    prefixes = [
        prompts.answer_prefix(p.prompt.answer_prefix, e) if mode == "direct" else "" for e in questions["expression"]
    ]
    if p.eval.backend == "hf":
        texts = [prompts.apply_chat_template(tokenizer, m, x) for m, x in zip(chat, prefixes, strict=True)]
        outputs = [g.text for g in greedy(model, tokenizer, texts, max_new, p.eval.batch_size, desc="eval")]
    else:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(model_dir)
        texts = [prompts.apply_chat_template(tok, m, x) for m, x in zip(chat, prefixes, strict=True)]
        outputs = generate_vllm(model_dir, card, texts, max_new)
    preds = questions[["question_id", "category", "answer_index", "answer"]].copy()
    preds["n_options"] = questions["options"].map(len).to_numpy()
    preds["mode"] = mode
    letters = (p.teacher.marker == "answer_is") if mode == "cot" else (p.prompt.option_ids == "letter")
    preds["letters"] = letters & (preds["n_options"] > 0)
    preds["output"] = outputs
    parsed = [extract(o, n, mode, p) for o, n in zip(outputs, preds["n_options"], strict=True)]
    preds["parsed_index"] = [x if isinstance(x, int) else -1 for x in parsed]
    preds["parsed_answer"] = ["" if x is None else str(x) for x in parsed]
    preds["parsed"] = [x is not None for x in parsed]
    gold = [
        answers.gold(n, i, a)
        for n, i, a in zip(preds["n_options"], preds["answer_index"], preds["answer"], strict=True)
    ]
    preds["correct"] = [x is not None and x == g for x, g in zip(parsed, gold, strict=True)]
    # the format's lenient reading, where it has one (numbers: lm-evaluation-harness's `flexible-extract`)
    preds["flexible_correct"] = [
        c if (fmt := answers.format_of(n)).flexible is None else fmt.flexible(o, n, p.teacher.marker) == g
        for o, n, g, c in zip(outputs, preds["n_options"], gold, preds["correct"], strict=True)
    ]
    return preds

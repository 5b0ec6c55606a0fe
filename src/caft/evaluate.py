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
from caft.generation import Generated, greedy
from caft.models import load_model, pick_device, pick_dtype, read_card, resolve
from caft.params import EvalParams, ModelSpec
from caft.teacher import prompt as teacher_prompt


def messages_for(row, reading: dict) -> list[dict[str, str]]:
    """The prompt a model is evaluated with, as its card's `reading` says it was trained: the answer-only
    prompt (`direct`), or the teacher's CoT prompt (`cot`)."""
    category = row.category if reading["subject"] else None
    dataset = reading.get("dataset", prompts.GENERIC)  # cards written before dataset prompts: the generic texts
    options, answer_format = list(row.options), answers.format_name(len(row.options), row.answer)
    if reading["mode"] == "cot":
        return teacher_prompt.messages(
            row.question, options, category, reading["marker"], dataset, answer_format=answer_format
        )
    return prompts.build_messages(
        row.question, options, category, reading["variant"], reading["option_ids"], dataset, answer_format=answer_format
    )


def prefix_for(expression: str, reading: dict) -> str:
    """The assistant turn's opening: the answer prefix a direct model was trained after; none for CoT."""
    return prompts.answer_prefix(reading["answer_prefix"], expression) if reading["mode"] == "direct" else ""


def extract(text: str, n_options: int, answer: object, reading: dict) -> answers.Answer | None:
    """The answer read the way the model was trained to write it: after CoT, the teacher's marker (the teacher
    stage's own check); directly, after the answer prefix. The question's answer format does the reading."""
    fmt = answers.format_of(n_options, answer)
    if reading["mode"] == "cot":
        return fmt.cot(text, n_options, reading["marker"])
    return fmt.direct(text, n_options, reading["option_ids"])


def load_trained(model_dir: Path, device: torch.device):
    """A trained student from its folder: base + LoRA adapter (merged for speed), or a full model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    card = read_card(model_dir)
    spec = ModelSpec(**card["base"])
    dtype = pick_dtype(spec.dtype, device)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    if card["lora"]:
        from peft import PeftModel

        model = PeftModel.from_pretrained(load_model(spec, device, dtype), model_dir).merge_and_unload()
    else:
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(device)
    return model.eval(), tokenizer, card


class Vllm:
    """One vLLM engine (where installed) on a base model, answering greedily through a LoRA adapter: the eval
    stage's finished one, or the per-epoch pass's adapter of each epoch. Each adapter folder gets its own id,
    because vLLM keeps an adapter it has loaded by id and would otherwise serve the previous epoch's weights.
    Prompts go in as token ids, tokenized as the HF path tokenizes them (no special tokens added: the chat
    template already wrote them), so both backends answer the same prompts."""

    def __init__(self, location: str, revision: str | None, lora_rank: int | None, memory: float = 0.9):
        try:
            from vllm import LLM, SamplingParams
            from vllm.lora.request import LoRARequest
        except ImportError:
            raise CaftError("eval.backend=vllm needs vLLM installed (pip install vllm, on a GPU machine)") from None
        lora = {"enable_lora": True, "max_lora_rank": lora_rank} if lora_rank else {"enable_lora": False}
        self.llm = LLM(model=location, revision=revision, seed=0, gpu_memory_utilization=memory, **lora)
        self.sampling, self.lora_request = SamplingParams, LoRARequest
        self.served = 0  # adapters served so far: the next one's id

    def generate(self, token_ids: list[list[int]], max_new_tokens: int, adapter: Path | None = None) -> list[Generated]:
        lora = None
        if adapter is not None:  # a fresh id per call: the folder's weights may have changed since the last
            self.served += 1
            lora = self.lora_request(f"student-{self.served}", self.served, str(adapter))
        prompts = [{"prompt_token_ids": ids} for ids in token_ids]
        greedy_params = self.sampling(temperature=0.0, max_tokens=max_new_tokens)
        results = self.llm.generate(prompts, greedy_params, lora_request=lora)
        return [
            Generated(list(o.token_ids), o.text, cut=o.finish_reason == "length")
            for o in (r.outputs[0] for r in results)
        ]


def token_ids(texts: list[str], tokenizer) -> list[list[int]]:
    """The prompts' token ids exactly as `caft.generation.greedy` tokenizes them."""
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


def vllm_predict(model_dir: Path, questions: pd.DataFrame, cfg: EvalParams) -> pd.DataFrame:
    """`predict` through vLLM: the base model plus the folder's LoRA adapter, or the folder's full model."""
    from transformers import AutoTokenizer

    card = read_card(model_dir)
    if card["lora"]:
        base = resolve(ModelSpec(**card["base"]))
        rank = json.loads((model_dir / "adapter_config.json").read_text())["r"]
        engine, adapter = Vllm(base.location, base.revision, rank), model_dir
    else:
        engine, adapter = Vllm(str(model_dir), None, None), None
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    ids = token_ids(prompt_texts(questions, card["reading"], tokenizer), tokenizer)
    budget = max_new_tokens(card["reading"], cfg, questions, tokenizer)
    return read_outputs(questions, engine.generate(ids, budget, adapter), card["reading"]).assign(budget=budget)


def prompt_texts(questions: pd.DataFrame, reading: dict, tokenizer) -> list[str]:
    """The chat-templated prompts a model with this `reading` is evaluated on (its assistant turn opened)."""
    chat = [messages_for(row, reading) for row in questions.itertuples(index=False)]
    prefixes = [prefix_for(e, reading) for e in questions["expression"]]
    return [prompts.apply_chat_template(tokenizer, m, x) for m, x in zip(chat, prefixes, strict=True)]


def predict(model_dir: Path, questions: pd.DataFrame, cfg: EvalParams) -> pd.DataFrame:
    """Per question: the prompt mode, the generated text, the parsed answer and correctness. How to prompt the
    model and read its answers comes from its card (`caft_model.json`), not from the params."""
    if cfg.backend == "vllm":
        return vllm_predict(model_dir, questions, cfg)
    model, tokenizer, card = load_trained(model_dir, pick_device(cfg.device))
    return generate_and_read(model, tokenizer, questions, card["reading"], cfg)


def max_new_tokens(reading: dict, cfg: EvalParams, questions: pd.DataFrame, tokenizer) -> int:
    """The generation budget: `eval.max_new_tokens_cot` after CoT; for a direct answer, at least the longest
    answer-only target of these questions under the student's tokenizer, and an end token, so that no direct
    answer is cut (a digit a token: GSM8K's `[[1,234,567]]` is 13 tokens, a 4-token budget reads `[[1`)."""
    if reading["mode"] == "cot":
        return cfg.max_new_tokens_cot
    return max(cfg.max_new_tokens_direct, longest_direct_target(questions, reading, tokenizer) + 1)


def longest_direct_target(questions: pd.DataFrame, reading: dict, tokenizer) -> int:
    """Tokens of the longest answer a direct model may write to these questions: a choice question's highest
    option id; another's gold as its prompt asks for it, in each spelling its format allows (a number plain and
    with thousands separators)."""
    dataset = reading.get("dataset", prompts.GENERIC)
    texts = []
    for options, answer in zip(questions["options"], questions["answer"], strict=True):
        if len(options):
            texts.append(str(len(options)) if reading["option_ids"] == "numeric" else answers.LETTERS[len(options) - 1])
        else:
            texts += [prompts.answer_target(a, dataset) for a in answers.free_form_of(answer).spellings(answer)]
    return max((len(tokenizer.encode(t, add_special_tokens=False)) for t in texts), default=0)


def generate_and_read(model, tokenizer, questions: pd.DataFrame, reading: dict, cfg: EvalParams) -> pd.DataFrame:
    """Batched greedy generation with a model in memory, read as `reading` says: the eval stage on a loaded
    model, and the per-epoch validation eval on the model being trained (the same function, so the two agree)."""
    texts = prompt_texts(questions, reading, tokenizer)
    budget = max_new_tokens(reading, cfg, questions, tokenizer)
    generated = greedy(model, tokenizer, texts, budget, cfg.batch_size, desc="eval")
    return read_outputs(questions, generated, reading).assign(budget=budget)


def read_outputs(questions: pd.DataFrame, generated: list[Generated], reading: dict) -> pd.DataFrame:
    """Per question: the generated text, whether the budget cut it, the parsed answer and whether it is the
    gold one."""
    outputs = [g.text for g in generated]
    mode = reading["mode"]
    preds = questions[["question_id", "category", "answer_index", "answer"]].copy()
    preds["n_options"] = questions["options"].map(len).to_numpy()
    preds["mode"] = mode
    ids = (
        teacher_prompt.id_kind(reading["marker"], reading.get("dataset", prompts.GENERIC))
        if mode == "cot"
        else reading["option_ids"]
    )
    letters = ids == "letter"
    preds["letters"] = letters & (preds["n_options"] > 0)
    preds["output"] = outputs
    preds["cut"] = [g.cut for g in generated]
    parsed = [extract(o, n, a, reading) for o, n, a in zip(outputs, preds["n_options"], preds["answer"], strict=True)]
    preds["parsed_index"] = [x if isinstance(x, int) else -1 for x in parsed]
    preds["parsed_answer"] = ["" if x is None else str(x) for x in parsed]
    preds["parsed"] = [x is not None for x in parsed]
    gold = [
        answers.gold(n, i, a)
        for n, i, a in zip(preds["n_options"], preds["answer_index"], preds["answer"], strict=True)
    ]
    preds["correct"] = [x is not None and x == g for x, g in zip(parsed, gold, strict=True)]
    # the format's lenient reading, where it has one (numbers: lm-evaluation-harness's `flexible-extract`)
    marker = reading.get("marker", "")
    preds["flexible_correct"] = [
        c if (fmt := answers.format_of(n, a)).flexible is None else fmt.flexible(o, n, marker) == g
        for o, n, a, g, c in zip(outputs, preds["n_options"], preds["answer"], gold, preds["correct"], strict=True)
    ]
    return preds

"""Single-token answer entropy: the paper's complexity signal.

For each question the student sees the chat-templated prompt; one batched forward pass (left padding,
explicit position ids) gives the raw logits of the last position in float32. From them: the entropy in nats
over the full vocabulary (the paper's measure), the entropy renormalised over the option-id tokens, the
greedy token, whether it is an option / "0" (do not know) / something else, and correctness.

Questions without options (`number`, or another free-form format: `caft.answers.FreeForm`) are scored at the same
place, the first token after the prompt and `prompt.answer_prefix`, but the answer takes several tokens ("-12"):
one batched greedy generation of `entropy.max_new_tokens` gives the raw logits of its first step (the entropy)
and the continuation, whose first answer in the question's format is the answer (`validity`: the format's
label, "number"; none: "other").

`entropy.locate: marker` (the authors' GSM8K way) reads it elsewhere: one batched greedy generation of
`entropy.max_new_tokens`; the answer is the text inside the first `[[...]]` (the answer prefix counts, so a
prefix "[[" opens it), and the entropy is that of the first generated token inside the marker, found by mapping
the answer's first character to its token. A row without a closed, non-empty marker is invalid (`other`).
Either way the rendered prompt and the greedy continuation are kept for auditing.

Raw logits, not `generate(output_scores=True)`: generate's scores pass through the model's logits
processors (repetition penalty, temperature in some generation configs), which would change the entropy.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from caft import answers, prompts
from caft.errors import CaftError
from caft.generation import Generated, greedy
from caft.params import PromptParams
from caft.roc import auc_wrong
from caft.scores import valid_rows
from caft.store import JsonlStore
from caft.tokens import entropy_nats, first_token, token_at_char

RESULT_COLUMNS = [
    "entropy",
    "entropy_options",
    "p_options",
    "p_top",
    "pred_token_id",
    "pred_token",
    "pred_index",
    "pred_answer",
    "continuation",
    "validity",
    "correct",
]


_MARKER = re.compile(r"\[\[(.*?)\]\]", re.DOTALL)


def marker_answer(prefix: str, continuation: str) -> tuple[int, str] | None:
    """(offset in `continuation` of the answer's first character, the answer text) of the first `[[...]]` in
    prefix + continuation; None without a closed, non-empty marker or when the answer starts inside the prefix
    (then no generated token wrote it)."""
    match = _MARKER.search(prefix + continuation)
    if match is None or not match.group(1).strip():
        return None
    inner = match.group(1)
    offset = match.start(1) + len(inner) - len(inner.lstrip()) - len(prefix)
    return (offset, inner.strip()) if offset >= 0 else None


@dataclass
class IdTokens:
    """Which vocabulary token stands for which option id, and which ids cannot be told apart."""

    ids: list[str]
    tokens: list[int]
    idk_token: int | None
    collisions: list[list[str]] = field(default_factory=list)
    skip_ambiguous: bool = False

    def index_of(self, token: int, n_options: int) -> int:
        """Option index for a greedy token (first id wins on a shared token), or -1."""
        for i, tok in enumerate(self.tokens[:n_options]):
            if tok == token:
                return i
        return -1

    def ambiguous(self, n_options: int) -> bool:
        """True when this row's ids (plus "0" for the fallback prompt) share a first token."""
        used = set(self.ids[:n_options]) | ({prompts.IDK_ID} if self.idk_token is not None else set())
        return any(len(used & set(group)) > 1 for group in self.collisions)


def id_tokens(tokenizer, context: str, kind: str, n_max: int, fallback: bool, policy: str) -> IdTokens:
    """Map option ids to first tokens; apply the collision policy ("10" and "1" both start with "1" in most
    tokenizers): `error` stops with a clear message, `first` credits a shared token to the first id (what the
    authors' code did implicitly), `skip` marks rows that use colliding ids as `ambiguous`."""
    ids = prompts.option_ids(kind, n_max)
    tokens = [first_token(tokenizer, context, i) for i in ids]
    idk = first_token(tokenizer, context, prompts.IDK_ID) if fallback else None
    by_token: dict[int, list[str]] = {}
    for i, tok in zip(ids + ([prompts.IDK_ID] if fallback else []), tokens + ([idk] if fallback else []), strict=True):
        by_token.setdefault(tok, []).append(i)
    collisions = [group for group in by_token.values() if len(group) > 1]
    if collisions and policy == "error":
        shown = "; ".join(" / ".join(repr(i) for i in g) for g in collisions)
        raise CaftError(
            f"option ids share a first token in this tokenizer ({shown}): use prompt.option_ids=letter, "
            "or entropy.id_collision=first (shared token counts as the first id) or skip (drop those rows)"
        )
    return IdTokens(ids=ids, tokens=tokens, idk_token=idk, collisions=collisions, skip_ambiguous=policy == "skip")


def render_prompts(questions: pd.DataFrame, tokenizer, cfg: PromptParams) -> list[str]:
    """The exact chat-templated text each question is scored on, answer prefix included (kept in the output
    for auditing)."""
    return [
        prompts.apply_chat_template(
            tokenizer,
            prompts.build_messages(
                q,
                list(o),
                c if cfg.subject else None,
                cfg.variant,
                cfg.option_ids,
                cfg.dataset,
                answer_format=answers.format_name(len(o), a),
            ),
            prompts.answer_prefix(cfg.answer_prefix, e),
        )
        for q, o, a, c, e in zip(
            questions["question"],
            questions["options"],
            questions["answer"],
            questions["category"],
            questions["expression"],
            strict=True,
        )
    ]


@torch.inference_mode()
def last_logits(model, tokenizer, texts: list[str]) -> torch.Tensor:
    """Float32 logits of the next token after each text, in one left-padded forward pass.

    Position ids are passed explicitly: a plain forward call (unlike `generate`) numbers positions from 0
    including the pad tokens, which would make batched results differ from unbatched ones.
    `logits_to_keep=1` skips the LM head on every other position.
    """
    enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    device = next(model.parameters()).device
    mask = enc["attention_mask"].to(device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    out = model(
        input_ids=enc["input_ids"].to(device),
        attention_mask=mask,
        position_ids=positions,
        logits_to_keep=1,
        use_cache=False,
    )
    return out.logits[:, -1, :].float().cpu()


@dataclass
class Scored:
    """What the entropy stage keeps about one question (a row of its scores table). The defaults are a row
    nothing could be read from: no entropy, no prediction, invalid."""

    entropy: float = math.nan
    entropy_options: float = math.nan  # over the option-id tokens (choice rows)
    p_options: float = math.nan
    p_top: float = math.nan
    pred_token_id: int = -1
    pred_token: str = ""
    pred_index: int = -1
    pred_answer: str = ""  # the parsed answer of a row without options
    continuation: str = ""
    validity: str = "other"
    correct: bool = False


def score_logits(logits: torch.Tensor, n_options: int, answer_index: int, idt: IdTokens, tokenizer) -> dict:
    """Everything the pipeline keeps about one question's next-token distribution."""
    probs = torch.softmax(logits, dim=-1)
    option_tokens = list(dict.fromkeys(idt.tokens[:n_options]))
    top = int(torch.argmax(logits))
    if idt.skip_ambiguous and idt.ambiguous(n_options):
        validity, pred = "ambiguous", -1
    elif top in option_tokens:
        validity, pred = "option", idt.index_of(top, n_options)
    elif idt.idk_token is not None and top == idt.idk_token:
        validity, pred = "idk", -1
    else:
        validity, pred = "other", -1
    return asdict(
        Scored(
            entropy=float(entropy_nats(logits)),
            entropy_options=float(entropy_nats(logits[option_tokens])),
            p_options=float(probs[option_tokens].sum()),
            p_top=float(probs[top]),
            pred_token_id=top,
            pred_token=tokenizer.decode([top]),
            pred_index=pred,
            continuation=tokenizer.decode([top]),
            validity=validity,
            correct=validity == "option" and pred == answer_index,
        )
    )


def score_free(logits: torch.Tensor, continuation: str, gold: str, tokenizer) -> dict:
    """A question without options: the first token's full-vocabulary entropy, and the first answer of its
    format in the greedy continuation (a number: the first number) as the answer."""
    top = int(torch.argmax(logits))
    fmt = answers.free_form_of(gold)
    parsed = fmt.direct(continuation, 0, "")
    return asdict(
        Scored(
            entropy=float(entropy_nats(logits)),
            p_top=float(torch.softmax(logits, dim=-1)[top]),
            pred_token_id=top,
            pred_token=tokenizer.decode([top]),
            pred_answer=parsed or "",
            continuation=continuation,
            validity=fmt.label if parsed is not None else "other",
            correct=parsed is not None and parsed == gold,
        )
    )


class PartialStore(JsonlStore):
    """Finished rows, appended and fsynced per batch (`caft.store.JsonlStore`), so a killed run resumes where
    it stopped. Each line is keyed by question id and a hash of the exact prompt; the file name carries a
    fingerprint of the model and settings, so results of another configuration are never reused."""

    def __init__(self, path: Path):
        super().__init__(path)
        self.done: dict[str, dict] = {rec["key"]: rec for rec in self.read()}

    def append(self, records: list[dict]) -> None:
        super().append(records)
        self.done.update((rec["key"], rec) for rec in records)


def row_key(question_id: str, prompt: str) -> str:
    return f"{question_id}:{hashlib.sha256(prompt.encode()).hexdigest()[:16]}"


def _batches(order: list[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(order), size):
        yield order[start : start + size]


def compute(
    questions: pd.DataFrame,
    model,
    tokenizer,
    cfg: PromptParams,
    *,
    batch_size: int,
    max_length: int,
    id_collision: str,
    store: PartialStore,
    max_new_tokens: int = 8,
    locate: str = "next",
    progress: bool = True,
) -> pd.DataFrame:
    """Score every question (resuming from `store`) and return questions + prompt + result columns; `locate`:
    where the entropy is read (module docstring)."""
    texts = render_prompts(questions, tokenizer, cfg)
    lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    too_long = [(qid, n) for qid, n in zip(questions["question_id"], lengths, strict=True) if n > max_length]
    if too_long:
        qid, n = too_long[0]
        raise CaftError(
            f"{len(too_long)} prompt(s) exceed entropy.max_length={max_length} tokens (first: question "
            f"{qid!r}, {n} tokens); raise entropy.max_length — prompts are never truncated"
        )
    n_options = questions["options"].map(len).to_numpy()
    keys = [row_key(q, t) for q, t in zip(questions["question_id"], texts, strict=True)]
    todo = [i for i in np.argsort(lengths, kind="stable")[::-1].tolist() if keys[i] not in store.done]
    formats = set(map(answers.format_name, n_options, questions["answer"]))
    if len(formats) > 1:
        raise CaftError(f"the questions mix answer formats ({', '.join(sorted(formats))}); score one format per run")
    ids = prompts.answer_ids(cfg.option_ids, cfg.dataset)
    if locate == "marker":
        prefixes = [prompts.answer_prefix(cfg.answer_prefix, e) for e in questions["expression"]]
        option_tokens = (
            [first_token(tokenizer, "[[", i) for i in prompts.option_ids(ids, int(n_options.max()))]
            if n_options.max()
            else []
        )
        generation = GreedyRun(model, tokenizer, texts, keys, todo, batch_size, max_new_tokens, store)
        _score_marker(generation, questions, prefixes, ids, option_tokens)
        return _assemble(questions, texts, keys, store, tokenizer)
    if n_options.max() == 0:
        _score_free(GreedyRun(model, tokenizer, texts, keys, todo, batch_size, max_new_tokens, store), questions)
        return _assemble(questions, texts, keys, store, tokenizer)
    idt = id_tokens(tokenizer, texts[0], ids, int(n_options.max()), cfg.variant == "fallback", id_collision)
    bar = tqdm(total=len(texts), initial=len(texts) - len(todo), desc="entropy", unit="q", disable=not progress)
    for batch in _batches(todo, batch_size):
        logits = last_logits(model, tokenizer, [texts[i] for i in batch])
        records = [
            {
                "key": keys[i],
                **score_logits(row, int(n_options[i]), int(questions["answer_index"].iat[i]), idt, tokenizer),
            }
            for i, row in zip(batch, logits, strict=True)
        ]
        store.append(records)
        bar.update(len(batch))
    bar.close()
    return _assemble(questions, texts, keys, store, tokenizer)


@dataclass
class GreedyRun:
    """The rows still to score by greedy generation, and where their records go (one batch at a time)."""

    model: object
    tokenizer: object
    texts: list[str]
    keys: list[str]
    todo: list[int]
    batch_size: int
    max_new_tokens: int
    store: PartialStore

    def run(self, per_step, record) -> None:
        """Generate for the rows to do; `record(row, generated)` turns each result into its stored record."""

        def save(batch: list[int], done: list[Generated]) -> None:
            rows = [self.todo[j] for j in batch]
            self.store.append([{"key": self.keys[i], **record(i, g)} for i, g in zip(rows, done, strict=True)])

        greedy(
            self.model,
            self.tokenizer,
            [self.texts[i] for i in self.todo],
            self.max_new_tokens,
            self.batch_size,
            per_step=per_step,
            desc="entropy",
            on_batch=save,
        )


def _score_free(generation: GreedyRun, questions: pd.DataFrame) -> None:
    """Rows without options, entropy at the next token: the first step's raw logits give the entropy."""
    gold = questions["answer"].tolist()
    generation.run(
        lambda logits, _ids: logits[0],
        lambda i, g: score_free(g.reduced, g.text, gold[i], generation.tokenizer),
    )


def step_stats(logits: torch.Tensor, ids: list[int], option_tokens: list[int]) -> dict[str, list]:
    """Per generated step: full-vocabulary entropy, greedy token and its probability, and (choice rows) the
    entropy over the option-id tokens and their total probability; small enough to keep for every step."""
    steps = logits[: max(len(ids), 1)]
    probs = torch.softmax(steps, dim=-1)
    top = steps.argmax(dim=-1)
    stats = {
        "entropy": entropy_nats(steps).tolist(),
        "top": top.tolist(),
        "p_top": probs.gather(1, top[:, None])[:, 0].tolist(),
    }
    if option_tokens:
        stats["entropy_options"] = entropy_nats(steps[:, option_tokens]).tolist()
        stats["p_options"] = probs[:, option_tokens].sum(dim=-1).tolist()
    return stats


def score_marker(stats: dict, generated: Generated, prefix: str, row, ids: str, tokenizer) -> dict:
    """One row, entropy inside the marker: the step that writes the answer's first character."""
    located = marker_answer(prefix, generated.text)
    record = Scored(continuation=generated.text)
    if located is None:
        return asdict(record)
    offset, answer = located
    step = token_at_char(tokenizer, generated.token_ids, offset)
    if step >= len(stats["entropy"]):  # decoded prefixes that do not add up to the full text: no step to read
        return asdict(record)
    n_options = len(row.options)
    if n_options:
        labels = prompts.option_ids(ids, n_options)
        index = labels.index(answer) if answer in labels else -1
        validity, correct, parsed = ("option" if index >= 0 else "other"), index == row.answer_index, ""
    else:
        fmt = answers.free_form_of(row.answer)
        parsed = fmt.canonical(answer)
        index, validity, correct = -1, fmt.label if parsed is not None else "other", parsed == row.answer
    record = replace(
        record,
        entropy=stats["entropy"][step],
        p_top=stats["p_top"][step],
        pred_token_id=stats["top"][step],
        pred_token=tokenizer.decode([stats["top"][step]]),
        pred_index=index,
        pred_answer=parsed or "",
        validity=validity,
        correct=bool(correct),
    )
    if n_options:
        record = replace(record, entropy_options=stats["entropy_options"][step], p_options=stats["p_options"][step])
    return asdict(record)


def _score_marker(
    generation: GreedyRun, questions: pd.DataFrame, prefixes: list[str], ids: str, option_tokens: list[int]
) -> None:
    """Every row (either format), entropy at the first token inside the first `[[...]]`."""
    rows = list(questions.itertuples(index=False))
    generation.run(
        lambda logits, token_ids: step_stats(logits, token_ids, option_tokens),
        lambda i, g: score_marker(g.reduced, g, prefixes[i], rows[i], ids, generation.tokenizer),
    )


def _assemble(questions: pd.DataFrame, texts: list[str], keys: list[str], store: PartialStore, tokenizer):
    results = pd.DataFrame([store.done[k] for k in keys]).drop(columns="key")
    out = questions.reset_index(drop=True).assign(prompt=texts, n_options=questions["options"].map(len).to_numpy())
    out = pd.concat([out, results], axis=1)
    out["max_entropy"] = math.log(len(tokenizer))
    return out


def summarize(table: pd.DataFrame) -> dict:
    """Metrics: counts, validity rates, single-token accuracy and the ROC AUC of entropy for a wrong answer
    (on rows with a valid option answer, as the paper: IDK and invalid answers are dropped)."""
    valid = valid_rows(table)
    out = {
        "n": len(table),
        "n_train": int((table["subset"] == "train").sum()),
        "n_test": int((table["subset"] == "test").sum()),
        "valid_rate": _rate(table["validity"].isin(answers.labels())),
        "accuracy": _rate(table["correct"]),
        "accuracy_valid": _rate(valid["correct"]) if len(valid) else None,
        "roc_auc": _auc(valid, "entropy"),
        "roc_auc_options": _auc(valid, "entropy_options"),
        "entropy_mean": float(table["entropy"].mean()),
    }
    for kind in (*answers.free_labels(), *answers.NOT_ANSWERED):
        out[f"{kind}_rate"] = _rate(table["validity"] == kind)
    known = table[table.get("difficulty", pd.Series(-1, index=table.index)) >= 0]
    # Synthetic questions know their true difficulty (reasoning steps): does entropy track it?
    out["spearman_entropy_steps"] = (
        round(float(known["entropy"].corr(known["difficulty"], method="spearman")), 6)
        if known["difficulty"].nunique() > 1
        else None
    )
    for steps, part in known.groupby("difficulty"):
        out[f"steps_{steps}_accuracy"] = _rate(part["correct"])
        out[f"steps_{steps}_entropy_mean"] = round(float(part["entropy"].mean()), 6)
    return out


def _auc(valid: pd.DataFrame, score: str) -> float | None:
    """ROC AUC over the rows that have this score (an import publishes no option-restricted entropy: all NaN)."""
    scored = valid[valid[score].notna()]
    return auc_wrong(scored["correct"], scored[score]) if len(scored) else None


def _rate(mask: pd.Series) -> float:
    return round(float(np.mean(mask.astype(bool))), 6) if len(mask) else 0.0

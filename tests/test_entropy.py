import math

import numpy as np
import pandas as pd
import pytest
import torch

from caft import entropy, tokens
from caft.errors import CaftError
from tests.conftest import make_questions, section


def _np_entropy(logits: np.ndarray) -> float:
    p = np.exp(logits - logits.max())
    p /= p.sum()
    return float(-(p * np.log(p)).sum())


def test_entropy_of_hand_made_logits():
    # p = (1/4, 1/4, 1/2): H = 1.5 ln 2
    logits = torch.tensor([0.0, 0.0, math.log(2.0)])
    assert float(tokens.entropy_nats(logits)) == pytest.approx(1.5 * math.log(2), abs=1e-6)
    assert float(tokens.entropy_nats(torch.zeros(7))) == pytest.approx(math.log(7), abs=1e-6)
    rng = np.random.default_rng(0)
    batch = rng.normal(size=(5, 50)) * 4
    ours = tokens.entropy_nats(torch.tensor(batch, dtype=torch.float32)).numpy()
    assert ours == pytest.approx([_np_entropy(row) for row in batch], abs=1e-5)


def test_entropy_is_stable_for_extreme_logits():
    logits = torch.tensor([1000.0, 0.0, -1000.0])
    assert float(tokens.entropy_nats(logits)) == pytest.approx(0.0, abs=1e-6)


IDT = entropy.IdTokens(ids=["A", "B", "C", "D"], tokens=[10, 11, 12, 13], idk_token=20)


class _Decoder:
    def decode(self, ids):
        return f"<{ids[0]}>"


def _logits(**hot: float) -> torch.Tensor:
    logits = torch.zeros(32)
    for tok, val in hot.items():
        logits[int(tok.removeprefix("t"))] = val
    return logits


def test_score_option_answer_and_option_entropy():
    logits = _logits(t11=5.0, t10=5.0 - math.log(3))  # greedy token B; A one third as likely
    rec = entropy.score_logits(logits, 3, 1, IDT, _Decoder())
    assert rec["validity"] == "option" and rec["pred_index"] == 1 and rec["correct"] is True
    opt = np.array([5.0 - math.log(3), 5.0, 0.0])
    assert rec["entropy_options"] == pytest.approx(_np_entropy(opt), abs=1e-5)
    assert rec["entropy"] == pytest.approx(_np_entropy(logits.numpy()), abs=1e-5)
    assert rec["pred_token"] == "<11>"


def test_score_idk_other_and_out_of_range_option():
    assert entropy.score_logits(_logits(t20=9.0), 4, 0, IDT, _Decoder())["validity"] == "idk"
    assert entropy.score_logits(_logits(t5=9.0), 4, 0, IDT, _Decoder())["validity"] == "other"
    # "D" is an id, but this row has only 3 options
    rec = entropy.score_logits(_logits(t13=9.0), 3, 0, IDT, _Decoder())
    assert (rec["validity"], rec["correct"]) == ("other", False)


def test_numeric_ids_collide_in_tiny_tokenizer(tiny_model):
    _, tok = tiny_model
    context = "<|im_start|>assistant\n"
    with pytest.raises(CaftError, match=r"option ids share a first token in this tokenizer \('1' / '10'\)"):
        entropy.id_tokens(tok, context, "numeric", 10, False, "error")
    first = entropy.id_tokens(tok, context, "numeric", 10, False, "first")
    assert first.tokens[0] == first.tokens[9] and first.index_of(first.tokens[0], 10) == 0
    assert not first.skip_ambiguous
    skip = entropy.id_tokens(tok, context, "numeric", 10, False, "skip")
    assert skip.ambiguous(10) and not skip.ambiguous(9)
    letters = entropy.id_tokens(tok, context, "letter", 10, True, "error")
    assert len(set(letters.tokens + [letters.idk_token])) == 11


def test_skip_policy_marks_rows_ambiguous():
    idt = entropy.IdTokens(
        ids=["1", "2", "10"], tokens=[1, 2, 1], idk_token=None, collisions=[["1", "10"]], skip_ambiguous=True
    )
    assert entropy.score_logits(_logits(t1=9.0), 3, 0, idt, _Decoder())["validity"] == "ambiguous"
    assert entropy.score_logits(_logits(t1=9.0), 2, 0, idt, _Decoder())["validity"] == "option"


def _run(questions, tiny_model, tmp_path, batch_size, name="p.jsonl"):
    model, tok = tiny_model
    store = entropy.PartialStore(tmp_path / name)
    return entropy.compute(
        questions,
        model,
        tok,
        section("prompt", answer_prefix=""),
        batch_size=batch_size,
        max_length=512,
        id_collision="error",
        store=store,
        progress=False,
    )


def test_batched_equals_unbatched_with_left_padding(tiny_model, tmp_path):
    questions = make_questions(9)  # 2..10 options: prompts of different lengths, so padding is real
    one = _run(questions, tiny_model, tmp_path, 1, "a.jsonl")
    many = _run(questions, tiny_model, tmp_path, 9, "b.jsonl")
    assert one["entropy"].to_numpy() == pytest.approx(many["entropy"].to_numpy(), abs=1e-4)
    assert list(one["pred_token_id"]) == list(many["pred_token_id"])
    _, tok = tiny_model
    lengths = {len(tok.encode(p)) for p in one["prompt"]}
    assert len(lengths) > 1


def test_entropy_matches_an_independent_forward_pass(tiny_model, tmp_path):
    model, tok = tiny_model
    questions = make_questions(3)
    table = _run(questions, tiny_model, tmp_path, 3)
    ids = torch.tensor([tok.encode(table["prompt"][2], add_special_tokens=False)])
    with torch.no_grad():
        logits = model(ids).logits[0, -1].double().numpy()
    assert table["entropy"][2] == pytest.approx(_np_entropy(logits), abs=1e-4)
    assert table["max_entropy"][0] == pytest.approx(math.log(len(tok)))


def test_resume_skips_rows_already_in_the_partial_store(tiny_model, tmp_path, monkeypatch):
    questions = make_questions(8)
    full = _run(questions, tiny_model, tmp_path, 4, "full.jsonl")
    # a killed run: the first batch (4 rows) was stored, then half a line was written
    lines = (tmp_path / "full.jsonl").read_text().splitlines()
    (tmp_path / "resume.jsonl").write_text("\n".join(lines[:4]) + "\n" + lines[4][:20])
    seen = []
    real = entropy.last_logits
    monkeypatch.setattr(entropy, "last_logits", lambda m, t, texts: seen.extend(texts) or real(m, t, texts))
    resumed = _run(questions, tiny_model, tmp_path, 4, "resume.jsonl")
    assert len(seen) == 4
    pd.testing.assert_frame_equal(resumed, full)


def test_prompt_longer_than_max_length_is_an_error(tiny_model, tmp_path):
    model, tok = tiny_model
    with pytest.raises(CaftError, match=r"6 prompt\(s\) exceed entropy.max_length=10 tokens \(first: question 'q"):
        entropy.compute(
            make_questions(6),
            model,
            tok,
            section("prompt", answer_prefix=""),
            batch_size=2,
            max_length=10,
            id_collision="error",
            store=entropy.PartialStore(tmp_path / "x"),
            progress=False,
        )


def test_summarize_counts_and_auc():
    table = pd.DataFrame(
        {
            "subset": ["train"] * 4 + ["test"] * 2,
            "validity": ["option", "option", "option", "option", "idk", "other"],
            "correct": [True, False, True, False, False, False],
            "entropy": [0.1, 0.9, 0.3, 0.7, 2.0, 3.0],
            "entropy_options": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
            "difficulty": [2, 4, 1, 5, 3, -1],
        }
    )
    s = entropy.summarize(table)
    assert (s["n"], s["n_train"], s["n_test"]) == (6, 4, 2)
    assert s["valid_rate"] == pytest.approx(4 / 6, abs=1e-6)
    assert s["accuracy"] == pytest.approx(2 / 6, abs=1e-6) and s["accuracy_valid"] == 0.5
    # wrong rows (0.9, 0.7) both above correct rows (0.1, 0.3): perfect ranking
    assert s["roc_auc"] == 1.0
    # options score: wrong (0.2, 0.4) vs correct (0.1, 0.3): pairs won 3 of 4
    assert s["roc_auc_options"] == 0.75
    # ranks of entropy (1,4,2,3,5) vs difficulty (2,4,1,5,3) over the 5 rows with a known difficulty
    d = np.array([1, 4, 2, 3, 5]) - np.array([2, 4, 1, 5, 3])
    assert s["spearman_entropy_steps"] == pytest.approx(1 - 6 * (d**2).sum() / (5 * 24), abs=1e-6) == 0.5
    assert s["idk_rate"] == pytest.approx(1 / 6, abs=1e-6) and s["other_rate"] == pytest.approx(1 / 6, abs=1e-6)

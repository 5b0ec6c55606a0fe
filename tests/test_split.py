import numpy as np
import pandas as pd
import pytest

from caft.errors import CaftError
from caft.names import check_names
from caft.scores import Kind, read
from caft.split import assign_bands, cut_points, make_split, random_control, select_score
from tests.conftest import model_entry, params, section


def _split(**fields: object):
    """params.yaml's split, for a 20-row table: no pool cap and no validation carve unless a test sets one."""
    return section("split", **{"max_train": None, "val_size": 0, **fields})


def _table() -> pd.DataFrame:
    """20 valid train rows with entropies 0.1..2.0, 9 valid test rows, 3 invalid rows (2 train, 1 test)."""
    train = pd.DataFrame(
        {
            "question_id": [f"tr{i:02d}" for i in range(20)],
            "subset": "train",
            "entropy": np.round(np.arange(1, 21) * 0.1, 2),
            "validity": "option",
        }
    )
    train["correct"] = train["entropy"] < 1.0
    test = pd.DataFrame(
        {
            "question_id": [f"te{i}" for i in range(9)],
            "subset": "test",
            "entropy": [0.05, 0.2, 0.8, 0.6, 0.7, 1.0, 1.6, 1.7, 1.9],
            "validity": "option",
            "correct": [True] * 9,
        }
    )
    bad = pd.DataFrame(
        {
            "question_id": ["x1", "x2", "x3"],
            "subset": ["train", "train", "test"],
            "entropy": [0.0, 5.0, 5.0],
            "validity": ["idk", "other", "other"],
            "correct": False,
        }
    )
    table = pd.concat([train, test, bad], ignore_index=True)
    table["entropy_options"] = table["entropy"] / 2
    return table


def test_quantile_cut_points_match_numpy():
    scores = np.arange(1, 21) * 0.1
    easy, hard = cut_points(scores, _split())
    assert easy == pytest.approx(np.quantile(scores, 0.25)) and hard == pytest.approx(np.quantile(scores, 0.75))
    assert (easy, hard) == pytest.approx((0.575, 1.525))


def test_normalized_and_nats_units():
    scores = np.array([0.5, 1.0, 2.0])
    assert cut_points(scores, _split(units="normalized", threshold=0.5, easy_threshold=0.1)) == (
        0.2,
        1.0,
    )
    assert cut_points(scores, _split(units="nats", threshold=1.5, easy_threshold=0.7)) == (0.7, 1.5)


def test_bands_are_half_open():
    bands = assign_bands(np.array([0.1, 0.2, 0.5, 0.9, 1.0]), 0.2, 0.9)
    assert list(bands) == ["easy", "medium", "medium", "hard", "hard"]


def test_split_exact_sizes_disjoint_and_covering():
    out, m = make_split(_table(), _split(), seed=0)
    train = out[out["subset"] == "train"]
    # cuts 0.575 / 1.525: train easy 0.1..0.5 (5), hard 1.6..2.0 (5), medium 10
    assert train.groupby("band").size().to_dict() == {"easy": 5, "hard": 5, "medium": 10}
    # every test question is kept: x3 (no readable single-token answer) is banded hard, as the highest entropy
    assert set(out["question_id"]) == set(_table().query("validity == 'option'")["question_id"]) | {"x3"}
    assert out["question_id"].is_unique
    test = out[out["subset"] == "test"]
    assert test.groupby("band").size().to_dict() == {"easy": 2, "hard": 4, "medium": 4}
    assert test.set_index("question_id").loc["x3", "band"] == "hard"
    assert (m["cut_easy"], m["cut_hard"]) == (0.575, 1.525)
    assert (m["n_excluded_invalid"], m["n_test_unreadable_banded_hard"]) == (2, 1)
    assert m["train_easy_accuracy"] == 1.0 and m["train_hard_accuracy"] == 0.0 and m["train_medium_accuracy"] == 0.4
    # balanced test: 2 per band; random control (per training seed): as many train rows as hard ones
    assert test[test["balanced"]].groupby("band").size().to_dict() == {"easy": 2, "hard": 2, "medium": 2}
    drawn = random_control(out, seed=42)
    assert drawn["random_cot"].sum() == 5 == m["n_random_cot"] and set(drawn.loc[drawn["random_cot"], "subset"]) == {
        "train"
    }
    other = random_control(out, seed=43)
    assert set(other.loc[other["random_cot"], "question_id"]) != set(drawn.loc[drawn["random_cot"], "question_id"])
    assert random_control(out, seed=42).equals(drawn) and not random_control(out, 42, enabled=False)["random_cot"].any()


def test_threshold_change_moves_only_the_hard_cut():
    a, _ = make_split(_table(), _split(), seed=0)
    b, mb = make_split(_table(), _split(threshold=0.5), seed=0)
    assert mb["train_hard_n"] == 10 and mb["train_easy_n"] == 5
    assert set(a.query("band == 'easy'")["question_id"]) == set(b.query("band == 'easy'")["question_id"])


def test_per_band_caps_and_validation_are_seeded():
    cfg = _split(train_per_band=3, val_per_band=1)
    out, m = make_split(_table(), cfg, seed=7)
    assert [m[f"train_{b}_n"] for b in ("easy", "medium", "hard")] == [3, 3, 3]
    assert [m[f"validation_{b}_n"] for b in ("easy", "medium", "hard")] == [1, 1, 1]
    again, _ = make_split(_table(), cfg, seed=7)
    pd.testing.assert_frame_equal(out, again)
    other, _ = make_split(_table(), cfg, seed=8)
    assert set(other.query("subset == 'train'")["question_id"]) != set(out.query("subset == 'train'")["question_id"])


def test_option_score_is_selectable():
    out, m = make_split(_table(), _split(estimator="single_token_entropy_options"), seed=0)
    assert m["cut_hard"] == pytest.approx(1.525 / 2) and m["cut_units"] == "nats"


@pytest.mark.parametrize(
    ("split", "message"),
    [
        ({"threshold": 1.5}, "invalid params: split.threshold=1.5 is out of range for units=quantile ([0.0, 1.0])"),
        ({"easy_threshold": -0.1}, "invalid params: split.easy_threshold=-0.1 is out of range for units=quantile"),
        ({"threshold": 0.3, "easy_threshold": 0.6}, "invalid params: split.easy_threshold=0.6 is above threshold=0.3"),
        ({"units": "nats", "threshold": 7.5, "easy_threshold": 8}, "split.easy_threshold=8.0 is above threshold=7.5"),
    ],
)
def test_invalid_thresholds_fail_when_params_load(split, message):
    with pytest.raises(CaftError) as exc:
        params({"split": split})
    assert message in str(exc.value)


def test_max_train_pool_does_not_move_with_the_threshold():
    a, ma = make_split(_table(), _split(max_train=8), seed=0)
    b, mb = make_split(_table(), _split(max_train=8, threshold=0.5, easy_threshold=0.1), seed=0)
    pool_a = set(a.query("subset == 'train'")["question_id"])
    assert len(pool_a) == 8 and pool_a == set(b.query("subset == 'train'")["question_id"])
    # cut points still come from all 20 valid train rows
    assert (ma["cut_easy"], ma["cut_hard"]) == (0.575, 1.525)
    assert sum(ma[f"train_{band}_n"] for band in ("easy", "medium", "hard")) == 8
    assert len(a.query("subset == 'test'")) == 10  # the 9 valid ones and x3, banded hard


def _estimators(levels: list[int]) -> pd.DataFrame:
    ids = [f"tr{i:02d}" for i in range(20)] + [f"te{i}" for i in range(9)]
    return pd.DataFrame(
        {
            "question_id": ids[: len(levels)],
            "estimator": "masj_reasoning_steps",
            "score": [float("nan") if v is None else float(v) for v in levels],
        }
    )


def test_categorical_estimator_bands_by_level():
    levels = [0, 1, 2, 1, 0] * 4 + [2, 1, 0, 2] + [None] * 5  # the last 5 test rows were not scored (malformed)
    table = select_score(_table(), "masj_reasoning_steps", _estimators(levels))
    kind = Kind(units="level", levels=3)
    out, m = make_split(table, _split(estimator="masj_reasoning_steps"), seed=0, kind=kind)
    train = out[out["subset"] == "train"]
    assert train.groupby("band").size().to_dict() == {"easy": 8, "medium": 8, "hard": 4}
    assert set(train.loc[train["band"] == "hard", "score"]) == {2.0}
    assert (m["cut_easy"], m["cut_hard"], m["n_excluded_unscored"], m["cut_units"]) == (1.0, 2.0, 0, "level")
    # every test question is kept: the 5 the judge did not score and x3 are banded hard
    test = out[out["subset"] == "test"].set_index("question_id")
    assert len(test) == 10 and m["n_test_unreadable_banded_hard"] == 6
    assert set(test.loc[["te4", "te5", "te6", "te7", "te8", "x3"], "band"]) == {"hard"}


def test_an_estimator_no_stage_writes_is_one_clear_error(tmp_path):
    base = {"students": ["s"], "models": {"s": model_entry()}}
    with pytest.raises(
        CaftError,
        match=r"^invalid params: split.estimator=cot_mean_entropy is not computed for "
        r"student s: add the student to its family's estimators.<family>.students$",
    ):
        check_names(params({**base, "split": {"estimator": "cot_mean_entropy"}}))
    with pytest.raises(
        CaftError,
        match=r"^invalid params: split.estimator=cot_typo is no estimator \(known: "
        r"single_token_entropy, single_token_entropy_options, cot_answer_entropy",
    ):
        check_names(params({**base, "split": {"estimator": "cot_typo"}}))
    cot = {"split": {"estimator": "cot_mean_entropy"}, "estimators": {"cot": {"students": ["s"]}}}
    assert check_names(params({**base, **cot, "strategies": ["sft", "caft"]}))  # caft_reestimate needs one token
    with pytest.raises(CaftError, match=r"^no estimator output .*/cot_mean_entropy.parquet \(is the stage"):
        read(tmp_path / "cot_mean_entropy.parquet")
    with pytest.raises(CaftError, match=r"^split.estimator=cot_mean_entropy: no such column of the entropy table"):
        select_score(_table(), "cot_mean_entropy")


def test_compat_medium_overlap_reproduces_the_authors_band():
    cfg = _split(train_per_band=4, compat_medium_overlap=True)
    out, m = make_split(_table(), cfg, seed=3)
    medium = out[(out["subset"] == "train") & (out["band"] == "medium")]
    assert len(medium) == 4 and m["medium_above_hard_cut_n"] == int((medium["score"] >= 1.525).sum())
    clean, mc = make_split(_table(), _split(train_per_band=4), seed=3)
    assert mc["medium_above_hard_cut_n"] == 0
    assert out["question_id"].is_unique
    with pytest.raises(ValueError, match="compat_medium_overlap reproduces the authors' capped bands"):
        _split(compat_medium_overlap=True)


def test_val_size_carve_does_not_move_with_the_threshold():
    """The seeded validation carve comes off the pool before banding: the same questions at any threshold,
    every band represented as the pool has it, and none of them in train."""
    a, ma = make_split(_table(), _split(max_train=12, val_size=4), seed=0)
    b, _ = make_split(_table(), _split(max_train=12, val_size=4, threshold=0.5, easy_threshold=0.1), seed=0)
    val_a = set(a.query("subset == 'validation'")["question_id"])
    assert len(val_a) == 4 and val_a == set(b.query("subset == 'validation'")["question_id"])
    assert set(a.query("subset == 'train'")["question_id"]).isdisjoint(val_a)
    assert sum(ma[f"train_{band}_n"] for band in ("easy", "medium", "hard")) == 8
    assert sum(ma[f"validation_{band}_n"] for band in ("easy", "medium", "hard")) == 4
    # the pool itself is the one max_train draws without a carve
    pool, _ = make_split(_table(), _split(max_train=12), seed=0)
    train_a = set(a.query("subset == 'train'")["question_id"])
    assert set(pool.query("subset == 'train'")["question_id"]) == val_a | train_a


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"split": {"val_size": 4, "val_per_band": 2}}, "split.val_size and split.val_per_band are two validation"),
        (
            {"eval": {"every_epoch": True}, "split": {"val_size": 0}},
            "eval.every_epoch needs a validation carve: set split.val_size or",
        ),
        ({"eval": {"select": "best", "every_epoch": False}}, "eval.select=best picks an epoch by validation"),
        (
            {"eval": {"every_epoch_test": True, "every_epoch": False}},
            "eval.every_epoch_test answers the test set after every epoch: set eval.every_epoch=true",
        ),
        (
            {
                "strategies": ["caft_reestimate"],
                "split": {"estimator": "cot_mean_entropy"},
                "estimators": {"cot": {"students": ["smollm2"]}},
            },
            "strategy caft_reestimate re-scores with the student's own first-token entropy: split.estimator must "
            "be one of single_token_entropy, single_token_entropy_options, not cot_mean_entropy",
        ),
    ],
)
def test_validation_and_epoch_settings_that_contradict_are_one_line(raw, message):
    with pytest.raises(CaftError) as exc:
        check_names(params(raw))
    assert message in str(exc.value)

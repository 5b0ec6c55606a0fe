import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from caft import schema
from caft.errors import CaftError
from caft.prepare import carve, load_source, stratified_take, summary
from caft.sources import mmlu_pro, synthetic
from tests.conftest import FIXTURES, make_questions, section


def _synthetic(**fields: object):
    """params.yaml's generator, on the multiple-choice families these tests check unless one is named."""
    return section("data.synthetic", **{"families": ["arithmetic", "units"], **fields})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"answer_index": 7}, "row 1 (question_id='q1'): answer_index 7 is out of range for 3 options"),
        ({"options": ["only one"]}, "row 1 (question_id='q1'): has 1 options (must be 2..10)"),
        (
            {"options": [str(i) for i in range(11)]},
            "row 1 (question_id='q1'): has 11 options (must be 2..10)",
        ),
        ({"options": ["a", " "]}, "row 1 (question_id='q1'): option 1 is empty"),
        ({"question": ""}, "row 1 (question_id='q1'): question is empty"),
        ({"category": None}, "row 1 (question_id='q1'): category is empty"),
        ({"question_id": "q0"}, "row 1 (question_id='q0'): duplicate question_id (first seen at row 0)"),
        ({"answer_index": 1.5}, "row 1 (question_id='q1'): answer_index 1.5 is not an integer"),
        ({"answer_index": float("nan")}, "row 1 (question_id='q1'): answer_index is missing"),
        ({"answer_index": None}, "row 1 (question_id='q1'): answer_index is missing"),
        (
            {"options": "['He said 'no'', 'yes']"},
            "row 1 (question_id='q1'): options field is not a valid list literal (SyntaxError): "
            "\"['He said 'no'', 'yes']\"",
        ),
    ],
)
def test_bad_rows_are_named(change, message):
    df = make_questions(3)
    for col, value in change.items():
        df[col] = df[col].astype(object)
        df.at[1, col] = value
    with pytest.raises(CaftError) as exc:
        schema.validate(df)
    assert str(exc.value) == message


def test_missing_column_and_letter_answers():
    with pytest.raises(CaftError, match=r"missing required column\(s\): category"):
        schema.validate(make_questions(2).drop(columns="category"))
    df = make_questions(3).drop(columns="answer_index").assign(answer=["B", "A", "C"])
    assert list(schema.validate(df)[0]["answer_index"]) == [1, 0, 2]


def test_authors_tsv_options_are_parsed():
    df, _ = schema.validate(pd.read_csv(FIXTURES / "labarss_entropy_qwen2.tsv", sep="\t"))
    assert df["options"][0] == ["alpha", "beta", "gamma"] and df["question_id"][0] == "970"


def test_synthetic_is_deterministic_and_correct():
    cfg = _synthetic(n_questions=40, max_steps=5)
    a, b = synthetic.generate(cfg, 1), synthetic.generate(cfg, 1)
    pd.testing.assert_frame_equal(a, b)
    assert not a["question"].equals(synthetic.generate(cfg, 2)["question"])
    schema.validate(a)
    for _, row in a.iterrows():
        # the rationale's final line states the correct option's value
        final = re.search(r"The answer is (-?\d+)\.$", row["rationale"]).group(1)
        assert row["options"][row["answer_index"]] == final
        assert len(set(row["options"])) == len(row["options"])
        assert 4 <= len(row["options"]) <= 10 and 1 <= row["difficulty"] <= 5
    assert set(a["category"]) == {"arithmetic", "unit conversion"}
    # a prefix of the questions does not depend on how many are generated
    pd.testing.assert_frame_equal(synthetic.generate(_synthetic(n_questions=10, max_steps=5), 1), a.head(10))


def test_arithmetic_rationale_steps_are_right():
    row = synthetic.generate(_synthetic(n_questions=1, families=["arithmetic"]), 0).iloc[0]
    for line in row["rationale"].splitlines()[1:-1]:
        lhs, rhs = line.split(": ", 1)[1].rstrip(".").split(" = ")
        assert eval(lhs.replace("×", "*")) == int(rhs)


def test_mmlu_pro_records_drop_na_and_reindex():
    rec = {
        "question_id": 5,
        "question": "Q",
        "options": ["N/A", "x", "N/A", "y"],
        "answer_index": 3,
        "category": "law",
        "cot_content": "",
        "src": "ori",
    }
    df = mmlu_pro.from_records([rec])
    assert df["options"][0] == ["x", "y"] and df["answer_index"][0] == 1 and df["question_id"][0] == "5"
    with pytest.raises(CaftError, match="question 6: the answer is an N/A option"):
        mmlu_pro.from_records([{**rec, "question_id": 6, "answer_index": 2}])


def test_hub_source_offline_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CaftError, match=r"^could not load TIGER-Lab/MMLU-Pro@ce40ce1\w+ split 'test' from the Hug"):
        load_source(section("data", source="hf"), 0)


def test_file_source(tmp_path):
    path = tmp_path / "mine.jsonl"
    make_questions(4).to_json(path, orient="records", lines=True)
    df, skipped = load_source(section("data", source="file", file={"path": str(path)}), 0)
    assert skipped == [] and list(df["question_id"]) == ["q0", "q1", "q2", "q3"]
    with pytest.raises(CaftError, match="data.file.path not found"):
        load_source(section("data", source="file", file={"path": str(tmp_path / "nope.jsonl")}), 0)


def test_stratified_take_keeps_category_shares():
    df = pd.DataFrame({"category": ["a"] * 60 + ["b"] * 30 + ["c"] * 10})
    picked = stratified_take(df, 10, np.random.default_rng(0))
    assert df.loc[picked, "category"].value_counts().to_dict() == {"a": 6, "b": 3, "c": 1}


def test_carve_split_filter_and_caps():
    df, _ = schema.validate(synthetic.generate(_synthetic(n_questions=100), 3))
    train, test = carve(df, section("data", test_fraction=0.2), seed=0)
    assert (len(train), len(test)) == (80, 20)
    assert test["category"].value_counts().to_dict() == {"arithmetic": 10, "unit conversion": 10}
    assert not set(train["question_id"]) & set(test["question_id"])
    capped, _ = carve(df, section("data", test_fraction=0.2, max_train=30, categories=["arithmetic"]), seed=0)
    assert len(capped) == 30 and set(capped["category"]) == {"arithmetic"}
    again, _ = carve(df, section("data", test_fraction=0.2), seed=0)
    pd.testing.assert_frame_equal(again, train)
    s = summary(train, test, section("data"), [])
    assert s["train_by_category"] == {"arithmetic": 40, "unit_conversion": 40}  # metric keys are identifiers
    with pytest.raises(CaftError, match=r"data.categories not in the data: \['law'\]"):
        carve(df, section("data", categories=["law"]), seed=0)


def test_written_outputs_get_the_usual_modes(tmp_path):
    """Files and folders written atomically land with the modes any new file gets under the user's umask
    (tempfile's own are owner-only: results in a shared project would be unreadable to the group)."""
    import os
    import stat

    from caft.io import UMASK, atomic_path, write_json

    write_json({"a": 1}, tmp_path / "m.json")
    with atomic_path(tmp_path / "model", directory=True) as tmp:
        (tmp / "w.bin").write_bytes(b"x")
        (tmp / "adapter.safetensors").write_bytes(b"y")
        (tmp / "adapter.safetensors").chmod(0o600)  # as safetensors writes its files
        (tmp / "sub").mkdir(mode=0o700)
    assert os.umask(UMASK) == UMASK  # what the process's umask is
    assert stat.S_IMODE((tmp_path / "m.json").stat().st_mode) == 0o666 & ~UMASK
    assert stat.S_IMODE((tmp_path / "model").stat().st_mode) == 0o777 & ~UMASK
    assert stat.S_IMODE((tmp_path / "model/sub").stat().st_mode) == 0o777 & ~UMASK
    files = ("model/w.bin", "model/adapter.safetensors")
    assert {stat.S_IMODE((tmp_path / f).stat().st_mode) for f in files} == {0o666 & ~UMASK}


def test_metrics_json_never_holds_nan(tmp_path):
    """An entropy summary with no valid row has a NaN ROC AUC: it is written as null (valid JSON, read by DVC)."""
    import json

    import numpy as np

    from caft.io import write_json

    write_json({"roc_auc": float("nan"), "n": np.int64(3), "x": [np.float32("inf"), 0.5]}, tmp_path / "m.json")
    text = (tmp_path / "m.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"roc_auc": None, "n": 3, "x": [None, 0.5]}


def _build_at_once(folder: Path, log: Path, barrier) -> None:
    """One of two processes asking for the same machine-cache folder at the same moment."""
    import time

    from caft.io import built_once

    def build(tmp: Path) -> None:
        with log.open("a") as fh:
            fh.write("built\n")
        time.sleep(1)  # long enough for the other process to look while this one builds
        (tmp / "config.json").write_text("{}")

    barrier.wait()
    assert (built_once(folder, build) / "config.json").read_text() == "{}"


def test_a_cache_folder_asked_for_by_two_processes_at_once_is_built_once(tmp_path):
    """Two queue workers, or the two ranks of a data-parallel run, resolve a model that is not in the machine
    cache yet: one builds it, the other waits and reads the same folder (neither replaces it under the other)."""
    import multiprocessing

    spawn = multiprocessing.get_context("spawn")
    folder, log, barrier = tmp_path / "models/m", tmp_path / "builds.log", spawn.Barrier(2)
    procs = [spawn.Process(target=_build_at_once, args=(folder, log, barrier)) for _ in range(2)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=120)
    assert [proc.exitcode for proc in procs] == [0, 0]
    assert log.read_text() == "built\n"
    assert sorted(p.name for p in folder.parent.iterdir()) == [".m.lock", "m"]

"""One registry per extension point: a toy entry added here (and nowhere else) is a valid params value, shows
up in the DAG where the DAG is built from params, and is what the run uses."""

from __future__ import annotations

import dataclasses
import importlib.util
import re
import shutil
import subprocess
import sys
import types
from typing import Literal

import pandas as pd
import pytest
import yaml
from pydantic import Field

from caft import answers, strategies
from caft.errors import CaftError
from caft.names import check_names
from caft.sources.synthetic import generate
from tests.conftest import REPO, committed, model_entry, params, raw_params
from tests.dvc_project import env

BASE = {"students": ["s"], "models": {"s": model_entry()}}


def _stage(name: str):
    """A stage script as a module (its Typer `main` called as a function, in this process)."""
    spec = importlib.util.spec_from_file_location(f"stage_{name}", REPO / "stages" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _assignments() -> pd.DataFrame:
    bands = ["easy", "medium", "hard"] * 4
    return pd.DataFrame(
        {
            "question_id": [f"q{i:02d}" for i in range(12)],
            "subset": ["train"] * 9 + ["test"] * 3,
            "band": bands,
            "random_cot": [i % 4 == 0 for i in range(12)],
        }
    )


def test_a_new_strategy_is_one_entry(monkeypatch, tmp_path):
    toy = strategies.Strategy(
        "hard_only", "CoT on hard only", (strategies.Phase("cot", strategies._bands("hard"), "hard"),)
    )
    with pytest.raises(CaftError, match=r"^invalid params: strategies: unknown strategies \['hard_only'\]"):
        check_names(params({**BASE, "strategies": ["sft", "hard_only"]}))
    monkeypatch.setitem(strategies.STRATEGIES, "hard_only", toy)
    p = check_names(
        params({**BASE, "strategies": ["sft", "hard_only"], "train": {"epochs": {"sft": [1], "hard_only": [2]}}})
    )
    assert p.strategies == ["sft", "hard_only"] and p.train.epochs["hard_only"] == [2]
    # the run: the teacher requests (and the sets train on) exactly the hard training rows
    assert strategies.cot_question_ids(_assignments(), ["hard_only"]) == {"q02", "q05", "q08"}
    # the DAG: train and eval expand over the new name (dvc reads the list from params.yaml)
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(committed(name), tmp_path / name)
    raw = yaml.safe_load((tmp_path / "params.yaml").read_text())
    raw["strategies"] = ["sft", "hard_only"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    subprocess.run(["dvc", "init", "--no-scm", "-q"], cwd=tmp_path, env=env(), check=True)
    listed = subprocess.run(["dvc", "stage", "list", "--all"], cwd=tmp_path, env=env(), capture_output=True, text=True)
    stages = {line.split()[0] for line in listed.stdout.splitlines() if line.strip()}
    assert {"train@smollm2-hard_only-42", "eval@smollm2-hard_only-42", "train@smollm2-sft-42"} <= stages
    assert not any(s.endswith(("-caft-42", "-distill-42")) for s in stages)


def test_a_new_teacher_backend_is_one_entry(monkeypatch, tmp_path):
    from caft.teacher import backends
    from caft.teacher.cache import TraceCache
    from caft.teacher.run import assemble, build_requests, execute, teacher_label

    def echo(requests, cfg, sink):
        for req in requests:
            sink(req, backends._response(f"the answer is ({answers.LETTERS[req.answer_index]}).", "stop", 1, 1, 0.0, 1))
        return backends.Outcome()

    with pytest.raises(CaftError, match="^invalid params: teacher.backend: unknown teacher backend 'echo'"):
        check_names(params({**BASE, "teacher": {"backend": "echo"}}))
    monkeypatch.setitem(backends.BACKENDS, "echo", backends.Backend(label=lambda cfg: "echo:v1", paid=False, run=echo))
    cfg = check_names(params({**BASE, "teacher": {"backend": "echo", "marker": "answer_is"}})).teacher
    questions = generate(params(BASE).data.synthetic.model_copy(update={"families": ["arithmetic"]}), seed=3)
    requests = build_requests(questions, set(questions["question_id"][:4]), cfg)
    cache = TraceCache(tmp_path / "cache", shared=tmp_path / "shared")
    outcome, fresh = execute(requests, cache, cfg)
    table = assemble(requests, cache, outcome, fresh, cfg)
    assert teacher_label(cfg) == "echo:v1" and set(table["teacher"]) == {"echo:v1"}
    assert len(table) == 4 and table["correct"].all() and table["kept"].all()


def test_a_new_estimator_family_is_one_entry(monkeypatch, tmp_path):
    """A toy family (question length as the score) registered here: split.estimator accepts its name, its
    stage script runs it by module, and split bands by the file it wrote (reading the kind it declares)."""
    from caft.estimators import registry
    from caft.io import write_table
    from caft.scores import Kind, long

    toy = types.ModuleType("caft.estimators.toy_length")
    toy.run = lambda questions, p, student, variant, workdir: (
        long(questions.assign(n=questions["question"].str.len()), {"n": "toy_length"}, Kind(units="characters")),
        questions[["question_id"]],
    )
    monkeypatch.setitem(sys.modules, "caft.estimators.toy_length", toy)
    family = registry.Family(
        module="caft.estimators.toy_length",
        students=lambda p: p.students,
        variants=lambda p: [None],
        names=lambda p, v: ["toy_length"],
    )
    with pytest.raises(CaftError, match="split.estimator=toy_length is no estimator"):
        check_names(params({**BASE, "split": {"estimator": "toy_length"}}))
    monkeypatch.setitem(registry.FAMILIES, "toy", family)
    p = check_names(
        params(
            {
                **BASE,
                "split": {"estimator": "toy_length", "max_train": None, "val_size": 0},
                "eval": {"every_epoch": False},
                "strategies": ["sft", "caft"],
            }
        )
    )
    assert registry.available(p, "s")["toy_length"] == "estimate_toy@s"

    questions = generate(p.data.synthetic.model_copy(update={"n_questions": 40}), seed=1)
    questions["subset"] = ["train"] * 30 + ["test"] * 10
    for subset in ("train", "test"):
        write_table(
            questions[questions["subset"] == subset].drop(columns="subset"), tmp_path / f"data/{subset}.parquet"
        )
    scores = questions[["question_id", "subset"]].assign(
        validity="option", correct=True, entropy=0.0, entropy_options=0.0
    )
    write_table(scores, tmp_path / "scores.parquet")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p.model_dump(by_alias=True)))
    _stage("estimate").main(
        module="caft.estimators.toy_length",
        student="s",
        scores=tmp_path / "scores.parquet",
        out_dir=tmp_path / "est",
        details=tmp_path / "est/details/toy.parquet",
        data=tmp_path / "data",
        params=tmp_path / "params.yaml",
    )
    written = pd.read_parquet(tmp_path / "est/toy_length.parquet")
    assert (
        written.set_index("question_id")["score"].to_dict()
        == questions.set_index("question_id")["question"].str.len().astype(float).to_dict()
    )
    _stage("split").main(
        model="s",
        scores=tmp_path / "scores.parquet",
        estimator=tmp_path / "est/toy_length.parquet",
        out=tmp_path / "split",
        metrics=tmp_path / "split.json",
        params=tmp_path / "params.yaml",
    )
    assigned = pd.read_parquet(tmp_path / "split/assignments.parquet").merge(written, on="question_id")
    train = assigned[assigned["subset"] == "train"]
    assert train.loc[train["band"] == "hard", "score_x"].min() >= train.loc[train["band"] == "easy", "score_x"].max()
    assert yaml.safe_load((tmp_path / "split.json").read_text())["cut_units"] == "characters"


def test_an_estimator_familys_own_params_block_is_validated_by_its_entry(monkeypatch):
    """A family added as one entry declares its block's model: check_params validates `estimators.<key>` with
    it, refuses a block no family owns, and the family reads its settings through the registry."""
    from caft.estimators import registry
    from caft.params import FamilyParams

    class LengthParams(FamilyParams):
        unit: Literal["characters", "words"]

    family = registry.Family(
        module="caft.estimators.length", names=lambda p, v: ["question_length"], settings=LengthParams
    )
    block = {"students": ["s"], "unit": "words"}
    with pytest.raises(CaftError) as exc:
        check_names(params({**BASE, "estimators": {"length": block}}))
    assert (
        str(exc.value)
        == "invalid params: estimators.length: not a setting, nor an estimator family's block (cot, judge, import)"
    )
    monkeypatch.setitem(registry.FAMILIES, "length", family)
    for overrides, message in (
        ({}, "estimators.length: the params block its entry declares is missing"),
        ({"length": {**block, "unit": "lines"}}, "estimators.length.unit: Input should be 'characters' or 'words'"),
        ({"length": {**block, "colour": 1}}, "estimators.length.colour: Extra inputs are not permitted"),
        ({"length": {**block, "students": ["t"]}}, "estimators.length.students ['t'] are not in students ['s']"),
        (
            {"length": block, "n_bot": 100},
            "estimators.n_bot: not a setting, nor an estimator family's block (cot, judge, import, length)",
        ),
    ):
        with pytest.raises(CaftError) as exc:
            check_names(params({**BASE, **({"estimators": overrides} if overrides else {})}))
        assert str(exc.value) == f"invalid params: {message}"
    chosen = {"estimators": {"length": block}, "split": {"estimator": "question_length"}, "strategies": ["sft", "caft"]}
    p = check_names(params({**BASE, **chosen}))
    assert registry.family_params(p, "length") == LengthParams(students=["s"], unit="words")
    assert registry.available(p, "s")["question_length"] == "estimate_length@s"


def test_a_data_sources_own_params_block_is_validated_by_its_entry(monkeypatch):
    """The same for a data source: `data.<name>` validated by the model its entry declares, needed when the
    source is the configured one, and what its loader and `caft plan`'s size read."""
    from caft import prepare
    from caft.params import Settings

    class LargestParams(Settings):
        n_questions: int = Field(ge=1)

    n = lambda cfg: prepare.source_params(cfg, "largest").n_questions  # noqa: E731
    entry = prepare.Source(
        lambda cfg, seed: generate(cfg.synthetic.model_copy(update={"n_questions": n(cfg)}), seed),
        n,
        settings=LargestParams,
    )
    monkeypatch.setitem(prepare.SOURCES, "largest", entry)
    for data, message in (
        ({"source": "largest"}, "data.largest: the params block its entry declares is missing"),
        (
            {"source": "largest", "largest": {"n_questions": 0}},
            "data.largest.n_questions: Input should be greater than or equal to 1",
        ),
        (
            {"largest": {"n_questions": 8}, "larget": {"n_questions": 8}},
            "data.larget: not a setting, nor a data source's block (synthetic, hf, gsm8k, medmcqa, file, largest)",
        ),
        (
            {"test_fractoin": 0.2},
            "data.test_fractoin: not a setting, nor a data source's block "
            "(synthetic, hf, gsm8k, medmcqa, file, largest)",
        ),
    ):
        with pytest.raises(CaftError) as exc:
            check_names(params({**BASE, "data": data}))
        assert str(exc.value) == f"invalid params: {message}"
    p = check_names(params({**BASE, "data": {"source": "largest", "largest": {"n_questions": 8}}}))
    assert prepare.source(p.data.source).size(p.data) == 8
    questions, _ = prepare.load_source(p.data, seed=1)
    assert len(questions) == 8


def test_a_teacher_backends_own_params_block_is_validated_by_its_entry(monkeypatch):
    """The same for a teacher backend: its block under `teacher.` (and under `estimators.judge.` where the judge
    uses it), needed where it is the configured backend, and what its label and run read."""
    from caft.params import Settings
    from caft.teacher import backends

    class EchoParams(Settings):
        words: str

    def echo(requests, cfg, sink):
        for req in requests:
            sink(req, backends._response(backends.backend_params(cfg, "echo").words, "stop", 1, 1, 0.0, 1))
        return backends.Outcome()

    label = lambda cfg: f"echo:{backends.backend_params(cfg, 'echo').words}"  # noqa: E731
    monkeypatch.setitem(backends.BACKENDS, "echo", backends.Backend(label, True, echo, settings=EchoParams))
    known = "(oracle, dataset, import, hf, openai, echo)"
    for overrides, message in (
        ({"teacher": {"backend": "echo"}}, "teacher.echo: the params block its entry declares is missing"),
        ({"teacher": {"echo": {"words": "x", "loud": True}}}, "teacher.echo.loud: Extra inputs are not permitted"),
        ({"teacher": {"ecoh": {"words": "x"}}}, f"teacher.ecoh: not a setting, nor a teacher backend's block {known}"),
        (
            {"estimators": {"judge": {"backend": "echo"}}},
            "estimators.judge.echo: the params block its entry declares is missing",
        ),
        ({"estimators": {"judge": {"echo": {}}}}, "estimators.judge.echo.words: Field required"),
    ):
        with pytest.raises(CaftError) as exc:
            check_names(params({**BASE, **overrides}))
        assert str(exc.value) == f"invalid params: {message}"
    p = check_names(params({**BASE, "teacher": {"backend": "echo", "echo": {"words": "[[B]]"}}}))
    assert backends.BACKENDS["echo"].label(p.teacher) == "echo:[[B]]"


def test_an_answer_format_entry_is_what_every_reader_uses(monkeypatch, tiny_model):
    """Replacing the `number` entry (answers after "Final:") changes eval's reading, the teacher's check and
    where the CoT estimator finds the answer token: none of them has a pattern of its own."""
    from caft.estimators.cot import locate_answer
    from caft.evaluate import extract
    from caft.sets import reading

    final = re.compile(r"Final:\s*([-+]?\d+)")
    toy = dataclasses.replace(
        answers.FORMATS["number"],
        cot=lambda text, n, marker: m[-1] if (m := final.findall(text)) else None,
        answer_start=dict.fromkeys(("brackets", "answer_is"), re.compile(r"Final:\s*([-+]?\d)")),
    )
    p = params(BASE)
    text = "3 + 4 = 7, so [[7]]. Final: 12"
    cot = reading("distill", p.model_copy(update={"teacher": p.teacher.model_copy(update={"marker": "brackets"})}))
    assert extract(text, 0, "12", cot) == "7"
    monkeypatch.setitem(answers.FORMATS, "number", toy)
    assert extract(text, 0, "12", cot) == "12" and answers.cot_answer(text, 0, "12", "brackets") == "12"
    assert answers.gold(0, -1, "12") == "12"
    _, tok = tiny_model
    ids = tok.encode(text, add_special_tokens=False)
    answer_pos, _ = locate_answer(tok, ids, "brackets", answers.format_name(0, "12"))
    start = text.rindex("12")  # where the toy's answer_start pattern puts the answer
    assert len(tok.decode(ids[:answer_pos])) <= start < len(tok.decode(ids[: answer_pos + 1]))


def test_an_unknown_estimator_module_is_one_line_and_writes_nothing(tmp_path, capsys):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw_params(BASE)))
    for module, message in (
        ("caft.estimators.nope", "error: --module caft.estimators.nope: no such estimator family module\n"),
        ("os", "error: --module os: an estimator family lives under caft.estimators\n"),
    ):
        with pytest.raises(SystemExit) as exit_:
            _stage("estimate").main(
                module=module,
                student="s",
                scores=tmp_path / "scores.parquet",
                out_dir=tmp_path / "est",
                details=tmp_path / "est/details/x.parquet",
                params=tmp_path / "params.yaml",
            )
        assert exit_.value.code == 2 and capsys.readouterr().err == message
    assert not (tmp_path / "est").exists()


def test_the_seed_axis_expands_the_dag_exactly(tmp_path):
    """`seeds: [1, 2]`: train and eval once per student x strategy x seed, every other stage once, and each
    training reads its seed's set and writes its seed's folders."""
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(committed(name), tmp_path / name)
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    params["seeds"] = [1, 2]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    subprocess.run(["dvc", "init", "--no-scm", "-q"], cwd=tmp_path, env=env(), check=True)
    listed = subprocess.run(["dvc", "stage", "list", "--all"], cwd=tmp_path, env=env(), capture_output=True, text=True)
    stages = {line.split()[0] for line in listed.stdout.splitlines() if line.strip()}
    seeded = {s for s in stages if s.startswith(("train@", "eval@"))}
    assert seeded == {
        f"{stage}@smollm2-{x}-{seed}" for stage in ("train", "eval") for x in params["strategies"] for seed in (1, 2)
    }
    assert {s for s in stages if s.startswith(("sets@", "teacher", "report"))} == {"sets@smollm2", "teacher", "report"}
    rendered = yaml.safe_load((tmp_path / "dvc.yaml").read_text())["stages"]["train"]["cmd"]
    assert "--sets data/sets/${item.student}/${item.strategy}/${item.seed}.parquet" in " ".join(rendered.split())

import typing

import pytest
import torch
from pydantic import BaseModel

from caft import profile
from caft.errors import CaftError
from caft.models import resolve
from caft.params import ModelSpec, Params, load_params, parse_params
from tests.conftest import REPO, committed, committed_params


def _sections(model: type[BaseModel], where: str = "") -> list[tuple[str, type[BaseModel]]]:
    """Every params model under `model` with its dotted place (a model nested in a dict or a list included)."""
    out = [(where, model)]
    for name, field in model.model_fields.items():
        for arg in (field.annotation, *typing.get_args(field.annotation)):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                out += _sections(arg, f"{where}{field.alias or name}.")
    return out


def test_every_value_lives_in_params_yaml_alone():
    """No params field has a default in code, so what a stage runs is what params.yaml says (a test starts from
    it too). A model entry is the exception, for code that builds one (a teacher's or a judge's model); a
    student's entry must still write every key the stages list (the case below and test_dvc_yaml)."""
    sections = _sections(Params)
    assert {"models.", "teacher.openai.", "estimators.judge.hf."} <= {where for where, _ in sections}
    defaults = [
        f"{where}{field.alias or name}"
        for where, model in sections
        if model is not ModelSpec
        for name, field in model.model_fields.items()
        if not field.is_required()
    ]
    assert defaults == []
    with pytest.raises(CaftError, match=r"^invalid params: seed: Field required \(and \d+ more\)$"):
        parse_params({"students": ["tiny"], "models": {"tiny": {"ref": "tiny"}}})


def test_repo_params_and_tiny_profile_validate():
    p = load_params(committed("params.yaml"))
    assert p.students == ["smollm2"] and p.models["smollm2"].ref == "packaged:smollm2-135m-instruct"
    tiny = profile.validate(committed_params(), profile.load_overrides(REPO / "profiles/tiny.yaml"))
    assert tiny.students == ["tiny"] and tiny.data.synthetic.n_questions == 160


def test_yaml12_float_strings_are_coerced():
    raw = committed_params()
    raw["split"]["threshold"] = "5e-1"  # what PyYAML returns for `dvc exp run -S split.threshold=5e-1`
    assert parse_params(raw).split.threshold == 0.5


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (
            ("split", "units"),
            "bits",
            "invalid params: split.units: Input should be 'quantile', 'normalized' or 'nats'",
        ),
        (("split", "thresold"), 0.5, "invalid params: split.thresold: Extra inputs are not permitted"),
        (
            ("students",),
            ["ghost"],
            "invalid params: students ['ghost'] have no entry under models "
            "(known: ['llama3_2_3b', 'phi4_mini', 'qwen2_5_3b', 'smollm2', 'tiny'])",
        ),
        (
            ("models", "smollm2"),
            {"ref": "packaged:smollm2-135m-instruct", "dtype": "auto"},
            "invalid params: models.smollm2 leaves out revision, trust_remote_code, import_key: the stages read each "
            "one as a DVC param (write it, null where unused, as under models.smollm2)",
        ),
    ],
)
def test_bad_params_give_one_line(path, value, message):
    raw = committed_params()
    node = raw
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(CaftError) as exc:
        parse_params(raw)
    assert str(exc.value).startswith(message)
    assert "\n" not in str(exc.value)


def test_profile_hydra_args():
    overrides = {"students": ["tiny"], "split.threshold": 0.5, "data.file.path": None, "models.mine.ref": "tiny"}
    assert profile.hydra_args(overrides, committed_params()) == [
        "-S",
        "students=[tiny]",
        "-S",
        "split.threshold=0.5",
        "-S",
        "data.file.path=null",
        "-S",
        "++models.mine.ref=tiny",  # a key params.yaml lacks: Hydra adds it only in this form
    ]


@pytest.mark.parametrize(
    ("ref", "revision", "expected"),
    [
        ("Qwen/Qwen2.5-3B-Instruct", None, ("Qwen/Qwen2.5-3B-Instruct", None)),
        ("hf:Qwen/Qwen2.5-3B-Instruct@abc123", None, ("Qwen/Qwen2.5-3B-Instruct", "abc123")),
        ("microsoft/Phi-4-mini-instruct", "main", ("microsoft/Phi-4-mini-instruct", "main")),
    ],
)
def test_hub_refs(ref, revision, expected):
    r = resolve(ModelSpec(ref=ref, revision=revision))
    assert (r.location, r.revision, r.trust_remote_code) == (*expected, False)


def test_local_and_bad_refs(tmp_path):
    assert resolve(ModelSpec(ref=f"local:{tmp_path}", trust_remote_code=True)).location == str(tmp_path)
    assert resolve(ModelSpec(ref=str(tmp_path))).trust_remote_code is False
    with pytest.raises(CaftError, match="model folder not found"):
        resolve(ModelSpec(ref=f"local:{tmp_path / 'nope'}"))
    with pytest.raises(CaftError, match="is neither a hub id"):
        resolve(ModelSpec(ref="just-a-name"))
    with pytest.raises(CaftError, match="unknown packaged model 'gpt5'"):
        resolve(ModelSpec(ref="packaged:gpt5"))


def test_tiny_model_is_deterministic(tmp_path):
    from caft import tiny

    tiny.build(tmp_path / "a")
    tiny.build(tmp_path / "b")
    from safetensors.torch import load_file

    wa, wb = load_file(tmp_path / "a/model.safetensors"), load_file(tmp_path / "b/model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert (tmp_path / "a/tokenizer.json").read_text() == (tmp_path / "b/tokenizer.json").read_text()


def test_the_tiny_models_cache_key_follows_what_it_is_built_from(monkeypatch):
    """The machine cache keys the tiny model by its fingerprint: the same inputs give the same key, and an edit to
    the prompt wording or to the synthetic questions its tokenizer is trained on gives a new one (a new build,
    never a stale tokenizer)."""
    from caft import prompts, tiny
    from caft.paths import cache_dir

    key = tiny.fingerprint()
    assert tiny.fingerprint() == key
    assert resolve(ModelSpec(ref="tiny")).location == str(cache_dir() / "models" / f"tiny-{key}")
    system = next(iter(prompts.SYSTEM))
    with monkeypatch.context() as m:
        m.setitem(prompts.SYSTEM, system, prompts.SYSTEM[system] + " Be brief.")
        reworded = tiny.fingerprint()
    original = tiny.generate
    with monkeypatch.context() as m:
        m.setattr(tiny, "generate", lambda cfg, seed: original(cfg, seed + 1))
        other_questions = tiny.fingerprint()
    assert len({key, reworded, other_questions}) == 3
    assert tiny.fingerprint() == key

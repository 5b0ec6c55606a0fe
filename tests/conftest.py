"""Shared fixtures: an offline, isolated environment and the tiny model."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import tempfile
from pathlib import Path

import pandas as pd
import pytest
import yaml
from pydantic import BaseModel

from caft.params import Params, parse_params
from caft.profile import apply, flatten

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Tests send Ctrl-C to the commands they start. A shell starts a background job (`make test &`, `nohup`) with
# SIGINT ignored, and an ignored signal stays ignored in every process started from it: each caft or dvc process
# would then ignore the test's Ctrl-C and run on until the hang guard. A handler, unlike SIG_IGN, is reset to the
# default when a child starts.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures"
# Where `committed` puts its copies: one folder per test process, removed when the process ends.
_COMMITTED = tempfile.TemporaryDirectory(prefix="caft-committed-")


@functools.cache
def committed(name: str) -> Path:
    """A copy of file `name` as the last commit holds it. Tests must not read what a profile or an experiment
    left in the workspace (`make tiny` rewrites params.yaml), so they pass in any state of the checkout."""
    proc = subprocess.run(["git", "show", f"HEAD:{name}"], cwd=REPO, capture_output=True, text=True, check=True)
    path = Path(_COMMITTED.name) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(proc.stdout)
    return path


def committed_params() -> dict:
    """params.yaml as committed, a fresh copy: the values every test starts from (code holds no defaults)."""
    return yaml.safe_load(committed("params.yaml").read_text())


def model_entry(key: str = "tiny") -> dict:
    """A committed model entry, whole, for a student key a test makes up (a student's entry writes every leaf the
    stages list)."""
    return committed_params()["models"][key]


def raw_params(overrides: dict[str, object] | None = None) -> dict:
    """The committed params mapping with overrides (dotted keys or nested sections, applied leaf by leaf)."""
    return apply(committed_params(), flatten(overrides or {}))


def params(overrides: dict[str, object] | None = None) -> Params:
    """`raw_params`, validated as a stage would."""
    return parse_params(raw_params(overrides))


def section(where: str, /, **fields: object) -> BaseModel:
    """One section of the committed params (`"split"`, `"data.synthetic"`) with `fields` replaced (leaf by leaf),
    validated by that section's own model alone (a unit under test needs no students or models)."""
    model: type[BaseModel] = Params
    node = params().model_dump(by_alias=True)  # parsed: `prompt.dataset: auto` is resolved, as a stage sees it
    for key in where.split("."):
        name = next(n for n, f in model.model_fields.items() if (f.alias or n) == key)
        model, node = model.model_fields[name].annotation, node[key]
    return model.model_validate(apply(node, flatten(fields)))


@pytest.fixture(scope="session", autouse=True)
def caft_cache(tmp_path_factory) -> Path:
    """One model cache per test session, never the user's ~/.cache/caft."""
    path = tmp_path_factory.mktemp("caft-cache")
    os.environ["CAFT_CACHE_DIR"] = str(path)
    return path


@pytest.fixture(autouse=True)
def response_store(tmp_path_factory, monkeypatch) -> Path:
    """Each test its own machine-wide teacher / judge response store, so that exact call counts never depend on
    what another test requested (tests of the store itself use this path)."""
    path = tmp_path_factory.mktemp("responses")
    monkeypatch.setenv("CAFT_RESPONSE_STORE", str(path))
    return path


@pytest.fixture(scope="session")
def tiny_model():
    import torch

    from caft.models import load_model, load_tokenizer
    from caft.params import ModelSpec

    spec = ModelSpec(ref="tiny", dtype="float32")
    return load_model(spec, torch.device("cpu"), torch.float32), load_tokenizer(spec)


def make_questions(n: int = 6) -> pd.DataFrame:
    """A small canonical question table with varied option counts."""
    rows = []
    for i in range(n):
        k = 2 + i % 9
        rows.append(
            {
                "question_id": f"q{i}",
                "question": f"What is {i} + {i}?",
                "options": [str(2 * i + d) for d in range(k)],
                "answer_index": 0,
                "category": "math" if i % 2 else "physics",
                "rationale": "",
                "difficulty": -1,
                "source": "test",
                "answer": "",
                "expression": "",
            }
        )
    return pd.DataFrame(rows)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files with DVC end-to-end tests first (a stable sort by file, so each file's own order is kept): `make
    test` hands whole files to its worker processes in this order, and a slow file started last would run alone
    at the end."""
    slow = {item.path for item in items if item.get_closest_marker("integration")}
    items.sort(key=lambda item: item.path not in slow)

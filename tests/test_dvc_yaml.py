"""dvc.yaml lists, for every stage, the library code its outputs depend on: the stage script and every `caft`
module it imports, directly or through other caft modules, so that changing that code re-runs the stage."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

CAFT = REPO / "src" / "caft"
# Imported everywhere, but only shape error messages (and the empty package): listing them would re-run every
# stage for a wording change.
NOT_DEPENDENCIES = {"errors.py", "cli.py", "__init__.py"}
# Imports that do not reach a stage's outputs through that module. The stages that do use the far side list it.
UNUSED_EDGES = {
    ("params.py", "strategies.py"): "the schema only checks strategy names",
    ("params.py", "teacher/backends.py"): "the schema only checks teacher backend names (the registry's keys)",
    ("prepare.py", "schema.py"): "other stages use prepare.load_prepared, which reads prepare's files",
    ("prepare.py", "sources/__init__.py"): "as above",
    ("prepare.py", "sources/mmlu_pro.py"): "as above",
    ("prepare.py", "sources/synthetic.py"): "as above",
}


def _module_file(name: str) -> Path | None:
    path = CAFT.parent.joinpath(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def caft_imports(path: Path) -> set[Path]:
    """The caft modules `path` imports (`from caft.x import y` counts y when y is a module, else x)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [f"{node.module}.{a.name}" if _module_file(f"{node.module}.{a.name}") else node.module
                     for a in node.names]  # fmt: skip
        else:
            continue
        out |= {f for n in names if n.split(".")[0] == "caft" and (f := _module_file(n)) is not None}
    return out


def required(script: Path) -> set[str]:
    """Every caft module (relative to src/caft) the script's outputs can depend on, following imports."""
    seen: set[str] = set()
    todo = [script]
    while todo:
        importer = todo.pop()
        source = importer.relative_to(CAFT).as_posix() if importer.is_relative_to(CAFT) else None
        for module in caft_imports(importer):
            name = module.relative_to(CAFT).as_posix()
            if name in seen or (source, name) in UNUSED_EDGES or name in NOT_DEPENDENCIES:
                continue
            seen.add(name)
            todo.append(module)
    return seen


def _stages() -> list[tuple[str, dict]]:
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    return [(name, body.get("do", body)) for name, body in stages.items()]


@pytest.mark.parametrize(("name", "body"), _stages(), ids=[name for name, _ in _stages()])
def test_stage_lists_its_script_and_the_library_it_uses(name, body):
    script = re.search(r"stages/\w+\.py", body["cmd"]).group(0)
    deps = [d if isinstance(d, str) else next(iter(d)) for d in body["deps"]]
    assert script in deps
    listed = [d.removeprefix("src/caft/") for d in deps if d.startswith("src/caft/")]
    covered = {m for m in required(REPO / script) if any(m == d or m.startswith(d.rstrip("/") + "/") for d in listed)}
    assert sorted(required(REPO / script) - covered) == []


def test_the_import_walk_sees_indirect_modules():
    # stages/train.py -> caft.train -> caft.models -> caft.tiny -> caft.sources.synthetic
    assert {"train.py", "models.py", "tiny.py", "sources/synthetic.py"} <= required(REPO / "stages/train.py")
    assert "strategies.py" not in required(REPO / "stages/split.py")  # only through params.py (an unused edge)

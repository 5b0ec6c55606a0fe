"""dvc.yaml lists, for every stage, the library code its outputs depend on: the stage script and every `caft`
module it imports, directly or through other caft modules, so that changing that code re-runs the stage."""

from __future__ import annotations

import ast
import graphlib
import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from caft.params import ModelSpec
from caft.profile import flatten
from tests.conftest import REPO, committed, committed_params
from tests.dvc_project import call, copy_project

CAFT = REPO / "src" / "caft"
# Imported everywhere, but only shape error messages (and the empty package), or a test's kill switch: listing them
# would re-run every stage for a wording change.
NOT_DEPENDENCIES = {"errors.py", "cli.py", "__init__.py", "faults.py"}
# Imports that do not reach a stage's outputs through that module. The stages that do use the far side list it.
UNUSED_EDGES = {
    ("prepare.py", "schema.py"): "other stages use prepare.load_prepared, which reads prepare's files",
    ("teacher/run.py", "split.py"): "only needed_ids draws the random control: the teacher stage lists split.py",
    ("prepare.py", "sources/__init__.py"): "as above",
    ("prepare.py", "sources/mmlu_pro.py"): "as above",
    ("prepare.py", "sources/synthetic.py"): "as above",
    ("prepare.py", "sources/gsm8k.py"): "as above",
    ("prepare.py", "sources/medmcqa.py"): "as above",
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
            names = [
                f"{node.module}.{a.name}" if _module_file(f"{node.module}.{a.name}") else node.module
                for a in node.names
            ]
        else:
            continue
        out |= {f for n in names if n.split(".")[0] == "caft" and (f := _module_file(n)) is not None}
    return out


def required(script: Path, *also: Path, edges: dict = UNUSED_EDGES) -> set[str]:
    """Every caft module (relative to src/caft) the script's outputs can depend on, following imports; `also`:
    modules the script imports by name at run time (an estimator family's `--module`)."""
    seen: set[str] = {m.relative_to(CAFT).as_posix() for m in also}
    todo = [script, *also]
    while todo:
        importer = todo.pop()
        source = importer.relative_to(CAFT).as_posix() if importer.is_relative_to(CAFT) else None
        for module in caft_imports(importer):
            name = module.relative_to(CAFT).as_posix()
            if name in seen or (source, name) in edges or name in NOT_DEPENDENCIES:
                continue
            seen.add(name)
            todo.append(module)
    return seen


def _stages() -> list[tuple[str, dict]]:
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    return [(name, body.get("do", body)) for name, body in stages.items()]


# The stages each unused edge's importer belongs to: there the edge is used (check_params's output is the question
# file's verdict too, prepare's output is what the sources and the schema make, the teacher's needs the
# random control).
EDGE_OWNERS = {"prepare.py": {"prepare", "check_params"}, "teacher/run.py": {"teacher"}}


def _stage_code(name: str, body: dict) -> tuple[str, set[str], list[str]]:
    """(the stage's script, the caft modules it can reach, the src/caft deps it lists)."""
    script = re.search(r"stages/\w+\.py", body["cmd"]).group(0)
    named = [_module_file(m) for m in re.findall(r"(?:--module|-m) (caft\.\S+)", body["cmd"])]
    deps = [d if isinstance(d, str) else next(iter(d)) for d in body["deps"]]
    assert script in deps
    edges = {edge: why for edge, why in UNUSED_EDGES.items() if name not in EDGE_OWNERS[edge[0]]}
    return (
        script,
        required(REPO / script, *named, edges=edges),
        [d.removeprefix("src/caft/") for d in deps if d.startswith("src/caft/")],
    )


def _covers(listed: str, module: str) -> bool:
    return module == listed or module.startswith(listed.rstrip("/") + "/")


@pytest.mark.parametrize(("name", "body"), _stages(), ids=[name for name, _ in _stages()])
def test_stage_lists_its_script_and_the_library_it_uses(name, body):
    _, needed, listed = _stage_code(name, body)
    assert sorted(m for m in needed if not any(_covers(d, m) for d in listed)) == []


@pytest.mark.parametrize(("name", "body"), _stages(), ids=[name for name, _ in _stages()])
def test_stage_lists_no_library_it_does_not_use(name, body):
    """An unused dependency re-runs the stage for nothing (entropy used to re-run on every split change)."""
    _, needed, listed = _stage_code(name, body)
    assert [d for d in listed if not any(_covers(d, m) for m in needed)] == []


def _needed(stage: str) -> set[str]:
    return _stage_code(stage, dict(_stages())[stage])[1]


def _import_graph() -> dict[str, set[str]]:
    modules = {m.relative_to(CAFT).as_posix(): m for m in CAFT.rglob("*.py")}
    return {name: {i.relative_to(CAFT).as_posix() for i in caft_imports(m)} - {name} for name, m in modules.items()}


def test_no_import_circle_among_caft_modules():
    """Imports inside functions count (the walk reads whole files): a circle dodged that way still ties every
    module on it to the others, and a stage that imports one depends on all of them."""
    graph = _import_graph()
    assert "tiny.py" in graph["models.py"]  # the walk sees an import made inside a function
    try:
        list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        pytest.fail(f"import circle: {' -> '.join(exc.args[1])}")


def test_touching_a_module_changes_exactly_the_stages_that_import_it(tmp_path):
    """Through DVC itself: every caft module and stage script gets a comment, and `dvc status` (against the
    committed dvc.lock) must name, for each file, exactly the demo's stages whose script reaches it through
    imports, so a comment in a registry re-runs no training. Package `__init__` files are left out: they hold
    nothing, and a stage that lists a package folder hashes them with it."""
    root = copy_project(tmp_path)
    shutil.copy(committed("dvc.lock"), root / "dvc.lock")
    files = sorted(
        p.relative_to(root).as_posix()
        for p in [*(root / "src" / "caft").rglob("*.py"), *(root / "stages").glob("*.py")]
        if p.name != "__init__.py"
    )
    for rel in files:
        (root / rel).write_text((root / rel).read_text() + "\n# touched\n")
    proc = call(["dvc", "status", "--json"], root)
    assert proc.returncode == 0, proc.stderr
    changed = {
        stage: {path for change in changes if isinstance(change, dict) for path in change.get("changed deps", {})}
        for stage, changes in json.loads(proc.stdout).items()
    }
    assert {"check_params", "prepare", "entropy@smollm2", "train@smollm2-caft-42", "report"} <= set(changed)
    code = {stage: _stage_code(stage.split("@")[0], dict(_stages())[stage.split("@")[0]]) for stage in changed}

    def importers(rel: str) -> list[str]:
        module = rel.removeprefix("src/caft/")
        return sorted(s for s, (script, needed, _) in code.items() if rel == script or module in needed)

    by_dvc = {rel: sorted(s for s, paths in changed.items() if any(_covers(p, rel) for p in paths)) for rel in files}
    assert by_dvc == {rel: importers(rel) for rel in files}


def test_entropy_depends_on_no_split_or_estimator_code():
    assert sorted(m for m in _needed("entropy") if m == "split.py" or m.startswith("estimators/")) == []


def test_report_and_compare_import_nothing_that_imports_torch():
    heavy = {
        m
        for m in (p.relative_to(CAFT).as_posix() for p in CAFT.rglob("*.py"))
        if re.search(
            r"^\s*(import torch|from torch|import transformers|from transformers)", (CAFT / m).read_text(), re.M
        )
    }
    assert {"models.py", "entropy.py", "generation.py"} <= heavy  # the check can see torch imports
    for stage in ("report", "compare_estimators"):
        assert sorted(_needed(stage) & heavy) == [], stage


def test_each_estimator_family_has_its_stage_with_its_module():
    from caft.estimators.registry import FAMILIES

    stages = dict(_stages())
    for key, family in FAMILIES.items():
        assert f"--module {family.module} " in stages[f"estimate_{key}"]["cmd"]
    assert {n for n in stages if n.startswith("estimate_")} == {f"estimate_{k}" for k in FAMILIES}


def test_the_import_walk_sees_indirect_modules():
    # stages/train.py -> caft.train -> caft.models -> caft.tiny -> caft.sources.synthetic
    assert {"train.py", "models.py", "tiny.py", "sources/synthetic.py"} <= required(REPO / "stages/train.py")
    assert "strategies.py" not in required(REPO / "stages/split.py")  # only through params.py (an unused edge)


def test_every_listed_param_is_a_leaf_of_params_yaml():
    """DVC fails a stage whose listed param is missing from params.yaml, and only when that stage runs (a
    family's stage runs only when a profile enables it): every listed key must be there, whatever the item."""
    params = committed_params()
    names = set(flatten(params))
    models = {f"models.{name}." for name in params["models"]}
    missing = set()
    for name, body in _stages():
        for key in body.get("params", []):
            if not isinstance(key, str):
                continue
            if "${item" in key:
                key = re.sub(r"^models\.\$\{item(\.student)?\}\.", next(iter(sorted(models))), key)
                key = re.sub(r"\$\{item\.strategy\}", "sft", key)
            if key not in names:
                missing.add(f"{name}: {key}")
    assert sorted(missing) == []


def test_a_students_entry_is_refused_unless_it_writes_every_leaf_the_stages_list():
    """The leaves of a student's model entry that dvc.yaml lists are exactly those check_params asks for."""
    listed = {
        m.group(2)
        for _, body in _stages()
        for key in body.get("params", [])
        if isinstance(key, str) and (m := re.match(r"^models\.\$\{item(\.student)?\}\.(\w+)$", key))
    }
    assert listed == set(ModelSpec.STAGE_PARAMS)


def test_declared_metrics_and_plots_live_in_git():
    """A fresh clone reads the committed results without a remote (`dvc metrics show`, `dvc plots show`): every
    declared metric and plot is `cache: false`, and the only declared metrics are the report's headline files."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    declared = {}
    for name, stage in stages.items():
        body = stage.get("do", stage)
        for kind in ("metrics", "plots"):
            for entry in body.get(kind, []):
                assert isinstance(entry, dict), (name, entry)
                path, spec = next(iter(entry.items()))
                assert spec.get("cache") is False, (name, path)
                declared.setdefault(kind, []).append(path)
    assert declared["metrics"] == ["metrics/summary"]

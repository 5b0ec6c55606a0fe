"""The names params.yaml takes from the registries, checked against them in one place.

A strategy, a data source, a teacher backend and an estimator are named in params.yaml but owned by their
registries (`caft.strategies`, `caft.prepare`, `caft.teacher.backends`, `caft.estimators.registry`). `caft.params`
holds the types alone, so a stage that imports it does not depend on every registry's code (and the registries,
which take params types, form no import circle with it). So are the blocks of settings that an entry added to a
registry declares (`data.<source>`, `teacher.<backend>`, `estimators.<family>`): caft.params keeps them as they
are, and they are validated here by their entries' models. The check runs where every name matters at once: the
`check_params` stage, first in every `dvc repro` / `dvc exp run`, and the `caft` commands that read a profile.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NoReturn

from pydantic import ValidationError

from caft.errors import CaftError
from caft.estimators.registry import FAMILIES, available, every_name, scored_students
from caft.params import Params, Settings, invalid
from caft.prepare import SOURCES, source
from caft.scores import SINGLE_TOKEN
from caft.strategies import STRATEGIES
from caft.teacher.backends import BACKENDS, backend


def _refuse(where: str, message: str) -> NoReturn:
    raise CaftError(f"invalid params: {where}{message}")


def _known(where: str, lookup: Callable[[str], object], name: str) -> None:
    """The registry's own lookup decides, and its one line (the names it holds) is the message."""
    try:
        lookup(name)
    except CaftError as exc:
        _refuse(f"{where}: ", str(exc))


def _registered(p: Params) -> None:
    _known("data.source", source, p.data.source)
    _known("teacher.backend", backend, p.teacher.backend)
    _known("estimators.judge.backend", backend, p.estimators.judge.backend)
    if not backend(p.estimators.judge.backend).paid:
        generating = [name for name, entry in BACKENDS.items() if entry.paid]
        _refuse("estimators.judge.backend: ", f"the judge needs a backend that generates ({', '.join(generating)})")


def _strategies(p: Params) -> None:
    """Strategy names, and each one's epochs: one positive value per phase of the registry's entry."""
    unknown = [name for name in p.strategies if name not in STRATEGIES]
    if unknown:
        _refuse("strategies: ", f"unknown strategies {unknown} (known: {', '.join(STRATEGIES)})")
    for name, epochs in p.train.epochs.items():
        if name not in STRATEGIES:
            _refuse(f"train.epochs.{name}: ", "unknown strategy")
        n_phases = len(STRATEGIES[name].phases)
        if len(epochs) != n_phases or any(e <= 0 for e in epochs):
            _refuse(f"train.epochs.{name} ", f"needs {n_phases} positive value(s), got {epochs}")
    missing = [s for s in p.strategies if s not in p.train.epochs]
    if missing:
        _refuse("", f"strategies {missing} have no train.epochs entry")


def _blocks(section: str, blocks: dict, models: dict[str, type[Settings] | None], what: str) -> None:
    """The blocks under `section` that caft.params does not type belong to entries added to a registry: each
    entry's own model validates its block, and a block no entry owns (a misspelt name) is refused."""
    for key, block in blocks.items():
        if models.get(key) is None:
            _refuse(f"{section}.{key}: ", f"not a setting, nor {what}'s block ({', '.join(models)})")
        try:
            models[key].model_validate(block)
        except ValidationError as exc:
            raise CaftError(invalid(exc, f"{section}.{key}")) from None


def _settings_blocks(p: Params) -> None:
    """A data source's, a teacher backend's and an estimator family's own block, where its entry declares one;
    the configured source and backends, and every family with a block, need theirs (their stages read it)."""
    backends = {k: b.settings for k, b in BACKENDS.items()}
    sections = (
        ("data", p.data, {k: e.settings for k, e in SOURCES.items()}, "a data source", [p.data.source]),
        ("teacher", p.teacher, backends, "a teacher backend", [p.teacher.backend]),
        ("estimators.judge", p.estimators.judge, backends, "a teacher backend", [p.estimators.judge.backend]),
        ("estimators", p.estimators, {k: f.settings for k, f in FAMILIES.items()}, "an estimator family", FAMILIES),
    )
    for section, node, models, what, used in sections:
        blocks = node.model_extra or {}
        _blocks(section, blocks, models, what)
        missing = [name for name in used if models[name] is not None and name not in blocks]
        if missing:
            _refuse(f"{section}.{missing[0]}: ", "the params block its entry declares is missing")


def _estimators(p: Params) -> None:
    """Every estimator family scores known students, and the split's estimator is written for each student (a
    name no stage writes would otherwise surface as a missing DVC dependency)."""
    for key in FAMILIES:
        unknown = [s for s in scored_students(p, key) if s not in p.students]
        if unknown:
            _refuse("", f"estimators.{key}.students {unknown} are not in students {p.students}")
    name = p.split.estimator
    if name not in every_name(p):
        _refuse("", f"split.estimator={name} is no estimator (known: {', '.join(every_name(p))})")
    for student in p.students:
        if name not in available(p, student):
            _refuse(
                "",
                f"split.estimator={name} is not computed for student {student}: "
                "add the student to its family's estimators.<family>.students",
            )


def _reband(p: Params) -> None:
    """A re-banded phase (caft_reestimate) re-scores with the model being trained: only an estimator that model
    computes itself, its first answer token's entropy, can be re-estimated."""
    reband = [s for s in p.strategies if STRATEGIES[s].rebands]
    if reband and p.split.estimator not in SINGLE_TOKEN:
        _refuse(
            "",
            f"strategy {reband[0]} re-scores with the student's own first-token entropy: split.estimator must be "
            f"one of {', '.join(SINGLE_TOKEN)}, not {p.split.estimator}",
        )


CHECKS: tuple[Callable[[Params], None], ...] = (_registered, _strategies, _settings_blocks, _estimators, _reband)


def check_names(p: Params) -> Params:
    """`p` when every name it takes from a registry is that registry's; else the first problem, as one line."""
    for check in CHECKS:
        check(p)
    return p

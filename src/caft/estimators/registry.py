"""The registry of complexity-estimator families, the single source of estimator names.

A family is one entry here, one module with `run(questions, params, student, variant, workdir) -> (scores,
details)` (`scores` in the common shape of `caft.scores`, each row carrying the estimator's kind; `details`
whatever the family keeps per question), one params block `estimators.<key>` listing the students it scores,
and one dvc.yaml stage `estimate_<key>` that runs `stages/estimate.py --module <its module>` (DVC reads a stage's
command, deps and outs from dvc.yaml alone). The families caft ships have their blocks typed in `caft.params`; a
family added as one entry declares its block's model in the entry (`settings`), and `caft.names` validates the
block against it. The registry gives the names `split.estimator` accepts and the stages `caft plan` counts; no
stage imports it but a family's own module, so adding a family re-runs no other stage.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from caft.estimators.aggregates import AGGREGATES
from caft.params import FamilyParams, declared_block
from caft.scores import SINGLE_TOKEN

if TYPE_CHECKING:
    from caft.params import Params


def _no_variants(p: Params) -> list[str | None]:
    return [None]


@dataclass(frozen=True)
class Family:
    module: str  # the module with `run`; its stage passes it as --module
    names: Callable[[Params, str | None], list[str]]  # the estimators one variant writes
    # one stage per student x variant ([None]: no variants)
    variants: Callable[[Params], list[str | None]] = _no_variants
    # the students it scores: its params block's `students` (read from the typed block of a family caft ships)
    students: Callable[[Params], list[str]] | None = None
    # the model of its params block `estimators.<key>`, for a family `caft.params` does not name
    settings: type[FamilyParams] | None = None


def family_params(p: Params, key: str) -> FamilyParams:
    """The params block `estimators.<key>` of a family added as one entry, validated by the entry's own model."""
    return declared_block(p.estimators, key, FAMILIES[key].settings, "estimator family")


def scored_students(p: Params, key: str) -> list[str]:
    """The students family `key` scores under `p`."""
    family = FAMILIES[key]
    return family.students(p) if family.students is not None else family_params(p, key).students


FAMILIES: dict[str, Family] = {
    "cot": Family(
        module="caft.estimators.cot",
        students=lambda p: p.estimators.cot.students,
        names=lambda p, v: [f"cot_{a}" for a in AGGREGATES],
    ),
    "judge": Family(
        module="caft.estimators.judge",
        students=lambda p: p.estimators.judge.students,
        variants=lambda p: list(p.estimators.judge.scales),
        names=lambda p, scale: [f"masj_{scale}"],
    ),
    "import": Family(
        module="caft.estimators.imported",
        students=lambda p: p.estimators.import_.students,
        names=lambda p, v: [p.estimators.import_.name],
    ),
}


def available(p: Params, student: str) -> dict[str, str]:
    """Every estimator the pipeline writes for `student` under params `p`: name -> the stage that writes it."""
    out = {name: f"entropy@{student}" for name in SINGLE_TOKEN}
    for key, family in FAMILIES.items():
        if student in scored_students(p, key):
            for variant in family.variants(p):
                stage = f"estimate_{key}@{student}" + (f"-{variant}" if variant is not None else "")
                out |= dict.fromkeys(family.names(p, variant), stage)
    return out


def every_name(p: Params) -> list[str]:
    """Every estimator name a family can write under `p`, whichever students it is enabled for."""
    names = list(SINGLE_TOKEN)
    for family in FAMILIES.values():
        names += [n for v in family.variants(p) for n in family.names(p, v)]
    return names

"""Parameter profiles: small YAML files of dotted-key overrides (profiles/<name>.yaml), applied through
`dvc exp run -S ...` so the workspace ends *in* the profile (params.yaml and dvc.lock updated) and later
experiments (`dvc exp run -S split.threshold=0.5`) re-run only what they change."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from caft.errors import CaftError
from caft.names import check_names
from caft.params import Params, parse_params


def load_overrides(path: str | Path) -> dict[str, object]:
    path = Path(path)
    if not path.exists():
        raise CaftError(f"profile not found: {path}")
    overrides = yaml.safe_load(path.read_text()) or {}
    if not isinstance(overrides, dict):
        raise CaftError(f"profile {path} must map dotted param keys to values")
    return flatten(overrides)


def flatten(overrides: dict, prefix: str = "") -> dict[str, object]:
    """Dotted leaf keys for a profile written in params.yaml's nested shape too (`split: {threshold: 0.5}` is
    `split.threshold: 0.5`): a nested mapping sets the leaves it names and keeps the section's others, where
    passing it whole would replace the section (and fail validation on every leaf it left out)."""
    flat: dict[str, object] = {}
    for key, value in overrides.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


def merged_overrides(paths: list[str | Path]) -> dict[str, object]:
    """The overrides of several profiles, later files winning (a recipe, then its variant or a size profile)."""
    overrides: dict[str, object] = {}
    for path in paths:
        overrides.update(load_overrides(path))
    return overrides


def apply(raw: dict, overrides: dict[str, object]) -> dict:
    """params mapping with the dotted-key overrides applied (new leaves allowed, as Hydra's `++key=`)."""
    out = copy.deepcopy(raw)
    for dotted, value in overrides.items():
        node = out
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return out


def validate(raw: dict, overrides: dict[str, object]) -> Params:
    """The params a profile produces, validated against the schema and the registries' names (bad profiles fail
    before any run)."""
    return check_names(parse_params(apply(raw, overrides)))


def resolve(paths: list[str | Path], params_file: str | Path = "params.yaml") -> tuple[dict[str, object], Params]:
    """(merged overrides, the validated params they give on top of `params_file`)."""
    overrides = merged_overrides(paths)
    return overrides, validate(yaml.safe_load(Path(params_file).read_text()), overrides)


def hydra_args(overrides: dict[str, object], raw: dict) -> list[str]:
    """`-S key=value` arguments for `dvc exp run` (values in YAML flow style, which Hydra parses); a key that
    params.yaml (`raw`) does not hold yet, such as a new model's block, is `-S ++key=value`, since Hydra
    refuses to add a key with the plain form."""
    known = flatten(raw)
    args = []
    for key, value in overrides.items():
        rendered = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
        rendered = rendered.removesuffix("\n...").strip()
        args += ["-S", f"{'' if key in known else '++'}{key}={rendered}"]
    return args

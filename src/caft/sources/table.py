"""Published tables (entropies, traces) from a local file or a hub dataset, with one-line errors."""

from __future__ import annotations

import pandas as pd

from caft.errors import CaftError
from caft.io import read_table
from caft.params import TableSource


def load_table(cfg: TableSource, what: str, model: str = "") -> pd.DataFrame:
    """`what` names the table in errors; `{model}` in `path` / `config` becomes the student's key."""
    if cfg.path:
        path = cfg.path.format(model=model)
        try:
            return read_table(path)
        except FileNotFoundError:
            raise CaftError(f"{what} file not found: {path}") from None
    import datasets

    config = cfg.config.format(model=model) if cfg.config else None
    try:
        return datasets.load_dataset(cfg.hub_id, config, revision=cfg.revision, split=cfg.split).to_pandas()
    except Exception as exc:  # hub errors come in many types; the user needs the first line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        label = f"{cfg.hub_id} ({config})" if config else cfg.hub_id
        raise CaftError(f"could not load {what} {label} from the Hugging Face Hub: {first}") from None

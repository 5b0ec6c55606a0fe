"""Published tables (entropies, traces) from a local file or a hub dataset, with one-line errors."""

from __future__ import annotations

import pandas as pd

from caft.errors import CaftError
from caft.io import read_table
from caft.params import TableSource
from caft.sources.hub import load_split


def load_table(cfg: TableSource, what: str, model: str = "") -> pd.DataFrame:
    """`what` names the table in errors; `{model}` in `config` becomes the student's key."""
    if cfg.hub_id:
        config = cfg.config.format(model=model) if cfg.config else None
        return load_split(cfg.hub_id, config, cfg.revision, cfg.split, what).to_pandas()
    try:
        return read_table(cfg.path)
    except FileNotFoundError:
        raise CaftError(f"{what} file not found: {cfg.path}") from None

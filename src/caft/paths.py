"""Where caft keeps what outlives a workspace: converted models and the machine-wide response store."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """Converted and built models, and the shared teacher / judge response store (override with
    CAFT_CACHE_DIR)."""
    return Path(os.environ.get("CAFT_CACHE_DIR") or Path.home() / ".cache" / "caft")


def response_store() -> Path:
    """The machine-wide teacher / judge response store (caft.teacher.cache); CAFT_RESPONSE_STORE moves it alone,
    e.g. onto a disk shared by several workers."""
    return Path(os.environ.get("CAFT_RESPONSE_STORE") or cache_dir() / "responses")

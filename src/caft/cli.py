"""What every stage script shares: one-line errors with a non-zero exit, quiet library logging, and, under DVC,
the outputs DVC removed put back when the stage fails (`caft.rollback`)."""

from __future__ import annotations

import functools
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from caft.errors import CaftError
from caft.rollback import after_failure

F = TypeVar("F", bound=Callable)
# TRL and PEFT still read `model.is_gradient_checkpointing`, which transformers 5 renamed: a FutureWarning per
# training and per adapter load about the libraries' internals, not about anything a user can change.
LIBRARY_DEPRECATIONS = r"`is_gradient_checkpointing` is deprecated"
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a Ctrl-C


def stage(fn: F) -> F:
    """Turn a CaftError raised anywhere in a stage into `error: <message>` on stderr and exit code 2, and a
    Ctrl-C into `interrupted` and exit code 130; either way, under DVC, the outputs DVC removed are put back."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        warnings.filterwarnings("ignore", message=LIBRARY_DEPRECATIONS, category=FutureWarning)
        try:
            return fn(*args, **kwargs)
        except CaftError as exc:
            print(f"error: {exc}", file=sys.stderr)
            after_failure(Path.cwd())
            raise SystemExit(EXIT_USER_ERROR) from None
        except KeyboardInterrupt:  # Ctrl-C: a person's choice, not a fault, so no traceback
            print("interrupted", file=sys.stderr)
            after_failure(Path.cwd())
            raise SystemExit(EXIT_INTERRUPTED) from None
        except Exception:
            after_failure(Path.cwd())
            raise

    return wrapper  # type: ignore[return-value]

"""What every stage script shares: one-line errors with a non-zero exit, quiet library logging, and, under DVC,
the outputs DVC removed put back when the stage fails (`caft.rollback`)."""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator
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


def file_in_the_way(path: Path) -> Path | None:
    """The first folder of an output `path` that exists as a file: nothing can be written there, and `mkdir`
    says only "File exists" or "Not a directory", without naming which one."""
    return next((folder for folder in path.parents if folder.is_file()), None)


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


@contextlib.contextmanager
def child_answers_ctrl_c() -> Iterator[None]:
    """While a child process runs in the foreground (dvc, the training script), a Ctrl-C reaches both: the
    child answers it (DVC stops its stage and puts back its outputs) and this process waits for the child,
    then stops with KeyboardInterrupt. Without this, the KeyboardInterrupt arrives while this process waits, and
    `subprocess.call` kills the child mid-clean-up. A handler, not SIG_IGN: exec resets handlers, so the child
    starts with Python's own Ctrl-C handling (an ignored signal would stay ignored in it)."""
    fired: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: fired.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if fired:
        raise KeyboardInterrupt


def foreground(cmd: list[str]) -> int:
    """`cmd`'s exit status, run as if typed at the shell (a Ctrl-C is its to answer first)."""
    with child_answers_ctrl_c():
        return subprocess.call(cmd)

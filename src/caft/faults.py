"""Deterministic kill points for the tests of interrupted runs.

A test sets `CAFT_KILL_AT` to a point's name and the process kills itself (SIGKILL: no clean-up, as a power
cut or an out-of-memory kill would) when it gets there; unset, a point costs one environment lookup. Points:
`train:phase{k}:step{n}` (after optimizer step n of phase k), `train:epoch{e}:eval` (while epoch e's
validation answers are in memory, before they are written), `train:phase{k}:save` (before the phase's final
weights are written), `train:save` (before the stage writes its outputs). `CAFT_KILL_SIGNAL=SIGINT` makes it
a Ctrl-C instead: Python's clean-up runs, and the stage says it was interrupted.
"""

from __future__ import annotations

import os
import signal


def kill_point(name: str) -> None:
    if os.environ.get("CAFT_KILL_AT") == name:
        os.kill(os.getpid(), signal.Signals[os.environ.get("CAFT_KILL_SIGNAL", "SIGKILL")])

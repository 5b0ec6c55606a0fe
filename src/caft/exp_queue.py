"""Watching DVC's experiment queue: a sweep's points run in queue workers whose output nobody sees, so the
person who typed `make sweep` is told, point by point, what each is doing and for how long (a point can take
tens of minutes on a CPU), and which ones failed.

DVC offers no API for the queue's state that is stable across its releases; `dvc queue status` and
`dvc queue logs` are its user-facing commands, read here and nowhere else.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable

BUSY = ("Queued", "Running")
LOG_EVERY_S = 15.0  # `dvc queue logs` starts a DVC process: asked at most this often per running point
_STAGE = re.compile(r"(?:Running stage|Stage) '([^']+)'")


def listed(names: list[str]) -> dict[str, str]:
    """The state of each of `names` that `dvc queue status` lists (Queued, Running, Success, Failed). A name an
    earlier sweep also used is busy while any of its tasks is, else it has the state of the last one listed."""
    status = subprocess.run(["dvc", "queue", "status"], capture_output=True, text=True).stdout
    found: dict[str, str] = {}
    for line in status.splitlines():
        words = line.split()
        hits = [n for n in names if n in words]
        state = next((w for w in words if w in (*BUSY, "Success", "Failed")), None)
        if hits and state and found.get(hits[0]) not in BUSY:
            found[hits[0]] = state
    return found


def states(names: list[str]) -> dict[str, str]:
    """Each named task's state; a name the queue does not list yet is Queued (just queued, not yet shown)."""
    found = listed(names)
    return {n: found.get(n, "Queued") for n in names}


def current_stage(name: str) -> str | None:
    """The stage a running task last started or restored, from its log so far."""
    log = subprocess.run(["dvc", "queue", "logs", name], capture_output=True, text=True).stdout
    stages = _STAGE.findall(log)
    return stages[-1] if stages else None


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}:{secs:02d}"


def wait(names: list[str], say: Callable[[str], None], poll_s: float = 2.0) -> dict[str, str]:
    """Block until none of `names` is queued or running; says a line whenever a point changes state or stage,
    e.g. "sweep: point 2 of 3 (sweep-t06): running, at train@smollm2-caft-42, 12:04" (the time since the sweep
    began). Returns the final states."""
    began = time.monotonic()
    shown: dict[str, str] = {}
    asked: dict[str, float] = {}
    while True:
        now = states(names)
        for k, name in enumerate(names, 1):
            doing = now[name].lower()
            if now[name] == "Running":
                if time.monotonic() - asked.get(name, 0.0) < LOG_EVERY_S and name in shown:
                    continue
                asked[name] = time.monotonic()
                stage = current_stage(name)
                doing = f"running, at {stage}" if stage else "running"
            if shown.get(name) != doing:
                shown[name] = doing
                say(f"sweep: point {k} of {len(names)} ({name}): {doing}, {_clock(time.monotonic() - began)}")
        if not any(state in BUSY for state in now.values()):
            return now
        time.sleep(poll_s)


def any_busy() -> bool:
    """Whether the queue still has work of anyone's (its workers are then left running)."""
    status = subprocess.run(["dvc", "queue", "status"], capture_output=True, text=True).stdout
    return any(re.search(rf"\b{state}\b", status) for state in BUSY)


def experiments_of_head() -> set[str]:
    """Names of the experiments whose baseline is the current commit: DVC refuses to queue one of those names
    again on that commit, and its results are already what the name asks for."""
    shown = subprocess.run(["dvc", "exp", "ls", "--name-only", "--rev", "HEAD"], capture_output=True, text=True)
    return set(shown.stdout.split())

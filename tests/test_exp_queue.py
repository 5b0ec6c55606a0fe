"""What `caft sweep` tells the person waiting on the queue: a line per change of a point's state or stage,
read from `dvc queue status` / `dvc queue logs` as DVC prints them."""

from __future__ import annotations

import subprocess

from caft import exp_queue

STATUS = """\
Task     Name        Created    Status
0a1b2c3  sweep-t05   10:00 AM   {a}
4d5e6f7  sweep-t06   10:00 AM   {b}
8a9b0c1  other       09:00 AM   Running
"""
LOG = "Stage 'prepare' didn't change, skipping\nRunning stage 'split@tiny':\n> python stages/split.py\n"


def fake_dvc(monkeypatch, steps: list[tuple[str, str]]):
    """`dvc queue status` returns the next of `steps` each time it is asked; `dvc queue logs` a fixed log."""
    asked = iter(steps)

    def run(cmd, **kwargs):
        if cmd[:3] == ["dvc", "queue", "status"]:
            a, b = next(asked)
            return subprocess.CompletedProcess(cmd, 0, STATUS.format(a=a, b=b), "")
        assert cmd[:3] == ["dvc", "queue", "logs"], cmd
        return subprocess.CompletedProcess(cmd, 0, LOG, "")

    monkeypatch.setattr(exp_queue.subprocess, "run", run)
    monkeypatch.setattr(exp_queue.time, "sleep", lambda s: None)
    clock = iter(range(0, 10_000, 61))
    monkeypatch.setattr(exp_queue.time, "monotonic", lambda: float(next(clock)))


def test_a_sweep_says_each_points_state_and_stage_as_it_changes(monkeypatch):
    fake_dvc(monkeypatch, [("Queued", "Queued"), ("Running", "Queued"), ("Success", "Running"), ("Success", "Failed")])
    said: list[str] = []
    final = exp_queue.wait(["sweep-t05", "sweep-t06"], said.append)
    assert final == {"sweep-t05": "Success", "sweep-t06": "Failed"}
    assert [line.rsplit(", ", 1)[0] for line in said] == [
        "sweep: point 1 of 2 (sweep-t05): queued",
        "sweep: point 2 of 2 (sweep-t06): queued",
        "sweep: point 1 of 2 (sweep-t05): running, at split@tiny",
        "sweep: point 1 of 2 (sweep-t05): success",
        "sweep: point 2 of 2 (sweep-t06): running, at split@tiny",
        "sweep: point 2 of 2 (sweep-t06): failed",
    ]
    assert all(line.rsplit(", ", 1)[1].count(":") == 1 for line in said)  # m:ss since the sweep began


def test_a_point_not_listed_yet_is_queued_and_another_task_does_not_count(monkeypatch):
    fake_dvc(monkeypatch, [("Success", "Success")])
    assert exp_queue.states(["sweep-t05", "sweep-t07"]) == {"sweep-t05": "Success", "sweep-t07": "Queued"}

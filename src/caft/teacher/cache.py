"""Content-addressed, append-only, fsynced trace store.

Key = hash of everything that determines a response: question, options, the exact messages (so the prompt
template), the teacher model and the sampling parameters. One JSON line per received response, fsynced as
it arrives, so a killed run loses at most the requests in flight. The folder is a DVC output with
`persist: true` (kept between runs) and cached (so `dvc push` / `dvc pull` carry it).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

STORE_NAME = "traces.jsonl"


def item_key(messages: list[dict[str, str]], options: list[str], teacher: str, sampling: dict) -> str:
    payload = {"messages": messages, "options": options, "teacher": teacher, "sampling": sampling}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


class TraceCache:
    def __init__(self, folder: str | Path):
        self.path = Path(folder) / STORE_NAME
        self.records: dict[str, dict] = {}
        if self.path.exists():
            with self.path.open() as fh:
                for line in fh:
                    try:
                        rec = json.loads(line)
                    except json.JSONDecodeError:
                        continue  # the last line of a killed run may be cut short
                    self.records[rec["key"]] = rec
        self._fh = None

    def __contains__(self, key: str) -> bool:
        return key in self.records

    def get(self, key: str) -> dict:
        return self.records[key]

    def put(self, record: dict) -> None:
        """Append one response and force it to disk before returning."""
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = self.path.open("a")
            self._heal()
        self._fh.write(json.dumps(record, sort_keys=True) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self.records[record["key"]] = record

    def _heal(self) -> None:
        """Start on a fresh line if a kill left the last one without its newline."""
        if self.path.stat().st_size:
            with self.path.open("rb") as fh:
                fh.seek(-1, os.SEEK_END)
                if fh.read(1) != b"\n":
                    self._fh.write("\n")

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

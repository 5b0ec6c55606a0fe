"""The one append-only JSON-lines store (teacher and judge responses, entropy's partial results).

One record per line, flushed and fsynced as written, so a killed run loses at most what was in flight. A kill
can cut the last line short: reading skips it, and the next append first ends it with a newline so the new
record starts on a line of its own.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO


class JsonlStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._fh: IO[str] | None = None

    def read(self) -> Iterator[dict]:
        """Every whole record, in write order (a line cut short by a kill is skipped)."""
        if not self.path.exists():
            return
        with self.path.open() as fh:
            for line in fh:
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    continue

    def append(self, records: Iterable[dict]) -> None:
        """Write records and force them to disk before returning."""
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = self.path.open("a")
            self._end_cut_line()
        for record in records:
            self._fh.write(json.dumps(record) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def _end_cut_line(self) -> None:
        if self.path.stat().st_size:
            with self.path.open("rb") as fh:
                fh.seek(-1, os.SEEK_END)
                if fh.read(1) != b"\n":
                    self._fh.write("\n")

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def discard(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)

"""Content-addressed, append-only, fsynced response store for the teacher (and the model-as-judge).

Key = hash of everything that determines a response: question, options, the exact messages (so the prompt
template), the teacher model and the sampling parameters. Every received response is written at once to two
append-only files (`caft.store.JsonlStore`):

- the stage's DVC output (`data/teacher/cache/traces.jsonl`, `persist: true` and cached), which `dvc push` /
  `dvc pull` carry to collaborators;
- the machine-wide store (`caft.paths.response_store()`: `$CAFT_RESPONSE_STORE`, else
  `$CAFT_CACHE_DIR/responses`, else `~/.cache/caft/responses`), which no DVC
  command touches. `dvc exp run` first resets a persisted output to its dvc.lock version, and queued or
  `--temp` experiments run in a copy of the last commit: without this store they would pay again for every
  trace received since. Keys are content hashes, so sharing the store between workspaces is safe.

A response found only in the machine store is copied into the DVC output when a run needs it, so the pushed
output holds every trace the pipeline used.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from caft.paths import response_store
from caft.store import JsonlStore

STORE_NAME = "traces.jsonl"


def item_key(messages: list[dict[str, str]], options: list[str], teacher: str, sampling: dict) -> str:
    payload = {"messages": messages, "options": options, "teacher": teacher, "sampling": sampling}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


class TraceCache:
    def __init__(self, folder: str | Path, shared: str | Path | None = None):
        self.local = JsonlStore(Path(folder) / STORE_NAME)
        self.shared = JsonlStore(Path(shared or response_store()) / STORE_NAME)
        self.records: dict[str, dict] = {rec["key"]: rec for rec in self.local.read()}
        self._local_keys = set(self.records)
        for rec in self.shared.read():
            self.records.setdefault(rec["key"], rec)

    def __contains__(self, key: str) -> bool:
        return key in self.records

    def get(self, key: str) -> dict:
        return self.records[key]

    def adopt(self, keys: list[str]) -> int:
        """Copy responses that only the machine store holds into the DVC output; returns how many."""
        missing = [self.records[k] for k in keys if k in self.records and k not in self._local_keys]
        if missing:
            self.local.append(missing)
            self._local_keys |= {rec["key"] for rec in missing}
        return len(missing)

    def put(self, record: dict) -> None:
        """Store one response in both files before returning."""
        self.local.append([record])
        self.shared.append([record])
        self.records[record["key"]] = record
        self._local_keys.add(record["key"])

    def close(self) -> None:
        self.local.close()
        self.shared.close()

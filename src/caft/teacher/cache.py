"""Teacher (and model-as-judge) responses, stored so that none is ever paid for twice.

A key is the hash of everything that decides a response: the exact messages (so the prompt template), the
options, the teacher and its sampling parameters, but not the token budget: a response that ended on its own is
the same answer under any budget, and one cut at the budget is asked again only under a larger budget (so
raising `teacher.max_tokens` re-pays the truncated items alone).

One response per file, `<store>/<key[:2]>/<key>.json`, written to a temporary sibling, fsynced and renamed into
place: a reader sees a whole response or none, two writers never corrupt a store, and nothing reads a store
whole. Two stores are read, in this order, and every received response goes to both before the run goes on:

- the workspace store (the teacher stage's `--cache`, `data/teacher/cache`): every response the workspace's
  runs used or received. It is not a stage output, so no DVC command resets or removes it: a run killed midway
  and resumed by `dvc repro` or `dvc exp run` finds what it had received, whatever else this machine keeps.
- the machine store (`caft.paths.response_store()`), shared by every workspace and every queued or temp
  experiment on the machine (their copies of the workspace start without its store). It is also where runs
  claim the keys they are about to request (`Claims`): a process that needs a key another process is
  requesting waits for that response and reads it, so two queue workers never pay twice for one key.

`caft push` / `caft pull` carry responses through the DVC remote (`caft.remote`).
"""

from __future__ import annotations

import fcntl
import json
import os
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

from caft.io import digest, exclusive
from caft.paths import response_store
from caft.store import JsonlStore

LEGACY_STORE = "traces.jsonl"  # the one-file layout of earlier versions, read once and converted


def item_key(messages: list[dict[str, str]], options: list[str], teacher: str, sampling: dict) -> str:
    """The response's key: `sampling` without its token budget (see the module docstring)."""
    decisive = {k: v for k, v in sampling.items() if k != "max_tokens"}
    payload = {"messages": messages, "options": options, "teacher": teacher, "sampling": decisive}
    return digest(payload)


def legacy_key(messages: list[dict[str, str]], options: list[str], teacher: str, sampling: dict) -> str:
    """The key earlier versions stored a response under (the budget included), to read their stores."""
    payload = {"messages": messages, "options": options, "teacher": teacher, "sampling": sampling}
    return digest(payload)


def usable(record: dict | None, max_tokens: int) -> bool:
    """Whether a stored response stands for a request under `max_tokens`: one that ended on its own always
    does; one cut at its budget does unless the budget is now larger (then it is asked again)."""
    if record is None:
        return False
    if record.get("finish_reason") != "length":
        return True
    return int(record.get("max_tokens") or 0) >= max_tokens


class ResponseStore:
    """One folder of per-key response files."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    def path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict | None:
        try:
            return json.loads(self.path(key).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def put(self, record: dict) -> None:
        """Write one response whole, or not at all (a temporary sibling renamed into place)."""
        dest = self.path(record["key"])
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.tmp")
        try:
            with tmp.open("w") as fh:
                fh.write(json.dumps(record, sort_keys=True))
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)

    def stored_keys(self) -> Iterator[str]:
        for path in self.folder.glob("??/*.json"):
            yield path.stem

    def convert_legacy(self) -> dict[str, dict]:
        """The records of an earlier version's one-file store in this folder, by their legacy key."""
        return {rec["key"]: rec for rec in JsonlStore(self.folder / LEGACY_STORE).read() if "key" in rec}


class Claims:
    """Which process is requesting which key, machine-wide.

    A claim is a file naming its holder; a holder is a file this process keeps locked (`flock`) while it lives,
    so the kernel releases it the moment the process dies, however it dies: a claim whose holder is no longer
    locked is stale and taken over (no sweep is left waiting on a killed worker). Every change to the claims
    happens under one lock file, so two processes never both take a key."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.claims = self.folder / "claims"
        self.holders = self.folder / "holders"
        self.lock = self.folder / "claims.lock"
        self._token: str | None = None
        self._token_fh = None

    def _me(self) -> str:
        if self._token is None:
            self.holders.mkdir(parents=True, exist_ok=True)
            token = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
            fh = (self.holders / token).open("w")
            fcntl.flock(fh, fcntl.LOCK_EX)
            self._token, self._token_fh = token, fh
        return self._token

    def _alive(self, token: str) -> bool:
        if token == self._token:
            return True
        path = self.holders / token
        try:
            fh = path.open("a")
        except FileNotFoundError:
            return False
        with fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            path.unlink(missing_ok=True)  # its process is gone: clear the holder file too
            return False

    def take(self, keys: Iterable[str]) -> tuple[set[str], set[str]]:
        """Claim every key no live process holds: (claimed now, held by another live process)."""
        me, mine, others, alive = self._me(), set(), set(), {}
        self.claims.mkdir(parents=True, exist_ok=True)
        with exclusive(self.lock):
            for key in keys:
                claim = self.claims / key
                holder = claim.read_text() if claim.exists() else ""
                if holder and holder != me and alive.setdefault(holder, self._alive(holder)):
                    others.add(key)
                    continue
                claim.write_text(me)
                mine.add(key)
        return mine, others

    def release(self, keys: Iterable[str]) -> None:
        if self._token is None:
            return
        with exclusive(self.lock):
            for key in keys:
                claim = self.claims / key
                if claim.exists() and claim.read_text() == self._token:
                    claim.unlink()

    def close(self) -> None:
        if self._token_fh is not None:
            self._token_fh.close()
            (self.holders / self._token).unlink(missing_ok=True)
            self._token, self._token_fh = None, None


class TraceCache:
    """The workspace store over the machine store, with the machine's claims."""

    def __init__(self, folder: str | Path, shared: str | Path | None = None):
        self.local = ResponseStore(folder)
        self.shared = ResponseStore(shared or response_store())
        self.claims = Claims(self.shared.folder)
        self._legacy: dict[str, dict] | None = None
        self.memory: dict[str, dict] = {}  # a free backend's responses: this run's only (never stored)

    def get(self, key: str, legacy: str = "", adopt: bool = True) -> dict | None:
        """The stored response (the workspace's first). With `adopt`, one that only the machine store or an
        earlier version's store holds is copied into the workspace store, so the workspace keeps every
        response it used (a dry run adopts nothing: it writes nothing)."""
        record = self.memory.get(key) or self.local.get(key)
        if record is not None:
            return record
        record = self.shared.get(key) or self._from_legacy(key, legacy, adopt)
        if record is not None and adopt:
            self.local.put(record)
        return record

    def _from_legacy(self, key: str, legacy: str, adopt: bool) -> dict | None:
        if not legacy:
            return None
        if self._legacy is None:
            self._legacy = {**self.shared.convert_legacy(), **self.local.convert_legacy()}
        found = self._legacy.get(legacy)
        if found is None:
            return None
        record = {**found, "key": key}
        if adopt:
            self.shared.put(record)
        return record

    def put(self, record: dict) -> None:
        """Store one response in both stores before returning."""
        self.local.put(record)
        self.shared.put(record)

    def close(self) -> None:
        self.claims.close()

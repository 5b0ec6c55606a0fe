"""One way to read a Hugging Face dataset split, with one-line errors (offline misses, unknown revisions)."""

from __future__ import annotations

from pathlib import Path

from caft.errors import CaftError


def load_split(repo: str, config: str | None, revision: str | None, split: str, what: str = ""):
    """`datasets.load_dataset` of one split (from the hub, its local cache, or a local folder laid out as the hub
    repo); any failure becomes one CaftError line naming the dataset."""
    import datasets

    # A local folder is read afresh: `datasets` keys its cache of one by the folder's name, and would hand back
    # the rows it read before an edit.
    fresh = {"download_mode": "force_redownload", "verification_mode": "no_checks"} if Path(repo).is_dir() else {}
    try:
        return datasets.load_dataset(repo, config, revision=revision, split=split, **fresh)
    except Exception as exc:  # the hub raises many types (connection, offline mode, missing revision)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        label = " ".join(x for x in (what, repo + (f" ({config})" if config else "")) if x)
        at = f"@{revision}" if revision else ""
        raise CaftError(f"could not load {label}{at} split {split!r} from the Hugging Face Hub: {first}") from None

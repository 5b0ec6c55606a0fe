"""One way to read a Hugging Face dataset split, with one-line errors (offline misses, unknown revisions)."""

from __future__ import annotations

from caft.errors import CaftError


def load_split(repo: str, config: str | None, revision: str | None, split: str, what: str = ""):
    """`datasets.load_dataset` of one split (from the hub, its local cache, or a local folder laid out as the hub
    repo); any failure becomes one CaftError line naming the dataset."""
    import datasets

    try:
        return datasets.load_dataset(repo, config, revision=revision, split=split)
    except Exception as exc:  # the hub raises many types (connection, offline mode, missing revision)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        label = " ".join(x for x in (what, repo + (f" ({config})" if config else "")) if x)
        at = f"@{revision}" if revision else ""
        raise CaftError(f"could not load {label}{at} split {split!r} from the Hugging Face Hub: {first}") from None

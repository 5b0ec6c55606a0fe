"""Stage `train`: one student × one strategy. Run under `accelerate launch` (see dvc.yaml)."""

import hashlib
import json
import os
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from caft import epochs, reestimate, strategies, train
from caft.cli import stage
from caft.epochs import EpochEval
from caft.faults import kill_point
from caft.io import atomic_path, write_json, write_table
from caft.models import load_tokenizer, resolve, weights
from caft.params import load_params


def _end(live, folder: Path) -> dict:
    """Close a dvclive run and return its summary: the summary would sit among the curve files of the plots
    folder, and belongs with the metrics."""
    live.end()
    summary_file = folder / "metrics.json"
    summary = json.loads(summary_file.read_text()) if summary_file.exists() else {}
    summary_file.unlink(missing_ok=True)
    return summary


@stage
def main(
    student: Annotated[str, typer.Option(help="student key under params.yaml `models`")],
    strategy: Annotated[str, typer.Option(help="strategy name (see caft.strategies)")],
    seed: Annotated[int, typer.Option(help="the training seed (one of params.yaml `seeds`)")],
    sets: Annotated[Path, typer.Option(help="this strategy's training set (sets stage)")],
    card: Annotated[Path, typer.Option(help="its card (sets stage, .json): how its model is read, re-band settings")],
    out: Annotated[Path, typer.Option(help="final adapter / model folder (the only cached output)")],
    metrics: Annotated[Path, typer.Option(help="metrics JSON")],
    live_dir: Annotated[Path, typer.Option(help="dvclive folder for training curves")],
    run_log: Annotated[Path, typer.Option(help="what this run did: runtimes, the checkpoint it resumed from")],
    validation: Annotated[Path, typer.Option(help="the validation carve's questions (sets stage)")],
    epochs_out: Annotated[Path, typer.Option(help="per-epoch validation answers (eval.every_epoch)")],
    test: Annotated[Path, typer.Option(help="prepare's test questions (asked per epoch: eval.every_epoch_test)")],
    checkpoints: Annotated[Path, typer.Option(help="resumable checkpoints (not cached)")] = Path(".caft/checkpoints"),
    params: Annotated[Path, typer.Option()] = Path("params.yaml"),
) -> None:
    from dvclive import Live

    p = load_params(params)
    table = pd.read_parquet(sets)
    card_data = json.loads(card.read_text())
    digest = hashlib.sha256(sets.read_bytes()).hexdigest()
    setup = train.Setup(p.model(student), strategy, p, digest, seed, reband=card_data["reband"])
    ckpt_root = checkpoints / student / strategy / str(seed) / setup.fingerprint()
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))  # set by the launcher
    main_process = rank == 0
    # a fresh curve folder every run: steps trained before a kill are replayed from the checkpoints, once
    live = Live(str(live_dir), resume=False, dvcyaml=None, save_dvc_exp=False) if main_process else None
    card_reading = card_data["reading"]
    epoch_eval = None
    if p.eval.every_epoch:  # every process answers its share (caft.epochs); a vLLM engine serves one process
        vllm = None
        if main_process:
            base, lora_rank = resolve(setup.spec), p.train.lora.r if p.train.lora.enabled else None
            vllm = epochs.engine(p.eval, base.location, base.revision, lora_rank, world)
        epoch_eval = EpochEval(
            pd.read_parquet(validation),
            card_reading,
            p.eval,
            load_tokenizer(setup.spec),
            ckpt_root,
            keep_best=p.eval.select == "best",
            live=live,
            test=pd.read_parquet(test) if p.eval.every_epoch_test else None,
            vllm=vllm,
            rank=rank,
            world=world,
        )
    model, tokenizer, phases = train.run(setup, table, ckpt_root, live=live, epoch_eval=epoch_eval)
    train.leave_process_group()
    if not main_process:
        return
    live_summary = _end(live, live_dir)
    write_table(epoch_eval.records if epoch_eval is not None else epochs.empty(), epochs_out)
    chosen = train.selection(p, epoch_eval, p.train.epochs[strategy])
    moved = reestimate.load(ckpt_root, [k for k, ph in enumerate(strategies.get(strategy).phases) if ph.reband])
    kill_point("train:save")
    with atomic_path(out, directory=True) as tmp:
        train.save(model, tokenizer, setup, tmp, card_reading, phases, chosen)
        for k, moves in moved.items():  # how the hard band moved, beside the model it describes
            moves.to_parquet(tmp / reestimate.file_name(k), index=False)
    table = reestimate.trained(table, moved)
    summary = {
        "n_items": int(table.loc[table["subset"] == "train", "question_id"].nunique()),
        "n_answer_items": int(((table["kind"] == "answer") & (table["subset"] == "train")).sum()),
        "n_cot_items": int(((table["kind"] == "cot") & (table["subset"] == "train")).sum()),
        **train.target_tokens(tokenizer, table[table["subset"] == "train"], p.train.epochs[strategy]),
        **{f"phase{k}_rebanded_{key}": v for k, moves in moved.items() for key, v in reestimate.summary(moves).items()},
        **{f"phase{r['phase']}_{k}": r[k] for r in phases for k in ("n", "epochs", "steps", "train_loss")},
        "trainable_params": sum(t.numel() for t in model.parameters() if t.requires_grad),
        "base_weights": weights(setup.spec, model),
        "final_train_loss": live_summary.get("train", {}).get("loss"),
        "final_eval_loss": live_summary.get("eval", {}).get("loss"),
        **chosen,
    }
    write_json(summary, metrics)
    # not metrics: they differ between two runs of the same params
    write_json({f"phase{r['phase']}_{k}": r[k] for r in phases for k in ("runtime_s", "resumed_from")}, run_log)
    train.clear_checkpoints(ckpt_root)
    typer.echo(f"train[{student}/{strategy}/{seed}]: {json.dumps({k: summary[k] for k in list(summary)[:6]})}")


if __name__ == "__main__":
    typer.run(main)

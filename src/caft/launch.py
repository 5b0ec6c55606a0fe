"""`accelerate launch`, as the train stage runs it, minus one notice and the launcher's own traceback.

On a CPU without `OMP_NUM_THREADS`, accelerate picks threads per process = physical cores / processes (what
we want) and says so on every launch ("`--num_cpu_threads_per_process` was set to ..."); the value cannot be
given in an accelerate config file, and passing it on the command line would fix a core count into dvc.yaml.
This filter drops exactly that notice when it is the only default the launcher reports; any other default
accelerate fills in is still shown.

The launcher runs the training script as a child process and raises a traceback of its own when the child
fails, under the child's one-line error; a Ctrl-C reaches both, and the launcher's KeyboardInterrupt would
end it while the child is still putting DVC's outputs back. Here the child alone answers a Ctrl-C, and the
launcher exits with the child's status (128 + the signal, named in one line, for a child killed by one).
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
from pathlib import Path

import yaml

from caft.cli import child_answers_ctrl_c
from caft.errors import CaftError

THREADS_NOTICE = "`--num_cpu_threads_per_process` was set to"
# accelerate's distributed types that split the weights across processes. The train stage saves each phase's model
# on the main process alone, and each process answers its own share of the per-epoch validation with its own copy
# of the model: a sharded model can do neither (each full state dict, and each forward, gathers from every process
# in step, while the shares' generations differ in length), so such a run would hang at its first epoch end or
# save, after the GPU time was spent.
SHARDED = {"FSDP": "FSDP", "DEEPSPEED": "DeepSpeed", "MEGATRON_LM": "Megatron-LM"}


def check_config(path: Path) -> None:
    """Refuse, before any stage runs, an accelerate config the train stage cannot run under."""
    if not path.is_file():
        raise CaftError(f"train.accelerate_config: {path} is not a file")
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise CaftError(f"train.accelerate_config: {path} is not valid YAML: {exc}") from None
    kind = config.get("distributed_type") if isinstance(config, dict) else None
    if kind in SHARDED:
        raise CaftError(
            f"train.accelerate_config: {path} shards the weights across processes ({SHARDED[kind]}); caft saves the "
            "model on the main process alone and answers the per-epoch validation with each process's own copy, which "
            "needs every weight in each: use a data-parallel config (configs/accelerate/ddp.yaml)"
        )


class OnlyThreadsNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        defaults = [line for line in record.getMessage().splitlines() if line.startswith("\t")]
        return not (defaults and all(THREADS_NOTICE in line for line in defaults))


def main() -> None:
    from accelerate.commands.launch import launch_command, launch_command_parser, logger

    logger.addFilter(OnlyThreadsNotice())
    try:
        with child_answers_ctrl_c():
            launch_command(launch_command_parser().parse_args(sys.argv[1:]))
    except KeyboardInterrupt:  # the Ctrl-C came after the child's last step: its run is done, and DVC records it
        return
    except subprocess.CalledProcessError as exc:
        if exc.returncode < 0:  # killed by a signal (an out-of-memory kill, say): the child could not say so
            name = signal.Signals(-exc.returncode).name
            print(f"caft: the training process was killed by {name}", file=sys.stderr)
            raise SystemExit(128 - exc.returncode) from None
        raise SystemExit(exc.returncode) from None


if __name__ == "__main__":
    main()

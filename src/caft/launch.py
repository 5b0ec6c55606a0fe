"""`accelerate launch`, as the train stage runs it, minus one notice.

On a CPU without `OMP_NUM_THREADS`, accelerate picks threads per process = physical cores / processes (what
we want) and says so on every launch ("`--num_cpu_threads_per_process` was set to ..."); the value cannot be
given in an accelerate config file, and passing it on the command line would fix a core count into dvc.yaml.
This filter drops exactly that notice when it is the only default the launcher reports; any other default
accelerate fills in is still shown.
"""

from __future__ import annotations

import logging
import sys

THREADS_NOTICE = "`--num_cpu_threads_per_process` was set to"


class OnlyThreadsNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        defaults = [line for line in record.getMessage().splitlines() if line.startswith("\t")]
        return not (defaults and all(THREADS_NOTICE in line for line in defaults))


def main() -> None:
    from accelerate.commands.launch import launch_command, launch_command_parser, logger

    logger.addFilter(OnlyThreadsNotice())
    launch_command(launch_command_parser().parse_args(sys.argv[1:]))


if __name__ == "__main__":
    main()

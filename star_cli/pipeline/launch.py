"""`star upscale --gpus 0,1,2,3` (or `--devices cpu,cpu`): one worker per device, started by torch.distributed.run.

The workers run the very same command (`python -m star_cli` with the same arguments)
under PyTorch's elastic launcher, the one `torchrun --standalone` runs; each worker
finds its device as entry LOCAL_RANK of the list. The launcher's own reporting is
replaced by one line: workers report their errors themselves (rank 0 for the run),
so the launcher only speaks for a worker that could not: one killed by a signal.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.console import Console

from star_cli.errors import ReportedElsewhere, StarError
from star_cli.pipeline.claims import RERUN_HINT
from star_cli.pipeline.request import UpscaleRequest

if TYPE_CHECKING:  # imported where launching, to keep torch.distributed off the CLI's import path
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

MONITOR_INTERVAL = 0.5
"""Seconds between the launcher's looks at its workers: how soon a dead worker stops the others."""


def must_launch(request: UpscaleRequest) -> bool:
    """True for a plain `star upscale` call listing several devices (not a launched worker, not a dry run).

    A single device needs no launcher: that run simply uses it (see `upscale.run_upscale`).
    """
    return len(request.devices) > 1 and not launched() and not request.dry_run


def launched() -> bool:
    """Whether a launcher (torchrun, accelerate, ours) started this process: it then never launches again."""
    return "RANK" in os.environ


def launcher_arguments(argv: Sequence[str], workers: int) -> list[str]:
    """torch.distributed.run's command line for `workers` copies of `python -m star_cli ARGV`."""
    return ["--standalone", "--nproc-per-node", str(workers), "--monitor-interval", str(MONITOR_INTERVAL),
            "-m", "star_cli", *argv]


def launch_workers(argv: Sequence[str], request: UpscaleRequest, console: Console) -> None:
    """Run one worker per device of `request.devices`; a failed worker becomes the exit code (and a line if needed)."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    if not request.verbose:  # torch's elastic modules set their loggers' levels themselves: quiet each one
        for name in list(logging.root.manager.loggerDict):
            if name.startswith("torch.distributed"):
                logging.getLogger(name).setLevel(logging.CRITICAL)
    if not request.quiet:
        console.print(f"starting {len(request.devices)} workers on {', '.join(request.devices)}")
    try:
        run(parse_args(launcher_arguments(argv, len(request.devices))))
    except ChildFailedError as error:
        raise _worker_failure(error) from None
    except SignalException as error:
        # The launcher passed the signal on to every worker, and rank 0 reports the interruption.
        raise ReportedElsewhere(130 if error.sigval == signal.SIGINT else 128 + int(error.sigval)) from None


def _worker_failure(error: ChildFailedError) -> StarError:
    """One line for a worker killed by a signal; the exit code of one that reported its own error."""
    rank, failure = error.get_first_failure()
    if failure.exitcode >= 0:
        return ReportedElsewhere(failure.exitcode)
    try:
        name = signal.Signals(-failure.exitcode).name
    except ValueError:
        name = f"signal {-failure.exitcode}"
    return StarError(f"rank {rank} (pid {failure.pid}) was killed by {name}; {RERUN_HINT}")

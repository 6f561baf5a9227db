"""The process group of a multi-process `star upscale`: start it, agree, share small values, stop.

Only small host-side values cross the process group (errors, plan digests, the run
id): the frames go through the shared work folder, so the group is gloo on every
device. NCCL would put each of these values on a GPU and reserve memory there for
nothing. Collectives happen only where every rank arrives at once (start-up and the
end); waiting for work is done on the shared folder, with heartbeats (see claims.py).
"""

from __future__ import annotations

import signal
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from typing import TypeVar

import torch
import torch.distributed as dist

from star_cli.errors import InputError, ReportedElsewhere, StarError
from star_cli.pipeline.ranks import Ranks
from star_cli.pipeline.request import UpscaleRequest

T = TypeVar("T")

GROUP_TIMEOUT = timedelta(minutes=30)
"""How long a collective may wait for a rank: they all arrive together, so only a hung rank lasts this long."""


class Stopped(BaseException):
    """SIGTERM from the launcher (another rank failed, or the run was cancelled); unwinds like Ctrl-C."""


def _raise_stopped(signum: int, frame: object) -> None:
    raise Stopped


def start(ranks: Ranks) -> None:
    """Join the process group (gloo) and turn the launcher's SIGTERM into a clean unwinding."""
    if not ranks.distributed:
        return
    signal.signal(signal.SIGTERM, _raise_stopped)
    if dist.is_initialized():
        return
    try:
        dist.init_process_group("gloo", timeout=GROUP_TIMEOUT)
    except (RuntimeError, ValueError) as error:
        raise StarError(f"rank {ranks.rank} could not join the other ranks: {error}") from None


def stop(ranks: Ranks) -> None:
    """Leave the process group (the launcher's processes then exit on their own)."""
    if ranks.distributed and dist.is_initialized():
        dist.destroy_process_group()


def _collective(ranks: Ranks, call: Callable[[], None]) -> None:
    """Run one collective; a rank that vanished mid-way (its socket closed) becomes one line, not a traceback."""
    try:
        call()
    except RuntimeError as error:
        raise StarError(f"rank {ranks.rank} lost contact with the other ranks (one of them stopped?): {error}") from None


def gather(ranks: Ranks, value: T) -> list[T]:
    """Every rank's `value`, in rank order, on every rank."""
    if not ranks.distributed:
        return [value]
    values: list = [None] * ranks.world
    _collective(ranks, lambda: dist.all_gather_object(values, value))
    return values


def broadcast(ranks: Ranks, value: T) -> T:
    """Rank 0's `value` on every rank."""
    if not ranks.distributed:
        return value
    box = [value]
    _collective(ranks, lambda: dist.broadcast_object_list(box, src=0))
    return box[0]


def barrier(ranks: Ranks) -> None:
    if ranks.distributed:
        _collective(ranks, dist.barrier)


def agree(ranks: Ranks, action: Callable[[], T]) -> T:
    """Run `action` on every rank; where it failed on any, every rank fails with that error's exit code.

    Only rank 0 reports it (one line, naming the rank when it was another), so a bad
    input on 8 ranks reads as one error, and no rank goes on to load weights alone.
    """
    if not ranks.distributed:
        return action()
    result: T | None = None
    failure: tuple[int, str] | None = None
    try:
        result = action()
    except StarError as error:
        failure = (error.exit_code, str(error))
    failures = gather(ranks, failure)
    failed = next(((rank, f) for rank, f in enumerate(failures) if f is not None), None)
    if failed is None:
        return result  # type: ignore[return-value]
    rank, (code, message) = failed
    if not ranks.is_main:
        raise ReportedElsewhere(code)
    error = StarError(message if rank == 0 else f"rank {rank}: {message}")
    error.exit_code = code
    raise error


def new_run_id(ranks: Ranks) -> str:
    """One id for every rank of this run (rank 0 draws it); it marks this run's files in the shared folder."""
    return broadcast(ranks, uuid.uuid4().hex)


def rank_device(request: UpscaleRequest, ranks: Ranks) -> UpscaleRequest:
    """`request` with this rank's own device: its entry of --gpus/--devices, else GPU LOCAL_RANK where there are GPUs."""
    device = request.star.device
    if request.devices:
        if ranks.local_rank >= len(request.devices):
            raise InputError(
                f"local rank {ranks.local_rank} has no device: --gpus/--devices lists {len(request.devices)} "
                f"for {ranks.local_world} processes per machine"
            )
        device = request.devices[ranks.local_rank]
    elif ranks.distributed and device in ("auto", "cuda") and torch.cuda.is_available():
        count = torch.cuda.device_count()
        if ranks.local_rank >= count:
            raise InputError(f"local rank {ranks.local_rank} has no GPU of its own: {count} visible on this machine")
        device = f"cuda:{ranks.local_rank}"
    if device.startswith("cuda:"):
        index = int(device.split(":")[1])
        if not torch.cuda.is_available() or index >= torch.cuda.device_count():
            raise InputError(f"{device}: no such GPU on this machine")
        torch.cuda.set_device(index)  # anything that says plain "cuda" lands on this rank's GPU too
    return replace(request, star=replace(request.star, device=device))

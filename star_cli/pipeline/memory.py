"""The memory a request will need on the device it runs on, and the check before weights load.

`--dry-run` prints and the pre-flight check refuses with the same `Estimate`: the
precision the chosen device will run in and the parameter count of the weights
that will load (when they are on disk; the released models' otherwise).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from star_cli.families import get_family
from star_cli.hub.layout import resolve_weights_dir
from star_cli.pipeline.estimate import Estimate, check_fits
from star_cli.pipeline.plan import Plan
from star_cli.pipeline.request import StarSettings
from star_cli.pipeline.tiling import MemoryBudget

_DTYPE_BYTES = {"fp16": 2, "bf16": 2, "fp32": 4}


def host_memory_available() -> int | None:
    """Physical memory the OS can give us now (None where the OS does not say).

    Linux's MemAvailable counts the page cache the kernel would drop for us; free
    pages alone (the POSIX fallback) can be a small part of that on a machine that
    has just read large files, and would refuse runs that fit.
    """
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def run_device(star: StarSettings) -> str:
    """The device type the run will use: 'cpu', 'cuda' or 'mps'; a GPU that is not there is refused (InputError)
    here, before any file is read. torch is imported only to ask it (`auto`, cuda, mps)."""
    if star.device == "cpu":
        return "cpu"
    from star_cli.pipeline.engines.placement import resolve_device

    return resolve_device(star.device).type


def run_dtype_name(star: StarSettings, device: str) -> str:
    """The run's dtype as --dtype names it (what a resumed run must repeat): the family's half
    precision on accelerators, fp32 on the CPU, unless --dtype says."""
    if star.dtype is not None:
        return star.dtype
    return "fp32" if device == "cpu" else get_family(star.model).accelerator_dtype


def dtype_bytes(star: StarSettings, device: str) -> int:
    """Bytes per weight/activation of the run (`run_dtype_name`'s dtype)."""
    return _DTYPE_BYTES[run_dtype_name(star, device)]


def _model_params(star: StarSettings) -> int | None:
    return get_family(star.model).model_params(resolve_weights_dir(star.weights_dir), star.checkpoint)


def run_estimate(plan: Plan, star: StarSettings, device: str) -> Estimate:
    """The estimate of running `plan` with `star` on `device`: what --dry-run shows and the check uses."""
    family = get_family(star.model)
    return family.estimate(
        plan, dtype_bytes=dtype_bytes(star, device), offload=star.offload, vae_group=star.vae_group, model_params=_model_params(star)
    )


FreeMemory = tuple[int | None, int | None]
"""(free accelerator memory, available host memory) in bytes; None where the backend or the OS does not say."""


def least_free(figures: list[FreeMemory]) -> FreeMemory:
    """The smallest device and host figures of several processes' `free_memory` (None where none says).

    The ranks of a launched run plan `--tile-size auto` against this, so a GPU with less
    free memory (another card, a desktop on GPU 0) never makes them plan apart.
    """

    def least(values: list[int | None]) -> int | None:
        known = [v for v in values if v is not None]
        return min(known) if known else None

    return least([device for device, _ in figures]), least([host for _, host in figures])


def free_memory(device: str) -> FreeMemory:
    """What is free now on `device` (None on the CPU) and in the host."""
    return _device_memory(device), host_memory_available()


def memory_budget(star: StarSettings, device: str, free: FreeMemory | None = None) -> MemoryBudget:
    """The memory `--tile-size auto` plans against on `device`, and how the run will use it.

    `free`: `free_memory` measured before this run's models loaded (the estimate counts
    their weights); None measures it now, as `star upscale` does before loading them.
    """
    device_free, host_available = free_memory(device) if free is None else free
    return MemoryBudget(
        device_free,
        host_available,
        dtype_bytes(star, device),
        star.offload,
        star.vae_group,
        _model_params(star),
        star.model,
    )


def _device_memory(device: str) -> int | None:
    """Free accelerator memory (None: the CPU, or a backend that does not say)."""
    if device == "cpu":
        return None
    import torch

    from star_cli.pipeline.engines.placement import device_memory

    return device_memory(torch.device(device))


def check_memory(plans: Sequence[Plan], star: StarSettings, device: str, *, processes_here: int = 1) -> None:
    """Refuse, before any weights load, a run whose largest plan cannot fit (skipped where the OS does not say).

    `processes_here` ranks share this machine's host memory, each with its own device.
    """
    host = host_memory_available()
    if host is None:
        return
    host //= processes_here
    free = _device_memory(device)
    for plan in plans:
        check_fits(run_estimate(plan, star, device), host, free, dtype_bytes=dtype_bytes(star, device))


"""The memory a request will need on the device it runs on, and the check before weights load.

`--dry-run` prints and the pre-flight check refuses with the same `Estimate`: the
precision the chosen device will run in and the parameter count of the weights
that will load (when they are on disk; the released models' otherwise).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from star_cli.hub.layout import resolve_weights_dir, weights_parameters
from star_cli.pipeline.estimate import Estimate, check_fits, estimate
from star_cli.pipeline.plan import Plan
from star_cli.pipeline.request import StarSettings

_ACCELERATOR_DTYPE_BYTES = 2
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
    """The device type the run will use: 'cpu', 'cuda' or 'mps' (`auto` asks torch, so only then is it imported)."""
    if star.device != "auto":
        return star.device
    from star_cli.pipeline.engines.placement import resolve_device

    return resolve_device("auto").type


def dtype_bytes(star: StarSettings, device: str) -> int:
    """Bytes per weight/activation of the run: fp16 on accelerators, fp32 on the CPU, unless --dtype says."""
    if star.dtype is not None:
        return _DTYPE_BYTES[star.dtype]
    return 4 if device == "cpu" else _ACCELERATOR_DTYPE_BYTES


def run_estimate(plan: Plan, star: StarSettings, device: str) -> Estimate:
    """The estimate of running `plan` with `star` on `device`: what --dry-run shows and the check uses."""
    params = weights_parameters(resolve_weights_dir(star.weights_dir), star.checkpoint)
    sizes = {} if params is None else {"model_params": params}
    return estimate(plan, dtype_bytes=dtype_bytes(star, device), offload=star.offload, vae_group=star.vae_group, **sizes)


def _device_memory(device: str) -> int | None:
    """Free accelerator memory (None: the CPU, or a backend that does not say)."""
    if device == "cpu":
        return None
    import torch

    from star_cli.pipeline.engines.placement import device_memory

    return device_memory(torch.device(device))


def check_memory(plans: Sequence[Plan], star: StarSettings, device: str) -> None:
    """Refuse, before any weights load, a run whose largest plan cannot fit (skipped where the OS does not say)."""
    host = host_memory_available()
    if host is None:
        return
    free = _device_memory(device)
    for plan in plans:
        check_fits(run_estimate(plan, star, device), host, free, dtype_bytes=dtype_bytes(star, device))


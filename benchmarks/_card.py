"""The card under test: its peak, clocks for timing, its memory and the host's.

Timings synchronise the device first (kernels run asynchronously); memory is torch's
allocator peak, what `star_cli.pipeline.estimate` predicts. On a CPU the device figures
are None: there is no separate device memory to measure.
"""

from __future__ import annotations

from pathlib import Path

import torch

# Dense (no sparsity) fp16/bf16 tensor-core peaks with fp32 accumulation, TFLOP/s, from the vendor
# data sheets; the first name contained in torch.cuda.get_device_name() wins (specific before general).
PEAK_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.4),
    ("H200", 989.4),
    ("A100", 312.0),
    ("L40S", 362.1),
    ("4090", 165.2),
    ("3090", 71.0),
)


def card_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"{device.type} (no accelerator)"


def card_peak(name: str, override: float | None) -> float | None:
    """The card's dense half-precision peak in TFLOP/s (`--peak-tflops` wins; None when unknown)."""
    if override is not None:
        return override
    return next((peak for key, peak in PEAK_TFLOPS if key in name), None)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def device_peak(device: torch.device) -> int | None:
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None


def host_rss() -> dict[str, int]:
    """Resident (VmRSS) and peak resident (VmHWM) bytes of this process (Linux; empty elsewhere)."""
    try:
        fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    except OSError:
        return {}
    return {name: int(fields[key].split()[0]) * 1024 for name, key in (("rss", "VmRSS"), ("peak_rss", "VmHWM"))}

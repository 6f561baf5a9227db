"""Where the STAR components live and in which precision: device, dtype and offload.

- `none`: every component on the execution device for the whole run.
- `model`: each component (text encoder, VAE, UNet) sits in host memory and moves to
  the device only while it works (accelerate's `cpu_offload_with_hook`); the peak is
  the largest component plus its activations.
- `sequential`: the UNet's weights are streamed to the device submodule by submodule
  (accelerate's `cpu_offload`); slowest, smallest peak. Text encoder and VAE as `model`.
Offloading moves weights, never changes arithmetic: outputs equal `none`'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from accelerate import cpu_offload, cpu_offload_with_hook

from star_cli.errors import InputError

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA, then MPS, then CPU; an explicit device must exist."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {name}: no CUDA device is available (use --device cpu or auto)")
    device = torch.device(name)
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise InputError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s), numbered from 0")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise InputError("--device mps: no Apple GPU is available (use --device cpu or auto)")
    return torch.device(name)


def resolve_dtype(name: str | None, device: torch.device, accelerator: str = "fp16") -> torch.dtype:
    """`accelerator` on accelerators by default (fp16: the reference runs the UNet in half precision), fp32 on CPU."""
    if name is None:
        return torch.float32 if device.type == "cpu" else DTYPES[accelerator]
    return DTYPES[name]


def device_memory(device: torch.device) -> int | None:
    """Free bytes on `device` (None when the backend does not say)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return None


@dataclass
class Placement:
    """Puts modules on the execution device according to the offload mode."""

    device: torch.device
    offload: str = "none"
    _hooks: dict[str, object] = field(default_factory=dict)

    def place(self, name: str, module: torch.nn.Module, *, streamable: bool = False) -> torch.nn.Module:
        """Register `module` (called once per component, after loading it on the CPU)."""
        if self.offload == "none":
            return module.to(self.device)
        if self.offload == "sequential" and streamable:
            return cpu_offload(module, execution_device=self.device)
        _, hook = cpu_offload_with_hook(module, execution_device=self.device)
        self._hooks[name] = hook
        return module

    def release(self, name: str) -> None:
        """Forget component `name` (e.g. the text encoder once the prompts are encoded) so it can be freed."""
        hook = self._hooks.pop(name, None)
        if hook is not None:
            hook.remove()

    def activate(self, name: str) -> None:
        """Before `name` works: send every other offloaded component back to the host."""
        for other, hook in self._hooks.items():
            if other != name:
                hook.offload()

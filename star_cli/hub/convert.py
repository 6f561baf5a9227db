"""STAR's published PyTorch pickles -> the fp16 safetensors inference memory-maps.

Safety: the pickle is read by `star_cli.models.loading.read_state_dict`, with
`weights_only=True`, so one that tries to run code is refused instead of executed.
As it ships: a `state_dict` wrapper and a uniform `module.` prefix are unwrapped; a
missing tensor or a wrong shape fails naming it; a few unexpected tensors (training
leftovers) are dropped with a warning (`fit_state_dict`).
Memory: that read is memory-mapped (`torch.load(mmap=True)`), so the float32 tensors
are paged in from disk as each is cast to fp16, never held twice. safetensors'
`save_file` takes a dict, so the fp16 copies are all alive while the file is written:
the peak is one fp16 copy of the model (about 4 GB at full size) plus page cache the
OS can drop (benchmarks/convert_memory.py measures it). The output carries the
model config (`star_config`, which the inference loader reads) and the source's sha256
(so a rerun can tell the conversion is already done).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from star_cli.errors import StarError
from star_cli.hub.layout import SOURCE_SHA256_KEY
from star_cli.models import STARUNet
from star_cli.models.loading import fit_state_dict, read_state_dict, save_star_state, star_config_of


def meta_model(config: Mapping[str, Any]) -> STARUNet:
    """STARUNet(**config) without memory, to compare names and shapes against."""
    try:
        with torch.device("meta"):
            return STARUNet(**config)
    except (TypeError, ValueError) as error:
        raise StarError(f"the weights sources' STAR config {dict(config)} does not build a model: {error}") from None


def _half(tensor: torch.Tensor) -> torch.Tensor:
    """fp16 for floating tensors; others copied as they are (safetensors refuses shared storage)."""
    return tensor.to(torch.float16).contiguous() if tensor.is_floating_point() else tensor.clone().contiguous()


def convert_star_checkpoint(src: Path, dest: Path, *, config: Mapping[str, Any], source_sha256: str) -> list[str]:
    """Write `src` (a STAR .pt) as fp16 safetensors at `dest`, after a check against the model.

    Returns the unexpected tensor names that were dropped (logged as a warning too).
    """
    state = read_state_dict(src)
    model = meta_model(config)
    built_from = dict(config) or "the full-size defaults"
    dropped = fit_state_dict(model, state, f"{src.name} does not fit the STAR model built from {built_from}")
    half = {}
    for name in list(state):
        half[name] = _half(state.pop(name))
    dest.parent.mkdir(parents=True, exist_ok=True)
    save_star_state(half, star_config_of(model), dest, metadata={"format": "pt", SOURCE_SHA256_KEY: source_sha256})
    return dropped

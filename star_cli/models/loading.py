"""Reading and writing STAR UNet weights (.safetensors, and the official .pt/.pth).

Weights are untrusted input: pickles are read with `weights_only=True`, so a
checkpoint that would run code when unpickled is refused instead of executed.
Both formats are memory-mapped where possible, the model is built on the meta
device, and tensors are cast one at a time and assigned in place, so loading
never holds two full copies of 2 billion parameters.

Checkpoints as they ship: a plain dict of tensors, possibly wrapped in `state_dict`
and/or carrying the `module.` prefix of a DataParallel/DDP save (both unwrapped). A
missing tensor or a wrong shape fails, naming them; a few unexpected tensors (the
reference loads non-strictly, and training leftovers such as
`VideoControlNet.scale_cond.*` exist) are dropped with a warning, while many of them
mean another model and fail.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

from star_cli.atomic import atomic_output
from star_cli.errors import StarError
from star_cli.models.config import STARConfig
from star_cli.models.unet import STARUNet

CONFIG_METADATA_KEY = "star_config"
_TORCH_SUFFIXES = (".pt", ".pth")
_NAMES_SHOWN = 5
_WRAPPER_PREFIX = "module."
MAX_DROPPED_TENSORS = 16
"""Unexpected tensors dropped with a warning; more than this (or more than MAX_DROPPED_SHARE
of the file's parameters) means the file holds another model, and loading fails."""
MAX_DROPPED_SHARE = 0.01

log = logging.getLogger(__name__)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def _read_torch_checkpoint(path: Path) -> Any:
    # mmap needs the zip container of torch >= 1.6; older pickles are read into memory.
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError:
        raise StarError(
            f"{path}: refused: the file is not a plain tensor checkpoint "
            "(unpickling it would run code or build arbitrary objects)"
        ) from None
    except Exception as error:  # torch raises many types for truncated or foreign files
        raise StarError(f"{path}: not a readable PyTorch checkpoint ({_first_line(error)})") from None


def read_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """Tensors of a weights file by name; a top-level `state_dict` wrapper is unwrapped.

    `.safetensors` are memory-mapped; `.pt`/`.pth` are unpickled with weights_only=True.
    Raises StarError for a missing, unreadable, unsafe or non-state-dict file.
    """
    path = Path(path)
    if not path.is_file():
        raise StarError(f"{path}: weights file not found")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        try:
            data: Any = load_file(path)
        except (SafetensorError, OSError) as error:
            raise StarError(f"{path}: not a readable safetensors file ({_first_line(error)})") from None
    elif suffix in _TORCH_SUFFIXES:
        data = _read_torch_checkpoint(path)
    else:
        raise StarError(f"{path}: unknown weights format {suffix!r} (expected .safetensors, .pt or .pth)")
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in data.items()
    ):
        raise StarError(f"{path}: not a state dict (expected a mapping of names to tensors)")
    if data and all(k.startswith(_WRAPPER_PREFIX) for k in data):
        return {k.removeprefix(_WRAPPER_PREFIX): v for k, v in data.items()}
    return dict(data)


def read_star_config(path: str | os.PathLike) -> STARConfig:
    """The config saved in a .safetensors file's `star_config` metadata, else the full-size default."""
    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        return STARConfig()
    try:
        with safe_open(path, framework="pt") as handle:
            raw = (handle.metadata() or {}).get(CONFIG_METADATA_KEY)
    except (SafetensorError, OSError) as error:
        raise StarError(f"{path}: not a readable safetensors file ({_first_line(error)})") from None
    if raw is None:
        return STARConfig()
    try:
        return STARConfig(**json.loads(raw))
    except (ValueError, TypeError) as error:
        raise StarError(f"{path}: invalid {CONFIG_METADATA_KEY} metadata ({_first_line(error)})") from None


def star_config_of(model: STARUNet) -> dict[str, Any]:
    """The keyword arguments that rebuild `model`'s architecture: `STARUNet(**star_config_of(m))`."""
    return model.config.to_dict()


def _names(keys: list[str]) -> str:
    shown = ", ".join(keys[:_NAMES_SHOWN])
    more = len(keys) - _NAMES_SHOWN
    return f"{shown}, and {more} more" if more > 0 else shown


@dataclass(frozen=True)
class KeyMismatch:
    """How a state dict differs from a model's: names only in the model, only in the file, or resized."""

    missing: list[str]
    unexpected: list[str]
    wrong_shape: list[str]

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.wrong_shape)

    def describe(self) -> str:
        parts = []
        if self.wrong_shape:
            parts.append(f"{len(self.wrong_shape)} with the wrong shape ({_names(self.wrong_shape)})")
        if self.missing:
            parts.append(f"{len(self.missing)} missing ({_names(self.missing)})")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected ({_names(self.unexpected)})")
        return "; ".join(parts)


def compare_keys(model: torch.nn.Module, state: dict[str, Tensor]) -> KeyMismatch:
    """Names and shapes only, so it works on a meta-device model without touching data."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    return KeyMismatch(
        missing=[k for k in expected if k not in state],
        unexpected=[k for k in state if k not in expected],
        wrong_shape=[
            f"{k}: {list(state[k].shape)} in file, {list(shape)} expected"
            for k, shape in expected.items()
            if k in state and tuple(state[k].shape) != shape
        ],
    )


def fit_state_dict(model: torch.nn.Module, state: dict[str, Tensor], what: str) -> list[str]:
    """Make `state` fit `model` exactly, in place: return the unexpected names it dropped.

    Missing tensors and wrong shapes raise StarError naming them (`what` says which file
    and model); up to MAX_DROPPED_TENSORS unexpected tensors holding at most
    MAX_DROPPED_SHARE of the parameters are dropped, more raise.
    """
    mismatch = compare_keys(model, state)
    if mismatch.missing or mismatch.wrong_shape:
        raise StarError(f"{what}: {mismatch.describe()}")
    dropped = mismatch.unexpected
    dropped_params = sum(state[k].numel() for k in dropped)
    total = sum(v.numel() for v in state.values())
    if len(dropped) > MAX_DROPPED_TENSORS or dropped_params > MAX_DROPPED_SHARE * total:
        raise StarError(f"{what}: {mismatch.describe()}")
    for key in dropped:
        del state[key]
    if dropped:
        log.warning("%s: ignoring %d unexpected tensors (%s)", what, len(dropped), _names(dropped))
    return dropped


def _cast_one_by_one(state: dict[str, Tensor], dtype: torch.dtype, device: torch.device) -> None:
    """Convert in place, dropping each source tensor as soon as its copy exists."""
    for key in list(state):
        tensor = state[key]
        state[key] = tensor.to(device=device, dtype=dtype if tensor.is_floating_point() else tensor.dtype)


def load_star_unet(
    path: str | os.PathLike,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    strict: bool = True,
) -> STARUNet:
    """Build a STARUNet for a weights file and load it, in eval mode.

    The architecture comes from the file's `star_config` metadata (full size when
    absent). Missing or wrongly shaped tensors raise StarError naming them, and so do
    many unexpected ones; a few unexpected ones are dropped with a warning
    (`fit_state_dict`). With strict=False, missing ones keep a fresh initialisation and
    any unexpected ones are ignored (shape mismatches still fail).
    """
    device = torch.device(device)
    config = read_star_config(path)
    state = read_state_dict(path)
    with torch.device("meta"):
        model = STARUNet(**config.to_dict())
    mismatch = compare_keys(model, state)
    if mismatch.wrong_shape:
        raise StarError(f"{path}: {_size_mismatch(config, path, mismatch.describe())}")
    if strict:
        fit_state_dict(model, state, f"{path}: weights do not fit the STAR UNet")
        mismatch = compare_keys(model, state)
    if mismatch:
        log.warning("%s: loading with strict=False: %s", path, mismatch.describe())
    for key in mismatch.unexpected:
        del state[key]
    if mismatch.missing:
        # Tensors the file lacks need real initial values: build the model for real.
        with torch.device(device):
            model = STARUNet(**config.to_dict()).to(dtype)
        model.load_state_dict(state, strict=False)
    else:
        _cast_one_by_one(state, dtype, device)
        model.load_state_dict(state, strict=True, assign=True)
    return model.eval()


def _size_mismatch(config: STARConfig, path: str | os.PathLike, found: str) -> str:
    """One line naming the model size that was expected (and from where) and what the file holds."""
    declared = Path(path).suffix.lower() == ".safetensors" and _has_config(path)
    source = "from its star_config metadata" if declared else "no star_config metadata, so the released full size"
    return (
        f"the weights are another model size than expected: expected dim={config.dim}, "
        f"dim_mult={list(config.dim_mult)}, context_dim={config.context_dim} ({source}); found {found}"
    )


def _has_config(path: str | os.PathLike) -> bool:
    with safe_open(path, framework="pt") as handle:
        return CONFIG_METADATA_KEY in (handle.metadata() or {})


def save_star_state(
    state: dict[str, Tensor],
    config: dict[str, Any],
    path: str | os.PathLike,
    *,
    dtype: torch.dtype | None = None,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write a STARUNet state dict (optionally cast) as .safetensors with `star_config` metadata, atomically.

    `metadata` adds entries (e.g. where the weights came from) beside `star_config`.
    """
    path = Path(path)
    tensors = {
        k: v.detach().to("cpu", dtype=dtype if dtype and v.is_floating_point() else v.dtype).contiguous()
        for k, v in state.items()
    }
    with atomic_output(path) as tmp:
        save_file(tensors, str(tmp), metadata={**(metadata or {}), CONFIG_METADATA_KEY: json.dumps(config)})
    return path


def save_star_unet(model: STARUNet, path: str | os.PathLike, *, dtype: torch.dtype | None = None) -> Path:
    """Write `model`'s weights (optionally cast) as .safetensors with its `star_config` metadata."""
    return save_star_state(model.state_dict(), star_config_of(model), path, dtype=dtype)


@contextmanager
def library_bars_off() -> Iterator[None]:
    """transformers' progress bars off while a model loads (restored after): a library's tqdm
    bar in the middle of `star`'s own progress, or a program's output, is noise."""
    from transformers.utils import logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if shown:
            hf_logging.enable_progress_bar()

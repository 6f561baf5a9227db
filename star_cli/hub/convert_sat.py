"""STAR's CogVideoX-5B checkpoint (SAT / DeepSpeed layout) -> one bf16 safetensors of the denoiser.

The release is `<iter>/mp_rank_00_model_states.pt`, a DeepSpeed model-states file whose
state dict sits under `module` in SAT names: the DiT (`model.diffusion_model.*`, LoRA
merged or not), and maybe the T5 conditioner (`conditioner.*`) and the VAE
(`first_stage_model.*`), which we take from the CogVideoX-5B release instead.

Safety: it is unpickled with `weights_only=True`. DeepSpeed and SAT also store run
state beside the weights (numpy RNG states, argparse namespaces); those few harmless
constructors are allowed by name, every other global is refused with its name.
Memory: the load is memory-mapped, and `models.cogvideox.sat.convert_sat_state_dict`
reads only the source tensors each output tensor needs, so the fp32 source is paged in
tensor by tensor; the bf16 output (about 11 GB at full size) is what is held.
The output carries the family config (`star_config`: diffusers kwargs and the native
frame size and clip length) and the source's sha256, like the I2VGen-XL conversion.
"""

from __future__ import annotations

import importlib
import json
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from star_cli.atomic import atomic_output
from star_cli.errors import StarError
from star_cli.hub.layout import SOURCE_SHA256_KEY, STAR_CONFIG_KEY
from star_cli.models.cogvideox.sat import convert_sat_state_dict

OUTPUT_DTYPE = torch.bfloat16
# Globals a DeepSpeed / SAT checkpoint may hold beside its tensors that only rebuild data:
# numpy arrays and dtypes (RNG states) and argparse namespaces (saved arguments).
_HARMLESS_GLOBALS = (
    "numpy.core.multiarray._reconstruct",
    "numpy._core.multiarray._reconstruct",
    "numpy.ndarray",
    "numpy.dtype",
    "argparse.Namespace",
)
_HARMLESS_PREFIXES = ("numpy.dtypes.",)


def _resolve_global(name: str) -> Any:
    module, _, attribute = name.rpartition(".")
    return getattr(importlib.import_module(module), attribute)


def _allowed_globals(path: Path) -> list[Any]:
    """The checkpoint's non-tensor globals if all are harmless; a StarError naming the first that is not."""
    names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    refused = [n for n in names if n not in _HARMLESS_GLOBALS and not n.startswith(_HARMLESS_PREFIXES)]
    if refused:
        raise StarError(f"{path}: refused: the checkpoint needs {refused[0]} to unpickle, which could run code")
    allowed = [_resolve_global(n) for n in names]
    if "numpy.dtype" in names:  # a pickled dtype rebuilds through its class, which the scan does not list
        import numpy.dtypes

        allowed += [getattr(numpy.dtypes, n) for n in dir(numpy.dtypes) if n.endswith("DType")]
    return allowed


def read_sat_state_dict(path: Path) -> Mapping[str, torch.Tensor]:
    """The SAT state dict of a DeepSpeed model-states file (`module`), memory-mapped, weights only."""
    if not zipfile.is_zipfile(path):
        raise StarError(f"{path}: not a PyTorch zip checkpoint (a DeepSpeed model-states .pt is expected)")
    try:
        with torch.serialization.safe_globals(_allowed_globals(path)):
            data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as error:
        raise StarError(f"{path}: refused: {str(error).splitlines()[0]}") from None
    except (RuntimeError, OSError, EOFError, ValueError) as error:
        raise StarError(f"{path}: not a readable PyTorch checkpoint ({type(error).__name__}: {error})") from None
    for key in ("module", "state_dict"):
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
            break
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise StarError(f"{path}: no state dict under `module` (is this a DeepSpeed mp_rank_00_model_states.pt?)")
    return data


def convert_sat_checkpoint(src: Path, dest: Path, *, config: Mapping[str, Any], source_sha256: str) -> None:
    """Write the DiT of `src` (SAT names, LoRA merged on the way) as bf16 safetensors at `dest`.

    `config` is the weights sources' table: `diffusers` (CogVideoXTransformer3DModel kwargs)
    and `native` (height, width, frames). A missing DiT key fails naming it, before writing.
    """
    if not {"diffusers", "native"} <= config.keys():
        raise StarError("the weights sources' cogvideox config needs `diffusers` and `native` tables")
    state = read_sat_state_dict(src)
    tensors = {name: tensor.to(OUTPUT_DTYPE).contiguous() for name, tensor in convert_sat_state_dict(state)}
    metadata = {
        "format": "pt",
        STAR_CONFIG_KEY: json.dumps({"diffusers": dict(config["diffusers"]), "native": dict(config["native"])}),
        SOURCE_SHA256_KEY: source_sha256,
    }
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(dest) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)

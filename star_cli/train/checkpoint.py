"""Weights in and out of training: the starting checkpoint, what trains, and resumable state.

- `load_initial_model`: a STAR or VEnhancer checkpoint with a strict key check; the only
  tensors allowed to be missing are the LIEM gates (VEnhancer has none), which keep
  their fresh initialisation and are reported by name.
- `select_trainable`: everything under the ControlNet plus every LIEM gate, as the
  paper and the reference script train; all other weights are frozen.
- A checkpoint folder `checkpoints/step-00000500/` holds the trainable weights
  (safetensors, float32), optimizer, scheduler, EMA and per-process RNG state, the
  data position and a full UNet + ControlNet export (`unet.safetensors`, with its
  `star_config` metadata) that `star upscale --checkpoint PATH` loads directly.
  Folders are written under a temporary name and renamed, so a crash never leaves
  a half checkpoint that `--resume latest` would pick.
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from star_cli.errors import InputError, StarError
from star_cli.hub.layout import TRAIN_CHECKPOINTS, TRAIN_EXPORT
from star_cli.models import STARUNet
from star_cli.models.loading import (
    compare_keys,
    load_star_unet,
    read_star_config,
    read_state_dict,
    save_star_state,
)
from star_cli.train.data import DataPosition

CONTROLNET_PREFIX = "VideoControlNet."
LIEM_MODULES = ("local1", "local2")  # the checkpoints' names of the spatial / temporal LIEM gates
CHECKPOINTS = TRAIN_CHECKPOINTS
EXPORT_NAME = TRAIN_EXPORT
_PREFIX = "step-"


def is_liem(name: str) -> bool:
    return any(part in LIEM_MODULES for part in name.split("."))


def is_trainable(name: str) -> bool:
    return name.startswith(CONTROLNET_PREFIX) or is_liem(name)


def select_trainable(model: nn.Module) -> list[str]:
    """Freeze everything except the ControlNet and the LIEMs; return the trainable names (sorted)."""
    names = []
    for name, param in model.named_parameters():
        param.requires_grad_(is_trainable(name))
        if param.requires_grad:
            names.append(name)
    return sorted(names)


def load_initial_model(path: Path, *, device: torch.device, dtype: torch.dtype = torch.float32) -> tuple[STARUNet, list[str]]:
    """The model to fine-tune and the LIEM tensors the checkpoint lacked (freshly initialised)."""
    state = read_state_dict(path)
    with torch.device("meta"):
        probe_model = STARUNet(**read_star_config(path).to_dict())
    mismatch = compare_keys(probe_model, state)
    del state
    missing_other = [k for k in mismatch.missing if not is_liem(k)]
    if mismatch.unexpected or mismatch.wrong_shape or missing_other:
        bad = mismatch.wrong_shape or mismatch.unexpected or missing_other
        raise InputError(f"{path}: not a STAR/VEnhancer checkpoint for this model: {len(bad)} tensors do not fit "
                         f"(first: {bad[0]})")
    model = load_star_unet(path, dtype=dtype, device=device, strict=not mismatch.missing)
    return model, sorted(mismatch.missing)


# ----------------------------------------------------------------------------- state files


@dataclass(frozen=True)
class TrainState:
    step: int
    epoch: int
    position: int
    world_size: int


def rng_state(generator: torch.Generator) -> dict[str, object]:
    """Every random state a step can touch: Python, NumPy, torch (CPU and CUDA) and our generator.

    Only tensors and plain Python values, so it reloads with `weights_only=True`.
    """
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "generator": generator.get_state(),
    }


def restore_rng(state: dict[str, object], generator: torch.Generator) -> None:
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    generator.set_state(state["generator"])


def checkpoint_dir(output_dir: Path, step: int) -> Path:
    return Path(output_dir) / CHECKPOINTS / f"{_PREFIX}{step:08d}"


def list_checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoint folders, oldest first."""
    root = Path(output_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(_PREFIX) and (p / "state.json").is_file()]
    return sorted(found, key=lambda p: p.name)


def find_checkpoint(output_dir: Path, resume: str) -> Path:
    """`latest` (the newest in output_dir) or an explicit checkpoint folder."""
    if resume == "latest":
        found = list_checkpoints(output_dir)
        if not found:
            raise InputError(f"--resume latest: no checkpoint in {Path(output_dir) / CHECKPOINTS}")
        return found[-1]
    path = Path(resume)
    if not (path / "state.json").is_file():
        raise InputError(f"--resume {resume}: not a checkpoint folder (no state.json)")
    return path


def write_rng(folder: Path, rank: int, generator: torch.Generator) -> None:
    torch.save(rng_state(generator), folder / f"rng-{rank}.pt")


def write_checkpoint(tmp: Path, *, full_state: dict[str, Tensor], export: dict[str, Tensor], trainable: list[str],
                     model_config: dict[str, object], optimizer: dict, scheduler: dict, ema: dict | None,
                     state: TrainState) -> None:
    """Everything but the per-process RNG files into `tmp` (main process only).

    `full_state` holds the raw weights (resume continues from them); `export` the
    weights for inference (the EMA's when there is one), saved in float16 like the
    official checkpoints.
    """
    save_file({k: full_state[k].detach().float().cpu().contiguous() for k in trainable}, str(tmp / "trainable.safetensors"))
    save_star_state(export, model_config, tmp / EXPORT_NAME, dtype=torch.float16)
    torch.save(optimizer, tmp / "optimizer.pt")
    torch.save(scheduler, tmp / "scheduler.pt")
    if ema is not None:
        torch.save(ema, tmp / "ema.pt")
    (tmp / "state.json").write_text(json.dumps(asdict(state), indent=2) + "\n", encoding="utf-8")


def staging_dir(output_dir: Path, step: int) -> Path:
    """The temporary folder a checkpoint is written to; `publish` renames it into place."""
    final = checkpoint_dir(output_dir, step)
    return final.with_name(f".{final.name}.partial")


def reset_dir(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)


def publish(tmp: Path, output_dir: Path, step: int, keep: int) -> Path:
    """Rename the staged folder into place and delete all but the newest `keep` (0 = keep all)."""
    final = checkpoint_dir(output_dir, step)
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    if keep:
        for old in list_checkpoints(output_dir)[:-keep]:
            shutil.rmtree(old)
    return final


@dataclass
class LoadedCheckpoint:
    state: TrainState
    trainable: dict[str, Tensor]
    optimizer: dict
    scheduler: dict
    ema: dict | None
    rng: dict[str, object]

    @property
    def position(self) -> DataPosition:
        return DataPosition(self.state.epoch, self.state.position)


def read_checkpoint(folder: Path, rank: int, world_size: int) -> LoadedCheckpoint:
    """Load a checkpoint folder for process `rank`; InputError if it was written by another world size."""
    try:
        state = TrainState(**json.loads((folder / "state.json").read_text(encoding="utf-8")))
        if state.world_size != world_size:
            raise InputError(f"{folder}: written by {state.world_size} processes; resume with the same number "
                             f"(now {world_size}) so the data order continues exactly")
        ema_path = folder / "ema.pt"
        return LoadedCheckpoint(
            state=state,
            trainable=load_file(folder / "trainable.safetensors"),
            optimizer=torch.load(folder / "optimizer.pt", map_location="cpu", weights_only=True),
            scheduler=torch.load(folder / "scheduler.pt", map_location="cpu", weights_only=True),
            ema=torch.load(ema_path, map_location="cpu", weights_only=True) if ema_path.is_file() else None,
            rng=torch.load(folder / f"rng-{rank}.pt", map_location="cpu", weights_only=True),
        )
    except (OSError, ValueError, TypeError, KeyError, RuntimeError) as error:
        raise StarError(f"{folder}: unreadable checkpoint ({error})") from None

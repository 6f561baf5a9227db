"""The CogVideoX family's config, read from its weights folder without torch.

The converted denoiser (`cogvideox/transformer.safetensors`, or a `--checkpoint` file)
carries its config in the safetensors metadata `star_config`: the diffusers keyword
arguments of the transformer and the native frame size and clip length the model was
trained on. The planner's tiles and chunks follow the native size exactly, so tiny test
weights that declare 64x96 and 9 frames plan (and run) small, while the release's
480x720 and 25 frames are used when no weights are there yet (`--dry-run`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from star_cli.errors import InputError, StarError
from star_cli.hub.layout import (
    COGVIDEOX_DENOISER,
    COGVIDEOX_VARIANT,
    STAR_CONFIG_KEY,
    is_cogvideox_config,
    read_star_config_json,
    resolve_weights_dir,
)

TEMPORAL_COMPRESSION = 4  # the CogVideoX VAE: the first frame alone, then 4 frames per latent frame


@dataclass(frozen=True)
class NativeSize:
    """The frame size (pixels) and clip length the denoiser was trained on."""

    height: int
    width: int
    frames: int

    @property
    def latent_frames(self) -> int:
        return (self.frames - 1) // TEMPORAL_COMPRESSION + 1


RELEASE = NativeSize(480, 720, 25)


def denoiser_path(weights_dir: Path | None, checkpoint: str | None) -> Path:
    """The denoiser file of a run: the folder's converted release, or a `--checkpoint` file."""
    if checkpoint in (None, COGVIDEOX_VARIANT):
        return resolve_weights_dir(weights_dir) / COGVIDEOX_DENOISER
    return Path(checkpoint).expanduser()


def read_config(path: Path) -> dict[str, Any] | None:
    """The `star_config` of a converted denoiser (None when the file is absent or carries none).

    An I2VGen-XL STAR checkpoint (its config holds UNet arguments) is refused naming the
    option that runs it; a malformed CogVideoX config is refused as such.
    """
    config = read_star_config_json(path)
    if config is None:
        return None
    if not is_cogvideox_config(config):
        raise InputError(f"{path} is a STAR I2VGen-XL checkpoint, not a CogVideoX one: run it with --model i2vgenxl")
    try:
        native = config["native"]
        config["native"] = NativeSize(int(native["height"]), int(native["width"]), int(native["frames"]))
        dict(config["diffusers"])
    except (ValueError, KeyError, TypeError) as error:
        raise StarError(f"{path}: its {STAR_CONFIG_KEY} metadata is not a valid CogVideoX config ({error})") from None
    return config


def native_size(weights_dir: Path | None, checkpoint: str | None) -> NativeSize:
    """The native size declared by the run's denoiser, else the release's."""
    config = read_config(denoiser_path(weights_dir, checkpoint))
    return RELEASE if config is None else config["native"]

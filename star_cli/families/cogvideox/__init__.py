"""The CogVideoX family: STAR's DiT on CogVideoX-5B, its 3D VAE and T5-XXL text (the paper's best model).

The model was trained on one frame size and one clip length (480x720, 25 frames for the
release; read from the weights folder, see `config`), so the plan's tiles are exactly
that frame (smaller outputs are padded up to it) and its chunks exactly that clip
(shorter shots are padded in time), one chunk per window; windows are cross-faded after
decoding, tiles feathered in latent space at every sampling step. Its engine
(`engine.py`) is imported only when a run loads the weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from star_cli.errors import InputError
from star_cli.families.base import FamilyDefaults, FamilyEngine
from star_cli.families.cogvideox.config import denoiser_path, native_size
from star_cli.families.cogvideox.costs import CogVideoXEstimate, estimate
from star_cli.hub.layout import COGVIDEOX_DIR, COGVIDEOX_VARIANT, WeightsPaths, safetensors_parameters
from star_cli.pipeline.events import ProgressCallback
from star_cli.pipeline.grid import DIT_GRID
from star_cli.pipeline.plan import VAE_FACTOR, Plan
from star_cli.pipeline.request import StarSettings, parse_size

STEPS = 50  # the reference's sampler
GUIDANCE = 6.0  # the reference's dynamic CFG scale
SOLVER = "dpmpp_2m_sde"


def _overlap(length: int) -> int:
    """A third of a native span, in whole latent pixels for tiles (25 frames: 8; 480 px: 160)."""
    return length // 3


class CogVideoXFamily:
    """STAR on CogVideoX-5B: native-size tiles and clips, 50-step VP DPM-Solver++(2M) SDE, bf16 on GPUs."""

    name = "cogvideox"
    denoiser = "DiT"
    accelerator_dtype = "bf16"  # the reference runs it in bf16 (fp16 risks overflow in a bf16-trained model)
    variants = (COGVIDEOX_VARIANT,)

    def defaults(self, weights_dir: Path | None, checkpoint: str | None) -> FamilyDefaults:
        native = native_size(weights_dir, checkpoint)
        return FamilyDefaults(
            checkpoint=COGVIDEOX_VARIANT,
            steps=STEPS,
            guidance=GUIDANCE,
            chunk_len=native.frames,
            chunk_overlap=_overlap(native.frames),
            tile_size=(native.height, native.width),
            tile_overlap=VAE_FACTOR * (_overlap(min(native.height, native.width)) // VAE_FACTOR),
            window_chunks=1,
            grid=DIT_GRID,
        )

    def check(self, settings: StarSettings, given: dict[str, object], defaults: FamilyDefaults) -> None:
        """The native sizes are the model's, not options; the sampler is the reference's."""
        native_frames, (native_h, native_w) = defaults.chunk_len, defaults.tile_size
        if given.get("chunk_len", native_frames) != native_frames:
            raise InputError(f"--chunk-len: the cogvideox model works on clips of exactly {native_frames} frames")
        tile = given.get("tile_size")
        if tile is not None and (str(tile).strip().lower() == "none" or parse_size(str(tile)) != (native_h, native_w)):
            raise InputError(f"--tile-size: the cogvideox model works on tiles of exactly {native_h}x{native_w}")
        if given.get("window_chunks", 1) != 1:
            raise InputError("--window-chunks: the cogvideox model restores one clip per window")
        if settings.solver != SOLVER:
            raise InputError(f"--solver: the cogvideox model samples with {SOLVER} only (the reference's sampler)")
        if settings.compile:  # None (auto) and False leave the DiT eager
            raise InputError("--compile: only the i2vgenxl model's UNet is compiled; the cogvideox DiT runs eagerly")

    def check_device(self, settings: StarSettings, device: str) -> None:
        """Its settings run on any device (`check` already refused `--compile`)."""

    def model_calls(self, solver: str, steps: int) -> int:
        return steps

    def guidance_branches(self, guidance: float) -> int:
        return 2  # dynamic CFG: the guided scale is above 1 at almost every step

    def weights_variant(self, checkpoint: str) -> str:
        return COGVIDEOX_VARIANT

    def model_params(self, root: Path, checkpoint: str) -> int | None:
        """The DiT's and the VAE's parameters (the T5 encoder is freed before sampling)."""
        files = [denoiser_path(root, checkpoint), root / COGVIDEOX_DIR / "vae" / "diffusion_pytorch_model.safetensors"]
        if not all(f.is_file() and f.suffix == ".safetensors" for f in files):
            return None
        return sum(safetensors_parameters(f) for f in files)

    def estimate(
        self, plan: Plan, *, dtype_bytes: int, offload: str, vae_group: int, model_params: int | None = None
    ) -> CogVideoXEstimate:
        return estimate(plan, dtype_bytes=dtype_bytes, offload=offload, model_params=model_params)

    def reference_flops_per_frame(self, plan: Plan) -> None:
        """The reference restores one 480x720 clip of 25 frames: no policy for a whole video to compare with."""
        return None

    def load_engine(self, settings: StarSettings, weights: WeightsPaths, *, progress: ProgressCallback) -> FamilyEngine:
        from star_cli.families.cogvideox.engine import CogVideoXEngine

        return CogVideoXEngine.load(settings, weights, progress=progress)

    def compile_note(self, settings: StarSettings, plans: Sequence[Plan], device: str, share: float = 1.0) -> None:
        """The DiT is never compiled: nothing to say."""


FAMILY = CogVideoXFamily()

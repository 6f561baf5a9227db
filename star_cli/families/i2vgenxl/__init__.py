"""The I2VGen-XL family: STAR's UNet + ControlNet + LIEM, the SVD temporal VAE and OpenCLIP text.

Its engine is `star_cli.families.i2vgenxl.engine` (loaded on first use); its memory model
is `star_cli.pipeline.estimate`. Defaults, and why, are documented on `PlanOptions`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from star_cli.families.base import FamilyDefaults, FamilyEngine
from star_cli.errors import InputError
from star_cli.hub.layout import STAR_VARIANTS, WeightsPaths, is_cogvideox_config, read_star_config_json, weights_parameters
from star_cli.pipeline.estimate import Estimate, estimate
from star_cli.pipeline.events import ProgressCallback
from star_cli.pipeline.grid import UNET_GRID
from star_cli.pipeline.plan import AUTO_TILES, Plan, PlanOptions, make_plan
from star_cli.pipeline.request import StarSettings, model_calls

DEFAULTS = FamilyDefaults(
    checkpoint=STAR_VARIANTS[0],
    steps=15,
    guidance=7.5,
    chunk_len=32,
    chunk_overlap=8,
    tile_size=AUTO_TILES,  # whole frames whenever the memory estimate allows (pipeline/tiling.py)
    window_chunks=4,
    grid=UNET_GRID,
)


class I2VGenXLFamily:
    """STAR as released first: any frame size the UNet accepts, chunks of up to 32 frames."""

    name = "i2vgenxl"
    denoiser = "UNet"
    accelerator_dtype = "fp16"
    variants = STAR_VARIANTS

    def defaults(self, weights_dir: Path | None, checkpoint: str | None) -> FamilyDefaults:
        return DEFAULTS

    def check(self, settings: StarSettings, given: dict[str, object], defaults: FamilyDefaults) -> None:
        """Every option applies to this family; a CogVideoX checkpoint is named as such."""
        if settings.checkpoint not in STAR_VARIANTS:
            config = read_star_config_json(Path(settings.checkpoint))
            if config is not None and is_cogvideox_config(config):
                raise InputError(f"--checkpoint {settings.checkpoint} is a STAR CogVideoX checkpoint: run it with --model cogvideox")

    def check_device(self, settings: StarSettings, device: str) -> None:
        """`--compile` where torch cannot compile (no Triton for the GPU, no C++ compiler on the CPU)."""
        if settings.compile:
            import torch

            from star_cli.pipeline.engines.compiling import refuse_uncompilable

            refuse_uncompilable(torch.device(device))

    def model_calls(self, solver: str, steps: int) -> int:
        return model_calls(solver, steps)

    def guidance_branches(self, guidance: float) -> int:
        return 1 if guidance == 1 else 2

    def weights_variant(self, checkpoint: str) -> str:
        return checkpoint if checkpoint in STAR_VARIANTS else STAR_VARIANTS[0]

    def model_params(self, root: Path, checkpoint: str) -> int | None:
        return weights_parameters(root, checkpoint)

    def estimate(self, plan: Plan, *, dtype_bytes: int, offload: str, vae_group: int, model_params: int | None = None) -> Estimate:
        sizes = {} if model_params is None else {"model_params": model_params}
        return estimate(plan, dtype_bytes=dtype_bytes, offload=offload, vae_group=vae_group, **sizes)

    def reference_flops_per_frame(self, plan: Plan) -> float:
        """The reference's policy (its canvas, chunks of 32 overlapping 16, no tiles) at the same steps and guidance."""
        o = plan.options
        policy = replace(PlanOptions.reference(o.scale), model_steps=o.model_steps, guidance_branches=o.guidance_branches)
        height, width = plan.input_size
        return estimate(make_plan(plan.num_frames, height, width, policy)).flops_per_output_frame

    def load_engine(self, settings: StarSettings, weights: WeightsPaths, *, progress: ProgressCallback) -> FamilyEngine:
        from star_cli.families.i2vgenxl.engine import StarEngine

        return StarEngine.load(settings, weights, progress=progress)

    def compile_note(self, settings: StarSettings, plans: Sequence[Plan], device: str, share: float = 1.0) -> str:
        """The choice the engine makes when told these plans (`StarEngine.expect`)."""
        import torch

        from star_cli.pipeline.engines.compiling import compile_choice

        return str(compile_choice(settings.compile, plans, torch.device(device), share=share, offload=settings.offload))


FAMILY = I2VGenXLFamily()

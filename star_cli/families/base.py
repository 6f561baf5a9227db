"""What the pipeline asks a model family: its defaults, its grid, its weights, its costs, its engine.

A family is a small object; `star_cli.pipeline` never branches on the model's name.
This module is torch-free (the planner, `--dry-run` and option checks import it);
a family imports its models only in `load_engine`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

from star_cli.errors import InputError
from star_cli.pipeline.engines.base import Engine
from star_cli.pipeline.grid import ModelGrid
from star_cli.pipeline.timing import StageClock

if TYPE_CHECKING:
    import torch

    from star_cli.pipeline.events import ProgressCallback

    from star_cli.hub.layout import WeightsPaths
    from star_cli.pipeline.estimate import Estimate
    from star_cli.pipeline.plan import Plan, TileSize
    from star_cli.pipeline.request import StarSettings


LOAD_TIME_SETTINGS = ("checkpoint", "weights_dir", "device", "dtype", "offload", "model", "compile")
"""`StarSettings` fixed when a family's models load; the others may change from one call to the next."""


def check_load_time(loaded: StarSettings, settings: StarSettings) -> None:
    """Refuse (one InputError) `settings` that differ from the `loaded` ones in what only loading decides."""
    changed = [name for name in LOAD_TIME_SETTINGS if getattr(settings, name) != getattr(loaded, name)]
    if changed:
        raise InputError(f"{', '.join(changed)} are fixed when the pipeline loads; load another pipeline to change them")


E = TypeVar("E", bound="FamilyEngine")


def engine_for_call(engine: E, settings: StarSettings, encode_prompt: Callable[[E], None]) -> E:
    """`engine` (a dataclass engine: the same loaded models) with per-call `settings`.

    Load-time settings are refused (`check_load_time`); a new prompt is encoded on the
    returned engine by `encode_prompt`, timed as the "text" stage. Both families' engines
    rebind this way.
    """
    check_load_time(engine.settings, settings)
    rebound = replace(engine, settings=settings, clock=StageClock(engine.clock.sync), on_evaluations=None)
    if settings.prompt != engine.settings.prompt:
        if engine.weights is None:
            raise InputError("this engine was built without its weights folder, so its prompt cannot change")
        with rebound.clock.stage("text"):
            encode_prompt(rebound)
    return rebound


class FamilyEngine(Engine, Protocol):
    """A family's loaded STAR engine (a dataclass): what `star upscale` runs and the Python API keeps between calls."""

    settings: StarSettings
    weights: WeightsPaths | None  # None: built without its folder (its prompt cannot change)
    clock: StageClock

    @property
    def device(self) -> torch.device:
        """Where the models run (what `--tile-size auto` plans the memory of)."""
        ...

    def with_settings(self, settings: StarSettings) -> FamilyEngine:
        """This engine (the same loaded models) for other per-call settings; `check_load_time` refuses the rest."""
        ...

    def expect(self, plans: Sequence[Plan], *, share: float = 1.0, progress: ProgressCallback = ...) -> None:
        """Told the plans of a run before its first window (`share`: the part of their windows this
        process takes), so it can prepare for the run's whole work (i2vgenxl: `--compile` auto);
        none for a stream of unknown length. Warnings met during the run go to `progress`."""
        ...


@dataclass(frozen=True)
class FamilyDefaults:
    """The values `star upscale` uses for options left unset, and the denoiser's grid.

    Sizes are output pixels (height, width); `tile_size` None means untiled, 'auto' sized to the memory.
    """

    checkpoint: str
    steps: int
    guidance: float
    chunk_len: int
    chunk_overlap: int
    tile_size: TileSize
    window_chunks: int | None
    grid: ModelGrid
    tile_overlap: int = 128


class Family(Protocol):
    """One model family of `star upscale --model`."""

    name: str
    denoiser: str  # what --dry-run calls its network ('UNet', 'DiT')
    accelerator_dtype: str  # the default --dtype on a GPU ('fp16', 'bf16')
    variants: tuple[str, ...]  # its `star download-weights --variant` names

    def defaults(self, weights_dir: Path | None, checkpoint: str | None) -> FamilyDefaults:
        """Defaults for a run; a family whose native sizes live in its weights reads them from there."""
        ...

    def check(self, settings: StarSettings, given: dict[str, object], defaults: FamilyDefaults) -> None:
        """Refuse (InputError, one line) options the family cannot honour; `given` holds those the user set."""
        ...

    def check_device(self, settings: StarSettings, device: str) -> None:
        """Refuse (InputError, one line) settings the machine cannot honour on `device` (a type:
        'cuda', 'cpu', 'mps'), before any file is read."""
        ...

    def model_calls(self, solver: str, steps: int) -> int:
        """Denoiser calls per guidance branch for `steps` sampling steps."""
        ...

    def guidance_branches(self, guidance: float) -> int:
        """Denoiser passes per step: 2 with classifier-free guidance, 1 without."""
        ...

    def weights_variant(self, checkpoint: str) -> str:
        """The weights-folder variant a run with `--checkpoint checkpoint` needs."""
        ...

    def model_params(self, root: Path, checkpoint: str) -> int | None:
        """Parameters resident at once in a run (None when the files cannot tell)."""
        ...

    def estimate(self, plan: Plan, *, dtype_bytes: int, offload: str, vae_group: int, model_params: int | None = None) -> Estimate:
        """Memory and FLOPs of running `plan` (see star_cli.pipeline.estimate.Estimate)."""
        ...

    def reference_flops_per_frame(self, plan: Plan) -> float | None:
        """FLOPs per output frame of the reference's own policy on this video (None: not comparable)."""
        ...

    def load_engine(self, settings: StarSettings, weights: WeightsPaths, *, progress: ProgressCallback) -> FamilyEngine:
        """Load the weights and return the engine that restores plan windows."""
        ...

    def compile_note(self, settings: StarSettings, plans: Sequence[Plan], device: str, share: float = 1.0) -> str | None:
        """What `--dry-run` says of compilation for `plans` on `device` (None: this family never compiles)."""
        ...

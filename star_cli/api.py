"""The Python front door: `STARPipeline`, the same code path `star upscale` runs.

    from star_cli import STARPipeline

    pipe = STARPipeline.from_pretrained(model="i2vgenxl", device="auto")   # or model="cogvideox"
    out = pipe(frames, scale=4, prompt="", seed=0)   # uint8 (N, H, W, 3) numpy -> same
    for frame in pipe.stream(frames_iterable, scale=4):
        ...                                           # bounded memory, any length
    pipe.upscale_file("in.mp4", "out.mp4", scale=4)   # exactly what `star upscale` does
    plan = pipe.plan(num_frames, height, width, scale=4)

Every keyword of `star upscale` is a keyword here (`chunk_len=8`, `steps=10`, ...),
type-checked, then validated by the same `build_request` for the loaded model family
(options about files, such as `codec` or `start`, for `upscale_file` only; `dry_run`,
`engine`, `gpus` and `devices` are the command line's), and
`--tile-size auto` is resolved against this device's memory by the CLI's own
`plan_tiles`, so frames and plans are the CLI's. Errors are `StarError` subclasses
(`InputError` for bad input) carrying the CLI's one-line messages; nothing here
exits the process. `progress` takes a callback of `star_cli.pipeline.events` events.
"""

from __future__ import annotations

import functools
import numbers
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args, get_type_hints

import numpy as np
import torch

from star_cli.errors import InputError
from star_cli.families import DEFAULT_MODEL, FamilyEngine, get_family
from star_cli.families.base import LOAD_TIME_SETTINGS
from star_cli.pipeline.estimate import Estimate
from star_cli.pipeline.events import ProgressCallback, ignore
from star_cli.pipeline.frames import upscale_array, upscale_stream
from star_cli.pipeline.memory import FreeMemory, free_memory, memory_budget, run_device, run_estimate
from star_cli.pipeline.plan import Plan
from star_cli.pipeline.prepare import prepare
from star_cli.pipeline.request import UpscaleRequest, build_request, request_defaults
from star_cli.pipeline.tiling import MemoryBudget, plan_tiles
from star_cli.pipeline.upscale import checked_weights, execute

_CLI_ONLY = {
    "dry_run": "pipe.plan(num_frames, height, width, ...) gives the plan and memory estimate --dry-run prints",
    "engine": "a STARPipeline runs the star engine (the classical preview is `star upscale --engine lanczos`)",
    "gpus": "one worker per device is `star upscale --gpus`/`--devices` (in Python: one pipeline per device)",
    "devices": "one worker per device is `star upscale --gpus`/`--devices` (in Python: one pipeline per device)",
}
"""`star upscale` options with no meaning for a loaded pipeline, and what to use instead."""
_FILE_ONLY = ("input", "output", "overwrite", "ignore_errors", "resume", "scene_detect", "codec", "crf", "preset",
              "pix_fmt", "exact_size", "deinterlace", "start", "end")
"""Options about reading, encoding or resuming a file: `upscale_file` takes them, frames in memory have no use for them."""
_KINDS = {float: "a number", int: "a whole number", bool: "True or False", str: "text", Path: "a path"}
_FLOAT_SLACK = 0.5 / 255
"""Float frames may stray this far outside [0, 1]: such values still round to 0 or 255 (half an 8-bit level)."""


@dataclass(frozen=True)
class PlanEstimate:
    """What `STARPipeline.plan` returns: the plan (chunks, tiles, windows) and its memory/FLOP estimate."""

    plan: Plan
    estimate: Estimate


def _float_frames(frames: torch.Tensor) -> torch.Tensor:
    """Float torch (N, 3, H, W) frames as float32, refused (InputError) unless finite and in [0, 1]."""
    if frames.ndim != 4 or frames.shape[1] != 3 or not frames.is_floating_point():
        raise InputError(f"torch frames must be float (N, 3, H, W) in [0, 1], got {tuple(frames.shape)} {frames.dtype}")
    values = frames.detach().float()
    if values.numel() and not torch.isfinite(values).all():
        bad = int((~torch.isfinite(values)).sum())
        raise InputError(f"torch frames must be finite numbers in [0, 1], found {bad} NaN or infinite values")
    low, high = (values.min().item(), values.max().item()) if values.numel() else (0.0, 1.0)
    if low < -_FLOAT_SLACK or high > 1 + _FLOAT_SLACK:
        hint = " (frames in 0..255: divide them by 255)" if high > 1 + _FLOAT_SLACK else ""
        raise InputError(f"torch frames must be in [0, 1], found values from {low:g} to {high:g}{hint}")
    return values


def _as_uint8(frames: Any) -> tuple[np.ndarray, bool]:
    """(N, H, W, 3) uint8 frames, and whether they came as float torch (N, 3, H, W) in [0, 1]."""
    was_torch = isinstance(frames, torch.Tensor)
    if was_torch:
        values = _float_frames(frames)
        array = np.ascontiguousarray((values.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy())
    else:
        array = np.asarray(frames)
        if array.ndim != 4 or array.shape[-1] != 3 or array.dtype != np.uint8:
            raise InputError(f"numpy frames must be uint8 (N, H, W, 3), got {array.shape} {array.dtype}")
    if not len(array):
        raise InputError("no frames to upscale")
    return array, was_torch


class STARPipeline:
    """Loaded STAR models plus the settings they were loaded with; call it on frames, streams or files."""

    def __init__(self, engine: FamilyEngine, free: FreeMemory | None = None) -> None:
        """`free`: the memory measured before `engine` loaded, what `--tile-size auto` plans against
        (the estimate counts the weights, so memory measured with them loaded would count them twice);
        None measures it now."""
        self.engine = engine
        self._free = free_memory(engine.device.type) if free is None else free

    @classmethod
    def from_pretrained(
        cls,
        weights_dir: str | os.PathLike | None = None,
        checkpoint: str | None = None,
        device: str = "auto",
        dtype: str | None = None,
        offload: str = "none",
        model: str = DEFAULT_MODEL,
        *,
        compile: bool | None = None,
        progress: ProgressCallback = ignore,
    ) -> STARPipeline:
        """Load STAR from a weights folder (`star download-weights`); a StarError names anything missing.

        `model`: the family, as `star upscale --model` names it (i2vgenxl, cogvideox).
        `checkpoint`: None for the family's default (i2vgenxl: light; cogvideox: cogvideox);
        i2vgenxl also takes heavy, a .safetensors/.pt file or a `star train` output folder,
        cogvideox a converted .safetensors file. The memory free before loading is kept:
        `--tile-size auto` plans against it, as `star upscale` plans against the memory
        free before its models load. `compile`: `star upscale --compile` (True) / `--no-compile`
        (False); None decides per call, as the CLI decides per run: compiled (for good) on CUDA
        when the call's sampling repays the compilation (i2vgenxl; see README "Speed").
        """
        request = _request(weights_dir=weights_dir, checkpoint=checkpoint,
                           device=device, dtype=dtype, offload=offload, model=model, compile=compile)
        weights = checked_weights(request.star)
        free = free_memory(run_device(request.star))  # before the models take their share, as `star upscale` measures it
        return cls(get_family(request.star.model).load_engine(request.star, weights, progress=progress), free)

    def _load_settings(self) -> dict[str, Any]:
        star = self.engine.settings
        return {key: getattr(star, key) for key in LOAD_TIME_SETTINGS}

    def _configured(self, options: dict[str, Any], *, file: bool = False) -> tuple[UpscaleRequest, FamilyEngine]:
        """The request of one call (`file`: an `upscale_file` call) and the engine set up for it."""
        fixed = [key for key in LOAD_TIME_SETTINGS if key in options]
        if fixed:
            raise InputError(f"{', '.join(fixed)} cannot change per call: from_pretrained fixes it; load another "
                             f"pipeline for that")
        cli = next((key for key in _CLI_ONLY if key in options), None)
        if cli is not None:
            raise InputError(f"{cli} is a star upscale (command line) option only: {_CLI_ONLY[cli]}")
        files = [key for key in _FILE_ONLY if key in options]
        if files and not file:
            raise InputError(f"{', '.join(files)} apply to upscale_file only (reading, encoding or resuming a file), "
                             f"not to frames in memory")
        request = _request(**self._load_settings(), **options)
        return request, self.engine.with_settings(request.star)

    def __call__(self, frames: Any, *, scale: float = 4.0, progress: ProgressCallback = ignore, **options: Any) -> Any:
        """Upscale a clip held in memory: uint8 (N, H, W, 3) numpy -> same; float (N, 3, H, W) torch in [0, 1] -> same.

        Planned as `star upscale` plans a file of these frames (without scene detection),
        so the frames equal the CLI's for the same settings. Frames go through 8 bits.
        """
        array, was_torch = _as_uint8(frames)
        request, engine = self._configured({"scale": scale, **options})
        plan = self._plan(request, *array.shape[:3])
        engine.expect([plan], progress=progress)
        out = upscale_array(engine, array, plan, progress)
        if was_torch:
            return torch.from_numpy(out).permute(0, 3, 1, 2).float().div(255)
        return out

    def stream(
        self, frames: Iterable[Any], *, scale: float = 4.0, progress: ProgressCallback = ignore, **options: Any
    ) -> Iterator[np.ndarray]:
        """Upscale uint8 (H, W, 3) frames from any iterable, yielding each output frame once final.

        Memory stays at about one and a half windows whatever the length (two for
        cogvideox, whose windows are its native clip). Windows have a
        fixed span here (the length is unknown in advance), so the frames can differ
        slightly from a whole-array call at window seams. Tiles under 'auto' are those
        a file of one full window would get; `compile` None leaves the UNet as earlier
        calls left it (a stream's length is unknown, so nothing can say a compilation pays).
        """
        request, engine = self._configured({"scale": scale, **options})
        engine.expect((), progress=progress)
        return upscale_stream(engine, frames, request.plan, progress, self._budget(request))

    def upscale_file(
        self,
        input: str | os.PathLike,
        output: str | os.PathLike,
        *,
        scale: float = 4.0,
        progress: ProgressCallback = ignore,
        **options: Any,
    ) -> None:
        """Exactly what `star upscale INPUT -o OUTPUT` does (a file or a folder), with these models loaded once."""
        request, engine = self._configured({"input": input, "output": output, "scale": scale, **options}, file=True)
        execute(prepare(request, self._free), progress=progress, engine=engine)

    def plan(self, num_frames: int, height: int, width: int, *, scale: float = 4.0, **options: Any) -> PlanEstimate:
        """The plan of a clip of this size and its memory/FLOP estimate on this pipeline's device (what --dry-run shows)."""
        request, _ = self._configured({"scale": scale, **options})
        plan = self._plan(request, num_frames, height, width)
        return PlanEstimate(plan, run_estimate(plan, request.star, self.engine.device.type))

    def _budget(self, request: UpscaleRequest) -> MemoryBudget:
        """What `--tile-size auto` plans against: `star upscale`'s budget for these settings, on the memory free before loading."""
        return memory_budget(request.star, self.engine.device.type, self._free)

    def _plan(self, request: UpscaleRequest, num_frames: int, height: int, width: int) -> Plan:
        """The plan `star upscale` makes for a file of these frames (no scene cuts), 'auto' tiles included."""
        return plan_tiles(num_frames, height, width, request.plan, self._budget(request))


@functools.cache
def _option_types() -> dict[str, tuple[type, ...]]:
    """Each `build_request` keyword's accepted types (None among them where the option may be left unset)."""
    hints = get_type_hints(build_request)
    return {name: get_args(hint) or (hint,) for name, hint in hints.items() if name != "return"}


def _typed(name: str, value: Any) -> Any:
    """`value` as the type `star upscale` parses option `name` into; InputError naming the option otherwise.

    The CLI's parser hands `build_request` typed values; here a caller could pass any
    object, which would meet a comparison or a `.strip()` deep inside as a raw TypeError.
    NumPy scalars count as numbers and strings or os.PathLike as paths.
    """
    accepted = _option_types()[name]
    if value is None and type(None) in accepted:
        return None
    kind = next(t for t in accepted if t is not type(None))
    logical = isinstance(value, (bool, np.bool_))
    if kind is bool and logical:
        return bool(value)
    if kind is int and isinstance(value, numbers.Integral) and not logical:
        return int(value)
    if kind is float and isinstance(value, numbers.Real) and not logical:
        return float(value)
    if kind is str and isinstance(value, str):
        return value
    if kind is Path and isinstance(value, (str, os.PathLike)):
        return Path(value)
    unset = " or None" if type(None) in accepted else ""
    raise InputError(f"{name} must be {_KINDS.get(kind, kind.__name__)}{unset}, got {value!r} ({type(value).__name__})")


def _request(**options: Any) -> UpscaleRequest:
    """A validated request from keyword options over `star upscale`'s defaults."""
    unknown = sorted(set(options) - set(request_defaults()) - {"input", "output"})
    if unknown:
        raise InputError(f"unknown option(s): {', '.join(unknown)} (the keywords are star upscale's options)")
    values = {**request_defaults(), "input": Path(), "output": Path()}
    values.update((name, _typed(name, value)) for name, value in options.items())
    return build_request(**values)

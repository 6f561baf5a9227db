"""What the user asked `star upscale` to do, validated into plain data.

The CLI hands raw option values to `build_request`; every bad value is refused
here with one line (exit 2) before a file is opened or a model is loaded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import get_args

from star_cli.errors import InputError
from star_cli.hub.layout import resolve_checkpoint
from star_cli.pipeline.estimate import Offload
from star_cli.pipeline.plan import CanvasPolicy, PlanOptions
from star_cli.spans import BLEND_MODES
from star_cli.video.segment import Position
from star_cli.video.writer import ENCODERS, EncodeOptions

ENGINES = ("star", "lanczos")
DEVICES = ("auto", "cuda", "cpu", "mps")
OFFLOADS = get_args(Offload)
CANVASES = get_args(CanvasPolicy)
CODECS = ("auto", *ENCODERS)
AUTO_CODECS = {".webm": "av1"}
"""`--codec auto` per output container: h264, except where the container takes no h264 (WebM)."""
MATROSKA_ONLY = {"ffv1": (".mp4", ".m4v", ".mov")}
"""Codecs FFmpeg will put in an MP4/MOV that almost no player then opens."""
DEFAULT_CHUNK_OVERLAP = 8
MIN_STEPS = 2
# Mirrors of choices whose owners import torch (colorfix, placement, diffusion.window):
# validating options must stay fast. tests/pipeline/test_request.py keeps them equal.
COLOR_FIXES = ("adain", "wavelet", "none")
DTYPES = ("fp16", "bf16", "fp32")
SOLVERS = ("dpmpp_2m_sde", "heun")


FAST_STEPS = 15
"""The reference's step count; with it the sampler uses the reference's 'fast' spacing."""


def solver_mode(steps: int) -> str:
    """'fast' (4 steps above t=500, 11 below: the reference) at 15 steps, else evenly spaced 'normal'."""
    return "fast" if steps == FAST_STEPS else "normal"


def model_calls(solver: str, steps: int) -> int:
    """UNet calls per guidance branch, as `diffusion.window.SamplerSettings.sigmas` lays the steps out.

    DPM-Solver++(2M) SDE: one call per step; the 'fast' spacing's 15 steps become 14
    once its penultimate sigma is dropped. Heun: two calls per step but the last.
    """
    if solver == "dpmpp_2m_sde":
        return steps - 1 if solver_mode(steps) == "fast" else steps
    return 2 * steps - 1


@dataclass(frozen=True)
class StarSettings:
    """Everything the STAR engine needs beyond the plan; defaults are the reference's."""

    checkpoint: str = "light"
    weights_dir: Path | None = None
    prompt: str = ""
    seed: int = 0
    steps: int = 15
    guidance: float = 7.5
    solver: str = "dpmpp_2m_sde"
    color_fix: str = "adain"
    device: str = "auto"
    dtype: str | None = None
    offload: str = "none"
    vae_group: int = 3
    resume: bool = False


@dataclass(frozen=True)
class UpscaleRequest:
    """One `star upscale` call: inputs, outputs, plan, engine and encoder settings."""

    input: Path
    output: Path
    engine: str
    plan: PlanOptions
    encode: EncodeOptions  # codec may be 'auto': see encode_options_for
    star: StarSettings
    dry_run: bool = False
    overwrite: bool = False
    ignore_errors: bool = False
    scene_detect: bool = True
    quiet: bool = False
    verbose: bool = False
    start: Position | None = None
    end: Position | None = None
    exact_size: bool = False


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise InputError(f"--{name.replace('_', '-')} must be one of {', '.join(allowed)}, got '{value}'")
    return value


def encode_options_for(dest: Path, options: EncodeOptions) -> EncodeOptions:
    """The encoder settings for one output file, with `--codec auto` resolved by its container."""
    if dest.suffix.lower() in MATROSKA_ONLY.get(options.codec, ()):
        raise InputError(f"--codec {options.codec} cannot go into a {dest.suffix} file that players open; write .mkv instead")
    if options.codec != "auto":
        return options
    return replace(options, codec=AUTO_CODECS.get(dest.suffix.lower(), "h264"))


def default_chunk_overlap(chunk_len: int) -> int:
    """8 frames, or a quarter of a shorter chunk (so `--chunk-len 8` alone is a valid plan)."""
    return max(0, min(DEFAULT_CHUNK_OVERLAP, chunk_len // 4))


def parse_size(text: str) -> tuple[int, int]:
    """'720x1280' -> (720, 1280): height x width in pixels."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX*]\s*(\d+)\s*", text)
    if not match:
        raise InputError(f"--tile-size must look like HEIGHTxWIDTH, e.g. 720x1280, got '{text}'")
    return int(match.group(1)), int(match.group(2))


def read_prompt(prompt: str, prompt_file: Path | None) -> str:
    """The user's prompt, from --prompt or --prompt-file (not both)."""
    if prompt_file is None:
        return prompt
    if prompt:
        raise InputError("give --prompt or --prompt-file, not both")
    try:
        return prompt_file.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"cannot read --prompt-file {prompt_file}: {error.strerror or error}") from None


def build_request(
    *,
    input: Path,
    output: Path,
    scale: float,
    engine: str,
    dry_run: bool,
    overwrite: bool,
    ignore_errors: bool,
    chunk_len: int,
    chunk_overlap: int | None,
    blend: str,
    canvas: str,
    tile_size: str | None,
    window_chunks: int,
    scene_detect: bool,
    checkpoint: str,
    weights_dir: Path | None,
    prompt: str,
    prompt_file: Path | None,
    seed: int,
    steps: int,
    guidance: float,
    solver: str,
    color_fix: str,
    device: str,
    dtype: str | None,
    offload: str,
    vae_group: int,
    resume: bool,
    codec: str,
    crf: int | None,
    preset: str,
    pix_fmt: str | None,
    quiet: bool,
    verbose: bool,
    start: str | None = None,
    end: str | None = None,
    exact_size: bool = False,
) -> UpscaleRequest:
    """Validate raw CLI values into an `UpscaleRequest` (InputError on the first bad one)."""
    _choice("engine", engine, ENGINES)
    _choice("blend", blend, BLEND_MODES)
    _choice("canvas", canvas, CANVASES)
    _choice("color_fix", color_fix, COLOR_FIXES)
    _choice("device", device, DEVICES)
    _choice("offload", offload, OFFLOADS)
    _choice("solver", solver, SOLVERS)
    _choice("codec", codec, CODECS)
    if dtype is not None:
        _choice("dtype", dtype, DTYPES)
    if steps < MIN_STEPS:
        raise InputError(f"--steps must be at least {MIN_STEPS}, got {steps}")
    if resume and engine != "star":
        raise InputError(f"--resume continues an interrupted STAR run; --engine {engine} keeps no finished windows")
    if guidance < 1:
        raise InputError(f"--guidance must be at least 1 (1 turns guidance off), got {guidance:g}")
    if vae_group < 1:
        raise InputError(f"--vae-group must be at least 1, got {vae_group}")
    if crf is not None and crf < 0:
        raise InputError(f"--crf must be 0 or more, got {crf}")
    plan_fields = dict(scale=scale, chunk_len=chunk_len, blend=blend, canvas=canvas, window_chunks=window_chunks)
    plan_fields["chunk_overlap"] = default_chunk_overlap(chunk_len) if chunk_overlap is None else chunk_overlap
    if tile_size is not None:
        plan_fields["tile_size"] = None if tile_size.strip().lower() == "none" else parse_size(tile_size)
    plan_fields["guidance_branches"] = 1 if guidance == 1 else 2
    plan_fields["model_steps"] = model_calls(solver, steps)
    encode_fields = dict(codec=codec, preset=preset, pix_fmt=pix_fmt)
    if crf is not None:
        encode_fields["crf"] = crf
    star = StarSettings(
        checkpoint=resolve_checkpoint(checkpoint),
        weights_dir=weights_dir,
        prompt=read_prompt(prompt, prompt_file),
        seed=seed,
        steps=steps,
        guidance=guidance,
        solver=solver,
        color_fix=color_fix,
        device=device,
        dtype=dtype,
        offload=offload,
        vae_group=vae_group,
        resume=resume,
    )
    return UpscaleRequest(
        input=input,
        output=output,
        engine=engine,
        plan=PlanOptions(**plan_fields),
        encode=EncodeOptions(**encode_fields),
        star=star,
        dry_run=dry_run,
        overwrite=overwrite,
        ignore_errors=ignore_errors,
        scene_detect=scene_detect,
        quiet=quiet,
        verbose=verbose,
        start=None if start is None else Position.parse(start, "--start"),
        end=None if end is None else Position.parse(end, "--end"),
        exact_size=exact_size,
    )


def request_defaults() -> dict[str, object]:
    """`build_request`'s keywords at their defaults (`star upscale`'s, which a test keeps equal), input/output aside."""
    plan, star, encode = PlanOptions(), StarSettings(), EncodeOptions()
    return dict(
        scale=plan.scale, engine=ENGINES[0], dry_run=False, overwrite=False, ignore_errors=False,
        chunk_len=plan.chunk_len, chunk_overlap=None, blend=plan.blend, canvas=plan.canvas, tile_size=None,
        window_chunks=plan.window_chunks, scene_detect=True, checkpoint=star.checkpoint, weights_dir=star.weights_dir,
        prompt=star.prompt, prompt_file=None, seed=star.seed, steps=star.steps, guidance=star.guidance,
        solver=star.solver, color_fix=star.color_fix, device=star.device, dtype=star.dtype, offload=star.offload,
        vae_group=star.vae_group, resume=star.resume, codec=CODECS[0], crf=None, preset=encode.preset,
        pix_fmt=encode.pix_fmt, quiet=False, verbose=False, start=None, end=None, exact_size=False,
    )

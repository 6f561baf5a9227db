"""What the user asked `star upscale` to do, validated into plain data.

The CLI hands raw option values to `build_request`; every bad value is refused
here with one line (exit 2) before a file is opened or a model is loaded.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, get_args

from star_cli.errors import InputError
from star_cli.families import DEFAULT_MODEL, get_family
from star_cli.hub.layout import resolve_checkpoint
from star_cli.pipeline.estimate import Offload
from star_cli.pipeline.plan import PlanOptions
from star_cli.pipeline.plan_rules import AUTO_TILES, CanvasPolicy
from star_cli.pipeline.ranks import parse_devices
from star_cli.spans import BLEND_MODES
from star_cli.video.options import ENCODERS, EncodeOptions

if TYPE_CHECKING:  # PyAV loads only for a --start/--end (benchmarks/gpu_bench.py runs without video packages)
    from star_cli.video.segment import Position

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
BATCH_GUIDANCE = ("auto", "on", "off")
QUANTIZE_MODES = ("round", "truncate")

DEINTERLACE_MODES = ("auto", "on", "off")
"""auto: bwdif on a source coded interlaced (its flagged frames); on: every frame; off: none (video/deinterlace.py)."""


FAST_STEPS = 15
"""The reference's step count; with it the sampler uses the reference's 'fast' spacing."""
MAX_STEPS = 1000
"""The schedule's timesteps (diffusion.schedule.NUM_TIMESTEPS, mirrored: no torch here): more steps repeat them."""
CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")


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
    """Everything the STAR engine needs beyond the plan; defaults are the reference's (I2VGen-XL)."""

    model: str = DEFAULT_MODEL
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
    quantize: str = "round"
    resume: bool = False
    batch_guidance: str = "auto"  # cond + uncond as one batch of 2: auto (when it fits), on, off
    compile: bool | None = None  # torch.compile the UNet's repeated blocks; None: when the run repays it


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
    devices: tuple[str, ...] = ()  # --gpus/--devices: one worker process per entry (see pipeline/launch.py)
    start: Position | None = None
    end: Position | None = None
    exact_size: bool = False
    deinterlace: str = "auto"  # DEINTERLACE_MODES


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


def default_chunk_overlap(chunk_len: int, largest: int = DEFAULT_CHUNK_OVERLAP) -> int:
    """`largest` (the family's default, 8), or a quarter of a shorter chunk (so `--chunk-len 8` alone is a valid plan)."""
    return max(0, min(largest, chunk_len // 4))


def parse_size(text: str) -> tuple[int, int]:
    """'720x1280' -> (720, 1280): height x width in pixels."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX*]\s*(\d+)\s*", text)
    if not match:
        raise InputError(f"--tile-size must be auto, none or HEIGHTxWIDTH, e.g. 720x1280, got '{text}'")
    return int(match.group(1)), int(match.group(2))


def read_prompt(prompt: str, prompt_file: Path | None) -> str:
    """The user's prompt, from --prompt or --prompt-file (not both)."""
    if prompt_file is None:
        return prompt
    if prompt:
        raise InputError("give --prompt or --prompt-file, not both")
    try:
        text = prompt_file.read_text(encoding="utf-8-sig").strip()  # a BOM (Windows editors write one) is not text
    except OSError as error:
        raise InputError(f"cannot read --prompt-file {prompt_file}: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise InputError(f"--prompt-file {prompt_file} is not UTF-8 text") from None
    if any(not ch.isprintable() and ch not in "\n\r\t" for ch in text):
        raise InputError(f"--prompt-file {prompt_file} holds control characters: is it a text file?")
    return text


def _check_finite(values: dict[str, object]) -> None:
    """Refuse nan/inf in any number option (comparisons with nan are all false: no bound would catch it)."""
    for name, value in values.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise InputError(f"--{name.replace('_', '-')} must be a finite number, got {value}")


def check_weights_options(checkpoint: str | None, weights_dir: Path | None, variants: tuple[str, ...]) -> None:
    """A --checkpoint file and a --weights-dir that do not exist are bad input, refused before any folder is checked.

    `variants` are the checkpoint names of the run's model family (None: its default);
    a `star train` output folder stands for the weights file it holds."""
    if weights_dir is not None and not Path(weights_dir).expanduser().is_dir():
        raise InputError(f"--weights-dir {weights_dir} is not a folder")
    if checkpoint is None:
        return
    path = Path(resolve_checkpoint(checkpoint, variants))
    if checkpoint not in variants and path.suffix.lower() not in CHECKPOINT_SUFFIXES:
        raise InputError(f"--checkpoint {checkpoint}: expected a {'/'.join(CHECKPOINT_SUFFIXES)} file")


def build_request(
    *,
    input: Path,
    output: Path,
    scale: float,
    engine: str,
    dry_run: bool,
    overwrite: bool,
    ignore_errors: bool,
    chunk_len: int | None,
    chunk_overlap: int | None,
    blend: str,
    canvas: str,
    tile_size: str | None,
    window_chunks: int | None,
    scene_detect: bool,
    checkpoint: str | None,
    weights_dir: Path | None,
    prompt: str,
    prompt_file: Path | None,
    seed: int,
    steps: int | None,
    guidance: float | None,
    solver: str,
    color_fix: str,
    device: str,
    dtype: str | None,
    offload: str,
    vae_group: int,
    resume: bool,
    batch_guidance: str = "auto",
    compile: bool | None = None,
    quantize: str = "round",
    codec: str,
    crf: int | None,
    preset: str,
    pix_fmt: str | None,
    quiet: bool,
    verbose: bool,
    model: str = DEFAULT_MODEL,
    gpus: str | None = None,
    devices: str | None = None,
    start: str | None = None,
    end: str | None = None,
    exact_size: bool = False,
    deinterlace: str = "auto",
) -> UpscaleRequest:
    """Validate raw CLI values into an `UpscaleRequest` (InputError on the first bad one).

    Options left None take the model family's defaults (`star_cli.families`).
    """
    _check_finite(dict(locals()))
    family = get_family(model)
    if engine == "star":
        check_weights_options(checkpoint, weights_dir, family.variants)
    defaults = family.defaults(weights_dir, checkpoint)
    given = {"chunk_len": chunk_len, "chunk_overlap": chunk_overlap, "tile_size": tile_size, "window_chunks": window_chunks}
    steps = defaults.steps if steps is None else steps
    guidance = defaults.guidance if guidance is None else guidance
    _choice("engine", engine, ENGINES)
    _choice("blend", blend, BLEND_MODES)
    _choice("canvas", canvas, CANVASES)
    _choice("color_fix", color_fix, COLOR_FIXES)
    _choice("device", device, DEVICES)
    _choice("offload", offload, OFFLOADS)
    _choice("solver", solver, SOLVERS)
    _choice("codec", codec, CODECS)
    _choice("batch_guidance", batch_guidance, BATCH_GUIDANCE)
    _choice("quantize", quantize, QUANTIZE_MODES)
    _choice("deinterlace", deinterlace, DEINTERLACE_MODES)
    if dtype is not None:
        _choice("dtype", dtype, DTYPES)
    if steps < MIN_STEPS:
        raise InputError(f"--steps must be at least {MIN_STEPS}, got {steps}")
    if steps > MAX_STEPS:
        raise InputError(f"--steps must be between {MIN_STEPS} and {MAX_STEPS} (the schedule's timesteps), got {steps}")
    if seed < 0:
        raise InputError(f"--seed must be 0 or more (the same seed gives the same frames), got {seed}")
    if resume and engine != "star":
        raise InputError(f"--resume continues an interrupted STAR run; --engine {engine} keeps no finished windows")
    if guidance < 1:
        raise InputError(f"--guidance must be at least 1 (1 turns guidance off), got {guidance:g}")
    if vae_group < 1:
        raise InputError(f"--vae-group must be at least 1, got {vae_group}")
    if crf is not None and crf < 0:
        raise InputError(f"--crf must be 0 or more, got {crf}")
    if crf is not None and codec == "ffv1":
        raise InputError("--crf sets a lossy codec's quality; ffv1 is lossless and takes none")
    if chunk_overlap is None:  # `--chunk-len 8` alone is a valid plan: the overlap shrinks with the chunk
        chunk_overlap = defaults.chunk_overlap if chunk_len is None else default_chunk_overlap(chunk_len, defaults.chunk_overlap)
    plan_fields = dict(
        scale=scale,
        chunk_len=defaults.chunk_len if chunk_len is None else chunk_len,
        chunk_overlap=chunk_overlap,
        blend=blend,
        canvas=canvas,
        tile_size=defaults.tile_size,
        tile_overlap=defaults.tile_overlap,
        window_chunks=defaults.window_chunks if window_chunks is None else window_chunks,
        grid=defaults.grid,
    )
    if tile_size is not None:
        named = {"none": None, "auto": AUTO_TILES}
        text = tile_size.strip().lower()
        plan_fields["tile_size"] = named[text] if text in named else parse_size(tile_size)
    plan_fields["guidance_branches"] = family.guidance_branches(guidance)
    plan_fields["model_steps"] = family.model_calls(solver, steps)
    encode_fields = dict(codec=codec, preset=preset, pix_fmt=pix_fmt)
    if crf is not None:
        encode_fields["crf"] = crf
    star = StarSettings(
        model=model,
        checkpoint=resolve_checkpoint(defaults.checkpoint if checkpoint is None else checkpoint, family.variants),
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
        quantize=quantize,
        resume=resume,
        batch_guidance=batch_guidance,
        compile=compile,
    )
    family.check(star, {k: v for k, v in given.items() if v is not None}, defaults)
    listed = parse_devices(gpus, devices)
    if listed and device != "auto":
        raise InputError(f"--device {device} and --gpus/--devices: give one (each process takes its device from the list)")
    positions = {}
    if start is not None or end is not None:
        from star_cli.video.segment import Position

        positions = {name: Position.parse(text, f"--{name}") for name, text in (("start", start), ("end", end)) if text is not None}
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
        devices=listed,
        start=positions.get("start"),
        end=positions.get("end"),
        exact_size=exact_size,
        deinterlace=deinterlace,
    )


def request_defaults() -> dict[str, object]:
    """`build_request`'s keywords at their defaults (`star upscale`'s, which a test keeps equal), input/output aside.

    Options the model family decides are None here, as on the command line.
    """
    star, encode = StarSettings(), EncodeOptions()
    return dict(
        scale=PlanOptions().scale, engine=ENGINES[0], dry_run=False, overwrite=False, ignore_errors=False,
        model=DEFAULT_MODEL, chunk_len=None, chunk_overlap=None, blend=PlanOptions().blend,
        canvas=PlanOptions().canvas, tile_size=None, window_chunks=None, scene_detect=True, checkpoint=None,
        weights_dir=star.weights_dir, prompt=star.prompt, prompt_file=None, seed=star.seed, steps=None,
        guidance=None, solver=star.solver, color_fix=star.color_fix, device=star.device, dtype=star.dtype,
        offload=star.offload, vae_group=star.vae_group, quantize=star.quantize, resume=star.resume,
        batch_guidance=star.batch_guidance, compile=star.compile, codec=CODECS[0], crf=None,
        preset=encode.preset, pix_fmt=encode.pix_fmt, quiet=False, verbose=False, gpus=None, devices=None,
        start=None, end=None, exact_size=False, deinterlace="auto",
    )

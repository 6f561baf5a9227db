"""The `star` command line: each command parses its options and calls one function.

Errors the user can act on arrive as `StarError` and leave as one line on stderr
with the error's exit code (2 bad input, 1 runtime failure, 130 interrupted).
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Optional, TypeVar

import typer
from rich.console import Console

from star_cli import __version__
from star_cli.errors import ReportedElsewhere, StarError
from star_cli.help import StarCommand, StarGroup
from star_cli.pipeline.ranks import reporting_process
from star_cli.terminal import EXIT_INTERRUPTED, KeptWork, interrupt_exit_code, message, stderr_console, stop_signals_interrupt

T = TypeVar("T")

app = typer.Typer(
    name="star",
    cls=StarGroup,
    help="Real-world video super-resolution with STAR (diffusion), from the command line.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

UPSCALE_EXAMPLES = """
Examples:

  star upscale in.mp4 -o out.mp4 --scale 4

  star upscale in.mp4 -o out.mp4 --dry-run          # print the plan and memory estimate only

  star upscale clips/ -o upscaled/ --scale 2        # every video of a folder

  star upscale in.mkv -o out.mkv --codec ffv1 --offload model --seed 7

  star upscale in.mp4 -o out.mp4 --model cogvideox    # STAR on CogVideoX-5B (bf16, 480x720 tiles, 25-frame clips)
  star upscale film.mkv -o film_x4.mkv --gpus 0,1,2,3   # one worker per GPU (or: torchrun -m star_cli upscale ...)
  star upscale in.mp4 -o try.mp4 --start 1:30 --end 1:33   # try settings on 3 seconds first
"""


def _run(
    action: Callable[[], T], console: Console, *, interrupted: str | Callable[[], str] = "interrupted: no partial output was kept"
) -> T:
    """Run one command body, turning our errors, Ctrl-C, SIGTERM and SIGHUP into exit codes."""
    try:
        with stop_signals_interrupt():
            return action()
    except StarError as error:
        if not isinstance(error, ReportedElsewhere):
            console.print(message(str(error), "error:", "bold red"), soft_wrap=True)
        raise typer.Exit(error.exit_code) from None
    except KeyboardInterrupt as interrupt:
        if isinstance(interrupt, KeptWork):
            text = interrupt.line
        else:
            text = interrupted() if callable(interrupted) else interrupted
        console.print(message(text, style="yellow"), soft_wrap=True)
        raise typer.Exit(interrupt_exit_code(interrupt)) from None


def _version(value: bool) -> None:
    if value:
        print(f"star {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """Real-world video super-resolution with STAR (diffusion), from the command line."""


def _stderr() -> Console:
    return stderr_console()


@app.command(cls=StarCommand, epilog=UPSCALE_EXAMPLES)
def upscale(
    input: Path = typer.Argument(..., metavar="INPUT", help="A video file, or a folder of videos.", show_default=False),
    output: Path = typer.Option(..., "-o", "--output", help="Output file (or folder, for a folder input).", show_default=False),
    scale: float = typer.Option(4.0, "--scale", "-s", help="Upscaling factor, 0.125 <= scale <= 8."),
    engine: str = typer.Option("star", help="star (the diffusion model) or lanczos (fast classical preview)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan and memory/FLOP estimates; needs no weights."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output."),
    ignore_errors: bool = typer.Option(False, "--ignore-errors", help="Keep the decodable frames of a damaged input."),
    model: str = typer.Option("i2vgenxl", help="Model family: i2vgenxl (STAR's UNet) or cogvideox (STAR on CogVideoX-5B: the paper's best)."),
    # plan
    chunk_len: Optional[int] = typer.Option(None, "--chunk-len", help="Frames the model sees at once.", show_default="32; cogvideox: its native clip, 25"),
    chunk_overlap: Optional[int] = typer.Option(None, "--chunk-overlap", help="Frames shared by neighbouring chunks.", show_default="8, or a quarter of a shorter --chunk-len"),
    blend: str = typer.Option("cosine", help="Join of overlapping chunks: cosine, linear, or cut (the reference's hard cut)."),
    canvas: str = typer.Option("minimal", help="minimal (smallest valid frame) or reference (pad to 720x1280 like the reference)."),
    tile_size: Optional[str] = typer.Option(None, "--tile-size", help="auto (whole frames when memory allows), none, or the largest tile HxW (height x width), e.g. 720x1280; the smallest is 272x256 (cogvideox: exactly its native 480x720).", show_default="auto"),
    window_chunks: Optional[int] = typer.Option(None, "--window-chunks", help="Chunks denoised together; memory grows with it.", show_default="4; cogvideox: 1"),
    scene_detect: bool = typer.Option(True, "--scene-detect/--no-scene-detect", help="Never blend across hard cuts."),
    # STAR
    checkpoint: Optional[str] = typer.Option(None, help="light (default), heavy or a .safetensors/.pt file; cogvideox: its converted .safetensors."),
    weights_dir: Optional[Path] = typer.Option(None, "--weights-dir", help="Weights folder (default: $STAR_WEIGHTS_DIR or the user cache)."),
    prompt: str = typer.Option("", help="Describe the video; the reference's quality prompt is appended."),
    prompt_file: Optional[Path] = typer.Option(None, "--prompt-file", help="Read the prompt from a text file."),
    seed: int = typer.Option(0, help="Random seed (0 or more); the same seed gives the same frames."),
    steps: Optional[int] = typer.Option(None, help="Sampling steps, at least 2 (at most 1000): 15 is the reference's 'fast' spacing, other counts are evenly spaced.", show_default="15; cogvideox: 50"),
    guidance: Optional[float] = typer.Option(None, help="Classifier-free guidance scale (1 disables the negative pass).", show_default="7.5; cogvideox: 6, dynamic"),
    solver: str = typer.Option("dpmpp_2m_sde", help="dpmpp_2m_sde (reference) or heun (i2vgenxl only)."),
    color_fix: str = typer.Option("adain", "--color-fix", help="adain, wavelet or none."),
    device: str = typer.Option("auto", help="auto, cuda, cpu or mps."),
    dtype: Optional[str] = typer.Option(None, help="fp16, bf16 or fp32.", show_default="fp16 on a GPU (cogvideox: bf16), fp32 on the CPU"),
    offload: str = typer.Option("none", help="none, model (one component on the GPU at a time) or sequential (denoiser blocks streamed)."),
    vae_group: int = typer.Option(3, "--vae-group", help="Frames per temporal VAE decode (the reference uses 3; i2vgenxl only)."),
    quantize: str = typer.Option("round", help="round (nearest level) or truncate (the reference's) to 8 bits."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted STAR run from its finished windows (refused, with the reason, if weights, options or input changed)."),
    batch_guidance: str = typer.Option("auto", "--batch-guidance", help="Both guidance passes as one batch: auto (when memory allows), on or off."),
    compile: Optional[bool] = typer.Option(None, "--compile/--no-compile", help="torch.compile the UNet's repeated blocks: a few minutes before the first step, about 10% faster after.", show_default="on CUDA when the run is long enough to repay it"),
    # encoding
    codec: str = typer.Option("auto", help="auto (h264; av1 for .webm), h264, hevc, av1 or ffv1."),
    crf: Optional[int] = typer.Option(None, help="Encoder quality (lower is better; not for ffv1).", show_default="18"),
    preset: str = typer.Option("medium", help="Encoder speed preset."),
    pix_fmt: Optional[str] = typer.Option(None, "--pix-fmt", help="Output pixel format.", show_default="the source's chroma and depth where the codec allows"),
    exact_size: bool = typer.Option(False, "--exact-size", help="Keep an odd output size exactly (4:4:4, which many players refuse) instead of dropping its last row/column."),
    deinterlace: str = typer.Option("auto", help="auto (rebuild the interlaced frames of a source coded interlaced, with ffmpeg's bwdif), on (every frame: for transfers that lost their flags) or off."),
    start: Optional[str] = typer.Option(None, "--start", help="Begin here: a time (90, 1:30, 1:02:03.5) or a frame (2160f); the audio is cut to match.", show_default="the first frame"),
    end: Optional[str] = typer.Option(None, "--end", help="Stop before this time or frame.", show_default="the last frame"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Also print the plan and per-stage timings (per window and in total)."),
    # several devices
    gpus: Optional[str] = typer.Option(None, "--gpus", help="One worker per GPU, e.g. 0,1,2,3 (torch.distributed's elastic launcher)."),
    devices: Optional[str] = typer.Option(None, "--devices", help="Like --gpus with device names, e.g. cuda:0,cuda:1 or cpu,cpu."),
) -> None:
    """Upscale a video (or every video of a folder) and keep its audio and subtitles."""
    options = dict(locals())
    from star_cli.upscale_command import run_upscale_command

    console = _stderr()
    report, action = run_upscale_command(options, console)
    _run(action, console, interrupted=report.interrupted_message)


@app.command("download-weights", cls=StarCommand)
def download_weights(
    variant: str = typer.Option("light", help="light, heavy, all (light + heavy) or cogvideox (STAR on CogVideoX-5B)."),
    dir: Optional[Path] = typer.Option(None, "--dir", help="Target folder (default: $STAR_WEIGHTS_DIR or the user cache)."),
    revision: Optional[str] = typer.Option(None, help="Hub revision (branch, tag or commit) of the STAR repo."),
    verify: bool = typer.Option(False, "--verify", help="Re-hash every file even when sizes match."),
    keep_original: bool = typer.Option(False, "--keep-original", help="Keep the downloaded .pt after conversion."),
) -> None:
    """Fetch, verify and convert the STAR, VAE and text-encoder weights (resumable).

    Example: star download-weights --variant all --dir ~/models/star
    CogVideoX: star download-weights --variant cogvideox
    """
    from star_cli.hub import download_weights as fetch

    console = _stderr()
    _run(
        lambda: fetch(variant, dir, revision=revision, verify=verify, keep_original=keep_original, console=console),
        console,
        interrupted="interrupted: run the same command again to resume the download",
    )


@app.command(cls=StarCommand)
def train(
    config: Path = typer.Option(..., "--config", "-c", help="TOML training config (see configs/train.example.toml).", show_default=False),
    resume: Optional[str] = typer.Option(None, help="latest, or a checkpoint folder to continue from."),
    output_dir: Optional[Path] = typer.Option(None, "--output-dir", help="Overrides train.output_dir."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Overrides train.max_steps."),
    learning_rate: Optional[float] = typer.Option(None, "--lr", help="Overrides optim.lr."),
    seed: Optional[int] = typer.Option(None, help="Overrides train.seed."),
    weights_dir: Optional[Path] = typer.Option(None, "--weights-dir", help="Overrides model.weights_dir (VAE, text encoder)."),
    init_from: Optional[Path] = typer.Option(None, "--init-from", help="Overrides model.init_from (a STAR or VEnhancer checkpoint)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start over in an output folder that holds a run: delete its checkpoints, metrics, logs, validation clips and weights first."),
) -> None:
    """Fine-tune STAR's ControlNet and LIEMs with the v-loss + Dynamic Frequency loss.

    Example: star train --config configs/train.example.toml --max-steps 2000
    Multi-GPU: accelerate launch --multi_gpu -m star_cli train --config cfg.toml
    """
    from star_cli.train import run_training

    overrides = {
        "train.output_dir": output_dir,
        "train.max_steps": max_steps,
        "optim.lr": learning_rate,
        "train.seed": seed,
        "model.weights_dir": weights_dir,
        "model.init_from": init_from,
    }
    console = _stderr()
    _run(
        lambda: run_training(config, {k: v for k, v in overrides.items() if v is not None}, resume, console, overwrite=overwrite),
        console,
    )


@app.command(cls=StarCommand)
def degrade(
    hr_dir: Path = typer.Argument(..., help="Folder of high-quality videos.", show_default=False),
    out_dir: Path = typer.Argument(..., help="Writes gt/, lq/ and text/ here.", show_default=False),
    preset: str = typer.Option("light", help="light or heavy (Real-ESRGAN second-order + video compression)."),
    scale: Optional[int] = typer.Option(None, "--scale", "-s", help="How many times smaller LQ is than GT (a whole number).", show_default="4, the preset's"),
    seed: int = typer.Option(0, help="Seed of the degradation draw."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing pairs."),
) -> None:
    """Make training pairs from HR videos with the degradation pipeline.

    Example: star degrade footage/ pairs/ --preset heavy
    """
    from star_cli.train import run_degrade

    console = _stderr()
    _run(lambda: run_degrade(hr_dir, out_dir, preset=preset, seed=seed, overwrite=overwrite, console=console, scale=scale), console)


def main() -> None:
    """Console-script entry point: usage errors too leave as one line (exit 2)."""
    # Our own rich progress is the only one: silence transformers' and the hub's tqdm bars,
    # and libraries' Python warnings (they speak to developers, not to the user of a command).
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if not sys.warnoptions:
        warnings.simplefilter("ignore")
    try:
        code = app(prog_name="star", standalone_mode=False)
    except typer.exceptions.TyperException as error:  # click's UsageError and friends
        text = error.format_message()
        # Empty when the help was shown for a bare `star`; on a launched run's ranks but 0, rank 0 says it.
        if text and reporting_process():
            ctx = getattr(error, "ctx", None)
            command = ctx.command_path if ctx is not None else "star"
            _stderr().print(message(f"{text} (see '{command} --help')", "error:", "bold red"), soft_wrap=True)
        sys.exit(getattr(error, "exit_code", 2))
    except typer.Abort:
        sys.exit(EXIT_INTERRUPTED)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()

"""What our I/O path costs: `star upscale --engine lanczos` against the ffmpeg binary, and its memory.

1. Time. The same clip is upscaled with the same Lanczos scale and the same encode
   (libx264, crf 18, preset medium, yuv420p, audio copied) twice per round: by our
   console script (decode -> RGB -> Lanczos -> YUV -> encode -> remux, through PyAV)
   and by the ffmpeg binary shipped with imageio-ffmpeg (`-vf scale=...:flags=lanczos`,
   which never leaves YUV), told to do the same colour work we do: convert the source's
   matrix (untagged SD: BT.601) to the one the output is tagged with (HD: BT.709) and tag it.
   Without that, ffmpeg writes the SD matrix untagged into HD video, which players show
   with shifted colours, and it does less work (on the pattern clip: 1.40 vs 1.95 s CPU). Both are whole processes, start-up included, run one after
   the other in alternating order; the median ratio of wall times is printed (target
   <= 1.3), and that of CPU times (user + system), which a busy machine disturbs less.
   Two clips, because the encoder's share of the work depends on the content: the test
   suite's pattern (smooth, almost free to encode: the ratio is close to pure I/O
   overhead) and real-footage-like content: a zoom through the Mandelbrot set (texture
   everywhere, every pixel moving) under temporal film grain (fresh noise in each frame,
   as camera sensors and film give), which the encoder must work for like real footage.
2. Memory. Peak resident memory of `star upscale` on 60 and on 600 frames of the same
   clip (target: ratio <= 1.15, i.e. memory does not grow with the video's length).

    python benchmarks/io_overhead.py [--width 640 --height 360 --frames 120 --scale 2 --rounds 3]
                                     [--content pattern footage] [--short 60 --long 600]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import imageio_ffmpeg

from av.video.reformatter import Colorspace

from star_cli.pipeline.plan import output_size
from star_cli.testing.media import make_video
from star_cli.video.colour import decode_matrix, encode_matrix, is_hd, output_tags
from star_cli.video.probe import probe

STAR = [sys.executable, "-m", "star_cli"]
ENCODE = dict(crf="18", preset="medium")
CONTENTS = ("pattern", "footage")
FOOTAGE = "mandelbrot=size={w}x{h}:rate=24,noise=alls=14:allf=t+u,format=yuv420p"
"""Texture + motion (a Mandelbrot zoom) + temporal grain: what real footage asks of the encoder."""


def run_child(command: list[str]) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds, peak resident bytes) of one child process, which must succeed."""
    with tempfile.TemporaryFile() as stderr:  # a file, not a pipe: a chatty child can never block on it
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
        _, status, usage = os.wait4(process.pid, 0)  # the child's own rusage, not all children's
        seconds = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode:
            stderr.seek(0)
            raise SystemExit(f"{command[0]} failed ({process.returncode}): {stderr.read().decode(errors='replace').strip()}")
    return seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024  # Linux reports kilobytes


def star_command(source: Path, dest: Path, scale: float) -> list[str]:
    return [*STAR, "upscale", str(source), "-o", str(dest), "--engine", "lanczos", "--scale", f"{scale:g}",
            "--codec", "h264", "--crf", ENCODE["crf"], "--preset", ENCODE["preset"], "--pix-fmt", "yuv420p",
            "--quiet", "--overwrite"]


def colour_work(source: Path, width: int, height: int) -> tuple[str, list[str]]:
    """ffmpeg scale options and output tags doing what our writer does: convert to, and tag, the output's matrix."""
    info = probe(source)
    guessed = decode_matrix(info.colour, info.height, info.width)
    tags = output_tags(info.colour, height, width=width, source_hd=is_hd(info.width, info.height))
    names = {Colorspace.ITU709: "bt709", Colorspace.ITU601: "bt601"}
    convert = f":in_color_matrix={names.get(guessed, 'bt709')}:out_color_matrix={names.get(encode_matrix(tags), 'bt709')}"
    return convert, ["-colorspace", tags.matrix, "-color_primaries", tags.primaries, "-color_trc", tags.trc]


def ffmpeg_command(source: Path, dest: Path, width: int, height: int) -> list[str]:
    convert, tags = colour_work(source, width, height)
    return [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y", "-i", str(source),
            "-vf", f"scale={width}:{height}:flags=lanczos{convert}", "-c:v", "libx264", "-crf", ENCODE["crf"],
            "-preset", ENCODE["preset"], "-pix_fmt", "yuv420p", *tags, "-c:a", "copy", str(dest)]


def make_clip(path: Path, content: str, frames: int, width: int, height: int) -> Path:
    """A 24 fps clip with a sine audio track: the tests' moving pattern, or footage-like grainy texture in motion."""
    if content == "pattern":
        return make_video(path, frames=frames, width=width, height=height)
    lavfi = [("lavfi", FOOTAGE.format(w=width, h=height)), ("lavfi", "sine=frequency=440:sample_rate=48000")]
    inputs = [arg for fmt, spec in lavfi for arg in ("-f", fmt, "-i", spec)]
    subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y", *inputs, "-frames:v", str(frames),
         "-t", f"{frames / 24:.3f}", "-c:v", "libx264", "-crf", "18", "-preset", "veryfast", "-pix_fmt", "yuv420p",
         "-c:a", "aac", str(path)],
        check=True,
    )
    return path


def time_ratio(folder: Path, content: str, args: argparse.Namespace) -> None:
    source = make_clip(folder / f"{content}.mp4", content, args.frames, args.width, args.height)
    out_h, out_w = output_size(args.height, args.width, args.scale)  # our rounding, so both make the same size
    ours_cmd = star_command(source, folder / "ours.mp4", args.scale)
    theirs_cmd = ffmpeg_command(source, folder / "ffmpeg.mp4", out_w, out_h)
    ours, theirs = [], []
    for round_ in range(args.rounds):
        pair = [(ours, ours_cmd), (theirs, theirs_cmd)]
        for times, command in pair if round_ % 2 == 0 else pair[::-1]:
            times.append(run_child(command)[:2])
    (a, a_cpu), (b, b_cpu) = [[statistics.median(column) for column in zip(*runs)] for runs in (ours, theirs)]
    print(f"time, {content}: {args.frames} frames {args.width}x{args.height} -> {out_w}x{out_h}, lanczos + libx264 "
          f"crf {ENCODE['crf']} {ENCODE['preset']}, median of {args.rounds}")
    print(f"  star upscale --engine lanczos  {a:7.2f} s  ({args.frames / a:5.1f} fps)  CPU {a_cpu:7.2f} s")
    print(f"  ffmpeg (imageio-ffmpeg)        {b:7.2f} s  ({args.frames / b:5.1f} fps)  CPU {b_cpu:7.2f} s")
    print(f"  ratio star / ffmpeg            {a / b:7.2f}   (target <= 1.3)      CPU {a_cpu / b_cpu:7.2f}")


def memory_ratio(folder: Path, args: argparse.Namespace) -> None:
    peaks = {}
    for frames in (args.short, args.long):
        source = make_video(folder / f"clip{frames}.mp4", frames=frames, width=args.width, height=args.height)
        peaks[frames] = run_child(star_command(source, folder / f"out{frames}.mp4", args.scale))[2]
    short, long = peaks[args.short], peaks[args.long]
    print(f"memory: peak RSS of star upscale --engine lanczos, {args.width}x{args.height} x{args.scale:g}")
    print(f"  {args.short:4d} frames  {short / 2**20:7.1f} MiB")
    print(f"  {args.long:4d} frames  {long / 2**20:7.1f} MiB")
    print(f"  ratio {args.long}/{args.short}    {long / short:7.3f}   (target <= 1.15)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--scale", type=float, default=2.0)
    parser.add_argument("--frames", type=int, default=120, help="clip length for the time comparison")
    parser.add_argument("--content", choices=CONTENTS, nargs="+", default=list(CONTENTS), help="clips to time")
    parser.add_argument("--rounds", type=int, default=3, help="timed runs of each side (median reported)")
    parser.add_argument("--short", type=int, default=60, help="short clip for the memory comparison")
    parser.add_argument("--long", type=int, default=600, help="long clip for the memory comparison")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="star-io-bench-") as tmp:
        for content in args.content:
            time_ratio(Path(tmp), content, args)
        memory_ratio(Path(tmp), args)


if __name__ == "__main__":
    main()

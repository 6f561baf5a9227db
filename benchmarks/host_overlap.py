"""Does the host stall the engine? Wall time of the streaming loop against the engine's own compute.

`star upscale` with tiny random weights (the real STAR path, on the CPU) on a synthetic
clip, `--verbose`, which prints "engine compute X s, total Y s" for the streaming loop
(decode -> windows -> engine -> cross-fade -> encode; probing, scene detection and
loading come before it). Run twice in the same process: as shipped (decoding ahead and
encoding behind on threads, star_cli.pipeline.prefetch) and, as the baseline, with
both on the main thread. Target: total <= 1.1 x the engine's compute.

torch runs on one thread here, leaving the other core of a 2-core machine to the
reader and writer, as a GPU leaves the CPU to them.

    python benchmarks/host_overlap.py [--frames 48 --width 160 --height 96]
"""

from __future__ import annotations

import argparse
import io
import re
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import torch
from rich.console import Console

from star_cli.pipeline import upscale
from star_cli.pipeline.request import build_request
from star_cli.report import ConsoleReport
from star_cli.testing import make_tiny_weights
from star_cli.testing.media import make_video

TARGET = 1.1
REPORT = re.compile(r"engine compute ([\d.]+) s, total ([\d.]+) s")


class _SameThread:
    """WriteBehind's interface, writing on the caller's thread (the baseline)."""

    def __init__(self, sink, **_):
        self.put = sink

    def __enter__(self):
        return self

    def __exit__(self, *_):
        return None


def _same_thread(items: Iterable, **_) -> Iterator:
    yield from items


@contextmanager
def serial() -> Iterator[None]:
    with mock.patch.object(upscale, "prefetched", _same_thread), mock.patch.object(upscale, "WriteBehind", _SameThread):
        yield


def run(clip: Path, out: Path, weights: Path, args: argparse.Namespace) -> tuple[float, float]:
    request = build_request(
        input=clip, output=out, scale=2.0, engine="star", dry_run=False, overwrite=True, ignore_errors=False,
        chunk_len=args.chunk_len, chunk_overlap=2, blend="cosine", canvas="minimal", tile_size=None,
        window_chunks=1, scene_detect=True, checkpoint="light", weights_dir=weights, prompt="", prompt_file=None,
        seed=0, steps=args.steps, guidance=1.0, solver="dpmpp_2m_sde", color_fix="adain", device="cpu", dtype=None,
        offload="none", vae_group=3, resume=False, codec="h264", crf=18, preset="medium", pix_fmt=None,
        quiet=True, verbose=True,
    )
    captured = io.StringIO()
    report = ConsoleReport(Console(file=captured, width=200), quiet=False, verbose=True)
    with report:
        upscale.run_upscale(request, progress=report)
    match = REPORT.search(captured.getvalue())
    if match is None:
        raise RuntimeError(f"no timing line in:\n{captured.getvalue()}")
    return float(match.group(1)), float(match.group(2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--width", type=int, default=160)
    parser.add_argument("--height", type=int, default=96)
    parser.add_argument("--chunk-len", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        weights = make_tiny_weights(root / "weights")
        clip = make_video(root / "in.mp4", frames=args.frames, width=args.width, height=args.height)
        print(f"{args.frames} frames {args.width}x{args.height} x2, tiny weights, {args.steps} steps, "
              f"chunks of {args.chunk_len}, one chunk per window", flush=True)
        rows = []
        for label, context in (("serial (baseline)", serial), ("threaded (shipped)", contextmanager(lambda: iter([None])))):
            with context():
                engine, total = run(clip, root / "out.mp4", weights, args)
            rows.append((label, engine, total))
            print(f"  {label:<20} engine compute {engine:7.2f} s, total {total:7.2f} s: {total / engine:.3f}x", flush=True)
    (_, _, serial_total), (_, engine, total) = rows
    verdict = "meets" if total / engine <= TARGET else "misses"
    print(f"threaded total / engine compute: {total / engine:.3f} ({verdict} the target <= {TARGET}); "
          f"threaded / serial wall: {total / serial_total:.3f}")


if __name__ == "__main__":
    main()

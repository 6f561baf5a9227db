"""STARUNet forward cost on CPU: time, peak RSS, and the parameter counts of both sizes.

Each measurement runs in its own process (peak RSS is per process). The baseline
is the plain forward; the variant chunks the GEGLU feed-forwards, which must cost
about the same time and no more memory (it pays off at full size, where the
top-level GEGLU is the largest activation). Default sizes are the tiny-a fixture:
dim 32, head_dim 16, 8 heads, 2 ResBlocks per level; B=1, F=6, latent 18x16.

    python benchmarks/unet_forward.py [--frames 6 --height 18 --width 16 --repeats 5]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch

from star_cli.models import STARUNet

TINY_A = dict(dim=32, head_dim=16, num_heads=8, dim_mult=(1, 2, 4, 4), num_res_blocks=2, context_dim=1024)


def parameter_counts() -> dict[str, int]:
    """Full size (built on the meta device, no memory) and tiny-a."""
    with torch.device("meta"):
        full = STARUNet()
        tiny = STARUNet(**TINY_A)
    control = sum(p.numel() for p in full.VideoControlNet.parameters())
    return {
        "full_total": sum(p.numel() for p in full.parameters()),
        "full_controlnet": control,
        "full_unet_only": sum(p.numel() for p in full.parameters()) - control,
        "tiny_a_total": sum(p.numel() for p in tiny.parameters()),
    }


def _current_rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


def measure(args: argparse.Namespace) -> dict[str, float]:
    """Worker: build tiny-a with random weights, time `repeats` forwards, report peak RSS growth."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = STARUNet(**TINY_A).eval()
    model.set_feed_forward_chunk(args.ff_chunk)
    g = torch.Generator().manual_seed(1)
    shape = (1, 4, args.frames, args.height, args.width)
    x, hint = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    y, t = torch.randn(1, 77, 1024, generator=g), torch.tensor([500])
    rss_before = _current_rss_mib()
    times = []
    with torch.no_grad():
        for _ in range(args.repeats + 1):  # the first call warms up allocators and kernels
            start = time.perf_counter()
            model(x, t, y, hint=hint)
            times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"seconds": statistics.median(times[1:]), "peak_rss_mib": peak, "peak_growth_mib": peak - rss_before}


def run_worker(args: argparse.Namespace, ff_chunk: int | None) -> dict[str, float]:
    command = [
        sys.executable, __file__, "--worker", "--frames", str(args.frames), "--height", str(args.height),
        "--width", str(args.width), "--repeats", str(args.repeats), "--threads", str(args.threads),
    ]
    if ff_chunk is not None:
        command += ["--ff-chunk", str(ff_chunk)]
    result = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=6)
    parser.add_argument("--height", type=int, default=18)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--ff-chunk", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure(args)))
        return

    for name, count in parameter_counts().items():
        print(f"params {name:<16} {count:>14,}")
    chunk = max(1, args.height * args.width // 4)
    base = run_worker(args, None)
    chunked = run_worker(args, chunk)
    print(f"tiny-a forward, B=1 F={args.frames} latent {args.height}x{args.width}, {args.threads} thread(s):")
    for label, row in (("baseline", base), (f"ff chunk {chunk}", chunked)):
        print(
            f"  {label:<14} {row['seconds'] * 1000:8.1f} ms   peak RSS {row['peak_rss_mib']:7.1f} MiB"
            f"   forward growth {row['peak_growth_mib']:6.1f} MiB"
        )
    print(
        f"  ratio chunked/baseline: time {chunked['seconds'] / base['seconds']:.2f}, "
        f"peak RSS {chunked['peak_rss_mib'] / base['peak_rss_mib']:.2f}"
    )


if __name__ == "__main__":
    main()

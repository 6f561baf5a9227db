"""The MFU ceiling of eager PyTorch: one forward's memory-bound traffic against what compute leaves.

    python benchmarks/memory_traffic.py [--bandwidth 2970 --attention-ms 639 --gemm-ms 594]

Counts, on meta tensors (no GPU, no weights, seconds), the bytes that every memory-bound op
of one batched-guidance forward of the full-size UNet + ControlNet reads and writes in eager
PyTorch: everything but the matrix products, convolutions and attentions (norms, LIEM gates,
activations, residual adds, layout copies). At the card's copy bandwidth that is the least
time eager kernels can take for them, however well each is written. Added to the attention
and GEMM time measured by `gpu_kernels.py` (defaults: the H100 run of 2026-11-26), it bounds
the forward's MFU from above, and the output compares that bound with the 40% target: below
it, no eager schedule reaches the target; only fusing this work into the matrix products
and attention (or faster attention) can.

Each op is counted as it runs: inputs read once, outputs written once (caches and fusion
would lower it; broadcast operands count their own size). Views and allocations cost nothing.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

sys.path.insert(0, str(Path(__file__).parent))
from flops import forward_flops, meta_unet  # noqa: E402

from star_cli.models.attention import Attention  # noqa: E402
from star_cli.models.config import STARConfig  # noqa: E402
from star_cli.testing.weights import TINY_UNET  # noqa: E402

# aten ops that run at matrix-unit speed (counted by the measured GEMM and attention times instead).
COMPUTE_OPS = {"mm", "bmm", "addmm", "baddbmm", "convolution", "cudnn_convolution"}
VIEW_OPS = {
    "view", "_unsafe_view", "t", "transpose", "permute", "unsqueeze", "squeeze", "slice", "select",
    "expand", "split", "split_with_sizes", "unflatten", "detach", "alias", "as_strided",
    "empty", "empty_like", "new_empty",
}
TARGET_MFU = 0.40


class TrafficCounter(TorchDispatchMode):
    """Bytes read + written per memory-bound aten op, outside `Attention` modules (their GEMMs and SDPA)."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes: Counter[str] = Counter()
        self.attention_depth = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001 - torch's protocol
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__.rstrip("_")
        if self.attention_depth or name in COMPUTE_OPS or name in VIEW_OPS:
            return out
        tensors = [t for t in tree_flatten((args, kwargs, out))[0] if isinstance(t, torch.Tensor)]
        self.bytes[name] += sum(t.numel() * t.element_size() for t in tensors)
        return out

    @contextmanager
    def watching(self, model: torch.nn.Module) -> Iterator[None]:
        """Leave out everything inside an attention (q/k/v projections and SDPA: measured as attention)."""
        def enter(*_: object) -> None:
            self.attention_depth += 1

        def leave(*_: object) -> None:
            self.attention_depth -= 1

        attentions = [module for module in model.modules() if isinstance(module, Attention)]
        hooks = [hook for module in attentions for hook in (module.register_forward_pre_hook(enter), module.register_forward_hook(leave))]
        try:
            yield
        finally:
            for hook in hooks:  # the model is `flops.meta_unet`'s shared one
                hook.remove()


def forward_traffic(config: STARConfig, batch: int, frames: int, height: int, width: int, chunk: int | None) -> Counter[str]:
    """Bytes per memory-bound op of one fp16 forward on a batch x frames x height x width latent."""
    model = meta_unet(config)  # the one `forward_flops` counts on (built once per config)
    model.set_feed_forward_chunk(chunk)  # same FLOPs, other temporaries
    counter = TrafficCounter()
    x = torch.empty(batch, 4, frames, height, width, dtype=torch.float16, device="meta")
    y = torch.empty(batch, 77, config.context_dim, dtype=torch.float16, device="meta")
    t = torch.zeros(batch, dtype=torch.long, device="meta")
    with torch.no_grad(), counter.watching(model), counter:
        model(x, t, y, x.clone())
    return counter.bytes


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=2, help="2: both guidance branches in one batch")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--height", type=int, default=122, help="latent rows (toy canvas: 122)")
    parser.add_argument("--width", type=int, default=216, help="latent columns (toy canvas: 216)")
    parser.add_argument("--bandwidth", type=float, default=2970.0, help="GB/s (H100 copy, measured)")
    parser.add_argument("--attention-ms", type=float, default=639.0, help="measured attention time of this forward")
    parser.add_argument("--gemm-ms", type=float, default=594.0, help="measured GEMM + convolution time of this forward")
    parser.add_argument("--peak-tflops", type=float, default=989.4, help="the card's dense fp16 peak")
    parser.add_argument("--tiny", action="store_true", help="tiny model and shapes: a smoke test")
    args = parser.parse_args(argv)
    if args.tiny:  # no measured times for the tiny model: the ceiling from its memory floor alone
        args.frames, args.height, args.width = 3, 10, 8
        args.attention_ms = args.gemm_ms = 0.0
    return args


def main(argv: list[str] | None = None) -> dict[str, float]:
    from star_cli.families.i2vgenxl.engine import FEED_FORWARD_CHUNK

    args = parse_args(argv)
    config = STARConfig(**TINY_UNET) if args.tiny else STARConfig()
    traffic = forward_traffic(config, args.batch, args.frames, args.height, args.width, FEED_FORWARD_CHUNK)
    total = sum(traffic.values())
    floor_ms = total / args.bandwidth / 1e6
    flop = forward_flops(args.frames, args.height, args.width, config) * args.batch
    best_ms = args.attention_ms + args.gemm_ms + floor_ms
    ceiling = flop / (best_ms / 1e3) / (args.peak_tflops * 1e12)
    print(f"forward {args.batch} x {args.frames} x {args.height}x{args.width}: {flop / 1e12:.1f} TFLOP; memory-bound "
          f"traffic {total / 1e9:.1f} GB = {floor_ms:.0f} ms at {args.bandwidth:.0f} GB/s")
    for name, size in traffic.most_common(10):
        print(f"  {name:<24} {size / 1e9:8.1f} GB")
    print(f"attention {args.attention_ms:.0f} + GEMM {args.gemm_ms:.0f} + memory floor {floor_ms:.0f} = {best_ms:.0f} ms: "
          f"MFU ceiling {ceiling:.1%} (target {TARGET_MFU:.0%}; ceiling / target {ceiling / TARGET_MFU:.2f})")
    return {"traffic_gb": total / 1e9, "floor_ms": floor_ms, "tflop": flop / 1e12, "mfu_ceiling": ceiling}


if __name__ == "__main__":
    main()

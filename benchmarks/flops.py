"""Full-size UNet FLOPs per output frame: our default plan against the reference's policy.

Every UNet pass of a plan (chunk x tile, per model step and guidance branch) is counted
with `torch.utils.flop_counter.FlopCounterMode` on the full-size STARUNet built on the
meta device (no weights, no data), attention counted as the memory-efficient kernel,
as in the reference's MEASUREMENTS.md; one forward per distinct region shape is counted
and multiplied by how often the plan runs it. Both policies are measured in the same
run, so the ratio is the result; `star_cli.pipeline.estimate` (what --dry-run prints)
is shown beside it as a check of its fitted constants.

    python benchmarks/flops.py [--frames 100 --height 240 --width 426]
"""

from __future__ import annotations

import argparse
import sys
from functools import cache
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _tracker import count_flops  # noqa: E402

from star_cli.models import STARUNet  # noqa: E402
from star_cli.models.config import STARConfig  # noqa: E402
from star_cli.pipeline.estimate import estimate  # noqa: E402
from star_cli.pipeline.plan import Plan, PlanOptions, make_plan  # noqa: E402

TARGET_RATIO = 0.8
# MEASUREMENTS.md: FLOPs of one reference forward, batch 1.
REFERENCE_FORWARD_TFLOP = {(32, 122, 216): 572.0, (32, 90, 160): 258.0}


@cache
def meta_unet(config: STARConfig = STARConfig()) -> STARUNet:
    with torch.device("meta"):
        return STARUNet(**config.to_dict()).to(torch.float16).eval()


@cache
def forward_flops(frames: int, height: int, width: int, config: STARConfig = STARConfig()) -> int:
    """FLOPs of one UNet forward (batch 1, one guidance branch) on a frames x height x width latent.

    `config` is the model's shape (the released full-size one by default).
    """
    model = meta_unet(config)
    shape = (1, 4, frames, height, width)
    x = torch.empty(shape, dtype=torch.float16, device="meta")
    y = torch.empty(1, 77, model.config.context_dim, dtype=torch.float16, device="meta")
    with count_flops() as counter:
        model(x, torch.zeros(1, dtype=torch.long, device="meta"), y, x.clone())
    return counter.get_total_flops()


def step_flops(plan: Plan, config: STARConfig = STARConfig()) -> int:
    """UNet FLOPs of one model step of one guidance branch: every region of every window."""
    return sum(count * forward_flops(*shape, config) for shape, count in plan.region_counts.items())


def plan_flops(plan: Plan) -> int:
    """UNet FLOPs of the whole plan: every region, every model step, every guidance branch."""
    return step_flops(plan) * plan.options.model_steps * plan.options.guidance_branches


def report(name: str, plan: Plan) -> float:
    total = plan_flops(plan)
    per_frame = total / plan.num_frames
    regions = ", ".join(f"{n} x {'x'.join(map(str, s))}" for s, n in sorted(plan.region_counts.items()))
    analytic = estimate(plan).flops_per_output_frame
    print(f"  {name:<10} regions per step: {regions}")
    print(f"  {'':<10} frame-evaluations {plan.frame_evaluations}, total {total / 1e15:7.2f} PFLOP, "
          f"per output frame {per_frame / 1e12:6.2f} TFLOP (estimate.py {analytic / 1e12:6.2f})")
    return per_frame


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--width", type=int, default=426)
    args = parser.parse_args()
    torch.set_num_threads(1)

    print("UNet forward, batch 1 (ours on meta vs the reference's MEASUREMENTS.md):")
    for shape, reference_tflop in REFERENCE_FORWARD_TFLOP.items():
        tflop = forward_flops(*shape) / 1e12
        print(f"  {'x'.join(map(str, shape)):<11} {tflop:8.2f} TFLOP  reference {reference_tflop:6.1f}  "
              f"ratio {tflop / reference_tflop:.4f}", flush=True)

    print(f"{args.frames} frames of {args.width}x{args.height} at x4, UNet only, all steps and branches:")
    reference = report("reference", make_plan(args.frames, args.height, args.width, PlanOptions.reference()))
    ours = report("ours", make_plan(args.frames, args.height, args.width, PlanOptions()))
    ratio = ours / reference
    verdict = "meets" if ratio <= TARGET_RATIO else "misses"
    print(f"ours / reference per output frame: {ratio:.3f} ({verdict} the target <= {TARGET_RATIO})")


if __name__ == "__main__":
    main()

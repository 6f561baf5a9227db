from __future__ import annotations

from rich.console import Console

from star_cli.pipeline.estimate import estimate
from star_cli.pipeline.plan import PlanOptions, make_plan
from star_cli.pipeline.render import plan_summary


def render(plan, **kwargs) -> str:
    console = Console(record=True, width=200)
    console.print(plan_summary(plan, estimate(plan), **kwargs))
    return console.export_text()


def test_dry_run_summary_shows_plan_and_costs():
    text = render(make_plan(100, 240, 426, PlanOptions()), source="clip.mp4")
    for needle in ["clip.mp4", "no scene cuts", "426x240, 100 frames", "1704x960 (x4)",
                   "1728x976 px (latent 216x122)", "edge replicate",
                   "4 of 31 frames, overlap 8", "none (whole canvas", "112 (4 chunks x 1 tiles x 14 steps",
                   "62.1 PFLOP", "encode whole frames (fp32), decode whole frames", "0.76 of the reference's policy", "GPU memory", "Host memory", "0-30, 23-53, 46-76, 69-99"]:
        assert needle in text, needle


def test_summary_of_reference_and_long_videos():
    ref = render(make_plan(100, 240, 426, PlanOptions.reference()))
    assert "constant 1" in ref and "none (whole canvas" in ref and "overlap 16, cut join" in ref
    long = render(make_plan(5000, 16, 16, PlanOptions(), scene_cuts=[100]))
    assert "scene cuts at 100" in long and "..." in long and "4999" in long


def test_other_engines_show_sizes_only():
    text = render(make_plan(100, 240, 426, PlanOptions()), engine="lanczos")
    assert "1704x960 (x4)" in text and "lanczos" in text
    assert "UNet" not in text and "Windows" not in text

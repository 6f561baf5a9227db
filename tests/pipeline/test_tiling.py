"""`--tile-size auto`: whole frames whenever the estimate fits, else the largest tiles that fit."""

from __future__ import annotations

from dataclasses import replace

import pytest
from rich.console import Console

from star_cli.pipeline.estimate import GiB
from star_cli.pipeline.plan import PlanOptions, make_plan
from star_cli.pipeline.plan_rules import is_valid_latent_height, is_valid_latent_width
from star_cli.pipeline.render import plan_summary
from star_cli.pipeline.tiling import MEMORY_FRACTION, MemoryBudget, plan_tiles, unet_tile_candidates

FRAMES, HEIGHT, WIDTH = 72, 240, 426  # 426x240 at x4: the reference's 976x1728-sized canvas


def auto(budget: MemoryBudget, **options):
    return plan_tiles(FRAMES, HEIGHT, WIDTH, PlanOptions(**options), budget)


def test_without_a_memory_figure_nothing_is_tiled():
    plan = auto(MemoryBudget(None, None))
    assert len(plan.tiles) == 1 and plan.options.vae_tile is None and plan.options.vae_encode_tile is None
    assert "no memory figure" in plan.tiling


def test_whole_frames_when_they_fit_the_card():
    budget = MemoryBudget(80 * GiB, 64 * GiB)
    plan = auto(budget)
    assert len(plan.tiles) == 1 and plan.options.vae_tile is None and plan.options.vae_encode_tile is None
    assert plan.tiling.startswith("whole canvas and whole VAE frames (exact)")
    assert budget.need(plan) <= MEMORY_FRACTION * 80 * GiB


@pytest.mark.parametrize("free_gib", [12, 8])
def test_the_largest_tiles_that_fit_a_small_card(free_gib):
    budget = MemoryBudget(free_gib * GiB, 64 * GiB)
    plan = auto(budget)
    limit = budget.limit
    assert budget.need(plan) <= limit
    assert len(plan.tiles) > 1 and "tiled because whole frames would need" in plan.tiling and "UNet FLOPs" in plan.tiling
    for tile in plan.tiles:
        assert is_valid_latent_height(tile.height) and is_valid_latent_width(tile.width)
    chosen = plan.tiles[0].height * plan.tiles[0].width
    larger = [t for t in unet_tile_candidates(plan.canvas, 128) if t is None or t[0] * t[1] > chosen * 64]
    for tile in larger:  # every larger UNet tile (VAE as chosen, or smaller) would not fit
        bigger = make_plan(FRAMES, HEIGHT, WIDTH, replace(plan.options, tile_size=tile, vae_tile=48, vae_encode_tile=48))
        assert budget.need(bigger) > limit


def test_cpu_runs_plan_against_host_memory():
    roomy = auto(MemoryBudget(None, 256 * GiB, dtype_bytes=4))
    assert len(roomy.tiles) == 1 and "host memory available" in roomy.tiling
    tight = auto(MemoryBudget(None, 24 * GiB, dtype_bytes=4))
    assert len(tight.tiles) > 1 or tight.options.vae_tile is not None


def test_fixed_sizes_and_none_are_kept():
    budget = MemoryBudget(1 * GiB, 1 * GiB)
    assert len(auto(budget, tile_size=(720, 1280)).tiles) == 4
    untiled = auto(budget, tile_size=None)
    assert len(untiled.tiles) == 1 and untiled.tiling == ""


def test_candidates_start_with_the_whole_canvas_and_shrink():
    canvas = make_plan(1, HEIGHT, WIDTH, PlanOptions()).canvas
    sizes = list(unet_tile_candidates(canvas, 128))
    assert sizes[0] is None
    areas = [h * w for h, w in sizes[1:]]
    assert areas == sorted(areas, reverse=True) and len(set(sizes[1:])) == len(sizes) - 1


def test_dry_run_says_why_it_tiles():
    plan = auto(MemoryBudget(8 * GiB, 64 * GiB))
    console = Console(record=True, width=300)
    console.print(plan_summary(plan, MemoryBudget(8 * GiB, 64 * GiB).estimate(plan)))
    text = console.export_text()
    assert "Tiling" in text and "tiled because whole frames would need" in text and "px tiles" in text


@pytest.mark.parametrize(
    ("words", "expected"),
    [([], "none (whole canvas"), (["--tile-size", "auto"], "none (whole canvas"),
     (["--tile-size", "none"], "none (whole canvas"), (["--tile-size", "400x384"], "4 (2x2) of")],
)
def test_tile_size_words_on_the_command_line(tmp_path, words, expected):
    from typer.testing import CliRunner

    from star_cli.cli import app
    from star_cli.testing.media import make_video

    clip = make_video(tmp_path / "in.mp4", frames=4, width=160, height=120)
    args = ["upscale", str(clip), "-o", str(tmp_path / "out.mp4"), "--dry-run", "--scale", "4", "--device", "cpu", *words]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert expected in result.output


def test_bad_quantize_is_bad_input(tmp_path):
    from typer.testing import CliRunner

    from star_cli.cli import app

    result = CliRunner().invoke(app, ["upscale", str(tmp_path / "x.mp4"), "-o", str(tmp_path / "y.mp4"), "--quantize", "floor"])
    assert result.exit_code == 2 and "--quantize must be one of round, truncate" in result.output

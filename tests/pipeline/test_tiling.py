"""`--tile-size auto`: whole frames whenever the estimate fits, else the largest tiles that fit."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from rich.console import Console

from star_cli.pipeline.estimate import GiB
from star_cli.pipeline.memory import least_free
from star_cli.pipeline.plan import PlanOptions, make_plan
from star_cli.pipeline.plan_rules import is_valid_latent_height, is_valid_latent_width
from star_cli.pipeline.prepare import prepare
from star_cli.pipeline.render import plan_summary
from star_cli.pipeline.request import build_request, request_defaults
from star_cli.pipeline.resume import WindowStore, stored_tiles, work_folder
from star_cli.pipeline.tiling import (
    MEMORY_FRACTION,
    MemoryBudget,
    plan_tiles,
    restore_tiles,
    tile_choice,
    unet_tile_candidates,
)
from star_cli.testing.media import make_video

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


def test_a_tile_choice_round_trips_and_only_replaces_auto():
    chosen = PlanOptions(scale=4, tile_size=(592, 960), vae_tile=64, vae_encode_tile=None)
    choice = json.loads(json.dumps(tile_choice(chosen)))  # as stored in the work folder
    restored = restore_tiles(PlanOptions(scale=4), choice)
    assert (restored.tile_size, restored.vae_tile, restored.vae_encode_tile) == ((592, 960), 64, None)
    assert restore_tiles(PlanOptions(scale=4, tile_size=None), choice) is None  # the user fixed the tiles
    for bad in (None, [], {"tile_size": None}, {**choice, "tile_size": [592]}, {**choice, "vae_tile": "64"},
                {**choice, "vae_tile": -1}, {**choice, "tile_size": [592, True]}):
        assert restore_tiles(PlanOptions(scale=4), bad) is None, bad


def test_resume_plans_the_tiles_the_interrupted_run_stored(tmp_path, monkeypatch):
    clip = make_video(tmp_path / "in.mp4", frames=4, width=32, height=24)
    dest = tmp_path / "out.mkv"
    monkeypatch.setattr("star_cli.pipeline.prepare.memory_budget", lambda *args: MemoryBudget(None, 256 * GiB, dtype_bytes=4))

    def planned(resume: bool):
        request = build_request(**{**request_defaults(), "input": clip, "output": dest, "resume": resume, "device": "cpu"})
        (job,) = prepare(request).jobs
        return job.plan

    assert planned(resume=True).options.vae_tile is None  # plenty of memory, no work folder: whole frames
    WindowStore(work_folder(dest), {"version": "x"}, resume=False,
                tiles=tile_choice(PlanOptions(scale=4, tile_size=None, vae_tile=48, vae_encode_tile=64)))
    assert stored_tiles(dest)["vae_tile"] == 48
    plan = planned(resume=True)
    assert (plan.options.tile_size, plan.options.vae_tile, plan.options.vae_encode_tile) == (None, 48, 64)
    assert "--resume" in plan.tiling
    assert planned(resume=False).options.vae_tile is None  # a fresh run plans for the memory free now


def test_ranks_plan_for_the_least_free_memory_any_of_them_reports():
    assert least_free([(40 * GiB, 100 * GiB), (12 * GiB, 90 * GiB), (None, None)]) == (12 * GiB, 90 * GiB)
    assert least_free([(None, 64 * GiB), (None, None)]) == (None, 64 * GiB)
    assert least_free([(None, None)]) == (None, None)

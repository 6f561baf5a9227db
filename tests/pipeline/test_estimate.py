from __future__ import annotations

from dataclasses import replace

import pytest

from star_cli.errors import InputError
from star_cli.pipeline.estimate import (
    VAE_ENCODE_CHANNELS,
    GiB,
    activation_bytes,
    check_fits,
    estimate,
    flops_per_frame,
    vae_encode_bytes,
)
from star_cli.pipeline.plan import PlanOptions, make_plan
from star_cli.pipeline.tiling import MemoryBudget, plan_tiles


# Our UNet with the engine's feed-forward slicing, measured by benchmarks/vram_estimate.py.
@pytest.mark.parametrize("frames,h,w,gib", [(32, 74, 120, 3.08), (32, 90, 160, 4.91), (32, 122, 216, 8.87)])
def test_activation_model_matches_measurements(frames, h, w, gib):
    assert activation_bytes(frames, h * w) / GiB == pytest.approx(gib, rel=0.01)


def test_flops_model_matches_measurements_and_stays_positive():
    assert flops_per_frame(122 * 216) == pytest.approx(17.9e12)
    assert flops_per_frame(90 * 160) == pytest.approx(8.06e12)
    assert 0 < flops_per_frame(2 * 8) < flops_per_frame(10 * 16)


def test_reference_policy_flops():
    ref = estimate(make_plan(100, 240, 426, PlanOptions.reference()))
    assert ref.flops == pytest.approx(164 * 17.9e12 * 2 * 14)  # about 82 PFLOP (MEASUREMENTS.md)


@pytest.mark.parametrize(("offload", "target_gib"), [("none", 20), ("model", 12), ("sequential", 8)])
def test_defaults_meet_the_gpu_targets_and_do_not_grow_with_length(offload, target_gib):
    """72 frames of 426x240 at x4 on a card with `target_gib` free: auto tiles fit, whatever the length."""
    budget = MemoryBudget(target_gib * GiB, 64 * GiB, offload=offload)
    short, long, longer = (
        estimate(plan_tiles(n, 240, 426, PlanOptions(), budget), offload=offload) for n in (72, 720, 7200)
    )
    assert short.device_bytes <= long.device_bytes <= target_gib * GiB
    assert longer.device_bytes == long.device_bytes


def test_vae_encode_stops_growing_with_the_canvas_beyond_its_tile():
    """Whole canvas frames encode at once (float32); with encode tiles of 2048 px the peak stops growing."""
    default = make_plan(10, 240, 426, PlanOptions())
    assert vae_encode_bytes(default) == 976 * 1728 * VAE_ENCODE_CHANNELS * 4
    tiled = PlanOptions(vae_encode_tile=256)
    full_hd_x2 = make_plan(10, 1080, 1920, replace(tiled, scale=2))
    full_hd_x4 = make_plan(10, 1080, 1920, replace(tiled, scale=4))
    assert full_hd_x4.canvas.height > full_hd_x2.canvas.height > 2048
    assert vae_encode_bytes(full_hd_x2) == vae_encode_bytes(full_hd_x4) == 2048 * 2048 * VAE_ENCODE_CHANNELS * 4
    for offload, gib in (("model", 12), ("sequential", 8)):
        plan = plan_tiles(10, 1080, 1920, PlanOptions(scale=2), MemoryBudget(gib * GiB, 64 * GiB, offload=offload))
        assert estimate(plan, offload=offload).device_bytes <= gib * GiB


def test_default_costs_at_most_80_percent_of_reference_per_output_frame():
    ours = estimate(make_plan(100, 240, 426, PlanOptions()))
    ref = estimate(make_plan(100, 240, 426, PlanOptions.reference()))
    assert ours.flops_per_output_frame <= 0.8 * ref.flops_per_output_frame
    assert ours.device_bytes < ref.device_bytes  # absolute targets: test_defaults_meet_the_gpu_targets...


def test_offload_and_dtype_move_memory():
    plan = make_plan(100, 240, 426, PlanOptions())
    base, fp32 = estimate(plan), estimate(plan, dtype_bytes=4)
    model, sequential = estimate(plan, offload="model"), estimate(plan, offload="sequential")
    assert sequential.device_bytes < model.device_bytes < base.device_bytes
    # UNet in fp16 and VAE in fp32 (the text tower is freed before they load) leave the device.
    assert base.weights_bytes == 2_041_121_910 * 2 + 97_700_000 * 4
    assert base.device_bytes - sequential.device_bytes == base.weights_bytes - sequential.weights_bytes
    assert model.host_bytes == sequential.host_bytes == base.host_bytes + base.weights_bytes
    assert fp32.activation_bytes == pytest.approx(2 * base.activation_bytes, abs=2)
    assert estimate(plan, batched_guidance=True).activation_bytes == 2 * base.activation_bytes


def test_window_chunks_bound_host_frames():
    long = make_plan(2000, 540, 960, PlanOptions(scale=2))
    whole = make_plan(2000, 540, 960, PlanOptions(scale=2, window_chunks=None))
    assert estimate(long).frame_bytes * 10 < estimate(whole).frame_bytes


def test_check_fits():
    est = estimate(make_plan(100, 240, 426, PlanOptions()))
    check_fits(est, 64 * GiB, 24 * GiB)
    check_fits(est, 64 * GiB, None)
    with pytest.raises(InputError, match=r"GPU memory.*--tile-size.*--offload") as info:
        check_fits(est, 64 * GiB, 6 * GiB)
    assert "\n" not in str(info.value)
    with pytest.raises(InputError, match="--window-chunks"):
        check_fits(est, 2 * GiB, 24 * GiB)
    with pytest.raises(InputError, match="--chunk-len"):
        check_fits(est, 8 * GiB, None)
    offloaded = estimate(make_plan(100, 240, 426, PlanOptions()), offload="sequential")
    with pytest.raises(InputError) as info:
        check_fits(offloaded, 64 * GiB, 1 * GiB)
    assert "--offload" not in str(info.value)
    # without a GPU the weights are counted once, offloaded or not
    on_cpu = estimate(make_plan(100, 240, 426, PlanOptions()), dtype_bytes=4)
    need = on_cpu.host_bytes + on_cpu.device_bytes
    check_fits(on_cpu, need, None)
    check_fits(estimate(make_plan(100, 240, 426, PlanOptions()), dtype_bytes=4, offload="model"), need, None)
    with pytest.raises(InputError):
        check_fits(on_cpu, need - 1, None)

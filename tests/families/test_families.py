"""Model families: the registry, each family's defaults, the CogVideoX plan rules and memory policies."""

from __future__ import annotations

from pathlib import Path

import pytest

from star_cli.errors import InputError
from star_cli.families import MODELS, get_family
from star_cli.families.cogvideox.config import RELEASE, NativeSize, native_size
from star_cli.pipeline.estimate import GiB
from star_cli.pipeline.plan import PlanOptions, make_plan
from star_cli.pipeline.request import build_request

REQUEST = dict(
    input=Path("in.mp4"), output=Path("out.mp4"), scale=4.0, engine="star", dry_run=True, overwrite=False,
    ignore_errors=False, chunk_len=None, chunk_overlap=None, blend="cosine", canvas="minimal", tile_size=None,
    window_chunks=None, scene_detect=True, checkpoint=None, weights_dir=Path("/nonexistent/weights"), prompt="",
    prompt_file=None, seed=0, steps=None, guidance=None, solver="dpmpp_2m_sde", color_fix="adain", device="auto",
    dtype=None, offload="none", vae_group=3, resume=False, codec="auto", crf=None, preset="medium", pix_fmt=None,
    quiet=False, verbose=False,
)


def cog_options(**changes) -> PlanOptions:
    return build_request(**REQUEST, model="cogvideox").plan if not changes else build_request(**{**REQUEST, **changes}, model="cogvideox").plan


def test_every_model_name_has_a_family_and_others_are_refused():
    assert [get_family(name).name for name in MODELS] == list(MODELS)
    with pytest.raises(InputError, match="--model must be one of i2vgenxl, cogvideox"):
        get_family("sdxl")


def test_i2vgenxl_defaults_are_the_ones_star_always_had():
    request = build_request(**REQUEST)
    assert request.plan == PlanOptions(model_steps=14)
    assert (request.star.model, request.star.checkpoint, request.star.steps, request.star.guidance) == ("i2vgenxl", "light", 15, 7.5)


def test_cogvideox_defaults_follow_the_release_without_weights():
    request = build_request(**REQUEST, model="cogvideox")
    o = request.plan
    assert (o.chunk_len, o.tile_size, o.window_chunks, o.model_steps, o.guidance_branches) == (25, (480, 720), 1, 50, 2)
    assert (request.star.checkpoint, request.star.steps, request.star.guidance) == ("cogvideox", 50, 6.0)
    assert native_size(Path("/nonexistent"), None) == RELEASE


@pytest.mark.parametrize(("frames", "height", "width", "cuts"), [(100, 120, 180, [40]), (10, 60, 90, []), (60, 270, 480, [])])
def test_cogvideox_plans_native_tiles_and_clips_only(frames, height, width, cuts):
    plan = make_plan(frames, height, width, cog_options(), scene_cuts=cuts)
    assert all(t.height * 8 == 480 and t.width * 8 == 720 for t in plan.tiles)
    assert plan.canvas.height >= max(480, plan.output_size[0]) and plan.canvas.width >= max(720, plan.output_size[1])
    assert all(len(w.chunks) == 1 for w in plan.windows)
    for start, end in plan.shots:  # clips of exactly 25 frames inside a shot; a shorter shot is one short clip
        windows = [w for w in plan.windows if start <= w.start < end]
        assert all(w.end <= end and w.length == min(25, end - start) for w in windows)
        assert windows[0].start == start and windows[-1].end == end


def test_small_outputs_are_padded_up_to_the_native_frame():
    plan = make_plan(10, 60, 90, cog_options())  # 240x360 output
    assert (plan.canvas.height, plan.canvas.width) == (480, 720) and len(plan.tiles) == 1
    assert (plan.canvas.padding.bottom, plan.canvas.padding.right) == (240, 360)


@pytest.mark.parametrize(("offload", "target_gib"), [("none", 40), ("model", 24), ("sequential", 12)])
def test_release_clip_estimates_meet_the_memory_targets(offload, target_gib):
    plan = make_plan(25, 120, 180, cog_options())  # one 480x720 clip of 25 frames
    est = get_family("cogvideox").estimate(plan, dtype_bytes=2, offload=offload, vae_group=3)
    assert est.device_bytes <= target_gib * GiB
    assert (est.offloaded_bytes == 0) == (offload == "none") and est.flops > 0


def test_offload_modes_only_trade_device_memory_for_host_memory():
    plan = make_plan(25, 120, 180, cog_options())
    family = get_family("cogvideox")
    none, model, sequential = (family.estimate(plan, dtype_bytes=2, offload=m, vae_group=3) for m in ("none", "model", "sequential"))
    assert none.device_bytes > model.device_bytes > sequential.device_bytes
    assert none.host_bytes < model.host_bytes < sequential.host_bytes
    assert none.flops == model.flops == sequential.flops


def test_engine_preprocessing_is_the_reference_uint8_bicubic_at_the_output_size(fixtures_dir):
    """The fixture's 25 raw 24x16 frames at x4 give its `lq` exactly (any output size goes through the same kernel)."""
    import torch
    from safetensors import safe_open

    from star_cli.families.cogvideox.engine import CogVideoXEngine

    with safe_open(fixtures_dir / "star-cogvideox-reference" / "cogvideox_pipeline_tiny.safetensors", "pt") as f:
        raw, lq = f.get_tensor("frames_raw"), f.get_tensor("lq")
    native = NativeSize(64, 96, 25)
    options = PlanOptions(chunk_len=25, tile_size=(64, 96), tile_overlap=16, window_chunks=1, grid=cog_options().grid)
    plan = make_plan(25, 16, 24, options)
    engine = CogVideoXEngine(None, None, torch.device("cpu"), None, None, native, torch.device("cpu"), torch.float32)
    lr = engine._lr_canvas(raw.numpy(), plan)  # (1, 3, T, H, W)
    assert torch.equal(lr.permute(0, 2, 1, 3, 4), lq)


def test_engine_decode_matches_the_reference_frames(fixtures_dir):
    """Decode, feather (one tile), crop, AdaIN against the LR frames, truncate: the fixture's frames_out (<= 1 level, <= 0.1%)."""
    import json

    import torch
    from diffusers import AutoencoderKLCogVideoX
    from safetensors import safe_open

    from star_cli.families.cogvideox.engine import CogVideoXEngine
    from star_cli.models.cogvideox.vae import convert_sat_vae_state_dict
    from star_cli.pipeline.request import StarSettings

    folder = fixtures_dir / "star-cogvideox-reference"
    with safe_open(folder / "cogvideox_vae_tiny.safetensors", "pt") as f:
        config = json.loads(f.metadata()["diffusers_config"])
        state = {k: f.get_tensor(k) for k in f.keys() if k.startswith(("encoder.", "decoder."))}
    with safe_open(folder / "cogvideox_pipeline_tiny.safetensors", "pt") as f:
        raw, decode_input, frames_out = (f.get_tensor(k) for k in ("frames_raw", "decode_input", "frames_out"))
    vae = AutoencoderKLCogVideoX(**config).eval()
    vae.load_state_dict(dict(convert_sat_vae_state_dict(state)), strict=True)
    options = PlanOptions(chunk_len=25, tile_size=(64, 96), tile_overlap=16, window_chunks=1, grid=cog_options().grid)
    plan = make_plan(25, 16, 24, options)
    cpu = torch.device("cpu")
    engine = CogVideoXEngine(None, vae, cpu, None, StarSettings(model="cogvideox"), NativeSize(64, 96, 25), cpu, torch.float32)
    latent = (0.7 * decode_input).permute(0, 2, 1, 3, 4)  # the sampler's scaled latent, b t c h w
    out = torch.from_numpy(engine.decode(latent, raw.numpy(), plan))
    difference = (out.int() - frames_out.int()).abs()
    assert difference.max() <= 1 and (difference > 0).float().mean() <= 1e-3

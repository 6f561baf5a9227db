"""`star upscale --model cogvideox` end to end on tiny random CogVideoX weights in the real layout (CPU)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from star_cli.cli import app
from star_cli.families.cogvideox.engine import CogVideoXEngine
from star_cli.pipeline import upscale as upscale_module
from star_cli.pipeline.resume import work_folder
from star_cli.testing import make_tiny_weights
from star_cli.testing.cogvideox_weights import TINY_NATIVE
from star_cli.testing.media import decode_rgb, make_video
from star_cli.video.probe import probe

runner = CliRunner()
FRAMES = 12  # two windows of the tiny model's 9-frame clip
FAST = ["--steps", "3", "--codec", "ffv1"]


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    return make_tiny_weights(tmp_path_factory.mktemp("weights"), variants=("cogvideox",))


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """24x16 at x4 is the tiny model's native 96x64: one tile, two windows."""
    return make_video(tmp_path_factory.mktemp("clip") / "in.mp4", frames=FRAMES, width=24, height=16, audio=True)


def upscale(clip: Path, out: Path, weights: Path, *extra: str):
    args = ["upscale", str(clip), "-o", str(out), "--model", "cogvideox", "--weights-dir", str(weights), "--quiet", *extra]
    return runner.invoke(app, args)


@pytest.fixture(scope="module")
def reference_run(clip, weights, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "out.mkv"
    result = upscale(clip, out, weights, *FAST)
    assert result.exit_code == 0, result.output
    return out


def test_output_has_the_size_every_frame_and_the_audio(reference_run, clip):
    info = probe(reference_run)
    assert (info.height, info.width) == (4 * 16, 4 * 24) == (TINY_NATIVE["height"], TINY_NATIVE["width"])
    assert info.num_frames == probe(clip).num_frames == FRAMES
    assert [s.kind for s in info.streams] == ["audio"]
    assert not work_folder(reference_run).exists()
    assert decode_rgb(reference_run).std() > 0


def test_same_seed_gives_same_frames_and_other_seed_differs(reference_run, clip, weights, tmp_path):
    again, other = tmp_path / "again.mkv", tmp_path / "other.mkv"
    assert upscale(clip, again, weights, *FAST).exit_code == 0
    assert upscale(clip, other, weights, *FAST, "--seed", "1").exit_code == 0
    np.testing.assert_array_equal(decode_rgb(again), decode_rgb(reference_run))
    assert not np.array_equal(decode_rgb(other), decode_rgb(reference_run))


def test_interrupt_then_resume_matches_uninterrupted_run(reference_run, clip, weights, tmp_path, monkeypatch):
    out = tmp_path / "out.mkv"
    real_restore = upscale_module.restore_windows

    def interrupted(*args):
        for index, item in enumerate(real_restore(*args)):
            if index == 0:
                raise KeyboardInterrupt
            yield item

    monkeypatch.setattr(upscale_module, "restore_windows", interrupted)
    assert upscale(clip, out, weights, *FAST).exit_code == 130
    assert len(list(work_folder(out).glob("window_*.mkv"))) == 1
    monkeypatch.setattr(upscale_module, "restore_windows", real_restore)
    calls = []
    real_engine_restore = CogVideoXEngine.restore
    monkeypatch.setattr(CogVideoXEngine, "restore", lambda self, *a, **k: calls.append(1) or real_engine_restore(self, *a, **k))
    result = upscale(clip, out, weights, *FAST, "--resume")
    assert result.exit_code == 0, result.output
    assert len(calls) == 1
    np.testing.assert_array_equal(decode_rgb(out), decode_rgb(reference_run))


@pytest.mark.parametrize("offload", ["model", "sequential"])
def test_offload_modes_give_identical_frames(reference_run, clip, weights, tmp_path, offload):
    out = tmp_path / "out.mkv"
    result = upscale(clip, out, weights, *FAST, "--offload", offload)
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(decode_rgb(out), decode_rgb(reference_run))


def test_outputs_larger_than_the_native_frame_are_tiled(weights, tmp_path):
    """x5: 120x80 from 24x16, four native 96x64 tiles feathered together; one short window padded in time."""
    source = make_video(tmp_path / "in.mp4", frames=5, width=24, height=16, audio=False)
    out = tmp_path / "out.mkv"
    result = upscale(source, out, weights, *FAST, "--scale", "5", "--verbose")
    assert result.exit_code == 0, result.output
    assert "4 (2x2) of 96x64 px" in result.output
    info = probe(out)
    assert (info.width, info.height, info.num_frames) == (120, 80, 5)


@pytest.mark.parametrize(
    ("option", "named"),
    [(["--chunk-len", "8"], "--chunk-len"), (["--tile-size", "128x128"], "--tile-size"),
     (["--solver", "heun"], "--solver"), (["--window-chunks", "2"], "--window-chunks"), (["--compile"], "--compile")],
)
def test_options_the_model_cannot_honour_are_refused_in_one_line(clip, weights, tmp_path, option, named):
    result = upscale(clip, tmp_path / "out.mp4", weights, *option)
    assert result.exit_code == 2
    assert named in result.output and result.output.strip().count("\n") == 0
    assert not (tmp_path / "out.mp4").exists()


def test_dry_run_reads_the_native_size_from_the_weights(clip, weights, tmp_path):
    result = upscale(clip, tmp_path / "out.mp4", weights, "--dry-run")
    assert result.exit_code == 0, result.output
    assert "cogvideox" in result.output and "DiT evaluations" in result.output
    assert "2 of 9 frames" in result.output  # the tiny model's native clip


def test_a_checkpoint_of_the_other_family_is_named_before_any_work(clip, weights, tmp_path):
    unet_weights = make_tiny_weights(tmp_path / "i2vgenxl")
    unet = unet_weights / "star" / "light_deg.safetensors"
    dit = weights / "cogvideox" / "transformer.safetensors"
    runner = CliRunner()
    for args, said in [
        (["--model", "cogvideox", "--checkpoint", unet], "is a STAR I2VGen-XL checkpoint, not a CogVideoX one: run it with --model i2vgenxl"),
        (["--checkpoint", dit], "is a STAR CogVideoX checkpoint: run it with --model cogvideox"),
    ]:
        result = runner.invoke(app, ["upscale", str(clip), "-o", str(tmp_path / "out.mp4"), "--dry-run", *map(str, args)])
        assert result.exit_code == 2 and said in result.output.replace("\n", "") and result.output.strip().count("\n") <= 1

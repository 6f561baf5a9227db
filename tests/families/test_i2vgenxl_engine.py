"""The STAR engine end to end on tiny random weights in the real layout (CPU)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from star_cli.cli import app
from star_cli.families.i2vgenxl.engine import uses_device_forms
from star_cli.pipeline import upscale as upscale_module
from star_cli.pipeline.plan import PlanOptions, make_plan
from star_cli.pipeline.resume import work_folder
from star_cli.testing import make_tiny_weights
from star_cli.testing.media import decode_rgb, make_video
from star_cli.video.probe import probe

runner = CliRunner()

# Two windows on a short clip, so resume and window seams are exercised.
MULTI_WINDOW = ["--chunk-len", "8", "--chunk-overlap", "2", "--window-chunks", "1"]
SHORT_FRAMES = 12


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    return make_tiny_weights(tmp_path_factory.mktemp("weights"))


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return make_video(tmp_path_factory.mktemp("clip") / "in.mp4", frames=24, width=32, height=24, audio=True)


@pytest.fixture(scope="module")
def short_clip(tmp_path_factory) -> Path:
    return make_video(tmp_path_factory.mktemp("short") / "in.mp4", frames=SHORT_FRAMES, width=32, height=24)


def upscale(clip: Path, out: Path, weights: Path, *extra: str):
    args = ["upscale", str(clip), "-o", str(out), "--scale", "2", "--weights-dir", str(weights), "--quiet", *extra]
    return runner.invoke(app, args)


@pytest.fixture(scope="module")
def reference_run(short_clip, weights, tmp_path_factory) -> Path:
    """One uninterrupted two-window run with guidance off (half the UNet calls)."""
    out = tmp_path_factory.mktemp("ref") / "out.mkv"
    result = upscale(short_clip, out, weights, *MULTI_WINDOW, "--guidance", "1", "--codec", "ffv1")
    assert result.exit_code == 0, result.output
    return out


def test_upscale_default_engine_keeps_size_frames_and_audio(clip, weights, tmp_path):
    out = tmp_path / "out.mp4"
    result = upscale(clip, out, weights)
    assert result.exit_code == 0, result.output
    info, source = probe(out), probe(clip)
    assert (info.width, info.height) == (64, 48)
    assert info.num_frames == source.num_frames == 24
    assert [s.kind for s in info.streams] == ["audio"]
    assert not work_folder(out).exists()


def test_same_seed_gives_same_frames_and_other_seed_differs(reference_run, short_clip, weights, tmp_path):
    again = tmp_path / "again.mkv"
    other = tmp_path / "other.mkv"
    common = [*MULTI_WINDOW, "--guidance", "1", "--codec", "ffv1"]
    assert upscale(short_clip, again, weights, *common).exit_code == 0
    assert upscale(short_clip, other, weights, *common, "--seed", "1").exit_code == 0
    np.testing.assert_array_equal(decode_rgb(again), decode_rgb(reference_run))
    assert not np.array_equal(decode_rgb(other), decode_rgb(reference_run))


def test_interrupt_then_resume_matches_uninterrupted_run(reference_run, short_clip, weights, tmp_path, monkeypatch):
    out = tmp_path / "out.mkv"
    common = [*MULTI_WINDOW, "--guidance", "1", "--codec", "ffv1"]
    real_restore = upscale_module.restore_windows

    def interrupted(*args):
        for index, item in enumerate(real_restore(*args)):
            if index == 0:
                raise KeyboardInterrupt
            yield item

    monkeypatch.setattr(upscale_module, "restore_windows", interrupted)
    stopped = runner.invoke(app, ["upscale", str(short_clip), "-o", str(out), "--scale", "2", "--weights-dir", str(weights), *common])
    assert stopped.exit_code == 130
    assert f"1 finished window(s) of 2 kept in {work_folder(out)}" in stopped.stderr.replace("\n", "")
    assert "--resume" in stopped.stderr
    assert not out.exists() and not list(tmp_path.glob("*.partial*"))
    finished = sorted(work_folder(out).glob("window_*.mkv"))
    assert len(finished) == 1
    monkeypatch.setattr(upscale_module, "restore_windows", real_restore)

    calls = []
    from star_cli.families.i2vgenxl.engine import StarEngine

    real_engine_restore = StarEngine.restore
    monkeypatch.setattr(StarEngine, "restore", lambda self, *a, **k: calls.append(1) or real_engine_restore(self, *a, **k))
    result = upscale(short_clip, out, weights, *common, "--resume")
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(decode_rgb(out), decode_rgb(reference_run))
    plan = make_plan(SHORT_FRAMES, 24, 32, PlanOptions(scale=2, chunk_len=8, chunk_overlap=2, window_chunks=1))
    assert len(calls) == len(plan.windows) - len(finished) > 0
    assert not work_folder(out).exists()


def test_resume_with_other_settings_is_refused(clip, weights, tmp_path, monkeypatch):
    out = tmp_path / "out.mkv"
    work_folder(out).mkdir()
    (work_folder(out) / "state.json").write_text('{"format": 2, "identity": {"version": "0.0.0"}}')
    result = upscale(clip, out, weights, "--resume")
    assert result.exit_code == 2
    assert "--resume" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("offload", ["model", "sequential"])
def test_offload_modes_give_identical_frames(reference_run, short_clip, weights, tmp_path, offload):
    out = tmp_path / "out.mkv"
    result = upscale(short_clip, out, weights, *MULTI_WINDOW, "--guidance", "1", "--codec", "ffv1", "--offload", offload)
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(decode_rgb(out), decode_rgb(reference_run))


def test_missing_weights_name_the_file_and_the_fix(clip, weights, tmp_path):
    broken = tmp_path / "weights"
    broken.mkdir()
    for item in weights.rglob("*"):
        if item.is_file() and item.name != "diffusion_pytorch_model.safetensors":
            target = broken / item.relative_to(weights)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(item.read_bytes())
    result = upscale(clip, tmp_path / "out.mp4", broken)
    assert result.exit_code == 1
    line = result.output.strip()
    assert "\n" not in line
    assert "vae/diffusion_pytorch_model.safetensors" in line and "star download-weights" in line
    assert not (tmp_path / "out.mp4").exists()


def test_corrupt_weights_file_is_named(clip, weights, tmp_path):
    broken = tmp_path / "weights"
    for item in weights.rglob("*"):
        if item.is_file():
            target = broken / item.relative_to(weights)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(item.read_bytes())
    unet = broken / "star" / "light_deg.safetensors"
    unet.write_bytes(unet.read_bytes()[:-10])
    result = upscale(clip, tmp_path / "out.mp4", broken)
    assert result.exit_code == 1
    assert "light_deg.safetensors" in result.output and "corrupt" in result.output


def test_device_forms_run_on_cuda_unless_the_unet_is_offloaded_layer_by_layer():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert uses_device_forms(cuda, "none") and uses_device_forms(cuda, "model")
    # sequential offload brings a layer's weights only inside its own forward, which the forms bypass
    assert not uses_device_forms(cuda, "sequential")
    assert not uses_device_forms(cpu, "none")

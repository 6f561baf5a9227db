"""The Python API (`star_cli.STARPipeline`) on tiny random weights: the CLI's frames, its errors, its events."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import star_cli
from star_cli import STARPipeline
from star_cli.cli import app
from star_cli.errors import InputError, StarError
from star_cli.models.conditioning import ConditionedBlock
from star_cli.pipeline import prepare as prepare_module
from star_cli.pipeline.events import Evaluated, FramesWritten, WindowFinished
from star_cli.pipeline.memory import memory_budget
from star_cli.testing import make_tiny_weights
from star_cli.testing.media import decode_rgb, make_video
from star_cli.video.reader import read_batches

FRAMES = 12
CLI_SETTINGS = ["--chunk-len", "8", "--chunk-overlap", "2", "--window-chunks", "1", "--guidance", "1", "--steps", "3"]
API_SETTINGS = dict(chunk_len=8, chunk_overlap=2, window_chunks=1, guidance=1.0, steps=3)


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    return make_tiny_weights(tmp_path_factory.mktemp("weights"))


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return make_video(tmp_path_factory.mktemp("clip") / "in.mp4", frames=FRAMES, width=32, height=24)


@pytest.fixture(scope="module")
def pipe(weights) -> STARPipeline:
    return STARPipeline.from_pretrained(weights, device="cpu")


@pytest.fixture(scope="module")
def cli_frames(clip, weights, tmp_path_factory) -> np.ndarray:
    out = tmp_path_factory.mktemp("cli") / "out.mkv"
    args = ["upscale", str(clip), "-o", str(out), "--scale", "2", "--weights-dir", str(weights), "--device", "cpu",
            "--codec", "ffv1", "--no-scene-detect", "--quiet", *CLI_SETTINGS]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return decode_rgb(out)


def test_frames_in_memory_equal_the_cli_and_report_progress(pipe, clip, cli_frames):
    frames = np.concatenate([b.frames for b in read_batches(clip, 5)])
    events = []
    out = pipe(frames, scale=2, progress=events.append, **API_SETTINGS)
    np.testing.assert_array_equal(out, cli_frames)
    evaluated = [e.done for e in events if isinstance(e, Evaluated)]
    assert evaluated == sorted(evaluated) and evaluated[-1] == pipe.plan(FRAMES, 24, 32, scale=2, **API_SETTINGS).plan.unet_evaluations
    assert len([e for e in events if isinstance(e, WindowFinished)]) == 2
    assert [e.done for e in events if isinstance(e, FramesWritten)][-1] == FRAMES


def test_upscale_file_is_the_cli(pipe, clip, cli_frames, tmp_path):
    out = tmp_path / "api.mkv"
    pipe.upscale_file(clip, out, scale=2, codec="ffv1", scene_detect=False, quiet=True, **API_SETTINGS)
    np.testing.assert_array_equal(decode_rgb(out), cli_frames)


def test_torch_frames_in_torch_frames_out(pipe, clip):
    frames = np.concatenate([b.frames for b in read_batches(clip, 5)])[:4]
    as_numpy = pipe(frames, scale=2, **API_SETTINGS)
    as_torch = pipe(torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255, scale=2, **API_SETTINGS)
    assert as_torch.shape == (4, 3, 48, 64) and as_torch.dtype == torch.float32
    np.testing.assert_array_equal((as_torch * 255).round().byte().permute(0, 2, 3, 1).numpy(), as_numpy)


def test_stream_of_one_window_equals_the_array_and_long_streams_yield_every_frame(pipe, clip):
    frames = np.concatenate([b.frames for b in read_batches(clip, 5)])
    whole = pipe(frames, scale=2, chunk_len=8, chunk_overlap=2, guidance=1.0, steps=3)
    streamed = np.stack(list(pipe.stream(iter(frames), scale=2, chunk_len=8, chunk_overlap=2, guidance=1.0, steps=3)))
    np.testing.assert_array_equal(streamed, whole)  # 12 frames fit one stream window: the same plan
    windows = []
    many = list(pipe.stream(iter(frames), scale=2, progress=windows.append, **API_SETTINGS))
    assert len(many) == FRAMES and many[0].shape == (48, 64, 3)
    assert len([e for e in windows if isinstance(e, WindowFinished)]) == 2


def test_auto_tiles_are_planned_against_the_memory_as_the_cli_plans_them(pipe, weights, tmp_path, monkeypatch):
    """Memory too small for whole frames under --tile-size auto: the API's plan and frames are the CLI's.

    Both plan against the memory free before the models load: the pipeline measures it in
    `from_pretrained` and keeps it (the estimate counts the weights once).
    """
    settings = dict(chunk_len=2, chunk_overlap=0, guidance=1.0, steps=2)
    clip = make_video(tmp_path / "in.mp4", frames=2, width=136, height=24)  # 544 px wide: room for VAE tiles
    whole = pipe.plan(2, 24, 136, scale=4, tile_size="none", **settings).plan
    host = [memory_budget(pipe.engine.settings, "cpu").need(whole)]  # 90% of it is planned for: whole frames do not fit
    monkeypatch.setattr("star_cli.pipeline.memory.host_memory_available", lambda: host[0])
    pipe = STARPipeline.from_pretrained(weights, device="cpu")
    prepared = []
    real_prepare = prepare_module.prepare
    monkeypatch.setattr(prepare_module, "prepare", lambda request: prepared.append(real_prepare(request)) or prepared[-1])
    out = tmp_path / "out.mkv"
    args = ["upscale", str(clip), "-o", str(out), "--scale", "4", "--weights-dir", str(weights), "--device", "cpu",
            "--codec", "ffv1", "--no-scene-detect", "--quiet", "--chunk-len", "2", "--chunk-overlap", "0",
            "--guidance", "1", "--steps", "2"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    host[0] = 2**20  # the pipeline's models took the rest since it loaded
    planned = pipe.plan(2, 24, 136, scale=4, **settings).plan
    o = planned.options
    assert (o.tile_size, o.vae_tile, o.vae_encode_tile) != (None, None, None) and "tiled because" in planned.tiling
    assert planned == prepared[0].jobs[0].plan
    frames = np.concatenate([b.frames for b in read_batches(clip, 2)])
    np.testing.assert_array_equal(pipe(frames, scale=4, **settings), decode_rgb(out))
    pipe.upscale_file(clip, tmp_path / "api.mkv", scale=4, codec="ffv1", scene_detect=False, quiet=True, **settings)
    np.testing.assert_array_equal(decode_rgb(tmp_path / "api.mkv"), decode_rgb(out))


def test_errors_are_star_errors_with_the_cli_messages(pipe, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(StarError, match="star download-weights"):
        STARPipeline.from_pretrained(tmp_path / "empty", device="cpu")
    with pytest.raises(InputError, match="--steps must be at least 2"):
        pipe(np.zeros((2, 8, 8, 3), np.uint8), steps=1)
    with pytest.raises(InputError, match="unknown option"):
        pipe(np.zeros((2, 8, 8, 3), np.uint8), colour="red")
    with pytest.raises(InputError, match="device"):
        pipe(np.zeros((2, 8, 8, 3), np.uint8), device="cuda")
    with pytest.raises(InputError, match="uint8"):
        pipe(np.zeros((2, 8, 8, 3), np.float32))


def test_compile_is_chosen_at_load_and_compiles_the_unet_blocks(weights, pipe):
    compiled = STARPipeline.from_pretrained(weights, device="cpu", compile=True)  # torch.compile is lazy: nothing runs yet
    blocks = [m for m in compiled.engine.unet.modules() if isinstance(m, ConditionedBlock)]
    assert compiled.engine.settings.compile and blocks and all(b._compiled_call_impl is not None for b in blocks)
    assert all(m._compiled_call_impl is None for m in pipe.engine.unet.modules() if isinstance(m, ConditionedBlock))
    with pytest.raises(InputError, match="compile"):
        compiled(np.zeros((2, 8, 8, 3), np.uint8), compile=False)


def test_nothing_below_the_cli_exits_the_process():
    root = Path(star_cli.__file__).parent
    exits = [p for p in root.rglob("*.py") if re.search(r"\bsys\.exit\(|\bos\._exit\(|typer\.Exit", p.read_text())]
    assert sorted(p.relative_to(root).as_posix() for p in exits) == ["cli.py", "testing/__main__.py"]


def test_import_is_light_and_exports_the_api():
    code = "import sys, star_cli; print('torch' in sys.modules, sorted(star_cli.__all__))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.startswith("False") and "STARPipeline" in done.stdout


TINY = dict(steps=2, guidance=1.0)


def test_float_frames_must_be_finite_and_in_0_1(pipe):
    with pytest.raises(InputError, match=r"must be in \[0, 1\], found values from 0\.5 to 254\.5 \(frames in 0\.\.255: divide"):
        pipe(torch.tensor([0.5, 254.5]).repeat_interleave(48).reshape(2, 3, 4, 4), **TINY)
    with pytest.raises(InputError, match=r"found values from -0\.1 to 1"):
        pipe(torch.tensor([-0.1, 1.0]).repeat_interleave(48).reshape(2, 3, 4, 4), **TINY)
    with pytest.raises(InputError, match="found 96 NaN or infinite values"):
        pipe(torch.full((2, 3, 4, 4), float("nan")), **TINY)
    with pytest.raises(InputError, match="no frames"):
        pipe(torch.zeros(0, 3, 8, 8), **TINY)
    # Within half an 8-bit level of the range: the same frames as the range's ends.
    edges = torch.tensor([-0.4 / 255, 1 + 0.4 / 255]).repeat_interleave(3 * 16 * 16).reshape(2, 3, 16, 16)
    np.testing.assert_array_equal(pipe(edges, scale=2, **TINY), pipe(edges.clamp(0, 1), scale=2, **TINY))


def test_a_stream_frame_of_another_size_or_kind_is_refused_by_its_index(pipe):
    frame = np.zeros((24, 32, 3), np.uint8)
    with pytest.raises(InputError, match=r"^stream frame 2 is 32x16 but frame 0 is 32x24 \(width x height\)"):
        list(pipe.stream(iter([frame, frame, frame[:16]]), scale=2, **TINY))
    with pytest.raises(InputError, match=r"^stream frame 1: frames must be uint8 \(H, W, 3\), got \(24, 32, 3\) float32"):
        list(pipe.stream(iter([frame, frame.astype(np.float32)]), scale=2, **TINY))


def test_options_of_the_wrong_type_are_refused_naming_the_option(pipe, tmp_path):
    frames = np.zeros((2, 8, 8, 3), np.uint8)
    with pytest.raises(InputError, match=r"^scale must be a number, got '2' \(str\)$"):
        pipe(frames, scale="2")
    with pytest.raises(InputError, match=r"^steps must be a whole number or None, got 2\.5 \(float\)$"):
        pipe(frames, steps=2.5)
    with pytest.raises(InputError, match=r"^prompt must be text, got None"):
        pipe.plan(2, 8, 8, prompt=None)
    with pytest.raises(InputError, match=r"^tile_size must be text or None, got \(272, 256\) \(tuple\)$"):
        pipe.plan(2, 8, 8, tile_size=(272, 256))
    with pytest.raises(InputError, match=r"^weights_dir must be a path or None, got 3 \(int\)$"):
        STARPipeline.from_pretrained(3, device="cpu")
    # NumPy scalars are numbers, and a prompt file may be named by a string.
    (tmp_path / "prompt.txt").write_text("a cat", encoding="utf-8")
    planned = pipe.plan(2, 24, 32, scale=np.float32(2), steps=np.int64(3), prompt_file=str(tmp_path / "prompt.txt"))
    assert planned.plan.output_size == (48, 64)


def test_file_options_are_refused_for_frames_in_memory(pipe):
    frames = np.zeros((2, 8, 8, 3), np.uint8)
    calls = {
        "call": lambda **o: pipe(frames, **o),
        "stream": lambda **o: pipe.stream(iter(frames), **o),
        "plan": lambda **o: pipe.plan(2, 8, 8, **o),
    }
    file_options = dict(start="2f", end="4f", codec="ffv1", crf=10, preset="fast", pix_fmt="yuv444p", exact_size=True,
                        deinterlace="off", scene_detect=False, ignore_errors=True, resume=True, overwrite=True)
    for name, call in calls.items():
        with pytest.raises(InputError, match=r"^start, end apply to upscale_file only"):
            call(start="2f", end="4f")
        for key, value in file_options.items():
            with pytest.raises(InputError, match=f"^{key} apply to upscale_file only"):
                call(**{key: value})


def test_command_line_only_options_say_what_to_use_instead(pipe, clip, tmp_path):
    out = tmp_path / "out.mkv"
    with pytest.raises(InputError, match=r"^dry_run is a star upscale \(command line\) option only: pipe\.plan\("):
        pipe.upscale_file(clip, out, dry_run=True)
    with pytest.raises(InputError, match="^engine is a star upscale .*--engine lanczos"):
        pipe(np.zeros((2, 8, 8, 3), np.uint8), engine="lanczos")
    with pytest.raises(InputError, match="^gpus is a star upscale .*one pipeline per device"):
        pipe.upscale_file(clip, out, gpus="0,1")
    assert not out.exists()


def test_loading_shows_no_third_party_progress_bars(weights):
    code = f"from star_cli import STARPipeline; STARPipeline.from_pretrained({str(weights)!r}, device='cpu')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert "Loading weights" not in done.stderr and "%|" not in done.stderr

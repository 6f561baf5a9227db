"""`STARPipeline.from_pretrained(model="cogvideox")` on tiny random CogVideoX weights: the CLI's frames, checks and plans."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
from typer.testing import CliRunner

from star_cli import STARPipeline
from star_cli.cli import app
from star_cli.errors import InputError
from star_cli.pipeline.events import Evaluated
from star_cli.pipeline.frames import upscale_stream
from star_cli.pipeline.plan import make_plan
from star_cli.pipeline.request import build_request, request_defaults
from star_cli.pipeline.timing import StageClock
from star_cli.testing import make_tiny_weights
from star_cli.testing.cogvideox_weights import TINY_NATIVE
from star_cli.testing.media import make_video
from star_cli.video.reader import read_batches

FRAMES = 12  # two windows of the tiny model's 9-frame clip
HEIGHT, WIDTH = 16, 24  # x4: the tiny model's native 64x96, one tile
STEPS = 3


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    return make_tiny_weights(tmp_path_factory.mktemp("weights"), variants=("cogvideox",))


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return make_video(tmp_path_factory.mktemp("clip") / "in.mp4", frames=FRAMES, width=WIDTH, height=HEIGHT)


@pytest.fixture(scope="module")
def frames(clip) -> np.ndarray:
    return np.concatenate([b.frames for b in read_batches(clip, 5)])


@pytest.fixture(scope="module")
def pipe(weights) -> STARPipeline:
    return STARPipeline.from_pretrained(weights, model="cogvideox", device="cpu")


@pytest.fixture(scope="module")
def cli_frames(clip, weights, tmp_path_factory) -> np.ndarray:
    out = tmp_path_factory.mktemp("cli") / "out.mkv"
    args = ["upscale", str(clip), "-o", str(out), "--model", "cogvideox", "--weights-dir", str(weights), "--device", "cpu",
            "--steps", str(STEPS), "--codec", "ffv1", "--no-scene-detect", "--quiet"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    with av.open(str(out)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


@pytest.fixture(scope="module")
def api_run(pipe, frames) -> tuple[np.ndarray, list]:
    events: list = []
    return pipe(frames, scale=4, steps=STEPS, progress=events.append), events


def test_frames_in_memory_equal_the_cli(pipe, api_run, cli_frames):
    out, events = api_run
    assert out.shape == (FRAMES, TINY_NATIVE["height"], TINY_NATIVE["width"], 3)
    np.testing.assert_array_equal(out, cli_frames)
    planned = pipe.plan(FRAMES, HEIGHT, WIDTH, scale=4, steps=STEPS)
    assert [e.done for e in events if isinstance(e, Evaluated)][-1] == planned.plan.unet_evaluations
    assert [(w.start, w.end) for w in planned.plan.windows] == [(0, 9), (3, 12)] and len(planned.plan.tiles) == 1
    assert planned.estimate.flops_per_output_frame > 0


def test_a_stream_of_these_frames_equals_the_array(pipe, frames, api_run):
    streamed = np.stack(list(pipe.stream(iter(frames), scale=4, steps=STEPS)))
    np.testing.assert_array_equal(streamed, api_run[0])  # the stream's windows are the file plan's here


class WindowRecorder:
    """A temporal engine that records the windows it is asked to restore (and returns black frames)."""

    name, temporal = "recorder", True

    def __init__(self) -> None:
        self.clock = StageClock()
        self.windows: list[tuple[int, int]] = []

    def restore(self, frames, plan, window=None):
        self.windows.append((window.start, window.end))
        return np.zeros((len(frames), *plan.output_size, 3), np.uint8)


@pytest.mark.parametrize("length", [5, 9, 12, 17, 20, 26])
def test_stream_windows_are_never_longer_than_the_native_clip(weights, length):
    options = build_request(**{**request_defaults(), "input": Path(), "output": Path(), "model": "cogvideox",
                               "weights_dir": weights}).plan
    engine = WindowRecorder()
    source = (np.zeros((HEIGHT, WIDTH, 3), np.uint8) for _ in range(length))
    assert len(list(upscale_stream(engine, source, options))) == length
    native = TINY_NATIVE["frames"]
    assert engine.windows[0][0] == 0 and engine.windows[-1][1] == length
    assert all(end - start == min(native, length) for start, end in engine.windows)
    assert all(a[0] < b[0] < a[1] for a, b in zip(engine.windows, engine.windows[1:]))  # each overlaps the next
    if length <= 12:
        assert engine.windows == [(w.start, w.end) for w in make_plan(length, HEIGHT, WIDTH, options).windows]


def test_a_new_prompt_is_encoded_and_the_loaded_one_kept(pipe, frames, api_run):
    prompted = pipe(frames[:9], scale=4, steps=STEPS, prompt="a dog walks on the beach")
    assert not np.array_equal(prompted[:3], api_run[0][:3])  # frames 0-2 come from the first window alone
    assert pipe.engine.settings.prompt == ""


def test_options_are_checked_as_the_cli_checks_them_for_this_model(pipe, weights):
    tiny = np.zeros((2, HEIGHT, WIDTH, 3), np.uint8)
    with pytest.raises(InputError, match="--chunk-len: the cogvideox model works on clips of exactly 9 frames"):
        pipe(tiny, chunk_len=8)
    with pytest.raises(InputError, match="--tile-size: the cogvideox model works on tiles of exactly 64x96"):
        pipe.plan(2, HEIGHT, WIDTH, tile_size="none")
    with pytest.raises(InputError, match="--solver"):
        next(pipe.stream(iter(tiny), solver="heun"))
    with pytest.raises(InputError, match="^model cannot change per call"):
        pipe(tiny, model="i2vgenxl")
    with pytest.raises(InputError, match="^--model must be one of i2vgenxl, cogvideox, got 'sdxl'$"):
        STARPipeline.from_pretrained(weights, model="sdxl", device="cpu")
    with pytest.raises(InputError, match="--checkpoint light"):
        STARPipeline.from_pretrained(weights, model="cogvideox", checkpoint="light", device="cpu")

"""`--batch-guidance` reaches the sampler through the CLI and the engine, and changes no frame."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
from typer.testing import CliRunner

from star_cli.cli import app
from star_cli.families.i2vgenxl.engine import StarEngine
from star_cli.testing import make_tiny_weights
from star_cli.testing.media import make_video

runner = CliRunner()


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    return make_tiny_weights(tmp_path_factory.mktemp("weights"))


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return make_video(tmp_path_factory.mktemp("clip") / "in.mp4", frames=6, width=32, height=24)


def _frames(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)]).astype(int)


def test_batched_guidance_runs_one_batch_of_two_and_gives_the_same_frames(clip, weights, tmp_path, monkeypatch):
    batches: list[int] = []
    denoise = StarEngine.denoise
    monkeypatch.setattr(StarEngine, "denoise", lambda self, x, *rest: batches.append(x.shape[0]) or denoise(self, x, *rest))
    outputs = {}
    for mode in ("on", "off"):
        out = tmp_path / f"{mode}.mkv"
        args = ["upscale", str(clip), "-o", str(out), "--scale", "2", "--weights-dir", str(weights), "--quiet",
                "--steps", "2", "--codec", "ffv1", "--batch-guidance", mode]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        outputs[mode] = _frames(out)
    assert batches == [2, 2] + [1, 1, 1, 1]  # 2 model calls: one batch of 2 each, then two passes each
    assert np.abs(outputs["on"] - outputs["off"]).max() <= 1  # float noise may flip a rounding

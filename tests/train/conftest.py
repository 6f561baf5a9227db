"""The training tests' workspace: tiny weights, paired clips and a config, built once per module."""

from __future__ import annotations

from pathlib import Path

import pytest

from star_cli.testing import make_tiny_weights
from star_cli.testing.media import make_video

CONFIG = """
[data]
root = "clips"
num_frames = 2
crop_height = 80
crop_width = 64
[model]
weights_dir = "weights"
gradient_checkpointing = true
[optim]
lr = 1e-3
warmup_steps = 0
[train]
output_dir = "run"
max_steps = 10
mixed_precision = "no"
[checkpoint]
every = 5
keep = 0
[log]
every = 1
"""


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny weights, two captioned 96x96 clips with quarter-size LQ, and a config."""
    root = tmp_path_factory.mktemp("train")
    make_tiny_weights(root / "weights")
    for sub in ("gt", "lq", "text"):
        (root / "clips" / sub).mkdir(parents=True)
    for i in range(2):
        make_video(root / "clips" / "gt" / f"c{i}.mp4", frames=6, width=96, height=96, seed=i, audio=False)
        make_video(root / "clips" / "lq" / f"c{i}.mp4", frames=6, width=24, height=24, seed=i, audio=False)
        (root / "clips" / "text" / f"c{i}.txt").write_text(f"clip {i}", encoding="utf-8")
    (root / "cfg.toml").write_text(CONFIG, encoding="utf-8")
    return root

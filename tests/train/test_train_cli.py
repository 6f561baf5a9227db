"""`star train` through the CLI: flags override the config, bad configs give one line,
and the trained weights load in `star upscale --checkpoint PATH`."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from star_cli.cli import app
from star_cli.testing import make_tiny_weights
from star_cli.testing.media import make_video
from star_cli.video.probe import probe

runner = CliRunner()

CONFIG = """
[data]
root = "{root}/clips"
num_frames = 2
crop_height = 80
crop_width = 64
[model]
weights_dir = "{root}/weights"
[optim]
warmup_steps = 0
[train]
output_dir = "{root}/unused"
max_steps = 50
mixed_precision = "no"
[checkpoint]
every = 100
keep = 0
"""


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli_train")
    make_tiny_weights(root / "weights")
    for sub in ("gt", "lq", "text"):
        (root / "clips" / sub).mkdir(parents=True)
    make_video(root / "clips" / "gt" / "a.mp4", frames=4, width=64, height=80, audio=False)
    make_video(root / "clips" / "lq" / "a.mp4", frames=4, width=16, height=20, audio=False)
    (root / "clips" / "text" / "a.txt").write_text("a test pattern", encoding="utf-8")
    (root / "cfg.toml").write_text(CONFIG.format(root=root.as_posix()), encoding="utf-8")
    return root


def test_flags_override_the_config_and_the_result_upscales(workspace: Path) -> None:
    run = workspace / "run"
    result = runner.invoke(
        app, ["train", "--config", str(workspace / "cfg.toml"), "--max-steps", "2", "--output-dir", str(run)]
    )
    assert result.exit_code == 0, result.output
    trained = run / "unet.safetensors"
    assert trained.is_file() and not (workspace / "unused").exists()

    clip = make_video(workspace / "in.mp4", frames=6, width=32, height=24, audio=False)
    out = workspace / "out.mp4"
    args = ["upscale", str(clip), "-o", str(out), "--scale", "2", "--quiet", "--guidance", "1",
            "--weights-dir", str(workspace / "weights"), "--checkpoint", str(trained)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (probe(out).width, probe(out).height, probe(out).num_frames) == (64, 48, 6)


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ('[data]\nroot = "clips"\n[train]\noutput_dir = "run"\n[optim]\nlr = -1\n', "optim.lr"),
        ('[data]\nroot = "clips"\n[train]\noutput_dir = "run"\n[optim]\nlearning_rate = 1e-4\n', "learning_rate"),
        ("[data\n", "bad.toml"),
    ],
)
def test_bad_config_is_one_line_and_exit_2(tmp_path: Path, text: str, named: str) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(text, encoding="utf-8")
    result = runner.invoke(app, ["train", "--config", str(config)])
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert named in result.output


def test_missing_config_is_one_line(tmp_path: Path) -> None:
    result = runner.invoke(app, ["train", "--config", str(tmp_path / "nope.toml")])
    assert result.exit_code == 2 and "nope.toml" in result.output

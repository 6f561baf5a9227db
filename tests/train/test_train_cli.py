"""`star train` through the CLI: flags override the config, bad configs give one line,
and the trained weights load in `star upscale --checkpoint PATH`."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from star_cli.cli import app
from star_cli.errors import InputError
from star_cli.testing.media import make_video
from star_cli.video.probe import probe

runner = CliRunner()


def test_flags_override_the_config_and_the_result_upscales(workspace: Path) -> None:
    run = workspace / "cli-run"
    result = runner.invoke(
        app, ["train", "--config", str(workspace / "cfg.toml"), "--max-steps", "2", "--output-dir", str(run)]
    )
    assert result.exit_code == 0, result.output
    trained = run / "unet.safetensors"
    assert trained.is_file() and not (workspace / "run").exists()

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


def test_output_dir_that_is_a_file_is_one_line_exit_2(tmp_path: Path) -> None:
    (tmp_path / "clips").mkdir()
    (tmp_path / "run").write_text("not a folder")
    config = tmp_path / "cfg.toml"
    config.write_text('[data]\nroot = "clips"\n[train]\noutput_dir = "run"\n', encoding="utf-8")
    result = runner.invoke(app, ["train", "--config", str(config)])
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines() == [result.output.strip()] and "train.output_dir" in result.output
    assert (tmp_path / "run").read_text() == "not a folder"


def _train(workspace: Path, run: Path, *extra: str) -> object:
    return runner.invoke(app, ["train", "--config", str(workspace / "cfg.toml"), "--output-dir", str(run), *extra])


def test_a_new_run_into_a_previous_runs_folder_is_refused_until_overwrite(workspace: Path, monkeypatch) -> None:
    run = workspace / "twice"
    assert _train(workspace, run, "--max-steps", "2").exit_code == 0
    (run / "notes.txt").write_text("mine", encoding="utf-8")
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}

    from star_cli.train import loop

    real_setup = loop.setup

    def no_model(*args: object) -> None:
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(loop, "setup", no_model)
    refused = _train(workspace, run, "--max-steps", "1")
    assert refused.exit_code == 2, refused.output
    line = " ".join(refused.output.split())
    assert len(refused.output.strip().splitlines()) == 1 and "Traceback" not in refused.output
    assert "previous run" in line and "--overwrite" in line and "--resume latest" in line
    both = _train(workspace, run, "--max-steps", "3", "--resume", "latest", "--overwrite")
    assert both.exit_code == 2 and "--overwrite" in both.output
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before

    monkeypatch.setattr(loop, "setup", real_setup)
    assert _train(workspace, run, "--max-steps", "1", "--overwrite").exit_code == 0
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step-00000001"]
    rows = (run / "metrics.csv").read_text(encoding="utf-8").splitlines()
    assert [row.split(",")[0] for row in rows[1:]] == ["1"]
    assert (run / "unet.safetensors").read_bytes() == (run / "checkpoints" / "step-00000001" / "unet.safetensors").read_bytes()
    assert (run / "notes.txt").read_text(encoding="utf-8") == "mine"


def test_resuming_another_folders_checkpoint_needs_a_free_output_dir(tmp_path: Path) -> None:
    from star_cli.train.rundir import check_output_dir

    elsewhere = tmp_path / "a" / "checkpoints" / "step-00000005"
    (tmp_path / "b" / "checkpoints").mkdir(parents=True)
    check_output_dir(tmp_path / "fresh", None, False)
    check_output_dir(tmp_path / "fresh", str(elsewhere), False)
    check_output_dir(tmp_path / "b", "latest", False)
    check_output_dir(tmp_path / "b", str(tmp_path / "b" / "checkpoints" / "step-00000001"), False)
    check_output_dir(tmp_path / "b", str(elsewhere), True)
    with pytest.raises(InputError, match="holds a previous run"):
        check_output_dir(tmp_path / "b", str(elsewhere), False)
    with pytest.raises(InputError, match="give one of them"):
        check_output_dir(tmp_path / "b", str(tmp_path / "b" / "checkpoints" / "step-00000001"), True)

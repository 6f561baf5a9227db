"""Fixtures of the CLI tests: tiny clips and an in-process `star` runner.

The CLI is exercised through `typer.testing.CliRunner` against `star_cli.cli.app`
(in-process: fast, and stdout/stderr are captured apart), so every assertion is
about what a user sees: exit code, output streams and the files on disk.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from star_cli.cli import app
from star_cli.testing.media import make_video


@pytest.fixture(scope="session")
def base_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """64x48, 24 frames at 24 fps with a sine audio track; tests copy it before use."""
    return make_video(tmp_path_factory.mktemp("clips") / "clip.mp4")


@pytest.fixture
def clip(base_clip: Path, tmp_path: Path) -> Path:
    """A private copy of `base_clip` in this test's folder."""
    return Path(shutil.copy(base_clip, tmp_path / "in.mp4"))


@pytest.fixture
def run_cli(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Result]:
    """Invoke `star ARGS...` in-process; weights are looked up in an empty folder, never the user's."""
    monkeypatch.setenv("STAR_WEIGHTS_DIR", str(tmp_path_factory.mktemp("no-weights")))
    monkeypatch.setenv("COLUMNS", "200")
    runner = CliRunner()

    def run(*args: object) -> Result:
        return runner.invoke(app, [str(a) for a in args])

    return run

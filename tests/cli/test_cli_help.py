"""`star --help` and each command's help: real text with examples, exit code 0."""

from __future__ import annotations

import subprocess
import sys

import pytest

COMMANDS = ("upscale", "download-weights", "train", "degrade")


def test_top_level_help_lists_every_command(run_cli):
    result = run_cli("--help")
    assert result.exit_code == 0, result.output
    for command in COMMANDS:
        assert command in result.stdout


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_command_help_has_examples(command, flag, run_cli):
    result = run_cli(command, flag)
    assert result.exit_code == 0, result.output
    assert f"star {command}" in result.stdout
    assert "Example" in result.stdout


def test_upscale_help_documents_the_issue_options(run_cli):
    text = run_cli("upscale", "--help").stdout
    for option in ("--output", "--scale", "--engine", "--dry-run", "--overwrite", "--ignore-errors", "--quiet", "--verbose"):
        assert option in text, option


def test_module_entry_point_prints_help():
    done = subprocess.run(
        [sys.executable, "-m", "star_cli", "upscale", "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "star upscale" in done.stdout and "--dry-run" in done.stdout


@pytest.mark.parametrize(
    ("args", "named"),
    [(["upscale", "x.mp4", "--scale", "four"], "--scale"), (["upscale", "x.mp4"], "--output"), (["bogus"], "bogus")],
)
def test_usage_errors_of_the_console_script_are_one_line(args, named):
    done = subprocess.run([sys.executable, "-m", "star_cli", *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and named in lines[0], done.stderr

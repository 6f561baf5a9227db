"""Exit codes 1 (runtime failure) and 130 (Ctrl-C), and what each leaves on disk: nothing.

Ctrl-C is tested twice: in-process (KeyboardInterrupt raised mid-video, with an
existing output that --overwrite must not lose) and as a real SIGINT sent to the
`star` console script while it writes.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli_checks import error_line, partial_files, snapshot
from star_cli.video.reader import READ_BATCH
from star_cli.video.resize import LanczosResizer
from star_cli.testing.media import make_video


# "unknown": where the OS does not say how much memory is free, the run must not be refused on a guess.
@pytest.mark.parametrize("host_memory", [2**50, None], ids=["plenty", "unknown"])
def test_missing_weights_is_a_runtime_failure_exit_1(host_memory, clip, tmp_path, run_cli, monkeypatch):
    monkeypatch.setattr("star_cli.pipeline.memory.host_memory_available", lambda: host_memory)
    before = snapshot(tmp_path)
    line = error_line(run_cli("upscale", clip, "-o", tmp_path / "out.mp4", "--device", "cpu"), exit_code=1)
    assert "star download-weights" in line
    assert snapshot(tmp_path) == before


def test_interrupt_mid_video_exits_130_and_keeps_the_old_output(clip, tmp_path, run_cli, monkeypatch):
    resize = LanczosResizer.__call__
    calls = []

    def interrupted_resize(self, frame):
        calls.append(frame)
        if len(calls) == READ_BATCH + 2:
            raise KeyboardInterrupt
        return resize(self, frame)

    monkeypatch.setattr(LanczosResizer, "__call__", interrupted_resize)
    dest = tmp_path / "out.mp4"
    dest.write_bytes(b"the previous result")
    before = snapshot(tmp_path)
    result = run_cli("upscale", clip, "-o", dest, "--engine", "lanczos", "--overwrite")
    assert result.exit_code == 130, result.output
    assert result.stderr.strip().splitlines() == ["interrupted: no partial output was kept"]
    assert len(calls) == READ_BATCH + 2 and snapshot(tmp_path) == before


def test_sigint_to_the_console_script_exits_130_and_leaves_nothing(tmp_path):
    source = make_video(tmp_path / "long.mp4", frames=96, audio=False)
    out = tmp_path / "out"
    out.mkdir()
    command = [str(Path(sys.executable).with_name("star")), "upscale", str(source), "-o", str(out / "big.mp4")]
    # Scale 8 with a slow preset: seconds of encoding, so the signal lands mid-video.
    command += ["--engine", "lanczos", "--scale", "8", "--preset", "veryslow"]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # a test runner may ignore SIGINT
    )
    deadline = time.monotonic() + 60
    while not any(p.stat().st_size for p in partial_files(out)) and process.poll() is None:
        assert time.monotonic() < deadline, "no output was started within 60 s"
        time.sleep(0.02)
    assert process.poll() is None, "the run finished before it could be interrupted"
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "interrupted: no partial output was kept" in stderr and "Traceback" not in stderr
    assert list(out.iterdir()) == []

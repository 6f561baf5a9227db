"""Issue 12 through the CLI, lanczos engine: stop signals, orphans, locks, stderr, paths, fail-early, options.

Each case checks what a user sees (exit code, one line, no traceback) and what is
left on disk (a snapshot of the folder, or no temporary file anywhere).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from cli_checks import error_line, partial_files, snapshot
from star_cli.pipeline.lock import lock_path
from star_cli.testing.media import make_video
from star_cli.video.probe import probe

LANCZOS = ("--engine", "lanczos", "--preset", "ultrafast")
STAR_SCRIPT = str(Path(sys.executable).with_name("star"))


def _slow_run(source: Path, dest: Path, **popen) -> subprocess.Popen:
    """A console-script run that takes seconds (scale 8, slow preset), so signals land mid-video."""
    command = [STAR_SCRIPT, "upscale", str(source), "-o", str(dest), "--engine", "lanczos", "--scale", "8", "--preset", "veryslow"]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)


def _wait_for_partial(folder: Path, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while not any(p.stat().st_size for p in partial_files(folder) if p.exists()) and process.poll() is None:
        assert time.monotonic() < deadline, "no output was started within 60 s"
        time.sleep(0.02)
    assert process.poll() is None, "the run finished before the test could act"


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory) -> Path:
    return make_video(tmp_path_factory.mktemp("long") / "long.mp4", frames=96, audio=False)


# ---------------------------------------------------------------- signals, orphans, locks


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129)], ids=["SIGTERM", "SIGHUP"])
def test_sigterm_and_sighup_stop_like_ctrl_c(signum, code, long_clip, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    process = _slow_run(long_clip, out / "big.mp4", text=True)
    _wait_for_partial(out, process)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == code, stderr
    assert stderr.strip().splitlines() == ["interrupted: no partial output was kept"]
    assert list(out.iterdir()) == []


def test_orphans_of_a_killed_run_are_swept_by_the_next_run(long_clip, clip, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    process = _slow_run(long_clip, out / "big.mp4")
    _wait_for_partial(out, process)
    process.kill()  # SIGKILL: nothing of ours runs, the temporary file stays
    process.communicate(timeout=60)
    orphans = partial_files(out)
    assert orphans and all(f".{process.pid}-" in p.name for p in orphans)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        running = out / f".other.{live.pid}-0123abcd.partial.mp4"  # a live process's file is never touched
        running.write_bytes(b"in progress")
        done = subprocess.run([STAR_SCRIPT, "upscale", str(clip), "-o", str(out / "small.mp4"), *LANCZOS, "-q"],
                              capture_output=True, text=True, timeout=120)
        assert (done.returncode, done.stderr) == (0, "")
        assert lock_path(out / "big.mp4").exists() is False  # its lock file too: no process held it
        assert sorted(p.name for p in out.iterdir()) == sorted(["small.mp4", running.name])
    finally:
        live.kill()
        live.wait()


def test_a_second_run_on_the_same_output_is_refused_at_once(long_clip, clip, tmp_path, run_cli):
    out = tmp_path / "out"
    out.mkdir()
    dest = out / "big.mp4"
    first = _slow_run(long_clip, dest, text=True)
    try:
        _wait_for_partial(out, first)
        before = snapshot(tmp_path)
        started = time.monotonic()
        line = error_line(run_cli("upscale", clip, "-o", dest, *LANCZOS, "--overwrite"))
        assert time.monotonic() - started < 5
        assert re.fullmatch(rf"error: another star run \(pid {first.pid}\) is writing .*big.mp4: .*", line), line
        assert {k: v for k, v in snapshot(tmp_path).items() if ".partial" not in k} == {
            k: v for k, v in before.items() if ".partial" not in k
        }
        assert first.poll() is None, "the first run must go on"
    finally:
        first.kill()
        first.communicate(timeout=60)
    # The lock file a killed run leaves behind blocks no one: the OS released its lock.
    result = run_cli("upscale", clip, "-o", dest, *LANCZOS, "-q")
    assert result.exit_code == 0, result.output
    assert partial_files(out) == [] and not lock_path(dest).exists()


def test_closing_stderr_mid_run_does_not_fail_the_job(long_clip, tmp_path):
    dest = tmp_path / "big.mp4"
    process = _slow_run(long_clip, dest, env={**os.environ, "COLUMNS": "120"})
    _wait_for_partial(tmp_path, process)
    process.stderr.close()  # the reader goes away: progress and the final line hit a broken pipe
    process.wait(timeout=120)
    process.stdout.close()
    assert process.returncode == 0
    assert probe(dest).num_frames == 96 and partial_files(tmp_path) == []


# ---------------------------------------------------------------- paths that look like markup


def test_paths_with_brackets_are_printed_as_they_are(base_clip, tmp_path, run_cli):
    source = tmp_path / "clip[1].mp4"
    source.write_bytes(base_clip.read_bytes())
    dest = tmp_path / "out[red].mp4"
    result = run_cli("upscale", source, "-o", dest, *LANCZOS)
    assert result.exit_code == 0, result.output
    assert result.stderr.strip().splitlines()[-1] == f"wrote {dest}"
    assert probe(dest).num_frames == 24


def test_a_folder_of_bracketed_names_is_upscaled_whole(base_clip, tmp_path, run_cli):
    clips, out = tmp_path / "clips", tmp_path / "out"
    clips.mkdir()
    out.mkdir()
    names = ["[bold].mp4", "a[red]b.mp4", "c\\[1].mp4"]  # the last has a backslash before its bracket
    for name in names:
        (clips / name).write_bytes(base_clip.read_bytes())
    result = run_cli("upscale", clips, "-o", out, *LANCZOS, "--dry-run")
    assert result.exit_code == 0, result.output
    assert all(name in result.stdout for name in names)
    result = run_cli("upscale", clips, "-o", out, *LANCZOS)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == sorted(names)
    assert [line for line in result.stderr.splitlines() if line.startswith("wrote")] == [f"wrote {out / n}" for n in sorted(names)]


# ---------------------------------------------------------------- fail before the expensive part


def _clip_with_audio(path: Path, codec: str, layout: str, silence: np.ndarray, sample_format: str) -> Path:
    """12 frames of 64x48 H.264 and 24 frames of silent `codec` audio (`silence`: one frame's samples)."""
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=24)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        audio = container.add_stream(codec, rate=48000)
        audio.layout = layout
        for i in range(12):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 16, np.uint8), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 24)
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        for k in range(24):
            sound = av.AudioFrame.from_ndarray(silence, format=sample_format, layout=layout)
            sound.sample_rate, sound.pts = 48000, k * 1024
            container.mux(audio.encode(sound))
        container.mux(audio.encode(None))
    return path


def _six_channel_pcm(path: Path) -> Path:
    """64x48 video with 6-channel PCM audio of unordered layout (Matroska): MP4 takes it, then fails at the trailer."""
    return _clip_with_audio(path, "pcm_s16le", "5.1", np.zeros((1, 1024 * 6), np.int16), "s16")


def _concatenated_ts(path: Path) -> Path:
    """Two MPEG-TS clips joined byte for byte (`cat a.ts b.ts`): every timeline starts over halfway."""
    part = _clip_with_audio(path.with_name("part.ts"), "aac", "stereo", np.zeros((2, 1024), np.float32), "fltp")
    path.write_bytes(part.read_bytes() * 2)
    part.unlink()
    return path


def test_six_channel_pcm_into_mp4_is_reencoded_not_failed_at_the_end(tmp_path, run_cli):
    source = _six_channel_pcm(tmp_path / "surround.mkv")
    dest = tmp_path / "out.mp4"
    result = run_cli("upscale", source, "-o", dest, *LANCZOS)
    assert result.exit_code == 0, result.output
    assert "re-encoded audio stream #1 (pcm_s16le -> aac)" in result.stderr
    with av.open(str(dest)) as container:
        assert [(s.type, s.codec_context.name) for s in container.streams] == [("video", "h264"), ("audio", "aac")]
        assert len(container.streams.audio[0].layout.channels) == 6


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_concatenated_timestamps_are_continued(suffix, tmp_path, run_cli):
    source = _concatenated_ts(tmp_path / "joined.ts")
    dest = tmp_path / f"out{suffix}"
    result = run_cli("upscale", source, "-o", dest, *LANCZOS, "-q")
    assert result.exit_code == 0, result.output
    with av.open(str(dest)) as container:
        times = sorted(float(f.time) for f in container.decode(video=0))
    assert len(times) == 24 and all(b > a for a, b in zip(times, times[1:]))
    assert times[-1] > 0.9  # the second half follows the first instead of piling up at its end


@pytest.mark.parametrize("extra", [(), ("--dry-run",)], ids=["run", "dry-run"])
@pytest.mark.parametrize("suffix", [".mp4", ".webm"])
def test_an_output_size_the_encoder_refuses_fails_before_any_engine_runs(suffix, extra, tmp_path, run_cli, monkeypatch):
    source = make_video(tmp_path / "wide.mp4", width=2560, height=16, frames=2, audio=False)
    monkeypatch.setattr("star_cli.pipeline.upscale.make_engine", lambda *a: pytest.fail("the engine was loaded"))
    before = snapshot(tmp_path)
    line = error_line(run_cli("upscale", source, "-o", tmp_path / f"out{suffix}", "--scale", "8", *extra))
    assert re.search(r"cannot encode 20480x128 .*choose another --scale or --codec", line), line
    assert snapshot(tmp_path) == before


# ---------------------------------------------------------------- options refused at parse time


def _binary_prompt(tmp: Path) -> list:
    (tmp / "prompt.bin").write_bytes(bytes(range(256)) * 4)
    return ["--prompt-file", tmp / "prompt.bin"]


def _nul_prompt(tmp: Path) -> list:
    (tmp / "prompt.txt").write_bytes(b"a cat\x00\x00\x00")
    return ["--prompt-file", tmp / "prompt.txt"]


def _only_light_weights(tmp: Path) -> list:
    weights = tmp / "weights"
    (weights / "star").mkdir(parents=True)
    (weights / "star" / "light_deg.safetensors").write_bytes(b"x")
    (weights / "manifest.json").write_text('{"format": 1, "files": {}}')
    return ["--weights-dir", weights, "--checkpoint", "heavy"]


def _given(*args: object):
    return lambda tmp: list(args)


OPTION_CASES = {
    "guidance nan": (_given("--guidance", "nan"), r"--guidance must be a finite number, got nan$"),
    "scale inf": (_given("--scale", "inf"), r"--scale must be a finite number, got inf$"),
    "steps 1e9": (_given("--steps", "1000000000"), r"--steps must be between 2 and 1000 .*got 1000000000$"),
    "seed -1": (_given("--seed", "-1"), r"--seed must be 0 or more .*got -1$"),
    "binary prompt file": (_binary_prompt, r"prompt.bin is not UTF-8 text$"),
    "prompt file with NULs": (_nul_prompt, r"prompt.txt holds control characters"),
    "scale 1e-9": (_given("--scale", "1e-9"), r"--scale must be between 0.125 and 8, got 1e-9$"),
    "scale 8.0000001": (_given("--scale", "8.0000001"), r"got 8.0000001$"),
    "tiny downscale": (_given("--scale", "0.25"), r"--scale 0.25 would make a 16x12 video from 64x48"),
    "tile too small": (_given("--tile-size", "80x80"), r"--tile-size 80x80 \(HxW\) .*nearest valid: 272x256"),
    "missing checkpoint": (_given("--checkpoint", "nope.safetensors"), r"--checkpoint nope.safetensors: no such file"),
    "missing weights dir": (_given("--weights-dir", "no/such/dir"), r"--weights-dir no/such/dir is not a folder$"),
    "missing heavy file": (_only_light_weights, r"--checkpoint heavy: .* has no star/heavy_deg.safetensors: run `star download-weights --variant heavy"),
}


@pytest.mark.parametrize("case", OPTION_CASES.values(), ids=OPTION_CASES.keys())
def test_bad_options_are_one_line_exit_2_before_anything_loads(case, clip, tmp_path, run_cli, monkeypatch):
    build, message = case
    args = build(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("star_cli.hub.ensure_weights", lambda *a, **k: pytest.fail("weights were checked"))
    before = snapshot(tmp_path)
    line = error_line(run_cli("upscale", clip, "-o", tmp_path / "out.mp4", "--device", "cpu", *args))
    assert re.search(message, line), line
    assert snapshot(tmp_path) == before


def test_the_suggested_and_the_smallest_tile_size_are_accepted(clip, tmp_path, run_cli):
    line = error_line(run_cli("upscale", clip, "-o", tmp_path / "out.mp4", "--tile-size", "300x300", "--dry-run"))
    for size in re.search(r"nearest valid: (\d+x\d+) \(smallest: (\d+x\d+)\)", line).groups():
        result = run_cli("upscale", clip, "-o", tmp_path / "out.mp4", "--tile-size", size, "--dry-run")
        assert result.exit_code == 0, result.output

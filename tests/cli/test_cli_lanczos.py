"""`star upscale --engine lanczos` end to end: what goes in comes out, only bigger.

Issue 2: output frame count == input frame count; audio and the A/V offset untouched;
VFR stays VFR; rotation applied; 10-bit kept; subtitles kept; mkv, mov and webm;
odd sizes scaled exactly; a folder upscaled into a folder; --dry-run needs no weights.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from cli_checks import error_line, packet_times, partial_files, same_times, snapshot
from star_cli.testing.media import make_video
from star_cli.video.probe import probe
from star_cli.video.reader import read_batches

LANCZOS = ("--engine", "lanczos", "--preset", "ultrafast")


def _video_times(path: Path) -> list[float]:
    """Presentation times of the video frames in seconds, in display order."""
    return sorted(start for start, _ in packet_times(path, "video"))


def _first_frame(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return next(container.decode(video=0)).to_ndarray(format="rgb24")


def _upscale(run_cli, source: Path, dest: Path, *args: object) -> None:
    result = run_cli("upscale", source, "-o", dest, *LANCZOS, *args)
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert partial_files(dest.parent) == []


def test_frames_timing_and_audio_are_kept(clip, tmp_path, run_cli):
    dest = tmp_path / "out.mp4"
    result = run_cli("upscale", clip, "-o", dest, *LANCZOS, "--scale", "2")
    assert result.exit_code == 0, result.output
    assert "24/24 frames written (" in result.stderr and " fps)" in result.stderr  # the log line at the end
    assert f"wrote {dest}" in result.stderr.replace("\n", "")

    source, out = probe(clip), probe(dest)
    assert (out.width, out.height, out.num_frames) == (128, 96, 24)
    assert _video_times(dest) == pytest.approx(_video_times(clip), abs=1e-3)
    # Audio packets are copied untouched: same count, starts and durations, so the
    # audio duration and its offset from the first video frame cannot move.
    assert same_times(packet_times(dest, "audio"), packet_times(clip, "audio"))
    assert out.duration == pytest.approx(source.duration, abs=1e-3)
    assert [(s.kind, s.codec, s.language) for s in out.streams] == [("audio", "aac", "eng")]


@pytest.mark.parametrize(
    "suffix, codec, out_codec, streams",
    [
        (".mkv", "libx264", "h264", [("audio", "opus", "eng"), ("subtitle", "subrip", "fra")]),
        (".mov", "libx264", "h264", [("audio", "aac", "eng"), ("subtitle", "mov_text", "fra")]),
        (".webm", "libvpx-vp9", "av1", [("audio", "opus", "eng"), ("subtitle", "webvtt", "fra")]),  # --codec auto
    ],
)
def test_containers_keep_audio_and_subtitles(suffix, codec, out_codec, streams, tmp_path, run_cli):
    source = make_video(tmp_path / f"in{suffix}", frames=12, codec=codec, subtitles=True)
    dest = tmp_path / f"out{suffix}"
    _upscale(run_cli, source, dest, "--scale", "2", "-q")
    out = probe(dest)
    assert (out.codec, out.width, out.height, out.num_frames) == (out_codec, 128, 96, 12)
    assert [(s.kind, s.codec, s.language) for s in out.streams] == streams
    assert same_times(packet_times(dest, "audio"), packet_times(source, "audio"))
    cues = [[t for t in packet_times(f, "subtitle") if t[1] > 0] for f in (dest, source)]  # MOV adds empty gap samples
    assert len(cues[1]) == 2 and same_times(*cues)


def test_variable_frame_rate_stays_variable(tmp_path, run_cli):
    source = make_video(tmp_path / "vfr.mp4", frames=12, vfr=True, audio=False)
    dest = tmp_path / "out.mp4"
    _upscale(run_cli, source, dest, "--scale", "2", "-q")
    assert probe(source).is_vfr and probe(dest).is_vfr
    assert _video_times(dest) == pytest.approx(_video_times(source), abs=1e-3)


def test_rotation_is_applied(tmp_path, run_cli):
    source = make_video(tmp_path / "rotated.mp4", frames=3, rotation=90, audio=False)
    dest = tmp_path / "out.mp4"
    _upscale(run_cli, source, dest, "--scale", "2", "-q")
    out = probe(dest)
    assert (out.width, out.height, out.rotation) == (96, 128, 0)
    upright = next(read_batches(source, 1)).frames[0].astype(np.float32)  # displayed: 64 high, 48 wide
    shrunk = _first_frame(dest).astype(np.float32).reshape(64, 2, 48, 2, 3).mean(axis=(1, 3))
    error = np.abs(shrunk - upright).mean()
    assert error < 6 < np.abs(shrunk - upright[::-1, ::-1]).mean()


def test_ten_bit_stays_ten_bit(tmp_path, run_cli):
    source = make_video(tmp_path / "deep.mkv", frames=3, pix_fmt="yuv420p10le", audio=False)
    dest = tmp_path / "out.mkv"
    _upscale(run_cli, source, dest, "--scale", "2", "-q")
    out = probe(dest)
    assert (out.bit_depth, out.pix_fmt, out.num_frames) == (10, "yuv420p10le", 3)


@pytest.mark.parametrize("scale, size", [("2", (642, 482)), ("3", (963, 723))])
def test_odd_size_is_scaled_exactly(scale, size, tmp_path, run_cli):
    source = make_video(tmp_path / "odd.mp4", frames=2, width=321, height=241, pix_fmt="yuv444p", audio=False)
    dest = tmp_path / "out.mp4"
    _upscale(run_cli, source, dest, "--scale", scale, "-q")
    out = probe(dest)
    assert (out.width, out.height, out.num_frames) == (*size, 2)


def test_folder_is_upscaled_into_a_folder(tmp_path, run_cli):
    videos, out = tmp_path / "videos", tmp_path / "out"
    videos.mkdir(), out.mkdir()
    make_video(videos / "a.mp4", frames=6, audio=False)
    make_video(videos / "b.mkv", frames=5, audio=False)
    make_video(videos / "c.avi", frames=4, audio=False)  # a container we read but do not write
    (videos / "notes.txt").write_text("not a video\n")
    before = snapshot(videos)
    result = run_cli("upscale", videos, "-o", out, *LANCZOS, "--scale", "2")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["a.mp4", "b.mkv", "c.mkv"]
    assert [probe(out / n).num_frames for n in ("a.mp4", "b.mkv", "c.mkv")] == [6, 5, 4]
    assert result.stderr.count("wrote") == 3
    assert snapshot(videos) == before


def test_overwrite_replaces_an_existing_output(clip, tmp_path, run_cli):
    dest = tmp_path / "out.mp4"
    dest.write_bytes(b"old")
    _upscale(run_cli, clip, dest, "--overwrite", "-q")
    assert probe(dest).num_frames == 24


def test_quiet_prints_nothing_and_verbose_prints_the_plan(clip, tmp_path, run_cli):
    quiet = run_cli("upscale", clip, "-o", tmp_path / "quiet.mp4", *LANCZOS, "--quiet")
    assert quiet.exit_code == 0 and quiet.stdout == "" and quiet.stderr == ""
    verbose = run_cli("upscale", clip, "-o", tmp_path / "verbose.mp4", *LANCZOS, "--verbose")
    assert verbose.exit_code == 0, verbose.output
    assert "Upscale plan" in verbose.stderr and "256x192 (x4)" in verbose.stderr and "wrote" in verbose.stderr
    assert re.search(r"engine compute [\d.]+ s, total [\d.]+ s", verbose.stderr)


def test_dry_run_prints_the_plan_and_needs_no_weights(clip, tmp_path, run_cli):
    before = snapshot(tmp_path)
    result = run_cli("upscale", clip, "-o", tmp_path / "out.mp4", "--scale", "4", "--dry-run")
    assert result.exit_code == 0, result.output
    for row in ("Output", "256x192 (x4)", "Canvas", "Chunks", "Tiles", "UNet evaluations", "GPU memory", "Host memory"):
        assert row in result.stdout, row
    assert snapshot(tmp_path) == before


def test_dry_run_says_whether_the_unet_compiles(clip, tmp_path, run_cli):
    auto = run_cli("upscale", clip, "-o", tmp_path / "out.mp4", "--dry-run", "--device", "cpu")
    assert auto.exit_code == 0 and "compile: off (auto compiles on CUDA only; --compile forces it)" in auto.output
    forced = run_cli("upscale", clip, "-o", tmp_path / "out.mp4", "--dry-run", "--device", "cpu", "--compile")
    assert forced.exit_code == 0 and "compile: on (--compile)" in forced.output
    assert "compile" not in run_cli("upscale", clip, "-o", tmp_path / "out.mp4", "--dry-run", *LANCZOS).output


def test_a_compile_the_machine_cannot_do_is_refused_before_any_file_is_read(clip, tmp_path, run_cli, monkeypatch):
    from star_cli.pipeline.engines import compiling
    from star_cli.video import probe as probe_module

    monkeypatch.setattr(compiling, "compile_unavailable", lambda device: "no C++ compiler here")
    opened: list[object] = []
    monkeypatch.setattr(probe_module, "open_input", lambda path: opened.append(path))
    before = snapshot(tmp_path)
    for extra in ((), ("--dry-run",)):
        line = error_line(run_cli("upscale", clip, "-o", tmp_path / "out.mp4", "--device", "cpu", "--compile", *extra))
        assert line == "error: --compile: no C++ compiler here; run without it (or with --no-compile)"
    assert snapshot(tmp_path) == before and not opened


def test_console_script_runs_in_a_subprocess(clip, tmp_path):
    script = Path(sys.executable).with_name("star")
    dest = tmp_path / "out.mkv"
    done = subprocess.run(
        [str(script), "upscale", str(clip), "-o", str(dest), *LANCZOS, "-q"], capture_output=True, text=True, timeout=120
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    assert probe(dest).num_frames == 24


def test_yuv_resize_matches_the_rgb_engine(clip, tmp_path, run_cli):
    """The file path resizes decoded YUV in one swscale pass; its pixels match resizing RGB frames."""
    from star_cli.pipeline.engines.lanczos import LanczosEngine
    from star_cli.pipeline.plan import PlanOptions, make_plan

    dest = tmp_path / "out.mkv"
    assert run_cli("upscale", clip, "-o", dest, "--engine", "lanczos", "--scale", "2", "--codec", "ffv1", "-q").exit_code == 0
    frames = np.concatenate([b.frames for b in read_batches(clip, 8)])
    expected = LanczosEngine().restore(frames, make_plan(len(frames), *frames.shape[1:3], PlanOptions(scale=2)))
    with av.open(str(dest)) as container:
        got = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    assert got.shape == expected.shape
    assert np.abs(got.astype(int) - expected.astype(int)).mean() < 2.0


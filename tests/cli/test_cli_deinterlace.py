"""`star upscale --deinterlace auto|on|off`: interlaced sources come out without combs unless asked otherwise."""

from __future__ import annotations

import numpy as np
import pytest

from cli_checks import error_line, snapshot
from star_cli.testing.media import decode_rgb, make_video

LANCZOS = ("--engine", "lanczos", "--preset", "ultrafast", "--scale", "2", "--crf", "10")


def comb(frames: np.ndarray) -> float:
    """Neighbouring rows' difference beyond what rows two apart show: the fields disagreeing."""
    frames = frames.astype(np.float32)
    return float(np.abs(frames[:, 1:] - frames[:, :-1]).mean() - 0.5 * np.abs(frames[:, 2:] - frames[:, :-2]).mean())


@pytest.fixture
def tape(tmp_path):
    return make_video(tmp_path / "tape.mp4", frames=10, interlaced=True)


def test_an_interlaced_source_is_deinterlaced_by_default_and_kept_combed_when_off(tape, tmp_path, run_cli):
    auto, off = tmp_path / "auto.mp4", tmp_path / "off.mp4"
    result = run_cli("upscale", tape, "-o", auto, *LANCZOS)
    assert result.exit_code == 0, result.output
    told = result.stderr.replace("\n", "")
    assert "fields are rebuilt into whole frames (bwdif)" in told and "stay combed" not in told
    result = run_cli("upscale", tape, "-o", off, *LANCZOS, "--deinterlace", "off")
    assert result.exit_code == 0, result.output
    assert "interlaced and --deinterlace off keeps its fields" in result.stderr.replace("\n", "")
    rebuilt, combed = decode_rgb(auto), decode_rgb(off)
    assert rebuilt.shape == combed.shape == (10, 96, 128, 3)
    assert comb(rebuilt) < 0.6 * comb(combed)


def test_a_dry_run_says_what_will_happen_to_the_fields(tape, tmp_path, run_cli):
    result = run_cli("upscale", tape, "-o", tmp_path / "out.mp4", *LANCZOS, "--dry-run")
    assert result.exit_code == 0, result.output
    assert "fields are rebuilt into whole frames (bwdif)" in result.stderr.replace("\n", "")
    assert not (tmp_path / "out.mp4").exists()


def test_on_rebuilds_a_source_not_flagged_interlaced(tmp_path, run_cli):
    clip = make_video(tmp_path / "progressive.mp4", frames=6, audio=False)
    plain, forced = tmp_path / "plain.mp4", tmp_path / "forced.mp4"
    assert run_cli("upscale", clip, "-o", plain, *LANCZOS).exit_code == 0
    assert run_cli("upscale", clip, "-o", forced, *LANCZOS, "--deinterlace", "on").exit_code == 0
    assert len(decode_rgb(forced)) == 6 and not np.array_equal(decode_rgb(forced), decode_rgb(plain))


def test_a_bad_mode_is_one_line_before_any_work(clip, tmp_path, run_cli):
    before = snapshot(tmp_path)
    line = error_line(run_cli("upscale", clip, "-o", tmp_path / "out.mp4", *LANCZOS, "--deinterlace", "yes"))
    assert "--deinterlace must be one of auto, on, off" in line
    assert snapshot(tmp_path) == before


def test_a_frame_too_small_for_bwdif_is_refused_under_on_and_kept_under_auto(tmp_path, run_cli):
    tiny = make_video(tmp_path / "tiny.mp4", frames=4, width=4, height=16, audio=False, interlaced=True)
    before = snapshot(tmp_path)
    line = error_line(run_cli("upscale", tiny, "-o", tmp_path / "on.mp4", *LANCZOS, "--deinterlace", "on"))
    assert "--deinterlace on: bwdif refuses 4x16 yuv420p" in line
    assert snapshot(tmp_path) == before
    kept = run_cli("upscale", tiny, "-o", tmp_path / "auto.mp4", *LANCZOS)
    assert kept.exit_code == 0, kept.output
    assert "interlaced, but bwdif refuses 4x16 yuv420p" in kept.stderr.replace("\n", "") and "fields are kept" in kept.stderr
    assert len(decode_rgb(tmp_path / "auto.mp4")) == 4

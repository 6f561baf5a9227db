"""probe(): exact facts about good files, one clear InputError for bad ones."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

from star_cli.errors import InputError
from star_cli.testing.media import faststart_copy, make_audio, make_video, truncate
from star_cli.video.probe import probe


def test_mp4_with_audio_and_subtitles(tmp_path):
    info = probe(make_video(tmp_path / "a.mp4", frames=30, fps=Fraction(30000, 1001), subtitles=True))
    assert (info.width, info.height, info.rotation) == (64, 48, 0)
    assert info.fps == Fraction(30000, 1001) and info.nominal_fps == Fraction(30000, 1001)
    assert info.num_frames == info.declared_frames == 30
    assert info.duration == pytest.approx(30 * 1001 / 30000, abs=1e-3)
    assert (info.pix_fmt, info.bit_depth, info.codec, info.is_vfr) == ("yuv420p", 8, "h264", False)
    kinds = [(s.kind, s.codec, s.language) for s in info.streams]
    assert kinds == [("audio", "aac", "eng"), ("subtitle", "mov_text", "fra")]


@pytest.mark.parametrize("suffix, codec", [(".mkv", "libx264"), (".webm", "libvpx-vp9"), (".mov", "libx264")])
def test_frame_count_without_header_count(tmp_path, suffix, codec):
    """Matroska/WebM headers carry no frame count: packets are counted instead."""
    info = probe(make_video(tmp_path / f"c{suffix}", frames=17, codec=codec, subtitles=True))
    assert info.num_frames == 17
    assert info.duration == pytest.approx(17 / 24, abs=2e-3)
    assert info.fps == 24 and not info.is_vfr
    assert {s.kind for s in info.streams} == {"audio", "subtitle"}


def test_rotation_swaps_displayed_size(tmp_path):
    info = probe(make_video(tmp_path / "r.mp4", rotation=90, width=64, height=48))
    assert (info.rotation, info.width, info.height) == (90, 48, 64)
    assert (info.coded_width, info.coded_height) == (64, 48)


def test_variable_frame_rate(tmp_path):
    info = probe(make_video(tmp_path / "v.mkv", frames=24, vfr=True))
    assert info.is_vfr
    assert info.num_frames == 24
    assert float(info.fps) == pytest.approx(24, rel=0.05)


def test_ten_bit_and_odd_size(tmp_path):
    deep = probe(make_video(tmp_path / "d.mkv", pix_fmt="yuv420p10le", audio=False))
    assert (deep.pix_fmt, deep.bit_depth, deep.streams) == ("yuv420p10le", 10, ())
    odd = probe(make_video(tmp_path / "o.mp4", width=321, height=241, pix_fmt="yuv444p", frames=3))
    assert (odd.width, odd.height) == (321, 241)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        probe(tmp_path / "nope.mp4")


def test_folder(tmp_path):
    with pytest.raises(InputError, match="is a folder"):
        probe(tmp_path)


def test_empty_file(tmp_path):
    (tmp_path / "e.mp4").touch()
    with pytest.raises(InputError, match=r"empty \(0 bytes\)"):
        probe(tmp_path / "e.mp4")


def test_text_file_named_mp4(tmp_path):
    (tmp_path / "t.mp4").write_text("this is not a video\n" * 20)
    with pytest.raises(InputError, match="cannot be read as a video"):
        probe(tmp_path / "t.mp4")


def test_audio_only(tmp_path):
    with pytest.raises(InputError, match=r"no video stream \(audio only\)"):
        probe(make_audio(tmp_path / "a.m4a"))


def test_still_image(tmp_path):
    av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8)).save(tmp_path / "still.png")
    with pytest.raises(InputError, match="still image"):
        probe(tmp_path / "still.png")
    (tmp_path / "still.png").rename(tmp_path / "still.mp4")
    with pytest.raises(InputError, match="still image"):
        probe(tmp_path / "still.mp4")


def test_truncated_mp4_without_index(tmp_path):
    """An MP4 whose index (at the end) was cut off cannot be read at all."""
    path = truncate(make_video(tmp_path / "t.mp4", frames=48), 0.6)
    with pytest.raises(InputError, match="damaged/truncated"):
        probe(path)


def test_truncated_mp4_names_first_lost_frame(tmp_path):
    path = truncate(faststart_copy(make_video(tmp_path / "s.mp4", frames=48), tmp_path / "f.mp4"), 0.6)
    with pytest.raises(InputError, match=r"frame (\d+) could not be decoded.*--ignore-errors") as caught:
        probe(path)
    lost = int(caught.value.args[0].split("frame ")[1].split()[0])
    assert 0 < lost < 48
    assert "\n" not in str(caught.value)
    info = probe(path, ignore_errors=True)
    assert info.num_frames == lost and info.declared_frames == 48 and info.is_truncated

"""Deinterlacing (bwdif) on decoded frames: combs removed, one frame out per frame in, timing and rotation kept."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

from star_cli.testing.media import make_video
from star_cli.video.deinterlace import bwdif_frames, bwdif_refusal, deinterlaced
from star_cli.video.probe import probe
from star_cli.video.reader import read_batches, read_frames


def comb(frames: np.ndarray) -> float:
    """Mean difference of neighbouring rows minus that of rows two apart: high when fields disagree."""
    frames = frames.astype(np.float32)
    adjacent = np.abs(frames[:, 1:] - frames[:, :-1]).mean()
    two_apart = np.abs(frames[:, 2:] - frames[:, :-2]).mean()
    return float(adjacent - 0.5 * two_apart)


def read_all(path, **kwargs) -> tuple[np.ndarray, list[int]]:
    batches = list(read_batches(path, 5, **kwargs))
    return np.concatenate([b.frames for b in batches]), [p for b in batches for p in b.pts]


@pytest.fixture(scope="module")
def interlaced_clip(tmp_path_factory):
    return make_video(tmp_path_factory.mktemp("interlaced") / "tape.mp4", frames=12, audio=False, interlaced=True)


def test_which_frames_follow_the_option_and_the_probe():
    assert bwdif_frames("auto", True) == "interlaced" and bwdif_frames("auto", False) is None
    assert bwdif_frames("on", False) == "all" and bwdif_frames("on", True) == "all"
    assert bwdif_frames("off", True) is None


def test_interlaced_frames_lose_their_comb_and_keep_count_and_timestamps(interlaced_clip):
    assert probe(interlaced_clip).interlaced
    fields, pts = read_all(interlaced_clip)
    frames, pts_after = read_all(interlaced_clip, deinterlace="interlaced")
    assert frames.shape == fields.shape and pts_after == pts
    assert comb(frames) < 0.5 * comb(fields)
    assert np.abs(frames.astype(int) - fields.astype(int)).mean() < 8  # the picture itself stays


def test_auto_leaves_progressive_frames_exactly_as_they_are(tmp_path):
    clip = make_video(tmp_path / "progressive.mp4", frames=7, audio=False, rotation=90)
    plain, pts = read_all(clip)
    flagged_only, pts_after = read_all(clip, deinterlace="interlaced")
    assert np.array_equal(flagged_only, plain) and pts_after == pts
    forced, _ = read_all(clip, deinterlace="all")  # rotation is kept through the filter
    assert forced.shape == plain.shape == (7, 64, 48, 3)


def test_the_yuv_path_is_deinterlaced_too(interlaced_clip):
    plain = [frame.to_ndarray(format="rgb24") for frame, _ in read_frames(interlaced_clip)]
    rebuilt = [(frame.to_ndarray(format="rgb24"), pts) for frame, pts in read_frames(interlaced_clip, deinterlace="all")]
    assert len(rebuilt) == len(plain)
    assert comb(np.stack([f for f, _ in rebuilt])) < 0.5 * comb(np.stack(plain))


def test_a_size_change_midway_gets_a_new_filter_without_losing_frames():
    def frame(width: int, pts: int) -> av.VideoFrame:
        made = av.VideoFrame.from_ndarray(np.full((16, width, 3), pts * 20, np.uint8), format="rgb24").reformat(format="yuv420p")
        made.pts = pts
        return made

    sizes = [32, 32, 32, 48, 48]
    out = list(deinterlaced((frame(w, i) for i, w in enumerate(sizes)), Fraction(1, 25), "all"))
    assert [f.width for f in out] == sizes and [f.pts for f in out] == list(range(5))


@pytest.mark.parametrize("pix_fmt", ["uyvy422", "nv12", "yuv420p"])
def test_colour_tags_survive_the_repacking_of_packed_and_semi_planar_frames(pix_fmt):
    """bwdif takes planar formats only; ffmpeg repacks the others on the way in and drops their tags."""
    def frame(pts: int) -> av.VideoFrame:
        made = av.VideoFrame(32, 16, pix_fmt)
        made.pts, made.colorspace, made.color_range = pts, 1, 2  # BT.709, full range
        made.color_primaries, made.color_trc = 1, 1
        return made

    out = list(deinterlaced((frame(i) for i in range(3)), Fraction(1, 25), "all"))
    assert len(out) == 3
    for rebuilt in out:
        assert (rebuilt.colorspace, rebuilt.color_range, rebuilt.color_primaries, rebuilt.color_trc) == (1, 2, 1, 1)


def test_frames_too_small_for_bwdif_are_named_before_any_is_read():
    assert bwdif_refusal(32, 7, "yuv420p") is None and bwdif_refusal(3, 4, "yuv444p") is None
    for width, height, pix_fmt in [(16, 6, "yuv420p"), (4, 16, "yuv420p"), (2, 2, "yuv444p")]:
        reason = bwdif_refusal(width, height, pix_fmt)
        assert reason is not None and f"{width}x{height} {pix_fmt}" in reason and "3x4 pixels" in reason

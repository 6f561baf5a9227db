"""read_batches(): frames in order, right colours, rotation, timestamps, bounded memory, damage."""

from __future__ import annotations

import tracemalloc
from fractions import Fraction

import av
import numpy as np
import pytest
from av.video.reformatter import ColorRange, Colorspace

from star_cli.errors import InputError
from star_cli.testing.media import faststart_copy, frame_ticks, make_video, pattern_frame, truncate
from star_cli.video.probe import probe
from star_cli.video.reader import read_batches


def read_all(path, batch_size=5, **kwargs):
    batches = list(read_batches(path, batch_size, **kwargs))
    return batches, np.concatenate([b.frames for b in batches]), [p for b in batches for p in b.pts]


def error_against_pattern(frames, width, height, turns=0):
    expected = np.stack([np.rot90(pattern_frame(i, width, height), turns) for i in range(len(frames))])
    return np.abs(frames.astype(int) - expected).mean()


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("h264.mp4", {}),
        ("vp9.webm", {"codec": "libvpx-vp9"}),
        ("h264_10bit.mkv", {"pix_fmt": "yuv420p10le"}),
        ("hevc_10bit.mov", {"codec": "libx265", "pix_fmt": "yuv420p10le"}),
        ("ffv1_10bit.mkv", {"codec": "ffv1", "pix_fmt": "yuv420p10le"}),
    ],
)
def test_frames_match_the_pattern(tmp_path, name, kwargs):
    """Untagged SD decodes as BT.601 limited range; 10-bit sources come out as 8-bit RGB."""
    path = make_video(tmp_path / name, frames=11, **kwargs)
    batches, frames, _ = read_all(path, batch_size=4)
    assert [b.start for b in batches] == [0, 4, 8]
    assert [len(b.frames) for b in batches] == [4, 4, 3]
    assert frames.dtype == np.uint8 and frames.shape == (11, 48, 64, 3)
    assert error_against_pattern(frames, 64, 48) < 2.5  # chroma subsampling at the square's edges


def test_tagged_bt709_full_range_is_honoured(tmp_path):
    """A clip encoded (and tagged) BT.709 full range must not be decoded as BT.601 limited.

    ffv1 keeps the YUV exact and decodes to plain yuv444p (not yuvj444p), so
    only the range tag says "full".
    """
    path = tmp_path / "709pc.mkv"
    rgb = np.zeros((48, 64, 3), np.uint8)
    rgb[:, :32] = (230, 40, 40)
    rgb[:, 32:] = (30, 60, 220)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("ffv1", rate=24)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv444p"
        stream.codec_context.colorspace, stream.codec_context.color_range = 1, 2  # bt709, pc
        frame = av.VideoFrame.from_ndarray(rgb).reformat(
            format="yuv444p", dst_colorspace=Colorspace.ITU709, dst_color_range=ColorRange.JPEG
        )
        frame.pts = 0
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    info = probe(path)
    assert (info.pix_fmt, info.colorspace, info.color_range) == ("yuv444p", "bt709", "pc")
    _, frames, _ = read_all(path)
    assert np.abs(frames[0].astype(int) - rgb).max() <= 2


def test_rotation_is_applied(tmp_path):
    path = make_video(tmp_path / "rot.mp4", frames=4, rotation=90, audio=False)
    _, frames, _ = read_all(path)
    assert frames.shape == (4, 64, 48, 3)
    assert error_against_pattern(frames, 64, 48, turns=1) < 2.5


def test_odd_size(tmp_path):
    path = make_video(tmp_path / "odd.mp4", frames=3, width=321, height=241, pix_fmt="yuv444p", audio=False)
    _, frames, _ = read_all(path)
    assert frames.shape == (3, 241, 321, 3)
    assert error_against_pattern(frames, 321, 241) < 1.5


def test_vfr_timestamps_are_the_source_timestamps(tmp_path):
    path = make_video(tmp_path / "vfr.mov", frames=12, vfr=True, audio=False)
    info = probe(path)
    _, _, pts = read_all(path)
    seconds = [float((p - info.start_pts) * info.time_base) for p in pts]
    assert seconds == pytest.approx([t / 48 for t in frame_ticks(12, vfr=True)], abs=1e-4)


def test_memory_stays_at_one_batch(tmp_path):
    path = make_video(tmp_path / "big.mkv", frames=40, width=320, height=240, audio=False)
    batch_bytes = 4 * 320 * 240 * 3
    tracemalloc.start()
    try:
        count = sum(len(batch.frames) for batch in read_batches(path, 4))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 40
    assert peak < 3 * batch_bytes  # the whole clip would be 10 batches


def test_truncated_file_stops_with_the_frame_number(tmp_path):
    path = truncate(faststart_copy(make_video(tmp_path / "s.mp4", frames=48), tmp_path / "f.mp4"), 0.6)
    decodable = probe(path, ignore_errors=True).num_frames
    with pytest.raises(InputError, match=f"frame {decodable} could not be decoded"):
        read_all(path)
    _, frames, pts = read_all(path, ignore_errors=True)
    assert len(frames) == len(pts) == decodable
    assert error_against_pattern(frames, 64, 48) < 2.5


@pytest.mark.parametrize("name, codec", [("c.webm", "libvpx-vp9"), ("c.mkv", "libx264")])
def test_damage_mid_file_names_the_frame(tmp_path, name, codec):
    """Garbage in the middle of a Matroska/WebM file: its DURATION tag shows frames went missing."""
    path = make_video(tmp_path / name, frames=24, codec=codec, audio=False)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 300] = np.random.default_rng(0).integers(0, 256, 300, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"frame \d+ could not be decoded"):
        read_all(path)
    _, frames, _ = read_all(path, ignore_errors=True)
    assert 1 <= len(frames) < 24


def test_batch_size_must_be_positive(tmp_path):
    with pytest.raises(ValueError):
        next(read_batches(make_video(tmp_path / "a.mp4", frames=2), 0))


def test_nominal_rate_timestamps_are_exact_for_ntsc(tmp_path):
    path = make_video(tmp_path / "ntsc.mp4", frames=6, fps=Fraction(30000, 1001), audio=False)
    info = probe(path)
    _, _, pts = read_all(path)
    assert [(p - pts[0]) * info.time_base for p in pts] == [Fraction(1001 * i, 30000) for i in range(6)]

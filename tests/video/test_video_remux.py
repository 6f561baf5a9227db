"""StreamCopier through VideoWriter: text cues cut to a segment, and only the streams a container refuses re-encoded."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

from star_cli.testing.media import make_video
from star_cli.video.probe import probe
from star_cli.video.reader import read_batches
from star_cli.video.segment import Position, find_segment
from star_cli.video.writer import EncodeOptions, VideoWriter

FAST = EncodeOptions(preset="ultrafast")


def cut(src, dest, start: str, end: str) -> VideoWriter:
    """Write the `start`..`end` segment of `src` to `dest` as `star upscale --start/--end` does."""
    info = probe(src)
    segment = find_segment(src, Position.parse(start, "--start"), Position.parse(end, "--end"))
    writer = VideoWriter(
        dest, info, info.width, info.height, FAST, start_pts=segment.start_pts, end_seconds=segment.end_seconds
    )
    writer.rehearse()
    with writer:
        for batch in read_batches(src, 8, segment=segment):
            writer.write(batch.frames, batch.pts)
    return writer


def cues(path) -> list[tuple[float, float, str]]:
    """(start s, duration s, text) of every cue of the first subtitle stream, as a player reads them."""
    with av.open(str(path)) as container:
        stream = container.streams.subtitles[0]
        found = []
        for packet in container.demux(stream):
            if not packet.size:
                continue
            text = "".join(rect.ass.decode().rsplit(",", 1)[-1] for rect in stream.decode(packet))
            if text:  # mov_text stores the gaps between cues as empty ones
                found.append((float(packet.pts * packet.time_base), float(packet.duration * packet.time_base), text))
        return found


@pytest.mark.parametrize(
    "source, dest",
    [
        (".mkv", ".mkv"),  # SubRip copied
        (".mkv", ".mp4"),  # SubRip converted to mov_text
        (".mp4", ".mkv"),  # mov_text converted to ASS
        (".mp4", ".mov"),  # mov_text copied
    ],
)
def test_segment_keeps_the_cues_on_screen_at_its_cut_points(tmp_path, source, dest):
    src = make_video(tmp_path / f"in{source}", frames=48, width=32, height=32, subtitles=True)
    assert [(t, d) for t, d, _ in cues(src)] == [(0.0, 1.0), (1.0, 1.0)]
    cut(src, tmp_path / f"out{dest}", "0.5", "1.5")
    assert cues(tmp_path / f"out{dest}") == [(0.0, 0.5, "cue 0"), (0.5, 0.5, "cue 1")]


def test_segment_drops_cues_that_end_before_it_and_keeps_a_whole_cue_inside_it(tmp_path):
    src = make_video(tmp_path / "in.mkv", frames=48, width=32, height=32, subtitles=True)
    cut(src, tmp_path / "late.mkv", "1.25", "2")
    assert cues(tmp_path / "late.mkv") == [(0.0, 0.75, "cue 1")]
    cut(src, tmp_path / "early.mkv", "0", "1.5")
    assert cues(tmp_path / "early.mkv") == [(0.0, 1.0, "cue 0"), (1.0, 0.5, "cue 1")]


def _aac_and_opus(path):
    """A Matroska file with video, an AAC mono track and an Opus mono track (0.5 s of silence each)."""
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=24, options={"preset": "ultrafast"})
        video.width, video.height, video.pix_fmt = 32, 32, "yuv420p"
        tracks = [container.add_stream(codec, rate=48_000) for codec in ("aac", "libopus")]
        for track in tracks:
            track.layout = "mono"
        for index in range(12):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 16 * index, np.uint8), format="rgb24")
            frame.pts = index
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        for track in tracks:
            for start in range(0, 24_000, 960):
                frame = av.AudioFrame.from_ndarray(np.zeros((1, 960), np.float32), format="fltp", layout="mono")
                frame.sample_rate, frame.pts, frame.time_base = 48_000, start, Fraction(1, 48_000)
                container.mux(track.encode(frame))
            container.mux(track.encode(None))
    return path


def _audio_packets(path, index):
    with av.open(str(path)) as container:
        return [bytes(p) for p in container.demux(container.streams.audio[index]) if p.size]


def test_mov_copies_the_aac_it_holds_and_reencodes_only_the_opus(tmp_path):
    src = _aac_and_opus(tmp_path / "in.mkv")
    info = probe(src)
    writer = VideoWriter(tmp_path / "out.mov", info, info.width, info.height, FAST)
    writer.rehearse()
    with writer:
        for batch in read_batches(src, 8):
            writer.write(batch.frames, batch.pts)
    assert writer.warnings == ["re-encoded audio stream #2 (opus -> aac): mov cannot hold opus"]
    assert [(s.codec, s.kind) for s in probe(tmp_path / "out.mov").streams] == [("aac", "audio"), ("aac", "audio")]
    assert _audio_packets(tmp_path / "out.mov", 0) == _audio_packets(src, 0)  # copied untouched

"""VideoWriter: timing, streams, colour tags, sizes and atomic output."""

from __future__ import annotations

from dataclasses import replace

import av
import numpy as np
import pytest

from star_cli.errors import InputError, StarError
from star_cli.testing.media import make_video
from star_cli.video.probe import probe
from star_cli.video.reader import read_batches
from star_cli.video.writer import EncodeOptions, VideoWriter

FAST = EncodeOptions(preset="ultrafast")


def transcode(src, dest, options=FAST, scale=1):
    """Read `src`, optionally upscale by pixel repetition, write `dest`; return the writer."""
    info = probe(src)
    with VideoWriter(dest, info, info.width * scale, info.height * scale, options) as writer:
        for batch in read_batches(src, 5):
            writer.write(batch.frames.repeat(scale, axis=1).repeat(scale, axis=2), batch.pts)
    return writer


def packets(path, kind):
    """(seconds, duration seconds, bytes) of every non-empty packet of the first `kind` stream."""
    with av.open(str(path)) as container:
        stream = getattr(container.streams, kind)[0]
        return [
            (float(p.pts * p.time_base), float((p.duration or 0) * p.time_base), bytes(p))
            for p in container.demux(stream)
            if p.size
        ]


def video_times(path):
    return sorted(t for t, _, _ in packets(path, "video"))


def test_mp4_round_trip_copies_audio_and_subtitles(tmp_path):
    src = make_video(tmp_path / "in.mp4", frames=20, subtitles=True)
    writer = transcode(src, tmp_path / "out.mp4")
    before, after = probe(src), probe(tmp_path / "out.mp4")
    assert writer.warnings == [] and writer.frames_written == 20
    assert after.num_frames == before.num_frames == 20
    assert after.time_base == before.time_base
    assert video_times(tmp_path / "out.mp4") == video_times(src)
    assert packets(tmp_path / "out.mp4", "audio") == packets(src, "audio")  # copied, not re-encoded
    assert [(t, text) for t, _, text in packets(tmp_path / "out.mp4", "subtitles") if len(text) > 2] == [
        (t, text) for t, _, text in packets(src, "subtitles") if len(text) > 2
    ]
    assert [(s.kind, s.codec, s.language) for s in after.streams] == [
        ("audio", "aac", "eng"),
        ("subtitle", "mov_text", "fra"),
    ]
    with av.open(str(src)) as a, av.open(str(tmp_path / "out.mp4")) as b:
        for kind in ("video", "audio"):  # A/V offset unchanged
            old, new = getattr(a.streams, kind)[0], getattr(b.streams, kind)[0]
            assert new.start_time * new.time_base == old.start_time * old.time_base
    written = next(read_batches(tmp_path / "out.mp4", 20)).frames
    assert np.abs(written.astype(int) - next(read_batches(src, 20)).frames).mean() < 2.0


def test_vfr_stays_vfr(tmp_path):
    src = make_video(tmp_path / "vfr.mov", frames=15, vfr=True)
    transcode(src, tmp_path / "out.mp4")
    assert probe(tmp_path / "out.mp4").is_vfr
    assert video_times(tmp_path / "out.mp4") == pytest.approx(video_times(src), abs=1e-4)


def test_matroska_to_mp4_converts_srt_and_copies_opus(tmp_path):
    src = make_video(tmp_path / "in.mkv", frames=12, subtitles=True)
    transcode(src, tmp_path / "out.mp4")
    out = probe(tmp_path / "out.mp4")
    assert [(s.codec, s.language) for s in out.streams] == [("opus", "eng"), ("mov_text", "fra")]
    cues = [(t, d, text[2:]) for t, d, text in packets(tmp_path / "out.mp4", "subtitles") if len(text) > 2]
    assert cues == [(t, d, text) for t, d, text in packets(src, "subtitles")]
    assert [t for t, _, _ in packets(tmp_path / "out.mp4", "audio")] == [t for t, _, _ in packets(src, "audio")]


def test_webm_output_reencodes_audio_and_converts_subtitles(tmp_path):
    src = make_video(tmp_path / "in.mp4", frames=12, subtitles=True)
    writer = transcode(src, tmp_path / "out.webm", EncodeOptions(codec="av1", preset="ultrafast"))
    out = probe(tmp_path / "out.webm")
    assert out.codec == "av1" and out.num_frames == 12
    assert [(s.codec, s.language) for s in out.streams] == [("opus", "eng"), ("webvtt", "fra")]
    assert len(writer.warnings) == 1 and "aac -> libopus" in writer.warnings[0]
    audio_in, audio_out = packets(src, "audio"), packets(tmp_path / "out.webm", "audio")
    assert audio_out[0][0] == pytest.approx(audio_in[0][0], abs=0.03)
    end = lambda ps: ps[-1][0] + ps[-1][1]  # noqa: E731
    assert end(audio_out) == pytest.approx(end(audio_in), abs=0.03)


def test_attachments_travel_only_into_matroska(tmp_path):
    src = make_video(tmp_path / "plain.mkv", frames=4)
    with av.open(str(src)) as inp, av.open(str(tmp_path / "in.mkv"), "w") as out:
        streams = {s.index: out.add_stream_from_template(s) for s in inp.streams}
        out.add_attachment("font.ttf", "font/ttf", b"not really a font")
        for packet in inp.demux():
            if packet.size:
                packet.stream = streams[packet.stream.index]
                out.mux(packet)
    assert transcode(tmp_path / "in.mkv", tmp_path / "out.mkv").warnings == []
    with av.open(str(tmp_path / "out.mkv")) as out:
        (attachment,) = [s for s in out.streams if s.type == "attachment"]
        assert (attachment.name, attachment.mimetype, attachment.data) == ("font.ttf", "font/ttf", b"not really a font")
    warnings = transcode(tmp_path / "in.mkv", tmp_path / "out.mp4").warnings
    assert warnings == ["dropped stream #2 (attachment font/ttf: only Matroska holds attachments)"]
    assert [s.kind for s in probe(tmp_path / "out.mp4").streams] == ["audio"]


def test_hd_output_is_tagged_bt709_and_converted_with_it(tmp_path):
    src = make_video(tmp_path / "in.mp4", frames=2, audio=False)
    info = probe(src)
    frames = np.zeros((2, 720, 1280, 3), np.uint8)
    frames[:, :, :640] = (230, 40, 40)
    frames[:, :, 640:] = (30, 60, 220)
    with VideoWriter(tmp_path / "hd.mp4", info, 1280, 720, EncodeOptions(preset="ultrafast", crf=0)) as writer:
        writer.write(frames, [0, 1])
    out = probe(tmp_path / "hd.mp4")
    assert out.colour == type(out.colour)("bt709", "bt709", "bt709", "tv")
    back = next(read_batches(tmp_path / "hd.mp4", 2)).frames
    assert np.abs(back.astype(int) - frames).max() <= 3  # a BT.601/709 mix-up is off by ~10+


def test_sd_output_keeps_bt601_for_untagged_source(tmp_path):
    src = make_video(tmp_path / "in.mkv", frames=3, audio=False)
    transcode(src, tmp_path / "out.mkv")
    assert probe(tmp_path / "out.mkv").colour == type(probe(src).colour)("smpte170m", "smpte170m", "smpte170m", "tv")


def test_ffv1_is_lossless(tmp_path):
    src = make_video(tmp_path / "in.mp4", frames=6)
    transcode(src, tmp_path / "out.mkv", EncodeOptions(codec="ffv1"))
    original = next(read_batches(src, 6)).frames
    assert probe(tmp_path / "out.mkv").codec == "ffv1"
    assert np.array_equal(next(read_batches(tmp_path / "out.mkv", 6)).frames, original)


def test_odd_size_is_kept_exactly_when_asked_and_444_sources_stay_444(tmp_path):
    src = make_video(tmp_path / "odd.mp4", frames=3, width=321, height=241, pix_fmt="yuv444p", audio=False)
    transcode(src, tmp_path / "x1.mp4")
    assert (probe(tmp_path / "x1.mp4").width, probe(tmp_path / "x1.mp4").height) == (321, 241)
    transcode(src, tmp_path / "x2.mp4", scale=2)
    x2 = probe(tmp_path / "x2.mp4")
    assert (x2.width, x2.height, x2.pix_fmt) == (642, 482, "yuv444p")


def test_full_range_source_stays_full_range(tmp_path):
    src = make_video(tmp_path / "full.mp4", frames=2, width=64, height=48, audio=False)
    info = replace(probe(src), color_range="pc")
    with VideoWriter(tmp_path / "out.mp4", info, 64, 48, FAST) as writer:
        for batch in read_batches(src, 5):
            writer.write(batch.frames, batch.pts)
    assert probe(tmp_path / "out.mp4").color_range == "pc"


@pytest.mark.parametrize(
    "options, match",
    [
        (EncodeOptions(codec="av1"), "needs even width and height"),
        (EncodeOptions(pix_fmt="yuv420p"), "cannot hold an odd size"),
        (EncodeOptions(codec="vp8"), "unknown codec 'vp8'"),
        (EncodeOptions(preset="ludicrous"), "unknown preset"),
        (EncodeOptions(pix_fmt="rgb48be"), "cannot encode rgb48be"),
        (EncodeOptions(codec="hevc", crf=60, pix_fmt="yuv444p"), r"--crf 60 is out of range for hevc \(0..51\)"),
    ],
)
def test_bad_options_are_input_errors(tmp_path, options, match):
    info = probe(make_video(tmp_path / "in.mp4", frames=2, audio=False))
    with pytest.raises(InputError, match=match):
        with VideoWriter(tmp_path / "out.mp4", info, 321, 241, options):
            pass
    assert list(tmp_path.iterdir()) == [tmp_path / "in.mp4"]


def test_container_that_cannot_hold_the_codec(tmp_path):
    info = probe(make_video(tmp_path / "in.mp4", frames=2, audio=False))
    with pytest.raises(InputError, match="cannot hold h264"):
        with VideoWriter(tmp_path / "out.webm", info, 64, 48):
            pass
    assert not (tmp_path / "out.webm").exists()


@pytest.mark.parametrize(
    "name, match", [("out.xyz", "cannot write this kind of file"), ("no/out.mp4", "does not exist")]
)
def test_unusable_destination(tmp_path, name, match):
    info = probe(make_video(tmp_path / "in.mp4", frames=2, audio=False))
    with pytest.raises(InputError, match=match):
        with VideoWriter(tmp_path / name, info, 64, 48):
            pass
    assert list(tmp_path.iterdir()) == [tmp_path / "in.mp4"]


def test_ten_bit_source_encodes_ten_bit(tmp_path):
    src = make_video(tmp_path / "in.mkv", frames=3, pix_fmt="yuv420p10le", audio=False)
    transcode(src, tmp_path / "h264.mkv")
    transcode(src, tmp_path / "hevc.mp4", EncodeOptions(codec="hevc", preset="ultrafast"))
    assert probe(tmp_path / "h264.mkv").pix_fmt == "yuv420p10le"
    assert (probe(tmp_path / "hevc.mp4").codec, probe(tmp_path / "hevc.mp4").bit_depth) == ("hevc", 10)
    with av.open(str(tmp_path / "hevc.mp4")) as container:
        assert container.streams.video[0].codec_tag == "hvc1"


def test_rotated_source_is_written_upright(tmp_path):
    src = make_video(tmp_path / "in.mp4", frames=3, rotation=270, audio=False)
    transcode(src, tmp_path / "out.mp4")
    out = probe(tmp_path / "out.mp4")
    assert (out.width, out.height, out.rotation) == (48, 64, 0)


def test_failure_leaves_nothing_and_keeps_the_old_file(tmp_path):
    src = make_video(tmp_path / "in.mp4", frames=4)
    info = probe(src)
    dest = tmp_path / "out.mp4"
    dest.write_bytes(b"previous result")
    with pytest.raises(RuntimeError, match="engine crashed"):
        with VideoWriter(dest, info, 64, 48, FAST) as writer:
            writer.write(next(read_batches(src, 2)).frames, [0, 512])
            raise RuntimeError("engine crashed")
    assert dest.read_bytes() == b"previous result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4", "out.mp4"]


def test_no_frames_is_an_error_and_writes_nothing(tmp_path):
    info = probe(make_video(tmp_path / "in.mp4", frames=2))
    with pytest.raises(StarError, match="no frames were written"):
        with VideoWriter(tmp_path / "out.mp4", info, 64, 48, FAST):
            pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


def test_write_checks_shapes_and_timestamps(tmp_path):
    info = probe(make_video(tmp_path / "in.mp4", frames=2, audio=False))
    with pytest.raises(ValueError, match="timestamps must increase"):
        with VideoWriter(tmp_path / "out.mp4", info, 64, 48, FAST) as writer:
            writer.write(np.zeros((2, 48, 64, 3), np.uint8), [5, 5])
    with pytest.raises(ValueError, match=r"expected \(N, 48, 64, 3\) uint8"):
        with VideoWriter(tmp_path / "out.mp4", info, 64, 48, FAST) as writer:
            writer.write(np.zeros((2, 48, 64), np.uint8), [0, 1])
    assert not (tmp_path / "out.mp4").exists()


def test_rehearsal_of_hevc_in_mp4_passes_every_time(tmp_path):
    """x265 gives a lone frame a garbage decoding time, which the MP4 muxer refused now and then."""
    info = probe(make_video(tmp_path / "in.mp4", frames=2, audio=False))
    options = EncodeOptions(codec="hevc", preset="ultrafast")
    writer = VideoWriter(tmp_path / "out.mp4", info, info.width, info.height, options)
    for _ in range(12):
        writer.rehearse()
        assert writer.transcode_streams == frozenset()

"""Non-square pixels (sample aspect ratio): probed, kept through the writer and `star upscale`, or warned about."""

from __future__ import annotations

from fractions import Fraction

import av
import pytest
from typer.testing import CliRunner

from star_cli.cli import app
from star_cli.testing.media import make_video, pattern_frame
from star_cli.video.encoding import check_container, records_pixel_shape
from star_cli.video.probe import probe
from star_cli.video.reader import read_batches
from star_cli.video.writer import EncodeOptions, VideoWriter

ANAMORPHIC = Fraction(32, 27)  # widescreen NTSC DV/DVD


def anamorphic(path, *, width=64, height=48, rotation=0):
    """A 3-frame H.264 clip whose pixels are 32:27 (wider than tall), optionally with a display rotation."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=24, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.sample_aspect_ratio = ANAMORPHIC
        if rotation:
            stream.set_display_rotation(rotation)
        for index in range(3):
            frame = av.VideoFrame.from_ndarray(pattern_frame(index, width, height), format="rgb24")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def stored_shape(path) -> Fraction | None:
    """The pixel shape a player gets from `path`: the container's, else the codec's."""
    with av.open(str(path)) as container:
        return container.streams.video[0].sample_aspect_ratio


def test_probe_reads_the_pixel_shape_as_displayed(tmp_path):
    assert probe(anamorphic(tmp_path / "wide.mp4")).sample_aspect_ratio == ANAMORPHIC
    assert probe(anamorphic(tmp_path / "wide.mkv")).sample_aspect_ratio == ANAMORPHIC
    assert probe(anamorphic(tmp_path / "turned.mp4", rotation=90)).sample_aspect_ratio == 1 / ANAMORPHIC
    assert probe(make_video(tmp_path / "square.mp4", frames=2, audio=False)).sample_aspect_ratio == 1


@pytest.mark.parametrize(
    "codec, suffix",
    [
        ("h264", ".mp4"), ("h264", ".mkv"), ("h264", ".mov"),
        ("hevc", ".mp4"), ("hevc", ".mkv"), ("hevc", ".mov"),
        ("av1", ".mp4"), ("av1", ".mkv"), ("av1", ".webm"),
        ("ffv1", ".mp4"), ("ffv1", ".mkv"),
    ],
)
def test_writer_keeps_the_pixel_shape_wherever_the_file_can_record_it(tmp_path, codec, suffix):
    src = anamorphic(tmp_path / "in.mp4")
    info = probe(src)
    dest = tmp_path / f"out{suffix}"
    writer = VideoWriter(dest, info, 128, 96, EncodeOptions(codec=codec, preset="ultrafast"))
    writer.rehearse()
    with writer:
        for batch in read_batches(src, 3):
            writer.write(batch.frames.repeat(2, axis=1).repeat(2, axis=2), batch.pts)
    kept = records_pixel_shape(check_container(dest, codec), codec)
    assert (stored_shape(dest) == ANAMORPHIC) == kept
    assert (probe(dest).sample_aspect_ratio == ANAMORPHIC) == kept
    if kept:
        assert writer.warnings == []
    else:
        assert len(writer.warnings) == 1
        assert "cannot record the source's non-square pixels (sample aspect ratio 32:27)" in writer.warnings[0]
        assert "instead of 152x96" in writer.warnings[0]


def test_rotated_source_keeps_its_pixel_shape_upright(tmp_path):
    src = anamorphic(tmp_path / "in.mp4", rotation=90)
    info = probe(src)
    with VideoWriter(tmp_path / "out.mp4", info, info.width, info.height, EncodeOptions(preset="ultrafast")) as writer:
        for batch in read_batches(src, 3):
            writer.write(batch.frames, batch.pts)
    assert stored_shape(tmp_path / "out.mp4") == 1 / ANAMORPHIC


def test_square_pixels_are_left_untagged(tmp_path):
    src = make_video(tmp_path / "in.mp4", frames=2, audio=False)
    info = probe(src)
    with VideoWriter(tmp_path / "out.mkv", info, info.width, info.height, EncodeOptions(preset="ultrafast")) as writer:
        for batch in read_batches(src, 2):
            writer.write(batch.frames, batch.pts)
    assert stored_shape(tmp_path / "out.mkv") is None and writer.warnings == []


@pytest.mark.parametrize(
    "size, scale, suffix, written",
    [
        ((64, 48), "2", ".mp4", (128, 96)),
        ((64, 48), "2", ".mkv", (128, 96)),
        ((34, 26), "1.5", ".mp4", (50, 38)),  # 51x39 is odd: the last column and row are dropped
    ],
)
def test_upscale_keeps_the_pixel_shape(tmp_path, monkeypatch, size, scale, suffix, written):
    monkeypatch.setenv("STAR_WEIGHTS_DIR", str(tmp_path / "no-weights"))
    src = anamorphic(tmp_path / "in.mp4", width=size[0], height=size[1])
    dest = tmp_path / f"out{suffix}"
    result = CliRunner().invoke(
        app, ["upscale", str(src), "-o", str(dest), "--engine", "lanczos", "--preset", "ultrafast", "--scale", scale]
    )
    assert result.exit_code == 0, result.output
    assert "non-square" not in result.stderr
    out = probe(dest)
    assert (out.width, out.height) == written
    assert out.sample_aspect_ratio == ANAMORPHIC


def test_a_file_that_cannot_record_the_pixel_shape_is_said_before_the_run(tmp_path, monkeypatch):
    monkeypatch.setenv("STAR_WEIGHTS_DIR", str(tmp_path / "no-weights"))
    src = anamorphic(tmp_path / "in.mp4", width=64, height=48)
    args = ["upscale", str(src), "-o", str(tmp_path / "out.mkv"), "--engine", "lanczos", "--codec", "ffv1", "--scale", "2"]
    dry = CliRunner().invoke(app, [*args, "--dry-run"])
    assert dry.exit_code == 0 and "cannot record the source's non-square pixels" in dry.stderr.replace("\n", "")
    run = CliRunner().invoke(app, args)
    assert run.exit_code == 0 and run.stderr.replace("\n", "").count("cannot record the source's non-square pixels") == 1

"""Video files in and out, on PyAV: probe, streaming reader and writer, scene cuts."""

from star_cli.video.probe import StreamInfo, VideoInfo, probe
from star_cli.video.reader import FrameBatch, read_batches
from star_cli.video.scenes import detect_scene_cuts
from star_cli.video.writer import EncodeOptions, VideoWriter

__all__ = [
    "EncodeOptions",
    "FrameBatch",
    "StreamInfo",
    "VideoInfo",
    "VideoWriter",
    "detect_scene_cuts",
    "probe",
    "read_batches",
]

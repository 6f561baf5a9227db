"""Video encoding settings as plain data (no PyAV), so options can be validated without loading codecs."""

from __future__ import annotations

from dataclasses import dataclass

ENCODERS = {"h264": "libx264", "hevc": "libx265", "av1": "libsvtav1", "ffv1": "ffv1"}


@dataclass(frozen=True)
class EncodeOptions:
    """Video encoding settings; `pix_fmt=None` picks one from the codec, source depth and output size."""

    codec: str = "h264"
    crf: int = 18
    preset: str = "medium"
    pix_fmt: str | None = None

"""Video files in and out, on PyAV: probe, streaming reader and writer, scene cuts.

The names below load their module (and PyAV) on first use, so `star_cli.video.options`,
plain data, can be imported where PyAV is absent (the GPU benchmark's machine).
"""

from __future__ import annotations

from importlib import import_module

_EXPORTS = {
    "EncodeOptions": "options",
    "FrameBatch": "reader",
    "StreamInfo": "probe",
    "VideoInfo": "probe",
    "VideoWriter": "writer",
    "detect_scene_cuts": "scenes",
    "probe": "probe",
    "read_batches": "reader",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> object:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)

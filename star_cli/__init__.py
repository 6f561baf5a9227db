"""star: real-world video super-resolution with STAR, from the command line and from Python.

    from star_cli import STARPipeline
    pipe = STARPipeline.from_pretrained(checkpoint="light")
    pipe.upscale_file("in.mp4", "out.mp4", scale=4)

The names below load on first use, so `import star_cli` (and `star --help`) stays
fast and does not import torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["InputError", "PlanEstimate", "STARPipeline", "StarError", "__version__", "events"]

_LAZY = {
    "STARPipeline": "star_cli.api",
    "PlanEstimate": "star_cli.api",
    "StarError": "star_cli.errors",
    "InputError": "star_cli.errors",
}

if TYPE_CHECKING:
    from star_cli.api import PlanEstimate, STARPipeline
    from star_cli.errors import InputError, StarError
    from star_cli.pipeline import events


def __getattr__(name: str) -> Any:
    if name == "events":
        return import_module("star_cli.pipeline.events")
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'star_cli' has no attribute {name!r}")

"""Fine-tuning STAR (`star train`) and making training pairs (`star degrade`).

config.py (TOML -> dataclasses), data.py (clips), degrade.py + kernels.py + compress.py
(Real-ESRGAN degradations and real video codecs), losses.py (v + Dynamic Frequency),
checkpoint.py (weights in and out), loop.py (accelerate).
"""

from __future__ import annotations

from typing import Any

__all__ = ["run_degrade", "run_training"]


def __getattr__(name: str) -> Any:
    """Import on first use: the training stack pulls in accelerate, diffusers and transformers,
    which `import star_cli.train` alone should not pay for."""
    if name == "run_training":
        from star_cli.train.loop import run_training

        return run_training
    if name == "run_degrade":
        from star_cli.train.degrade import run_degrade

        return run_degrade
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

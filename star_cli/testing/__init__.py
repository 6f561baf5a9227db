"""Helpers that build throwaway inputs (media, weights) for tests and demos."""

from __future__ import annotations

from typing import Any

__all__ = ["make_tiny_weights"]


def __getattr__(name: str) -> Any:
    """Import the weights helper on first use: it pulls in torch, diffusers and transformers,
    which `star_cli.testing.media` users should not pay for."""
    if name == "make_tiny_weights":
        from .weights import make_tiny_weights

        return make_tiny_weights
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

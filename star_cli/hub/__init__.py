"""The weights: where they come from (sources), how they are laid out (layout), fetching them (fetch).

The names load on first use: reading the weights layout (what every `star upscale`
does) must not pay for importing the download stack.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__all__ = [
    "Sources",
    "WeightsPaths",
    "check_weights_dir",
    "download_weights",
    "ensure_weights",
    "load_sources",
    "offer_download",
    "resolve_weights_dir",
    "weights_problem",
    "write_manifest",
]

_HOMES = {
    "download_weights": "fetch", "ensure_weights": "fetch", "offer_download": "fetch",
    "WeightsPaths": "layout", "check_weights_dir": "layout", "resolve_weights_dir": "layout",
    "weights_problem": "layout", "write_manifest": "layout", "Sources": "sources", "load_sources": "sources",
}

if TYPE_CHECKING:
    from star_cli.hub.fetch import download_weights, ensure_weights, offer_download
    from star_cli.hub.layout import WeightsPaths, check_weights_dir, resolve_weights_dir, weights_problem, write_manifest
    from star_cli.hub.sources import Sources, load_sources


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(import_module(f"star_cli.hub.{_HOMES[name]}"), name)
    raise AttributeError(f"module 'star_cli.hub' has no attribute {name!r}")

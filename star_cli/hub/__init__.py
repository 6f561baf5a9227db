"""The weights: where they come from (sources), how they are laid out (layout), fetching them (fetch)."""

from star_cli.hub.fetch import download_weights, ensure_weights, offer_download
from star_cli.hub.layout import (
    WeightsPaths,
    check_weights_dir,
    resolve_weights_dir,
    weights_problem,
    write_manifest,
)
from star_cli.hub.sources import Sources, load_sources

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

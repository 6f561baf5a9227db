"""Model families of `star upscale --model`: I2VGen-XL (STAR's UNet) and CogVideoX-5B (STAR's DiT).

The registry imports a family only when asked for it, and every family module is
torch-free at import, so option checks and `--dry-run` stay fast.
"""

from __future__ import annotations

from importlib import import_module

from star_cli.errors import InputError
from star_cli.families.base import Engine, Family, FamilyDefaults

MODELS = ("i2vgenxl", "cogvideox")
DEFAULT_MODEL = MODELS[0]

__all__ = ["DEFAULT_MODEL", "MODELS", "Engine", "Family", "FamilyDefaults", "family_of_variant", "get_family"]


def get_family(name: str) -> Family:
    """The family called `name` (InputError naming the choices for anything else)."""
    if name not in MODELS:
        raise InputError(f"--model must be one of {', '.join(MODELS)}, got '{name}'")
    return import_module(f"star_cli.families.{name}").FAMILY


def family_of_variant(variant: str) -> Family:
    """The family whose weights a `star download-weights --variant` name belongs to."""
    for name in MODELS:
        family = get_family(name)
        if variant in family.variants:
            return family
    raise InputError(f"unknown weights variant '{variant}'")

"""Model families of `star upscale --model`: I2VGen-XL (STAR's UNet) and CogVideoX-5B (STAR's DiT).

The registry imports a family only when asked for it, and every family module is
torch-free at import, so option checks and `--dry-run` stay fast.
"""

from __future__ import annotations

from importlib import import_module

from star_cli.errors import InputError
from star_cli.families.base import Engine, Family, FamilyDefaults, FamilyEngine

MODELS = ("i2vgenxl", "cogvideox")
DEFAULT_MODEL = MODELS[0]

__all__ = ["DEFAULT_MODEL", "MODELS", "Engine", "Family", "FamilyDefaults", "FamilyEngine", "get_family"]


def get_family(name: str) -> Family:
    """The family called `name` (InputError naming the choices for anything else)."""
    if name not in MODELS:
        raise InputError(f"--model must be one of {', '.join(MODELS)}, got '{name}'")
    return import_module(f"star_cli.families.{name}").FAMILY


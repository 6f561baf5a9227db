"""Reading a training config file: strict TOML into the checked dataclasses of `train.config`.

Kept apart from the dataclasses: this is the file side (TOML parsing, paths relative
to the file, the dotted overrides `star train`'s options make, conversion to each
field's type), while `train.config` says what a config holds and which values are
valid. Unknown keys are rejected by name (a typo must not silently train with a
default) and any bad value becomes one `InputError` line naming the file and the key.
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from pathlib import Path

from star_cli.errors import InputError
from star_cli.train.config import PRESETS, Config, DegradationConfig, validate

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib


def _bad(key: str, message: str) -> InputError:
    return InputError(f"{key} {message}")


def _convert(value: object, hint: object, key: str, base_dir: Path) -> object:
    """Check one TOML value against a field's type hint and convert it (lists -> tuples, str -> Path)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return None if value is None else _convert(value, inner[0], key, base_dir)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _bad(key, f"must be a list (got {value!r})")
        if len(args) == 2 and args[1] is Ellipsis:
            if not value:
                raise _bad(key, "must not be empty")
            return tuple(_convert(v, args[0], key, base_dir) for v in value)
        if len(value) != len(args):
            raise _bad(key, f"must have {len(args)} values (got {len(value)})")
        return tuple(_convert(v, a, key, base_dir) for v, a in zip(value, args))
    if hint is Path:
        if not isinstance(value, (str, Path)) or not str(value):
            raise _bad(key, f"must be a path (got {value!r})")
        path = Path(value).expanduser()
        return path if path.is_absolute() else base_dir / path
    if hint is bool:
        if not isinstance(value, bool):
            raise _bad(key, f"must be true or false (got {value!r})")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _bad(key, f"must be an integer (got {value!r})")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _bad(key, f"must be a number (got {value!r})")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise _bad(key, f"must be a string (got {value!r})")
        return value
    raise TypeError(f"unsupported config type {hint!r} for {key}")


def _build(cls: type, table: dict, prefix: str, base_dir: Path, base: object = None) -> object:
    """Instantiate dataclass `cls` from a TOML table, on top of `base` (an instance) when given."""
    hints = typing.get_type_hints(cls)
    names = {f.name: f for f in dataclasses.fields(cls)}
    for key in table:
        if key not in names:
            raise _bad(f"{prefix}{key}", "is not a known key")
    values: dict[str, object] = {}
    for name, fld in names.items():
        key = f"{prefix}{name}"
        hint = hints[name]
        current = getattr(base, name) if base is not None else None
        if dataclasses.is_dataclass(hint):
            sub = table.get(name, {})
            if not isinstance(sub, dict):
                raise _bad(key, "must be a table")
            if hint is DegradationConfig:
                preset = sub.get("preset", current.preset if current is not None else "heavy")
                if preset not in PRESETS:
                    raise _bad(f"{key}.preset", f"must be one of {', '.join(PRESETS)} (got {preset!r})")
                current = PRESETS[preset]
            values[name] = _build(hint, sub, f"{key}.", base_dir, current)
        elif name in table:
            values[name] = _convert(table[name], hint, key, base_dir)
        elif base is not None:
            values[name] = current
        elif fld.default is dataclasses.MISSING and fld.default_factory is dataclasses.MISSING:
            raise _bad(key, "is required")
    return cls(**values)


def _apply_overrides(table: dict, overrides: dict[str, object]) -> dict:
    """Set dotted keys ('train.max_steps') in a nested dict; None values mean 'not given'."""
    for dotted, value in overrides.items():
        if value is None:
            continue
        node = table
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise _bad(dotted, "overrides a value that is not a table")
        node[leaf] = str(Path(value).resolve()) if isinstance(value, Path) else value
    return table


def load_config(path: Path, overrides: dict[str, object] | None = None) -> Config:
    """Read, override, build and validate a training config; any problem is one InputError line."""
    path = Path(path)
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read config {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"config {path} is not valid TOML: {exc}") from None
    try:
        table = _apply_overrides(table, overrides or {})
        config = typing.cast(Config, _build(Config, table, "", path.resolve().parent))
        validate(config)
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from None
    return config

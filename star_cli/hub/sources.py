"""Where the weights come from, read from data (weights/sources.toml), not code.

Repo ids move (Stability has deleted repos before), so they live in a TOML file that
a user can copy, edit and point $STAR_WEIGHTS_SOURCES at; this module only turns it
into dataclasses and checks that it describes the whole layout.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

from star_cli.errors import StarError
from star_cli.hub.layout import STAR_VARIANTS, VARIANTS, required_files

SOURCES_ENV = "STAR_WEIGHTS_SOURCES"
_SHA256 = re.compile(r"[0-9a-f]{64}")
_FILE_KEYS = {"path", "dest", "sha256", "variant", "convert", "mirror_path"}
_COMPONENT_KEYS = {"repos", "mirrors", "revision", "config", "files"}


@dataclass(frozen=True)
class SourceFile:
    """One file of a repo and the place it takes in the weights folder."""

    path: str
    dest: str
    sha256: str | None = None
    variant: str | None = None
    convert: bool | str = False  # True: a STAR .pt; "sat": a SAT/DeepSpeed model-states file (CogVideoX)
    mirror_path: str | None = None  # its path in the component's mirror repos, where that differs

    @property
    def in_mirrors(self) -> str:
        return self.mirror_path or self.path


@dataclass(frozen=True)
class Component:
    """Files that must come from the same repo (a config and its weights, a tokenizer and its model).

    `mirrors` are unofficial copies, tried after every repo of `repos` and only for files
    whose sha256 is pinned, so a mirror can only ever deliver the official bytes.
    """

    name: str
    repos: tuple[str, ...]
    files: tuple[SourceFile, ...]
    revision: str = "main"
    config: dict[str, Any] = field(default_factory=dict)
    mirrors: tuple[str, ...] = ()


@dataclass(frozen=True)
class Sources:
    components: tuple[Component, ...]
    origin: str = "<memory>"

    def select(self, variants: Iterable[str]) -> list[tuple[Component, SourceFile]]:
        """The files the given variants need, in download order.

        A file without a variant is shared by the I2VGen-XL variants (light, heavy); the
        CogVideoX family's files all name their variant.
        """
        wanted = set(variants)
        shared = bool(wanted & set(STAR_VARIANTS))
        return [(c, f) for c in self.components for f in c.files if (f.variant in wanted if f.variant else shared)]


def _source_file(raw: Any, where: str) -> SourceFile:
    if not isinstance(raw, dict) or not {"path", "dest"} <= raw.keys() or raw.keys() - _FILE_KEYS:
        raise ValueError(f"{where} needs `path` and `dest` and may have only {sorted(_FILE_KEYS)}")
    sha256 = raw.get("sha256")
    if sha256 is not None and not _SHA256.fullmatch(sha256):
        raise ValueError(f"{where}: sha256 must be 64 lower-case hex digits")
    variant = raw.get("variant")
    if variant is not None and variant not in VARIANTS:
        raise ValueError(f"{where}: variant must be one of {VARIANTS}")
    convert = raw.get("convert", False)
    if convert not in (True, False, "sat"):
        raise ValueError(f'{where}: convert must be true, false or "sat"')
    return SourceFile(path=raw["path"], dest=raw["dest"], sha256=sha256, variant=variant, convert=convert, mirror_path=raw.get("mirror_path"))


def _component(name: str, raw: Any) -> Component:
    if not isinstance(raw, dict) or raw.keys() - _COMPONENT_KEYS or not raw.get("repos") or not raw.get("files"):
        raise ValueError(f"[{name}] needs `repos` and `files` and may have only {sorted(_COMPONENT_KEYS)}")
    files = tuple(_source_file(f, f"[[{name}.files]] #{i + 1}") for i, f in enumerate(raw["files"]))
    return Component(
        name=name,
        repos=tuple(raw["repos"]),
        files=files,
        revision=raw.get("revision", "main"),
        config=dict(raw.get("config", {})),
        mirrors=tuple(raw.get("mirrors", ())),
    )


def _check_covers_layout(components: tuple[Component, ...]) -> None:
    dests = [f.dest for c in components for f in c.files]
    duplicates = sorted({d for d in dests if dests.count(d) > 1})
    if duplicates:
        raise ValueError(f"several files go to {duplicates[0]}")
    named = {f.variant for c in components for f in c.files} - {None}
    for variant in (*STAR_VARIANTS, *sorted(named - set(STAR_VARIANTS))):
        missing = [rel for rel in required_files(variant) if rel not in dests]
        if missing:
            raise ValueError(f"no file goes to {missing[0]}, which the {variant} variant needs")


def parse_sources(text: str, origin: str = "<memory>") -> Sources:
    """Sources from TOML text; a StarError names the file and the mistake."""
    try:
        data = tomllib.loads(text)
        if data.pop("format", None) != 1:
            raise ValueError("`format = 1` is required")
        components = tuple(_component(name, raw) for name, raw in data.items())
        _check_covers_layout(components)
    except (tomllib.TOMLDecodeError, ValueError) as error:
        raise StarError(f"weights sources {origin} are invalid: {error}") from None
    return Sources(components=components, origin=origin)


def load_sources(path: Path | None = None) -> Sources:
    """Sources from `path`, else $STAR_WEIGHTS_SOURCES, else the copy shipped with the package."""
    chosen = path or (Path(os.environ[SOURCES_ENV]) if os.environ.get(SOURCES_ENV) else None)
    if chosen is not None:
        try:
            return parse_sources(Path(chosen).read_text(encoding="utf-8"), str(chosen))
        except OSError as error:
            raise StarError(f"cannot read weights sources {chosen}: {error.strerror}") from None
    packaged = resources.files("star_cli").joinpath("data/sources.toml")
    return parse_sources(packaged.read_text(encoding="utf-8"), "star_cli/data/sources.toml")

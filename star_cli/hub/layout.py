"""The weights folder: where each file lives, its manifest, and whether it is usable.

One folder holds everything inference reads (see CONTRACTS). `manifest.json` records
the size, sha256 and mtime of every file, so "is it complete?" is a few `stat` calls and
"is it intact?" (`verify=True`) a re-hash, without asking the network. A file whose
mtime differs from the one recorded when it was last hashed (rewritten, copied over,
touched by a flipped byte's editor) is re-hashed on every check, and small files
(configs, tokenizer) always are: a wrong byte in them is never trusted on its size.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open

from star_cli.atomic import atomic_output
from star_cli.errors import InputError, StarError

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
STAR_VARIANTS = ("light", "heavy")
VAE_FILES = ("vae/config.json", "vae/diffusion_pytorch_model.safetensors")
TEXT_ENCODER_FILES = ("text_encoder/config.json", "text_encoder/model.safetensors")
TOKENIZER_FILES = (
    "tokenizer/vocab.json",
    "tokenizer/merges.txt",
    "tokenizer/tokenizer_config.json",
    "tokenizer/special_tokens_map.json",
)
# The CogVideoX family (STAR's DiT): its own folder, laid out like the CogVideoX-5B release
# (diffusers layout) plus the converted denoiser.
COGVIDEOX_VARIANT = "cogvideox"
COGVIDEOX_DIR = "cogvideox"
COGVIDEOX_DENOISER = f"{COGVIDEOX_DIR}/transformer.safetensors"
COGVIDEOX_FILES = (
    COGVIDEOX_DENOISER,
    f"{COGVIDEOX_DIR}/vae/config.json",
    f"{COGVIDEOX_DIR}/vae/diffusion_pytorch_model.safetensors",
    f"{COGVIDEOX_DIR}/text_encoder/config.json",
    f"{COGVIDEOX_DIR}/text_encoder/model.safetensors.index.json",
    f"{COGVIDEOX_DIR}/text_encoder/model-00001-of-00002.safetensors",
    f"{COGVIDEOX_DIR}/text_encoder/model-00002-of-00002.safetensors",
    f"{COGVIDEOX_DIR}/tokenizer/spiece.model",
    f"{COGVIDEOX_DIR}/tokenizer/tokenizer_config.json",
    f"{COGVIDEOX_DIR}/tokenizer/special_tokens_map.json",
    f"{COGVIDEOX_DIR}/tokenizer/added_tokens.json",
)
VARIANTS = (*STAR_VARIANTS, COGVIDEOX_VARIANT)
TRAIN_EXPORT = "unet.safetensors"
"""What `star train` exports for inference: in its output folder, and in every checkpoints/step-N/."""
TRAIN_CHECKPOINTS = "checkpoints"
HASH_CHUNK = 8 << 20
ALWAYS_HASHED_BYTES = 16 << 20
"""Files up to this size (configs, tokenizer) are re-hashed at every check: milliseconds."""
# safetensors metadata key of a converted checkpoint: the sha256 of the pickle it came from
SOURCE_SHA256_KEY = "source_sha256"


@dataclass(frozen=True)
class FileRecord:
    """What the manifest knows about one file."""

    size: int
    sha256: str
    mtime_ns: int | None = None  # when the hash was taken; None: unknown (re-hash at the next check)


@dataclass(frozen=True)
class WeightsPaths:
    """The checked files inference needs for one STAR variant."""

    root: Path
    star: Path
    vae_dir: Path
    text_encoder_dir: Path
    tokenizer_dir: Path


def star_relpath(variant: str) -> str:
    return f"star/{variant}_deg.safetensors"


def variants_of(variant: str) -> tuple[str, ...]:
    """The variants a `--variant` value stands for ('all' is both I2VGen-XL ones: cogvideox is asked for by name)."""
    if variant == "all":
        return STAR_VARIANTS
    if variant in VARIANTS:
        return (variant,)
    raise InputError(f"--variant must be light, heavy, all or {COGVIDEOX_VARIANT}, not {variant!r}")


def required_files(variant: str) -> tuple[str, ...]:
    """Every file inference opens for `variant`, relative to the weights folder."""
    if variant == COGVIDEOX_VARIANT:
        return COGVIDEOX_FILES
    if variant not in STAR_VARIANTS:
        raise InputError(f"the STAR variant must be light, heavy or {COGVIDEOX_VARIANT}, not {variant!r}")
    return (star_relpath(variant), *VAE_FILES, *TEXT_ENCODER_FILES, *TOKENIZER_FILES)


def default_weights_dir() -> Path:
    """$STAR_WEIGHTS_DIR, else a per-user cache folder (XDG_CACHE_HOME is honoured)."""
    env = os.environ.get("STAR_WEIGHTS_DIR")
    if env:
        return Path(env).expanduser().absolute()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return (Path(cache).expanduser() / "star" / "weights").absolute()


def resolve_weights_dir(cli_value: Path | None) -> Path:
    """The weights folder: the command-line value first, then the environment, then the cache."""
    if cli_value is not None:
        return Path(cli_value).expanduser().absolute()
    return default_weights_dir()


def download_command(root: Path, variant: str = "light") -> str:
    """The exact command that fills `root` for `variant`, for error messages."""
    parts = ["star download-weights"]
    if variant != "light":
        parts.append(f"--variant {variant}")
    if root != default_weights_dir():
        parts.append(f"--dir {root}")
    return " ".join(parts)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def converted_source(path: Path) -> str | None:
    """The sha256 of the checkpoint `path` was converted from, if it is one of our conversions."""
    if not path.is_file():
        return None
    try:
        with safe_open(path, framework="numpy") as handle:
            return (handle.metadata() or {}).get(SOURCE_SHA256_KEY)
    except (SafetensorError, OSError):
        return None


def read_manifest(root: Path) -> dict[str, FileRecord]:
    """The manifest's records by relative path; empty when there is no manifest."""
    path = root / MANIFEST
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {
            rel: FileRecord(int(rec["size"]), str(rec["sha256"]), None if rec.get("mtime_ns") is None else int(rec["mtime_ns"]))
            for rel, rec in data["files"].items()
        }
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise StarError(f"{path} is unreadable ({error}): delete it and run `{download_command(root)}`") from None


def _save_manifest(root: Path, records: Mapping[str, FileRecord]) -> Path:
    path = root / MANIFEST
    files = {
        rel: {"size": rec.size, "sha256": rec.sha256, **({} if rec.mtime_ns is None else {"mtime_ns": rec.mtime_ns})}
        for rel, rec in sorted(records.items())
    }
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps({"format": MANIFEST_FORMAT, "files": files}, indent=2) + "\n", encoding="utf-8")
    return path


def _stamped(root: Path, rel: str, record: FileRecord) -> FileRecord:
    """`record` with the file's current mtime when it lacks one (the caller has just hashed the file)."""
    path = root / rel
    if record.mtime_ns is not None or not path.is_file():
        return record
    stat = path.stat()
    return FileRecord(record.size, record.sha256, stat.st_mtime_ns) if stat.st_size == record.size else record


def record_files(root: Path, records: Mapping[str, FileRecord]) -> Path:
    """Add or replace entries whose hashes are already known (of the files as they are now), without re-hashing the rest."""
    return _save_manifest(root, {**read_manifest(root), **{rel: _stamped(root, rel, rec) for rel, rec in records.items()}})


def _visible_files(root: Path) -> list[str]:
    """Relative paths of the folder's files, skipping hidden ones (partial downloads, temp files)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            rel = (Path(dirpath) / name).relative_to(root).as_posix()
            if not name.startswith(".") and rel != MANIFEST:
                found.append(rel)
    return sorted(found)


def write_manifest(root: Path) -> Path:
    """Hash every file under `root` into a fresh manifest.json (for folders made by hand or by tests)."""
    root = Path(root)
    return _save_manifest(
        root,
        {rel: _stamped(root, rel, FileRecord((root / rel).stat().st_size, sha256_file(root / rel))) for rel in _visible_files(root)},
    )


def weights_problem(root: Path, variant: str = "light", verify: bool = False) -> str | None:
    """The first reason `root` cannot serve `variant`, naming the file; None when it can."""
    relpaths = required_files(variant)
    if not (root / MANIFEST).is_file():
        if not root.is_dir() or not any(root.iterdir()):
            return f"No STAR weights in {root}"
        return f"{root} has no {MANIFEST}"
    manifest = read_manifest(root)
    for rel in relpaths:
        path = root / rel
        record = manifest.get(rel)
        if record is None or not path.is_file():
            return f"{root} is missing {rel}"
        size = path.stat().st_size
        if size != record.size:
            return f"{path} is corrupt ({size} bytes, the manifest says {record.size})"
    rehashed = {}
    for rel in relpaths:
        stat, record = (root / rel).stat(), manifest[rel]
        if verify or stat.st_size <= ALWAYS_HASHED_BYTES or stat.st_mtime_ns != record.mtime_ns:
            if sha256_file(root / rel) != record.sha256:
                return f"{root / rel} is corrupt (its sha256 differs from {MANIFEST})"
            if stat.st_mtime_ns != record.mtime_ns:
                rehashed[rel] = FileRecord(record.size, record.sha256, stat.st_mtime_ns)
    if rehashed:
        try:  # remember the verified mtimes, so the next check trusts these files on stat alone
            record_files(root, rehashed)
        except OSError:
            pass  # a read-only weights folder: the files are hashed again next time
    return None


def check_weights_dir(root: Path, variant: str = "light", verify: bool = False) -> WeightsPaths:
    """The paths inference needs, or a StarError naming the missing/corrupt file and the fix."""
    root = Path(root)
    problem = weights_problem(root, variant, verify)
    if problem is not None:
        raise StarError(f"{problem}: run `{download_command(root, variant)}` to fix it")
    if variant == COGVIDEOX_VARIANT:
        folder = root / COGVIDEOX_DIR
        return WeightsPaths(root, root / COGVIDEOX_DENOISER, folder / "vae", folder / "text_encoder", folder / "tokenizer")
    return WeightsPaths(
        root=root,
        star=root / star_relpath(variant),
        vae_dir=root / "vae",
        text_encoder_dir=root / "text_encoder",
        tokenizer_dir=root / "tokenizer",
    )


STAR_CONFIG_KEY = "star_config"
"""The safetensors metadata entry where converted and trained weights carry their model config."""
COGVIDEOX_CONFIG_KEYS = frozenset({"native", "diffusers"})
"""What only a CogVideoX denoiser's `star_config` holds (an I2VGen-XL UNet's holds STARUNet arguments)."""


def read_star_config_json(path: Path) -> dict[str, Any] | None:
    """A .safetensors file's `star_config` metadata as JSON (None: not such a file, unreadable, or none)."""
    if not path.is_file() or path.suffix.lower() != ".safetensors":
        return None
    try:
        with safe_open(path, framework="numpy") as handle:
            text = (handle.metadata() or {}).get(STAR_CONFIG_KEY)
        config = json.loads(text) if text is not None else None
    except (SafetensorError, OSError, ValueError):
        return None
    return config if isinstance(config, dict) else None


def is_cogvideox_config(config: Mapping[str, Any]) -> bool:
    return COGVIDEOX_CONFIG_KEYS <= config.keys()


def safetensors_parameters(path: Path) -> int:
    """Number of values stored in a .safetensors file, read from its header alone."""
    with safe_open(path, framework="numpy") as handle:
        return sum(math.prod(handle.get_slice(name).get_shape()) for name in handle.keys())


def resolve_checkpoint(checkpoint: str, variants: tuple[str, ...] = VARIANTS) -> str:
    """`--checkpoint` as a variant name (one of `variants`) or the weights file it names.

    A folder is read as `star train` writes it: its own `unet.safetensors` (the run's
    final export, or one checkpoint step's), else the newest step's under checkpoints/.
    """
    if checkpoint in variants:
        return checkpoint
    path = Path(checkpoint).expanduser()
    if path.is_dir():
        steps = sorted((path / TRAIN_CHECKPOINTS).glob(f"*/{TRAIN_EXPORT}"))
        found = path / TRAIN_EXPORT if (path / TRAIN_EXPORT).is_file() else (steps[-1] if steps else None)
        if found is None:
            raise InputError(
                f"--checkpoint {checkpoint}: the folder holds no {TRAIN_EXPORT} (give the file, or a "
                f"`star train` output folder or one of its {TRAIN_CHECKPOINTS}/step-N folders)"
            )
        return str(found)
    if not path.is_file():
        raise InputError(
            f"--checkpoint {checkpoint}: no such file (give light, heavy, a .safetensors/.pt file, "
            f"or a `star train` output folder holding {TRAIN_EXPORT})"
        )
    return str(path)


def weights_parameters(root: Path, checkpoint: str = "light") -> int | None:
    """Parameters a run holds at once, the UNet's and the VAE's (None when a file is absent or not safetensors).

    The text encoder is left out: it is freed once the prompts are encoded, before the
    others load. `checkpoint` is a variant name or a path, as `star upscale --checkpoint` takes it.
    """
    star = root / star_relpath(checkpoint) if checkpoint in STAR_VARIANTS else Path(checkpoint).expanduser()
    files = [star, root / VAE_FILES[1]]
    if not all(f.is_file() and f.suffix == ".safetensors" for f in files):
        return None
    try:
        return sum(safetensors_parameters(f) for f in files)
    except (SafetensorError, OSError):
        return None

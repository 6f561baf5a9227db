"""The weights folder: where each file lives, its manifest, and whether it is usable.

One folder holds everything inference reads (see CONTRACTS). `manifest.json` records
the size and sha256 of every file, so "is it complete?" is a few `stat` calls and
"is it intact?" (`verify=True`) a re-hash, without asking the network.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

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
TRAIN_EXPORT = "unet.safetensors"
"""What `star train` exports for inference: in its output folder, and in every checkpoints/step-N/."""
TRAIN_CHECKPOINTS = "checkpoints"
HASH_CHUNK = 8 << 20
# safetensors metadata key of a converted checkpoint: the sha256 of the pickle it came from
SOURCE_SHA256_KEY = "source_sha256"


@dataclass(frozen=True)
class FileRecord:
    """What the manifest knows about one file."""

    size: int
    sha256: str


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
    """The STAR variants a `--variant` value stands for ('all' is both)."""
    if variant == "all":
        return STAR_VARIANTS
    if variant in STAR_VARIANTS:
        return (variant,)
    raise InputError(f"--variant must be light, heavy or all, not {variant!r}")


def required_files(variant: str) -> tuple[str, ...]:
    """Every file inference opens for `variant`, relative to the weights folder."""
    if variant not in STAR_VARIANTS:
        raise InputError(f"the STAR variant must be light or heavy, not {variant!r}")
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
        return {rel: FileRecord(int(rec["size"]), str(rec["sha256"])) for rel, rec in data["files"].items()}
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise StarError(f"{path} is unreadable ({error}): delete it and run `{download_command(root)}`") from None


def _save_manifest(root: Path, records: Mapping[str, FileRecord]) -> Path:
    path = root / MANIFEST
    files = {rel: {"size": rec.size, "sha256": rec.sha256} for rel, rec in sorted(records.items())}
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps({"format": MANIFEST_FORMAT, "files": files}, indent=2) + "\n", encoding="utf-8")
    return path


def record_files(root: Path, records: Mapping[str, FileRecord]) -> Path:
    """Add or replace entries whose hashes are already known, without re-hashing the rest."""
    return _save_manifest(root, {**read_manifest(root), **records})


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
    return _save_manifest(root, {rel: FileRecord((root / rel).stat().st_size, sha256_file(root / rel)) for rel in _visible_files(root)})


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
    if verify:
        for rel in relpaths:
            if sha256_file(root / rel) != manifest[rel].sha256:
                return f"{root / rel} is corrupt (its sha256 differs from {MANIFEST})"
    return None


def check_weights_dir(root: Path, variant: str = "light", verify: bool = False) -> WeightsPaths:
    """The paths inference needs, or a StarError naming the missing/corrupt file and the fix."""
    root = Path(root)
    problem = weights_problem(root, variant, verify)
    if problem is not None:
        raise StarError(f"{problem}: run `{download_command(root, variant)}` to fix it")
    return WeightsPaths(
        root=root,
        star=root / star_relpath(variant),
        vae_dir=root / "vae",
        text_encoder_dir=root / "text_encoder",
        tokenizer_dir=root / "tokenizer",
    )


def safetensors_parameters(path: Path) -> int:
    """Number of values stored in a .safetensors file, read from its header alone."""
    with safe_open(path, framework="numpy") as handle:
        return sum(math.prod(handle.get_slice(name).get_shape()) for name in handle.keys())


def resolve_checkpoint(checkpoint: str) -> str:
    """`--checkpoint` as a variant name or the weights file it names.

    A folder is read as `star train` writes it: its own `unet.safetensors` (the run's
    final export, or one checkpoint step's), else the newest step's under checkpoints/.
    """
    if checkpoint in STAR_VARIANTS:
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

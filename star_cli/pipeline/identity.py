"""What makes two runs' windows interchangeable: the identity `--resume` checks.

A stored window may be reused only by a run that would compute the same frames.
That is decided by five parts, each compared on its own so a refusal can say why:
- version: the star package version (code changes change frames);
- input: the source file (resolved path, size, mtime);
- options: every field of the request, walked from its dataclasses, except those
  listed in `EXCLUDED_FIELDS` (an option added later is covered by default);
- plan: the plan's full description (chunks, tiles, windows, weights);
- weights: the manifest sha256 of each weights file the engine reads, and for a
  custom checkpoint file its size, mtime and a hash of its head, tail and samples.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

from star_cli import __version__
from star_cli.families import get_family
from star_cli.hub.layout import WeightsPaths, read_manifest, required_files
from star_cli.pipeline.plan import Plan
from star_cli.pipeline.request import UpscaleRequest

Identity = dict[str, Any]
"""Part name -> a string, or a dict of strings (options, weights, input): JSON-ready."""

EXCLUDED_FIELDS = frozenset(
    {
        "input",  # the source is identified by its file, in the `input` part
        "output",  # where the result goes, not what it is
        "dry_run",
        "overwrite",
        "quiet",
        "verbose",
        "encode",  # windows are stored losslessly before encoding: codec/crf/preset/pix_fmt may change
        "star.resume",
        "star.device",  # the resolved dtype is part of the options instead
        "star.offload",  # offload modes give identical frames (tests/families/test_i2vgenxl_engine.py)
        "star.weights_dir",  # the weights' content is the `weights` part; their folder may move
        "star.batch_guidance",  # the same maths batched: windows agree to float rounding (tests/pipeline)
        "star.compile",  # compiled blocks equal eager ones to float rounding
        "devices",  # how many processes share the windows: the picture never depends on it
        "deinterlace",  # the mode; the frames it rebuilds for this source are compared instead (`run_identity`)
        "plan.model_steps",  # derived from star.steps and star.solver, which are compared (and named)
        "plan.guidance_branches",  # derived from star.guidance
    }
)
"""Dotted request fields that never change a restored window, or are derived from compared ones.
Everything else is compared, so an option added later is covered without a change here."""

SAMPLE_BYTES = 1 << 20
SAMPLES = 16


def _leaves(value: object, prefix: str) -> dict[str, str]:
    """Dotted field name -> repr of every non-dataclass value under `value`, skipping excluded fields."""
    if not dataclasses.is_dataclass(value) or isinstance(value, type):
        return {prefix: repr(str(value) if isinstance(value, Path) else value)}
    found: dict[str, str] = {}
    for field in dataclasses.fields(value):
        name = f"{prefix}.{field.name}" if prefix else field.name
        if name not in EXCLUDED_FIELDS:
            found.update(_leaves(getattr(value, field.name), name))
    return found


def frame_options(request: UpscaleRequest, *, dtype: str | None = None) -> dict[str, str]:
    """Every frame-affecting option of `request` by dotted name; `dtype` is the engine's resolved dtype."""
    options = _leaves(request, "")
    if dtype is not None:
        options["engine dtype"] = dtype
    return options


def file_sample_hash(path: Path) -> str:
    """size, mtime and sha256 of the first and last MiB and of SAMPLES MiB spread between (cheap on GBs)."""
    stat = path.stat()
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for i in range(SAMPLES + 2):
            offset = 0 if i == 0 else max(0, stat.st_size - SAMPLE_BYTES) * i // (SAMPLES + 1)
            handle.seek(offset)
            digest.update(handle.read(SAMPLE_BYTES))
    return f"{stat.st_size}:{stat.st_mtime_ns}:{digest.hexdigest()}"


def weights_identity(weights: WeightsPaths, checkpoint: str, variant: str) -> dict[str, str]:
    """Relative path -> manifest sha256 of every file of the weights `variant`; a custom checkpoint by its sample hash."""
    manifest = read_manifest(weights.root)
    found = {rel: manifest[rel].sha256 if rel in manifest else "absent" for rel in required_files(variant)}
    if checkpoint != variant:  # a checkpoint file given by path
        path = Path(checkpoint).expanduser()
        found[f"checkpoint {path.resolve()}"] = file_sample_hash(path)
    return found


def source_identity(source: Path) -> dict[str, str]:
    stat = source.stat()
    return {"path": str(source.resolve()), "size": str(stat.st_size), "mtime_ns": str(stat.st_mtime_ns)}


def run_identity(
    request: UpscaleRequest,
    source: Path,
    plan: Plan,
    weights: WeightsPaths | None,
    *,
    dtype: str | None = None,
    deinterlace: str | None = None,
) -> Identity:
    """The identity of one job's run; see the module doc.

    `deinterlace`: the frames bwdif rebuilds in this source (`PlannedJob.deinterlace`), not the
    `--deinterlace` mode: `auto` and `off` on a progressive video give the same frames.
    """
    options = frame_options(request, dtype=dtype)
    options["deinterlace"] = repr(deinterlace)
    return {
        "version": __version__,
        "input": source_identity(source),
        "options": options,
        "plan": hashlib.sha256(repr(plan).encode()).hexdigest(),
        "weights": {} if weights is None else weights_identity(weights, request.star.checkpoint, get_family(request.star.model).weights_variant(request.star.checkpoint)),
    }


def _flag(dotted: str) -> str:
    """'star.seed' -> '--seed': the option a user recognises (derived fields keep their name)."""
    return "--" + dotted.rsplit(".", 1)[-1].replace("_", "-")


def identity_difference(stored: object, current: Identity) -> str | None:
    """Why a stored identity does not match `current` (None when it does), for one line."""
    if not isinstance(stored, dict):
        return "it was made by another star version"
    reasons = []
    for part, value in current.items():
        old = stored.get(part)
        if old == value:
            continue
        if part == "version":
            reasons.append(f"it was made by star {old}, this is {value}")
        elif part == "plan" or not isinstance(old, dict):
            reasons.append(f"the {part} differs")
        else:
            keys = sorted(k for k in {*old, *value} if old.get(k) != value.get(k))
            names = [_flag(k) for k in keys] if part == "options" else keys
            shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
            what = {"input": "the input file changed", "weights": "the weights differ", "options": "options differ"}[part]
            reasons.append(f"{what} ({shown})")
    return "; ".join(reasons) or None


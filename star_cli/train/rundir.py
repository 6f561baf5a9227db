"""What a `star train` run leaves in its output folder, and keeping two runs apart there.

A run writes metrics.csv, checkpoints/, logs/ (TensorBoard), validation/ and
unet.safetensors into `train.output_dir`. A new run over them would overwrite some
and leave others behind (later checkpoints that `--resume latest` would then pick,
metrics rows of both runs), so a new run into a folder that holds a run is refused
before anything loads, unless it continues that run (`--resume`) or the user asks to
start over (`--overwrite`, which deletes those entries, and only those, first).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from star_cli.errors import InputError
from star_cli.hub.layout import TRAIN_CHECKPOINTS, TRAIN_EXPORT

METRICS_CSV = "metrics.csv"
LOGS = "logs"
VALIDATION = "validation"
RUN_ENTRIES = (TRAIN_EXPORT, METRICS_CSV, TRAIN_CHECKPOINTS, LOGS, VALIDATION)
"""Every entry a run writes in its output folder; nothing else there is a run's."""


def previous_run(output_dir: Path) -> list[str]:
    """The entries of a run already in `output_dir` (none: the folder is free for a new run)."""
    return [name for name in RUN_ENTRIES if (Path(output_dir) / name).exists()]


def _inside(folder: Path, output_dir: Path) -> bool:
    return Path(output_dir).resolve() in Path(folder).resolve().parents


def check_output_dir(output_dir: Path, resume: str | None, overwrite: bool) -> None:
    """Refuse (one InputError) a run that would mix with the run already in `output_dir`.

    `resume`: `latest` or a checkpoint folder. A checkpoint of another folder continues that
    run into this one, so it too needs this folder free, or `overwrite`; `overwrite` cannot go
    with a `resume` of this folder's own run, which it would delete.
    """
    if overwrite and resume is not None and (resume == "latest" or _inside(Path(resume), output_dir)):
        raise InputError(f"--overwrite deletes the run in {output_dir} that --resume {resume} continues: give one of them")
    found = previous_run(output_dir)
    continues = resume is not None and (resume == "latest" or _inside(Path(resume), output_dir))
    if found and not overwrite and not continues:
        raise InputError(f"train.output_dir {output_dir} holds a previous run ({', '.join(found)}): continue it with "
                         f"--resume latest, or start over with --overwrite (deletes those), or choose another --output-dir")


def clear_run(output_dir: Path) -> None:
    """Delete the entries of the run in `output_dir` (`--overwrite`); other files there stay."""
    for name in RUN_ENTRIES:
        path = Path(output_dir) / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)

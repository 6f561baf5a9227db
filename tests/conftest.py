"""Fixtures shared by every test area."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """The golden reference data folder `shared/fixtures` (star-reference/, clip-tokenizer/).

    $STAR_FIXTURES names it; otherwise it is the nearest `shared/fixtures` above this file,
    which finds `../shared/fixtures` beside a checkout wherever the checkout lives. Tests
    that need it are skipped, with the reason, where it is absent.
    """
    env = os.environ.get("STAR_FIXTURES")
    candidates = [Path(env)] if env else [parent / "shared" / "fixtures" for parent in Path(__file__).resolve().parents]
    for folder in candidates:
        if folder.is_dir():
            return folder
    where = f"STAR_FIXTURES={env} is not a folder" if env else "no shared/fixtures above the tests"
    pytest.skip(f"golden fixtures not found ({where}): set STAR_FIXTURES to the shared/fixtures folder")


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread() -> None:
    """Tiny models are dispatch-bound: extra threads only fight each other (and other jobs) for cores."""
    torch.set_num_threads(1)

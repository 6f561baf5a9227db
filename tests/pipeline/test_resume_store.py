"""The work folder (`WindowStore`) without a model: commits, damage, identity, write failures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from star_cli.errors import InputError, StarError
from star_cli.pipeline.resume import WindowStore

IDENTITY = {"version": "1", "options": {"star.seed": "0"}}
SHAPE = (3, 8, 16)


def frames(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*SHAPE, 3), dtype=np.uint8)


@pytest.fixture
def stored(tmp_path: Path) -> Path:
    folder = tmp_path / "work"
    store = WindowStore(folder, IDENTITY, resume=False)
    store.save(0, frames(0))
    store.save(1, frames(1))
    return folder


def reopen(folder: Path, identity: dict = IDENTITY) -> tuple[WindowStore, list[str]]:
    warnings: list[str] = []
    return WindowStore(folder, identity, resume=True, warn=warnings.append), warnings


def test_windows_round_trip_exactly(stored):
    store, warnings = reopen(stored)
    np.testing.assert_array_equal(store.load(0, SHAPE), frames(0))
    np.testing.assert_array_equal(store.load(1, SHAPE), frames(1))
    assert store.load(2, SHAPE) is None and warnings == []


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) * 2 // 3] ^= 0x40
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "damage",
    [
        lambda folder: _flip(folder / "window_000001.mkv"),
        lambda folder: (folder / "window_000001.json").unlink(),
        lambda folder: (folder / "window_000001.json").write_text("{garbled"),
        lambda folder: (folder / "window_000001.mkv").unlink(),
    ],
    ids=["flipped byte", "no commit record", "garbled record", "no video"],
)
def test_a_damaged_window_is_discarded_with_a_warning(stored, damage):
    damage(stored)
    store, warnings = reopen(stored)
    np.testing.assert_array_equal(store.load(0, SHAPE), frames(0))
    assert store.load(1, SHAPE) is None
    assert len(warnings) == 1 and warnings[0].startswith("stored window 1 is damaged")
    assert sorted(p.name for p in stored.iterdir()) == ["state.json", "window_000000.json", "window_000000.mkv"]


def test_a_window_of_another_shape_is_discarded(stored):
    store, warnings = reopen(stored)
    assert store.load(0, (3, 8, 8)) is None and "expected (3, 8, 8)" in warnings[0]


def test_another_identity_is_refused_naming_the_difference(stored):
    with pytest.raises(InputError, match=r"options differ \(--seed\); run with --overwrite instead to start over$"):
        reopen(stored, {"version": "1", "options": {"star.seed": "1"}})
    with pytest.raises(InputError, match=r"it was made by star 1, this is 2"):
        reopen(stored, {"version": "2", "options": {"star.seed": "0"}})
    assert len(list(stored.glob("window_*"))) == 4


def test_the_state_file_is_written_whole(stored):
    assert json.loads((stored / "state.json").read_text()) == {"format": 2, "identity": IDENTITY, "tiles": None}
    assert [p.name for p in stored.iterdir() if "partial" in p.name] == []


def test_without_resume_finished_windows_are_refused_and_overwrite_starts_over(stored):
    before = sorted(p.name for p in stored.iterdir())
    with pytest.raises(InputError, match=r"holds 2 finished window\(s\) of an interrupted run: add --resume .* or --overwrite"):
        WindowStore(stored, IDENTITY, resume=False)
    assert sorted(p.name for p in stored.iterdir()) == before
    WindowStore(stored, IDENTITY, resume=False, start_over=True)
    assert [p.name for p in stored.iterdir()] == ["state.json"]
    WindowStore(stored, IDENTITY, resume=False)  # no finished window: nothing to keep


def test_a_write_failure_is_a_star_error_and_leaves_no_half_window(stored, monkeypatch):
    store, _ = reopen(stored)
    monkeypatch.setattr("star_cli.pipeline.resume._write_json", lambda *a: (_ for _ in ()).throw(OSError(28, "No space left on device")))
    with pytest.raises(StarError, match=r"cannot save window 2 in .*: No space left on device"):
        store.save(2, frames(2))
    assert sorted(p.name for p in stored.iterdir()) == sorted(
        ["state.json", "window_000000.json", "window_000000.mkv", "window_000001.json", "window_000001.mkv"]
    )

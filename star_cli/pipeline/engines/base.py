"""What the pipeline asks of an engine (a restorer), kept apart so every engine and caller import it alone."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from star_cli.pipeline.plan import Plan, Window
from star_cli.pipeline.timing import StageClock


class Engine(Protocol):
    """A restorer. Temporal engines see whole plan windows; others see reader batches.

    `clock` is where the engine times its own stages (see pipeline.timing).
    """

    name: str
    temporal: bool
    clock: StageClock

    def restore(self, frames: np.ndarray, plan: Plan, window: Window | None = None) -> np.ndarray: ...

"""Seconds spent per stage, per window and in total: what `--verbose` reports.

GPU work is asynchronous, so a stage that ends with work still queued would be
charged to whatever waits next; `sync` (torch.cuda.synchronize for CUDA runs) is
called at the end of each timed stage so each stage pays for its own kernels.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class StageClock:
    """Accumulates wall seconds by stage name; `lap()` hands over the window's share."""

    def __init__(self, sync: Callable[[], None] | None = None) -> None:
        self.sync = sync
        self._lap: defaultdict[str, float] = defaultdict(float)
        self.total: defaultdict[str, float] = defaultdict(float)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the block as `name` (nested stages are each charged in full)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            if self.sync is not None:
                self.sync()
            self.add(name, time.perf_counter() - start)

    def add(self, name: str, seconds: float) -> None:
        self._lap[name] += seconds
        self.total[name] += seconds

    def lap(self) -> dict[str, float]:
        """The seconds since the previous lap, by stage (and start a new lap)."""
        taken = dict(self._lap)
        self._lap.clear()
        return taken

"""Keep the device busy: decode ahead and encode behind on background threads.

Restoring a window keeps the accelerator busy for seconds; decoding the next
frames and encoding the finished ones are host work that would otherwise sit
between two windows while the device idles. `prefetched` runs an iterator (the
reader) on its own thread, `WriteBehind` runs a sink (the writer) on another, each
through a bounded queue: at most `depth` items wait, so memory stays bounded by a
few batches whatever the speed difference. PyAV and torch release the GIL while
they work, so the threads overlap for real.

Errors travel to the main thread: a failed reader raises where its next item is
taken, a failed writer at the next `put` or at `close`. Leaving early (an error
downstream, Ctrl-C) stops both threads before returning, so no thread outlives its
files. The overlap should leave total wall time close to the engine's own compute
time (`--verbose` prints both, from the stage clock: pipeline.timing).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

DEPTH = 2
"""Items waiting per queue: one being consumed, one ready; more only adds memory."""

_POLL_SECONDS = 0.1
_DONE = object()


class _Worker(threading.Thread):
    """A daemon thread that can be waited for through Ctrl-C.

    `Thread.join` interrupted by KeyboardInterrupt may mark a still-running thread as
    stopped (CPython before 3.13 releases its state lock), after which a second join
    returns at once; waiting on an event set when `target` returns has no such trap.
    """

    def __init__(self, target: Callable[[], None], name: str) -> None:
        super().__init__(name=name, daemon=True)
        self._work = target
        self.finished = threading.Event()

    def run(self) -> None:
        try:
            self._work()
        finally:
            self.finished.set()

    def wait(self, on_interrupt: Callable[[], None] | None = None) -> None:
        """Return once the work is done, even through Ctrl-C: its files must not close under it.

        A Ctrl-C meanwhile calls `on_interrupt` (e.g. to drop queued work) and is re-raised after.
        """
        interrupted: KeyboardInterrupt | None = None
        while not self.finished.is_set():
            try:
                self.finished.wait()
            except KeyboardInterrupt as error:
                interrupted = error
                if on_interrupt is not None:
                    on_interrupt()
        if interrupted is not None:
            raise interrupted


class _Failure:
    """An exception raised on a worker thread, carried to the consumer."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


def prefetched(items: Iterable[T], depth: int = DEPTH, name: str = "star-prefetch") -> Iterator[T]:
    """Yield `items` as produced on a background thread, at most `depth` ahead of the consumer."""
    ready: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(item: object) -> bool:
        """Queue `item` unless the consumer has gone; False once it has."""
        while not stop.is_set():
            try:
                ready.put(item, timeout=_POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        source = iter(items)
        try:
            for item in source:
                if not offer(item):
                    break
            else:
                offer(_DONE)
        except BaseException as error:  # noqa: BLE001 - re-raised on the consumer's thread
            offer(_Failure(error))
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()  # a generator's cleanup (open files) runs on the thread that ran it

    worker = _Worker(produce, name)
    worker.start()
    try:
        while True:
            item = ready.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item
    finally:
        stop.set()
        worker.wait()


class WriteBehind:
    """Call `sink(*args)` for every `put(*args)` on a background thread, in order (a context manager).

    A clean exit waits for every queued call; an exit by exception discards what is
    still queued (the output is being abandoned) and joins the thread.
    """

    def __init__(self, sink: Callable[..., None], depth: int = DEPTH, name: str = "star-write-behind") -> None:
        self._sink = sink
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._abandon = threading.Event()
        self._error: BaseException | None = None
        self._done_sent = False
        self._thread = _Worker(self._drain, name)

    def __enter__(self) -> WriteBehind:
        self._thread.start()
        return self

    def _drain(self) -> None:
        while True:
            args = self._queue.get()
            if args is _DONE:
                return
            if self._error is not None or self._abandon.is_set():
                continue
            try:
                self._sink(*args)
            except BaseException as error:  # noqa: BLE001 - re-raised on the caller's thread
                self._error = error

    def put(self, *args: Any) -> None:
        """Queue one call (blocks while `depth` calls wait); raises a failure of an earlier call."""
        self._raise_failure()
        self._queue.put(args)

    def _raise_failure(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if exc_type is not None:
            self._abandon.set()
        self._finish()
        if exc_type is None:
            self._raise_failure()

    def _finish(self) -> None:
        """Stop the thread after what is queued and wait for it; a sink call is never cut short.

        Ctrl-C while waiting drops what is still queued (the output is being abandoned),
        waits for the call in progress, then propagates.
        """
        interrupted: KeyboardInterrupt | None = None
        while not self._done_sent:
            try:
                self._queue.put(_DONE)
                self._done_sent = True
            except KeyboardInterrupt as error:
                interrupted = error
                self._abandon.set()
        try:
            self._thread.wait(on_interrupt=self._abandon.set)
        except KeyboardInterrupt as error:
            interrupted = error
        if interrupted is not None:
            raise interrupted

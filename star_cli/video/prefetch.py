"""Run a frame producer one step ahead on a worker thread, as ffmpeg runs its filters beside the encoder.

Decoding and swscale release the GIL, so producing frame i+1 (decode + resize)
while the encoder works on frame i uses a second core for what would otherwise
wait. The queue is bounded, so memory stays at `depth` frames.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import TypeVar

T = TypeVar("T")
_DONE = object()
_POLL = 0.1


def prefetched(items: Iterator[T], depth: int) -> Iterator[T]:
    """Yield `items`, produced on a worker thread up to `depth` ahead; the producer's errors re-raise here."""
    slots: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(item: object) -> bool:
        while not stop.is_set():
            try:
                slots.put(item, timeout=_POLL)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not offer(item):
                    return
        except BaseException as error:  # handed to the consumer, which raises it
            offer(error)
            return
        offer(_DONE)

    worker = threading.Thread(target=produce, name="star-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item = slots.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        worker.join()

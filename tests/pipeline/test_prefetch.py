"""Reader ahead and writer behind on threads: order, bounded queues, errors and early exits."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from contextlib import closing

import pytest

from star_cli.pipeline.events import FileFinished
from star_cli.pipeline.prefetch import WriteBehind, prefetched
from star_cli.report import compute_text


def test_prefetched_keeps_order_and_stays_within_its_depth():
    made: list[int] = []
    taken: list[int] = []
    ahead: list[int] = []

    def source():
        for i in range(20):
            made.append(i)
            yield i

    for item in prefetched(source(), depth=2):
        time.sleep(0.002)
        ahead.append(len(made) - len(taken))
        taken.append(item)
    assert taken == list(range(20))
    # the queue holds 2, the producer may hold one more it cannot queue yet, the consumer holds one
    assert max(ahead) <= 2 + 1 + 1


def test_prefetched_raises_the_producers_error_where_the_item_is_taken():
    def source():
        yield 1
        raise ValueError("bad packet")

    items = prefetched(source())
    assert next(items) == 1
    with pytest.raises(ValueError, match="bad packet"):
        next(items)


def test_leaving_early_stops_the_producer_and_closes_the_source_on_its_thread():
    closed_on: list[str] = []
    produced: list[int] = []

    def source():
        try:
            for i in range(10_000):
                produced.append(i)
                yield i
        finally:
            closed_on.append(threading.current_thread().name)

    with closing(prefetched(source(), depth=2, name="reader-test")) as items:
        assert next(items) == 0
    assert closed_on == ["reader-test"]
    assert len(produced) < 10


def test_write_behind_calls_the_sink_in_order_and_waits_on_a_clean_exit():
    written: list[int] = []

    def sink(value: int) -> None:
        time.sleep(0.001)
        written.append(value)

    with WriteBehind(sink, depth=2) as writer:
        for i in range(15):
            writer.put(i)
    assert written == list(range(15))


def test_write_behind_reports_a_sink_failure_to_the_caller():
    def sink(value: int) -> None:
        if value == 3:
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        with WriteBehind(sink, depth=1) as writer:
            for i in range(100):
                writer.put(i)
                time.sleep(0.001)


def test_write_behind_drops_queued_work_when_the_run_fails():
    written: list[int] = []
    release = threading.Event()

    def sink(value: int) -> None:
        release.wait()
        written.append(value)

    threading.Timer(0.05, release.set).start()  # the sink is still busy when the run fails
    with pytest.raises(KeyboardInterrupt):
        with WriteBehind(sink, depth=2) as writer:
            writer.put(0)
            writer.put(1)
            raise KeyboardInterrupt
    assert written in ([], [0])


def test_the_verbose_figure_counts_only_the_engines_stages():
    finished = FileFinished(Path("a.mp4"), None, {"io": 3.0, "text": 1.0, "sampling": 2.0, "vae_decode": 0.5}, wall=5.0)
    assert finished.engine_seconds() == 2.5
    assert compute_text(finished.engine_seconds(), finished.wall) == "engine compute 2.50 s, total 5.00 s (2.00x the engine)"


def test_ctrl_c_while_waiting_for_the_writer_drops_the_queue_but_finishes_the_current_call():
    written: list[int] = []

    def sink(value: int) -> None:
        time.sleep(0.3)
        written.append(value)

    threading.Timer(0.1, signal.pthread_kill, (threading.get_ident(), signal.SIGINT)).start()
    with pytest.raises(KeyboardInterrupt):
        with WriteBehind(sink, depth=2) as writer:
            writer.put(0)
            writer.put(1)
            writer.put(2)
    assert written == [0]  # the call in progress completed; nothing ran on after the exit

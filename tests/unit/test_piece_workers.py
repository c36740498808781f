"""PieceWorkers: jobs run on worker threads, results come back on the event loop."""

from __future__ import annotations

import asyncio
import threading

from peer.piece_workers import PieceWorkers


async def test_results_and_errors_come_back_on_the_loop_thread():
    loop_thread = threading.get_ident()
    ran_on: set[int] = set()

    def work(index: int, data: bytearray) -> bool:
        ran_on.add(threading.get_ident())
        if index == 3:
            raise OSError("disk on fire")
        return index % 2 == 0

    workers = PieceWorkers(work, threads=2)
    got: dict[int, object] = {}
    all_done = asyncio.Event()

    def on_done(index: int, result) -> None:
        assert threading.get_ident() == loop_thread
        got[index] = result
        if len(got) == 50:
            all_done.set()

    for i in range(50):
        workers.submit((i, bytearray(8)), lambda result, i=i: on_done(i, result))
    await asyncio.wait_for(all_done.wait(), 5)
    workers.stop()
    assert loop_thread not in ran_on
    assert isinstance(got.pop(3), OSError)
    assert got == {i: i % 2 == 0 for i in range(50) if i != 3}


async def test_stop_with_discard_drops_jobs_not_started():
    gate = threading.Event()
    started = threading.Event()

    def work(index: int, data: bytearray) -> bool:
        started.set()
        gate.wait(5)
        return True

    workers = PieceWorkers(work, threads=1)
    done: list[int] = []
    for i in range(5):
        workers.submit((i, bytearray(1)), lambda result, i=i: done.append(i))
    assert await asyncio.to_thread(started.wait, 5)
    workers.stop(discard=True)            # job 0 is under way; 1-4 are dropped
    gate.set()
    await asyncio.sleep(0.2)
    assert done == [0]


async def test_the_threads_are_batch_work_and_the_event_loop_is_not():
    """Waking a piece thread must not preempt the event loop's thread (Linux SCHED_BATCH);
    the loop's own thread keeps the normal policy."""
    import os
    import sys

    if not sys.platform.startswith("linux"):
        import pytest
        pytest.skip("SCHED_BATCH is Linux's")
    policies: list[int] = []
    workers = PieceWorkers(lambda: policies.append(os.sched_getscheduler(0)) or True, threads=2)
    done = asyncio.Event()
    workers.submit((), lambda result: done.set())
    await asyncio.wait_for(done.wait(), 5)
    workers.stop()
    assert policies == [os.SCHED_BATCH]
    assert os.sched_getscheduler(0) == os.SCHED_OTHER

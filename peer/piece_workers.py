"""The threads that check and write one torrent's downloaded pieces.

A finished piece goes to one of the torrent's worker threads, which hashes it and, if it
matches, writes it. The results come back to the event loop in batches: one wake-up
delivers every piece finished since the last one. asyncio's `run_in_executor` with a task
per piece cost the event loop 29 us per piece (two futures, a condition variable, the
task and its wake-up; 7 us this way), in a process whose event loop is what limits a fast
download. hashlib and os.pwrite release the GIL, so the threads work alongside the loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
from collections.abc import Callable

__all__ = ["PieceWorkers", "as_batch_thread"]

log = logging.getLogger("swarm.peer")

#: what a job's callback gets: the work's result, or the exception it raised
Result = bool | Exception


class PieceWorkers:
    """`threads` threads running `work(*job)`; each job's `on_done(result)` is then
    called on the event loop that made this object."""

    def __init__(self, work: Callable[..., bool], threads: int = 2,
                 name: str = "swarm-piece") -> None:
        self._work = work
        self._loop = asyncio.get_running_loop()
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._finished: list[tuple[Callable[[Result], None], Result]] = []
        self._wake_pending = False      # a delivery is scheduled on the loop
        # Daemon threads: a process that exits without closing its storage must not hang
        # on them; a piece cut short at exit is found missing by the next hash check.
        self._threads = [threading.Thread(target=self._run, name=f"{name}-{n}", daemon=True)
                         for n in range(threads)]
        for thread in self._threads:
            thread.start()

    def submit(self, job: tuple, on_done: Callable[[Result], None]) -> None:
        self._jobs.put((job, on_done))

    def stop(self, discard: bool = False) -> None:
        """The threads end once the jobs given so far are done (with `discard`, those not
        yet started are dropped, and their callbacks never run)."""
        if discard:
            try:
                while True:
                    self._jobs.get_nowait()
            except queue.Empty:
                pass
        for _ in self._threads:
            self._jobs.put(None)

    def _run(self) -> None:
        as_batch_thread()
        work, jobs = self._work, self._jobs
        while True:
            job = jobs.get()
            if job is None:
                return
            args, on_done = job
            try:
                result: Result = work(*args)
            except Exception as exc:       # e.g. a StorageError: the torrent decides
                result = exc
            with self._lock:
                self._finished.append((on_done, result))
                wake, self._wake_pending = not self._wake_pending, True
            # a waiting thread must not keep the buffer alive (an error's traceback holds it too)
            del job, args, on_done, result
            if wake:
                try:
                    self._loop.call_soon_threadsafe(self._deliver)
                except RuntimeError:       # the event loop is closed: the process is ending
                    return

    def _deliver(self) -> None:
        with self._lock:
            finished, self._finished = self._finished, []
            self._wake_pending = False
        # One by one, each let go before the next: a callback may check that nobody else
        # holds an earlier piece's buffer (the storage reuses it then), and a batch can be
        # longer than its cache.
        finished.reverse()
        try:
            while finished:
                on_done, result = finished.pop()
                try:
                    on_done(result)
                except Exception:
                    log.exception("handling a checked piece failed")
        finally:
            if finished:               # a BaseException went through: the rest go next time
                finished.reverse()
                with self._lock:
                    self._finished[:0] = finished
                    self._wake_pending = True
                self._loop.call_soon(self._deliver)


def as_batch_thread() -> None:
    """Make the calling thread batch work for the scheduler (Linux SCHED_BATCH, same share
    of the CPU): waking it then no longer preempts the event loop's thread.

    Handing a piece to an idle thread woke it on the loop's own core, which it took over only
    to wait there for the GIL the loop holds: 1 GiB over loopback on a busy machine, the loop
    lost 21-140 ms in `submit` (p90 12-20 us a call); as batch threads, 4-13 ms (p90 1.5-4
    us). On a quiet machine the same wall time, and 0.07 s less CPU (5 alternating runs)."""
    try:
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    except (AttributeError, OSError):    # not Linux, or not allowed: the default it is
        pass

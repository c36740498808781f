"""Writing a checked piece past the page cache (O_DIRECT), when no peer will ask for it.

A buffered write copies the piece into the page cache. On this project's VMs that copy
was two thirds of a fast download's CPU (perf, 1 GiB over loopback: 2.5 s of 4.6 s, in
`copy_folio_from_iter_atomic`), because the freshly downloaded file lands in memory the
host had taken back and must hand over again, page by page. libtorrent pays the same.
O_DIRECT gives the bytes to the disk instead, and the disk's DMA does the rest. A piece
assembled in Storage.piece_buffer's memory, which starts on a page, goes as it is; other
buffers go through one copy into an aligned buffer this thread keeps (1 MiB). Copying every
piece that way cost more than the copy: 2.28 s against 2.14 s for 1 GiB, and 0.2 s more CPU
(alternating runs), when piece buffers were bytearrays.

Which of the two is cheaper changes with the machine's mood. In a slow hour, the buffered
copy cost 2.5 s of CPU per GiB; in a middle one, 0.19-0.20 s against the direct writes'
0.28-0.32 s, which also kept the four piece threads waiting on the disk for 5 s in all
(buffered: 0.67 s), and a 1 GiB download took 2.38 s buffered against 2.69 s direct (6
alternating runs, buffered ahead in all 6). So `WriteCosts` measures both, per byte of
thread CPU, and a piece that may go direct goes the way that costs less now.

The page cache is worth its copy for a piece that other peers still lack: serving it
then reads memory, not the disk (100 peers on one machine, every piece written direct:
70 s instead of 44 s). So the torrent asks for a direct write only when every peer it
is connected to has the piece already, as when one seed feeds one leecher.

Storage preallocates a new file (fallocate), so the kernel lets direct writes to it run
in parallel. O_DIRECT needs the file offset, the length and the buffer aligned to the
device's block size. A span that is not aligned (the last piece, files that start mid-piece) is
written buffered, as is everything on a file system that refuses O_DIRECT (EINVAL).
"""

from __future__ import annotations

import errno
import mmap
import os
import threading
from collections import deque

__all__ = ["DirectWrites", "WriteCosts", "ALIGN"]

ALIGN = 4096                # covers 512- and 4096-byte devices
CHUNK = 1024 * 1024         # the aligned buffer each writing thread keeps
_O_DIRECT: int = getattr(os, "O_DIRECT", 0)
#: a direct write also holds its thread while the disk works, so it must save CPU clearly
DIRECT_WHEN_BUFFERED_COSTS = 1.5   # times a direct write's CPU per byte
#: each way's cost is the median of its last few writes: one odd write (identical 256 KiB
#: writes took 45-207 us of CPU here) moves nothing, and a way's first, cold write (the
#: O_DIRECT descriptor opened, 1.6-3x the next ones) is outvoted
SAMPLES = 5
PROBE_EVERY = 50                   # pieces between two looks at the way not taken: costs drift
PROBE_PIECES = 3                   # a look is this many pieces (its first one runs cold)


class WriteCosts:
    """Which way to write a piece that no peer will ask us for: buffered or direct, by
    the CPU each has cost per byte lately (thread CPU time, measured by the caller). The
    first pieces alternate until both ways have SAMPLES measurements. Pure bookkeeping,
    safe to call from the piece threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._samples: dict[bool, deque[float]] = {False: deque(maxlen=SAMPLES),   # direct? ->
                                                   True: deque(maxlen=SAMPLES)}    # s per byte
        self._chosen = 0

    def choose_direct(self) -> bool:
        with self._lock:
            buffered, direct = self._samples[False], self._samples[True]
            if len(buffered) < SAMPLES or len(direct) < SAMPLES:
                return len(direct) < len(buffered)
            cheaper = _median(buffered) > DIRECT_WHEN_BUFFERED_COSTS * _median(direct)
            probing = self._chosen % PROBE_EVERY >= PROBE_EVERY - PROBE_PIECES
            self._chosen += 1
            return cheaper != probing

    def record(self, direct: bool, cpu_seconds: float, nbytes: int) -> None:
        if nbytes > 0:
            with self._lock:
                self._samples[direct].append(cpu_seconds / nbytes)

    def per_gib(self, direct: bool) -> float | None:
        """CPU seconds a GiB written this way costs, as measured lately."""
        with self._lock:
            samples = self._samples[direct]
            return _median(samples) * 2 ** 30 if samples else None


def _median(values: deque[float]) -> float:
    return sorted(values)[len(values) // 2]


class DirectWrites:
    """O_DIRECT descriptors for a torrent's files, opened on first use from the storage's
    own descriptor (/proc/self/fd: the same file, with no second walk of its path, which
    was checked for symlinks once). Threads write at the same time (on a preallocated
    file the kernel lets them: parallel writes took a 1 GiB download from 2.52-2.83 s to
    2.10-2.43 s here); `close` waits for them."""

    def __init__(self) -> None:
        self._fds: dict[int, int | None] = {}     # file index -> fd, or None: cannot
        self._buffers = threading.local()          # per thread: one page-aligned CHUNK
        self._lock = threading.Condition()
        self._writing = 0                          # writes under way (close waits for them)
        self._closed = False
        self._retired: list[int] = []
        self.bytes_written = 0

    def write(self, file: int, opened: int, data: memoryview, offset: int, *,
              aligned: bool = False) -> bool:
        """Write `data` at `offset` of file number `file` (open as descriptor `opened`) past
        the page cache; False if it cannot go that way (the caller writes it buffered).
        `aligned`: `data` starts on a page, so it goes as it is; else through a copy into
        this thread's aligned buffer. Raises OSError (ENOSPC, EIO...)."""
        if not _O_DIRECT or offset % ALIGN or len(data) % ALIGN:
            return False
        with self._lock:
            if self._closed:
                return False
            fd = self._fds.get(file, -1)
            if fd == -1:
                fd = self._fds[file] = _reopen_direct(opened)
            if fd is None:
                return False
            self._writing += 1
        done = False
        try:
            done = _pwrite_whole(fd, data, offset) if aligned else self._write_copied(fd, data, offset)
        except _Refused:             # EINVAL: this file goes buffered from now on
            with self._lock:
                if self._fds.get(file) == fd:
                    self._fds[file] = None
                    self._retired.append(fd)        # (another thread may be using it)
        finally:
            with self._lock:
                self._writing -= 1
                if done:
                    self.bytes_written += len(data)
                if not self._writing:
                    self._lock.notify_all()
        return done

    def _write_copied(self, fd: int, data: memoryview, offset: int) -> bool:
        """Through this thread's aligned buffer, CHUNK at a time (`data` not page-aligned)."""
        buffer = getattr(self._buffers, "chunk", None)
        if buffer is None:
            buffer = self._buffers.chunk = mmap.mmap(-1, CHUNK, flags=mmap.MAP_PRIVATE)  # page-aligned
        with memoryview(buffer) as chunk:
            pos = 0
            while pos < len(data):
                n = min(CHUNK, len(data) - pos)
                chunk[:n] = data[pos:pos + n]
                if not _pwrite_whole(fd, chunk[:n], offset + pos):
                    return False
                pos += n
        return True

    def close(self) -> None:
        """After the writes under way; later writes return False."""
        with self._lock:
            self._closed = True
            self._lock.wait_for(lambda: not self._writing)
            fds = [fd for fd in self._fds.values() if fd is not None] + self._retired
            self._fds.clear()
            self._retired.clear()
        for fd in fds:
            os.close(fd)


class _Refused(Exception):
    """The file system refused an O_DIRECT write (EINVAL)."""


def _pwrite_whole(fd: int, data: memoryview, offset: int) -> bool:
    """One O_DIRECT write of all of `data`; False for a short one (the span then goes
    buffered); _Refused for EINVAL."""
    try:
        return os.pwrite(fd, data, offset) == len(data)
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            raise _Refused from None
        raise


def _reopen_direct(fd: int) -> int | None:
    try:
        return os.open(f"/proc/self/fd/{fd}", os.O_WRONLY | _O_DIRECT)
    except OSError:     # no O_DIRECT here, no /proc, or out of descriptors: buffered it is
        return None

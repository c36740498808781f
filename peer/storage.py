"""The torrent's files on disk, seen as a row of pieces.

API:
    storage = Storage(meta, root)      # files live at root/<FileEntry.disk_path> (names
                                       # too long for the disk cut, metainfo.disk_name)
    await storage.open(create=True)    # make folders and (sparse, full-size) files
    await storage.verify(on_progress=None) -> set[int]   # pieces on disk whose SHA-1 matches
    storage.store_if_valid(index, data, on_done, keep_cached=True)   # SHA-1 check, then write,
                                       # on a worker thread; on_done(True/False/error) after
    await storage.read_piece(index) -> memoryview        # through a small cache; prefetch(index)
    storage.file_spans(index, begin=0, length=None) -> list[Span]   # piece range -> file ranges
    await storage.close()
Every disk problem comes out as StorageError with one line: "disk full writing <path>".

Why raw file descriptors and os.pread/os.pwrite instead of aiofiles for pieces: aiofiles
hops to a thread for every call (seek, then write, per file), while one `to_thread` call
here does a whole piece, all its file spans. Measured on 256 KiB pieces (one file):
aiofiles ~230 us per write and ~200 us per read, pread/pwrite ~130 us and ~115 us,
i.e. 1.5-2x faster, more for pieces spanning several files. For the same reason `open`
checks the paths, makes the folders and opens the files in one thread hop, not one per
folder.

Hashing never runs on the event loop: `verify` reads and hashes batches of pieces in
worker threads (hashlib releases the GIL on big buffers, so batches run in parallel).
Serving peers reads whole pieces through a small LRU cache, so the 16 blocks a peer asks
for one after another cost one disk read; concurrent reads of one piece share it.

Safety: before anything is created, every file path is resolved and must stay inside
`root`, so a symlink planted in the download folder cannot redirect writes elsewhere.
Seeding (read_only) writes nothing, so it follows the user's own symlinks. Only regular
files are used: a named pipe or a device could block a thread in open() or read() forever.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import functools
import hashlib
import mmap
import os
import stat
import sys
import threading
import time
from bisect import bisect_right
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from common.descriptors import allow_open_files
from peer.direct_writes import ALIGN, DirectWrites, WriteCosts
from peer.piece_workers import PieceWorkers


if TYPE_CHECKING:  # pragma: no cover
    from common.metainfo import Metainfo

CACHE_BYTES = 32 * 1024 * 1024      # read cache budget, 2 to 16 pieces
SPARE_BYTES = 16 * 1024 * 1024      # piece buffers kept for reuse while downloading
_RWF_NOWAIT: int | None = getattr(os, "RWF_NOWAIT", None)
# Buffers leaving the cache are reused when their refcount says nobody holds them. That
# count is exact on CPython up to 3.13; 3.14 may borrow references to locals (gh-130704),
# so there a buffer could look free while a send still reads it: no reuse.
_EXACT_REFCOUNTS = sys.implementation.name == "cpython" and sys.version_info < (3, 14)
_PIECE_BUFFERS = (bytearray, mmap.mmap)    # what piece_buffer makes
MAPPED_MIN = 64 * 1024     # smaller pieces stay bytearrays: many small maps, little to gain
VERIFY_BATCH_BYTES = 8 * 1024 * 1024  # pieces hashed per worker-thread call
PROCESS_PIECE_BYTES = 128 * 1024 * 1024   # read caches and spares of all torrents together
MIN_CACHED = 2                       # pieces a torrent may cache even past the process's limit
#: threads that hash and write one torrent's downloaded pieces. They mostly wait, on the
#: disk (a direct write: 0.6-0.9 ms of wall for 0.1 ms of CPU) or on the GIL after a hash,
#: so four keep a 2-core machine's 1 GiB download busier than two (2.14-2.18 s against
#: 2.39-2.63 s, alternating runs).
PIECE_THREADS = 4
#: descriptors kept free for peer connections, the tracker and the like
SPARE_DESCRIPTORS = 32
#: O_NONBLOCK: a named pipe's open() waits for a writer without it (and nothing stops that
#: wait, not even shutdown); the file type is checked right after.
_OPEN_FLAGS = os.O_NONBLOCK | os.O_NOCTTY
_KINDS = {stat.S_IFIFO: "a named pipe", stat.S_IFDIR: "a folder", stat.S_IFCHR: "a device",
          stat.S_IFBLK: "a device", stat.S_IFSOCK: "a socket"}


class PieceMemory:
    """The bytes held in piece buffers (read caches and spares) by all torrents of a daemon.

    A torrent's own caps allow up to 32 MiB of cache and 32 MiB of spares (4 MiB pieces),
    which is right for one busy torrent but not for a daemon serving 100 at once. Past
    `limit`, a torrent keeps only MIN_CACHED pieces cached and no new spares: reads and
    fresh buffers cost more, memory does not grow. One per Client, shared by its Storages.
    (Pieces being assembled are bounded by the picker: picker.OpenPieces.)
    """

    def __init__(self, limit: int = PROCESS_PIECE_BYTES) -> None:
        self.limit = limit
        self.used = 0

    @property
    def full(self) -> bool:
        return self.used > self.limit


class StorageError(Exception):
    """Reading or writing the torrent's files failed; the message says which file and why."""


class DataChanged(StorageError):
    """A file is no longer what was checked (cut short while seeding): pieces advertised
    as had cannot be served any more, so the torrent should stop with this line."""


@dataclass(frozen=True, slots=True)
class Span:
    """The part of one piece that lives in one file."""

    file: int          # index into meta.files
    file_offset: int   # where in that file
    length: int
    piece_offset: int  # where in the piece (or in the requested range)


def _error(exc: OSError, doing: str, path: Path | str) -> StorageError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageError(f"disk full {doing} {path}")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return StorageError(f"permission denied {doing} {path}")
    if exc.errno == errno.EROFS:
        return StorageError(f"read-only file system {doing} {path}")
    if exc.errno == errno.EMFILE:
        return StorageError(f"too many open files {doing} {path}: raise the limit with `ulimit -n`")
    return StorageError(f"{doing} {path} failed: {exc.strerror or exc}")


class Storage:
    def __init__(self, meta: "Metainfo", root: Path | str, *, cache_pieces: int | None = None,
                 memory: PieceMemory | None = None) -> None:
        self.meta = meta
        self.root = Path(root)
        self.paths = [self.root.joinpath(*f.disk_path) for f in meta.files]
        self._starts = [f.offset for f in meta.files]
        self._fds: list[int | None] = []
        self._found: list[int] = []   # per file: bytes past this are surely not data (size at open, grown by writes)
        self._opened = False
        if cache_pieces is None:
            cache_pieces = max(2, min(16, CACHE_BYTES // max(1, meta.piece_length)))
        self._cache_pieces = cache_pieces
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self._reading: dict[int, asyncio.Future] = {}
        self._spare: list[bytearray] = []   # full-size piece buffers nobody holds any more
        self.memory = memory or PieceMemory(limit=sys.maxsize)   # counts _cache and _spare
        # While downloading, pieces wait for the hashing threads in bursts: 16 MiB of spares
        # met 94 % of a 1 GiB download's buffers (16 pieces: 54 %). A seed needs fewer.
        self._spare_max = max(cache_pieces, SPARE_BYTES // max(1, meta.piece_length))
        self._nowait = _RWF_NOWAIT is not None   # page-cache reads without a thread hop
        # Downloaded pieces are hashed and written by PIECE_THREADS threads of its own,
        # made on the first piece and let go when the download is done (asyncio's default
        # pool ran up to six, shared by all torrents, so one slow disk held up the rest).
        # One writes buffered at a time: the kernel serializes those writes to a file
        # anyway, but a second writer waits by spinning on the file's lock (perf: 5 % of
        # all CPU in a 1 GiB download), while this lock lets it sleep. Direct writes go
        # in parallel, outside it.
        self._workers: PieceWorkers | None = None
        self._write_lock = threading.Lock()
        self._direct = DirectWrites()
        self.write_costs = WriteCosts()     # buffered or direct, for pieces nobody will ask for

    # -- layout ------------------------------------------------------------------
    def file_spans(self, index: int, begin: int = 0, length: int | None = None) -> list[Span]:
        size = self.meta.piece_size(index)
        if length is None:
            length = size - begin
        if not (0 <= index < self.meta.num_pieces and 0 <= begin and length >= 0
                and begin + length <= size):
            raise ValueError(f"range {begin}+{length} is outside piece {index}")
        start = index * self.meta.piece_length + begin
        end = start + length
        spans = []
        i = max(0, bisect_right(self._starts, start) - 1)
        files = self.meta.files
        while i < len(files) and files[i].offset < end:
            f = files[i]
            lo, hi = max(start, f.offset), min(end, f.offset + f.length)
            if hi > lo:
                spans.append(Span(i, lo - f.offset, hi - lo, lo - start))
            i += 1
        return spans

    # -- life cycle --------------------------------------------------------------------
    async def open(self, create: bool = True, read_only: bool = False) -> None:
        """Create folders and full-size sparse files (create=True), then open them all;
        read_only: open what is there for reading only, change nothing (seeding)."""
        if self._opened:
            return
        # One thread hop for all of it: a torrent of thousands of files would otherwise hold
        # the event loop (and every other torrent of a daemon) through its path checks.
        opening = asyncio.ensure_future(asyncio.to_thread(self._open_sync, create and not read_only,
                                                          read_only))
        try:
            self._fds, self._found = await asyncio.shield(opening)
        except asyncio.CancelledError:      # the thread goes on: close what it opens
            opening.add_done_callback(_close_opened)
            raise
        self._direct = DirectWrites()
        self._opened = True

    def _open_sync(self, create: bool, read_only: bool) -> tuple[list[int | None], list[int]]:
        if not read_only:
            self._check_paths()
        self._check_descriptors()
        if create:
            real = [p for p, entry in zip(self.paths, self.meta.files) if not entry.pad]
            for folder in sorted({p.parent for p in real} | {self.root}):
                try:
                    os.makedirs(folder, exist_ok=True)   # (at most 255 deep: metainfo's bound)
                except (FileExistsError, NotADirectoryError):  # a file where it (or one above) goes
                    raise StorageError(f"{folder} cannot be made: a file is in the way "
                                       f"(a folder is needed there)") from None
                except OSError as exc:
                    raise _error(exc, "creating folder", folder) from None
        return self._open_files(create, read_only)

    def _check_paths(self) -> None:
        """Writes must stay inside root (not for reading: the user named the data to seed)."""
        root = self.root.resolve()
        for path in self.paths:
            try:
                resolved = path.resolve()
            except RuntimeError:    # a symlink loop, before Python 3.13
                raise StorageError(f"refusing {path}: symlink loop in {self.root}") from None
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise StorageError(f"refusing {path}: symlink loop in {self.root}") from None
                raise _error(exc, "checking", path) from None
            if not resolved.is_relative_to(root):
                raise StorageError(f"refusing {path}: it leads outside {self.root} (symlink?)")

    def _check_descriptors(self) -> None:
        """Every file stays open while the torrent runs: past the limit, opening would fail
        at some file with EMFILE, which does not say what to do about it."""
        pads = sum(entry.pad for entry in self.meta.files)
        files = len(self.paths) - pads + min(pads, 1)     # (all pads share one /dev/zero)
        needed = _descriptors_in_use() + files + SPARE_DESCRIPTORS
        limit = allow_open_files(needed + files)    # (and an O_DIRECT one each, when writing)
        if limit < needed:
            raise StorageError(f"{self.meta.name} has {files} files, all kept open: that needs "
                               f"{needed} open files, but the limit is {limit}; raise it with "
                               f"`ulimit -n {needed}` (as root, or in limits.conf) and try again")

    def _open_files(self, create: bool, read_only: bool = False) -> tuple[list[int | None], list[int]]:
        fds: list[int | None] = []
        found: list[int] = []
        created: list[int] = []       # files this open made: emptied again if space runs out
        zeros: int | None = None
        try:
            for path, entry in zip(self.paths, self.meta.files):
                if entry.pad:   # BEP 47: zeros that no file holds; /dev/zero reads them, drops writes
                    if zeros is None:     # one for all of them (a hybrid torrent pads each file)
                        zeros = os.open("/dev/zero", os.O_RDWR)
                    fds.append(zeros)
                    found.append(entry.length)
                    continue
                try:
                    if create:
                        fd = os.open(path, os.O_RDWR | os.O_CREAT | _OPEN_FLAGS, 0o644)
                    elif not read_only and os.access(path, os.W_OK):
                        fd = os.open(path, os.O_RDWR | _OPEN_FLAGS)
                    else:
                        fd = os.open(path, os.O_RDONLY | _OPEN_FLAGS)
                except FileNotFoundError:
                    fds.append(None)
                    found.append(0)
                    continue
                except OSError as exc:
                    raise _error(exc, "opening", path) from None
                fds.append(fd)
                try:
                    info = os.fstat(fd)
                    size = info.st_size
                    if not stat.S_ISREG(info.st_mode):
                        kind = _KINDS.get(stat.S_IFMT(info.st_mode), "not a file")
                        raise StorageError(f"{path} is not a regular file ({kind})")
                    os.set_blocking(fd, True)
                    found.append(min(size, entry.length))
                    if create and size != entry.length:
                        os.ftruncate(fd, entry.length)  # sparse: no blocks are allocated
                except OSError as exc:
                    raise _error(exc, "sizing", path) from None
                if create and size == 0 and entry.length:
                    created.append(fd)
                    try:
                        _preallocate(fd, entry.length)
                    except OSError as exc:
                        for made in created:    # give the space back: a retry says it again
                            os.ftruncate(made, 0)
                        raise _error(exc, "reserving space for", path) from None
        except BaseException:
            _close_all(fds)
            raise
        return fds, found

    async def close(self) -> None:
        if not self._opened:
            return
        self._opened = False
        self.memory.used -= sum(len(b) for b in self._cache.values())
        self._cache.clear()
        self._keep_spares(0)
        self._stop_workers(discard=True)

        def close_all() -> None:
            # After any write under way (its descriptor must not close, or be reused, under
            # it). No fsync, as other clients: a piece lost in a crash is found missing by
            # the hash check on restart, and flushing 1 GiB would hold the exit for 0.4 s.
            with self._write_lock:
                fds, self._fds = self._fds, []
                self._direct.close()
            _close_all(fds)

        try:
            await asyncio.to_thread(close_all)
        except OSError as exc:
            raise StorageError(f"closing files of {self.meta.name} failed: {exc.strerror}") from None

    # -- checking --------------------------------------------------------------------
    async def verify(self, on_progress: Callable[[int, int], None] | None = None) -> set[int]:
        """Hash every piece whose bytes are on disk; returns the indices that match.

        Pieces in missing files or past the end of short files are simply missing (and
        not read). `on_progress(done, total)` is called on the loop after each round.
        """
        self._require_open()
        total = self.meta.num_pieces
        if not any(self._found):     # a fresh download: nothing to read, no thread hops
            if on_progress is not None:
                on_progress(total, total)
            return set()
        per_batch = max(1, VERIFY_BATCH_BYTES // max(1, self.meta.piece_length))
        batches = [range(i, min(i + per_batch, total)) for i in range(0, total, per_batch)]
        workers = max(1, min(4, os.cpu_count() or 1))
        good: set[int] = set()
        done = 0
        for w in range(0, len(batches), workers):
            wave = batches[w:w + workers]
            for result in await asyncio.gather(*(asyncio.to_thread(self._verify_batch, b) for b in wave)):
                good.update(result)
            done += sum(len(b) for b in wave)
            if on_progress is not None:
                on_progress(done, total)
        return good

    def _verify_batch(self, indices: range) -> list[int]:
        good = []
        for index in indices:
            spans = self.file_spans(index)
            if all(self._fds[s.file] is not None and s.file_offset + s.length <= self._found[s.file]
                   for s in spans):
                data = self._read_sync(index, spans)
                if hashlib.sha1(data).digest() == self.meta.piece_hashes[index]:
                    good.append(index)
        return good

    def store_if_valid(self, index: int, data: bytearray,
                       on_done: Callable[[bool | Exception], None], *,
                       keep_cached: bool = True) -> None:
        """Hash a freshly assembled piece and, if it matches, write it, on this torrent's
        worker threads; then, on the event loop, `on_done(True)` (written), `on_done(False)`
        (wrong hash or size) or `on_done(error)` (a StorageError), always later. No copy: the torrent hands
        over a finished piece buffer and never touches it again. `keep_cached=False`: no
        peer will ask for it soon, so it may bypass the page cache, if that is cheaper
        (peer/direct_writes.py)."""
        try:
            self._require_open()
        except StorageError as error:      # closed under a download: told like any other error
            asyncio.get_running_loop().call_soon(on_done, error)
            return
        if self._workers is None:
            self._workers = PieceWorkers(self._check_and_write, threads=PIECE_THREADS)

        def finished(result: bool | Exception) -> None:
            if result is True and self._opened:
                self._remember(index, data)
            on_done(result)

        self._workers.submit((index, data, not keep_cached), finished)

    def _check_and_write(self, index: int, data: bytearray, may_go_direct: bool) -> bool:
        if (len(data) != self.meta.piece_size(index)
                or hashlib.sha1(data).digest() != self.meta.piece_hashes[index]):
            return False
        self._write_sync(index, data, may_go_direct)
        return True

    @property
    def direct_bytes(self) -> int:
        """Piece bytes written past the page cache (O_DIRECT) so far."""
        return self._direct.bytes_written

    def cached(self, index: int) -> memoryview | None:
        """The piece if it is in the read cache (no I/O); a hit counts as a use."""
        data = self._cache.get(index)
        if data is None:
            return None
        self._cache.move_to_end(index)
        return memoryview(data)

    def prefetch(self, index: int) -> None:
        """Start reading a piece into the cache, so a server's next pieces are ready in time."""
        if self._opened:
            self._start_read(index)

    # -- pieces ---------------------------------------------------------------------------
    def _write_sync(self, index: int, data: bytes, may_go_direct: bool = False) -> None:
        """`may_go_direct`: no peer will ask for the piece, so it goes whichever way costs
        less CPU now (WriteCosts); this thread's CPU time for it is the measurement."""
        view = memoryview(data)
        files = self.meta.files
        spans = [span for span in self.file_spans(index) if not files[span.file].pad]  # (zeros)
        direct = may_go_direct and self.write_costs.choose_direct()
        cpu_before = time.thread_time()
        # outside the lock: direct writes run in parallel (peer/direct_writes.py)
        aligned = type(data) is mmap.mmap
        written = [direct and self._write_direct(span, view, aligned) for span in spans]
        with self._write_lock:
            if not self._fds:
                raise StorageError(f"storage for {self.meta.name} is closed")
            for span, done in zip(spans, written):
                if not done:
                    self._write_buffered(span, view)
                self._found[span.file] = max(self._found[span.file], span.file_offset + span.length)
        if all(done == direct for done in written):    # (one way only: a clean measurement)
            self.write_costs.record(direct, time.thread_time() - cpu_before, len(data))

    def _write_buffered(self, span: Span, view: memoryview) -> None:
        fd = self._fds[span.file]
        path = self.paths[span.file]
        if fd is None:
            raise StorageError(f"cannot write {path}: it was not opened")
        part = view[span.piece_offset:span.piece_offset + span.length]
        offset = span.file_offset
        try:
            while part:
                n = os.pwrite(fd, part, offset)
                part, offset = part[n:], offset + n
        except OSError as exc:
            raise _error(exc, "writing", path) from None

    def _write_direct(self, span: Span, view: memoryview, aligned: bool) -> bool:
        """`aligned`: the piece starts on a page (piece_buffer)."""
        fds = self._fds
        opened = fds[span.file] if fds else None
        if opened is None:
            return False     # (closed, or not opened: the buffered path says which)
        try:
            return self._direct.write(span.file, opened,
                                      view[span.piece_offset:span.piece_offset + span.length],
                                      span.file_offset,
                                      aligned=aligned and span.piece_offset % ALIGN == 0)
        except OSError as exc:
            raise _error(exc, "writing", self.paths[span.file]) from None

    async def read_piece(self, index: int) -> memoryview:
        """A view, as pieces are held in bytes, bytearrays or memory maps (piece_buffer),
        and only a view compares equal to bytes of the same content whichever it is."""
        self._require_open()
        got = self._start_read(index)
        return memoryview(await asyncio.shield(got) if isinstance(got, asyncio.Future) else got)

    def _start_read(self, index: int) -> bytes | asyncio.Future:
        """The piece at once (our cache, or the OS's page cache), or the thread read that
        brings it (shared: concurrent reads of one piece cost one)."""
        data = self._cache.get(index)
        if data is not None:
            self._cache.move_to_end(index)
            return data
        pending = self._reading.get(index)
        if pending is None:
            data = self._read_if_cached(index)
            if data is not None:
                return data
            pending = asyncio.ensure_future(asyncio.to_thread(self._read_sync, index))
            self._reading[index] = pending
            pending.add_done_callback(lambda f: self._read_done(index, f))
        return pending

    def _read_done(self, index: int, fut: asyncio.Future) -> None:
        self._reading.pop(index, None)    # (exception() also marks a prefetch's error as seen)
        if not fut.cancelled() and fut.exception() is None and self._opened:
            self._remember(index, fut.result())

    def _read_if_cached(self, index: int) -> bytearray | None:
        """The piece, if the OS has all of it in its page cache (then also in our cache);
        None at once otherwise.

        A seed's pieces are usually in the page cache, and a read from there takes ~30 us,
        less than the thread hop around it (futex wake-ups, two context switches: a fifth
        of a seed's CPU in perf). RWF_NOWAIT (Linux) makes the read fail instead of waiting
        for the disk, and the piece is then read in a worker thread as before."""
        if not self._nowait:
            return None
        buf = self.piece_buffer(self.meta.piece_size(index))
        if self._preadv_all(index, buf):
            self._remember(index, buf)
            return buf
        self._give_back(buf)                # ours alone: nothing saw it
        return None

    def _preadv_all(self, index: int, buf: bytearray) -> bool:
        with memoryview(buf) as view:
            for span in self.file_spans(index):
                fd = self._fds[span.file]
                if fd is None:
                    return False
                part = view[span.piece_offset:span.piece_offset + span.length]
                try:
                    got = os.preadv(fd, [part], span.file_offset, _RWF_NOWAIT)
                except BlockingIOError:
                    return False
                except OSError:
                    self._nowait = False    # not supported here: always use the thread
                    return False
                finally:
                    part.release()
                if got != span.length:      # partly cached, or a short file
                    return False
        return True

    def _read_sync(self, index: int, spans: list[Span] | None = None) -> bytes:
        spans = self.file_spans(index) if spans is None else spans
        parts = []
        for span in spans:
            fd = self._fds[span.file]
            path = self.paths[span.file]
            if fd is None:
                raise StorageError(f"cannot read {path}: file is missing")
            try:
                chunk = os.pread(fd, span.length, span.file_offset)
                while len(chunk) < span.length:
                    more = os.pread(fd, span.length - len(chunk), span.file_offset + len(chunk))
                    if not more:    # (checked when opened, or written since)
                        raise DataChanged(f"{path} changed on disk: it is shorter than the torrent says")
                    chunk += more
            except OSError as exc:
                raise _error(exc, "reading", path) from None
            parts.append(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def piece_buffer(self, size: int, *, aligned: bool = False) -> bytearray | mmap.mmap:
        """A buffer for a piece of `size` bytes; its old contents are garbage.

        `aligned` (to assemble a download in): a new one is an anonymous memory map when the
        size is a whole number of pages. It starts on a page, so a direct write takes it as
        it is (peer/direct_writes.py), where a bytearray went through one more copy: 1 GiB
        over loopback, alternating runs, 2.14 s against 2.28 s and 0.2 s less CPU. Not for
        reads: with maps a seed took 0.08 s more CPU per GiB (2.32 s against 2.21 s), though
        it reuses its buffers (4,078 of 4,096 reads in one run); where that goes is not known.

        Buffers that left the cache are reused: a fresh one is zeroed and faulted in again
        (perf: memset alone was 3 % of a downloading peer's CPU, with bytearrays)."""
        if size == self.meta.piece_length and self._spare:
            self.memory.used -= size
            return self._spare.pop()
        if aligned and size % ALIGN == 0 and size >= MAPPED_MIN:
            return mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE)   # (not shared: plain memory)
        return bytearray(size)

    def download_done(self) -> None:
        """The download is over (complete, or failed): keep only as many spare buffers as
        seeding needs (the cache's size), and let the hashing threads go once the pieces
        given to them are written (each still gets its answer)."""
        self._spare_max = self._cache_pieces
        self._keep_spares(self._spare_max)
        self._stop_workers()

    def _keep_spares(self, count: int) -> None:
        self.memory.used -= sum(len(b) for b in self._spare[count:])
        del self._spare[count:]

    def _stop_workers(self, discard: bool = False) -> None:
        """The hashing threads end once the pieces already given to them are written (or,
        when closing, once the piece under way is)."""
        if self._workers is not None:
            self._workers.stop(discard)
            self._workers = None

    def _remember(self, index: int, data: bytes) -> None:
        memory = self.memory
        replaced = self._cache.pop(index, None)
        if replaced is not None:
            memory.used -= len(replaced)
        self._cache[index] = data
        memory.used += len(data)
        while len(self._cache) > self._cache_pieces or (memory.full and len(self._cache) > MIN_CACHED):
            _, old = self._cache.popitem(last=False)
            memory.used -= len(old)
            # Reusable only if nothing else refers to it: a refcount of 2 (`old` and the
            # call's argument) means no pending write, memoryview or task still holds it.
            if _EXACT_REFCOUNTS and type(old) in _PIECE_BUFFERS and sys.getrefcount(old) == 2:
                self._give_back(old)

    def _give_back(self, buf: bytearray) -> None:
        """Keep a buffer nobody else holds for the next piece (full-size ones, up to a cap)."""
        if (len(buf) == self.meta.piece_length and len(self._spare) < self._spare_max
                and self.memory.used + len(buf) <= self.memory.limit):
            self._spare.append(buf)
            self.memory.used += len(buf)

    def _require_open(self) -> None:
        if not self._opened:
            raise StorageError(f"storage for {self.meta.name} is not open")


def _preallocate(fd: int, length: int) -> None:
    """Reserve a new file's blocks (Linux fallocate(2)): a full disk is then said at the
    start, not halfway, and direct writes to reserved blocks run in parallel. Where it is
    not supported the file stays sparse. (Not os.posix_fallocate: where the file system
    lacks fallocate, glibc emulates it by writing to every block.)"""
    fallocate = _libc_fallocate()
    if fallocate is None:
        return
    while fallocate(fd, 0, 0, length) != 0:
        err = ctypes.get_errno()
        if err in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise OSError(err, os.strerror(err))
        if err != errno.EINTR:
            return          # not supported here (EOPNOTSUPP...): the file stays sparse


def _descriptors_in_use() -> int:
    for listing in ("/proc/self/fd", "/dev/fd"):
        try:
            return len(os.listdir(listing)) - 1     # (less the listing's own)
        except OSError:
            pass
    return 0


@functools.cache
def _libc_fallocate():
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    # fallocate64 takes 64-bit offsets on 32-bit systems too
    fallocate = getattr(libc, "fallocate64", None) or getattr(libc, "fallocate", None)
    if fallocate is not None:
        fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
        fallocate.restype = ctypes.c_int
    return fallocate


def _close_opened(opening: asyncio.Future) -> None:
    """The descriptors of an open that was cancelled while its thread ran."""
    if opening.cancelled() or opening.exception() is not None:
        return
    _close_all(opening.result()[0])


def _close_all(fds: list[int | None]) -> None:
    """Each descriptor once (pad files share theirs)."""
    for fd in dict.fromkeys(fds):
        if fd is not None:
            os.close(fd)

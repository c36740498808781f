"""A web seed (BEP 19 `url-list`): an HTTP server holding the same bytes, read with Range.

To the torrent a web seed is one more source of blocks, a "peer" that has every piece:
the same picker chooses what it fetches and the same hash check guards every piece it
delivers. Central (client-server) mode is a torrent whose only sources are web seeds.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING
from urllib.parse import quote

import aiohttp

from common.metainfo import Metainfo
from common.wire import BLOCK_SIZE

if TYPE_CHECKING:  # pragma: no cover
    from peer.torrent import Torrent

log = logging.getLogger("swarm.peer")

CHUNK = 64 * 1024
NO_RANGE_SKIP_MAX = 64 * 1024 * 1024   # bytes skipped of a server's whole-file answer, at most


class WebSeedError(Exception):
    """A server's answer we cannot use; `hopeless`: asking again will not change it."""

    def __init__(self, message: str, hopeless: bool = False) -> None:
        super().__init__(message)
        self.hopeless = hopeless


def file_urls(base: str, meta: Metainfo) -> list[str]:
    """URL of each file of the torrent, following BEP 19's rules for a trailing slash."""
    if not meta.multi_file:
        return [base + quote(meta.name) if base.endswith("/") else base]
    root = base if base.endswith("/") else base + "/"
    return [root + "/".join(quote(part) for part in f.path) for f in meta.files]


class WebSeed:
    #: a piece that failed its hash this many times from this server is not asked again
    MAX_FAILURES_PER_PIECE = 2
    #: requests failed in a row (no block arrived in between) before the server is given up:
    #: with the back-off between them, about 2.5 minutes of a server that does not answer
    MAX_ERRORS_IN_A_ROW = 10
    #: seconds a connect, or a read of the body, may wait. Not a limit on a whole answer: a
    #: slow or shared origin, or our own download cap, may take minutes over one piece.
    IDLE_TIMEOUT = 60.0

    def __init__(self, url: str, concurrency: int = 4) -> None:
        self.url = url
        self.address = (url, 0)
        self.concurrency = concurrency
        self.failures: dict[int, int] = {}
        self.bad_pieces: set[int] = set()
        self.errors = 0
        self.errors_in_a_row = 0
        self.gave_up: str | None = None       # why this server is not asked any more
        self._changed = asyncio.Event()

    def __repr__(self) -> str:
        return f"web seed {self.url}"

    async def run(self, torrent: "Torrent") -> None:
        self.urls = file_urls(self.url, torrent.meta)
        torrent.picker.add_peer(self, range(torrent.num_pieces))
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.IDLE_TIMEOUT,
                                        sock_read=self.IDLE_TIMEOUT)
        async with aiohttp.ClientSession(timeout=timeout, headers={"User-Agent": "swarm/0.1"}) as session:
            workers = [asyncio.ensure_future(self._worker(torrent, session)) for _ in range(self.concurrency)]
            try:
                await asyncio.gather(*workers)
            finally:
                for w in workers:
                    w.cancel()
                torrent.picker.remove_peer(self)

    def piece_failed(self, torrent: "Torrent", index: int) -> None:
        """Called by the torrent when a piece this server contributed to was wrong."""
        n = self.failures[index] = self.failures.get(index, 0) + 1
        if n >= self.MAX_FAILURES_PER_PIECE and index not in self.bad_pieces:
            self.bad_pieces.add(index)
            log.warning("%s serves wrong data for piece %d; not asking it again", self.url, index)
            torrent.picker.remove_peer(self)
            torrent.picker.add_peer(self, (i for i in range(torrent.num_pieces) if i not in self.bad_pieces))
        self._changed.set()

    def _give_up(self, torrent: "Torrent", reason: str) -> None:
        if self.gave_up is None:
            self.gave_up = reason
            log.warning("web seed %s: %s; not asking it again", self.url, reason)
            torrent.picker.remove_peer(self)
            self._changed.set()            # its other workers see it and end
            torrent.check_unobtainable()

    async def _worker(self, torrent: "Torrent", session: aiohttp.ClientSession) -> None:
        backoff = 1.0
        blocks_per_piece = max(1, torrent.meta.piece_length // BLOCK_SIZE)
        while not torrent.complete.is_set() and torrent.error is None and self.gave_up is None:
            await torrent.disk_ready.wait()     # as peers stop being read while the disk lags
            blocks = torrent.picker.pick(self, blocks_per_piece)
            if not blocks:
                self._changed.clear()
                try:
                    await asyncio.wait_for(self._changed.wait(), timeout=0.5)
                except asyncio.TimeoutError:
                    pass
                continue
            try:
                await self._fetch(torrent, session, blocks)
                backoff = 1.0
            except (WebSeedError, aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError) as exc:
                self.errors += 1
                self.errors_in_a_row += 1
                torrent.picker.requests_dropped(self, blocks)   # (those that did not arrive)
                reason = _reason(exc)
                if _hopeless(exc) or self.errors_in_a_row >= self.MAX_ERRORS_IN_A_ROW:
                    self._give_up(torrent, reason)
                    return
                log.warning("web seed %s: %s", self.url, reason)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)

    async def _fetch(self, torrent: "Torrent", session: aiohttp.ClientSession, blocks) -> None:
        """Fetch runs of contiguous blocks, each with as few Range requests as files allow."""
        for index, begin, length in _runs(blocks):
            data = bytearray()   # the run, read straight into one buffer
            try:
                for span in torrent.storage.file_spans(index, begin, length):
                    if torrent.meta.files[span.file].pad:     # BEP 47: zeros, on no server
                        data += bytes(span.length)
                        continue
                    await self._get_range(torrent, session, self.urls[span.file], span.file_offset,
                                          span.length, data)
            finally:    # an answer cut off midway still brings the blocks it carried whole
                self._deliver(torrent, index, begin, length, data)

    def _deliver(self, torrent: "Torrent", index: int, begin: int, length: int, data: bytearray) -> None:
        whole = length if len(data) >= length else len(data) - len(data) % BLOCK_SIZE
        if whole:
            self.errors_in_a_row = 0
        with memoryview(data) as view:
            for rel in range(0, whole, BLOCK_SIZE):
                torrent.on_block(self, index, begin + rel, view[rel:min(rel + BLOCK_SIZE, whole)])

    async def _get_range(self, torrent: "Torrent", session, url: str, offset: int, size: int,
                         out: bytearray) -> None:
        """Append bytes offset..offset+size of `url` to `out`, within the download cap."""
        headers = {"Range": f"bytes={offset}-{offset + size - 1}"}
        async with session.get(url, headers=headers) as resp:
            if resp.status == 200:
                # A server without Range support (python -m http.server) sends the whole file:
                # skip to the offset, as other clients do. Each piece then costs the file up to
                # it, so only so far into a file.
                if offset > NO_RANGE_SKIP_MAX:
                    raise WebSeedError(f"the server ignores Range requests (HTTP 200), and "
                                       f"{offset} bytes into {self._file(url)} is too far to skip",
                                       hopeless=True)
                await self._read(torrent, resp, self._file(url), offset, None)
            elif resp.status != 206:
                # a client error stays one (not found, gone, forbidden...); 408 and 429 are
                # "later", and a server's own errors may pass
                hopeless = 400 <= resp.status < 500 and resp.status not in (408, 429)
                raise WebSeedError(f"HTTP {resp.status} for {self._file(url)}", hopeless=hopeless)
            await self._read(torrent, resp, self._file(url), size, out)

    def _file(self, url: str) -> str:
        """How messages name a file of this server: its URL, unless that is the server's."""
        return "the file" if url == self.url else url

    @staticmethod
    async def _read(torrent: "Torrent", resp, name: str, size: int, out: bytearray | None) -> None:
        """Append the next `size` bytes of the body to `out` (None: skip them), within the
        download cap."""
        got = 0
        while got < size:
            chunk = await resp.content.read(min(CHUNK, size - got))
            if not chunk:
                raise WebSeedError(f"the answer for {name} ended after {got} of {size} bytes")
            if out is not None:
                out += chunk
            got += len(chunk)
            torrent.count_download(len(chunk))      # as it arrives, so the rate shown is smooth
            delay = torrent.limits.download.reserve(len(chunk), asyncio.get_running_loop().time())
            if delay > 0:
                await asyncio.sleep(delay)


def _reason(exc: BaseException) -> str:
    """One line on what went wrong (aiohttp's timeouts have no text; its redirect loop a
    tuple's)."""
    if isinstance(exc, aiohttp.TooManyRedirects):
        return f"too many redirects from {exc.request_info.real_url}"
    if isinstance(exc, asyncio.TimeoutError):
        return "no answer in time"
    return str(exc) or type(exc).__name__


def _hopeless(exc: BaseException) -> bool:
    """Asking again cannot help: a URL no client can use, a redirect loop, a client error."""
    if isinstance(exc, WebSeedError):
        return exc.hopeless
    return isinstance(exc, (aiohttp.TooManyRedirects, ValueError))   # (InvalidURL is a ValueError)


def _runs(blocks):
    """Group (index, begin, length) blocks into contiguous runs within a piece."""
    out: list[list[int]] = []
    for index, begin, length in sorted(blocks):
        if out and out[-1][0] == index and out[-1][1] + out[-1][2] == begin:
            out[-1][2] += length
        else:
            out.append([index, begin, length])
    return [tuple(r) for r in out]

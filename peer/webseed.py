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
    pass


def file_urls(base: str, meta: Metainfo) -> list[str]:
    """URL of each file of the torrent, following BEP 19's rules for a trailing slash."""
    if not meta.multi_file:
        return [base + quote(meta.name) if base.endswith("/") else base]
    root = base if base.endswith("/") else base + "/"
    return [root + "/".join(quote(part) for part in f.path) for f in meta.files]


class WebSeed:
    #: a piece that failed its hash this many times from this server is not asked again
    MAX_FAILURES_PER_PIECE = 2

    def __init__(self, url: str, concurrency: int = 4, timeout: float = 60.0) -> None:
        self.url = url
        self.address = (url, 0)
        self.concurrency = concurrency
        self.timeout = timeout
        self.failures: dict[int, int] = {}
        self.bad_pieces: set[int] = set()
        self.errors = 0
        self._changed = asyncio.Event()

    def __repr__(self) -> str:
        return f"web seed {self.url}"

    async def run(self, torrent: "Torrent") -> None:
        self.urls = file_urls(self.url, torrent.meta)
        torrent.picker.add_peer(self, range(torrent.num_pieces))
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout),
                                         headers={"User-Agent": "swarm/0.1"}) as session:
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

    async def _worker(self, torrent: "Torrent", session: aiohttp.ClientSession) -> None:
        backoff = 1.0
        blocks_per_piece = max(1, torrent.meta.piece_length // BLOCK_SIZE)
        while not torrent.complete.is_set() and torrent.error is None:
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
            except (WebSeedError, aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                self.errors += 1
                log.warning("%s: %s", self.url, exc or type(exc).__name__)
                torrent.picker.requests_dropped(self, blocks)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)

    async def _fetch(self, torrent: "Torrent", session: aiohttp.ClientSession, blocks) -> None:
        """Fetch runs of contiguous blocks, each with as few Range requests as files allow."""
        for index, begin, length in _runs(blocks):
            data = bytearray()   # the run, read straight into one buffer
            for span in torrent.storage.file_spans(index, begin, length):
                if torrent.meta.files[span.file].pad:     # BEP 47: zeros, on no server
                    data += bytes(span.length)
                    continue
                await self._get_range(torrent, session, self.urls[span.file], span.file_offset,
                                      span.length, data)
            view = memoryview(data)
            torrent.count_download(length)
            for rel in range(0, length, BLOCK_SIZE):
                torrent.on_block(self, index, begin + rel, view[rel:rel + BLOCK_SIZE])

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
                    raise WebSeedError(f"{url}: the server ignores Range requests (HTTP 200), "
                                       f"and {offset} bytes into the file is too far to skip")
                await self._read(torrent, resp, url, offset, None)
            elif resp.status != 206:
                raise WebSeedError(f"HTTP {resp.status} for {url}")
            await self._read(torrent, resp, url, size, out)

    @staticmethod
    async def _read(torrent: "Torrent", resp, url: str, size: int, out: bytearray | None) -> None:
        """Append the next `size` bytes of the body to `out` (None: skip them), within the
        download cap."""
        got = 0
        while got < size:
            chunk = await resp.content.read(min(CHUNK, size - got))
            if not chunk:
                raise WebSeedError(f"{url}: short read ({got} of {size} bytes)")
            if out is not None:
                out += chunk
            got += len(chunk)
            delay = torrent.limits.download.reserve(len(chunk), asyncio.get_running_loop().time())
            if delay > 0:
                await asyncio.sleep(delay)


def _runs(blocks):
    """Group (index, begin, length) blocks into contiguous runs within a piece."""
    out: list[list[int]] = []
    for index, begin, length in sorted(blocks):
        if out and out[-1][0] == index and out[-1][1] + out[-1][2] == begin:
            out[-1][2] += length
        else:
            out.append([index, begin, length])
    return [tuple(r) for r in out]

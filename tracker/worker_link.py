"""The link between an HTTP worker process and the main tracker process (`--workers N`).

One registry can only live in one process, but aiohttp's HTTP handling is most of the cost
of an HTTP announce (about 45 of 70 us). So extra worker processes share the TCP port
(SO_REUSEPORT: the kernel spreads connections over them) and do the HTTP, and the main
process, which holds the registry and serves UDP, gives each of them the body of every
answer over a Unix socket pair: a worker sends the raw query and the client's address; the
main process parses, updates the registry, encodes, and sends the bencoded body back.

Frames, big-endian, on a byte stream:
    request  call id (u32), kind (u8), address length (u8), query length (u32), address, query
    reply    call id (u32), ok (u8), body length (u32), body (if not ok: what went wrong)
A FILES_SENT request gets no reply: its query is the decimal count of bytes a worker served
from /files/, so the main process can show the total at /stats.json.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Callable

__all__ = ["ANNOUNCE", "SCRAPE", "STATS", "FILES_SENT", "FrameSplitter", "encode_request",
           "encode_reply", "REQUEST_HEAD", "REPLY_HEAD", "WorkerConnection", "MainConnection",
           "LinkError", "AnswerError"]

log = logging.getLogger("swarm.tracker")

ANNOUNCE, SCRAPE, STATS, FILES_SENT = 1, 2, 3, 4
REQUEST_HEAD = struct.Struct("!IBBI")
REPLY_HEAD = struct.Struct("!IBI")
MAX_REQUEST = 1 << 20       # a larger request can only be a bug: the link is closed


class LinkError(Exception):
    """The other process sent something that is not a frame, or went away."""


class AnswerError(Exception):
    """The main process failed to answer this one request."""


def encode_request(call_id: int, kind: int, address: str, query: str) -> bytes:
    # surrogateescape: the query arrives in the main process exactly as aiohttp gave it
    addr, q = address.encode("ascii", "replace"), query.encode("utf-8", "surrogateescape")
    return REQUEST_HEAD.pack(call_id, kind, len(addr), len(q)) + addr + q


def encode_reply(call_id: int, body: bytes, ok: bool = True) -> bytes:
    return REPLY_HEAD.pack(call_id, ok, len(body)) + body


class FrameSplitter:
    """Cuts a byte stream into frames whose header ends with the lengths of its parts (sans-IO)."""

    def __init__(self, head: struct.Struct, parts: int, limit: int | None = None) -> None:
        self.head = head
        self.parts = parts
        self.limit = limit
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[tuple, list[bytes]]]:
        """The frames completed by `data`: (header fields, the parts after the header)."""
        buf = self._buf
        buf += data
        frames, pos, size = [], 0, self.head.size
        while len(buf) - pos >= size:
            fields = self.head.unpack_from(buf, pos)
            lengths = fields[-self.parts:]
            end = pos + size + sum(lengths)
            if self.limit is not None and end - pos > self.limit:
                raise LinkError(f"frame of {end - pos} bytes")
            if len(buf) < end:
                break
            parts, at = [], pos + size
            for length in lengths:     # (slice, then bytes: two copies, but a memoryview
                parts.append(bytes(buf[at:at + length]))   # costs more for frames this small)
                at += length
            frames.append((fields, parts))
            pos = end
        del buf[:pos]
        return frames


Answer = Callable[[int, str, str], "bytes | None"]


class _FramedProtocol(asyncio.Protocol):
    """One end of a link: cuts what arrives into frames; a malformed stream closes the link."""

    def __init__(self, splitter: FrameSplitter) -> None:
        self.transport: asyncio.Transport | None = None
        self._frames = splitter

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            frames = self._frames.feed(data)
        except LinkError:
            self.transport.close()
            return
        self.frames_received(frames)

    def frames_received(self, frames: list[tuple[tuple, list[bytes]]]) -> None:
        raise NotImplementedError


class WorkerConnection(_FramedProtocol):
    """The main process's end of one worker's link: answers each request with `answer`.

    An error in one answer fails that request only (the worker answers it with a 500)."""

    def __init__(self, answer: Answer) -> None:
        super().__init__(FrameSplitter(REQUEST_HEAD, 2, MAX_REQUEST))
        self.answer = answer

    def frames_received(self, frames: list[tuple[tuple, list[bytes]]]) -> None:
        replies = []        # one write for all the answers of one read
        for (call_id, kind, _, _), (address, query) in frames:
            try:
                body = self.answer(kind, address.decode("ascii", "replace"),
                                   query.decode("utf-8", "surrogateescape"))
            except Exception as exc:
                log.exception("answer to an HTTP worker failed")
                replies.append(encode_reply(call_id, f"{type(exc).__name__}: {exc}".encode(), ok=False))
                continue
            if body is not None:
                replies.append(encode_reply(call_id, body))
        if replies:
            self.transport.write(b"".join(replies))



class MainConnection(_FramedProtocol):
    """A worker's end of its link: `call` sends a request and waits for the body."""

    def __init__(self) -> None:
        super().__init__(FrameSplitter(REPLY_HEAD, 1))
        self.closed: asyncio.Future = asyncio.get_running_loop().create_future()
        self._waiting: dict[int, asyncio.Future] = {}
        self._next_id = 0

    def call(self, kind: int, address: str, query: str) -> asyncio.Future:
        """A future for the body the main process answers with."""
        future = asyncio.get_running_loop().create_future()
        if self.closed.done():
            future.set_exception(LinkError("the main tracker process is gone"))
            return future
        self._next_id = call_id = (self._next_id + 1) & 0xFFFFFFFF
        self._waiting[call_id] = future
        self.transport.write(encode_request(call_id, kind, address, query))
        return future

    def tell(self, kind: int, query: str) -> None:
        """A request that gets no answer."""
        if not self.closed.done():
            self.transport.write(encode_request(0, kind, "", query))

    def frames_received(self, frames: list[tuple[tuple, list[bytes]]]) -> None:
        for (call_id, ok, _), (body,) in frames:
            future = self._waiting.pop(call_id, None)
            if future is None or future.done():
                continue
            if ok:
                future.set_result(body)
            else:
                future.set_exception(AnswerError(body.decode("utf-8", "replace")))

    def connection_lost(self, exc: Exception | None) -> None:
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(LinkError("the main tracker process is gone"))
        self._waiting.clear()
        if not self.closed.done():
            self.closed.set_result(None)

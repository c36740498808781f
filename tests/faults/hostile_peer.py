"""A peer written to misbehave: it speaks the real wire protocol (common/wire.py) and lets a
test send anything at all, well-formed or not, then watch how the other side reacts.

Two shapes:
- `HostilePeer`: one TCP connection we open to a daemon (it plays a leecher, or worse).
- `FakeSeed`: a listening socket a daemon dials; it claims to have every piece, and its
  `serve` policy decides what it does with requests (lie, stall, or behave).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Callable

from common import wire
from common.metainfo import Metainfo
from common.wire import (
    Handshake, HaveAll, Interested, KeepAlive, Piece, ProtocolError, RejectRequest, Request, Unchoke, WireDecoder,
)

FAST = wire.make_reserved(fast=True)


class PeerClosed(Exception):
    """The other side closed (or reset) the connection."""


def random_peer_id(tag: bytes = b"-HOSTIL-") -> bytes:
    return tag + os.urandom(20 - len(tag))


class HostilePeer:
    """One wire-protocol connection under the test's full control."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 peer_id: bytes | None = None) -> None:
        self.reader = reader
        self.writer = writer
        self.peer_id = peer_id or random_peer_id()
        self.decoder = WireDecoder(handshake=True)
        self.pending: list = []
        self.remote_handshake: Handshake | None = None
        self._keepalive: asyncio.Task | None = None

    @classmethod
    async def connect(cls, port: int, host: str = "127.0.0.1", peer_id: bytes | None = None) -> "HostilePeer":
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer, peer_id)

    # -- sending -------------------------------------------------------------------------
    def send(self, *msgs) -> None:
        self.writer.write(b"".join(wire.encode(m) for m in msgs))

    def send_raw(self, data: bytes) -> None:
        self.writer.write(data)

    async def drain(self) -> None:
        with contextlib.suppress(ConnectionError):
            await self.writer.drain()

    async def handshake(self, info_hash: bytes, reserved: bytes = FAST, timeout: float = 5) -> Handshake:
        """Send our handshake, return theirs (PeerClosed if they hang up instead)."""
        self.send(Handshake(info_hash, self.peer_id, reserved))
        msg = await self.recv(timeout)
        assert isinstance(msg, Handshake), msg
        self.remote_handshake = msg
        return msg

    # -- receiving -----------------------------------------------------------------------
    async def recv(self, timeout: float = 5):
        """The next message; PeerClosed on EOF or reset, TimeoutError if none comes."""
        async with asyncio.timeout(timeout):
            while not self.pending:
                try:
                    data = await self.reader.read(65536)
                except ConnectionError as exc:
                    raise PeerClosed(str(exc)) from None
                if not data:
                    raise PeerClosed("EOF")
                self.pending.extend(self.decoder.feed(data))
        return self.pending.pop(0)

    async def expect(self, kind: type, timeout: float = 5):
        """The next message of type `kind`; the ones before it are dropped."""
        async with asyncio.timeout(timeout):
            while True:
                msg = await self.recv(timeout)
                if isinstance(msg, kind):
                    return msg

    async def closed_within(self, seconds: float) -> bool:
        """Read and discard until the remote closes; False if it is still open after `seconds`."""
        try:
            async with asyncio.timeout(seconds):
                while True:
                    try:
                        data = await self.reader.read(1 << 20)
                    except ConnectionError:
                        return True
                    if not data:
                        return True
        except TimeoutError:
            return False

    async def fetch_block(self, index: int, begin: int, length: int, timeout: float = 5) -> bytes:
        """Ask for one block (we must be unchoked) and return its bytes."""
        self.send(Request(index, begin, length))
        async with asyncio.timeout(timeout):
            while True:
                msg = await self.recv(timeout)
                if isinstance(msg, Piece) and (msg.index, msg.begin) == (index, begin):
                    return msg.block

    async def become_unchoked(self, timeout: float = 5) -> None:
        self.send(Interested())
        await self.expect(Unchoke, timeout)

    def keep_alive(self, every: float = 0.5) -> None:
        """Send KeepAlive every `every` seconds, as an honest idle peer does (until closed)."""
        async def loop() -> None:
            while not self.writer.is_closing():
                self.send(KeepAlive())
                await asyncio.sleep(every)
        self._keepalive = asyncio.ensure_future(loop())

    def close(self) -> None:
        if self._keepalive is not None:
            self._keepalive.cancel()
        self.writer.transport.abort()


# -- a seed that dials cannot tell from a real one, until it answers a request -------------

def lie(meta: Metainfo, data: bytes, index: int, begin: int, length: int) -> bytes:
    """Every byte flipped: the right size, the wrong content."""
    offset = index * meta.piece_length + begin
    return bytes(b ^ 0xFF for b in data[offset:offset + length])


def honest(meta: Metainfo, data: bytes, index: int, begin: int, length: int) -> bytes:
    offset = index * meta.piece_length + begin
    return data[offset:offset + length]


def stall(meta: Metainfo, data: bytes, index: int, begin: int, length: int) -> None:
    """Accept the request and never answer it."""
    return None


class FakeSeed:
    """Listens on 127.0.0.1, says it has every piece (BEP 6 HaveAll), unchokes whoever is
    interested and answers each request with `serve(...)`: the block's bytes, a
    RejectRequest to send instead, or None for no answer at all."""

    def __init__(self, meta: Metainfo, data: bytes,
                 serve: Callable[[Metainfo, bytes, int, int, int], bytes | None],
                 interested: bool = False, unchoke_after: float = 0.0,
                 first_block_after: float = 0.0) -> None:
        self.meta = meta
        self.interested = interested     # also asks for data (and so competes for our slots)
        self.unchoke_after = unchoke_after           # seconds it keeps an interested peer choked
        self.first_block_after = first_block_after   # and then before its first answer
        self.data = data
        self.serve = serve
        self.peer_id = random_peer_id(b"-FAKESD-")
        self.port = 0
        self.blocks_sent = 0
        self.requests_seen = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> "FakeSeed":
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for w in list(self._writers):
            w.transport.abort()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        peer = HostilePeer(reader, writer, self.peer_id)
        try:
            theirs = await peer.recv(10)
            if not isinstance(theirs, Handshake) or theirs.info_hash != self.meta.info_hash:
                return
            peer.send(Handshake(self.meta.info_hash, self.peer_id, FAST), HaveAll())
            if self.interested:
                peer.send(Interested())
            while True:
                msg = await peer.recv(60)
                if isinstance(msg, Interested):
                    await asyncio.sleep(self.unchoke_after)
                    peer.send(Unchoke())
                elif isinstance(msg, Request):
                    self.requests_seen += 1
                    if self.requests_seen == 1:
                        await asyncio.sleep(self.first_block_after)
                    block = self.serve(self.meta, self.data, msg.index, msg.begin, msg.length)
                    if isinstance(block, RejectRequest):
                        peer.send(block)
                    elif block is not None:
                        peer.send(Piece(msg.index, msg.begin, block))
                        self.blocks_sent += 1
                        await peer.drain()
        except (PeerClosed, TimeoutError, ProtocolError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            writer.transport.abort()

"""One TCP connection to one peer.

The connection owns the wire codec, the four choke/interest flags, our requests in
flight to the peer and the peer's requests queued to us, flow control and timeouts.
Every decision about *what* to request, whom to unchoke or whom to trust is made by
the torrent (`peer/torrent.py`): the connection reports events to it and executes.

It is an `asyncio.BufferedProtocol`, not a stream: the socket reads straight into the
decoder's buffer (no `bytes` object per read), and a 16 KiB block costs one parse and
one copy, into its piece, not a coroutine per message.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
from typing import TYPE_CHECKING, Callable

from common import bencoding, wire
from common.wire import (
    AllowedFast, Bitfield, Cancel, Choke, Extended, Handshake, Have, HaveAll, HaveNone,
    Interested, KeepAlive, NotInterested, Piece, Port, ProtocolError, RejectRequest, Request,
    SuggestPiece, Unchoke,
)
from common.rates import RateMeter

if TYPE_CHECKING:  # pragma: no cover
    from peer.torrent import Torrent

log = logging.getLogger("swarm.peer")

Block = tuple[int, int, int]  # (piece index, begin, length)

#: what we tell peers about our request queue (BEP 10 `reqq`); more queued than
#: twice this is a flood and ends the connection.
OUR_REQQ = 1000
SEND_BATCH = 4          # blocks per write when serving (see _serve)
MAX_UNANSWERED_CANCELS = 1024   # a peer that never answers them costs no more than this
#: a peer that never said `reqq` gets at most this many of our requests at once
DEFAULT_PEER_REQQ = 250
WRITE_HIGH_WATER = 4 * 1024 * 1024


#: messages that carry hints only; they may come before the bitfield
_HINTS = (Extended, Port, KeepAlive, AllowedFast, SuggestPiece)


class PeerConnection(asyncio.BufferedProtocol):
    """A peer on the other end of a socket; `torrent` is known once the handshake matched."""

    def __init__(
        self,
        *,
        my_peer_id: bytes,
        find_torrent: Callable[[bytes], "Torrent | None"],
        torrent: "Torrent | None" = None,
        address: tuple[str, int] | None = None,
        timeouts: "Timeouts | None" = None,
        on_closed: Callable[["PeerConnection"], None] | None = None,
    ) -> None:
        self.my_peer_id = my_peer_id
        self.find_torrent = find_torrent
        self.torrent = torrent
        self.outgoing = torrent is not None
        self.address = address
        self.timeouts = timeouts or Timeouts()
        self.on_closed = on_closed
        self.transport: asyncio.Transport | None = None
        self.decoder = wire.WireDecoder(handshake=True)
        self.loop = asyncio.get_event_loop()

        self.peer_id: bytes | None = None
        self.listen_port: int | None = None     # where it listens, if it dialled us (BEP 10 "p")
        self.fast = False          # both sides set the BEP 6 bit
        self.extended = False      # both sides set the BEP 10 bit
        self.established = False   # handshakes exchanged, torrent attached
        self.is_self = False       # the handshake carried our own peer id
        self.closed = False
        self.close_reason = ""

        self.am_choking = True
        self.am_interested = False
        self.peer_choking = True
        self.choked_at = 0.0                            # when the peer last choked us
        self.snubbed = False    # it sat on our requests for Timeouts.snub s; cleared by a block
        self.peer_interested = False
        self.got_first_message = False

        self.inflight: set[Block] = set()              # our requests not yet answered
        # BEP 6: a fast peer answers even a cancelled request (piece or reject), and a
        # request is known only by its block, so a late reject for a cancelled request must
        # not be taken for the answer to the same block asked again since.
        self.cancels_unanswered: set[Block] = set()
        self.max_inflight = 32                          # grows with the measured rate
        self.peer_reqq = DEFAULT_PEER_REQQ
        self.queued: collections.deque[Block] = collections.deque()  # their requests to us
        self._outbox: list[Block] = []                  # our requests not yet written
        # the shortest time from a request to its block: the round trip plus the least queue
        # a peer ever made us wait (it sets how deep our pipeline must be, Torrent)
        self.min_rtt = float("inf")
        self._probe: tuple[Block, float] | None = None
        self.requests_while_choked = 0
        self._serving = False
        self._write_ready = asyncio.Event()
        self._write_ready.set()

        now = self.loop.time()
        self.download = RateMeter()   # piece payload they sent us (.total: bytes ever)
        self.upload = RateMeter()     # piece payload we sent them
        self.last_received = now
        self.last_sent = now
        self.last_progress_at = now
        self._timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol ---------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        if self.address is None:
            peer = transport.get_extra_info("peername")
            self.address = (peer[0], peer[1]) if peer else ("?", 0)
        if self.torrent is not None:  # we dialled: we speak first
            self._send_handshake()
        self._timer = self.loop.call_later(self.timeouts.handshake, self._check_timeouts)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.decoder.get_buffer()

    def buffer_updated(self, nbytes: int) -> None:
        if self.closed:
            return
        now = self.last_received = self.loop.time()
        got = 0             # block bytes in this read: counted, and answered, once per read
        try:
            messages = self.decoder.received(nbytes)   # blocks: views, copied by on_block
            for msg in messages:
                if self.closed:
                    return
                if type(msg) is Piece:
                    got += self._on_piece(msg, now)
                else:
                    self._dispatch(msg)
        except ProtocolError as exc:
            self.close(f"protocol error: {exc}")
            return
        torrent = self.torrent
        if torrent is not None and not self.closed:
            if got:
                self.download.add(got, now)
                self.last_progress_at = now
                self.snubbed = False
                torrent.blocks_read(self, got)
            torrent.throttle_download(self, nbytes)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed:
            self.closed = True
            self.close_reason = self.close_reason or (str(exc) if exc else "closed by peer")
        self._finish()

    def pause_writing(self) -> None:
        self._write_ready.clear()

    def resume_writing(self) -> None:
        self._write_ready.set()

    # -- sending ------------------------------------------------------------------
    def send(self, msg: object) -> None:
        if self.closed or self.transport is None:
            return
        self.transport.write(wire.encode(msg))
        self.last_sent = self.loop.time()

    def send_many(self, msgs: list) -> None:
        if self.closed or self.transport is None or not msgs:
            return
        self.transport.write(b"".join(map(wire.encode, msgs)))
        self.last_sent = self.loop.time()

    def _send_handshake(self) -> None:
        assert self.torrent is not None
        self.transport.write(wire.encode(Handshake(
            self.torrent.info_hash, self.my_peer_id,
            wire.make_reserved(fast=True, extended=True))))

    def close(self, reason: str = "") -> None:
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        if reason:
            log.debug("closing %s: %s", self.address, reason)
        if self.transport is not None:
            # flush what is queued (a handshake reply, rejects), but never wait on a peer
            # that does not read: abort after a grace period
            self.transport.close()
            self.loop.call_later(2.0, self.transport.abort)
        self._finish()

    def _finish(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._write_ready.set()  # wake a waiting server loop so it sees `closed`
        callback, self.on_closed = self.on_closed, None
        if callback is not None:
            callback(self)

    # -- choke / interest, called by the torrent ------------------------------------
    def set_choking(self, choke: bool) -> None:
        if choke == self.am_choking:
            return
        self.am_choking = choke
        if choke:
            if self.fast:  # BEP 6: every dropped request is answered with a reject
                self.send_many([RejectRequest(*b) for b in self.queued])
            self.queued.clear()
            self.send(Choke())
        else:
            self.requests_while_choked = 0
            self.send(Unchoke())

    def set_interested(self, interested: bool) -> None:
        if interested != self.am_interested:
            self.am_interested = interested
            if not interested:
                self.snubbed = False    # nothing more to ask it: it cannot be sitting on asks
            self.send(Interested() if interested else NotInterested())

    def request(self, blocks: list[Block]) -> None:
        """Queue requests; they leave in one write at the end of this loop iteration."""
        if not self.inflight:      # the snub clock starts when we start waiting, not before
            self.last_progress_at = self.loop.time()
        self.inflight.update(blocks)
        if not self._outbox:
            self.loop.call_soon(self._flush_requests)
        self._outbox.extend(blocks)

    def _flush_requests(self) -> None:
        blocks, self._outbox = self._outbox, []
        still = [b for b in blocks if b in self.inflight]  # not cancelled meanwhile
        if still and not self.closed and self.transport is not None:
            self.transport.write(wire.encode_requests(still))
            now = self.last_sent = self.loop.time()
            if self._probe is None or now - self._probe[1] > 10.0:
                self._probe = (still[0], now)     # one block timed at a time (min_rtt)

    def cancel(self, block: Block) -> None:
        if block in self.inflight:
            self.inflight.discard(block)
            if block not in self._outbox:  # still unsent: _flush_requests drops it
                self.send(Cancel(*block))
                if self.fast and len(self.cancels_unanswered) < MAX_UNANSWERED_CANCELS:
                    self.cancels_unanswered.add(block)

    def request_room(self) -> int:
        """How many more requests this peer should have in flight to stay busy."""
        return min(self.max_inflight, self.peer_reqq) - len(self.inflight)

    # -- receiving ------------------------------------------------------------------
    def _dispatch(self, msg: object) -> None:
        kind = type(msg)
        if not self.established:
            if kind is not Handshake:
                raise ProtocolError("message before handshake")
            self._on_handshake(msg)  # type: ignore[arg-type]
            return
        torrent = self.torrent
        assert torrent is not None
        first = not self.got_first_message
        if kind not in _HINTS:  # some clients send their extension handshake before the bitfield
            self.got_first_message = True
        if kind is Bitfield:
            # first, or later as a batch of haves (aria2c: have_none, then a full bitfield)
            torrent.on_bitfield(self, wire.indices_from_bitfield(msg.bits, torrent.num_pieces))  # type: ignore[attr-defined]
            return
        if kind is HaveAll or kind is HaveNone:
            if not first:
                raise ProtocolError(f"{kind.__name__} after the first message")
            if not self.fast:
                raise ProtocolError(f"{kind.__name__} without the fast extension")
            if kind is HaveAll:
                torrent.on_bitfield(self, range(torrent.num_pieces))
            return
        if kind is Have:
            if not 0 <= msg.index < torrent.num_pieces:  # type: ignore[attr-defined]
                raise ProtocolError(f"have for piece {msg.index} of {torrent.num_pieces}")  # type: ignore[attr-defined]
            torrent.on_have(self, msg.index)  # type: ignore[attr-defined]
        elif kind is Request:
            self._on_request(msg)  # type: ignore[arg-type]
        elif kind is Cancel:
            block = (msg.index, msg.begin, msg.length)  # type: ignore[attr-defined]
            try:
                self.queued.remove(block)
            except ValueError:
                pass    # already sent, or in the batch being sent: that answers it (BEP 6)
            else:
                if self.fast:   # BEP 6: every request gets exactly one answer, even a cancelled one
                    self.send(RejectRequest(*block))
        elif kind is Choke:
            self.peer_choking = True
            self.choked_at = self.loop.time()
            torrent.on_choke(self)
            if not self.fast:  # without BEP 6 a choke silently drops our requests
                dropped = list(self.inflight)
                self.inflight.clear()
                torrent.on_requests_dropped(self, dropped)
        elif kind is Unchoke:
            self.peer_choking = False
            torrent.on_unchoke(self)
        elif kind is Interested:
            self.peer_interested = True
            torrent.on_interest_changed(self)
        elif kind is NotInterested:
            self.peer_interested = False
            torrent.on_interest_changed(self)
        elif kind is RejectRequest:
            block = (msg.index, msg.begin, msg.length)  # type: ignore[attr-defined]
            if block in self.cancels_unanswered:         # the answer to our cancel
                self.cancels_unanswered.discard(block)
            elif block in self.inflight:
                self.inflight.discard(block)
                torrent.on_requests_dropped(self, [block], refused=not self.peer_choking)
        elif kind is Extended:
            if msg.ext_id == 0:  # type: ignore[attr-defined]
                self._on_extension_handshake(msg.payload)  # type: ignore[attr-defined]
            # other extended messages (ut_pex, ut_metadata, ...) are not ours: ignored
        elif kind in _HINTS or kind is KeepAlive:
            pass  # DHT port, suggestions and allowed-fast sets are hints we do not use
        else:
            raise ProtocolError(f"unexpected {kind.__name__}")

    def _on_handshake(self, hs: Handshake) -> None:
        if self.torrent is None:
            torrent = self.find_torrent(hs.info_hash)
            if torrent is None:
                raise ProtocolError("handshake for an unknown torrent")
            self.torrent = torrent
        elif hs.info_hash != self.torrent.info_hash:
            raise ProtocolError("handshake with the wrong info-hash")
        if hs.peer_id == self.my_peer_id:
            self.is_self = True
            if not self.outgoing:
                self._send_handshake()  # so the dialling side learns it reached itself
            raise ProtocolError("connected to ourselves")
        self.peer_id = hs.peer_id
        self.fast = wire.supports_fast(hs.reserved)
        self.extended = wire.supports_extended(hs.reserved)
        if not self.outgoing:
            if not self.torrent.accept_incoming(self):
                self.close("torrent has no room for more peers")
                return
            self._send_handshake()
        elif not self.torrent.accept_outgoing(self):
            self.close("duplicate connection")
            return
        self.established = True
        self.torrent.on_established(self)  # bitfield first, as BEP 3 and BEP 6 want
        if self.extended and not self.closed:
            payload = bencoding.bencode({"m": {}, "reqq": OUR_REQQ, "v": "swarm/0.1",
                                         "p": self.torrent.listen_port})
            self.send(Extended(0, payload))

    def _on_extension_handshake(self, payload: bytes) -> None:
        try:
            info = bencoding.bdecode(payload, strict_order=False)
        except bencoding.BencodeError:
            return  # a malformed extension handshake only loses the hints in it
        if isinstance(info, dict):
            reqq = info.get(b"reqq")
            if isinstance(reqq, int) and reqq > 0:
                self.peer_reqq = max(1, min(reqq, 2000))
            port = info.get(b"p")
            if isinstance(port, int) and 0 < port < 65536:
                self.listen_port = port

    @property
    def dial_address(self) -> tuple[str, int] | None:
        """The peer's listening address, as a tracker's list names it: ours to skip dialling."""
        if self.outgoing:
            return self.address
        if self.listen_port is not None and self.address is not None:
            return (self.address[0], self.listen_port)
        return None

    def _on_request(self, req: Request) -> None:
        torrent = self.torrent
        assert torrent is not None
        index, begin, length = req.index, req.begin, req.length
        if not 0 <= index < torrent.num_pieces or begin + length > torrent.piece_size(index):
            raise ProtocolError(f"request outside piece {index}: {begin}+{length}")
        if self.am_choking or not torrent.has_piece(index):
            if self.fast:
                self.send(RejectRequest(index, begin, length))
            self.requests_while_choked += 1
            if self.requests_while_choked > 2 * OUR_REQQ:
                raise ProtocolError("keeps requesting while choked")
            return
        if len(self.queued) >= 2 * OUR_REQQ:
            raise ProtocolError(f"request flood: more than {2 * OUR_REQQ} queued")
        if torrent.is_repeat(self, index, begin):
            self.send(RejectRequest(index, begin, length))   # another peer is fetching it
            return
        self.queued.append((index, begin, length))
        if not self._serving:
            self._serving = True
            torrent.spawn(self._serve())

    def _on_piece(self, msg: Piece, now: float) -> int:
        """Hand one block to the torrent; returns its size (the caller counts a read's)."""
        if not self.established:
            raise ProtocolError("piece before handshake")
        self.got_first_message = True
        index, begin, data = msg.index, msg.begin, msg.block
        n = len(data)
        torrent = self.torrent
        assert torrent is not None
        end = begin + n
        if (not 0 <= index < torrent.num_pieces or begin % wire.BLOCK_SIZE
                or end > torrent.piece_length    # (only the last piece is shorter)
                or (index == torrent.num_pieces - 1 and end > torrent.piece_size(index))):
            raise ProtocolError(f"block {begin}+{n} of piece {index} is not in the torrent")
        block = (index, begin, n)
        self.inflight.discard(block)
        if self.cancels_unanswered:      # (a cancelled request answered by its block after all)
            self.cancels_unanswered.discard(block)
        if self._probe is not None and self._probe[0] == block:
            self.min_rtt = min(self.min_rtt, now - self._probe[1])
            self._probe = None
        torrent.on_block(self, index, begin, data)
        return n

    # -- serving --------------------------------------------------------------------
    async def _serve(self) -> None:
        """Send queued blocks, as fast as the write buffer and the upload cap allow."""
        torrent = self.torrent
        assert torrent is not None
        last_index = -1
        try:
            while self.queued and not self.closed:
                if not self._write_ready.is_set():
                    await self._write_ready.wait()
                    continue
                # Up to SEND_BATCH blocks of one piece go out in one write: on loopback and LANs
                # each write is a segment through the whole TCP stack, and both the sender's CPU
                # and the receiver's go per segment more than per byte.
                queued = self.queued
                index, begin, length = queued.popleft()
                batch = [(begin, length)]
                total = length
                while queued and len(batch) < SEND_BATCH and queued[0][0] == index:
                    _, begin, length = queued.popleft()
                    batch.append((begin, length))
                    total += length
                delay = torrent.reserve_upload(total)
                if delay > 0:
                    await asyncio.sleep(delay)
                if index != last_index:  # a new piece: make sure the next ones are on their way
                    last_index = index
                    torrent.prefetch(queued)
                view = torrent.cached_piece(index)
                if view is None:
                    view = await torrent.read_piece(index)
                if self.closed:
                    return
                if self.am_choking:
                    # choked while these blocks waited for tokens or the disk: set_choking
                    # rejected only the requests still queued, so these need their own
                    if self.fast:
                        self.send_many([RejectRequest(index, b, n) for b, n in batch])
                    continue
                parts = []
                for begin, length in batch:
                    parts.append(wire.piece_header(index, begin, length))
                    parts.append(view[begin:begin + length])
                self.transport.writelines(parts)
                now = self.loop.time()
                self.last_sent = now
                self.upload.add(total, now)
                torrent.count_upload(total)
        except Exception as exc:  # a storage error ends this peer, not the daemon
            self.close(f"serving failed: {exc}")
            torrent.on_serve_error(exc)
        finally:
            self._serving = False

    # -- timeouts -------------------------------------------------------------------
    def _check_timeouts(self) -> None:
        self._timer = None
        if self.closed:
            return
        now = self.loop.time()
        t = self.timeouts
        if not self.established:
            self.close("handshake timed out")
            return
        if now - self.last_received > t.idle and self.transport.is_reading():
            # (while our download limit has paused reading, the silence is ours, not theirs)
            self.close(f"silent for {t.idle:.0f} s")
            return
        snubbing = now - self.last_progress_at > t.snub and not self.peer_choking
        if self.inflight and (
                snubbing
                # BEP 6: a choke is followed by a reject for every request it drops; a peer
                # that forgets one would hold that block for as long as it keeps us choked
                or (self.peer_choking and now - self.choked_at > t.tick)):
            self.snubbed = self.snubbed or snubbing
            dropped = list(self.inflight)  # the peer sits on our requests: give them to others
            self.inflight.clear()
            assert self.torrent is not None
            self.torrent.on_requests_dropped(self, dropped)
        if now - self.last_sent > t.keepalive:
            self.send(KeepAlive())
        self._timer = self.loop.call_later(t.tick, self._check_timeouts)


class Timeouts:
    """Seconds; tests shrink them to see stalls quickly."""

    def __init__(self, handshake: float = 20.0, idle: float = 150.0, snub: float = 45.0,
                 keepalive: float = 100.0, tick: float = 5.0) -> None:
        self.handshake = handshake
        self.idle = idle
        self.snub = snub
        self.keepalive = keepalive
        self.tick = min(tick, handshake, idle)

    @classmethod
    def from_env(cls) -> "Timeouts":
        """SWARM_TIMEOUT_SCALE shrinks every timeout (fault tests use 0.05)."""
        scale = float(os.environ.get("SWARM_TIMEOUT_SCALE", "1"))
        return cls(20 * scale, 150 * scale, 45 * scale, 100 * scale, 5 * min(scale, 1))

"""One torrent in the daemon: its peer set, picker, choker, storage and announcer.

This is the glue between the pure cores (`picker`, `choker`) and I/O (`connection`,
`storage`, `announcer`). Blocks from every source (peers, later web seeds) arrive in
`on_block`, are assembled into whole pieces, hashed in a worker thread and written
with one call per piece: nothing unverified is ever written as complete or offered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Iterable

from common import wire
from common.metainfo import Metainfo
from common.rates import RateMeter, TokenBucket
from common.wire import Bitfield, Have, HaveAll, HaveNone
from peer.choker import Choker, PeerStats
from peer.connection import PeerConnection, Timeouts
from peer.first_copy import FirstCopy
from peer.picker import OpenPieces, PiecePicker
from peer.storage import DataChanged, Storage, StorageError

log = logging.getLogger("swarm.peer")

Address = tuple[str, int]


#: a piece a seed refused us is asked of it again after this long (0.25-0.5 s, on the choke
#: loop's ticks): longer than peer.first_copy's `reask`, so the seed sees we took the hint
REFUSAL_SECONDS = 0.25
#: verified-or-not pieces waiting for the hashing and writing threads, at most; past it the
#: torrent stops reading from its peers until half are written, so a disk slower than the
#: network costs bounded memory, not a buffer per piece received.
UNWRITTEN_BYTES = 16 * 1024 * 1024


@dataclass
class Limits:
    """Process-wide rate caps, shared by every connection of every torrent."""

    upload: TokenBucket = field(default_factory=lambda: TokenBucket(None))
    download: TokenBucket = field(default_factory=lambda: TokenBucket(None))


@dataclass
class Candidate:
    """An address we may dial, and how it went last time."""

    source: str
    failures: int = 0
    next_try: float = 0.0
    is_self: bool = False


@dataclass
class Status:
    name: str
    have: int
    num_pieces: int
    total: int
    left: int
    down_rate: float
    up_rate: float
    peers: int
    downloaded: int
    uploaded: int
    hash_failures: int

    @property
    def fraction(self) -> float:
        return 1.0 if self.total == 0 else (self.total - self.left) / self.total

    @property
    def eta(self) -> float | None:
        return self.left / self.down_rate if self.down_rate > 1 and self.left else None


class TorrentError(Exception):
    """The torrent cannot go on (disk full, unwritable folder): one clear line."""


class Torrent:
    def __init__(
        self,
        meta: Metainfo,
        storage: Storage,
        *,
        peer_id: bytes,
        listen_port: int,
        limits: Limits | None = None,
        max_connections: int = 50,
        use_peers: bool = True,
        timeouts: Timeouts | None = None,
        rng: random.Random | None = None,
        open_pieces: OpenPieces | None = None,
    ) -> None:
        self.meta = meta
        self.storage = storage
        self.info_hash = meta.info_hash
        self.num_pieces = meta.num_pieces
        self.piece_length = meta.piece_length
        self.piece_size = meta.piece_size
        self.peer_id = peer_id
        self.listen_port = listen_port
        self.limits = limits or Limits()
        self.max_connections = max_connections
        self.use_peers = use_peers
        self.timeouts = timeouts or Timeouts.from_env()
        self.rng = rng or random.Random()
        self.loop = asyncio.get_event_loop()

        self.picker = PiecePicker(meta.num_pieces, meta.piece_length, meta.total_length, rng=self.rng,
                                  shared=open_pieces)
        self._first_copy: FirstCopy | None = None   # made when we first serve as a seed
        self.choker = Choker(rng=self.rng)
        self.have = self.picker.have   # the picker's record of verified pieces, shared
        self.left = meta.total_length
        self.connections: set[PeerConnection] = set()
        self.dialing: set[Address] = set()
        self.candidates: dict[Address, Candidate] = {}
        self.banned_ids: set[bytes] = set()
        self.banned_addrs: set[Address] = set()
        self.senders: dict[int, dict[int, tuple[object, int]]] = {}  # piece -> begin -> (source, length)
        self.bad_attempts: dict[int, list[tuple[bytes, dict]]] = {}    # failed data kept to convict liars
        self.assembling: dict[int, bytearray] = {}
        self.hashing: set[int] = set()
        self.unwritten_max = max(4, UNWRITTEN_BYTES // meta.piece_length)
        self.disk_ready = asyncio.Event()   # clear: reading paused until the threads catch up
        self.disk_ready.set()
        self._held: set[PeerConnection] = set()   # connections paused until then

        self.hash_failures = 0
        self.down_meter = RateMeter(window=5.0)   # .total: bytes downloaded, any source
        self.up_meter = RateMeter(window=5.0)
        self.complete = asyncio.Event()
        self.error: str | None = None
        self.failed = asyncio.Event()
        self.announcers: list = []
        self.announced = asyncio.Event()  # the first announce round is over (either way)
        self.extra_sources: list = []   # web seeds and other non-peer block sources
        self._tasks: set[asyncio.Task] = set()
        self._wake_connector = asyncio.Event()
        self._rechoke_event = asyncio.Event()
        self._stopping = False

    # -- life cycle -----------------------------------------------------------------
    async def start(self, verify: bool = True, seed_only: bool = False,
                    on_check: Callable[[int, int], None] | None = None) -> None:
        """Verify what is on disk, then begin exchanging pieces. seed_only: the data is the
        user's own, opened read-only; unless all of it matches, refuse (and change nothing).
        on_check(done, total): the check's progress (a big file takes a while)."""
        await self.storage.open(read_only=seed_only)
        if verify:
            try:
                good = await self.storage.verify(on_check)
            except BaseException:       # cancelled (Ctrl-C while checking) or a read error
                with contextlib.suppress(Exception):    # (what ended the check is what counts)
                    await self.storage.close()
                raise
            for index in good:
                self._mark_have(index)
        if self.left == 0:
            self.complete.set()
        elif seed_only:
            await self.storage.close()
            have = self.meta.num_pieces - self.picker.missing_count
            raise TorrentError(f"{self.meta.name}: only {have}/{self.meta.num_pieces} pieces of the data "
                               f"match the torrent, so it is not seeded (nothing was changed; "
                               f"`swarm-peer get` would complete it)")
        self.spawn(self._connector())
        self.spawn(self._choke_loop())
        for announcer in self.announcers:
            self.spawn(announcer.run(self))
        for source in self.extra_sources:
            self.spawn(source.run(self))

    async def stop(self) -> None:
        self._stopping = True
        for conn in list(self.connections):
            conn.close("shutting down")
        stops = [a.stop(self) for a in self.announcers]
        if stops:
            await asyncio.wait([asyncio.ensure_future(s) for s in stops], timeout=3)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=3)
        self.picker.close()
        await self.storage.close()

    def spawn(self, coro) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            if isinstance(exc, (StorageError, TorrentError)):
                self.fail(str(exc))
            else:
                log.error("internal error in %s", self.meta.name, exc_info=exc)

    def fail(self, reason: str) -> None:
        """A fatal local error (disk): stop downloading, tell the user once."""
        if self.error is None:
            self.error = reason
            self.failed.set()
            self.storage.download_done()    # its piece threads end after the pieces queued
            for conn in list(self.connections):
                conn.close("torrent failed")
            self.picker.close()     # its share of the process's open-piece bound goes back

    @property
    def is_seed(self) -> bool:
        return self.left == 0

    @property
    def downloaded(self) -> int:
        return self.down_meter.total

    @property
    def uploaded(self) -> int:
        return self.up_meter.total

    def status(self) -> Status:
        now = self.loop.time()
        return Status(self.meta.name, self.num_pieces - self.picker.missing_count, self.num_pieces, self.meta.total_length,
                      self.left, self.down_meter.rate(now), self.up_meter.rate(now),
                      len(self.connections), self.downloaded, self.uploaded, self.hash_failures)

    # -- the peer set ----------------------------------------------------------------
    def add_peers(self, addresses: Iterable[Address], source: str) -> None:
        """Tracker replies and LSD: listening addresses, to dial."""
        added = False
        for addr in addresses:
            if addr not in self.candidates and addr not in self.banned_addrs:
                self.candidates[addr] = Candidate(source)
                added = True
        if added:
            self._wake_connector.set()

    def wants_peers(self) -> bool:
        return not self._stopping and self.use_peers and len(self.connections) < self.max_connections

    async def _connector(self) -> None:
        """Dial candidates while there is room; back off from addresses that fail."""
        if not self.use_peers:
            return
        while not self._stopping:
            self._wake_connector.clear()
            now = self.loop.time()
            connected = {c.dial_address for c in self.connections}
            room = self.max_connections - len(self.connections) - len(self.dialing)
            for addr, cand in list(self.candidates.items()):
                if room <= 0:
                    break
                if (cand.is_self or cand.next_try > now or addr in self.dialing
                        or addr in connected or addr in self.banned_addrs):
                    continue
                room -= 1
                self.dialing.add(addr)
                self.spawn(self._dial(addr, cand))
            try:
                await asyncio.wait_for(self._wake_connector.wait(), timeout=1.0)
            except asyncio.TimeoutError:
                pass

    async def _dial(self, addr: Address, cand: Candidate) -> None:
        def factory() -> PeerConnection:
            return PeerConnection(my_peer_id=self.peer_id, find_torrent=lambda h: None, torrent=self,
                                  address=addr, timeouts=self.timeouts, on_closed=self._on_closed)

        try:
            await asyncio.wait_for(self.loop.create_connection(factory, addr[0], addr[1]), timeout=10)
            cand.failures = 0
            cand.next_try = self.loop.time() + 30  # if it drops, wait before redialling
        except (OSError, asyncio.TimeoutError):
            cand.failures += 1
            cand.next_try = self.loop.time() + min(300, 5 * 2 ** cand.failures)
            if cand.failures > 8:
                self.candidates.pop(addr, None)
        finally:
            self.dialing.discard(addr)

    def _connection_allowed(self, conn: PeerConnection) -> bool:
        if self._stopping or self.error is not None or conn.peer_id in self.banned_ids:
            return False
        for other in self.connections:
            if other.peer_id == conn.peer_id:
                # Both ends dialled at once: both keep the one opened by the smaller id.
                if other.outgoing == conn.outgoing:
                    return False
                initiator_of_new = self.peer_id if conn.outgoing else conn.peer_id
                if initiator_of_new == min(self.peer_id, conn.peer_id):
                    other.close("duplicate connection")
                    return True
                return False
        return True

    def accept_incoming(self, conn: PeerConnection) -> bool:
        return self.use_peers and len(self.connections) < self.max_connections and self._connection_allowed(conn)

    def accept_outgoing(self, conn: PeerConnection) -> bool:
        if conn.peer_id == self.peer_id or len(self.connections) >= self.max_connections:
            return False  # incoming peers filled the slots while we were dialling
        return self._connection_allowed(conn)

    def on_established(self, conn: PeerConnection) -> None:
        self.connections.add(conn)
        if self.disk_busy:
            self._hold(conn)
        self.picker.add_peer(conn, ())
        have_some = self.picker.missing_count < self.num_pieces
        if conn.fast and self.is_seed:
            conn.send(HaveAll())
        elif conn.fast and not have_some:
            conn.send(HaveNone())
        elif have_some:  # without BEP 6, having nothing means sending nothing
            conn.send(Bitfield(wire.bitfield_from_indices(
                [i for i, h in enumerate(self.have) if h], self.num_pieces)))
        self.rechoke_soon()

    def _on_closed(self, conn: PeerConnection) -> None:
        if conn.is_self and conn.address in self.candidates:
            self.candidates[conn.address].is_self = True  # our own address: never dial it again
        self._held.discard(conn)
        if self._first_copy is not None:
            self._first_copy.forget(conn)
        if conn not in self.connections:
            return
        self.connections.discard(conn)
        dropped = bool(conn.inflight)
        conn.inflight.clear()
        self.picker.remove_peer(conn)
        if dropped:
            self._refill_all()
        self._wake_connector.set()
        self.rechoke_soon()

    # -- what peers tell us --------------------------------------------------------------
    def on_bitfield(self, conn: PeerConnection, indices: Iterable[int]) -> None:
        self.picker.add_peer(conn, indices)
        self._update_interest(conn)
        if self.is_seed and self.picker.peer_is_seed(conn):
            conn.close("both seeds")

    def on_have(self, conn: PeerConnection, index: int) -> None:
        self.picker.peer_has(conn, index)
        if not self.have[index]:
            if conn.am_interested:
                self._fill(conn)    # it may have had nothing we could ask for until now
            else:
                self._update_interest(conn)
        if self.is_seed and self.picker.peer_is_seed(conn):
            conn.close("both seeds")

    def on_unchoke(self, conn: PeerConnection) -> None:
        self._fill(conn)

    def on_choke(self, conn: PeerConnection) -> None:
        self.picker.peer_choked(conn)

    def on_interest_changed(self, conn: PeerConnection) -> None:
        self.rechoke_soon()

    def on_requests_dropped(self, conn: PeerConnection, blocks: list, refused: bool = False) -> None:
        self.picker.requests_dropped(conn, blocks)
        if refused:                 # rejected while unchoked: ask elsewhere for now
            for block in blocks:
                self.picker.peer_refused(conn, block[0], self.loop.time())
        self._refill_all()

    def is_repeat(self, conn: PeerConnection, index: int, begin: int) -> bool:
        """As a seed: another peer asked for this piece moments ago, and some pieces nobody
        has asked for yet remain (peer.first_copy). Never refused: a peer without BEP 6,
        and one close to done (its last pieces are what it waits for). How close: what it
        told us it has, or what we sent it, whichever is more (a leecher need not tell a
        seed of its pieces; swarm does not)."""
        guard = self._first_copy
        if guard is None:
            if not self.is_seed:
                return False
            guard = self._first_copy = FirstCopy(self.meta.num_pieces)
        known = max(self.picker.pieces_of(conn), conn.upload.total // self.piece_length)
        lacking = self.num_pieces - known
        exempt = not conn.fast or lacking <= max(1, self.num_pieces // 64)
        return guard.refuse(conn, index, begin, self.loop.time(), exempt=exempt)

    def has_piece(self, index: int) -> bool:
        return self.have[index] == 1

    def _update_interest(self, conn: PeerConnection) -> None:
        interested = (not self.is_seed) and self.picker.interesting(conn)
        conn.set_interested(interested)
        if interested:
            self._fill(conn)

    # -- downloading --------------------------------------------------------------
    def _fill(self, conn: PeerConnection) -> None:
        """Top up this peer's pipeline; in batches, so requests go out a few at a time."""
        if conn.peer_choking or not conn.am_interested or conn.closed or self.error:
            return
        room = conn.request_room()
        if room <= 0 or (conn.inflight and room < max(8, conn.max_inflight // 4)):
            return
        blocks = self.picker.pick(conn, room)
        if blocks:
            conn.request(blocks)
        elif not conn.inflight and not self.picker.interesting(conn):
            conn.set_interested(False)

    def _refill_all(self) -> None:
        for conn in list(self.connections):
            self._fill(conn)

    def blocks_read(self, conn: PeerConnection, nbytes: int) -> None:
        """After a read that carried blocks: count them, and top up that peer's pipeline,
        once per read rather than once per block."""
        self.count_download(nbytes)
        self._fill(conn)

    def on_block(self, source, index: int, begin: int, data: bytes) -> None:
        """A block arrived from a peer (or a web seed): copy it into its piece. The caller
        counts it (`count_download`), once per read or fetch rather than per block."""
        n = len(data)
        if self.error is not None:      # failed (disk): a web seed's fetch still under way
            return
        if not (self.have[index] or index in self.hashing):  # else a late endgame duplicate
            buf = self.assembling.get(index)
            if buf is None:
                buf = self.assembling[index] = self.storage.piece_buffer(self.piece_size(index),
                                                                         aligned=True)
            buf[begin:begin + n] = data
            senders = self.senders.get(index)
            if senders is None:
                senders = self.senders[index] = {}
            senders[begin] = (source, n)
            for other in self.picker.block_received(source, index, begin):
                if other is not source and isinstance(other, PeerConnection):
                    other.cancel((index, begin, n))
            if self.picker.piece_complete(index):
                del self.assembling[index]
                self.hashing.add(index)
                senders = self.senders.pop(index, {})
                self.storage.store_if_valid(
                    index, buf, lambda result: self._piece_stored(index, buf, senders, result),
                    keep_cached=self._someone_lacks(index))
                if len(self.hashing) >= self.unwritten_max and self.disk_ready.is_set():
                    self.disk_ready.clear()
                    for conn in self.connections:
                        self._hold(conn)

    def _someone_lacks(self, index: int) -> bool:
        """A connected peer lacks this piece, so it will likely ask us for it: then the piece
        is worth keeping in the page cache (else it is written past it, storage.py)."""
        holds = self.picker.peer_holds
        return any(not holds(conn, index) for conn in self.connections)

    def _piece_stored(self, index: int, data: bytearray, senders: dict,
                      result: bool | Exception) -> None:
        """The storage's threads checked (and, if good, wrote) a finished piece."""
        self.hashing.discard(index)
        if not self.disk_ready.is_set() and len(self.hashing) <= self.unwritten_max // 2:
            self.disk_ready.set()
            held, self._held = self._held, set()
            for conn in held:
                self._resume_reading(conn)
        if self._stopping:
            return
        if isinstance(result, Exception):
            if isinstance(result, StorageError):
                self.fail(str(result))
            else:
                log.error("internal error in %s", self.meta.name, exc_info=result)
            return
        if not result:
            self._piece_failed(index, data, senders)  # the buffer is ours alone: no copy
            return
        self._convict_liars(index, data)
        self._mark_have(index)
        msg = wire.encode(Have(index))
        holds = self.picker.peer_holds
        for conn in list(self.connections):
            # Only peers that lack the piece need the `have` (as libtorrent without
            # send_redundant_have): in a 33-peer swarm these writes, one segment each, were
            # a seventh of a peer's CPU. A BEP 16 super-seed still hears from the others
            # that its offer spread, which is what it waits for.
            if conn.transport is not None and not conn.closed and not holds(conn, index):
                conn.transport.write(msg)
            if conn.am_interested and not self.picker.interesting(conn):
                conn.set_interested(False)
        if self.left == 0 and not self.complete.is_set():
            self._on_complete()

    def _piece_failed(self, index: int, data: bytes | bytearray, senders: dict) -> None:
        """A bad piece: fetch it again. One sender is proof; several are kept as suspects.

        With several senders we keep what each one sent. The picker then fetches the piece
        from a single peer; once a good copy passes, `_convict_liars` compares block by
        block and bans exactly the peers whose blocks differed, never an honest one.
        """
        self.hash_failures += 1
        self.picker.piece_failed(index)
        sources = {id(src): src for src, _ in senders.values()}
        names = ", ".join(_describe(src) for src in sources.values())
        log.warning("piece %d failed its hash check (from %s); fetching it again", index, names)
        for src in sources.values():
            if hasattr(src, "piece_failed"):  # a web seed keeps its own tally
                src.piece_failed(self, index)
        if len(sources) == 1:
            (src,) = sources.values()
            if isinstance(src, PeerConnection):
                self.ban(src)
        else:
            attempts = self.bad_attempts.setdefault(index, [])
            if len(attempts) < 3:
                attempts.append((data, senders))
        self._refill_all()
        self.check_unobtainable()

    def _convict_liars(self, index: int, good: bytearray) -> None:
        for bad, senders in self.bad_attempts.pop(index, ()):
            for begin, (src, n) in senders.items():
                if isinstance(src, PeerConnection) and bad[begin:begin + n] != good[begin:begin + n]:
                    self.ban(src)

    def check_unobtainable(self) -> None:
        """Central mode with a dead or corrupt origin: stop once only unobtainable pieces
        are left, rather than wait forever (after a hash failure, or a web seed giving up)."""
        if self.use_peers or not self.extra_sources or self.complete.is_set():
            return
        live = [s for s in self.extra_sources if s.gave_up is None]
        if not live:
            reasons = "; ".join(f"{s.url}: {s.gave_up}" for s in self.extra_sources)
            self.fail(f"no web seed can be used ({reasons})")
            return
        missing = [i for i in range(self.num_pieces) if not self.have[i]]
        stuck = [i for i in missing if all(i in s.bad_pieces for s in live)]
        if missing and len(stuck) == len(missing):
            self.fail(f"{len(stuck)} piece(s) failed the hash check from every web seed "
                      f"(first: piece {stuck[0]}); nothing wrong was written")

    def ban(self, conn: PeerConnection) -> None:
        if conn.peer_id in self.banned_ids:
            return
        log.warning("banning peer %s:%s for sending bad data", *conn.address)
        if conn.peer_id:
            self.banned_ids.add(conn.peer_id)
        if conn.outgoing:
            self.banned_addrs.add(conn.address)
            self.candidates.pop(conn.address, None)
        conn.close("banned: sent data that failed the hash check")

    def _mark_have(self, index: int) -> None:
        if not self.have[index]:
            self.left -= self.piece_size(index)
            self.picker.mark_have(index)

    def _on_complete(self) -> None:
        self.complete.set()
        self.storage.download_done()
        for announcer in self.announcers:
            announcer.completed(self)
        for conn in list(self.connections):
            conn.set_interested(False)
            if self.picker.peer_is_seed(conn):
                conn.close("both seeds")
        self.rechoke_soon()

    @property
    def disk_busy(self) -> bool:
        return not self.disk_ready.is_set()

    def _hold(self, conn: PeerConnection) -> None:
        """Stop reading from `conn` until the disk catches up."""
        self._held.add(conn)
        if conn.transport is not None:
            conn.transport.pause_reading()

    def _resume_reading(self, conn: PeerConnection) -> None:
        """After a rate-limit pause, or once the disk caught up; while it still lags, the
        connection waits for that (even one still in its handshake, not yet established)."""
        if conn.closed or conn.transport is None:
            return
        if self.disk_busy:
            self._hold(conn)
        else:
            conn.transport.resume_reading()

    def throttle_download(self, conn: PeerConnection, n: int) -> None:
        delay = self.limits.download.reserve(n, self.loop.time())
        if delay > 0 and conn.transport is not None:
            conn.transport.pause_reading()
            self.loop.call_later(delay, self._resume_reading, conn)

    # -- uploading -----------------------------------------------------------------
    def reserve_upload(self, n: int) -> float:
        return self.limits.upload.reserve(n, self.loop.time())

    async def read_piece(self, index: int) -> memoryview:
        return await self.storage.read_piece(index)

    def cached_piece(self, index: int) -> memoryview | None:
        return self.storage.cached(index)

    def prefetch(self, queue) -> None:
        """Read ahead the next few distinct pieces a peer asked for."""
        seen = 0
        last = -1
        for n, (index, _, _) in enumerate(queue):
            if n >= 64 or seen >= 3:
                break
            if index != last:
                last = index
                seen += 1
                self.storage.prefetch(index)

    def count_upload(self, n: int) -> None:
        self.up_meter.add(n, self.loop.time())

    def count_download(self, n: int) -> None:
        self.down_meter.add(n, self.loop.time())

    def on_serve_error(self, exc: Exception) -> None:
        if isinstance(exc, DataChanged):    # pieces we said we have are gone: stop, say why
            self.fail(str(exc))
        else:
            log.warning("reading from disk failed: %s", exc)

    # -- choking ------------------------------------------------------------------
    def rechoke_soon(self) -> None:
        """Interest changed or a peer came or went: let the choker look now, not in a second."""
        self._rechoke_event.set()

    async def _choke_loop(self) -> None:
        last_choke = last_check = float("-inf")
        while not self._stopping:
            now = self.loop.time()
            if self._rechoke_event.is_set() or now - last_choke >= 1.0:
                self._rechoke_event.clear()
                last_choke = now
                self._rechoke()
            # Four times a second: a fast link's pipeline deepens within its first second
            # (from 32 blocks; waiting a whole second cost 0.3 s of a 1 GiB transfer).
            self._adapt_pipelines()
            if self.picker.forget_refusals(now, REFUSAL_SECONDS):
                self._refill_all()
            elif self.picker.held_back and self.picker.may_start():   # the bound has room again
                self.picker.held_back = False
                self._refill_all()
            if now - last_check >= 1.0:
                last_check = now
                self.check_unobtainable()
            try:
                await asyncio.wait_for(self._rechoke_event.wait(), timeout=0.25)
            except asyncio.TimeoutError:
                pass

    def _rechoke(self) -> None:
        now = self.loop.time()
        stats = [PeerStats(key=c, interested=c.peer_interested, download_rate=c.download.rate(now),
                           upload_rate=c.upload.rate(now), snubbed=c.snubbed)
                 for c in self.connections if c.established]
        unchoke = self.choker.decide(stats, now, seeding=self.is_seed)
        for conn in list(self.connections):
            conn.set_choking(conn not in unchoke)

    def _adapt_pipelines(self) -> None:
        """Keep about 0.2 s of data in flight per peer, or twice the round trip on a slower
        path, and at least 8 blocks. Under a rate cap a deeper queue at a seed only widens
        the window for two peers to fetch the same piece (compare N = 32: 1.40 of the bound
        with 0.5 s, 1.26-1.29 with 0.2 s); but a fixed 0.2 s would hold a 300 ms path to
        half a megabyte a second, since the rate it is sized by is what it allows."""
        now = self.loop.time()
        for conn in self.connections:
            if (conn.download.age(now) < 0.05 if conn.download.total
                    else now - conn.last_progress_at < 1.0):
                # too few blocks to measure, or none yet but asked for less than a second
                # ago: keep the starting depth (sized from a rate of zero, 8 blocks cost
                # 0.1 s of a 1 GiB transfer); a peer silent for longer gets the floor
                continue
            rate = max(conn.download.rate(now), conn.download.early_rate(now))
            seconds = 0.2 if conn.min_rtt == float("inf") else max(0.2, 2 * conn.min_rtt)
            conn.max_inflight = max(8, min(500, int(rate * seconds / wire.BLOCK_SIZE) + 4))


def _describe(source) -> str:
    if isinstance(source, PeerConnection) and source.address:
        return f"{source.address[0]}:{source.address[1]}"
    return str(source)

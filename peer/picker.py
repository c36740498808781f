"""Which blocks to ask which peer for: the download strategy, with no I/O at all.

API (peers are opaque hashable keys, e.g. connection objects; blocks are
``(index, begin, length)`` tuples):

    picker = PiecePicker(num_pieces, piece_length, total_length, block_size=16384,
                         random_first=4, rng=None, endgame_copies=2, shared=None)
                                        # shared: the process's OpenPieces bound, if any
    picker.mark_have(i)                 # piece i is verified on disk (start-up or after hashing)
    picker.have                          # bytearray, 1 per verified piece
    picker.is_complete(); picker.missing_count
    picker.add_peer(p, indices)          # register p (idempotent) and add pieces it has
    picker.peer_has(p, i)                # a Have message
    picker.remove_peer(p)                # p disconnected: forget it, free its requests
    picker.peer_is_seed(p) -> bool ; picker.interesting(p) -> bool   (p has a piece we lack)
    picker.peer_holds(p, i) -> bool      # p said it has piece i
    picker.pick(p, max_blocks) -> list[block]    # what to request from p now (marked in flight)
    picker.block_received(p, i, begin) -> list[peer]   # others to Cancel (endgame duplicates)
    picker.requests_dropped(p, blocks)   # choked / rejected / snubbed: those blocks are free again
    picker.peer_refused(p, i, now)       # p rejected i while unchoking us: ask it for i again
    picker.forget_refusals(now, age)     #   only once the refusal is `age` seconds old
    picker.peer_lost(p)                  # free every block in flight to p (keeps what it has)
    picker.piece_complete(i) -> bool     # every block of i has arrived: hash it now
    picker.mark_have(i)                  # the hash matched
    picker.piece_failed(i) -> set[peer]  # the hash failed: who sent blocks; i is fetched again,
                                         # this time from a single peer so the next failure
                                         # names the liar
    picker.close()                       # the torrent stops: its open pieces stop counting

Order of preference in `pick`: (1) blocks of pieces this peer is already fetching, so a
piece completes quickly and tends to come from one peer (which is what lets a bad piece
be pinned on its sender); (2) pieces nobody is fetching any more (their peer choked or
left); (3) a new piece: random while fewer than `random_first` pieces are verified (to
have something to trade soon), else rarest first with a random tie-break; (4) spare
blocks of pieces other peers are fetching. When too many pieces are open (their buffers
cost memory), (4) comes before (3); past the process's bound (OpenPieces), (3) only for a
torrent none of whose open pieces is being fetched (`held_back` then says a peer got less
than it could: ask again once `may_start()`). (5) Endgame: once every missing piece is started
and this peer has nothing unrequested left, it gets blocks already in flight to others,
each block asked from at most `endgame_copies` peers (2: one spare copy; a third cost
the seed about 0.1 file copies in rate-capped swarms, benchmarks/compare_bench.py);
`block_received` returns the others so their requests can be cancelled.

Blocks nobody asked for (a web seed's, a late duplicate) are still counted, and their
sender recorded as a contributor: its bytes may be the ones that end up in the piece.
A piece that failed once belongs to the first peer that picks it until that peer's
requests are dropped or it leaves; a new owner then refetches the whole piece.

Speed: `pick` runs on every received block. Unstarted pieces sit in buckets by
availability (O(1) moves on Have/bitfield/disconnect); the per-peer and per-piece
request maps are small. Only starting a new piece may scan a bucket.
"""

from __future__ import annotations

import random
import sys
from dataclasses import dataclass, field
from typing import Hashable, Iterable

Peer = Hashable
Block = tuple[int, int, int]

FREE, REQUESTED, RECEIVED = 0, 1, 2
OPEN_BYTES_BUDGET = 64 * 1024 * 1024  # above this much in partial pieces, join before starting
PROCESS_OPEN_BYTES = 256 * 1024 * 1024   # started pieces of all torrents of a process (OpenPieces)


@dataclass(slots=True)
class OpenPieces:
    """Bytes of started, not yet verified pieces across all torrents of one process.

    Each torrent's own budget (OPEN_BYTES_BUDGET) is soft: a peer that has none of the open
    pieces still gets a new one rather than sit idle. A daemon downloading many torrents
    would add those budgets up, so past `limit` a torrent starts a new piece only while none
    of its open pieces is being fetched (none open, or all left behind by peers that went
    away): its peers help with the open ones or wait, and no torrent stops for good while
    others' pieces hold the budget.
    """

    limit: int = PROCESS_OPEN_BYTES
    used: int = 0


@dataclass(slots=True)
class _Partial:
    """A started piece: the state of each block and who is fetching it."""

    state: bytearray                         # FREE / REQUESTED / RECEIVED per block
    free: int                                # blocks neither requested nor received
    received: int = 0
    requesters: dict[int, list] = field(default_factory=dict)  # block -> peers it is in flight to
    contributors: set = field(default_factory=set)
    single_source: bool = False              # after a hash failure: one peer for the whole piece
    owner: Peer | None = None                # that peer


class PiecePicker:
    def __init__(self, num_pieces: int, piece_length: int, total_length: int, *,
                 block_size: int = 16384, random_first: int = 4,
                 rng: random.Random | None = None, endgame_copies: int = 2,
                 shared: OpenPieces | None = None) -> None:
        self.num_pieces = num_pieces
        self.piece_length = piece_length
        self.total_length = total_length
        self.block_size = block_size
        self.random_first = random_first
        self.endgame_copies = endgame_copies
        self.rng = rng or random.Random()
        self.have = bytearray(num_pieces)
        self._have_count = 0
        self._avail = [0] * num_pieces
        # Unstarted missing pieces, bucketed by availability; _pos[i] is i's slot or -1.
        self._buckets: list[list[int]] = [list(range(num_pieces))]
        self._pos = list(range(num_pieces))
        self._partials: dict[int, _Partial] = {}
        self._with_free: dict[int, None] = {}      # partials that have FREE blocks (ordered set)
        self._single_source: set[int] = set()      # failed once: next attempt from one peer
        self._peers: dict[Peer, bytearray] = {}
        self._peer_count: dict[Peer, int] = {}     # pieces the peer has
        self._useful: dict[Peer, int] = {}         # pieces the peer has that we lack
        self._inflight: dict[Peer, dict[int, set[int]]] = {}  # peer -> piece -> block numbers
        self._refused: dict[Peer, dict[int, float]] = {}   # pieces a peer turned down, when
        self._max_open = max(4, OPEN_BYTES_BUDGET // max(1, piece_length))
        self._shared = shared or OpenPieces(limit=sys.maxsize)
        self._open_bytes = 0                        # this torrent's part of _shared.used
        self.held_back = False      # a pick got less because of the bound: ask again later

    # -- sizes ---------------------------------------------------------------------
    def piece_size(self, index: int) -> int:
        return min(self.piece_length, self.total_length - index * self.piece_length)

    def _num_blocks(self, index: int) -> int:
        return -(-self.piece_size(index) // self.block_size)

    def _block(self, index: int, n: int) -> Block:
        begin = n * self.block_size
        return (index, begin, min(self.block_size, self.piece_size(index) - begin))

    # -- what we have ----------------------------------------------------------------
    @property
    def missing_count(self) -> int:
        return self.num_pieces - self._have_count

    def is_complete(self) -> bool:
        return self._have_count == self.num_pieces

    def mark_have(self, index: int) -> None:
        if self.have[index]:
            return
        self.have[index] = 1
        self._have_count += 1
        self._single_source.discard(index)
        if self._pos[index] >= 0:
            self._unlist(index)
        if index in self._partials:
            self._drop_partial(index)
        for peer, bits in self._peers.items():
            if bits[index]:
                self._useful[peer] -= 1

    # -- availability --------------------------------------------------------------------
    def add_peer(self, peer: Peer, indices: Iterable[int] = ()) -> None:
        if peer not in self._peers:
            self._peers[peer] = bytearray(self.num_pieces)
            self._peer_count[peer] = 0
            self._useful[peer] = 0
            self._inflight[peer] = {}
            self._buckets.append([])  # availability can now reach len(peers)
        for index in indices:
            self.peer_has(peer, index)

    def peer_has(self, peer: Peer, index: int) -> None:
        bits = self._peers.get(peer)
        if bits is None:
            self.add_peer(peer)
            bits = self._peers[peer]
        if bits[index]:
            return
        bits[index] = 1
        self._peer_count[peer] += 1
        if not self.have[index]:
            self._useful[peer] += 1
        self._change_avail(index, +1)

    def remove_peer(self, peer: Peer) -> None:
        bits = self._peers.get(peer)
        if bits is None:
            return
        self.peer_lost(peer)
        for index in (i for i, b in enumerate(bits) if b):
            self._change_avail(index, -1)
        del self._peers[peer], self._peer_count[peer], self._useful[peer], self._inflight[peer]
        self._refused.pop(peer, None)
        self._buckets.pop()  # always empty: no piece can have more peers than are left

    def pieces_of(self, peer: Peer) -> int:
        return self._peer_count.get(peer, 0)

    def peer_is_seed(self, peer: Peer) -> bool:
        return self.pieces_of(peer) == self.num_pieces

    def peer_holds(self, peer: Peer, index: int) -> bool:
        bits = self._peers.get(peer)
        return bits is not None and bits[index] == 1

    def interesting(self, peer: Peer) -> bool:
        return self._useful.get(peer, 0) > 0

    def availability(self, index: int) -> int:
        return self._avail[index]

    # -- picking -------------------------------------------------------------------
    def pick(self, peer: Peer, max_blocks: int) -> list[Block]:
        bits = self._peers.get(peer)
        if bits is None or max_blocks <= 0 or not self._useful[peer]:
            return []
        refused = self._refused.get(peer)
        if refused:                      # as if the peer lacked them, for now
            bits = bytearray(bits)
            for index in refused:
                bits[index] = 0
        out: list[Block] = []
        mine = self._inflight[peer]
        for index in list(mine):                                       # (1)
            if len(out) >= max_blocks:
                return out
            if index in self._with_free and bits[index]:   # (not a piece it refused us)
                self._take(peer, index, max_blocks, out)
        for index in list(self._with_free):                            # (2)
            if len(out) >= max_blocks:
                return out
            p = self._partials[index]
            if bits[index] and not p.requesters:
                self._take(peer, index, max_blocks, out)
        crowded = len(self._partials) >= self._max_open or not self.may_start()
        if crowded:
            self._join_others(peer, bits, max_blocks, out)            # (4) before (3)
        while len(out) < max_blocks:                                   # (3)
            if not self.may_start():
                self.held_back = True
                break
            index = self._choose_new(bits)
            if index is None:
                break
            self._start(index)
            self._take(peer, index, max_blocks, out)
        if not crowded:
            self._join_others(peer, bits, max_blocks, out)            # (4)
        if len(out) < max_blocks and not self._unstarted_available():
            self._endgame(peer, bits, max_blocks, out)                # (5)
        return out

    def may_start(self) -> bool:
        """Whether a new piece may start under the process-wide bound (OpenPieces)."""
        if self._shared.used < self._shared.limit:
            return True
        return not any(p.requesters for p in self._partials.values())

    def close(self) -> None:
        """The torrent stops or failed: its open pieces no longer count against the process's bound."""
        self._shared.used -= self._open_bytes
        self._open_bytes = 0
        self._shared = OpenPieces(limit=sys.maxsize)   # anything later counts here only

    def _join_others(self, peer: Peer, bits: bytearray, max_blocks: int, out: list) -> None:
        for index in list(self._with_free):
            if len(out) >= max_blocks:
                return
            if bits[index]:
                self._take(peer, index, max_blocks, out)

    def _take(self, peer: Peer, index: int, max_blocks: int, out: list) -> None:
        """Request FREE blocks of a started piece from `peer`, lowest first."""
        p = self._partials[index]
        if p.single_source and p.owner != peer:
            if p.owner is not None:
                return  # someone else's, until its requests are dropped
            self._restart(index, p, peer)
        state = p.state
        n = state.find(FREE)
        if n < 0 or len(out) >= max_blocks:
            return
        # (per block: this and block_received run 65,536 times per GiB, so the piece's size
        # and the peer's set are looked up once per piece, not per block)
        size, bs = self.piece_size(index), self.block_size
        mine = self._inflight[peer].setdefault(index, set())
        requesters = p.requesters
        while n >= 0 and len(out) < max_blocks:
            state[n] = REQUESTED
            p.free -= 1
            requesters.setdefault(n, []).append(peer)
            mine.add(n)
            begin = n * bs
            out.append((index, begin, bs if begin + bs <= size else size - begin))
            n = state.find(FREE, n + 1)
        if not p.free:
            self._with_free.pop(index, None)

    def _restart(self, index: int, p: _Partial, owner: Peer) -> None:
        """Hand a single-source piece to a new owner; what others sent is fetched again."""
        p.owner = owner
        if p.contributors <= {owner}:
            return
        for n in range(len(p.state)):
            if p.state[n] == RECEIVED:
                p.state[n] = FREE
                p.free += 1
        p.received = 0
        p.contributors.clear()
        if p.free:
            self._with_free[index] = None

    def _choose_new(self, bits: bytearray) -> int | None:
        """An unstarted piece the peer has: random early on, then rarest first."""
        rng = self.rng
        if self._have_count < self.random_first:
            # Any piece the peer has will do; scan from a random place.
            start = rng.randrange(self.num_pieces) if self.num_pieces else 0
            pos = self._pos
            for i in range(self.num_pieces):
                index = (start + i) % self.num_pieces
                if bits[index] and pos[index] >= 0:
                    return index
            return None
        for bucket in self._buckets[1:]:
            size = len(bucket)
            if not size:
                continue
            start = rng.randrange(size)
            for i in range(size):
                index = bucket[(start + i) % size]
                if bits[index]:
                    return index
        return None

    def _unstarted_available(self) -> bool:
        return any(self._buckets[1:])

    def _endgame(self, peer: Peer, bits: bytearray, max_blocks: int, out: list) -> None:
        """Ask for blocks already in flight elsewhere, least-duplicated first."""
        mine = self._inflight[peer]
        for copies in range(1, self.endgame_copies):
            for index, p in self._partials.items():
                if not bits[index] or (p.single_source and p.owner != peer):
                    continue
                asked = mine.get(index, ())
                for n, peers in list(p.requesters.items()):
                    if len(out) >= max_blocks:
                        return
                    if len(peers) == copies and n not in asked:   # (REQUESTED: in flight)
                        peers.append(peer)
                        mine.setdefault(index, set()).add(n)
                        out.append(self._block(index, n))

    # -- blocks coming back --------------------------------------------------------------
    def block_received(self, peer: Peer, index: int, begin: int) -> list[Peer]:
        """Record a block; returns the other peers it is still in flight to (send Cancel)."""
        if self.have[index] or begin % self.block_size:
            return []
        n = begin // self.block_size
        p = self._partials.get(index)
        if p is None:
            if self._pos[index] < 0 or n >= self._num_blocks(index):
                return []
            p = self._start(index)  # unrequested, e.g. from a web seed: still useful
        if n >= len(p.state):
            return []
        p.contributors.add(peer)  # even a duplicate: its bytes may be the ones kept
        asked = p.requesters.pop(n, ())
        self._forget_request(peer, index, n)
        if len(asked) == 1 and asked[0] == peer:    # (the usual case, kept quick)
            others = []
        else:
            others = [q for q in asked if q != peer]
            for q in others:
                self._forget_request(q, index, n)
        if p.state[n] != RECEIVED:
            if p.state[n] == FREE:
                p.free -= 1
                if not p.free:
                    self._with_free.pop(index, None)
            p.state[n] = RECEIVED
            p.received += 1
        return others

    def piece_complete(self, index: int) -> bool:
        p = self._partials.get(index)
        return p is not None and p.received == len(p.state)

    def piece_failed(self, index: int) -> set[Peer]:
        """The piece did not hash: forget its blocks, return who sent them."""
        p = self._partials.get(index)
        if p is None:
            return set()
        contributors = set(p.contributors)
        self._drop_partial(index)
        self._single_source.add(index)
        self._list(index)
        return contributors

    def requests_dropped(self, peer: Peer, blocks: Iterable[tuple]) -> None:
        """These requests to `peer` will not be answered: the blocks are free again."""
        for block in blocks:
            index, begin = block[0], block[1]
            if begin % self.block_size == 0:
                self._unrequest(peer, index, begin // self.block_size)

    def peer_choked(self, peer: Peer) -> None:
        """A piece only `peer` may fetch (single source, after a hash failure) is let go if it
        chokes us with none of that piece's blocks asked: else the piece would wait for its
        unchoke. (Asked blocks come back rejected or dropped, which lets it go already.)"""
        mine = self._inflight.get(peer, {})
        for index in self._single_source:
            p = self._partials.get(index)
            if p is not None and p.owner == peer and index not in mine:
                p.owner = None

    def peer_refused(self, peer: Peer, index: int, now: float) -> None:
        if peer in self._peers:
            self._refused.setdefault(peer, {})[index] = now

    def forget_refusals(self, now: float, age: float) -> bool:
        """Ask again for pieces refused `age` seconds ago or more; True if any (time to pick).

        By age, not all at once: a seed tells a peer that asks again right away (which
        ignores the hint) from one that asked elsewhere first (peer.first_copy)."""
        forgot = False
        for peer, pieces in list(self._refused.items()):
            old = [index for index, when in pieces.items() if now - when >= age]
            for index in old:
                del pieces[index]
            if not pieces:
                del self._refused[peer]
            forgot = forgot or bool(old)
        return forgot

    def peer_lost(self, peer: Peer) -> None:
        """Every request in flight to `peer` is void (choked without BEP 6, or gone)."""
        for index, blocks in list(self._inflight.get(peer, {}).items()):
            for n in list(blocks):
                self._unrequest(peer, index, n)
        for p in self._partials.values():
            if p.owner == peer:
                p.owner = None

    # -- internals ---------------------------------------------------------------------
    def _unrequest(self, peer: Peer, index: int, n: int) -> None:
        p = self._partials.get(index)
        if p is None or not self._forget_request(peer, index, n):
            return
        if p.owner == peer:
            p.owner = None  # it stopped: the next peer may take the whole piece over
        peers = p.requesters.get(n)
        if peers is not None and peer in peers:
            peers.remove(peer)
            if not peers:
                del p.requesters[n]
                if p.state[n] == REQUESTED:
                    p.state[n] = FREE
                    p.free += 1
                    self._with_free[index] = None
        if not p.requesters and not p.received and not p.single_source:
            # Nothing of it arrived: unstart it, so it is chosen again by rarity, not taken
            # as an abandoned piece from whoever unchokes us next (often a seed, which may
            # meanwhile have sent it to another peer).
            self._drop_partial(index)
            self._list(index)

    def _forget_request(self, peer: Peer, index: int, n: int) -> bool:
        pieces = self._inflight.get(peer)
        blocks = pieces.get(index) if pieces else None
        if not blocks or n not in blocks:
            return False
        blocks.discard(n)
        if not blocks:
            del pieces[index]
        return True

    def _start(self, index: int) -> _Partial:
        self._unlist(index)
        nb = self._num_blocks(index)
        p = _Partial(state=bytearray(nb), free=nb, single_source=index in self._single_source)
        self._partials[index] = p
        size = self.piece_size(index)
        self._open_bytes += size
        self._shared.used += size
        if nb:
            self._with_free[index] = None
        return p

    def _drop_partial(self, index: int) -> None:
        p = self._partials.pop(index)
        size = self.piece_size(index)
        self._open_bytes -= size
        self._shared.used -= size
        self._with_free.pop(index, None)
        for n, peers in p.requesters.items():
            for q in peers:
                self._forget_request(q, index, n)

    def _list(self, index: int) -> None:
        bucket = self._buckets[self._avail[index]]
        self._pos[index] = len(bucket)
        bucket.append(index)

    def _unlist(self, index: int) -> None:
        bucket = self._buckets[self._avail[index]]
        slot = self._pos[index]
        last = bucket.pop()
        if last != index:
            bucket[slot] = last
            self._pos[last] = slot
        self._pos[index] = -1

    def _change_avail(self, index: int, delta: int) -> None:
        listed = self._pos[index] >= 0
        if listed:
            self._unlist(index)
        self._avail[index] += delta
        if listed:
            self._list(index)

"""The tracker's memory: which peers are in which swarm. Pure: no sockets, time is `now`.

Both front ends (HTTP and UDP) feed the same `SwarmRegistry`, so a client that
announces over either is the same peer. A peer is keyed by its address (ip,
port) within a torrent: the address is what other peers connect to, and a
client that restarts with a fresh peer id at the same address replaces its
old entry instead of being listed twice. The IP is always the request's
source address (an `ip` parameter would let anyone list a victim's address).

Memory is bounded: at most `max_torrents` swarms and `max_peers_per_torrent`
peers in each. Swarms whose last peer leaves or expires are forgotten.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from itertools import islice

from common.tracker_proto import (
    AnnounceRequest, AnnounceResponse, PeerAddr, ScrapeStats, compact_peer,
)

__all__ = ["CompactAnswer", "RegistryError", "SwarmRegistry", "plain_ip"]


class RegistryError(Exception):
    """The tracker refuses this announce; the message is sent back as the `failure reason`."""


@dataclass(slots=True)
class _Peer:
    key: tuple[str, int]   # (ip, port)
    addr: PeerAddr         # ip, port, peer id: ready to hand out
    compact: bytes         # 6 (IPv4) or 18 (IPv6) bytes, packed once instead of per announce
    uploaded: int
    downloaded: int
    left: int
    last_seen: float
    counted_complete: bool = False   # already added to the swarm's `downloaded` count


class _PeerList:
    """Peers in a list kept in uniformly random order, plus a key -> position index.

    A new peer goes to a random position (the one there moves to the end: an inside-out
    Fisher-Yates step) and a removed one is replaced by the last, which keeps the order a
    uniformly random permutation. So any run of consecutive entries is a random sample,
    and picking peers costs one random number and a slice instead of n random draws.
    `compact` mirrors `items` with each peer's packed address, so that the answer to a
    compact announce is a slice and a join, with no per-peer Python code.
    """

    __slots__ = ("items", "compact", "where")

    def __init__(self) -> None:
        self.items: list[_Peer] = []
        self.compact: list[bytes] = []        # compact[i] == items[i].compact
        self.where: dict[tuple[str, int], int] = {}

    def __len__(self) -> int:
        return len(self.items)

    def get(self, key: tuple[str, int]) -> _Peer | None:
        i = self.where.get(key)
        return None if i is None else self.items[i]

    def add(self, peer: _Peer, rng: random.Random) -> None:
        items, compact = self.items, self.compact
        i = rng.randrange(len(items) + 1)
        if i < len(items):                    # the peer at i moves to the end
            displaced = items[i]
            self.where[displaced.key] = len(items)
            items.append(displaced)
            compact.append(compact[i])
            items[i] = peer
            compact[i] = peer.compact
        else:
            items.append(peer)
            compact.append(peer.compact)
        self.where[peer.key] = i

    def remove(self, key: tuple[str, int]) -> _Peer | None:
        i = self.where.pop(key, None)
        if i is None:
            return None
        peer = self.items[i]
        last = self.items.pop()
        last_compact = self.compact.pop()
        if last is not peer:          # move the last peer into the hole
            self.items[i] = last
            self.compact[i] = last_compact
            self.where[last.key] = i
        return peer


@dataclass(slots=True)
class _Swarm:
    # Seeders and leechers are kept apart so that seeders can be given leechers cheaply.
    seeders: _PeerList = field(default_factory=_PeerList)
    leechers: _PeerList = field(default_factory=_PeerList)
    downloaded: int = 0    # completed downloads seen (the scrape `downloaded` field)

    def __len__(self) -> int:
        return len(self.seeders) + len(self.leechers)


@dataclass(slots=True)
class CompactAnswer:
    """An announce answer with the peers already packed (BEP 23/7): the servers' fast path."""

    response: AnnounceResponse   # interval, counts, warning; `peers` is left empty
    peers4: bytes                # 6 bytes per IPv4 peer
    peers6: bytes                # 18 bytes per IPv6 peer


def plain_ip(ip: str) -> str:
    """'::ffff:1.2.3.4' (an IPv4 client on a dual-stack socket) -> '1.2.3.4'."""
    if ip.startswith("::ffff:") and "." in ip:
        return ip[7:]
    return ip


class SwarmRegistry:
    def __init__(self, *, interval: int = 1800, min_interval: int | None = None,
                 default_numwant: int = 50, max_numwant: int = 50,
                 max_torrents: int = 10_000, max_peers_per_torrent: int = 1000,
                 max_scrape_all: int = 1000, rng: random.Random | None = None) -> None:
        self.interval = interval
        self.min_interval = min_interval
        self.default_numwant = default_numwant
        self.max_numwant = max_numwant
        self.max_torrents = max_torrents
        self.max_peers_per_torrent = max_peers_per_torrent
        self.max_scrape_all = max_scrape_all
        self.peer_timeout = interval * 2   # a missed announce or two, then the peer is gone
        self._rng = rng or random.Random()
        self._swarms: dict[bytes, _Swarm] = {}

    # -- announce ---------------------------------------------------------------------------
    def announce(self, req: AnnounceRequest, ip: str, now: float) -> AnnounceResponse:
        """Record the peer's state and answer with a random sample of the other peers."""
        resp, chosen = self._announce(req, ip, now, packed=False)
        resp.peers = [p.addr for p in chosen]
        return resp

    def announce_compact(self, req: AnnounceRequest, ip: str, now: float) -> CompactAnswer:
        """`announce`, with the peers as ready-made compact bytes."""
        resp, chosen = self._announce(req, ip, now, packed=True)
        packed = b"".join(chosen)
        if len(packed) == 6 * len(chosen):      # all IPv4, the usual case
            return CompactAnswer(resp, packed, b"")
        return CompactAnswer(resp, b"".join([c for c in chosen if len(c) == 6]),
                             b"".join([c for c in chosen if len(c) == 18]))

    def _announce(self, req: AnnounceRequest, ip: str, now: float,
                  packed: bool) -> tuple[AnnounceResponse, list]:
        ip = plain_ip(ip)
        key = (ip, req.port)
        swarm = self._swarms.get(req.info_hash)
        warning = None

        if req.event == "stopped":
            if swarm is None:
                return AnnounceResponse(interval=self.interval, min_interval=self.min_interval), []
            self._remove(swarm, key)
            if not swarm:
                del self._swarms[req.info_hash]
            return self._response(swarm, None), []

        peer = None
        if swarm is not None:
            peer = swarm.seeders.get(key) or swarm.leechers.get(key)
            if peer is not None and peer.addr.peer_id != req.peer_id:
                self._remove(swarm, key)  # a new client at the same address replaces the old one
                peer = None
        if peer is None:
            compact = compact_peer(ip, req.port)   # checks the address before anything changes
            if swarm is None:
                if len(self._swarms) >= self.max_torrents:
                    raise RegistryError(
                        f"tracker is full: it already tracks {self.max_torrents} torrents")
                swarm = self._swarms[req.info_hash] = _Swarm()
            if len(swarm) < self.max_peers_per_torrent:
                peer = _Peer(key, PeerAddr(ip, req.port, req.peer_id), compact, req.uploaded,
                             req.downloaded, req.left, now)
                (swarm.seeders if req.left == 0 else swarm.leechers).add(peer, self._rng)
            else:
                warning = "swarm is full: you get peers but are not listed"
        else:
            was_seeder = peer.left == 0
            peer.uploaded, peer.downloaded, peer.left = req.uploaded, req.downloaded, req.left
            peer.last_seen = now
            if was_seeder != (req.left == 0):
                (swarm.seeders if was_seeder else swarm.leechers).remove(key)
                (swarm.leechers if was_seeder else swarm.seeders).add(peer, self._rng)
        if peer is not None and req.event == "completed" and not peer.counted_complete:
            peer.counted_complete = True
            swarm.downloaded += 1

        numwant = self.default_numwant if req.numwant is None else req.numwant
        chosen = self._pick(swarm, key, min(numwant, self.max_numwant), req.left == 0, packed)
        return self._response(swarm, warning), chosen

    def _response(self, swarm: _Swarm, warning: str | None) -> AnnounceResponse:
        return AnnounceResponse(self.interval, [], len(swarm.seeders), len(swarm.leechers),
                                self.min_interval, warning)

    def _pick(self, swarm: _Swarm, me: tuple[str, int], n: int, seeding: bool,
              packed: bool) -> list:
        """Up to n random peers other than the asker; a seeder gets leechers first.

        The peers come as `_Peer`s, or as their compact bytes if `packed`: both columns of a
        `_PeerList` are in the same order, so the sampling is the same.
        """
        if n <= 0:
            return []
        seeders, leechers = swarm.seeders, swarm.leechers
        if packed:
            from_seeders, from_leechers = seeders.compact, leechers.compact
        else:
            from_seeders, from_leechers = seeders.items, leechers.items
        if seeding:
            picked = self._sample(from_leechers, (), None, n)
            if len(picked) < n:
                picked += self._sample(from_seeders, (), seeders.where.get(me), n - len(picked))
            return picked
        mine = leechers.where.get(me)     # None: the asker is not listed (a full swarm)
        return self._sample(from_seeders, from_leechers,
                            None if mine is None else len(from_seeders) + mine, n)

    def _sample(self, first: list, second: list | tuple, mine: int | None, n: int) -> list:
        """n random entries of first + second, leaving out position `mine` (the asker's).

        Both lists are in random order, so consecutive positions from a random start,
        wrapping around, are a random sample: a few slices, whatever n is. One extra is
        taken when the asker is listed, and the asker (or else the extra) dropped.
        """
        total = len(first) + len(second)
        wanted = n if mine is None else n + 1
        if total <= wanted:          # small swarm: everyone but me
            everyone = [*first, *second]
            if mine is not None:
                del everyone[mine]
            return everyone
        start = pos = self._rng.randrange(total)
        chosen: list = []
        missing = wanted
        while missing > 0:
            if pos < len(first):
                piece = first[pos:pos + missing]
            else:
                piece = second[pos - len(first):pos - len(first) + missing]
            chosen += piece
            missing -= len(piece)
            pos = (pos + len(piece)) % total
        if mine is not None:
            offset = (mine - start) % total
            del chosen[offset if offset < wanted else -1]
        return chosen

    @staticmethod
    def _remove(swarm: _Swarm, key: tuple[str, int]) -> None:
        if swarm.seeders.remove(key) is None:
            swarm.leechers.remove(key)

    # -- housekeeping -----------------------------------------------------------------------
    def expire(self, now: float) -> int:
        """Drop peers not seen for `peer_timeout` seconds, and swarms left empty; returns peers dropped."""
        cutoff = now - self.peer_timeout
        dropped = 0
        for info_hash in list(self._swarms):
            swarm = self._swarms[info_hash]
            for peers in (swarm.seeders, swarm.leechers):
                stale = [p.key for p in peers.items if p.last_seen < cutoff]
                for key in stale:
                    peers.remove(key)
                dropped += len(stale)
            if not swarm:
                del self._swarms[info_hash]
        return dropped

    # -- scrape and statistics --------------------------------------------------------------
    def scrape(self, info_hashes: list[bytes]) -> dict[bytes, ScrapeStats]:
        """Stats for the given torrents (unknown ones as zeros); empty list = all, up to max_scrape_all."""
        if not info_hashes:
            info_hashes = list(islice(self._swarms, self.max_scrape_all))
        out = {}
        for info_hash in info_hashes:
            swarm = self._swarms.get(info_hash)
            out[info_hash] = (ScrapeStats(complete=len(swarm.seeders), downloaded=swarm.downloaded,
                                          incomplete=len(swarm.leechers))
                              if swarm is not None else ScrapeStats(0, 0, 0))
        return out

    @property
    def torrent_count(self) -> int:
        return len(self._swarms)

    @property
    def peer_count(self) -> int:
        return sum(len(s) for s in self._swarms.values())

    def peers_of(self, info_hash: bytes) -> list[PeerAddr]:
        """Every peer of a torrent (for tests and diagnostics)."""
        swarm = self._swarms.get(info_hash)
        if swarm is None:
            return []
        return [p.addr for p in (*swarm.seeders.items, *swarm.leechers.items)]

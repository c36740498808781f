"""The tracker's memory: which peers are in which swarm. Pure: no sockets, time is `now`.

Both front ends (HTTP and UDP) feed the same `SwarmRegistry`, so a client that
announces over either is the same peer. A peer is keyed by its address (ip,
port) within a torrent: the address is what other peers connect to, and a
client that restarts with a fresh peer id at the same address replaces its
old entry instead of being listed twice. The IP is always the request's
source address (an `ip` parameter would let anyone list a victim's address).

Memory is bounded: at most `max_torrents` swarms and `max_peers_per_torrent`
peers in each. Swarms whose last peer leaves or expires are forgotten.

Speed: a compact or UDP announce touches a handful of objects, not one per listed peer
(the dictionary form, `compact=0`, rare, builds a pair per peer of the family). Each
swarm keeps its peers in columns (addresses, peer ids, last-seen times, and the
compact addresses back to back in one bytearray), in random order, so that a
random sample of 50 peers is a slice or two of that bytearray.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from itertools import islice

from common.tracker_proto import (
    AnnounceRequest, AnnounceResponse, PeerAddr, ScrapeStats, compact_peer,
)

__all__ = ["CompactAnswer", "RegistryError", "SwarmRegistry"]


class RegistryError(Exception):
    """The tracker refuses this announce; the message is sent back as the `failure reason`."""


class _PeerList:
    """The peers of one role (seeders or leechers) and one address family, in columns.

    The order is a uniformly random permutation: a new peer goes to a random position (the
    one there moves to the end, an inside-out Fisher-Yates step) and a removed one is
    replaced by the last. So any run of consecutive entries is a random sample. `packed`
    holds each peer's compact address (`stride` bytes: 6 for IPv4, 18 for IPv6) in the same
    order, so the answer to a compact announce is a slice of it.
    """

    __slots__ = ("stride", "keys", "peer_ids", "last_seen", "packed", "where")

    def __init__(self, stride: int) -> None:
        self.stride = stride
        self.keys: list[tuple[str, int]] = []   # (ip, port)
        self.peer_ids: list[bytes] = []
        self.last_seen: list[float] = []
        self.packed = bytearray()
        self.where: dict[tuple[str, int], int] = {}

    def __len__(self) -> int:
        return len(self.keys)

    def add(self, key: tuple[str, int], peer_id: bytes, compact: bytes, now: float,
            rng: random.Random) -> None:
        keys, ids, seen, packed, stride = self.keys, self.peer_ids, self.last_seen, self.packed, self.stride
        n = len(keys)
        i = int(rng.random() * (n + 1))     # randrange is 10x slower, and this is hot
        if i < n:                             # the peer at i moves to the end
            self.where[keys[i]] = n
            keys.append(keys[i])
            ids.append(ids[i])
            seen.append(seen[i])
            packed += packed[i * stride:(i + 1) * stride]
            keys[i], ids[i], seen[i] = key, peer_id, now
            packed[i * stride:(i + 1) * stride] = compact
        else:
            keys.append(key)
            ids.append(peer_id)
            seen.append(now)
            packed += compact
        self.where[key] = i

    def remove(self, key: tuple[str, int]) -> bool:
        i = self.where.pop(key, None)
        if i is None:
            return False
        keys, ids, seen, packed, stride = self.keys, self.peer_ids, self.last_seen, self.packed, self.stride
        last = len(keys) - 1
        if i != last:                         # move the last peer into the hole
            keys[i], ids[i], seen[i] = keys[last], ids[last], seen[last]
            packed[i * stride:(i + 1) * stride] = packed[last * stride:]
            self.where[keys[i]] = i
        keys.pop()
        ids.pop()
        seen.pop()
        del packed[last * stride:]
        return True

    def pairs(self) -> list[tuple[tuple[str, int], bytes]]:
        """(address, peer id) of each peer, in order."""
        return list(zip(self.keys, self.peer_ids))


@dataclass(slots=True)
class _Swarm:
    # Seeders and leechers apart (a seeder is given leechers first), and IPv4 apart from
    # IPv6 (each family has its own compact form).
    seeders4: _PeerList = field(default_factory=lambda: _PeerList(6))
    leechers4: _PeerList = field(default_factory=lambda: _PeerList(6))
    seeders6: _PeerList = field(default_factory=lambda: _PeerList(18))
    leechers6: _PeerList = field(default_factory=lambda: _PeerList(18))
    completed: set = field(default_factory=set)   # peers already counted in `downloaded`
    downloaded: int = 0    # completed downloads seen (the scrape `downloaded` field)

    def __len__(self) -> int:
        return self.seeders + self.leechers

    @property
    def seeders(self) -> int:
        return len(self.seeders4.keys) + len(self.seeders6.keys)

    @property
    def leechers(self) -> int:
        return len(self.leechers4.keys) + len(self.leechers6.keys)

    def lists(self, v6: bool) -> tuple[_PeerList, _PeerList]:
        return (self.seeders6, self.leechers6) if v6 else (self.seeders4, self.leechers4)


@dataclass(slots=True)
class CompactAnswer:
    """An announce answer with the peers already packed (BEP 23/7): the servers' fast path."""

    response: AnnounceResponse   # interval, counts, warning; `peers` is left empty
    peers4: bytes                # 6 bytes per IPv4 peer
    peers6: bytes                # 18 bytes per IPv6 peer


def _plain_ip(ip: str) -> str:
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
        resp, pairs4, pairs6 = self._announce_both(req, ip, now, packed=False)
        resp.peers = [PeerAddr(host, port, peer_id) for (host, port), peer_id in (*pairs4, *pairs6)]
        return resp

    def announce_compact(self, req: AnnounceRequest, ip: str, now: float) -> CompactAnswer:
        """`announce`, with the peers as ready-made compact bytes of both families."""
        resp, peers4, peers6 = self._announce_both(req, ip, now, packed=True)
        return CompactAnswer(resp, bytes(peers4), bytes(peers6))   # (a record: no bytearray)

    def announce_same_family(self, info_hash: bytes, peer_id: bytes, ip: str, port: int,
                             left: int, event: str, numwant: int | None,
                             now: float) -> tuple[int, int, bytes | bytearray]:
        """The UDP answer (BEP 15): (seeders, leechers, packed peers of the asker's family).

        Plain arguments, no request or response record: this is the tracker's hottest path."""
        swarm, key, v6, _ = self._record(info_hash, peer_id, ip, port, left, event, now)
        if swarm is None:
            return 0, 0, b""
        if event == "stopped":
            return swarm.seeders, swarm.leechers, b""
        peers = self._sample(swarm.lists(v6), key, self._numwant(numwant), left == 0, True)
        return swarm.seeders, swarm.leechers, peers

    def _announce_both(self, req: AnnounceRequest, ip: str, now: float, packed: bool) -> tuple:
        """HTTP (BEP 7): (response, IPv4 peers, IPv6 peers), numwant shared between the two
        families by their sizes; the peers as `_sample` gives them."""
        swarm, key, v6, listed = self._record(req.info_hash, req.peer_id, ip, req.port, req.left,
                                              req.event, now)
        nothing = b"" if packed else []
        if swarm is None:
            return AnnounceResponse(self.interval, [], 0, 0, self.min_interval), nothing, nothing
        warning = None if listed or req.event == "stopped" else \
            "swarm is full: you get peers but are not listed"
        resp = self._response(swarm, warning)
        if req.event == "stopped":
            return resp, nothing, nothing
        n = self._numwant(req.numwant)
        mine, other = swarm.lists(v6), swarm.lists(not v6)
        size_mine = len(mine[0]) + len(mine[1]) - listed
        size_other = len(other[0]) + len(other[1])
        n_other = n if size_mine + size_other <= n else round(n * size_other / (size_mine + size_other))
        n -= min(n_other, size_other)
        seeding = req.left == 0
        got_other = self._sample(other, None, n_other, seeding, packed)
        got_mine = self._sample(mine, key, n, seeding, packed)
        return (resp, got_other, got_mine) if v6 else (resp, got_mine, got_other)

    def _numwant(self, numwant: int | None) -> int:
        return min(self.default_numwant if numwant is None else numwant, self.max_numwant)

    def _record(self, info_hash: bytes, peer_id: bytes, ip: str, port: int, left: int, event: str,
                now: float) -> tuple[_Swarm | None, tuple[str, int], bool, bool]:
        """Update the swarm for this announce: (the swarm, or None if it is gone; the asker's
        key; whether it is IPv6; whether it is listed). A full swarm still answers, but does
        not list a newcomer."""
        if ip.startswith("::ffff:"):      # (inline: this runs per announce)
            ip = _plain_ip(ip)
        key = (ip, port)
        v6 = ":" in ip
        swarm = self._swarms.get(info_hash)
        if event == "stopped":
            if swarm is not None:
                self._remove(swarm, key, v6)
                if not swarm:
                    del self._swarms[info_hash]
            return swarm, key, v6, False

        seeding = left == 0
        listed = None       # the list the asker is in, if any
        if swarm is not None:
            seeders, leechers = swarm.lists(v6)
            i = seeders.where.get(key)
            listed = seeders if i is not None else None
            if i is None:
                i = leechers.where.get(key)
                listed = leechers if i is not None else None
            if listed is not None:
                if listed.peer_ids[i] != peer_id:
                    # a new client at the same address replaces the old one
                    self._remove(swarm, key, v6)
                    listed = None
                elif (listed is seeders) != seeding:      # seeder <-> leecher
                    listed.remove(key)
                    listed = seeders if seeding else leechers
                    listed.add(key, peer_id, compact_peer(ip, port), now, self._rng)
                else:
                    listed.last_seen[i] = now
        if listed is None:
            compact = compact_peer(ip, port)   # checks the address before anything changes
            if swarm is None:
                if len(self._swarms) >= self.max_torrents:
                    raise RegistryError(
                        f"tracker is full: it already tracks {self.max_torrents} torrents")
                swarm = self._swarms[info_hash] = _Swarm()
            if len(swarm) < self.max_peers_per_torrent:
                seeders, leechers = swarm.lists(v6)
                listed = seeders if seeding else leechers
                listed.add(key, peer_id, compact, now, self._rng)
        if listed is not None and event == "completed" and key not in swarm.completed:
            swarm.completed.add(key)
            swarm.downloaded += 1
        return swarm, key, v6, listed is not None

    def _response(self, swarm: _Swarm, warning: str | None) -> AnnounceResponse:
        return AnnounceResponse(self.interval, [], swarm.seeders, swarm.leechers,
                                self.min_interval, warning)

    def _sample(self, lists: tuple[_PeerList, _PeerList], me: tuple[str, int] | None, n: int,
                seeding: bool, packed: bool) -> bytearray | list:
        """Up to n random peers of one family other than the asker (`me`), as compact bytes
        (`packed`) or as (address, peer id) pairs; a seeder gets leechers first.

        Both lists are in random order, so consecutive entries of seeders + leechers from a
        random start, wrapping around, are a random sample: one or two slices of a copy of
        the swarm's column, whatever the swarm's size. The copy (6 bytes a peer, 1000 peers
        at most) costs less than working out which runs of the two lists to join: a UDP
        announce in swarms of about 190 peers took 32,300 instructions against 41,300 that
        way (callgrind), and in swarms of about 40 (everyone is the answer) 30,400, as with
        the special case this replaced."""
        if n <= 0:
            return b"" if packed else []
        seeders, leechers = lists
        if packed:          # (no method calls: this is the UDP path)
            unit, of_seeders, of_leechers = seeders.stride, seeders.packed, leechers.packed
        else:
            unit, of_seeders, of_leechers = 1, seeders.pairs(), leechers.pairs()
        if seeding:
            if len(leechers.keys) > n:                  # (fewer than all: slices, new objects)
                return _window(of_leechers, unit, n, self._rng)
            first = of_leechers                 # all of them, then seeders
            pool = of_seeders[:]                # (a copy: ours to cut)
            mine = seeders.where.get(me)
            n -= len(leechers.keys)
        else:
            first = None
            pool = of_seeders + of_leechers
            mine = leechers.where.get(me)     # None: the asker is not listed (a full swarm)
            if mine is not None:
                mine += len(seeders.keys)
        if mine is not None:
            del pool[mine * unit:(mine + 1) * unit]
        got = _window(pool, unit, n, self._rng)
        return got if first is None else first + got

    @staticmethod
    def _remove(swarm: _Swarm, key: tuple[str, int], v6: bool) -> None:
        seeders, leechers = swarm.lists(v6)
        if seeders.remove(key) or leechers.remove(key):
            swarm.completed.discard(key)

    # -- housekeeping -----------------------------------------------------------------------
    def expire(self, now: float) -> int:
        """Drop peers not seen for `peer_timeout` seconds, and swarms left empty; returns peers dropped."""
        cutoff = now - self.peer_timeout
        dropped = 0
        for info_hash in list(self._swarms):
            swarm = self._swarms[info_hash]
            for peers in (swarm.seeders4, swarm.leechers4, swarm.seeders6, swarm.leechers6):
                stale = [key for key, seen in zip(peers.keys, peers.last_seen) if seen < cutoff]
                for key in stale:
                    peers.remove(key)
                    swarm.completed.discard(key)
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
            out[info_hash] = (ScrapeStats(complete=swarm.seeders, downloaded=swarm.downloaded,
                                          incomplete=swarm.leechers)
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
        return [PeerAddr(host, port, peer_id)
                for peers in (swarm.seeders4, swarm.leechers4, swarm.seeders6, swarm.leechers6)
                for (host, port), peer_id in peers.pairs()]


def _window(pool: bytearray | list, unit: int, n: int, rng: random.Random) -> bytearray | list:
    """n entries of `unit` items each, consecutive from a random start and wrapping around,
    or all of them if there are no more than n: then `pool` itself, so a caller passes a
    column of the swarm only with n below its size (a small swarm's answer is not copied
    twice)."""
    total = len(pool) // unit
    if n >= total:
        return pool
    start = int(rng.random() * total)     # randrange is 10x slower, and this is hot
    stop = start + n
    if stop <= total:
        return pool[start * unit:stop * unit]
    return pool[start * unit:] + pool[:(stop - total) * unit]

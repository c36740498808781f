"""The tracker's memory: which peers are in which swarm. Pure: no sockets, time is `now`.

Both front ends (HTTP and UDP) feed the same `SwarmRegistry`, so a client that
announces over either is the same peer. A peer is keyed by its address (ip,
port) within a torrent: the address is what other peers connect to, and a
client that restarts with a fresh peer id at the same address replaces its
old entry instead of being listed twice. The IP is always the request's
source address (an `ip` parameter would let anyone list a victim's address).

Memory is bounded: at most `max_torrents` swarms and `max_peers_per_torrent`
peers in each. Swarms whose last peer leaves or expires are forgotten.

Speed: an announce touches a handful of objects, not one per listed peer. Each
swarm keeps its peers in columns (addresses, peer ids, last-seen times, and the
compact addresses back to back in one bytearray), in random order, so that a
random sample of 50 peers is one or two slices of that bytearray.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import islice
from typing import TypeVar

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

    def addrs(self, start: int, stop: int) -> list[PeerAddr]:
        return [PeerAddr(ip, port, peer_id)
                for (ip, port), peer_id in zip(self.keys[start:stop], self.peer_ids[start:stop])]


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


# (list, start, stop) runs of a sample
_Runs = list[tuple[_PeerList, int, int]]
_Picked = TypeVar("_Picked", _Runs, bytes | bytearray)   # what _announce_both's `pick` gives


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
        resp, runs4, runs6 = self._announce_both(req, ip, now, self._pick, [])
        resp.peers = [a for lst, start, stop in (*runs4, *runs6) for a in lst.addrs(start, stop)]
        return resp

    def announce_compact(self, req: AnnounceRequest, ip: str, now: float) -> CompactAnswer:
        """`announce`, with the peers as ready-made compact bytes of both families."""
        resp, peers4, peers6 = self._announce_both(req, ip, now, self._pick_packed, b"")
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
        peers = self._pick_packed(swarm.lists(v6), key, self._numwant(numwant), left == 0)
        return swarm.seeders, swarm.leechers, peers

    def _announce_both(self, req: AnnounceRequest, ip: str, now: float,
                       pick: Callable[..., _Picked], nothing: _Picked,
                       ) -> tuple[AnnounceResponse, _Picked, _Picked]:
        """HTTP (BEP 7): numwant is shared between the two families by their sizes. `pick` is
        `_pick` (runs, for the dictionary form) or `_pick_packed` (compact bytes); `nothing`
        is its empty answer."""
        swarm, key, v6, listed = self._record(req.info_hash, req.peer_id, ip, req.port, req.left,
                                              req.event, now)
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
        got_other = pick(other, None, n_other, seeding)
        got_mine = pick(mine, key, n, seeding)
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

    def _pick_packed(self, lists: tuple[_PeerList, _PeerList], me: tuple[str, int] | None,
                     n: int, seeding: bool) -> bytes | bytearray:
        """`_pick`'s peers as compact bytes, for the UDP and the compact HTTP answers. A small
        swarm's answer (every peer but the asker) is packed at once, without runs."""
        everyone = _everyone_but(lists, me, n)
        return everyone if everyone is not None else _packed(self._pick(lists, me, n, seeding))

    def _pick(self, lists: tuple[_PeerList, _PeerList], me: tuple[str, int] | None, n: int,
              seeding: bool) -> _Runs:
        """Up to n random peers of one family other than the asker; a seeder gets leechers first."""
        if n <= 0:
            return []
        seeders, leechers = lists
        if seeding:
            runs = self._sample(leechers, None, None, n)
            got = 0
            for _, start, stop in runs:
                got += stop - start
            if got < n:
                runs += self._sample(seeders, None, seeders.where.get(me), n - got)
            return runs
        mine = leechers.where.get(me)     # None: the asker is not listed (a full swarm)
        return self._sample(seeders, leechers, None if mine is None else len(seeders) + mine, n)

    def _sample(self, first: _PeerList, second: _PeerList | None, mine: int | None, n: int) -> _Runs:
        """n random entries of first + second, leaving out position `mine` (the asker's).

        Both lists are in random order, so consecutive positions from a random start,
        wrapping around, are a random sample: a few runs, whatever n is. The run is one
        longer when the asker is in it, and the asker is cut out of it.
        """
        size1 = len(first.keys)
        total = size1 + (len(second.keys) if second is not None else 0)
        available = total - (mine is not None)
        if available <= 0:
            return []
        if n >= available:                 # small swarm: everyone but me, in at most 3 runs
            # (inline: through _span and the window arithmetic below was slower. Compact
            # answers take small swarms before coming here: _pick_packed, _everyone_but)
            runs: _Runs = []
            if mine is None or mine >= size1:
                if size1:
                    runs.append((first, 0, size1))
            else:
                _all_but(runs, first, 0, size1, mine)
            if total > size1:
                if mine is None or mine < size1:
                    runs.append((second, 0, total - size1))  # type: ignore[arg-type]
                else:
                    _all_but(runs, second, 0, total - size1, mine - size1)  # type: ignore[arg-type]
            return runs
        start = int(self._rng.random() * total)
        if mine is not None and (mine - start) % total < n:
            end = start + n + 1            # one more, for the asker cut out of it
        elif start + n <= size1:           # the usual cases: one run inside one list
            return [(first, start, start + n)]
        elif start >= size1 and start + n <= total:
            return [(second, start - size1, start - size1 + n)]  # type: ignore[list-item]
        else:
            end = start + n
        runs = []              # the window crosses from first into second, wraps, or holds me
        if end <= total:
            _span(runs, first, second, size1, start, end, mine)
        else:
            _span(runs, first, second, size1, start, total, mine)
            _span(runs, first, second, size1, 0, end - total, mine)
        return runs

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
        return [a for peers in (swarm.seeders4, swarm.leechers4, swarm.seeders6, swarm.leechers6)
                for a in peers.addrs(0, len(peers))]


def _span(runs: _Runs, first: _PeerList, second: _PeerList | None, size1: int, lo: int, hi: int,
          mine: int | None) -> None:
    """Add the runs of positions lo..hi of first + second (hi <= their total), leaving out
    position `mine`; no empty run."""
    if lo < size1:
        _all_but(runs, first, lo, min(hi, size1), mine)
    if hi > size1:
        _all_but(runs, second, max(lo, size1) - size1, hi - size1,  # type: ignore[arg-type]
                 None if mine is None else mine - size1)


def _all_but(runs: _Runs, lst: _PeerList, lo: int, hi: int, mine: int | None) -> None:
    """Add the runs of positions lo..hi (lo < hi) of `lst` without `mine` (no empty run)."""
    if mine is None or not lo <= mine < hi:
        runs.append((lst, lo, hi))
        return
    if mine > lo:
        runs.append((lst, lo, mine))
    if mine + 1 < hi:
        runs.append((lst, mine + 1, hi))


def _everyone_but(lists: tuple[_PeerList, _PeerList], me: tuple[str, int] | None,
                  n: int) -> bytearray | None:
    """A small swarm's answer, packed: every peer of the family but the asker, or None if that
    is more than n peers (numwant; 50 by default). The peers are those `_pick` gives (a
    seeder's leechers no longer first: it gets all of them anyway), without building runs
    first. tracker_bench's swarms (about 40 peers each) all take this path, so these are its
    best case: 29,800 instructions per UDP announce against 39,000 (callgrind), and `--only
    udp` 69,600 announces/s against 61,800 (medians of 10 runs alternating); the registry's
    part of a compact HTTP announce 34,800 instructions against 42,300."""
    seeders, leechers = lists
    size1 = len(seeders.keys)
    mine = seeders.where.get(me)
    if mine is None:
        mine = leechers.where.get(me)
        if mine is not None:
            mine += size1
    if n < size1 + len(leechers.keys) - (mine is not None):
        return None
    everyone = seeders.packed + leechers.packed     # a new bytearray: ours to cut
    if mine is not None:
        del everyone[mine * seeders.stride:(mine + 1) * seeders.stride]
    return everyone


def _packed(runs: _Runs) -> bytes:
    if len(runs) == 1:
        lst, start, stop = runs[0]
        return bytes(lst.packed[start * lst.stride:stop * lst.stride])
    parts = []     # (a loop, not a comprehension: no function object per announce)
    for lst, start, stop in runs:
        parts.append(lst.packed[start * lst.stride:stop * lst.stride])
    return b"".join(parts)

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

from common.tracker_proto import AnnounceRequest, AnnounceResponse, PeerAddr, ScrapeStats

__all__ = ["RegistryError", "SwarmRegistry"]


class RegistryError(Exception):
    """The tracker refuses this announce; the message is sent back as the `failure reason`."""


@dataclass(slots=True)
class _Peer:
    addr: PeerAddr         # ip, port, peer id: ready to hand out
    uploaded: int
    downloaded: int
    left: int
    last_seen: float
    counted_complete: bool = False   # already added to the swarm's `downloaded` count


@dataclass(slots=True)
class _Swarm:
    # Seeders and leechers are kept apart so that seeders can be given leechers cheaply.
    seeders: dict[tuple[str, int], _Peer] = field(default_factory=dict)
    leechers: dict[tuple[str, int], _Peer] = field(default_factory=dict)
    downloaded: int = 0    # completed downloads seen (the scrape `downloaded` field)

    def __len__(self) -> int:
        return len(self.seeders) + len(self.leechers)


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
        ip = plain_ip(ip)
        key = (ip, req.port)
        swarm = self._swarms.get(req.info_hash)
        warning = None

        if req.event == "stopped":
            if swarm is not None:
                self._remove(swarm, key)
                if not swarm:
                    del self._swarms[req.info_hash]
                return self._response(swarm, [], None)
            return AnnounceResponse(interval=self.interval, min_interval=self.min_interval)

        if swarm is None:
            if len(self._swarms) >= self.max_torrents:
                raise RegistryError(
                    f"tracker is full: it already tracks {self.max_torrents} torrents")
            swarm = self._swarms[req.info_hash] = _Swarm()

        peer = swarm.seeders.get(key) or swarm.leechers.get(key)
        if peer is not None and peer.addr.peer_id != req.peer_id:
            self._remove(swarm, key)     # a new client at the same address replaces the old one
            peer = None
        if peer is None:
            if len(swarm) < self.max_peers_per_torrent:
                peer = _Peer(PeerAddr(ip, req.port, req.peer_id), req.uploaded, req.downloaded,
                             req.left, now)
                (swarm.seeders if req.left == 0 else swarm.leechers)[key] = peer
            else:
                warning = "swarm is full: you get peers but are not listed"
        else:
            was_seeder = peer.left == 0
            peer.uploaded, peer.downloaded, peer.left = req.uploaded, req.downloaded, req.left
            peer.last_seen = now
            if was_seeder != (req.left == 0):
                (swarm.seeders if was_seeder else swarm.leechers).pop(key)
                (swarm.leechers if was_seeder else swarm.seeders)[key] = peer
        if peer is not None and req.event == "completed" and not peer.counted_complete:
            peer.counted_complete = True
            swarm.downloaded += 1

        numwant = self.default_numwant if req.numwant is None else req.numwant
        peers = self._pick(swarm, key, min(numwant, self.max_numwant), seeding=req.left == 0)
        return self._response(swarm, peers, warning)

    def _response(self, swarm: _Swarm, peers: list[PeerAddr], warning: str | None) -> AnnounceResponse:
        return AnnounceResponse(interval=self.interval, peers=peers, complete=len(swarm.seeders),
                                incomplete=len(swarm.leechers), min_interval=self.min_interval,
                                warning=warning)

    def _pick(self, swarm: _Swarm, me: tuple[str, int], n: int, seeding: bool) -> list[PeerAddr]:
        """Up to n random peers other than the asker; a seeder gets leechers first."""
        if n <= 0:
            return []
        if seeding:
            picked = self._sample(swarm.leechers, me, n)
            if len(picked) < n:
                picked += self._sample(swarm.seeders, me, n - len(picked))
            return picked
        if not swarm.seeders:
            return self._sample(swarm.leechers, me, n)
        if not swarm.leechers:
            return self._sample(swarm.seeders, me, n)
        everyone = list(swarm.seeders.items())
        everyone += swarm.leechers.items()
        return self._sample_items(everyone, me, n)

    def _sample(self, peers: dict[tuple[str, int], _Peer], me: tuple[str, int], n: int) -> list[PeerAddr]:
        if len(peers) <= n + 1:      # small swarm: everyone but me, no sampling needed
            return [p.addr for k, p in peers.items() if k != me][:n]
        return self._sample_items(list(peers.items()), me, n)

    def _sample_items(self, items: list, me: tuple[str, int], n: int) -> list[PeerAddr]:
        if len(items) <= n + 1:
            chosen = items
        else:
            chosen = self._rng.sample(items, n + 1)   # one spare in case the asker is drawn
        return list(islice((p.addr for k, p in chosen if k != me), n))

    @staticmethod
    def _remove(swarm: _Swarm, key: tuple[str, int]) -> None:
        if swarm.seeders.pop(key, None) is None:
            swarm.leechers.pop(key, None)

    # -- housekeeping -----------------------------------------------------------------------
    def expire(self, now: float) -> int:
        """Drop peers not seen for `peer_timeout` seconds, and swarms left empty; returns peers dropped."""
        cutoff = now - self.peer_timeout
        dropped = 0
        for info_hash in list(self._swarms):
            swarm = self._swarms[info_hash]
            for peers in (swarm.seeders, swarm.leechers):
                stale = [k for k, p in peers.items() if p.last_seen < cutoff]
                for k in stale:
                    del peers[k]
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
        return [p.addr for p in (*swarm.seeders.values(), *swarm.leechers.values())]

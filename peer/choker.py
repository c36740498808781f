"""Who we upload to: the classic tit-for-tat choker, pure (time comes in as `now`).

API:
    choker = Choker(regular_slots=4, recompute_every=10.0, optimistic_every=30.0, rng=None)
    unchoked: set = choker.decide(peers: list[PeerStats], now: float, seeding: bool)

Call `decide` as often as you like (every second, or when a peer connects, leaves or
changes its interest); it is cheap and only re-ranks every `recompute_every` seconds,
so peers are not choked and unchoked in a flurry (each flip costs the peer its pipeline).

- Regular slots: the `regular_slots` interested peers that give us data fastest
  (leeching), or that we send data to fastest (seeding: they can take it). Snubbed
  peers (sat on our requests) get no regular slot while leeching. Between re-rankings
  a gone peer's slot goes to an interested peer straight away, so a new connection
  need not wait up to 10 s.
- Optimistic slot: one extra interested, choked peer, rotated every `optimistic_every`
  seconds, so newcomers (with no rate yet) get a chance to prove themselves; peers
  first seen within the last `optimistic_every * 2` seconds are 3x as likely to get it.
- Peers that are not interested but upload to us faster than the slowest regular one
  stay unchoked, so that when they become interested they start at once.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Hashable


@dataclass(frozen=True, slots=True)
class PeerStats:
    key: Hashable
    interested: bool            # the peer wants data from us
    download_rate: float        # bytes/s it gives us
    upload_rate: float          # bytes/s we give it
    snubbed: bool = False       # it has not sent us a requested block for a long while


class Choker:
    def __init__(self, regular_slots: int = 4, recompute_every: float = 10.0,
                 optimistic_every: float = 30.0, rng: random.Random | None = None) -> None:
        self.regular_slots = regular_slots
        self.recompute_every = recompute_every
        self.optimistic_every = optimistic_every
        self.rng = rng or random.Random()
        self.regular: set = set()
        self.optimistic: Hashable | None = None
        self.extra: set = set()             # fast uninterested peers
        self._next_recompute = float("-inf")
        self._next_optimistic = float("-inf")
        self._first_seen: dict[Hashable, float] = {}

    def decide(self, peers: list[PeerStats], now: float, seeding: bool) -> set:
        by_key = {p.key: p for p in peers}
        for key in list(self._first_seen):
            if key not in by_key:
                del self._first_seen[key]
        for key in by_key:
            self._first_seen.setdefault(key, now)

        def rate(p: PeerStats) -> float:
            return p.upload_rate if seeding else p.download_rate

        def snubbing(p: PeerStats) -> bool:     # (a seed gets nothing from anyone anyway)
            return p.snubbed and not seeding

        def eligible(p: PeerStats) -> bool:
            return p.interested and not snubbing(p)

        if now >= self._next_recompute:
            self._next_recompute = now + self.recompute_every
            ranked = [p for p in peers if eligible(p)]
            self.rng.shuffle(ranked)               # random order among equal rates
            ranked.sort(key=rate, reverse=True)
            top = ranked[:self.regular_slots]
            self.regular = {p.key for p in top}
            slowest = min((rate(p) for p in top), default=0.0)
            full = len(top) == self.regular_slots
            self.extra = {p.key for p in peers
                          if full and not p.interested and rate(p) > slowest}
        else:
            # a peer that snubs us while we leech loses its slot now, not at the next ranking
            self.regular = {k for k in self.regular if k in by_key and not snubbing(by_key[k])}
            self.extra = {k for k in self.extra if k in by_key and not by_key[k].interested}
            busy = sum(1 for k in self.regular if by_key[k].interested)
            waiting = [p for p in peers if eligible(p) and p.key not in self.regular
                       and p.key != self.optimistic]
            waiting.sort(key=rate, reverse=True)
            for p in waiting[:max(0, self.regular_slots - busy)]:
                self.regular.add(p.key)

        current = by_key.get(self.optimistic)
        if (now >= self._next_optimistic or current is None or not current.interested
                or self.optimistic in self.regular):
            self._rotate_optimistic(peers, now)
        chosen = set(self.regular) | self.extra
        if self.optimistic is not None:
            chosen.add(self.optimistic)
        return chosen

    def _rotate_optimistic(self, peers: list[PeerStats], now: float) -> None:
        self._next_optimistic = now + self.optimistic_every
        pool = [p.key for p in peers
                if p.interested and p.key not in self.regular and p.key != self.optimistic]
        if not pool:  # nobody else to try: keep the current one if it still qualifies
            keep = any(p.key == self.optimistic and p.interested for p in peers)
            if not keep or self.optimistic in self.regular:
                self.optimistic = None
            return
        recent = now - 2 * self.optimistic_every
        weights = [3 if self._first_seen.get(k, now) > recent else 1 for k in pool]
        self.optimistic = self.rng.choices(pool, weights=weights)[0]

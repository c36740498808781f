"""The choker under a fake clock: slots by rate, 10 s re-ranking, 30 s optimistic rotation."""

from __future__ import annotations

import random

from peer.choker import Choker, PeerStats


def leechers(rates: dict[str, float], interested: bool = True) -> list[PeerStats]:
    return [PeerStats(key=k, interested=interested, download_rate=r, upload_rate=0.0)
            for k, r in rates.items()]


def test_four_fastest_uploaders_plus_one_optimistic():
    choker = Choker(rng=random.Random(1))
    peers = leechers({"p1": 1, "p2": 2, "p3": 3, "p4": 4, "p5": 5, "p6": 6})
    unchoked = choker.decide(peers, now=0.0, seeding=False)
    assert choker.regular == {"p3", "p4", "p5", "p6"}
    assert choker.optimistic in {"p1", "p2"}
    assert unchoked == choker.regular | {choker.optimistic}


def test_reranks_only_every_ten_seconds():
    choker = Choker(rng=random.Random(2))
    rates = {"p1": 1, "p2": 2, "p3": 3, "p4": 4, "p5": 5, "p6": 6, "p7": 0}
    choker.decide(leechers(rates), now=0.0, seeding=False)
    rates["p1"] = 100  # p1 becomes our best source
    for t in range(1, 10):
        choker.decide(leechers(rates), now=float(t), seeding=False)
        assert choker.regular == {"p3", "p4", "p5", "p6"}
    choker.decide(leechers(rates), now=10.0, seeding=False)
    assert choker.regular == {"p1", "p4", "p5", "p6"}


def test_a_gone_peer_slot_is_refilled_at_once():
    choker = Choker(rng=random.Random(3))
    rates = {"p1": 1, "p2": 2, "p3": 3, "p4": 4, "p5": 5, "p6": 6}
    choker.decide(leechers(rates), now=0.0, seeding=False)
    opt = choker.optimistic
    del rates["p6"]
    rates["new"] = 0.0
    unchoked = choker.decide(leechers(rates), now=3.0, seeding=False)
    assert "p6" not in unchoked
    assert len(choker.regular) == 4 and opt not in choker.regular
    assert choker.regular == {"p3", "p4", "p5", "p2" if opt == "p1" else "p1"}
    assert choker.optimistic == opt, "the optimistic slot is not rotated early"


def test_optimistic_unchoke_rotates_every_thirty_seconds():
    choker = Choker(rng=random.Random(4))
    rates = {f"fast{i}": 100.0 + i for i in range(4)} | {f"new{i}": 0.0 for i in range(6)}
    seen = []
    for t in range(0, 121):
        unchoked = choker.decide(leechers(rates), now=float(t), seeding=False)
        assert len(unchoked) == 5
        seen.append(choker.optimistic)
    for start in (0, 30, 60, 90):
        assert len(set(seen[start:start + 30])) == 1, "stable for 30 s"
    assert seen[29] != seen[30] and seen[59] != seen[60] and seen[89] != seen[90]
    assert all(o.startswith("new") for o in seen)


def test_optimistic_changes_when_it_loses_interest():
    choker = Choker(rng=random.Random(5))
    peers = leechers({"a": 5, "b": 5, "c": 5, "d": 5, "e": 0, "f": 0})
    choker.decide(peers, now=0.0, seeding=False)
    opt = choker.optimistic
    peers = [PeerStats(p.key, p.key != opt, p.download_rate, 0.0) for p in peers]
    unchoked = choker.decide(peers, now=1.0, seeding=False)
    assert choker.optimistic not in (None, opt) and opt not in unchoked


def test_seeding_ranks_by_upload_rate():
    choker = Choker(rng=random.Random(6))
    peers = [PeerStats(key=f"p{i}", interested=True, download_rate=0.0, upload_rate=float(i))
             for i in range(8)]
    choker.decide(peers, now=0.0, seeding=True)
    assert choker.regular == {"p4", "p5", "p6", "p7"}
    # When leeching the same peers, it is what they give us that counts.
    choker = Choker(rng=random.Random(6))
    peers = [PeerStats(key=f"p{i}", interested=True, download_rate=float(10 - i), upload_rate=float(i))
             for i in range(8)]
    choker.decide(peers, now=0.0, seeding=False)
    assert choker.regular == {"p0", "p1", "p2", "p3"}


def test_uninterested_and_snubbed_peers():
    choker = Choker(rng=random.Random(7))
    peers = leechers({"a": 10, "b": 20, "c": 30, "d": 40}) + [
        PeerStats("quiet-fast", False, 50.0, 0.0),   # not interested, but gives us a lot
        PeerStats("quiet-slow", False, 1.0, 0.0),
        PeerStats("snub", True, 99.0, 0.0, snubbed=True),
    ]
    unchoked = choker.decide(peers, now=0.0, seeding=False)
    assert choker.regular == {"a", "b", "c", "d"}
    assert "quiet-fast" in unchoked and "quiet-slow" not in unchoked
    assert choker.optimistic == "snub", "a snubbed peer can only get the optimistic slot"


def test_a_peer_that_starts_snubbing_loses_its_slot_before_the_next_ranking():
    choker = Choker(rng=random.Random(3))
    choker.decide(leechers({"a": 10, "b": 20}), now=0.0, seeding=False)
    assert choker.regular == {"a", "b"}
    later = [PeerStats("a", True, 0.0, 0.0, snubbed=True), PeerStats("b", True, 20.0, 0.0)]
    choker.decide(later, now=2.0, seeding=False)
    assert choker.regular == {"b"}
    choker.decide(later, now=3.0, seeding=True)   # a seed ranks by what peers take: kept
    assert "a" in choker.regular or choker.optimistic == "a"


def test_fewer_peers_than_slots_and_nobody():
    choker = Choker(rng=random.Random(8))
    assert choker.decide([], now=0.0, seeding=False) == set()
    assert choker.decide(leechers({"a": 0, "b": 0}), now=1.0, seeding=False) == {"a", "b"}
    quiet = leechers({"a": 0}, interested=False)
    assert choker.decide(quiet, now=2.0, seeding=False) == {"a"}, "no churn between re-rankings"
    assert choker.decide(quiet, now=11.0, seeding=False) == set()


def test_new_connections_are_favoured_for_the_optimistic_slot():
    wins = 0
    for seed in range(200):
        choker = Choker(regular_slots=0, rng=random.Random(seed))
        old = leechers({"o1": 0, "o2": 0})
        choker.decide(old, now=0.0, seeding=False)
        choker.decide(old, now=100.0, seeding=False)  # o1/o2 are old now
        choker.optimistic = None
        choker.decide(old + leechers({"n": 0}), now=120.0, seeding=False)
        wins += choker.optimistic == "n"
    assert 100 < wins < 140, f"new peer won {wins}/200, expected ~3/5"

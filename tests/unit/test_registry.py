"""SwarmRegistry with a fake clock: who is listed, counted, capped and forgotten."""

from __future__ import annotations

import random

import pytest

from common.tracker_proto import AnnounceRequest, PeerAddr, ScrapeStats, compact_peer
from tracker.registry import RegistryError, SwarmRegistry

IH = b"\x11" * 20
IH2 = b"\x22" * 20


def pid(n: int) -> bytes:
    return b"-SW0001-%012d" % n


def req(n: int, *, left: int = 100, event: str = "", numwant: int | None = None,
        info_hash: bytes = IH, port: int | None = None, peer_id: bytes | None = None) -> AnnounceRequest:
    return AnnounceRequest(info_hash=info_hash, peer_id=peer_id or pid(n), port=port or 10000 + n,
                           left=left, event=event, numwant=numwant)


def ip(n: int) -> str:
    return f"10.0.{n // 256}.{n % 256}"


@pytest.fixture
def reg() -> SwarmRegistry:
    return SwarmRegistry(interval=100, rng=random.Random(7))


def test_first_peer_gets_nobody_and_is_counted(reg):
    resp = reg.announce(req(1, event="started"), ip(1), now=0)
    assert resp.peers == [] and (resp.complete, resp.incomplete) == (0, 1)
    assert resp.interval == 100


def test_peers_see_each_other_never_themselves(reg):
    for n in range(5):
        reg.announce(req(n), ip(n), now=0)
    for n in range(5):
        resp = reg.announce(req(n), ip(n), now=1)
        listed = {(p.ip, p.port) for p in resp.peers}
        assert listed == {(ip(m), 10000 + m) for m in range(5) if m != n}
    assert all(p.peer_id == pid(int(p.ip.split(".")[3])) for p in resp.peers)


def test_self_exclusion_in_big_swarm_with_sampling(reg):
    for n in range(200):
        reg.announce(req(n, left=n % 2), ip(n), now=0)
    for n in range(200):
        resp = reg.announce(req(n, left=n % 2, numwant=30), ip(n), now=1)
        assert len(resp.peers) == 30
        assert (ip(n), 10000 + n) not in {(p.ip, p.port) for p in resp.peers}
        assert len({(p.ip, p.port) for p in resp.peers}) == 30


def test_numwant_default_and_cap():
    reg = SwarmRegistry(interval=100, max_numwant=80, default_numwant=50)
    for n in range(120):
        reg.announce(req(n), ip(n), now=0)
    assert len(reg.announce(req(0), ip(0), now=1).peers) == 50
    assert len(reg.announce(req(0, numwant=1000), ip(0), now=1).peers) == 80
    assert len(reg.announce(req(0, numwant=3), ip(0), now=1).peers) == 3
    assert reg.announce(req(0, numwant=0), ip(0), now=1).peers == []


def test_sampling_is_random(reg):
    for n in range(100):
        reg.announce(req(n), ip(n), now=0)
    seen = set()
    for _ in range(20):
        seen |= {p.port for p in reg.announce(req(0, numwant=10), ip(0), now=1).peers}
    assert len(seen) > 50


def test_seeder_gets_leechers_first(reg):
    for n in range(30):
        reg.announce(req(n, left=0), ip(n), now=0)        # 30 seeders
    for n in range(30, 40):
        reg.announce(req(n, left=5), ip(n), now=0)        # 10 leechers
    resp = reg.announce(req(0, left=0, numwant=15), ip(0), now=1)
    ports = [p.port for p in resp.peers]
    assert set(ports[:10]) == {10000 + n for n in range(30, 40)}
    assert len(ports) == 15 and all(10000 < p < 10030 for p in ports[10:])
    assert (resp.complete, resp.incomplete) == (30, 10)


def test_leecher_gets_seeders_and_leechers(reg):
    for n in range(40):
        reg.announce(req(n, left=0 if n < 20 else 9), ip(n), now=0)
    seen = set()
    for _ in range(10):
        seen |= {p.port < 10020 for p in reg.announce(req(39, left=9, numwant=10), ip(39), now=1).peers}
    assert seen == {True, False}


def test_counts_follow_left_changes_and_completed_counted_once(reg):
    reg.announce(req(1, left=10, event="started"), ip(1), now=0)
    reg.announce(req(2, left=10, event="started"), ip(2), now=0)
    assert reg.scrape([IH]) == {IH: ScrapeStats(complete=0, downloaded=0, incomplete=2)}
    reg.announce(req(1, left=0, event="completed"), ip(1), now=1)
    reg.announce(req(1, left=0, event="completed"), ip(1), now=2)   # a repeat is not a new download
    assert reg.scrape([IH]) == {IH: ScrapeStats(complete=1, downloaded=1, incomplete=1)}
    reg.announce(req(2, left=0, event="completed"), ip(2), now=3)
    assert reg.scrape([IH]) == {IH: ScrapeStats(complete=2, downloaded=2, incomplete=0)}
    reg.announce(req(2, left=4), ip(2), now=4)     # a seeder that lost data is a leecher again
    assert reg.scrape([IH])[IH] == ScrapeStats(complete=1, downloaded=2, incomplete=1)


def test_stopped_removes_peer_and_empty_swarm(reg):
    reg.announce(req(1), ip(1), now=0)
    reg.announce(req(2), ip(2), now=0)
    resp = reg.announce(req(1, event="stopped"), ip(1), now=1)
    assert resp.peers == [] and (resp.complete, resp.incomplete) == (0, 1)
    assert reg.peers_of(IH) == [PeerAddr(ip(2), 10002, pid(2))]
    reg.announce(req(2, event="stopped"), ip(2), now=2)
    assert reg.torrent_count == 0
    # stopping on an unknown torrent does not create it
    reg.announce(req(3, event="stopped", info_hash=IH2), ip(3), now=3)
    assert reg.torrent_count == 0


def test_peer_keyed_by_address_new_peer_id_replaces(reg):
    reg.announce(req(1), "1.2.3.4", now=0)
    reg.announce(req(1, peer_id=b"X" * 20), "1.2.3.4", now=1)
    assert reg.peers_of(IH) == [PeerAddr("1.2.3.4", 10001, b"X" * 20)]
    reg.announce(req(1, port=999), "1.2.3.4", now=1)    # another port: another peer
    assert len(reg.peers_of(IH)) == 2


def test_ipv4_mapped_address_is_plain_ipv4(reg):
    reg.announce(req(1), "::ffff:1.2.3.4", now=0)
    reg.announce(req(1), "1.2.3.4", now=1)
    assert reg.peers_of(IH) == [PeerAddr("1.2.3.4", 10001, pid(1))]


def test_expiry_after_two_intervals(reg):
    reg.announce(req(1), ip(1), now=0)
    reg.announce(req(2), ip(2), now=150)
    assert reg.expire(now=199) == 0
    assert reg.expire(now=201) == 1                      # peer 1 silent for > 2 * interval
    assert [p.port for p in reg.peers_of(IH)] == [10002]
    assert reg.expire(now=351) == 1
    assert reg.torrent_count == 0 and reg.peer_count == 0


def test_reannounce_keeps_peer_alive(reg):
    reg.announce(req(1), ip(1), now=0)
    for t in range(150, 1000, 150):
        reg.announce(req(1), ip(1), now=t)
        reg.expire(now=t + 1)
    assert reg.peer_count == 1


def test_max_torrents_refuses_new_torrents_with_reason():
    reg = SwarmRegistry(max_torrents=2)
    reg.announce(req(1, info_hash=b"\x01" * 20), ip(1), now=0)
    reg.announce(req(1, info_hash=b"\x02" * 20), ip(1), now=0)
    with pytest.raises(RegistryError, match="tracker is full: it already tracks 2 torrents"):
        reg.announce(req(1, info_hash=b"\x03" * 20), ip(1), now=0)
    reg.announce(req(2, info_hash=b"\x02" * 20), ip(2), now=0)     # known torrents still work
    reg.announce(req(1, info_hash=b"\x01" * 20, event="stopped"), ip(1), now=0)
    reg.announce(req(1, info_hash=b"\x03" * 20), ip(1), now=0)     # a slot came free


def test_max_peers_per_torrent_lists_no_more_but_still_answers():
    reg = SwarmRegistry(max_peers_per_torrent=3)
    for n in range(3):
        reg.announce(req(n), ip(n), now=0)
    resp = reg.announce(req(9), ip(9), now=0)
    assert len(resp.peers) == 3 and resp.warning == "swarm is full: you get peers but are not listed"
    assert reg.peer_count == 3
    assert reg.announce(req(0), ip(0), now=1).warning is None      # a listed peer re-announces fine


def test_scrape_unknown_and_all(reg):
    reg.announce(req(1, left=0), ip(1), now=0)
    reg.announce(req(2, info_hash=IH2), ip(2), now=0)
    assert reg.scrape([b"\x99" * 20]) == {b"\x99" * 20: ScrapeStats(0, 0, 0)}
    assert reg.scrape([]) == {IH: ScrapeStats(1, 0, 0), IH2: ScrapeStats(0, 0, 1)}
    capped = SwarmRegistry(max_scrape_all=1)
    capped.announce(req(1), ip(1), now=0)
    capped.announce(req(1, info_hash=IH2), ip(1), now=0)
    assert len(capped.scrape([])) == 1


def test_many_joins_leaves_and_state_changes_keep_the_books_straight():
    """Random churn: every listed peer is findable, counts match, nobody is lost or doubled."""
    rng = random.Random(3)
    reg = SwarmRegistry(interval=100, max_peers_per_torrent=10_000, rng=random.Random(4))
    alive: dict[int, int] = {}                    # peer number -> left
    for step in range(3000):
        n = rng.randrange(150)
        action = rng.random()
        if action < 0.2 and n in alive:
            reg.announce(req(n, event="stopped"), ip(n), now=step)
            del alive[n]
        else:
            left = rng.choice((0, 10))
            reg.announce(req(n, left=left), ip(n), now=step)
            alive[n] = left
    listed = {(p.ip, p.port) for p in reg.peers_of(IH)}
    assert listed == {(ip(n), 10000 + n) for n in alive}
    assert len(reg.peers_of(IH)) == len(alive)
    seeders = sum(1 for left in alive.values() if left == 0)
    assert reg.scrape([IH])[IH] == ScrapeStats(seeders, 0, len(alive) - seeders)
    for n in list(alive)[:20]:
        got = reg.announce(req(n, left=alive[n], numwant=20), ip(n), now=5000).peers
        assert (ip(n), 10000 + n) not in {(p.ip, p.port) for p in got}
        assert len(got) == len({(p.ip, p.port) for p in got}) == min(20, len(alive) - 1)


def test_every_peer_gets_listed_somewhere():
    """Picks are spread over the whole swarm, not stuck on one part of it."""
    reg = SwarmRegistry(interval=100, rng=random.Random(9))
    for n in range(300):
        reg.announce(req(n), ip(n), now=0)
    counts = dict.fromkeys(range(300), 0)
    for n in range(300):
        for p in reg.announce(req(n, numwant=50), ip(n), now=1).peers:
            counts[p.port - 10000] += 1
    # 300 answers x 50 peers = 15000 listings, 50 per peer on average
    assert min(counts.values()) > 15 and max(counts.values()) < 100


def test_bad_source_address_changes_nothing(reg):
    from common.tracker_proto import TrackerProtocolError
    with pytest.raises(TrackerProtocolError, match="not an IP address"):
        reg.announce(req(1), "", now=0)
    assert reg.torrent_count == 0


def test_compact_answers_follow_joins_moves_and_leaves():
    # the packed-address column must stay in step with the peers through every reshuffle
    reg = SwarmRegistry(interval=100, max_numwant=500, rng=random.Random(3))
    listed = {}
    for n in range(300):
        reg.announce(req(n, left=n % 3), ip(n), now=0)
        listed[n] = True
    for n in range(0, 300, 4):
        reg.announce(req(n, event="stopped"), ip(n), now=1)
        del listed[n]
    for n in range(1, 300, 5):
        if n in listed:
            reg.announce(req(n, left=0 if n % 3 else 7), ip(n), now=2)   # seeder <-> leecher
    answer = reg.announce_compact(req(999, numwant=500), ip(999), now=3)
    got = {answer.peers4[i:i + 6] for i in range(0, len(answer.peers4), 6)}
    assert len(answer.peers4) == 6 * len(listed) and answer.peers6 == b""
    assert got == {bytes(map(int, ip(n).split("."))) + (10000 + n).to_bytes(2, "big") for n in listed}


def ip6(n: int) -> str:
    return f"2001:db8::{n:x}"


def test_mixed_families_each_packed_in_its_own_form():
    reg = SwarmRegistry(interval=100, rng=random.Random(5))
    for n in range(1, 31):
        reg.announce(req(n), ip(n), now=0)
        reg.announce(req(100 + n), ip6(n), now=0)
    # HTTP (BEP 7): both families, numwant shared between them by their sizes
    answer = reg.announce_compact(req(1, numwant=20), ip(1), now=1)
    assert (len(answer.peers4) // 6, len(answer.peers6) // 18) == (10, 10)
    assert bytes(map(int, ip(1).split("."))) + (10001).to_bytes(2, "big") not in {
        answer.peers4[i:i + 6] for i in range(0, len(answer.peers4), 6)}
    # UDP (BEP 15): only the asker's family, as many as asked for
    seeders, leechers, packed = reg.announce_same_family(IH, pid(101), ip6(1), 10101, 100, "", 20, now=1)
    assert (seeders, leechers, len(packed)) == (0, 60, 20 * 18)
    assert b"\x20\x01\x0d\xb8" + b"\x00" * 11 + b"\x01" + (10101).to_bytes(2, "big") not in {
        bytes(packed[i:i + 18]) for i in range(0, len(packed), 18)}
    seeders, leechers, packed = reg.announce_same_family(IH, pid(999), ip(999), 10999, 100, "", 50, now=1)
    assert len(packed) == 30 * 6 and leechers == 61
    # the dictionary form lists both families
    got = {p.ip for p in reg.announce(req(2, numwant=50), ip(2), now=2).peers}
    assert any(":" in a for a in got) and any("." in a for a in got)


def test_udp_answer_is_everyone_but_the_asker_up_to_numwant():
    """announce_same_family's two ways to an answer (_everyone_but for a small swarm, a
    sample beyond it) against their definition: min(numwant, others) distinct peers of the
    asker's family, never the asker; all of them when numwant covers them. Askers are seeders
    and leechers, listed and (in a full swarm) not listed, IPv4 and IPv6; numwant at and
    around the boundary, left out (the default) and above the cap."""
    cases = random.Random(3)
    for _ in range(600):
        cap = cases.randint(1, 12)
        reg = SwarmRegistry(interval=100, max_peers_per_torrent=cap, default_numwant=7,
                            max_numwant=9, rng=random.Random(cases.random()))
        address = cases.choice((ip, ip6))
        stride = 6 if address is ip else 18
        for n in range(1, cases.randint(1, 14)):
            reg.announce(req(n, left=cases.choice((0, 100))), address(n), now=0)
        listed = {compact_peer(a.ip, a.port) for a in reg.peers_of(IH)}
        asker = cases.randint(1, 16)
        me = compact_peer(address(asker), 10000 + asker)
        others = len(listed - {me})
        numwant = cases.choice((None, 0, 1, max(0, others - 1), others, others + 1, 1000))
        _, _, packed = reg.announce_same_family(IH, pid(asker), address(asker), 10000 + asker,
                                                cases.choice((0, 100)), "", numwant, now=1)
        got = [bytes(packed[i:i + stride]) for i in range(0, len(packed), stride)]
        wanted = min(7 if numwant is None else numwant, 9)
        assert len(packed) % stride == 0 and len(got) == len(set(got)) == min(wanted, others)
        assert me not in got and set(got) <= listed
        if wanted >= others:
            assert set(got) == listed - {me}


def test_a_sample_is_a_window_after_a_random_start_without_the_asker():
    """_sample against its definition, position by position, in both forms (packed and
    pairs): a leecher gets n consecutive entries of seeders + leechers without itself, from
    a random start, wrapping around; a seeder gets leechers only if there are n of them,
    else every leecher and then such a window of the seeders without itself; everyone but
    the asker when n covers them. The swarm's own columns are never handed out or changed."""
    from tracker.registry import _PeerList
    cases = random.Random(11)
    for _ in range(5_000):
        address, stride = cases.choice(((ip, 6), (ip6, 18)))
        seeders, leechers = _PeerList(stride), _PeerList(stride)
        numbers = cases.sample(range(1, 200), cases.randint(0, 60))
        for k, n in enumerate(numbers):
            lst = seeders if k % 3 == 0 or cases.random() < 0.3 else leechers
            lst.add((address(n), 10000 + n), pid(n), compact_peer(address(n), 10000 + n), 0.0, cases)
        seeding = cases.random() < 0.5
        mine_list = seeders if seeding else leechers
        me = cases.choice([None, ("10.9.9.9", 1), *mine_list.keys])
        want = cases.randint(0, 70)
        packed = cases.random() < 0.5
        seed = cases.random()
        columns = bytes(seeders.packed), bytes(leechers.packed)
        got = SwarmRegistry(rng=random.Random(seed))._sample(
            (seeders, leechers), me, want, seeding, packed)

        def window(order: list, n: int) -> list:
            if n >= len(order):
                return order
            start = int(random.Random(seed).random() * len(order))
            return [order[(start + k) % len(order)] for k in range(n)]

        if want <= 0:
            expected = []
        elif seeding and len(leechers.keys) >= want:
            expected = window(list(leechers.keys), want)
        elif seeding:
            expected = leechers.keys + window([k for k in seeders.keys if k != me],
                                              want - len(leechers.keys))
        else:
            expected = window([k for k in seeders.keys + leechers.keys if k != me], want)
        if packed:
            assert bytes(got) == b"".join(compact_peer(*key) for key in expected)
            assert got is not seeders.packed and got is not leechers.packed
            if got:
                got[:] = b"x" * len(got)    # ours to change: the columns do not move
        else:
            ids = dict(zip(seeders.keys + leechers.keys, seeders.peer_ids + leechers.peer_ids))
            assert got == [(key, ids[key]) for key in expected]
        assert (bytes(seeders.packed), bytes(leechers.packed)) == columns

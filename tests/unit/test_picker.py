"""The piece picker: rarest first, random first, piece affinity, endgame, liars, speed."""

from __future__ import annotations

import random
import time

from peer.picker import PiecePicker

BS = 16384


def picker(num_pieces: int, blocks_per_piece: int = 1, *, random_first: int = 0, seed: int = 0,
           last_piece: int | None = None, **kw) -> PiecePicker:
    piece_length = blocks_per_piece * BS
    total = num_pieces * piece_length
    if last_piece is not None:
        total = (num_pieces - 1) * piece_length + last_piece
    return PiecePicker(num_pieces, piece_length, total, random_first=random_first,
                       rng=random.Random(seed), **kw)


def indices(blocks) -> list[int]:
    return [b[0] for b in blocks]


def test_rarest_first_order():
    pp = picker(10)
    pp.add_peer("A", range(10))
    pp.add_peer("B", range(5))
    pp.add_peer("C", range(3))
    got = indices(pp.pick("A", 10))
    assert sorted(got[:5]) == [5, 6, 7, 8, 9]      # availability 1
    assert sorted(got[5:7]) == [3, 4]              # availability 2
    assert sorted(got[7:]) == [0, 1, 2]            # availability 3
    assert pp.pick("A", 10) == []                  # everything is in flight to A


def test_rarest_first_follows_have_and_disconnect():
    pp = picker(4)
    pp.add_peer("A", range(4))
    pp.add_peer("B", [0, 1, 2])
    pp.add_peer("C", [0, 1])
    assert [pp.availability(i) for i in range(4)] == [3, 3, 2, 1]
    pp.peer_has("C", 3)
    pp.remove_peer("B")
    assert [pp.availability(i) for i in range(4)] == [2, 2, 1, 2]
    assert indices(pp.pick("A", 1)) == [2]


def test_ties_are_broken_at_random():
    firsts = set()
    for seed in range(40):
        pp = picker(8, seed=seed)
        pp.add_peer("A", range(8))
        firsts.add(pp.pick("A", 1)[0][0])
    assert len(firsts) >= 4


def test_random_first_then_rarest():
    # Pieces 0-9 are rare (one peer), 10-19 common (two peers).
    early = set()
    for seed in range(30):
        pp = picker(20, random_first=4, seed=seed)
        pp.add_peer("A", range(20))
        pp.add_peer("B", range(10, 20))
        early.add(pp.pick("A", 1)[0][0])
    assert early & set(range(10, 20)), "while fewer than 4 pieces are verified, picks are random"
    for seed in range(30):
        pp = picker(20, random_first=4, seed=seed)
        pp.add_peer("A", range(20))
        pp.add_peer("B", range(10, 20))
        for i in (10, 11, 12, 13):
            pp.mark_have(i)
        assert pp.pick("A", 1)[0][0] in range(10), "after 4 verified pieces: rarest first"


def test_blocks_and_short_last_piece():
    pp = picker(2, blocks_per_piece=3, last_piece=BS + 100)
    pp.add_peer("A", [0, 1])
    got = sorted(pp.pick("A", 10))
    assert got == [(0, 0, BS), (0, BS, BS), (0, 2 * BS, BS), (1, 0, BS), (1, BS, 100)]


def test_continues_own_piece_and_leaves_others_alone():
    pp = picker(3, blocks_per_piece=4)
    pp.add_peer("A", range(3))
    pp.add_peer("B", range(3))
    first = pp.pick("A", 2)
    index = first[0][0]
    assert first == [(index, 0, BS), (index, BS, BS)]
    other = pp.pick("B", 2)
    assert other[0][0] != index, "B starts its own piece instead of sharing A's"
    assert pp.pick("A", 2) == [(index, 2 * BS, BS), (index, 3 * BS, BS)]


def test_dropped_blocks_are_picked_again_first():
    pp = picker(5, blocks_per_piece=4)
    pp.add_peer("A", range(5))
    pp.add_peer("B", range(5))
    blocks = pp.pick("A", 4)
    pp.block_received("A", *blocks[0][:2])
    pp.requests_dropped("A", blocks[1:])
    assert pp.pick("B", 3) == blocks[1:]
    pp.peer_lost("B")
    assert pp.pick("A", 3) == blocks[1:]


def test_remove_peer_frees_its_requests():
    pp = picker(1, blocks_per_piece=2)
    pp.add_peer("A", [0])
    pp.add_peer("B", [0])
    blocks = pp.pick("A", 2)
    pp.remove_peer("A")
    assert pp.pick("B", 2) == blocks
    assert pp.availability(0) == 1


def test_piece_complete_and_verified():
    pp = picker(2, blocks_per_piece=2)
    pp.add_peer("A", [0, 1])
    blocks = [b for b in pp.pick("A", 4) if b[0] == 0]
    assert pp.block_received("A", 0, 0) == []
    assert not pp.piece_complete(0)
    pp.block_received("A", 0, BS)
    assert pp.piece_complete(0)
    pp.mark_have(0)
    assert pp.have[0] == 1 and pp.missing_count == 1 and not pp.is_complete()
    assert len(blocks) == 2


def test_endgame_duplicates_and_cancels():
    pp = picker(1, blocks_per_piece=2, endgame_copies=3)
    for p in "ABCD":
        pp.add_peer(p, [0])
    both = [(0, 0, BS), (0, BS, BS)]
    assert pp.pick("A", 10) == both
    assert pp.pick("B", 10) == both                 # endgame: same blocks again
    assert pp.pick("C", 10) == both
    assert pp.pick("D", 10) == []                   # at most 3 copies in flight
    assert pp.pick("A", 10) == []                   # never twice to one peer
    assert sorted(pp.block_received("B", 0, 0)) == ["A", "C"]
    assert not pp.piece_complete(0)
    assert pp.pick("D", 10) == [], "block 1 is still in flight to 3 peers"
    cancel = pp.block_received("C", 0, BS)
    assert sorted(cancel) == ["A", "B"]
    assert pp.piece_complete(0)
    assert pp.block_received("A", 0, BS) == []      # late duplicate: nothing to cancel


def test_endgame_only_once_every_available_piece_is_started():
    pp = picker(2)
    pp.add_peer("A", [0, 1])
    pp.add_peer("B", [0])
    pp.add_peer("C", [0])
    assert pp.pick("B", 5) == [(0, 0, BS)]
    assert pp.pick("C", 5) == [], "piece 1 is not started yet: no duplicates"
    assert pp.pick("A", 5) == [(1, 0, BS), (0, 0, BS)]
    assert pp.pick("C", 5) == [], "block 0 is already asked from 2 peers, the default cap"


def test_endgame_copies_cap_is_a_setting():
    pp = picker(2, endgame_copies=3)
    pp.add_peer("A", [0, 1])
    pp.add_peer("B", [0])
    pp.add_peer("C", [0])
    assert pp.pick("B", 5) == [(0, 0, BS)]
    assert pp.pick("A", 5) == [(1, 0, BS), (0, 0, BS)]
    assert pp.pick("C", 5) == [(0, 0, BS)]


def test_piece_failed_returns_contributors_and_refetches_from_one_peer():
    pp = picker(1, blocks_per_piece=2)
    pp.add_peer("A", [0])
    pp.add_peer("B", [0])
    a = pp.pick("A", 1)
    b = pp.pick("B", 1)
    assert a == [(0, 0, BS)] and b == [(0, BS, BS)]
    pp.block_received("A", 0, 0)
    pp.block_received("B", 0, BS)
    assert pp.piece_complete(0)
    assert pp.piece_failed(0) == {"A", "B"}
    assert not pp.piece_complete(0) and pp.have[0] == 0
    # Second attempt: the first peer to ask owns the whole piece.
    assert pp.pick("A", 1) == [(0, 0, BS)]
    assert pp.pick("B", 5) == [], "the piece is A's alone now (no endgame duplicates either)"
    assert pp.pick("A", 5) == [(0, BS, BS)]
    pp.block_received("A", 0, 0)
    pp.block_received("A", 0, BS)
    assert pp.piece_failed(0) == {"A"}, "a second failure names the liar alone"


def _owned_by_a_with_nothing_asked() -> PiecePicker:
    """A 2-block piece that failed once; A owns its second attempt and sent block 0."""
    pp = picker(1, blocks_per_piece=2)
    pp.add_peer("A", [0])
    pp.add_peer("B", [0])
    pp.pick("A", 2)
    pp.block_received("A", 0, 0)
    pp.block_received("A", 0, BS)
    pp.piece_failed(0)
    pp.pick("A", 1)
    pp.block_received("A", 0, 0)
    return pp


def test_single_source_piece_moves_whole_when_owner_leaves():
    pp = _owned_by_a_with_nothing_asked()
    pp.remove_peer("A")
    assert pp.pick("B", 5) == [(0, 0, BS), (0, BS, BS)], "A's block is not mixed with B's"
    pp.block_received("B", 0, 0)
    pp.block_received("B", 0, BS)
    assert pp.piece_failed(0) == {"B"}


def test_single_source_piece_moves_whole_when_owner_chokes_with_nothing_asked():
    """An owner that chokes us between its requests would hold the piece for as long as it
    keeps us choked (with blocks asked, its rejects let the piece go already)."""
    pp = _owned_by_a_with_nothing_asked()
    pp.peer_choked("B")                   # someone else's choke changes nothing
    assert pp.pick("B", 5) == []
    pp.peer_choked("A")
    assert pp.pick("B", 5) == [(0, 0, BS), (0, BS, BS)], "A's block is not mixed with B's"


def test_interesting_and_seed():
    pp = picker(3)
    pp.mark_have(0)
    pp.add_peer("A", [0])
    assert not pp.interesting("A")
    pp.peer_has("A", 2)
    assert pp.interesting("A")
    pp.mark_have(2)
    assert not pp.interesting("A")
    assert not pp.peer_is_seed("A")
    pp.add_peer("A", [1])
    assert pp.peer_is_seed("A") and pp.interesting("A")
    assert not pp.interesting("nobody")


def test_mark_have_drops_partial_and_requests():
    pp = picker(2, blocks_per_piece=2)
    pp.add_peer("A", [0, 1])
    started = pp.pick("A", 1)[0][0]
    pp.mark_have(started)
    assert indices(pp.pick("A", 10)) == [1 - started] * 2
    assert pp.block_received("A", started, 0) == []
    assert not pp.piece_complete(started)


def test_fast_with_4000_pieces_and_50_peers():
    rng = random.Random(7)
    n, piece_length = 4000, 256 * 1024
    pp = PiecePicker(n, piece_length, n * piece_length - 1000, rng=rng)
    peers = list(range(50))
    for p in peers:
        pp.add_peer(p, [i for i in range(n) if rng.random() < 0.6])
    inflight: dict[int, list] = {p: [] for p in peers}
    received = set()
    start = time.perf_counter()
    for _ in range(200_000):
        p = rng.choice(peers)
        if inflight[p]:
            block = inflight[p].pop(0)
            assert block not in received
            received.add(block)
            for other in pp.block_received(p, block[0], block[1]):
                inflight[other].remove(block)
            if pp.piece_complete(block[0]):
                pp.mark_have(block[0])
        if 32 - len(inflight[p]) >= 8:
            inflight[p] += pp.pick(p, 32 - len(inflight[p]))
        if pp.is_complete():
            break
    elapsed = time.perf_counter() - start
    assert pp.is_complete()
    assert len(received) == 4000 * 16
    assert elapsed < 5.0, f"{elapsed:.2f}s for a 4000-piece download"


def test_a_refused_piece_is_not_asked_of_that_peer_until_refusals_are_forgotten():
    pp = picker(3, blocks_per_piece=2)
    pp.add_peer("S", range(3))            # a seed
    pp.add_peer("B", [0])
    first = pp.pick("S", 2)
    (index,) = set(indices(first))
    pp.requests_dropped("S", first)       # the seed rejected them while unchoking us
    pp.peer_refused("S", index, 10.0)
    again = pp.pick("S", 6)
    assert index not in indices(again) and len(again) == 4
    if index == 0:
        assert indices(pp.pick("B", 2)) == [0, 0]     # another peer may still serve it
    pp.requests_dropped("S", again)
    assert not pp.forget_refusals(10.2, 0.25)     # too young
    assert pp.forget_refusals(10.25, 0.25)
    assert index in indices(pp.pick("S", 6))


def test_a_piece_whose_requests_all_dropped_before_any_block_is_unstarted():
    # It goes back to rarest first instead of being taken, as an abandoned piece, from the
    # next peer that unchokes us (often a seed that may be sending it to someone else).
    pp = picker(4, blocks_per_piece=2)
    pp.add_peer("A", range(4))
    pp.add_peer("B", [3])
    got = pp.pick("B", 2)
    assert indices(got) == [3, 3]
    pp.requests_dropped("B", got)         # B choked us before sending anything
    assert pp.availability(3) == 2
    assert 3 not in indices(pp.pick("A", 2))   # availability 2: picked last again
    half = picker(4, blocks_per_piece=2)
    half.add_peer("A", range(4))
    half.add_peer("B", [3])
    got = half.pick("B", 2)
    half.block_received("B", 3, 0)
    half.requests_dropped("B", got[1:])   # one block arrived: still a started piece
    assert half.pick("A", 1) == [(3, BS, BS)]


def test_a_refused_piece_still_in_flight_to_that_peer_is_not_topped_up_from_it():
    # The seed rejected block 0 while blocks 1 and 2 were still on their way: the freed
    # block must not go straight back to the same seed as "a piece it is fetching".
    pp = picker(1, blocks_per_piece=4)
    pp.add_peer("S", [0])
    assert pp.pick("S", 3) == [(0, 0, BS), (0, BS, BS), (0, 2 * BS, BS)]
    pp.requests_dropped("S", [(0, 0, BS)])
    pp.peer_refused("S", 0, 1.0)
    assert pp.pick("S", 4) == []


def test_past_the_process_bound_a_torrent_with_a_piece_open_starts_no_other():
    from peer.picker import OpenPieces
    shared = OpenPieces(limit=3 * 4 * BS)               # three 4-block pieces
    a = picker(20, 4, shared=shared, seed=1)
    b = picker(20, 4, shared=shared, seed=2)
    for n in range(4):
        a.add_peer(f"a{n}", range(20))
    a_blocks = [a.pick(f"a{n}", 4) for n in range(3)]   # a piece each: the bound is reached
    assert shared.used == 3 * 4 * BS and len({i for got in a_blocks for i in indices(got)}) == 3
    assert a.pick("a3", 4) == []                        # every open piece is in flight
    b.add_peer("b0", range(20))
    b.add_peer("b1", range(20))
    first = b.pick("b0", 2)                             # none open in b: it may start one
    assert len(set(indices(first))) == 1 and shared.used == 4 * 4 * BS
    second = b.pick("b1", 4)                            # joins b's open piece, starts none
    assert set(indices(second)) == set(indices(first)) and len(second) == 2
    for n in range(4):                                  # a's first piece verified
        a.block_received("a0", *a_blocks[0][n][:2])
    a.mark_have(a_blocks[0][0][0])
    assert shared.used == 3 * 4 * BS                    # a: 2, b: 1; still at the bound
    assert b.pick("b1", 4) == []
    a.close()                                           # a stops: its pieces stop counting
    assert shared.used == 4 * BS
    assert len(set(indices(b.pick("b1", 4)))) == 1 and shared.used == 2 * 4 * BS
    a.mark_have(a_blocks[1][0][0])                      # (after close: counted nowhere shared)
    assert shared.used == 2 * 4 * BS


def test_the_process_bound_counts_every_started_piece_exactly():
    from peer.picker import OpenPieces
    rng = random.Random(5)
    shared = OpenPieces(limit=10 * 2 * BS)
    pickers = [picker(30, 2, shared=shared, seed=s, last_piece=BS + 7) for s in range(3)]
    for pp in pickers:
        for n in range(5):
            pp.add_peer(n, rng.sample(range(30), 20))
    for _ in range(3000):
        pp = rng.choice(pickers)
        peer = rng.randrange(5)
        action = rng.random()
        if action < 0.5:
            for index, begin, _ in pp.pick(peer, rng.randint(1, 4)):
                if rng.random() < 0.7:
                    pp.block_received(peer, index, begin)
                    if pp.piece_complete(index):
                        (pp.mark_have if rng.random() < 0.8 else pp.piece_failed)(index)
        elif action < 0.6:
            pp.peer_lost(peer)
        elif action < 0.65:
            pp.remove_peer(peer)
            pp.add_peer(peer, rng.sample(range(30), 20))
        open_bytes = sum(p.piece_size(i) for p in pickers for i in p._partials)
        assert shared.used == open_bytes
        assert shared.used <= shared.limit + max(p.piece_length for p in pickers) * len(pickers)


def test_pieces_left_behind_by_peers_that_went_away_do_not_stop_a_torrent_at_the_bound():
    from peer.picker import OpenPieces
    shared = OpenPieces(limit=2 * 4 * BS)
    pp = picker(20, 4, shared=shared, seed=3)
    for n, piece in enumerate((0, 1)):                 # two seeds start a piece each and leave
        pp.add_peer(f"s{n}", [piece])
        index, begin, _ = pp.pick(f"s{n}", 4)[0]
        pp.block_received(f"s{n}", index, begin)
        pp.remove_peer(f"s{n}")
    assert shared.used == shared.limit and not pp.held_back
    pp.add_peer("L", range(5, 20))                     # has none of those two pieces
    first = pp.pick("L", 4)
    assert len(first) == 4 and len(set(indices(first))) == 1    # one new piece, all of it
    pp.add_peer("M", range(5, 20))
    assert pp.pick("M", 4) == [] and pp.held_back and not pp.may_start()
    for index, begin, _ in first:
        pp.block_received("L", index, begin)
    pp.mark_have(first[0][0])
    assert pp.may_start() and len(set(indices(pp.pick("M", 4)))) == 1

"""A seed's first copy (peer.first_copy): a piece asked for by one peer is refused to
another for `window` seconds, while pieces nobody has asked for remain."""

from __future__ import annotations

from peer.first_copy import FirstCopy

A, B, C, D = (object() for _ in range(4))


def test_a_repeat_is_refused_to_another_peer_within_the_window():
    fc = FirstCopy(4, window=2.0)
    assert fc.admit(A, 0, now=10.0)
    assert not fc.admit(B, 0, now=11.9)        # A asked 1.9 s ago
    assert fc.admit(A, 0, now=11.9)            # A again (its next block, or a lost one): served
    assert fc.admit(B, 1, now=12.0)            # a piece nobody asked for
    assert fc.fresh == 2


def test_after_the_window_the_piece_is_served_to_anyone():
    fc = FirstCopy(4, window=2.0)
    assert fc.admit(A, 0, now=10.0)
    assert fc.admit(B, 0, now=12.0)
    assert not fc.admit(C, 0, now=13.0)        # B's ask restarted the window


def test_nothing_is_refused_once_every_piece_was_asked_for():
    fc = FirstCopy(3, window=2.0)
    for index, peer in enumerate((A, B, C)):
        assert fc.admit(peer, index, now=1.0)
    assert fc.fresh == 0
    assert all(fc.admit(peer, 0, now=1.1) for peer in (B, C, D))   # the endgame: serve everyone


def test_a_refused_ask_does_not_count_as_an_ask():
    fc = FirstCopy(2, window=2.0)
    assert fc.admit(A, 0, now=0.0)
    assert not fc.admit(B, 0, now=1.0)
    assert fc.admit(B, 0, now=2.0)             # 2 s after A's ask, not after B's refusal
    assert fc.fresh == 1



def test_the_window_runs_from_the_first_ask_so_a_slow_asker_holds_nothing_for_long():
    fc = FirstCopy(4, window=2.0)
    assert fc.admit(A, 0, now=0.0)
    for tick in range(1, 8):
        assert fc.admit(A, 0, now=tick * 0.5)  # a slow peer, one block every half second
    assert fc.admit(B, 0, now=2.0)             # 2 s after A's first ask: served


def test_a_noted_request_counts_as_an_ask():
    fc = FirstCopy(2, window=2.0)
    fc.note(A, 0, now=0.0)                     # served without asking the window (no BEP 6)
    assert fc.fresh == 1
    assert not fc.admit(B, 0, now=1.0)


def test_a_peer_that_asks_again_at_once_is_served_and_never_refused_again():
    fc = FirstCopy(8, window=2.0, reask=0.2)
    assert not fc.refuse(A, 0, 0, now=10.0)             # A's first ask
    assert fc.refuse(B, 0, 16384, now=10.1)              # B: A has it coming
    assert not fc.refuse(B, 0, 16384, now=10.15)         # asked again within 0.2 s: served
    assert not fc.refuse(B, 0, 32768, now=10.2)          # and never refused again
    assert fc.fresh == 7


def test_a_peer_that_took_the_hint_is_refused_again_in_the_window():
    fc = FirstCopy(8, window=2.0, reask=0.2)
    assert not fc.refuse(A, 0, 0, now=10.0)
    assert fc.refuse(B, 0, 0, now=10.1)
    assert fc.refuse(B, 0, 0, now=10.4)                  # 0.3 s later: still A's piece
    fc.forget(B)                                          # B left; a new B starts afresh
    assert fc.refuse(B, 0, 0, now=10.5)


def test_an_exempt_peer_is_served_and_its_ask_counts():
    fc = FirstCopy(8, window=2.0)
    assert not fc.refuse(A, 3, 0, now=1.0, exempt=True)  # e.g. no BEP 6
    assert fc.fresh == 7
    assert fc.refuse(B, 3, 0, now=1.5)                   # A's ask holds the piece for 2 s


def test_a_peer_that_leaves_frees_the_pieces_it_asked_for_first():
    fc = FirstCopy(4, window=2.0)
    assert fc.admit(A, 0, now=10.0) and fc.admit(A, 2, now=10.0) and fc.admit(C, 1, now=10.0)
    fc.forget(A)                               # A disconnected: nothing of 0 or 2 is coming
    assert fc.admit(B, 0, now=10.5) and fc.admit(B, 2, now=10.5)
    assert not fc.admit(D, 1, now=10.5)        # C is still there
    assert not fc.admit(D, 0, now=10.6)        # B's ask of 0 counts as the first now
    assert fc.fresh == 1                       # forgetting A made no piece fresh again

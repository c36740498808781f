"""A seed's first copy: send every piece once before sending any piece twice. Pure, no I/O.

Leechers choose the rarest pieces, but they cannot see each other's requests: two of
them often pick the same piece from the seed within the same half second, before either
has announced it. In a rate-capped swarm the seed's upload is the scarce resource (the
fluid bound is F / u_s), so each such collision costs the whole swarm time. Only the
seed sees both requests. While it still has pieces nobody has asked for, it turns down
(BEP 6 reject) a piece that another peer first asked for within the last `window` seconds
(time for the piece to arrive there and start spreading); the refused peer picks another
piece, and gets this one from the first peer soon after. compare at N = 32: a 2 s window
1.25-1.26 of the bound, 0.5 s 1.27-1.33. The refused peer asks the seed again a quarter
of a second later (peer.torrent), so it never idles for long.

Once every piece has been asked for at least once, nothing is refused: from then on
repeats are the endgame and peers catching up, which a seed should serve.

Kept per piece, not per block (a 100 GB torrent has millions of blocks): it is whole
pieces that two peers collide on, and a peer asks for a piece's blocks together.
"""

from __future__ import annotations

from array import array


class FirstCopy:
    __slots__ = ("window", "fresh", "_asker", "_asked_at")

    def __init__(self, num_pieces: int, window: float = 2.0) -> None:
        self.window = window
        self.fresh = num_pieces                          # pieces nobody has asked for yet
        self._asker: list[int] = [0] * num_pieces        # id() of the last peer to ask; 0: none
        self._asked_at = array("d", bytes(8 * num_pieces))

    def admit(self, peer: object, index: int, now: float) -> bool:
        """True: serve `peer` this piece's block. False: refuse it, another peer has it coming.

        The window runs from the asker's first request for the piece, not its latest: a
        slow asker must not keep a piece from everyone else for as long as it takes."""
        asker, me = self._asker[index], id(peer)
        if asker == me:
            return True
        if asker and self.fresh and now - self._asked_at[index] < self.window:
            return False
        self.note(peer, index, now)
        return True

    def note(self, peer: object, index: int, now: float) -> None:
        """A request served whatever the window says (a peer we never refuse): it counts."""
        if not self._asker[index]:
            self.fresh -= 1
        elif self._asker[index] == id(peer):
            return
        self._asker[index] = id(peer)
        self._asked_at[index] = now

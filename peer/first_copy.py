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

Some peers ignore the hint and ask for a refused block again at once (aria2c did, within a
millisecond: 20,000 rejects a second in a mixed swarm). A peer that asks again within
`reask` seconds is served, and never refused again; ours waits a quarter of a second.

The window is kept per piece, not per block (a 100 GB torrent has millions of blocks): it
is whole pieces that two peers collide on, and a peer asks for a piece's blocks together.
"""

from __future__ import annotations

from array import array


_GONE = -1      # `_asker` of a piece whose first asker left: asked for, but nobody's now


class FirstCopy:
    __slots__ = ("window", "reask", "fresh", "_asker", "_asked_at", "_refused", "_deaf")

    def __init__(self, num_pieces: int, window: float = 2.0, reask: float = 0.2) -> None:
        self.window = window
        self.reask = reask
        self.fresh = num_pieces                          # pieces nobody has asked for yet
        self._asker: list[int] = [0] * num_pieces        # id() of the last peer to ask; 0: none
        self._asked_at = array("d", bytes(8 * num_pieces))
        self._refused: dict[object, dict[tuple[int, int], float]] = {}   # peer -> block -> when
        self._deaf: set[object] = set()                  # peers that ignore refusals

    def refuse(self, peer: object, index: int, begin: int, now: float, *,
               exempt: bool = False) -> bool:
        """True: turn down `peer`'s request for this block (a BEP 6 reject).

        `exempt`: a peer that is never refused (one without BEP 6, or one close to done);
        its request still counts as the piece's first ask."""
        if not self.fresh:
            return False
        if exempt or peer in self._deaf:
            self.note(peer, index, now)
            return False
        if self.admit(peer, index, now):
            return False
        refused = self._refused.setdefault(peer, {})
        last = refused.get((index, begin))
        if last is not None and now - last < self.reask:     # it ignores refusals
            self._deaf.add(peer)
            del self._refused[peer]
            self.note(peer, index, now)
            return False
        if len(refused) >= 1024:          # only the last `reask` seconds matter
            for block in [b for b, when in refused.items() if now - when >= self.reask]:
                del refused[block]
        refused[(index, begin)] = now
        return True

    def forget(self, peer: object) -> None:
        """`peer` is gone: drop what was kept about it, and end its windows, so that the
        pieces it asked for first are not kept from the others for nothing."""
        self._refused.pop(peer, None)
        self._deaf.discard(peer)
        if not self.fresh:
            return
        asker, me, i = self._asker, id(peer), -1
        try:
            while True:
                i = asker.index(me, i + 1)      # (a C scan: 0.4 ms for 400,000 pieces)
                asker[i] = _GONE
                self._asked_at[i] = 0.0
        except ValueError:
            pass

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

"""A seed's first copy: send every block once before sending any block twice. Pure, no I/O.

Leechers choose the rarest pieces, but they cannot see each other's requests: two of
them often pick the same piece from the seed within the same half second, before either
has announced it. In a rate-capped swarm the seed's upload is the scarce resource (the
fluid bound is F / u_s), so each such collision costs the whole swarm time. Only the
seed sees both requests. While it still has blocks nobody has asked for, it turns down
(BEP 6 reject) a block that another peer asked for within the last `window` seconds; the
refused peer picks another piece, and gets this one from the first peer soon after.

Once every block has been asked for at least once, nothing is refused: from then on
repeats are the endgame and peers catching up, which a seed should serve.
"""

from __future__ import annotations

from typing import Hashable


class FirstCopy:
    __slots__ = ("window", "fresh", "_asker", "_asked_at")

    def __init__(self, total_blocks: int, window: float = 2.0) -> None:
        self.window = window
        self.fresh = total_blocks                        # blocks nobody has asked for yet
        self._asker: list[Hashable | None] = [None] * total_blocks
        self._asked_at = [0.0] * total_blocks

    def admit(self, peer: Hashable, block: int, now: float) -> bool:
        """True: serve `peer` this block (numbered across the torrent). False: refuse it."""
        asker = self._asker[block]
        if asker is None:
            self.fresh -= 1
        elif asker != peer and self.fresh and now - self._asked_at[block] < self.window:
            return False
        self._asker[block] = peer
        self._asked_at[block] = now
        return True

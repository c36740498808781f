"""What the user sees while a torrent runs: a bar on a terminal, log lines elsewhere."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from common.rates import format_bytes, format_rate
from peer.torrent import Status


def format_eta(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:d}:{s:02d}"


def status_line(st: Status) -> str:
    return (f"{st.fraction * 100:5.1f}%  {format_bytes(st.total - st.left)}/{format_bytes(st.total)}"
            f"  down {format_rate(st.down_rate)}  up {format_rate(st.up_rate)}"
            f"  peers {st.peers}  ETA {format_eta(st.eta)}")


class ProgressReporter:
    """Redraws one line on a TTY (width 30 bar); writes a plain line every `every` s otherwise."""

    def __init__(self, out: TextIO = sys.stderr, every: float = 5.0, width: int = 30) -> None:
        self.out = out
        self.tty = out.isatty()
        self.every = every
        self.width = width
        self._last = 0.0
        self._drawn = False
        self._check_started: float | None = None

    def update(self, st: Status, force: bool = False) -> None:
        now = time.monotonic()
        if self.tty:
            filled = int(st.fraction * self.width)
            bar = "#" * filled + "." * (self.width - filled)
            self.out.write(f"\r[{bar}] {status_line(st)}  ")
            self.out.flush()
            self._drawn = True
        elif force or now - self._last >= self.every:
            self._last = now
            self.out.write(f"{st.name}: {status_line(st)}\n")
            self.out.flush()

    def checking(self, name: str, done: int, total: int) -> None:
        """The check of what is already on disk: pieces hashed so far (from 1 s on: a quick
        check says nothing)."""
        now = time.monotonic()
        if self._check_started is None:
            self._check_started = now
        if now - self._check_started < 1.0:
            return
        if self.tty:
            self.out.write(f"\r{name}: checking {done}/{total} pieces  ")
            self.out.flush()
            self._drawn = True
        elif now - self._last >= self.every:
            self._last = now
            self.out.write(f"{name}: checking {done}/{total} pieces\n")
            self.out.flush()

    def finish(self) -> None:
        if self.tty and self._drawn:
            self.out.write("\n")
            self.out.flush()
            self._drawn = False

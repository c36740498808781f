"""Rate limiting and rate measurement, pure: the caller passes `now` and does the sleeping.

Also parses and formats the human byte quantities used on command lines and in status output.
"""

from __future__ import annotations

import math
import re
from collections import deque

__all__ = ["TokenBucket", "RateMeter", "parse_rate", "parse_size", "format_bytes", "format_rate"]


class TokenBucket:
    """A byte budget refilled at `rate` per second, shared by every connection of a direction.

    `reserve` always grants the request and lets the balance go negative; the returned delay
    is how long the caller must wait before sending, so concurrent senders queue up behind each
    other and the long-run total never exceeds `rate` x time (+ `burst` saved while idle).
    The bucket starts empty so a cap holds from the very first second.
    """

    __slots__ = ("_rate", "_burst", "_tokens", "_last")

    def __init__(self, rate: float | None, burst: float | None = None) -> None:
        self._rate = 0.0
        self._burst = 0.0
        self._tokens = 0.0
        self._last: float | None = None
        self.set_rate(rate, burst)

    @property
    def rate(self) -> float | None:
        """Bytes per second, or None when unlimited."""
        return self._rate or None

    def set_rate(self, rate: float | None, burst: float | None = None) -> None:
        """Change the limit at run time; None (or 0) removes it. Default burst is 0.1 s of rate."""
        if rate is not None and (not math.isfinite(rate) or rate < 0):
            raise ValueError(f"rate must be a finite number >= 0 or None, got {rate!r}")
        if burst is not None and (not math.isfinite(burst) or burst < 0):
            raise ValueError(f"burst must be a finite number >= 0 or None, got {burst!r}")
        self._rate = float(rate or 0.0)
        self._burst = float(burst) if burst is not None else self._rate * 0.1
        self._tokens = min(self._tokens, self._burst)

    def reserve(self, n: int, now: float) -> float:
        """Take `n` tokens; return the seconds to wait before using them (0.0 if unlimited)."""
        if not self._rate:
            return 0.0
        if self._last is not None and now > self._last:
            self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        if self._last is None or now > self._last:
            self._last = now
        self._tokens -= n
        return -self._tokens / self._rate if self._tokens < 0 else 0.0


class RateMeter:
    """Bytes per second over the last `window` seconds, from per-`resolution` buckets.

    The window covers the current, partly elapsed bucket plus the whole ones before it, and
    the divisor is exactly the time those buckets span, so a steady flow reads exactly.
    A flow that comes back after a whole window of silence starts afresh for `age` and
    `early_rate`, which then reads its true speed until the window has seen only the new
    flow: `rate`, divided by the whole window, read a tenth of it for the first second, and
    a peer's request pipeline, sized by it, took the window's length to grow back after a
    long choke. `rate` itself still averages the window, so a peer that sends in bursts is
    ranked (choker) by its average, not by its last burst.
    """

    __slots__ = ("_resolution", "_slots", "_span", "_buckets", "_start", "_flow_start",
                 "_since_flow", "_last_add", "total")

    def __init__(self, window: float = 10.0, resolution: float = 1.0) -> None:
        if resolution <= 0 or window < resolution:
            raise ValueError(f"need 0 < resolution <= window, got {resolution}, {window}")
        self._resolution = resolution
        self._slots = max(1, round(window / resolution))
        self._span = self._slots * resolution           # the window as `rate` covers it
        self._buckets: deque[list[int]] = deque()      # [bucket number, bytes], oldest first
        self._start: float | None = None                # the first add
        self._flow_start = 0.0                          # the first add, or the first after a window of silence
        self._since_flow = 0                            # bytes added since then
        self._last_add = 0.0
        self.total = 0                                  # bytes ever added

    def add(self, n: int, now: float) -> None:
        """Count `n` bytes transferred at time `now`."""
        if self._start is None:
            self._start = self._flow_start = now
        elif now - self._last_add >= self._span:
            self._flow_start, self._since_flow = now, 0
        self._last_add = max(self._last_add, now)     # (a clock step back fakes no return)
        self._since_flow += n
        self.total += n
        slot = math.floor(now / self._resolution)
        buckets = self._buckets
        if buckets and buckets[-1][0] >= slot:         # same bucket (or a clock hiccup)
            buckets[-1][1] += n
        else:                                          # a new bucket: the oldest may go
            buckets.append([slot, n])
            self._expire(slot)

    def age(self, now: float) -> float:
        """Seconds since the flow started, or came back after a window of silence (0 before
        any add)."""
        return 0.0 if self._start is None else now - self._flow_start

    def early_rate(self, now: float) -> float:
        """Bytes per second since the flow (re)started, during its first two resolutions, or
        for a flow back after a window of silence, until `rate` has seen only it (0 after).

        In its first second `rate` divides by a whole second (so one early add makes no
        spike) and reads low; a caller that must react quickly takes the larger of the two."""
        if self._start is None:
            return 0.0
        age = now - self._flow_start
        returned = self._flow_start > self._start     # came back after a window of silence
        if not 0.05 <= age <= (self._span if returned else 2 * self._resolution):
            return 0.0
        return self._since_flow / age

    def rate(self, now: float) -> float:
        """Average bytes per second over the window ending at `now`."""
        if self._start is None:
            return 0.0
        slot = math.floor(now / self._resolution)
        self._expire(slot)
        first = slot - self._slots + 1
        since = max(self._start, first * self._resolution)
        span = max(now - since, self._resolution)      # floor: no spike right after a first add
        return sum(n for number, n in self._buckets if first <= number <= slot) / span

    def _expire(self, slot: int) -> None:
        first = slot - self._slots + 1
        buckets = self._buckets
        while buckets and buckets[0][0] < first:
            buckets.popleft()


# ---------------------------------------------------------------------------------------------
# Human quantities

_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
    "ki": 1024, "kib": 1024, "mi": 1024**2, "mib": 1024**2, "gi": 1024**3, "gib": 1024**3,
}
_SIZE_RE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)\s*", re.IGNORECASE)
_UNITS_HELP = "B, k/kB, M/MB, G/GB (powers of 1000) or KiB, MiB, GiB (powers of 1024)"


def parse_size(text: str) -> int:
    """Bytes from "1000", "100k", "1.5MB", "256KiB", "1GiB" (k/M/G = 1000^n, Ki/Mi/Gi = 1024^n)."""
    match = _SIZE_RE.fullmatch(text)
    unit = match and _UNITS.get(match.group(2).lower())
    if not match or unit is None:
        raise ValueError(f"invalid size {text!r}: expected a number with an optional unit "
                         f"{_UNITS_HELP}, e.g. '256KiB'")
    return round(float(match.group(1)) * unit)


def parse_rate(text: str) -> int:
    """Bytes per second from "1000", "100k", "1.5MB", "500KiB", "2MiB/s" (k/M/G = 1000^n)."""
    size = re.sub(r"\s*/\s*s\s*$", "", text, flags=re.IGNORECASE)
    try:
        return parse_size(size)
    except ValueError:
        raise ValueError(f"invalid rate {text!r}: expected a number with an optional unit "
                         f"{_UNITS_HELP}, e.g. '2MiB'") from None


_BINARY = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def format_bytes(n: float) -> str:
    """ "512 B", "1.5 KiB", "12.3 MiB": one decimal, binary units."""
    if n < 0:
        return "-" + format_bytes(-n)
    if round(n) < 1024:
        return f"{n:.0f} B"
    value = float(n)
    for unit in _BINARY[1:]:
        value /= 1024
        if round(value, 1) < 1024 or unit == _BINARY[-1]:
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")


def format_rate(bytes_per_second: float) -> str:
    """ "4.0 MiB/s" """
    return format_bytes(bytes_per_second) + "/s"

"""How fast is this machine right now? Two small probes, printed beside a benchmark's figures.

These VMs move between a fast and a slow phase over hours. In the slow phase, system calls
and fresh memory cost more: on 2026-11-27 opentracker needed 9.2-10.7 us of CPU per UDP
announce, where it had needed about 4.5, and libtorrent's leecher 3.3-4.0 s of CPU per GiB,
where it had needed 1.8. Ratios between clients measured in one run stay meaningful, but
they are not the same in both phases: swarm's single link read x0.97-x1.13 of
libtorrent's time in the fast phase and x0.66-x0.76 in the slow one. This line says which
phase a run was in, so that runs can be compared.

    python benchmarks/machine_probe.py
"""

from __future__ import annotations

import mmap
import socket
import time

HOST = "127.0.0.1"
PAGE = mmap.PAGESIZE


def udp_round_trip_us(count: int = 10_000) -> float:
    """One datagram to a second socket and back over loopback, in one thread: four system
    calls and two trips through the network stack, as a tracker's announce costs."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as a, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as b:
        a.bind((HOST, 0))
        b.bind((HOST, 0))
        a.settimeout(1.0)
        b.settimeout(1.0)
        to_a, to_b = a.getsockname(), b.getsockname()
        payload = bytes(98)     # the size of a UDP announce
        start = time.perf_counter()
        for _ in range(count):
            a.sendto(payload, to_b)
            b.recv(2048)
            b.sendto(payload, to_a)
            a.recv(2048)
        return (time.perf_counter() - start) / count * 1e6


def fresh_page_us(size: int = 64 * 2**20) -> float:
    """Touch every page of fresh anonymous memory once: what a client pays the kernel for
    memory it has not used before (page cache and buffers alike)."""
    area = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE)
    try:
        start = time.perf_counter()
        for offset in range(0, size, PAGE):
            area[offset] = 1
        return (time.perf_counter() - start) / (size // PAGE) * 1e6
    finally:
        area.close()


def probe_line() -> str:
    """Three of each probe: the round trip is steady within a phase (15.0-16.4 us in one slow
    hour), fresh memory is not (2.5-3.1 us per page, with single passes at 10-14 us)."""
    trips = sorted(udp_round_trip_us(3000) for _ in range(3))
    pages = sorted(fresh_page_us() for _ in range(3))
    return (f"machine now: UDP loopback round trip {trips[1]:.1f} us (median of 3), "
            f"fresh memory {pages[0]:.2f}-{pages[-1]:.2f} us per {PAGE // 1024} KiB page")


if __name__ == "__main__":
    print(probe_line())

"""One seed, one leecher, one loopback link: how fast is swarm next to aria2c and libtorrent?

    python benchmarks/single_link.py [--size 1GiB] [--piece-length 256KiB] [--rounds 1]
                                     [--pairs swarm:swarm,aria2c:aria2c,...] [--timeout 600]

Every pair downloads the same file through a swarm-tracker on 127.0.0.1, with DHT, LSD,
PEX, encryption and uTP off in the other clients. Pairs alternate within each round, so a
slow moment of the machine hits them all alike. For each transfer it reports wall time
(leecher start to leecher exit, including its start-up and first announce), MB/s, and the
CPU seconds of each side: the leecher's from its rusage (os.wait4), the seed's as the
growth of its /proc CPU time during the transfer (its start-up hash check left out).
Then the ratios of swarm to libtorrent and to aria2c. Data lives in a temporary folder
that is removed at the end.

aria2c works in one-second ticks: about 3 s of every aria2c transfer is start-up (first
announce after 1 s, an encrypted handshake attempt that times out after 1 s before the
plain one) and the `stopped` announce at exit. Use a size where that does not matter.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common.rates import parse_size  # noqa: E402
from interop_clients import (  # noqa: E402
    ProcessError, ProcessSet, have_tool, precompile, sha1_file, start_leecher, start_seeder, start_tracker,
    swarm_create,
)
from machine_probe import probe_line  # noqa: E402

# Before each leecher starts, the machine settles this long, the same for every client. On
# this VM, memory freed by deleting the previous round's output is handed back to the host
# within a few seconds, and writing 1 GiB into the page cache then costs the leecher about
# 1 s more kernel time. Without the wait, a client whose seed starts at once (libtorrent in
# seed mode) had its leecher writing into the still-warm pages, and one whose seed checks
# the data first (swarm) did not: swarm/libtorrent x1.30 that way in one run, x1.00 with it.
SETTLE_SECONDS = 5.0

DEFAULT_PAIRS = ("swarm:swarm", "aria2c:aria2c", "libtorrent:libtorrent", "swarm:aria2c", "aria2c:swarm")
def size_arg(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


@dataclass
class Result:
    seeder: str
    leecher: str
    wall: float
    seed_cpu: float
    leech_cpu: float
    size: int

    @property
    def mb_per_s(self) -> float:
        return self.size / 1e6 / self.wall


def write_random(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as out:
        left = size
        while left:
            n = min(left, 8 << 20)
            out.write(os.urandom(n))
            left -= n


def run_pair(procs: ProcessSet, tracker, torrent: Path, data: Path, digest: str,
             seeder: str, leecher: str, workdir: Path, timeout: float) -> Result:
    """One transfer; every process it starts is stopped before it returns."""
    outdir = workdir / f"out-{seeder}-{leecher}"
    try:
        with ProcessSet() as pair:
            seed, _ = start_seeder(pair, seeder, torrent, data, name=f"{seeder}-seed")
            tracker.wait_for_swarm(torrent, complete=1, timeout=60)
            os.sync()   # no writeback of earlier rounds' files running during this transfer
            time.sleep(SETTLE_SECONDS)
            seed_cpu_before = seed.cpu_seconds()
            client = start_leecher(pair, leecher, torrent, outdir, name=f"{leecher}-get")
            client.wait_complete(timeout)
            seed_cpu = seed.cpu_seconds() - seed_cpu_before
            wall = client.proc.ended - client.proc.started
            leech_cpu = client.proc.cpu_seconds()
        got = sha1_file(outdir / data.name)
        if got != digest:
            raise SystemExit(f"{seeder} -> {leecher}: the downloaded file differs from the original")
        # Both have stopped and said so to the tracker: the next pair starts from an empty
        # swarm. A client that left without announcing `stopped` only costs the next one
        # a refused connection, so this is not fatal.
        try:
            tracker.wait_for_swarm(torrent, complete=0, timeout=10)
        except ProcessError as exc:
            print(f"note: {seeder} -> {leecher}: {exc}", flush=True)
        return Result(seeder, leecher, wall, seed_cpu, leech_cpu, data.stat().st_size)
    finally:
        shutil.rmtree(outdir, ignore_errors=True)


def report(results: list[Result], size: int) -> None:
    by_pair: dict[tuple[str, str], list[Result]] = {}
    for r in results:
        by_pair.setdefault((r.seeder, r.leecher), []).append(r)

    def med(rs: list[Result], attr: str) -> float:
        return statistics.median(getattr(r, attr) for r in rs)

    print(f"\nsingle link, {size / 2**20:.0f} MiB, median of {max(len(v) for v in by_pair.values())} run(s)")
    print(f"{'seed -> leecher':26} {'wall s':>8} {'MB/s':>8} {'seed CPU s':>11} {'leech CPU s':>12}")
    rows = {}
    for (seeder, leecher), rs in by_pair.items():
        rows[(seeder, leecher)] = (med(rs, "wall"), med(rs, "seed_cpu"), med(rs, "leech_cpu"))
        wall, seed_cpu, leech_cpu = rows[(seeder, leecher)]
        print(f"{seeder + ' -> ' + leecher:26} {wall:8.2f} {size / 1e6 / wall:8.1f} {seed_cpu:11.2f} {leech_cpu:12.2f}")

    mine = rows.get(("swarm", "swarm"))
    if mine:
        print()
        for other in ("libtorrent", "aria2c"):
            theirs = rows.get((other, other))
            if theirs:
                print(f"swarm / {other}: wall x{mine[0] / theirs[0]:.2f}, "
                      f"seed CPU x{mine[1] / max(theirs[1], 1e-3):.2f}, "
                      f"leecher CPU x{mine[2] / max(theirs[2], 1e-3):.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=size_arg, default=parse_size("1GiB"))
    parser.add_argument("--piece-length", type=size_arg, default=parse_size("256KiB"))
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--pairs", default=",".join(DEFAULT_PAIRS),
                        help="comma-separated SEED:LEECHER, clients swarm, aria2c, libtorrent")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per transfer")
    parser.add_argument("--tracker", choices=("http", "udp"), default="http",
                        help="which of swarm-tracker's protocols the torrent names")
    parser.add_argument("--workdir", type=Path, default=None, help="keep data here (default: a temp dir)")
    args = parser.parse_args(argv)

    pairs = [tuple(p.split(":")) for p in args.pairs.split(",") if p]
    for pair in pairs:
        if len(pair) != 2 or not set(pair) <= {"swarm", "aria2c", "libtorrent"}:
            parser.error(f"bad pair {':'.join(pair)!r}")
    for tool in {c for pair in pairs for c in pair} - {"swarm"}:
        if not have_tool(tool):
            parser.error(f"{tool} is not installed")

    precompile()    # a swarm start counts without the compiling (see precompile)
    workdir = Path(tempfile.mkdtemp(prefix="swarm-bench-", dir=args.workdir))
    results: list[Result] = []
    try:
        data = workdir / "seed" / "payload.bin"
        t0 = time.monotonic()
        write_random(data, args.size)
        digest = sha1_file(data)
        print(f"data: {args.size} bytes in {time.monotonic() - t0:.1f}s; tracker over {args.tracker}", flush=True)
        print(probe_line(), flush=True)
        with ProcessSet() as procs:
            tracker = start_tracker(procs, interval=5)
            announce = tracker.http if args.tracker == "http" else tracker.udp
            torrent = swarm_create(data, [announce], workdir / "payload.torrent",
                                   piece_length=args.piece_length)
            for round_no in range(args.rounds):
                for seeder, leecher in pairs:
                    result = run_pair(procs, tracker, torrent, data, digest, seeder, leecher,
                                      workdir, args.timeout)
                    results.append(result)
                    print(f"round {round_no + 1}: {seeder:>10} -> {leecher:<10} {result.wall:7.2f}s "
                          f"{result.mb_per_s:7.1f} MB/s  CPU seed {result.seed_cpu:6.2f}s "
                          f"leecher {result.leech_cpu:6.2f}s", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(probe_line(), flush=True)
    report(results, args.size)
    return 0


if __name__ == "__main__":
    sys.exit(main())

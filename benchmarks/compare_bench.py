"""Distribution time against the fluid-model bound: swarm in every mode, and (for comparison)
whole swarms of aria2c or libtorrent, all on 127.0.0.1 with the same file and caps.

Target: a 32 MiB file, every upload capped at 4 MiB/s (seed, origin, peers), N = 8 and 32:
P2P within 1.3x of max(F/u_s, N F/(u_s + N u)); the seed uploads about 1-2 copies.

Run: python benchmarks/compare_bench.py [--peers 8,32] [--modes central,p2p,hybrid]
                                         [--others aria2c,libtorrent] [--json out.json]

swarm runs go through peer.compare.run_once (peers gated with --wait-for, so start-up is
not timed). aria2c and libtorrent cannot wait for a gate: their leechers are launched
together and timed from the first launch ("launch") and from the moment the last one
listens ("ready"); the truth lies between, and aria2c starts in milliseconds anyway.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from common.metainfo import create_metainfo  # noqa: E402
from common.rates import parse_rate, parse_size  # noqa: E402
from peer.compare import PIECE_LENGTH, Capacities, RunResult, p2p_bound, run_once  # noqa: E402
from interop_clients import precompile  # noqa: E402



def swarm_run(mode: str, n: int, source: Path, caps: Capacities, work: Path, timeout: float) -> dict:
    r: RunResult = run_once(mode, n, source, caps, work / f"swarm-{mode}-{n}", timeout)
    return {"client": "swarm", "mode": mode, "peers": n, "time": r.all_complete, "median": r.median,
            "bound": r.bound, "ratio": r.ratio, "server_copies": r.server_bytes / r.file_size,
            "seed_copies": r.seed_bytes / r.file_size, "origin_copies": r.origin_bytes / r.file_size,
            "peer_copies": r.peer_bytes / r.file_size, "ok": r.ok, "error": r.error, "times": r.times}


def foreign_run(kind: str, n: int, source: Path, caps: Capacities, work: Path, timeout: float) -> dict:
    """A whole swarm of one other client: its seed, N of its leechers, swarm's tracker."""
    import interop_clients as ic

    work.mkdir(parents=True)
    rate = int(caps.peer_up or 0)
    with ic.ProcessSet() as procs:
        tracker = ic.start_tracker(procs)
        torrent = work / "file.torrent"
        torrent.write_bytes(create_metainfo(source, [tracker.http], piece_length=PIECE_LENGTH))
        ic.start_seeder(procs, kind, torrent, source, upload_limit=int(caps.server_up or 0))
        launched = time.monotonic()
        leechers, ready = [], []
        for i in range(n):
            out = work / f"peer{i + 1}"
            out.mkdir()
            if kind == "aria2c":
                port = ic.free_port()
                argv = ["aria2c", *ic.aria2_options(port, torrent, work), "--seed-ratio=0.0", "-d", out,
                        f"--max-overall-upload-limit={rate}", torrent]
                done = ic.ARIA2_COMPLETE
            else:
                argv = ic.lt_command("get", torrent, out, "--port", 0, "--upload-limit", rate, "--keep-seeding")
                done = ic.COMPLETE
            leechers.append((procs.start(argv, name=f"{kind}-{i + 1}"), done))
        for proc, _ in leechers:
            proc.wait_for(ic.ARIA2_LISTENING if kind == "aria2c" else ic.PEER_READY, 30)
            ready.append(time.monotonic())
        finished = []
        for proc, done in leechers:
            proc.wait_for(done, max(1.0, launched + timeout - time.monotonic()))
            finished.append(time.monotonic())
        original = ic.sha1_file(source)
        ok = all(ic.sha1_file(work / f"peer{i + 1}" / source.name) == original for i in range(n))
    size = source.stat().st_size
    bound = p2p_bound(size, n, caps.server_up, caps.peer_up, caps.d_min)
    t_launch, t_ready = max(finished) - launched, max(finished) - max(ready)
    return {"client": kind, "mode": "p2p", "peers": n, "time": t_launch, "time_from_ready": t_ready,
            "bound": bound, "ratio": t_launch / bound, "ratio_from_ready": t_ready / bound,
            "median": statistics.median(f - launched for f in finished), "ok": ok, "error": None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peers", default="8,32")
    parser.add_argument("--modes", default="central,p2p,hybrid")
    parser.add_argument("--size", default="32MiB")
    parser.add_argument("--rate", default="4MiB", help="upload cap of seed, origin and every peer")
    parser.add_argument("--others", default="", help="comma list: aria2c,libtorrent (run with N = 8)")
    parser.add_argument("--others-peers", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    precompile()    # the peers it starts read compiled modules, as a normal install's do

    rate = parse_rate(args.rate)
    caps = Capacities(peer_up=rate, server_up=rate, d_min=None)
    size = parse_size(args.size)
    work = Path(tempfile.mkdtemp(prefix="swarm-bench-"))
    rows = []
    try:
        source = work / "file.bin"
        source.write_bytes(os.urandom(size))
        for n in [int(x) for x in args.peers.split(",") if x]:
            for mode in [m for m in args.modes.split(",") if m]:
                rows.append(swarm_run(mode, n, source, caps, work, args.timeout))
                print(_line(rows[-1]), flush=True)
        for kind in [k for k in args.others.split(",") if k]:
            rows.append(foreign_run(kind, args.others_peers, source, caps, work / kind, args.timeout))
            print(_line(rows[-1]), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


def _line(r: dict) -> str:
    if r["time"] is None:
        return f"{r['client']:10} {r['mode']:8} N={r['peers']:<3} FAILED: {r['error']}"
    text = (f"{r['client']:10} {r['mode']:8} N={r['peers']:<3} all done {r['time']:7.2f} s"
            f"  median {r['median']:7.2f} s  bound {r['bound']:6.2f} s  ratio {r['ratio']:.2f}")
    if "server_copies" in r:
        text += (f"  server {r['server_copies']:.2f} copies (seed {r['seed_copies']:.2f},"
                 f" origin {r['origin_copies']:.2f}), peers {r['peer_copies']:.2f}")
    if "time_from_ready" in r:
        text += f"  (from last ready: {r['time_from_ready']:.2f} s, ratio {r['ratio_from_ready']:.2f})"
    return text + ("" if r["ok"] else "  NOT OK")


if __name__ == "__main__":
    main()

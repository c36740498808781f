"""Scale on one machine: one seed and many leechers, and one daemon seeding many torrents.

Three measurements, all on 127.0.0.1 through a real `swarm-tracker`, no rate caps:

  processes  1 `swarm-peer seed` + N `swarm-peer get` processes (the realistic case: each
             peer is a program of its own). Time until every copy is complete, peak RSS of
             each peer process (VmHWM, read while it runs and once more just before it stops).
  inprocess  the same swarm, but the N leechers are N `Client`s in one event loop of one
             worker process: its peak RSS / N is the cost of a peer without an interpreter.
  daemon     one `swarm-peer share` seeding T small files (1-4 MiB) as T torrents: its RSS
             once all are verified and seeding (target < 150 MB), then a few downloads from it.

Leechers start behind a gate file (`--wait-for`, or an asyncio.Event in-process) so Python
start-up is not timed; they keep seeding until every copy is complete. Every copy is checked
(size and sha1) against the original. Everything runs under one overall deadline; every child
is killed and the temporary folder removed at the end.

Run: python benchmarks/many_peers.py [--peers 100] [--size 64MiB] [--torrents 100]
                                     [--variants processes,inprocess,daemon] [--timeout 1200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from common.metainfo import create_metainfo, load_metainfo  # noqa: E402
from common.rates import format_bytes, parse_size  # noqa: E402
from common.tracker_proto import build_scrape_url, decode_scrape_response, scrape_url_for  # noqa: E402
from interop_clients import make_file, precompile  # noqa: E402
from machine_probe import probe_line  # noqa: E402
from peer.processes import sha1_file  # noqa: E402

HOST = "127.0.0.1"
MiB = 1024 * 1024
COMPLETE = re.compile(r"^complete: .* \(([\d.]+) s\)$", re.M)


class BenchError(Exception):
    """The benchmark could not run (a process would not start, the deadline passed): one line."""


class Deadline:
    """One overall time budget shared by every wait in the run."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


# -- processes --------------------------------------------------------------------------------

class Children:
    """Every process the benchmark starts: killed (whole session) and reaped with its rusage."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []
        self.cpu: dict[int, float] = {}      # pid -> user + system seconds, once reaped

    def start(self, args: list, log: Path) -> subprocess.Popen:
        env = dict(os.environ, SWARM_NO_LSD="1", PYTHONUNBUFFERED="1")
        with open(log, "wb") as out:
            proc = subprocess.Popen([sys.executable, *map(str, args)], stdout=out, stderr=subprocess.STDOUT,
                                    env=env, cwd=ROOT, start_new_session=True)
        self.procs.append(proc)
        return proc

    def stop(self, procs: list[subprocess.Popen] | None = None, grace: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after `grace` s; reap with os.wait4 to keep each one's CPU time."""
        procs = list(self.procs if procs is None else procs)
        for proc in procs:
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + grace
        pending = [p for p in procs if p.returncode is None]
        while pending:
            still = []
            for proc in pending:
                try:
                    pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                except ChildProcessError:
                    proc.returncode = proc.returncode if proc.returncode is not None else -1
                    continue
                if pid == 0:
                    still.append(proc)
                    continue
                proc.returncode = os.waitstatus_to_exitcode(status)
                self.cpu[proc.pid] = usage.ru_utime + usage.ru_stime
            pending = still
            if pending and time.monotonic() > deadline:
                for proc in pending:
                    _signal_group(proc, signal.SIGKILL)
                deadline = time.monotonic() + 5
            if pending:
                time.sleep(0.05)
        for proc in procs:
            _signal_group(proc, signal.SIGKILL)   # anything the peer itself left in its session


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def memory(pid: int) -> tuple[int, int]:
    """(current RSS, peak RSS) of a live process in bytes, from /proc; (0, 0) once it is gone."""
    fields = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) * 1024
    except (FileNotFoundError, ProcessLookupError, ValueError):
        return 0, 0
    return fields.get("VmRSS", 0), fields.get("VmHWM", 0)


def wait_for(log: Path, pattern: str, proc: subprocess.Popen, deadline: Deadline, limit: float = 60) -> re.Match:
    until = min(deadline.end, time.monotonic() + limit)
    while time.monotonic() < until:
        match = re.search(pattern, log.read_text(errors="replace"), re.M)
        if match:
            return match
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    tail = log.read_text(errors="replace")[-1500:]
    raise BenchError(f"no {pattern!r} from {log.name} (exit {proc.poll()}):\n{tail}")


def start_tracker(children: Children, work: Path, deadline: Deadline, interval: int) -> str:
    log = work / "tracker.log"
    proc = children.start(["-m", "tracker", "start", "--host", HOST, "--port", 0, "--interval", interval], log)
    port = wait_for(log, r"http://127\.0\.0\.1:(\d+)/announce", proc, deadline, 20).group(1)
    return f"http://{HOST}:{port}/announce"


def start_seed(children: Children, torrent: Path, data: Path, work: Path, deadline: Deadline) -> subprocess.Popen:
    log = work / "seed.log"
    proc = children.start(["-m", "peer", "seed", torrent, data, "--port", 0, "--host", HOST, "--no-lsd"], log)
    wait_for(log, r"^seeding ", proc, deadline, 120)
    wait_registered(load_metainfo(torrent), proc, deadline)
    return proc


def wait_registered(meta, proc: subprocess.Popen, deadline: Deadline, limit: float = 30) -> None:
    """Leechers must find the seed in their first tracker reply: wait until a scrape counts it."""
    url = build_scrape_url(scrape_url_for(meta.announce_tiers[0][0]), [meta.info_hash])
    until = min(deadline.end, time.monotonic() + limit)
    while time.monotonic() < until and proc.poll() is None:
        with urllib.request.urlopen(url, timeout=5) as resp:
            stats = decode_scrape_response(resp.read()).get(meta.info_hash)
        if stats is not None and stats.complete >= 1:
            return
        time.sleep(0.05)
    raise BenchError("the seed never showed up at the tracker")


# -- checking copies --------------------------------------------------------------------------

def check_copies(original: Path, copies: list[Path]) -> list[str]:
    """Problems found, one line each: missing, wrong size or wrong sha1 (hashed on two threads)."""
    size, want = original.stat().st_size, sha1_file(original)
    problems = []
    sized = []
    for copy in copies:
        if not copy.exists():
            problems.append(f"{copy}: missing")
        elif copy.stat().st_size != size:
            problems.append(f"{copy}: {copy.stat().st_size} bytes, want {size}")
        else:
            sized.append(copy)
    with ThreadPoolExecutor(2) as pool:
        for copy, got in zip(sized, pool.map(sha1_file, sized)):
            if got != want:
                problems.append(f"{copy}: sha1 {got}, want {want}")
    return problems


def mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


def start_swarm(children: "Children", args, work: Path, source: Path, deadline: "Deadline"):
    """A tracker, a torrent of `source` and a seed process: what both variants start from."""
    tracker = start_tracker(children, work, deadline, args.interval)
    torrent = work / "file.torrent"
    torrent.write_bytes(create_metainfo(source, [tracker]))
    return torrent, load_metainfo(torrent), start_seed(children, torrent, source, work, deadline)


# -- variant: one process per peer ------------------------------------------------------------

def run_processes(args, work: Path, source: Path, deadline: Deadline) -> dict:
    """1 seed process + N `get` processes behind a gate; returns the figures."""
    children = Children()
    try:
        torrent, meta, seed = start_swarm(children, args, work, source, deadline)
        gate = work / "gate"
        peers, logs = [], []
        launched = time.monotonic()
        for i in range(args.peers):
            out = work / f"peer{i}"
            out.mkdir()
            log = work / f"peer{i}.log"
            cmd = ["-m", "peer", *(["-v"] if args.verbose else []), "get", torrent, "-o", out,
                   "--port", 0, "--host", HOST, "--no-lsd", "--wait-for", gate]
            if args.leave:
                cmd.append("--no-seed")
            peers.append(children.start(cmd, log))
            logs.append(log)
        for proc, log in zip(peers, logs):
            wait_for(log, r"^swarm-peer: listening on port", proc, deadline, 120)
        startup = time.monotonic() - launched
        idle = [memory(p.pid)[0] for p in peers]
        print(f"  {args.peers} peers listening after {startup:.1f} s; idle RSS per peer "
              f"{mb(statistics.mean(idle))}; {meta.num_pieces} pieces of {format_bytes(meta.piece_length)}")
        gate.touch()
        opened = time.monotonic()
        times: dict[int, float] = {}
        peak: dict[int, int] = {}
        peak_sum, last_report = 0, opened
        failed: dict[int, str] = {}
        while len(times) + len(failed) < args.peers and deadline.left() > 0:
            time.sleep(0.25)
            total = 0
            for i, (proc, log) in enumerate(zip(peers, logs)):
                if i in times or i in failed:
                    continue
                text = log.read_text(errors="replace")
                match = COMPLETE.search(text)
                if match:
                    times[i] = float(match.group(1))
                elif proc.poll() is not None:
                    failed[i] = f"exit {proc.returncode}: {text.strip().splitlines()[-1:] }"
            for i, proc in enumerate(peers):
                rss, hwm = memory(proc.pid)
                total += rss
                if hwm:
                    peak[i] = hwm
            peak_sum = max(peak_sum, total)
            if time.monotonic() - last_report >= 10:
                last_report = time.monotonic()
                print(f"  {last_report - opened:6.1f} s: {len(times)}/{args.peers} complete, "
                      f"peers' RSS now {mb(total)}", flush=True)
        wall = time.monotonic() - opened
        stuck = [i for i in range(args.peers) if i not in times and i not in failed]
        # VmHWM is the peak of the running program itself, so one reading just before the
        # stop covers the whole run. (Not ru_maxrss from wait4: Linux counts in it the RSS of
        # this script at the fork, before the exec: 314 MB for `python -c pass` started by a
        # 300 MiB parent.)
        for i, proc in enumerate(peers):
            peak[i] = max(peak.get(i, 0), memory(proc.pid)[1])
        seed_rss = memory(seed.pid)[1]
        children.stop(peers)
        seed_up = None
        children.stop([seed])
        match = re.search(r"totals: uploaded=(\d+)", (work / "seed.log").read_text(errors="replace"))
        if match:
            seed_up = int(match.group(1)) / meta.total_length
        problems = check_copies(source, [work / f"peer{i}" / source.name for i in range(args.peers)])
        result = {
            "variant": "processes", "peers": args.peers, "size": meta.total_length,
            "complete": len(times), "all_complete_s": max(times.values()) if len(times) == args.peers else None,
            "median_s": statistics.median(times.values()) if times else None,
            "first_s": min(times.values()) if times else None, "wall_s": wall, "startup_s": startup,
            "idle_rss_mean": statistics.mean(idle), "peak_rss_max": max(peak.values(), default=0),
            "peak_rss_mean": statistics.mean(peak.values()) if peak else 0,
            "peak_rss_sum": sum(peak.values()), "concurrent_rss_peak": peak_sum,
            "seed_peak_rss": seed_rss, "seed_copies_uploaded": seed_up,
            "copies_bad": problems, "failed": failed, "stuck": stuck,
            "peers_cpu_s": sum(children.cpu.get(p.pid, 0) for p in peers),
            "seed_cpu_s": children.cpu.get(seed.pid, 0),
        }
        for i in stuck[:10]:
            lines = logs[i].read_text(errors="replace").strip().splitlines()
            print(f"  stuck peer{i}: {lines[-1] if lines else '(no output)'}")
        return result
    finally:
        children.stop()


# -- variant: many Clients in one event loop --------------------------------------------------

async def inprocess_worker(torrent: Path, out: Path, n: int, timeout: float, threads: int = 0) -> dict:
    """Runs inside the worker process: N Clients, one loop; one JSON line of figures."""
    from peer.client import Client, ClientConfig

    meta = load_metainfo(torrent)
    if threads:
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(threads))
    base = memory(os.getpid())[0]
    clients = [Client(ClientConfig(port=0, host=HOST, lsd=False)) for _ in range(n)]
    await asyncio.gather(*(c.start() for c in clients))
    idle = memory(os.getpid())[0]
    loop = asyncio.get_running_loop()
    started = loop.time()
    times: list[float | None] = [None] * n

    async def one(i: int, client: Client) -> None:
        folder = out / f"peer{i}"
        folder.mkdir()
        torrent_ = await client.add_torrent(meta, folder)
        await torrent_.complete.wait()
        times[i] = loop.time() - started

    tasks = [asyncio.ensure_future(one(i, c)) for i, c in enumerate(clients)]
    watching = asyncio.ensure_future(watch(clients, meta.info_hash, times, started))
    done, pending = await asyncio.wait(tasks, timeout=timeout)
    watching.cancel()
    for task in pending:
        task.cancel()
    errors = [repr(t.exception()) for t in done if t.exception() is not None]
    stuck = []
    for i, client in enumerate(clients):
        if times[i] is None:
            torrent_ = client.torrents.get(meta.info_hash)
            status = torrent_.status() if torrent_ else None
            stuck.append(f"peer{i}: {status}")
    now, peak = memory(os.getpid())
    await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
    finished = [t for t in times if t is not None]
    return {"complete": len(finished), "times": finished, "cpu_s": time.process_time(), "base_rss": base, "idle_rss": idle,
            "end_rss": now, "peak_rss": peak, "errors": errors[:5], "stuck": stuck[:20]}


async def watch(clients: list, info_hash: bytes, times: list, started: float, every: float = 10.0) -> None:
    """Every `every` s, one line on stderr: is the loop busy (CPU, lag) or waiting on peers?"""
    loop = asyncio.get_running_loop()
    cpu_before = time.process_time()
    while True:
        await asyncio.sleep(every)
        t0 = loop.time()
        await asyncio.sleep(0)
        lag = loop.time() - t0
        cpu = time.process_time()
        conns = [c for client in clients if (t := client.torrents.get(info_hash)) for c in t.connections]
        unchoked_us = sum(1 for c in conns if not c.peer_choking)
        inflight = sum(len(c.inflight) for c in conns)
        print(f"{loop.time() - started:6.1f} s: {sum(t is not None for t in times)} complete, "
              f"cpu {(cpu - cpu_before) / every * 100:.0f}%, lag {lag * 1000:.0f} ms, {len(conns)} conns, "
              f"{unchoked_us} unchoking us, {inflight} requests in flight", file=sys.stderr, flush=True)
        cpu_before = cpu


def run_inprocess(args, work: Path, source: Path, deadline: Deadline) -> dict:
    """1 seed process + one worker process hosting N Clients."""
    children = Children()
    try:
        torrent, meta, seed = start_swarm(children, args, work, source, deadline)
        log = work / "worker.log"
        budget = max(10.0, deadline.left() - 60)
        worker = children.start([Path(__file__), "--worker", torrent, "--worker-out", work,
                                 "--peers", args.peers, "--timeout", budget,
                                 "--executor-threads", args.executor_threads], log)
        match = wait_for(log, r"^RESULT (.*)$", worker, deadline, budget + 30)
        figures = json.loads(match.group(1))
        children.stop([worker])
        children.stop([seed])
        if args.verbose:
            print("".join(f"  worker: {line}\n" for line in log.read_text().splitlines() if " s: " in line), end="")
        times = figures["times"]
        problems = check_copies(source, [work / f"peer{i}" / source.name for i in range(args.peers)])
        return {
            "variant": "inprocess", "peers": args.peers, "size": meta.total_length,
            "complete": figures["complete"], "all_complete_s": max(times) if len(times) == args.peers else None,
            "median_s": statistics.median(times) if times else None, "first_s": min(times) if times else None,
            "worker_base_rss": figures["base_rss"], "worker_idle_rss": figures["idle_rss"],
            "worker_peak_rss": figures["peak_rss"],
            "peak_rss_per_peer": (figures["peak_rss"] - figures["base_rss"]) / args.peers,
            "copies_bad": problems, "errors": figures["errors"], "stuck": figures["stuck"],
            "worker_cpu_s": figures["cpu_s"],
        }
    finally:
        children.stop()


# -- variant: one daemon, many torrents -------------------------------------------------------

def run_daemon(args, work: Path, deadline: Deadline) -> dict:
    """`swarm-peer share` of T small files; RSS when all seed; then a few real downloads."""
    children = Children()
    try:
        tracker = start_tracker(children, work, deadline, args.interval)
        files_dir = work / "shared"
        files_dir.mkdir()
        rng = random.Random(7)
        files = [make_file(files_dir / f"item{i:03d}.bin", rng.randint(1 * MiB, 4 * MiB), 1000 + i)
                 for i in range(args.torrents)]
        total = sum(f.stat().st_size for f in files)
        log = work / "share.log"
        started = time.monotonic()
        daemon = children.start(["-m", "peer", "share", *files, "-t", tracker, "--torrents-dir",
                                 work / "torrents", "--port", 0, "--host", HOST, "--no-lsd"], log)
        wait_for(log, r"^seeding \d+ torrents? on port", daemon, deadline, max(60, deadline.left()))
        ready = time.monotonic() - started
        time.sleep(3)   # announces go out; let the daemon settle
        seeding_rss, seeding_peak = memory(daemon.pid)
        picks = sorted(random.Random(3).sample(range(args.torrents), min(3, args.torrents)))
        getters = []
        for i in picks:
            out = work / f"get{i}"
            out.mkdir()
            getters.append(children.start(["-m", "peer", "get", work / "torrents" / f"{files[i].name}.torrent",
                                           "-o", out, "--no-seed", "--port", 0, "--host", HOST, "--no-lsd"],
                                          work / f"get{i}.log"))
        for proc, i in zip(getters, picks):
            wait_for(work / f"get{i}.log", r"^complete: ", proc, deadline, 120)
        problems = []
        for i in picks:
            problems += check_copies(files[i], [work / f"get{i}" / files[i].name])
        after_rss, after_peak = memory(daemon.pid)
        children.stop([daemon])
        return {"variant": "daemon", "torrents": args.torrents, "bytes": total, "ready_s": ready,
                "seeding_rss": seeding_rss, "seeding_peak_rss": seeding_peak,
                "after_downloads_rss": after_rss,
                "peak_rss": after_peak,      # VmHWM just before the stop (see run_processes)
                "downloads_checked": len(picks), "copies_bad": problems}
    finally:
        children.stop()


# -- report -----------------------------------------------------------------------------------

def report(r: dict) -> None:
    if r["variant"] == "daemon":
        verdict = "OK" if r["seeding_rss"] < 150e6 else "OVER 150 MB"
        print(f"daemon: {r['torrents']} torrents ({format_bytes(r['bytes'])}) hashed, verified and "
              f"seeding after {r['ready_s']:.1f} s")
        print(f"  RSS seeding {mb(r['seeding_rss'])} [{verdict}] (peak so far {mb(r['seeding_peak_rss'])}); "
              f"after {r['downloads_checked']} downloads {mb(r['after_downloads_rss'])}; "
              f"lifetime peak {mb(r['peak_rss'])}")
    else:
        name = "one process per peer" if r["variant"] == "processes" else "one event loop, N Clients"
        allc = f"{r['all_complete_s']:.1f} s" if r["all_complete_s"] is not None else "NOT ALL"
        print(f"{r['variant']} ({name}): {r['complete']}/{r['peers']} complete; all complete {allc}; "
              f"median {r['median_s'] or 0:.1f} s; first {r['first_s'] or 0:.1f} s "
              f"({format_bytes(r['size'])}, {r['size'] * r['peers'] / MiB / (r['all_complete_s'] or 1):.0f} MiB/s "
              f"delivered in total)")
        if r["variant"] == "processes":
            print(f"  peak RSS per peer process: max {mb(r['peak_rss_max'])}, mean {mb(r['peak_rss_mean'])}, "
                  f"sum {mb(r['peak_rss_sum'])} (concurrent peak {mb(r['concurrent_rss_peak'])}); "
                  f"idle {mb(r['idle_rss_mean'])}")
            seed_up = f"{r['seed_copies_uploaded']:.2f}" if r["seed_copies_uploaded"] is not None else "?"
            print(f"  seed: peak RSS {mb(r['seed_peak_rss'])}, uploaded {seed_up} copies; CPU: peers "
                  f"{r['peers_cpu_s']:.0f} s (incl. start-up), seed {r['seed_cpu_s']:.0f} s, "
                  f"{os.cpu_count()} cores x {r['wall_s'] + r['startup_s']:.0f} s wall")
            if r["failed"]:
                print(f"  failed: {r['failed']}")
        else:
            print(f"  worker RSS: bare {mb(r['worker_base_rss'])}, {r['peers']} idle Clients "
                  f"{mb(r['worker_idle_rss'])}, peak {mb(r['worker_peak_rss'])} "
                  f"-> {mb(r['peak_rss_per_peer'])} per peer; worker CPU {r['worker_cpu_s']:.0f} s")
            for line in r["errors"] + r["stuck"][:10]:
                print(f"  {line}")
        if r["stuck"] and r["variant"] == "processes":
            print(f"  stuck: peer{', peer'.join(map(str, r['stuck'][:20]))}")
    checked = r.get("downloads_checked", r.get("peers"))
    print(f"  copies: {'all ' + str(checked) + ' byte-identical (size + sha1)' if not r['copies_bad'] else ''}"
          + "".join(f"\n    BAD {p}" for p in r["copies_bad"][:10]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", type=int, default=100)
    parser.add_argument("--size", default="64MiB", help="File size for the swarm runs.")
    parser.add_argument("--torrents", type=int, default=100, help="Torrents for the daemon run.")
    parser.add_argument("--variants", default="processes,inprocess,daemon")
    parser.add_argument("--interval", type=int, default=1800, help="Tracker announce interval (s).")
    parser.add_argument("--leave", action="store_true", help="Leechers exit on completion (--no-seed).")
    parser.add_argument("--timeout", type=float, default=1200, help="Overall seconds for everything.")
    parser.add_argument("--json", type=Path, default=None, help="Also write the figures here.")
    parser.add_argument("--keep", action="store_true", help="Keep the work folder (logs).")
    parser.add_argument("-v", "--verbose", action="store_true", help="Peers log at INFO (processes).")
    parser.add_argument("--executor-threads", type=int, default=0,
                        help="inprocess: size of the worker's default thread pool (0: asyncio's default).")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        figures = asyncio.run(inprocess_worker(args.worker, args.worker_out, args.peers, args.timeout,
                                                    args.executor_threads))
        print("RESULT " + json.dumps(figures), flush=True)
        return 0
    precompile()    # 100 peer processes start without compiling swarm's modules each
    print(probe_line(), flush=True)

    resource.setrlimit(resource.RLIMIT_NOFILE, (min(65536, resource.getrlimit(resource.RLIMIT_NOFILE)[1]),) * 2)
    deadline = Deadline(args.timeout)
    work = Path(tempfile.mkdtemp(prefix="swarm-many-"))
    results, ok = [], True
    try:
        size = parse_size(args.size)
        variants = [v.strip() for v in args.variants.split(",") if v.strip()]
        source = None
        if {"processes", "inprocess"} & set(variants):
            source = make_file(work / "file.bin", size, 1)
        for variant in variants:
            print(f"== {variant}", flush=True)
            run_dir = work / variant
            run_dir.mkdir()
            try:
                if variant == "processes":
                    r = run_processes(args, run_dir, source, deadline)
                elif variant == "inprocess":
                    r = run_inprocess(args, run_dir, source, deadline)
                elif variant == "daemon":
                    r = run_daemon(args, run_dir, deadline)
                else:
                    raise BenchError(f"unknown variant {variant!r}")
            except BenchError as exc:
                print(f"{variant}: FAILED: {exc}", flush=True)
                ok = False
                continue
            report(r)
            results.append(r)
            ok = ok and not r["copies_bad"] and (variant == "daemon" or r["complete"] == r["peers"])
            if not args.keep:
                shutil.rmtree(run_dir, ignore_errors=True)
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
    finally:
        if args.keep:
            print(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

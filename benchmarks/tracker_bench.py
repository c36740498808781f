"""Announces per second: swarm-tracker against opentracker, over HTTP and UDP, on loopback.

    python benchmarks/tracker_bench.py [--seconds 5] [--connections 32] [--torrents 1000]

HTTP load comes from wrk (a Lua script that makes every request a fresh peer in one of
--torrents random swarms); without wrk, from an aiohttp client. HTTP runs twice: over
keep-alive connections (`http`), and with `Connection: close`, one connection per request
(`http-close`). opentracker closes every connection after its answer either way.
UDP load comes from --udp-processes forked pipelined asyncio senders: each does one
connect, then keeps --window announces in flight. Each run is bounded by --seconds; everything
talks to 127.0.0.1 only. Printed per run: requests/s, failures, the CPU seconds the
load generator and the tracker used; then swarm/opentracker ratios.

swarm-tracker runs twice: with `--http-server aiohttp` and with `--http-server granian` when
granian is installed (pip install -e '.[fast]'; then granian is also its default).

Each tracker runs in a process group of its own, but in this script's session: a session of
its own would put it in a scheduler autogroup of its own, with its own share of the CPU
against the load generator's.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import tracker_proto as tp  # noqa: E402
from machine_probe import probe_line  # noqa: E402

HOST = "127.0.0.1"


@dataclass
class Result:
    target: str
    proto: str
    requests: int
    seconds: float
    failures: int
    generator_cpu: float
    server_cpu: float

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


# -- the trackers ---------------------------------------------------------------------------

def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its threads, from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0              # the process has just ended
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    """A port free for both TCP and UDP right now (opentracker needs one given to it)."""
    for _ in range(50):
        with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            tcp.bind((HOST, 0))
            port = tcp.getsockname()[1]
            try:
                udp.bind((HOST, port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


def _wait_tcp(port: int, proc: subprocess.Popen, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"tracker exited with {proc.returncode}")
        try:
            socket.create_connection((HOST, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("tracker did not start listening")


def start_swarm_tracker(log: Path, *options: str) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, "-m", "tracker", "start", "--host", HOST, "--port", "0",
                             *options],
                            cwd=ROOT, stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"), process_group=0)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        m = re.search(r"http://127\.0\.0\.1:(\d+)/announce", log.read_text(errors="replace"))
        if m:
            return proc, int(m.group(1))
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    stop(proc)
    raise RuntimeError(f"swarm-tracker did not start:\n{log.read_text(errors='replace')}")


def start_opentracker(log: Path, workdir: Path, hashes: list[bytes]) -> tuple[subprocess.Popen, int]:
    """Debian's opentracker is built with a whitelist: it only tracks the hashes listed in -w.

    It chroots into -d first, so the whitelist path is given relative to that folder.
    """
    port = _free_port()
    # opentracker drops to user "nobody" after the chroot: its folder must be world-readable
    workdir = workdir / "opentracker"
    workdir.mkdir(mode=0o755)
    workdir.chmod(0o755)
    whitelist = workdir / "whitelist"
    whitelist.write_text("".join(h.hex() + "\n" for h in hashes))
    proc = subprocess.Popen(["opentracker", "-i", HOST, "-p", str(port), "-P", str(port),
                             "-d", str(workdir), "-w", "/whitelist"],
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT, process_group=0)
    _wait_tcp(port, proc)
    return proc, port


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


# -- HTTP load ------------------------------------------------------------------------------

WRK_SCRIPT = r"""
math.randomseed(os.time())
local torrents = {TORRENTS}
local count = #torrents
local function escaped(n)
  local t = {}
  for i = 1, n do t[i] = string.format("%%%02X", math.random(0, 255)) end
  return table.concat(t)
end
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) failures = 0 end
function request()
  return wrk.format("GET", "/announce?info_hash=" .. torrents[math.random(1, count)]
    .. "&peer_id=" .. escaped(20) .. "&port=" .. math.random(1024, 65535)
    .. "&uploaded=0&downloaded=0&left=" .. math.random(0, 1) * 1000 .. "&compact=1&numwant=50")
end
function response(status, headers, body)
  if status ~= 200 or string.sub(body, 1, 16) == "d14:failure reas" then failures = failures + 1 end
end
function done(summary, latency, requests)
  local total = 0
  for _, t in ipairs(threads) do total = total + t:get("failures") end
  io.write(string.format("FAILURES %d\n", total))
end
"""


def http_load_wrk(port: int, seconds: float, connections: int, hashes: list[bytes],
                  tmp: Path, close: bool) -> tuple[int, float, int, float]:
    script = tmp / "announce.lua"
    table = ",".join('"%s"' % "".join(f"%{b:02X}" for b in h) for h in hashes)
    script.write_text(WRK_SCRIPT.replace("TORRENTS", table))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "5s",
                          *(["-H", "Connection: close"] if close else []),
                          "-s", str(script), f"http://{HOST}:{port}/"],
                         capture_output=True, text=True, timeout=seconds + 30).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if os.environ.get("BENCH_DEBUG"):
        print(out)
    m = re.search(r"(\d+) requests in ([\d.]+)(m?s)", out)
    if not m:
        raise RuntimeError(f"cannot read wrk output:\n{out}")
    elapsed = float(m.group(2)) / (1000 if m.group(3) == "ms" else 1)
    failures = int(re.search(r"FAILURES (\d+)", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: .*", out)
    if errors and not close:   # opentracker closes every connection after its answer: "read" errors
        print("   wrk:", errors.group(0))
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return int(m.group(1)), elapsed, failures + int(non2xx.group(1) if non2xx else 0), cpu


async def _http_load_aiohttp(port: int, seconds: float, connections: int,
                            hashes: list[bytes], close: bool) -> tuple[int, int]:
    import aiohttp
    from yarl import URL
    done = failures = 0
    deadline = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=connections, force_close=close)
    async with aiohttp.ClientSession(connector=connector) as http:
        async def worker() -> None:
            nonlocal done, failures
            while time.monotonic() < deadline:
                req = tp.AnnounceRequest(random.choice(hashes), random.randbytes(20),
                                         random.randrange(1024, 65536), left=random.choice((0, 1000)))
                url = tp.build_announce_url(f"http://{HOST}:{port}/announce", req)
                async with http.get(URL(url, encoded=True)) as resp:
                    body = await resp.read()
                done += 1
                failures += resp.status != 200 or body.startswith(b"d14:failure")
        await asyncio.gather(*(worker() for _ in range(connections)))
    return done, failures


def http_load(port: int, seconds: float, connections: int, hashes: list[bytes], tmp: Path,
              close: bool = False):
    if shutil.which("wrk"):
        return http_load_wrk(port, seconds, connections, hashes, tmp, close)
    cpu0, t0 = time.process_time(), time.monotonic()
    done, failures = asyncio.run(_http_load_aiohttp(port, seconds, connections, hashes, close))
    return done, time.monotonic() - t0, failures, time.process_time() - cpu0


# -- UDP load -------------------------------------------------------------------------------

class _UdpLoad(asyncio.DatagramProtocol):
    """Keeps `window` announces in flight; every answer sends the next one."""

    def __init__(self, packets: list[bytes], window: int) -> None:
        self.packets = packets
        self.window = window
        self.next = 0
        self.in_flight: dict[int, float] = {}
        self.answered = 0
        self.failures = 0
        self.connection_id: asyncio.Future = asyncio.get_running_loop().create_future()
        self.transport: asyncio.DatagramTransport | None = None
        self.running = False

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.sendto(tp.encode_udp(tp.UdpConnectRequest(0xC0FFEE)))

    def send_one(self) -> None:
        packet = self.packets[self.next % len(self.packets)]
        tid = self.next & 0xFFFFFFFF
        self.next += 1
        self.in_flight[tid] = time.monotonic()
        self.transport.sendto(packet[:12] + tid.to_bytes(4, "big") + packet[16:])

    def datagram_received(self, data: bytes, addr) -> None:
        action = int.from_bytes(data[:4], "big")
        if action == tp.ACTION_CONNECT and not self.connection_id.done():
            self.connection_id.set_result(data[8:16])
            return
        if self.in_flight.pop(int.from_bytes(data[4:8], "big"), None) is None:
            return
        if action == tp.ACTION_ANNOUNCE:
            self.answered += 1
        else:
            self.failures += 1
        if self.running:
            self.send_one()

    def top_up(self) -> None:
        """Forget packets lost for a second, and refill the window."""
        old = time.monotonic() - 1.0
        for tid in [t for t, sent in self.in_flight.items() if sent < old]:
            del self.in_flight[tid]
            self.failures += 1
        while len(self.in_flight) < self.window:
            self.send_one()


async def _udp_load(port: int, seconds: float, window: int, hashes: list[bytes],
                    seed: int) -> tuple[int, float, int]:
    loop = asyncio.get_running_loop()
    rng = random.Random(seed)
    transport, load = await loop.create_datagram_endpoint(
        lambda: _UdpLoad([], window), remote_addr=(HOST, port))
    try:
        cid = await asyncio.wait_for(load.connection_id, 5)
        load.packets = [
            cid + tp.encode_udp(tp.UdpAnnounceRequest(
                0, 0, rng.choice(hashes), rng.randbytes(20), 0, rng.choice((0, 1000)), 0, 0, 0,
                0, 50, rng.randrange(1024, 65536)))[8:]
            for _ in range(20000)]
        load.running = True
        started = time.monotonic()
        deadline = started + seconds
        while (now := time.monotonic()) < deadline:
            load.top_up()
            await asyncio.sleep(min(0.1, deadline - now))
        load.running = False
        return load.answered, time.monotonic() - started, load.failures
    finally:
        transport.close()


def _udp_load_here(port: int, seconds: float, window: int, hashes: list[bytes], seed: int):
    try:
        import uvloop
        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    cpu0 = time.process_time()
    with runner:
        done, elapsed, failures = runner.run(_udp_load(port, seconds, window, hashes, seed))
    return done, elapsed, failures, time.process_time() - cpu0


def udp_load(port: int, seconds: float, window: int, hashes: list[bytes], processes: int = 1):
    """`processes` forked senders, each with its own socket (so its own connection id) and
    `window` announces in flight: one Python sender cannot keep a C tracker busy."""
    if processes <= 1:
        return _udp_load_here(port, seconds, window, hashes, 1)
    children = []
    for n in range(processes):
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:                       # the child: run, report one line, exit
            os.close(read_end)
            code = 1
            try:
                result = _udp_load_here(port, seconds, window, hashes, n + 1)
                os.write(write_end, (" ".join(map(str, result)) + "\n").encode())
                code = 0
            finally:
                os._exit(code)
        os.close(write_end)
        children.append((pid, read_end))
    done = failures = 0
    elapsed = cpu = 0.0
    for pid, read_end in children:
        with os.fdopen(read_end) as pipe:
            line = pipe.read()
        _, status, usage = os.wait4(pid, 0)
        if status != 0 or not line:
            raise RuntimeError(f"UDP load process {pid} failed (status {status})")
        d, e, f, _ = line.split()
        done, failures, elapsed = done + int(d), failures + int(f), max(elapsed, float(e))
        cpu += usage.ru_utime + usage.ru_stime
    return done, elapsed, failures, cpu


# -- the run --------------------------------------------------------------------------------

def bench(name: str, proc: subprocess.Popen, port: int, args, hashes: list[bytes],
          tmp: Path) -> list[Result]:
    results = []
    for proto, load in (("http", lambda: http_load(port, args.seconds, args.connections, hashes, tmp)),
                        ("http-close", lambda: http_load(port, args.seconds, args.connections, hashes, tmp,
                                                         close=True)),
                        ("udp", lambda: udp_load(port, args.seconds, args.window, hashes, args.udp_processes))):
        if args.only and proto != args.only:
            continue
        cpu0 = _cpu_seconds(proc.pid)
        done, elapsed, failures, gen_cpu = load()
        results.append(Result(name, proto, done, elapsed, failures, gen_cpu, _cpu_seconds(proc.pid) - cpu0))
        r = results[-1]
        print(f"{name:14} {proto:10} {r.rate:10.0f} req/s  {r.requests:8} requests  "
              f"{r.failures:6} failures  generator {r.generator_cpu:5.2f} s CPU  "
              f"tracker {r.server_cpu:5.2f} s CPU "
              f"({1e6 * r.server_cpu / max(1, r.requests):5.1f} us/request)", flush=True)
    return results


def _swarm_variants(granian: bool) -> list[tuple[str, list[str]]]:
    """(name, options) of each swarm-tracker to run."""
    return [("swarm aiohttp", ["--http-server", "aiohttp"]),
            *([("swarm granian", ["--http-server", "granian"])] if granian else [])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each run (max 60)")
    parser.add_argument("--connections", type=int, default=32, help="HTTP connections at once")
    parser.add_argument("--window", type=int, default=64, help="UDP announces in flight")
    parser.add_argument("--udp-processes", type=int, default=2,
                        help="UDP load processes (forked), each with --window in flight")
    parser.add_argument("--torrents", type=int, default=1000, help="distinct random info-hashes")
    parser.add_argument("--no-opentracker", action="store_true")
    parser.add_argument("--only", choices=("http", "http-close", "udp"), help="run one protocol only")
    parser.add_argument("--no-granian", action="store_true",
                        help="skip swarm-tracker --http-server granian (skipped anyway without granian)")
    args = parser.parse_args()
    args.seconds = min(max(args.seconds, 1.0), 60.0)

    print(f"loopback, {args.seconds:g} s per run, HTTP: {args.connections} connections "
          f"({'wrk' if shutil.which('wrk') else 'aiohttp client'}), UDP: {args.udp_processes} x {args.window} in flight, "
          f"{args.torrents} torrents", flush=True)
    print(probe_line(), flush=True)
    results: dict[tuple[str, str], Result] = {}
    hashes = [random.Random(i).randbytes(20) for i in range(args.torrents)]
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        from tracker.granian_http import NEEDS_GRANIAN, available as granian_available
        if not granian_available() and not args.no_granian:
            print(f"swarm granian skipped: {NEEDS_GRANIAN}", flush=True)
        swarms = _swarm_variants(granian_available() and not args.no_granian)
        targets = [(name, lambda i=i, opts=opts: start_swarm_tracker(tmp / f"swarm{i}.log", *opts))
                   for i, (name, opts) in enumerate(swarms)]
        if not args.no_opentracker and shutil.which("opentracker"):
            targets.append(("opentracker", lambda: start_opentracker(tmp / "ot.log", tmp, hashes)))
        for name, start in targets:
            proc, port = start()
            try:
                for r in bench(name, proc, port, args, hashes, tmp):
                    results[(r.target, r.proto)] = r
            finally:
                stop(proc)
    for proto in ("http", "http-close", "udp"):
        theirs = results.get(("opentracker", proto))
        for name, _ in swarms:
            ours = results.get((name, proto))
            if ours and theirs and theirs.rate:
                print(f"ratio {proto}: {name} / opentracker = {ours.rate / theirs.rate:.2f}")
    print(probe_line())
    print("(a generator whose CPU seconds come near the run's length, times its processes, was "
          "the limit of that run)")


if __name__ == "__main__":
    main()

"""Start and stop real processes for tests and benchmarks: the swarm tracker and peer,
aria2c, and libtorrent (through tests/interop/lt_driver.py).

Every process gets its own process group, so stopping it also stops anything it spawned.
Its stdout and stderr are read line by line by a thread, so a test can wait for a line
(with a timeout) and show the whole output when something goes wrong. Nothing here waits
without a deadline.
"""

from __future__ import annotations

import compileall
import hashlib
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from peer.processes import sha1_file  # noqa: F401  (tests and benchmarks import it from here)

REPO = Path(__file__).resolve().parent.parent
LT_DRIVER = REPO / "tests" / "interop" / "lt_driver.py"
HOST = "127.0.0.1"


class ProcessError(AssertionError):
    """A process did not say what we waited for (exited, or took too long)."""


# --- small helpers --------------------------------------------------------------------

def precompile() -> None:
    """Write the bytecode of swarm's own packages, as a normal install has it.

    Where PYTHONDONTWRITEBYTECODE is set (as on this project's machines), an editable
    install has none: every `python -m peer` compiled about 25 modules, 70 ms of its start
    (0.35 s against 0.27 s for `--help`), which a benchmark would count as swarm's and a
    100-peer run pays 100 times. Python still reads bytecode under that variable."""
    for package in ("common", "peer", "tracker"):
        compileall.compile_dir(REPO / package, quiet=2, workers=1)   # (read-only: no bytecode, no noise)


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port free for TCP and UDP right now on 127.0.0.1 (clients that cannot take 0)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((HOST, 0))
            port = tcp.getsockname()[1]
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                    udp.bind((HOST, port))
            except OSError:
                continue
            return port
    raise OSError("no free port found")


def make_file(path: Path, size: int, seed: int = 0) -> Path:
    """Write `size` pseudo-random bytes (the same for the same seed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    chunk = 1 << 20
    with open(path, "wb") as out:
        left = size
        while left:
            n = min(chunk, left)
            out.write(rng.randbytes(n))
            left -= n
    return path


def make_tree(root: Path, sizes: dict[str, int], seed: int = 0) -> Path:
    """A folder of files, e.g. {"a.bin": 3_000_000, "sub/b.bin": 10}."""
    for index, (rel, size) in enumerate(sorted(sizes.items())):
        make_file(root / rel, size, seed + index)
    return root


def tree_digest(path: Path) -> dict[str, str]:
    """sha1 of every file under path (or of path itself), keyed by relative path."""
    if path.is_file():
        return {path.name: sha1_file(path)}
    return {str(p.relative_to(path)): sha1_file(p) for p in sorted(path.rglob("*")) if p.is_file()}


def assert_same_data(original: Path, copy: Path) -> None:
    assert copy.exists(), f"{copy} was not created"
    want, got = tree_digest(original), tree_digest(copy)
    if original.is_file():
        want, got = list(want.values()), list(got.values())
    assert got == want, f"{copy} differs from {original}"


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for python children: the repo importable, output unbuffered, no LSD."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("SWARM_NO_LSD", "1")
    if extra:
        env.update(extra)
    return env


# --- processes ------------------------------------------------------------------------

class Proc:
    """A child process in its own process group, with its output collected line by line."""

    def __init__(self, argv: Sequence[str], *, name: str, cwd: Path | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.name = name
        self.argv = [str(a) for a in argv]
        self.started = time.monotonic()
        self.lines: list[str] = []
        self.rusage: object | None = None  # resource.struct_rusage once reaped
        self.ended: float | None = None
        self._changed = threading.Condition()
        self.popen = subprocess.Popen(
            self.argv, cwd=cwd, env=env or child_env(), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.pid = self.popen.pid
        self._reader = threading.Thread(target=self._read, name=f"read-{name}", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        """Split on \\n and \\r: progress lines of some clients end in a carriage return."""
        assert self.popen.stdout is not None
        pending = b""
        for chunk in iter(lambda: self.popen.stdout.read1(65536), b""):
            pending += chunk
            *complete, pending = re.split(rb"\r\n|\r|\n", pending)
            if complete:
                with self._changed:
                    self.lines.extend(c.decode(errors="replace") for c in complete)
                    self._changed.notify_all()
        with self._changed:
            if pending:
                self.lines.append(pending.decode(errors="replace"))
            self._changed.notify_all()

    # -- output --

    def output(self, last: int | None = None) -> str:
        with self._changed:
            lines = self.lines if last is None else self.lines[-last:]
            return "\n".join(lines)

    def wait_for(self, pattern: str, timeout: float, start: int = 0) -> re.Match[str]:
        """First output line (from index `start`) matching the regex; ProcessError if the
        process exits first or `timeout` seconds pass."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = start
        with self._changed:
            while True:
                for line in self.lines[seen:]:
                    if match := regex.search(line):
                        return match
                seen = len(self.lines)
                if self.poll() is not None and not self._reader.is_alive():
                    raise ProcessError(self._why(f"exited ({self.returncode}) before printing /{pattern}/"))
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ProcessError(self._why(f"did not print /{pattern}/ within {timeout:g}s"))
                self._changed.wait(min(remaining, 0.2))

    def _why(self, what: str) -> str:
        return f"{self.name} {what}; last output:\n{self.output(last=40)}"

    # -- life --

    @property
    def returncode(self) -> int | None:
        return self.popen.returncode

    def poll(self) -> int | None:
        """Reap without blocking; keeps the child's resource usage."""
        if self.popen.returncode is not None:
            return self.popen.returncode
        try:
            pid, status, rusage = os.wait4(self.pid, os.WNOHANG)
        except ChildProcessError:
            return self.popen.poll()
        if pid == 0:
            return None
        self.rusage = rusage
        self.ended = time.monotonic()
        self.popen.returncode = os.waitstatus_to_exitcode(status)
        return self.popen.returncode

    def wait(self, timeout: float) -> int:
        """Exit status; ProcessError if still running after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while (code := self.poll()) is None:
            if time.monotonic() > deadline:
                raise ProcessError(self._why(f"still running after {timeout:g}s"))
            time.sleep(0.02)
        self._reader.join(timeout=2)
        return code

    def cpu_seconds(self) -> float:
        """User + system CPU time: from /proc while running, from rusage once reaped."""
        if self.rusage is not None:
            return self.rusage.ru_utime + self.rusage.ru_stime  # type: ignore[attr-defined]
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks  # utime, stime

    def stop(self, grace: float = 5.0) -> int:
        """SIGTERM the group, then SIGKILL after `grace` seconds. Returns the exit status."""
        if self.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                return self.wait(grace)
            except ProcessError:
                pass
        self._signal_group(signal.SIGKILL)  # stragglers in the group, if any
        if self.poll() is None:
            self.wait(5.0)
        return self.popen.returncode  # type: ignore[return-value]

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def __repr__(self) -> str:
        return f"<Proc {self.name} pid={self.pid} rc={self.returncode}>"


class ProcessSet:
    """Every process a test started; `stop_all` at teardown, even after a failure."""

    def __init__(self) -> None:
        self.procs: list[Proc] = []

    def start(self, argv: Sequence[str], *, name: str, cwd: Path | None = None,
              env: dict[str, str] | None = None) -> Proc:
        proc = Proc(argv, name=name, cwd=cwd, env=env)
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()

    def report(self) -> str:
        parts = []
        for proc in self.procs:
            parts.append(f"===== {proc.name} (rc={proc.returncode}): {' '.join(proc.argv)}\n"
                         f"{proc.output(last=60)}")
        return "\n".join(parts)

    def __enter__(self) -> ProcessSet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()


def run(argv: Sequence[str], timeout: float = 60.0, cwd: Path | None = None,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a short command to completion (bounded), output captured as text."""
    result = subprocess.run([str(a) for a in argv], cwd=cwd, env=child_env(), text=True,
                            stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    if check and result.returncode != 0:
        raise ProcessError(f"{' '.join(map(str, argv))} exited {result.returncode}:\n"
                           f"{result.stdout}\n{result.stderr}")
    return result


# --- swarm tracker --------------------------------------------------------------------

@dataclass
class Tracker:
    proc: Proc
    port: int

    @property
    def http(self) -> str:
        return f"http://{HOST}:{self.port}/announce"

    @property
    def udp(self) -> str:
        return f"udp://{HOST}:{self.port}/announce"

    def scrape(self, torrent: Path) -> tuple[int, int]:
        """(complete, incomplete) for the torrent, from an HTTP scrape of this tracker."""
        import urllib.parse
        import urllib.request

        import bencodepy
        info_hash = info_hash_of(torrent)
        url = f"http://{HOST}:{self.port}/scrape?info_hash={urllib.parse.quote_from_bytes(info_hash)}"
        with urllib.request.urlopen(url, timeout=5) as response:
            files = bencodepy.decode(response.read()).get(b"files", {})
        stats = files.get(info_hash, {})
        return stats.get(b"complete", 0), stats.get(b"incomplete", 0)

    def wait_for_swarm(self, torrent: Path, complete: int, incomplete: int = 0,
                       timeout: float = 30.0) -> None:
        """Until the tracker has seen that many seeds and leechers of the torrent: a client
        that has announced can be found by the next one."""
        deadline = time.monotonic() + timeout
        while (got := self.scrape(torrent)) != (complete, incomplete):
            if time.monotonic() > deadline:
                raise ProcessError(f"tracker reports (complete, incomplete) = {got}, "
                                   f"not {(complete, incomplete)} after {timeout:g}s")
            time.sleep(0.1)


def start_tracker(procs: ProcessSet, *extra: str, interval: int = 5, timeout: float = 20.0) -> Tracker:
    """`swarm-tracker start` on 127.0.0.1, any free port; waits for its announce URL."""
    proc = procs.start([sys.executable, "-m", "tracker", "start", "--host", HOST, "--port", "0",
                        "--interval", str(interval), *extra], name="swarm-tracker")
    match = proc.wait_for(rf"http://{re.escape(HOST)}:(\d+)/announce", timeout)
    return Tracker(proc, int(match.group(1)))


# --- swarm peer -----------------------------------------------------------------------

PEER_READY = r"listening on port (\d+)"
COMPLETE = r"^complete:"


def swarm_create(path: Path, trackers: Iterable[str], out: Path, piece_length: int | None = None) -> Path:
    argv = [sys.executable, "-m", "peer", "create", path, "-o", out]
    for url in trackers:
        argv += ["--tracker", url]
    if piece_length:
        argv += ["--piece-length", str(piece_length)]
    run(argv, timeout=120)
    return out


def _peer_options(upload_limit: int | None, download_limit: int | None) -> list[str]:
    options = ["--host", HOST, "--port", "0", "--no-lsd"]
    if upload_limit:
        options += ["--upload-limit", str(upload_limit)]
    if download_limit:
        options += ["--download-limit", str(download_limit)]
    return options


def start_swarm_get(procs: ProcessSet, torrent: Path, outdir: Path, *, seed_after: bool = False,
                    upload_limit: int | None = None, download_limit: int | None = None,
                    name: str = "swarm-get", timeout: float = 30.0) -> tuple[Proc, int]:
    argv = [sys.executable, "-m", "peer", "get", torrent, "-o", outdir,
            *_peer_options(upload_limit, download_limit)]
    if not seed_after:
        argv.append("--no-seed")
    proc = procs.start(argv, name=name)
    return proc, int(proc.wait_for(PEER_READY, timeout).group(1))


def start_swarm_seed(procs: ProcessSet, torrent: Path, path: Path, *, upload_limit: int | None = None,
                     name: str = "swarm-seed", timeout: float = 60.0) -> tuple[Proc, int]:
    """Seed the data at `path`; returns once it has verified the data (prints complete:)."""
    proc = procs.start([sys.executable, "-m", "peer", "seed", torrent, path,
                        *_peer_options(upload_limit, None)], name=name)
    port = int(proc.wait_for(PEER_READY, timeout).group(1))
    proc.wait_for(COMPLETE, timeout)
    return proc, port


# --- aria2c ---------------------------------------------------------------------------

ARIA2_LISTENING = r"BitTorrent: listening on TCP port"
# aria2c runs --on-bt-download-complete with "GID FILE-COUNT PATH"; /bin/echo prints it.
ARIA2_COMPLETE = r"^[0-9a-f]{16} \d+ "


def info_hash_of(torrent: Path) -> bytes:
    """sha1 of the bencoded info dict (read with bencode.py, not with swarm's parser)."""
    import bencodepy
    return hashlib.sha1(bencodepy.encode(bencodepy.decode(torrent.read_bytes())[b"info"])).digest()


def torrent_trackers(torrent: Path) -> list[str]:
    """Every announce URL in a .torrent (read with bencode.py, not with swarm's parser)."""
    import bencodepy
    meta = bencodepy.decode(torrent.read_bytes())
    urls = [meta.get(b"announce", b"")]
    urls += [url for tier in meta.get(b"announce-list", []) for url in tier]
    return [u.decode() for u in urls if u]


def aria2_options(port: int, torrent: Path, workdir: Path) -> list[str]:
    """No DHT, LPD, PEX or required encryption; listen on `port`; quiet line output.

    aria2c sends udp:// tracker requests from its DHT socket only ("udp is not supported
    yet" otherwise), so for a torrent with a udp:// tracker the DHT socket is opened, with
    no bootstrap node and a private routing table file: it never talks to anyone."""
    options = [
        "--no-conf", "--enable-dht6=false", "--bt-enable-lpd=false",
        "--enable-peer-exchange=false", "--bt-require-crypto=false", "--bt-min-crypto-level=plain",
        f"--listen-port={port}", "--disable-ipv6=true", "--file-allocation=none",
        "--summary-interval=0", "--show-console-readout=false", "--console-log-level=notice",
        "--enable-color=false", "--allow-overwrite=true", "--auto-file-renaming=false",
        "--bt-save-metadata=false", "--bt-tracker-connect-timeout=10", "--bt-tracker-timeout=10",
        f"--on-bt-download-complete={shutil.which('echo') or '/bin/echo'}",
        f"--stop-with-process={os.getpid()}",
    ]
    if any(url.startswith("udp://") for url in torrent_trackers(torrent)):
        workdir.mkdir(parents=True, exist_ok=True)
        options += ["--enable-dht=true", f"--dht-listen-port={free_port()}",
                    f"--dht-file-path={workdir / f'aria2-dht-{port}.dat'}"]
    else:
        options.append("--enable-dht=false")
    return options


def start_aria2_seed(procs: ProcessSet, torrent: Path, datadir: Path, *, upload_limit: int | None = None,
                     name: str = "aria2c-seed", timeout: float = 60.0, check: bool = True) -> tuple[Proc, int]:
    """Seed the data in `datadir` (the folder holding the torrent's file or folder);
    returns once aria2c has verified it and listens."""
    port = free_port()
    argv = ["aria2c", *aria2_options(port, torrent, datadir.parent), "--seed-ratio=0.0",
            "--check-integrity=true" if check else "--bt-seed-unverified=true", "-d", datadir]
    if upload_limit:
        argv.append(f"--max-overall-upload-limit={upload_limit}")
    proc = procs.start([*argv, torrent], name=name)
    proc.wait_for(ARIA2_LISTENING, timeout)
    return proc, port


def start_aria2_get(procs: ProcessSet, torrent: Path, outdir: Path, *, seed_after: bool = False,
                    upload_limit: int | None = None, name: str = "aria2c-get") -> tuple[Proc, int]:
    """Download into `outdir`. Without `seed_after` it exits 0 once complete; with it, it
    prints the GID line of its completion hook and keeps seeding."""
    port = free_port()
    argv = ["aria2c", *aria2_options(port, torrent, outdir.parent),
            "--seed-ratio=0.0" if seed_after else "--seed-time=0", "-d", outdir]
    if upload_limit:
        argv.append(f"--max-overall-upload-limit={upload_limit}")
    proc = procs.start([*argv, torrent], name=name)
    proc.wait_for(ARIA2_LISTENING, 30)
    return proc, port


# --- libtorrent -----------------------------------------------------------------------

def lt_command(*args: object) -> list[str]:
    return [sys.executable, str(LT_DRIVER), *map(str, args)]


def start_lt_seed(procs: ProcessSet, torrent: Path, datadir: Path, *, upload_limit: int | None = None,
                  trust: bool = False, name: str = "libtorrent-seed", timeout: float = 60.0) -> tuple[Proc, int]:
    """Seed the data in `datadir`; returns once libtorrent has checked it and is seeding."""
    argv = lt_command("seed", torrent, datadir, "--port", 0, "--upload-limit", upload_limit or 0)
    if trust:
        argv.append("--trust")
    proc = procs.start(argv, name=name)
    port = int(proc.wait_for(PEER_READY, timeout).group(1))
    proc.wait_for(COMPLETE, timeout)
    return proc, port


def start_lt_get(procs: ProcessSet, torrent: Path, outdir: Path, *, seed_after: bool = False,
                 upload_limit: int | None = None, name: str = "libtorrent-get",
                 timeout: float = 30.0) -> tuple[Proc, int]:
    """Download into `outdir`; prints `complete:` when done, and exits 0 unless `seed_after`."""
    argv = lt_command("get", torrent, outdir, "--port", 0, "--upload-limit", upload_limit or 0)
    if seed_after:
        argv.append("--keep-seeding")
    proc = procs.start(argv, name=name)
    return proc, int(proc.wait_for(PEER_READY, timeout).group(1))


def lt_info_hash(torrent: Path) -> str:
    return re.search(r"info_hash: ([0-9a-f]{40})", run(lt_command("info", torrent)).stdout).group(1)


def aria2_info_hash(torrent: Path) -> str:
    out = run(["aria2c", "--no-conf", "-S", torrent]).stdout
    return re.search(r"Info Hash: ([0-9a-f]{40})", out).group(1)


def have_tool(name: str) -> bool:
    """An executable on PATH, or else an importable python module of that name."""
    if shutil.which(name):
        return True
    import importlib.util
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # "pkg.mod" whose package is missing
        return False


IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_tool(name: str) -> None:
    """Skip the calling test when an executable or python module is missing; under CI=true
    fail instead: CI installs everything, so a missing tool there is a broken setup."""
    import pytest
    if have_tool(name):
        return
    message = f"{name} is not installed (no executable on PATH, no python module)"
    if IN_CI:
        pytest.fail(f"CI: {message}", pytrace=False)
    pytest.skip(message)


# --- any client by name ---------------------------------------------------------------

KINDS = ("swarm", "aria2c", "libtorrent")


@dataclass
class Leecher:
    """A downloading client of any kind, and how to tell it is done."""

    kind: str
    proc: Proc
    port: int
    outdir: Path
    seed_after: bool

    def wait_complete(self, timeout: float) -> float:
        """Seconds from start to completion. Without seed_after the client must also have
        exited with status 0; with it, it printed its completion line and keeps seeding."""
        if self.seed_after:
            self.proc.wait_for(ARIA2_COMPLETE if self.kind == "aria2c" else COMPLETE, timeout)
            return time.monotonic() - self.proc.started
        code = self.proc.wait(timeout)
        if code != 0:
            raise ProcessError(self.proc._why(f"exited with status {code}"))
        if self.kind != "aria2c":
            self.proc.wait_for(COMPLETE, 1.0)
        return (self.proc.ended or time.monotonic()) - self.proc.started


def start_seeder(procs: ProcessSet, kind: str, torrent: Path, data: Path, *,
                 upload_limit: int | None = None, name: str | None = None) -> tuple[Proc, int]:
    """Seed `data` (the torrent's file or folder itself) with a client of `kind`;
    returns once the client has checked the data and seeds."""
    name = name or f"{kind}-seed"
    if kind == "swarm":
        return start_swarm_seed(procs, torrent, data, upload_limit=upload_limit, name=name)
    if kind == "aria2c":
        return start_aria2_seed(procs, torrent, data.parent, upload_limit=upload_limit, name=name)
    if kind == "libtorrent":
        return start_lt_seed(procs, torrent, data.parent, upload_limit=upload_limit, name=name)
    raise ValueError(f"unknown client {kind!r}")


def start_leecher(procs: ProcessSet, kind: str, torrent: Path, outdir: Path, *,
                  seed_after: bool = False, upload_limit: int | None = None,
                  name: str | None = None) -> Leecher:
    """Download `torrent` into `outdir` with a client of `kind`."""
    name = name or f"{kind}-get"
    outdir.mkdir(parents=True, exist_ok=True)
    if kind == "swarm":
        proc, port = start_swarm_get(procs, torrent, outdir, seed_after=seed_after,
                                     upload_limit=upload_limit, name=name)
    elif kind == "aria2c":
        proc, port = start_aria2_get(procs, torrent, outdir, seed_after=seed_after,
                                     upload_limit=upload_limit, name=name)
    elif kind == "libtorrent":
        proc, port = start_lt_get(procs, torrent, outdir, seed_after=seed_after,
                                  upload_limit=upload_limit, name=name)
    else:
        raise ValueError(f"unknown client {kind!r}")
    return Leecher(kind, proc, port, outdir, seed_after)


def lt_scrape(torrent: Path, workdir: Path, timeout: float = 20.0) -> tuple[int, int]:
    """(complete, incomplete) as libtorrent's scrape of the torrent's tracker reports it."""
    workdir.mkdir(parents=True, exist_ok=True)
    out = run(lt_command("scrape", torrent, workdir, "--timeout", timeout), timeout=timeout + 10).stdout
    match = re.search(r"scrape: complete=(-?\d+) incomplete=(-?\d+)", out)
    if not match:
        raise ProcessError(f"libtorrent scrape failed:\n{out}")
    return int(match.group(1)), int(match.group(2))

"""`swarm-peer demo`: a whole swarm on 127.0.0.1, started as real processes.

A tracker, one seed and N peers run as the same commands a user would type, so the demo
shows the product, not a test harness. It ends by comparing every copy with the original.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

SAMPLE = Path(__file__).resolve().parent.parent / "sample_files"


def _sha1(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _default_file(workdir: Path) -> Path:
    for candidate in sorted(SAMPLE.glob("*.bin")):
        return candidate
    path = workdir / "demo-4MiB.bin"  # no sample files (installed without them): make one
    path.write_bytes(os.urandom(4 * 1024 * 1024))
    return path


def _start(args: list[str], log: Path) -> subprocess.Popen:
    env = dict(os.environ, SWARM_NO_LSD="1", PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", *args], stdout=open(log, "wb"),
                            stderr=subprocess.STDOUT, env=env, start_new_session=True)


def _wait_for(log: Path, pattern: str, proc: subprocess.Popen, timeout: float) -> re.Match:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = re.search(pattern, log.read_text(errors="replace"))
        if m:
            return m
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    raise RuntimeError(f"{log.name}: did not see {pattern!r}:\n{log.read_text(errors='replace')[-2000:]}")


def run_demo(peers: int = 5, path: Path | None = None, workdir: Path | None = None,
             timeout: float = 300.0) -> bool:
    keep = workdir is not None
    work = Path(workdir or tempfile.mkdtemp(prefix="swarm-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    procs: list[subprocess.Popen] = []
    try:
        src = path or _default_file(work)
        click.echo(f"demo: sharing {src.name} ({src.stat().st_size} bytes) with {peers} peers, in {work}")
        tracker_log = work / "tracker.log"
        procs.append(_start(["tracker", "start", "--host", "127.0.0.1", "--port", "0"], tracker_log))
        port = _wait_for(tracker_log, r"http://127\.0\.0\.1:(\d+)/announce", procs[-1], 20).group(1)
        announce = f"http://127.0.0.1:{port}/announce"
        click.echo(f"demo: tracker at {announce}")
        torrent = work / f"{src.name}.torrent"
        subprocess.run([sys.executable, "-m", "peer", "create", str(src), "--tracker", announce,
                        "-o", str(torrent)], check=True, stdout=subprocess.DEVNULL)
        seed_log = work / "seed.log"
        procs.append(_start(["peer", "seed", str(torrent), str(src), "--port", "0", "--host", "127.0.0.1"],
                            seed_log))
        _wait_for(seed_log, r"seeding", procs[-1], 60)
        click.echo("demo: seed is up")
        started = time.monotonic()
        leechers = []
        for i in range(peers):
            out = work / f"peer{i + 1}"
            log = work / f"peer{i + 1}.log"
            proc = _start(["peer", "get", str(torrent), "-o", str(out), "--port", "0",
                           "--host", "127.0.0.1", "--no-seed"], log)
            procs.append(proc)
            leechers.append((out / src.name, proc, log))
        original = _sha1(src)
        ok = True
        for i, (copy, proc, log) in enumerate(leechers, 1):
            left = max(1.0, timeout - (time.monotonic() - started))
            try:
                proc.wait(timeout=left)
            except subprocess.TimeoutExpired:
                click.echo(f"demo: peer{i} did not finish in time")
                ok = False
                continue
            same = proc.returncode == 0 and copy.exists() and _sha1(copy) == original
            ok = ok and same
            click.echo(f"demo: peer{i}: {'identical' if same else 'DIFFERENT'} "
                       f"({time.monotonic() - started:.1f} s)")
        click.echo(f"demo: {'all copies identical to the original' if ok else 'FAILED'}"
                   f" in {time.monotonic() - started:.1f} s")
        return ok
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        if not keep:
            shutil.rmtree(work, ignore_errors=True)

"""`swarm-peer demo`: a whole swarm on 127.0.0.1, started as real processes.

A tracker, one seed and N peers run as the same commands a user would type, so the demo
shows the product, not a test harness. It ends by comparing every copy with the original.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

from common.metainfo import torrent_file_name
from peer.processes import LocalProcess, sha1_file, stop_all, wait_for_line

SAMPLE = Path(__file__).resolve().parent.parent / "sample_files"
HOST = "127.0.0.1"


class DemoError(Exception):
    """The demo cannot run or a step failed: the CLI shows it as one line, never a traceback."""


def _check_input(peers: int, path: Path | None, workdir: Path | None) -> None:
    """Refuse bad options before any process starts, rather than fail halfway through."""
    if peers < 1:
        raise DemoError(f"--peers must be at least 1, got {peers}")
    if path is not None:
        if path.is_dir():
            raise DemoError(f"--file {path}: is a folder; the demo shares one file")
        if not path.is_file():
            raise DemoError(f"--file {path}: not a regular file")
        try:
            with open(path, "rb") as f:
                if not f.read(1):
                    raise DemoError(f"--file {path}: is empty, nothing to share")
        except OSError as exc:
            raise DemoError(f"--file {path}: {exc.strerror or exc}") from None
    if workdir is not None and (workdir.exists() or workdir.is_symlink()) and not workdir.is_dir():
        raise DemoError(f"--workdir {workdir}: exists and is not a folder")


def _default_file(workdir: Path) -> Path:
    for candidate in sorted(SAMPLE.glob("*.bin")):
        return candidate
    path = workdir / "demo-4MiB.bin"  # no sample files (installed without them): make one
    path.write_bytes(os.urandom(4 * 1024 * 1024))
    return path


def run_demo(peers: int = 5, path: Path | None = None, workdir: Path | None = None,
             timeout: float = 300.0) -> bool:
    """True when every peer's copy equals the original; DemoError for bad input, before anything runs."""
    _check_input(peers, path, workdir)
    keep = workdir is not None
    try:
        work = Path(workdir or tempfile.mkdtemp(prefix="swarm-demo-"))
        work.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DemoError(f"cannot make {workdir or 'a temporary folder'}: {exc.strerror or exc}") from None
    procs: list[LocalProcess] = []
    try:
        src = path or _default_file(work)
        click.echo(f"demo: sharing {src.name} ({src.stat().st_size} bytes) with {peers} peers, in {work}")
        tracker = LocalProcess("tracker", ["-m", "tracker", "start", "--host", HOST, "--port", "0"],
                               work / "tracker.log")
        procs.append(tracker)
        port = wait_for_line(tracker, r"http://127\.0\.0\.1:(\d+)/announce", 20, DemoError).group(1)
        announce = f"http://{HOST}:{port}/announce"
        click.echo(f"demo: tracker at {announce}")
        torrent = work / torrent_file_name(src.name)
        made = subprocess.run([sys.executable, "-m", "peer", "create", str(src), "--tracker", announce,
                               "-o", str(torrent)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              stdin=subprocess.DEVNULL, text=True, errors="replace")
        if made.returncode != 0:
            said = made.stderr.strip().splitlines() or [f"exit status {made.returncode}"]
            raise DemoError(f"creating the torrent failed: {said[-1]}")
        seed = LocalProcess("seed", ["-m", "peer", "seed", str(torrent), str(src), "--port", "0",
                                     "--host", HOST], work / "seed.log")
        procs.append(seed)
        wait_for_line(seed, r"^seeding", 60, DemoError)
        click.echo("demo: seed is up")
        started = time.monotonic()
        leechers = []
        for i in range(1, peers + 1):
            peer = LocalProcess(f"peer{i}", ["-m", "peer", "get", str(torrent), "-o", str(work / f"peer{i}"),
                                             "--port", "0", "--host", HOST, "--no-seed"], work / f"peer{i}.log")
            procs.append(peer)
            leechers.append((work / f"peer{i}" / src.name, peer))
        original = sha1_file(src)
        ok = True
        for copy, peer in leechers:
            if not peer.wait(timeout - (time.monotonic() - started)):
                click.echo(f"demo: {peer.name} did not finish in time:\n{peer.tail()}")
                ok = False
                continue
            same = peer.popen.returncode == 0 and copy.exists() and sha1_file(copy) == original
            ok = ok and same
            click.echo(f"demo: {peer.name}: {'identical' if same else 'DIFFERENT'} "
                       f"({time.monotonic() - started:.1f} s)")
        click.echo(f"demo: {'all copies identical to the original' if ok else 'FAILED'}"
                   f" in {time.monotonic() - started:.1f} s")
        return ok
    except DemoError as exc:
        click.echo(f"demo: {exc}")
        return False
    except OSError as exc:  # e.g. the file went away or the folder filled up mid-demo
        click.echo(f"demo: {exc.filename + ': ' if exc.filename else ''}{exc.strerror or exc}")
        return False
    finally:
        stop_all(procs)
        if not keep:
            shutil.rmtree(work, ignore_errors=True)

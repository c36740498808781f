"""Fixtures for in-process swarms: one way to make a peer (port 0, a temporary folder, LSD off)."""

from __future__ import annotations

import hashlib
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from common.metainfo import create_metainfo, parse_metainfo

ROOT = Path(__file__).resolve().parents[2]


def make_file(path: Path, size: int, seed: int = 1) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(random.Random(seed).randbytes(size))
    return path


def sha1_of(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def tree_digest(root: Path) -> dict[str, str]:
    """Relative path -> sha1 of every file below root: equal dicts mean identical trees."""
    return {str(p.relative_to(root)): sha1_of(p) for p in sorted(root.rglob("*")) if p.is_file()}


def start_process(args: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
    full_env = dict(os.environ, SWARM_NO_LSD="1", PYTHONUNBUFFERED="1", **(env or {}))
    return subprocess.Popen([sys.executable, *args], stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                            env=full_env, cwd=ROOT, start_new_session=True)


def wait_for_line(log: Path, pattern: str, proc: subprocess.Popen, timeout: float = 30) -> re.Match:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = re.search(pattern, log.read_text(errors="replace"))
        if m:
            return m
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise AssertionError(f"no {pattern!r} in {log.name}:\n{log.read_text(errors='replace')[-3000:]}")


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=8)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


@pytest.fixture
def processes():
    """Every process a test starts goes here and is gone after the test, pass or fail."""
    started: list[subprocess.Popen] = []
    yield started
    for proc in started:
        stop_process(proc)


@pytest.fixture
def tracker_process(tmp_path, processes):
    """A real `swarm-tracker start` on 127.0.0.1 and a free port; yields its base URL."""
    log = tmp_path / "tracker.log"
    proc = start_process(["-m", "tracker", "start", "--host", "127.0.0.1", "--port", "0",
                          "--interval", "5"], log)
    processes.append(proc)
    port = int(wait_for_line(log, r"http://127\.0\.0\.1:(\d+)/announce", proc, 20).group(1))
    return f"127.0.0.1:{port}"


def torrent_for(path: Path, trackers: list[str], piece_length: int | None = None, **kw):
    data = create_metainfo(path, trackers, piece_length=piece_length, **kw)
    return data, parse_metainfo(data)

"""Local child processes for `demo` and `compare`: real `swarm-*` commands on 127.0.0.1.

Each child runs `python -m tracker|peer ...` in its own session with local discovery
off, writes to a log file that we read as it grows, and is stopped as a group.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

POLL = 0.05


class LocalProcess:
    """A child process whose output goes to a log file we read as it grows."""

    def __init__(self, name: str, argv: list[str], log: Path) -> None:
        self.name = name
        self.log = log
        env = dict(os.environ, SWARM_NO_LSD="1", PYTHONUNBUFFERED="1")
        with open(log, "wb") as out:
            self.popen = subprocess.Popen([sys.executable, *argv], stdout=out, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, env=env, start_new_session=True)

    def text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def search(self, pattern: str) -> re.Match | None:
        return re.search(pattern, self.text(), re.MULTILINE)

    def tail(self, lines: int = 15) -> str:
        return "\n".join(self.text().splitlines()[-lines:])

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            try:
                os.killpg(self.popen.pid, sig)
            except ProcessLookupError:
                pass

    def wait(self, timeout: float) -> bool:
        try:
            self.popen.wait(timeout=max(0.0, timeout))
            return True
        except subprocess.TimeoutExpired:
            return False


def stop_all(procs: list[LocalProcess], grace: float = 10.0) -> None:
    """SIGTERM everyone at once (peers print their totals), SIGKILL whoever lingers."""
    for p in procs:
        p.signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for p in procs:
        if not p.wait(deadline - time.monotonic()):
            p.signal(signal.SIGKILL)
            p.wait(5)


def wait_for_line(proc: LocalProcess, pattern: str, timeout: float,
                  error: type[Exception] = RuntimeError) -> re.Match:
    deadline = time.monotonic() + timeout
    while True:
        m = proc.search(pattern)
        if m:
            return m
        if not proc.alive() or time.monotonic() > deadline:
            why = "exited" if not proc.alive() else f"said nothing like {pattern!r} in {timeout:.0f} s"
            raise error(f"{proc.name} {why}:\n{proc.tail()}")
        time.sleep(POLL)


def sha1_file(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()

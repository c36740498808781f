"""Fixtures for fault tests: in-process peers with short timeouts, and a way to print figures
(kill trials, memory, fuzz counts) so they show in `pytest -q` output, not only on failure."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from common.metainfo import create_metainfo, parse_metainfo
from peer.connection import Timeouts
from tests.integration.conftest import processes  # noqa: F401  (the one fixture, shared)

#: fast enough to see a stall in a second, slow enough not to drop an honest peer on a busy CI box
FAST_TIMEOUTS = Timeouts(handshake=1.0, idle=3.0, snub=1.5, keepalive=1.0, tick=0.2)


def make_file(path: Path, size: int, seed: int = 1) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = random.Random(seed).randbytes(size)
    path.write_bytes(data)
    return data


def torrent_for(path: Path, trackers: list[str] = (), piece_length: int | None = None):
    raw = create_metainfo(path, list(trackers), piece_length=piece_length)
    return raw, parse_metainfo(raw)


@pytest.fixture
def clients(clients):
    """The shared peer factory (tests/conftest.py), with short timeouts unless told otherwise."""
    async def make(**kw):
        kw.setdefault("timeouts", FAST_TIMEOUTS)
        return await clients(**kw)
    return make


@pytest.fixture
def show(request):
    """show(line): write a line to the terminal even when output is captured."""
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")

    def write(line: str) -> None:
        if capture is None or reporter is None:
            print(line)
            return
        with capture.global_and_fixture_disabled():
            reporter.write_line(line)

    return write

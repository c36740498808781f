"""Shared fixtures for every test: tool checks, free ports, process management.

Process helpers (tracker, swarm peer, aria2c, libtorrent) live in tests/interop_clients.py
so that benchmarks can use them too; this file makes that module importable and turns
its pieces into fixtures.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from peer.client import Client, ClientConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))

import interop_clients  # noqa: E402
from interop_clients import ProcessSet, Tracker, start_tracker  # noqa: E402


def require_tool(name: str) -> None:
    """Skip when an executable or python module (e.g. "aria2c", "libtorrent",
    "tracker.cli") is missing; pytest.fail instead under CI=true. Test modules import it
    from interop_clients."""
    interop_clients.require_tool(name)


def free_port() -> int:
    """A TCP+UDP port free on 127.0.0.1 right now (for clients that cannot bind port 0)."""
    return interop_clients.free_port()


@pytest.fixture(scope="session", autouse=True)
def swarm_bytecode():
    """Every swarm process the tests start reads compiled modules (interop_clients.precompile)."""
    interop_clients.precompile()


@pytest.fixture(scope="session", autouse=True)
def no_local_discovery():
    """Local Service Discovery (BEP 14) multicasts to the LAN: off in every test, for the
    test process and every child it starts."""
    old = os.environ.get("SWARM_NO_LSD")
    os.environ["SWARM_NO_LSD"] = "1"
    yield
    if old is None:
        os.environ.pop("SWARM_NO_LSD", None)
    else:
        os.environ["SWARM_NO_LSD"] = old


@pytest.fixture
def procs(request):
    """Start processes with `procs.start(argv, name=...)`; all are stopped at teardown.
    When the test failed, the tail of every process's output is printed."""
    started = ProcessSet()
    yield started
    started.stop_all()
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(started.report())


@pytest.fixture
def tracker(procs) -> Tracker:
    """A `swarm-tracker` on 127.0.0.1 at a free port (HTTP and UDP), on aiohttp: what serves
    --torrents and --files (test_interop_tracker runs the real clients against granian)."""
    require_tool("tracker.cli")
    return start_tracker(procs, "--http-server", "aiohttp")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the item, so fixtures can tell whether the test failed."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


# --- timings: interop tests record how long each client pair took ----------------------

TIMINGS_KEY = pytest.StashKey[list]()


@pytest.fixture
def record_timing(request):
    """record_timing("aria2c <- swarm seed", seconds): listed at the end of the run."""
    timings = request.config.stash.setdefault(TIMINGS_KEY, [])

    def record(label: str, seconds: float) -> None:
        timings.append((label, seconds))

    return record


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    timings = config.stash.get(TIMINGS_KEY, [])
    if timings:
        terminalreporter.section("interop timings")
        for label, seconds in timings:
            terminalreporter.write_line(f"{seconds:7.2f}s  {label}")


class Clock:
    """A clock the test moves by hand (tracker expiry, connection ids)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
async def clients():
    """The one way tests make in-process peers: 127.0.0.1, port 0, LSD off; all closed after."""
    made: list[Client] = []

    async def make(**kw):
        kw.setdefault("port", 0)
        kw.setdefault("host", "127.0.0.1")
        kw.setdefault("lsd", False)
        client = Client(ClientConfig(**kw))
        await client.start()
        made.append(client)
        return client

    yield make
    await asyncio.gather(*(c.close() for c in made), return_exceptions=True)


"""The `lan` fixture: a fresh namespace LAN per test, processes in it, all removed after.

Outside CI a machine that cannot build namespaces (not root) skips these tests with the
reason; with CI=true that is a failure, because CI runs as root.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from interop_clients import Proc, ProcessSet
from tests.lan.netns import Host, Lan, NetnsUnavailable, check_available, lan_env, remove_stale

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


class LanSession:
    """A Lan plus the processes started on its hosts (stopped before the LAN goes away)."""

    def __init__(self, lan: Lan) -> None:
        self.lan = lan
        self.procs = ProcessSet()

    def __getattr__(self, name):
        return getattr(self.lan, name)

    def start(self, host: Host, argv: list, *, name: str, cwd: Path | None = None) -> Proc:
        return self.procs.start(host.command(argv), name=f"{host.name}:{name}", cwd=cwd, env=lan_env())


@pytest.fixture
def lan(request):
    try:
        check_available()
    except NetnsUnavailable as exc:
        if IN_CI:
            pytest.fail(f"CI: LAN tests must run: {exc}", pytrace=False)
        pytest.skip(str(exc))
    remove_stale()
    session = LanSession(Lan())
    try:
        yield session
    finally:
        session.procs.stop_all()
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(session.procs.report())
        session.lan.close()
        assert session.lan.leftovers() == [], "network namespaces left behind"

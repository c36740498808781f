"""Unusable tracker URLs (port out of range, broken host): the announcer skips only that
tracker and goes on to the next tier; `create` refuses to write one; parsing keeps them.

The announcer runs against the real tracker, in-process on 127.0.0.1 (HTTP and UDP on one port).
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from common.bencoding import bencode
from common.metainfo import MetainfoError, create_metainfo, parse_metainfo
from peer.announcer import AnnounceError, Announcer
from tracker.server import TrackerConfig, start_tracker

ROOT = Path(__file__).resolve().parents[2]
BAD_URLS = [
    "http://127.0.0.1:99999/announce",
    "udp://127.0.0.1:99999/announce",
    "udp://[::1/announce",
    "http://[::1/announce",
    "http://127.0.0.1:http/announce",
]


@pytest.fixture
async def tracker():
    running = await start_tracker(TrackerConfig(host="127.0.0.1", port=0, interval=60))
    yield running
    await running.close()


def fake_torrent() -> SimpleNamespace:
    """What Announcer.run reads and calls on a Torrent, and nothing else."""
    found: list = []
    return SimpleNamespace(
        info_hash=bytes(range(20)), uploaded=0, downloaded=0, left=100, connections=[],
        announced=asyncio.Event(), found=found, wants_peers=lambda: False,
        add_peers=lambda peers, source: found.extend(peers))


def announcer(tiers: list[list[str]], n: int = 1) -> Announcer:
    return Announcer(tiers, peer_id=b"-SW0001-%012d" % n, port=6881 + n, http_timeout=5,
                     udp_timeouts=(2.0,))


@pytest.mark.parametrize("scheme", ["http", "udp"])
@pytest.mark.parametrize("bad", BAD_URLS)
async def test_bad_url_fails_only_that_tracker_and_next_tier_answers(tracker, caplog, bad, scheme):
    good = f"{scheme}://{tracker.base_url}/announce"
    torrent = fake_torrent()
    ann = announcer([[bad], [good]])
    with caplog.at_level(logging.INFO, logger="swarm.peer"):
        assert (await ann.announce(torrent, "started")).interval == 60
        assert (await ann.announce(torrent, "")).interval == 60
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, caplog.text          # said once, not at every announce
    message = warnings[0].getMessage()
    assert bad in message and "\n" not in message and warnings[0].exc_info is None
    assert "Traceback" not in caplog.text


async def test_run_reaches_the_second_tier_and_the_swarm(tracker):
    """The reported hang: run() died on the first tier, so no peer ever came from the tracker."""
    good = f"http://{tracker.base_url}/announce"
    other = announcer([[good]], n=2)
    await other.announce(fake_torrent(), "started")     # someone for us to find
    torrent = fake_torrent()
    ann = announcer([["http://127.0.0.1:99999/announce", "udp://[::1/announce"], [good]])
    task = asyncio.create_task(ann.run(torrent))
    try:
        announced = asyncio.create_task(torrent.announced.wait())
        await asyncio.wait([task, announced], timeout=15, return_when=asyncio.FIRST_COMPLETED)
        announced.cancel()
        assert not task.done(), task.exception()
        assert ann.started and ann.last_error is None
        assert torrent.found == [("127.0.0.1", 6883)]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await ann.stop(torrent)
        await other.stop(torrent)


async def test_only_bad_urls_is_an_announce_error_not_a_crash():
    ann = announcer([[url] for url in BAD_URLS])
    with pytest.raises(AnnounceError) as caught:
        await ann.announce(fake_torrent(), "started")
    assert all(url in str(caught.value) for url in BAD_URLS)
    assert "Port out of range" in str(caught.value) and "Invalid IPv6 URL" in str(caught.value)


# -- creating and parsing ----------------------------------------------------------------
@pytest.mark.parametrize("url, says", [
    ("http://127.0.0.1:99999/announce", "Port out of range"),
    ("udp://127.0.0.1:99999/announce", "Port out of range"),
    ("udp://[::1/announce", "Invalid IPv6 URL"),
    ("http://127.0.0.1:http/announce", "Port could not be cast"),
    ("http://127.0.0.1:0/announce", "port 0"),
    ("udp://tracker.test/announce", "needs a port"),
    ("http:///announce", "has no host"),
    ("tracker.test/announce", "needs a scheme"),
    ("tracker.test:6969/announce", "is not one of http://, https://, udp://"),
    ("wss://t.test/announce", "wss:// is not one of"),
    ("ftp://t.test/announce", "ftp:// is not one of"),
    ("http://exa mple.test/announce", "not a valid host name"),
])
def test_create_refuses_an_unusable_tracker_url(tmp_path, url, says):
    (tmp_path / "f").write_bytes(b"data")
    with pytest.raises(MetainfoError, match=f"tracker URL '.*': .*{says}"):
        create_metainfo(tmp_path / "f", ["http://tracker.test/announce", url])


def test_create_refuses_an_unusable_web_seed_url(tmp_path):
    (tmp_path / "f").write_bytes(b"data")
    with pytest.raises(MetainfoError, match="web seed URL 'http://127.0.0.1:70000/f': Port out of range"):
        create_metainfo(tmp_path / "f", [], web_seeds=["http://127.0.0.1:70000/f"])


def test_create_still_takes_usual_urls(tmp_path):
    (tmp_path / "f").write_bytes(b"data")
    urls = ["http://t.test/announce", "https://t.test:443/a?k=1", "udp://t.test:6969",
            "udp://[::1]:6969/announce", "http://[2001:db8::1]/announce"]
    meta = parse_metainfo(create_metainfo(tmp_path / "f", urls, web_seeds=["http://seed.test:8080/f"]))
    assert meta.announce_tiers == tuple((u,) for u in urls)


def test_parsing_keeps_junk_trackers_for_the_announcer_to_skip():
    info = {"name": "x", "piece length": 16384, "pieces": b"\0" * 20, "length": 5}
    data = bencode({"announce": BAD_URLS[0], "info": info,
                    "announce-list": [[url] for url in BAD_URLS] + [["http://t.test/announce"]]})
    assert parse_metainfo(data).announce_tiers == (*((u,) for u in BAD_URLS), ("http://t.test/announce",))


def test_create_command_refuses_the_url_in_one_line(tmp_path):
    src = tmp_path / "a.bin"
    src.write_bytes(b"data" * 100)
    out = tmp_path / "a.torrent"
    got = subprocess.run([sys.executable, "-m", "peer", "create", str(src),
                          "-t", "http://127.0.0.1:99999/announce", "-o", str(out)],
                         capture_output=True, text=True, timeout=60, cwd=ROOT,
                         env={**os.environ, "SWARM_NO_LSD": "1"})
    assert got.returncode == 2
    assert got.stderr.strip().splitlines() == [
        "swarm-peer: error: tracker URL 'http://127.0.0.1:99999/announce': Port out of range 0-65535"]
    assert not out.exists()


async def test_a_tracker_that_cannot_be_reached_is_said_once_and_its_return_too(caplog):
    import socket
    with socket.socket() as probe:          # a port nobody listens on, for now
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    torrent = fake_torrent()
    ann = announcer([[f"http://127.0.0.1:{port}/announce"]])
    with caplog.at_level(logging.WARNING, logger="swarm.peer"):
        task = asyncio.create_task(ann.run(torrent))
        try:
            await asyncio.wait_for(torrent.announced.wait(), 5)
            assert [r.getMessage() for r in caplog.records] == [
                f"no tracker answers, still trying: http://127.0.0.1:{port}/announce: "
                f"cannot connect: Connection refused"]
            running = await start_tracker(TrackerConfig(host="127.0.0.1", port=port, interval=60))
            try:
                for _ in range(100):            # the first retry comes after 4 s
                    if len(caplog.records) == 2:
                        break
                    await asyncio.sleep(0.1)
                assert caplog.records[1].getMessage() == "a tracker answers again (0 peers)"
            finally:
                await running.close()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await ann.stop(torrent)

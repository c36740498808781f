"""swarm-tracker in the middle of two real clients: aria2c and libtorrent announce to it
over http:// and udp://, learn each other's address from it and complete a download.
No swarm peer is involved, so a failure here is the tracker's."""

from __future__ import annotations

import time

import pytest
from interop_clients import (
    assert_same_data, lt_command, lt_scrape, make_file, require_tool, run, start_leecher, start_seeder,
    start_tracker,
)

pytestmark = [pytest.mark.interop, pytest.mark.timeout(120)]

SIZE = 8 * 1024 * 1024
PIECE = 256 * 1024


@pytest.fixture(autouse=True)
def real_clients():
    require_tool("aria2c")
    require_tool("libtorrent")


def lt_torrent(tmp_path, tracker_url: str):
    """An 8 MiB file and a v1 .torrent for it made by libtorrent, announcing to tracker_url."""
    data = make_file(tmp_path / "seed" / "payload.bin", SIZE, seed=1)
    torrent = tmp_path / "payload.torrent"
    run(lt_command("create", data, torrent, "--tracker", tracker_url, "--piece-length", PIECE))
    return data, torrent


@pytest.mark.parametrize("scheme", ["http", "udp"])
@pytest.mark.parametrize("seeder,leecher", [("libtorrent", "aria2c"), ("aria2c", "libtorrent")])
def test_clients_find_each_other_through_swarm_tracker(tmp_path, procs, tracker, record_timing,
                                                       scheme, seeder, leecher):
    url = tracker.http if scheme == "http" else tracker.udp
    data, torrent = lt_torrent(tmp_path, url)
    start_seeder(procs, seeder, torrent, data)
    tracker.wait_for_swarm(torrent, complete=1)

    client = start_leecher(procs, leecher, torrent, tmp_path / "out")
    seconds = client.wait_complete(timeout=90)

    assert_same_data(data, tmp_path / "out" / data.name)
    record_timing(f"{leecher} <- {seeder} via swarm-tracker {scheme}", seconds)


def test_clients_through_a_tracker_served_by_granian(tmp_path, procs, record_timing):
    """`--http-server granian`: the real clients' announces and scrapes, answered by granian."""
    require_tool("granian")
    tracker = start_tracker(procs, "--http-server", "granian")
    data, torrent = lt_torrent(tmp_path, tracker.http)
    start_seeder(procs, "libtorrent", torrent, data)
    assert scrape_until(torrent, tmp_path / "scrape", (1, 0)) == (1, 0)
    client = start_leecher(procs, "aria2c", torrent, tmp_path / "out")
    seconds = client.wait_complete(timeout=90)
    assert_same_data(data, tmp_path / "out" / data.name)
    record_timing("aria2c <- libtorrent via swarm-tracker http --http-server granian", seconds)
    assert tracker.scrape(torrent)[0] >= 1      # (our own scrape client, on a fresh connection)


def scrape_until(torrent, workdir, want: tuple[int, int], timeout: float = 30.0) -> tuple[int, int]:
    """Scrape until the tracker reports `want` (announces land asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        got = lt_scrape(torrent, workdir)
        if got == want or time.monotonic() > deadline:
            return got
        time.sleep(0.5)


@pytest.mark.parametrize("scheme", ["http", "udp"])
def test_libtorrent_scrape_counts_seeds_and_leechers(tmp_path, procs, tracker, scheme):
    url = tracker.http if scheme == "http" else tracker.udp
    data, torrent = lt_torrent(tmp_path, url)
    assert lt_scrape(torrent, tmp_path / "scrape") == (0, 0)

    start_seeder(procs, "aria2c", torrent, data)
    assert scrape_until(torrent, tmp_path / "scrape", (1, 0)) == (1, 0)

    # A leecher that stays capped at 64 KiB/s is still incomplete while we look.
    leecher = procs.start(lt_command("get", torrent, tmp_path / "out", "--download-limit", 65536),
                          name="libtorrent-slow-get")
    leecher.wait_for(r"tracker reply", 30)
    assert scrape_until(torrent, tmp_path / "scrape", (1, 1)) == (1, 1)

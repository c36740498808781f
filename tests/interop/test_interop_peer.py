"""The swarm peer against real clients, one seed and one leecher, swarm-tracker between them:
swarm downloads from an aria2c or libtorrent seed, and aria2c or libtorrent download from
a swarm seed. Single files and folders (whose files cross piece boundaries)."""

from __future__ import annotations

import pytest
from interop_clients import (
    assert_same_data, lt_command, make_file, make_tree, require_tool, run, start_leecher, start_seeder,
    swarm_create,
)

pytestmark = [pytest.mark.interop, pytest.mark.timeout(120)]

PIECE = 256 * 1024
LAYOUTS = {
    "file": None,
    # Sizes not multiples of the piece length: pieces span file boundaries.
    "folder": {"a.bin": 3_000_001, "sub/b.bin": 1_234_567, "sub/deeper/c.bin": 2_500_000, "tiny": 7},
}


def payload(tmp_path, layout: str):
    """The data to share, under tmp_path/seed."""
    if layout == "file":
        data = make_file(tmp_path / "seed" / "payload.bin", 8 * 1024 * 1024, seed=2)
    else:
        data = make_tree(tmp_path / "seed" / "payload", LAYOUTS["folder"], seed=3)
    return data


def require(kind: str) -> None:
    if kind == "swarm":
        require_tool("peer.cli")
    else:
        require_tool(kind)


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("seeder", ["aria2c", "libtorrent"])
def test_swarm_downloads_from_real_seed(tmp_path, procs, tracker, record_timing, seeder, layout):
    require(seeder)
    require("swarm")
    data = payload(tmp_path, layout)
    torrent = swarm_create(data, [tracker.http], tmp_path / "payload.torrent", piece_length=PIECE)
    start_seeder(procs, seeder, torrent, data)
    tracker.wait_for_swarm(torrent, complete=1)

    leecher = start_leecher(procs, "swarm", torrent, tmp_path / "out")
    seconds = leecher.wait_complete(timeout=90)

    assert_same_data(data, tmp_path / "out" / data.name)
    record_timing(f"swarm <- {seeder} ({layout})", seconds)


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("leecher_kind", ["aria2c", "libtorrent"])
def test_real_client_downloads_from_swarm_seed(tmp_path, procs, tracker, record_timing, leecher_kind, layout):
    require(leecher_kind)
    require("swarm")
    data = payload(tmp_path, layout)
    torrent = swarm_create(data, [tracker.http], tmp_path / "payload.torrent", piece_length=PIECE)
    start_seeder(procs, "swarm", torrent, data)
    tracker.wait_for_swarm(torrent, complete=1)

    leecher = start_leecher(procs, leecher_kind, torrent, tmp_path / "out")
    seconds = leecher.wait_complete(timeout=90)

    assert_same_data(data, tmp_path / "out" / data.name)
    record_timing(f"{leecher_kind} <- swarm ({layout})", seconds)


@pytest.mark.parametrize("seeder", ["aria2c", "libtorrent"])
def test_swarm_downloads_over_udp_tracker(tmp_path, procs, tracker, record_timing, seeder):
    """The same with a udp:// announce URL: swarm's UDP tracker client and server together
    with a real client's."""
    require(seeder)
    require("swarm")
    data = payload(tmp_path, "file")
    torrent = swarm_create(data, [tracker.udp], tmp_path / "payload.torrent", piece_length=PIECE)
    start_seeder(procs, seeder, torrent, data)
    tracker.wait_for_swarm(torrent, complete=1)

    leecher = start_leecher(procs, "swarm", torrent, tmp_path / "out")
    seconds = leecher.wait_complete(timeout=90)

    assert_same_data(data, tmp_path / "out" / data.name)
    record_timing(f"swarm <- {seeder} via udp tracker", seconds)


@pytest.mark.parametrize("seeder,leecher", [("swarm", "libtorrent"), ("libtorrent", "swarm")])
def test_libtorrent_hybrid_torrent_with_pad_files(tmp_path, procs, tracker, record_timing, seeder, leecher):
    """libtorrent's default torrents are v1+v2 hybrids whose files are padded to piece
    boundaries (BEP 47): swarm seeds the data they were made from, and downloads one
    without making the pad files."""
    require("libtorrent")
    require("swarm")
    data = payload(tmp_path, "folder")
    torrent = tmp_path / "hybrid.torrent"
    run(lt_command("create", data, torrent, "--tracker", tracker.http, "--piece-length", 32768, "--hybrid"))
    start_seeder(procs, seeder, torrent, data)
    tracker.wait_for_swarm(torrent, complete=1)
    seconds = start_leecher(procs, leecher, torrent, tmp_path / "out").wait_complete(timeout=90)
    assert_same_data(data, tmp_path / "out" / data.name)
    assert not (tmp_path / "out" / data.name / ".pad").exists()
    record_timing(f"{leecher} <- {seeder} (libtorrent hybrid, pad files)", seconds)

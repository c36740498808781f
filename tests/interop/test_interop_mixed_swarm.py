"""A mixed swarm: one swarm seed, and a swarm, an aria2c and a libtorrent leecher at once.

Every upload is capped, the seed's hardest, so the seed alone cannot serve three copies
in time: the leechers have to trade pieces with each other, across client kinds."""

from __future__ import annotations

import re
import time

import pytest
from interop_clients import (
    KINDS, assert_same_data, make_file, require_tool, start_leecher, start_seeder, swarm_create,
)

pytestmark = [pytest.mark.interop, pytest.mark.timeout(180)]

SIZE = 8 * 1024 * 1024
PIECE = 128 * 1024
SEED_UPLOAD = 1024 * 1024        # bytes/s: one copy takes the seed 8 s, three copies 24 s
LEECHER_UPLOAD = 2 * 1024 * 1024


def test_mixed_swarm_all_finish_with_identical_files(tmp_path, procs, tracker, record_timing):
    require_tool("peer.cli")
    require_tool("aria2c")
    require_tool("libtorrent")
    data = make_file(tmp_path / "seed" / "payload.bin", SIZE, seed=4)
    torrent = swarm_create(data, [tracker.http], tmp_path / "payload.torrent", piece_length=PIECE)
    seed, _ = start_seeder(procs, "swarm", torrent, data, upload_limit=SEED_UPLOAD)
    tracker.wait_for_swarm(torrent, complete=1)

    started = time.monotonic()
    leechers = [start_leecher(procs, kind, torrent, tmp_path / kind, seed_after=True,
                              upload_limit=LEECHER_UPLOAD) for kind in KINDS]
    for leecher in leechers:
        seconds = leecher.wait_complete(timeout=150 - (time.monotonic() - started))
        record_timing(f"mixed swarm: {leecher.kind} leecher", seconds)
    for leecher in leechers:
        assert_same_data(data, leecher.outdir / data.name)

    seed.stop()
    totals = re.search(r"totals: uploaded=(\d+)", seed.output())
    assert totals, "the swarm seed printed no totals line on exit"
    uploaded = int(totals.group(1))
    record_timing(f"mixed swarm, all three (the seed sent {uploaded / SIZE:.2f} copies)",
                  time.monotonic() - started)
    # Three copies left the swarm; the seed sent well under three: the rest went peer to peer.
    assert uploaded < 2.5 * SIZE, f"the seed uploaded {uploaded} bytes: leechers did not share"

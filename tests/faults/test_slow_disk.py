"""A disk slower than the network: the leecher stops reading from its peers while too many
pieces wait for the hashing and writing threads, so memory stays bounded (before, every
piece received waited in RAM for its write) and the download still completes intact."""

from __future__ import annotations

import asyncio
import time

import peer.torrent
from common import wire
from common.metainfo import create_metainfo, parse_metainfo
from peer.storage import Storage
from tests.faults.conftest import make_file
from tests.faults.test_hostile_peers import PIECE, start_seed
from tracker.server import TrackerConfig, start_tracker


async def test_a_slow_disk_pauses_reading_and_bounds_the_pieces_waiting(clients, tmp_path):
    pieces = 96
    seed, _, meta, data = await start_seed(clients, tmp_path, size=pieces * PIECE)
    late_seed = await clients()
    await late_seed.add_torrent(meta, tmp_path / "seed")
    leecher = await clients()
    lt = await leecher.add_torrent(meta, tmp_path / "leech")
    lt.unwritten_max = 4
    waiting: list[int] = []
    write = lt.storage._write_sync

    def slow_write(index, piece, *how):     # runs in a worker thread: a disk at ~1.5 MiB/s
        waiting.append(len(lt.hashing))
        time.sleep(0.02)
        write(index, piece, *how)
    lt.storage._write_sync = slow_write
    paused = []

    async def watch():
        while not lt.complete.is_set():
            if lt.disk_busy and not any(paused):
                # a peer that connects while reading is paused must be held back too
                lt.add_peers([("127.0.0.1", late_seed.port)], "test")
            paused.append(lt.disk_busy)
            await asyncio.sleep(0.01)
    watcher = asyncio.ensure_future(watch())
    lt.add_peers([("127.0.0.1", seed.port)], "test")
    await asyncio.wait_for(lt.complete.wait(), 30)
    await watcher
    assert (tmp_path / "leech" / "data.bin").read_bytes() == data
    assert any(paused) and not lt.disk_busy
    # the limit, plus what the two receive buffers already held when reading stopped
    assert max(waiting) <= lt.unwritten_max + 2 * wire.RECEIVE_MAX // PIECE, waiting


async def test_a_slow_disk_also_holds_back_a_web_seed(clients, tmp_path, monkeypatch):
    data = make_file(tmp_path / "files" / "data.bin", 48 * PIECE, seed=5)
    origin = await start_tracker(TrackerConfig(host="127.0.0.1", port=0, files_dir=tmp_path / "files"))
    try:
        meta = parse_metainfo(create_metainfo(
            tmp_path / "files" / "data.bin", [], piece_length=PIECE,
            web_seeds=[f"http://{origin.base_url}/files/data.bin"]))
        monkeypatch.setattr(peer.torrent, "UNWRITTEN_BYTES", 4 * PIECE)
        waiting: list[int] = []
        torrents = []
        write = Storage._write_sync

        def slow_write(self, index, piece, *how):
            waiting.append(len(torrents[0].hashing) if torrents else 0)
            time.sleep(0.02)
            write(self, index, piece, *how)
        monkeypatch.setattr(Storage, "_write_sync", slow_write)
        leecher = await clients()
        lt = await leecher.add_torrent(meta, tmp_path / "leech", mode="central")
        torrents.append(lt)
        await asyncio.wait_for(lt.complete.wait(), 30)
        assert (tmp_path / "leech" / "data.bin").read_bytes() == data
        # the limit, plus the pieces of the web seed's fetches already under way
        assert max(waiting) <= lt.unwritten_max + 4, waiting
    finally:
        await origin.close()

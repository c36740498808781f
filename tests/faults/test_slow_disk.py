"""A disk slower than the network: the leecher stops reading from its peers while too many
pieces wait for the hashing and writing threads, so memory stays bounded (before, every
piece received waited in RAM for its write) and the download still completes intact."""

from __future__ import annotations

import asyncio
import time

from tests.faults.test_hostile_peers import PIECE, start_seed


async def test_a_slow_disk_pauses_reading_and_bounds_the_pieces_waiting(clients, tmp_path):
    pieces = 48
    seed, _, meta, data = await start_seed(clients, tmp_path, size=pieces * PIECE)
    leecher = await clients()
    lt = await leecher.add_torrent(meta, tmp_path / "leech")
    lt.unwritten_max = 4
    waiting: list[int] = []
    write = lt.storage._write_sync

    def slow_write(index, piece):       # runs in a worker thread: a disk at ~1.5 MiB/s
        waiting.append(len(lt.hashing))
        time.sleep(0.02)
        write(index, piece)
    lt.storage._write_sync = slow_write
    paused = []

    async def watch():
        while not lt.complete.is_set():
            paused.append(lt.disk_busy)
            await asyncio.sleep(0.01)
    watcher = asyncio.ensure_future(watch())
    lt.add_peers([("127.0.0.1", seed.port)], "test")
    await asyncio.wait_for(lt.complete.wait(), 30)
    await watcher
    assert (tmp_path / "leech" / "data.bin").read_bytes() == data
    assert any(paused) and not lt.disk_busy
    # the limit, plus what one receive buffer already held when reading stopped
    assert max(waiting) <= lt.unwritten_max + 256 * 1024 // PIECE, waiting

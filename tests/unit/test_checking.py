"""The check of data already on disk: its progress, and stopping in the middle of it."""

from __future__ import annotations

import asyncio
import io
import os
import time

import peer.storage
from peer.client import Client, ClientConfig
from peer.progress import ProgressReporter
from peer.storage import Storage
from tests.integration.conftest import make_file, torrent_for


async def test_a_client_stopped_while_checking_forgets_the_torrent_and_closes_its_files(tmp_path, monkeypatch):
    src = make_file(tmp_path / "data" / "big.bin", 4 * 1024 * 1024, seed=3)
    _, meta = torrent_for(src, ["http://127.0.0.1:9/announce"], piece_length=16384)
    slow = Storage._verify_batch

    def verify_slowly(self, indices):
        time.sleep(0.05)
        return slow(self, indices)

    monkeypatch.setattr(Storage, "_verify_batch", verify_slowly)
    monkeypatch.setattr(peer.storage, "VERIFY_BATCH_BYTES", 64 * 1024)     # many rounds
    seen: list[tuple[int, int]] = []
    client = Client(ClientConfig(host="127.0.0.1", port=0, lsd=False))
    await client.start()
    try:
        open_before = set(os.listdir("/proc/self/fd"))
        adding = asyncio.ensure_future(client.add_torrent(
            meta, src.parent, on_check=lambda done, total: seen.append((done, total))))
        while not seen:
            await asyncio.sleep(0.01)
        adding.cancel()
        try:
            await adding
        except asyncio.CancelledError:
            pass
        else:
            raise AssertionError("the check ran to its end")
        assert meta.info_hash not in client.torrents
        await asyncio.sleep(0.2)                 # (hashing threads already running finish)
        assert set(os.listdir("/proc/self/fd")) <= open_before
        assert seen[0][0] < meta.num_pieces == seen[0][1]
        torrent = await client.add_torrent(meta, src.parent)     # the same files, again: all there
        assert torrent.complete.is_set()
    finally:
        await client.close()


def test_checking_progress_is_quiet_for_a_second_then_a_line_every_few_seconds(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    out = io.StringIO()
    progress = ProgressReporter(out=out, every=5.0)
    for done, at in ((10, 100.0), (20, 100.5), (30, 101.2), (40, 103.0), (50, 106.3)):
        now[0] = at
        progress.checking("big.bin", done, 100)
    assert out.getvalue() == "big.bin: checking 30/100 pieces\nbig.bin: checking 50/100 pieces\n"


async def test_an_open_cancelled_while_its_thread_runs_closes_what_it_opened(tmp_path, monkeypatch):
    src = make_file(tmp_path / "data" / "big.bin", 100_000, seed=4)
    _, meta = torrent_for(src, ["http://127.0.0.1:9/announce"])
    opened = Storage._open_files

    def open_slowly(self, *args):
        time.sleep(0.3)
        return opened(self, *args)

    monkeypatch.setattr(Storage, "_open_files", open_slowly)
    storage = Storage(meta, src.parent.parent)
    open_before = set(os.listdir("/proc/self/fd"))
    opening = asyncio.ensure_future(storage.open())
    await asyncio.sleep(0.1)
    opening.cancel()
    try:
        await opening
    except asyncio.CancelledError:
        pass
    await asyncio.sleep(0.5)                        # (the thread finishes meanwhile)
    assert set(os.listdir("/proc/self/fd")) <= open_before

"""Rate caps on real loopback transfers: a capped flow stays within 5% of its cap over 3 s.

The rate is measured between two samples of the byte counters taken 3 s apart, once the
transfer is under way, so connection set-up does not blur the figure.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time

import aiohttp
import pytest

from tests.integration.conftest import ROOT, make_file, sha1_of, start_process, torrent_for, wait_for_line

MiB = 1024 * 1024
WINDOW = 3.0


async def measure(counter, window: float = WINDOW, timeout: float = 20) -> float:
    """Bytes per second of `counter()` over `window` seconds, from its first 256 KiB on."""
    deadline = time.monotonic() + timeout
    while counter() < 256 * 1024:
        assert time.monotonic() < deadline, "the transfer never started"
        await asyncio.sleep(0.01)
    start_bytes, start = counter(), time.monotonic()
    await asyncio.sleep(window)
    return (counter() - start_bytes) / (time.monotonic() - start)


async def pair(clients, tmp_path, size: int, seed_kw: dict, leech_kw: list[dict]):
    """A seed and leechers in this process, dialled to each other directly (no tracker)."""
    src = make_file(tmp_path / "seed" / "blob.bin", size, seed=21)
    _, meta = torrent_for(src, [], piece_length=65536)
    seed = await clients(**seed_kw)
    seed_torrent = await seed.add_torrent(meta, src.parent)
    leechers = []
    for i, kw in enumerate(leech_kw):
        client = await clients(**kw)
        torrent = await client.add_torrent(meta, tmp_path / f"leech{i}")
        torrent.add_peers([("127.0.0.1", seed.port)], "test")
        leechers.append(torrent)
    return src, seed_torrent, leechers


async def test_upload_limit_holds_within_5_percent_over_3_seconds(clients, tmp_path):
    cap = 1 * MiB
    src, seed, (leech,) = await pair(clients, tmp_path, 6 * MiB, {"upload_limit": cap}, [{}])
    rate = await measure(lambda: seed.uploaded)
    assert abs(rate - cap) <= 0.05 * cap, f"{rate / MiB:.3f} MiB/s for a 1 MiB/s cap"
    await asyncio.wait_for(leech.complete.wait(), 10)
    assert sha1_of(tmp_path / "leech0" / "blob.bin") == sha1_of(src)


async def test_upload_limit_is_shared_by_all_connections(clients, tmp_path):
    cap = 1 * MiB
    _, seed, leechers = await pair(clients, tmp_path, 8 * MiB, {"upload_limit": cap}, [{}, {}, {}])
    rate = await measure(lambda: seed.uploaded)
    assert abs(rate - cap) <= 0.05 * cap, f"{rate / MiB:.3f} MiB/s to 3 peers for a 1 MiB/s cap"
    assert all(t.downloaded > 0 for t in leechers)   # all three were served, from one budget


async def test_download_limit_holds_within_5_percent_over_3_seconds(clients, tmp_path):
    cap = 1 * MiB
    src, _, (leech,) = await pair(clients, tmp_path, 6 * MiB, {}, [{"download_limit": cap}])
    rate = await measure(lambda: leech.downloaded)
    assert abs(rate - cap) <= 0.05 * cap, f"{rate / MiB:.3f} MiB/s for a 1 MiB/s cap"
    await asyncio.wait_for(leech.complete.wait(), 10)
    assert sha1_of(tmp_path / "leech0" / "blob.bin") == sha1_of(src)


async def test_origin_upload_limit_holds_within_5_percent(tmp_path, processes):
    """`swarm-tracker --files DIR --upload-limit`: two concurrent downloads share the cap."""
    files = tmp_path / "files"
    make_file(files / "big.bin", 8 * MiB, seed=22)
    log = tmp_path / "origin.log"
    proc = start_process(["-m", "tracker", "start", "--host", "127.0.0.1", "--port", "0",
                          "--files", str(files), "--upload-limit", "1MiB"], log)
    processes.append(proc)
    port = wait_for_line(log, r"http://127\.0\.0\.1:(\d+)/announce", proc, 20).group(1)
    received = [0, 0]

    async def fetch(session, i: int, first: int) -> None:
        headers = {"Range": f"bytes={first}-{first + 4 * MiB - 1}"}
        async with session.get(f"http://127.0.0.1:{port}/files/big.bin", headers=headers) as resp:
            assert resp.status == 206
            async for chunk in resp.content.iter_chunked(65536):
                received[i] += len(chunk)

    async with aiohttp.ClientSession() as session:
        tasks = [asyncio.ensure_future(fetch(session, 0, 0)), asyncio.ensure_future(fetch(session, 1, 4 * MiB))]
        try:
            rate = await measure(lambda: sum(received))
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    assert abs(rate - MiB) <= 0.05 * MiB, f"{rate / MiB:.3f} MiB/s for a 1 MiB/s cap"
    assert min(received) > 0


@pytest.mark.parametrize("seed_opts, get_opts", [(["--upload-limit", "1MiB"], []),
                                                  ([], ["--download-limit", "1MiB"])],
                         ids=["seed-upload-limit", "get-download-limit"])
def test_cli_rate_options_pace_a_whole_download(tmp_path, processes, tracker_process, seed_opts, get_opts):
    """The command-line options reach the limiter: 3 MiB at 1 MiB/s takes 3 s, less the 0.1 s
    burst the idle bucket saved and, with --download-limit, less the last read: a read is
    paid for after it arrives (up to 256 KiB, 0.25 s), and the download ends with it. Set-up
    adds little. Uncapped, the same download takes well under a second."""
    src = make_file(tmp_path / "seed" / "c.bin", 3 * MiB, seed=23)
    torrent = tmp_path / "c.torrent"
    torrent.write_bytes(torrent_for(src, [f"http://{tracker_process}/announce"], piece_length=65536)[0])
    seed_log = tmp_path / "seed.log"
    seed = start_process(["-m", "peer", "seed", str(torrent), str(src), "--host", "127.0.0.1", "--port", "0",
                          "--no-lsd", *seed_opts], seed_log)
    processes.append(seed)
    wait_for_line(seed_log, r"seeding", seed, 30)
    got = subprocess.run([sys.executable, "-m", "peer", "get", str(torrent), "-o", str(tmp_path / "out"),
                          "--no-seed", "--host", "127.0.0.1", "--port", "0", "--no-lsd", *get_opts],
                         capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert got.returncode == 0, got.stdout + got.stderr
    seconds = float(re.search(r"complete: .* \(([\d.]+) s\)", got.stdout).group(1))
    assert 2.6 <= seconds <= 3.6, f"3 MiB at 1 MiB/s took {seconds} s"
    assert sha1_of(tmp_path / "out" / "c.bin") == sha1_of(src)

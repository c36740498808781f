"""Churn: peers die mid-download and the tracker restarts mid-swarm; the rest go on.

In-process peers, so 30 of them fit in one test. A killed peer sends no `stopped` to the
tracker (its announcers are removed first) and its sockets are aborted, as after a crash:
the others must notice by themselves.
"""

from __future__ import annotations

import asyncio
import random
import signal
import socket
import subprocess
import time

import aiohttp
import pytest

from peer.client import Client
from tests.faults.conftest import make_file, torrent_for
from tests.integration.conftest import start_process, stop_process, wait_for_line
from tracker.server import TrackerConfig, start_tracker


async def crash(client: Client) -> None:
    """Stop a peer the way a crash would: no `stopped` announce, connections cut."""
    for torrent in client.torrents.values():
        torrent.announcers.clear()
    await client.close()


def union_of_have(torrents) -> int:
    have = bytearray(len(torrents[0].have))
    for t in torrents:
        for i, h in enumerate(t.have):
            have[i] |= h
    return sum(have)


@pytest.mark.slow
async def test_thirty_peers_half_killed_including_the_seed(clients, tmp_path, show):
    rng = random.Random()
    data = make_file(tmp_path / "seed" / "data.bin", 2 * 1024 * 1024 + 4321, seed=5)
    tracker = await start_tracker(TrackerConfig(host="127.0.0.1", port=0, interval=2))
    try:
        _, meta = torrent_for(tmp_path / "seed" / "data.bin", [f"http://{tracker.base_url}/announce"],
                              piece_length=32 * 1024)
        seed = await clients(upload_limit=1024 * 1024)
        await seed.add_torrent(meta, tmp_path / "seed")
        leechers, torrents = [], []
        for n in range(29):
            client = await clients(download_limit=384 * 1024)   # ~5 s each: churn lands mid-download
            torrents.append(await client.add_torrent(meta, tmp_path / f"leech{n}"))
            leechers.append(client)
        doomed = set(rng.sample(range(29), 14))         # with the seed: 15 of 30 die
        survivors = [torrents[n] for n in range(29) if n not in doomed]
        started = time.monotonic()

        async def kill_later(n: int) -> None:
            await asyncio.sleep(rng.uniform(0.1, 4.0))
            await crash(leechers[n])

        async def kill_seed_when_a_copy_is_out() -> float:
            while union_of_have(survivors) < meta.num_pieces:
                await asyncio.sleep(0.02)
            await crash(seed)
            return time.monotonic() - started

        kills = [asyncio.ensure_future(kill_later(n)) for n in doomed]
        seed_killed_at = await asyncio.wait_for(kill_seed_when_a_copy_is_out(), 60)
        left_at_seed_kill = sum(t.left for t in survivors) / len(survivors) / meta.total_length
        await asyncio.gather(*kills)
        done_before_kill = sum(torrents[n].complete.is_set() for n in doomed)
        await asyncio.wait_for(asyncio.gather(*(t.complete.wait() for t in survivors)), 60)
        took = time.monotonic() - started
        for n in range(29):
            if n not in doomed:
                assert (tmp_path / f"leech{n}" / "data.bin").read_bytes() == data
        show(f"churn: 30 peers, seed killed at {seed_killed_at:.1f} s once the survivors held a full copy "
             f"({left_at_seed_kill:.0%} still to fetch on average), "
             f"14 leechers killed at random ({done_before_kill} of them had finished), "
             f"15 survivors finished in {took:.1f} s, files identical")
    finally:
        await tracker.close()


def free_port() -> int:
    """A port free for both TCP and UDP on 127.0.0.1 (the tracker binds both)."""
    while True:
        with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            tcp.bind(("127.0.0.1", 0))
            port = tcp.getsockname()[1]
            try:
                udp.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


def start_tracker_process(port: int, log) -> "subprocess.Popen":
    proc = start_process(["-m", "tracker", "start", "--host", "127.0.0.1", "--port", str(port),
                          "--interval", "2"], log)
    wait_for_line(log, rf"listening on http://127\.0\.0\.1:{port}/announce", proc, 20)
    return proc


async def tracker_peer_count(port: int) -> int:
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
            async with http.get(f"http://127.0.0.1:{port}/stats.json") as resp:
                return (await resp.json())["peer_count"]
    except (aiohttp.ClientError, asyncio.TimeoutError):
        return -1


@pytest.mark.slow
async def test_tracker_restarted_mid_swarm(clients, tmp_path, processes, show):
    """The tracker process is killed while 6 leechers download: they keep going. It comes back
    on the same port with an empty registry; every peer re-announces, and a newcomer that
    knows only the tracker finds the swarm and finishes."""
    port = free_port()
    proc = start_tracker_process(port, tmp_path / "tracker1.log")
    processes.append(proc)
    data = make_file(tmp_path / "seed" / "data.bin", 3 * 1024 * 1024, seed=9)
    _, meta = torrent_for(tmp_path / "seed" / "data.bin", [f"http://127.0.0.1:{port}/announce"],
                          piece_length=32 * 1024)
    seed = await clients(upload_limit=1024 * 1024)
    await seed.add_torrent(meta, tmp_path / "seed")
    torrents = []
    for n in range(6):
        leecher = await clients(download_limit=384 * 1024)
        torrents.append(await leecher.add_torrent(meta, tmp_path / f"leech{n}"))
    for _ in range(100):
        if all(t.connections for t in torrents) and await tracker_peer_count(port) == 7:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)

    stop_process(proc, signal.SIGKILL)                     # the tracker crashes
    before = sum(t.status().have for t in torrents)
    await asyncio.sleep(2.0)
    during = sum(t.status().have for t in torrents)
    assert during > before, "downloads stalled while the tracker was down"

    proc = start_tracker_process(port, tmp_path / "tracker2.log")
    processes.append(proc)
    restarted = time.monotonic()
    count = 0
    while time.monotonic() - restarted < 30:
        count = await tracker_peer_count(port)
        if count == 7:
            break
        await asyncio.sleep(0.2)
    reannounced = time.monotonic() - restarted
    assert count == 7, f"only {count} of 7 peers re-announced to the restarted tracker"

    newcomer = await clients()
    late = await newcomer.add_torrent(meta, tmp_path / "late")
    await asyncio.wait_for(asyncio.gather(late.complete.wait(), *(t.complete.wait() for t in torrents)), 60)
    for folder in [f"leech{n}" for n in range(6)] + ["late"]:
        assert (tmp_path / folder / "data.bin").read_bytes() == data
    show(f"tracker restart: {during - before} pieces fetched while it was down; all 7 peers "
         f"re-announced {reannounced:.1f} s after the restart; newcomer and 6 leechers finished")


async def test_reading_paused_by_our_download_limit_is_not_the_peer_going_silent(clients, tmp_path):
    """A low download limit pauses reading for longer than the idle timeout (3 s here): the
    connection must survive, since the silence is ours. (Churn with many rate-limited peers
    lost most connections to this and then waited out the redial backoff.)"""
    make_file(tmp_path / "seed" / "data.bin", 2 * 1024 * 1024, seed=4)
    _, meta = torrent_for(tmp_path / "seed" / "data.bin", piece_length=256 * 1024)
    seed = await clients()
    await seed.add_torrent(meta, tmp_path / "seed")
    leecher = await clients(download_limit=16 * 1024)
    lt = await leecher.add_torrent(meta, tmp_path / "leech")
    lt.add_peers([("127.0.0.1", seed.port)], "test")
    for _ in range(100):
        if lt.connections:
            break
        await asyncio.sleep(0.02)
    [link] = lt.connections
    await asyncio.sleep(5)
    assert not link.closed, f"connection dropped: {link.close_reason}"
    assert lt.connections == {link} and lt.downloaded > 0

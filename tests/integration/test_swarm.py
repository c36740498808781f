"""Whole swarms in one process: a tracker, a seed and many leechers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import shutil

from peer.direct_writes import WriteCosts
from tests.integration.conftest import make_file, sha1_of, torrent_for, tree_digest
from tests.unit.test_direct_writes import direct_io_or_skip


async def _swarm(clients, tracker: str, src, meta, n_leechers: int, tmp_path, timeout=90):
    seed = await clients()
    await seed.add_torrent(meta, src.parent)
    leechers = []
    for i in range(n_leechers):
        client = await clients()
        torrent = await client.add_torrent(meta, tmp_path / f"leech{i}")
        leechers.append(torrent)
    await asyncio.wait_for(asyncio.gather(*(t.complete.wait() for t in leechers)), timeout)
    return leechers


async def test_twenty_leechers_single_file(clients, tracker_process, tmp_path):
    src = make_file(tmp_path / "seed" / "movie.bin", 3 * 1024 * 1024 + 12345)
    _, meta = torrent_for(src, [f"http://{tracker_process}/announce"], piece_length=32768)
    leechers = await _swarm(clients, tracker_process, src, meta, 20, tmp_path)
    want = sha1_of(src)
    for i, torrent in enumerate(leechers):
        assert torrent.error is None
        assert sha1_of(tmp_path / f"leech{i}" / "movie.bin") == want
    # pieces others lacked stayed in the page cache, to be served from memory
    assert sum(t.storage.direct_bytes for t in leechers) < 20 * len(src.read_bytes()) // 2
    # leechers traded with each other: the seed did not send every copy alone
    assert sum(t.uploaded for t in leechers) > 0


async def test_a_lone_leecher_writes_past_the_page_cache(clients, tracker_process, tmp_path, monkeypatch):
    """Its only peer is the seed, which has every piece: nobody will ask the leecher for
    them, so the aligned ones may go straight to disk (the short last piece cannot), and
    do where direct writes cost less CPU than the page cache's copy."""
    direct_io_or_skip(tmp_path)
    monkeypatch.setattr(WriteCosts, "choose_direct", lambda self: True)
    src = make_file(tmp_path / "seed" / "movie.bin", 2 * 1024 * 1024 + 5000, seed=8)
    _, meta = torrent_for(src, [f"http://{tracker_process}/announce"], piece_length=65536)
    [torrent] = await _swarm(clients, tracker_process, src, meta, 1, tmp_path)
    assert torrent.storage.direct_bytes == 2 * 1024 * 1024
    assert sha1_of(tmp_path / "leech0" / "movie.bin") == sha1_of(src)


async def test_twenty_leechers_multi_file_over_udp(clients, tracker_process, tmp_path):
    folder = tmp_path / "seed" / "album"
    make_file(folder / "a.bin", 700_000, seed=2)
    make_file(folder / "sub" / "b.bin", 1_000_001, seed=3)
    (folder / "sub" / "empty.txt").write_bytes(b"")
    make_file(folder / "c.txt", 5, seed=4)
    _, meta = torrent_for(folder, [f"udp://{tracker_process}/announce"], piece_length=16384 * 2)
    await _swarm(clients, tracker_process, folder, meta, 20, tmp_path)
    want = tree_digest(folder)
    for i in range(20):
        assert tree_digest(tmp_path / f"leech{i}" / "album") == want


async def test_resume_fetches_only_missing_pieces(clients, tracker_process, tmp_path):
    src = make_file(tmp_path / "seed" / "data.bin", 1024 * 1024, seed=5)
    _, meta = torrent_for(src, [f"http://{tracker_process}/announce"], piece_length=65536)
    # a partial copy: the first half of the pieces present, the rest zeros
    part = tmp_path / "leech" / "data.bin"
    part.parent.mkdir(parents=True)
    data = src.read_bytes()
    part.write_bytes(data[: 8 * 65536] + bytes(len(data) - 8 * 65536))
    seed = await clients()
    await seed.add_torrent(meta, src.parent)
    leecher = await clients()
    torrent = await leecher.add_torrent(meta, part.parent)
    assert torrent.status().have == 8  # verified on start
    await asyncio.wait_for(torrent.complete.wait(), 60)
    assert sha1_of(part) == sha1_of(src)
    assert torrent.downloaded == len(data) - 8 * 65536  # nothing verified was fetched again


async def test_complete_data_just_seeds(clients, tracker_process, tmp_path):
    src = make_file(tmp_path / "seed" / "x.bin", 200_000, seed=6)
    _, meta = torrent_for(src, [f"http://{tracker_process}/announce"], piece_length=16384)
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(src, copy / "x.bin")
    client = await clients()
    torrent = await client.add_torrent(meta, copy)
    assert torrent.complete.is_set() and torrent.downloaded == 0


async def test_a_pipeline_keeps_its_starting_depth_until_a_rate_is_measured(clients, tmp_path):
    """Sized from a rate of zero, a new peer's pipeline fell to 8 blocks for its first
    quarter second (0.1 s of a 1 GiB transfer on loopback)."""
    from peer.connection import PeerConnection

    src = make_file(tmp_path / "seed" / "data.bin", 1024 * 1024, seed=9)
    _, meta = torrent_for(src, [], piece_length=65536)
    client = await clients()
    torrent = await client.add_torrent(meta, tmp_path / "leech")
    conn = PeerConnection(my_peer_id=b"-XX0000-" + bytes(12), find_torrent=lambda h: None,
                          torrent=torrent)
    torrent.connections.add(conn)
    start = conn.max_inflight
    torrent._adapt_pipelines()
    assert conn.max_inflight == start
    # 1 MB in its first 0.1 s: 10 MB/s, 0.2 s of which is 122 blocks, plus 4
    conn.download.add(1_000_000, torrent.loop.time() - 0.1)
    torrent._adapt_pipelines()
    assert 100 < conn.max_inflight <= 126
    # measured once, silent for longer than the rate's window: back to the floor
    quiet = PeerConnection(my_peer_id=b"-XX0000-" + bytes(12), find_torrent=lambda h: None,
                           torrent=torrent)
    quiet.download.add(1_000_000, torrent.loop.time() - 30)
    # asked 2 s ago, never sent a block: the floor too
    staller = PeerConnection(my_peer_id=b"-XX0000-" + bytes(12), find_torrent=lambda h: None,
                             torrent=torrent)
    staller.last_progress_at = torrent.loop.time() - 2
    torrent.connections.update((quiet, staller))
    torrent._adapt_pipelines()
    assert quiet.max_inflight == 8 and staller.max_inflight == 8
    torrent.connections.difference_update((conn, quiet, staller))


def _fake_peer(torrent, fast: bool = True):
    """A connection with no socket: what it would send goes nowhere, what it is asked is seen."""
    from peer.connection import PeerConnection
    conn = PeerConnection(my_peer_id=b"-XX0000-" + bytes(12), find_torrent=lambda h: None,
                          torrent=torrent)
    conn.fast = True
    torrent.on_established(conn)
    return conn


async def test_a_peer_that_announces_a_new_piece_is_asked_for_it(clients, tmp_path):
    """An unchoking peer whose pieces were all being fetched from others got no requests;
    its later HAVE must bring some at once (it used to wait for an unrelated event: a
    reject, a peer leaving, or the 45 s snub timeout; with an aria2c or libtorrent seed,
    swarm leechers ran well below their cap for long stretches)."""
    src = make_file(tmp_path / "seed" / "data.bin", 8 * 65536, seed=3)
    _, meta = torrent_for(src, [], piece_length=65536)      # 8 pieces of 4 blocks
    client = await clients()
    torrent = await client.add_torrent(meta, tmp_path / "leech")
    first, second, third = _fake_peer(torrent), _fake_peer(torrent), _fake_peer(torrent)
    torrent.on_bitfield(third, [6, 7])      # it chokes us: pieces 6 and 7 keep endgame off
    for conn in (first, second):
        torrent.on_bitfield(conn, range(4))
        conn.peer_choking = False
        torrent.on_unchoke(conn)
    assert {b[0] for b in first.inflight} == {0, 1, 2, 3} and len(first.inflight) == 16
    assert not second.inflight                  # everything it has is asked of `first`
    torrent.on_have(second, 5)
    assert {b[0] for b in second.inflight} == {5}
    for conn in (first, second, third):
        conn.close()


async def test_a_peer_that_dialled_us_is_not_dialled_back(clients, tmp_path):
    """A tracker's list names peers by their listening address; one connected to us already
    (it dialled) must not be dialled again: that made a second connection every 30 s, and
    on one side of the pair it replaced the working one mid-transfer."""
    src = make_file(tmp_path / "seed" / "data.bin", 4 * 65536, seed=4)
    _, meta = torrent_for(src, [], piece_length=65536)
    seed_client, leech_client = await clients(), await clients()
    # two peers with nothing yet: their connection stays up (two seeds would part at once)
    seed = await seed_client.add_torrent(meta, tmp_path / "a")
    leech = await leech_client.add_torrent(meta, tmp_path / "b")
    leech.add_peers([("127.0.0.1", seed_client.port)], "tracker")
    for _ in range(100):                     # its extension handshake names its listen port
        incoming = next(iter(seed.connections), None)
        if incoming is not None and incoming.dial_address is not None:
            break
        await asyncio.sleep(0.05)
    assert incoming.dial_address == ("127.0.0.1", leech_client.port)
    seed.add_peers([("127.0.0.1", leech_client.port)], "tracker")   # as the tracker would
    await asyncio.sleep(1.5)
    assert seed.candidates[("127.0.0.1", leech_client.port)].next_try == 0   # never dialled
    assert seed.connections == {incoming} and not incoming.closed

"""BEP 6: a peer that chokes us answers every request it drops with a reject; we do the same,
and we do not wait forever on a peer that forgets one."""

from __future__ import annotations

import asyncio

from common.wire import (
    Choke, Handshake, HaveAll, HaveNone, Interested, Piece, RejectRequest, Request, Unchoke,
)
from tests.faults.hostile_peer import FAST, HostilePeer, PeerClosed
from tests.faults.test_hostile_peers import PIECE, start_seed

BLOCK = 16 * 1024


async def test_choke_answers_even_the_request_waiting_for_upload_tokens(clients, tmp_path):
    # At 64 KiB/s the seed sends a block, then holds the next one while it waits for tokens;
    # a choke at that moment must reject that one too, not just the ones still queued.
    seed, torrent, meta, data = await start_seed(clients, tmp_path, size=16 * PIECE,
                                                 upload_limit=64 * 1024)
    peer = await HostilePeer.connect(seed.port)
    try:
        await peer.handshake(meta.info_hash)
        await peer.expect(HaveAll)
        peer.send(HaveNone())
        await peer.become_unchoked()
        asked = {(i, 0) for i in range(8)}
        peer.send(*[Request(i, 0, BLOCK) for i, _ in sorted(asked)])
        first = await peer.expect(Piece)
        await asyncio.sleep(0.05)
        (conn,) = torrent.connections
        conn.set_choking(True)

        answered = {(first.index, first.begin)}
        choked = False
        async with asyncio.timeout(5):
            while answered != asked:
                msg = await peer.recv()
                if isinstance(msg, Piece):
                    lo = msg.index * meta.piece_length
                    assert msg.block == data[lo:lo + BLOCK] and not choked
                    answered.add((msg.index, msg.begin))
                elif isinstance(msg, RejectRequest):
                    answered.add((msg.index, msg.begin))
                elif isinstance(msg, Choke):
                    choked = True
        assert choked and answered == asked
    finally:
        peer.close()


async def test_requests_a_choking_peer_never_rejects_are_given_up(clients, tmp_path, monkeypatch):
    """A fast-extension peer chokes with our requests open and never rejects them. A tick
    of the connection's timer later the leecher counts them as lost (before, they stayed
    with that peer for as long as it kept us choked), and gets the blocks elsewhere."""
    from peer import connection
    monkeypatch.setattr(connection.Timeouts, "from_env",
                        classmethod(lambda cls: cls(2, 150, 45, 100, tick=0.3)))
    seed, torrent, meta, data = await start_seed(clients, tmp_path, size=16 * PIECE,
                                                 upload_limit=512 * 1024)
    forgotten: list[tuple[int, int]] = []

    async def choke_and_forget(reader, writer):
        peer = HostilePeer(reader, writer, b"-CHOKER-" + b"0" * 12)
        try:
            await peer.recv(5)
            peer.send(Handshake(meta.info_hash, peer.peer_id, FAST), HaveAll())
            while True:
                msg = await peer.recv(30)
                if isinstance(msg, Interested) and not forgotten:
                    peer.send(Unchoke())
                elif isinstance(msg, Request):
                    if not forgotten:
                        peer.send(Choke())      # and these requests get no reject, ever
                    forgotten.append((msg.index, msg.begin))
        except (PeerClosed, TimeoutError, ConnectionError):
            pass

    server = await asyncio.start_server(choke_and_forget, "127.0.0.1", 0)
    try:
        leecher = await clients()
        lt = await leecher.add_torrent(meta, tmp_path / "leech")
        lt.add_peers([("127.0.0.1", server.sockets[0].getsockname()[1])], "test")
        async with asyncio.timeout(5):
            while not forgotten or not lt.connections:
                await asyncio.sleep(0.01)
        (conn,) = lt.connections
        async with asyncio.timeout(3):
            while conn.inflight or not conn.peer_choking:
                await asyncio.sleep(0.02)
        lt.add_peers([("127.0.0.1", seed.port)], "test")
        await asyncio.wait_for(lt.complete.wait(), 20)
    finally:
        server.close()
    assert forgotten
    assert (tmp_path / "leech" / "data.bin").read_bytes() == data

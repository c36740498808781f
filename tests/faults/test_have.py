"""`have` goes only to peers that lack the piece (libtorrent's default without
send_redundant_have): each one is a TCP segment, and in a 33-peer swarm they were a
seventh of every peer's CPU."""

from __future__ import annotations

import asyncio

from common.wire import Bitfield, Have, HaveNone, bitfield_from_indices
from tests.faults.hostile_peer import HostilePeer, PeerClosed
from tests.faults.test_hostile_peers import PIECE, start_seed


async def haves_until_quiet(peer: HostilePeer, quiet: float = 1.0) -> set[int]:
    got: set[int] = set()
    try:
        while True:
            msg = await peer.recv(quiet)
            if isinstance(msg, Have):
                got.add(msg.index)
    except (TimeoutError, PeerClosed):
        return got


async def test_have_goes_only_to_peers_without_the_piece(clients, tmp_path):
    seed, _, meta, data = await start_seed(clients, tmp_path, size=8 * PIECE, upload_limit=256 * 1024)
    leecher = await clients()
    lt = await leecher.add_torrent(meta, tmp_path / "leech")
    holder = await HostilePeer.connect(leecher.port)
    lacker = await HostilePeer.connect(leecher.port)
    try:
        await holder.handshake(meta.info_hash)
        holder.send(Bitfield(bitfield_from_indices([0, 5], meta.num_pieces)))
        await lacker.handshake(meta.info_hash)
        lacker.send(HaveNone())
        holder.keep_alive()
        lacker.keep_alive()
        lt.add_peers([("127.0.0.1", seed.port)], "test")
        await asyncio.wait_for(lt.complete.wait(), 20)
        got_holder, got_lacker = await asyncio.gather(haves_until_quiet(holder), haves_until_quiet(lacker))
    finally:
        holder.close()
        lacker.close()
    assert (tmp_path / "leech" / "data.bin").read_bytes() == data
    assert got_lacker == set(range(meta.num_pieces))
    assert got_holder == set(range(meta.num_pieces)) - {0, 5}

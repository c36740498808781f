"""A seed sends each piece once before it sends any piece twice (peer.first_copy): a piece
that one peer asked for moments ago is rejected (BEP 6) to another, while pieces nobody
has asked for remain; after that, every request is served."""

from __future__ import annotations

import asyncio

from common.wire import Piece, RejectRequest, Request
from tests.faults.test_hostile_peers import PIECE, bystander, fetch, start_seed

BLOCK = 16 * 1024


async def answer(peer, index: int, begin: int):
    async with asyncio.timeout(5):
        while True:
            msg = await peer.recv()
            if isinstance(msg, (Piece, RejectRequest)) and (msg.index, msg.begin) == (index, begin):
                return msg


async def a_fetches_and_b_is_refused(a, b) -> None:
    a.send(Request(1, 0, BLOCK))
    assert isinstance(await answer(a, 1, 0), Piece)
    b.send(Request(1, 0, BLOCK))
    assert isinstance(await answer(b, 1, 0), RejectRequest)


async def test_a_seed_rejects_a_block_another_peer_just_asked_for(clients, tmp_path):
    seed, torrent, meta, data = await start_seed(clients, tmp_path, size=4 * PIECE)
    a, b = await bystander(seed.port, meta), await bystander(seed.port, meta)
    try:
        await a_fetches_and_b_is_refused(a, b)
        b.send(Request(2, 0, BLOCK))             # one nobody has asked for: served
        got = await answer(b, 2, 0)
        assert isinstance(got, Piece) and got.block == data[2 * PIECE:2 * PIECE + BLOCK]
        assert not b.writer.is_closing()
    finally:
        a.close()
        b.close()


async def test_a_peer_that_asks_again_at_once_is_served_not_refused_forever(clients, tmp_path):
    """aria2c asks for a rejected block again within a millisecond; rejecting it for as long
    as the first copy lasts sent it 20,000 rejects a second. Asked again that fast, the
    seed serves it, and serves it without refusals from then on."""
    seed, torrent, meta, data = await start_seed(clients, tmp_path, size=4 * PIECE)
    a, b = await bystander(seed.port, meta), await bystander(seed.port, meta)
    try:
        await a_fetches_and_b_is_refused(a, b)
        b.send(Request(1, 0, BLOCK))                 # at once: it ignores the hint
        got = await answer(b, 1, 0)
        assert isinstance(got, Piece) and got.block == data[PIECE:PIECE + BLOCK]
        a.send(Request(2, 0, BLOCK))
        assert isinstance(await answer(a, 2, 0), Piece)
        b.send(Request(2, BLOCK, BLOCK))             # another peer's piece: no refusal now
        assert isinstance(await answer(b, 2, BLOCK), Piece)
    finally:
        a.close()
        b.close()


async def test_a_peer_missing_only_its_last_piece_is_never_refused(clients, tmp_path):
    """Its last piece is all it waits for: refusing it would only make the swarm's slowest
    peer later (and a seed that restarted may never see a first ask of every piece)."""
    from common.wire import Bitfield, HaveAll, bitfield_from_indices
    from tests.faults.hostile_peer import HostilePeer

    seed, torrent, meta, data = await start_seed(clients, tmp_path, size=4 * PIECE)
    a = await bystander(seed.port, meta)
    b = await HostilePeer.connect(seed.port)
    try:
        await b.handshake(meta.info_hash)
        await b.expect(HaveAll)
        b.send(Bitfield(bitfield_from_indices([0, 2, 3], meta.num_pieces)))
        await b.become_unchoked()
        a.send(Request(1, 0, BLOCK))
        assert isinstance(await answer(a, 1, 0), Piece)
        b.send(Request(1, 0, BLOCK))
        got = await answer(b, 1, 0)
        assert isinstance(got, Piece) and got.block == data[PIECE:PIECE + BLOCK]
    finally:
        a.close()
        b.close()


async def test_a_peer_that_got_all_but_its_last_piece_from_us_is_never_refused(clients, tmp_path):
    """A leecher does not tell a seed of the pieces it gets (a HAVE to a peer that has the
    piece is redundant, and swarm sends none): the seed knows how close it is to done from
    the bytes it sent it."""
    pieces = 128        # "close to done": at most 128 // 64 = 2 pieces left
    seed, torrent, meta, data = await start_seed(clients, tmp_path, size=pieces * BLOCK,
                                                 piece_length=BLOCK)
    a = await bystander(seed.port, meta)
    b = await bystander(seed.port, meta)
    try:
        for index in range(pieces - 2):
            b.send(Request(index, 0, BLOCK))
            assert isinstance(await answer(b, index, 0), Piece)
        last = pieces - 2           # (and one more that nobody has asked for: refusals are on)
        a.send(Request(last, 0, BLOCK))
        assert isinstance(await answer(a, last, 0), Piece)
        b.send(Request(last, 0, BLOCK))
        got = await answer(b, last, 0)
        assert isinstance(got, Piece) and got.block == data[last * BLOCK:(last + 1) * BLOCK]
    finally:
        a.close()
        b.close()


async def test_once_every_piece_was_asked_for_repeats_are_served(clients, tmp_path):
    seed, torrent, meta, data = await start_seed(clients, tmp_path, size=2 * PIECE)
    a, b = await bystander(seed.port, meta), await bystander(seed.port, meta)
    try:
        blocks = [(i, begin) for i in range(2) for begin in (0, BLOCK)]
        a.send(*[Request(i, begin, BLOCK) for i, begin in blocks])
        for i, begin in blocks:
            assert isinstance(await answer(a, i, begin), Piece)
        b.send(Request(1, BLOCK, BLOCK))
        got = await answer(b, 1, BLOCK)
        assert isinstance(got, Piece) and got.block == data[PIECE + BLOCK:2 * PIECE]
    finally:
        a.close()
        b.close()


async def test_a_leecher_refused_everything_asks_again_a_moment_later(clients, tmp_path):
    """A seed that rejects every request while unchoking us (as a seed does for blocks another
    peer is fetching): we stop asking it for those pieces, but only for a second or so;
    before the fix nothing asked again and the download stalled for good."""
    from tests.faults.conftest import make_file, torrent_for
    from tests.faults.hostile_peer import FakeSeed, honest

    data = make_file(tmp_path / "seed" / "data.bin", 8 * PIECE)
    _, meta = torrent_for(tmp_path / "seed" / "data.bin", piece_length=PIECE)
    started = asyncio.get_running_loop().time()

    def reject_at_first(meta, data, index, begin, length):
        if asyncio.get_running_loop().time() - started < 0.5:
            return RejectRequest(index, begin, length)
        return honest(meta, data, index, begin, length)

    seed = await FakeSeed(meta, data, reject_at_first).start()
    try:
        await fetch(clients, tmp_path / "leech", meta, seed, timeout=10)
    finally:
        await seed.close()
    assert (tmp_path / "leech" / "data.bin").read_bytes() == data
    assert seed.requests_seen > seed.blocks_sent     # some were refused first

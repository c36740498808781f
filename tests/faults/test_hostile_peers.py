"""Hostile peers against a real daemon: each misbehaviour costs the hostile peer its own
connection, nothing more. The daemon keeps serving a well-behaved bystander connection and
an in-process leecher finishes with a byte-identical file."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import time

import pytest

from common.wire import (
    Bitfield, Cancel, Handshake, Have, HaveAll, HaveNone, Interested, Piece, RejectRequest, Request, Unchoke,
)
from tests.faults.conftest import make_file, torrent_for
from tests.faults.hostile_peer import FAST, FakeSeed, HostilePeer, PeerClosed, honest, lie, stall

PIECE = 32 * 1024
SIZE = 12 * PIECE + 5000            # 13 pieces: the bitfield has 3 spare bits, the last piece is short


async def fetch(clients, root, meta, *seeds, timeout: float = 20.0):
    """A new in-process leecher downloads `meta` into `root` from `seeds` (anything with a
    .port on 127.0.0.1); returns its Torrent once complete."""
    leecher = await clients()
    lt = await leecher.add_torrent(meta, root)
    lt.add_peers([("127.0.0.1", seed.port) for seed in seeds], "test")
    await asyncio.wait_for(lt.complete.wait(), timeout)
    return lt


async def start_seed(clients, tmp_path, size=SIZE, piece_length=PIECE, **config):
    data = make_file(tmp_path / "seed" / "data.bin", size)
    _, meta = torrent_for(tmp_path / "seed" / "data.bin", piece_length=piece_length)
    seed = await clients(**config)
    torrent = await seed.add_torrent(meta, tmp_path / "seed")
    assert torrent.complete.is_set()
    return seed, torrent, meta, data


async def bystander(port: int, meta) -> HostilePeer:
    """A well-behaved leecher connection: handshake, HaveAll from the seed, unchoked."""
    peer = await HostilePeer.connect(port)
    await peer.handshake(meta.info_hash)
    await peer.expect(HaveAll)
    peer.send(HaveNone())
    await peer.become_unchoked()
    peer.keep_alive()
    return peer


async def still_served(peer: HostilePeer, meta, data: bytes, index: int = 2) -> None:
    block = await peer.fetch_block(index, 0, 16384)
    assert block == data[index * meta.piece_length:index * meta.piece_length + 16384]


# -- the misbehaviours; each runs on a fresh connection to the seed -------------------------

async def oversized_length_prefix(peer, meta):
    await peer.handshake(meta.info_hash)
    peer.send_raw((2**32 - 1).to_bytes(4, "big") + b"\x07")


async def unknown_message_id(peer, meta):
    await peer.handshake(meta.info_hash)
    peer.send_raw(b"\x00\x00\x00\x01\x63")


async def bitfield_wrong_length(peer, meta):
    await peer.handshake(meta.info_hash)
    peer.send(Bitfield(bytes((meta.num_pieces + 7) // 8 + 1)))


async def bitfield_spare_bits(peer, meta):
    await peer.handshake(meta.info_hash)
    bits = bytearray((meta.num_pieces + 7) // 8)
    bits[-1] = 0x01                      # bit of "piece 15" of a 13-piece torrent
    peer.send(Bitfield(bytes(bits)))


async def have_out_of_range(peer, meta):
    await peer.handshake(meta.info_hash)
    peer.send(HaveNone(), Have(meta.num_pieces))


async def request_beyond_short_last_piece(peer, meta):
    await peer.handshake(meta.info_hash)
    peer.send(HaveNone())
    await peer.become_unchoked()
    peer.send(Request(meta.num_pieces - 1, 0, 16384))   # the last piece is only 5000 bytes


async def request_past_piece_end(peer, meta):
    await peer.handshake(meta.info_hash)
    peer.send(HaveNone())
    await peer.become_unchoked()
    peer.send(Request(0, meta.piece_length - 8192, 16384))


async def request_unknown_piece(peer, meta):
    await peer.handshake(meta.info_hash)
    peer.send(HaveNone())
    await peer.become_unchoked()
    peer.send(Request(meta.num_pieces, 0, 16384))


async def requests_while_choked(peer, meta):
    await peer.handshake(meta.info_hash)
    peer.send(HaveNone())                # never interested, so never unchoked
    peer.send(*[Request(0, 0, 16384)] * 2500)


async def request_flood(peer, meta):
    await peer.handshake(meta.info_hash)
    peer.send(HaveNone())
    await peer.become_unchoked()
    peer.send(*[Request(1, 0, 16384)] * 5000)   # and we never read the answers


async def piece_outside_the_torrent(peer, meta):
    await peer.handshake(meta.info_hash)
    peer.send(HaveNone(), Piece(meta.num_pieces, 0, bytes(16)))   # unasked, and no such piece


async def piece_misaligned(peer, meta):
    await peer.handshake(meta.info_hash)
    peer.send(HaveNone(), Piece(0, 5, bytes(16)))               # not on a 16 KiB boundary


async def handshake_wrong_info_hash(peer, meta):
    peer.send(Handshake(os.urandom(20), peer.peer_id, FAST))


async def not_bittorrent_at_all(peer, meta):
    peer.send_raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + bytes(60))


async def silent_from_the_start(peer, meta):
    pass                                  # the handshake timeout must end it


async def silent_after_handshake(peer, meta):
    await peer.handshake(meta.info_hash)  # then nothing: the idle timeout must end it


CASES = [oversized_length_prefix, unknown_message_id, bitfield_wrong_length, bitfield_spare_bits,
         have_out_of_range, request_beyond_short_last_piece, request_past_piece_end,
         request_unknown_piece, requests_while_choked, request_flood, piece_outside_the_torrent,
         piece_misaligned, handshake_wrong_info_hash,
         not_bittorrent_at_all, silent_from_the_start, silent_after_handshake]


@pytest.mark.parametrize("misbehave", CASES, ids=[c.__name__ for c in CASES])
async def test_misbehaviour_drops_only_that_connection(clients, tmp_path, misbehave):
    seed, torrent, meta, data = await start_seed(clients, tmp_path)
    good = await bystander(seed.port, meta)
    hostile = await HostilePeer.connect(seed.port)
    started = time.monotonic()
    try:
        await misbehave(hostile, meta)
    except PeerClosed:
        pass                              # dropped even before the misbehaviour was complete
    assert await hostile.closed_within(6), f"{misbehave.__name__}: connection still open"
    took = time.monotonic() - started
    # The daemon goes on: the bystander is still connected and served the right bytes.
    await still_served(good, meta, data)
    established = [c for c in torrent.connections if c.established]
    assert [c.peer_id for c in established] == [good.peer_id]
    good.close()
    print(f"{misbehave.__name__}: dropped after {took:.2f} s")


async def test_every_misbehaviour_at_once_while_a_leecher_downloads(clients, tmp_path):
    seed, torrent, meta, data = await start_seed(clients, tmp_path, size=96 * PIECE + 123)
    leecher = await clients(download_limit=512 * 1024)
    ltorrent = await leecher.add_torrent(meta, tmp_path / "leech")
    ltorrent.add_peers([("127.0.0.1", seed.port)], "test")
    for _ in range(100):
        if ltorrent.connections:
            break
        await asyncio.sleep(0.02)
    [link] = ltorrent.connections
    hostiles = [await HostilePeer.connect(seed.port) for _ in CASES]

    async def run(case, peer):
        try:
            await case(peer, meta)
        except PeerClosed:
            return True
        return await peer.closed_within(8)

    dropped = await asyncio.gather(*(run(c, p) for c, p in zip(CASES, hostiles)))
    assert all(dropped), [c.__name__ for c, d in zip(CASES, dropped) if not d]
    assert not ltorrent.complete.is_set(), "too fast: the leecher should still be downloading"
    assert ltorrent.connections == {link} and not link.closed   # the same connection all along
    await asyncio.wait_for(ltorrent.complete.wait(), 30)
    assert (tmp_path / "leech" / "data.bin").read_bytes() == data


async def test_liar_is_banned_and_file_ends_correct_with_two_honest_seeds(clients, tmp_path):
    """Blocks of 4-block pieces come from three seeds; one flips every byte it sends. The
    leecher must refetch failed pieces, ban the liar once proven and never ban an honest seed."""
    size = 64 * 4 * 16384 + 777
    data = make_file(tmp_path / "seed" / "data.bin", size)
    _, meta = torrent_for(tmp_path / "seed" / "data.bin", piece_length=4 * 16384)
    honest_seeds = []
    for _ in range(2):
        s = await clients(upload_limit=2 * 1024 * 1024)   # the liar is faster: it gets work
        t = await s.add_torrent(meta, tmp_path / "seed")
        assert t.complete.is_set()
        honest_seeds.append(s)
    liar = await FakeSeed(meta, data, lie).start()
    try:
        leecher = await clients()
        lt = await leecher.add_torrent(meta, tmp_path / "leech")
        lt.add_peers([("127.0.0.1", liar.port)] + [("127.0.0.1", s.port) for s in honest_seeds], "test")
        await asyncio.wait_for(lt.complete.wait(), 40)
    finally:
        await liar.close()
    assert hashlib.sha1((tmp_path / "leech" / "data.bin").read_bytes()).digest() == hashlib.sha1(data).digest()
    assert liar.blocks_sent > 0 and lt.hash_failures > 0
    assert liar.peer_id in lt.banned_ids
    for s in honest_seeds:
        assert s.peer_id not in lt.banned_ids, "an honest seed was banned"
    print(f"liar sent {liar.blocks_sent} bad blocks, {lt.hash_failures} hash failures, liar banned")


async def test_liar_alone_with_one_honest_seed_many_rounds(clients, tmp_path):
    """Same as above, but a lot of mixed pieces: honest strikes must never add up to a ban."""
    size = 160 * 8 * 16384
    data = make_file(tmp_path / "seed" / "data.bin", size, seed=7)
    _, meta = torrent_for(tmp_path / "seed" / "data.bin", piece_length=8 * 16384)
    good = await clients(upload_limit=4 * 1024 * 1024)
    await good.add_torrent(meta, tmp_path / "seed")
    liar = await FakeSeed(meta, data, lie).start()
    try:
        leecher = await clients()
        lt = await leecher.add_torrent(meta, tmp_path / "leech")
        lt.add_peers([("127.0.0.1", liar.port), ("127.0.0.1", good.port)], "test")
        await asyncio.wait_for(lt.complete.wait(), 40)
    finally:
        await liar.close()
    assert (tmp_path / "leech" / "data.bin").read_bytes() == data
    assert good.peer_id not in lt.banned_ids and liar.peer_id in lt.banned_ids


def lie_then_stall(meta, data, index, begin, length):
    """Wrong bytes for the first half of every piece, then sit on the requests: after the
    snub timeout an honest seed completes those pieces, so each failure has two sources."""
    return lie(meta, data, index, begin, length) if begin < meta.piece_length // 2 else None


async def test_half_liar_that_stalls_never_gets_an_honest_seed_banned(clients, tmp_path):
    size = 64 * 4 * 16384 + 777
    data = make_file(tmp_path / "seed" / "data.bin", size, seed=3)
    _, meta = torrent_for(tmp_path / "seed" / "data.bin", piece_length=4 * 16384)
    good = await clients(upload_limit=1024 * 1024)
    await good.add_torrent(meta, tmp_path / "seed")
    liar = await FakeSeed(meta, data, lie_then_stall).start()
    try:
        leecher = await clients()
        lt = await leecher.add_torrent(meta, tmp_path / "leech")
        lt.add_peers([("127.0.0.1", liar.port)], "test")
        for _ in range(100):              # the liar takes the first requests
            if liar.requests_seen:
                break
            await asyncio.sleep(0.02)
        lt.add_peers([("127.0.0.1", good.port)], "test")
        done = asyncio.ensure_future(lt.complete.wait())
        await asyncio.wait([done], timeout=20)
        done.cancel()
    finally:
        await liar.close()
    assert good.peer_id not in lt.banned_ids, (
        f"honest seed banned after {lt.hash_failures} mixed hash failures; download stuck")
    assert lt.complete.is_set()
    assert (tmp_path / "leech" / "data.bin").read_bytes() == data
    assert liar.peer_id in lt.banned_ids, "the liar's bad blocks were never pinned on it"


async def test_stalling_seed_does_not_hold_up_the_download(clients, tmp_path):
    """A seed that says it has everything, unchokes, and never sends a block (snubbing)."""
    seed, _, meta, data = await start_seed(clients, tmp_path, size=40 * PIECE)
    staller = await FakeSeed(meta, data, stall).start()
    try:
        leecher = await clients()
        lt = await leecher.add_torrent(meta, tmp_path / "leech")
        lt.add_peers([("127.0.0.1", staller.port)], "test")
        for _ in range(100):              # the staller takes requests first
            if staller.requests_seen:
                break
            await asyncio.sleep(0.02)
        assert staller.requests_seen
        lt.add_peers([("127.0.0.1", seed.port)], "test")
        await asyncio.wait_for(lt.complete.wait(), 20)
    finally:
        await staller.close()
    assert (tmp_path / "leech" / "data.bin").read_bytes() == data


async def test_a_peer_that_sits_on_our_requests_loses_its_upload_slot(clients, tmp_path):
    """Tit-for-tat: while we leech, a peer that unchoked us and then never sends a block is
    snubbing us, and gets no regular upload slot (only, at most, the optimistic one)."""
    data = make_file(tmp_path / "src" / "data.bin", 20 * PIECE)
    _, meta = torrent_for(tmp_path / "src" / "data.bin", piece_length=PIECE)
    staller = await FakeSeed(meta, data, stall, interested=True).start()
    try:
        leecher = await clients()
        lt = await leecher.add_torrent(meta, tmp_path / "leech")
        lt.add_peers([("127.0.0.1", staller.port)], "test")
        for _ in range(100):
            if staller.requests_seen and lt.connections:
                break
            await asyncio.sleep(0.02)
        conn = next(iter(lt.connections))
        assert conn.peer_interested and not conn.snubbed
        for _ in range(100):               # FAST_TIMEOUTS: snubbed after 1.5 s without a block
            if conn.snubbed:
                break
            await asyncio.sleep(0.05)
        assert conn.snubbed, "no block for the snub timeout, and the peer was not marked"
        for _ in range(50):                # the choke loop runs every second
            if conn not in lt.choker.regular:
                break
            await asyncio.sleep(0.05)
        assert conn not in lt.choker.regular
    finally:
        await staller.close()


async def test_a_peer_slow_to_unchoke_is_not_taken_for_a_snubber(clients, tmp_path):
    """The snub clock starts when we start waiting for blocks: a peer that keeps us choked
    for longer than the snub timeout (1.5 s here), then takes a moment over its first
    block, is not snubbing us."""
    data = make_file(tmp_path / "src" / "data.bin", 20 * PIECE)
    _, meta = torrent_for(tmp_path / "src" / "data.bin", piece_length=PIECE)
    slow = await FakeSeed(meta, data, honest, unchoke_after=2.0, first_block_after=0.6).start()
    try:
        leecher = await clients()
        lt = await leecher.add_torrent(meta, tmp_path / "leech")
        lt.add_peers([("127.0.0.1", slow.port)], "test")
        ever_snubbed = False
        for _ in range(300):
            ever_snubbed = ever_snubbed or any(c.snubbed for c in lt.connections)
            if lt.complete.is_set():
                break
            await asyncio.sleep(0.02)
        assert lt.complete.is_set()
    finally:
        await slow.close()
    assert not ever_snubbed
    assert (tmp_path / "leech" / "data.bin").read_bytes() == data


async def hostile_seed_asked(clients, tmp_path, size: int):
    """An in-process leecher of `size` bytes, and a HostilePeer posing as its seed that has
    unchoked it and got its first request: (data, meta, torrent, seed, request)."""
    data = make_file(tmp_path / "src" / "data.bin", size)
    _, meta = torrent_for(tmp_path / "src" / "data.bin", piece_length=PIECE)
    leecher = await clients()
    lt = await leecher.add_torrent(meta, tmp_path / "leech")
    seed = await HostilePeer.connect(leecher.port)
    await seed.handshake(meta.info_hash)
    seed.send(HaveAll())
    await seed.expect(Interested)
    seed.send(Unchoke())
    return data, meta, lt, seed, await seed.expect(Request)


async def test_a_late_reject_of_a_cancelled_request_is_not_taken_for_the_asking_again(clients, tmp_path):
    """BEP 6 answers a cancelled request too. We cancel block B, ask for B again (as the
    endgame can), and the peer rejects the first request, then sends B: the reject answers
    the cancel and must not drop the second request (or mark the piece refused)."""
    data, meta, lt, seed, first = await hostile_seed_asked(clients, tmp_path, 4 * PIECE)
    try:
        conn = next(iter(lt.connections))
        block = (first.index, first.begin, first.length)
        assert block in conn.inflight
        conn.cancel(block)
        conn.request([block])
        await seed.expect(Cancel)
        seed.send(RejectRequest(*block))                # answers the cancelled request
        for _ in range(20):
            await asyncio.sleep(0.02)
        assert block in conn.inflight, "the reject of the cancelled request dropped the new one"
        offset = first.index * meta.piece_length + first.begin
        seed.send(Piece(first.index, first.begin, data[offset:offset + first.length]))
        for _ in range(100):
            if block not in conn.inflight:
                break
            await asyncio.sleep(0.02)
        assert block not in conn.inflight and not conn.cancels_unanswered
    finally:
        seed.close()


@pytest.mark.parametrize("fast", [True, False])
async def test_a_cancelled_request_gets_exactly_one_answer_under_bep6(clients, tmp_path, fast):
    """BEP 6: with the fast extension, a request cancelled while still queued is answered by
    a reject (never by nothing); without it, a cancel just drops the request."""
    seed, _, meta, data = await start_seed(clients, tmp_path, upload_limit=64 * 1024)
    peer = await HostilePeer.connect(seed.port)
    try:
        await peer.handshake(meta.info_hash, reserved=FAST if fast else bytes(8))
        peer.send(Interested())
        await peer.expect(Unchoke)
        wanted = [(i, b, 16384) for i in range(4) for b in (0, 16384)]   # 128 KiB: 2 s at the cap
        peer.send(*(Request(*r) for r in wanted))
        await peer.expect(Piece)
        peer.send(Cancel(*wanted[-1]))
        answers = []
        with contextlib.suppress(TimeoutError):
            while True:                    # until the seed has said all it will say
                msg = await peer.recv(1.0)
                if isinstance(msg, (Piece, RejectRequest)):
                    answers.append((type(msg), (msg.index, msg.begin)))
        last = wanted[-1][:2]
        about_last = [kind for kind, key in answers if key == last]
        assert about_last == ([RejectRequest] if fast else [])
        assert len(answers) == len(wanted) - (1 if fast else 2)   # (the first piece was read above)
    finally:
        peer.close()


async def test_honest_fake_seed_is_a_real_seed(clients, tmp_path):
    """Control for the two tests above: the fake seed with the honest policy is enough alone."""
    data = make_file(tmp_path / "src" / "data.bin", 20 * PIECE + 1)
    _, meta = torrent_for(tmp_path / "src" / "data.bin", piece_length=PIECE)
    fake = await FakeSeed(meta, data, honest).start()
    try:
        lt = await fetch(clients, tmp_path / "leech", meta, fake)
    finally:
        await fake.close()
    assert (tmp_path / "leech" / "data.bin").read_bytes() == data and lt.hash_failures == 0


async def test_connection_cap_refuses_extra_and_keeps_serving(clients, tmp_path):
    cap = 6
    seed, torrent, meta, data = await start_seed(clients, tmp_path, size=64 * PIECE,
                                                 max_connections=cap, upload_limit=2 * 1024 * 1024)
    leecher = await clients()
    lt = await leecher.add_torrent(meta, tmp_path / "leech")
    lt.add_peers([("127.0.0.1", seed.port)], "test")
    for _ in range(100):
        if torrent.connections:
            break
        await asyncio.sleep(0.02)
    inside = [await bystander(seed.port, meta) for _ in range(cap - 1)]
    extra = [await HostilePeer.connect(seed.port) for _ in range(5)]
    for peer in extra:
        assert await peer.closed_within(2), "a connection past the cap was kept"
    for peer in inside:
        await still_served(peer, meta, data)
    await asyncio.wait_for(lt.complete.wait(), 30)
    assert (tmp_path / "leech" / "data.bin").read_bytes() == data
    # a slot that frees up is usable again
    inside.pop().close()
    await asyncio.sleep(0.2)
    again = await bystander(seed.port, meta)
    await still_served(again, meta, data)


@pytest.mark.parametrize("where", ["into the next piece", "past the short last piece"])
async def test_a_block_past_its_piece_drops_the_peer_that_sent_it(clients, tmp_path, where):
    """A downloading peer checks each block's end against its piece's real size: a block
    that runs past it (into the next piece, or past the torrent's short last piece) is a
    protocol error that ends that connection at once, and nothing of it is kept."""
    data, meta, lt, seed, _ = await hostile_seed_asked(clients, tmp_path, 3 * PIECE + 5000)
    try:
        [conn] = lt.connections
        last = meta.num_pieces - 1
        if where == "into the next piece":
            seed.send(Piece(0, PIECE - 16384, data[PIECE - 16384:PIECE + 16]))
        else:
            seed.send(Piece(last, 0, data[last * PIECE:] + b"x"))
        assert await seed.closed_within(2)
        assert "is not in the torrent" in conn.close_reason
        assert lt.error is None and lt.status().have == 0 and not lt.assembling
    finally:
        seed.close()

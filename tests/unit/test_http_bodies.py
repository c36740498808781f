"""HTTP answers are read whole, whatever size their pieces arrive in: a .torrent fetched by
`swarm-peer get URL` and a tracker's announce answer (a single `read(n)` returns only what
has arrived so far)."""

from __future__ import annotations

import asyncio
import contextlib
import os

import pytest
from aiohttp import web

from common.bencoding import bencode
from common.metainfo import parse_metainfo
from common.tracker_proto import AnnounceRequest
from peer.announcer import Announcer, BodyTooLarge, read_body


@contextlib.asynccontextmanager
async def dribbling(body: bytes, path: str = "/x"):
    """A server on 127.0.0.1 sending `body` in 8 KiB writes a moment apart; yields its URL."""
    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.content_length = len(body)
        await resp.prepare(request)
        for at in range(0, len(body), 8192):
            await resp.write(body[at:at + 8192])
            await asyncio.sleep(0.0005)
        return resp

    app = web.Application()
    app.router.add_get(path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}{path}"
    finally:
        await runner.cleanup()


async def _get(url: str, limit: int) -> bytes:
    import aiohttp
    async with aiohttp.ClientSession() as session:
        async with session.get(url) as resp:
            return await read_body(resp, limit)


async def test_a_body_is_read_whole_and_refused_past_the_limit():
    body = os.urandom(600_000)
    async with dribbling(body) as url:
        assert await _get(url, 600_000) == body
        with pytest.raises(BodyTooLarge, match="larger than"):
            await _get(url, 599_999)


async def test_get_fetches_a_torrent_bigger_than_one_read():
    """A 16 KiB-piece torrent of 400 MiB is 500 KB: it came back cut at about 128 KB."""
    from peer.cli import _fetch
    pieces = 400 * 64
    info = {"length": pieces * 16384, "name": "big.bin", "piece length": 16384,
            "pieces": os.urandom(20 * pieces)}
    raw = bencode({"announce": "http://127.0.0.1:9/announce", "info": info})
    async with dribbling(raw, "/torrents/big.torrent") as url:
        meta = parse_metainfo(await _fetch(url))
    assert meta.num_pieces == pieces


async def test_a_tracker_answer_bigger_than_one_read_gives_every_peer():
    peers = bytes(range(6)) * 50_000                   # 300 KB of compact peers
    answer = bencode({"interval": 60, "peers": peers})
    async with dribbling(answer, "/announce") as url:
        ann = Announcer([[url]], peer_id=b"-SW0001-000000000001", port=6881, http_timeout=10)
        try:
            resp = await ann.announce_to(url, AnnounceRequest(bytes(20), ann.peer_id, 6881))
        finally:
            await ann.stop(None)        # (never started: only closes its HTTP session)
    assert len(resp.peers) == 50_000

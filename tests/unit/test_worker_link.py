"""The main process <-> HTTP worker link (`swarm-tracker start --workers N`): frames and both ends."""

from __future__ import annotations

import asyncio
import socket

import pytest

from tracker.worker_link import (
    ANNOUNCE, FILES_SENT, MAX_REQUEST, REPLY_HEAD, REQUEST_HEAD, AnswerError, FrameSplitter, LinkError,
    MainConnection, WorkerConnection, encode_reply, encode_request,
)


def test_request_and_reply_bytes():
    assert encode_request(7, ANNOUNCE, "127.0.0.1", "port=1") == (
        bytes.fromhex("00000007" "01" "09" "00000006") + b"127.0.0.1" + b"port=1")
    assert encode_reply(0x01020304, b"d1:ai1ee") == bytes.fromhex("01020304" "01" "00000008") + b"d1:ai1ee"
    assert encode_reply(5, b"oops", ok=False) == bytes.fromhex("00000005" "00" "00000004") + b"oops"


def test_a_query_with_undecodable_bytes_arrives_unchanged():
    query = "a=\udcff%20"          # a raw 0xff byte, as aiohttp's pure-Python parser gives it
    splitter = FrameSplitter(REQUEST_HEAD, 2)
    [(fields, (address, raw))] = splitter.feed(encode_request(1, ANNOUNCE, "::1", query))
    assert fields[:2] == (1, ANNOUNCE)
    assert (address.decode(), raw.decode("utf-8", "surrogateescape")) == ("::1", query)


def test_frames_cut_anywhere_come_out_whole_and_in_order():
    stream = b"".join(encode_reply(n, bytes([n]) * n) for n in range(40))
    whole = FrameSplitter(REPLY_HEAD, 1).feed(stream)
    assert [(f[0], f[1], p[0]) for f, p in whole] == [(n, 1, bytes([n]) * n) for n in range(40)]
    for step in (1, 3, 7, 100):
        splitter = FrameSplitter(REPLY_HEAD, 1)
        got = []
        for i in range(0, len(stream), step):
            got += splitter.feed(stream[i:i + step])
        assert got == whole


def test_a_request_past_the_limit_is_refused_and_a_reply_is_not():
    with pytest.raises(LinkError, match="frame of"):
        FrameSplitter(REQUEST_HEAD, 2, MAX_REQUEST).feed(REQUEST_HEAD.pack(1, ANNOUNCE, 0, MAX_REQUEST))
    big = bytes(70 << 20)        # /stats.json of a very big tracker
    assert FrameSplitter(REPLY_HEAD, 1).feed(encode_reply(1, big)) == [((1, 1, len(big)), [big])]


async def test_calls_over_a_socket_pair_and_the_end_of_the_main_process():
    loop = asyncio.get_running_loop()
    main_end, worker_end = socket.socketpair()
    asked = []

    def answer(kind: int, address: str, query: str) -> bytes | None:
        asked.append((kind, address, query))
        if query == "n=7":
            raise KeyError("a bug")
        return None if kind == FILES_SENT else f"{kind}:{address}:{query}".encode()

    main_transport, _ = await loop.create_unix_connection(
        lambda: WorkerConnection(answer), sock=main_end)
    worker_transport, main = await loop.create_unix_connection(MainConnection, sock=worker_end)
    try:
        bodies = await asyncio.wait_for(asyncio.gather(
            *(main.call(ANNOUNCE, "10.0.0.1", f"n={n}") for n in range(50)), return_exceptions=True), 5)
        # a failed answer fails its own call only; the link stays up
        assert isinstance(bodies[7], AnswerError) and "KeyError" in str(bodies[7])
        assert bodies[:7] + bodies[8:] == [f"1:10.0.0.1:n={n}".encode() for n in range(50) if n != 7]
        main.tell(FILES_SENT, "1234")
        assert await asyncio.wait_for(main.call(2, "", "x"), 5) == b"2::x"
        assert (FILES_SENT, "", "1234") in asked
        pending = main.call(ANNOUNCE, "", "never answered")
        main_transport.close()                     # the main process is gone
        with pytest.raises(LinkError, match="gone"):
            await asyncio.wait_for(pending, 5)
        await asyncio.wait_for(main.closed, 5)
        with pytest.raises(LinkError):
            await main.call(ANNOUNCE, "", "after")
    finally:
        worker_transport.close()
        main_transport.close()

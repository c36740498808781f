"""The real tracker on 127.0.0.1: in-process (HTTP + UDP on one port) and as the CLI program."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import asyncio_dgram
import pytest
from yarl import URL

from common import tracker_proto as tp
from common.metainfo import create_metainfo, parse_metainfo
from common.tracker_proto import AnnounceRequest, PeerAddr, ScrapeStats
from tests.conftest import require_tool
from tests.integration.conftest import ROOT, start_process, wait_for_line
from tracker import server
from tracker.server import TrackerConfig, start_tracker

IH = bytes(range(20))
IH2 = b"\xfe" * 20


@pytest.fixture
async def tracker(tmp_path, clock):
    torrents = tmp_path / "torrents"
    files = tmp_path / "files"
    torrents.mkdir()
    files.mkdir()
    running = await start_tracker(
        TrackerConfig(host="127.0.0.1", port=0, interval=60, torrents_dir=torrents, files_dir=files),
        clock=clock)
    yield running
    await running.close()


@pytest.fixture
async def http():
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


async def get(http, url: str) -> tuple[int, bytes]:
    async with http.get(URL(url, encoded=True)) as resp:
        return resp.status, await resp.read()


def peer_id(n: int) -> bytes:
    return b"-SW0001-%012d" % n


async def http_announce(http, base: str, n: int, *, info_hash=IH, left=100, event="started",
                        extra: str = "") -> tp.AnnounceResponse:
    req = AnnounceRequest(info_hash, peer_id(n), 20000 + n, left=left, event=event)
    status, body = await get(http, tp.build_announce_url(f"http://{base}/announce", req) + extra)
    assert status == 200
    return tp.decode_announce_response(body)


async def _raw(port: int, data: bytes) -> bytes:
    """Send `data` on a new connection; everything the server sends until it closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()


# -- HTTP ------------------------------------------------------------------------------------

async def test_aiohttp_closes_connections_that_idle_or_send_half_a_request(clock, monkeypatch):
    # aiohttp's own default (3630 s) let idle clients hold descriptors until none were left
    monkeypatch.setattr(server, "IDLE_SECONDS", 0.5)
    running = await start_tracker(TrackerConfig(host="127.0.0.1", port=0), clock=clock)
    try:
        silent, _ = await asyncio.open_connection("127.0.0.1", running.port)
        half, half_writer = await asyncio.open_connection("127.0.0.1", running.port)
        half_writer.write(b"GET /announce?info_hash=")
        kept, kept_writer = await asyncio.open_connection("127.0.0.1", running.port)
        kept_writer.write(b"GET /stats.json HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await kept.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200 ")
        started = time.monotonic()
        for reader in (silent, half, kept):
            while await asyncio.wait_for(reader.read(65536), 3):
                pass                                        # (until the server closes it)
        assert time.monotonic() - started < 2.5
        assert (await _raw(running.port, b"GET /stats.json HTTP/1.0\r\n\r\n")).startswith(b"HTTP/1.0 200 ")
    finally:
        await running.close()


async def test_aiohttp_answers_malformed_requests_without_logging_tracebacks(clock, caplog):
    running = await start_tracker(TrackerConfig(host="127.0.0.1", port=0), clock=clock)
    try:
        with caplog.at_level(logging.INFO):
            for request in (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n",
                            b"GET /announce?info_hash=\xff\xfe HTTP/1.1\r\n\r\n",
                            b"GET / HTTP/1.1\r\nBad Header\r\n\r\n"):
                assert (await _raw(running.port, request)).startswith(b"HTTP/1.")
            await asyncio.sleep(0.1)
            assert (await _raw(running.port, b"GET /stats.json HTTP/1.0\r\n\r\n")).startswith(b"HTTP/1.0 200 ")
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    finally:
        await running.close()


async def test_http_announce_lists_other_peers_by_source_address(tracker, http):
    base = tracker.base_url
    first = await http_announce(http, base, 1, left=0, extra="&ip=6.6.6.6")
    assert first.peers == [] and first.interval == 60 and first.complete == 1
    second = await http_announce(http, base, 2)
    # the `ip` parameter is ignored: the peer is where its request came from
    assert second.peers == [PeerAddr("127.0.0.1", 20001)]
    assert (second.complete, second.incomplete) == (1, 1)
    req = AnnounceRequest(IH, peer_id(3), 20003, compact=False)
    status, body = await get(http, tp.build_announce_url(f"http://{base}/announce", req))
    peers = tp.decode_announce_response(body).peers
    assert sorted(peers, key=lambda p: p.port) == [PeerAddr("127.0.0.1", 20001, peer_id(1)),
                                                   PeerAddr("127.0.0.1", 20002, peer_id(2))]


async def test_http_scrape_and_stats_json(tracker, http):
    base = tracker.base_url
    await http_announce(http, base, 1, left=0)
    await http_announce(http, base, 2, left=5)
    await http_announce(http, base, 2, left=0, event="completed")
    await http_announce(http, base, 3, info_hash=IH2)
    scrape_url = tp.scrape_url_for(f"http://{base}/announce")
    status, body = await get(http, tp.build_scrape_url(scrape_url, [IH, b"\x00" * 20]))
    assert tp.decode_scrape_response(body) == {IH: ScrapeStats(2, 1, 0), b"\x00" * 20: ScrapeStats(0, 0, 0)}
    status, body = await get(http, scrape_url)
    assert tp.decode_scrape_response(body) == {IH: ScrapeStats(2, 1, 0), IH2: ScrapeStats(0, 0, 1)}
    async with http.get(f"http://{base}/stats.json") as resp:
        stats = await resp.json()
    assert stats["peer_count"] == 3 and stats["torrent_count"] == 2
    assert {"info_hash": IH.hex(), "complete": 2, "incomplete": 0, "downloaded": 1} in stats["torrents"]


GARBAGE_QUERIES = [
    ("", "missing parameter info_hash"),
    ("info_hash=%zz&peer_id=1&port=1", "info_hash must be 20 bytes"),
    ("info_hash=" + "%01" * 20 + "&peer_id=" + "%02" * 20 + "&port=99999", "port must be 1..65535"),
    ("info_hash=" + "%01" * 20 + "&peer_id=" + "%02" * 20 + "&port=1&event=x", "unknown event"),
    ("%%%&&&===", "missing parameter info_hash"),
]


async def test_http_garbage_gets_failure_reason_and_tracker_keeps_working(tracker, http):
    base = tracker.base_url
    for query, reason in GARBAGE_QUERIES:
        status, body = await get(http, f"http://{base}/announce?{query}")
        assert status == 200
        with pytest.raises(tp.TrackerFailure, match=reason):
            tp.decode_announce_response(body)
    status, body = await get(http, f"http://{base}/scrape?info_hash=abc")
    assert status == 200 and b"info_hash must be 20 bytes" in body
    # raw (unescaped) binary bytes in the request line
    host, port = base.split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET /announce?info_hash=\xff\xfe\x00 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    raw = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    # aiohttp's parser refuses it before the tracker sees it: a 400, not a crash
    assert raw.split(b"\r\n", 1)[0].endswith(b" 400 Bad Request")
    assert (await http_announce(http, base, 1)).interval == 60


async def test_index_torrents_and_files_with_range(tracker, http, tmp_path):
    base = tracker.base_url
    data = random.Random(5).randbytes(300_000)
    (tmp_path / "files" / "sub").mkdir()
    (tmp_path / "files" / "sub" / "blob.bin").write_bytes(data)
    (tmp_path / "secret").write_bytes(b"no")
    torrent = create_metainfo(tmp_path / "files" / "sub" / "blob.bin", [f"http://{base}/announce"])
    meta = parse_metainfo(torrent)
    (tmp_path / "torrents" / "blob.torrent").write_bytes(torrent)
    (tmp_path / "torrents" / "broken.torrent").write_bytes(b"not bencoding")

    async with http.get(f"http://{base}/files/sub/blob.bin", headers={"Range": "bytes=1000-1999"}) as r:
        assert r.status == 206 and await r.read() == data[1000:2000]
        assert r.headers["Content-Range"] == "bytes 1000-1999/300000"
    status, body = await get(http, f"http://{base}/files/sub/blob.bin")
    assert status == 200 and body == data
    async with http.head(f"http://{base}/files/sub/blob.bin") as r:
        assert r.status == 200 and r.headers["Content-Length"] == "300000"
    for bad in ("/files/../secret", "/files/%2e%2e/secret", "/files/nothing", "/files/sub"):
        status, _ = await get(http, f"http://{base}{bad}")
        assert status == 404, bad
    stats = json.loads((await get(http, f"http://{base}/stats.json"))[1])
    assert stats["files_bytes_sent"] == 1000 + 300_000      # what was sent (HEAD sends nothing)

    status, body = await get(http, f"http://{base}/torrents/")
    assert status == 200 and b"blob.torrent" in body and meta.info_hash.hex().encode() in body
    assert b"broken.torrent" not in body
    status, body = await get(http, f"http://{base}/torrents/blob.torrent")
    assert status == 200 and body == torrent
    assert (await get(http, f"http://{base}/torrents/broken.torrent"))[0] == 404

    await http_announce(http, base, 1, info_hash=meta.info_hash, left=0)
    status, body = await get(http, f"http://{base}/")
    page = body.decode()
    assert status == 200 and "blob.bin" in page and "293.0 KiB" in page
    assert f"<code>{meta.info_hash.hex()}</code></td><td class=n>1</td>" in page


async def test_throttled_files_serve_ranges_at_the_limit(tmp_path, http):
    data = random.Random(6).randbytes(150_000)
    (tmp_path / "f.bin").write_bytes(data)
    limit = 200_000
    running = await start_tracker(TrackerConfig(host="127.0.0.1", port=0, files_dir=tmp_path,
                                                upload_limit=limit))
    try:
        base = running.base_url
        async with http.get(f"http://{base}/files/f.bin", headers={"Range": "bytes=-100"}) as r:
            assert r.status == 206 and await r.read() == data[-100:]
            assert r.headers["Content-Range"] == "bytes 149900-149999/150000"
        async with http.get(f"http://{base}/files/f.bin", headers={"Range": "bytes=200000-"}) as r:
            assert r.status == 416 and r.headers["Content-Range"] == "bytes */150000"
        started = time.monotonic()
        async with http.get(f"http://{base}/files/f.bin", headers={"Range": "bytes=50000-"}) as r:
            body = await r.read()
        elapsed = time.monotonic() - started
        assert r.status == 206 and body == data[50000:]
        assert elapsed >= 100_000 / limit * 0.8, elapsed     # 100 kB at 200 kB/s: ~0.5 s
    finally:
        await running.close()


# -- UDP -------------------------------------------------------------------------------------

async def udp_exchange(stream, packet: bytes, timeout: float = 2.0):
    await stream.send(packet)
    data, _ = await asyncio.wait_for(stream.recv(), timeout)
    return tp.decode_udp_response(data)


async def udp_silent(stream, packet: bytes, wait: float = 0.3) -> bool:
    await stream.send(packet)
    try:
        await asyncio.wait_for(stream.recv(), wait)
    except asyncio.TimeoutError:
        return True
    return False


def udp_announce(cid: int, n: int, *, tid: int = 7, left: int = 100, event: int = 2,
                 info_hash: bytes = IH) -> bytes:
    return tp.encode_udp(tp.UdpAnnounceRequest(cid, tid, info_hash, peer_id(n), 0, left, 0,
                                               event, 0, 0, -1, 30000 + n))


async def test_udp_connect_announce_scrape(tracker, http):
    stream = await asyncio_dgram.connect(("127.0.0.1", tracker.port))
    try:
        connected = await udp_exchange(stream, tp.encode_udp(tp.UdpConnectRequest(0x1234)))
        assert isinstance(connected, tp.UdpConnectResponse) and connected.transaction_id == 0x1234
        cid = connected.connection_id
        await http_announce(http, tracker.base_url, 1, left=0)      # HTTP and UDP share one swarm
        reply = await udp_exchange(stream, udp_announce(cid, 2, tid=99))
        assert reply == tp.UdpAnnounceResponse(99, 60, leechers=1, seeders=1,
                                               peers=[PeerAddr("127.0.0.1", 20001)])
        reply = await udp_exchange(stream, tp.encode_udp(tp.UdpScrapeRequest(cid, 5, [IH2, IH])))
        assert reply == tp.UdpScrapeResponse(5, [ScrapeStats(0, 0, 0), ScrapeStats(1, 0, 1)])
        hashes = [bytes([i]) * 20 for i in range(100)]    # more than fit: the first 74 are answered
        reply = await udp_exchange(stream, tp.encode_udp(tp.UdpScrapeRequest(cid, 6, hashes)))
        assert len(reply.stats) == 74
        reply = await udp_exchange(stream, udp_announce(cid, 2, event=3, tid=100))
        assert (reply.seeders, reply.leechers) == (1, 0)
    finally:
        stream.close()


def test_udp_connection_id_holds_for_its_ip_from_any_port():
    """Clients that open a new socket per announce reuse their id from another port."""
    from tracker.registry import SwarmRegistry
    from tracker.udp_api import UdpTracker
    core = UdpTracker(SwarmRegistry(interval=60))
    connect = core.handle(tp.encode_udp(tp.UdpConnectRequest(7)), ("127.0.0.1", 5000), 10.0)
    cid = tp.decode_udp_response(connect).connection_id
    for addr, tid in ((("127.0.0.1", 5001), 8), (("127.0.0.1", 5000), 9)):
        assert isinstance(tp.decode_udp_response(core.handle(udp_announce(cid, 1, tid=tid), addr, 11.0)),
                          tp.UdpAnnounceResponse)
    refused = tp.decode_udp_response(core.handle(udp_announce(cid, 1, tid=10), ("::1", 5000), 11.0))
    assert refused == tp.UdpError(10, "connection id expired")


async def test_udp_connection_id_expires(tracker, clock):
    stream = await asyncio_dgram.connect(("127.0.0.1", tracker.port))
    try:
        cid = (await udp_exchange(stream, tp.encode_udp(tp.UdpConnectRequest(1)))).connection_id
        clock.now += 61                                      # still good in the next slot
        assert isinstance(await udp_exchange(stream, udp_announce(cid, 1)), tp.UdpAnnounceResponse)
        clock.now += 120
        reply = await udp_exchange(stream, udp_announce(cid, 1, tid=42))
        assert reply == tp.UdpError(42, "connection id expired")
        forged = await udp_exchange(stream, udp_announce(12345, 1, tid=43))
        assert forged == tp.UdpError(43, "connection id expired")
    finally:
        stream.close()


async def test_udp_garbage_is_ignored_or_answered_small_and_tracker_keeps_answering(tracker):
    stream = await asyncio_dgram.connect(("127.0.0.1", tracker.port))
    try:
        assert await udp_silent(stream, b"")
        assert await udp_silent(stream, b"\x00" * 15)
        assert await udp_silent(stream, bytes.fromhex("0000041727101981" "00000000" "00000001"))
        assert await udp_silent(stream, bytes.fromhex("0102030405060708" "00000001" "00000001"))
        for _ in range(50):
            await stream.send(random.randbytes(random.randrange(200)))
        # drain whatever came back: each answer is an error no bigger than its request
        while True:
            try:
                data, _ = await asyncio.wait_for(stream.recv(), 0.3)
            except asyncio.TimeoutError:
                break
            assert isinstance(tp.decode_udp_response(data), tp.UdpError) and len(data) <= 200
        cid = (await udp_exchange(stream, tp.encode_udp(tp.UdpConnectRequest(2)))).connection_id
        bad_event = await udp_exchange(stream, udp_announce(cid, 1, event=9, tid=3))
        assert bad_event == tp.UdpError(3, "unknown event 9")
        good = await udp_exchange(stream, udp_announce(cid, 1, tid=4))
        assert isinstance(good, tp.UdpAnnounceResponse) and good.transaction_id == 4
    finally:
        stream.close()


async def test_udp_packets_waiting_past_one_batch_are_all_answered(tracker):
    """The server reads at most BATCH datagrams per wake-up: the rest wait for the next one.
    Replies go out in groups, and what is left of a group at the end of a batch goes too."""
    tracker._udp.BATCH = 4
    tracker._udp.REPLY_GROUP = 3
    stream = await asyncio_dgram.connect(("127.0.0.1", tracker.port))
    try:
        for tid in range(1, 22):        # sent before the tracker reads any of them
            await stream.send(tp.encode_udp(tp.UdpConnectRequest(tid)))
        assert await _udp_replies(stream) == list(range(1, 22))     # each once, in order
    finally:
        stream.close()
    tracker._udp.close()
    tracker._udp.close()        # twice, as RunningTracker.close may


async def _udp_replies(stream, quiet: float = 0.3) -> list[int]:
    """The transaction ids of every reply, until none comes for `quiet` seconds."""
    tids = []
    for _ in range(1000):
        try:
            data, _ = await asyncio.wait_for(stream.recv(), quiet)
        except asyncio.TimeoutError:
            break
        tids.append(tp.decode_udp_response(data).transaction_id)
    return tids


async def test_udp_a_failing_request_or_reply_costs_only_itself(tracker, caplog):
    """A bug in one request's handling or in one reply (not bytes) loses that reply only:
    every other one in its group is sent exactly once."""
    tracker._udp.BATCH = 8
    tracker._udp.REPLY_GROUP = 3
    real = tracker._udp.core.handle

    def buggy(data, addr, now):
        tid = int.from_bytes(data[12:16], "big")
        if tid == 5:
            raise ValueError("a bug in handle")
        return "not bytes" if tid in (9, 13) else real(data, addr, now)

    tracker._udp.core.handle = buggy
    stream = await asyncio_dgram.connect(("127.0.0.1", tracker.port))
    try:
        for tid in range(1, 22):
            await stream.send(tp.encode_udp(tp.UdpConnectRequest(tid)))
        assert await _udp_replies(stream) == [t for t in range(1, 22) if t not in (5, 9, 13)]
    finally:
        stream.close()
    assert "a bug in handle" in caplog.text and "UDP reply to" in caplog.text


# -- the program ---------------------------------------------------------------------------------

async def test_cli_tracker_serves_http_and_udp_and_stops_cleanly(tmp_path, processes):
    log = tmp_path / "tracker.log"
    proc = start_process(["-m", "tracker", "start", "--host", "127.0.0.1", "--port", "0",
                          "--interval", "30"], log)
    processes.append(proc)
    m = wait_for_line(log, r"listening on http://127\.0\.0\.1:(\d+)/announce and "
                           r"udp://127\.0\.0\.1:(\d+)/announce", proc, 20)
    assert m.group(1) == m.group(2)
    port = int(m.group(1))
    async with aiohttp.ClientSession() as http:
        first = await http_announce(http, f"127.0.0.1:{port}", 1)
        assert first.interval == 30
    await udp_sees_http_peer(port)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    output = log.read_text()
    assert "Traceback" not in output and output.rstrip().endswith("swarm-tracker stopped")


async def udp_sees_http_peer(port: int) -> None:
    """Over UDP on the same port, a new peer is given the one that announced over HTTP as
    peer 1 (`http_announce(..., 1)`)."""
    stream = await asyncio_dgram.connect(("127.0.0.1", port))
    try:
        cid = (await udp_exchange(stream, tp.encode_udp(tp.UdpConnectRequest(1)))).connection_id
        reply = await udp_exchange(stream, udp_announce(cid, 2))
        assert reply.peers == [PeerAddr("127.0.0.1", 20001)]
    finally:
        stream.close()


def _cli_tracker(tmp_path, processes, *args: str) -> tuple[subprocess.Popen, int, Path]:
    """`swarm-tracker start` on 127.0.0.1 and a free port with `args`: (process, port, log)."""
    log = tmp_path / "tracker.log"
    proc = start_process(["-m", "tracker", "start", "--host", "127.0.0.1", "--port", "0", *args], log)
    processes.append(proc)
    port = int(wait_for_line(log, r"http://127\.0\.0\.1:(\d+)/announce", proc, 20).group(1))
    return proc, port, log


@pytest.mark.parametrize("server", ["aiohttp", "granian"])
async def test_cli_stops_quietly_under_load(tmp_path, processes, server):
    """Announces still in flight when the tracker stops get an error or a closed connection,
    not a traceback in the log."""
    if server == "granian":
        require_tool("granian")
    proc, port, log = _cli_tracker(tmp_path, processes, "--http-server", server)
    answered = 0

    async def keep_announcing(n: int) -> None:
        nonlocal answered
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as one:
            for _ in range(2000):       # bounded: the tracker stops long before
                try:
                    await http_announce(one, f"127.0.0.1:{port}", n)
                    answered += 1
                except (aiohttp.ClientError, AssertionError, ValueError):
                    return

    load = [asyncio.create_task(keep_announcing(n)) for n in range(16)]
    deadline = time.monotonic() + 20
    while answered < 200 and time.monotonic() < deadline and not all(t.done() for t in load):
        await asyncio.sleep(0.02)
    assert answered >= 200
    proc.send_signal(signal.SIGTERM)
    await asyncio.wait_for(asyncio.gather(*load), 20)
    assert proc.wait(timeout=10) == 0
    output = log.read_text()
    assert "Traceback" not in output
    assert output.rstrip().endswith("swarm-tracker stopped")


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tracker", "start", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=20)


def test_cli_bad_options_are_one_line_and_exit_2(tmp_path):
    missing = _run_cli("--port", "0", "--files", str(tmp_path / "nope"))
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == [
        f"swarm-tracker: error: --files {tmp_path / 'nope'}: not a directory"]
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = _run_cli("--host", "127.0.0.1", "--port", str(busy.getsockname()[1]))
    assert taken.returncode == 2
    lines = taken.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot listen on TCP 127.0.0.1:" in lines[0] and "in use" in lines[0]
    bad_rate = _run_cli("--port", "0", "--upload-limit", "fast")
    assert bad_rate.returncode == 2 and "--upload-limit: invalid rate 'fast'" in bad_rate.stderr
    with socket.socket() as shared:     # another program that would share its port: still refused
        shared.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        shared.bind(("127.0.0.1", 0))
        shared.listen()
        joined = _run_cli("--host", "127.0.0.1", "--port", str(shared.getsockname()[1]))
    assert joined.returncode == 2
    lines = joined.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot listen on TCP 127.0.0.1:" in lines[0] and "in use" in lines[0]


async def test_ipv6_tracker_gives_peers6_and_18_byte_udp_peers(http):
    running = await start_tracker(TrackerConfig(host="::1", port=0, interval=60))
    try:
        base = running.base_url
        assert base.startswith("[::1]:")
        await http_announce(http, base, 1)
        second = await http_announce(http, base, 2)
        assert second.peers == [PeerAddr("::1", 20001)]
        status, body = await get(http, tp.build_announce_url(
            f"http://{base}/announce", AnnounceRequest(IH, peer_id(3), 20003)))
        assert b"6:peers6" in body and b"5:peers0:" in body
        stream = await asyncio_dgram.connect(("::1", running.port))
        try:
            cid = (await udp_exchange(stream, tp.encode_udp(tp.UdpConnectRequest(1)))).connection_id
            await stream.send(udp_announce(cid, 4, tid=8))
            data, _ = await asyncio.wait_for(stream.recv(), 2)
            reply = tp.decode_udp_response(data, ipv6=True)
            assert len(data) == 20 + 18 * 3
            assert {p.port for p in reply.peers} == {20001, 20002, 20003}
        finally:
            stream.close()
    finally:
        await running.close()

"""The tracker under abuse (adds to tests/integration/test_tracker.py, which covers single
garbage queries and packets and connection id expiry): volumes of random HTTP queries and
UDP packets, idle and garbage TCP connections, caps and expiry that bound memory (with the
figure printed), and no UDP amplification towards an address that never proved itself."""

from __future__ import annotations

import asyncio
import os
import random
import re
import socket
import struct
import time
import urllib.parse

import aiohttp
import pytest
from yarl import URL

from common import tracker_proto as tp
from common.bencoding import BencodeError, bdecode
from tests.integration.conftest import start_process, stop_process, wait_for_line
from tracker.server import TrackerConfig, start_tracker


@pytest.fixture
async def tracker(clock):
    running = await start_tracker(TrackerConfig(host="127.0.0.1", port=0, interval=4,
                                                max_torrents=300, max_peers=20), clock=clock)
    yield running
    await running.close()


def valid_query(info_hash: bytes, n: int, left: int = 1) -> str:
    req = tp.AnnounceRequest(info_hash, b"-AB0001-%012d" % n, 10000 + n % 50000, left=left)
    return tp.build_announce_url("http://x/announce", req).partition("?")[2]


def random_query(rng: random.Random) -> str:
    """Wrong in one of many ways: random bytes, broken escapes, bad numbers, repeats, huge values."""
    kind = rng.randrange(6)
    if kind == 0:
        return urllib.parse.quote_from_bytes(rng.randbytes(rng.randrange(300)), safe="=&%")
    if kind == 1:
        return "".join(rng.choice("=&%+0123456789abcdefXYZ_") for _ in range(rng.randrange(200)))
    base = valid_query(rng.randbytes(20), rng.randrange(10**6))
    params = base.split("&")
    if kind == 2:                                   # one value replaced by junk
        i = rng.randrange(len(params))
        key = params[i].split("=")[0]
        params[i] = f"{key}={rng.choice(['-1', '99999999999999999999999', '', '%', '%G0', 'x' * 500, '1e9'])}"
    elif kind == 3:                                 # a parameter dropped
        params.pop(rng.randrange(len(params)))
    elif kind == 4:                                 # a parameter repeated with another value
        params.append(rng.choice(params).split("=")[0] + "=" + str(rng.randrange(-5, 70000)))
    else:                                           # truncated anywhere
        return base[:rng.randrange(len(base))]
    return "&".join(params)


async def test_random_http_queries_get_failure_or_peers_and_tracker_stays_up(tracker):
    rng = random.Random(1)
    base = f"http://{tracker.base_url}"
    answered = {"failure": 0, "peers": 0, "http error": 0}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        async def one(path: str) -> None:
            async with http.get(URL(f"{base}{path}", encoded=True)) as resp:
                body = await resp.read()
            if resp.status != 200:
                assert 400 <= resp.status < 500, resp.status
                answered["http error"] += 1
                return
            try:
                decoded = bdecode(body)
            except BencodeError:
                raise AssertionError(f"not bencoded: {body[:100]!r}")
            answered["failure" if b"failure reason" in decoded else "peers"] += 1

        for batch in range(10):
            paths = [f"/{rng.choice(['announce', 'scrape'])}?{random_query(rng)}" for _ in range(40)]
            await asyncio.gather(*(one(p) for p in paths))
        assert answered["failure"] > 100
        req = tp.AnnounceRequest(b"\x07" * 20, b"-AB0001-000000000001", 7000)
        async with http.get(URL(tp.build_announce_url(f"{base}/announce", req), encoded=True)) as resp:
            assert tp.decode_announce_response(await resp.read()).interval == 4
    print(f"400 random HTTP queries: {answered}")  # noqa: T201


async def test_garbage_and_idle_tcp_connections_do_not_stop_announces(tracker):
    host, port = tracker.base_url.split(":")
    idle = [await asyncio.open_connection(host, int(port)) for _ in range(50)]
    garbage = []
    for blob in (os.urandom(3000), b"\x13BitTorrent protocol" + bytes(48), b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n",
                 b"POST /announce HTTP/1.1\r\nContent-Length: 99999999\r\n\r\nxx", b"\r\n" * 1000):
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(blob)
        garbage.append((reader, writer))
    for reader, writer in garbage:
        try:
            head = await asyncio.wait_for(reader.read(200), 1)
        except (ConnectionError, asyncio.TimeoutError):
            head = b""
        assert head == b"" or re.match(rb"HTTP/1\.[01] 4\d\d ", head), head[:100]
        writer.transport.abort()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
        req = tp.AnnounceRequest(b"\x08" * 20, b"-AB0001-000000000002", 7001)
        async with http.get(URL(tp.build_announce_url(f"http://{tracker.base_url}/announce", req), encoded=True)) as resp:
            assert resp.status == 200 and tp.decode_announce_response(await resp.read()).interval == 4
    for _, writer in idle:
        writer.transport.abort()


# -- UDP --------------------------------------------------------------------------------------

def udp_socket(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    return sock


async def udp_ask(sock: socket.socket, packet: bytes, wait: float = 0.5) -> bytes | None:
    loop = asyncio.get_running_loop()
    sock.send(packet)
    try:
        return await asyncio.wait_for(loop.sock_recv(sock, 65536), wait)
    except asyncio.TimeoutError:
        return None


def random_udp_packet(rng: random.Random) -> bytes:
    kind = rng.randrange(5)
    cid = rng.choice([tp.PROTOCOL_ID, rng.getrandbits(64), 0])
    if kind == 0:
        return rng.randbytes(rng.randrange(120))
    if kind == 1:   # announce with a wrong connection id, real layout
        return tp.encode_udp(tp.UdpAnnounceRequest(cid, rng.getrandbits(32), rng.randbytes(20), rng.randbytes(20),
                                                   0, 1, 0, 2, 0, 0, -1, rng.randrange(1, 65536)))
    if kind == 2:   # scrape with a wrong id, many hashes
        return tp.encode_udp(tp.UdpScrapeRequest(cid, rng.getrandbits(32), [rng.randbytes(20)] * rng.randrange(1, 80)))
    if kind == 3:   # the shortest possible announce/scrape header with a wrong id
        return struct.pack(">QII", cid, rng.choice([1, 2, 3, 4, 99]), rng.getrandbits(32))
    return struct.pack(">QII", tp.PROTOCOL_ID, 0, rng.getrandbits(32)) + rng.randbytes(rng.randrange(8))


async def test_udp_never_amplifies_towards_an_unverified_address(tracker):
    """No valid connection id yet: every reply is at most as large as the request (a connect
    reply is exactly 16 bytes for a 16-byte request), so a spoofed source gains nothing."""
    rng = random.Random(2)
    sock = udp_socket(tracker.port)
    loop = asyncio.get_running_loop()
    sent = replies = 0
    worst = 0.0
    try:
        for batch in range(12):
            sizes = {}                # transaction id -> request size (replies echo the id)
            for n in range(50):
                packet = bytearray(random_udp_packet(rng))
                tid = batch * 50 + n
                if len(packet) >= 16:
                    packet[12:16] = tid.to_bytes(4, "big")
                sizes[tid] = len(packet)
                sock.send(packet)
                sent += 1
            try:
                while True:
                    reply = await asyncio.wait_for(loop.sock_recv(sock, 65536), 0.1)
                    replies += 1
                    tid = int.from_bytes(reply[4:8], "big")
                    assert tid in sizes and len(reply) <= sizes[tid], (tid, len(reply), sizes.get(tid))
                    worst = max(worst, len(reply) / sizes[tid])
            except asyncio.TimeoutError:
                pass
        connect = tp.encode_udp(tp.UdpConnectRequest(5))
        reply = await udp_ask(sock, connect)
        assert len(connect) == len(reply) == 16
        # with the id the tracker handed out, a big answer is fine: the address is proven
        cid = tp.decode_udp_response(reply).connection_id
        reply = await udp_ask(sock, tp.encode_udp(tp.UdpScrapeRequest(cid, 6, [b"\x01" * 20] * 74)))
        assert isinstance(tp.decode_udp_response(reply), tp.UdpScrapeResponse)
    finally:
        sock.close()
    print(f"UDP: {sent} hostile packets, {replies} replies, largest reply/request ratio {worst:.2f}")  # noqa: T201


async def test_expired_and_wrong_connection_ids_after_a_real_one(tracker, clock):
    sock = udp_socket(tracker.port)
    try:
        cid = tp.decode_udp_response(await udp_ask(sock, tp.encode_udp(tp.UdpConnectRequest(1)))).connection_id
        ann = lambda c, tid: tp.encode_udp(tp.UdpAnnounceRequest(c, tid, b"\x05" * 20, b"-AB0001-000000000009",
                                                                0, 1, 0, 2, 0, 0, -1, 9999))
        assert isinstance(tp.decode_udp_response(await udp_ask(sock, ann(cid, 1))), tp.UdpAnnounceResponse)
        for wrong in (cid ^ 1, cid + 1 << 1, 0, tp.PROTOCOL_ID):
            assert tp.decode_udp_response(await udp_ask(sock, ann(wrong & (2**64 - 1), 2))) == \
                tp.UdpError(2, "connection id expired")
        clock.now += 60       # the next 60 s slot: the id (checked and remembered once) still holds
        assert isinstance(tp.decode_udp_response(await udp_ask(sock, ann(cid, 4))), tp.UdpAnnounceResponse)
        clock.now += 10_000
        assert tp.decode_udp_response(await udp_ask(sock, ann(cid, 3))) == tp.UdpError(3, "connection id expired")
    finally:
        sock.close()


# -- caps and expiry --------------------------------------------------------------------------

async def test_caps_on_torrents_and_peers_then_expiry_empties_the_registry(tracker, clock):
    sock = udp_socket(tracker.port)
    registry = tracker.registry
    try:
        cid = tp.decode_udp_response(await udp_ask(sock, tp.encode_udp(tp.UdpConnectRequest(1)))).connection_id
        errors = 0
        for n in range(400):          # 400 new torrents, the cap is 300
            reply = await udp_ask(sock, tp.encode_udp(tp.UdpAnnounceRequest(
                cid, n, os.urandom(20), b"-AB0001-%012d" % n, 0, 1, 0, 2, 0, 0, -1, 1000 + n)))
            errors += isinstance(tp.decode_udp_response(reply), tp.UdpError)
        assert registry.torrent_count == 300 and errors == 100
        crowded = b"\x42" * 20
        for n in range(60):            # 60 peers into one torrent, the cap is 20
            await udp_ask(sock, tp.encode_udp(tp.UdpAnnounceRequest(
                cid, n, crowded, b"-AB0001-%012d" % n, 0, 1, 0, 2, 0, 0, -1, 2000 + n)))
        assert registry.torrent_count == 300       # full: the crowded swarm was refused outright
        assert max(len(registry.peers_of(h)) for h in list(registry._swarms)[:5]) <= 20
    finally:
        sock.close()
    clock.now += 3 * 4 + 1                        # past the peer timeout (2 intervals)
    for _ in range(40):                           # the expiry task runs about every second
        if registry.torrent_count == 0:
            break
        await asyncio.sleep(0.1)
    assert registry.torrent_count == 0 and registry.peer_count == 0


async def test_peer_cap_per_torrent(clock):
    running = await start_tracker(TrackerConfig(host="127.0.0.1", port=0, interval=60, max_peers=20), clock=clock)
    sock = udp_socket(running.port)
    try:
        cid = tp.decode_udp_response(await udp_ask(sock, tp.encode_udp(tp.UdpConnectRequest(1)))).connection_id
        for n in range(60):
            reply = tp.decode_udp_response(await udp_ask(sock, tp.encode_udp(tp.UdpAnnounceRequest(
                cid, n, b"\x42" * 20, b"-AB0001-%012d" % n, 0, 1, 0, 2, 0, 0, -1, 2000 + n))))
            assert isinstance(reply, tp.UdpAnnounceResponse)
        assert len(running.registry.peers_of(b"\x42" * 20)) == 20
    finally:
        sock.close()
        await running.close()


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+) kB", f.read()).group(1))


@pytest.mark.slow
async def test_flood_of_random_info_hashes_keeps_memory_bounded(tmp_path, show):
    """A real tracker process with --max-torrents 2000: 30 000 UDP and 1 500 HTTP announces for
    random info-hashes, on loopback. Its resident memory must grow by less than 40 MiB."""
    cap, bound_kib = 2000, 40 * 1024
    log = tmp_path / "tracker.log"
    proc = start_process(["-m", "tracker", "start", "--host", "127.0.0.1", "--port", "0", "--interval", "60",
                          "--max-torrents", str(cap), "--max-peers", "50"], log)
    try:
        port = int(wait_for_line(log, r"http://127\.0\.0\.1:(\d+)/announce", proc, 20).group(1))
        sock = udp_socket(port)
        loop = asyncio.get_running_loop()
        cid = tp.decode_udp_response(await udp_ask(sock, tp.encode_udp(tp.UdpConnectRequest(1)), 2)).connection_id
        before = rss_kib(proc.pid)
        started = time.monotonic()
        replies = 0
        for batch in range(300):       # 300 x 100 packets, each batch answered before the next
            for n in range(100):
                sock.send(tp.encode_udp(tp.UdpAnnounceRequest(
                    cid, n, os.urandom(20), os.urandom(20), 0, 1, 0, 2, 0, 0, -1, 1 + (batch * 100 + n) % 65535)))
            try:
                while True:
                    await asyncio.wait_for(loop.sock_recv(sock, 2048), 0.2)
                    replies += 1
                    if replies % 100 == 0:
                        break
            except asyncio.TimeoutError:
                pass
        sock.close()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            async def one(n: int) -> None:
                url = tp.build_announce_url(f"http://127.0.0.1:{port}/announce", tp.AnnounceRequest(
                    os.urandom(20), os.urandom(20), 1 + n, left=1))
                async with http.get(URL(url, encoded=True)) as resp:
                    await resp.read()
            for batch in range(30):
                await asyncio.gather(*(one(batch * 50 + n) for n in range(50)))
            async with http.get(f"http://127.0.0.1:{port}/stats.json") as resp:
                stats = await resp.json()
        took = time.monotonic() - started
        after = rss_kib(proc.pid)
        assert proc.poll() is None, "tracker died"
        assert stats["torrent_count"] == cap
        grown = after - before
        show(f"tracker flood: 30000 UDP + 1500 HTTP announces for random info-hashes in {took:.1f} s, "
             f"{replies} UDP replies; {stats['torrent_count']} torrents kept (cap {cap}); "
             f"RSS {before // 1024} -> {after // 1024} MiB (+{grown} KiB, bound {bound_kib} KiB)")
        assert grown < bound_kib
    finally:
        stop_process(proc)

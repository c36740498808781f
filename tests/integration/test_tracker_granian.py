"""`--http-server granian`: the same tracker answers, served by granian, on 127.0.0.1 / ::1."""

from __future__ import annotations

import asyncio
import logging
import random
import signal
import socket
import subprocess
import sys
import time

import aiohttp
import pytest
from yarl import URL

from common import tracker_proto as tp
from common.descriptors import allow_open_files
from common.tracker_proto import AnnounceRequest, PeerAddr
from tests.conftest import require_tool
from tests.integration.conftest import ROOT, start_process, wait_for_line
from tests.integration.test_tracker import _cli_tracker, _raw, _run_cli, peer_id, udp_sees_http_peer
from tracker.granian_http import HEADER_SECONDS, STOP_SECONDS, client_host
from tracker.registry import SwarmRegistry
from tracker.server import GRANIAN_SCOPE, TrackerConfig, start_tracker

IH = bytes(range(20))


@pytest.fixture(autouse=True)
def _needs_granian():
    require_tool("granian")


async def _pair(clock):
    """The same tracker twice, on aiohttp and on granian, with the same random choices."""
    trackers = []
    for server in ("aiohttp", "granian"):
        registry = SwarmRegistry(interval=60, rng=random.Random(7))
        trackers.append(await start_tracker(TrackerConfig(host="::", port=0, http_server=server),
                                            registry=registry, clock=clock))
    return trackers


def _requests() -> list[tuple[str, str, str]]:
    """(method, client address, path and query): announces of every kind, errors, scrapes."""
    other = b"\xfe" * 20
    calls = []
    for n in range(12):
        req = AnnounceRequest(IH if n % 3 else other, peer_id(n), 20000 + n, left=0 if n % 4 == 0 else 100,
                              event="started", compact=n % 5 != 0, numwant=7 if n == 9 else None)
        calls.append(("GET", "127.0.0.1" if n % 2 else "::1", tp.build_announce_url("/announce", req)))
    stopped = AnnounceRequest(IH, peer_id(3), 20003, event="stopped")
    calls += [("GET", "127.0.0.1", tp.build_announce_url("/announce", stopped)),
              ("GET", "::1", "/announce?info_hash=short&peer_id=x&port=1"),          # failure reason
              ("GET", "127.0.0.1", "/announce"),
              ("GET", "127.0.0.1", tp.build_scrape_url("/scrape", [IH, other, b"\x00" * 20])),
              ("GET", "::1", "/scrape"),
              ("GET", "127.0.0.1", "/scrape?info_hash=%zz"),
              ("GET", "127.0.0.1", "/stats.json"),
              ("GET", "::1", "/"),
              ("GET", "127.0.0.1", "/nothing/here"),
              ("HEAD", "127.0.0.1", "/stats.json"),
              ("POST", "::1", "/announce"),
              ("POST", "127.0.0.1", "/nothing/here")]
    return calls


async def test_granian_answers_byte_for_byte_as_aiohttp(clock):
    trackers = await _pair(clock)
    try:
        answers = []
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            for running in trackers:
                got = []
                for method, host, target in _requests():
                    url = f"http://{'[::1]' if host == '::1' else host}:{running.port}{target}"
                    async with http.request(method, URL(url, encoded=True)) as resp:
                        got.append((resp.status, await resp.read()))
                answers.append(got)
        on_aiohttp, on_granian = answers
        for call, a, g in zip(_requests(), on_aiohttp, on_granian):
            assert g == a, call
        statuses = [status for status, _ in on_granian]
        assert statuses == [200] * 20 + [404, 200, 405, 404]
        first_peers = tp.decode_announce_response(on_granian[2][1]).peers
        assert PeerAddr("::1", 20000) not in first_peers      # (n = 0 announced for the other hash)
        assert b"failure reason" in on_granian[13][1] and b"failure reason" in on_granian[14][1]
        assert on_granian[-3][1] == b""                        # HEAD: no body
    finally:
        for running in trackers:
            await running.close()


async def test_granian_tracker_with_udp_on_the_same_port(clock):
    running = await start_tracker(TrackerConfig(host="127.0.0.1", port=0, interval=60,
                                                http_server="granian"), clock=clock)
    try:
        async with aiohttp.ClientSession() as http:
            req = AnnounceRequest(IH, peer_id(1), 20001, left=100)
            async with http.get(URL(tp.build_announce_url(f"http://{running.base_url}/announce", req),
                                    encoded=True)) as resp:
                assert resp.status == 200
                assert resp.headers["content-type"] == "text/plain"
                assert tp.decode_announce_response(await resp.read()).incomplete == 1
        await udp_sees_http_peer(running.port)
    finally:
        await running.close()


async def test_granian_refuses_garbage_and_keeps_serving(clock):
    running = await start_tracker(TrackerConfig(host="127.0.0.1", port=0, http_server="granian"), clock=clock)
    try:
        assert (await _raw(running.port, b"\x16\x03\x01garbage\xff\x00\r\n\r\n")).startswith(b"HTTP/1.1 400 ")
        huge = b"GET /announce HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 1_000_000 + b"\r\n\r\n"
        assert (await _raw(running.port, huge)).split(b" ")[1] in (b"400", b"431")
        posted = await _raw(running.port, b"POST /announce HTTP/1.0\r\nContent-Length: 0\r\n\r\n")
        assert posted.startswith(b"HTTP/1.0 405 ") and b"\r\nallow: GET,HEAD\r\n" in posted
        req = AnnounceRequest(IH, peer_id(1), 20001)
        ok = await _raw(running.port, b"GET %s HTTP/1.0\r\n\r\n"
                        % tp.build_announce_url("/announce", req).encode())
        assert ok.startswith(b"HTTP/1.0 200 ") and b"8:intervali" in ok
    finally:
        await running.close()


async def test_granian_answers_while_a_thousand_clients_connect_and_send_nothing(clock):
    """granian's own cap on open connections (its `backpressure`, by default the backlog:
    1,024) let that many silent clients shut every other one out until its header timeout
    (5 s); the tracker's cap is the descriptor limit."""
    silent_count = 1100
    needed = 2 * silent_count + 300
    if allow_open_files(needed) < needed:
        pytest.skip(f"this machine allows fewer than {needed} open files")
    running = await start_tracker(TrackerConfig(host="127.0.0.1", port=0, http_server="granian"), clock=clock)
    silent = []
    try:
        for _ in range(silent_count):
            silent.append(socket.create_connection(("127.0.0.1", running.port), timeout=2))
        req = AnnounceRequest(IH, peer_id(1), 20001)
        started = time.monotonic()
        ok = await asyncio.wait_for(_raw(running.port, b"GET %s HTTP/1.0\r\n\r\n"
                                         % tp.build_announce_url("/announce", req).encode()), 2)
        assert ok.startswith(b"HTTP/1.0 200 ") and time.monotonic() - started < HEADER_SECONDS - 2
    finally:
        for sock in silent:
            sock.close()
        await running.close()


async def test_granian_stop_does_not_wait_for_idle_clients_and_bounds_slow_ones(clock):
    running = await start_tracker(TrackerConfig(host="127.0.0.1", port=0, http_server="granian"), clock=clock)
    idle_reader, idle = await asyncio.open_connection("127.0.0.1", running.port)
    idle.write(b"GET /stats.json HTTP/1.1\r\nHost: x\r\n\r\n")           # kept alive after
    assert (await idle_reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200 ")
    _, silent = await asyncio.open_connection("127.0.0.1", running.port)  # connected, sent nothing
    started = time.monotonic()
    await running.close()
    assert time.monotonic() - started < 1.0
    for writer in (idle, silent):
        writer.close()
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", running.port)

    running = await start_tracker(TrackerConfig(host="127.0.0.1", port=0, http_server="granian"), clock=clock)
    _, slow = await asyncio.open_connection("127.0.0.1", running.port)
    slow.write(b"GET /announce HTTP/1.1\r\nHo")                           # half a request
    await slow.drain()
    await asyncio.sleep(0.2)
    started = time.monotonic()
    await running.close()
    assert time.monotonic() - started < HEADER_SECONDS + 1.5
    slow.close()


async def test_granian_serves_the_tracker_protocol_only(tmp_path):
    with pytest.raises(ValueError, match="serves the tracker protocol only"):
        await start_tracker(TrackerConfig(host="127.0.0.1", port=0, files_dir=tmp_path, http_server="granian"))
    with pytest.raises(ValueError, match="http_server must be one of"):
        await start_tracker(TrackerConfig(host="127.0.0.1", port=0, http_server="nginx"))
    for args in (["--files", str(tmp_path)], ["--torrents", str(tmp_path)], ["--upload-limit", "1MiB"]):
        bad = _run_cli("--port", "0", "--http-server", "granian", *args)
        assert bad.returncode == 2
        assert bad.stderr.strip().splitlines() == [f"swarm-tracker: error: {GRANIAN_SCOPE}"]


def test_client_host_strips_the_port_and_brackets():
    assert client_host("127.0.0.1:6881") == "127.0.0.1"
    assert client_host("[::ffff:10.0.0.1]:80") == "::ffff:10.0.0.1"
    assert client_host("[::1]:1") == "::1"


async def test_cli_granian_tracker_serves_and_stops_cleanly(tmp_path, processes):
    log = tmp_path / "tracker.log"
    proc = start_process(["-m", "tracker", "start", "--host", "::", "--port", "0", "--interval", "30",
                          "--http-server", "granian"], log)
    processes.append(proc)
    port = int(wait_for_line(log, r"listening on http://\[::\]:(\d+)/announce", proc, 20).group(1))
    async with aiohttp.ClientSession() as http:
        for n, host in ((1, "127.0.0.1"), (2, "[::1]")):
            req = AnnounceRequest(IH, peer_id(n), 20000 + n)
            async with http.get(URL(tp.build_announce_url(f"http://{host}:{port}/announce", req),
                                    encoded=True)) as resp:
                answer = tp.decode_announce_response(await resp.read())
        assert answer.interval == 30 and answer.peers == [PeerAddr("127.0.0.1", 20001)]
    with socket.create_connection(("127.0.0.1", port)):      # an idle client does not hold the stop
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    output = log.read_text()
    assert "Traceback" not in output and "experimental" not in output
    assert output.rstrip().endswith("swarm-tracker stopped")


async def test_granian_stop_leaves_behind_a_client_that_does_not_read(clock, caplog):
    """granian would wait forever to finish writing to a client whose window is shut."""
    registry = SwarmRegistry(interval=60)
    for n in range(2000):                   # so that /stats.json is about 200 KB
        registry.announce(AnnounceRequest(n.to_bytes(20, "big"), peer_id(n), 6881), "10.0.0.1", clock())
    running = await start_tracker(TrackerConfig(host="127.0.0.1", port=0, http_server="granian"),
                                  registry=registry, clock=clock)
    hog = socket.socket()
    hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    hog.connect(("127.0.0.1", running.port))
    hog.sendall(b"GET /stats.json HTTP/1.1\r\nHost: x\r\n\r\n" * 100)   # 20 MB of answers, never read
    await asyncio.sleep(0.5)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING):
        await running.close()
    assert time.monotonic() - started < STOP_SECONDS + 1.5
    assert "clients still connected" in caplog.text
    hog.close()
    with pytest.raises(OSError):            # and the port is no longer served
        await asyncio.open_connection("127.0.0.1", running.port)


async def test_granian_that_cannot_serve_is_an_error_not_a_silent_port(clock, monkeypatch, caplog):
    import granian.server.embed

    def broken(*args, **kwargs):
        raise OSError("injected: the worker cannot start")
    monkeypatch.setattr(granian.server.embed, "RSGIWorker", broken)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(OSError, match="granian could not serve HTTP: injected: the worker cannot start"):
        await start_tracker(TrackerConfig(host="127.0.0.1", port=port, http_server="granian"), clock=clock)
    assert caplog.text.count("injected: the worker cannot start") == 0   # said once, in the error
    with pytest.raises(OSError):            # nobody is left listening on the port
        await asyncio.open_connection("127.0.0.1", port)


async def test_granian_keeps_the_programs_log_handlers_and_hides_its_warnings(clock, tmp_path, caplog):
    handler = logging.FileHandler(tmp_path / "app.log")
    logging.getLogger().addHandler(handler)
    try:
        with caplog.at_level(logging.DEBUG):
            running = await start_tracker(TrackerConfig(host="127.0.0.1", port=0, http_server="granian"),
                                          clock=clock)
            await running.close()
        logging.getLogger("swarm.test").warning("after the tracker")
        handler.flush()
        assert "after the tracker" in (tmp_path / "app.log").read_text()
        assert not [r for r in caplog.records if r.name.startswith("_granian") and r.levelno < logging.ERROR]
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()


async def test_granian_that_stops_by_itself_is_reported_and_refuses_connections(clock, caplog):
    running = await start_tracker(TrackerConfig(host="127.0.0.1", port=0, http_server="granian"), clock=clock)
    try:
        [worker] = running._http._server.wrks       # a fault: granian's worker stops, unasked
        worker._sig.set()
        why = await asyncio.wait_for(running.http_failed, 5)
        assert why.startswith("granian stopped serving HTTP")
        assert "granian stopped serving HTTP" in caplog.text
        with pytest.raises(OSError):                # refused, not left hanging
            await asyncio.open_connection("127.0.0.1", running.port)
    finally:
        await running.close()


async def test_granian_close_interrupted_still_closes_the_port(clock):
    running = await start_tracker(TrackerConfig(host="127.0.0.1", port=0, http_server="granian"), clock=clock)
    hog = socket.create_connection(("127.0.0.1", running.port))
    hog.sendall(b"GET /announce HTTP/1.1\r\nHo")          # holds granian's stop for HEADER_SECONDS
    await asyncio.sleep(0.2)
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(running.close(), 0.3)
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", running.port)
    started = time.monotonic()
    await running.close()                                   # a second close: nothing left to do
    assert time.monotonic() - started < 0.1
    hog.close()


def test_cli_says_in_one_line_that_granian_cannot_serve(tmp_path):
    script = ("import sys, granian.server.embed as e\n"
              "def broken(*a, **k): raise OSError('injected: no worker')\n"
              "e.RSGIWorker = broken\n"
              "from tracker.cli import main\n"
              "sys.argv = ['swarm-tracker', 'start', '--host', '127.0.0.1', '--port', '0', "
              "'--http-server', 'granian']\n"
              "main()\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    assert done.stderr.splitlines() == ["swarm-tracker: error: granian could not serve HTTP: injected: no worker"]
    assert "listening on" not in done.stdout


async def test_cli_second_ctrl_c_ends_a_held_stop_at_once(tmp_path, processes):
    """A client that never finishes its request holds granian's stop for HEADER_SECONDS; a
    second Ctrl-C ends the process at once, in one line, without a traceback."""
    proc, port, log = _cli_tracker(tmp_path, processes, "--http-server", "granian")
    with socket.create_connection(("127.0.0.1", port)) as holder:
        holder.sendall(b"GET /announce HTTP/1.1\r\nHo")
        await asyncio.sleep(0.3)
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        await asyncio.sleep(0.3)
        assert proc.poll() is None                          # the first: still stopping
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 128 + signal.SIGINT
        assert time.monotonic() - started < HEADER_SECONDS - 1
    output = log.read_text()
    assert "Traceback" not in output and "panicked" not in output
    assert output.rstrip().endswith("swarm-tracker interrupted while stopping")


@pytest.mark.parametrize("extra, server", [([], "granian"), (["--files", "FILES"], "aiohttp")])
async def test_cli_picks_granian_when_installed_unless_aiohttp_is_needed(tmp_path, processes, extra,
                                                                           server):
    (tmp_path / "files").mkdir()
    extra = [str(tmp_path / "files") if arg == "FILES" else arg for arg in extra]
    log = tmp_path / "tracker.log"
    proc = start_process(["-m", "tracker", "start", "--host", "127.0.0.1", "--port", "0", *extra], log)
    processes.append(proc)
    line = wait_for_line(log, r"listening on http://127\.0\.0\.1:(\d+)/announce .*\(HTTP: (\w+)\)", proc, 20)
    assert line.group(2) == server
    async with aiohttp.ClientSession() as http:
        req = AnnounceRequest(IH, peer_id(1), 20001)
        url = tp.build_announce_url(f"http://127.0.0.1:{line.group(1)}/announce", req)
        async with http.get(URL(url, encoded=True)) as resp:
            assert resp.status == 200
            assert tp.decode_announce_response(await resp.read()).peers == []
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0

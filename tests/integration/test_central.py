"""Central and hybrid modes: web seeds (BEP 19) served by `swarm-tracker --files` or any
HTTP server with Range, every piece hash-checked, a lying origin never corrupting a file."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
import sys
from pathlib import Path

from aiohttp import web

from common.metainfo import create_metainfo, parse_metainfo
from tests.integration.conftest import (
    ROOT, make_file, sha1_of, start_process, torrent_for, tree_digest, wait_for_line,
)

PIECE = 16384


def start_origin(tmp_path: Path, files: Path, processes: list, *extra: str) -> str:
    """`swarm-tracker start --files DIR`: returns http://127.0.0.1:PORT."""
    log = tmp_path / f"origin-{len(processes)}.log"
    proc = start_process(["-m", "tracker", "start", "--host", "127.0.0.1", "--port", "0",
                          "--interval", "5", "--files", str(files), *extra], log)
    processes.append(proc)
    port = wait_for_line(log, r"http://127\.0\.0\.1:(\d+)/announce", proc, 20).group(1)
    return f"http://127.0.0.1:{port}"


def peer_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """`swarm-peer ARGS`; get and seed listen on 127.0.0.1 only."""
    if args[0] in ("get", "seed"):
        args = (*args, "--host", "127.0.0.1", "--port", "0", "--no-lsd")
    return subprocess.run([sys.executable, "-m", "peer", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env={**os.environ, "SWARM_NO_LSD": "1"})


@contextlib.asynccontextmanager
async def serving(app: web.Application):
    """`app` on 127.0.0.1 (an origin that is not swarm's tracker); yields its port."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


def corrupt(original: Path, copy: Path, pieces: list[int]) -> None:
    """A copy of `original` with one byte flipped in the middle of each of `pieces`."""
    data = bytearray(original.read_bytes())
    for index in pieces:
        data[index * PIECE + PIECE // 2] ^= 0xFF
    copy.parent.mkdir(parents=True, exist_ok=True)
    copy.write_bytes(bytes(data))


def test_central_mode_downloads_a_byte_identical_file_from_the_origin(tmp_path, processes):
    src = make_file(tmp_path / "files" / "video.bin", 40 * PIECE + 777, seed=11)
    base = start_origin(tmp_path, src.parent, processes)
    torrent = tmp_path / "video.torrent"
    made = peer_cli("create", str(src), "--tracker", f"{base}/announce", "--web-seed",
                    f"{base}/files/video.bin", "--piece-length", str(PIECE), "-o", str(torrent))
    assert made.returncode == 0, made.stderr
    assert parse_metainfo(torrent.read_bytes()).web_seeds == (f"{base}/files/video.bin",)

    got = peer_cli("get", str(torrent), "-o", str(tmp_path / "out"), "--mode", "central", "--no-seed")
    assert got.returncode == 0, got.stdout + got.stderr
    assert "complete:" in got.stdout
    assert sha1_of(tmp_path / "out" / "video.bin") == sha1_of(src)


def test_central_mode_multi_file_folder_from_origin(tmp_path, processes):
    folder = tmp_path / "files" / "kit"
    make_file(folder / "a.bin", 3 * PIECE + 5, seed=12)
    make_file(folder / "maps" / "b.bin", 2 * PIECE - 1, seed=13)
    (folder / "maps" / "empty.txt").write_bytes(b"")
    make_file(folder / "z.txt", 10, seed=14)
    base = start_origin(tmp_path, folder.parent, processes)
    torrent = tmp_path / "kit.torrent"
    # BEP 19: a URL ending in '/' gets the torrent's name and each file's path appended
    torrent.write_bytes(create_metainfo(folder, [], piece_length=PIECE, web_seeds=[f"{base}/files/"]))
    got = peer_cli("get", str(torrent), "-o", str(tmp_path / "out"), "--mode", "central", "--no-seed")
    assert got.returncode == 0, got.stdout + got.stderr
    assert tree_digest(tmp_path / "out" / "kit") == tree_digest(folder)


def test_corrupt_origin_fails_only_those_pieces_and_writes_nothing_wrong(tmp_path, processes):
    src = make_file(tmp_path / "good" / "data.bin", 24 * PIECE, seed=15)
    bad_pieces = [3, 17]
    corrupt(src, tmp_path / "files" / "data.bin", bad_pieces)
    base = start_origin(tmp_path, tmp_path / "files", processes)
    torrent = tmp_path / "data.torrent"
    torrent.write_bytes(create_metainfo(src, [], piece_length=PIECE, web_seeds=[f"{base}/files/data.bin"]))

    got = peer_cli("get", str(torrent), "-o", str(tmp_path / "out"), "--mode", "central", "--no-seed")
    assert got.returncode == 2, got.stdout + got.stderr
    error_lines = [line for line in got.stderr.splitlines() if line.startswith("swarm-peer: error:")]
    assert error_lines == ["swarm-peer: error: 2 piece(s) failed the hash check from every web seed "
                           "(first: piece 3); nothing wrong was written"], got.stderr
    for index in bad_pieces:
        assert f"piece {index} failed its hash check" in got.stderr

    written = (tmp_path / "out" / "data.bin").read_bytes()
    original = src.read_bytes()
    assert len(written) == len(original)
    for index in range(24):
        piece = written[index * PIECE:(index + 1) * PIECE]
        if index in bad_pieces:
            assert piece == bytes(PIECE), f"piece {index}: something was written"
        else:
            assert piece == original[index * PIECE:(index + 1) * PIECE], f"piece {index} differs"


def test_hybrid_mode_completes_from_a_seed_when_the_origin_lies(tmp_path, processes):
    src = make_file(tmp_path / "good" / "data.bin", 64 * PIECE, seed=16)
    bad_pieces = list(range(0, 64, 4))
    corrupt(src, tmp_path / "files" / "data.bin", bad_pieces)
    base = start_origin(tmp_path, tmp_path / "files", processes)   # fast origin: serves first
    torrent = tmp_path / "data.torrent"
    torrent.write_bytes(create_metainfo(src, [f"{base}/announce"], piece_length=PIECE,
                                        web_seeds=[f"{base}/files/data.bin"]))
    seed_log = tmp_path / "seed.log"
    seed = start_process(["-m", "peer", "seed", str(torrent), str(src), "--host", "127.0.0.1", "--port", "0",
                          "--no-lsd", "--upload-limit", "256KiB"], seed_log)
    processes.append(seed)
    wait_for_line(seed_log, r"seeding", seed, 30)

    got = peer_cli("get", str(torrent), "-o", str(tmp_path / "out"), "--mode", "hybrid", "--no-seed")
    assert got.returncode == 0, got.stdout + got.stderr
    assert sha1_of(tmp_path / "out" / "data.bin") == sha1_of(src)
    failed = {int(i) for i in re.findall(r"piece (\d+) failed its hash check", got.stderr)}
    assert failed and failed <= set(bad_pieces), got.stderr  # the origin's wrong pieces were reported


async def central_copy_is_identical(clients, folder: Path, web_seed: str, out: Path) -> None:
    """A torrent of `folder` with `web_seed`, downloaded in central mode into `out`."""
    _, meta = torrent_for(folder, [], piece_length=PIECE, web_seeds=[web_seed])
    client = await clients()
    torrent = await client.add_torrent(meta, out, mode="central")
    await asyncio.wait_for(torrent.complete.wait(), 30)
    assert torrent.error is None and torrent.hash_failures == 0
    assert tree_digest(out / folder.name) == tree_digest(folder)


async def test_any_http_server_with_range_is_an_origin(tmp_path, clients):
    """aiohttp's plain static file handler (not swarm's tracker) as the web seed."""
    served = tmp_path / "www"
    folder = served / "album"
    make_file(folder / "one.bin", 5 * PIECE + 3, seed=17)
    make_file(folder / "sub dir" / "two words.bin", 7 * PIECE, seed=18)
    app = web.Application()
    app.router.add_static("/pub/", served)
    async with serving(app) as port:
        await central_copy_is_identical(clients, folder, f"http://127.0.0.1:{port}/pub/", tmp_path / "out")


async def test_a_server_that_ignores_range_is_an_origin_too(tmp_path, clients):
    """A server that answers every request with the whole file (200, as python -m http.server
    does): the pieces are cut out of it."""
    folder = tmp_path / "www" / "album"
    make_file(folder / "one.bin", 9 * PIECE + 5, seed=19)
    make_file(folder / "two.bin", 3 * PIECE, seed=20)
    whole_answers = []

    async def whole_file(request: web.Request) -> web.Response:
        whole_answers.append(request.headers.get("Range"))
        return web.Response(body=(folder / request.match_info["name"]).read_bytes())

    app = web.Application()
    app.router.add_get("/pub/album/{name}", whole_file)
    async with serving(app) as port:
        await central_copy_is_identical(clients, folder, f"http://127.0.0.1:{port}/pub/", tmp_path / "out")
        assert whole_answers and all(r and r.startswith("bytes=") for r in whole_answers)


async def test_pad_files_are_never_fetched_nor_made(tmp_path, clients):
    """BEP 47 pad entries (libtorrent's hybrid torrents align each file to a piece): zeros in
    the hashed data, on no server and in no folder."""
    import hashlib
    from common.bencoding import bencode
    folder = tmp_path / "www" / "album"
    one = make_file(folder / "one.bin", PIECE + 100, seed=21).read_bytes()
    two = make_file(folder / "two.bin", 2 * PIECE + 9, seed=22).read_bytes()
    pad = PIECE - 100
    data = one + bytes(pad) + two
    info = {"name": "album", "piece length": PIECE,
            "pieces": b"".join(hashlib.sha1(data[i:i + PIECE]).digest() for i in range(0, len(data), PIECE)),
            "files": [{"length": len(one), "path": ["one.bin"]},
                      {"attr": "p", "length": pad, "path": [".pad", str(pad)]},
                      {"length": len(two), "path": ["two.bin"]}]}
    app = web.Application()
    app.router.add_static("/pub/", tmp_path / "www")
    async with serving(app) as port:
        meta = parse_metainfo(bencode({"info": info, "url-list": f"http://127.0.0.1:{port}/pub/"}))
        assert [f.pad for f in meta.files] == [False, True, False]
        client = await clients()
        torrent = await client.add_torrent(meta, tmp_path / "out", mode="central")
        await asyncio.wait_for(torrent.complete.wait(), 30)
        assert torrent.error is None and torrent.hash_failures == 0
        assert tree_digest(tmp_path / "out" / "album") == tree_digest(folder)
        assert not (tmp_path / "out" / "album" / ".pad").exists()


def test_central_mode_gives_up_on_an_origin_without_the_file(tmp_path, processes):
    """A 404 will not change by asking again: one error line and a failed exit, not a
    download that waits forever at 0 % (aria2c ends with an error too)."""
    src = make_file(tmp_path / "mine" / "gone.bin", 4 * PIECE, seed=23)
    (tmp_path / "files").mkdir()
    base = start_origin(tmp_path, tmp_path / "files", processes)
    torrent = tmp_path / "gone.torrent"
    torrent.write_bytes(create_metainfo(src, [], piece_length=PIECE,
                                        web_seeds=[f"{base}/files/gone.bin"]))
    got = peer_cli("get", str(torrent), "-o", str(tmp_path / "out"), "--mode", "central",
                   "--no-seed", timeout=30)
    assert got.returncode == 2, got.stdout + got.stderr
    errors = [line for line in got.stderr.splitlines() if line.startswith("swarm-peer: error: ")]
    assert len(errors) == 1 and "HTTP 404" in errors[0] and "Traceback" not in got.stderr, got.stderr


def _range_of(request: web.Request, size: int) -> tuple[int, int]:
    first, last = request.headers["Range"].removeprefix("bytes=").split("-")
    return int(first), min(int(last), size - 1)


async def _partial_answer(request: web.Request, data: bytes) -> tuple[web.StreamResponse, int, int]:
    """A 206 answer to the request's Range of `data`, headers sent, the body still to write."""
    first, last = _range_of(request, len(data))
    resp = web.StreamResponse(status=206, headers={"Content-Range": f"bytes {first}-{last}/{len(data)}"})
    resp.content_length = last - first + 1
    await resp.prepare(request)
    return resp, first, last


async def _central_from(handler, folder: Path, tmp_path: Path, clients, piece_length: int,
                        until: str = "complete"):
    """`folder`'s torrent downloaded in central mode from a server that answers with
    `handler`, until the torrent is complete (or failed); returns the Torrent."""
    app = web.Application()
    app.router.add_get(f"/pub/{folder.name}/{{name}}", handler)
    async with serving(app) as port:
        _, meta = torrent_for(folder, [], piece_length=piece_length,
                              web_seeds=[f"http://127.0.0.1:{port}/pub/"])
        client = await clients()
        torrent = await client.add_torrent(meta, tmp_path / "out", mode="central")
        await asyncio.wait_for(getattr(torrent, until).wait(), 30)
    return torrent


async def test_an_answer_cut_off_midway_still_brings_its_whole_blocks(tmp_path, clients):
    """A server (or proxy) that drops the connection partway through every long answer:
    the blocks that came whole are kept, and only the rest is asked again. They used to be
    thrown away with the rest, so no piece of 4 blocks was ever complete."""
    folder = tmp_path / "www" / "album"
    data = make_file(folder / "one.bin", 6 * 4 * PIECE + 100, seed=24).read_bytes()
    cut_offs = []

    async def cut_off(request: web.Request) -> web.StreamResponse:
        resp, first, last = await _partial_answer(request, data)
        sent = min(last - first + 1, 40 * 1024)      # 2.5 blocks of a 4-block piece
        await resp.write(data[first:first + sent])
        if sent <= last - first:
            cut_offs.append(first)
            request.transport.close()
        return resp

    torrent = await _central_from(cut_off, folder, tmp_path, clients, 4 * PIECE)
    assert cut_offs and torrent.error is None
    assert tree_digest(tmp_path / "out" / "album") == tree_digest(folder)


async def test_a_slow_origin_is_waited_for_while_it_sends(tmp_path, clients, monkeypatch):
    """The timeout is on silence, not on a whole answer: an origin (or our own download
    cap) that takes longer than it over one piece, but never pauses that long, is slow,
    not dead."""
    from peer.webseed import WebSeed
    monkeypatch.setattr(WebSeed, "IDLE_TIMEOUT", 1.0)
    folder = tmp_path / "www" / "album"
    data = make_file(folder / "one.bin", 2 * 4 * PIECE, seed=25).read_bytes()

    async def slow(request: web.Request) -> web.StreamResponse:
        resp, first, last = await _partial_answer(request, data)
        for at in range(first, last + 1, PIECE):     # 4 blocks, 0.4 s apart: 1.2 s an answer
            if at > first:
                await asyncio.sleep(0.4)
            await resp.write(data[at:min(at + PIECE, last + 1)])
        return resp

    torrent = await _central_from(slow, folder, tmp_path, clients, 4 * PIECE)
    assert torrent.extra_sources[0].errors == 0
    assert tree_digest(tmp_path / "out" / "album") == tree_digest(folder)


async def test_an_origin_that_keeps_failing_is_given_up(tmp_path, clients, monkeypatch):
    """A server error may pass, so it is asked again, with a growing pause; but not forever:
    after MAX_ERRORS_IN_A_ROW failures with nothing delivered, central mode fails with the
    reason."""
    from peer.webseed import WebSeed
    monkeypatch.setattr(WebSeed, "MAX_ERRORS_IN_A_ROW", 2)
    folder = tmp_path / "www" / "album"
    make_file(folder / "one.bin", 2 * PIECE, seed=26)

    async def broken(request: web.Request) -> web.Response:
        return web.Response(status=500)

    torrent = await _central_from(broken, folder, tmp_path, clients, PIECE, until="failed")
    assert "no web seed can be used" in torrent.error and "HTTP 500" in torrent.error

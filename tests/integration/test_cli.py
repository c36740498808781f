"""The real commands as a user types them, as subprocesses on 127.0.0.1."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys


from common import wire
from common.metainfo import load_metainfo
from tests.integration.conftest import (
    ROOT, make_file, sha1_of, start_process, tree_digest, wait_for_line,
)


def swarm_peer(*args, timeout=60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "peer", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT,
                          env={**__import__("os").environ, "SWARM_NO_LSD": "1"})


def test_tracker_seed_and_seven_leechers_over_http_and_udp(tmp_path, tracker_process, processes):
    src = make_file(tmp_path / "src" / "clip.bin", 2 * 1024 * 1024 + 77, seed=11)
    torrent = tmp_path / "clip.torrent"
    made = swarm_peer("create", src, "--tracker", f"http://{tracker_process}/announce",
                      "--tracker", f"udp://{tracker_process}/announce", "-o", torrent)
    assert made.returncode == 0, made.stderr
    assert "info-hash" in made.stdout
    udp_first = tmp_path / "clip-udp.torrent"
    assert swarm_peer("create", src, "--tracker", f"udp://{tracker_process}/announce",
                      "--piece-length", 32768, "-o", udp_first).returncode == 0

    seed_log = tmp_path / "seed.log"
    seed = start_process(["-m", "peer", "seed", torrent, src, "--port", "0", "--host", "127.0.0.1"], seed_log)
    processes.append(seed)
    wait_for_line(seed_log, r"seeding", seed, 30)
    # the udp-only torrent has other pieces, so it needs its own seed
    seed2_log = tmp_path / "seed2.log"
    seed2 = start_process(["-m", "peer", "seed", udp_first, src, "--port", "0", "--host", "127.0.0.1"], seed2_log)
    processes.append(seed2)
    wait_for_line(seed2_log, r"seeding", seed2, 30)

    leechers = []
    for i in range(7):
        t = torrent if i < 5 else udp_first
        out = tmp_path / f"leech{i}"
        log = tmp_path / f"leech{i}.log"
        proc = start_process(["-m", "peer", "get", t, "-o", out, "--port", "0", "--host", "127.0.0.1",
                              "--no-seed"], log)
        processes.append(proc)
        leechers.append((proc, out, log))
    for proc, out, log in leechers:
        assert proc.wait(timeout=90) == 0, log.read_text()
        text = log.read_text()
        assert f"complete: {(out / 'clip.bin').resolve()}" in text
        assert sha1_of(out / "clip.bin") == sha1_of(src)


def test_corrupt_torrent_is_one_line_and_exit_2(tmp_path):
    bad = tmp_path / "bad.torrent"
    bad.write_bytes(b"d8:announce3:abc4:infod4:name1:x")  # cut short
    result = swarm_peer("get", bad, "-o", tmp_path / "out", "--port", "0")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("swarm-peer: error: ") and "bad.torrent" in lines[0]
    assert "Traceback" not in result.stderr + result.stdout


def test_missing_torrent_file_is_one_line(tmp_path):
    result = swarm_peer("get", tmp_path / "nope.torrent", "--port", "0")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1


def test_path_traversal_torrent_is_refused(tmp_path):
    from common.bencoding import bencode
    info = {"name": "evil", "piece length": 16384, "pieces": b"\0" * 20,
            "files": [{"length": 10, "path": ["..", "..", "etc", "passwd"]}]}
    bad = tmp_path / "evil.torrent"
    bad.write_bytes(bencode({"announce": "http://127.0.0.1:1/announce", "info": info}))
    result = swarm_peer("get", bad, "-o", tmp_path / "out", "--port", "0", "--no-seed")
    assert result.returncode == 2
    assert ".." in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "etc").exists()


def test_create_folder_torrent_and_seed_multi_file(tmp_path, tracker_process, processes):
    folder = tmp_path / "kit"
    make_file(folder / "a.bin", 100_000, seed=1)
    make_file(folder / "deep" / "b.bin", 50_000, seed=2)
    torrent = tmp_path / "kit.torrent"
    assert swarm_peer("create", folder, "--tracker", f"http://{tracker_process}/announce",
                      "-o", torrent).returncode == 0
    seed_log = tmp_path / "seed.log"
    seed = start_process(["-m", "peer", "seed", torrent, folder, "--port", "0", "--host", "127.0.0.1"], seed_log)
    processes.append(seed)
    wait_for_line(seed_log, "seeding", seed, 30)
    result = swarm_peer("get", torrent, "-o", tmp_path / "dl", "--port", "0", "--host", "127.0.0.1",
                        "--no-seed", timeout=60)
    assert result.returncode == 0, result.stderr
    assert tree_digest(tmp_path / "dl" / "kit") == tree_digest(folder)


async def _raw_connect(port: int, payload: bytes, then: bytes = b"") -> bytes:
    """Send payload; if `then`, read the 68-byte handshake reply first, then send `then`."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload)
    await writer.drain()
    try:
        data = b""
        if then:
            data = await asyncio.wait_for(reader.readexactly(68), timeout=5)
            writer.write(then)
            await writer.drain()
        data += await asyncio.wait_for(reader.read(), timeout=5)
    finally:
        writer.close()
    return data


def test_garbage_to_peer_port_drops_only_that_connection(tmp_path, tracker_process, processes):
    src = make_file(tmp_path / "src" / "f.bin", 600_000, seed=9)
    torrent = tmp_path / "f.torrent"
    assert swarm_peer("create", src, "--tracker", f"http://{tracker_process}/announce",
                      "-o", torrent).returncode == 0
    seed_log = tmp_path / "seed.log"
    seed = start_process(["-m", "peer", "seed", torrent, src, "--port", "0", "--host", "127.0.0.1"], seed_log)
    processes.append(seed)
    port = int(wait_for_line(seed_log, r"listening on port (\d+)", seed, 30).group(1))
    wait_for_line(seed_log, "seeding", seed, 30)
    meta = load_metainfo(torrent)
    # garbage instead of a handshake: closed at once, nothing sent back
    assert asyncio.run(_raw_connect(port, b"GET / HTTP/1.1\r\n\r\n" * 10)) == b""
    # a valid handshake, then an oversized length prefix: closed after the handshake reply
    hs = wire.encode(wire.Handshake(meta.info_hash, b"-XX0000-garbagegarba"))
    reply = asyncio.run(_raw_connect(port, hs, then=b"\xff\xff\xff\xff\x07"))
    assert reply[28:48] == meta.info_hash
    # after the reply come its bitfield (have_all) and extension handshake, then EOF
    assert len(reply) < 68 + 200
    # the daemon still serves: a real download completes
    result = swarm_peer("get", torrent, "-o", tmp_path / "dl", "--port", "0", "--host", "127.0.0.1",
                        "--no-seed", timeout=60)
    assert result.returncode == 0, result.stderr
    assert sha1_of(tmp_path / "dl" / "f.bin") == sha1_of(src)
    assert seed.poll() is None


def test_create_takes_a_piece_length_with_units_and_refuses_a_bad_one(tmp_path):
    src = make_file(tmp_path / "a.bin", 200_000, seed=3)
    made = swarm_peer("create", src, "--piece-length", "32KiB", "-o", tmp_path / "a.torrent")
    assert made.returncode == 0, made.stderr
    assert load_metainfo(tmp_path / "a.torrent").piece_length == 32768
    for bad, says in (("32q", "invalid size '32q'"), ("48KiB", "power of two")):
        refused = swarm_peer("create", src, "--piece-length", bad, "-o", tmp_path / "b.torrent")
        assert refused.returncode != 0 and says in refused.stderr
        assert "Traceback" not in refused.stderr and not (tmp_path / "b.torrent").exists()


def test_seed_refuses_data_that_does_not_match_and_changes_nothing(tmp_path):
    src = make_file(tmp_path / "src" / "movie.bin", 300_000, seed=21)
    torrent = tmp_path / "movie.torrent"
    assert swarm_peer("create", src, "--tracker", "http://127.0.0.1:9/announce", "-o", torrent).returncode == 0
    other = make_file(tmp_path / "mine" / "important.iso", 500_000, seed=22)   # not the torrent's
    before = sha1_of(other)
    result = swarm_peer("seed", torrent, other, "--port", "0", "--host", "127.0.0.1")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "only 0/" in result.stderr and "not seeded (nothing was changed" in result.stderr
    assert other.stat().st_size == 500_000 and sha1_of(other) == before
    folder = tmp_path / "tree"
    make_file(folder / "a.bin", 10, seed=23)
    assert swarm_peer("create", folder, "--tracker", "http://127.0.0.1:9/announce", "-o",
                      tmp_path / "tree.torrent").returncode == 0
    (folder / "a.bin").unlink()                        # a missing file is not created either
    result = swarm_peer("seed", tmp_path / "tree.torrent", folder, "--port", "0", "--host", "127.0.0.1")
    assert result.returncode == 2 and "only 0/1 pieces" in result.stderr
    assert list(folder.iterdir()) == []


def test_peer_options_out_of_range_are_one_line(tmp_path):
    src = make_file(tmp_path / "src" / "f.bin", 1000, seed=24)
    torrent = tmp_path / "f.torrent"
    assert swarm_peer("create", src, "--tracker", "http://127.0.0.1:9/announce", "-o", torrent).returncode == 0
    for option in (("--port", "70000"), ("--port", "-1"), ("--max-peers", "0")):
        result = swarm_peer("get", torrent, "-o", tmp_path / "out", "--host", "127.0.0.1", *option)
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert f"Invalid value for '{option[0]}'" in result.stderr


def test_an_interrupted_download_says_so_and_fails(tmp_path, processes):
    import signal
    src = make_file(tmp_path / "src" / "f.bin", 100_000, seed=25)
    torrent = tmp_path / "f.torrent"
    assert swarm_peer("create", src, "--tracker", "http://127.0.0.1:9/announce", "-o", torrent).returncode == 0
    log = tmp_path / "get.log"
    proc = start_process(["-m", "peer", "get", torrent, "-o", tmp_path / "out", "--port", "0",
                          "--host", "127.0.0.1", "--no-seed"], log)     # no seed anywhere: waits
    processes.append(proc)
    wait_for_line(log, r"pieces on disk, downloading", proc, 30)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 130
    assert re.search(r"f\.bin: interrupted at 0/\d+ pieces; the same command resumes it", log.read_text())


def test_unusable_url_and_busy_port_are_said_plainly(tmp_path):
    import socket
    result = swarm_peer("get", "http://127.0.0.1:99999/x.torrent", "-o", tmp_path / "out")
    assert result.returncode == 2
    assert result.stderr.strip() == "swarm-peer: error: http://127.0.0.1:99999/x.torrent: not a usable URL"
    src = make_file(tmp_path / "src" / "f.bin", 1000, seed=26)
    torrent = tmp_path / "f.torrent"
    assert swarm_peer("create", src, "--tracker", "http://127.0.0.1:9/announce", "-o", torrent).returncode == 0
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = swarm_peer("get", torrent, "-o", tmp_path / "out", "--host", "127.0.0.1", "--port", port)
    assert result.returncode == 2
    assert result.stderr.strip() == (f"swarm-peer: error: cannot listen on port {port} of 127.0.0.1: "
                                     f"Address already in use")


def test_get_into_a_file_instead_of_a_folder_is_said_plainly(tmp_path):
    src = make_file(tmp_path / "src" / "f.bin", 1000, seed=27)
    torrent = tmp_path / "f.torrent"
    assert swarm_peer("create", src, "--tracker", "http://127.0.0.1:9/announce", "-o", torrent).returncode == 0
    (tmp_path / "afile").write_text("mine")
    result = swarm_peer("get", torrent, "-o", tmp_path / "afile", "--host", "127.0.0.1", "--port", "0")
    assert result.returncode == 2 and (tmp_path / "afile").read_text() == "mine"
    assert result.stderr.strip() == (f"swarm-peer: error: {tmp_path / 'afile'} cannot be made: "
                                     f"a file is in the way (a folder is needed there)")


def test_the_command_collects_garbage_again_once_its_imports_are_done():
    """peer/__main__ turns the collector off only while importing (a faster start)."""
    code = "import gc, peer.__main__; print(gc.isenabled(), peer.__main__.run.__module__)"
    got = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         timeout=60)
    assert got.stdout.split() == ["True", "peer.__main__"], got.stderr

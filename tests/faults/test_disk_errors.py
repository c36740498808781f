"""A full disk or an unwritable output folder: `swarm-peer get` prints one clear error line,
exits non-zero, and never claims an incomplete file complete. The small disk is a 1 MiB
tmpfs, the unwritable folder a read-only tmpfs (root ignores file permissions, so chmod
would prove nothing); both need mount rights and are skipped without them."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from peer.storage import Storage
from tests.faults.conftest import make_file, torrent_for
from tests.integration.conftest import ROOT
from tracker.server import TrackerConfig, start_tracker


@pytest.fixture
def mount_tmpfs():
    """mount_tmpfs(path, options): a tmpfs at `path`, unmounted after the test."""
    mounted: list[Path] = []

    def mount(path: Path, options: str) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
        mounted.append(path)
        return path

    yield mount
    for path in reversed(mounted):
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


async def run_get(torrent: Path, out: Path, timeout: float = 40) -> tuple[int, str, str]:
    env = dict(os.environ, SWARM_NO_LSD="1", PYTHONUNBUFFERED="1")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "peer", "get", str(torrent), "-o", str(out), "--no-seed",
        "--port", "0", "--host", "127.0.0.1", "--no-lsd", cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        stdout, stderr = await proc.communicate()
        raise AssertionError(f"still running after {timeout} s:\n{stdout.decode()[-2000:]}\n{stderr.decode()[-2000:]}")
    return proc.returncode, stdout.decode(errors="replace"), stderr.decode(errors="replace")


@pytest.fixture
async def swarm(tmp_path, clients):
    """A tracker and a seed of a 4 MiB file; yields (torrent path, metainfo, data)."""
    tracker = await start_tracker(TrackerConfig(host="127.0.0.1", port=0, interval=5))
    data = make_file(tmp_path / "seed" / "big.bin", 4 * 1024 * 1024, seed=21)
    raw, meta = torrent_for(tmp_path / "seed" / "big.bin", [f"http://{tracker.base_url}/announce"],
                            piece_length=64 * 1024)
    torrent = tmp_path / "big.torrent"
    torrent.write_bytes(raw)
    seed = await clients()
    await seed.add_torrent(meta, tmp_path / "seed")
    yield torrent, meta, data
    await tracker.close()


def error_lines(stderr: str) -> list[str]:
    """stderr without the progress lines (`big.bin:  25.0%  1.0 MiB/4.0 MiB ...`)."""
    return [line for line in re.split(r"[\r\n]+", stderr)
            if line.strip() and not re.match(r"^\S+:\s+\d+\.\d%", line)]


async def test_full_disk_is_one_error_line_and_nothing_claimed_complete(tmp_path, swarm, mount_tmpfs):
    torrent, meta, data = swarm
    small = mount_tmpfs(tmp_path / "small", "size=1m")
    code, out, err = await run_get(torrent, small)
    assert code != 0
    lines = error_lines(err)
    assert len(lines) == 1 and lines[0].startswith("swarm-peer: error: disk full"), err[-2000:]
    assert str(small / meta.name) in lines[0]
    assert "complete:" not in out
    # whatever pieces made it to disk are the right bytes; the file as a whole is not complete
    storage = Storage(meta, small)
    await storage.open(create=False)
    good = await storage.verify()
    await storage.close()
    assert len(good) < meta.num_pieces
    on_disk = (small / meta.name).read_bytes()
    for i in good:
        lo = i * meta.piece_length
        assert on_disk[lo:lo + meta.piece_size(i)] == data[lo:lo + meta.piece_size(i)]


async def test_read_only_output_folder_is_one_error_line(tmp_path, swarm, mount_tmpfs):
    torrent, meta, _ = swarm
    readonly = mount_tmpfs(tmp_path / "ro", "ro,size=1m")
    code, out, err = await run_get(torrent, readonly)
    assert code != 0
    lines = error_lines(err)
    assert len(lines) == 1 and lines[0].startswith("swarm-peer: error: read-only file system"), err[-2000:]
    assert "complete:" not in out and list(readonly.iterdir()) == []


async def test_output_folder_that_is_a_file_is_one_error_line(tmp_path, swarm):
    torrent, meta, _ = swarm
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    code, out, err = await run_get(torrent, not_a_folder)
    assert code != 0
    lines = error_lines(err)
    assert len(lines) == 1 and lines[0].startswith("swarm-peer: error: "), err[-2000:]
    assert "Traceback" not in err and "complete:" not in out


async def test_a_failed_torrent_answers_its_queued_pieces_and_takes_no_more(tmp_path):
    """fail() (a disk error) while pieces wait for the piece threads: each still gets its
    answer (so `hashing` empties and reading is not held forever), and a block arriving
    after it (a web seed's fetch under way) starts nothing new."""
    import os
    import threading

    from common.metainfo import create_metainfo, parse_metainfo
    from peer.storage import Storage
    from peer.torrent import Torrent

    pl = 16384
    src = tmp_path / "seed" / "d.bin"
    src.parent.mkdir()
    payload = os.urandom(pl * 12)
    src.write_bytes(payload)
    meta = parse_metainfo(create_metainfo(src, [], piece_length=pl))
    storage = Storage(meta, tmp_path / "leech")
    await storage.open()
    torrent = Torrent(meta, storage, peer_id=b"-XX0000-" + bytes(12), listen_port=1,
                      use_peers=False)
    torrent.unwritten_max = 4
    gate = threading.Event()
    check_and_write = storage._check_and_write

    def held(*job):
        gate.wait(5)
        return check_and_write(*job)
    storage._check_and_write = held
    source = object()
    torrent.picker.add_peer(source, range(meta.num_pieces))
    blocks = torrent.picker.pick(source, 10_000)

    def deliver(index):
        for i, begin, n in (b for b in blocks if b[0] == index):
            torrent.on_block(source, i, begin, payload[i * pl + begin:i * pl + begin + n])
    for i in range(8):
        deliver(i)
    assert len(torrent.hashing) == 8 and not torrent.disk_ready.is_set()
    torrent.fail("disk full")
    gate.set()
    await asyncio.wait_for(torrent.disk_ready.wait(), 5)
    for _ in range(250):                    # the rest of the answers, within 5 s
        if not torrent.hashing:
            break
        await asyncio.sleep(0.02)
    assert not torrent.hashing and storage._workers is None
    deliver(9)
    assert not torrent.hashing and storage._workers is None
    await storage.close()


async def test_a_failed_torrent_gives_back_its_share_of_the_open_pieces_bound(tmp_path):
    """The process-wide bound on pieces being assembled (picker.OpenPieces) is shared by
    every torrent of a daemon: one that failed (a disk error) must not keep holding its
    share until the user stops it, or the other torrents would start fewer pieces."""
    from common.metainfo import create_metainfo, parse_metainfo
    from peer.picker import OpenPieces
    from peer.torrent import Torrent

    pl = 16384
    src = tmp_path / "seed" / "d.bin"
    src.parent.mkdir()
    src.write_bytes(os.urandom(pl * 12))
    meta = parse_metainfo(create_metainfo(src, [], piece_length=pl))
    storage = Storage(meta, tmp_path / "leech")
    await storage.open()
    shared = OpenPieces(limit=64 * pl)
    torrent = Torrent(meta, storage, peer_id=b"-XX0000-" + bytes(12), listen_port=1,
                      use_peers=False, open_pieces=shared)
    source = object()
    torrent.picker.add_peer(source, range(meta.num_pieces))
    assert torrent.picker.pick(source, 6)      # six blocks: six 1-block pieces opened
    assert shared.used == 6 * pl
    torrent.fail("disk full")
    assert shared.used == 0
    await torrent.stop()
    assert shared.used == 0

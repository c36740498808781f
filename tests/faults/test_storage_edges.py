"""What users put where the torrent's files go: a named pipe, folders 1000 deep, more files
than descriptors, a symlink to their own data, a file truncated while seeding. Each is one
clear line (or, for the symlink, seeding as asked), never a hang or a traceback, and the
user's data is left as it was."""

from __future__ import annotations

import asyncio
import os
import re
import resource
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from peer.storage import Storage, StorageError
from tests.faults.conftest import make_file, torrent_for
from tests.integration.conftest import ROOT, start_process, stop_process, wait_for_line
from tests.unit.test_storage import make_meta

PIECE = 16384
PEER_OPTIONS = ["--port", "0", "--host", "127.0.0.1", "--no-lsd"]


def swarm_peer(*args: str, hard_fd_limit: int | None = None, timeout: float = 20) -> subprocess.CompletedProcess:
    """Run `swarm-peer`; a hang is killed (its whole group) and fails the test."""
    def limit() -> None:
        if hard_fd_limit is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard_fd_limit, hard_fd_limit))
    proc = subprocess.Popen([sys.executable, "-m", "peer", *args], cwd=ROOT, text=True,
                            env=dict(os.environ, SWARM_NO_LSD="1"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True, preexec_fn=limit)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"swarm-peer {args[0]} still running after {timeout} s:\n{out[-2000:]}\n{err[-2000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def the_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("swarm-peer: error: "), lines
    return lines[0]


def folder_torrent(tmp_path: Path, files: int = 2) -> tuple[Path, Path, object]:
    """sd/m with files a, b... and its torrent (no tracker); returns (torrent, sd/m, meta)."""
    folder = tmp_path / "sd" / "m"
    for n in range(files):
        make_file(folder / chr(ord("a") + n), 3 * PIECE + 7 * n, seed=n)
    raw, meta = torrent_for(folder, piece_length=PIECE)
    torrent = tmp_path / "m.torrent"
    torrent.write_bytes(raw)
    return torrent, folder, meta


def snapshot(folder: Path) -> dict[str, tuple[int, bytes | None]]:
    """Each entry below `folder`: its type and, for files, its bytes."""
    return {str(p.relative_to(folder)): (stat.S_IFMT(p.lstat().st_mode), p.read_bytes() if p.is_file() else None)
            for p in sorted(folder.rglob("*"))}


# -- 1. a named pipe where a file goes ---------------------------------------------------------

def test_seeding_a_named_pipe_is_one_line_not_a_hang(tmp_path):
    torrent, folder, _ = folder_torrent(tmp_path)
    (folder / "a").unlink()
    os.mkfifo(folder / "a")
    before = snapshot(tmp_path)
    line = the_error_line(swarm_peer("seed", str(torrent), str(folder), *PEER_OPTIONS))
    assert line.endswith(f"{folder / 'a'} is not a regular file (a named pipe)"), line
    assert snapshot(tmp_path) == before


def test_downloading_over_a_named_pipe_is_one_line(tmp_path):
    torrent, _, _ = folder_torrent(tmp_path)
    out = tmp_path / "out"
    (out / "m").mkdir(parents=True)
    os.mkfifo(out / "m" / "a")
    line = the_error_line(swarm_peer("get", str(torrent), "-o", str(out), "--no-seed", *PEER_OPTIONS))
    assert line.endswith(f"{out / 'm' / 'a'} is not a regular file (a named pipe)"), line
    assert stat.S_ISFIFO((out / "m" / "a").lstat().st_mode)


async def test_a_folder_where_a_file_goes_is_refused_when_seeding(tmp_path):
    _, folder, meta = folder_torrent(tmp_path)
    (folder / "b").unlink()
    (folder / "b").mkdir()
    with pytest.raises(StorageError, match=r"/b is not a regular file \(a folder\)$"):
        await Storage(meta, folder.parent).open(read_only=True)


# -- 2. a path too long for the system ----------------------------------------------------------

async def test_a_path_longer_than_the_system_allows_is_one_line(tmp_path):
    data = os.urandom(1000)
    # 4,026 bytes in the torrent (metainfo takes it) and the output folder's on top: > PATH_MAX
    meta = make_meta("deep", [(("d" * 200,) * 20 + ("f",), len(data))], PIECE, data)
    with pytest.raises(StorageError) as err:
        await Storage(meta, tmp_path / ("o" * 200)).open()
    assert "\n" not in str(err.value) and "File name too long" in str(err.value)


# -- 3. more files than descriptors -------------------------------------------------------------

@pytest.mark.parametrize("command", ["seed", "get"])
def test_more_files_than_the_descriptor_limit_says_how_many_and_what_to_do(tmp_path, command):
    folder = tmp_path / "sd" / "m"
    folder.mkdir(parents=True)
    for n in range(600):
        (folder / f"f{n:04}").write_bytes(b"%d" % n)
    raw, _ = torrent_for(folder, piece_length=PIECE)
    torrent = tmp_path / "m.torrent"
    torrent.write_bytes(raw)
    out = tmp_path / "out"
    out.mkdir()
    before = snapshot(tmp_path)
    where = [str(folder)] if command == "seed" else ["-o", str(out), "--no-seed"]
    line = the_error_line(swarm_peer(command, str(torrent), *where, *PEER_OPTIONS, hard_fd_limit=300))
    assert re.search(r"m has 600 files.* needs \d+ open files, but the limit is 300"
                     r".*`ulimit -n \d+`", line), line
    assert snapshot(tmp_path) == before


# -- 4. seeding through the user's own symlinks --------------------------------------------------

@pytest.mark.parametrize("layout", ["file-link", "folder-link"])
def test_seeding_through_a_symlink_to_ones_own_data(tmp_path, processes, layout):
    if layout == "file-link":       # lnk/file -> data/file
        data = tmp_path / "data" / "file"
        make_file(data, 3 * PIECE + 1)
        named = tmp_path / "lnk" / "file"
    else:                           # lnk/m -> data/m
        data = tmp_path / "data" / "m"
        make_file(data / "a", 2 * PIECE + 3)
        make_file(data / "sub" / "b", PIECE, seed=2)
        named = tmp_path / "lnk" / "m"
    named.parent.mkdir()
    named.symlink_to(data)
    raw, _ = torrent_for(data, piece_length=PIECE)
    torrent = tmp_path / "t.torrent"
    torrent.write_bytes(raw)
    before = snapshot(tmp_path / "data")
    log = tmp_path / "seed.log"
    proc = start_process(["-m", "peer", "seed", str(torrent), str(named), *PEER_OPTIONS], log)
    processes.append(proc)
    wait_for_line(log, rf"seeding {named.name} on port \d+", proc, timeout=20)
    stop_process(proc)
    assert "refusing" not in log.read_text() and "Traceback" not in log.read_text()
    assert snapshot(tmp_path / "data") == before


async def test_writing_still_refuses_a_symlink_out_of_the_output_folder(tmp_path):
    _, folder, meta = folder_torrent(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "m").symlink_to(folder)
    before = snapshot(folder)
    with pytest.raises(StorageError, match="outside"):
        await Storage(meta, out).open()
    assert snapshot(folder) == before
    storage = Storage(meta, out)       # reading (seeding) the same is fine
    await storage.open(read_only=True)
    assert await storage.verify() == set(range(meta.num_pieces))
    await storage.close()


# -- 5. data changed on disk while seeding -------------------------------------------------------

async def test_a_file_truncated_while_seeding_is_said_to_have_changed_on_disk(tmp_path):
    _, folder, meta = folder_torrent(tmp_path)
    storage = Storage(meta, folder.parent)
    await storage.open(read_only=True)
    assert await storage.verify() == set(range(meta.num_pieces))
    os.truncate(folder / "b", PIECE // 2)          # the user cuts a file short
    storage._cache.clear()
    last = meta.num_pieces - 1                     # b's end
    with pytest.raises(StorageError) as err:
        await storage.read_piece(last)
    assert str(err.value) == f"{folder / 'b'} changed on disk: it is shorter than the torrent says"
    await storage.close()
    assert (folder / "b").stat().st_size == PIECE // 2, "nothing regrew it"


async def test_a_seed_whose_file_was_cut_short_stops_with_that_line(clients, tmp_path):
    """Pieces it said it has cannot be served any more: downloaders stalled at 11.6 % while
    it went on seeding; now the torrent stops and says why (the CLI prints it, exit 2)."""
    from common.wire import Request
    from tests.faults.test_hostile_peers import PIECE as HP_PIECE, bystander, start_seed

    seed, torrent, meta, data = await start_seed(clients, tmp_path, size=8 * HP_PIECE)
    peer = await bystander(seed.port, meta)
    try:
        os.truncate(tmp_path / "seed" / "data.bin", HP_PIECE)
        peer.send(Request(5, 0, 16384))
        await asyncio.wait_for(torrent.failed.wait(), 5)
        assert torrent.error == (f"{tmp_path / 'seed' / 'data.bin'} changed on disk: "
                                 f"it is shorter than the torrent says")
    finally:
        peer.close()

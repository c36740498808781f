""".torrent files across implementations: what `swarm-peer create` writes, aria2c and
libtorrent read with the same info-hash, file list and size; what mktorrent and
libtorrent's create_torrent write, swarm reads with the same info-hash."""

from __future__ import annotations

import re

import pytest
from interop_clients import (
    aria2_info_hash, lt_command, make_file, make_tree, require_tool, run, swarm_create,
)

pytestmark = [pytest.mark.interop, pytest.mark.timeout(60)]

TRACKER = "http://127.0.0.1:6969/announce"
FOLDER = {"a.bin": 300_001, "sub/b.bin": 123_457, "sub/deeper/c.bin": 70_000, "empty-not": 1}


@pytest.fixture(params=["file", "folder"])
def data(request, tmp_path):
    if request.param == "file":
        return make_file(tmp_path / "data" / "payload.bin", 1_000_003, seed=5)
    return make_tree(tmp_path / "data" / "payload", FOLDER, seed=6)


def expected_files(data) -> dict[str, int]:
    if data.is_file():
        return {data.name: data.stat().st_size}
    return {f"{data.name}/{p.relative_to(data)}": p.stat().st_size for p in data.rglob("*") if p.is_file()}


def lt_view(torrent) -> tuple[str, dict[str, int], int]:
    """(info-hash, {path: size}, piece count) as libtorrent reads the file."""
    out = run(lt_command("info", torrent)).stdout
    files = {m.group(1): int(m.group(2)) for m in re.finditer(r"^file: (.+) (\d+)$", out, re.M)}
    info_hash = re.search(r"info_hash: ([0-9a-f]{40})", out).group(1)
    return info_hash, files, int(re.search(r"num_pieces: (\d+)", out).group(1))


def swarm_view(torrent):
    from common.metainfo import load_metainfo
    return load_metainfo(torrent)


def swarm_files(meta) -> dict[str, int]:
    return {"/".join(f.path): f.length for f in meta.files}


def test_swarm_torrent_is_read_by_aria2c_and_libtorrent(tmp_path, data):
    require_tool("peer.cli")
    require_tool("aria2c")
    require_tool("libtorrent")
    torrent = swarm_create(data, [TRACKER], tmp_path / "swarm.torrent", piece_length=32768)
    meta = swarm_view(torrent)

    assert aria2_info_hash(torrent) == meta.info_hash.hex()
    info_hash, files, pieces = lt_view(torrent)
    assert info_hash == meta.info_hash.hex()
    assert files == expected_files(data)
    assert pieces == meta.num_pieces == -(-sum(files.values()) // 32768)


def test_aria2c_lists_the_files_of_a_swarm_torrent(tmp_path, data):
    require_tool("peer.cli")
    require_tool("aria2c")
    torrent = swarm_create(data, [TRACKER], tmp_path / "swarm.torrent", piece_length=32768)
    out = run(["aria2c", "--no-conf", "-S", torrent]).stdout
    assert f"Mode: {'single' if data.is_file() else 'multi'}" in out
    assert f"Name: {data.name}" in out
    assert f" {TRACKER}" in out
    for path in expected_files(data):
        assert f"|./{path}" in out, f"aria2c -S does not list {path}:\n{out}"


def test_swarm_reads_mktorrent_torrent(tmp_path, data):
    require_tool("common.metainfo")
    require_tool("mktorrent")
    require_tool("libtorrent")
    torrent = tmp_path / "mk.torrent"
    # -l 15: pieces of 2**15 bytes.
    run(["mktorrent", "-l", "15", "-a", TRACKER, "-o", torrent, data])
    meta = swarm_view(torrent)

    assert meta.info_hash.hex() == lt_view(torrent)[0]
    assert meta.piece_length == 32768
    assert meta.announce_tiers[0] == (TRACKER,)
    assert meta.name == data.name
    assert swarm_files(meta) == expected_files(data)
    assert meta.total_length == sum(expected_files(data).values())


@pytest.mark.parametrize("hybrid", [False, True], ids=["v1", "hybrid"])
def test_swarm_reads_libtorrent_torrent(tmp_path, data, hybrid):
    """libtorrent's v1 torrents, and its v1+v2 hybrids (extra keys in info, and pad files
    between files so that each starts on a piece boundary): swarm's info-hash is the v1
    one libtorrent reports."""
    require_tool("common.metainfo")
    require_tool("libtorrent")
    torrent = tmp_path / "lt.torrent"
    argv = lt_command("create", data, torrent, "--tracker", TRACKER, "--piece-length", 32768)
    out = run(argv + (["--hybrid"] if hybrid else [])).stdout
    meta = swarm_view(torrent)

    assert meta.info_hash.hex() == re.search(r"info_hash: ([0-9a-f]{40})", out).group(1)
    assert meta.name == data.name
    real_files = {k: v for k, v in swarm_files(meta).items() if "/.pad/" not in f"/{k}"}
    assert real_files == expected_files(data)

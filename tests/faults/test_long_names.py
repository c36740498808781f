"""File names longer than Linux takes (255 bytes a name): legal in a torrent made on Windows,
which counts UTF-16 units. They are stored cut as libtorrent cuts them, so the download works
and both clients put the data under the same names; names the disk takes are kept whole."""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
import sys

import aiohttp
import pytest

from common.bencoding import bencode
from common.metainfo import MetainfoError, disk_name, parse_metainfo, torrent_file_name
from peer.client import Client, ClientConfig
from peer.share import ShareError, share
from tests.conftest import require_tool
from tests.faults.conftest import make_file
from tracker.server import TrackerConfig, start_tracker

PIECE = 16384

# (name in the torrent, name on disk): for names over 255 bytes, what libtorrent 2.x makes
CUTS = [
    ("a" * 260 + ".mkv", "a" * 240 + ".mkv"),            # cut at 240 bytes, extension kept
    ("漢" * 100 + ".txt", "漢" * 80 + ".txt"),            # 304 bytes of CJK: whole characters
    ("f" * 238 + "é" * 12 + ".flac", "f" * 238 + "é" + ".flac"),   # é straddles byte 240
    ("b" * 300, "b" * 240),                              # no extension
    ("c" * 250 + ".verylongext", "c" * 240),             # an "extension" past 9 bytes is none
    ("e" * 239 + "." + "x" * 30, "e" * 239 + "."),       # the dot is the 240th byte
    ("n" * 5000 + ".bin", "n" * 240 + ".bin"),
]
KEPT = ["d" * 255, "g" * 245 + ".mkv", "漢" * 85, "short name.txt"]   # the disk takes these


@pytest.mark.parametrize("name, on_disk", CUTS, ids=range(len(CUTS)))
def test_names_too_long_for_the_disk_are_cut_as_libtorrent_cuts_them(name, on_disk):
    assert disk_name(name) == on_disk
    assert disk_name(on_disk) == on_disk      # a cut name stays as it is (seeding it again)


@pytest.mark.parametrize("name", KEPT, ids=range(len(KEPT)))
def test_names_the_disk_takes_are_kept_whole(name):
    """(libtorrent cuts from 240 bytes on; a user's 250-byte file must still be found)"""
    assert disk_name(name) == name


def test_the_cut_is_libtorrents_own():
    """The same names from libtorrent's parser, single-file and nested."""
    require_tool("libtorrent")
    import libtorrent as lt
    for name, on_disk in CUTS:
        for files in (None, [[name, name]]):
            info = torrent_info(name if files is None else "top", files)
            got = lt.torrent_info(bencode({"info": info})).layout().file_path(0)
            assert got == (on_disk if files is None else f"top/{on_disk}/{on_disk}")


def torrent_info(name: str, files: list[list[str]] | None, data: bytes = b"x" * 100) -> dict:
    info: dict = {"name": name, "piece length": PIECE,
                  "pieces": b"".join(hashlib.sha1(data[i:i + PIECE]).digest()
                                     for i in range(0, len(data), PIECE))}
    if files is None:
        info["length"] = len(data)
    else:
        share = len(data) // len(files)
        sizes = [share] * (len(files) - 1) + [len(data) - share * (len(files) - 1)]
        info["files"] = [{"length": n, "path": p} for n, p in zip(sizes, files)]
    return info


@pytest.mark.parametrize("layout", ["single file", "folders"])
async def test_a_torrent_with_long_names_downloads_under_the_cut_names(clients, tmp_path, layout):
    data = bytes(range(256)) * 700 + b"tail"
    long_file = "長い名前" * 30 + ".bin"                    # 364 bytes
    long_folder = "f" * 300
    if layout == "single file":
        info = torrent_info(long_file, None, data)
        rel = [disk_name(long_file)]
    else:
        info = torrent_info("album", [[long_folder, long_file], ["short.txt"]], data)
        rel = ["album", disk_name(long_folder), disk_name(long_file)]
    meta = parse_metainfo(bencode({"info": info}))
    seed_root, leech_root = tmp_path / "seed", tmp_path / "leech"
    if layout == "single file":
        seed_root.mkdir()
        seed_root.joinpath(*rel).write_bytes(data)
    else:
        half = len(data) // 2
        seed_root.joinpath(*rel[:-1]).mkdir(parents=True)
        seed_root.joinpath(*rel).write_bytes(data[:half])
        (seed_root / "album" / "short.txt").write_bytes(data[half:])
    seed = await clients()
    st = await seed.add_torrent(meta, seed_root)
    assert st.complete.is_set()                  # found and checked under the cut names
    leecher = await clients()
    lt = await leecher.add_torrent(meta, leech_root)
    lt.add_peers([("127.0.0.1", seed.port)], "test")
    await asyncio.wait_for(lt.complete.wait(), 30)
    assert leech_root.joinpath(*rel).read_bytes() == seed_root.joinpath(*rel).read_bytes()
    assert all(len(part.encode()) <= 255 for part in rel)


# (files of a torrent "pair" whose names meet on disk once cut, the error's end)
MEETINGS = [
    ([["x" * 260 + "1.bin"], ["x" * 260 + "2.bin"]],             # two files, one cut name
     f"meet at 'pair/{'x' * 240}.bin')"),
    ([["a" * 240], ["a" * 300, "f.txt"]],                         # a file, and a cut folder
     f"meet at 'pair/{'a' * 240}')"),
    ([["g" * 240 + ".mkv"], ["g" * 300 + ".mkv"]],               # a kept name, and a cut one
     f"meet at 'pair/{'g' * 240}.mkv')"),
]


@pytest.mark.parametrize("files, ending", MEETINGS, ids=range(len(MEETINGS)))
def test_names_that_meet_once_cut_are_refused_when_the_torrent_is_read(files, ending, tmp_path):
    raw = bencode({"info": torrent_info("pair", files)})
    with pytest.raises(MetainfoError, match="once names longer than 255 bytes are cut") as err:
        parse_metainfo(raw)
    assert str(err.value).endswith(ending)
    (tmp_path / "pair.torrent").write_bytes(raw)
    got = subprocess.run([sys.executable, "-m", "peer", "get", str(tmp_path / "pair.torrent"),
                          "-o", str(tmp_path / "out"), "--no-seed", "--no-lsd"],
                         capture_output=True, text=True, timeout=60)
    assert got.returncode == 2 and got.stderr.count("\n") == 1
    assert got.stderr.startswith("swarm-peer: error: ") and "Traceback" not in got.stderr
    assert not (tmp_path / "out").exists()


def test_a_deep_path_is_measured_as_stored():
    """14 folders of 300 bytes are 4,224 bytes in the torrent but 3,614 on disk: it fits.
    Twenty of them do not, even cut."""
    fits = parse_metainfo(bencode({"info": torrent_info("deep", [["d" * 300] * 14 + ["f.bin"]])}))
    assert len("/".join(fits.files[0].disk_path).encode()) == 5 + 14 * 241 + 5
    with pytest.raises(MetainfoError, match="longer than Linux allows"):
        parse_metainfo(bencode({"info": torrent_info("deep", [["d" * 300] * 20 + ["f.bin"]])}))


async def test_a_long_name_can_be_shared_and_its_torrent_file_is_cut(tmp_path):
    """A 249-byte file name, which the disk takes, is shared: NAME.torrent would be 257
    bytes, so that name is cut (and share's own temporary file has a short name)."""
    name = "a" * 245 + ".mkv"
    make_file(tmp_path / "data" / name, 50_000)
    client = Client(ClientConfig(host="127.0.0.1", port=0, lsd=False))
    await client.start()
    try:
        [shared] = await share([tmp_path / "data" / name], [], tmp_path / "torrents", client)
        assert shared.torrent_path == tmp_path / "torrents" / torrent_file_name(name)
        assert shared.torrent_path.name == "a" * 240 + ".torrent"
        assert client.torrents[shared.info_hash].complete.is_set()
        assert [p.name for p in (tmp_path / "torrents").iterdir()] == [shared.torrent_path.name]
    finally:
        await client.close()


async def test_the_trackers_files_serve_cut_names_by_the_torrents_names(tmp_path):
    """A web seed asks by the torrent's names; the data sits under the cut ones. A name too
    long for the disk and not there is a 404, not a 500."""
    long_folder, long_file = "f" * 300, "長い名前" * 30 + ".bin"
    stored = tmp_path / disk_name(long_folder) / disk_name(long_file)
    stored.parent.mkdir()
    stored.write_bytes(b"the bytes")
    tracker = await start_tracker(TrackerConfig(host="127.0.0.1", port=0, files_dir=tmp_path))
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://{tracker.base_url}/files/{long_folder}/{long_file}") as resp:
                assert (resp.status, await resp.read()) == (200, b"the bytes")
            async with http.get(f"http://{tracker.base_url}/files/{long_folder}/{'z' * 300}") as resp:
                assert resp.status == 404
    finally:
        await tracker.close()


async def test_two_items_whose_torrent_files_would_be_cut_to_one_name_are_not_shared(tmp_path):
    first, second = "a" * 246 + "1.mkv", "a" * 246 + "2.mkv"    # both a*240 + ".torrent"
    for name in (first, second):
        make_file(tmp_path / "data" / name, 1000)
    client = Client(ClientConfig(host="127.0.0.1", port=0, lsd=False))
    await client.start()
    try:
        with pytest.raises(ShareError) as err:
            await share([tmp_path / "data" / first, tmp_path / "data" / second], [],
                        tmp_path / "torrents", client)
        assert str(err.value) == (f"{tmp_path / 'data' / first} and {tmp_path / 'data' / second} "
                                  f"are both published as {'a' * 240 + '.torrent'!r}; rename one")
        assert not (tmp_path / "torrents").exists()
    finally:
        await client.close()

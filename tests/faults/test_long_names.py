"""File names longer than Linux takes (255 bytes a name): legal in a torrent made on Windows,
which counts UTF-16 units. They are cut as libtorrent cuts them, so the download works and
both clients put the data under the same names."""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from common.bencoding import bencode
from common.metainfo import parse_metainfo
from peer.storage import Storage, StorageError, disk_name
from tests.conftest import require_tool

PIECE = 16384

# (name in the torrent, name on disk): what libtorrent 2.0 made of each (file_path)
CUTS = [
    ("a" * 245 + ".mkv", "a" * 240 + ".mkv"),            # cut at 240 bytes, extension kept
    ("漢" * 100 + ".txt", "漢" * 80 + ".txt"),            # 304 bytes of CJK: whole characters
    ("f" * 238 + "é" * 3 + ".flac", "f" * 238 + "é" + ".flac"),   # é straddles byte 240
    ("b" * 300, "b" * 240),                              # no extension
    ("c" * 250 + ".verylongext", "c" * 240),             # an "extension" past 9 bytes is none
    ("e" * 239 + ".x", "e" * 239 + "."),                 # the dot is the 240th byte
    ("d" * 240, "d" * 240),
    ("short name.txt", "short name.txt"),
]


@pytest.mark.parametrize("name, on_disk", CUTS, ids=range(len(CUTS)))
def test_long_names_are_cut_as_libtorrent_cuts_them(name, on_disk):
    assert disk_name(name) == on_disk
    assert disk_name(on_disk) == on_disk      # a cut name stays as it is (seeding it again)
    assert len(on_disk.encode()) <= 255


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


async def test_two_names_cut_to_one_are_refused_before_anything_is_written(tmp_path):
    first, second = "x" * 250 + "1.bin", "x" * 250 + "2.bin"     # both cut to x*240 + ".bin"
    meta = parse_metainfo(bencode({"info": torrent_info("pair", [[first], [second]])}))
    st = Storage(meta, tmp_path)
    with pytest.raises(StorageError) as err:
        await st.open()
    assert str(err.value) == (f"{'pair/' + first!r} and {'pair/' + second!r} are both "
                              f"{tmp_path / 'pair' / ('x' * 240 + '.bin')} on disk: names longer "
                              f"than 240 bytes are cut")
    assert list(tmp_path.iterdir()) == []

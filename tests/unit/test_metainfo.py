"""Metainfo parsing, validation and creation.

Torrents in the first tests are written out byte by byte, and their info-hash
is computed here with hashlib over the info bytes as written, so the parser
is checked against independent expectations rather than against our encoder.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time

import pytest

from common.bencoding import bdecode, bencode
from common.metainfo import (
    CREATED_BY,
    FileEntry,
    Metainfo,
    MetainfoError,
    create_metainfo,
    default_piece_length,
    load_metainfo,
    parse_metainfo,
)

KIB = 1024
MIB = 1024 * KIB
HASHES3 = b"A" * 20 + b"B" * 20 + b"C" * 20
URL = "http://tracker.test:6969/announce"


def bstr(raw: bytes | str) -> bytes:
    """A bencoded string, written by hand."""
    if isinstance(raw, str):
        raw = raw.encode()
    return str(len(raw)).encode() + b":" + raw


SINGLE_INFO = (
    b"d6:lengthi40000e4:name8:file.bin12:piece lengthi16384e6:pieces60:" + HASHES3 + b"e"
)
SINGLE = b"d8:announce" + bstr(URL) + b"4:info" + SINGLE_INFO + b"e"

MULTI_INFO = (
    b"d5:filesl"
    b"d6:lengthi5e4:pathl5:a.txtee"
    b"d6:lengthi0e4:pathl3:sub5:b.binee"
    b"d6:lengthi7e4:pathl3:sub1:cee"
    b"e4:name3:dir12:piece lengthi4e6:pieces60:" + HASHES3 + b"e"
)
MULTI = (
    b"d13:announce-listll" + bstr("http://a/announce") + bstr("http://b/announce")
    + b"el" + bstr("udp://c:80") + b"ee4:info" + MULTI_INFO + b"e"
)


# --------------------------------------------------------------------------- parsing


def test_single_file_torrent():
    meta = parse_metainfo(SINGLE)
    assert meta.info_hash == hashlib.sha1(SINGLE_INFO).digest()
    assert meta.info_hash_hex == hashlib.sha1(SINGLE_INFO).hexdigest()
    assert meta.raw_info == SINGLE_INFO
    assert meta.name == "file.bin"
    assert meta.piece_length == 16384
    assert meta.piece_hashes == (b"A" * 20, b"B" * 20, b"C" * 20)
    assert meta.files == (FileEntry(path=("file.bin",), length=40000, offset=0),)
    assert meta.total_length == 40000
    assert meta.multi_file is False
    assert meta.announce_tiers == ((URL,),)
    assert meta.web_seeds == ()
    assert meta.private is False
    assert meta.num_pieces == 3
    assert [meta.piece_size(i) for i in range(3)] == [16384, 16384, 40000 - 2 * 16384]


def test_multi_file_torrent():
    meta = parse_metainfo(MULTI)
    assert meta.info_hash == hashlib.sha1(MULTI_INFO).digest()
    assert meta.name == "dir"
    assert meta.multi_file is True
    assert meta.files == (
        FileEntry(path=("dir", "a.txt"), length=5, offset=0),
        FileEntry(path=("dir", "sub", "b.bin"), length=0, offset=5),
        FileEntry(path=("dir", "sub", "c"), length=7, offset=5),
    )
    assert meta.total_length == 12
    assert [meta.piece_size(i) for i in range(3)] == [4, 4, 4]
    assert meta.announce_tiers == (("http://a/announce", "http://b/announce"), ("udp://c:80",))


def test_piece_size_out_of_range():
    meta = parse_metainfo(SINGLE)
    for index in (-1, 3):
        with pytest.raises(IndexError):
            meta.piece_size(index)


def test_metainfo_is_frozen():
    meta = parse_metainfo(SINGLE)
    with pytest.raises(dataclasses.FrozenInstanceError):
        meta.name = "other"  # type: ignore[misc]


def test_info_hash_covers_unknown_info_keys():
    info = (
        b"d6:lengthi40000e4:name8:file.bin12:piece lengthi16384e6:pieces60:" + HASHES3
        + b"6:source5:swarme"
    )
    meta = parse_metainfo(b"d4:info" + info + b"e")
    assert meta.info_hash == hashlib.sha1(info).digest()
    assert meta.announce_tiers == ()


def test_unsorted_outer_keys_are_tolerated_and_hash_uses_raw_info():
    data = b"d4:info" + SINGLE_INFO + b"8:announce" + bstr(URL) + b"7:comment2:hie"
    meta = parse_metainfo(data)
    assert meta.info_hash == hashlib.sha1(SINGLE_INFO).digest()
    assert meta.announce_tiers == ((URL,),)


def test_unsorted_info_keys_are_rejected():
    info = b"d4:name8:file.bin6:lengthi40000e12:piece lengthi16384e6:pieces60:" + HASHES3 + b"e"
    with pytest.raises(MetainfoError, match="'info' is not canonical bencoding: .*out of order"):
        parse_metainfo(b"d4:info" + info + b"e")


def test_name_and_path_prefer_utf8_variants():
    info = (
        b"d5:filesld6:lengthi3e4:pathl" + bstr(b"\xe9t\xe9") + b"e10:path.utf-8l"
        + bstr("été") + b"eee4:name" + bstr(b"caf\xe9") + b"10:name.utf-8" + bstr("café")
        + b"12:piece lengthi4e6:pieces20:" + b"X" * 20 + b"e"
    )
    meta = parse_metainfo(b"d4:info" + info + b"e")
    assert meta.name == "café"
    assert meta.files[0].path == ("café", "été")


def test_invalid_utf8_variant_falls_back_to_plain_name():
    info = (
        b"d6:lengthi1e4:name" + bstr("plain") + b"10:name.utf-8" + bstr(b"\xff")
        + b"12:piece lengthi4e6:pieces20:" + b"X" * 20 + b"e"
    )
    assert parse_metainfo(b"d4:info" + info + b"e").name == "plain"


def torrent(info: dict | None = None, **top: object) -> bytes:
    """A valid single-file torrent with some keys replaced; None deletes a key."""
    base_info: dict = {"name": "file.bin", "piece length": 16384, "length": 40000, "pieces": HASHES3}
    base_top: dict = {"announce": URL, "info": base_info}
    for key, value in (info or {}).items():
        base_info.pop(key, None) if value is None else base_info.__setitem__(key, value)
    for key, value in top.items():
        key = key.replace("_", "-")
        base_top.pop(key, None) if value is None else base_top.__setitem__(key, value)
    return bencode(base_top)


def multi(files: list, **info: object) -> bytes:
    total = sum(f["length"] for f in files if isinstance(f, dict) and isinstance(f.get("length"), int))
    pieces = b"P" * 20 * max(1, -(-total // 4))
    return torrent({"length": None, "files": files, "piece length": 4, "pieces": pieces, **info})


def test_announce_list_tiers():
    data = torrent(
        announce_list=[["http://a/x", "http://b/x"], [], ["udp://c:1", ""], [" http://d/x "]]
    )
    assert parse_metainfo(data).announce_tiers == (
        ("http://a/x", "http://b/x"),
        ("udp://c:1",),
        ("http://d/x",),
    )


def test_empty_announce_list_falls_back_to_announce():
    assert parse_metainfo(torrent(announce_list=[[], [""]])).announce_tiers == ((URL,),)


def test_no_trackers():
    assert parse_metainfo(torrent(announce=None)).announce_tiers == ()
    assert parse_metainfo(torrent(announce="")).announce_tiers == ()


@pytest.mark.parametrize(
    "url_list, expected",
    [
        ("http://seed/a", ("http://seed/a",)),
        (["http://seed/a", "", "ftp://seed/b"], ("http://seed/a", "ftp://seed/b")),
        ([], ()),
        ("", ()),
    ],
)
def test_web_seeds(url_list, expected):
    assert parse_metainfo(torrent(url_list=url_list)).web_seeds == expected


@pytest.mark.parametrize("flag, expected", [(1, True), (0, False), (None, False)])
def test_private_flag(flag, expected):
    assert parse_metainfo(torrent({"private": flag})).private is expected


def test_zero_length_files_allowed():
    files = [{"length": 0, "path": ["empty"]}, {"length": 3, "path": ["x"]}]
    meta = parse_metainfo(multi(files))
    assert [(f.path, f.length, f.offset) for f in meta.files] == [
        (("file.bin", "empty"), 0, 0),
        (("file.bin", "x"), 3, 0),
    ]


def test_any_positive_piece_length_accepted():
    meta = parse_metainfo(torrent({"piece length": 30000, "pieces": b"Q" * 40}))
    assert meta.piece_length == 30000
    assert [meta.piece_size(0), meta.piece_size(1)] == [30000, 10000]


BAD_TORRENTS = [
    (b"", "not a valid bencoded torrent: truncated input"),
    (b"hello", "not a valid bencoded torrent: top-level value must be a dictionary"),
    (b"le", "not a valid bencoded torrent: top-level value must be a dictionary"),
    (SINGLE + b"x", "not a valid bencoded torrent: trailing data at offset"),
    (SINGLE[:-10], "not a valid bencoded torrent"),
    (b"d8:announce1:xe", "missing key 'info'"),
    (bencode({"announce": URL, "x": 1}), "missing key 'info'"),
    (bencode({"info": [1]}), "'info' must be a dictionary"),
    (bencode({"info": "text"}), "'info' must be a dictionary"),
    (torrent({"name": None}), "info: missing key 'name'"),
    (torrent({"name": 5}), "info.name must be a byte string"),
    (torrent({"name": b"\xff\xfe"}), "info.name is not valid UTF-8"),
    (torrent({"name": ""}), "info.name: path component '' not allowed"),
    (torrent({"name": "."}), "info.name: path component '.' not allowed"),
    (torrent({"name": ".."}), "info.name: path component '..' not allowed"),
    (torrent({"name": "a/b"}), "info.name: path component 'a/b' contains '/'"),
    (torrent({"name": "/etc"}), "info.name: path component '/etc' contains '/'"),
    (torrent({"name": "a\\b"}), "contains '\\\\'"),
    (torrent({"name": "a\0b"}), "info.name: path component 'a\\x00b' contains"),
    (torrent({"name": "C:"}), "info.name: path component 'C:' looks like a drive letter"),
    (torrent({"name": "c:evil"}), "looks like a drive letter"),
    (torrent({"piece length": None}), "info: missing key 'piece length'"),
    (torrent({"piece length": "16384"}), "info.piece length must be an integer"),
    (torrent({"piece length": 0}), "info.piece length must be positive, got 0"),
    (torrent({"piece length": -16384}), "info.piece length must be positive, got -16384"),
    (torrent({"pieces": None}), "info: missing key 'pieces'"),
    (torrent({"pieces": None, "meta version": 2}), "a BitTorrent v2-only torrent (BEP 52): swarm reads"),
    (torrent({"pieces": 60}), "info.pieces must be a byte string"),
    (torrent({"pieces": b"x" * 59}), "info.pieces length 59 is not a multiple of 20"),
    (torrent({"pieces": b"x" * 40}), "info.pieces has 2 hashes but 40000 bytes in pieces of 16384 need 3"),
    (torrent({"pieces": b"x" * 80}), "info.pieces has 4 hashes but"),
    (torrent({"pieces": b""}), "info.pieces has 0 hashes but"),
    (torrent({"length": None}), "exactly one of 'length' and 'files', has neither"),
    (torrent({"files": [{"length": 1, "path": ["a"]}]}), "exactly one of 'length' and 'files', has both"),
    (torrent({"length": -1}), "info.length must not be negative, got -1"),
    (torrent({"length": "40000"}), "info.length must be an integer"),
    (torrent({"length": 0, "pieces": b""}), "torrent has no data (total length is 0)"),
    (torrent({"private": "yes"}), "info.private must be an integer"),
    (multi({"a": 1}), "info.files must be a list"),
    (multi([]), "info.files is empty"),
    (multi([[1]]), "info.files[0] must be a dictionary"),
    (multi([{"path": ["a"]}]), "info.files[0]: missing key 'length'"),
    (multi([{"length": 1, "path": ["a"]}, {"length": -4, "path": ["b"]}]), "info.files[1].length must not be negative, got -4"),
    (multi([{"length": b"1", "path": ["a"]}]), "info.files[0].length must be an integer"),
    (multi([{"length": 1}]), "info.files[0]: missing key 'path'"),
    (multi([{"length": 1, "path": "a"}]), "info.files[0].path must be a list"),
    (multi([{"length": 1, "path": []}]), "info.files[0].path is empty"),
    (multi([{"length": 1, "path": ["a", 7]}]), "info.files[0].path[1] must be a byte string"),
    (multi([{"length": 1, "path": ["a", b"\xff"]}]), "info.files[0].path[1] is not valid UTF-8"),
    (multi([{"length": 1, "path": ["a", ""]}]), "info.files[0].path[1]: path component '' not allowed"),
    (multi([{"length": 1, "path": [".", "a"]}]), "info.files[0].path[0]: path component '.' not allowed"),
    (multi([{"length": 1, "path": ["..", "etc", "passwd"]}]), "info.files[0].path[0]: path component '..' not allowed"),
    (multi([{"length": 1, "path": ["a/../../b"]}]), "contains '/'"),
    (multi([{"length": 1, "path": ["/etc/passwd"]}]), "contains '/'"),
    (multi([{"length": 1, "path": ["..\\windows"]}]), "contains '\\\\'"),
    (multi([{"length": 1, "path": ["D:\\x"]}]), "contains"),
    (multi([{"length": 1, "path": ["D:x"]}]), "info.files[0].path[0]: path component 'D:x' looks like a drive letter"),
    (multi([{"length": 1, "path": ["nul\0.txt"]}]), "contains '\\x00'"),
    (multi([{"length": 1, "path": ["a", "b"]}, {"length": 2, "path": ["a", "b"]}]), "duplicate file path 'file.bin/a/b'"),
    (multi([{"length": 1, "path": ["a"]}, {"length": 2, "path": ["a", "b"]}]), "file 'file.bin/a' is also a folder of 'file.bin/a/b'"),
    (multi([{"length": 1, "path": ["a", "b", "c"]}, {"length": 2, "path": ["a", "b"]}]), "file 'file.bin/a/b' is also a folder of 'file.bin/a/b/c'"),
    (multi([{"length": 0, "path": ["a"]}]), "torrent has no data"),
    (torrent(announce=5), "announce must be a string"),
    (torrent(announce=b"\xff"), "announce is not valid UTF-8"),
    (torrent(announce_list="http://a/x"), "announce-list must be a list of lists"),
    (torrent(announce_list=["http://a/x"]), "announce-list[0] must be a list"),
    (torrent(announce_list=[["http://a/x"], ["http://b/x", 3]]), "announce-list[1][1] must be a string"),
    (torrent(url_list=7), "url-list must be a string or a list of strings"),
    (torrent(url_list=["http://a/", ["x"]]), "url-list[1] must be a string"),
]


@pytest.mark.parametrize("data, message", BAD_TORRENTS)
def test_rejects_bad_torrents(data, message):
    with pytest.raises(MetainfoError) as err:
        parse_metainfo(data)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_error_type_is_a_value_error():
    assert issubclass(MetainfoError, ValueError)


# --------------------------------------------------------------------------- loading


def test_load_metainfo(tmp_path):
    path = tmp_path / "a.torrent"
    path.write_bytes(SINGLE)
    assert load_metainfo(path) == parse_metainfo(SINGLE)
    assert load_metainfo(str(path)).info_hash == hashlib.sha1(SINGLE_INFO).digest()


def test_load_metainfo_missing_file(tmp_path):
    path = tmp_path / "nope.torrent"
    with pytest.raises(MetainfoError) as err:
        load_metainfo(path)
    assert str(err.value) == f"{path}: No such file or directory"


def test_load_metainfo_directory(tmp_path):
    with pytest.raises(MetainfoError, match="^" + str(tmp_path) + ": "):
        load_metainfo(tmp_path)


def test_load_metainfo_prefixes_parse_errors(tmp_path):
    path = tmp_path / "bad.torrent"
    path.write_bytes(torrent({"pieces": b"x" * 59}))
    with pytest.raises(MetainfoError) as err:
        load_metainfo(path)
    assert str(err.value) == f"{path}: info.pieces length 59 is not a multiple of 20"


# --------------------------------------------------------------------------- piece length


@pytest.mark.parametrize(
    "total, expected",
    [
        (0, 64 * KIB),
        (1, 64 * KIB),
        (32 * MIB, 64 * KIB),
        (2000 * 64 * KIB, 64 * KIB),
        (2000 * 64 * KIB + 1, 128 * KIB),
        (700 * MIB, 512 * KIB),
        (1024 * MIB, 1 * MIB),
        (40 * 1024 * MIB, 16 * MIB),
        (1024 * 1024 * MIB, 16 * MIB),
    ],
)
def test_default_piece_length(total, expected):
    assert default_piece_length(total) == expected


def test_default_piece_length_gives_1000_to_2000_pieces():
    for total in (130 * MIB, 200 * MIB, 4_700_000_000, 20 * 1024 * MIB, 31 * 1024 * MIB):
        length = default_piece_length(total)
        assert length & (length - 1) == 0
        assert 1000 <= -(-total // length) <= 2000, total


# --------------------------------------------------------------------------- creating


def expected_hashes(data: bytes, piece_length: int) -> tuple[bytes, ...]:
    return tuple(
        hashlib.sha1(data[i : i + piece_length]).digest() for i in range(0, len(data), piece_length)
    )


def test_create_single_file_exact_bytes(tmp_path):
    content = b"hello world " * 3000
    (tmp_path / "hello.txt").write_bytes(content)
    data = create_metainfo(
        tmp_path / "hello.txt", ["http://t/announce"], piece_length=16384, creation_date=1700000000
    )
    info = (
        b"d6:lengthi36000e4:name9:hello.txt12:piece lengthi16384e6:pieces60:"
        + b"".join(expected_hashes(content, 16384)) + b"e"
    )
    assert data == (
        b"d8:announce17:http://t/announce10:created by9:swarm/0.1"
        b"13:creation datei1700000000e4:info" + info + b"e"
    )
    assert parse_metainfo(data).info_hash == hashlib.sha1(info).digest()


def write_tree(root, files: dict[str, bytes]) -> None:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)


def test_create_folder_round_trip(tmp_path):
    files = {
        "b.bin": os.urandom(10_000),
        "a/z.bin": os.urandom(40_000),
        "a/empty": b"",
        "a-b.txt": b"x" * 16384,
        "c/d/e/deep": os.urandom(5),
        "A.txt": b"capital",
    }
    root = tmp_path / "share"
    write_tree(root, files)
    (root / "emptydir").mkdir()
    data = create_metainfo(root, ["http://t/announce"], piece_length=16384)
    meta = parse_metainfo(data)

    order = ["A.txt", "a/empty", "a/z.bin", "a-b.txt", "b.bin", "c/d/e/deep"]
    assert [f.path for f in meta.files] == [("share", *rel.split("/")) for rel in order]
    offsets = [sum(len(files[r]) for r in order[:i]) for i in range(len(order))]
    assert [f.offset for f in meta.files] == offsets
    assert [f.length for f in meta.files] == [len(files[r]) for r in order]
    joined = b"".join(files[r] for r in order)
    assert meta.total_length == len(joined)
    assert meta.piece_hashes == expected_hashes(joined, 16384)
    assert meta.multi_file is True
    assert meta.name == "share"


def test_create_uses_default_piece_length(tmp_path):
    (tmp_path / "f").write_bytes(b"z" * 100_000)
    meta = parse_metainfo(create_metainfo(tmp_path / "f", []))
    assert meta.piece_length == 64 * KIB
    assert meta.piece_hashes == expected_hashes(b"z" * 100_000, 64 * KIB)


def test_create_odd_piece_length(tmp_path):
    write_tree(tmp_path / "d", {"x": b"1" * 7, "y": b"2" * 6})
    meta = parse_metainfo(create_metainfo(tmp_path / "d", [], piece_length=5))
    assert meta.piece_hashes == expected_hashes(b"1" * 7 + b"2" * 6, 5)
    assert meta.num_pieces == 3


def test_create_with_all_options(tmp_path):
    (tmp_path / "f").write_bytes(b"data")
    data = create_metainfo(
        tmp_path / "f",
        ["http://a/announce", "udp://b:6969", "http://c/announce"],
        web_seeds=["http://seed/f"],
        comment="a comment",
        private=True,
    )
    top = bdecode(data)
    assert top[b"announce"] == b"http://a/announce"
    assert top[b"announce-list"] == [[b"http://a/announce"], [b"udp://b:6969"], [b"http://c/announce"]]
    assert top[b"url-list"] == [b"http://seed/f"]
    assert top[b"comment"] == b"a comment"
    assert top[b"created by"] == CREATED_BY.encode()
    assert abs(top[b"creation date"] - time.time()) < 60
    assert top[b"info"][b"private"] == 1
    meta = parse_metainfo(data)
    assert meta.private is True
    assert meta.announce_tiers == (("http://a/announce",), ("udp://b:6969",), ("http://c/announce",))
    assert meta.web_seeds == ("http://seed/f",)


def test_create_single_tracker_has_no_announce_list(tmp_path):
    (tmp_path / "f").write_bytes(b"data")
    top = bdecode(create_metainfo(tmp_path / "f", ["http://a/announce"]))
    assert top[b"announce"] == b"http://a/announce"
    assert b"announce-list" not in top
    assert b"url-list" not in top and b"comment" not in top
    assert b"private" not in top[b"info"]


def test_create_without_trackers(tmp_path):
    (tmp_path / "f").write_bytes(b"data")
    data = create_metainfo(tmp_path / "f", [])
    assert b"announce" not in bdecode(data)
    assert parse_metainfo(data).announce_tiers == ()


def test_create_refuses_empty_folder(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    with pytest.raises(MetainfoError, match="folder contains no files"):
        create_metainfo(tmp_path / "d", [])


def test_create_refuses_zero_total_size(tmp_path):
    write_tree(tmp_path / "d", {"a": b"", "b/c": b""})
    with pytest.raises(MetainfoError, match=r"nothing to share \(total size is 0\)"):
        create_metainfo(tmp_path / "d", [])


def test_create_refuses_missing_path(tmp_path):
    with pytest.raises(MetainfoError, match="no such file or directory"):
        create_metainfo(tmp_path / "missing", [])


def test_create_refuses_symlinks(tmp_path):
    write_tree(tmp_path / "d", {"a": b"1"})
    (tmp_path / "d" / "link").symlink_to(tmp_path / "d" / "a")
    with pytest.raises(MetainfoError, match="link: refusing to follow a symlink"):
        create_metainfo(tmp_path / "d", [])
    (tmp_path / "rootlink").symlink_to(tmp_path / "d" / "a")
    with pytest.raises(MetainfoError, match="rootlink: refusing to follow a symlink"):
        create_metainfo(tmp_path / "rootlink", [])


def test_create_refuses_unsafe_file_names(tmp_path):
    write_tree(tmp_path / "d", {"back\\slash": b"1"})
    with pytest.raises(MetainfoError, match="contains"):
        create_metainfo(tmp_path / "d", [])


@pytest.mark.parametrize("piece_length", [0, -1, True, 1.5])
def test_create_refuses_bad_piece_length(tmp_path, piece_length):
    (tmp_path / "f").write_bytes(b"data")
    with pytest.raises(MetainfoError, match="piece length must be a positive integer"):
        create_metainfo(tmp_path / "f", [], piece_length=piece_length)


@pytest.mark.parametrize("trackers, web_seeds", [([""], []), (["  "], []), ([], [""])])
def test_create_refuses_empty_urls(tmp_path, trackers, web_seeds):
    (tmp_path / "f").write_bytes(b"data")
    with pytest.raises(MetainfoError, match="URL must be a non-empty string"):
        create_metainfo(tmp_path / "f", trackers, web_seeds=web_seeds)


def test_metainfo_equality_is_by_value():
    assert parse_metainfo(SINGLE) == parse_metainfo(bytes(SINGLE))
    assert isinstance(parse_metainfo(SINGLE), Metainfo)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read anything")
def test_create_reports_unreadable_files(tmp_path):
    write_tree(tmp_path / "d", {"secret": b"1"})
    (tmp_path / "d" / "secret").chmod(0)
    with pytest.raises(MetainfoError, match="secret: Permission denied"):
        create_metainfo(tmp_path / "d", [])


def test_create_turns_os_errors_into_metainfo_errors(tmp_path):
    with pytest.raises(MetainfoError, match="File name too long"):
        create_metainfo(tmp_path / ("x" * 300), [])

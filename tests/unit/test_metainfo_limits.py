"""Limits that keep hostile .torrent files cheap to refuse, and that keep real ones accepted.

Padding files of libtorrent's hybrid torrents may share a path; deep or long paths are
refused with one line instead of costing quadratic time or failing at download time;
a decode builds a bounded number of values, however small each one is in the input.
"""

from __future__ import annotations

import hashlib

import pytest
from interop_clients import require_tool

from common import metainfo
from common.bencoding import (
    DEFAULT_MAX_SIZE,
    DEFAULT_MAX_VALUES,
    BencodeError,
    KeyOrderError,
    bdecode,
    bdecode_with_spans,
    bencode,
)
from common.metainfo import MAX_TORRENT_SIZE, MetainfoError, load_metainfo, parse_metainfo


def multi(files: list[dict], name: str = "t") -> bytes:
    total = sum(f["length"] for f in files)
    info = {"name": name, "piece length": 4, "pieces": b"P" * 20 * -(-total // 4), "files": files}
    return bencode({"info": info})


def error_of(data: bytes) -> str:
    with pytest.raises(MetainfoError) as err:
        parse_metainfo(data)
    assert "\n" not in str(err.value)
    return str(err.value)


# --------------------------------------------------------------------------- BEP 47 padding


def test_libtorrent_hybrid_torrent_with_equal_size_pads(tmp_path):
    require_tool("libtorrent")
    import libtorrent as lt

    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "a").write_bytes(b"1")
    (folder / "b").write_bytes(b"2")
    (folder / "c").write_bytes(bytes(range(256)) * 200)
    creator = lt.create_torrent(lt.list_files(str(folder)), 0, 0)  # flags 0: v1+v2 hybrid
    lt.set_piece_hashes(creator, str(tmp_path))
    data = lt.bencode(creator.generate())
    (tmp_path / "x.torrent").write_bytes(data)

    meta = load_metainfo(tmp_path / "x.torrent")
    pads = [f.path for f in meta.files if f.pad]
    assert len(pads) != len(set(pads)), "libtorrent no longer writes two equal pads here"
    assert [(f.path, f.length) for f in meta.files if not f.pad] == [
        (("d", "a"), 1), (("d", "b"), 1), (("d", "c"), 51200)
    ]
    assert meta.info_hash.hex() == str(lt.torrent_info(data).info_hashes().v1)


def test_pads_may_share_a_path_with_each_other_and_with_files():
    pad = {"attr": "p", "length": 3, "path": [".pad", "3"]}
    meta = parse_metainfo(multi([
        {"length": 1, "path": ["a"]}, pad,
        {"length": 1, "path": ["b"]}, pad,
        {"length": 1, "path": [".pad"]},       # a real file where the pads' folder would be
        {"attr": "p", "length": 3, "path": ["b", "3"]},  # a pad "inside" a real file
        {"length": 4, "path": ["c"]},
    ]))
    assert [f.offset for f in meta.files] == [0, 1, 4, 5, 8, 9, 12]
    assert [f.pad for f in meta.files] == [False, True, False, True, False, True, False]
    assert meta.total_length == 16


def test_real_files_still_collide_around_pads():
    pad = {"attr": "p", "length": 3, "path": [".pad", "3"]}
    same = {"length": 1, "path": ["a"]}
    assert error_of(multi([same, pad, same])) == "duplicate file path 't/a'"
    nested = {"length": 1, "path": ["a", "b"]}
    assert error_of(multi([nested, pad, same])) == "file 't/a' is also a folder of 't/a/b'"
    assert error_of(multi([same, pad, nested])) == "file 't/a' is also a folder of 't/a/b'"


# --------------------------------------------------------------------------- deep and long paths


@pytest.mark.timeout(30)  # the quadratic check took 17 s here
def test_very_deep_path_is_refused_at_once():
    data = multi([{"length": 1, "path": ["a"] * 80_000}])
    assert len(data) < 250_000
    assert error_of(data) == (
        "info.files[0].path has 80000 components, more than the 255 swarm accepts"
    )


def test_path_depth_limit_is_255_components():
    deep = parse_metainfo(multi([{"length": 1, "path": ["a"] * 254 + ["f"]}]))
    assert len(deep.files[0].path) == 256  # the torrent's name, then 255 components
    assert error_of(multi([{"length": 1, "path": ["a"] * 256}])) == (
        "info.files[0].path has 256 components, more than the 255 swarm accepts"
    )


def test_file_that_is_a_folder_of_deep_files():
    files = [{"length": 1, "path": ["a"] * 254 + [str(i)]} for i in range(200)]
    files.append({"length": 1, "path": ["a"] * 100})
    assert error_of(multi(files)) == (
        f"file {'/'.join(['t'] + ['a'] * 100)!r} is also a folder of "
        f"{'/'.join(['t'] + ['a'] * 254 + ['0'])!r}"
    )


def test_path_longer_than_path_max_is_refused():
    # "t" + 16 components of "/" + 255 bytes = 4097 bytes; one byte less still fits.
    long_parts = ["x" * 255] * 15
    fits = parse_metainfo(multi([{"length": 1, "path": [*long_parts, "y" * 253]}]))
    assert len("/".join(fits.files[0].path)) == 4095
    assert error_of(multi([{"length": 1, "path": [*long_parts, "y" * 254]}])) == (
        "info.files[0].path: file path of 4096 bytes is longer than Linux allows "
        "(PATH_MAX 4096, final NUL included)"
    )
    wide = ["é" * 127] * 16  # counted in UTF-8 bytes (254 a part), not characters
    assert parse_metainfo(multi([{"length": 1, "path": [*wide, "y" * 13]}]))
    assert error_of(multi([{"length": 1, "path": [*wide, "y" * 14]}])) == (
        "info.files[0].path: file path of 4096 bytes is longer than Linux allows "
        "(PATH_MAX 4096, final NUL included)"
    )
    # a name too long for the disk counts as stored, cut (tests/faults/test_long_names.py)
    name = "é" * 2048
    single = bencode({"info": {"name": name, "piece length": 4, "length": 1, "pieces": b"P" * 20}})
    assert parse_metainfo(single).files[0].disk_path == ("é" * 120,)


def test_components_longer_than_255_bytes_are_still_accepted():
    """Windows and macOS can hold them; refusing here would refuse seeding them too."""
    meta = parse_metainfo(multi([{"length": 1, "path": ["n" * 300]}], name="é" * 200))
    assert meta.files[0].path == ("é" * 200, "n" * 300)


# --------------------------------------------------------------------------- value count


def test_max_values_counts_every_value():
    assert bdecode(b"l" + b"le" * 9 + b"e", max_values=10) == [[]] * 9
    with pytest.raises(BencodeError) as err:
        bdecode(b"l" + b"le" * 10 + b"e", max_values=10)
    assert str(err.value) == "more than max_values 10 values at offset 19"
    assert bdecode(b"d1:ai1ee", max_values=3) == {b"a": 1}  # dict, key, value
    with pytest.raises(BencodeError, match="more than max_values 2 values at offset 4"):
        bdecode(b"d1:ai1ee", max_values=2)


def test_default_max_values_fits_real_torrents_and_binds_before_max_size():
    # A torrent of 1M one-component files has ~6M values and fits in MAX_TORRENT_SIZE;
    # 2 input bytes ("le", "0:") are the smallest value, so a larger cap would bind nothing.
    assert 6_000_000 < DEFAULT_MAX_VALUES < min(DEFAULT_MAX_SIZE, MAX_TORRENT_SIZE) // 2


def test_value_bomb_torrent_is_one_line_error(monkeypatch):
    calls = []

    def decode(*args, **kwargs):
        calls.append(kwargs)
        return bdecode_with_spans(*args, **kwargs, max_values=1000)

    monkeypatch.setattr(metainfo, "bdecode_with_spans", decode)
    data = b"d4:infol" + b"le" * 2000 + b"ee"
    assert error_of(data) == (
        "not a valid bencoded torrent: more than max_values 1000 values at offset 2002"
    )
    assert len(calls) == 1  # not decoded a second time with lenient key order


def test_only_key_order_errors_get_a_lenient_second_decode(monkeypatch):
    calls = []

    def decode(*args, **kwargs):
        calls.append(kwargs.get("strict_order", True))
        return bdecode_with_spans(*args, **kwargs)

    monkeypatch.setattr(metainfo, "bdecode_with_spans", decode)
    info = bencode({"name": "f", "piece length": 4, "length": 1, "pieces": b"P" * 20})
    meta = parse_metainfo(b"d4:info" + info + b"7:comment1:xe")  # outer keys out of order
    assert meta.info_hash == hashlib.sha1(info).digest()
    assert calls == [True, False]
    calls.clear()
    assert error_of(b"d4:info" + info) == (
        f"not a valid bencoded torrent: truncated input: unexpected end at offset {len(info) + 7}"
    )
    assert calls == [True]


def test_key_order_error_is_a_bencode_error():
    with pytest.raises(KeyOrderError, match="out of order"):
        bdecode(b"d1:bi1e1:ai2ee")
    with pytest.raises(BencodeError) as err:
        bdecode(b"d1:ai1e1:ai2ee")
    assert not isinstance(err.value, KeyOrderError)

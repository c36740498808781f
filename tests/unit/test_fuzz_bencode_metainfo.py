"""Property and fuzz tests: hostile input only ever raises BencodeError / MetainfoError.

The number of generated cases per test is written to the terminal at the end
of the module (visible in `pytest -q` output without `-s`).
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.bencoding import BencodeError, bdecode, bdecode_with_spans, bencode
from common.metainfo import MetainfoError, parse_metainfo

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Generating nested values costs more than checking them: fewer, still varied, examples.
FUZZ_NESTED = settings(FUZZ, max_examples=250)
CASES: Counter[str] = Counter()
ACCEPTED: Counter[str] = Counter()  # how many fuzzed torrents were valid (the rest raised)


@pytest.fixture(scope="module", autouse=True)
def report_case_counts(request):
    yield
    summary = ", ".join(f"{name} {count}" for name, count in sorted(CASES.items()))
    line = (
        f"fuzz cases run: {sum(CASES.values())} ({summary}); "
        f"{ACCEPTED['torrents']} of the metainfo cases were valid torrents"
    )
    plugins = request.config.pluginmanager
    reporter = plugins.get_plugin("terminalreporter")
    capture = plugins.get_plugin("capturemanager")
    if reporter is None or capture is None:
        print(line)
        return
    with capture.global_and_fixture_disabled():  # output capture would swallow the line
        reporter.write_line("")
        reporter.write_line(line)


# --------------------------------------------------------------------------- strategies

decoded_values = st.recursive(
    st.integers() | st.binary(max_size=40),
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.binary(max_size=8), children, max_size=5),
    max_leaves=12,
)


def valid_torrent_dict(multi_file: bool) -> dict:
    info: dict = {"name": "fuzz", "piece length": 8}
    if multi_file:
        info["files"] = [
            {"length": 5, "path": ["a", "b.txt"]},
            {"length": 0, "path": ["empty"]},
            {"length": 12, "path": ["c"]},
        ]
        total = 17
    else:
        info["length"] = total = 20
    info["pieces"] = bytes(range(20)) * -(-total // 8)
    return {
        "announce": "http://127.0.0.1:6969/announce",
        "announce-list": [["http://127.0.0.1:6969/announce"], ["udp://127.0.0.1:6969"]],
        "url-list": ["http://127.0.0.1:8000/"],
        "info": info,
    }


VALID_TORRENTS = [bencode(valid_torrent_dict(False)), bencode(valid_torrent_dict(True))]


def check_parse(data: bytes) -> None:
    """parse_metainfo either fails cleanly or returns a self-consistent Metainfo."""
    try:
        meta = parse_metainfo(data)
    except MetainfoError:
        return
    ACCEPTED["torrents"] += 1
    assert meta.raw_info in data
    assert meta.info_hash == hashlib.sha1(meta.raw_info).digest()
    assert meta.total_length == sum(f.length for f in meta.files) > 0
    assert meta.num_pieces == -(-meta.total_length // meta.piece_length)
    offset = 0
    for entry in meta.files:
        assert entry.offset == offset and entry.length >= 0
        offset += entry.length
        for part in entry.path:
            assert part not in ("", ".", "..") and not {"/", "\\", "\0"} & set(part)
    assert len({f.path for f in meta.files}) == len(meta.files)
    assert sum(meta.piece_size(i) for i in range(meta.num_pieces)) == meta.total_length


# --------------------------------------------------------------------------- bencoding


@FUZZ
@given(st.binary(max_size=200))
def test_arbitrary_bytes_decode_or_raise_bencode_error(data):
    CASES["bdecode bytes"] += 1
    try:
        value = bdecode(data)
    except BencodeError:
        return
    assert bencode(value) == data  # anything accepted is canonical


@FUZZ
@given(st.lists(st.sampled_from([b"i", b"e", b"l", b"d", b"0", b"1", b"-", b":", b"4:spam", b"i1e"]), max_size=40))
def test_token_soup_decodes_or_raises_bencode_error(parts):
    CASES["bdecode tokens"] += 1
    data = b"".join(parts)
    try:
        value = bdecode(data)
    except BencodeError:
        return
    assert bencode(value) == data


@FUZZ_NESTED
@given(decoded_values)
def test_round_trip_and_prefixes(value):
    CASES["round trip"] += 1
    data = bencode(value)
    assert bdecode(data) == value
    for cut in range(len(data)):  # bencoding is prefix-free: no proper prefix is valid
        with pytest.raises(BencodeError):
            bdecode(data[:cut])


@FUZZ_NESTED
@given(st.dictionaries(st.binary(max_size=8), decoded_values, max_size=4))
def test_spans_slice_back_to_values(top):
    CASES["spans"] += 1
    data = bencode(top)
    value, spans = bdecode_with_spans(data)
    assert value == top
    assert set(spans) == set(top)
    for key, (start, end) in spans.items():
        assert bdecode(data[start:end]) == top[key]


def test_deep_nesting_and_huge_lengths_are_rejected_quickly():
    CASES["hostile"] += 1
    started = time.perf_counter()
    hostile = [
        b"l" * 100_000,
        b"d1:a" * 100_000,
        b"l" * 64 + b"d" * 100_000,
        b"99999999999:",
        b"99999999999999999999999999:",
        b"d4:info99999999999:",
        b"i" + b"9" * 100_000 + b"e",
    ]
    for data in hostile:
        with pytest.raises(BencodeError):
            bdecode(data)
        with pytest.raises(MetainfoError):
            parse_metainfo(data)
    assert time.perf_counter() - started < 1.0


# --------------------------------------------------------------------------- metainfo


@FUZZ
@given(st.binary(max_size=300))
def test_arbitrary_bytes_parse_or_raise_metainfo_error(data):
    CASES["metainfo bytes"] += 1
    check_parse(data)


mutation = st.tuples(
    st.sampled_from(["flip", "insert", "delete", "truncate", "digit"]),
    st.integers(min_value=0),
    st.integers(min_value=0, max_value=255),
)


@FUZZ
@given(st.sampled_from(VALID_TORRENTS), st.lists(mutation, min_size=1, max_size=4))
def test_mutated_torrent_bytes(data, mutations):
    CASES["mutated bytes"] += 1
    buf = bytearray(data)
    for kind, where, byte in mutations:
        where %= len(buf) + 1
        if kind == "flip" and where < len(buf):
            buf[where] ^= byte or 1
        elif kind == "insert":
            buf[where:where] = bytes([byte])
        elif kind == "delete":
            del buf[where : where + 1 + byte % 3]
        elif kind == "truncate":
            del buf[where:]
        elif kind == "digit" and where < len(buf):
            buf[where] = b"0123456789"[byte % 10]
    check_parse(bytes(buf))


replacement_values = st.one_of(
    st.none(),  # None deletes the key
    st.integers(min_value=-3, max_value=40),
    st.sampled_from([b"", b".", b"..", b"a/b", b"C:", b"\xff", b"x" * 20, b"ok"]),
    decoded_values,
)


@FUZZ_NESTED
@given(
    st.booleans(),
    st.sampled_from(["top", "info", "file"]),
    st.sampled_from(
        ["info", "announce", "announce-list", "url-list", "name", "name.utf-8", "piece length",
         "pieces", "length", "files", "path", "path.utf-8", "private"]
    ),
    replacement_values,
)
def test_structurally_mutated_torrents(multi_file, level, key, new_value):
    CASES["mutated structure"] += 1
    top = valid_torrent_dict(multi_file)
    target = {"top": top, "info": top["info"]}.get(level) or top["info"].get("files", [{}])[0]
    if new_value is None:
        target.pop(key, None)
    else:
        target[key] = new_value
    check_parse(bencode(top))

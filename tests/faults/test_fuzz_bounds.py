"""Fuzzing for what tests/unit/test_fuzz_*.py do not check: that hostile input is rejected
*quickly* and in *bounded memory*, not only with the right exception type.

Each parser gets mutated valid inputs (bytes flipped, inserted, deleted, truncated, length
fields inflated) and hand-made bombs (huge declared lengths, deep nesting, giant frame
prefixes). For every case: only the module's own error type may escape, the call must
take under a second, and the peak of new allocations (tracemalloc) must stay under a bound
proportional to the input. The number of cases run is written to the terminal.
"""

from __future__ import annotations

import collections
import struct
import time
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common import tracker_proto as tp
from common.bencoding import BencodeError, bdecode, bencode
from common.metainfo import MetainfoError, parse_metainfo
from common.tracker_proto import TrackerProtocolError
from common.wire import (
    Bitfield, Handshake, Have, Piece, ProtocolError, Request, Unchoke, WireDecoder, encode,
)

CASES: collections.Counter = collections.Counter()
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SLOW_CASE = 1.0            # seconds: a hang, for inputs of a few KiB
MEMORY_FACTOR = 64         # peak new memory <= 64 x input + 1 MiB


@pytest.fixture(scope="module", autouse=True)
def report(request):
    yield
    line = "bounded fuzz cases: " + ", ".join(f"{k} {v}" for k, v in sorted(CASES.items())) + \
        f" (total {sum(CASES.values())}; each under {SLOW_CASE:.0f} s and {MEMORY_FACTOR}x input + 1 MiB)"
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None:
        print(line)
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line("")
        reporter.write_line(line)


def bounded(name: str, call, data: bytes | str, allowed: type[BaseException]) -> None:
    """Run call(data): only `allowed` may escape; time and peak memory must stay bounded."""
    CASES[name] += 1
    tracemalloc.start()       # only around the call: tracing hypothesis itself is slow
    try:
        base, _ = tracemalloc.get_traced_memory()
        started = time.perf_counter()
        try:
            call(data)
        except allowed:
            pass
        took = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert took < SLOW_CASE, f"{name}: {took:.2f} s on {len(data)} bytes"
    limit = MEMORY_FACTOR * len(data) + (1 << 20)
    assert peak - base < limit, f"{name}: {peak - base} bytes allocated for a {len(data)}-byte input"


# -- mutations -------------------------------------------------------------------------------

mutation = st.tuples(st.sampled_from(["flip", "insert", "delete", "truncate", "digits", "dup"]),
                     st.integers(0, 10_000), st.integers(0, 255))


def mutate(data: bytes, ops) -> bytes:
    buf = bytearray(data)
    for op, pos, value in ops:
        if not buf:
            buf = bytearray(b"\x00")
        pos %= len(buf)
        if op == "flip":
            buf[pos] ^= value or 1
        elif op == "insert":
            buf[pos:pos] = bytes([value])
        elif op == "delete":
            del buf[pos]
        elif op == "truncate":
            del buf[pos:]
        elif op == "digits":      # a length or integer made huge
            buf[pos:pos] = b"9" * (1 + value % 20)
        else:                     # a slice repeated
            buf[pos:pos] = buf[pos:pos + value % 64]
    return bytes(buf)


def torrent_bytes(multi: bool) -> bytes:
    info: dict = {"name": "fuzz", "piece length": 16384}
    if multi:
        info["files"] = [{"length": 5, "path": ["a", "b"]}, {"length": 20000, "path": ["c"]}]
        info["pieces"] = bytes(40)
    else:
        info.update(length=100, pieces=bytes(20))
    return bencode({"announce": "http://127.0.0.1:1/announce", "announce-list": [["udp://127.0.0.1:1"]],
                    "info": info})


TORRENTS = [torrent_bytes(False), torrent_bytes(True)]
WIRE_STREAMS = [
    encode(Handshake(bytes(20), b"-SW0100-000000000000", bytes(8))) + b"".join(encode(m) for m in (
        Bitfield(b"\xff\xe0"), Have(3), Unchoke(), Request(1, 0, 16384), Piece(1, 0, b"x" * 100))),
    b"".join(encode(m) for m in (Have(1), Request(0, 16384, 16384), Piece(0, 0, bytes(300)))),
]
QUERY = tp.build_announce_url("http://x/a", tp.AnnounceRequest(
    bytes(range(20)), b"-SW0100-000000000000", 6881, 10, 20, 30, "started", 50)).partition("?")[2]
SCRAPE = "info_hash=" + "%01" * 20 + "&info_hash=" + "%02" * 20
UDP = [tp.encode_udp(tp.UdpConnectRequest(7)),
       tp.encode_udp(tp.UdpAnnounceRequest(1, 2, bytes(20), bytes(20), 0, 1, 0, 2, 0, 0, -1, 6881)),
       tp.encode_udp(tp.UdpScrapeRequest(1, 2, [bytes(20)] * 3))]


def feed_all(data: bytes) -> None:
    decoder = WireDecoder(handshake=data.startswith(b"\x13"))
    for i in range(0, len(data), 37):   # in chunks, so partial frames are buffered
        decoder.feed(data[i:i + 37])


@FUZZ
@given(st.sampled_from(TORRENTS), st.lists(mutation, min_size=1, max_size=6))
def test_mutated_bencode_and_metainfo(data, ops):
    bad = mutate(data, ops)
    bounded("bdecode", bdecode, bad, BencodeError)
    bounded("parse_metainfo", parse_metainfo, bad, MetainfoError)


@FUZZ
@given(st.sampled_from(WIRE_STREAMS), st.lists(mutation, min_size=1, max_size=6))
def test_mutated_wire_streams(data, ops):
    bounded("wire decoder", feed_all, mutate(data, ops), ProtocolError)


@FUZZ
@given(st.sampled_from([QUERY, SCRAPE]), st.lists(mutation, min_size=1, max_size=6))
def test_mutated_tracker_queries(query, ops):
    bad = mutate(query.encode(), ops)
    bounded("announce query", tp.parse_announce_query, bad, TrackerProtocolError)
    bounded("scrape query", tp.parse_scrape_query, bad, TrackerProtocolError)
    text = bad.decode("latin-1")
    bounded("announce query (str)", tp.parse_announce_query, text, TrackerProtocolError)


@FUZZ
@given(st.sampled_from(UDP), st.lists(mutation, min_size=1, max_size=6))
def test_mutated_udp_requests(packet, ops):
    bounded("udp request", tp.decode_udp_request, mutate(packet, ops), TrackerProtocolError)


BOMBS = [
    ("bdecode", bdecode, b"999999999999:x", BencodeError),
    ("bdecode", bdecode, b"l" * 100_000, BencodeError),
    ("bdecode", bdecode, b"d" * 100_000, BencodeError),
    ("bdecode", bdecode, b"i" + b"9" * 100_000 + b"e", BencodeError),
    ("bdecode", bdecode, b"l" + b"i1e" * 30_000 + b"e", BencodeError),
    ("parse_metainfo", parse_metainfo, b"d4:infod6:lengthi" + b"9" * 5000 + b"eee", MetainfoError),
    ("parse_metainfo", parse_metainfo, bencode({"info": {"name": "x", "piece length": 1, "length": 10**15,
                                                         "pieces": bytes(20)}}), MetainfoError),
    ("wire decoder", feed_all, b"\xff\xff\xff\xff\x07" + bytes(100), ProtocolError),
    ("wire decoder", feed_all, struct.pack(">IB", (1 << 20) + 14, 5) + bytes(1000), ProtocolError),
    ("wire decoder", feed_all, b"\x13BitTorrent protocol" + bytes(48) + b"\x00\x00\x00\x00" * 20_000, ProtocolError),
    ("announce query", tp.parse_announce_query, "&".join(["info_hash=%01"] * 20_000), TrackerProtocolError),
    ("announce query", tp.parse_announce_query, "port=" + "9" * 50_000, TrackerProtocolError),
    ("scrape query", tp.parse_scrape_query, "&".join(["info_hash=" + "%01" * 20] * 5_000), TrackerProtocolError),
    ("udp request", tp.decode_udp_request,
     struct.pack(">QII", tp.PROTOCOL_ID, 2, 1) + bytes(20) * 3000, TrackerProtocolError),
]


@pytest.mark.parametrize("name,call,data,allowed", BOMBS, ids=[f"{b[0]}-{i}" for i, b in enumerate(BOMBS)])
def test_bombs_are_cheap(name, call, data, allowed):
    bounded(name + " bomb", call, data, allowed)


def test_the_checks_themselves_catch_a_hog_a_wrong_error_and_a_hang():
    with pytest.raises(AssertionError, match="allocated"):
        bounded("self-test", lambda d: bytearray(8 << 20), b"tiny", ValueError)
    with pytest.raises(KeyError):
        bounded("self-test", lambda d: {}[d], b"key", ValueError)
    with pytest.raises(AssertionError, match=" s on "):
        bounded("self-test", lambda d: time.sleep(SLOW_CASE + 0.05), b"x", ValueError)
    CASES.pop("self-test")

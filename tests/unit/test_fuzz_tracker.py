"""Hypothesis: whatever arrives, the tracker codecs and the UDP core fail only in the documented way."""

from __future__ import annotations

import collections
import struct

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from common import tracker_proto as tp
from common.tracker_proto import TrackerFailure, TrackerProtocolError
from tracker.registry import SwarmRegistry
from tracker.udp_api import UdpTracker

COUNTS: collections.Counter = collections.Counter()
FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_QUERY_ALPHABET = st.sampled_from(list("=&%+abcdefinfo_hashpeer_idportleftevent0123456789AFaf~.-_é"))
_param_names = st.sampled_from(["info_hash", "peer_id", "port", "left", "uploaded", "downloaded",
                                "event", "numwant", "compact", "key", "ip", "x"])
_pct_bytes = st.binary(min_size=0, max_size=24).map(lambda b: "".join(f"%{c:02X}" for c in b))
_param = st.tuples(_param_names, st.one_of(_pct_bytes, st.text(_QUERY_ALPHABET, max_size=12)))
_structured_query = st.lists(_param, max_size=10).map(lambda ps: "&".join(f"{k}={v}" for k, v in ps))
_VALID = {"info_hash": "%01" * 20, "peer_id": "-SW0001-123456789012", "port": "6881", "left": "0"}
# a valid announce with some values replaced and extra parameters added
_near_valid_query = st.tuples(
    st.dictionaries(_param_names, st.one_of(_pct_bytes, st.text(_QUERY_ALPHABET, max_size=12)),
                    max_size=3),
    st.booleans(),
).map(lambda t: "&".join(f"{k}={v}" for k, v in ({**_VALID, **t[0]} if t[1] else {**t[0], **_VALID}).items()))


@FUZZ
@given(st.one_of(st.text(max_size=200), st.text(_QUERY_ALPHABET, max_size=200), _structured_query,
                 _near_valid_query, st.binary(max_size=200)))
def test_parse_queries_only_raise_protocol_error(query):
    try:
        req = tp.parse_announce_query(query)
    except TrackerProtocolError:
        COUNTS["announce query rejected"] += 1
    else:
        COUNTS["announce query accepted"] += 1
        assert len(req.info_hash) == 20 and len(req.peer_id) == 20 and 1 <= req.port <= 65535
    try:
        tp.parse_scrape_query(query)
    except TrackerProtocolError:
        COUNTS["scrape query rejected"] += 1


def _udp_like(action: int):
    """Packets that start like a real request or response, then go wrong."""
    return st.tuples(st.integers(0, 2**64 - 1), st.binary(max_size=120)).map(
        lambda t: struct.pack(">QI", t[0], action) + t[1])


_announces = st.builds(
    tp.UdpAnnounceRequest, st.integers(0, 2**64 - 1), st.integers(0, 2**32 - 1),
    st.binary(min_size=20, max_size=20), st.binary(min_size=20, max_size=20),
    st.integers(-2**63, 2**63 - 1), st.integers(-2**63, 2**63 - 1), st.integers(-2**63, 2**63 - 1),
    st.integers(0, 5), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1),
    st.integers(-2**31, 2**31 - 1), st.integers(0, 65535)).map(tp.encode_udp)
_packets = st.one_of(st.binary(max_size=200), *(_udp_like(a) for a in range(5)), _announces,
                     st.binary(max_size=120).map(lambda b: struct.pack(">QI", tp.PROTOCOL_ID, 0) + b))


@FUZZ
@given(_packets)
def test_udp_decoders_only_raise_protocol_error(data):
    for decode in (tp.decode_udp_request, tp.decode_udp_response,
                   lambda d: tp.decode_udp_response(d, ipv6=True)):
        try:
            msg = decode(data)
        except TrackerProtocolError:
            COUNTS["udp packet rejected"] += 1
        else:
            COUNTS[f"udp decoded {type(msg).__name__}"] += 1


@FUZZ
@given(st.one_of(st.binary(max_size=300),
                 st.binary(max_size=300).map(lambda b: b"d8:intervali1e5:peers" + b),
                 st.binary(max_size=300).map(lambda b: b"d5:filesd20:" + b"a" * 20 + b),
                 st.binary(max_size=60).map(lambda b: b"d8:intervali1e5:peers%d:%se" % (len(b), b)),
                 st.binary(max_size=60).map(lambda b: b"d8:intervali1e5:peers0:6:peers6%d:%se" % (len(b), b)),
                 ))
def test_http_response_decoders_only_raise_documented_errors(data):
    for decode in (tp.decode_announce_response, tp.decode_scrape_response):
        try:
            decode(data)
        except (TrackerProtocolError, TrackerFailure):
            COUNTS["http response rejected"] += 1
        else:
            COUNTS["http response accepted"] += 1


CORE = UdpTracker(SwarmRegistry(), secret=b"k" * 32)
ADDR = ("127.0.0.1", 5555)


@FUZZ
@given(_packets, st.booleans())
def test_udp_core_never_crashes_and_never_amplifies(data, with_valid_id):
    if with_valid_id and len(data) >= 8:
        data = CORE.connection_id(ADDR, 1000.0).to_bytes(8, "big") + data[8:]
    reply = CORE.handle(data, ADDR, now=1000.0)
    if reply is None:
        COUNTS["udp core silent"] += 1
        return
    COUNTS["udp core replied"] += 1
    valid = len(data) >= 8 and int.from_bytes(data[:8], "big") == CORE.connection_id(ADDR, 1000.0)
    if not valid:
        assert len(reply) <= len(data)
    tp.decode_udp_response(reply)   # whatever we send is a well-formed response


def test_zz_print_case_counts():
    """Runs last in this file: shows how many cases each fuzz target exercised (pytest -s)."""
    print("\nfuzz case counts:", dict(sorted(COUNTS.items())))
    assert COUNTS["announce query rejected"] > 0 and COUNTS["udp packet rejected"] > 0


_ESCAPE_ALPHABET = st.sampled_from([*b"%+\\xX0479aAfFgG-._~ \n", 0x80, 0xFF])


@FUZZ
@given(st.lists(_ESCAPE_ALPHABET, max_size=16).map(bytes))
@example(b"%%%")           # shaped like an all-escaped value, but not one (the hex fast path)
@example(b"%%%%%%")
@example(b"%0%%00")
@example(b"%aB%00%ff")
def test_fast_unquote_agrees_with_urllib(raw):
    # the tracker decodes %XX with a C codec; it must agree with the standard library
    # everywhere, malformed escapes and backslashes included
    from urllib.parse import unquote_to_bytes
    assert tp._unquote(raw) == unquote_to_bytes(raw.replace(b"+", b" "))

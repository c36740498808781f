"""BEP 14 codec and the LSD state machine: exact bytes, exact decisions, no sockets.

The multicast side runs only inside the network namespaces of tests/lan.
"""

from __future__ import annotations

import socket

import pytest

from peer.lsd import (
    HOST_V4,
    HOST_V6,
    MIN_INTERVAL,
    BtSearch,
    LsdError,
    LsdState,
    encode_bt_search,
    parse_bt_search,
)
from peer.lsd import _source_host

H1 = bytes.fromhex("0123456789abcdef0123456789abcdef01234567")
H2 = bytes.fromhex("fedcba9876543210fedcba9876543210fedcba98")


# -- codec -------------------------------------------------------------------------------
def test_encode_single_hash_exact_bytes():
    assert encode_bt_search(6881, [H1], "c00k1e", HOST_V4) == (
        b"BT-SEARCH * HTTP/1.1\r\n"
        b"Host: 239.192.152.143:6771\r\n"
        b"Port: 6881\r\n"
        b"Infohash: 0123456789abcdef0123456789abcdef01234567\r\n"
        b"cookie: c00k1e\r\n"
        b"\r\n\r\n"
    )


def test_encode_several_hashes_ipv6_host_no_cookie():
    assert encode_bt_search(51413, [H1, H2], None, HOST_V6) == (
        b"BT-SEARCH * HTTP/1.1\r\n"
        b"Host: [ff15::efc0:988f]:6771\r\n"
        b"Port: 51413\r\n"
        b"Infohash: 0123456789abcdef0123456789abcdef01234567\r\n"
        b"Infohash: fedcba9876543210fedcba9876543210fedcba98\r\n"
        b"\r\n\r\n"
    )


def test_round_trip():
    data = encode_bt_search(1, [H1, H2], "abc", HOST_V4)
    assert parse_bt_search(data) == (1, [H1, H2], "abc")
    assert parse_bt_search(data) == BtSearch(port=1, info_hashes=[H1, H2], cookie="abc")


def test_parse_libtorrent_style_uppercase_hex_and_hex_cookie():
    data = (b"BT-SEARCH * HTTP/1.1\r\nHost: 239.192.152.143:6771\r\nPort: 6881\r\n"
            b"Infohash: 0123456789ABCDEF0123456789ABCDEF01234567\r\ncookie: 1a2b3c\r\n\r\n\r\n")
    assert parse_bt_search(data) == (6881, [H1], "1a2b3c")


def test_parse_aria2_style_single_blank_line_no_cookie():
    data = (b"BT-SEARCH * HTTP/1.1\r\nHost: 239.192.152.143:6771\r\nPort: 6882\r\n"
            b"Infohash: fedcba9876543210fedcba9876543210fedcba98\r\n\r\n")
    assert parse_bt_search(data) == (6882, [H2], None)


def test_parse_lenient_header_case_spacing_bare_newlines_unknown_headers():
    data = (b"BT-SEARCH * HTTP/1.1\nhost:239.192.152.143:6771\nPORT:   7000  \n"
            b"X-Client: other\ninfohash:0123456789abcdef0123456789abcdef01234567\nCookie: z\n\n")
    assert parse_bt_search(data) == (7000, [H1], "z")


def test_parse_ignores_headers_after_blank_line():
    data = (b"BT-SEARCH * HTTP/1.1\r\nPort: 7000\r\nInfohash: " + H1.hex().encode() +
            b"\r\n\r\nInfohash: " + H2.hex().encode() + b"\r\n")
    assert parse_bt_search(data).info_hashes == [H1]


@pytest.mark.parametrize("data, message", [
    (b"", "not a BT-SEARCH request"),
    (b"M-SEARCH * HTTP/1.1\r\nPort: 1\r\n\r\n", "not a BT-SEARCH request"),  # SSDP on a shared port
    (b"BT-SEARCH * HTTP/1.1\r\nInfohash: " + H1.hex().encode() + b"\r\n\r\n", "no Port header"),
    (b"BT-SEARCH * HTTP/1.1\r\nPort: 6881\r\n\r\n", "no Infohash header"),
    (b"BT-SEARCH * HTTP/1.1\r\nPort: 0\r\nInfohash: " + H1.hex().encode() + b"\r\n\r\n", "bad Port"),
    (b"BT-SEARCH * HTTP/1.1\r\nPort: 65536\r\nInfohash: " + H1.hex().encode() + b"\r\n\r\n", "bad Port"),
    (b"BT-SEARCH * HTTP/1.1\r\nPort: -5\r\nInfohash: " + H1.hex().encode() + b"\r\n\r\n", "bad Port"),
    (b"BT-SEARCH * HTTP/1.1\r\nPort: 1\r\nInfohash: abc\r\n\r\n", "40 hex digits"),
    (b"BT-SEARCH * HTTP/1.1\r\nPort: 1\r\nInfohash: " + b"g" * 40 + b"\r\n\r\n", "not hex"),
    (b"BT-SEARCH * HTTP/1.1\r\nPort 1\r\n\r\n", "without a colon"),
    (b"BT-SEARCH * HTTP/1.1\r\nPort: 1\xff\r\n\r\n", "non-ASCII byte at offset 29"),
    (b"BT-SEARCH * HTTP/1.1\r\n" + b"X: y\r\n" * 2000, "longer than"),
])
def test_parse_garbage_raises_clear_error(data, message):
    with pytest.raises(LsdError, match=message):
        parse_bt_search(data)


@pytest.mark.parametrize("args, message", [
    ((0, [H1], None), "port 0"),
    ((6881, [], None), "at least one"),
    ((6881, [b"short"], None), "20 bytes"),
    ((6881, [H1], "bad\r\ncookie"), "cookie"),
])
def test_encode_rejects_bad_input(args, message):
    with pytest.raises(LsdError, match=message):
        encode_bt_search(*args)


# -- announce schedule -------------------------------------------------------------------
def test_added_torrent_is_due_at_once_then_every_interval():
    state = LsdState("me", interval=90)
    assert state.next_due() is None and state.due(0.0) == []
    state.add(H1, now=10.0)
    assert state.next_due() == 10.0
    assert state.due(10.0) == [H1]
    assert state.due(10.0) == []
    assert state.next_due() == 100.0
    assert state.due(99.9) == []
    assert state.due(100.0) == [H1]


def test_interval_below_a_minute_is_raised_to_a_minute():
    state = LsdState("me", interval=5)
    state.add(H1, 0.0)
    assert state.due(0.0) == [H1]
    assert state.due(5.0) == [] and state.due(59.9) == []
    assert state.due(MIN_INTERVAL) == [H1]


def test_remove_and_readd_still_waits_a_minute():
    state = LsdState("me")
    state.add(H1, 0.0)
    assert state.due(0.0) == [H1]
    state.remove(H1)
    assert state.next_due() is None and H1 not in state
    state.add(H1, 20.0)
    assert state.next_due() == 60.0
    assert state.due(59.0) == [] and state.due(60.0) == [H1]


def test_torrents_added_together_are_due_together_in_a_stable_order():
    state = LsdState("me")
    state.add(H2, 1.0)
    state.add(H1, 1.0)
    assert state.due(1.0) == [H1, H2]


# -- receiving ---------------------------------------------------------------------------
def _announce(port: int, hashes, cookie: str | None = "other") -> bytes:
    return encode_bt_search(port, hashes, cookie, HOST_V4)


def test_reports_peers_of_our_torrents_only():
    state = LsdState("me")
    state.add(H1, 0.0)
    found = state.received(_announce(7000, [H2, H1]), "10.0.0.5", now=1.0)
    assert found == [(H1, ("10.0.0.5", 7000))]


def test_own_announcements_are_ignored_by_cookie():
    state = LsdState("me")
    state.add(H1, 0.0)
    assert state.received(_announce(7000, [H1], cookie="me"), "10.0.0.1", 1.0) == []
    assert state.received(_announce(7000, [H1], cookie=None), "10.0.0.1", 1.0) == [(H1, ("10.0.0.1", 7000))]


def test_same_peer_reported_once_a_minute():
    state = LsdState("me")
    state.add(H1, 0.0)
    data = _announce(7000, [H1])
    assert state.received(data, "10.0.0.5", 1.0) == [(H1, ("10.0.0.5", 7000))]
    assert state.received(data, "10.0.0.5", 30.0) == []
    assert state.received(_announce(7001, [H1]), "10.0.0.5", 30.0) == [(H1, ("10.0.0.5", 7001))]
    assert state.received(data, "10.0.0.5", 61.0) == [(H1, ("10.0.0.5", 7000))]


def test_garbage_is_ignored_not_raised():
    state = LsdState("me")
    state.add(H1, 0.0)
    assert state.received(b"\x00\x01 not http", "10.0.0.5", 1.0) == []


def test_flooding_sender_is_rate_limited_others_are_not():
    state = LsdState("me", per_source_rate=2.0, per_source_burst=10.0)
    state.add(H1, 0.0)
    accepted = 0
    for port in range(1000, 1100):  # 100 distinct announces in the same instant
        accepted += len(state.received(_announce(port, [H1]), "10.0.0.66", 5.0))
    assert accepted == 10 and state.dropped == 90
    assert state.received(_announce(7000, [H1]), "10.0.0.7", 5.0) == [(H1, ("10.0.0.7", 7000))]
    # two seconds later the flooder has earned four more datagrams
    later = [state.received(_announce(port, [H1]), "10.0.0.66", 7.0) for port in range(2000, 2010)]
    assert sum(map(len, later)) == 4


def test_sender_table_is_bounded():
    state = LsdState("me", per_source_rate=1.0, per_source_burst=5.0, max_sources=3)
    state.add(H1, 0.0)
    for n in range(3):
        assert state.received(_announce(7000, [H1]), f"10.0.0.{n}", 0.0)
    assert state.received(_announce(7000, [H1]), "10.0.0.99", 0.0) == []   # table full of busy senders
    assert state.received(_announce(7000, [H1]), "10.0.0.99", 10.0)        # idle ones were forgotten


def test_source_address_of_ipv6_link_local_keeps_its_interface():
    assert _source_host(("10.0.0.5", 6771)) == "10.0.0.5"
    loopback = socket.if_indextoname(1)
    assert _source_host(("fe80::1", 6771, 0, 1)) == f"fe80::1%{loopback}"
    assert _source_host(("2001:db8::1", 6771, 0, 0)) == "2001:db8::1"

"""Tracker protocol: exact bytes for every HTTP and UDP message, and clear errors."""

from __future__ import annotations

import pytest

from common import tracker_proto as tp
from common.tracker_proto import (
    AnnounceRequest, AnnounceResponse, PeerAddr, ScrapeStats, TrackerFailure,
    TrackerProtocolError,
)

IH = bytes(range(20))                       # 00 01 .. 13
IH2 = b"\xff" * 20
PID = b"-SW0001-" + b"abc~.-_ +/%"  + b"\x00"  # 20 bytes with reserved and binary chars
assert len(PID) == 20
IH_Q = "%00%01%02%03%04%05%06%07%08%09%0A%0B%0C%0D%0E%0F%10%11%12%13"
PID_Q = "-SW0001-abc~.-_%20%2B%2F%25%00"


# -- HTTP announce query ----------------------------------------------------------------

def test_build_announce_url_exact():
    req = AnnounceRequest(IH, PID, 6881, uploaded=1, downloaded=2, left=3, event="started",
                          numwant=30, key=0xDEADBEEF)
    assert tp.build_announce_url("http://t.example:6969/announce", req) == (
        f"http://t.example:6969/announce?info_hash={IH_Q}&peer_id={PID_Q}&port=6881"
        "&uploaded=1&downloaded=2&left=3&compact=1&event=started&numwant=30&key=DEADBEEF")


def test_build_announce_url_keeps_existing_query():
    req = AnnounceRequest(IH, PID, 1, compact=False)
    url = tp.build_announce_url("http://t/announce.php?passkey=abc", req)
    assert url.startswith(f"http://t/announce.php?passkey=abc&info_hash={IH_Q}&")
    assert url.endswith("&left=0&compact=0")


def test_parse_round_trips_build():
    req = AnnounceRequest(IH2, PID, 65535, uploaded=10**15, downloaded=5, left=7,
                          event="completed", numwant=0, compact=False, key=1)
    query = tp.build_announce_url("http://t/announce", req).split("?", 1)[1]
    assert tp.parse_announce_query(query) == req
    assert tp.parse_announce_query(query.encode()) == req


def test_parse_lowercase_escapes_plus_and_defaults():
    query = ("info_hash=" + IH_Q.lower() + "&peer_id=-SW0001-abc~.-_+%2b%2f%25%00&port=1"
             "&ip=6.6.6.6&no_peer_id=1&supportcrypto=1")
    req = tp.parse_announce_query(query)
    assert req == AnnounceRequest(IH, PID, 1)   # '+' is a space; unknown/ip params ignored


def test_parse_escaped_names_unknown_names_and_escaped_digits():
    # off the fast path (known names, each once): same answer, and repeats are still caught
    plain = tp.parse_announce_query(f"info_hash={IH_Q}&peer_id={PID_Q}&port=7&left=5&event=started")
    assert plain == AnnounceRequest(IH, PID, 7, left=5, event="started")
    assert tp.parse_announce_query(
        f"info%5Fhash={IH_Q}&peer_id={PID_Q}&%70ort=%37&left=%35&event=st%61rted&zz=1&&") == plain
    with pytest.raises(TrackerProtocolError, match="port given twice"):
        tp.parse_announce_query(f"info_hash={IH_Q}&peer_id={PID_Q}&port=1&p%6Frt=2")


def test_parse_paused_event_is_regular_announce():
    q = f"info_hash={IH_Q}&peer_id={PID_Q}&port=5&event=paused&key=zz"
    req = tp.parse_announce_query(q)
    assert req.event == "" and req.key is None


@pytest.mark.parametrize("query, message", [
    ("peer_id=x&port=1", "missing parameter info_hash"),
    (f"info_hash={IH_Q}&port=1", "missing parameter peer_id"),
    (f"info_hash={IH_Q}&peer_id={PID_Q}", "missing parameter port"),
    (f"info_hash=%00&peer_id={PID_Q}&port=1", "info_hash must be 20 bytes, got 1"),
    (f"info_hash={IH_Q}%00&peer_id={PID_Q}&port=1", "info_hash must be 20 bytes, got 21"),
    (f"info_hash={IH_Q}&peer_id=short&port=1", "peer_id must be 20 bytes, got 5"),
    (f"info_hash={IH_Q}&peer_id={PID_Q}&port=0", "port must be 1..65535, got 0"),
    (f"info_hash={IH_Q}&peer_id={PID_Q}&port=65536", "port must be 1..65535, got 65536"),
    (f"info_hash={IH_Q}&peer_id={PID_Q}&port=-1", "port must be a non-negative integer"),
    (f"info_hash={IH_Q}&peer_id={PID_Q}&port=1&left=-5", "left must be a non-negative integer"),
    (f"info_hash={IH_Q}&peer_id={PID_Q}&port=1&uploaded=1e3", "uploaded must be a non-negative"),
    (f"info_hash={IH_Q}&peer_id={PID_Q}&port=1&numwant=", "numwant must be a non-negative"),
    (f"info_hash={IH_Q}&peer_id={PID_Q}&port=1&event=begun", "unknown event 'begun'"),
    (f"info_hash={IH_Q}&info_hash={IH_Q}&peer_id={PID_Q}&port=1", "info_hash given twice"),
    ("info_hash=é", "query string must be ASCII"),
    ("x=" + "a" * 9000, "query string longer than 8192 bytes"),
])
def test_parse_rejects_with_clear_message(query, message):
    with pytest.raises(TrackerProtocolError, match=message):
        tp.parse_announce_query(query)


# -- HTTP announce response ---------------------------------------------------------------

def test_encode_compact_response_exact():
    resp = AnnounceResponse(interval=1800, complete=2, incomplete=1, peers=[
        PeerAddr("10.0.0.1", 6881), PeerAddr("::1", 1), PeerAddr("::ffff:1.2.3.4", 258)])
    assert tp.encode_announce_response(resp) == (
        b"d8:completei2e10:incompletei1e8:intervali1800e"
        b"5:peers12:\x0a\x00\x00\x01\x1a\xe1\x01\x02\x03\x04\x01\x02"
        b"6:peers618:" + b"\x00" * 15 + b"\x01\x00\x01" + b"e")


def test_encode_response_min_interval_warning_and_no_peers():
    resp = AnnounceResponse(interval=60, min_interval=30, warning="slow down")
    assert tp.encode_announce_response(resp) == (
        b"d8:completei0e10:incompletei0e8:intervali60e12:min intervali30e5:peers0:"
        b"15:warning message9:slow downe")


def test_encode_dict_form_exact():
    resp = AnnounceResponse(interval=5, peers=[PeerAddr("1.2.3.4", 80, b"P" * 20),
                                               PeerAddr("::1", 81)])
    assert tp.encode_announce_response(resp, compact=False) == (
        b"d8:completei0e10:incompletei0e8:intervali5e5:peersl"
        b"d2:ip7:1.2.3.47:peer id20:" + b"P" * 20 + b"4:porti80ee"
        b"d2:ip3:::14:porti81eeee")


def test_decode_response_round_trip_both_forms():
    peers = [PeerAddr("1.2.3.4", 80), PeerAddr("2001:db8::7", 9)]
    resp = AnnounceResponse(interval=900, peers=peers, complete=3, incomplete=4,
                            min_interval=60, warning="w")
    assert tp.decode_announce_response(tp.encode_announce_response(resp)) == resp
    with_ids = AnnounceResponse(interval=1, peers=[PeerAddr("1.2.3.4", 80, b"x" * 20)])
    assert tp.decode_announce_response(
        tp.encode_announce_response(with_ids, compact=False)) == with_ids


def test_decode_accepts_unsorted_keys_from_real_trackers():
    data = b"d8:intervali60e5:peers6:\x7f\x00\x00\x01\x00\x50e"
    assert tp.decode_announce_response(data) == AnnounceResponse(60, [PeerAddr("127.0.0.1", 80)])


def test_failure_reason_raises_tracker_failure():
    assert tp.encode_failure("go away") == b"d14:failure reason7:go awaye"
    with pytest.raises(TrackerFailure) as info:
        tp.decode_announce_response(b"d14:failure reason7:go awaye")
    assert info.value.reason == "go away"


@pytest.mark.parametrize("data, message", [
    (b"<html>", "not bencoded"),
    (b"le", "not a bencoded dictionary"),
    (b"d5:peers0:e", "lacks 'interval'"),
    (b"d8:intervali-1e5:peers0:e", "'interval' must be a non-negative integer"),
    (b"d8:intervali1e5:peers5:abcdee", "not a multiple of 6"),
    (b"d8:intervali1e5:peersi3ee", "'peers' must be a string or a list"),
    (b"d8:intervali1e5:peersli1eee", "not a dictionary"),
    (b"d8:intervali1e5:peersld2:ip1:x4:porti0eeee", "'port' \\(1..65535\\)"),
    (b"d8:intervali1e5:peers0:6:peers65:abcdee", "not a multiple of 18"),
])
def test_decode_response_errors(data, message):
    with pytest.raises(TrackerProtocolError, match=message):
        tp.decode_announce_response(data)


def test_compact_peers_exact_and_errors():
    v4, v6 = tp.encode_compact_peers([PeerAddr("127.0.0.1", 6881), PeerAddr("fe80::1", 2)])
    assert v4 == b"\x7f\x00\x00\x01\x1a\xe1"
    assert v6 == b"\xfe\x80" + b"\x00" * 13 + b"\x01\x00\x02"
    assert tp.decode_compact_peers(v4) == [PeerAddr("127.0.0.1", 6881)]
    assert tp.decode_compact_peers(v6, ipv6=True) == [PeerAddr("fe80::1", 2)]
    with pytest.raises(TrackerProtocolError, match="not an IP address"):
        tp.encode_compact_peers([PeerAddr("localhost", 1)])


# -- scrape (BEP 48) ----------------------------------------------------------------------

@pytest.mark.parametrize("announce, scrape", [
    ("http://example.com/announce", "http://example.com/scrape"),
    ("http://example.com/x/announce", "http://example.com/x/scrape"),
    ("http://example.com/announce.php", "http://example.com/scrape.php"),
    ("http://example.com/a/announce?x2%0644", "http://example.com/a/scrape?x2%0644"),
    ("http://example.com/announce?x=2/4", "http://example.com/scrape?x=2/4"),
    ("http://example.com/a", None),
    ("http://example.com/announce?x=2/4/announce", "http://example.com/scrape?x=2/4/announce"),
    ("http://example.com/x%064announce", None),
    ("http://example.com/x/a/announcement", "http://example.com/x/a/scrapement"),
    ("udp://example.com:80/announce", "udp://example.com:80/announce"),
])
def test_scrape_url_for(announce, scrape):
    assert tp.scrape_url_for(announce) == scrape


def test_scrape_query_build_and_parse():
    url = tp.build_scrape_url("http://t/scrape?k=1", [IH, IH2])
    assert url == f"http://t/scrape?k=1&info_hash={IH_Q}&info_hash=" + "%FF" * 20
    assert tp.parse_scrape_query(url.split("?", 1)[1]) == [IH, IH2]
    assert tp.parse_scrape_query(f"info_hash={IH_Q}&info_hash={IH_Q}") == [IH]
    assert tp.parse_scrape_query("") == []
    with pytest.raises(TrackerProtocolError, match="info_hash must be 20 bytes, got 3"):
        tp.parse_scrape_query("info_hash=abc")


def test_scrape_response_exact_and_round_trip():
    files = {IH: ScrapeStats(complete=5, downloaded=50, incomplete=10)}
    data = tp.encode_scrape_response(files)
    assert data == (b"d5:filesd20:" + IH
                    + b"d8:completei5e10:downloadedi50e10:incompletei10eeee")
    assert tp.decode_scrape_response(data) == files
    with pytest.raises(TrackerFailure):
        tp.decode_scrape_response(b"d14:failure reason2:noe")
    with pytest.raises(TrackerProtocolError, match="lacks a 'files'"):
        tp.decode_scrape_response(b"de")


# -- UDP (BEP 15) -------------------------------------------------------------------------

CID = 0x0102030405060708
UDP_VECTORS = [
    (tp.UdpConnectRequest(0xAABBCCDD),
     bytes.fromhex("0000041727101980" "00000000" "aabbccdd"), "request"),
    (tp.UdpConnectResponse(0xAABBCCDD, CID),
     bytes.fromhex("00000000" "aabbccdd" "0102030405060708"), "response"),
    (tp.UdpAnnounceRequest(CID, 7, IH, PID, downloaded=1, left=2, uploaded=3, event=2,
                           ip=0, key=0xFEEDFACE, num_want=-1, port=6881),
     bytes.fromhex("0102030405060708" "00000001" "00000007") + IH + PID
     + bytes.fromhex("0000000000000001" "0000000000000002" "0000000000000003"
                     "00000002" "00000000" "feedface" "ffffffff" "1ae1"), "request"),
    (tp.UdpAnnounceResponse(7, 1800, 3, 4, [PeerAddr("10.0.0.1", 6881), PeerAddr("1.2.3.4", 1)]),
     bytes.fromhex("00000001" "00000007" "00000708" "00000003" "00000004"
                   "0a000001" "1ae1" "01020304" "0001"), "response"),
    (tp.UdpScrapeRequest(CID, 9, [IH, IH2]),
     bytes.fromhex("0102030405060708" "00000002" "00000009") + IH + IH2, "request"),
    (tp.UdpScrapeResponse(9, [ScrapeStats(complete=1, downloaded=2, incomplete=3),
                              ScrapeStats(0, 0, 0)]),
     bytes.fromhex("00000002" "00000009" "000000010000000200000003" + "00" * 12), "response"),
    (tp.UdpError(5, "connection id expired"),
     bytes.fromhex("00000003" "00000005") + b"connection id expired", "response"),
]


@pytest.mark.parametrize("msg, data, side", UDP_VECTORS, ids=lambda v: type(v).__name__)
def test_udp_exact_bytes_both_ways(msg, data, side):
    assert tp.encode_udp(msg) == data
    decode = tp.decode_udp_request if side == "request" else tp.decode_udp_response
    assert decode(data) == msg


def test_udp_announce_request_is_98_bytes_and_ignores_bep41_options():
    msg = UDP_VECTORS[2][0]
    data = tp.encode_udp(msg)
    assert len(data) == 98
    assert tp.decode_udp_request(data + b"\x02\x05/path") == msg


def test_udp_ipv6_announce_response():
    msg = tp.UdpAnnounceResponse(1, 60, 0, 1, [PeerAddr("2001:db8::1", 443)])
    data = tp.encode_udp(msg)
    assert data == (bytes.fromhex("00000001" "00000001" "0000003c" "00000000" "00000001")
                    + bytes.fromhex("20010db8000000000000000000000001" "01bb"))
    assert tp.decode_udp_response(data, ipv6=True) == msg
    v4_reply = tp.encode_udp(tp.UdpAnnounceResponse(1, 60, 0, 1, [PeerAddr("1.2.3.4", 1)]))
    with pytest.raises(TrackerProtocolError, match="not a multiple of 18"):
        tp.decode_udp_response(v4_reply, ipv6=True)
    with pytest.raises(TrackerProtocolError, match="not both"):
        tp.encode_udp(tp.UdpAnnounceResponse(1, 60, 0, 0, [PeerAddr("::1", 1), PeerAddr("1.1.1.1", 1)]))


@pytest.mark.parametrize("data, message", [
    (b"\x00" * 15, "shorter than 16"),
    (bytes.fromhex("0000041727101981" "00000000" "00000000"), "protocol id"),
    (bytes.fromhex("0102030405060708" "00000001" "00000000") + b"x" * 81, "shorter than 98"),
    (bytes.fromhex("0102030405060708" "00000002" "00000000"), "whole number of 20-byte"),
    (bytes.fromhex("0102030405060708" "00000002" "00000000") + b"x" * 21, "whole number of 20-byte"),
    (bytes.fromhex("0102030405060708" "00000009" "00000000"), "unknown UDP request action 9"),
])
def test_udp_request_errors(data, message):
    with pytest.raises(TrackerProtocolError, match=message):
        tp.decode_udp_request(data)


@pytest.mark.parametrize("data, message", [
    (b"\x00" * 7, "shorter than 8"),
    (bytes.fromhex("00000000" "00000001" "0000"), "connect response shorter than 16"),
    (bytes.fromhex("00000001" "00000001" "00000000"), "announce response shorter than 20"),
    (bytes.fromhex("00000002" "00000001" "0000000000"), "12-byte entries"),
    (bytes.fromhex("00000004" "00000001"), "unknown UDP response action 4"),
])
def test_udp_response_errors(data, message):
    with pytest.raises(TrackerProtocolError, match=message):
        tp.decode_udp_response(data)


def test_udp_encode_out_of_range_is_protocol_error():
    with pytest.raises(TrackerProtocolError, match="cannot encode UdpConnectRequest"):
        tp.encode_udp(tp.UdpConnectRequest(2**32))
    with pytest.raises(TrackerProtocolError, match="info_hash must be 20 bytes"):
        tp.encode_udp(tp.UdpScrapeRequest(1, 1, [b"short"]))

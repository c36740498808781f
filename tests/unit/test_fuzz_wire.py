"""Hypothesis fuzzing of the wire decoder: hostile bytes only ever raise ProtocolError, and how
the bytes are split never changes what is decoded."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.wire import (
    AllowedFast, Bitfield, Cancel, Choke, Extended, Handshake, Have, HaveAll, HaveNone,
    Interested, KeepAlive, NotInterested, Piece, Port, ProtocolError, RejectRequest, Request,
    SuggestPiece, Unchoke, WireDecoder, encode,
)

SETTINGS = settings(max_examples=700, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

u32 = st.integers(0, 2**32 - 1)
req_len = st.integers(1, 128 * 1024)
messages = st.one_of(
    st.sampled_from([KeepAlive(), Choke(), Unchoke(), Interested(), NotInterested(),
                     HaveAll(), HaveNone()]),
    st.builds(Have, u32), st.builds(SuggestPiece, u32), st.builds(AllowedFast, u32),
    st.builds(Bitfield, st.binary(max_size=64)),
    st.builds(Request, u32, u32, req_len), st.builds(Cancel, u32, u32, req_len),
    st.builds(RejectRequest, u32, u32, req_len),
    st.builds(Piece, u32, u32, st.binary(max_size=300)),
    st.builds(Port, st.integers(0, 65535)),
    st.builds(Extended, st.integers(0, 255), st.binary(max_size=64)),
)
handshakes = st.builds(Handshake, st.binary(min_size=20, max_size=20),
                       st.binary(min_size=20, max_size=20), st.binary(min_size=8, max_size=8))

# Near-miss frames: plausible small length prefixes with any id and any body, so the fuzzer
# gets past the length check and exercises every message branch with wrong sizes.
junk_frames = st.builds(
    lambda length, msg_id, body: length.to_bytes(4, "big") + bytes([msg_id]) + body,
    st.integers(0, 40), st.integers(0, 255), st.binary(max_size=40))
chunks = st.one_of(st.binary(max_size=80), junk_frames, messages.map(encode))


def _feed_split(decoder: WireDecoder, data: bytes, cuts: list[int]) -> list:
    got = []
    bounds = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    for a, b in zip(bounds, bounds[1:]):
        got += decoder.feed(data[a:b])
    return got


def _outcome(data: bytes, cuts: list[int], **kwargs) -> tuple[list, bool]:
    """Messages decoded before any error, and whether a ProtocolError ended the stream."""
    decoder = WireDecoder(**kwargs)
    got: list = []
    bounds = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    try:
        for a, b in zip(bounds, bounds[1:]):
            got += decoder.feed(data[a:b])
    except ProtocolError:
        return got, True
    return got, False


def test_arbitrary_bytes_raise_only_protocol_error():
    runs = 0

    @SETTINGS
    @given(pieces=st.lists(chunks, max_size=12), cuts=st.lists(st.integers(0, 2000), max_size=10),
           handshake=st.booleans(), max_frame=st.sampled_from([20, 300, 1 << 20]),
           max_request=st.sampled_from([1, 16384, 128 * 1024]))
    def check(pieces, cuts, handshake, max_frame, max_request):
        nonlocal runs
        runs += 1
        data = b"".join(pieces)
        kwargs = dict(handshake=handshake, max_frame=max_frame, max_request=max_request)
        # Only ProtocolError may escape _outcome; anything else fails the test.
        split_msgs, split_failed = _outcome(data, cuts, **kwargs)
        whole_msgs, whole_failed = _outcome(data, [], **kwargs)
        bytewise_msgs, bytewise_failed = _outcome(data, list(range(len(data))), **kwargs)
        # The split never matters: same verdict; byte by byte yields every message before an
        # error, and any other split yields a prefix of those (all of them without an error).
        assert split_failed == whole_failed == bytewise_failed
        assert split_msgs == bytewise_msgs[:len(split_msgs)]
        assert whole_msgs == bytewise_msgs[:len(whole_msgs)]
        if not whole_failed:
            assert split_msgs == whole_msgs == bytewise_msgs

    check()
    print(f"\nwire fuzz: {runs} arbitrary-byte cases, only ProtocolError raised")
    assert runs > 100


def test_random_raw_bytes_with_handshake_prefix():
    runs = 0

    @SETTINGS
    @given(tail=st.binary(max_size=400), cuts=st.lists(st.integers(0, 500), max_size=8))
    def check(tail, cuts):
        nonlocal runs
        runs += 1
        data = b"\x13BitTorrent protocol" + tail
        msgs, failed = _outcome(data, cuts)
        if len(data) >= 68:
            assert isinstance(msgs[0], Handshake) if msgs else failed

    check()
    print(f"\nwire fuzz: {runs} handshake-prefixed random streams")
    assert runs > 100


def test_valid_streams_round_trip_in_any_split():
    runs = 0

    @SETTINGS
    @given(hs=handshakes, msgs=st.lists(messages, max_size=20),
           cuts=st.lists(st.integers(0, 5000), max_size=20))
    def check(hs, msgs, cuts):
        nonlocal runs
        runs += 1
        data = encode(hs) + b"".join(encode(m) for m in msgs)
        decoder = WireDecoder()
        assert _feed_split(decoder, data, cuts) == [hs, *msgs]
        assert decoder.buffered == 0

    check()
    print(f"\nwire fuzz: {runs} valid streams round-tripped")
    assert runs > 100

"""Peer wire protocol: exact bytes, streaming decode, every rejection, bitfields."""

from __future__ import annotations

import random

import pytest

from common import wire
from common.wire import (
    BLOCK_SIZE, DEFAULT_MAX_FRAME, HANDSHAKE_LEN, MAX_REQUEST, AllowedFast, Bitfield, Cancel,
    Choke, Extended, Handshake, Have, HaveAll, HaveNone, Interested, KeepAlive, NotInterested,
    Piece, Port, ProtocolError, RejectRequest, Request, SuggestPiece, Unchoke, WireDecoder,
    bitfield_from_indices, check_bitfield, encode, indices_from_bitfield, make_reserved,
    piece_header, supports_dht, supports_extended, supports_fast,
)

INFO_HASH = bytes(range(20))
PEER_ID = b"-SW0001-abcdefghijkl"

# Every message with its bytes written out by hand from BEP 3 / 5 / 6 / 10.
VECTORS = [
    (KeepAlive(), "00000000"),
    (Choke(), "00000001 00"),
    (Unchoke(), "00000001 01"),
    (Interested(), "00000001 02"),
    (NotInterested(), "00000001 03"),
    (Have(0x01020304), "00000005 04 01020304"),
    (Bitfield(b"\xff\x80"), "00000003 05 ff80"),
    (Request(1, 16384, 16384), "0000000d 06 00000001 00004000 00004000"),
    (Piece(2, 16384, b"abc"), "0000000c 07 00000002 00004000 616263"),
    (Cancel(1, 0, 16384), "0000000d 08 00000001 00000000 00004000"),
    (Port(6881), "00000003 09 1ae1"),
    (SuggestPiece(7), "00000005 0d 00000007"),
    (HaveAll(), "00000001 0e"),
    (HaveNone(), "00000001 0f"),
    (RejectRequest(3, 32768, 16384), "0000000d 10 00000003 00008000 00004000"),
    (AllowedFast(9), "00000005 11 00000009"),
    (Extended(0, b"d1:md6:ut_pexi1eee"),
     "00000014 14 00 64313a6d64363a75745f7065786931656565"),
]


def _hex(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


@pytest.mark.parametrize("msg,expected", VECTORS, ids=[type(m).__name__ for m, _ in VECTORS])
def test_encode_exact_bytes(msg, expected):
    assert encode(msg) == _hex(expected)


def test_request_vector_from_the_brief():
    assert encode(Request(1, 16384, 16384)) == (
        b"\x00\x00\x00\x0d\x06\x00\x00\x00\x01\x00\x00\x40\x00\x00\x00\x40\x00")


@pytest.mark.parametrize("msg,expected", VECTORS, ids=[type(m).__name__ for m, _ in VECTORS])
def test_decode_exact_bytes(msg, expected):
    assert WireDecoder(handshake=False).feed(_hex(expected)) == [msg]


def test_extended_vector_length_is_consistent():
    data = encode(Extended(0, b"d1:md6:ut_pexi1eee"))
    assert int.from_bytes(data[:4], "big") == len(data) - 4 == 2 + 18


def test_handshake_bytes():
    reserved = make_reserved(fast=True, extended=True)
    data = encode(Handshake(INFO_HASH, PEER_ID, reserved))
    assert len(data) == HANDSHAKE_LEN
    assert data == (b"\x13BitTorrent protocol" + b"\x00\x00\x00\x00\x00\x10\x00\x04"
                    + INFO_HASH + PEER_ID)
    assert WireDecoder().feed(data) == [Handshake(INFO_HASH, PEER_ID, reserved)]


def test_handshake_default_reserved_is_zero():
    assert encode(Handshake(INFO_HASH, PEER_ID))[20:28] == bytes(8)


def test_handshake_with_wrong_field_sizes_is_refused():
    with pytest.raises(ProtocolError, match="20-byte info_hash"):
        encode(Handshake(b"short", PEER_ID))


def test_encode_out_of_range_field_raises_protocol_error():
    with pytest.raises(ProtocolError, match="cannot encode"):
        encode(Have(-1))
    with pytest.raises(ProtocolError, match="cannot encode"):
        encode(Port(70000))
    with pytest.raises(ProtocolError, match="not a wire message"):
        encode("choke")  # type: ignore[arg-type]


def test_piece_header_matches_encoded_piece():
    block = bytes(range(256)) * 64
    header = piece_header(5, 32768, len(block))
    assert len(header) == 13
    assert header + block == encode(Piece(5, 32768, block))
    assert header == _hex("00004009 07 00000005 00008000")


def test_reserved_bits():
    assert make_reserved() == bytes(8)
    assert make_reserved(fast=True) == _hex("00000000 00000004")
    assert make_reserved(extended=True) == _hex("00000000 00100000")
    assert make_reserved(dht=True) == _hex("00000000 00000001")
    both = make_reserved(fast=True, extended=True)
    assert supports_fast(both) and supports_extended(both) and not supports_dht(both)
    assert not supports_fast(make_reserved(extended=True))
    assert not supports_extended(make_reserved(fast=True))
    # libtorrent's usual reserved bytes: extended + fast + DHT
    lt = _hex("0000000000100005")
    assert supports_fast(lt) and supports_extended(lt) and supports_dht(lt)


# --- streaming -------------------------------------------------------------------------------

def _sample_stream() -> tuple[list, bytes]:
    msgs = [Handshake(INFO_HASH, PEER_ID, make_reserved(fast=True))]
    msgs += [m for m, _ in VECTORS]
    msgs += [Piece(9, 0, bytes(BLOCK_SIZE)), KeepAlive(), Piece(9, BLOCK_SIZE, b"\x01" * 100),
             Bitfield(b""), Extended(3, b"x"), Piece(0, 0, b""), KeepAlive(), KeepAlive()]
    return msgs, b"".join(encode(m) for m in msgs)


def test_decode_one_byte_at_a_time():
    msgs, data = _sample_stream()
    decoder = WireDecoder()
    got = []
    for i in range(len(data)):
        got += decoder.feed(data[i:i + 1])
    assert got == msgs
    assert decoder.buffered == 0


def test_decode_random_splits():
    msgs, data = _sample_stream()
    rng = random.Random(1234)
    for _ in range(200):
        cuts = sorted(rng.sample(range(1, len(data)), rng.randint(1, 30)))
        decoder = WireDecoder()
        got = []
        for a, b in zip([0] + cuts, cuts + [len(data)]):
            got += decoder.feed(data[a:b])
        assert got == msgs


def test_decode_accepts_bytearray_and_memoryview_and_copies_them():
    msgs, data = _sample_stream()
    chunk = bytearray(data)
    decoder = WireDecoder()
    got = decoder.feed(memoryview(chunk)[:1000]) + decoder.feed(chunk[1000:])
    chunk[:] = bytes(len(chunk))    # the caller reuses its buffer: messages must not change
    assert got == msgs


def test_empty_feed_returns_nothing():
    decoder = WireDecoder()
    assert decoder.feed(b"") == []
    assert decoder.feed(encode(Handshake(INFO_HASH, PEER_ID))[:10]) == []
    assert decoder.feed(b"") == []
    assert decoder.buffered == 10


def test_two_decoders_fed_from_each_others_encoder_output():
    """A conversation: each side encodes, the other decodes, across random chunk sizes."""
    rng = random.Random(7)
    a_to_b, b_to_a = WireDecoder(), WireDecoder()
    hs_a = Handshake(INFO_HASH, b"A" * 20, make_reserved(fast=True, extended=True))
    hs_b = Handshake(INFO_HASH, b"B" * 20, make_reserved(fast=True))
    assert a_to_b.feed(encode(hs_a)) == [hs_a]
    assert b_to_a.feed(encode(hs_b)) == [hs_b]
    assert b_to_a.feed(encode(HaveAll())) == [HaveAll()]
    assert a_to_b.feed(encode(Interested())) == [Interested()]
    assert b_to_a.feed(encode(Unchoke())) == [Unchoke()]
    # A requests 64 blocks, B answers each one; bytes travel in random-size chunks.
    requests = [Request(i // 4, (i % 4) * BLOCK_SIZE, BLOCK_SIZE) for i in range(64)]
    received_requests = _transfer(requests, a_to_b, rng)
    assert received_requests == requests
    pieces = [Piece(r.index, r.begin, rng.randbytes(r.length)) for r in received_requests]
    assert _transfer(pieces, b_to_a, rng) == pieces


def _transfer(msgs, decoder, rng):
    data = b"".join(encode(m) for m in msgs)
    got, pos = [], 0
    while pos < len(data):
        step = rng.randint(1, 70000)
        got += decoder.feed(data[pos:pos + step])
        pos += step
    return got


def test_whole_frames_in_one_chunk_leave_nothing_buffered():
    data = b"".join(encode(Piece(1, i * BLOCK_SIZE, bytes([i]) * BLOCK_SIZE)) for i in range(8))
    decoder = WireDecoder(handshake=False)
    got = decoder.feed(data)
    assert [p.block[0] for p in got] == list(range(8))
    assert decoder.buffered == 0


def test_fed_blocks_own_their_bytes():
    data = bytearray(encode(Piece(1, 0, b"\x07" * 100)) + encode(Piece(1, 100, b"\x08" * 100)))
    decoder = WireDecoder(handshake=False)
    got = decoder.feed(data)
    data[20] = 0  # the caller reuses its buffer, and the decoder its own
    decoder.feed(encode(Piece(2, 0, b"\x09" * 200)))
    assert [type(p.block) for p in got] == [bytes, bytes]
    assert got[0].block == b"\x07" * 100 and got[1].block == b"\x08" * 100


def _read_into(decoder: WireDecoder, data: bytes) -> tuple[list, int]:
    """What a BufferedProtocol does: the socket writes into get_buffer(), then received()."""
    space = decoder.get_buffer()
    n = min(len(space), len(data))
    space[:n] = data[:n]
    return decoder.received(n), n


def test_socket_reads_land_in_the_decoder_buffer_and_blocks_are_views_of_it():
    data = b"".join(encode(Piece(3, i * BLOCK_SIZE, bytes([i]) * BLOCK_SIZE)) for i in range(160))
    decoder = WireDecoder(handshake=False)
    got, pos, sizes = [], 0, []
    while pos < len(data):
        msgs, n = _read_into(decoder, data[pos:])
        sizes.append(decoder.capacity)
        # a block is a view into the decoder's buffer, to be copied before the next read
        assert all(type(m.block) is memoryview for m in msgs)
        got += [(m.index, m.begin, bytes(m.block)) for m in msgs]
        pos += n
    assert got == [(3, i * BLOCK_SIZE, bytes([i]) * BLOCK_SIZE) for i in range(160)]
    assert decoder.buffered == 0
    # reads that fill the buffer double it, from 32 KiB up to RECEIVE_MAX and no further
    assert WireDecoder().capacity == wire.RECEIVE_MIN and max(sizes) == wire.RECEIVE_MAX


def test_a_connection_that_goes_quiet_gives_its_buffer_back():
    decoder = WireDecoder(handshake=False)
    fast = b"".join(encode(Piece(3, i * BLOCK_SIZE, b"f" * BLOCK_SIZE)) for i in range(160))
    pos = 0
    while pos < len(fast):                   # reads that fill the buffer: it doubles to the cap
        _, n = _read_into(decoder, fast[pos:])
        pos += n
    assert decoder.capacity == wire.RECEIVE_MAX
    capacities = []
    for i in range(6 * wire.QUIET_READS):    # then a Have now and then: it halves back
        assert _read_into(decoder, encode(Have(i)))[0] == [Have(i)]
        capacities.append(decoder.capacity)
    assert capacities[-1] == wire.RECEIVE_MIN
    assert capacities == sorted(capacities, reverse=True)
    assert capacities[wire.QUIET_READS - 2] == wire.RECEIVE_MAX   # not at the first small read


def test_a_frame_bigger_than_the_buffer_grows_it_then_it_shrinks_back():
    decoder = WireDecoder(handshake=False)
    bits = b"\xaa" * (1 << 20)               # (the largest frame: past RECEIVE_MAX)
    data = encode(Bitfield(bits)) + encode(Have(7))
    got, pos = [], 0
    while pos < len(data):
        msgs, n = _read_into(decoder, data[pos:pos + 10_000])   # a slow peer: small reads
        got += msgs
        pos += n
    assert got == [Bitfield(bits), Have(7)]
    decoder.get_buffer()
    assert decoder.capacity <= wire.RECEIVE_MAX
    # a fast sender (reads that fill the buffer) after an odd-sized big frame: the buffer,
    # grown to fit that frame, doubles no further than the cap
    decoder = WireDecoder(handshake=False)
    blocks = encode(Extended(1, b"z" * 150_000)) + b"".join(
        encode(Piece(0, i * BLOCK_SIZE, b"x" * BLOCK_SIZE)) for i in range(64))
    sizes, pos = [], 0
    while pos < len(blocks):
        _, n = _read_into(decoder, blocks[pos:])
        sizes.append(decoder.capacity)
        pos += n
    assert max(sizes) <= wire.RECEIVE_MAX


def test_maximum_sizes_are_accepted():
    decoder = WireDecoder(handshake=False)
    big_bits = b"\xff" * (1 << 20)
    assert decoder.feed(encode(Bitfield(big_bits))) == [Bitfield(big_bits)]
    assert decoder.feed(encode(Request(0, 0, MAX_REQUEST))) == [Request(0, 0, MAX_REQUEST)]
    assert decoder.feed(encode(Piece(0, 0, bytes(1 << 20)))) == [Piece(0, 0, bytes(1 << 20))]


# --- protocol errors -------------------------------------------------------------------------

def _fails(data: bytes, match: str, **kwargs) -> None:
    """The error is raised both for the whole input and when it is fed byte by byte."""
    with pytest.raises(ProtocolError, match=match):
        WireDecoder(**kwargs).feed(data)
    decoder = WireDecoder(**kwargs)
    with pytest.raises(ProtocolError, match=match):
        for i in range(len(data)):
            decoder.feed(data[i:i + 1])


def test_bad_pstrlen():
    _fails(b"\x14BitTorrent protocol" + bytes(48), "protocol name length 20")


def test_bad_pstr():
    _fails(b"\x13BitTorrent Protocol" + bytes(48), "is not 'BitTorrent protocol'")


def test_bad_pstr_fails_before_the_whole_handshake_arrives():
    with pytest.raises(ProtocolError):
        WireDecoder().feed(b"GET /announce")
    with pytest.raises(ProtocolError):
        WireDecoder().feed(b"\x00")


def test_oversized_length_prefix_fails_before_buffering_the_body():
    decoder = WireDecoder(handshake=False)
    with pytest.raises(ProtocolError, match="exceeds the limit"):
        decoder.feed((DEFAULT_MAX_FRAME + 1).to_bytes(4, "big"))
    decoder = WireDecoder(handshake=False)
    with pytest.raises(ProtocolError, match="exceeds the limit"):
        decoder.feed(b"\xff\xff\xff\xff\x07")
    _fails(b"\x7f\xff\xff\xff", "exceeds the limit", handshake=False)


def test_custom_max_frame():
    decoder = WireDecoder(handshake=False, max_frame=100)
    assert decoder.feed(encode(Bitfield(bytes(99)))) == [Bitfield(bytes(99))]
    _fails(encode(Bitfield(bytes(100))), "frame length 101 exceeds the limit of 100",
           handshake=False, max_frame=100)


@pytest.mark.parametrize("msg_id", [10, 11, 12, 18, 19, 21, 255])
def test_unknown_message_id(msg_id):
    _fails(b"\x00\x00\x00\x01" + bytes([msg_id]), f"unknown message id {msg_id}", handshake=False)


@pytest.mark.parametrize("frame,match", [
    ("00000002 00 00", "choke message needs a 0-byte payload, got 1"),
    ("00000002 0e 00", "have_all message needs a 0-byte payload"),
    ("00000004 04 000001", "have message needs a 4-byte payload, got 3"),
    ("00000006 04 0000000100", "have message needs a 4-byte payload, got 5"),
    ("0000000c 06 00000001 00000000 000040", "request message needs a 12-byte payload"),
    ("0000000e 08 00000001 00000000 00004000 00", "cancel message needs a 12-byte payload"),
    ("00000002 09 1a", "port message needs a 2-byte payload"),
    ("00000003 0d 0000", "suggest_piece message needs a 4-byte payload"),
    ("00000003 11 0000", "allowed_fast message needs a 4-byte payload"),
    ("0000000c 10 00000001 00000000 0000", "reject_request message needs a 12-byte payload"),
    ("00000008 07 00000001 000000", "piece message needs at least 8 payload bytes, got 7"),
    ("00000001 14", "extended message needs at least 1 payload bytes, got 0"),
])
def test_bad_payload_length(frame, match):
    _fails(_hex(frame), match, handshake=False)


@pytest.mark.parametrize("cls,msg_id", [(Request, 6), (Cancel, 8), (RejectRequest, 0x10)])
def test_request_lengths_are_bounded(cls, msg_id):
    too_big = _hex("0000000d") + bytes([msg_id]) + _hex("00000001 00000000 00020001")
    _fails(too_big, "for 131073 bytes, allowed 1..131072", handshake=False)
    zero = _hex("0000000d") + bytes([msg_id]) + _hex("00000001 00000000 00000000")
    _fails(zero, "for 0 bytes", handshake=False)
    small = WireDecoder(handshake=False, max_request=BLOCK_SIZE)
    with pytest.raises(ProtocolError, match="allowed 1..16384"):
        small.feed(encode(cls(0, 0, BLOCK_SIZE + 1)))


def test_error_after_good_messages_in_same_chunk():
    data = encode(Have(1)) + b"\x00\x00\x00\x01\x63"
    with pytest.raises(ProtocolError, match="unknown message id 99"):
        WireDecoder(handshake=False).feed(data)


# --- bitfields -------------------------------------------------------------------------------

def test_check_bitfield():
    check_bitfield(b"\xff\xc0", 10)
    check_bitfield(b"\xff", 8)
    check_bitfield(b"", 0)
    with pytest.raises(ProtocolError, match="is 1 bytes, expected 2 for 10 pieces"):
        check_bitfield(b"\xff", 10)
    with pytest.raises(ProtocolError, match="is 3 bytes, expected 2"):
        check_bitfield(b"\xff\xc0\x00", 10)
    with pytest.raises(ProtocolError, match="spare bits set beyond piece 9"):
        check_bitfield(b"\xff\xe0", 10)
    with pytest.raises(ProtocolError, match="spare bits"):
        check_bitfield(b"\x01", 7)


def test_bitfield_from_indices_bit_order():
    assert bitfield_from_indices([0], 10) == b"\x80\x00"
    assert bitfield_from_indices([9], 10) == b"\x00\x40"
    assert bitfield_from_indices([0, 7, 8], 9) == b"\x81\x80"
    assert bitfield_from_indices(range(10), 10) == b"\xff\xc0"
    assert bitfield_from_indices([], 0) == b""
    assert bitfield_from_indices([], 17) == bytes(3)


def test_bitfield_from_indices_rejects_out_of_range():
    for bad in (10, 16, 17, -1):
        with pytest.raises(ValueError, match="out of range 0..9"):
            bitfield_from_indices([1, bad], 10)


def test_indices_from_bitfield():
    assert indices_from_bitfield(b"\x81\x80", 9) == [0, 7, 8]
    assert indices_from_bitfield(b"\xff\xc0", 10) == list(range(10))
    assert indices_from_bitfield(b"", 0) == []
    with pytest.raises(ProtocolError, match="spare bits"):
        indices_from_bitfield(b"\xff\xff", 10)


def test_bitfield_round_trip_random():
    rng = random.Random(99)
    for num_pieces in list(range(0, 40)) + [1000, 4097]:
        chosen = sorted(rng.sample(range(num_pieces), rng.randint(0, num_pieces)))
        bits = bitfield_from_indices(chosen, num_pieces)
        check_bitfield(bits, num_pieces)
        assert indices_from_bitfield(bits, num_pieces) == chosen
        # cross-check against a naive per-bit reading
        naive = [i for i in range(num_pieces) if bits[i // 8] >> (7 - i % 8) & 1]
        assert naive == chosen


def test_bitfield_one_million_pieces_is_fast():
    import time
    num_pieces = 1_000_003
    evens = range(0, num_pieces, 2)
    start = time.perf_counter()
    bits = bitfield_from_indices(evens, num_pieces)
    back = indices_from_bitfield(bits, num_pieces)
    elapsed = time.perf_counter() - start
    assert bits[:3] == b"\xaa\xaa\xaa" and len(bits) == 125_001
    assert back == list(evens)
    assert elapsed < 1.0

"""BitTorrent peer wire protocol, sans-IO: message records, encoder and streaming decoder.

Covers BEP 3 (handshake and messages 0-8), BEP 5 (port), BEP 6 (fast extension) and the
BEP 10 extended-message frame. Nothing here touches a socket: a connection feeds the bytes it
reads into a `WireDecoder` and writes the bytes `encode` returns.

The decoder sits on the hot path of bulk transfers, so it parses frames straight out of the
caller's chunk when it can, keeps at most one partial frame in its own buffer, and copies each
Piece block exactly once.
"""

from __future__ import annotations

import itertools
import struct
from dataclasses import dataclass
from typing import Iterable, Union

__all__ = [
    "ProtocolError", "HANDSHAKE_LEN", "BLOCK_SIZE", "MAX_REQUEST", "DEFAULT_MAX_FRAME",
    "RECEIVE_MIN", "RECEIVE_MAX", "QUIET_READS",
    "PROTOCOL_NAME", "Handshake", "KeepAlive", "Choke", "Unchoke", "Interested",
    "NotInterested", "Have", "Bitfield", "Request", "Piece", "Cancel", "Port", "SuggestPiece",
    "HaveAll", "HaveNone", "RejectRequest", "AllowedFast", "Extended", "Message",
    "encode", "piece_header", "WireDecoder", "check_bitfield", "bitfield_from_indices",
    "indices_from_bitfield", "RESERVED_FAST", "RESERVED_EXTENDED", "RESERVED_DHT",
    "make_reserved", "supports_fast", "supports_extended", "supports_dht",
]


class ProtocolError(Exception):
    """The remote peer broke the wire protocol; the connection should be dropped."""


PROTOCOL_NAME = b"BitTorrent protocol"
HANDSHAKE_LEN = 68           # 1 + 19 + 8 reserved + 20 info_hash + 20 peer_id
BLOCK_SIZE = 16384           # the block size every client requests
MAX_REQUEST = 128 * 1024     # larger requests are refused by all mainstream clients
# A frame's length prefix may not exceed this: a 1 MiB payload (a bitfield for 8M pieces,
# or a generous extended message) plus the 13 bytes of a piece header.
DEFAULT_MAX_FRAME = (1 << 20) + 13
RECEIVE_MIN = 32 * 1024      # a connection's receive buffer starts at this size ...
# ... and grows up to this while reads keep filling it. A fast link's reads fill it: at
# 1 MiB the leecher's loop thread used 1.03 s of CPU per GiB against 1.13 s at 256 KiB
# (11 alternating runs; a quarter as many reads, each topping up the requests once).
RECEIVE_MAX = 1024 * 1024
QUIET_READS = 16             # small reads in a row before it halves again

_HANDSHAKE_PREFIX = bytes([len(PROTOCOL_NAME)]) + PROTOCOL_NAME

# Reserved-bit positions as (byte index, mask) into the 8 reserved handshake bytes.
RESERVED_FAST = (7, 0x04)        # BEP 6
RESERVED_EXTENDED = (5, 0x10)    # BEP 10
RESERVED_DHT = (7, 0x01)         # BEP 5


# ---------------------------------------------------------------------------------------------
# Message records

@dataclass(frozen=True, slots=True)
class Handshake:
    info_hash: bytes
    peer_id: bytes
    reserved: bytes = bytes(8)


@dataclass(frozen=True, slots=True)
class KeepAlive:
    pass


@dataclass(frozen=True, slots=True)
class Choke:
    pass


@dataclass(frozen=True, slots=True)
class Unchoke:
    pass


@dataclass(frozen=True, slots=True)
class Interested:
    pass


@dataclass(frozen=True, slots=True)
class NotInterested:
    pass


@dataclass(frozen=True, slots=True)
class Have:
    index: int


@dataclass(frozen=True, slots=True)
class Bitfield:
    bits: bytes


# The two messages decoded once per 16 KiB block, 65,536 times per GiB, are not frozen: a
# frozen dataclass sets each field through object.__setattr__, and built 5x slower
# (0.73 against 0.14 us here).
@dataclass(slots=True)
class Request:
    index: int
    begin: int
    length: int


@dataclass(slots=True)
class Piece:
    index: int
    begin: int
    block: bytes


@dataclass(frozen=True, slots=True)
class Cancel:
    index: int
    begin: int
    length: int


@dataclass(frozen=True, slots=True)
class Port:
    port: int


@dataclass(frozen=True, slots=True)
class SuggestPiece:
    index: int


@dataclass(frozen=True, slots=True)
class HaveAll:
    pass


@dataclass(frozen=True, slots=True)
class HaveNone:
    pass


@dataclass(frozen=True, slots=True)
class RejectRequest:
    index: int
    begin: int
    length: int


@dataclass(frozen=True, slots=True)
class AllowedFast:
    index: int


@dataclass(frozen=True, slots=True)
class Extended:
    ext_id: int
    payload: bytes


Message = Union[
    KeepAlive, Choke, Unchoke, Interested, NotInterested, Have, Bitfield, Request, Piece,
    Cancel, Port, SuggestPiece, HaveAll, HaveNone, RejectRequest, AllowedFast, Extended,
]

# Message ids on the wire.
CHOKE, UNCHOKE, INTERESTED, NOT_INTERESTED, HAVE, BITFIELD, REQUEST, PIECE, CANCEL, PORT = range(10)
SUGGEST, HAVE_ALL, HAVE_NONE, REJECT, ALLOWED_FAST = 0x0D, 0x0E, 0x0F, 0x10, 0x11
EXTENDED = 20

_NAMES = {
    CHOKE: "choke", UNCHOKE: "unchoke", INTERESTED: "interested",
    NOT_INTERESTED: "not_interested", HAVE: "have", BITFIELD: "bitfield", REQUEST: "request",
    PIECE: "piece", CANCEL: "cancel", PORT: "port", SUGGEST: "suggest_piece",
    HAVE_ALL: "have_all", HAVE_NONE: "have_none", REJECT: "reject_request",
    ALLOWED_FAST: "allowed_fast", EXTENDED: "extended",
}

# Payload size (bytes after the id) of every fixed-size message.
_FIXED_PAYLOAD = {
    CHOKE: 0, UNCHOKE: 0, INTERESTED: 0, NOT_INTERESTED: 0, HAVE: 4, REQUEST: 12, CANCEL: 12,
    PORT: 2, SUGGEST: 4, HAVE_ALL: 0, HAVE_NONE: 0, REJECT: 12, ALLOWED_FAST: 4,
}
# Minimum payload size of the variable-size ones.
_MIN_PAYLOAD = {BITFIELD: 0, PIECE: 8, EXTENDED: 1}

# Field-less messages are immutable, so the decoder hands out one shared instance of each.
_KEEP_ALIVE = KeepAlive()
_SINGLETONS = {
    CHOKE: Choke(), UNCHOKE: Unchoke(), INTERESTED: Interested(),
    NOT_INTERESTED: NotInterested(), HAVE_ALL: HaveAll(), HAVE_NONE: HaveNone(),
}

_U32 = struct.Struct(">I")
_U32_U32 = struct.Struct(">II")
_LEN_ID = struct.Struct(">IB")
_LEN_ID_U32 = struct.Struct(">IBI")
_LEN_ID_3U32 = struct.Struct(">IBIII")
_LEN_ID_U16 = struct.Struct(">IBH")
_LEN_ID_U8 = struct.Struct(">IBB")
_PIECE_HEADER = struct.Struct(">IBII")
_TRIPLE = struct.Struct(">III")
_U16 = struct.Struct(">H")


# ---------------------------------------------------------------------------------------------
# Encoding

def piece_header(index: int, begin: int, length: int) -> bytes:
    """The 13 bytes before a block, so a sender can write header and block without joining them."""
    try:
        return _PIECE_HEADER.pack(9 + length, PIECE, index, begin)
    except struct.error as exc:
        raise ProtocolError(f"cannot encode piece header ({index}, {begin}, {length}): {exc}") from None


def encode_requests(blocks: Iterable[tuple[int, int, int]]) -> bytes:
    """Many Request messages in one buffer: the downloader's hot path, no objects per block."""
    pack = _LEN_ID_3U32.pack
    return b"".join([pack(13, REQUEST, i, b, n) for i, b, n in blocks])


def _encode_handshake(msg: Handshake) -> bytes:
    if len(msg.reserved) != 8 or len(msg.info_hash) != 20 or len(msg.peer_id) != 20:
        raise ProtocolError(
            "handshake needs 8 reserved bytes, a 20-byte info_hash and a 20-byte peer_id, got "
            f"{len(msg.reserved)}/{len(msg.info_hash)}/{len(msg.peer_id)}")
    return b"".join((_HANDSHAKE_PREFIX, msg.reserved, msg.info_hash, msg.peer_id))


_ENCODERS = {
    KeepAlive: lambda m: bytes(4),
    Choke: lambda m: _LEN_ID.pack(1, CHOKE),
    Unchoke: lambda m: _LEN_ID.pack(1, UNCHOKE),
    Interested: lambda m: _LEN_ID.pack(1, INTERESTED),
    NotInterested: lambda m: _LEN_ID.pack(1, NOT_INTERESTED),
    Have: lambda m: _LEN_ID_U32.pack(5, HAVE, m.index),
    Bitfield: lambda m: _LEN_ID.pack(1 + len(m.bits), BITFIELD) + m.bits,
    Request: lambda m: _LEN_ID_3U32.pack(13, REQUEST, m.index, m.begin, m.length),
    Piece: lambda m: piece_header(m.index, m.begin, len(m.block)) + m.block,
    Cancel: lambda m: _LEN_ID_3U32.pack(13, CANCEL, m.index, m.begin, m.length),
    Port: lambda m: _LEN_ID_U16.pack(3, PORT, m.port),
    SuggestPiece: lambda m: _LEN_ID_U32.pack(5, SUGGEST, m.index),
    HaveAll: lambda m: _LEN_ID.pack(1, HAVE_ALL),
    HaveNone: lambda m: _LEN_ID.pack(1, HAVE_NONE),
    RejectRequest: lambda m: _LEN_ID_3U32.pack(13, REJECT, m.index, m.begin, m.length),
    AllowedFast: lambda m: _LEN_ID_U32.pack(5, ALLOWED_FAST, m.index),
    Extended: lambda m: _LEN_ID_U8.pack(2 + len(m.payload), EXTENDED, m.ext_id) + m.payload,
    Handshake: _encode_handshake,
}


def encode(msg: Message | Handshake) -> bytes:
    """The exact bytes of `msg` on the wire, length prefix included."""
    try:
        encoder = _ENCODERS[type(msg)]
    except KeyError:
        raise ProtocolError(f"not a wire message: {msg!r}") from None
    try:
        return bytes(encoder(msg))
    except struct.error as exc:
        raise ProtocolError(f"cannot encode {msg!r}: {exc}") from None


# ---------------------------------------------------------------------------------------------
# Decoding

class WireDecoder:
    """Turns a byte stream from one peer into messages.

    Two ways in. `feed(chunk)` takes chunks of any size and returns messages that own
    their bytes. For an `asyncio.BufferedProtocol`, `get_buffer()` and `received(n)` let
    the socket read straight into the decoder's buffer: a downloaded block is then copied
    once, from there into its piece, instead of also into a fresh `bytes` per read.

    `max_frame` bounds the length prefix (checked before any body byte is buffered, so a peer
    cannot make us allocate gigabytes); `max_request` bounds Request/Cancel/Reject lengths.
    After a ProtocolError the stream is unrecoverable and the decoder must be discarded.
    """

    __slots__ = ("_rx", "_start", "_end", "_offered", "_want", "_quiet", "_want_handshake",
                 "_max_frame", "_max_request")

    def __init__(self, *, handshake: bool = True, max_frame: int = DEFAULT_MAX_FRAME,
                 max_request: int = MAX_REQUEST) -> None:
        # _rx[_start:_end] is an incomplete unit (the handshake or one frame) held back
        self._rx = bytearray(RECEIVE_MIN)
        self._start = self._end = 0
        self._offered = 0                # free bytes the last get_buffer() handed out
        self._want = RECEIVE_MIN         # the size the next get_buffer() gives the buffer
        self._quiet = 0                  # reads in a row that used under an eighth of it
        self._want_handshake = handshake
        self._max_frame = max_frame
        self._max_request = max_request

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete frame held back until the rest arrives."""
        return self._end - self._start

    @property
    def capacity(self) -> int:
        """Size of the receive buffer now: the memory this connection holds."""
        return len(self._rx)

    def get_buffer(self) -> memoryview:
        """Where the next bytes go; write some into it, then call `received` with how many.

        The buffer doubles (up to RECEIVE_MAX) after a read that filled it, so a fast link
        gets big reads, and halves (down to RECEIVE_MIN) after QUIET_READS reads in a row
        that each used less than an eighth of it, so a connection that went quiet gives
        the memory back (100 in-process peers: 9.4 MB each without halving, 4.7 MB with
        32 KiB buffers). One small read is not enough: a fast link has them now and then,
        and halving on each cost 1,800 resizes per GiB. It also
        grows to fit a frame bigger than itself (a large bitfield), and shrinks after it.
        """
        rx, start, end = self._rx, self._start, self._end
        size = len(rx)
        if self._want != size or size - end < RECEIVE_MIN // 4:
            pending = end - start
            want = max(self._want, self._unit_size())
            if want != size:
                resized = bytearray(want)
                resized[:pending] = rx[start:end]
                self._rx = rx = resized
            elif start:
                rx[:pending] = rx[start:end]       # at most one frame's bytes move
            self._start, self._end = 0, pending
            end = pending
            self._want = len(rx)
        self._offered = len(rx) - end
        return memoryview(rx)[end:]

    def received(self, nbytes: int) -> list[Handshake | Message]:
        """The messages completed by `nbytes` new bytes in the last `get_buffer()`.

        Piece blocks are views into the decoder's buffer, valid until the next
        `get_buffer()`: use (copy) them before reading again.
        """
        size = len(self._rx)
        self._quiet = self._quiet + 1 if nbytes < size // 8 else 0
        if nbytes >= self._offered:                  # a fast sender: more was waiting
            self._want = min(2 * size, RECEIVE_MAX)
        elif size > RECEIVE_MAX:                     # a big frame is done with
            self._want = RECEIVE_MAX
        elif self._quiet >= QUIET_READS:             # a slow one for a while now
            self._want = max(RECEIVE_MIN, size // 2)
            self._quiet = 0
        self._end += nbytes
        out: list[Handshake | Message] = []
        pos = self._parse(memoryview(self._rx), self._start, self._end, out)
        if pos == self._end:
            self._start = self._end = 0
        else:
            self._start = pos
        return out

    def feed(self, data: bytes | bytearray | memoryview) -> list[Handshake | Message]:
        """Return every message completed by `data`, in order; ProtocolError on bad input."""
        out: list[Handshake | Message] = []
        view = memoryview(data)
        pos, end = 0, view.nbytes
        while pos < end:
            space = self.get_buffer()
            n = min(len(space), end - pos)
            space[:n] = view[pos:pos + n]
            for msg in self.received(n):
                if type(msg) is Piece:       # blocks outlive the buffer: copy them out
                    msg = Piece(msg.index, msg.begin, bytes(msg.block))
                out.append(msg)
            pos += n
        return out

    def _unit_size(self) -> int:
        """Size of the incomplete unit at the front (its header was checked by _parse)."""
        if self._want_handshake:
            return HANDSHAKE_LEN
        if self._end - self._start < 4:
            return 4
        return 4 + _U32.unpack_from(self._rx, self._start)[0]

    def _check_header(self, length: int, msg_id: int) -> None:
        """Reject a frame by its length prefix and id alone, before its body is buffered."""
        if length > self._max_frame:
            raise ProtocolError(f"frame length {length} exceeds the limit of {self._max_frame}")
        payload = length - 1
        fixed = _FIXED_PAYLOAD.get(msg_id)
        if fixed is not None:
            if payload != fixed:
                raise ProtocolError(
                    f"{_NAMES[msg_id]} message needs a {fixed}-byte payload, got {payload}")
            return
        least = _MIN_PAYLOAD.get(msg_id)
        if least is None:
            raise ProtocolError(f"unknown message id {msg_id}")
        if payload < least:
            raise ProtocolError(
                f"{_NAMES[msg_id]} message needs at least {least} payload bytes, got {payload}")

    def _parse(self, view: memoryview, pos: int, end: int, out: list) -> int:
        """Append every complete unit in view[pos:end] to `out`; return where the rest starts.

        Headers of a trailing incomplete frame are validated too, so bad input fails early.
        """
        if self._want_handshake:
            _check_handshake_prefix(view[pos:min(end, pos + len(_HANDSHAKE_PREFIX))])
            if end - pos < HANDSHAKE_LEN:
                return pos
            out.append(Handshake(info_hash=view[pos + 28:pos + 48].tobytes(),
                                 peer_id=view[pos + 48:pos + 68].tobytes(),
                                 reserved=view[pos + 20:pos + 28].tobytes()))
            pos += HANDSHAKE_LEN
            self._want_handshake = False

        append = out.append
        max_frame = self._max_frame
        unpack_len_id = _LEN_ID.unpack_from
        unpack_u32_u32 = _U32_U32.unpack_from
        while end - pos >= 5:
            length, msg_id = unpack_len_id(view, pos)
            stop = pos + 4 + length
            if msg_id == PIECE and 9 <= length <= max_frame:
                # The bulk of all traffic: checked inline, the block a view (no copy).
                if stop > end:
                    return pos
                index, begin = unpack_u32_u32(view, pos + 5)
                append(Piece(index, begin, view[pos + 13:stop]))
                pos = stop
                continue
            if length == 0:
                append(_KEEP_ALIVE)
                pos += 4
                continue
            self._check_header(length, msg_id)
            if stop > end:
                return pos
            append(self._decode_body(msg_id, view, pos + 5, stop))
            pos = stop
        if end - pos == 4:
            length = _U32.unpack_from(view, pos)[0]
            if length == 0:
                append(_KEEP_ALIVE)
                pos += 4
            elif length > max_frame:
                raise ProtocolError(f"frame length {length} exceeds the limit of {max_frame}")
        return pos

    def _decode_body(self, msg_id: int, view: memoryview, start: int, stop: int) -> Message:
        """Build one non-Piece message whose header has already been validated."""
        single = _SINGLETONS.get(msg_id)
        if single is not None:
            return single
        if msg_id == HAVE:
            return Have(_U32.unpack_from(view, start)[0])
        if msg_id == BITFIELD:
            return Bitfield(view[start:stop].tobytes())
        if msg_id in (REQUEST, CANCEL, REJECT):
            index, begin, length = _TRIPLE.unpack_from(view, start)
            if length == 0 or length > self._max_request:
                raise ProtocolError(
                    f"{_NAMES[msg_id]} for {length} bytes, allowed 1..{self._max_request}")
            cls = Request if msg_id == REQUEST else Cancel if msg_id == CANCEL else RejectRequest
            return cls(index, begin, length)
        if msg_id == PORT:
            return Port(_U16.unpack_from(view, start)[0])
        if msg_id == SUGGEST:
            return SuggestPiece(_U32.unpack_from(view, start)[0])
        if msg_id == ALLOWED_FAST:
            return AllowedFast(_U32.unpack_from(view, start)[0])
        if msg_id == EXTENDED:
            return Extended(view[start], view[start + 1:stop].tobytes())
        raise ProtocolError(f"unknown message id {msg_id}")  # unreachable after _check_header


def _check_handshake_prefix(head: bytes | bytearray | memoryview) -> None:
    """Fail on the first wrong byte of the 20-byte protocol prefix, not after 68 bytes."""
    n = min(len(head), len(_HANDSHAKE_PREFIX))
    if bytes(head[:n]) != _HANDSHAKE_PREFIX[:n]:
        got = bytes(head[:n])
        if got[:1] != _HANDSHAKE_PREFIX[:1]:
            raise ProtocolError(f"handshake: protocol name length {got[0]}, expected 19")
        raise ProtocolError(f"handshake: protocol name {got[1:]!r} is not 'BitTorrent protocol'")


# ---------------------------------------------------------------------------------------------
# Reserved bits

def make_reserved(fast: bool = False, extended: bool = False, dht: bool = False) -> bytes:
    """The 8 reserved handshake bytes advertising the given extensions."""
    reserved = bytearray(8)
    for wanted, (byte, mask) in ((fast, RESERVED_FAST), (extended, RESERVED_EXTENDED),
                                 (dht, RESERVED_DHT)):
        if wanted:
            reserved[byte] |= mask
    return bytes(reserved)


def _has_bit(reserved: bytes, bit: tuple[int, int]) -> bool:
    byte, mask = bit
    return len(reserved) == 8 and bool(reserved[byte] & mask)


def supports_fast(reserved: bytes) -> bool:
    return _has_bit(reserved, RESERVED_FAST)


def supports_extended(reserved: bytes) -> bool:
    return _has_bit(reserved, RESERVED_EXTENDED)


def supports_dht(reserved: bytes) -> bool:
    return _has_bit(reserved, RESERVED_DHT)


# ---------------------------------------------------------------------------------------------
# Bitfields (piece 0 is the high bit of byte 0)

# _BIT_OF[k][b] is bit k (0 = most significant) of byte b, as 0 or 1: lets bytes.translate
# spread one bit position of every byte at C speed.
_BIT_OF = [bytes((b >> (7 - k)) & 1 for b in range(256)) for k in range(8)]


def check_bitfield(bits: bytes, num_pieces: int) -> None:
    """ProtocolError unless `bits` is exactly ceil(num_pieces / 8) bytes with zero spare bits."""
    expected = (num_pieces + 7) // 8
    if len(bits) != expected:
        raise ProtocolError(
            f"bitfield is {len(bits)} bytes, expected {expected} for {num_pieces} pieces")
    spare = expected * 8 - num_pieces
    if spare and bits[-1] & ((1 << spare) - 1):
        raise ProtocolError(f"bitfield has spare bits set beyond piece {num_pieces - 1}")


def bitfield_from_indices(indices: Iterable[int], num_pieces: int) -> bytes:
    """Pack piece indices into a wire bitfield; ValueError for an index out of range."""
    nbytes = (num_pieces + 7) // 8
    flags = bytearray(nbytes * 8)        # one 0/1 byte per piece
    try:
        for index in indices:
            if index < 0:
                raise IndexError
            flags[index] = 1
    except IndexError:
        raise ValueError(f"piece index {index} out of range 0..{num_pieces - 1}") from None
    if any(flags[num_pieces:]):
        raise ValueError(f"piece index out of range 0..{num_pieces - 1}")
    # Every byte of each strided slice is 0/1, so shifted copies never carry into a neighbour.
    packed = 0
    for k in range(8):
        packed |= int.from_bytes(flags[k::8], "big") << (7 - k)
    return packed.to_bytes(nbytes, "big")


def indices_from_bitfield(bits: bytes, num_pieces: int) -> list[int]:
    """The sorted piece indices set in a (validated) bitfield."""
    check_bitfield(bits, num_pieces)
    flags = bytearray(len(bits) * 8)
    for k in range(8):
        flags[k::8] = bits.translate(_BIT_OF[k])
    return list(itertools.compress(range(num_pieces), flags))

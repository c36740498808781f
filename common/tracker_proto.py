"""Tracker protocols: HTTP announce/scrape (BEP 3, 7, 23, 48) and UDP (BEP 15).

Pure encode/decode for both sides, no sockets. The tracker and the peer share
these functions, so a request built by one is exactly what the other parses.

HTTP queries carry raw 20-byte info-hashes and peer ids. They are
percent-encoded byte by byte (only RFC 3986 unreserved characters stay as
they are) and parsed from the *raw* query string, value by value (`_unquote`):
decoding the query to text first would mangle the binary values.
"""

from __future__ import annotations

import binascii
import codecs
import functools
import socket
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from urllib.parse import quote_from_bytes, unquote_to_bytes, urlsplit, urlunsplit

from common.bencoding import BencodeError, bdecode, bencode

__all__ = [
    "TrackerProtocolError", "TrackerFailure", "PeerAddr", "AnnounceRequest",
    "AnnounceResponse", "ScrapeStats", "EVENTS", "build_announce_url",
    "parse_announce_query", "encode_announce_response", "encode_compact_announce",
    "decode_announce_response",
    "encode_failure", "scrape_url_for", "build_scrape_url", "parse_scrape_query",
    "encode_scrape_response", "decode_scrape_response", "encode_compact_peers",
    "decode_compact_peers", "compact_peer", "PROTOCOL_ID", "ACTION_CONNECT", "ACTION_ANNOUNCE",
    "ACTION_SCRAPE", "ACTION_ERROR", "UDP_EVENTS", "UDP_REQUEST_HEAD", "unpack_udp_announce",
    "UDP_ANNOUNCE_RESPONSE_HEAD", "UdpConnectRequest",
    "UdpConnectResponse", "UdpAnnounceRequest", "UdpAnnounceResponse", "UdpScrapeRequest",
    "UdpScrapeResponse", "UdpError", "encode_udp", "decode_udp_request",
    "decode_udp_response",
]


class TrackerProtocolError(ValueError):
    """A request or response that does not follow the tracker protocol."""


class TrackerFailure(Exception):
    """The tracker answered with a `failure reason`: it understood us and said no."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"tracker failure: {reason}")
        self.reason = reason


# -- records ----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class PeerAddr:
    ip: str            # dotted IPv4 or IPv6 text, as socket.inet_ntop writes it
    port: int
    peer_id: bytes | None = None


EVENTS = ("", "started", "completed", "stopped")


@dataclass(slots=True)
class AnnounceRequest:
    info_hash: bytes
    peer_id: bytes
    port: int
    uploaded: int = 0
    downloaded: int = 0
    left: int = 0
    event: str = ""            # one of EVENTS
    numwant: int | None = None  # None: the tracker's default
    compact: bool = True
    key: int | None = None      # 32-bit; lets a tracker recognise a client whose IP changed


@dataclass(slots=True)
class AnnounceResponse:
    interval: int
    peers: list[PeerAddr] = field(default_factory=list)
    complete: int = 0           # seeders
    incomplete: int = 0         # leechers
    min_interval: int | None = None
    warning: str | None = None


@dataclass(frozen=True, slots=True)
class ScrapeStats:
    complete: int
    downloaded: int
    incomplete: int


# -- compact peers (BEP 23, BEP 7) ------------------------------------------------------

def _pack_ip(ip: str) -> bytes:
    """4 bytes for IPv4 (also for IPv4-mapped IPv6 text), 16 for IPv6."""
    try:
        return socket.inet_pton(socket.AF_INET, ip)
    except OSError:
        pass
    try:
        packed = socket.inet_pton(socket.AF_INET6, ip)
    except (OSError, ValueError):
        raise TrackerProtocolError(f"not an IP address: {ip!r}") from None
    if packed[:12] == b"\0" * 10 + b"\xff\xff":
        return packed[12:]
    return packed


@functools.lru_cache(maxsize=4096)
def _pack_ip_cached(ip: str) -> bytes:
    return _pack_ip(ip)


def compact_peer(ip: str, port: int) -> bytes:
    """One peer's compact form: 6 bytes (IPv4) or 18 (IPv6). Many peers share a few IPs
    (NAT, one host running many clients), so the parsed addresses are cached."""
    if not 0 <= port <= 0xFFFF:
        raise TrackerProtocolError(f"port out of range: {port}")
    return _pack_ip_cached(ip) + port.to_bytes(2, "big")


def encode_compact_peers(peers: Iterable[PeerAddr]) -> tuple[bytes, bytes]:
    """(`peers`, `peers6`): 6 bytes per IPv4 peer, 18 per IPv6 peer (ip, big-endian port)."""
    v4: list[bytes] = []
    v6: list[bytes] = []
    for peer in peers:
        packed = compact_peer(peer.ip, peer.port)
        (v4 if len(packed) == 6 else v6).append(packed)
    return b"".join(v4), b"".join(v6)


def decode_compact_peers(data: bytes, ipv6: bool = False) -> list[PeerAddr]:
    family, size = (socket.AF_INET6, 18) if ipv6 else (socket.AF_INET, 6)
    if len(data) % size:
        raise TrackerProtocolError(
            f"compact peer list of {len(data)} bytes is not a multiple of {size}")
    return [
        PeerAddr(socket.inet_ntop(family, data[i:i + size - 2]),
                 int.from_bytes(data[i + size - 2:i + size], "big"))
        for i in range(0, len(data), size)
    ]


# -- HTTP announce -----------------------------------------------------------------------

def _quote(value: bytes | str) -> str:
    """Percent-encode every byte except the RFC 3986 unreserved set (A-Z a-z 0-9 - . _ ~)."""
    if isinstance(value, str):
        value = value.encode()
    return quote_from_bytes(value, safe="")


def _add_query(url: str, params: list[tuple[str, bytes | str]]) -> str:
    parts = urlsplit(url)
    extra = "&".join(f"{name}={_quote(value)}" for name, value in params)
    query = f"{parts.query}&{extra}" if parts.query else extra
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def build_announce_url(announce_url: str, req: AnnounceRequest) -> str:
    """The full GET URL for an HTTP announce; any query already in the URL is kept."""
    params: list[tuple[str, bytes | str]] = [
        ("info_hash", req.info_hash), ("peer_id", req.peer_id), ("port", str(req.port)),
        ("uploaded", str(req.uploaded)), ("downloaded", str(req.downloaded)),
        ("left", str(req.left)), ("compact", "1" if req.compact else "0"),
    ]
    if req.event:
        params.append(("event", req.event))
    if req.numwant is not None:
        params.append(("numwant", str(req.numwant)))
    if req.key is not None:
        params.append(("key", f"{req.key & 0xFFFFFFFF:08X}"))
    return _add_query(announce_url, params)


_MAX_QUERY = 8192


def _query_bytes(raw_query: str | bytes) -> bytes:
    """The raw query as bytes, refused if it is not ASCII or too long."""
    if isinstance(raw_query, str):
        if not raw_query.isascii():
            raise TrackerProtocolError("query string must be ASCII (percent-encode binary values)")
        raw_query = raw_query.encode("ascii")
    if len(raw_query) > _MAX_QUERY:
        raise TrackerProtocolError(f"query string longer than {_MAX_QUERY} bytes")
    return raw_query


def _pairs(parts: list[bytes]) -> Iterator[tuple[bytes, bytes]]:
    """(name, value) of each non-empty `name=value` part: the name percent-decoded, the
    value still raw, for the reader to decode if it uses it."""
    for part in parts:
        if part:
            name, _, value = part.partition(b"=")
            yield _unquote(name), value


_PERCENTS = b"%" * 64


def _unquote(raw: bytes) -> bytes:
    """Percent-decode one query part ('+' is a space, as in HTML forms).

    The tracker's hot path: turning each %XX into \\xXX lets the C codec decode the
    whole value at once (5x faster than `unquote_to_bytes`, which stays the way for
    malformed escapes such as a lone '%', kept as they are).
    """
    if b"+" in raw:
        raw = raw.replace(b"+", b" ")
    if b"%" not in raw:
        return raw
    n = len(raw) // 3
    if raw[::3] == _PERCENTS[:n] and 3 * n == len(raw):    # every byte escaped, as in most hashes
        digits = raw.replace(b"%", b"")
        if len(digits) == 2 * n:
            try:
                return binascii.unhexlify(digits)
            except binascii.Error:
                pass
    try:
        return codecs.escape_decode(raw.replace(b"\\", b"\\\\").replace(b"%", b"\\x"))[0]
    except ValueError:
        return unquote_to_bytes(raw)


def _parse_uint(name: str, value: bytes) -> int:
    if not value.isdigit():
        value = _unquote(value)     # (rare: digits needlessly escaped)
    if not value.isdigit() or len(value) > 20:
        raise TrackerProtocolError(f"{name} must be a non-negative integer, got {value[:30]!r}")
    return int(value)


def _parse_hash(name: str, value: bytes) -> bytes:
    if len(value) != 20:
        raise TrackerProtocolError(f"{name} must be 20 bytes, got {len(value)}")
    return value


# Parameter names the announces of real clients use, none of them needing escapes: a query
# made only of these, each once, takes the fast path in `_announce_fields`.
_PLAIN_NAMES = frozenset(name.encode() for name in (
    "info_hash", "peer_id", "port", "uploaded", "downloaded", "left", "event", "compact",
    "numwant", "key", "no_peer_id", "ip", "ipv4", "ipv6", "trackerid", "supportcrypto",
    "requirecrypto", "cryptoport", "corrupt", "redundant", "azudp", "azhttp", "natmapped"))


def _announce_fields(raw_query: str | bytes) -> dict[bytes, bytes]:
    """Parameter name -> raw value (still percent-encoded); a name given twice is an error.

    The tracker's hot path: a query of known names is split in one pass (8 parameters:
    1 us, against 8 us when every name and value is looked at for escapes)."""
    parts = _query_bytes(raw_query).split(b"&")
    fields = {}
    for part in parts:
        name, _, value = part.partition(b"=")
        fields[name] = value
    if len(fields) == len(parts) and _PLAIN_NAMES.issuperset(fields):
        return fields
    fields = {}             # unusual names (escaped, unknown or empty) or a repeat: the slow way
    for name, value in _pairs(parts):
        if name in fields:
            raise TrackerProtocolError(f"parameter {name.decode('utf-8', 'replace')} given twice")
        fields[name] = value
    return fields


def parse_announce_query(raw_query: str | bytes) -> AnnounceRequest:
    """Parse and validate the raw query string of GET /announce (the `ip` parameter is ignored)."""
    get = _announce_fields(raw_query).get
    info_hash, peer_id, port = get(b"info_hash"), get(b"peer_id"), get(b"port")
    for name, value in (("info_hash", info_hash), ("peer_id", peer_id), ("port", port)):
        if value is None:
            raise TrackerProtocolError(f"missing parameter {name}")
    port_number = _parse_uint("port", port)
    if not 1 <= port_number <= 0xFFFF:
        raise TrackerProtocolError(f"port must be 1..65535, got {port_number}")
    event = _unquote(get(b"event", b"")).decode("ascii", "replace")
    if event == "paused":       # BEP 21: an upload-only client; a regular announce for us
        event = ""
    if event not in EVENTS:
        raise TrackerProtocolError(f"unknown event {event[:30]!r}")
    numwant, compact, key = get(b"numwant"), get(b"compact", b"1"), get(b"key")
    return AnnounceRequest(
        info_hash=_parse_hash("info_hash", _unquote(info_hash)),
        peer_id=_parse_hash("peer_id", _unquote(peer_id)),
        port=port_number, uploaded=_parse_uint("uploaded", get(b"uploaded", b"0")),
        downloaded=_parse_uint("downloaded", get(b"downloaded", b"0")),
        left=_parse_uint("left", get(b"left", b"0")), event=event,
        numwant=None if numwant is None else _parse_uint("numwant", numwant),
        compact=_unquote(compact) != b"0",
        key=None if key is None else _parse_key(_unquote(key)))


def _parse_key(value: bytes | None) -> int | None:
    """Clients send the key as up to 8 hex digits; it is opaque, so anything else is dropped."""
    if not value or len(value) > 8:
        return None
    try:
        return int(value, 16)
    except ValueError:
        return None


def _bstr(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return b"%d:%s" % (len(raw), raw)


def encode_announce_response(resp: AnnounceResponse, compact: bool = True) -> bytes:
    """Bencoded announce answer: compact `peers`/`peers6` (BEP 23/7) or the list-of-dicts form."""
    if compact:
        return encode_compact_announce(resp, *encode_compact_peers(resp.peers))
    peer_list = []
    for peer in resp.peers:
        entry: dict[str, object] = {"ip": peer.ip, "port": peer.port}
        if peer.peer_id is not None:
            entry["peer id"] = peer.peer_id
        peer_list.append(entry)
    return _announce_dict(resp, b"5:peers" + bencode(peer_list))


def encode_compact_announce(resp: AnnounceResponse, peers4: bytes, peers6: bytes) -> bytes:
    """The compact answer from already packed peers (`resp.peers` is not looked at)."""
    peers = b"5:peers" + _bstr(peers4)
    if peers6:
        peers += b"6:peers6" + _bstr(peers6)
    return _announce_dict(resp, peers)


def _announce_dict(resp: AnnounceResponse, peers: bytes) -> bytes:
    """Written out by hand, keys in sorted order, because it is the tracker's hot path."""
    parts = [b"d8:completei%de10:incompletei%de8:intervali%de" % (
        resp.complete, resp.incomplete, resp.interval)]
    if resp.min_interval is not None:
        parts.append(b"12:min intervali%de" % resp.min_interval)
    parts.append(peers)
    if resp.warning is not None:
        parts.append(b"15:warning message" + _bstr(resp.warning))
    parts.append(b"e")
    return b"".join(parts)


def encode_failure(reason: str) -> bytes:
    return bencode({"failure reason": reason})


def _decode_tracker_dict(data: bytes) -> dict:
    """Bencoded dict from a tracker; raises TrackerFailure if it carries a `failure reason`."""
    try:
        # Real trackers do not always sort their keys; that is harmless in a response.
        value = bdecode(data, strict_order=False)
    except BencodeError as exc:
        raise TrackerProtocolError(f"response is not bencoded: {exc}") from None
    if not isinstance(value, dict):
        raise TrackerProtocolError("response is not a bencoded dictionary")
    if b"failure reason" in value:
        reason = value[b"failure reason"]
        raise TrackerFailure(_text(reason) if isinstance(reason, bytes) else repr(reason))
    return value


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def _get_int(d: dict, key: bytes, default: int | None = None) -> int:
    value = d.get(key, default)
    if not isinstance(value, int) or value < 0:
        if value is None:
            raise TrackerProtocolError(f"response lacks {key.decode()!r}")
        raise TrackerProtocolError(f"{key.decode()!r} must be a non-negative integer")
    return value


def _peer_from_dict(entry: object) -> PeerAddr:
    if not isinstance(entry, dict):
        raise TrackerProtocolError("peer list entry is not a dictionary")
    ip, port, peer_id = entry.get(b"ip"), entry.get(b"port"), entry.get(b"peer id")
    if not isinstance(ip, bytes) or not isinstance(port, int) or not 0 < port <= 0xFFFF:
        raise TrackerProtocolError("peer entry needs 'ip' (string) and 'port' (1..65535)")
    if peer_id is not None and not isinstance(peer_id, bytes):
        raise TrackerProtocolError("peer entry 'peer id' must be a string")
    return PeerAddr(_text(ip), port, peer_id)


def decode_announce_response(data: bytes) -> AnnounceResponse:
    """Parse a tracker's announce answer (compact or dict peers); TrackerFailure on `failure reason`."""
    d = _decode_tracker_dict(data)
    peers_field = d.get(b"peers", b"")
    if isinstance(peers_field, bytes):
        peers = decode_compact_peers(peers_field)
    elif isinstance(peers_field, list):
        peers = [_peer_from_dict(entry) for entry in peers_field]
    else:
        raise TrackerProtocolError("'peers' must be a string or a list")
    peers6 = d.get(b"peers6", b"")
    if not isinstance(peers6, bytes):
        raise TrackerProtocolError("'peers6' must be a string")
    peers += decode_compact_peers(peers6, ipv6=True)
    warning = d.get(b"warning message")
    return AnnounceResponse(
        interval=_get_int(d, b"interval"),
        peers=peers,
        complete=_get_int(d, b"complete", 0),
        incomplete=_get_int(d, b"incomplete", 0),
        min_interval=_get_int(d, b"min interval") if b"min interval" in d else None,
        warning=_text(warning) if isinstance(warning, bytes) else None,
    )


# -- HTTP scrape (BEP 48) -----------------------------------------------------------------

def scrape_url_for(announce_url: str) -> str | None:
    """BEP 48: the scrape URL replaces a last path part starting with `announce`; else None.

    UDP trackers scrape at the same address they announce at, so a udp:// URL is returned as is.
    """
    parts = urlsplit(announce_url)
    if parts.scheme == "udp":
        return announce_url
    head, slash, last = parts.path.rpartition("/")
    if not slash or not last.startswith("announce"):
        return None
    path = f"{head}/scrape{last[len('announce'):]}"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, parts.fragment))


def build_scrape_url(scrape_url: str, info_hashes: Sequence[bytes]) -> str:
    return _add_query(scrape_url, [("info_hash", h) for h in info_hashes])


def parse_scrape_query(raw_query: str | bytes) -> list[bytes]:
    """The info-hashes asked for, in order, without repeats; empty means "all" (tracker may refuse)."""
    hashes: list[bytes] = []
    for name, value in _pairs(_query_bytes(raw_query).split(b"&")):
        if name == b"info_hash":
            value = _parse_hash("info_hash", _unquote(value))
            if value not in hashes:
                hashes.append(value)
    return hashes


def encode_scrape_response(files: dict[bytes, ScrapeStats]) -> bytes:
    return bencode({"files": {
        ih: {"complete": s.complete, "downloaded": s.downloaded, "incomplete": s.incomplete}
        for ih, s in files.items()}})


def decode_scrape_response(data: bytes) -> dict[bytes, ScrapeStats]:
    d = _decode_tracker_dict(data)
    files = d.get(b"files")
    if not isinstance(files, dict):
        raise TrackerProtocolError("scrape response lacks a 'files' dictionary")
    out: dict[bytes, ScrapeStats] = {}
    for ih, stats in files.items():
        if len(ih) != 20 or not isinstance(stats, dict):
            raise TrackerProtocolError("scrape 'files' entries must be 20-byte hash -> dictionary")
        out[ih] = ScrapeStats(complete=_get_int(stats, b"complete", 0),
                              downloaded=_get_int(stats, b"downloaded", 0),
                              incomplete=_get_int(stats, b"incomplete", 0))
    return out


# -- UDP (BEP 15) -------------------------------------------------------------------------

PROTOCOL_ID = 0x41727101980
ACTION_CONNECT, ACTION_ANNOUNCE, ACTION_SCRAPE, ACTION_ERROR = 0, 1, 2, 3
UDP_EVENTS = {"": 0, "completed": 1, "started": 2, "stopped": 3}
UDP_EVENT_NAMES = {number: name for name, number in UDP_EVENTS.items()}
MAX_UDP_SCRAPE = 74   # BEP 15: about 74 hashes fit in one packet

# The packet layouts are public so that a tracker's hot path can unpack and pack them directly.
UDP_REQUEST_HEAD = struct.Struct(">QII")   # protocol/connection id, action, transaction
_ANNOUNCE_REQ = struct.Struct(">QII20s20sqqqIIIiH")  # 98 bytes
_HEADER = struct.Struct(">II")              # action, transaction id
UDP_ANNOUNCE_RESPONSE_HEAD = struct.Struct(">IIIII")
#                                           # action, transaction, interval, leechers, seeders
_SCRAPE_ENTRY = struct.Struct(">III")       # seeders, completed, leechers


@dataclass(frozen=True, slots=True)
class UdpConnectRequest:
    transaction_id: int


@dataclass(frozen=True, slots=True)
class UdpConnectResponse:
    transaction_id: int
    connection_id: int


@dataclass(frozen=True, slots=True)
class UdpAnnounceRequest:
    connection_id: int
    transaction_id: int
    info_hash: bytes
    peer_id: bytes
    downloaded: int
    left: int
    uploaded: int
    event: int        # UDP_EVENTS value
    ip: int           # 0: use the sender's address (trackers ignore it anyway)
    key: int
    num_want: int     # -1: tracker's default
    port: int


@dataclass(frozen=True, slots=True)
class UdpAnnounceResponse:
    transaction_id: int
    interval: int
    leechers: int
    seeders: int
    peers: list[PeerAddr]


@dataclass(frozen=True, slots=True)
class UdpScrapeRequest:
    connection_id: int
    transaction_id: int
    info_hashes: list[bytes]


@dataclass(frozen=True, slots=True)
class UdpScrapeResponse:
    transaction_id: int
    stats: list[ScrapeStats]


@dataclass(frozen=True, slots=True)
class UdpError:
    transaction_id: int
    message: str


UdpMessage = (UdpConnectRequest | UdpConnectResponse | UdpAnnounceRequest | UdpAnnounceResponse
              | UdpScrapeRequest | UdpScrapeResponse | UdpError)


def encode_udp(msg: UdpMessage) -> bytes:
    """One UDP packet. Announce peers are 6 bytes each if IPv4, 18 if IPv6 (never mixed)."""
    try:
        return _encode_udp(msg)
    except struct.error as exc:
        raise TrackerProtocolError(f"cannot encode {type(msg).__name__}: {exc}") from None


def _encode_udp(msg: UdpMessage) -> bytes:
    if isinstance(msg, UdpConnectRequest):
        return UDP_REQUEST_HEAD.pack(PROTOCOL_ID, ACTION_CONNECT, msg.transaction_id)
    if isinstance(msg, UdpConnectResponse):
        return _HEADER.pack(ACTION_CONNECT, msg.transaction_id) + msg.connection_id.to_bytes(8, "big")
    if isinstance(msg, UdpAnnounceRequest):
        _check_hash(msg.info_hash, "info_hash")
        _check_hash(msg.peer_id, "peer_id")
        return _ANNOUNCE_REQ.pack(
            msg.connection_id, ACTION_ANNOUNCE, msg.transaction_id, msg.info_hash, msg.peer_id,
            msg.downloaded, msg.left, msg.uploaded, msg.event, msg.ip, msg.key, msg.num_want,
            msg.port)
    if isinstance(msg, UdpAnnounceResponse):
        v4, v6 = encode_compact_peers(msg.peers)
        if v4 and v6:
            raise TrackerProtocolError("a UDP announce response holds IPv4 or IPv6 peers, not both")
        return UDP_ANNOUNCE_RESPONSE_HEAD.pack(ACTION_ANNOUNCE, msg.transaction_id, msg.interval,
                                   msg.leechers, msg.seeders) + v4 + v6
    if isinstance(msg, UdpScrapeRequest):
        for h in msg.info_hashes:
            _check_hash(h, "info_hash")
        return UDP_REQUEST_HEAD.pack(msg.connection_id, ACTION_SCRAPE, msg.transaction_id) + b"".join(
            msg.info_hashes)
    if isinstance(msg, UdpScrapeResponse):
        return _HEADER.pack(ACTION_SCRAPE, msg.transaction_id) + b"".join(
            _SCRAPE_ENTRY.pack(s.complete, s.downloaded, s.incomplete) for s in msg.stats)
    if isinstance(msg, UdpError):
        return _HEADER.pack(ACTION_ERROR, msg.transaction_id) + msg.message.encode()
    raise TypeError(f"not a UDP tracker message: {type(msg).__name__}")


def _check_hash(value: bytes, name: str) -> None:
    if not isinstance(value, bytes) or len(value) != 20:
        raise TrackerProtocolError(f"{name} must be 20 bytes")


def unpack_udp_announce(data: bytes) -> tuple:
    """An announce request's fields in packet order (connection id, action, transaction id, ...),
    as a plain tuple: the tracker's hot path, cheaper than a record."""
    if len(data) < _ANNOUNCE_REQ.size:
        raise TrackerProtocolError(
            f"UDP announce of {len(data)} bytes is shorter than {_ANNOUNCE_REQ.size}")
    return _ANNOUNCE_REQ.unpack_from(data)


def decode_udp_request(data: bytes) -> UdpConnectRequest | UdpAnnounceRequest | UdpScrapeRequest:
    """What a UDP tracker receives. Extra bytes after an announce (BEP 41 options) are ignored."""
    if len(data) < 16:
        raise TrackerProtocolError(f"UDP request of {len(data)} bytes is shorter than 16")
    connection_id, action, transaction_id = UDP_REQUEST_HEAD.unpack_from(data)
    if action == ACTION_CONNECT:
        if connection_id != PROTOCOL_ID:
            raise TrackerProtocolError("connect request without the BEP 15 protocol id")
        return UdpConnectRequest(transaction_id)
    if action == ACTION_ANNOUNCE:
        (connection_id, _, transaction_id, *rest) = unpack_udp_announce(data)
        return UdpAnnounceRequest(connection_id, transaction_id, *rest)
    if action == ACTION_SCRAPE:
        body = data[16:]
        if not body or len(body) % 20:
            raise TrackerProtocolError(
                f"UDP scrape needs a whole number of 20-byte hashes, got {len(body)} bytes")
        return UdpScrapeRequest(connection_id, transaction_id,
                                [body[i:i + 20] for i in range(0, len(body), 20)])
    raise TrackerProtocolError(f"unknown UDP request action {action}")


def decode_udp_response(
    data: bytes, ipv6: bool = False,
) -> UdpConnectResponse | UdpAnnounceResponse | UdpScrapeResponse | UdpError:
    """What a UDP tracker client receives; `ipv6` says the peers are 18-byte entries."""
    if len(data) < 8:
        raise TrackerProtocolError(f"UDP response of {len(data)} bytes is shorter than 8")
    action, transaction_id = _HEADER.unpack_from(data)
    if action == ACTION_CONNECT:
        if len(data) < 16:
            raise TrackerProtocolError("UDP connect response shorter than 16 bytes")
        return UdpConnectResponse(transaction_id, int.from_bytes(data[8:16], "big"))
    if action == ACTION_ANNOUNCE:
        if len(data) < UDP_ANNOUNCE_RESPONSE_HEAD.size:
            raise TrackerProtocolError("UDP announce response shorter than 20 bytes")
        _, _, interval, leechers, seeders = UDP_ANNOUNCE_RESPONSE_HEAD.unpack_from(data)
        peers = decode_compact_peers(data[UDP_ANNOUNCE_RESPONSE_HEAD.size:], ipv6=ipv6)
        return UdpAnnounceResponse(transaction_id, interval, leechers, seeders, peers)
    if action == ACTION_SCRAPE:
        body = data[8:]
        if len(body) % 12:
            raise TrackerProtocolError("UDP scrape response is not a whole number of 12-byte entries")
        stats = [ScrapeStats(complete=s, downloaded=c, incomplete=lc)
                 for s, c, lc in _SCRAPE_ENTRY.iter_unpack(body)]
        return UdpScrapeResponse(transaction_id, stats)
    if action == ACTION_ERROR:
        return UdpError(transaction_id, _text(data[8:]))
    raise TrackerProtocolError(f"unknown UDP response action {action}")

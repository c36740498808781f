"""Bencoding (BEP 3): a strict, bounded decoder and a thin encoder.

Why a hand-written decoder: a torrent is identified by the SHA-1 of its
bencoded `info` dict, so two byte strings that decode to the same value must
not both be accepted as "the same" torrent. The decoder therefore accepts
only the canonical encoding (no leading zeros, no "-0", sorted unique keys)
and rejects anything else, with an error naming the problem and its offset.

It is also bounded, because it reads untrusted input from the network:
the input size is capped (`max_size`), nesting depth is capped
(`max_depth`) and the decoder is iterative, so neither "llll..." nor a
declared length like "99999999999:" can recurse deeply. Memory and time grow
with the number of values rather than with input bytes (2 input bytes "le"
become a 64-byte Python list), so that number is capped too (`max_values`).
Strings are taken as slices (no per-byte loop), so a 2 MB `pieces` string
costs one copy and counts as one value.

Key order: `strict_order=True` (the default) rejects unsorted keys. Some
torrent generators write the *outer* dict of a .torrent with unsorted keys;
that is harmless because only the `info` dict is hashed, and it is hashed
as the raw bytes of the file, never re-encoded. So metainfo parsing, when a
strict decode fails, retries with `strict_order=False` and then decodes the
`info` bytes alone strictly: the dict that gets hashed must be canonical.
Duplicate keys are rejected in both modes: they make a dict ambiguous.
"""

from __future__ import annotations

import re

import bencodepy

__all__ = ["BencodeError", "KeyOrderError", "bdecode", "bdecode_with_spans", "bencode"]

DEFAULT_MAX_SIZE = 32 * 1024 * 1024
DEFAULT_MAX_DEPTH = 64
# Every string, integer, list and dict counts, keys included. A torrent of 1M files
# (31 MB, near metainfo's 32 MB cap) has 6M values and needs ~870 MB to parse; 8M of the
# costliest values (empty lists, "le") need ~620 MB, where 32 MB of them would be 16M
# lists and 1.3 GB. libtorrent by default refuses more than 3M tokens (a torrent has
# more of its tokens than of our values).
DEFAULT_MAX_VALUES = 8_000_000

# Longest integer literal accepted (libtorrent itself stops at 64-bit values).
_MAX_INT_DIGITS = 64
# Longest string-length prefix accepted: 20 digits is far beyond any max_size.
_MAX_LEN_DIGITS = 20

_INT_RE = re.compile(rb"0|-?[1-9][0-9]*")
_LEN_RE = re.compile(rb"0|[1-9][0-9]*")

_I, _L, _D, _E, _COLON = b"i"[0], b"l"[0], b"d"[0], b"e"[0], b":"[0]
_DIGITS = frozenset(b"0123456789")


class BencodeError(ValueError):
    """Input is not canonical bencoding, or a value cannot be bencoded."""


class KeyOrderError(BencodeError):
    """Only key order was wrong so far: a `strict_order=False` decode may still succeed."""


class _DictFrame:
    """A dict being decoded: entries so far, the pending key, the previous key."""

    __slots__ = ("entries", "key", "last_key", "value_start")

    def __init__(self) -> None:
        self.entries: dict[bytes, object] = {}
        self.key: bytes | None = None
        self.last_key: bytes | None = None
        self.value_start = 0


def bdecode(
    data: bytes,
    *,
    max_size: int = DEFAULT_MAX_SIZE,
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_values: int = DEFAULT_MAX_VALUES,
    strict_order: bool = True,
) -> object:
    """Decode one complete bencoded value; strings become bytes, dict keys bytes."""
    value, _ = _decode(data, max_size, max_depth, max_values, strict_order, want_spans=False)
    return value


def bdecode_with_spans(
    data: bytes,
    *,
    max_size: int = DEFAULT_MAX_SIZE,
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_values: int = DEFAULT_MAX_VALUES,
    strict_order: bool = True,
) -> tuple[dict, dict[bytes, tuple[int, int]]]:
    """Decode a top-level dict and return the (start, end) byte span of each of its values.

    This is how the info-hash is computed on the `info` dict exactly as it
    appears in the file: `data[start:end]`.
    """
    value, spans = _decode(data, max_size, max_depth, max_values, strict_order, want_spans=True)
    assert isinstance(value, dict)
    return value, spans


def _decode(
    data: bytes,
    max_size: int,
    max_depth: int,
    max_values: int,
    strict_order: bool,
    want_spans: bool,
) -> tuple[object, dict[bytes, tuple[int, int]]]:
    if isinstance(data, (bytearray, memoryview)):
        data = bytes(data)
    if not isinstance(data, bytes):
        raise TypeError(f"bdecode needs bytes, got {type(data).__name__}")
    size = len(data)
    if size > max_size:
        raise BencodeError(f"input of {size} bytes exceeds max_size {max_size} at offset 0")
    if want_spans and size and data[0] != _D:
        raise BencodeError("top-level value must be a dictionary at offset 0")

    spans: dict[bytes, tuple[int, int]] = {}
    stack: list[list | _DictFrame] = []
    pos = 0
    values = 0
    while True:
        if pos >= size:
            raise BencodeError(f"truncated input: unexpected end at offset {pos}")
        start = pos
        parent = stack[-1] if stack else None
        expecting_key = isinstance(parent, _DictFrame) and parent.key is None
        token = data[pos]
        if token != _E:
            values += 1
            if values > max_values:
                raise BencodeError(f"more than max_values {max_values} values at offset {start}")

        if token == _E and parent is not None:
            pos += 1
            if isinstance(parent, _DictFrame):
                if parent.key is not None:
                    raise BencodeError(
                        f"dict key {parent.key!r} has no value at offset {start}"
                    )
                value: object = parent.entries
            else:
                value = parent
            stack.pop()
        elif expecting_key and token not in _DIGITS:
            raise BencodeError(f"dict key must be a byte string at offset {start}")
        elif token == _L or token == _D:
            if len(stack) >= max_depth:
                raise BencodeError(f"nesting deeper than max_depth {max_depth} at offset {start}")
            stack.append([] if token == _L else _DictFrame())
            pos += 1
            continue
        elif token == _I:
            value, pos = _decode_int(data, pos)
        elif token in _DIGITS:
            value, pos = _decode_bytes(data, pos)
        else:
            raise BencodeError(f"unexpected byte {bytes([token])!r} at offset {start}")

        # `value` is complete: hand it to its container, or finish.
        if not stack:
            if pos != size:
                raise BencodeError(f"trailing data at offset {pos}")
            return value, spans
        parent = stack[-1]
        if isinstance(parent, list):
            parent.append(value)
        elif parent.key is None:
            key = value
            assert isinstance(key, bytes)
            if key in parent.entries:
                raise BencodeError(f"duplicate dict key {key!r} at offset {start}")
            if strict_order and parent.last_key is not None and key < parent.last_key:
                raise KeyOrderError(f"dict key {key!r} out of order at offset {start}")
            parent.key = key
            parent.last_key = key
            parent.value_start = pos
        else:
            parent.entries[parent.key] = value
            if want_spans and len(stack) == 1:
                spans[parent.key] = (parent.value_start, pos)
            parent.key = None


def _decode_int(data: bytes, pos: int) -> tuple[int, int]:
    """Decode "i<digits>e" starting at `pos`; return (value, position after 'e')."""
    end = data.find(b"e", pos + 1, pos + 2 + _MAX_INT_DIGITS)
    if end < 0:
        if data.find(b"e", pos + 1) < 0:
            raise BencodeError(f"truncated integer at offset {pos}")
        raise BencodeError(f"integer longer than {_MAX_INT_DIGITS} digits at offset {pos}")
    literal = data[pos + 1 : end]
    if not _INT_RE.fullmatch(literal):
        raise BencodeError(f"invalid integer {literal[:24]!r} at offset {pos}")
    return int(literal), end + 1


def _decode_bytes(data: bytes, pos: int) -> tuple[bytes, int]:
    """Decode "<length>:<bytes>" starting at `pos`; return (bytes, position after them)."""
    colon = data.find(b":", pos, pos + _MAX_LEN_DIGITS + 1)
    if colon < 0:
        raise BencodeError(f"invalid or truncated string length at offset {pos}")
    literal = data[pos:colon]
    if not _LEN_RE.fullmatch(literal):
        raise BencodeError(f"invalid string length {literal!r} at offset {pos}")
    length = int(literal)
    start = colon + 1
    if length > len(data) - start:
        raise BencodeError(
            f"string length {length} exceeds the {len(data) - start} bytes left at offset {pos}"
        )
    return data[start : start + length], start + length


def bencode(obj: object) -> bytes:
    """Encode str/bytes/int/list/tuple/dict; str becomes UTF-8, dict keys are sorted.

    bencode.py does the encoding; this wrapper first checks the value so that
    bool, float, None and other types raise BencodeError instead of being
    silently coerced (bencode.py turns True into i1e) or failing with KeyError,
    and so that {"a": .., b"a": ..} is caught as a duplicate key.
    """
    return bencodepy.encode(_canonical(obj, 0))


_MAX_ENCODE_DEPTH = 500


def _canonical(obj: object, depth: int) -> object:
    """`obj` rebuilt from exact bytes/int/list/dict types: bencode.py dispatches on exact type."""
    if depth > _MAX_ENCODE_DEPTH:
        raise BencodeError(f"cannot bencode: nesting deeper than {_MAX_ENCODE_DEPTH}")
    if isinstance(obj, bool):
        raise BencodeError("cannot bencode bool (use 0 or 1)")
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, str):
        return _utf8(obj)
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return bytes(obj)
    if isinstance(obj, (list, tuple)):
        return [_canonical(item, depth + 1) for item in obj]
    if isinstance(obj, dict):
        out: dict[bytes, object] = {}
        for key, value in obj.items():
            if isinstance(key, str):
                key = _utf8(key)
            elif isinstance(key, (bytes, bytearray)):
                key = bytes(key)
            else:
                raise BencodeError(f"cannot bencode dict key of type {type(key).__name__}")
            if key in out:
                raise BencodeError(f"cannot bencode: duplicate dict key {key!r}")
            out[key] = _canonical(value, depth + 1)
        return out
    raise BencodeError(f"cannot bencode value of type {type(obj).__name__}")


def _utf8(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise BencodeError(f"cannot bencode string that is not valid UTF-8: {exc.reason}") from None

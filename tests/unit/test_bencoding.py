"""Strict bencode decoder and the bencode.py-backed encoder."""

from __future__ import annotations

import os
import time
from collections import OrderedDict

import pytest

from common.bencoding import BencodeError, bdecode, bdecode_with_spans, bencode


# --------------------------------------------------------------------------- decoding


@pytest.mark.parametrize(
    "data, expected",
    [
        (b"i0e", 0),
        (b"i42e", 42),
        (b"i-7e", -7),
        (b"i123456789012345678901234567890e", 123456789012345678901234567890),
        (b"0:", b""),
        (b"4:spam", b"spam"),
        (b"3:\x00\xff:", b"\x00\xff:"),
        (b"le", []),
        (b"de", {}),
        (b"l4:spami3ee", [b"spam", 3]),
        (b"d3:cow3:moo4:spam4:eggse", {b"cow": b"moo", b"spam": b"eggs"}),
        (b"d1:ad1:bl1:ci-1ed1:dleeeee", {b"a": {b"b": [b"c", -1, {b"d": []}]}}),
        (b"d0:i1e1:ai2ee", {b"": 1, b"a": 2}),
    ],
)
def test_decodes_valid_values(data, expected):
    assert bdecode(data) == expected


def test_strings_are_bytes_and_keys_are_bytes():
    value = bdecode(b"d4:name5:hello4:tagsl1:xee")
    assert list(value) == [b"name", b"tags"]
    assert type(value[b"name"]) is bytes
    assert type(value[b"tags"][0]) is bytes


def test_accepts_bytearray_and_memoryview():
    assert bdecode(bytearray(b"l1:ae")) == [b"a"]
    assert type(bdecode(bytearray(b"1:a"))) is bytes
    assert bdecode(memoryview(b"i5e")) == 5


def test_refuses_text_input():
    with pytest.raises(TypeError):
        bdecode("i1e")  # type: ignore[arg-type]


def test_error_type_is_a_value_error():
    assert issubclass(BencodeError, ValueError)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "unexpected end at offset 0"),
        (b"i03e", "invalid integer b'03' at offset 0"),
        (b"i-0e", "invalid integer b'-0' at offset 0"),
        (b"i-03e", "invalid integer b'-03' at offset 0"),
        (b"ie", "invalid integer b'' at offset 0"),
        (b"i-e", "invalid integer b'-' at offset 0"),
        (b"i+1e", "invalid integer b'+1' at offset 0"),
        (b"i 1e", "invalid integer b' 1' at offset 0"),
        (b"i1_0e", "invalid integer b'1_0' at offset 0"),
        (b"i1.5e", "invalid integer b'1.5' at offset 0"),
        (b"i12", "truncated integer at offset 0"),
        (b"i" + b"1" * 65 + b"e", "integer longer than 64 digits at offset 0"),
        (b"03:abc", "invalid string length b'03' at offset 0"),
        (b"l00:e", "invalid string length b'00' at offset 1"),
        (b"-1:a", "unexpected byte b'-' at offset 0"),
        (b"5:ab", "string length 5 exceeds the 2 bytes left at offset 0"),
        (b"3abc", "invalid or truncated string length at offset 0"),
        (b"1 :a", "invalid string length b'1 ' at offset 0"),
        (b"i1ei2e", "trailing data at offset 3"),
        (b"4:spam\n", "trailing data at offset 6"),
        (b"le!", "trailing data at offset 2"),
        (b"e", "unexpected byte b'e' at offset 0"),
        (b"x", "unexpected byte b'x' at offset 0"),
        (b"l", "unexpected end at offset 1"),
        (b"li1e", "unexpected end at offset 4"),
        (b"d1:a", "unexpected end at offset 4"),
        (b"d1:ai1e", "unexpected end at offset 7"),
        (b"d1:ae", "dict key b'a' has no value at offset 4"),
        (b"d1:bi1e1:ai2ee", "dict key b'a' out of order at offset 7"),
        (b"d2:abi1e1:ai2ee", "dict key b'a' out of order at offset 8"),
        (b"d1:ai1e1:ai2ee", "duplicate dict key b'a' at offset 7"),
        (b"di1ei2ee", "dict key must be a byte string at offset 1"),
        (b"dlei2ee", "dict key must be a byte string at offset 1"),
        (b"d1:ai1edeee", "dict key must be a byte string at offset 7"),
        (b"ld1:b1:c1:a1:bee", "dict key b'a' out of order at offset 8"),
    ],
)
def test_rejects_non_canonical_input(data, message):
    with pytest.raises(BencodeError) as err:
        bdecode(data)
    assert message in str(err.value)


def test_unsorted_keys_allowed_only_when_asked():
    data = b"d4:spami1e3:cowi2ee"
    with pytest.raises(BencodeError, match="out of order"):
        bdecode(data)
    assert bdecode(data, strict_order=False) == {b"spam": 1, b"cow": 2}


def test_duplicate_keys_rejected_even_when_order_is_lenient():
    with pytest.raises(BencodeError, match="duplicate dict key b'a' at offset 13"):
        bdecode(b"d1:ai1e1:bi1e1:ai2ee", strict_order=False)


def test_keys_sort_as_raw_bytes():
    # b"Z" (0x5a) < b"a" (0x61) < b"\xff": byte order, not text or case order.
    assert bdecode(b"d1:Zi1e1:ai2e1:\xffi3ee") == {b"Z": 1, b"a": 2, b"\xff": 3}
    with pytest.raises(BencodeError):
        bdecode(b"d1:ai2e1:Zi1ee")


def test_max_size_limits_input_length():
    data = b"10:" + b"x" * 10
    assert bdecode(data, max_size=len(data)) == b"x" * 10
    with pytest.raises(BencodeError, match="input of 13 bytes exceeds max_size 12 at offset 0"):
        bdecode(data, max_size=12)


def test_max_depth_limits_nesting():
    assert bdecode(b"l" * 64 + b"e" * 64) is not None
    with pytest.raises(BencodeError, match="nesting deeper than max_depth 64 at offset 64"):
        bdecode(b"l" * 65 + b"e" * 65)
    assert bdecode(b"ld1:aleee", max_depth=3) == [{b"a": []}]
    with pytest.raises(BencodeError, match="max_depth 3 at offset 6"):
        bdecode(b"ld1:alleeee", max_depth=3)


def test_large_max_depth_does_not_recurse():
    nested = b"l" * 5000 + b"e" * 5000
    value = bdecode(nested, max_depth=10_000)
    depth = 1
    while value:
        value, depth = value[0], depth + 1
    assert depth == 5000


def test_deep_nesting_and_huge_lengths_fail_fast():
    started = time.perf_counter()
    for data in (b"l" * 100_000, b"d1:a" * 50_000, b"99999999999:", b"l99999999999999:xe"):
        with pytest.raises(BencodeError):
            bdecode(data)
    assert time.perf_counter() - started < 0.5


def test_decoding_100k_pieces_is_fast():
    pieces = os.urandom(20 * 100_000)
    data = b"d6:pieces" + str(len(pieces)).encode() + b":" + pieces + b"e"
    started = time.perf_counter()
    assert bdecode(data) == {b"pieces": pieces}
    assert time.perf_counter() - started < 0.1


# --------------------------------------------------------------------------- spans


def test_spans_locate_each_top_level_value():
    data = b"d8:announce3:url4:infod4:name1:xe3:numi7ee"
    value, spans = bdecode_with_spans(data)
    assert value == {b"announce": b"url", b"info": {b"name": b"x"}, b"num": 7}
    assert spans == {b"announce": (11, 16), b"info": (22, 33), b"num": (38, 41)}
    assert data[slice(*spans[b"info"])] == b"d4:name1:xe"
    assert data[slice(*spans[b"announce"])] == b"3:url"
    assert data[slice(*spans[b"num"])] == b"i7e"


def test_spans_ignore_nested_dicts():
    data = b"d1:ad1:bi1ee1:cl1:dee"
    _, spans = bdecode_with_spans(data)
    assert spans == {b"a": (4, 12), b"c": (15, 20)}


def test_spans_follow_unsorted_keys_when_lenient():
    data = b"d4:infod1:xi1ee1:ai2ee"
    _, spans = bdecode_with_spans(data, strict_order=False)
    assert data[slice(*spans[b"info"])] == b"d1:xi1ee"


@pytest.mark.parametrize("data", [b"le", b"i1e", b"4:spam", b""])
def test_spans_need_a_top_level_dict(data):
    with pytest.raises(BencodeError, match="at offset 0"):
        bdecode_with_spans(data)


def test_spans_still_strict():
    with pytest.raises(BencodeError, match="trailing data at offset 2"):
        bdecode_with_spans(b"dee")


# --------------------------------------------------------------------------- encoding


def test_encodes_exact_bytes_with_sorted_keys():
    value = {"spam": [1, -2, b"\x00"], "cow": "moo", b"a": {}, "list": (0, "é")}
    assert bencode(value) == b"d1:ade3:cow3:moo4:listli0e2:\xc3\xa9e4:spamli1ei-2e1:\x00ee"


def test_encoder_sorts_mixed_str_and_bytes_keys_by_bytes():
    assert bencode({"b": 1, b"a": 2, "\xe9": 3, "Z": 4}) == b"d1:Zi4e1:ai2e1:bi1e2:\xc3\xa9i3ee"


def test_encoder_accepts_subclasses_and_bytearray():
    class Key(str):
        pass

    assert bencode(OrderedDict([(Key("b"), bytearray(b"x")), ("a", 1)])) == b"d1:ai1e1:b1:xe"


@pytest.mark.parametrize(
    "value, message",
    [
        (True, "cannot bencode bool"),
        ([1, False], "cannot bencode bool"),
        (1.5, "type float"),
        (None, "type NoneType"),
        ({"a": None}, "type NoneType"),
        ({1: 2}, "dict key of type int"),
        ({"a": 1, b"a": 2}, "duplicate dict key b'a'"),
        ({1, 2}, "type set"),
        ("\udc80", "not valid UTF-8"),
    ],
)
def test_encoder_refuses_unencodable_values(value, message):
    with pytest.raises(BencodeError, match=message):
        bencode(value)


def test_round_trip():
    value = {b"a": [1, -1, 0, b"", [[], {}]], b"big": 2**80, b"k\xff": {b"x": b"\x00" * 300}}
    assert bdecode(bencode(value)) == value

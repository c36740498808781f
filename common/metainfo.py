""".torrent files (BEP 3 metainfo, with BEP 12 announce-list, BEP 19 url-list, BEP 27 private).

Parsing is defensive because a .torrent names the files we are about to
write: every path component is checked so that no torrent can write outside
its folder (`..`, absolute paths, drive letters, separators, NUL), two
files can never land on the same path (BEP 47 padding files, never written,
may), and no path is deeper or longer than a file system can hold. Any
problem is a MetainfoError with a one-line message saying where
(`info.files[2].path[0]`) and what.

The info-hash is SHA-1 over the `info` dict exactly as it appears in the
file (see bencoding.bdecode_with_spans), never over a re-encoding.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from common.bencoding import (
    BencodeError,
    KeyOrderError,
    bdecode,
    bdecode_with_spans,
    bencode,
)

__all__ = [
    "CREATED_BY",
    "FileEntry",
    "Metainfo",
    "MetainfoError",
    "create_metainfo",
    "default_piece_length",
    "load_metainfo",
    "parse_metainfo",
]

CREATED_BY = "swarm/0.1"
HASH_LEN = 20
MIN_PIECE_LENGTH = 16 * 1024
# Every piece costs each peer one `have` from every other peer (about 20 us of Python each):
# 16 KiB pieces of a 32 MiB file in a 33-peer swarm spent 40 % of all CPU on them.
MIN_DEFAULT_PIECE_LENGTH = 64 * 1024
MAX_DEFAULT_PIECE_LENGTH = 16 * 1024 * 1024
TARGET_MAX_PIECES = 2000
# Largest .torrent file we read: a 2 MB `pieces` string already means 100k pieces.
MAX_TORRENT_SIZE = 32 * 1024 * 1024
# Deepest `path` list accepted. Real torrents nest a few dozen folders at most, and a
# 4095-byte path holds 2048 folders at most anyway; storage creates folders with
# os.makedirs, which recurses once per missing folder (Python stops at 1000).
MAX_PATH_COMPONENTS = 255
# Linux's PATH_MAX: no system call takes a longer path, its final NUL included.
PATH_MAX = 4096
# The longest file or folder name Linux's file systems (and macOS's) take, in bytes. A torrent
# made on Windows may name up to 255 UTF-16 units: 765 bytes of CJK text. A longer name is
# stored cut as libtorrent cuts it (disk_name), so both clients put such a file under the
# same name and either can seed what the other fetched.
NAME_MAX = 255
NAME_CUT = 240          # the bytes kept: up to the character that reaches this many,
EXTENSION_BYTES = 9     # then the extension, a dot in the name's last this many bytes
_READ_CHUNK = 1024 * 1024


class MetainfoError(ValueError):
    """The .torrent is malformed or unsafe, or a torrent cannot be created."""


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One file of the torrent and where its bytes sit in the concatenated data."""

    path: tuple[str, ...]  # relative to the output folder: (name,) or (name, *parts)
    length: int
    offset: int
    pad: bool = False      # BEP 47 padding (attr "p"): zeros, never stored nor fetched

    @property
    def disk_path(self) -> tuple[str, ...]:
        """Where it is stored: `path` with names too long for the disk cut (disk_name)."""
        return tuple(map(disk_name, self.path))


def torrent_file_name(name: str) -> str:
    """The .torrent's own file name for a torrent called `name` (cut if too long)."""
    return disk_name(f"{name}.torrent")


def disk_name(name: str) -> str:
    """A file or folder name as it is stored: as it is, if the disk takes it; else the bytes
    up to the character that reaches NAME_CUT, then its extension (libtorrent's cut, which
    libtorrent makes from 240 bytes on; 240-255-byte names are kept whole here, as a user's
    disk holds them)."""
    if len(name) <= NAME_MAX // 4:      # (4 bytes a character at most: surely short)
        return name
    raw = name.encode("utf-8", "surrogateescape")
    if len(raw) <= NAME_MAX:
        return name
    start = end = 0
    for ch in name:
        start, end = end, end + len(ch.encode("utf-8", "surrogateescape"))
        if end >= NAME_CUT:
            break
    dot = raw.rfind(b".", max(len(raw) - EXTENSION_BYTES, start + 1))
    return (raw[:end] + (raw[dot:] if dot >= 0 else b"")).decode("utf-8", "surrogateescape")


@dataclass(frozen=True)
class Metainfo:
    """Everything a tracker or peer needs from a .torrent file."""

    info_hash: bytes
    name: str
    piece_length: int
    piece_hashes: tuple[bytes, ...]
    files: tuple[FileEntry, ...]
    total_length: int
    announce_tiers: tuple[tuple[str, ...], ...]
    web_seeds: tuple[str, ...]
    multi_file: bool
    raw_info: bytes
    private: bool = False

    @property
    def num_pieces(self) -> int:
        return len(self.piece_hashes)

    @property
    def info_hash_hex(self) -> str:
        return self.info_hash.hex()

    def piece_size(self, index: int) -> int:
        """Length of piece `index`: piece_length, except for a shorter last piece."""
        if not 0 <= index < self.num_pieces:
            raise IndexError(f"piece index {index} out of range 0..{self.num_pieces - 1}")
        if index == self.num_pieces - 1:
            return self.total_length - index * self.piece_length
        return self.piece_length


# --------------------------------------------------------------------------- parsing


def parse_metainfo(data: bytes) -> Metainfo:
    """Decode and validate .torrent bytes; MetainfoError says what is wrong."""
    top, spans, info_checked = _decode_torrent(data)
    if b"info" not in top:
        raise MetainfoError("missing key 'info'")
    start, end = spans[b"info"]
    raw_info = bytes(data[start:end])
    info = top[b"info"]
    if not info_checked:
        try:
            # The outer dict had unsorted keys; the info dict, which gets hashed, may not.
            bdecode(raw_info, strict_order=True)
        except BencodeError as exc:
            raise MetainfoError(f"'info' is not canonical bencoding: {exc}") from None
    if not isinstance(info, dict):
        raise MetainfoError("'info' must be a dictionary")

    name = _text_field(info, b"name", "info.name", required=True)
    assert name is not None
    _check_component(name, "info.name")
    piece_length = _int_field(info, b"piece length", "info.piece length")
    if piece_length <= 0:
        raise MetainfoError(f"info.piece length must be positive, got {piece_length}")
    pieces = info.get(b"pieces")
    if pieces is None:
        if info.get(b"meta version") == 2:
            raise MetainfoError("a BitTorrent v2-only torrent (BEP 52): swarm reads v1 and "
                                "hybrid torrents only")
        raise MetainfoError("info: missing key 'pieces'")
    if not isinstance(pieces, bytes):
        raise MetainfoError("info.pieces must be a byte string")
    if len(pieces) % HASH_LEN:
        raise MetainfoError(f"info.pieces length {len(pieces)} is not a multiple of {HASH_LEN}")

    files, multi_file = _parse_files(info, name)
    total_length = sum(f.length for f in files)
    if total_length == 0:
        raise MetainfoError("torrent has no data (total length is 0)")
    expected_pieces = -(-total_length // piece_length)
    piece_hashes = tuple(pieces[i : i + HASH_LEN] for i in range(0, len(pieces), HASH_LEN))
    if len(piece_hashes) != expected_pieces:
        raise MetainfoError(
            f"info.pieces has {len(piece_hashes)} hashes but {total_length} bytes in pieces of "
            f"{piece_length} need {expected_pieces}"
        )
    private = info.get(b"private", 0)
    if not isinstance(private, int):
        raise MetainfoError("info.private must be an integer")

    return Metainfo(
        info_hash=hashlib.sha1(raw_info).digest(),
        name=name,
        piece_length=piece_length,
        piece_hashes=piece_hashes,
        files=files,
        total_length=total_length,
        announce_tiers=_parse_trackers(top),
        web_seeds=_parse_web_seeds(top),
        multi_file=multi_file,
        raw_info=raw_info,
        private=private == 1,
    )


def _decode_torrent(data: bytes) -> tuple[dict, dict[bytes, tuple[int, int]], bool]:
    """Decode strictly; if only key order is wrong, decode leniently (see bencoding's docstring).

    Returns (top-level dict, spans, whether `info` was already checked strictly).
    """
    try:
        top, spans = bdecode_with_spans(data, max_size=MAX_TORRENT_SIZE)
        return top, spans, True
    except KeyOrderError:
        pass  # any other error would recur in the lenient decode: spare a second pass
    except BencodeError as exc:
        raise MetainfoError(f"not a valid bencoded torrent: {exc}") from None
    try:
        top, spans = bdecode_with_spans(data, max_size=MAX_TORRENT_SIZE, strict_order=False)
    except BencodeError as exc:
        raise MetainfoError(f"not a valid bencoded torrent: {exc}") from None
    return top, spans, False


def load_metainfo(path: str | os.PathLike) -> Metainfo:
    """Read and parse a .torrent file; errors read "<file>: <why>"."""
    label = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_TORRENT_SIZE + 1)
    except OSError as exc:
        raise MetainfoError(f"{label}: {exc.strerror or exc}") from None
    try:
        return parse_metainfo(data)
    except MetainfoError as exc:
        raise MetainfoError(f"{label}: {exc}") from None


def _parse_files(info: dict, name: str) -> tuple[tuple[FileEntry, ...], bool]:
    has_length, has_files = b"length" in info, b"files" in info
    if has_length == has_files:
        which = "both" if has_length else "neither"
        raise MetainfoError(f"info must have exactly one of 'length' and 'files', has {which}")
    if has_length:
        length = _int_field(info, b"length", "info.length")
        if length < 0:
            raise MetainfoError(f"info.length must not be negative, got {length}")
        _check_path_size((name,), "info.name")
        return (FileEntry(path=(name,), length=length, offset=0),), False

    raw_files = info[b"files"]
    if not isinstance(raw_files, list):
        raise MetainfoError("info.files must be a list")
    if not raw_files:
        raise MetainfoError("info.files is empty")
    entries: list[FileEntry] = []
    offset = 0
    for i, raw in enumerate(raw_files):
        where = f"info.files[{i}]"
        if not isinstance(raw, dict):
            raise MetainfoError(f"{where} must be a dictionary")
        length = _int_field(raw, b"length", f"{where}.length")
        if length < 0:
            raise MetainfoError(f"{where}.length must not be negative, got {length}")
        parts = _path_field(raw, where)
        _check_path_size((name, *parts), f"{where}.path")
        attr = raw.get(b"attr", b"")
        pad = isinstance(attr, bytes) and b"p" in attr   # libtorrent's hybrid torrents have them
        entries.append(FileEntry(path=(name, *parts), length=length, offset=offset, pad=pad))
        offset += length
    _check_no_collisions(entries)
    return tuple(entries), True


def _path_field(raw: dict, where: str) -> tuple[str, ...]:
    """The file's path components, from `path.utf-8` when it is valid, else `path`."""
    preferred = raw.get(b"path.utf-8")
    if isinstance(preferred, list) and preferred and all(
        isinstance(p, bytes) and _is_utf8(p) for p in preferred
    ):
        candidates = preferred
    elif b"path" not in raw:
        raise MetainfoError(f"{where}: missing key 'path'")
    else:
        candidates = raw[b"path"]
        if not isinstance(candidates, list):
            raise MetainfoError(f"{where}.path must be a list")
        if not candidates:
            raise MetainfoError(f"{where}.path is empty")
    if len(candidates) > MAX_PATH_COMPONENTS:
        raise MetainfoError(
            f"{where}.path has {len(candidates)} components, more than the "
            f"{MAX_PATH_COMPONENTS} swarm accepts"
        )
    parts: list[str] = []
    for j, component in enumerate(candidates):
        label = f"{where}.path[{j}]"
        if not isinstance(component, bytes):
            raise MetainfoError(f"{label} must be a byte string")
        text = _decode_utf8(component, label)
        _check_component(text, label)
        parts.append(text)
    return tuple(parts)


def _check_component(text: str, where: str) -> None:
    """Refuse any path component that could escape the torrent's folder or is unportable."""
    if text in ("", ".", ".."):
        raise MetainfoError(f"{where}: path component {text!r} not allowed")
    for bad in ("/", "\\", "\0"):
        if bad in text:
            raise MetainfoError(f"{where}: path component {text!r} contains {bad!r}")
    if len(text) >= 2 and text[1] == ":" and text[0].isascii() and text[0].isalpha():
        raise MetainfoError(f"{where}: path component {text!r} looks like a drive letter")


def _check_path_size(path: tuple[str, ...], where: str) -> None:
    """A path longer than Linux can open would only fail once the download starts (measured
    as stored: long names cut)."""
    size = len("/".join(map(disk_name, path)).encode("utf-8"))
    if size >= PATH_MAX:
        raise MetainfoError(
            f"{where}: file path of {size} bytes is longer than Linux allows "
            f"(PATH_MAX {PATH_MAX}, final NUL included)"
        )


def _check_no_collisions(entries: list[FileEntry]) -> None:
    """Two files on one path, or a file that is also a folder of another, cannot both exist:
    on disk, that is after long names are cut.

    Padding files are left out: they are never stored, and libtorrent names every one
    `.pad/<size>`, so two pads of one size share a path. Folders are numbered by
    (parent's number, name), so the work is linear in path length, not quadratic.
    """
    real = [e for e in entries if not e.pad]
    stored = [e.disk_path for e in real]
    folder_ids: dict[tuple[int, str], int] = {}  # (parent folder id, name) -> id; the root is 0
    example: dict[int, FileEntry] = {}  # folder id -> the first file found in it
    parents: list[int] = []
    for e, path in zip(real, stored):
        folder = 0
        for name in path[:-1]:
            folder = folder_ids.setdefault((folder, name), len(folder_ids) + 1)
            example.setdefault(folder, e)
        parents.append(folder)
    seen: dict[tuple[str, ...], FileEntry] = {}
    for e, path, parent in zip(real, stored, parents):
        if (first := seen.setdefault(path, e)) is not e:
            raise MetainfoError(f"duplicate file path {'/'.join(e.path)!r}" + _cut(first, e, path))
        if (folder := folder_ids.get((parent, path[-1]))) is not None:
            other = example[folder]
            raise MetainfoError(f"file {'/'.join(e.path)!r} is also a folder of "
                                f"{'/'.join(other.path)!r}" + _cut(e, other, path))


def _cut(a: FileEntry, b: FileEntry, stored: tuple[str, ...]) -> str:
    """Why two paths that differ in the torrent meet on disk, if they do."""
    if a.path == a.disk_path and b.path == b.disk_path:
        return ""
    return (f" once names longer than {NAME_MAX} bytes are cut "
            f"({'/'.join(a.path)!r} and {'/'.join(b.path)!r} meet at {'/'.join(stored)!r})")


def _parse_trackers(top: dict) -> tuple[tuple[str, ...], ...]:
    """BEP 12: a non-empty announce-list replaces announce; empty tiers/URLs are dropped."""
    tiers: list[tuple[str, ...]] = []
    if b"announce-list" in top:
        raw_tiers = top[b"announce-list"]
        if not isinstance(raw_tiers, list):
            raise MetainfoError("announce-list must be a list of lists")
        for i, raw_tier in enumerate(raw_tiers):
            if not isinstance(raw_tier, list):
                raise MetainfoError(f"announce-list[{i}] must be a list")
            tier = tuple(
                url
                for j, raw_url in enumerate(raw_tier)
                if (url := _url(raw_url, f"announce-list[{i}][{j}]"))
            )
            if tier:
                tiers.append(tier)
    if not tiers and b"announce" in top:
        url = _url(top[b"announce"], "announce")
        if url:
            tiers.append((url,))
    return tuple(tiers)


def _parse_web_seeds(top: dict) -> tuple[str, ...]:
    """BEP 19 url-list: one string or a list of strings."""
    raw = top.get(b"url-list")
    if raw is None:
        return ()
    if isinstance(raw, bytes):
        raw = [raw]
    if not isinstance(raw, list):
        raise MetainfoError("url-list must be a string or a list of strings")
    return tuple(url for i, item in enumerate(raw) if (url := _url(item, f"url-list[{i}]")))


def _url(raw: object, where: str) -> str:
    if not isinstance(raw, bytes):
        raise MetainfoError(f"{where} must be a string")
    return _decode_utf8(raw, where).strip()


def _text_field(d: dict, key: bytes, where: str, required: bool) -> str | None:
    """A UTF-8 text field, preferring the `<key>.utf-8` variant when present and valid."""
    preferred = d.get(key + b".utf-8")
    if isinstance(preferred, bytes) and _is_utf8(preferred):
        return preferred.decode("utf-8")
    if key not in d:
        if required:
            raise MetainfoError(f"{where.rsplit('.', 1)[0]}: missing key {key.decode()!r}")
        return None
    raw = d[key]
    if not isinstance(raw, bytes):
        raise MetainfoError(f"{where} must be a byte string")
    return _decode_utf8(raw, where)


def _int_field(d: dict, key: bytes, where: str) -> int:
    if key not in d:
        raise MetainfoError(f"{where.rsplit('.', 1)[0]}: missing key {key.decode()!r}")
    value = d[key]
    if not isinstance(value, int):
        raise MetainfoError(f"{where} must be an integer")
    return value


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _decode_utf8(raw: bytes, where: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise MetainfoError(f"{where} is not valid UTF-8") from None


# --------------------------------------------------------------------------- creating


def default_piece_length(total_length: int) -> int:
    """Smallest power of two (64 KiB .. 16 MiB) giving at most ~2000 pieces.

    Fewer, bigger pieces keep the .torrent small and the per-piece messages few; more,
    smaller pieces let peers start trading sooner. 1000-2000 pieces is the usual
    compromise for big files; files under 64 MiB get fewer, 64 KiB pieces.
    """
    length = MIN_DEFAULT_PIECE_LENGTH
    while length < MAX_DEFAULT_PIECE_LENGTH and -(-total_length // length) > TARGET_MAX_PIECES:
        length *= 2
    return length


def create_metainfo(
    path: str | os.PathLike,
    trackers: Sequence[str],
    piece_length: int | None = None,
    web_seeds: Sequence[str] = (),
    comment: str | None = None,
    *,
    private: bool = False,
    creation_date: int | None = None,
) -> bytes:
    """Hash a file or folder and return the .torrent bytes.

    A folder becomes a multi-file torrent of all its regular files, sorted by
    path (component by component); symlinks and special files are refused
    rather than silently followed or skipped. Several trackers -> `announce`
    is the first and `announce-list` has one tier per tracker.
    `creation_date` defaults to now. Unreadable files are a MetainfoError too.
    """
    try:
        return _create(
            Path(path), trackers, piece_length, web_seeds, comment, private, creation_date
        )
    except OSError as exc:
        raise MetainfoError(f"{exc.filename or path}: {exc.strerror or exc}") from None


def _create(
    root: Path,
    trackers: Sequence[str],
    piece_length: int | None,
    web_seeds: Sequence[str],
    comment: str | None,
    private: bool,
    creation_date: int | None,
) -> bytes:
    if root.is_symlink():
        raise MetainfoError(f"{root}: refusing to follow a symlink")
    if not root.exists():
        raise MetainfoError(f"{root}: no such file or directory")
    name = root.resolve().name
    _check_creatable(name, str(root))
    if root.is_dir():
        rel_files = _walk_folder(root)
        if not rel_files:
            raise MetainfoError(f"{root}: folder contains no files")
        disk_files = [(root.joinpath(*rel), rel) for rel in rel_files]
    elif root.is_file():
        disk_files = [(root, ())]
    else:
        raise MetainfoError(f"{root}: not a regular file or folder")

    sizes = [p.stat().st_size for p, _ in disk_files]
    total = sum(sizes)
    if total == 0:
        raise MetainfoError(f"{root}: nothing to share (total size is 0)")
    if piece_length is None:
        piece_length = default_piece_length(total)
    if isinstance(piece_length, bool) or not isinstance(piece_length, int) or piece_length <= 0:
        raise MetainfoError(f"piece length must be a positive integer, got {piece_length!r}")

    to_hash = [(file_path, size) for (file_path, _), size in zip(disk_files, sizes)]
    info: dict[str, object] = {
        "name": name,
        "piece length": piece_length,
        "pieces": _hash_pieces(to_hash, piece_length),
    }
    if root.is_dir():
        info["files"] = [
            {"length": size, "path": list(rel)} for (_, rel), size in zip(disk_files, sizes)
        ]
    else:
        info["length"] = total
    if private:
        info["private"] = 1

    top: dict[str, object] = {"info": info, "created by": CREATED_BY}
    top["creation date"] = int(time.time()) if creation_date is None else creation_date
    urls = [_check_url(t, "tracker") for t in trackers]
    if urls:
        top["announce"] = urls[0]
    if len(urls) > 1:
        top["announce-list"] = [[url] for url in urls]
    seeds = [_check_url(s, "web seed") for s in web_seeds]
    if seeds:
        top["url-list"] = seeds
    if comment:
        top["comment"] = comment
    data = bencode(top)
    parse_metainfo(data)  # never hand out a torrent we would refuse ourselves
    return data


def _walk_folder(root: Path) -> list[tuple[str, ...]]:
    """Relative paths of every regular file under `root`, sorted component-wise."""
    found: list[tuple[str, ...]] = []
    pending: list[tuple[Path, tuple[str, ...]]] = [(root, ())]
    while pending:
        folder, rel = pending.pop()
        with os.scandir(folder) as it:
            for entry in it:
                entry_rel = (*rel, entry.name)
                shown = os.path.join(root, *entry_rel)
                _check_creatable(entry.name, shown)
                if entry.is_symlink():
                    raise MetainfoError(f"{shown}: refusing to follow a symlink")
                if entry.is_dir(follow_symlinks=False):
                    pending.append((Path(entry.path), entry_rel))
                elif entry.is_file(follow_symlinks=False):
                    found.append(entry_rel)
                else:
                    raise MetainfoError(f"{shown}: not a regular file")
    found.sort()
    return found


def _check_creatable(name: str, shown: str) -> None:
    try:
        name.encode("utf-8")
        _check_component(name, shown)
    except UnicodeEncodeError:
        raise MetainfoError(f"{shown}: file name is not valid UTF-8") from None


def _check_url(url: str, what: str) -> str:
    """A URL we are about to write into a new torrent must be one a client can use.

    Parsing stays lenient (torrents in the wild list junk trackers; the announcer skips
    them), but we never create such a torrent ourselves.
    """
    if not isinstance(url, str) or not url.strip():
        raise MetainfoError(f"{what} URL must be a non-empty string, got {url!r}")
    url = url.strip()
    problem = url_problem(url, tracker=what == "tracker")
    if problem:
        raise MetainfoError(f"{what} URL {url!r}: {problem}")
    return url


def url_problem(url: str, tracker: bool) -> str | None:
    """Why no client could connect to this URL (scheme, host, port), or None."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:  # "Port out of range 0-65535", "Invalid IPv6 URL", ...
        return str(exc)
    if not parts.scheme:
        return "needs a scheme such as http://"
    allowed = ("http", "https", "udp") if tracker else ("http", "https")
    if parts.scheme not in allowed:
        return f"{parts.scheme}:// is not one of {', '.join(s + '://' for s in allowed)}"
    if not parts.hostname:
        return "has no host"
    if any(c.isspace() or not c.isprintable() for c in parts.hostname):
        return f"host {parts.hostname!r} is not a valid host name"
    if port == 0:
        return "port 0 cannot be connected to"
    if port is None and tracker and parts.scheme == "udp":  # BEP 15 has no default port
        return "needs a port (udp://host:port)"
    return None


def _hash_pieces(files: list[tuple[Path, int]], piece_length: int) -> bytes:
    """SHA-1 of each piece of the files' concatenated bytes; pieces span file boundaries."""
    hashes: list[bytes] = []
    piece = hashlib.sha1()
    filled = 0
    for file_path, expected in files:
        seen = 0
        with open(file_path, "rb") as f:
            while chunk := f.read(min(piece_length - filled, _READ_CHUNK)):
                piece.update(chunk)
                filled += len(chunk)
                seen += len(chunk)
                if filled == piece_length:
                    hashes.append(piece.digest())
                    piece = hashlib.sha1()
                    filled = 0
        if seen != expected:
            raise MetainfoError(f"{file_path}: size changed while hashing")
    if filled:
        hashes.append(piece.digest())
    return b"".join(hashes)

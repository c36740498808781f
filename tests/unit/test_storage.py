"""Storage: pieces across files, read-back, verification, symlink escape, disk full."""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import peer.direct_writes
from peer.direct_writes import SAMPLES
from common.metainfo import FileEntry as Entry
from peer.storage import _EXACT_REFCOUNTS, MIN_CACHED, PieceMemory, Span, Storage, StorageError
from tests.unit.test_direct_writes import direct_io_or_skip


@dataclass(frozen=True)
class Meta:
    """The Metainfo fields Storage uses."""

    name: str
    piece_length: int
    files: tuple[Entry, ...]
    piece_hashes: tuple[bytes, ...]
    total_length: int

    @property
    def num_pieces(self) -> int:
        return len(self.piece_hashes)

    def piece_size(self, index: int) -> int:
        return min(self.piece_length, self.total_length - index * self.piece_length)


def make_meta(name: str, sizes: list[tuple[tuple[str, ...], int]], piece_length: int,
              data: bytes) -> Meta:
    files, offset = [], 0
    for path, length in sizes:
        files.append(Entry((name, *path), length, offset))
        offset += length
    assert offset == len(data)
    hashes = tuple(hashlib.sha1(data[i:i + piece_length]).digest()
                   for i in range(0, len(data), piece_length))
    return Meta(name, piece_length, tuple(files), hashes, len(data))


PL = 32768
LAYOUT = [(("a.bin",), 10000), (("empty",), 0), (("sub", "b.bin"), 10000),
          (("sub", "deeper", "c.bin"), 30000), (("d.bin",), 5)]
DATA = os.urandom(sum(n for _, n in LAYOUT))   # 50005 bytes: piece 0 = 32768, piece 1 = 17237
META = make_meta("multi", LAYOUT, PL, DATA)


def piece(i: int) -> bytes:
    return DATA[i * PL:(i + 1) * PL]


def test_piece_spans_three_files_and_skips_the_empty_one(tmp_path):
    st = Storage(META, tmp_path)
    assert st.file_spans(0) == [Span(0, 0, 10000, 0), Span(2, 0, 10000, 10000),
                                Span(3, 0, 12768, 20000)]
    assert st.file_spans(1) == [Span(3, 12768, 17232, 0), Span(4, 0, 5, 17232)]
    assert st.file_spans(0, 9990, 20) == [Span(0, 9990, 10, 0), Span(2, 0, 10, 10)]
    with pytest.raises(ValueError):
        st.file_spans(1, 0, PL)


async def test_write_then_read_back_byte_identical(tmp_path):
    st = Storage(META, tmp_path)
    await st.open()
    sizes = {p.relative_to(tmp_path).as_posix(): p.stat().st_size
             for p in tmp_path.rglob("*") if p.is_file()}
    assert sizes == {"multi/a.bin": 10000, "multi/empty": 0, "multi/sub/b.bin": 10000,
                     "multi/sub/deeper/c.bin": 30000, "multi/d.bin": 5}
    assert await st.verify() == set()
    await store_if_valid(st, 1, piece(1))
    await store_if_valid(st, 0, bytearray(piece(0)))
    st._cache.clear()
    assert await st.read_piece(0) == piece(0)
    assert (await st.read_piece(1))[16384:] == DATA[PL + 16384:]
    await st.close()
    on_disk = b"".join((tmp_path / "multi" / Path(*path)).read_bytes() for path, _ in LAYOUT)
    assert on_disk == DATA


async def open_one_file(tmp_path, size: int) -> tuple[Storage, bytes]:
    """A complete one-file torrent of `size` random bytes in 256 KiB pieces, just written."""
    data = os.urandom(size)
    meta = make_meta("one", [(("f",), len(data))], 262144, data)
    (tmp_path / "one").mkdir()
    (tmp_path / "one" / "f").write_bytes(data)
    st = Storage(meta, tmp_path)
    await st.open(create=False)
    return st, data


async def test_torrents_of_one_process_share_one_piece_memory_limit(tmp_path):
    """Each torrent may cache 16 pieces (4 MiB here); three torrents served at once stay
    under the process's limit, each still caching MIN_CACHED pieces, and closing gives it
    all back."""
    memory = PieceMemory(limit=5 * 262144)
    stores = []
    for n in range(3):
        data = os.urandom(20 * 262144)
        meta = make_meta(f"t{n}", [(("f",), len(data))], 262144, data)
        (tmp_path / f"t{n}").mkdir()
        (tmp_path / f"t{n}" / "f").write_bytes(data)
        st = Storage(meta, tmp_path, memory=memory)
        await st.open(create=False)
        stores.append((st, data))
    for rounds in range(2):
        for i in range(20):
            for st, data in stores:
                assert await st.read_piece(i) == data[i * 262144:(i + 1) * 262144]
                held = sum(len(b) for s, _ in stores for b in (*s._cache.values(), *s._spare))
                assert memory.used == held, "the count drifted from what is held"
                assert held <= memory.limit + 3 * MIN_CACHED * 262144
    assert all(len(st._cache) >= MIN_CACHED for st, _ in stores)
    alone = Storage(stores[0][0].meta, tmp_path)       # without a shared limit: 16 pieces
    await alone.open(create=False)
    for i in range(20):
        await alone.read_piece(i)
    assert len(alone._cache) == 16
    for st, _ in [*stores, (alone, None)]:
        await st.close()
    assert memory.used == 0


async def test_blocks_of_one_piece_cost_one_disk_read(tmp_path):
    st, data = await open_one_file(tmp_path, 4 * 262144)
    reads = []
    real_sync, real_cached = st._read_sync, st._read_if_cached
    st._read_sync = lambda index, spans=None: reads.append(("thread", index)) or real_sync(index, spans)

    def read_if_cached(index):
        got = real_cached(index)
        if got is not None:
            reads.append(("page cache", index))
        return got
    st._read_if_cached = read_if_cached
    pieces = await asyncio.gather(*(st.read_piece(2) for _ in range(16)))  # 16 blocks served at once
    assert all(p == data[2 * 262144:3 * 262144] for p in pieces)
    assert await st.read_piece(2) == data[2 * 262144:3 * 262144]
    assert [index for _, index in reads] == [2]
    await st.close()


@pytest.mark.skipif(not hasattr(os, "RWF_NOWAIT"), reason="RWF_NOWAIT is Linux-only")
async def test_a_piece_in_the_page_cache_is_read_without_a_thread(tmp_path, monkeypatch):
    st, data = await open_one_file(tmp_path, 4 * 262144 + 1000)   # just written: in the page cache

    async def no_thread(*args, **kwargs):
        raise AssertionError("a cached piece went through a worker thread")
    monkeypatch.setattr(asyncio, "to_thread", no_thread)
    assert await st.read_piece(1) == data[262144:2 * 262144]
    assert await st.read_piece(4) == data[4 * 262144:]          # the short last piece
    st.prefetch(3)
    assert st.cached(3) == data[3 * 262144:4 * 262144]
    monkeypatch.undo()     # closing hops to a thread
    await st.close()


async def test_without_page_cache_reads_a_thread_reads_the_piece(tmp_path):
    st, data = await open_one_file(tmp_path, 2 * 262144)
    st._nowait = False     # as on a system without RWF_NOWAIT, or a file system without it
    threads = []
    real = st._read_sync
    st._read_sync = lambda index, spans=None: threads.append(index) or real(index, spans)
    assert await st.read_piece(1) == data[262144:]
    assert threads == [1]
    await st.close()


async def test_verify_finds_good_pieces_and_a_corrupted_byte(tmp_path):
    st = Storage(META, tmp_path)
    await st.open()
    await store_if_valid(st, 0, piece(0))
    await store_if_valid(st, 1, piece(1))
    progress = []
    assert await st.verify(lambda done, total: progress.append((done, total))) == {0, 1}
    assert progress[-1] == (2, 2)
    await st.close()
    c = tmp_path / "multi" / "sub" / "deeper" / "c.bin"
    raw = bytearray(c.read_bytes())
    raw[20000] ^= 0x01                 # byte 40000 of the torrent: piece 1
    c.write_bytes(raw)
    st = Storage(META, tmp_path)
    await st.open()
    assert await st.verify() == {0}
    await st.close()


async def write_whole_torrent(tmp_path) -> None:
    st = Storage(META, tmp_path)
    await st.open()
    await store_if_valid(st, 0, piece(0))
    await store_if_valid(st, 1, piece(1))
    await st.close()


async def test_verify_missing_and_short_files(tmp_path):
    await write_whole_torrent(tmp_path)
    (tmp_path / "multi" / "d.bin").unlink()        # only in piece 1
    st = Storage(META, tmp_path)
    await st.open(create=False)
    assert await st.verify() == {0}
    with pytest.raises(StorageError, match="missing"):
        await st.read_piece(1)
    await st.close()
    with open(tmp_path / "multi" / "sub" / "deeper" / "c.bin", "r+b") as f:
        f.truncate(5000)                            # piece 0 now ends past the file
    st = Storage(META, tmp_path)
    await st.open()                                 # recreates d.bin, regrows c.bin
    assert await st.verify() == set()
    assert (tmp_path / "multi" / "sub" / "deeper" / "c.bin").stat().st_size == 30000
    await st.close()


async def test_read_only_open_changes_nothing_and_cannot_write(tmp_path):
    await write_whole_torrent(tmp_path)
    (tmp_path / "multi" / "d.bin").unlink()
    with open(tmp_path / "multi" / "a.bin", "ab") as f:
        f.write(b"longer than the torrent says")
    sizes = {p: p.stat().st_size for p in (tmp_path / "multi").rglob("*") if p.is_file()}
    st = Storage(META, tmp_path)
    await st.open(read_only=True)                   # (seeding the user's own data)
    assert await st.verify() == {0}                 # d.bin is in piece 1 only
    assert all(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY for fd in st._fds if fd is not None)
    await st.close()
    assert {p: p.stat().st_size for p in (tmp_path / "multi").rglob("*") if p.is_file()} == sizes


async def test_pad_files_are_zeros_never_stored(tmp_path):
    """BEP 47 (libtorrent's hybrid torrents): a pad entry's bytes are zeros in the hashed data,
    but no file or folder is made for it and nothing is written for it."""
    data = os.urandom(20000) + bytes(12768) + os.urandom(30000)
    files = (Entry(("padded", "a.bin"), 20000, 0), Entry(("padded", ".pad", "12768"), 12768, 20000, pad=True),
             Entry(("padded", "b.bin"), 30000, 32768))
    hashes = tuple(hashlib.sha1(data[i:i + PL]).digest() for i in range(0, len(data), PL))
    meta = Meta("padded", PL, files, hashes, len(data))
    st = Storage(meta, tmp_path)
    await st.open()
    for index in range(meta.num_pieces):
        assert await store_if_valid(st, index, bytearray(data[index * PL:(index + 1) * PL]))
    assert bytes(await st.read_piece(0)) == data[:PL]
    await st.close()
    assert sorted(p.name for p in (tmp_path / "padded").iterdir()) == ["a.bin", "b.bin"]
    assert (tmp_path / "padded" / "a.bin").read_bytes() == data[:20000]
    assert (tmp_path / "padded" / "b.bin").read_bytes() == data[32768:]
    st = Storage(meta, tmp_path)
    await st.open(read_only=True)                   # seeding it again: every piece is there
    assert await st.verify() == {0, 1}
    await st.close()


async def store_if_valid(st: Storage, index: int, data, *, keep_cached: bool = True) -> bool:
    """The storage's answer for one piece (bytes are handed over in a bytearray, as the
    torrent hands over its own buffer), from its callback on the event loop."""
    answer = asyncio.get_running_loop().create_future()
    st.store_if_valid(index, bytearray(data) if isinstance(data, bytes) else data, answer.set_result,
                      keep_cached=keep_cached)
    result = await answer
    if isinstance(result, Exception):
        raise result
    return result


async def test_store_if_valid_writes_only_matching_pieces(tmp_path):
    st = Storage(META, tmp_path)
    await st.open()
    assert not await store_if_valid(st, 0, piece(0)[:-1] + bytes([piece(0)[-1] ^ 1]))
    assert not await store_if_valid(st, 1, piece(0))
    assert not await store_if_valid(st, 0, piece(0)[:-1])
    assert await st.verify() == set(), "nothing wrong reached the disk"
    assert await store_if_valid(st, 0, piece(0))
    assert await store_if_valid(st, 1, bytearray(piece(1)))
    assert await st.verify() == {0, 1}
    await st.close()


@pytest.mark.skipif(not _EXACT_REFCOUNTS, reason="buffers are reused only where refcounts are exact")
async def test_pieces_checked_in_one_batch_give_their_buffers_back(tmp_path):
    """40 pieces handed over at once come back from the threads in a batch longer than the
    16-piece cache; each piece leaving the cache must go back to the spares."""
    data = os.urandom(40 * 16384)
    meta = make_meta("b", [(("f",), len(data))], 16384, data)
    st = Storage(meta, tmp_path)
    await st.open()
    answers: list = []
    all_back = asyncio.Event()

    def answered(result) -> None:
        answers.append(result)
        if len(answers) == 40:
            all_back.set()

    for i in range(40):
        buf = st.piece_buffer(16384)
        buf[:] = data[i * 16384:(i + 1) * 16384]
        st.store_if_valid(i, buf, answered)
    del buf
    await asyncio.wait_for(all_back.wait(), 10)
    assert answers == [True] * 40
    assert len(st._cache) == 16 and len(st._spare) == 40 - 16
    await st.close()
    assert (tmp_path / "b" / "f").read_bytes() == data


async def test_symlink_out_of_root_is_refused(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "multi").mkdir(parents=True)
    outside.mkdir()
    (root / "multi" / "sub").symlink_to(outside)
    st = Storage(META, root)
    with pytest.raises(StorageError, match="outside"):
        await st.open()
    assert list(outside.iterdir()) == []
    assert not (root / "multi" / "a.bin").exists(), "nothing is created before the check"


async def test_symlinked_file_out_of_root_is_refused(tmp_path):
    root = tmp_path / "root"
    (root / "multi").mkdir(parents=True)
    target = tmp_path / "victim"
    target.write_bytes(b"keep me")
    (root / "multi" / "d.bin").symlink_to(target)
    with pytest.raises(StorageError, match="outside"):
        await Storage(META, root).open()
    assert target.read_bytes() == b"keep me"


async def test_misuse_is_reported(tmp_path):
    st = Storage(META, tmp_path)
    with pytest.raises(StorageError, match="not open"):
        await st.read_piece(0)
    await st.open()
    assert await store_if_valid(st, 0, b"short") is False
    await st.close()
    await st.close()   # twice is fine
    with pytest.raises(StorageError, match="not open"):    # answered on the loop, not raised
        await store_if_valid(st, 0, piece(0))


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A 1 MiB tmpfs: root only; skipped elsewhere unless CI=true, where it must work."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    why = None
    if os.geteuid() != 0:
        why = "needs root to mount a tmpfs"
    else:
        res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                             capture_output=True, text=True)
        if res.returncode != 0:
            why = f"cannot mount a tmpfs: {res.stderr.strip()}"
    if why:
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


async def test_disk_full_and_read_only_are_clear_errors(tiny_tmpfs):
    data = os.urandom(2 * 1024 * 1024)
    meta = make_meta("big", [(("big.bin",), len(data))], 262144, data)
    path = tiny_tmpfs / 'big' / 'big.bin'
    for attempt in range(2):      # a new file's space is reserved at once; given back on failure
        with pytest.raises(StorageError) as info:
            await Storage(meta, tiny_tmpfs).open()
        assert str(info.value) == f"disk full reserving space for {path}"
        assert path.stat().st_size == 0
    for keep_cached in (True, False):   # a sparse file already there (a resumed download)
        os.truncate(path, len(data))
        st = Storage(meta, tiny_tmpfs)
        await st.open()
        with pytest.raises(StorageError) as info:
            for i in range(meta.num_pieces):
                await store_if_valid(st, i, data[i * 262144:(i + 1) * 262144], keep_cached=keep_cached)
        assert str(info.value) == f"disk full writing {path}"
        await st.close()
        os.truncate(path, 0)
    subprocess.run(["mount", "-o", "remount,ro", str(tiny_tmpfs)], check=True)
    st = Storage(meta, tiny_tmpfs)
    with pytest.raises(StorageError, match="^read-only file system opening .*big.bin$"):
        await st.open()


async def test_pieces_nobody_will_ask_for_go_past_the_page_cache(tmp_path):
    """keep_cached=False: aligned spans are written O_DIRECT, the rest (a file starting
    mid-piece, the short last piece) buffered; the files are byte-identical either way."""
    direct_io_or_skip(tmp_path)
    pl = 65536
    data = os.urandom(5 * pl + 777)
    meta = make_meta("mix", [(("a.bin",), 2 * pl), (("b.bin",), pl + 100), (("c.bin",), 2 * pl + 677)],
                     pl, data)
    st = Storage(meta, tmp_path)
    st.write_costs.choose_direct = lambda: True     # (as where direct writes cost less)
    await st.open()
    for i in range(meta.num_pieces):
        assert await store_if_valid(st, i, data[i * pl:(i + 1) * pl], keep_cached=False)
    # a.bin's two pieces are aligned; b.bin's first 64 KiB too (piece 2 starts it);
    # everything after the 100 stray bytes is not
    assert st.direct_bytes == 3 * pl
    await st.close()
    got = b"".join((tmp_path / "mix" / name).read_bytes() for name in ("a.bin", "b.bin", "c.bin"))
    assert got == data
    st = Storage(meta, tmp_path)
    await st.open(create=False)
    assert await st.verify() == set(range(meta.num_pieces))
    await st.close()


async def test_a_piece_assembled_in_a_piece_buffer_is_written_direct_without_a_copy(tmp_path, monkeypatch):
    """piece_buffer's memory starts on a page, so O_DIRECT takes it as it is: the piece
    threads never make the aligned buffer they copy other pieces into."""
    direct_io_or_skip(tmp_path)

    class NoScratch:
        @staticmethod
        def mmap(*args, **kwargs):
            raise AssertionError("a piece went through the aligned copy")

    monkeypatch.setattr(peer.direct_writes, "mmap", NoScratch)
    pl = 65536
    data = os.urandom(4 * pl)
    meta = make_meta("one", [(("one.bin",), len(data))], pl, data)
    st = Storage(meta, tmp_path)
    st.write_costs.choose_direct = lambda: True
    await st.open()
    for i in range(meta.num_pieces):
        buf = st.piece_buffer(pl, aligned=True)
        buf[:] = data[i * pl:(i + 1) * pl]
        assert await store_if_valid(st, i, buf, keep_cached=False) is True
    assert st.direct_bytes == len(data)
    assert bytes(await st.read_piece(3)) == data[3 * pl:]
    await st.close()
    assert (tmp_path / "one" / "one.bin").read_bytes() == data


@pytest.mark.parametrize("dearer", ["buffered", "direct"])
async def test_pieces_nobody_will_ask_for_go_the_way_that_costs_less(tmp_path, dearer):
    """The first pieces alternate, measured for real; then the writes measured cheaper take
    the rest (but PROBE_PIECES in every PROBE_EVERY); the file is the same either way."""
    direct_io_or_skip(tmp_path)
    pl = 65536
    data = os.urandom((2 * SAMPLES + 10) * pl)
    meta = make_meta("one", [(("one.bin",), len(data))], pl, data)
    st = Storage(meta, tmp_path)
    await st.open()
    for i in range(2 * SAMPLES):
        assert await store_if_valid(st, i, data[i * pl:(i + 1) * pl], keep_cached=False)
    assert st.direct_bytes == SAMPLES * pl
    for _ in range(SAMPLES):                 # outlandish costs for one way: 1 s a byte
        st.write_costs.record(dearer == "direct", 1.0, 1)
    for i in range(2 * SAMPLES, meta.num_pieces):
        assert await store_if_valid(st, i, data[i * pl:(i + 1) * pl], keep_cached=False)
    assert st.direct_bytes == (SAMPLES if dearer == "direct" else SAMPLES + 10) * pl
    await st.close()
    assert (tmp_path / "one" / "one.bin").read_bytes() == data


async def test_pieces_kept_cached_are_written_buffered(tmp_path):
    st = Storage(META, tmp_path)
    await st.open()
    for i in range(META.num_pieces):
        assert await store_if_valid(st, i, piece(i))
    assert st.direct_bytes == 0
    await st.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fallocate(2) is Linux's")
async def test_new_files_get_their_space_reserved(tmp_path):
    data = os.urandom(3 * 65536)
    meta = make_meta("big", [(("big.bin",), len(data))], 65536, data)
    st = Storage(meta, tmp_path)
    await st.open()
    assert os.stat(tmp_path / "big" / "big.bin").st_blocks * 512 >= len(data)
    await st.close()


async def test_pad_files_share_one_descriptor_and_are_never_written(tmp_path):
    """A hybrid torrent pads every file but the last: 40 pads are one /dev/zero descriptor,
    not 40, and their zeros are not written anywhere (not even past the page cache)."""
    direct_io_or_skip(tmp_path)
    files, data, offset = [], b"", 0
    for i in range(40):
        body = os.urandom(PL // 2)
        files += [Entry(("hybrid", f"f{i}.bin"), len(body), offset),
                  Entry(("hybrid", ".pad", str(PL // 2)), PL // 2, offset + len(body), pad=True)]
        data += body + bytes(PL // 2)
        offset += PL
    hashes = tuple(hashlib.sha1(data[i:i + PL]).digest() for i in range(0, len(data), PL))
    meta = Meta("hybrid", PL, tuple(files), hashes, len(data))
    before = len(os.listdir("/proc/self/fd"))
    st = Storage(meta, tmp_path)
    st.write_costs.choose_direct = lambda: True
    await st.open()
    assert len(os.listdir("/proc/self/fd")) - before == 40 + 1
    for index in range(meta.num_pieces):
        assert await store_if_valid(st, index, bytearray(data[index * PL:(index + 1) * PL]),
                                    keep_cached=False)
    assert st.direct_bytes == 40 * PL // 2
    assert bytes(await st.read_piece(3)) == data[3 * PL:4 * PL]
    await st.close()
    assert len(os.listdir("/proc/self/fd")) == before
    assert sorted(p.name for p in (tmp_path / "hybrid").iterdir()) == sorted(f"f{i}.bin" for i in range(40))

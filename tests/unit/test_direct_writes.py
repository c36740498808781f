"""DirectWrites: pieces past the page cache, and the cases that must fall back to buffered;
WriteCosts: which way a piece goes."""

from __future__ import annotations

import errno
import os
import threading

import pytest

import peer.direct_writes
from peer.direct_writes import ALIGN, PROBE_EVERY, PROBE_PIECES, SAMPLES, DirectWrites, WriteCosts


def direct_io_or_skip(folder) -> None:
    """O_DIRECT is what is under test: a file system without it cannot show anything."""
    why = "" if hasattr(os, "O_DIRECT") else "this system has no O_DIRECT"
    if not why:
        probe = folder / "probe"
        probe.write_bytes(b"")
        try:
            os.close(os.open(probe, os.O_WRONLY | os.O_DIRECT))
        except OSError as exc:
            why = f"{folder} does not take O_DIRECT: {exc}"
    if why:
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)


def opened(path, size: int) -> int:
    path.write_bytes(bytes(size))
    return os.open(path, os.O_RDWR)


def test_aligned_writes_go_direct_and_read_back(tmp_path):
    direct_io_or_skip(tmp_path)
    path = tmp_path / "f.bin"
    fd = opened(path, 4 * ALIGN * 300)
    writes = DirectWrites()
    data = os.urandom(3 * 1024 * 1024 // 2)        # 1.5 MiB: more than one aligned chunk
    data = data[: len(data) // ALIGN * ALIGN]
    assert writes.write(0, fd, memoryview(data), ALIGN)
    assert writes.bytes_written == len(data)
    assert os.pread(fd, len(data), ALIGN) == data    # the buffered descriptor sees it at once
    writes.close()
    os.close(fd)
    raw = path.read_bytes()
    assert raw[ALIGN:ALIGN + len(data)] == data and raw[:ALIGN] == bytes(ALIGN)


def test_unaligned_spans_and_refusing_files_are_left_to_buffered_writes(tmp_path):
    direct_io_or_skip(tmp_path)
    path = tmp_path / "f.bin"
    fd = opened(path, 8 * ALIGN)
    folder = os.open(tmp_path, os.O_RDONLY)             # cannot be opened for writing
    writes = DirectWrites()
    assert not writes.write(0, fd, memoryview(bytes(ALIGN)), 100)         # offset
    assert not writes.write(0, fd, memoryview(bytes(ALIGN + 1)), 0)       # length
    assert not writes.write(1, folder, memoryview(bytes(ALIGN)), 0)
    assert writes.bytes_written == 0
    assert path.read_bytes() == bytes(8 * ALIGN)
    writes.close()
    os.close(fd)
    os.close(folder)


def test_a_disk_error_is_raised_and_close_still_returns(tmp_path, monkeypatch):
    direct_io_or_skip(tmp_path)
    fd = opened(tmp_path / "f.bin", 8 * ALIGN)
    writes = DirectWrites()

    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(peer.direct_writes.os, "pwrite", full)
    with pytest.raises(OSError) as info:
        writes.write(0, fd, memoryview(bytes(ALIGN)), 0)
    assert info.value.errno == errno.ENOSPC
    closing = threading.Thread(target=writes.close)
    closing.start()
    closing.join(5)
    assert not closing.is_alive()
    os.close(fd)


def test_close_waits_for_a_write_under_way_and_refuses_later_ones(tmp_path, monkeypatch):
    direct_io_or_skip(tmp_path)
    path = tmp_path / "f.bin"
    fd = opened(path, 16 * ALIGN)
    writes = DirectWrites()
    in_write, release = threading.Event(), threading.Event()
    pwrite = os.pwrite
    descriptors_alive = []

    def held(fd_, data, offset):
        in_write.set()
        release.wait(5)
        descriptors_alive.append(os.fstat(fd_) is not None)    # raises if closed under us
        return pwrite(fd_, data, offset)
    monkeypatch.setattr(peer.direct_writes.os, "pwrite", held)
    block = memoryview(b"\x5a" * (4 * ALIGN))
    result = []
    writer = threading.Thread(target=lambda: result.append(writes.write(0, fd, block, 0)))
    writer.start()
    assert in_write.wait(5)
    closing = threading.Thread(target=writes.close)
    closing.start()
    closing.join(0.3)
    assert closing.is_alive()          # waiting for the write under way
    release.set()
    writer.join(5)
    closing.join(5)
    assert not closing.is_alive()
    assert result == [True] and descriptors_alive == [True]
    assert not writes.write(0, fd, block, 4 * ALIGN)      # after close: the buffered path
    os.close(fd)
    assert path.read_bytes()[:len(block)] == bytes(block)


def warmed(buffered: float, direct: float) -> WriteCosts:
    """WriteCosts past its warm-up, each way measured SAMPLES times at these s/byte."""
    costs = WriteCosts()
    for _ in range(2 * SAMPLES):
        way = costs.choose_direct()
        costs.record(way, direct if way else buffered, 1)
    return costs


def test_write_costs_alternate_until_both_ways_are_measured():
    costs = WriteCosts()
    ways = []
    for _ in range(2 * SAMPLES):
        ways.append(costs.choose_direct())
        costs.record(ways[-1], 1.0, 2 ** 20)
    assert ways == [False, True] * SAMPLES
    assert costs.per_gib(False) == costs.per_gib(True) == 1024


def test_write_costs_take_the_cheaper_way_and_look_at_the_other_now_and_then():
    costs = warmed(buffered=2.0, direct=1.0)     # buffered dearer than 1.5x direct
    ways = [costs.choose_direct() for _ in range(2 * PROBE_EVERY)]
    assert ways.count(False) == 2 * PROBE_PIECES
    assert ways[PROBE_EVERY - PROBE_PIECES - 1:PROBE_EVERY] == [True] + [False] * PROBE_PIECES
    costs = warmed(buffered=1.2, direct=1.0)     # direct a little cheaper: not worth the wait
    assert [costs.choose_direct() for _ in range(PROBE_EVERY)].count(True) == PROBE_PIECES


def test_one_odd_write_changes_nothing_but_a_lasting_change_is_followed():
    costs = warmed(buffered=1.0, direct=1.0)
    costs.record(False, 100.0, 1)                # one buffered write 100x dearer
    assert not any(costs.choose_direct() for _ in range(PROBE_EVERY - PROBE_PIECES))
    for _ in range(SAMPLES // 2 + 1):            # the page cache gets dear for good
        costs.record(False, 10.0, 1)
    ways = [costs.choose_direct() for _ in range(PROBE_EVERY)]
    assert ways.count(True) == PROBE_EVERY - PROBE_PIECES    # direct now, buffered looked at
    assert costs.per_gib(False) == 10 * 2 ** 30
    costs.record(False, 1.0, 0)                  # an empty write tells nothing
    assert costs.per_gib(False) == 10 * 2 ** 30

"""DirectWrites: pieces past the page cache, and the cases that must fall back to buffered."""

from __future__ import annotations

import os
import threading

import pytest

from peer.direct_writes import ALIGN, DirectWrites


def direct_io_or_skip(folder) -> None:
    """O_DIRECT is what is under test: a file system without it cannot show anything."""
    probe = folder / "probe"
    probe.write_bytes(b"")
    try:
        os.close(os.open(probe, os.O_WRONLY | getattr(os, "O_DIRECT", 0x10000000)))
    except OSError as exc:
        why = f"{folder} does not take O_DIRECT: {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)


def test_aligned_writes_go_direct_and_read_back(tmp_path):
    direct_io_or_skip(tmp_path)
    path = tmp_path / "f.bin"
    path.write_bytes(bytes(4 * ALIGN * 300))
    writes = DirectWrites([path])
    data = os.urandom(3 * 1024 * 1024 // 2)        # 1.5 MiB: more than one aligned chunk
    data = data[: len(data) // ALIGN * ALIGN]
    assert writes.write(0, memoryview(data), ALIGN)
    assert writes.bytes_written == len(data)
    writes.close()
    raw = path.read_bytes()
    assert raw[ALIGN:ALIGN + len(data)] == data and raw[:ALIGN] == bytes(ALIGN)


def test_unaligned_spans_and_refusing_files_are_left_to_buffered_writes(tmp_path):
    direct_io_or_skip(tmp_path)
    path = tmp_path / "f.bin"
    path.write_bytes(bytes(8 * ALIGN))
    writes = DirectWrites([path, tmp_path])            # file 1 is a folder: cannot open
    assert not writes.write(0, memoryview(bytes(ALIGN)), 100)         # offset
    assert not writes.write(0, memoryview(bytes(ALIGN + 1)), 0)       # length
    assert not writes.write(1, memoryview(bytes(ALIGN)), 0)
    assert writes.bytes_written == 0
    assert path.read_bytes() == bytes(8 * ALIGN)
    writes.close()


def test_close_waits_for_writes_under_way_and_refuses_later_ones(tmp_path):
    direct_io_or_skip(tmp_path)
    path = tmp_path / "f.bin"
    path.write_bytes(bytes(64 * ALIGN))
    writes = DirectWrites([path])
    block = memoryview(b"\x5a" * (16 * ALIGN))
    done = []

    def writer() -> None:
        for i in range(4):
            done.append(writes.write(0, block, i * len(block)))

    threads = [threading.Thread(target=writer) for _ in range(2)]
    for t in threads:
        t.start()
    writes.close()         # whatever was under way finished first: the descriptor stayed open
    for t in threads:
        t.join()
    assert not writes.write(0, block, 0)
    # every write either went through whole, or was refused after the close
    assert writes.bytes_written == done.count(True) * len(block)
    raw = path.read_bytes()
    for i in range(4):     # no write was cut short by the close
        assert raw[i * len(block):(i + 1) * len(block)] in (bytes(block), bytes(len(block)))

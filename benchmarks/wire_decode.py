"""Decoder throughput: 1 GiB of 16 KiB Piece messages read in 64 KiB chunks, as a socket would.

Each chunk is copied into `get_buffer()` (what the kernel's recv does for a connection) and
then `received(n)` parses it; the blocks come out as views, not copied.

Run: python benchmarks/wire_decode.py [--gib 1] [--chunk 65536]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from common.wire import BLOCK_SIZE, Piece, WireDecoder, encode  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--gib", type=float, default=1.0, help="payload volume to decode")
    parser.add_argument("--chunk", type=int, default=64 * 1024, help="bytes per socket read")
    args = parser.parse_args()

    # 64 MiB of frames, cut into chunks once and replayed; the stream stays valid across
    # replays because it is a concatenation of whole frames.
    block = os.urandom(BLOCK_SIZE)
    frames_per_pass = 4096
    stream = b"".join(encode(Piece(i // 16, (i % 16) * BLOCK_SIZE, block))
                      for i in range(frames_per_pass))
    chunks = [stream[i:i + args.chunk] for i in range(0, len(stream), args.chunk)]
    passes = max(1, round(args.gib * (1 << 30) / (frames_per_pass * BLOCK_SIZE)))

    decoder = WireDecoder(handshake=False)
    get_buffer, received = decoder.get_buffer, decoder.received
    messages = 0
    start = time.perf_counter()
    for _ in range(passes):
        for chunk in chunks:
            pos, size = 0, len(chunk)
            while pos < size:
                space = get_buffer()
                n = min(len(space), size - pos)
                space[:n] = chunk[pos:pos + n]      # the socket's copy
                messages += len(received(n))
                pos += n
    elapsed = time.perf_counter() - start

    payload = messages * BLOCK_SIZE
    assert messages == passes * frames_per_pass, (messages, passes * frames_per_pass)
    assert decoder.buffered == 0
    print(f"decoded {messages} piece messages ({payload / 2**30:.2f} GiB of blocks) "
          f"in {elapsed:.3f} s in {args.chunk}-byte chunks")
    print(f"{payload / elapsed / 1e6:.0f} MB/s ({payload / elapsed / 2**20:.0f} MiB/s)")


if __name__ == "__main__":
    main()

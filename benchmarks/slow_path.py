"""One seed, one leecher, through a loopback proxy that delays every byte: a long path.

    python benchmarks/slow_path.py [--rtt 0.3] [--size 16MiB]

The pipeline (blocks in flight) is sized from the measured rate, so a pipeline sized
for a short path holds a long one down to pipeline / round trip. This prints what a
download gets over the given round trip. Everything is on 127.0.0.1, in one process.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common.metainfo import create_metainfo, parse_metainfo  # noqa: E402
from common.rates import parse_size  # noqa: E402
from peer.client import Client, ClientConfig  # noqa: E402


async def _delayed_copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    """Copy reader to writer, each chunk `delay` seconds after it arrived."""
    queue: asyncio.Queue = asyncio.Queue()

    async def read() -> None:
        while True:
            data = await reader.read(65536)
            await queue.put((time.monotonic() + delay, data))
            if not data:
                return

    async def write() -> None:
        while True:
            due, data = await queue.get()
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            if not data:
                writer.close()
                return
            writer.write(data)
            await writer.drain()

    await asyncio.gather(read(), write(), return_exceptions=True)


async def run(rtt: float, size: int, timeout: float) -> None:
    work = Path(tempfile.mkdtemp(prefix="swarm-slow-path-"))
    try:
        (work / "seed").mkdir()
        (work / "seed" / "f.bin").write_bytes(os.urandom(size))
        meta = parse_metainfo(create_metainfo(work / "seed" / "f.bin", [], piece_length=256 * 1024))
        seed = Client(ClientConfig(host="127.0.0.1", port=0, lsd=False))
        leecher = Client(ClientConfig(host="127.0.0.1", port=0, lsd=False))
        await seed.start()
        await seed.add_torrent(meta, work / "seed")

        relays: set[asyncio.Task] = set()

        async def relay(reader, writer) -> None:
            relays.add(asyncio.current_task())
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", seed.port)
            await asyncio.gather(_delayed_copy(reader, up_writer, rtt / 2),
                                 _delayed_copy(up_reader, writer, rtt / 2), return_exceptions=True)

        proxy = await asyncio.start_server(relay, "127.0.0.1", 0)
        try:
            await leecher.start()
            torrent = await leecher.add_torrent(meta, work / "leech")
            started = time.monotonic()
            torrent.add_peers([("127.0.0.1", proxy.sockets[0].getsockname()[1])], "bench")
            await asyncio.wait_for(torrent.complete.wait(), timeout)
            elapsed = time.monotonic() - started
            same = (work / "leech" / "f.bin").read_bytes() == (work / "seed" / "f.bin").read_bytes()
            print(f"{size / 2**20:.0f} MiB over a {rtt * 1000:.0f} ms round trip: {elapsed:.1f} s, "
                  f"{size / elapsed / 2**20:.2f} MiB/s, identical: {same}")
        finally:
            await leecher.close()
            await seed.close()
            proxy.close()
            if relays:                 # they end at the peers' EOF, a delay later; cancelled,
                await asyncio.wait(relays, timeout=2 * rtt + 1)   # asyncio prints each one
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rtt", type=float, default=0.3, help="round trip in seconds (0.01-2)")
    parser.add_argument("--size", default="16MiB")
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()
    asyncio.run(run(min(max(args.rtt, 0.01), 2.0), parse_size(args.size), args.timeout))


if __name__ == "__main__":
    main()

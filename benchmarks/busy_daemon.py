"""A daemon serving many torrents at once: how much piece memory does it hold?

    python benchmarks/busy_daemon.py [--torrents 20] [--size 32MiB] [--piece-length 1MiB]
                                     [--timeout 120]

One Client seeds T torrents; T more Clients in the same event loop each download one of
them from it, all at once, over 127.0.0.1 (no tracker, no LSD). Printed for each run: the
time until all copies are complete and the seed's piece memory at its peak (read caches
plus spare buffers, as its `PieceMemory` counts them). It runs twice: with the default
per-daemon limit, and with the limit lifted, which is how the daemon behaved before it had
one (each torrent then holds up to its own caps: 32 MiB of cache, up to 32 MiB of spares).
Data lives in a temporary folder that is removed at the end.
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.metainfo import create_metainfo, parse_metainfo  # noqa: E402
from common.rates import format_bytes, parse_size  # noqa: E402
from peer.client import Client, ClientConfig  # noqa: E402
from peer.storage import PROCESS_PIECE_BYTES  # noqa: E402


async def run(work: Path, torrents: int, size: int, piece_length: int, limit: int,
              timeout: float) -> tuple[float, int]:
    metas = []
    for n in range(torrents):
        path = work / "seed" / f"t{n}.bin"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(os.urandom(size))
        metas.append(parse_metainfo(create_metainfo(path, [], piece_length=piece_length)))
    config = dict(host="127.0.0.1", port=0, lsd=False)
    seed = Client(ClientConfig(**config, piece_memory=limit))
    leechers: list[Client] = []
    try:
        await seed.start()
        for meta in metas:
            await seed.add_torrent(meta, work / "seed")
        downloads = []
        for n, meta in enumerate(metas):
            client = Client(ClientConfig(**config))
            leechers.append(client)
            await client.start()
            out = work / f"out-{limit}-{n}"
            torrent = await client.add_torrent(meta, out)
            torrent.add_peers([("127.0.0.1", seed.port)], "bench")
            downloads.append(torrent)
        peak = 0
        started = time.monotonic()
        while not all(t.complete.is_set() for t in downloads):
            if time.monotonic() - started > timeout:
                raise SystemExit(f"not complete after {timeout:.0f} s")
            peak = max(peak, seed.piece_memory.used)
            await asyncio.sleep(0.02)
        return time.monotonic() - started, peak
    finally:
        for client in leechers:
            await client.close()
        await seed.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--torrents", type=int, default=20)
    parser.add_argument("--size", type=parse_size, default=parse_size("32MiB"))
    parser.add_argument("--piece-length", type=parse_size, default=parse_size("1MiB"))
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per run")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="swarm-busy-"))
    try:
        print(f"{args.torrents} torrents of {format_bytes(args.size)} in {format_bytes(args.piece_length)} "
              f"pieces, each downloaded by its own leecher at once", flush=True)
        for label, limit in (("limit " + format_bytes(PROCESS_PIECE_BYTES), PROCESS_PIECE_BYTES),
                             ("no limit", 1 << 62)):
            seconds, peak = asyncio.run(run(work, args.torrents, args.size, args.piece_length,
                                            limit, args.timeout))
            print(f"{label:>16}: all complete in {seconds:5.1f} s; seed's piece memory at its peak "
                  f"{format_bytes(peak)}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

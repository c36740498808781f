"""A leecher killed with SIGKILL at random points, restarted each time on the same folder.

swarm keeps no resume file: on start it rebuilds its state by hashing what is on disk, and it
writes a piece only after the piece passed its hash check. So after every kill:
- every piece the leecher had announced (bitfield or Have, seen by an observer connected to
  it over the wire protocol) is found again by verification;
- a piece we corrupt on disk between runs is never counted complete (the restarted leecher's
  bitfield is exactly the set of pieces whose bytes hash right);
- in the end the file is byte-identical to the original.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
import sys

import pytest

from common.wire import Bitfield, Have, HaveAll, HaveNone, indices_from_bitfield
from peer.storage import Storage
from tests.faults.conftest import make_file, torrent_for
from tests.faults.hostile_peer import HostilePeer, PeerClosed
from tests.integration.conftest import ROOT
from tracker.server import TrackerConfig, start_tracker

SIZE = 16 * 1024 * 1024
PIECE = 64 * 1024
KILLS = 10
# Each trial lives at most ~2 s (start-up + up to 1.2 s); at this cap ten trials fetch well
# under SIZE, so the download can never finish before the last kill.
TRIAL_LIMIT = "512KiB"


class Leecher:
    """`swarm-peer get` as a child process; its output lines are collected as they come."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._reader = asyncio.ensure_future(self._read())

    @classmethod
    async def start(cls, torrent, out, limit: str | None = TRIAL_LIMIT) -> "Leecher":
        env = dict(os.environ, SWARM_NO_LSD="1", PYTHONUNBUFFERED="1")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "peer", "get", str(torrent), "-o", str(out), "--no-seed",
            "--port", "0", "--host", "127.0.0.1", "--no-lsd", *(["--download-limit", limit] if limit else []),
            cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            start_new_session=True)
        return cls(proc)

    async def _read(self) -> None:
        async for raw in self.proc.stdout:
            self.lines.append(raw.decode(errors="replace"))

    async def wait_line(self, pattern: str, timeout: float = 20) -> re.Match | None:
        """The first line matching `pattern`; None if the process ended without one."""
        async with asyncio.timeout(timeout):
            while True:
                for line in self.lines:
                    m = re.search(pattern, line)
                    if m:
                        return m
                if self._reader.done():
                    return None
                await asyncio.sleep(0.01)

    async def kill(self) -> None:
        if self.proc.returncode is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        await self.proc.wait()
        await self._reader

    def output(self) -> str:
        return "".join(self.lines)[-3000:]


async def watch_announcements(peer: HostilePeer, meta, claimed: set[int]) -> None:
    """Collect every piece the leecher tells us it has, until the connection dies."""
    try:
        while True:
            msg = await peer.recv(60)
            if isinstance(msg, Have):
                claimed.add(msg.index)
            elif isinstance(msg, Bitfield):
                claimed.update(indices_from_bitfield(msg.bits, meta.num_pieces))
            elif isinstance(msg, HaveAll):
                claimed.update(range(meta.num_pieces))
    except (PeerClosed, TimeoutError):
        pass


async def first_bitfield(peer: HostilePeer, meta) -> set[int]:
    while True:
        msg = await peer.recv(10)
        if isinstance(msg, Bitfield):
            return set(indices_from_bitfield(msg.bits, meta.num_pieces))
        if isinstance(msg, HaveNone):
            return set()
        if isinstance(msg, HaveAll):
            return set(range(meta.num_pieces))


async def verified_on_disk(meta, out) -> set[int]:
    storage = Storage(meta, out)
    await storage.open(create=False)
    try:
        return await storage.verify()
    finally:
        await storage.close()


def corrupt_one_byte(meta, out, index: int, rng: random.Random) -> None:
    offset = index * meta.piece_length + rng.randrange(meta.piece_size(index))
    with open(out / meta.name, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x5A]))


@pytest.mark.slow
async def test_sigkill_at_random_points_then_resume(tmp_path, clients, show):
    rng = random.Random(int.from_bytes(os.urandom(4), "big"))
    data = make_file(tmp_path / "seed" / "big.bin", SIZE, seed=11)
    tracker = await start_tracker(TrackerConfig(host="127.0.0.1", port=0, interval=5))
    try:
        raw, meta = torrent_for(tmp_path / "seed" / "big.bin", [f"http://{tracker.base_url}/announce"],
                                piece_length=PIECE)
        torrent_file = tmp_path / "big.torrent"
        torrent_file.write_bytes(raw)
        seed = await clients()
        await seed.add_torrent(meta, tmp_path / "seed")
        out = tmp_path / "out"
        out.mkdir()

        expected: set[int] = set()     # what verification found last time, minus what we corrupted
        kills = 0
        show(f"\nSIGKILL trials on a {meta.num_pieces}-piece download:")
        while kills < KILLS:
            leecher = await Leecher.start(torrent_file, out)
            try:
                m = await leecher.wait_line(r"(\d+)/(\d+) pieces on disk, downloading")
                assert m is not None, f"trial {kills + 1}: leecher ended early:\n{leecher.output()}"
                port = int((await leecher.wait_line(r"listening on port (\d+)")).group(1))
                assert int(m.group(1)) == len(expected), (int(m.group(1)), len(expected))
                observer = await HostilePeer.connect(port)
                await observer.handshake(meta.info_hash)
                counted = await first_bitfield(observer, meta)
                # It counted exactly the pieces that hash right (the printed count), it lost none,
                # and whatever else it announces was fetched since: all of it must verify below.
                assert expected <= counted, sorted(expected - counted)
                claimed = set(counted)
                watcher = asyncio.ensure_future(watch_announcements(observer, meta, claimed))
                await asyncio.sleep(rng.uniform(0.0, 1.2))
                assert leecher.proc.returncode is None, f"finished before kill {kills + 1}"
                await leecher.kill()
                kills += 1
                await asyncio.wait_for(watcher, 5)
            finally:
                await leecher.kill()
            found = await verified_on_disk(meta, out)
            assert claimed <= found, f"announced but lost after SIGKILL: {sorted(claimed - found)}"
            on_disk = (out / meta.name).read_bytes()
            for i in found:   # verified pieces are the original bytes, not just a matching hash
                lo = i * meta.piece_length
                assert on_disk[lo:lo + meta.piece_size(i)] == data[lo:lo + meta.piece_size(i)]
            corrupted = rng.choice(sorted(found)) if found else None
            if corrupted is not None:
                corrupt_one_byte(meta, out, corrupted, rng)
            expected = found - {corrupted}
            show(f"  kill {kills:2d}: {len(claimed):3d} pieces announced, {len(found):3d} verified on disk"
                 f" (+{len(found - counted)} this run), corrupted piece {corrupted} before restart")
        assert len(expected) < meta.num_pieces

        final = await Leecher.start(torrent_file, out, limit=None)
        try:
            assert await final.wait_line(r"^complete: ", timeout=60), final.output()
            assert await asyncio.wait_for(final.proc.wait(), 20) == 0
        finally:
            await final.kill()
        assert (out / meta.name).read_bytes() == data
        show(f"  after {kills} kills: restart completed, file identical ({SIZE} bytes)")
    finally:
        await tracker.close()

"""`swarm-peer share`: make a torrent for each file or folder and seed them all from one daemon.

The .torrent files are written where a tracker started with `--torrents DIR` serves them,
so the other laptops only need the tracker's web page (or the file, or LSD alone).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

from common.metainfo import (
    Metainfo, MetainfoError, create_metainfo, load_metainfo, parse_metainfo, torrent_file_name,
)
from common.rates import format_bytes
from peer.client import Client, ClientConfig, daemon_loop_setup, wait_any


class ShareError(Exception):
    """Something given to `share` cannot be shared: one line for the user."""


class Shared(NamedTuple):
    """One shared item: unpacks as (name, size, info_hash, torrent_path)."""

    name: str
    size: int
    info_hash: bytes
    torrent_path: Path


async def share(paths: Sequence[str | os.PathLike], trackers: Sequence[str],
                torrents_dir: str | os.PathLike, client: Client) -> list[Shared]:
    """Create, write and start seeding a torrent per path, on an already started `client`.

    Hashing runs in a worker thread so the daemon keeps serving what is already shared.
    A .torrent already in `torrents_dir` for the same data and trackers is kept as it is,
    so restarting `share` does not change files others may have downloaded.
    """
    items = _distinct(paths)
    _check_names(items)
    out_dir = Path(torrents_dir)
    _check_outside(items, out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ShareError(f"cannot create {out_dir}: {exc.strerror}") from None
    shared = []
    for path in items:
        data = await asyncio.to_thread(create_metainfo, path, list(trackers))
        meta = parse_metainfo(data)
        torrent_path = out_dir / torrent_file_name(meta.name)
        if not _same_torrent(torrent_path, meta):
            _write_atomically(torrent_path, data)
        await client.add_torrent(meta, path.parent, seed_only=True)
        shared.append(Shared(meta.name, meta.total_length, meta.info_hash, torrent_path))
    return shared


def _distinct(paths: Sequence[str | os.PathLike]) -> list[Path]:
    if not paths:
        raise ShareError("nothing to share: give at least one file or folder")
    items: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise ShareError(f"{raw}: no such file or folder")
        path = path.resolve()
        if path not in items:
            items.append(path)
    return items


def _check_outside(items: list[Path], out_dir: Path) -> None:
    """The .torrent files may not land in a shared folder: the next `share` would hash them
    as part of the data, publish a torrent of data nobody else has, and fail to seed it."""
    where = out_dir.resolve()
    for path in items:
        if path.is_dir() and where.is_relative_to(path):
            raise ShareError(f"the .torrent files would be written inside {path}, which is shared; "
                             f"give --torrents-dir a folder outside it")


def _check_names(items: list[Path]) -> None:
    """Each torrent is published as NAME.torrent (cut if too long), so two items may not
    share that name."""
    seen: dict[str, Path] = {}
    for path in items:
        published = torrent_file_name(path.name)
        if published in seen:
            other = seen[published]
            same = f"named {path.name!r}" if other.name == path.name else f"published as {published!r}"
            raise ShareError(f"{other} and {path} are both {same}; rename one")
        seen[published] = path


def _same_torrent(torrent_path: Path, meta: Metainfo) -> bool:
    if not torrent_path.exists():
        return False
    try:
        old = load_metainfo(torrent_path)
    except MetainfoError:
        return False
    return old.info_hash == meta.info_hash and old.announce_tiers == meta.announce_tiers


def _write_atomically(path: Path, data: bytes) -> None:
    """A tracker serving this folder never hands out half a .torrent."""
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".share-", suffix=".tmp")  # (short name)
        with open(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)        # (mkstemp's 0600 would keep a tracker run as another user out)
        os.replace(tmp, path)
    except OSError as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise ShareError(f"cannot write {path}: {exc.strerror}") from None


def describe(item: Shared) -> str:
    """The line `swarm-peer share` prints per torrent."""
    return f"{item.name}  {format_bytes(item.size)}  info-hash {item.info_hash.hex()}  {item.torrent_path}"


async def run_share(paths: Sequence[str | os.PathLike], trackers: Sequence[str],
                    torrents_dir: str | os.PathLike, config: ClientConfig,
                    echo: Callable[[str], None] = print) -> int:
    """The `share` command's daemon: seed until SIGINT/SIGTERM; exit status 2 on a disk error."""
    stop = daemon_loop_setup()
    client = Client(config)
    await client.start()
    echo(f"swarm-peer: listening on port {client.port}")
    try:
        work = asyncio.ensure_future(share(paths, trackers, torrents_dir, client))
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait([work, stopping], return_when=asyncio.FIRST_COMPLETED)
        if not work.done():
            work.cancel()
            return 0
        stopping.cancel()
        shared = work.result()
        for item in shared:
            echo(describe(item))
        echo(f"seeding {len(shared)} torrent{'s' if len(shared) != 1 else ''} on port {client.port};"
             " Ctrl-C to stop")
        torrents = [client.torrents[item.info_hash] for item in shared]
        await wait_any(stop.wait(), *(t.failed.wait() for t in torrents))
        errors = [f"{t.meta.name}: {t.error}" for t in torrents if t.error]
        for line in errors:
            echo(f"swarm-peer: error: {line}")
        return 2 if errors else 0
    finally:
        await client.close()

"""`swarm-peer`: create torrents, download them, seed them.

Known errors (bad .torrent, unwritable folder, full disk, port in use) print one line,
`swarm-peer: error: ...`, and exit with status 2. Anything else is a bug: it is logged
with its traceback and exits with status 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import os
import sys
from pathlib import Path
from typing import NoReturn

import click

from common.metainfo import (
    MAX_TORRENT_SIZE, MIN_PIECE_LENGTH, Metainfo, MetainfoError, create_metainfo, disk_name,
    load_metainfo, parse_metainfo, torrent_file_name,
)
from common.rates import format_bytes, parse_rate, parse_size
from peer.announcer import BodyTooLarge, read_body
from peer.client import Client, ClientConfig, ClientError, daemon_loop_setup, wait_any
from peer.progress import ProgressReporter
from peer.storage import StorageError
from peer.torrent import Torrent, TorrentError

log = logging.getLogger("swarm.peer")

INTERRUPTED = 130      # the exit status of a download stopped before it was complete
KNOWN_ERRORS = (MetainfoError, StorageError, ClientError, TorrentError, OSError)


class UserError(Exception):
    """One line for the user; exit status 2."""


def fail(message: str) -> NoReturn:
    click.echo(f"swarm-peer: error: {message}", err=True)
    sys.exit(2)


class _BytesType(click.ParamType):
    """A byte count or rate with units ("256KiB", "2MiB/s"): one clear line when it is wrong."""

    def __init__(self, name: str, parse) -> None:
        self.name = name
        self.parse = parse

    def convert(self, value, param, ctx):
        if value is None or isinstance(value, (int, float)):
            return value
        try:
            return self.parse(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


MAX_PIECE_LENGTH = 64 * 1024 * 1024   # a piece is held whole in memory while it is fetched


def _parse_piece_length(text: str) -> int:
    length = parse_size(text)
    if length < MIN_PIECE_LENGTH or length & (length - 1) or length > MAX_PIECE_LENGTH:
        raise ValueError(f"must be a power of two from {format_bytes(MIN_PIECE_LENGTH)} to "
                         f"{format_bytes(MAX_PIECE_LENGTH)}, got {text}")
    return length


RATE = _BytesType("RATE", parse_rate)
SIZE = _BytesType("SIZE", parse_size)
PIECE_LENGTH = _BytesType("SIZE", _parse_piece_length)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def main(verbose: int) -> None:
    """swarm: a small BitTorrent peer."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


@main.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--tracker", "-t", "trackers", multiple=True, help="Announce URL (repeat for more tiers).")
@click.option("--piece-length", type=PIECE_LENGTH, default=None,
              help="Bytes per piece, a power of two (e.g. 256KiB); default by size.")
@click.option("--web-seed", "web_seeds", multiple=True, help="HTTP URL of the same data (BEP 19 url-list).")
@click.option("--comment", default=None)
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="Where to write the .torrent (default: NAME.torrent here).")
def create(path: Path, trackers, piece_length, web_seeds, comment, output) -> None:
    """Make a .torrent for a file or a folder."""
    if not path.exists():
        fail(f"{path}: no such file or folder")
    try:
        data = create_metainfo(path, list(trackers), piece_length=piece_length,
                               web_seeds=list(web_seeds), comment=comment)
        meta = parse_metainfo(data)
    except (MetainfoError, OSError) as exc:
        fail(str(exc))
    out = output or Path(torrent_file_name(meta.name))
    try:
        out.write_bytes(data)
    except OSError as exc:
        fail(f"cannot write {out}: {exc.strerror}")
    click.echo(f"{out}  {meta.name}  {format_bytes(meta.total_length)}  {meta.num_pieces} pieces"
               f" of {format_bytes(meta.piece_length)}  info-hash {meta.info_hash.hex()}")


def common_peer_options(f):
    f = click.option("--port", type=click.IntRange(0, 65535), default=None,
                     help="Listening port (default 6881 or the next free one; 0 = any).")(f)
    f = click.option("--host", default=None, help="Listen address (default: all interfaces).")(f)
    f = click.option("--upload-limit", type=RATE, default=None, help="e.g. 2MiB (per second, whole process).")(f)
    f = click.option("--download-limit", type=RATE, default=None, help="e.g. 500KiB.")(f)
    f = click.option("--max-peers", type=click.IntRange(min=1), default=50, show_default=True, help="Connections per torrent.")(f)
    f = click.option("--no-lsd", is_flag=True, help="No Local Service Discovery (BEP 14).")(f)
    f = click.option("--wait-for", "gate", type=click.Path(path_type=Path), default=None, hidden=True,
                     help="Benchmarks: listen at once, start the torrent when this file exists.")(f)
    return f


@main.command()
@click.argument("torrent")
@click.option("-o", "--output", "outdir", type=click.Path(path_type=Path), default=Path("."),
              help="Folder to download into (default: here).")
@click.option("--no-seed", is_flag=True, help="Exit as soon as the download is complete.")
@click.option("--mode", type=click.Choice(["p2p", "central", "hybrid"]), default="p2p", show_default=True,
              help="p2p: peers only; central: web seeds only; hybrid: both.")
@common_peer_options
def get(torrent: str, outdir: Path, no_seed: bool, mode: str, **opts) -> None:
    """Download TORRENT (a file or an http:// URL), then keep seeding."""
    meta = _load(torrent)
    _run(meta, outdir, seed=not no_seed, mode=mode, **opts)


@main.command()
@click.argument("torrent")
@click.argument("path", type=click.Path(path_type=Path))
@common_peer_options
def seed(torrent: str, path: Path, **opts) -> None:
    """Verify the data at PATH (file, or folder of a multi-file torrent) and seed it."""
    meta = _load(torrent)
    if not path.exists():
        fail(f"{path}: no such file or folder")
    if meta.multi_file != path.is_dir():
        fail(f"{path}: the torrent holds a {'folder' if meta.multi_file else 'single file'}")
    meta = _renamed(meta, path.name)
    _run(meta, path.parent, seed=True, mode="p2p", seed_only=True, **opts)


def _renamed(meta: Metainfo, name: str) -> Metainfo:
    """Seed data whose file or folder is named differently from the torrent's name."""
    if name == meta.name:
        return meta
    files = tuple(dataclasses.replace(f, path=(name,) + f.path[1:]) for f in meta.files)
    return dataclasses.replace(meta, name=name, files=files)


def _load(source: str) -> Metainfo:
    try:
        if source.startswith(("http://", "https://")):
            data = asyncio.run(_fetch(source))
            try:
                return parse_metainfo(data)
            except MetainfoError as exc:
                fail(f"{source}: {exc}")
        return load_metainfo(source)
    except MetainfoError as exc:
        fail(str(exc))
    except UserError as exc:
        fail(str(exc))


async def _fetch(url: str) -> bytes:
    import aiohttp
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            async with session.get(url) as resp:
                if resp.status != 200:
                    raise UserError(f"{url}: HTTP {resp.status}")
                return await read_body(resp, MAX_TORRENT_SIZE)
    except aiohttp.InvalidURL:          # (its text is the URL alone)
        raise UserError(f"{url}: not a usable URL") from None
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError, BodyTooLarge) as exc:
        raise UserError(f"{url}: {exc or type(exc).__name__}") from None


def _config(opts: dict) -> ClientConfig:
    """The daemon settings every peer command shares (see `common_peer_options`)."""
    config = ClientConfig(host=opts["host"], port=opts["port"], upload_limit=opts["upload_limit"],
                          download_limit=opts["download_limit"],
                          max_connections_per_torrent=opts["max_peers"])
    if opts["no_lsd"]:
        config.lsd = False
    return config


def _run(meta: Metainfo, root: Path, *, seed: bool, mode: str, seed_only: bool = False, **opts) -> None:
    config = _config(opts)
    try:
        code = run_loop(_session(meta, root, config, seed=seed, mode=mode, seed_only=seed_only,
                                 gate=opts.get("gate")))
    except KNOWN_ERRORS as exc:
        fail(_describe(exc))
    except KeyboardInterrupt:       # before the daemon's own handlers were in place
        code = INTERRUPTED
    sys.exit(code)


def run_loop(coro):
    """Run the daemon on uvloop when it is installed (measurably faster I/O), else asyncio's loop.

    SWARM_UVLOOP=0 forces the standard loop (for comparisons)."""
    factory = None
    if os.environ.get("SWARM_UVLOOP", "1") != "0":
        try:
            import uvloop
            factory = uvloop.new_event_loop
        except ImportError:
            pass
    # What exists now (modules, classes, the metainfo) lives as long as the process: the
    # collector need not walk it again on every full collection.
    gc.freeze()
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.filename + ': ' if exc.filename else ''}{exc.strerror}"
    return str(exc)


async def _session(meta: Metainfo, root: Path, config: ClientConfig, *, seed: bool, mode: str,
                   seed_only: bool = False, gate: Path | None = None) -> int:
    loop = asyncio.get_running_loop()
    stop = daemon_loop_setup()
    client = Client(config)
    await client.start()
    click.echo(f"swarm-peer: listening on port {client.port}", err=False)
    sys.stdout.flush()
    try:
        if gate is not None:
            while not gate.exists() and not stop.is_set():
                await asyncio.sleep(0.01)
        started = loop.time()
        progress = ProgressReporter()
        adding = asyncio.ensure_future(client.add_torrent(
            meta, root, mode=mode, seed_only=seed_only,
            on_check=lambda done, total: progress.checking(meta.name, done, total)))
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait([adding, stopping], return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not adding.done():                   # Ctrl-C while checking what is on disk
            adding.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await adding
            progress.finish()
            click.echo(f"{meta.name}: interrupted while checking the data on disk", err=True)
            return INTERRUPTED
        progress.finish()
        torrent = adding.result()
        target = root / disk_name(meta.name)
        if not torrent.complete.is_set():
            click.echo(f"{meta.name}: {torrent.status().have}/{meta.num_pieces} pieces on disk, downloading")
            await _watch(torrent, progress, stop)
            progress.finish()
        if torrent.error:
            click.echo(f"swarm-peer: error: {torrent.error}", err=True)
            return 2
        if not torrent.complete.is_set():     # stopped by Ctrl-C or SIGTERM: say so, and fail
            click.echo(f"{meta.name}: interrupted at {torrent.status().have}/{meta.num_pieces} pieces;"
                       f" the same command resumes it", err=True)
            return INTERRUPTED
        click.echo(f"complete: {target.resolve()} ({loop.time() - started:.2f} s)")
        sys.stdout.flush()
        if seed and not stop.is_set():
            if torrent.announcers:  # say "seeding" once the tracker knows, so peers find us
                await wait_any(torrent.announced.wait(), stop.wait(), timeout=10)
            click.echo(f"seeding {meta.name} on port {client.port}; Ctrl-C to stop")
            sys.stdout.flush()
            await wait_any(stop.wait(), torrent.failed.wait())
            if torrent.error:
                click.echo(f"swarm-peer: error: {torrent.error}", err=True)
                return 2
        return 0
    finally:
        await client.close()
        totals = [(t.uploaded, t.downloaded) for t in client.torrents.values()]
        click.echo(f"totals: uploaded={sum(u for u, _ in totals)} downloaded={sum(d for _, d in totals)}")
        sys.stdout.flush()


async def _watch(torrent: Torrent, progress: ProgressReporter, stop: asyncio.Event) -> None:
    while not (torrent.complete.is_set() or torrent.failed.is_set() or stop.is_set()):
        progress.update(torrent.status())
        await wait_any(torrent.complete.wait(), torrent.failed.wait(), stop.wait(), timeout=1.0)
    progress.update(torrent.status(), force=True)


@main.command()
@click.option("--peers", type=int, default=5, show_default=True, help="Downloading peers.")
@click.option("--file", "path", type=click.Path(exists=True, path_type=Path), default=None,
              help="File to share (default: a sample file).")
@click.option("--workdir", type=click.Path(path_type=Path), default=None, help="Keep the demo files here.")
def demo(peers: int, path: Path | None, workdir: Path | None) -> None:
    """A local swarm: tracker, one seed, several peers; checks every copy is identical."""
    from peer.demo import DemoError, run_demo
    try:
        ok = run_demo(peers=peers, path=path, workdir=workdir)
    except DemoError as exc:
        fail(str(exc))
    sys.exit(0 if ok else 1)


@main.command()
@click.argument("file", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--peers", "-n", type=int, default=8, show_default=True, help="Downloading peers.")
@click.option("--upload-limit", type=RATE, default="4MiB", show_default=True,
              help="Upload cap of every peer (and of the server unless --server-upload-limit).")
@click.option("--server-upload-limit", type=RATE, default=None, help="Upload cap of the origin and the seed.")
@click.option("--download-limit", type=RATE, default=None, help="Download cap of every peer (d_min).")
@click.option("--modes", default="central,p2p", show_default=True, help="Comma list of central, p2p, hybrid.")
@click.option("--sweep", default=None, help="Comma list of peer counts, e.g. 1,2,4,8,16,32.")
@click.option("--size", type=SIZE, default="32MiB", show_default=True, help="Size of the generated file (no FILE).")
@click.option("--piece-length", type=PIECE_LENGTH, default="256KiB", show_default=True,
              help="Piece length of the torrent, a power of two.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("compare-results"),
              show_default=True, help="Folder for the table, JSON/CSV and charts.")
@click.option("--model-only", is_flag=True, help="Only compute the fluid-model bounds (any size, any N).")
@click.option("--timeout", type=float, default=600, show_default=True, help="Seconds per run before giving up.")
@click.option("--keep-logs", is_flag=True, help="Copy every process's output to OUT/logs/MODE-N/.")
def compare(**opts) -> None:
    """P2P against client-server: same file, same bandwidth, measured side by side."""
    from peer.compare import CompareError, run_compare
    try:
        ok = run_compare(**opts)
    except CompareError as exc:
        fail(str(exc))
    sys.exit(0 if ok else 1)


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--tracker", "-t", "trackers", multiple=True,
              help="Announce URL (repeat for more tiers); none: LAN discovery only.")
@click.option("--torrents-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("."),
              show_default=True, help="Where to write the .torrent files (a tracker's --torrents DIR).")
@common_peer_options
def share(paths: tuple[Path, ...], trackers, torrents_dir: Path, **opts) -> None:
    """Make a torrent for each file or folder in PATHS and seed them all."""
    from peer.share import ShareError, run_share
    config = _config(opts)
    try:
        code = run_loop(run_share(paths, trackers, torrents_dir, config,
                                     echo=lambda line: click.echo(line) or sys.stdout.flush()))
    except (ShareError, *KNOWN_ERRORS) as exc:
        fail(_describe(exc))
    except KeyboardInterrupt:
        code = 0
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    main()

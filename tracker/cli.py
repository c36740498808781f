"""`swarm-tracker start`: the tracker as a program.

Prints one "listening on" line (tests read the port from it when --port 0), runs until
Ctrl-C or SIGTERM, then exits 0. A bad option is one error line and exit status 2.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
from pathlib import Path

import click

from common.rates import parse_rate
from tracker.server import (
    HTTP_SERVERS, BindError, TrackerConfig, bind_sockets, choose_http_server, config_error, start_tracker,
)


def _fail(message: str) -> None:
    click.echo(f"swarm-tracker: error: {message}", err=True)
    sys.exit(2)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """swarm's BitTorrent tracker (HTTP and UDP)."""


@main.command()
@click.option("--host", default="0.0.0.0", show_default=True, help="Address to listen on ('::' for IPv6 too).")
@click.option("--port", default=6969, show_default=True, type=int,
              help="TCP and UDP port; 0 picks a free one.")
@click.option("--interval", default=1800, show_default=True, type=int,
              help="Seconds between announces that the tracker asks for.")
@click.option("--torrents", "torrents_dir", default=None, metavar="DIR",
              help="Serve the .torrent files of DIR at /torrents/ and name them on the index page.")
@click.option("--files", "files_dir", default=None, metavar="DIR",
              help="Serve the files under DIR at /files/ (with Range: usable as a web seed).")
@click.option("--upload-limit", default=None, metavar="RATE",
              help="Cap the total rate of /files/ downloads, e.g. 2MiB.")
@click.option("--max-torrents", default=10_000, show_default=True, type=int,
              help="Torrents tracked at most; more are refused.")
@click.option("--max-peers", default=1000, show_default=True, type=int,
              help="Peers recorded per torrent at most (more still get answers).")
@click.option("--http-server", type=click.Choice(("auto", *HTTP_SERVERS)), default="auto",
              show_default=True,
              help="granian (pip install -e '.[fast]') answers about 2-3x the HTTP announces of aiohttp "
                   "in one process, but serves the tracker protocol only: no --torrents, --files "
                   "or --upload-limit. auto: granian when it is installed and none of those is "
                   "given, else aiohttp.")
def start(host: str, port: int, interval: int, torrents_dir: str | None, files_dir: str | None,
          upload_limit: str | None, max_torrents: int, max_peers: int, http_server: str) -> None:
    """Run the tracker until interrupted."""
    if not 0 <= port <= 65535:
        _fail(f"--port must be 0..65535, got {port}")
    if interval < 1:
        _fail(f"--interval must be at least 1 second, got {interval}")
    if max_torrents < 1 or max_peers < 1:
        _fail("--max-torrents and --max-peers must be at least 1")
    for option, folder in (("--torrents", torrents_dir), ("--files", files_dir)):
        if folder is not None and not Path(folder).is_dir():
            _fail(f"{option} {folder}: not a directory")
    limit = None
    if upload_limit is not None:
        try:
            limit = parse_rate(upload_limit) or None
        except ValueError as exc:
            _fail(f"--upload-limit: {exc}")
    config = choose_http_server(TrackerConfig(
        host=host, port=port, interval=interval,
        torrents_dir=Path(torrents_dir) if torrents_dir else None,
        files_dir=Path(files_dir) if files_dir else None,
        upload_limit=limit, max_torrents=max_torrents, max_peers=max_peers), http_server)
    problem = config_error(config)
    if problem:
        _fail(problem)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    try:
        sockets = bind_sockets(host, port)
    except BindError as exc:
        _fail(str(exc))
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        code = runner.run(_serve(config, sockets))
    if code:
        sys.exit(code)
    print("swarm-tracker stopped", flush=True)


def _loop_factory():
    try:
        import uvloop           # optional: noticeably more requests per second
    except ImportError:
        return None
    return uvloop.new_event_loop


async def _serve(config: TrackerConfig, sockets: tuple[socket.socket, socket.socket]) -> int:
    """Serve until Ctrl-C or SIGTERM (exit status 0), or until HTTP fails (1, said already)."""
    stop = asyncio.get_running_loop().create_future()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)

    def first_signal() -> None:
        # From now on a signal ends the process at once, whatever the stop waits for, until
        # the very end (the event loop no longer owns them, so its closing keeps these).
        for sig in signals:
            loop.remove_signal_handler(sig)
            signal.signal(sig, _exit_now)
        if not stop.done():
            stop.set_result(None)

    for sig in signals:
        loop.add_signal_handler(sig, first_signal)
    try:
        tracker = await start_tracker(config, sockets=sockets)
    except OSError as exc:      # e.g. granian could not serve on the socket
        click.echo(f"swarm-tracker: error: {exc}", err=True)
        return 1
    where = tracker.base_url
    print(f"swarm-tracker listening on http://{where}/announce and udp://{where}/announce"
          f" (HTTP: {config.http_server})", flush=True)
    try:
        await asyncio.wait([stop, tracker.http_failed], return_when=asyncio.FIRST_COMPLETED)
    finally:
        await tracker.close()
    return 1 if tracker.http_failed.done() else 0


def _exit_now(sig: int, frame=None) -> None:
    """The second Ctrl-C or SIGTERM: no clean-up left to wait for (the kernel closes the
    sockets), and no interpreter shutdown while granian's threads still run."""
    print("swarm-tracker interrupted while stopping", flush=True)
    sys.stderr.flush()
    os._exit(128 + sig)

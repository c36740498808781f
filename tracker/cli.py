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
import time
from pathlib import Path

import click

from common.rates import parse_rate
from tracker.granian_http import available as granian_available
from tracker.server import (
    GRANIAN_SCOPE, HTTP_SERVERS, BindError, TrackerConfig, bind_sockets, serve_worker, start_tracker,
)


def _fail(message: str) -> None:
    click.echo(f"swarm-tracker: error: {message}", err=True)
    sys.exit(2)


@click.group()
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
              help="Peers listed per torrent at most.")
@click.option("--workers", default=1, show_default=True, type=int,
              help="Processes serving HTTP on the port (the first also has the registry and UDP): "
                   "2 on two cores answers 1.5-1.8x the HTTP announces of 1.")
@click.option("--http-server", type=click.Choice(HTTP_SERVERS), default="aiohttp", show_default=True,
              help="granian (pip install 'swarm[fast]') answers 2-3x the HTTP announces of aiohttp "
                   "in one process, but serves the tracker protocol only: no --torrents or --files.")
def start(host: str, port: int, interval: int, torrents_dir: str | None, files_dir: str | None,
          upload_limit: str | None, max_torrents: int, max_peers: int, workers: int,
          http_server: str) -> None:
    """Run the tracker until interrupted."""
    if not 0 <= port <= 65535:
        _fail(f"--port must be 0..65535, got {port}")
    if interval < 1:
        _fail(f"--interval must be at least 1 second, got {interval}")
    if max_torrents < 1 or max_peers < 1:
        _fail("--max-torrents and --max-peers must be at least 1")
    if not 1 <= workers <= 64:
        _fail(f"--workers must be 1..64, got {workers}")
    if workers > 1 and not sys.platform.startswith("linux"):
        _fail("--workers above 1 needs Linux (the kernel spreads connections over the processes)")
    if http_server == "granian":
        if torrents_dir or files_dir or upload_limit or workers > 1:
            _fail(GRANIAN_SCOPE)
        if not granian_available():
            _fail("--http-server granian needs granian: pip install 'swarm[fast]'")
    for option, folder in (("--torrents", torrents_dir), ("--files", files_dir)):
        if folder is not None and not Path(folder).is_dir():
            _fail(f"{option} {folder}: not a directory")
    limit = None
    if upload_limit is not None:
        try:
            limit = parse_rate(upload_limit) or None
        except ValueError as exc:
            _fail(f"--upload-limit: {exc}")
        if limit and workers > 1:
            _fail("--upload-limit needs --workers 1: each process would have a limit of its own")
    config = TrackerConfig(host=host, port=port, interval=interval,
                           torrents_dir=Path(torrents_dir) if torrents_dir else None,
                           files_dir=Path(files_dir) if files_dir else None,
                           upload_limit=limit, max_torrents=max_torrents, max_peers=max_peers,
                           http_server=http_server)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    try:
        tcps, udp = bind_sockets(host, port, tcp_count=workers)
    except BindError as exc:
        _fail(str(exc))
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)      # (if inherited as ignored: no waitpid)
    workers_alive = _fork_workers(config, tcps, udp)   # before any event loop exists
    links = list(workers_alive.values())              # (workers_alive shrinks as they end)
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(_serve(config, (tcps[0], udp), links, workers_alive))
    except KeyboardInterrupt:   # a second Ctrl-C during shutdown
        pass
    finally:
        for link in links:
            link.close()        # (no-op if the event loop closed it) the workers stop on it
        _reap(workers_alive)
    print("swarm-tracker stopped", flush=True)


def _fork_workers(config: TrackerConfig, tcps: list[socket.socket],
                  udp: socket.socket) -> dict[int, socket.socket]:
    """A process for each TCP socket but the first: {its pid: the main process's link end}."""
    workers: dict[int, socket.socket] = {}
    for tcp in tcps[1:]:
        main_end, worker_end = socket.socketpair()
        pid = os.fork()
        if pid == 0:                # the worker: keep its own two sockets only, never return
            code = 1
            try:
                for other in (main_end, udp, *workers.values(), *(t for t in tcps if t is not tcp)):
                    other.close()
                with asyncio.Runner(loop_factory=_loop_factory()) as runner:
                    runner.run(_work(config, tcp, worker_end))
                code = 0
            except KeyboardInterrupt:
                code = 0
            except BaseException:
                logging.getLogger("swarm.tracker").exception("HTTP worker failed")
            finally:
                os._exit(code)
        worker_end.close()
        tcp.close()
        workers[pid] = main_end
    return workers


async def _work(config: TrackerConfig, tcp: socket.socket, link: socket.socket) -> None:
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(
            sig, lambda: stop.done() or stop.set_result(None))
    await serve_worker(config, tcp, link, stop)


def _reap(workers_alive: dict[int, socket.socket], timeout: float = 5.0) -> None:
    """Wait for the workers, which stop when the main process closes their links."""
    deadline = time.monotonic() + timeout
    _reap_exited(workers_alive, report=False)
    while workers_alive and time.monotonic() < deadline:
        time.sleep(0.02)
        _reap_exited(workers_alive, report=False)
    for pid in list(workers_alive):
        os.kill(pid, signal.SIGKILL)
        _reap_exited({pid: workers_alive.pop(pid)}, report=False, block=True)
        click.echo(f"swarm-tracker: HTTP worker {pid} did not stop in {timeout:g} s: killed", err=True)


async def _watch_workers(workers_alive: dict[int, socket.socket], stopping: asyncio.Event) -> None:
    """Reap the workers that end before the tracker stops, and say so (the event loop keeps
    SIGCHLD for itself, so this looks twice a second)."""
    while workers_alive:
        await asyncio.sleep(0.5)
        _reap_exited(workers_alive, report=not stopping.is_set())


def _reap_exited(workers_alive: dict[int, socket.socket], report: bool, block: bool = False) -> None:
    """Forget the workers that have ended (with `report`, saying how on stderr)."""
    for pid in list(workers_alive):
        try:
            done, status = os.waitpid(pid, 0 if block else os.WNOHANG)
        except ChildProcessError:       # reaped already (SIGCHLD ignored, or a double call)
            done, status = pid, 0
        if done == 0:
            continue
        del workers_alive[pid]
        if report:
            how = (f"killed by signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status)
                   else f"exit status {os.WEXITSTATUS(status)}")
            click.echo(f"swarm-tracker: HTTP worker {pid} ended ({how}); "
                       f"{len(workers_alive) + 1} processes serve HTTP now", err=True)


def _loop_factory():
    try:
        import uvloop           # optional: noticeably more requests per second
    except ImportError:
        return None
    return uvloop.new_event_loop


async def _serve(config: TrackerConfig, sockets: tuple[socket.socket, socket.socket],
                 links: list[socket.socket], workers_alive: dict[int, socket.socket]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    tracker = await start_tracker(config, sockets=sockets, worker_links=links)
    watch = asyncio.create_task(_watch_workers(workers_alive, stop))
    where = tracker.base_url
    print(f"swarm-tracker listening on http://{where}/announce and udp://{where}/announce",
          flush=True)
    try:
        await stop.wait()
    finally:
        watch.cancel()
        await tracker.close()

"""Run the tracker: one registry behind HTTP (TCP) and UDP listening on the same port number.

Used by the CLI and by tests that want a real tracker inside their own event loop. With
`swarm-tracker start --workers N`, the CLI forks N-1 processes (`serve_worker`) that share
the TCP port and ask the main process, which has the registry, for each answer (see
worker_link). With `--http-server granian`, granian serves HTTP instead of aiohttp, in this
same process (see granian_http).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from tracker.granian_http import GranianHttp
from tracker.http_api import TRACKER_KEY, TrackerHttp, create_app
from tracker.registry import SwarmRegistry
from tracker.udp_api import UdpServer, UdpTracker, start_udp_server
from tracker.worker_link import MainConnection, WorkerConnection

# At stop, what aiohttp gives a connection to finish before closing it (its default is 60 s,
# which kept a worker waiting on a client that had connected but not yet sent its request).
SHUTDOWN_SECONDS = 1.0

HTTP_SERVERS = ("aiohttp", "granian")
GRANIAN_SCOPE = ("--http-server granian serves the tracker protocol only: "
                 "--torrents, --files and --workers need aiohttp")

__all__ = ["TrackerConfig", "RunningTracker", "bind_sockets", "start_tracker", "serve_worker"]


class BindError(OSError):
    """The tracker cannot listen where it was asked to."""


@dataclass(slots=True)
class TrackerConfig:
    host: str = "0.0.0.0"
    port: int = 6969
    interval: int = 1800
    torrents_dir: Path | None = None
    files_dir: Path | None = None
    upload_limit: int | None = None     # bytes/s for /files/, None = unlimited
    max_torrents: int = 10_000
    max_peers: int = 1000
    http_server: str = "aiohttp"        # or "granian": the tracker protocol only (granian_http)


def _family(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _socket(host: str, kind: int, shared: bool = False) -> socket.socket:
    sock = socket.socket(_family(host), kind)
    if _family(host) == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)   # "::" also takes IPv4
    if kind == socket.SOCK_STREAM:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if shared:     # one listening socket per process; the kernel spreads connections over them
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    return sock


def bind_sockets(host: str, port: int, attempts: int = 50,
                 tcp_count: int = 1) -> tuple[list[socket.socket], socket.socket]:
    """`tcp_count` TCP sockets and a UDP socket bound to the same port; port 0 picks one
    free for all."""
    last_error: OSError | None = None
    shared = tcp_count > 1
    for _ in range(attempts if port == 0 else 1):
        tcps = [_socket(host, socket.SOCK_STREAM, shared) for _ in range(tcp_count)]
        try:
            if shared and port != 0:
                _check_free(host, port)   # SO_REUSEPORT alone would share it with its owner
            tcps[0].bind((host, port))
            chosen = tcps[0].getsockname()[1]
            for tcp in tcps[1:]:
                tcp.bind((host, chosen))
        except OSError as exc:
            for tcp in tcps:
                tcp.close()
            raise BindError(f"cannot listen on TCP {host}:{port}: {exc.strerror or exc}") from None
        udp = _socket(host, socket.SOCK_DGRAM)
        try:
            udp.bind((host, chosen))
        except OSError as exc:
            udp.close()
            for tcp in tcps:
                tcp.close()
            last_error = exc
            continue            # with port 0: that number is taken for UDP, try another
        return tcps, udp
    raise BindError(f"cannot listen on UDP {host}:{port}: "
                    f"{getattr(last_error, 'strerror', None) or last_error}")


def _check_free(host: str, port: int) -> None:
    """OSError if another socket listens on the port (even one that allows sharing it)."""
    with _socket(host, socket.SOCK_STREAM) as probe:
        probe.bind((host, port))


@dataclass(slots=True)
class RunningTracker:
    registry: SwarmRegistry
    host: str
    port: int
    _http: web.AppRunner | GranianHttp
    _udp: UdpServer
    _expiry: asyncio.Task
    _links: list[asyncio.Transport]

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    async def close(self) -> None:
        self._expiry.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._expiry
        self._udp.close()
        for link in self._links:
            link.close()        # the workers see it and stop
        if isinstance(self._http, GranianHttp):
            await self._http.close()
        else:
            await self._http.cleanup()


async def _expire_forever(registry: SwarmRegistry, clock: Callable[[], float], every: float) -> None:
    while True:
        await asyncio.sleep(every)
        registry.expire(clock())


async def start_tracker(config: TrackerConfig, *, registry: SwarmRegistry | None = None,
                        clock: Callable[[], float] = time.monotonic,
                        sockets: tuple[socket.socket, socket.socket] | None = None,
                        worker_links: Sequence[socket.socket] = ()) -> RunningTracker:
    """Bind (unless given bound TCP and UDP `sockets`), start HTTP and UDP, answer the
    workers on the other ends of `worker_links`, and return a handle; BindError if the
    port is not free."""
    if config.http_server not in HTTP_SERVERS:
        raise ValueError(f"http_server must be one of {HTTP_SERVERS}, not {config.http_server!r}")
    if config.http_server == "granian" and (config.torrents_dir or config.files_dir or worker_links):
        raise ValueError(GRANIAN_SCOPE)
    registry = registry or SwarmRegistry(interval=config.interval, max_torrents=config.max_torrents,
                                         max_peers_per_torrent=config.max_peers)
    if sockets is None:
        tcps, udp = bind_sockets(config.host, config.port)
        tcp = tcps[0]
    else:
        tcp, udp = sockets
    port = tcp.getsockname()[1]         # (granian takes the socket over)
    http: web.AppRunner | GranianHttp
    if config.http_server == "granian":
        api = TrackerHttp(registry, clock, None, None, None)
        http = GranianHttp(api, tcp)
    else:
        app = create_app(registry, clock=clock, torrents_dir=config.torrents_dir,
                         files_dir=config.files_dir, upload_limit=config.upload_limit)
        api = app[TRACKER_KEY]
        http = web.AppRunner(app, access_log=None, handle_signals=False,
                             shutdown_timeout=SHUTDOWN_SECONDS)
        await http.setup()
    loop = asyncio.get_running_loop()
    links: list[asyncio.Transport] = []
    try:
        for link in worker_links:
            transport, _ = await loop.create_unix_connection(
                lambda: WorkerConnection(api.answer), sock=link)
            links.append(transport)
        if isinstance(http, GranianHttp):
            await http.start()
        else:
            await web.SockSite(http, tcp, backlog=1024).start()
        transport = await start_udp_server(UdpTracker(registry), udp, clock)
    except BaseException:
        for link_transport in links:
            link_transport.close()
        for link in worker_links:
            link.close()        # (those not yet given to a transport) so the workers stop
        await (http.close() if isinstance(http, GranianHttp) else http.cleanup())
        tcp.close()
        udp.close()
        raise
    every = max(1.0, min(60.0, config.interval / 4))
    expiry = asyncio.create_task(_expire_forever(registry, clock, every))
    return RunningTracker(registry, config.host, port, http, transport, expiry, links)


async def serve_worker(config: TrackerConfig, tcp: socket.socket, link: socket.socket,
                       stop: asyncio.Future) -> None:
    """An HTTP worker process's life: serve on `tcp` until `stop` or until the main process
    (on the other end of `link`) is gone."""
    loop = asyncio.get_running_loop()
    transport, main = await loop.create_unix_connection(MainConnection, sock=link)
    app = create_app(None, torrents_dir=config.torrents_dir, files_dir=config.files_dir,
                     upload_limit=config.upload_limit, main=main)
    runner = web.AppRunner(app, access_log=None, handle_signals=False,
                           shutdown_timeout=SHUTDOWN_SECONDS)
    await runner.setup()
    try:
        await web.SockSite(runner, tcp, backlog=1024).start()
        await asyncio.wait([stop, main.closed], return_when=asyncio.FIRST_COMPLETED)
    finally:
        transport.close()
        await runner.cleanup()

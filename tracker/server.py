"""Run the tracker: one registry behind HTTP (TCP) and UDP listening on the same port number.

Used by the CLI and by tests that want a real tracker inside their own event loop. HTTP is
served by aiohttp, or by granian (`http_server="granian"`, see granian_http; the CLI's
default `auto` takes it when it is installed and the options allow).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from common.descriptors import allow_open_files
from tracker.granian_http import BACKLOG, NEEDS_GRANIAN, GranianHttp, available as granian_available
from tracker.http_api import TrackerHttp, create_app
from tracker.registry import SwarmRegistry
from tracker.udp_api import UdpServer, UdpTracker, start_udp_server

# At stop, what aiohttp gives a connection to finish before closing it (its default is 60 s,
# also for a client that has connected but not yet sent its request).
SHUTDOWN_SECONDS = 1.0
# aiohttp closes a connection idle this long: one that has sent nothing yet, or only part of
# a request's head, or is kept alive between requests (its default, 3630 s, let idle clients
# hold descriptors until none were left; granian's header timeout is 5 s).
IDLE_SECONDS = 10.0
# Client connections: as many as the descriptor limit allows once raised (the usual soft
# limit of 1024 is a handful of idle clients away from shutting everyone out), less those
# the process keeps for itself.
OPEN_FILES_WANTED = 65536
OPEN_FILES_KEPT = 256

HTTP_SERVERS = ("aiohttp", "granian")
GRANIAN_SCOPE = ("--http-server granian serves the tracker protocol only: "
                 "--torrents, --files and --upload-limit need aiohttp")

__all__ = ["TrackerConfig", "RunningTracker", "bind_sockets", "choose_http_server", "config_error",
           "start_tracker"]


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


def _needs_aiohttp(config: TrackerConfig) -> bool:
    return bool(config.torrents_dir or config.files_dir or config.upload_limit)


def choose_http_server(config: TrackerConfig, choice: str) -> TrackerConfig:
    """The config with `choice` as its HTTP server; "auto": granian when it is installed
    and none of the options that need aiohttp is given, else aiohttp."""
    if choice == "auto":
        choice = "aiohttp" if _needs_aiohttp(config) or not granian_available() else "granian"
    return dataclasses.replace(config, http_server=choice)


def config_error(config: TrackerConfig) -> str | None:
    """What is wrong with the choice of HTTP server, if anything (one line for the user)."""
    if config.http_server not in HTTP_SERVERS:
        return f"http_server must be one of {HTTP_SERVERS}, not {config.http_server!r}"
    if config.http_server == "granian":
        if _needs_aiohttp(config):
            return GRANIAN_SCOPE
        if not granian_available():
            return NEEDS_GRANIAN
    return None


def _family(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _socket(host: str, kind: int) -> socket.socket:
    sock = socket.socket(_family(host), kind)
    if _family(host) == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)   # "::" also takes IPv4
    if kind == socket.SOCK_STREAM:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    return sock


def bind_sockets(host: str, port: int, attempts: int = 50) -> tuple[socket.socket, socket.socket]:
    """A TCP and a UDP socket bound to the same port; port 0 picks one free for both."""
    last_error: OSError | None = None
    for _ in range(attempts if port == 0 else 1):
        tcp = _socket(host, socket.SOCK_STREAM)
        try:
            tcp.bind((host, port))
        except OSError as exc:
            tcp.close()
            raise BindError(f"cannot listen on TCP {host}:{port}: {exc.strerror or exc}") from None
        udp = _socket(host, socket.SOCK_DGRAM)
        try:
            udp.bind((host, tcp.getsockname()[1]))
        except OSError as exc:
            udp.close()
            tcp.close()
            last_error = exc
            continue            # with port 0: that number is taken for UDP, try another
        return tcp, udp
    raise BindError(f"cannot listen on UDP {host}:{port}: "
                    f"{getattr(last_error, 'strerror', None) or last_error}")


class AiohttpServer:
    """The aiohttp app on the tracker's socket, started and closed as GranianHttp is."""

    def __init__(self, app: web.Application, sock: socket.socket) -> None:
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False,
                                     shutdown_timeout=SHUTDOWN_SECONDS, keepalive_timeout=IDLE_SECONDS)
        logging.getLogger("aiohttp.server").addFilter(_not_a_client_error)   # (once: the same function)
        self._sock = sock
        self.failed: asyncio.Future[str] = asyncio.get_running_loop().create_future()  # (never)

    async def start(self) -> None:
        await self._runner.setup()
        await web.SockSite(self._runner, self._sock, backlog=BACKLOG).start()

    async def close(self) -> None:
        await self._runner.cleanup()


@dataclass(slots=True)
class RunningTracker:
    registry: SwarmRegistry
    host: str
    port: int
    _http: AiohttpServer | GranianHttp
    _udp: UdpServer
    _expiry: asyncio.Task

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def http_failed(self) -> asyncio.Future[str]:
        """Done, with why, if the HTTP server stopped serving by itself (UDP goes on)."""
        return self._http.failed

    async def close(self) -> None:
        self._expiry.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._expiry
        self._udp.close()
        await self._http.close()


def _not_a_client_error(record: logging.LogRecord) -> bool:
    """aiohttp logs a traceback for every malformed request (a 400 answer): a client's fault,
    ~1 KB of log per 100 bytes anyone sends. Real failures of a handler still show."""
    return not (record.exc_info and isinstance(record.exc_info[1], HttpProcessingError))


async def _expire_forever(registry: SwarmRegistry, clock: Callable[[], float], every: float) -> None:
    while True:
        await asyncio.sleep(every)
        registry.expire(clock())


async def start_tracker(config: TrackerConfig, *, registry: SwarmRegistry | None = None,
                        clock: Callable[[], float] = time.monotonic,
                        sockets: tuple[socket.socket, socket.socket] | None = None) -> RunningTracker:
    """Bind (unless given bound TCP and UDP `sockets`), start HTTP and UDP, and return a
    handle; BindError if the port is not free."""
    problem = config_error(config)
    if problem:
        raise ValueError(problem)
    registry = registry or SwarmRegistry(interval=config.interval, max_torrents=config.max_torrents,
                                         max_peers_per_torrent=config.max_peers)
    tcp, udp = sockets or bind_sockets(config.host, config.port)
    port = tcp.getsockname()[1]
    max_connections = max(BACKLOG, allow_open_files(OPEN_FILES_WANTED) - OPEN_FILES_KEPT)
    http: AiohttpServer | GranianHttp
    if config.http_server == "granian":
        http = GranianHttp(TrackerHttp(registry, clock, None, None, None), tcp, max_connections)
    else:
        http = AiohttpServer(create_app(registry, clock=clock, torrents_dir=config.torrents_dir,
                                        files_dir=config.files_dir, upload_limit=config.upload_limit), tcp)
    try:
        await http.start()
        transport = await start_udp_server(UdpTracker(registry), udp, clock)
    except BaseException:
        await http.close()
        tcp.close()
        udp.close()
        raise
    every = max(1.0, min(60.0, config.interval / 4))
    expiry = asyncio.create_task(_expire_forever(registry, clock, every))
    return RunningTracker(registry, config.host, port, http, transport, expiry)

"""The tracker's HTTP side on granian: `swarm-tracker start --http-server granian`.

Why a second HTTP server: aiohttp accepts, parses, answers and closes every connection in
Python. On two cores that alone tops out near 11,000 connections/s per process, a third of
opentracker, before the tracker does any work. granian (a Rust HTTP server for Python, hyper
on tokio) does the connection and HTTP/1 work on a thread of its own and calls Python once
per request, with the raw query string, which is all an announce needs.

The answers are TrackerHttp's, the same bodies and statuses as on aiohttp. Routes: /announce,
/scrape, /stats.json and the index page (GET and HEAD). The file routes (--torrents, --files:
Range, conditional requests, the upload throttle) stay on aiohttp.

granian's embedded server is the one that runs inside an asyncio event loop. It binds its
own socket; here it gets a duplicate of the one `bind_sockets` made instead, so that port 0,
the dual-stack "::" and the shared TCP/UDP port number work as with aiohttp. granian is
imported only when this server is started (it is an optional dependency).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import logging
import os
import socket

from tracker.http_api import BENCODE_TYPE, TrackerHttp, index_html

__all__ = ["GranianHttp", "TrackerRsgi", "available", "client_host", "NEEDS_GRANIAN"]

log = logging.getLogger("swarm.tracker")

NEEDS_GRANIAN = "--http-server granian needs granian: pip install 'swarm[fast]'"
BACKLOG = 1024
# A client has this long to send its request's head (granian's default is 30 s).
HEADER_SECONDS = 5
# At stop, how long granian may finish the answers it is writing; a client that does not
# read them is left behind after that (granian itself would wait for it forever).
STOP_SECONDS = HEADER_SECONDS + 1

_BENCODE = [("content-type", BENCODE_TYPE)]
_JSON = [("content-type", "application/json; charset=utf-8")]
_HTML = [("content-type", "text/html; charset=utf-8")]
_TEXT = [("content-type", "text/plain; charset=utf-8")]
_ROUTES = ("/announce", "/scrape", "/stats.json", "/")


def available() -> bool:
    return importlib.util.find_spec("granian") is not None


def client_host(client: str) -> str:
    """granian's "host:port" or "[v6 host]:port" -> the host, as aiohttp's request.remote."""
    host = client.rpartition(":")[0]
    return host[1:-1] if host.startswith("[") else host


class TrackerRsgi:
    """The RSGI application: one call per request, answered at once (nothing here waits)."""

    def __init__(self, api: TrackerHttp) -> None:
        self.api = api

    async def __call__(self, scope, proto) -> None:
        if scope.proto != "http":
            return
        path = scope.path
        if path not in _ROUTES:     # (the status and body aiohttp gives, for any method)
            proto.response_bytes(404, _TEXT, b"404: Not Found")
            return
        if scope.method not in ("GET", "HEAD"):
            proto.response_bytes(405, [*_TEXT, ("allow", "GET,HEAD")], b"405: Method Not Allowed")
            return
        try:
            if path == "/announce":
                body = self.api.announce_body(scope.query_string, client_host(scope.client))
                proto.response_bytes(200, _BENCODE, body)
            elif path == "/scrape":
                proto.response_bytes(200, _BENCODE, self.api.scrape_body(scope.query_string))
            elif path == "/stats.json":
                proto.response_bytes(200, _JSON, json.dumps(self.api.stats()).encode())
            else:
                proto.response_str(200, _HTML, index_html(self.api.stats()))
        except Exception:       # (announce and scrape answer their own errors in bencode)
            log.exception("%s %s failed", scope.method, path)
            proto.response_bytes(500, _TEXT, b"500 Internal Server Error\n")


def _embedded_server(app: TrackerRsgi, fd: int):
    """granian's embedded server for `app`, serving on the listening socket `fd`."""
    from granian.constants import HTTPModes, Interfaces
    from granian.http import HTTP1Settings
    from granian.log import LogLevels
    from granian.net import SocketHolder
    from granian.server.embed import Server

    class OnOurSocket(Server):
        def _init_shared_socket(self) -> None:
            # (granian 2.8's hook for making its listening socket: pinned in pyproject)
            self._shd = SocketHolder(fd, False, BACKLOG)
            self._sfd = fd

    return OnOurSocket(
        app, interface=Interfaces.RSGI, http=HTTPModes.http1, websockets=False, backlog=BACKLOG,
        http1_settings=HTTP1Settings(header_read_timeout=HEADER_SECONDS * 1000),
        # Errors only ("the embedded server is experimental" is a warning), to the root logger,
        # so in the tracker's format; levels only: a full dictConfig would close our handlers.
        log_level=LogLevels.error,
        log_dictconfig={"version": 1, "incremental": True, "formatters": {}, "handlers": {},
                        "loggers": {"_granian": {"propagate": True}}})


class GranianHttp:
    """granian serving one TrackerHttp on the tracker's listening socket: `start`, then `close`."""

    def __init__(self, api: TrackerHttp, sock: socket.socket) -> None:
        if not available():
            raise RuntimeError(NEEDS_GRANIAN)
        sock.listen(BACKLOG)
        self._sock = sock
        self._server = _embedded_server(TrackerRsgi(api), os.dup(sock.fileno()))  # granian closes its copy
        self._task: asyncio.Task | None = None
        self._worker_error: BaseException | None = None
        self._stopping = False
        self._threads = _thread_count()

    async def start(self) -> None:
        started = asyncio.get_running_loop().create_future()
        self._server.on_startup(lambda: started.done() or started.set_result(None))
        self._task = asyncio.create_task(self._server.serve(spawn_target=self._worker))
        await asyncio.wait([started, self._task], return_when=asyncio.FIRST_COMPLETED)
        for _ in range(3):      # granian creates its worker's task right after the startup hook
            await asyncio.sleep(0)
        if self._task.done() or self._worker_error is not None:
            error = await self.close()
            raise OSError(f"granian could not serve HTTP: {self._worker_error or error or 'see the log'}")
        self._task.add_done_callback(self._ended)

    async def _worker(self, *args) -> None:
        """granian's own worker, whose error granian would only log as "Unexpected exit"."""
        try:
            await self._server._spawn_rsgi_worker(*args)
        except BaseException as exc:
            self._worker_error = exc
            raise

    def _ended(self, task: asyncio.Task) -> None:
        if not self._stopping:
            error = None if task.cancelled() else task.exception()
            log.error("granian stopped serving HTTP: %s", error or self._worker_error or "see the log")

    async def close(self) -> BaseException | None:
        """Stop accepting at once; let answers being written finish for up to STOP_SECONDS.
        Returns what granian failed with, if it did."""
        if self._stopping:
            return None
        self._stopping = True
        error: BaseException | None = None
        if self._task is not None:
            if not self._task.done():
                self._server.signal_handler_interrupt()
            try:
                await asyncio.wait_for(asyncio.shield(self._task), STOP_SECONDS)
            except asyncio.TimeoutError:
                log.warning("HTTP: clients still connected %g s after the stop: left behind", STOP_SECONDS)
            except Exception as exc:        # (also retrieved, so asyncio does not log it again)
                error = exc
        with contextlib.suppress(OSError):  # no new connections, even if granian's copy lingers
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        if self._task is not None and not self._task.done():
            return error
        # granian's threads end a few ms after its task: an interpreter that exits before
        # they do can make one of them panic (and abort). Bounded wait.
        for _ in range(50):
            if _thread_count() <= self._threads:
                break
            await asyncio.sleep(0.01)
        return error


def _thread_count() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:             # (not Linux: nothing to wait for that we can see)
        return 0

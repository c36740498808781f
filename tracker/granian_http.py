"""The tracker's HTTP side on granian: `swarm-tracker start --http-server granian`.

Why a second HTTP server: aiohttp accepts, parses, answers and closes every connection in
Python. On two cores that alone tops out near 11,000 connections/s per process, a third of
opentracker, before the tracker does any work. granian (a Rust HTTP server for Python, hyper
on tokio) does the connection and HTTP/1 work on a thread of its own and calls Python once
per request, with the raw query string, which is all an announce needs.

The answers are TrackerHttp's, byte for byte the same as on aiohttp. Routes: /announce,
/scrape, /stats.json and the index page (GET and HEAD). The file routes (--torrents,
--files: Range, conditional requests, the upload throttle) stay on aiohttp.

granian's embedded server is the one that runs inside an asyncio event loop. It binds its
own socket; `_OnOurSocket` gives it the one `bind_sockets` made instead, so that port 0,
the dual-stack "::" and the shared TCP/UDP port number work as with aiohttp.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket

from tracker.http_api import TrackerHttp, index_html
from tracker.worker_link import ANNOUNCE, SCRAPE

try:
    from granian.constants import HTTPModes, Interfaces
    from granian.http import HTTP1Settings
    from granian.net import SocketHolder
    from granian.server.embed import Server
except ImportError:         # an optional dependency: pip install 'swarm[fast]'
    Server = None

__all__ = ["GranianHttp", "available", "client_host"]

log = logging.getLogger("swarm.tracker")

BACKLOG = 1024
# A client has this long to send its request's head; it is also the longest a stop waits
# for one that is still sending (granian's default is 30 s).
HEADER_SECONDS = 5

_BENCODE = [("content-type", "text/plain")]
_JSON = [("content-type", "application/json; charset=utf-8")]
_HTML = [("content-type", "text/html; charset=utf-8")]
_TEXT = [("content-type", "text/plain; charset=utf-8")]


def available() -> bool:
    return Server is not None


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
        if scope.method not in ("GET", "HEAD"):
            proto.response_bytes(405, [*_TEXT, ("allow", "GET, HEAD")], b"405: Method Not Allowed")
            return
        path = scope.path
        try:
            if path == "/announce" or path == "/scrape":
                kind = ANNOUNCE if path == "/announce" else SCRAPE
                body = self.api.answer(kind, client_host(scope.client), scope.query_string)
                proto.response_bytes(200, _BENCODE, body)
            elif path == "/stats.json":
                proto.response_bytes(200, _JSON, json.dumps(self.api.stats()).encode())
            elif path == "/":
                proto.response_str(200, _HTML, index_html(self.api.stats()))
            else:
                proto.response_bytes(404, _TEXT, b"404: Not Found")      # (as aiohttp says it)
        except Exception:       # (announce and scrape answer their own errors in bencode)
            log.exception("%s %s failed", scope.method, path)
            proto.response_bytes(500, _TEXT, b"internal tracker error\n")


if Server is not None:
    class _OnOurSocket(Server):
        """granian's embedded server, serving on a socket bound by the tracker."""

        def __init__(self, app: TrackerRsgi, sock: socket.socket) -> None:
            super().__init__(app, interface=Interfaces.RSGI, http=HTTPModes.http1, websockets=False,
                             backlog=BACKLOG, log_enabled=False,
                             http1_settings=HTTP1Settings(header_read_timeout=HEADER_SECONDS * 1000))
            sock.listen(BACKLOG)
            self._our_fd = sock.detach()      # granian closes it when it stops

        def _init_shared_socket(self) -> None:
            # (granian 2.8's hook for making its listening socket: pinned in pyproject)
            self._shd = SocketHolder(self._our_fd, False, BACKLOG)
            self._sfd = self._our_fd


class GranianHttp:
    """A running granian server for one TrackerHttp; `start`, then `close` once."""

    def __init__(self, api: TrackerHttp, sock: socket.socket) -> None:
        if Server is None:
            raise RuntimeError("--http-server granian needs granian: pip install 'swarm[fast]'")
        logging.getLogger("_granian").setLevel(logging.ERROR)   # ("embedded is experimental")
        self._server = _OnOurSocket(TrackerRsgi(api), sock)
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        started = asyncio.get_running_loop().create_future()
        self._server.on_startup(lambda: started.done() or started.set_result(None))
        self._task = asyncio.create_task(self._server.serve())
        await asyncio.wait([started, self._task], return_when=asyncio.FIRST_COMPLETED)
        if self._task.done():       # it failed while starting: say how
            self._task.result()
            raise RuntimeError("granian stopped while starting")

    async def close(self) -> None:
        """Stop accepting; wait for requests being answered (at most HEADER_SECONDS for a
        client still sending its request)."""
        if self._task is None or self._task.done():
            return
        self._server.signal_handler_interrupt()
        await self._task

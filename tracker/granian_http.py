"""The tracker's HTTP side on granian: `swarm-tracker start --http-server granian`.

Why a second HTTP server: aiohttp accepts, parses, answers and closes every connection in
Python. On two cores that alone tops out near 11,000 connections/s per process, a third of
opentracker, before the tracker does any work. granian (a Rust HTTP server for Python, hyper
on tokio) does the connection and HTTP/1 work on a thread of its own and calls Python once
per request, with the raw query string, which is all an announce needs.

It serves `http_api.PAGES` (announce, scrape, /stats.json, the index page) from the same
`TrackerHttp.page` as aiohttp does. The file routes (--torrents, --files: Range, conditional
requests, the upload throttle) stay on aiohttp.

granian's embedded server is the one that runs inside an asyncio event loop. It binds its
own socket; here it gets a duplicate of the one `bind_sockets` made instead, so that port 0,
the dual-stack "::" and the shared TCP/UDP port number work as with aiohttp. That and
keeping its worker's error use two hooks of granian 2.8 (the version is checked).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import logging
import os
import socket

from tracker.http_api import PAGES, TrackerHttp

__all__ = ["GranianHttp", "TrackerRsgi", "available", "client_host", "NEEDS_GRANIAN", "BACKLOG"]

log = logging.getLogger("swarm.tracker")

NEEDS_GRANIAN = ("--http-server granian needs granian 2.8: pip install -e '.[fast]' in the "
                 "swarm checkout, or pip install 'granian>=2.8,<2.9'")
BACKLOG = 1024
# A client has this long to send its request's head (granian's default is 30 s).
HEADER_SECONDS = 5
# At stop, how long granian may go on writing answers already begun: longer than a client
# may take to send a request, so one that was sending when the stop came is answered.
# A client that does not read is left behind after that (granian would wait forever).
STOP_SECONDS = HEADER_SECONDS + 1
THREAD_WAIT_SECONDS = 0.5

_TEXT = [("content-type", "text/plain; charset=utf-8")]


def available() -> bool:
    """granian 2.8 is installed (the hooks used here are that version's) and the modules
    used here import (a broken install is said in one line, and not picked by `auto`)."""
    try:
        if importlib.metadata.version("granian").split(".")[:2] != ["2", "8"]:
            return False
        import granian.server.embed  # noqa: F401
        import granian.net  # noqa: F401
    except Exception:       # not installed (PackageNotFoundError), or broken
        return False
    return True


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
        if path not in PAGES:       # (status and body as aiohttp gives them, for any method)
            proto.response_bytes(404, _TEXT, b"404: Not Found")
            return
        if scope.method not in ("GET", "HEAD"):
            proto.response_bytes(405, [*_TEXT, ("allow", "GET,HEAD")], b"405: Method Not Allowed")
            return
        try:
            page = self.api.page(path, scope.query_string, client_host(scope.client))
            assert page is not None
        except Exception:       # (announce and scrape answer their own errors in bencode)
            log.exception("%s %s failed", scope.method, path)
            proto.response_bytes(500, _TEXT, b"500 Internal Server Error\n")
            return
        proto.response_bytes(200, [("content-type", page.content_type)], page.body)


def _not_worker_exit(record: logging.LogRecord) -> bool:
    """granian logs only that its worker ended; GranianHttp says why, once."""
    return not record.getMessage().startswith("Unexpected exit from worker")


def _embedded_server(app: TrackerRsgi, sock: socket.socket, max_connections: int):
    """granian's embedded server for `app`, to serve on a duplicate of `sock`, with at most
    `max_connections` open at once (granian's `backpressure`: its default, the backlog,
    let 1,024 clients that connect and send nothing shut everyone else out)."""
    from granian.constants import HTTPModes, Interfaces
    from granian.http import HTTP1Settings
    from granian.log import LogLevels
    from granian.net import SocketHolder
    from granian.server.embed import Server

    class OnOurSocket(Server):
        def _init_shared_socket(self) -> None:      # where granian 2.8 binds its own
            self.our_fd = os.dup(sock.fileno())     # granian's worker closes it when it ends
            self._shd = SocketHolder(self.our_fd, False, BACKLOG)
            self._sfd = self.our_fd

    logging.getLogger("_granian").addFilter(_not_worker_exit)     # (once: the same function)
    return OnOurSocket(
        app, interface=Interfaces.RSGI, http=HTTPModes.http1, websockets=False, backlog=BACKLOG,
        backpressure=max_connections,
        http1_settings=HTTP1Settings(header_read_timeout=HEADER_SECONDS * 1000),
        # Errors only ("the embedded server is experimental" is a warning), to the root logger,
        # so in the tracker's format; levels only: a full dictConfig would close our handlers.
        log_level=LogLevels.error,
        log_dictconfig={"version": 1, "incremental": True, "formatters": {}, "handlers": {},
                        "loggers": {"_granian": {"propagate": True}}})


class GranianHttp:
    """granian serving one TrackerHttp on the tracker's listening socket: `start`, then
    `close`. `failed` is done if granian stops serving before `close`."""

    def __init__(self, api: TrackerHttp, sock: socket.socket, max_connections: int) -> None:
        sock.listen(BACKLOG)
        self._sock = sock
        self._server = _embedded_server(TrackerRsgi(api), sock, max_connections)
        self._task: asyncio.Task | None = None
        self._worker_error: BaseException | None = None
        self._threads_before = _threads()   # the process's threads before granian's (start)
        self._started = False
        self._closing = False
        self._closed = False
        self.failed: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def start(self) -> None:
        started = asyncio.get_running_loop().create_future()
        self._server.on_startup(lambda: started.done() or started.set_result(None))
        self._task = asyncio.create_task(self._server.serve(spawn_target=self._run_worker))
        await asyncio.wait([started, self._task], return_when=asyncio.FIRST_COMPLETED)
        # The startup hook runs just before granian creates its worker's task, whose first
        # step either raises or starts serving: two turns of the loop see it either way.
        for _ in range(3):
            await asyncio.sleep(0)
        if self._task.done() or self._worker_error is not None:
            cause = self._worker_error or _error_of(self._task) or "see the log"
            await self.close()
            raise OSError(f"granian could not serve HTTP: {cause}")
        self._started = True
        self._task.add_done_callback(self._on_serve_done)

    async def _run_worker(self, *args) -> None:
        """granian's own worker, whose error granian would only log as "Unexpected exit"."""
        try:
            await self._server._spawn_rsgi_worker(*args)
        except BaseException as exc:
            self._worker_error = exc
            raise

    def _on_serve_done(self, task: asyncio.Task) -> None:
        if self._closing or task.cancelled() or isinstance(self._worker_error, asyncio.CancelledError):
            return                      # (the event loop is ending, not granian failing)
        cause = self._worker_error or _error_of(task)
        why = f"granian stopped serving HTTP{f': {cause!r}' if cause else ''}"
        log.error("%s", why)
        self._stop_listening()          # connections are refused, not left hanging
        if not self.failed.done():
            self.failed.set_result(why)

    async def close(self) -> None:
        """Stop accepting at once; let answers being written finish for up to STOP_SECONDS."""
        if self._closing:
            return
        self._closing = True
        try:
            if self._task is not None:
                if not self._task.done():
                    self._server.signal_handler_interrupt()
                done, _ = await asyncio.wait({self._task}, timeout=STOP_SECONDS)
                if not done:
                    log.warning("HTTP: clients still connected %g s after the stop: left behind",
                                STOP_SECONDS)
                    return      # (finally: stop listening; its threads are still busy)
                error = _error_of(self._task)       # (retrieved: asyncio would log it too)
                if error and self._started and not self.failed.done():
                    log.error("granian failed while stopping: %s", error)
        finally:
            self._stop_listening()
        # Its threads (some start only with the first requests) end a few ms after its task;
        # an interpreter that exits before they do can make one of them panic (and abort).
        for _ in range(int(THREAD_WAIT_SECONDS / 0.01)):
            if _threads() <= self._threads_before:
                break
            await asyncio.sleep(0.01)

    def _stop_listening(self) -> None:
        """Shut the listening socket down (granian's duplicate with it) and close ours."""
        if self._closed:
            return
        self._closed = True
        for worker in self._server.wrks:    # (none left once granian's serve ended normally)
            if worker.is_alive():           # else its accept loop would spin on the dead socket
                worker.terminate()
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        fd = getattr(self._server, "our_fd", None)
        if fd is not None and not self._started:   # granian's worker never took its duplicate
            with contextlib.suppress(OSError):
                if os.fstat(fd).st_ino == os.fstat(self._sock.fileno()).st_ino:
                    os.close(fd)
        self._sock.close()


def _error_of(task: asyncio.Task) -> BaseException | None:
    if not task.done():
        return None
    return asyncio.CancelledError("cancelled") if task.cancelled() else task.exception()


def _threads() -> set[str]:
    try:
        return set(os.listdir("/proc/self/task"))
    except OSError:             # (not Linux: nothing to wait for that we can see)
        return set()

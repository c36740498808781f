"""The peer daemon: one listening socket, any number of torrents, shared rate limits.

Incoming connections are not tied to a torrent until their handshake names an
info-hash we serve; the daemon-wide connection cap is checked before that.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import string
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from common.metainfo import Metainfo
from common.rates import TokenBucket
from peer.announcer import Announcer
from peer.connection import PeerConnection, Timeouts
from peer.lsd import LocalDiscovery
from peer.picker import PROCESS_OPEN_BYTES, OpenPieces
from peer.piece_workers import as_batch_thread
from peer.storage import PROCESS_PIECE_BYTES, PieceMemory, Storage
from peer.torrent import Limits, Torrent

log = logging.getLogger("swarm.peer")

DEFAULT_PORT = 6881
PEER_ID_PREFIX = b"-SW0100-"  # Azureus-style: client "SW", version 0.1.0.0


def use_io_threads(loop: asyncio.AbstractEventLoop, threads: int = 16) -> None:
    """Pieces are hashed, written and read in threads; asyncio's default pool has only 6,
    which starves a daemon with many active torrents."""
    loop.set_default_executor(ThreadPoolExecutor(max_workers=threads, thread_name_prefix="swarm-io",
                                                 initializer=as_batch_thread))


def daemon_loop_setup() -> asyncio.Event:
    """The first call of a daemon's coroutine (get, seed, share): I/O threads for pieces,
    and an Event that SIGINT or SIGTERM sets, for a clean stop."""
    loop = asyncio.get_running_loop()
    use_io_threads(loop)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except NotImplementedError:  # Windows: Ctrl-C arrives as KeyboardInterrupt instead
            pass
    return stop


async def wait_any(*aws, timeout: float | None = None) -> None:
    """Until the first of these awaitables finishes (or the timeout); the others are cancelled."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()


def make_peer_id(rng: random.Random | None = None) -> bytes:
    rng = rng or random.SystemRandom()
    tail = "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(12))
    return PEER_ID_PREFIX + tail.encode()


def lsd_disabled_by_env() -> bool:
    """Tests set SWARM_NO_LSD=1 so no peer they start ever multicasts on a real network."""
    return os.environ.get("SWARM_NO_LSD", "") not in ("", "0")


@dataclass
class ClientConfig:
    host: str | None = None                 # None: every interface (IPv4 and IPv6)
    port: int | None = None                 # None: 6881 or the next free one; 0: any
    max_connections_per_torrent: int = 50
    max_connections: int = 200              # whole daemon, incoming and outgoing
    upload_limit: float | None = None       # bytes/s
    download_limit: float | None = None
    lsd: bool = field(default_factory=lambda: not lsd_disabled_by_env())
    lsd_interval: float = 60.0              # BEP 14: at most one announce a minute per torrent
    timeouts: Timeouts = field(default_factory=Timeouts.from_env)
    piece_memory: int = PROCESS_PIECE_BYTES  # read caches and spare buffers of all torrents
    open_piece_bytes: int = PROCESS_OPEN_BYTES  # started, unverified pieces of all torrents


class ClientError(Exception):
    pass


class Client:
    def __init__(self, config: ClientConfig | None = None) -> None:
        self.config = config or ClientConfig()
        self.peer_id = make_peer_id()
        self.limits = Limits(TokenBucket(self.config.upload_limit), TokenBucket(self.config.download_limit))
        self.piece_memory = PieceMemory(self.config.piece_memory)
        self.open_pieces = OpenPieces(self.config.open_piece_bytes)
        self.torrents: dict[bytes, Torrent] = {}
        self.port = 0
        self._server: asyncio.AbstractServer | None = None
        self._open: set[PeerConnection] = set()
        self.lsd = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        ports = [self.config.port] if self.config.port is not None else \
            list(range(DEFAULT_PORT, DEFAULT_PORT + 10)) + [0]
        last_error: OSError | None = None
        for port in ports:
            try:
                self._server = await loop.create_server(self._accept, self.config.host, port,
                                                        reuse_address=True, backlog=128)
                break
            except OSError as exc:
                last_error = exc
        if self._server is None:
            where = (f"port {ports[0]}" if len(ports) == 1
                     else f"ports {ports[0]}-{ports[-2]} or any other")
            host = f" of {self.config.host}" if self.config.host else ""
            raise ClientError(f"cannot listen on {where}{host}: "
                              f"{_reason(last_error) if last_error else '?'}")
        self.port = self._server.sockets[0].getsockname()[1]
        if self.config.lsd:
            self.lsd = LocalDiscovery(self.port, self._lsd_found, interval=self.config.lsd_interval)
            await self.lsd.start()

    def _accept(self) -> asyncio.BaseProtocol:
        if len(self._open) >= self.config.max_connections:
            return _Refuse()
        conn = PeerConnection(my_peer_id=self.peer_id, find_torrent=self.torrents.get,
                              timeouts=self.config.timeouts, on_closed=self._closed)
        self._open.add(conn)
        return conn

    def _closed(self, conn: PeerConnection) -> None:
        self._open.discard(conn)
        if conn.torrent is not None:
            conn.torrent._on_closed(conn)

    def _lsd_found(self, info_hash: bytes, address: tuple[str, int]) -> None:
        torrent = self.torrents.get(info_hash)
        # (our own announcements are filtered by LSD's cookie; a private torrent takes its
        # tracker's peers only, BEP 27)
        if torrent is not None and not torrent.meta.private:
            torrent.add_peers([address], "lsd")

    async def add_torrent(self, meta: Metainfo, root: Path, *, mode: str = "p2p",
                          verify: bool = True, seed_only: bool = False,
                          on_check: Callable[[int, int], None] | None = None) -> Torrent:
        if meta.info_hash in self.torrents:
            raise ClientError(f"{meta.name} is already in this daemon")
        storage = Storage(meta, Path(root), memory=self.piece_memory)
        use_peers = mode in ("p2p", "hybrid")
        torrent = Torrent(meta, storage, peer_id=self.peer_id, listen_port=self.port,
                          limits=self.limits, max_connections=self.config.max_connections_per_torrent,
                          use_peers=use_peers, timeouts=self.config.timeouts,
                          open_pieces=self.open_pieces)
        if use_peers and meta.announce_tiers:
            torrent.announcers.append(Announcer(meta.announce_tiers, peer_id=self.peer_id, port=self.port))
        if mode in ("central", "hybrid"):
            from peer.webseed import WebSeed
            if not meta.web_seeds:
                raise ClientError(f"{meta.name}: --mode {mode} needs a web seed (url-list) in the torrent")
            for url in meta.web_seeds:
                torrent.extra_sources.append(WebSeed(url))
        self.torrents[meta.info_hash] = torrent
        try:
            await torrent.start(verify=verify, seed_only=seed_only, on_check=on_check)
        except BaseException:
            self.torrents.pop(meta.info_hash, None)
            raise
        if self.lsd is not None and use_peers:
            if not meta.private:     # BEP 27: a private torrent is never told to the LAN
                self.lsd.add(meta.info_hash)
        return torrent

    async def close(self) -> None:
        if self.lsd is not None:
            await self.lsd.stop()
        if self._server is not None:
            self._server.close()
        await asyncio.gather(*(t.stop() for t in self.torrents.values()), return_exceptions=True)
        for conn in list(self._open):
            conn.close("shutting down")
        if self._server is not None:
            try:
                await asyncio.wait_for(self._server.wait_closed(), timeout=2)
            except asyncio.TimeoutError:
                pass


class _Refuse(asyncio.Protocol):
    """Past the daemon's connection cap: close at once, keep serving the others."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.abort()


def _reason(exc: OSError) -> str:
    """The system's words for a failed bind (asyncio's own wrap repeats the address)."""
    return os.strerror(exc.errno) if exc.errno else str(exc)

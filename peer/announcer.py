"""Tracker clients: HTTP (BEP 3/23, via aiohttp) and UDP (BEP 15, via asyncio-dgram).

One `Announcer` per torrent walks the `announce-list` tiers as BEP 12 says: trackers in a
tier are shuffled once, tried in order, and one that answers moves to the front. It
re-announces at the interval the tracker asks for, sooner when the torrent is short
of peers (never before `min interval`), and sends `completed` and `stopped`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import aiohttp
import asyncio_dgram
from yarl import URL

from common import tracker_proto as tp
from common.metainfo import url_problem as metainfo_url_problem
from common.rates import format_bytes
from common.tracker_proto import AnnounceRequest, AnnounceResponse

if TYPE_CHECKING:  # pragma: no cover
    from peer.torrent import Torrent

log = logging.getLogger("swarm.peer")


class AnnounceError(Exception):
    """This tracker did not give us peers this time (unreachable, failure reason, garbage)."""


class BodyTooLarge(Exception):
    pass


async def read_body(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """The whole body of an HTTP answer, or BodyTooLarge past `limit` bytes. (One
    `resp.content.read(limit)` returns what has arrived so far: a 500 KB .torrent came back
    cut at 128 KB.)"""
    body = bytearray()
    async for chunk in resp.content.iter_chunked(64 * 1024):
        body += chunk
        if len(body) > limit:
            raise BodyTooLarge(f"the answer is larger than {format_bytes(limit)}")
    return bytes(body)


def url_problem(url: str) -> str | None:
    """Why we can never announce to this URL (scheme, host, port), or None.

    Parsed the way _http (yarl) and _udp (urlsplit) will parse it, so a URL that passes
    cannot raise ValueError there (port out of range, broken IPv6 brackets, bad port).
    """
    problem = metainfo_url_problem(url, tracker=True)      # what `create` refuses too
    if problem is None and urlsplit(url).scheme in ("http", "https"):
        try:
            if not URL(url).host:                           # (yarl is stricter than urlsplit)
                problem = "has no host"
        except ValueError as exc:
            problem = str(exc)
    return None if problem is None else f"bad tracker URL: {problem}"


class Announcer:
    def __init__(self, tiers, *, peer_id: bytes, port: int, numwant: int = 50,
                 http_timeout: float = 10.0, udp_timeouts: tuple[float, ...] = (2.0, 4.0, 8.0),
                 rng: random.Random | None = None) -> None:
        self.rng = rng or random.Random()
        self.tiers = [self.rng.sample(list(t), len(t)) for t in tiers if t]
        self.peer_id = peer_id
        self.port = port
        self.numwant = numwant
        self.http_timeout = http_timeout
        self.udp_timeouts = udp_timeouts
        self.key = self.rng.getrandbits(32)
        self.started = False
        self.last_error: str | None = None
        self.min_interval = 5.0
        self._event: str = "started"
        self._wake = asyncio.Event()
        self._udp_ids: dict[tuple, tuple[int, float]] = {}  # (host, port) -> (connection id, when)
        self._url_problems: dict[str, str | None] = {}  # tracker URL -> why it is unusable, or None
        self._session: aiohttp.ClientSession | None = None

    # -- the loop the torrent runs -----------------------------------------------------
    async def run(self, torrent: "Torrent") -> None:
        failures = 0
        loop = asyncio.get_running_loop()
        while True:
            event = self._event
            try:
                resp = await self.announce(torrent, event)
            except AnnounceError as exc:
                failures += 1
                self.last_error = str(exc)
                if failures == 1:   # said once (every retry with -v), and again when one answers
                    log.warning("no tracker answers, still trying: %s", exc)
                else:
                    log.info("announce failed: %s", exc)
                wait = min(60.0, 2.0 * 2 ** min(failures, 5))
            else:
                if failures:
                    log.warning("a tracker answers again (%d peers)", len(resp.peers))
                failures = 0
                self.last_error = None
                self.started = True
                if self._event == event:
                    self._event = ""
                self.min_interval = float(resp.min_interval or min(resp.interval, 30))
                torrent.add_peers(((p.ip, p.port) for p in resp.peers), "tracker")
                wait = float(max(resp.interval, 1))
            torrent.announced.set()
            deadline = loop.time() + wait
            earliest = loop.time() + min(self.min_interval, wait)
            while True:
                self._wake.clear()
                now = loop.time()
                if now >= deadline:
                    break
                if self._event and self._event != event:
                    break  # `completed` goes out at once
                if now >= earliest and failures == 0 and torrent.wants_peers() and len(torrent.connections) < 5:
                    break  # short of peers: ask again, as early as the tracker allows
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=min(deadline - now, max(earliest - now, 1.0)))
                except asyncio.TimeoutError:
                    pass

    def completed(self, torrent: "Torrent") -> None:
        if self.started or self._event == "":
            self._event = "completed"
        # never started: `started` goes out first; the tracker then sees left=0
        self._wake.set()

    async def stop(self, torrent: "Torrent") -> None:
        try:
            if self.started:
                await asyncio.wait_for(self.announce(torrent, "stopped"), timeout=3)
        except (AnnounceError, asyncio.TimeoutError):
            pass
        finally:
            if self._session is not None:
                await self._session.close()

    # -- one announce, walking the tiers ---------------------------------------------------
    async def announce(self, torrent: "Torrent", event: str) -> AnnounceResponse:
        req = AnnounceRequest(
            info_hash=torrent.info_hash, peer_id=self.peer_id, port=self.port,
            uploaded=torrent.uploaded, downloaded=torrent.downloaded, left=torrent.left,
            event=event, numwant=self.numwant if event != "stopped" else 0, key=self.key)
        errors = []
        for tier in self.tiers:
            for i, url in enumerate(tier):
                try:
                    resp = await self.announce_to(url, req)
                except AnnounceError as exc:
                    errors.append(f"{url}: {exc}")
                    continue
                tier.insert(0, tier.pop(i))
                return resp
        raise AnnounceError("; ".join(errors) or "no trackers")

    async def announce_to(self, url: str, req: AnnounceRequest) -> AnnounceResponse:
        if url not in self._url_problems:
            self._url_problems[url] = url_problem(url)
            if self._url_problems[url]:
                # Torrents in the wild list junk trackers: say so once, then skip it quietly.
                log.warning("tracker %s skipped: %s", url, self._url_problems[url])
        problem = self._url_problems[url]
        if problem:
            raise AnnounceError(problem)
        try:
            if urlsplit(url).scheme == "udp":
                return await self._udp(url, req)
            return await self._http(url, req)
        except ValueError as exc:  # a parse the check above did not foresee: still this tracker only
            raise AnnounceError(f"bad tracker URL: {exc}") from None

    async def _http(self, url: str, req: AnnounceRequest) -> AnnounceResponse:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.http_timeout),
                headers={"User-Agent": "swarm/0.1"})
        full = tp.build_announce_url(url, req)
        try:
            async with self._session.get(URL(full, encoded=True)) as resp:
                if resp.status != 200:
                    raise AnnounceError(f"HTTP {resp.status}")
                body = await read_body(resp, 4 * 1024 * 1024)
        except aiohttp.ClientConnectorError as exc:     # (its own text adds "ssl:default")
            reason = os.strerror(exc.os_error.errno) if exc.os_error.errno else str(exc.os_error)
            raise AnnounceError(f"cannot connect: {reason}") from None
        except asyncio.TimeoutError:
            raise AnnounceError(f"no answer in {self.http_timeout:g} s") from None
        except (aiohttp.ClientError, OSError, BodyTooLarge) as exc:
            raise AnnounceError(str(exc) or type(exc).__name__) from None
        try:
            return tp.decode_announce_response(body)
        except tp.TrackerFailure as exc:
            raise AnnounceError(f"tracker said: {exc.reason}") from None
        except (tp.TrackerProtocolError, ValueError) as exc:
            raise AnnounceError(f"bad response: {exc}") from None

    async def _udp(self, url: str, req: AnnounceRequest) -> AnnounceResponse:
        parts = urlsplit(url)          # (announce_to checked it has a host and a port)
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                parts.hostname, parts.port, type=socket.SOCK_DGRAM)
        except OSError as exc:
            raise AnnounceError(f"cannot resolve {parts.hostname}: {exc}") from None
        family, _, _, _, sockaddr = infos[0]
        ipv6 = family == socket.AF_INET6
        target = (sockaddr[0], sockaddr[1])
        try:
            stream = await asyncio_dgram.connect(target)
        except OSError as exc:
            raise AnnounceError(str(exc)) from None
        try:
            # An id kept from an earlier announce came to another socket (another port): a
            # tracker that ties ids to the port refuses it, so once more with a new one.
            for _ in range(2):
                conn_id, reused = await self._udp_connection_id(stream, target)
                tid = self.rng.getrandbits(32)
                packet = tp.encode_udp(tp.UdpAnnounceRequest(
                    connection_id=conn_id, transaction_id=tid, info_hash=req.info_hash,
                    peer_id=req.peer_id, downloaded=req.downloaded, left=req.left,
                    uploaded=req.uploaded, event=tp.UDP_EVENTS[req.event], ip=0, key=req.key or 0,
                    num_want=req.numwant if req.numwant is not None else -1, port=req.port))
                reply = await self._udp_exchange(stream, packet, tid, ipv6)
                if not isinstance(reply, tp.UdpError):
                    break
                self._udp_ids.pop(target, None)
                if not reused:
                    break
            if isinstance(reply, tp.UdpError):
                raise AnnounceError(f"tracker said: {reply.message}")
            if not isinstance(reply, tp.UdpAnnounceResponse):
                raise AnnounceError("unexpected UDP reply")
            return AnnounceResponse(interval=reply.interval, peers=reply.peers,
                                    complete=reply.seeders, incomplete=reply.leechers)
        finally:
            stream.close()

    async def _udp_connection_id(self, stream, target) -> tuple[int, bool]:
        """(connection id, whether it is one kept from an earlier announce)."""
        loop = asyncio.get_running_loop()
        cached = self._udp_ids.get(target)
        if cached and loop.time() - cached[1] < 60:
            return cached[0], True
        tid = self.rng.getrandbits(32)
        reply = await self._udp_exchange(stream, tp.encode_udp(tp.UdpConnectRequest(tid)), tid, False)
        if isinstance(reply, tp.UdpError):
            raise AnnounceError(f"tracker said: {reply.message}")
        if not isinstance(reply, tp.UdpConnectResponse):
            raise AnnounceError("unexpected UDP reply to connect")
        self._udp_ids[target] = (reply.connection_id, loop.time())
        return reply.connection_id, False

    async def _udp_exchange(self, stream, packet: bytes, tid: int, ipv6: bool):
        """Send, wait, resend with growing timeouts (BEP 15), matching the transaction id."""
        loop = asyncio.get_running_loop()
        for timeout in self.udp_timeouts:
            try:
                await stream.send(packet)
            except OSError as exc:
                raise AnnounceError(str(exc)) from None
            deadline = loop.time() + timeout
            while (left := deadline - loop.time()) > 0:
                try:
                    data, _ = await asyncio.wait_for(stream.recv(), timeout=left)
                except asyncio.TimeoutError:
                    break
                except OSError as exc:  # ICMP port unreachable shows up here
                    raise AnnounceError(str(exc) or "connection refused") from None
                try:
                    reply = tp.decode_udp_response(data, ipv6=ipv6)
                except tp.TrackerProtocolError:
                    continue
                if reply.transaction_id == tid:
                    return reply
        raise AnnounceError("no answer from UDP tracker")


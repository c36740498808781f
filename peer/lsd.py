"""Local Service Discovery (BEP 14): find peers of the same torrents on the LAN, no tracker.

Every peer multicasts a small HTTP-like `BT-SEARCH` datagram naming its listening port and
the info-hashes it serves; everyone listening on the group learns "ip:port has torrent X".
The layers, from the bottom:

* `encode_bt_search` / `parse_bt_search`: the message codec, pure bytes in and out;
* `LsdState`: what to announce when and which received datagrams to believe, driven by
  `now`, with no sockets (so it is unit-tested exactly);
* `LocalDiscovery`: the sockets. One receiver per address family bound to port 6771 and
  joined to the group on every interface, and one sender per interface, because a laptop
  with Wi-Fi and Ethernet must be heard on both, not only where the default route points.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import secrets
import socket
import struct
import sys
from dataclasses import dataclass
from typing import Callable, NamedTuple

import asyncio_dgram

log = logging.getLogger("swarm.lsd")

LSD_PORT = 6771
GROUP_V4 = "239.192.152.143"
GROUP_V6 = "ff15::efc0:988f"
HOST_V4 = f"{GROUP_V4}:{LSD_PORT}"
HOST_V6 = f"[{GROUP_V6}]:{LSD_PORT}"

MIN_INTERVAL = 60.0          # BEP 14: at most one announce per minute per torrent
MAX_MESSAGE = 8192           # anything longer is not an announce
MULTICAST_TTL = 1            # the LAN only: routers do not pass it on
REQUEST_LINE = b"BT-SEARCH * HTTP/1.1"


class LsdError(ValueError):
    """A datagram on the LSD port that is not a BT-SEARCH announce we can use."""


class BtSearch(NamedTuple):
    """One decoded announce: unpacks as (port, info_hashes, cookie)."""

    port: int
    info_hashes: list[bytes]
    cookie: str | None


# -- codec -----------------------------------------------------------------------------
def encode_bt_search(port: int, info_hashes: list[bytes] | tuple[bytes, ...], cookie: str | None,
                     host: str = HOST_V4) -> bytes:
    """The announce datagram, byte for byte as BEP 14 writes it (one Infohash line per torrent)."""
    if not 0 < port < 65536:
        raise LsdError(f"port {port} is not in 1..65535")
    if not info_hashes:
        raise LsdError("an announce needs at least one info-hash")
    lines = [REQUEST_LINE, b"Host: " + host.encode("ascii"), b"Port: %d" % port]
    for info_hash in info_hashes:
        if len(info_hash) != 20:
            raise LsdError(f"info-hash must be 20 bytes, got {len(info_hash)}")
        lines.append(b"Infohash: " + info_hash.hex().encode("ascii"))
    if cookie is not None:
        if not cookie or not cookie.isascii() or any(c in cookie for c in "\r\n"):
            raise LsdError(f"cookie {cookie!r} must be non-empty printable ASCII")
        lines.append(b"cookie: " + cookie.encode("ascii"))
    return b"\r\n".join(lines) + b"\r\n\r\n\r\n"


def parse_bt_search(data: bytes) -> BtSearch:
    """Decode an announce from any client: header names in any case, bare \\n tolerated.

    Unknown headers are ignored (other clients add their own); a missing or bad Port or
    Infohash is an `LsdError`, since such an announce cannot lead to a peer.
    """
    if len(data) > MAX_MESSAGE:
        raise LsdError(f"announce of {len(data)} bytes is longer than {MAX_MESSAGE}")
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError as exc:
        raise LsdError(f"non-ASCII byte at offset {exc.start}") from None
    lines = [line.rstrip("\r") for line in text.split("\n")]
    if lines[0].strip() != REQUEST_LINE.decode():
        raise LsdError(f"not a BT-SEARCH request: {lines[0][:40]!r}")
    port: int | None = None
    info_hashes: list[bytes] = []
    cookie: str | None = None
    for line in lines[1:]:
        if not line.strip():
            break  # end of the header block
        name, colon, value = line.partition(":")
        if not colon:
            raise LsdError(f"header line without a colon: {line[:40]!r}")
        name, value = name.strip().lower(), value.strip()
        if name == "port":
            if not value.isdigit() or not 0 < int(value) < 65536:
                raise LsdError(f"bad Port header {value[:20]!r}")
            port = int(value)
        elif name == "infohash":
            if len(value) != 40:
                raise LsdError(f"Infohash must be 40 hex digits, got {value[:50]!r}")
            try:
                info_hashes.append(bytes.fromhex(value))
            except ValueError:
                raise LsdError(f"Infohash is not hex: {value!r}") from None
        elif name == "cookie":
            cookie = value or None
    if port is None:
        raise LsdError("no Port header")
    if not info_hashes:
        raise LsdError("no Infohash header")
    return BtSearch(port, info_hashes, cookie)


# -- pure state ------------------------------------------------------------------------
@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float


class LsdState:
    """When each torrent is announced next, and which incoming announces to act on.

    Announces: a torrent is announced as soon as it is added, then every `interval`
    seconds, never twice within `MIN_INTERVAL` (also not after a quick remove and re-add).
    Incoming: our own datagrams (same cookie) are dropped, each sender IP gets a token
    bucket so a flood cannot keep us busy, and a (torrent, peer) pair is reported once per
    `MIN_INTERVAL` at most.
    """

    def __init__(self, cookie: str, interval: float = 60.0, *, per_source_rate: float = 2.0,
                 per_source_burst: float = 50.0, max_sources: int = 1024) -> None:
        self.cookie = cookie
        self.interval = max(interval, MIN_INTERVAL)
        self.per_source_rate = per_source_rate
        self.per_source_burst = per_source_burst
        self.max_sources = max_sources
        self._next: dict[bytes, float] = {}        # torrent -> when it is due
        self._last_sent: dict[bytes, float] = {}   # torrent -> when it was last announced
        self._buckets: dict[str, _Bucket] = {}
        self._reported: dict[tuple[bytes, str, int], float] = {}
        self.dropped = 0                           # datagrams refused by the rate limit

    # announcing
    def add(self, info_hash: bytes, now: float) -> None:
        if info_hash in self._next:
            return
        last = self._last_sent.get(info_hash)
        self._next[info_hash] = now if last is None else max(now, last + MIN_INTERVAL)

    def remove(self, info_hash: bytes) -> None:
        self._next.pop(info_hash, None)

    def __contains__(self, info_hash: bytes) -> bool:
        return info_hash in self._next

    def due(self, now: float) -> list[bytes]:
        """Torrents to announce now; they are rescheduled as announced."""
        ready = sorted(h for h, when in self._next.items() if when <= now)
        for info_hash in ready:
            self._last_sent[info_hash] = now
            self._next[info_hash] = now + self.interval
        for info_hash in [h for h, t in self._last_sent.items() if h not in self._next and t + MIN_INTERVAL <= now]:
            del self._last_sent[info_hash]
        return ready

    def next_due(self) -> float | None:
        return min(self._next.values(), default=None)

    # receiving
    def received(self, data: bytes, source_ip: str, now: float) -> list[tuple[bytes, tuple[str, int]]]:
        """(info_hash, (ip, port)) for each new peer of one of our torrents in this datagram."""
        if not self._allow(source_ip, now):
            self.dropped += 1
            return []
        try:
            message = parse_bt_search(data)
        except LsdError as exc:
            log.debug("ignoring datagram from %s: %s", source_ip, exc)
            return []
        if message.cookie == self.cookie:
            return []
        found = []
        for info_hash in message.info_hashes:
            key = (info_hash, source_ip, message.port)
            if info_hash not in self._next or self._reported.get(key, -1e18) + MIN_INTERVAL > now:
                continue
            self._reported[key] = now
            found.append((info_hash, (source_ip, message.port)))
        if len(self._reported) > 4 * self.max_sources:
            self._reported = {k: t for k, t in self._reported.items() if t + MIN_INTERVAL > now}
        return found

    def _allow(self, source_ip: str, now: float) -> bool:
        bucket = self._buckets.get(source_ip)
        if bucket is None:
            if len(self._buckets) >= self.max_sources:
                self._forget_idle(now)
                if len(self._buckets) >= self.max_sources:
                    return False
            bucket = self._buckets[source_ip] = _Bucket(self.per_source_burst, now)
        bucket.tokens = min(self.per_source_burst, bucket.tokens + (now - bucket.stamp) * self.per_source_rate)
        bucket.stamp = now
        if bucket.tokens < 1:
            return False
        bucket.tokens -= 1
        return True

    def _forget_idle(self, now: float) -> None:
        """Senders whose bucket has refilled completely are indistinguishable from new ones."""
        refill = self.per_source_burst / self.per_source_rate
        self._buckets = {ip: b for ip, b in self._buckets.items() if now - b.stamp < refill}


# -- interfaces ------------------------------------------------------------------------
_SIOCGIFFLAGS = 0x8913
_SIOCGIFADDR = 0x8915
_IFF_UP, _IFF_LOOPBACK, _IFF_MULTICAST = 0x1, 0x8, 0x1000


def _linux_flags(sock: socket.socket, name: str) -> int:
    import fcntl
    ifreq = struct.pack("16s24x", name.encode()[:15])
    return struct.unpack_from("H", fcntl.ioctl(sock.fileno(), _SIOCGIFFLAGS, ifreq), 16)[0]


def _usable(flags: int) -> bool:
    return bool(flags & _IFF_UP and flags & _IFF_MULTICAST and not flags & _IFF_LOOPBACK)


def ipv4_interfaces() -> list[tuple[str, str]]:
    """(name, IPv4 address) of every interface that is up, multicast-capable and not loopback.

    Linux asks the kernel per interface; elsewhere only the default route's interface is
    known (the address a UDP socket would send the group from).
    """
    if sys.platform.startswith("linux"):
        import fcntl
        found = []
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for _, name in socket.if_nameindex():
                try:
                    if not _usable(_linux_flags(sock, name)):
                        continue
                    ifreq = struct.pack("16s24x", name.encode()[:15])
                    reply = fcntl.ioctl(sock.fileno(), _SIOCGIFADDR, ifreq)
                except OSError:
                    continue  # no IPv4 address, or gone meanwhile
                found.append((name, socket.inet_ntoa(reply[20:24])))
        return found
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.connect((GROUP_V4, LSD_PORT))
            address = sock.getsockname()[0]
    except OSError:
        return []
    return [] if address == "0.0.0.0" else [("default", address)]


def ipv6_interfaces() -> list[tuple[str, int]]:
    """(name, index) of every usable interface with an IPv6 address; [] where unknown."""
    if not (socket.has_ipv6 and sys.platform.startswith("linux")):
        return []
    try:
        with open("/proc/net/if_inet6") as f:
            names = {line.split()[5] for line in f if len(line.split()) >= 6}
    except OSError:
        return []
    found = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for index, name in socket.if_nameindex():
            try:
                if name in names and _usable(_linux_flags(sock, name)):
                    found.append((name, index))
            except OSError:
                continue
    return found


# -- sockets ---------------------------------------------------------------------------
def _receiver_socket(family: socket.AddressFamily) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):  # other BitTorrent clients on this host listen too
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(("::", LSD_PORT))
        else:
            sock.bind(("0.0.0.0", LSD_PORT))
        sock.setblocking(False)
        return sock
    except OSError:
        sock.close()
        raise


def _sender_socket_v4(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(address))
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, MULTICAST_TTL)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)  # peers on this host too
        sock.bind((address, 0))
        sock.setblocking(False)
        return sock
    except OSError:
        sock.close()
        raise


def _sender_socket_v6(index: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, MULTICAST_TTL)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 1)
        sock.setblocking(False)
        return sock
    except OSError:
        sock.close()
        raise


class LocalDiscovery:
    """BEP 14 for the whole daemon: announces every added torrent, reports LAN peers.

    `on_peer(info_hash, (ip, port))` is called for peers of added torrents only. LSD is
    best effort: if port 6771 or an interface cannot be used, that is logged and the rest
    keeps working; interfaces that appear later (Wi-Fi joining) are picked up at the next
    announce.
    """

    def __init__(self, listen_port: int, on_peer: Callable[[bytes, tuple[str, int]], None],
                 interval: float = 60.0, *, ipv6: bool = True) -> None:
        self.listen_port = listen_port
        self.on_peer = on_peer
        self.state = LsdState(secrets.token_hex(8), interval)
        self.ipv6 = ipv6
        self._receivers: dict[int, asyncio_dgram.aio.DatagramServer] = {}
        self._senders: dict[tuple[int, object], asyncio_dgram.aio.DatagramServer] = {}
        self._joined: set[tuple[int, object]] = set()
        self._tasks: list[asyncio.Task] = []
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def cookie(self) -> str:
        return self.state.cookie

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        families = [socket.AF_INET] + ([socket.AF_INET6] if self.ipv6 and socket.has_ipv6 else [])
        for family in families:
            try:
                stream = await asyncio_dgram.from_socket(_receiver_socket(family))
            except OSError as exc:
                if family == socket.AF_INET:
                    log.warning("LSD: cannot listen on port %d (%s); announcing only", LSD_PORT, exc.strerror)
                continue
            self._receivers[family] = stream
            self._tasks.append(asyncio.ensure_future(self._receive(stream)))
        await self._refresh_interfaces()
        self._tasks.append(asyncio.ensure_future(self._announce_loop()))

    def add(self, info_hash: bytes) -> None:
        """Serve `info_hash` on the LAN: announced within moments, then every interval."""
        self.state.add(info_hash, self._now())
        self._wake.set()

    def remove(self, info_hash: bytes) -> None:
        self.state.remove(info_hash)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2)
        self._tasks.clear()
        for stream in [*self._receivers.values(), *self._senders.values()]:
            stream.close()
        self._receivers.clear()
        self._senders.clear()
        self._joined.clear()

    def _now(self) -> float:
        return (self._loop or asyncio.get_event_loop()).time()

    async def _announce_loop(self) -> None:
        while True:
            self._wake.clear()
            due = self.state.due(self._now())
            if due:
                await self._refresh_interfaces()
                for info_hash in due:  # one per datagram: aria2 reads only the first Infohash
                    await self._send_everywhere(info_hash)
            next_due = self.state.next_due()
            timeout = None if next_due is None else max(0.0, next_due - self._now())
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=timeout)
            except asyncio.TimeoutError:
                pass

    async def _send_everywhere(self, info_hash: bytes) -> None:
        for key, stream in list(self._senders.items()):
            family = key[0]
            if family == socket.AF_INET:
                data = encode_bt_search(self.listen_port, [info_hash], self.cookie, HOST_V4)
                target: tuple = (GROUP_V4, LSD_PORT)
            else:
                data = encode_bt_search(self.listen_port, [info_hash], self.cookie, HOST_V6)
                target = (GROUP_V6, LSD_PORT, 0, 0)
            try:
                await stream.send(data, target)
            except (OSError, asyncio_dgram.TransportClosed) as exc:
                log.debug("LSD: sending on %s failed (%s); dropping that interface", key[1], exc)
                stream.close()
                self._senders.pop(key, None)

    async def _refresh_interfaces(self) -> None:
        """Join the group and open a sender on each interface we have not seen yet."""
        current: set[tuple[int, object]] = set()
        for name, address in ipv4_interfaces():
            key = (socket.AF_INET, address)
            current.add(key)
            await self._use_interface(key, name, lambda a=address: _sender_socket_v4(a),
                                      socket.inet_aton(GROUP_V4) + socket.inet_aton(address),
                                      socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP)
        if socket.AF_INET6 in self._receivers:
            for name, index in ipv6_interfaces():
                key = (socket.AF_INET6, index)
                current.add(key)
                await self._use_interface(key, name, lambda i=index: _sender_socket_v6(i),
                                          socket.inet_pton(socket.AF_INET6, GROUP_V6) + struct.pack("@I", index),
                                          socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP)
        for key in [k for k in self._senders if k not in current]:
            self._senders.pop(key).close()
        self._joined &= current  # an interface that comes back must be joined again

    async def _use_interface(self, key, name: str, make_sender, membership: bytes,
                             level: int, option: int) -> None:
        receiver = self._receivers.get(key[0])
        if receiver is not None and key not in self._joined:
            try:
                receiver.socket.setsockopt(level, option, membership)
                self._joined.add(key)
                log.info("LSD: listening on %s (%s)", name, key[1])
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:  # already a member (same device, new address)
                    self._joined.add(key)
                else:
                    log.debug("LSD: cannot join the group on %s: %s", name, exc.strerror)
        if key not in self._senders:
            try:
                self._senders[key] = await asyncio_dgram.from_socket(make_sender())
            except OSError as exc:
                log.debug("LSD: cannot send on %s: %s", name, exc.strerror)

    async def _receive(self, stream) -> None:
        while True:
            try:
                data, source = await stream.recv()
            except asyncio_dgram.TransportClosed:
                return
            except OSError as exc:
                log.debug("LSD: receive error %s", exc)
                await asyncio.sleep(0.1)
                continue
            for info_hash, address in self.state.received(data, _source_host(source), self._now()):
                log.info("LSD: peer %s:%d has %s", address[0], address[1], info_hash.hex())
                try:
                    self.on_peer(info_hash, address)
                except Exception:  # a bug in the callback must not stop discovery
                    log.exception("LSD: on_peer failed")


def _source_host(source: tuple) -> str:
    """The sender's address as a dialable string: IPv6 link-local needs its interface."""
    host = source[0]
    if len(source) == 4 and source[3] and "%" not in host:
        try:
            return f"{host}%{socket.if_indextoname(source[3])}"
        except OSError:
            return f"{host}%{source[3]}"
    return host

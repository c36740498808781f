"""The announcer against a UDP tracker that ties connection ids to the client's port."""

from __future__ import annotations

import asyncio
import socket
import time
from types import SimpleNamespace

from tracker.registry import SwarmRegistry
from tracker.udp_api import UdpTracker, start_udp_server
from peer.announcer import Announcer


class PortBoundIds(UdpTracker):
    """Some trackers hash the port into the id: an id is good from its own socket only."""

    def _id_bytes(self, addr: tuple, slot: int) -> bytes:
        mac = self._mac.copy()
        mac.update(f"{addr[0]}|{addr[1]}|{slot}".encode())
        return mac.digest()

    def _valid(self, connection_id: bytes, addr: tuple, now: float) -> bool:
        slot = int(now // self.slot_seconds)
        return connection_id in (self._id_bytes(addr, slot), self._id_bytes(addr, slot - 1))


async def test_a_kept_connection_id_refused_from_a_new_socket_is_replaced_once():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    core = PortBoundIds(SwarmRegistry(interval=60))
    server = await start_udp_server(core, sock, time.monotonic)
    try:
        url = f"udp://127.0.0.1:{sock.getsockname()[1]}/announce"
        ann = Announcer([[url]], peer_id=b"-SW0001-000000000001", port=6882, udp_timeouts=(2.0,))
        torrent = SimpleNamespace(info_hash=bytes(range(20)), uploaded=0, downloaded=0, left=100,
                                  connections=[], announced=asyncio.Event(),
                                  wants_peers=lambda: False, add_peers=lambda peers, source: None)
        for event in ("started", "", ""):       # each from a new socket, the id kept
            assert (await ann.announce(torrent, event)).interval == 60
        assert core.registry.peer_count == 1
    finally:
        server.close()

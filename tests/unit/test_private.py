"""BEP 27: a private torrent's peers come from its tracker only; the LAN never hears of it."""

from __future__ import annotations

from peer.client import Client, ClientConfig
from tests.integration.conftest import make_file, torrent_for


class HeardOnTheLan:
    """Stands in for LocalDiscovery (no multicast in tests): what would be announced."""

    def __init__(self) -> None:
        self.announced: list[bytes] = []

    def add(self, info_hash: bytes) -> None:
        self.announced.append(info_hash)

    async def stop(self) -> None:
        pass


async def test_a_private_torrent_is_not_announced_on_the_lan_nor_takes_lan_peers(tmp_path):
    data = make_file(tmp_path / "d" / "f.bin", 50_000, seed=8)
    _, private = torrent_for(data, ["http://127.0.0.1:9/announce"], private=True)
    _, public = torrent_for(data, ["http://127.0.0.1:9/announce"], piece_length=16384)
    assert private.private and not public.private
    client = Client(ClientConfig(host="127.0.0.1", port=0, lsd=False))
    await client.start()
    client.lsd = lan = HeardOnTheLan()
    try:
        for meta in (private, public):
            torrent = await client.add_torrent(meta, data.parent)
            offered = []
            torrent.add_peers = lambda peers, source, offered=offered: offered.extend(peers)
            client._lsd_found(meta.info_hash, ("127.0.0.1", 6999))
            assert offered == ([] if meta.private else [("127.0.0.1", 6999)])
        assert lan.announced == [public.info_hash]
    finally:
        await client.close()

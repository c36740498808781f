"""peer.share on a real daemon listening on 127.0.0.1 (LSD off): torrents written, seeded."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from common.metainfo import create_metainfo, load_metainfo
from peer.client import Client, ClientConfig
from peer.share import ShareError, Shared, share

SAMPLES = Path(__file__).resolve().parents[2] / "sample_files"


@pytest.fixture
async def client():
    c = Client(ClientConfig(host="127.0.0.1", port=0, lsd=False))
    await c.start()
    yield c
    await c.close()


@pytest.fixture
def items(tmp_path) -> tuple[Path, Path]:
    data = tmp_path / "data"
    data.mkdir()
    notes = data / "notes.txt"
    shutil.copyfile(SAMPLES / "notes.txt", notes)
    kit = data / "lan-party-kit"
    shutil.copytree(SAMPLES / "lan-party-kit", kit)
    return notes, kit


async def test_share_writes_one_torrent_per_item_and_seeds_them(client, items, tmp_path):
    notes, kit = items
    out = tmp_path / "torrents"
    shared = await share([notes, kit], ["http://10.0.0.1:6969/announce"], out, client)

    assert [s.name for s in shared] == ["notes.txt", "lan-party-kit"]
    for item, path in zip(shared, (notes, kit)):
        name, size, info_hash, torrent_path = item
        assert torrent_path == out / f"{name}.torrent"
        meta = load_metainfo(torrent_path)
        assert meta.info_hash == info_hash and meta.name == path.name
        assert meta.announce_tiers == (("http://10.0.0.1:6969/announce",),)
        assert size == meta.total_length == sum(f.stat().st_size for f in [path, *path.rglob("*")] if f.is_file())
        assert client.torrents[info_hash].complete.is_set()  # verified from disk: seeding
    assert sorted(p.name for p in out.iterdir()) == ["lan-party-kit.torrent", "notes.txt.torrent"]


async def test_sharing_again_keeps_the_published_torrent_file(items, tmp_path):
    notes, _ = items
    out = tmp_path / "torrents"
    first_client = Client(ClientConfig(host="127.0.0.1", port=0, lsd=False))
    await first_client.start()
    try:
        [first] = await share([notes], [], out, first_client)
    finally:
        await first_client.close()
    before = create_metainfo(notes, [], creation_date=1)   # as if made a while ago
    first.torrent_path.write_bytes(before)
    second_client = Client(ClientConfig(host="127.0.0.1", port=0, lsd=False))
    await second_client.start()
    try:
        [again] = await share([notes, notes], [], out, second_client)   # duplicates collapse too
    finally:
        await second_client.close()
    assert again == Shared(first.name, first.size, first.info_hash, first.torrent_path)
    assert first.torrent_path.read_bytes() == before


async def test_share_refuses_missing_paths_and_clashing_names(client, items, tmp_path):
    notes, _ = items
    with pytest.raises(ShareError, match="no-such-file: no such file or folder"):
        await share([tmp_path / "no-such-file"], [], tmp_path / "t", client)
    other = tmp_path / "elsewhere" / "notes.txt"
    other.parent.mkdir()
    other.write_bytes(b"different notes")
    with pytest.raises(ShareError, match="both named 'notes.txt'"):
        await share([notes, other], [], tmp_path / "t", client)
    with pytest.raises(ShareError, match="nothing to share"):
        await share([], [], tmp_path / "t", client)
    assert client.torrents == {}


async def test_share_refuses_to_write_its_torrents_into_a_shared_folder(client, items, tmp_path):
    """`share .` with the default --torrents-dir (.) worked once, then hashed its own
    .torrent as data on the next run, overwrote it and refused to seed."""
    _, kit = items
    for inside in (kit, kit / "maps"):
        with pytest.raises(ShareError, match="written inside .*lan-party-kit.*outside it"):
            await share([kit], [], inside, client)
    assert not list(kit.rglob("*.torrent")) and not client.torrents

"""--torrents DIR: the index and /stats.json follow .torrent files changed in place.

Rewriting a file (`cp other.torrent DIR/x.torrent`) or finishing writing one leaves the
folder's mtime alone, so only a per-file check notices.
"""

from __future__ import annotations

import json
import os

import aiohttp
import pytest

from common.metainfo import create_metainfo, parse_metainfo
from tracker import http_api
from tracker.http_api import TorrentCatalog
from tracker.server import TrackerConfig, start_tracker


@pytest.fixture
async def setup(tmp_path):
    """(torrents folder, tracker base URL, HTTP session)."""
    folder = tmp_path / "torrents"
    folder.mkdir()
    running = await start_tracker(TrackerConfig(host="127.0.0.1", port=0, torrents_dir=folder))
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            yield folder, running.base_url, http
    finally:
        await running.close()


def torrent(tmp_path, name: str, size: int) -> bytes:
    (tmp_path / name).write_bytes(b"x" * size)
    return create_metainfo(tmp_path / name, ["http://127.0.0.1:1/announce"])


async def listed(http, base: str) -> dict[str, tuple[str, str]]:
    """info-hash -> (name, .torrent file) from /stats.json, after checking the index page agrees."""
    async with http.get(f"http://{base}/stats.json") as r:
        assert r.status == 200
        rows = json.loads(await r.read())["torrents"]
    async with http.get(f"http://{base}/") as r:
        assert r.status == 200
        page = await r.text()
    for row in rows:
        assert f"<code>{row['info_hash']}</code>" in page and f">{row['name']}</a>" in page
    return {row["info_hash"]: (row["name"], row["torrent"]) for row in rows}


async def test_a_torrent_overwritten_in_place_replaces_its_entry(setup, tmp_path):
    folder, base, http = setup
    first, second = torrent(tmp_path, "first.bin", 1000), torrent(tmp_path, "second-one.bin", 2000)
    (folder / "x.torrent").write_bytes(first)
    assert await listed(http, base) == {parse_metainfo(first).info_hash.hex(): ("first.bin", "x.torrent")}

    folder_mtime = folder.stat().st_mtime_ns
    (folder / "x.torrent").write_bytes(second)          # what `cp second.torrent x.torrent` does
    assert folder.stat().st_mtime_ns == folder_mtime
    assert await listed(http, base) == {
        parse_metainfo(second).info_hash.hex(): ("second-one.bin", "x.torrent")}
    async with http.get(f"http://{base}/torrents/x.torrent") as r:
        assert r.status == 200 and await r.read() == second


async def test_a_torrent_read_half_written_is_listed_once_complete(setup, tmp_path):
    folder, base, http = setup
    data = torrent(tmp_path, "slow.bin", 5000)
    with open(folder / "slow.torrent", "wb") as f:
        f.write(data[:len(data) // 2])
        f.flush()
        assert await listed(http, base) == {}
        async with http.get(f"http://{base}/torrents/slow.torrent") as r:
            assert r.status == 404
        f.write(data[len(data) // 2:])
    assert await listed(http, base) == {parse_metainfo(data).info_hash.hex(): ("slow.bin", "slow.torrent")}
    async with http.get(f"http://{base}/torrents/slow.torrent") as r:
        assert r.status == 200 and await r.read() == data


def test_refresh_parses_only_new_or_changed_files(tmp_path, monkeypatch):
    folder = tmp_path / "torrents"
    folder.mkdir()
    (folder / "a.torrent").write_bytes(torrent(tmp_path, "a.bin", 10))
    (folder / "c.torrent").write_bytes(torrent(tmp_path, "c.bin", 10))
    (folder / "broken.torrent").write_bytes(b"not bencoding")
    parsed = []
    real = http_api.load_metainfo
    monkeypatch.setattr(http_api, "load_metainfo", lambda path: parsed.append(path.name) or real(path))
    catalog = TorrentCatalog(folder)
    catalog.refresh()
    catalog.refresh()
    assert sorted(parsed) == ["a.torrent", "broken.torrent", "c.torrent"]
    assert list(catalog.by_file) == ["a.torrent", "c.torrent"]

    (folder / "b.torrent").write_bytes(torrent(tmp_path, "bb.bin", 10))
    (folder / "broken.torrent").write_bytes(torrent(tmp_path, "fixed.bin", 10))
    os.remove(folder / "a.torrent")
    catalog.refresh()
    catalog.refresh()
    assert sorted(parsed[3:]) == ["b.torrent", "broken.torrent"]      # not c.torrent again
    assert {e.name for e in catalog.by_hash.values()} == {"bb.bin", "c.bin", "fixed.bin"}

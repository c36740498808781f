"""The tracker's HTTP side (aiohttp): announce, scrape, statistics, and a small file server.

Routes:
  GET /announce           BEP 3/23/7: bencoded peers; errors are HTTP 200 + `failure reason`,
                          because that is the only error a BitTorrent client shows its user
  GET /scrape             BEP 48
  GET /stats.json         every torrent's counters as JSON
  GET /                   an HTML index of the torrents
  GET /torrents/<file>    .torrent files from --torrents DIR (listed at /torrents/)
  GET /files/<path>       files under --files DIR with Range support (a BEP 19 web seed),
                          optionally throttled by one TokenBucket shared by all downloads
"""

from __future__ import annotations

import asyncio
import html
import json
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import aiofiles.threadpool
from aiohttp import hdrs, web
from aiohttp.abc import AbstractStreamWriter

from common.metainfo import MetainfoError, disk_name, load_metainfo
from common.rates import TokenBucket, format_bytes
from common.tracker_proto import (
    TrackerProtocolError, encode_announce_response, encode_compact_announce, encode_failure, encode_scrape_response,
    parse_announce_query, parse_scrape_query,
)
from tracker.registry import RegistryError, SwarmRegistry

__all__ = ["PAGES", "Page", "TorrentCatalog", "TrackerHttp", "create_app", "index_html"]

log = logging.getLogger("swarm.tracker")

BENCODE_TYPE = "text/plain"   # what most trackers send; clients do not look at it
PAGES = ("/announce", "/scrape", "/stats.json", "/")
_ZERO_SUFFIX = re.compile(r"bytes=-0+", re.ASCII | re.IGNORECASE)   # as aiohttp's Range pattern


@dataclass(frozen=True, slots=True)
class Page:
    content_type: str           # the header's whole value
    body: bytes


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    filename: str
    name: str
    total_length: int
    info_hash: bytes


class TorrentCatalog:
    """The .torrent files of a folder, each re-read when it is added or changes."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._read: dict[str, tuple[tuple[int, int], CatalogEntry | None]] = {}   # name -> (stamp, entry)
        self.by_file: dict[str, CatalogEntry] = {}
        self.by_hash: dict[bytes, CatalogEntry] = {}

    def refresh(self) -> None:
        """One stat per file, a parse only where (mtime_ns, size) changed.

        Per file because rewriting one in place (`cp b.torrent DIR/a.torrent`) or finishing
        writing it leaves the folder's mtime alone. A file that does not parse keeps its stamp
        too: it is tried again once it changes (a half-written file grows), not on every request.
        """
        read = {}
        for path in sorted(self.folder.glob("*.torrent")):
            try:
                st = path.stat()
            except OSError:
                continue                     # removed since the glob
            stamp = (st.st_mtime_ns, st.st_size)
            known = self._read.get(path.name)
            read[path.name] = known if known and known[0] == stamp else (stamp, _catalog_entry(path))
        self._read = read
        self.by_file = {name: entry for name, (_, entry) in read.items() if entry}
        self.by_hash = {e.info_hash: e for e in self.by_file.values()}


def _catalog_entry(path: Path) -> CatalogEntry | None:
    try:
        meta = load_metainfo(path)
    except MetainfoError as exc:
        log.warning("skipping %s", exc)
        return None
    return CatalogEntry(path.name, meta.name, meta.total_length, meta.info_hash)


def _inside(root: Path, relative: str) -> Path | None:
    """root/relative if it is a regular file inside root (no '..' or symlink escapes). A web
    seed asks for a file by the torrent's names; one too long for the disk is stored under
    its cut name (metainfo.disk_name), which is tried next."""
    cut = "/".join(map(disk_name, relative.split("/")))
    for candidate in (relative, cut) if cut != relative else (relative,):
        try:
            target = (root / candidate).resolve()
            if target.is_relative_to(root) and target.is_file():
                return target
        except (OSError, ValueError):     # (ENAMETOOLONG from is_file too)
            continue
    return None


class TrackerHttp:
    """The handlers, sharing one registry (and one upload bucket for /files/)."""

    def __init__(self, registry: SwarmRegistry, clock: Callable[[], float],
                 torrents_dir: Path | None, files_dir: Path | None, upload_limit: int | None) -> None:
        self.registry = registry
        self.clock = clock
        self.catalog = TorrentCatalog(torrents_dir.resolve()) if torrents_dir else None
        self.files_dir = files_dir.resolve() if files_dir else None
        self.bucket = TokenBucket(upload_limit) if upload_limit else None
        self.files_bytes_sent = 0   # body bytes of /files/ responses: what the origin uploaded

    # -- what both HTTP servers answer (aiohttp here, granian in granian_http) ----------------
    def page(self, path: str, query: str, client: str) -> Page | None:
        """The answer at `path` (one of PAGES) to a GET with this raw query from `client`."""
        if path == "/announce":
            return Page(BENCODE_TYPE, self.announce_body(query, client))
        if path == "/scrape":
            return Page(BENCODE_TYPE, self.scrape_body(query))
        if path == "/stats.json":
            return Page("application/json; charset=utf-8", json.dumps(self.stats()).encode())
        if path == "/":
            return Page("text/html; charset=utf-8", index_html(self.stats()).encode())
        return None

    async def _page(self, request: web.Request) -> web.Response:
        found = self.page(request.path, _raw_query(request), request.remote or "")
        assert found is not None            # (routed here for PAGES only)
        return web.Response(body=found.body, headers={"Content-Type": found.content_type})

    def announce_body(self, query: str, ip: str) -> bytes:
        try:
            req = parse_announce_query(query)
            if req.compact:
                answer = self.registry.announce_compact(req, ip, self.clock())
                return encode_compact_announce(answer.response, answer.peers4, answer.peers6)
            resp = self.registry.announce(req, ip, self.clock())
            return encode_announce_response(resp, compact=False)
        except (TrackerProtocolError, RegistryError) as exc:
            return encode_failure(str(exc))
        except Exception:
            log.exception("announce %r failed", query[:200])
            return encode_failure("internal tracker error")

    def scrape_body(self, query: str) -> bytes:
        try:
            return encode_scrape_response(self.registry.scrape(parse_scrape_query(query)))
        except TrackerProtocolError as exc:
            return encode_failure(str(exc))

    # -- for people -------------------------------------------------------------------------
    def _rows(self) -> list[dict]:
        """One row per torrent the registry or the catalog knows about."""
        known: dict[bytes, CatalogEntry] = {}
        if self.catalog is not None:
            self.catalog.refresh()
            known = self.catalog.by_hash
        stats = self.registry.scrape([])
        rows = []
        for info_hash in [*stats, *(h for h in known if h not in stats)]:
            s = stats.get(info_hash)
            entry = known.get(info_hash)
            row = {"info_hash": info_hash.hex(), "complete": s.complete if s else 0,
                   "incomplete": s.incomplete if s else 0, "downloaded": s.downloaded if s else 0}
            if entry:
                row.update(name=entry.name, size=entry.total_length, torrent=entry.filename)
            rows.append(row)
        return rows

    def stats(self) -> dict:
        """What /stats.json shows (and the index page)."""
        return {"torrents": self._rows(), "torrent_count": self.registry.torrent_count,
                "peer_count": self.registry.peer_count, "files_bytes_sent": self.files_bytes_sent}

    # -- .torrent files -----------------------------------------------------------------------
    async def torrent_list(self, request: web.Request) -> web.Response:
        assert self.catalog is not None
        self.catalog.refresh()
        items = "".join(
            f"<li><a href='/torrents/{html.escape(e.filename, quote=True)}'>"
            f"{html.escape(e.filename)}</a> {html.escape(e.name)} ({format_bytes(e.total_length)}) "
            f"<code>{e.info_hash.hex()}</code></li>"
            for e in self.catalog.by_file.values())
        return web.Response(text=f"<!doctype html><html><body><h1>torrents</h1><ul>{items}</ul>"
                                 "</body></html>", content_type="text/html")

    async def torrent_file(self, request: web.Request) -> web.StreamResponse:
        assert self.catalog is not None
        self.catalog.refresh()
        filename = request.match_info["name"]
        if filename not in self.catalog.by_file:
            raise web.HTTPNotFound(text=f"no torrent {filename}\n")
        return web.FileResponse(self.catalog.folder / filename,
                                headers={"Content-Type": "application/x-bittorrent"})

    # -- plain files (web seed) ---------------------------------------------------------------
    async def file(self, request: web.Request) -> web.StreamResponse:
        assert self.files_dir is not None
        path = _inside(self.files_dir, request.match_info["path"])
        if path is None:
            raise web.HTTPNotFound(text="no such file\n")
        return _OriginFileResponse(path, self)


def index_html(stats: dict) -> str:
    """The index page, from what `TrackerHttp.stats` returns."""
    lines = ["<!doctype html><html><head><meta charset='utf-8'><title>swarm tracker</title>",
             "<style>body{font-family:sans-serif}td,th{padding:2px 10px;text-align:left}"
             "td.n{text-align:right}</style></head><body><h1>swarm tracker</h1>",
             f"<p>{stats['torrent_count']} torrents, {stats['peer_count']} peers. "
             "Announce at <code>/announce</code>, scrape at <code>/scrape</code>, "
             "JSON at <a href='/stats.json'>/stats.json</a>.</p>",
             "<table><tr><th>name</th><th>size</th><th>info-hash</th><th>seeders</th>"
             "<th>leechers</th><th>completed</th></tr>"]
    for row in stats["torrents"]:
        if "torrent" in row:
            name = (f"<a href='/torrents/{html.escape(row['torrent'], quote=True)}'>"
                    f"{html.escape(row['name'])}</a>")
            size = format_bytes(row["size"])
        else:
            name, size = "", ""
        lines.append(f"<tr><td>{name}</td><td class=n>{size}</td><td><code>{row['info_hash']}"
                     f"</code></td><td class=n>{row['complete']}</td><td class=n>"
                     f"{row['incomplete']}</td><td class=n>{row['downloaded']}</td></tr>")
    lines.append("</table></body></html>")
    return "\n".join(lines)


class _OriginFileResponse(web.FileResponse):
    """aiohttp's FileResponse, so that status, validators (ETag, Last-Modified), conditional
    requests and Range are aiohttp's with or without --upload-limit; only sending the body
    differs: with a bucket it goes in chunks, each paid for first. Counts the body bytes sent.
    """

    def __init__(self, path: Path, api: TrackerHttp) -> None:
        super().__init__(path)
        self._api = api

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        if _ZERO_SUFFIX.fullmatch(request.headers.get(hdrs.RANGE, "")):
            # aiohttp reads `bytes=-0` as the whole file; it is unsatisfiable (RFC 9110 14.1.1).
            # A Range aiohttp cannot parse gets its 416, after the same precondition and If-Range checks.
            headers = request.headers.copy()
            headers[hdrs.RANGE] = "unsatisfiable"
            request = request.clone(headers=headers)
        return await super().prepare(request)

    async def _sendfile(self, request: web.BaseRequest, fobj: IO[bytes], offset: int,
                        count: int) -> AbstractStreamWriter:
        """FileResponse's private hook for the body (aiohttp 3.x): the one step that differs."""
        bucket = self._api.bucket
        if bucket is None:
            writer = await super()._sendfile(request, fobj, offset, count)
            self._api.files_bytes_sent += count
            return writer
        writer = await web.StreamResponse.prepare(self, request)    # the headers FileResponse chose
        assert writer is not None and bucket.rate is not None
        chunk_size = int(min(64 * 1024, max(1024, bucket.rate / 20)))
        loop = asyncio.get_running_loop()
        afile = aiofiles.threadpool.wrap(fobj)      # (FileResponse opened it, and closes it)
        await afile.seek(offset)
        while count > 0:
            chunk = await afile.read(min(chunk_size, count))
            if not chunk:
                break                        # the file shrank under us; the client sees a short body
            delay = bucket.reserve(len(chunk), loop.time())
            if delay > 0:
                await asyncio.sleep(delay)
            await writer.write(chunk)
            self._api.files_bytes_sent += len(chunk)
            count -= len(chunk)
        return writer


def _raw_query(request: web.Request) -> str:
    """The query as sent: aiohttp's decoded one would mangle a binary info_hash."""
    return request.raw_path.partition("?")[2]


def create_app(registry: SwarmRegistry, *, clock: Callable[[], float] = time.monotonic,
               torrents_dir: str | os.PathLike | None = None,
               files_dir: str | os.PathLike | None = None,
               upload_limit: int | None = None) -> web.Application:
    """The tracker's aiohttp application; the same `registry` may also serve UDP."""
    api = TrackerHttp(registry, clock, Path(torrents_dir) if torrents_dir else None,
                      Path(files_dir) if files_dir else None, upload_limit)
    app = web.Application()
    for path in PAGES:
        app.router.add_get(path, api._page)
    if api.catalog is not None:
        app.router.add_get("/torrents/", api.torrent_list)
        app.router.add_get("/torrents/{name}", api.torrent_file)
    if api.files_dir is not None:
        app.router.add_get("/files/{path:.+}", api.file)
    return app

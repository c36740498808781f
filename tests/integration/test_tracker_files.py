"""/files/ answers the same with and without --upload-limit: status, validators, conditional requests.

Both trackers serve one folder; every request goes to both and must get the same exact answer,
so that `curl -C -` or a web seed resuming after the file changed never splices old and new bytes.
"""

from __future__ import annotations

import json
import os

import aiohttp
import pytest

from tracker.server import TrackerConfig, start_tracker

BODY = b"0123456789" * 10
MTIME_NS = 1_600_000_000_250_000_000       # Last-Modified rounds up to the next whole second
LAST_MODIFIED = "Sun, 13 Sep 2020 12:26:41 GMT"
OLD = "Wed, 01 Jan 2001 00:00:00 GMT"


@pytest.fixture
async def bases(tmp_path):
    """base URL of /files/small.txt on a tracker without and one with an upload limit."""
    (tmp_path / "small.txt").write_bytes(BODY)
    os.utime(tmp_path / "small.txt", ns=(MTIME_NS, MTIME_NS))
    running = [await start_tracker(TrackerConfig(host="127.0.0.1", port=0, files_dir=tmp_path,
                                                 upload_limit=limit))
               for limit in (None, 10_000_000)]
    try:
        yield {"plain": running[0].base_url, "throttled": running[1].base_url}
    finally:
        for r in running:
            await r.close()


@pytest.fixture
async def http():
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


def etag(path) -> str:
    st = os.stat(path)
    return f'"{st.st_mtime_ns:x}-{st.st_size:x}"'


HEADERS = ("ETag", "Last-Modified", "Content-Range", "Content-Length", "Content-Type", "Accept-Ranges")


async def fetch(http, base: str, headers: dict, method: str = "GET") -> tuple[int, dict, bytes]:
    async with http.request(method, f"http://{base}/files/small.txt", headers=headers) as r:
        return r.status, {h: r.headers.get(h) for h in HEADERS}, await r.read()


# (request headers, status, body, Content-Range)
CASES = [
    ({}, 200, BODY, None),
    ({"If-None-Match": "<etag>"}, 304, b"", None),
    ({"If-None-Match": '"other"'}, 200, BODY, None),
    ({"If-None-Match": "*"}, 304, b"", None),
    ({"If-Modified-Since": LAST_MODIFIED}, 304, b"", None),
    ({"If-Modified-Since": OLD}, 200, BODY, None),
    ({"If-Match": '"other"'}, 412, b"", None),
    ({"Range": "bytes=0-1", "If-Range": OLD}, 200, BODY, None),
    ({"Range": "bytes=0-1", "If-Range": LAST_MODIFIED}, 206, b"01", "bytes 0-1/100"),
    ({"Range": "bytes=0-1"}, 206, b"01", "bytes 0-1/100"),
    ({"Range": "bytes=-10"}, 206, BODY[-10:], "bytes 90-99/100"),
    ({"Range": "bytes=95-"}, 206, BODY[95:], "bytes 95-99/100"),
    ({"Range": "bytes=0-2,5-7"}, 416, b"", "bytes */100"),
    ({"Range": "bytes=abc"}, 416, b"", "bytes */100"),
    ({"Range": "items=0-3"}, 416, b"", "bytes */100"),
    ({"Range": "bytes=-0"}, 416, b"", "bytes */100"),
    ({"Range": "bytes=100-"}, 416, b"", "bytes */100"),
]


@pytest.mark.parametrize("kind", ["plain", "throttled"])
@pytest.mark.parametrize(("sent", "status", "body", "content_range"), CASES,
                         ids=[" ".join(f"{k}:{v}" for k, v in c[0].items()) or "none" for c in CASES])
async def test_files_answer(bases, http, tmp_path, kind, sent, status, body, content_range):
    tag = etag(tmp_path / "small.txt")
    sent = {k: tag if v == "<etag>" else v for k, v in sent.items()}
    got_status, headers, got_body = await fetch(http, bases[kind], sent)
    assert (got_status, got_body) == (status, body)
    assert headers["Content-Range"] == content_range
    if status in (200, 206, 304):
        assert (headers["ETag"], headers["Last-Modified"]) == (tag, LAST_MODIFIED)
    if status in (200, 206):
        assert headers["Content-Length"] == str(len(body)) and headers["Accept-Ranges"] == "bytes"
    # and exactly what the other path answers
    other = await fetch(http, bases["throttled" if kind == "plain" else "plain"], sent)
    assert (got_status, headers, got_body) == other


async def test_resume_after_the_file_was_replaced_gets_the_whole_new_file(bases, http, tmp_path):
    for base in bases.values():
        (tmp_path / "small.txt").write_bytes(BODY)
        os.utime(tmp_path / "small.txt", ns=(MTIME_NS, MTIME_NS))
        _, first, _ = await fetch(http, base, {"Range": "bytes=0-49"})
        new = BODY[::-1]
        (tmp_path / "small.txt").write_bytes(new)
        os.utime(tmp_path / "small.txt", ns=(MTIME_NS + 10**9, MTIME_NS + 10**9))
        status, headers, body = await fetch(
            http, base, {"Range": "bytes=50-", "If-Range": first["Last-Modified"]})
        assert (status, body, headers["Content-Range"]) == (200, new, None), base
        assert headers["ETag"] == etag(tmp_path / "small.txt") != first["ETag"]


@pytest.mark.parametrize("kind", ["plain", "throttled"])
async def test_files_bytes_sent_counts_bodies_only(bases, http, kind):
    base = bases[kind]
    await fetch(http, base, {})
    await fetch(http, base, {"Range": "bytes=0-1"})
    await fetch(http, base, {"If-Modified-Since": LAST_MODIFIED})
    await fetch(http, base, {"Range": "bytes=-0"})
    await fetch(http, base, {}, method="HEAD")
    async with http.get(f"http://{base}/stats.json") as r:
        assert json.loads(await r.read())["files_bytes_sent"] == 100 + 2

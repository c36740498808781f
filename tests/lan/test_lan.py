"""Laptops on a LAN, simulated with network namespaces: share, fetch by URL, LSD.

Each test builds its own LAN (tests/lan/netns.py) and removes it afterwards. Only these
tests run peers with Local Service Discovery on, and only inside those namespaces.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sys
import time
from pathlib import Path

import pytest

from interop_clients import Proc, have_tool, tree_digest

pytestmark = [pytest.mark.lan, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "sample_files"
PY = sys.executable
PEER_PORT = 6881
TRACKER_PORT = 6969
SEEDING = r"^seeding \d+ torrents? on port"
COMPLETE = r"^complete: "


def shared_items(tmp_path: Path) -> tuple[Path, Path]:
    """A file and a folder to share, copied so each test owns its data."""
    data = tmp_path / "share"
    data.mkdir()
    big = data / "random-3MiB.bin"
    shutil.copyfile(SAMPLES / "random-3MiB.bin", big)
    folder = data / "lan-party-kit"
    shutil.copytree(SAMPLES / "lan-party-kit", folder)
    return big, folder


def start_share(lan, host, items: list[Path], torrents: Path, trackers: list[str] = ()) -> Proc:
    argv = [PY, "-m", "peer", "share", *items, "--torrents-dir", torrents, "--port", PEER_PORT]
    for url in trackers:
        argv += ["--tracker", url]
    proc = lan.start(host, argv, name="share")
    proc.wait_for(SEEDING, timeout=60)
    return proc


def start_tracker(lan, host, torrents: Path) -> Proc:
    torrents.mkdir(exist_ok=True)
    proc = lan.start(host, [PY, "-m", "tracker", "start", "--host", "0.0.0.0", "--port", TRACKER_PORT,
                            "--interval", "5", "--torrents", torrents], name="tracker")
    proc.wait_for(rf":{TRACKER_PORT}/announce", timeout=20)
    return proc


def fetch(host, url: str, out: Path | None = None) -> str:
    """GET `url` from inside `host` (the test process itself is not on the LAN)."""
    code = ("import sys, urllib.request; data = urllib.request.urlopen(sys.argv[1], timeout=10).read(); "
            "open(sys.argv[2], 'wb').write(data) if len(sys.argv) > 2 else sys.stdout.write(data.decode())")
    result = host.run([PY, "-c", code, url, *([out] if out else [])], timeout=30)
    assert result.returncode == 0, f"GET {url} from {host.name}: {result.stderr}"
    return result.stdout


def torrent_links(host, tracker_url: str) -> dict[str, str]:
    """name.torrent -> absolute URL, as a person would click them on the tracker's page."""
    page = fetch(host, tracker_url + "/")
    return {href.rsplit("/", 1)[1]: tracker_url + href for href in re.findall(r"href='(/torrents/[^']+)'", page)}


def start_get(lan, host, torrent: str | Path, outdir: Path, *extra: str) -> Proc:
    outdir.mkdir(parents=True, exist_ok=True)
    return lan.start(host, [PY, "-m", "peer", "get", torrent, "-o", outdir, "--port", PEER_PORT, *extra],
                     name=f"get {Path(str(torrent)).name}")


# -- 1. the whole story: tracker page, URL, four laptops ----------------------------------------
def test_four_laptops_fetch_torrents_by_url_from_the_tracker_page(lan, tmp_path):
    net = lan.segment()
    laptops = [lan.host(f"pc{n}", net) for n in range(1, 5)]
    big, folder = shared_items(tmp_path)
    torrents = tmp_path / "torrents"
    tracker_url = f"http://{laptops[0].address}:{TRACKER_PORT}"

    start_tracker(lan, laptops[0], torrents)
    sharer = start_share(lan, laptops[0], [big, folder], torrents, [tracker_url + "/announce"])
    assert re.search(rf"random-3MiB\.bin .*info-hash [0-9a-f]{{40}}  {re.escape(str(torrents))}/random-3MiB\.bin\.torrent",
                     sharer.output())

    links = torrent_links(laptops[1], tracker_url)
    assert set(links) == {"random-3MiB.bin.torrent", "lan-party-kit.torrent"}
    gets = []
    for n, laptop in enumerate(laptops[1:], start=2):
        gets.append((start_get(lan, laptop, links["random-3MiB.bin.torrent"], tmp_path / f"pc{n}"), big, n))
    gets.append((start_get(lan, laptops[1], links["lan-party-kit.torrent"], tmp_path / "pc2-kit",
                           "--port", str(PEER_PORT + 1)), folder, "2-kit"))
    for proc, original, n in gets:
        proc.wait_for(COMPLETE, timeout=90)
        assert tree_digest(tmp_path / f"pc{n}" / original.name) == tree_digest(original)


# -- 2. tracker gone: LSD alone ------------------------------------------------------------------
def test_tracker_down_leechers_find_seed_and_each_other_by_lsd(lan, tmp_path):
    net = lan.segment()
    pc1, pc2, pc3, pc4 = (lan.host(f"pc{n}", net) for n in range(1, 5))
    big, _ = shared_items(tmp_path)
    torrents = tmp_path / "torrents"
    tracker_url = f"http://{pc1.address}:{TRACKER_PORT}"
    tracker = start_tracker(lan, pc1, torrents)
    sharer = start_share(lan, pc1, [big], torrents, [tracker_url + "/announce"])
    local = tmp_path / "copy.torrent"
    fetch(pc2, torrent_links(pc2, tracker_url)["random-3MiB.bin.torrent"], local)

    tracker.stop()
    assert "Connection refused" in pc2.run([PY, "-c", f"import urllib.request; urllib.request.urlopen('{tracker_url}/')"]).stderr

    first = [start_get(lan, host, local, tmp_path / host.name) for host in (pc2, pc3)]
    for proc in first:
        proc.wait_for(COMPLETE, timeout=90)
    # the seed leaves; a latecomer can only get the file from pc2 and pc3, found by LSD
    sharer.stop()
    late = start_get(lan, pc4, local, tmp_path / "pc4")
    late.wait_for(COMPLETE, timeout=90)
    for host in (pc2, pc3, pc4):
        assert tree_digest(tmp_path / host.name / big.name) == tree_digest(big)


# -- 3. a laptop on two networks is heard on both -----------------------------------------------
def test_lsd_announces_on_every_interface(lan, tmp_path):
    wired, wifi = lan.segment(), lan.segment()
    both = lan.host("both", wired, wifi)
    on_wired = lan.host("wired", wired)
    on_wifi = lan.host("wifi", wifi)
    big, _ = shared_items(tmp_path)

    listeners = {}
    for host in (on_wired, on_wifi):
        listeners[host.name] = proc = lan.start(host, [PY, REPO / "tests/lan/lsd_listen.py", "--address",
                                                       host.address, "--seconds", "30"], name="listen")
        proc.wait_for("^listening$", timeout=10)
    start_share(lan, both, [big], tmp_path / "torrents")
    info_hash = hashlib.sha1(_raw_info(tmp_path / "torrents" / "random-3MiB.bin.torrent")).hexdigest()

    for host, segment in ((on_wired, wired), (on_wifi, wifi)):
        announce = json.loads(listeners[host.name].wait_for(info_hash, timeout=15).string)
        assert announce["from"] == both.addresses[f"eth{segment}"]
        assert announce["port"] == PEER_PORT
        assert announce["info_hashes"] == [info_hash]


def _raw_info(torrent: Path) -> bytes:
    from common.bencoding import bdecode_with_spans
    data = torrent.read_bytes()
    _, spans = bdecode_with_spans(data)
    start, end = spans[b"info"]
    return data[start:end]


# -- 4. aria2c and swarm find each other ---------------------------------------------------------
@pytest.mark.interop
@pytest.mark.parametrize("first", ["aria2c", "swarm"])
def test_aria2c_and_swarm_discover_each_other_by_lsd(lan, tmp_path, first):
    """aria2c first: it learns of the swarm seed only from swarm's announce. swarm first:
    the seed learns of aria2c only from aria2c's announce. No tracker in the torrent."""
    if not have_tool("aria2c"):
        pytest.skip("aria2c is not installed")
    net = lan.segment()
    pc1, pc2 = lan.host("pc1", net), lan.host("pc2", net)
    big, _ = shared_items(tmp_path)
    torrents = tmp_path / "torrents"
    torrent = torrents / "random-3MiB.bin.torrent"
    out = tmp_path / "aria2"
    out.mkdir()

    def start_aria2() -> Proc:
        return lan.start(pc2, ["aria2c", "--no-conf", "--enable-dht=false", "--enable-dht6=false",
                               "--enable-peer-exchange=false", "--bt-enable-lpd=true", "--bt-lpd-interface=eth0",
                               "--bt-require-crypto=false", "--listen-port=6882", "--disable-ipv6=true",
                               "--file-allocation=none", "--seed-time=0", "--summary-interval=1",
                               "--console-log-level=notice", "--enable-color=false", "-d", out, torrent],
                         name="aria2c")

    if first == "aria2c":
        # aria2c needs the .torrent before the seed runs: make it the same way share does
        from common.metainfo import create_metainfo
        torrents.mkdir()
        torrent.write_bytes(create_metainfo(big, []))
        aria2 = start_aria2()
        time.sleep(2)  # its one announce goes out to nobody
        start_share(lan, pc1, [big], torrents)
    else:
        start_share(lan, pc1, [big], torrents)
        aria2 = start_aria2()
    assert aria2.wait(timeout=90) == 0, aria2.output(last=30)
    assert tree_digest(out / big.name) == tree_digest(big)

"""Torrents whose file paths try to leave the output folder are refused with a clear error,
and nothing is written anywhere: a corpus of hostile torrents, and symlinks planted in the
output folder that point outside it."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from common.bencoding import bencode
from common.metainfo import MetainfoError, load_metainfo
from peer.storage import Storage, StorageError
from tests.faults.conftest import make_file, torrent_for

ROOT = Path(__file__).resolve().parents[2]
PIECE = 16384


def evil_torrent(name: str, paths: list[list[str]] | None) -> bytes:
    """A torrent as an attacker writes it: real pieces, hostile names."""
    data = b"pwned\n"
    pieces = hashlib.sha1(data.ljust(len(data))).digest()
    info: dict = {"name": name, "piece length": PIECE}
    if paths is None:
        info.update(length=len(data), pieces=pieces)
    else:
        info["files"] = [{"length": len(data) if i == 0 else 0, "path": p} for i, p in enumerate(paths)]
        info["pieces"] = pieces
    return bencode({"announce": "http://127.0.0.1:1/announce", "info": info})


# (torrent name, file paths or None for a single file, words the error must contain)
CORPUS = [
    ("dotdot-in-path", "pkg", [["..", "..", "escaped.txt"]], "'..'"),
    ("dotdot-deep", "pkg", [["a", "..", "..", "escaped.txt"]], "'..'"),
    ("dotdot-name", "..", [["escaped.txt"]], "'..'"),
    ("dotdot-single-file", "..", None, "'..'"),
    ("absolute-component", "pkg", [["/tmp", "escaped.txt"]], "'/'"),
    ("absolute-name", "/tmp/escaped.txt", None, "'/'"),
    ("slash-inside-component", "pkg", [["a/../../escaped.txt"]], "'/'"),
    ("backslash-traversal", "pkg", [["..\\..\\escaped.txt"]], "'\\\\'"),
    ("drive-letter", "pkg", [["C:", "Windows", "escaped.txt"]], "drive letter"),
    ("drive-letter-relative", "pkg", [["C:escaped.txt"]], "drive letter"),
    ("drive-letter-name", "c:", None, "drive letter"),
    ("nul-byte", "pkg", [["escaped\x00.txt"]], "'\\x00'"),
    ("dot-component", "pkg", [[".", "escaped.txt"]], "'.'"),
    ("empty-component", "pkg", [["", "escaped.txt"]], "empty"),
    ("empty-path", "pkg", [[]], "empty"),
    ("file-also-folder", "pkg", [["a"], ["a", "b"]], "also a folder"),
]


@pytest.mark.parametrize("label,name,paths,why", CORPUS, ids=[c[0] for c in CORPUS])
def test_corpus_of_escaping_torrents_is_refused_by_the_parser(tmp_path, label, name, paths, why):
    path = tmp_path / f"{label}.torrent"
    path.write_bytes(evil_torrent(name, paths))
    with pytest.raises(MetainfoError) as err:
        load_metainfo(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and why in message and "\n" not in message


def run_get(torrent: Path, out: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, SWARM_NO_LSD="1")
    return subprocess.run([sys.executable, "-m", "peer", "get", str(torrent), "-o", str(out), "--no-seed",
                           "--port", "0", "--host", "127.0.0.1", "--no-lsd"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize("label", ["dotdot-in-path", "absolute-name", "drive-letter"])
def test_cli_refuses_escaping_torrent_with_one_line_and_writes_nothing(tmp_path, label):
    _, name, paths, why = next(c for c in CORPUS if c[0] == label)
    torrent = tmp_path / "evil.torrent"
    torrent.write_bytes(evil_torrent(name, paths))
    out = tmp_path / "deep" / "out"
    out.mkdir(parents=True)
    before = files_under(tmp_path)
    result = run_get(torrent, out)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"swarm-peer: error: {torrent}: ") and why in lines[0]
    assert files_under(tmp_path) == before
    assert not Path("/tmp/escaped.txt").exists()


# -- symlinks already in the output folder -------------------------------------------------------

def multi_file_torrent(tmp_path: Path) -> tuple[Path, "object"]:
    src = tmp_path / "src" / "pkg"
    make_file(src / "inner" / "payload.bin", 3 * PIECE + 5)
    make_file(src / "top.bin", PIECE + 1, seed=2)
    raw, meta = torrent_for(src, piece_length=PIECE)
    torrent = tmp_path / "pkg.torrent"
    torrent.write_bytes(raw)
    return torrent, meta


def plant(out: Path, outside: Path, how: str) -> None:
    """Make out/pkg contain (or be) a symlink that leads outside `out`."""
    if how == "folder-link":            # out/pkg/inner -> outside/
        (out / "pkg").mkdir(parents=True)
        (out / "pkg" / "inner").symlink_to(outside, target_is_directory=True)
    elif how == "top-folder-link":      # out/pkg -> outside/
        out.mkdir(parents=True)
        (out / "pkg").symlink_to(outside, target_is_directory=True)
    elif how == "file-link":            # out/pkg/top.bin -> outside/victim
        (out / "pkg").mkdir(parents=True)
        (out / "pkg" / "top.bin").symlink_to(outside / "victim")
    elif how == "dangling-link":        # out/pkg/inner -> a folder that does not exist yet
        (out / "pkg").mkdir(parents=True)
        (out / "pkg" / "inner").symlink_to(outside / "later", target_is_directory=True)
    elif how == "symlink-loop":         # out/pkg/inner -> out/pkg/inner
        (out / "pkg").mkdir(parents=True)
        (out / "pkg" / "inner").symlink_to(out / "pkg" / "inner")
    else:
        raise AssertionError(how)


LINKS = ["folder-link", "top-folder-link", "file-link", "dangling-link", "symlink-loop"]


@pytest.mark.parametrize("how", LINKS)
async def test_symlink_in_output_folder_is_refused_in_process(tmp_path, how):
    _, meta = multi_file_torrent(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_bytes(b"precious")
    out = tmp_path / "out"
    plant(out, outside, how)
    storage = Storage(meta, out)
    with pytest.raises(StorageError) as err:
        await storage.open()
    assert "outside" in str(err.value) or "symlink" in str(err.value)
    assert (outside / "victim").read_bytes() == b"precious"
    assert sorted(p.name for p in outside.iterdir()) == ["victim"]


@pytest.mark.parametrize("how", LINKS)
def test_symlink_in_output_folder_cli_error_line(tmp_path, how):
    torrent, _ = multi_file_torrent(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_bytes(b"precious")
    out = tmp_path / "out"
    plant(out, outside, how)
    result = run_get(torrent, out)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("swarm-peer: error: "), lines
    assert "Traceback" not in result.stderr
    assert (outside / "victim").read_bytes() == b"precious"
    assert sorted(p.name for p in outside.iterdir()) == ["victim"]

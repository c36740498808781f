"""Bad input to `swarm-peer demo` and `swarm-peer compare`: refused up front in one line,
before any process starts or any measurement runs; a failing child step is one line too."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from tests.integration.conftest import ROOT, make_file


def swarm_peer(*args, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "peer", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env={**os.environ, "SWARM_NO_LSD": "1"})


def assert_one_line_refusal(got: subprocess.CompletedProcess, says: str) -> None:
    assert "Traceback" not in got.stdout + got.stderr, got.stdout + got.stderr
    assert got.returncode == 2, got.stdout + got.stderr
    lines = got.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("swarm-peer: error: ") and says in lines[0], got.stderr


def test_compare_without_matplotlib_writes_the_results_and_skips_the_charts(tmp_path):
    hide = "import sys; sys.modules['matplotlib'] = None; from peer.cli import main; main()"
    got = subprocess.run([sys.executable, "-c", hide, "compare", "--out", str(tmp_path / "out"),
                          "--peers", "1", "--size", "256KiB", "--modes", "central"],
                         capture_output=True, text=True, timeout=120, cwd=ROOT,
                         env={**os.environ, "SWARM_NO_LSD": "1"})
    assert got.returncode == 0 and "Traceback" not in got.stdout + got.stderr, got.stdout + got.stderr
    assert "compare: charts skipped: they need matplotlib (pip install -e '.[chart]')" in got.stdout
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["results.csv", "results.json", "table.txt"]


# -- compare --out ------------------------------------------------------------------------
@pytest.mark.parametrize("extra", [[], ["--model-only"]])
def test_compare_out_an_existing_file_is_refused_before_measuring(tmp_path, extra):
    taken = tmp_path / "taken"
    taken.write_text("keep me")
    started = time.monotonic()
    got = swarm_peer("compare", "--out", taken, "--peers", "1", "--size", "1MiB", *extra)
    assert_one_line_refusal(got, f"--out {taken}: exists and is not a folder")
    assert "compare: central" not in got.stdout            # nothing was measured
    assert time.monotonic() - started < 30
    assert taken.read_text() == "keep me"


def test_compare_out_below_a_file_is_refused_before_measuring(tmp_path):
    taken = tmp_path / "taken"
    taken.write_text("keep me")
    got = swarm_peer("compare", "--out", taken / "sub" / "results", "--peers", "1", "--size", "1MiB")
    assert_one_line_refusal(got, f"{taken} is not a folder")
    assert "compare: central" not in got.stdout


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_compare_out_in_a_read_only_folder_is_refused_before_measuring(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        got = swarm_peer("compare", "--out", locked / "results", "--peers", "1", "--size", "1MiB")
    finally:
        locked.chmod(0o755)
    assert_one_line_refusal(got, f"{locked} is not writable")
    assert "compare: central" not in got.stdout


# -- demo ---------------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["peers 0", "peers -1", "file folder", "file empty", "file /dev/null",
                                  "workdir file", "workdir below a file"])
def test_demo_refuses_bad_input_before_starting_anything(tmp_path, case):
    folder = tmp_path / "folder"
    make_file(folder / "inside.bin", 1000)
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    a_file = make_file(tmp_path / "a.bin", 1000)
    args, says = {
        "peers 0": (["--peers", "0"], "--peers must be at least 1, got 0"),
        "peers -1": (["--peers", "-1"], "--peers must be at least 1, got -1"),
        "file folder": (["--file", folder], f"--file {folder}: is a folder"),
        "file empty": (["--file", empty], f"--file {empty}: is empty"),
        "file /dev/null": (["--file", "/dev/null"], "--file /dev/null: not a regular file"),
        "workdir file": (["--workdir", a_file], f"--workdir {a_file}: exists and is not a folder"),
        "workdir below a file": (["--workdir", a_file / "sub"], f"cannot make {a_file / 'sub'}"),
    }[case]
    got = swarm_peer("demo", *args, timeout=60)
    assert_one_line_refusal(got, says)
    assert "demo: tracker" not in got.stdout                # refused before the tracker started
    assert a_file.stat().st_size == 1000


def test_demo_failing_create_step_is_one_line(tmp_path):
    # A name `create` refuses (a backslash would be a folder separator on Windows): the
    # tracker is up by then, so this is the child step failing, not the up-front check.
    src = make_file(tmp_path / "back\\slash.bin", 100_000)
    work = tmp_path / "work"
    got = swarm_peer("demo", "--peers", "1", "--file", src, "--workdir", work)
    assert "Traceback" not in got.stdout + got.stderr, got.stdout + got.stderr
    assert got.returncode == 1, got.stdout + got.stderr
    failed = [line for line in got.stdout.splitlines() if "creating the torrent failed" in line]
    assert len(failed) == 1 and "contains" in failed[0], got.stdout
    assert got.stdout.strip().splitlines()[-1] == failed[0]
    assert not (work / "seed.log").exists()                 # nothing ran after the failed step


def test_demo_one_peer_still_works(tmp_path):
    src = make_file(tmp_path / "data.bin", 300_000)
    got = swarm_peer("demo", "--peers", "1", "--file", src, "--workdir", tmp_path / "work")
    assert got.returncode == 0, got.stdout + got.stderr
    assert "demo: peer1: identical" in got.stdout
    assert "all copies identical to the original" in got.stdout


# -- compare FILE -------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["empty", "empty, model only", "/dev/null", "fifo", "backslash",
                                  "drive letter", "not UTF-8"])
def test_compare_refuses_a_file_it_cannot_make_a_torrent_of_before_measuring(tmp_path, case):
    empty = tmp_path / "e.bin"
    empty.write_bytes(b"")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    args, says = {
        "empty": ([empty], f"{empty}: is empty"),
        "empty, model only": ([empty, "--model-only"], f"{empty}: is empty"),
        "/dev/null": (["/dev/null"], "/dev/null: not a regular file"),
        "fifo": ([fifo], f"{fifo}: not a regular file"),
        "backslash": ([make_file(tmp_path / "back\\slash.bin", 1000)], "contains '\\\\'"),
        "drive letter": ([make_file(tmp_path / "c:notes.bin", 1000)], "looks like a drive letter"),
        "not UTF-8": ([make_file(tmp_path / "bad\udcff.bin", 1000)], "file name is not valid UTF-8"),
    }[case]
    got = swarm_peer("compare", *args, "--peers", "1", "--modes", "central", "--out", tmp_path / "out",
                     "--timeout", "15", timeout=60)
    assert_one_line_refusal(got, says)
    assert "compare: central" not in got.stdout             # nothing was measured
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read anything")
def test_compare_refuses_an_unreadable_file_before_measuring(tmp_path):
    src = make_file(tmp_path / "locked.bin", 1000)
    src.chmod(0)
    got = swarm_peer("compare", src, "--peers", "1", "--modes", "central", "--out", tmp_path / "out", timeout=60)
    assert_one_line_refusal(got, "Permission denied")
    assert "compare: central" not in got.stdout

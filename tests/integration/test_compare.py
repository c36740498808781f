"""`swarm-peer compare`: real runs with N = 3 on a small file, and the model-only form."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest

from tests.integration.conftest import ROOT

MiB = 1024 * 1024


def compare_cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "peer", "compare", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env={**os.environ, "SWARM_NO_LSD": "1"})


def test_compare_three_peers_all_modes_writes_table_chart_and_numbers(tmp_path):
    out = tmp_path / "results"
    size, cap = MiB, 2 * MiB
    got = compare_cli("--peers", "3", "--size", "1MiB", "--upload-limit", "2MiB", "--modes",
                      "central,p2p,hybrid", "--out", str(out), "--timeout", "60", "--keep-logs")
    assert got.returncode == 0, got.stdout + got.stderr
    # --keep-logs: every process's output, per run
    for mode in ("central", "p2p", "hybrid"):
        logs = out / "logs" / f"{mode}-3"
        assert {p.name for p in logs.glob("peer*.log")} == {"peer1.log", "peer2.log", "peer3.log"}
        assert "complete: " in (logs / "peer1.log").read_text()
        assert (logs / "tracker.log").exists()
    assert (out / "logs" / "p2p-3" / "seed.log").exists()

    report = json.loads((out / "results.json").read_text())
    runs = {r["mode"]: r for r in report["runs"]}
    assert set(runs) == {"central", "p2p", "hybrid"}
    table = (out / "table.txt").read_text()
    assert table.strip() in got.stdout
    for mode, r in runs.items():
        assert r["ok"] and r["identical"] and r["error"] is None
        assert r["peers"] == 3 and r["file_size"] == size and r["completed"] == 3
        assert len(r["times"]) == 3 and r["all_complete"] == max(r["times"]) == r["slowest"]
        assert r["ratio"] == pytest.approx(r["all_complete"] / r["bound"])
        assert f"{r['all_complete']:.2f} s" in table and f"{r['ratio']:.2f}" in table
        assert r["downloaded_bytes"] >= 3 * size
    # the bounds are the fluid model's, for the mode's server side
    assert runs["central"]["bound"] == runs["central"]["cs_bound"] == pytest.approx(3 * size / cap)
    assert runs["p2p"]["bound"] == pytest.approx(max(size / cap, 3 * size / (cap + 3 * cap)))
    assert runs["hybrid"]["bound"] == pytest.approx(max(size / (2 * cap), 3 * size / (2 * cap + 3 * cap)))
    # who uploaded: the origin alone in central mode, the seed and peers in p2p mode
    assert runs["central"]["peer_bytes"] == 0 and runs["central"]["seed_bytes"] == 0
    assert 3 * size <= runs["central"]["origin_bytes"] <= 3.1 * size
    assert runs["central"]["all_complete"] >= 0.95 * runs["central"]["bound"]   # the cap held
    assert runs["p2p"]["origin_bytes"] == 0 and runs["p2p"]["seed_bytes"] >= size
    assert runs["p2p"]["seed_bytes"] + runs["p2p"]["peer_bytes"] >= 3 * size
    assert runs["hybrid"]["origin_bytes"] > 0 and runs["hybrid"]["seed_bytes"] > 0

    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [row["mode"] for row in rows] == ["central", "p2p", "hybrid"]
    assert float(rows[0]["all_complete"]) == runs["central"]["all_complete"]
    for chart in ("time_vs_peers.png", "completion_cdf.png"):
        data = (out / chart).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5000


def test_model_only_huge_sizes_and_swarms(tmp_path):
    out = tmp_path / "model"
    got = compare_cli("--model-only", "--size", "100GB", "--sweep", "1,1000,10000000", "--upload-limit", "4MiB",
                      "--server-upload-limit", "100MiB", "--modes", "central,p2p", "--out", str(out), timeout=30)
    assert got.returncode == 0, got.stdout + got.stderr
    rows = {(r["mode"], r["peers"]): r for r in json.loads((out / "model.json").read_text())["rows"]}
    F, u, u_s = 100e9, 4 * MiB, 100 * MiB
    n = 10_000_000
    assert rows["central", n]["bound"] == pytest.approx(n * F / u_s)
    assert rows["central", n]["server_bytes"] == pytest.approx(n * F)
    assert rows["p2p", n]["bound"] == pytest.approx(n * F / (u_s + n * u))
    assert rows["p2p", 1]["bound"] == pytest.approx(F / u_s)
    # the server sends at least one copy, and what the peers' uplinks cannot carry in time
    assert rows["p2p", n]["server_bytes"] == pytest.approx(n * F - n * u * rows["p2p", n]["bound"])
    assert rows["p2p", 1000]["server_bytes"] >= F
    lines = got.stdout.splitlines()
    assert any("10,000,000" in line and "central" in line and "years" in line for line in lines), got.stdout
    assert any("10,000,000" in line and "p2p" in line and "h" in line.split() for line in lines), got.stdout


def test_bad_modes_is_one_line_and_exit_2(tmp_path):
    got = compare_cli("--modes", "central,mesh", "--out", str(tmp_path), timeout=30)
    assert got.returncode == 2
    assert got.stderr.strip().splitlines() == [
        "swarm-peer: error: --modes: expected a comma list of central, p2p, hybrid, got 'central,mesh'"]


@pytest.mark.parametrize("name", ["a #1.bin", "b%41.bin", "q?x=1 ünï.bin", "new\nline.bin"])
def test_compare_file_named_with_url_characters_runs_in_every_mode(tmp_path, name):
    src = tmp_path / name
    src.write_bytes(os.urandom(300_000))
    out = tmp_path / "results"
    got = compare_cli(str(src), "--peers", "1", "--modes", "central,p2p,hybrid", "--timeout", "15",
                      "--out", str(out), timeout=60)
    assert got.returncode == 0, got.stdout + got.stderr
    runs = {r["mode"]: r for r in json.loads((out / "results.json").read_text())["runs"]}
    assert all(r["ok"] and r["identical"] for r in runs.values()), runs
    assert runs["central"]["origin_bytes"] >= 300_000 and runs["hybrid"]["origin_bytes"] > 0   # the web seed served

"""`swarm-peer compare`: client-server against peer-to-peer, measured and against the fluid model.

Every run starts, on 127.0.0.1, one `swarm-tracker` that is also the origin (`--files`, its
`--upload-limit` caps the origin), one `swarm-peer seed` (p2p and hybrid; central mode never
talks to peers) and N `swarm-peer get` processes, and removes all of them afterwards.

Why separate processes, one per peer: a peer's rate limits are one token bucket per process,
i.e. one host's uplink, which is what the fluid model's u_i is; and one Python event loop
could not move N x 4 MiB/s of blocks (copying, hashing) for N = 32 the way N processes can.
The peers are started with the hidden `--wait-for GATE` option: they listen at once and
start the torrent only when the gate file appears, so Python start-up (seconds for 32
processes) is not part of the measured time. Each peer reports `complete: PATH (X s)`,
seconds since it saw the gate; the distribution time is the largest of those. Peers keep
seeding after completion until all are complete, as the fluid model assumes.

The fluid model (Kumar and Ross; Kurose and Ross ch. 2) for a file of F bytes, N peers,
server upload u_s, peer uploads u_i and smallest download rate d_min:
    client-server  D_cs  >= max(N F / u_s, F / d_min)
    peer-to-peer   D_p2p >= max(F / u_s, F / d_min, N F / (u_s + sum u_i))
Central mode is measured against D_cs with u_s = the origin's cap, p2p against D_p2p with
u_s = the seed's cap, hybrid against D_p2p with u_s = origin + seed (both serve).
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import shutil
import statistics
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

import click

from common.bencoding import bdecode, bencode
from common.metainfo import MetainfoError, create_metainfo, torrent_file_name
from common.rates import format_bytes, format_rate
from peer.processes import LocalProcess, sha1_file, stop_all, wait_for_line

MODES = ("central", "p2p", "hybrid")
HOST = "127.0.0.1"
POLL = 0.05
# 256 KiB pieces, as in most torrents of this size: with 64 KiB ones each of 32 peers gets
# 4x the `have` messages, and at N = 32 on 2 cores that CPU cost 0.2 of the ratio to the bound.
PIECE_LENGTH = 256 * 1024
# The origin serves the file under this name, so the web seed URL works whatever the file
# is called (`#`, `%`, `?`, a newline); the torrent keeps the real name.
SERVED_NAME = "file"


class CompareError(Exception):
    """The comparison cannot run (bad option, a process that would not start): one line."""


# -- the fluid model ---------------------------------------------------------------------------

def _div(a: float, rate: float | None) -> float:
    """a / rate, where a missing (unlimited) rate costs no time."""
    return 0.0 if not rate else a / rate


def client_server_bound(size: float, n: int, server_up: float | None, d_min: float | None) -> float:
    """Seconds the server needs at least to send N copies, or the slowest peer to take one."""
    return max(_div(n * size, server_up), _div(size, d_min))


def p2p_bound(size: float, n: int, server_up: float | None, peer_up: float | None,
              d_min: float | None) -> float:
    """Seconds at least: one copy must leave the server, each peer must take one, and N copies
    must leave the whole swarm's uplinks together."""
    total_up = None if not server_up or not peer_up else server_up + n * peer_up
    return max(_div(size, server_up), _div(size, d_min), _div(n * size, total_up))


def p2p_server_bytes(size: float, n: int, server_up: float | None, peer_up: float | None,
                     d_min: float | None) -> float:
    """Bytes the server must upload in a schedule that meets the P2P bound: at least one copy,
    and whatever the peers' uplinks cannot carry in that time."""
    if not peer_up:
        return size
    t = p2p_bound(size, n, server_up, peer_up, d_min)
    return max(size, n * size - n * peer_up * t)


@dataclass(frozen=True, slots=True)
class Capacities:
    """Bytes per second; None = unlimited."""

    peer_up: float | None
    server_up: float | None
    d_min: float | None

    def server_for(self, mode: str) -> float | None:
        """The server side of a mode: origin (central), seed (p2p), both (hybrid)."""
        if mode == "hybrid" and self.server_up:
            return 2 * self.server_up
        return self.server_up

    def bounds(self, mode: str, size: float, n: int) -> tuple[float, float, float]:
        """(client-server bound, P2P bound, the bound this mode is measured against)."""
        u_s = self.server_for(mode)
        cs = client_server_bound(size, n, u_s, self.d_min)
        p2p = p2p_bound(size, n, u_s, self.peer_up, self.d_min)
        return cs, p2p, cs if mode == "central" else p2p


# -- one measured run --------------------------------------------------------------------------

@dataclass
class RunResult:
    mode: str
    peers: int
    file_size: int
    completed: int                       # peers that reported completion
    times: list[float]                   # per-peer completion seconds, sorted
    all_complete: float | None           # None: not every peer finished
    median: float | None
    slowest: float | None
    origin_bytes: int
    seed_bytes: int
    peer_bytes: int                      # uploaded by the N downloading peers together
    downloaded_bytes: int
    cs_bound: float
    p2p_bound: float
    bound: float
    ratio: float | None                  # all_complete / bound
    identical: bool                      # every copy equals the original
    error: str | None = None

    @property
    def server_bytes(self) -> int:
        return self.origin_bytes + self.seed_bytes

    @property
    def ok(self) -> bool:
        return self.error is None and self.identical and self.completed == self.peers


def _wait_line(proc: LocalProcess, pattern: str, timeout: float):
    return wait_for_line(proc, pattern, timeout, error=CompareError)


def _rate_option(name: str, rate: float | None) -> list[str]:
    return [name, str(int(rate))] if rate else []


_TOTALS = re.compile(r"^totals: uploaded=(\d+) downloaded=(\d+)", re.MULTILINE)
_COMPLETE = re.compile(r"^complete: .*? \(([\d.]+) s\)$", re.MULTILINE | re.DOTALL)   # PATH may hold a newline
_ERROR = re.compile(r"^swarm-peer: error: (.*)$", re.MULTILINE)


def run_once(mode: str, n: int, source: Path, caps: Capacities, work: Path, timeout: float,
             original: str | None = None, piece_length: int = PIECE_LENGTH,
             template: bytes | None = None) -> RunResult:
    """One distribution of `source` to N fresh peers in `mode`; all processes gone after.
    `template`: torrent_template(source, piece_length), if the caller made it already."""
    template = template or torrent_template(source, piece_length)
    work.mkdir(parents=True)
    files = work / "files"
    files.mkdir()
    served = files / SERVED_NAME
    try:
        os.link(source, served)          # the origin refuses symlinks that leave its folder
    except OSError:
        shutil.copyfile(source, served)
    size = source.stat().st_size
    procs: list[LocalProcess] = []
    peers: list[LocalProcess] = []
    seed: LocalProcess | None = None
    try:
        tracker = LocalProcess("tracker/origin", ["-m", "tracker", "start", "--host", HOST, "--port", "0",
                                           "--interval", "5", "--files", str(files),
                                           *_rate_option("--upload-limit", caps.server_up)],
                        work / "tracker.log")
        procs.append(tracker)
        port = int(_wait_line(tracker, r"http://127\.0\.0\.1:(\d+)/announce", 30).group(1))
        base = f"http://{HOST}:{port}"
        torrent = work / torrent_file_name(source.name)
        torrent.write_bytes(_for_run(template, base))
        if mode != "central":
            seed = LocalProcess("seed", ["-m", "peer", "seed", str(torrent), str(source), "--host", HOST,
                                  "--port", "0", "--no-lsd", *_rate_option("--upload-limit", caps.server_up)],
                         work / "seed.log")
            procs.append(seed)
        gate = work / "gate"
        for i in range(n):
            peer = LocalProcess(f"peer {i + 1}", ["-m", "peer", "get", str(torrent), "-o", str(work / f"peer{i + 1}"),
                                           "--mode", mode, "--host", HOST, "--port", "0", "--no-lsd",
                                           "--wait-for", str(gate),
                                           *_rate_option("--upload-limit", caps.peer_up),
                                           *_rate_option("--download-limit", caps.d_min)],
                         work / f"peer{i + 1}.log")
            procs.append(peer)
            peers.append(peer)
        if seed is not None:
            _wait_line(seed, r"^seeding ", 120)
        for peer in peers:
            _wait_line(peer, r"listening on port", 120)
        gate.touch()
        started = time.monotonic()
        error = _wait_complete(peers, started + timeout)
        times = sorted(float(m.group(1)) for p in peers if (m := _COMPLETE.search(p.text())))
        # Everyone has finished (or given up): stop peers and seed so they print their totals.
        stop_all([p for p in procs if p is not tracker])
        origin_bytes = _origin_bytes(base)
        stop_all([tracker])
        seed_bytes = _totals(seed)[0] if seed else 0
        peer_totals = [_totals(p) for p in peers]
        original = original or sha1_file(source)     # once per compare, not per run
        identical = all((work / f"peer{i + 1}" / source.name).is_file()
                        and sha1_file(work / f"peer{i + 1}" / source.name) == original for i in range(n))
        if error is None and not identical:
            error = "a downloaded copy differs from the original"
        cs, p2p, bound = caps.bounds(mode, size, n)
        done = max(times) if len(times) == n else None
        return RunResult(
            mode=mode, peers=n, file_size=size, completed=len(times), times=times,
            all_complete=done, median=statistics.median(times) if times else None,
            slowest=max(times) if times else None, origin_bytes=origin_bytes, seed_bytes=seed_bytes,
            peer_bytes=sum(u for u, _ in peer_totals), downloaded_bytes=sum(d for _, d in peer_totals),
            cs_bound=cs, p2p_bound=p2p, bound=bound,
            ratio=done / bound if done is not None and bound > 0 else None,
            identical=identical, error=error)
    finally:
        stop_all(procs)


def _wait_complete(peers: list[LocalProcess], deadline: float) -> str | None:
    """Until every peer printed `complete:`; else the first error, exit or the timeout."""
    while True:
        pending = 0
        for i, peer in enumerate(peers):
            text = peer.text()
            if _COMPLETE.search(text):
                continue
            if m := _ERROR.search(text):
                return f"peer {i + 1}: {m.group(1)}"
            if not peer.alive():
                return f"peer {i + 1} exited with status {peer.popen.returncode}:\n{peer.tail()}"
            pending += 1
        if not pending:
            return None
        if time.monotonic() > deadline:
            return f"{pending} of {len(peers)} peers were not complete before the timeout"
        time.sleep(POLL)


def _totals(proc: LocalProcess) -> tuple[int, int]:
    matches = _TOTALS.findall(proc.text())
    return (int(matches[-1][0]), int(matches[-1][1])) if matches else (0, 0)


def _origin_bytes(base: str) -> int:
    try:
        with urllib.request.urlopen(f"{base}/stats.json", timeout=5) as resp:
            return int(json.load(resp).get("files_bytes_sent", 0))
    except (OSError, ValueError):
        return 0


# -- the command -------------------------------------------------------------------------------

def _parse_modes(text: str) -> list[str]:
    modes = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise CompareError(f"--modes: expected a comma list of {', '.join(MODES)}, got {text!r}")
    return modes


def _parse_counts(text: str | None, default: int) -> list[int]:
    if text is None:
        counts = [default]
    else:
        try:
            counts = [int(x) for x in text.split(",") if x.strip()]
        except ValueError:
            counts = []
        if not counts:
            raise CompareError(f"--sweep: expected a comma list of peer counts, got {text!r}")
    if any(c < 1 for c in counts):
        raise CompareError("peer counts must be at least 1")
    return sorted(set(counts))


def _check_out_dir(out: Path) -> None:
    """Refuse an --out folder we could not make before measuring for minutes, not after."""
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise CompareError(f"--out {out}: exists and is not a folder")
        if not os.access(out, os.W_OK | os.X_OK):
            raise CompareError(f"--out {out}: folder is not writable")
        return
    parent = next(p for p in out.absolute().parents if p.exists() or p.is_symlink())
    if not parent.is_dir():
        raise CompareError(f"--out {out}: cannot make it, {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise CompareError(f"--out {out}: cannot make it, {parent} is not writable")


@contextlib.contextmanager
def _writing_to(out: Path):
    """Make `out` and write into it; a failure is one line (it was checked before measuring,
    but the disk may have filled up since)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        yield
    except OSError as exc:
        raise CompareError(f"cannot write the results to {out}: {exc.strerror or exc}") from None


def _rate(value: int | None) -> float | None:
    """0 and None mean unlimited."""
    return float(value) if value else None


def run_compare(file: Path | None = None, peers: int = 8, upload_limit: int | None = 4 * 1024 * 1024,
                server_upload_limit: int | None = None, download_limit: int | None = None,
                modes: str = "central,p2p", sweep: str | None = None, size: int = 32 * 1024 * 1024,
                out_dir: Path | str = "compare-results", model_only: bool = False,
                timeout: float = 600.0, keep_logs: bool = False, piece_length: int = PIECE_LENGTH,
                echo=click.echo) -> bool:
    """Run (or, with model_only, only compute) the comparison; True when every run succeeded."""
    mode_list = _parse_modes(modes)
    counts = _parse_counts(sweep, peers)
    peer_up = _rate(upload_limit)
    caps = Capacities(peer_up=peer_up, server_up=_rate(server_upload_limit) or peer_up,
                      d_min=_rate(download_limit))
    if file is not None:
        if not Path(file).is_file():
            raise CompareError(f"{file}: not a regular file")
        file_size = Path(file).stat().st_size
        if file_size < 1:
            raise CompareError(f"{file}: is empty, nothing to distribute")
    else:
        file_size = size
        if file_size < 1:
            raise CompareError("--size must be at least 1 byte")
    out = Path(out_dir)
    _check_out_dir(out)
    if model_only:
        return _model_only(file_size, counts, mode_list, caps, out, echo)
    if file_size > 4 << 30:
        raise CompareError(f"a {format_bytes(file_size)} file is too big to run here; use --model-only")
    if file is not None:       # (a refusal comes now, before anything is measured)
        template = torrent_template(Path(file).resolve(), piece_length)

    echo(f"compare: {format_bytes(file_size)}, N = {', '.join(map(str, counts))}, modes {', '.join(mode_list)};"
         f" peers upload {_fmt_rate(caps.peer_up)}, origin and seed {_fmt_rate(caps.server_up)},"
         f" peers download {_fmt_rate(caps.d_min)}")
    echo("compare: tracker + origin (one swarm-tracker --files), one seed and N peers, each its own"
         " process on 127.0.0.1")
    work = Path(tempfile.mkdtemp(prefix="swarm-compare-"))
    results: list[RunResult] = []
    try:
        if file is None:
            source = work / f"random-{file_size}.bin"
            _generate(source, file_size)
            template = torrent_template(source, piece_length)
        else:
            source = Path(file).resolve()
        original = sha1_file(source)
        for n in counts:
            for mode in mode_list:
                echo(f"compare: {mode}, N = {n} ...")
                run_dir = work / f"{mode}-{n}"
                result = run_once(mode, n, source, caps, run_dir, timeout, original, piece_length,
                                  template)
                if keep_logs:     # every process's output, for looking into a slow run
                    logs = out / "logs" / f"{mode}-{n}"
                    logs.mkdir(parents=True, exist_ok=True)
                    for log_file in run_dir.glob("*.log"):
                        shutil.copy(log_file, logs / log_file.name)
                shutil.rmtree(run_dir, ignore_errors=True)
                results.append(result)
                echo(f"compare: {mode}, N = {n}: {_summary(result)}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    table = format_tables(results, caps)
    echo(table)
    with _writing_to(out):
        (out / "table.txt").write_text(table + "\n")
        _write_json(out / "results.json", results, caps, file_size)
        _write_csv(out / "results.csv", results)
        try:
            charts = write_charts(out, results, caps, file_size)
        except ImportError:         # matplotlib is the `chart` extra, not a dependency
            charts = []
            echo("compare: charts skipped: they need matplotlib (pip install -e '.[chart]')")
    echo(f"compare: wrote {', '.join(str(p) for p in [out / 'table.txt', out / 'results.json', out / 'results.csv', *charts])}")
    return all(r.ok for r in results)


def torrent_template(source: Path, piece_length: int = PIECE_LENGTH) -> bytes:
    """The torrent of `source` without trackers: hashed once for every run, each of which
    adds its own tracker and web seed (_for_run). What create_metainfo refuses (a name no
    torrent can hold, a special or unreadable file) is a CompareError: one line."""
    try:
        return create_metainfo(source, [], piece_length=piece_length)
    except MetainfoError as exc:
        raise CompareError(f"cannot make a torrent: {exc}") from None


def _for_run(template: bytes, base: str) -> bytes:
    """The template with this run's tracker and web seed; the info dict, and so the
    info-hash, unchanged."""
    top = bdecode(template)
    top[b"announce"] = f"{base}/announce".encode()
    top[b"url-list"] = [f"{base}/files/{SERVED_NAME}".encode()]
    return bencode(top)


def _generate(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        left = size
        while left:
            chunk = os.urandom(min(left, 1 << 20))
            f.write(chunk)
            left -= len(chunk)


def _fmt_rate(rate: float | None) -> str:
    return "unlimited" if not rate else format_rate(rate)


def _fmt_time(seconds: float | None) -> str:
    """Seconds for the runs; minutes to years for the model's huge cases."""
    if seconds is None:
        return "-"
    if seconds < 600:
        return f"{seconds:.2f} s"
    for unit, length in (("years", 365.25 * 86400), ("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= 2 * length:
            return f"{seconds / length:.1f} {unit}"
    return f"{seconds / 60:.1f} min"


def _summary(r: RunResult) -> str:
    if r.error:
        return f"FAILED: {r.error}"
    return (f"all complete in {r.all_complete:.2f} s, bound {r.bound:.2f} s, ratio {r.ratio:.2f}"
            if r.ratio is not None else f"all complete in {r.all_complete:.2f} s")


def format_tables(results: list[RunResult], caps: Capacities) -> str:
    """One table per mode, one row per N."""
    header = ("N", "all done", "median", "slowest", "server up", "peers up", "cs bound", "p2p bound",
              "measured/bound")
    blocks = []
    for mode in [m for m in MODES if any(r.mode == m for r in results)]:
        rows = [header]
        for r in (r for r in results if r.mode == mode):
            copies = (lambda b: f"{format_bytes(b)} ({b / r.file_size:.2f}x)")
            rows.append((str(r.peers), _fmt_time(r.all_complete), _fmt_time(r.median), _fmt_time(r.slowest),
                         copies(r.server_bytes), copies(r.peer_bytes), _fmt_time(r.cs_bound),
                         _fmt_time(r.p2p_bound), f"{r.ratio:.2f}" if r.ratio is not None else
                         ("FAILED" if r.error else "-")))
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        server = {"central": "origin", "p2p": "seed", "hybrid": "origin + seed"}[mode]
        lines = [f"{mode}: u_s = {_fmt_rate(caps.server_for(mode))} ({server}), u_i = {_fmt_rate(caps.peer_up)},"
                 f" d_min = {_fmt_rate(caps.d_min)}; measured against the "
                 f"{'client-server' if mode == 'central' else 'P2P'} bound"]
        for row in rows:
            lines.append("  ".join(cell.rjust(w) for cell, w in zip(row, widths)))
        for r in (r for r in results if r.mode == mode and r.error):
            lines.append(f"  N = {r.peers} failed: {r.error.splitlines()[0]}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def _record(r: RunResult) -> dict:
    d = asdict(r)
    d["server_bytes"] = r.server_bytes
    d["server_copies"] = r.server_bytes / r.file_size
    d["peer_copies"] = r.peer_bytes / r.file_size
    d["ok"] = r.ok
    return d


def _write_json(path: Path, results: list[RunResult], caps: Capacities, size: int) -> None:
    path.write_text(json.dumps({"file_size": size, "capacities": asdict(caps),
                                "runs": [_record(r) for r in results]}, indent=2) + "\n")


def _write_csv(path: Path, results: list[RunResult]) -> None:
    fields = ["mode", "peers", "file_size", "completed", "all_complete", "median", "slowest",
              "origin_bytes", "seed_bytes", "peer_bytes", "server_copies", "cs_bound", "p2p_bound",
              "bound", "ratio", "identical", "error"]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for r in results:
            writer.writerow(_record(r))


def write_charts(out: Path, results: list[RunResult], caps: Capacities, size: int) -> list[Path]:
    """Distribution time against N with both bounds as lines; CDF of per-peer completion."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = sorted({r.peers for r in results})
    modes = [m for m in MODES if any(r.mode == m for r in results)]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    grid = sorted(set(counts) | set(range(1, max(counts) + 1)))
    for mode in modes:
        points = [(r.peers, r.all_complete) for r in results if r.mode == mode and r.all_complete is not None]
        if points:
            ax.plot(*zip(*points), marker="o", label=f"{mode} (measured)")
    ax.plot(grid, [client_server_bound(size, n, caps.server_up, caps.d_min) for n in grid], "k--",
            label="client-server bound")
    ax.plot(grid, [p2p_bound(size, n, caps.server_up, caps.peer_up, caps.d_min) for n in grid], "k:",
            label="P2P bound")
    if "hybrid" in modes:
        u_s = caps.server_for("hybrid")
        ax.plot(grid, [p2p_bound(size, n, u_s, caps.peer_up, caps.d_min) for n in grid], color="grey",
                linestyle=":", label="P2P bound, origin + seed")
    ax.set_xlabel("N (downloading peers)")
    ax.set_ylabel("time until all N are complete (s)")
    ax.set_title(f"Distributing {format_bytes(size)}: u = {_fmt_rate(caps.peer_up)}, "
                 f"u_s = {_fmt_rate(caps.server_up)}")
    by_n = _save(plt, fig, ax, out / "time_vs_peers.png")

    fig, ax = plt.subplots(figsize=(7, 4.5))
    n_max = max(counts)
    for r in results:
        if r.peers == n_max and r.times:
            xs = [0.0, *r.times]
            ys = [0.0, *[(i + 1) / r.peers for i in range(len(r.times))]]
            ax.step(xs, ys, where="post", label=f"{r.mode}, N = {r.peers}")
    ax.set_xlabel("completion time (s)")
    ax.set_ylabel("fraction of peers complete")
    ax.set_ylim(0, 1.02)
    ax.set_title("Per-peer completion times (CDF)")
    cdf = _save(plt, fig, ax, out / "completion_cdf.png")
    return [by_n, cdf]


def _save(plt, fig, ax, path: Path) -> Path:
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# -- model only --------------------------------------------------------------------------------

def model_rows(size: float, counts: list[int], modes: list[str], caps: Capacities) -> list[dict]:
    """For each N and mode: the bound and the bytes the server side must upload to meet it."""
    rows = []
    for n in counts:
        for mode in modes:
            cs, p2p, bound = caps.bounds(mode, size, n)
            server = n * size if mode == "central" else \
                p2p_server_bytes(size, n, caps.server_for(mode), caps.peer_up, caps.d_min)
            rows.append({"mode": mode, "peers": n, "file_size": size, "bound": bound,
                         "cs_bound": cs, "p2p_bound": p2p, "server_bytes": server,
                         "server_copies": server / size})
    return rows


def _model_only(size: int, counts: list[int], modes: list[str], caps: Capacities, out: Path, echo) -> bool:
    if not caps.server_up:
        raise CompareError("--model-only needs an upload limit (u_s and u_i) to compute times")
    rows = model_rows(size, counts, modes, caps)
    echo(f"fluid model: F = {format_bytes(size)}, u_i = {_fmt_rate(caps.peer_up)}, "
         f"origin/seed u_s = {_fmt_rate(caps.server_up)}, d_min = {_fmt_rate(caps.d_min)}")
    table = [("N", "mode", "time (bound)", "server uploads", "copies")]
    for row in rows:
        table.append((f"{row['peers']:,}", row["mode"], _fmt_time(row["bound"]),
                      format_bytes(row["server_bytes"]), f"{row['server_copies']:,.2f}"))
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    for r in table:
        echo("  ".join(c.rjust(w) for c, w in zip(r, widths)))
    with _writing_to(out):
        (out / "model.json").write_text(json.dumps({"capacities": asdict(caps), "rows": rows}, indent=2) + "\n")
    echo(f"compare: wrote {out / 'model.json'}")
    return True

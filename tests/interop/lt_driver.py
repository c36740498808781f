"""Drive libtorrent (the PyPI wheel) from the command line, for the interop tests.

Run as a subprocess (`sys.executable lt_driver.py ...`) so that every client lives in
its own process group and can be killed like aria2c or a swarm peer. Everything that
makes loopback swarms misbehave is switched off: DHT, LSD, PEX, UPnP/NAT-PMP, uTP
(slow on loopback), encryption; several connections from 127.0.0.1 are allowed since
every peer in a test lives at that address.

Output is line based so a test can wait for it:
    listening on port N
    progress P.PPP peers N rate_down N rate_up N
    complete: NAME           (a leecher has every piece)
    scrape: complete=N incomplete=N downloaded=N
    info_hash: HEX
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

import libtorrent as lt

ALERT_MASK = (
    lt.alert_category.error
    | lt.alert_category.status
    | lt.alert_category.tracker
    | lt.alert_category.storage
)


def say(line: str) -> None:
    print(line, flush=True)


def make_session(port: int, upload_limit: int = 0, download_limit: int = 0,
                 verbose: bool = False) -> lt.session:
    settings = {
        "listen_interfaces": f"127.0.0.1:{port}",
        "outgoing_interfaces": "",
        "allow_multiple_connections_per_ip": True,
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "enable_outgoing_utp": False,
        "enable_incoming_utp": False,
        "in_enc_policy": int(lt.enc_policy.pe_disabled),
        "out_enc_policy": int(lt.enc_policy.pe_disabled),
        "prefer_rc4": False,
        "upload_rate_limit": upload_limit,
        "download_rate_limit": download_limit,
        # Without this libtorrent ignores rate limits towards 127.0.0.1.
        "ignore_limits_on_local_network": False,
        "alert_mask": ALERT_MASK | (lt.alert_category.peer | lt.alert_category.connect if verbose else 0),
        "user_agent": "lt_driver/" + lt.__version__,
        "announce_to_all_trackers": True,
        "announce_to_all_tiers": True,
        # Loopback tests should not wait for libtorrent's reconnect back-off.
        "min_reconnect_time": 1,
        "peer_connect_timeout": 5,
        "smooth_connects": False,
        "connection_speed": 50,
        "stop_tracker_timeout": 1,
        "min_announce_interval": 1,
        # SSRF mitigation lets a tracker on localhost be reached only at .../announce:
        # the scrape URL (.../scrape) would be refused.
        "ssrf_mitigation": False,
    }
    return lt.session(settings)


def actual_port(ses: lt.session, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ses.is_listening() and ses.listen_port():
            return ses.listen_port()
        time.sleep(0.05)
    raise SystemExit("lt_driver: session did not start listening")


def add_torrent(ses: lt.session, torrent: str, save_path: str, seed_mode: bool) -> lt.torrent_handle:
    params = lt.add_torrent_params()
    params.ti = lt.torrent_info(torrent)
    params.save_path = save_path
    flags = lt.torrent_flags.disable_dht | lt.torrent_flags.disable_lsd | lt.torrent_flags.disable_pex
    if seed_mode:
        flags |= lt.torrent_flags.seed_mode
    params.flags = flags
    return ses.add_torrent(params)


def report_alerts(ses: lt.session, verbose: bool) -> None:
    for alert in ses.pop_alerts():
        category = alert.category()
        if isinstance(alert, lt.tracker_reply_alert):
            say(f"tracker reply: {alert.num_peers} peers from {alert.tracker_url()}")
        elif category & lt.alert_category.error or verbose:
            say(f"alert: {type(alert).__name__}: {alert.message()}")


def run(args: argparse.Namespace) -> int:
    ses = make_session(args.port, args.upload_limit, args.download_limit, args.verbose)
    say(f"listening on port {actual_port(ses)}")
    handle = add_torrent(ses, args.torrent, args.dir, args.seed_mode)
    for peer in args.peer:
        host, _, port = peer.rpartition(":")
        handle.connect_peer((host, int(port)))
    started = time.monotonic()
    announced_complete = False
    last_print = 0.0
    while True:
        report_alerts(ses, args.verbose)
        status = handle.status()
        now = time.monotonic()
        if now - last_print >= args.interval:
            last_print = now
            say(
                f"progress {status.progress:.3f} state {status.state} peers {status.num_peers} "
                f"rate_down {status.download_rate} rate_up {status.upload_rate}"
            )
        if status.is_seeding and not announced_complete:
            announced_complete = True
            say(f"complete: {status.name} in {now - started:.2f}s")
            if args.exit_when_complete:
                return 0  # the session's destructor announces `stopped` (bounded: 1 s)
        if args.timeout and now - started > args.timeout:
            say("timeout")
            return 2
        time.sleep(0.1)


def create(args: argparse.Namespace) -> int:
    flags = 0 if args.hybrid else lt.create_torrent.v1_only
    ct = lt.create_torrent(lt.list_files(args.path), args.piece_length, flags)
    for tracker in args.tracker:
        ct.add_tracker(tracker)
    lt.set_piece_hashes(ct, os.path.dirname(os.path.abspath(args.path)))
    data = lt.bencode(ct.generate())
    with open(args.output, "wb") as out:
        out.write(data)
    say(f"info_hash: {lt.torrent_info(args.output).info_hashes().v1}")
    return 0


def info(args: argparse.Namespace) -> int:
    ti = lt.torrent_info(args.torrent)
    say(f"info_hash: {ti.info_hashes().v1}")
    say(f"name: {ti.name()}")
    say(f"total_size: {ti.total_size()}")
    say(f"num_pieces: {ti.num_pieces()}")
    fs = ti.layout()
    for index in range(fs.num_files()):
        if not fs.file_flags(index) & lt.file_storage.flag_pad_file:
            say(f"file: {fs.file_path(index)} {fs.file_size(index)}")
    return 0


def scrape(args: argparse.Namespace) -> int:
    """Add the torrent paused-for-download, ask the tracker for a scrape, print it."""
    ses = make_session(args.port)
    actual_port(ses)
    params = lt.add_torrent_params()
    params.ti = lt.torrent_info(args.torrent)
    params.save_path = args.dir
    # Paused and not auto-managed: it never announces, so it does not count itself.
    params.flags = lt.torrent_flags.paused | lt.torrent_flags.disable_pex
    handle = ses.add_torrent(params)
    deadline = time.monotonic() + args.timeout
    handle.scrape_tracker()
    while time.monotonic() < deadline:
        ses.wait_for_alert(200)
        for alert in ses.pop_alerts():
            if isinstance(alert, lt.scrape_reply_alert):
                say(f"scrape: complete={alert.complete} incomplete={alert.incomplete}")
                return 0
            if isinstance(alert, lt.scrape_failed_alert):
                say(f"scrape failed: {alert.message()}")
                return 1
            if args.verbose or alert.category() & lt.alert_category.error:
                say(f"alert: {type(alert).__name__}: {alert.message()}")
    say("timeout")
    return 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    for name in ("seed", "get"):
        p = sub.add_parser(name)
        p.add_argument("torrent")
        p.add_argument("dir", help="save path: holds the data for a seed, receives it for get")
        p.add_argument("--port", type=int, default=0)
        p.add_argument("--upload-limit", type=int, default=0, help="bytes/s, 0 = unlimited")
        p.add_argument("--download-limit", type=int, default=0)
        p.add_argument("--peer", action="append", default=[], help="HOST:PORT to dial at once")
        p.add_argument("--interval", type=float, default=1.0)
        p.add_argument("--timeout", type=float, default=0.0)
        p.add_argument("--verbose", action="store_true")
    sub.choices["seed"].set_defaults(seed_mode=False, exit_when_complete=False)
    sub.choices["seed"].add_argument("--trust", dest="seed_mode", action="store_true",
                                     help="seed_mode: skip the initial hash check")
    sub.choices["get"].set_defaults(seed_mode=False)
    sub.choices["get"].add_argument("--keep-seeding", dest="exit_when_complete",
                                    action="store_false", default=True)

    p = sub.add_parser("create")
    p.add_argument("path")
    p.add_argument("output")
    p.add_argument("--tracker", action="append", default=[])
    p.add_argument("--piece-length", type=int, default=256 * 1024)
    p.add_argument("--hybrid", action="store_true", help="v1+v2 torrent (default v1 only)")

    p = sub.add_parser("info")
    p.add_argument("torrent")

    p = sub.add_parser("scrape")
    p.add_argument("torrent")
    p.add_argument("dir")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--timeout", type=float, default=20.0)
    p.add_argument("--verbose", action="store_true")

    args = parser.parse_args(argv)
    # SIGTERM ends like Ctrl-C: the session is destroyed normally and tells trackers `stopped`.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    handler = {"seed": run, "get": run, "create": create, "info": info, "scrape": scrape}
    try:
        return handler[args.command](args)
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())

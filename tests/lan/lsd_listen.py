"""Run inside a LAN host: print every BT-SEARCH announce heard on one interface, as JSON.

    python tests/lan/lsd_listen.py --address 10.231.0.2 --seconds 30 [--until HEX]

Prints "listening" once joined, then one line per announce:
{"from": ip, "port": n, "info_hashes": [hex...], "cookie": str|null}. Exits after
--seconds, or as soon as an announce for --until is heard.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from peer.lsd import GROUP_V4, LSD_PORT, LsdError, parse_bt_search  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--address", required=True, help="IPv4 address of the interface to listen on")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--until", default=None, help="stop at the first announce of this info-hash")
    args = parser.parse_args()

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("0.0.0.0", LSD_PORT))
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                    socket.inet_aton(GROUP_V4) + socket.inet_aton(args.address))
    print("listening", flush=True)
    deadline = time.monotonic() + args.seconds
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            data, source = sock.recvfrom(65536)
        except socket.timeout:
            break
        try:
            port, hashes, cookie = parse_bt_search(data)
        except LsdError as exc:
            print(json.dumps({"from": source[0], "error": str(exc)}), flush=True)
            continue
        print(json.dumps({"from": source[0], "port": port, "info_hashes": [h.hex() for h in hashes],
                          "cookie": cookie}), flush=True)
        if args.until and args.until in (h.hex() for h in hashes):
            break
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A pretend LAN of laptops made of Linux network namespaces, torn down without a trace.

Layout: one "switch" namespace holds a bridge per LAN segment; each host is a namespace
with a veth pair per segment it is plugged into (`eth0`, `eth1`, ...; the other end is a
bridge port inside the switch). Every interface and address lives inside these
namespaces, so the test host's own interfaces never see a packet, multicast included.
Addresses are 10.231.<segment>.<host>/24.

`Lan.close()` stops every process started in the hosts and deletes the namespaces
(which deletes their interfaces and bridges with them). It is safe to call twice.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PREFIX = "swl"            # namespace names: swl<pid>x<n>-<role>
_counter = itertools.count()


class NetnsUnavailable(Exception):
    """This machine cannot build namespaces (not root, no `ip`, a container without netns)."""


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], text=True, capture_output=True, timeout=20)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip() or result.returncode}")
    return result


def check_available() -> None:
    """Raise NetnsUnavailable with the reason, by making (and deleting) a namespace."""
    if sys.platform != "linux":
        raise NetnsUnavailable("network namespaces need Linux")
    if shutil.which("ip") is None:
        raise NetnsUnavailable("the `ip` command (iproute2) is not installed")
    if os.geteuid() != 0:
        raise NetnsUnavailable("building network namespaces needs root")
    probe = f"{PREFIX}{os.getpid()}probe"
    made = ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        raise NetnsUnavailable(f"cannot create a network namespace: {made.stderr.strip()}")
    bridge = ip("-n", probe, "link", "add", "br0", "type", "bridge", check=False)
    ip("netns", "del", probe, check=False)
    if bridge.returncode != 0:
        raise NetnsUnavailable(f"cannot create a bridge: {bridge.stderr.strip()}")


def remove_stale() -> None:
    """Namespaces left by an earlier run that was killed (its pid is gone)."""
    for line in ip("netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        m = re.fullmatch(rf"{PREFIX}(\d+)(x\d+-.+|probe)", name)
        if m and not Path(f"/proc/{m.group(1)}").exists():
            _kill_inside(name)
            ip("netns", "del", name, check=False)


def _kill_inside(namespace: str) -> None:
    """SIGKILL what still runs in one of our namespaces (only ever our own children)."""
    pids = ip("netns", "pids", namespace, check=False).stdout.split()
    for pid in pids:
        try:
            os.kill(int(pid), 9)
        except (ProcessLookupError, ValueError):
            pass


@dataclass
class Host:
    name: str
    namespace: str
    addresses: dict[str, str] = field(default_factory=dict)   # interface -> IPv4 address

    @property
    def address(self) -> str:
        return self.addresses["eth0"]

    def command(self, argv: list[str | os.PathLike]) -> list[str]:
        """`argv` run inside this host."""
        return ["ip", "netns", "exec", self.namespace, *map(str, argv)]

    def run(self, argv: list[str | os.PathLike], timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command(argv), text=True, capture_output=True, timeout=timeout,
                              env=lan_env(), stdin=subprocess.DEVNULL)


def lan_env() -> dict[str, str]:
    """The environment for processes inside the LAN: LSD on (only ever in our namespaces)."""
    env = {k: v for k, v in os.environ.items() if k != "SWARM_NO_LSD"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Lan:
    def __init__(self) -> None:
        self.tag = f"{PREFIX}{os.getpid()}x{next(_counter)}"
        self.switch = f"{self.tag}-sw"
        self.namespaces: list[str] = []
        self.segments: list[str] = []
        self.hosts: dict[str, Host] = {}
        self._add_namespace(self.switch)

    def _add_namespace(self, namespace: str) -> None:
        ip("netns", "add", namespace)
        self.namespaces.append(namespace)
        ip("-n", namespace, "link", "set", "lo", "up")

    def segment(self) -> int:
        """A new bridge (a LAN segment); returns its number. Snooping off: plain flooding,
        like a cheap home switch."""
        number = len(self.segments)
        bridge = f"br{number}"
        ip("-n", self.switch, "link", "add", bridge, "type", "bridge", "mcast_snooping", "0")
        ip("-n", self.switch, "link", "set", bridge, "up")
        self.segments.append(bridge)
        return number

    def host(self, name: str, *segments: int) -> Host:
        """A laptop plugged into `segments` (eth0 on the first, eth1 on the second...)."""
        index = len(self.hosts) + 1
        namespace = f"{self.tag}-{name}"
        self._add_namespace(namespace)
        host = Host(name, namespace)
        for port, segment in enumerate(segments):
            iface, outside = f"eth{port}", f"h{index}p{port}"
            ip("-n", self.switch, "link", "add", outside, "type", "veth", "peer", "name", iface,
               "netns", namespace)
            ip("-n", self.switch, "link", "set", outside, "master", self.segments[segment], "up")
            address = f"10.231.{segment}.{index}"
            ip("-n", namespace, "addr", "add", f"{address}/24", "dev", iface)
            ip("-n", namespace, "link", "set", iface, "up")
            host.addresses[iface] = address
        self.hosts[name] = host
        return host

    def close(self) -> None:
        for namespace in reversed(self.namespaces):
            _kill_inside(namespace)
        for namespace in reversed(self.namespaces):
            ip("netns", "del", namespace, check=False)
        self.namespaces.clear()

    def leftovers(self) -> list[str]:
        """Our namespaces that still exist (after close(): should be none)."""
        names = [line.split()[0] for line in ip("netns", "list", check=False).stdout.splitlines() if line.split()]
        return [n for n in names if n.startswith(self.tag)]

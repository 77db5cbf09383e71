"""Throw-away Linux network namespaces for adapter tests: a bridge, N hosts and a client.

    with Testbed(hosts=2, client=True) as bed:
        a, b = bed.hosts
        a.run(["ip", "-o", "addr", "show"])
        bed.vip(1)             # 198.18.0.201/24, free on the segment

Layout: the bridge `br0` lives in a namespace of its own (never in the host's), and every node
(`h1`, `h2`, ..., `client`) is a namespace with one veth, `eth0`, whose peer is a port of
`br0`. Node i gets `<subnet>.i`, the client `<subnet>.100`; `vip(n)` hands out `<subnet>.200+n`.
Addresses come from 198.18.0.0/15 only (RFC 2544 benchmarking space); the constructor refuses
any other subnet. Nothing is created in, or changed on, the host's own namespace: veths are
created inside the bridge namespace with their peer placed straight into the node namespace.

Names are `wkt<pid>-<random>-<role>`, so parallel runs never collide, and a run that was
killed leaves namespaces that the next `Testbed` removes (`cleanup_stale`: namespaces with our
prefix whose pid is no longer alive). Everything a `Testbed` created is removed on exit, even
when the body or the set-up itself failed: deleting a namespace takes its veth ends (and so
their peers) and the bridge with it.

Set-up uses the `ip` program (iproute2) and `sh`: this is test scaffolding, and the code under
test talks netlink itself, so `ip` doubles as an independent oracle. Sysctls are written to
/proc/sys/net by a shell inside the namespace (those files show the namespace of the process
that opens them), so procps is not needed.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import secrets
import shlex
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TypeVar

SAFE_SPACE = ipaddress.IPv4Network("198.18.0.0/15")
DEFAULT_SUBNET = "198.18.0.0/24"
NAME_PREFIX = "wkt"
NETNS_DIR = Path("/run/netns")
IFNAME = "eth0"
BRIDGE = "br0"
CLIENT_HOST_NUMBER = 100
VIP_HOST_BASE = 200
HOSTS_MAX = 50
COMMAND_TIMEOUT_S = 10.0
POLL_INTERVAL_S = 0.005

_STALE_NAME = re.compile(rf"^{NAME_PREFIX}(\d+)-[0-9a-f]+-")
# Quiet, deterministic namespaces: no IPv6 DAD (addresses usable at once), no router
# solicitations; the kernel's defaults for everything ARP-related.
_NODE_SYSCTLS = (
    "net.ipv6.conf.all.accept_dad=0",
    "net.ipv6.conf.default.accept_dad=0",
    "net.ipv6.conf.default.router_solicitations=0",
)
_BRIDGE_SYSCTLS = ("net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")

T = TypeVar("T")


class TestbedError(RuntimeError):
    """Building or tearing down a testbed failed; the message holds the command and its stderr."""


def is_root() -> bool:
    return os.geteuid() == 0


def unavailable_reason() -> str | None:
    """Why namespace tests cannot run here (for pytest skip), or None when they can."""
    if not is_root():
        return "network namespace tests need root (CI runs them as root)"
    if not NETNS_DIR.parent.is_dir():
        return "/run is missing: cannot create named network namespaces"
    if not any(Path(d, "ip").exists() for d in ("/usr/sbin", "/sbin", "/usr/bin", "/bin")):
        return "the `ip` program (iproute2) is not installed"
    return None


def run(argv: Sequence[str], *, check: bool = True, timeout_s: float = COMMAND_TIMEOUT_S) -> str:
    """Run a program (no shell), return its stdout; raise TestbedError with stderr on failure."""
    done = subprocess.run(
        list(argv), capture_output=True, text=True, timeout=timeout_s, check=False
    )
    if check and done.returncode != 0:
        raise TestbedError(f"{shlex.join(argv)}: exit {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def wait_until(
    probe: Callable[[], T | None], *, timeout_s: float = 3.0, what: str = "condition"
) -> T:
    """Poll `probe` until it returns something not None/False; the kernel handles received
    frames asynchronously (softirq), so a test must wait for their effect. Raises on timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value is not None and value is not False:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(POLL_INTERVAL_S)


def _sysctl_path(key: str) -> str:
    if not re.fullmatch(r"net(\.[A-Za-z0-9_-]+)+", key):
        raise ValueError(f"not a net.* sysctl: {key!r}")
    return "/proc/sys/" + key.replace(".", "/")


def write_sysctls(netns: str, settings: Sequence[str]) -> None:
    """Write `net.key=value` settings inside a namespace, in order, with one shell."""
    args: list[str] = []
    for setting in settings:
        key, sep, value = setting.partition("=")
        if not sep:
            raise ValueError(f"expected key=value, got {setting!r}")
        args += [_sysctl_path(key), value]
    script = 'while [ $# -gt 0 ]; do printf "%s\\n" "$2" > "$1" || exit 1; shift 2; done'
    run(["ip", "netns", "exec", netns, "sh", "-c", script, "sh", *args])


def cleanup_stale() -> list[str]:
    """Delete namespaces left by testbeds whose process is gone; return their names."""
    removed = []
    try:
        names = sorted(p.name for p in NETNS_DIR.iterdir())
    except FileNotFoundError:
        return removed
    for name in names:
        match = _STALE_NAME.match(name)
        if match is None or _pid_alive(int(match.group(1))):
            continue
        if subprocess.run(["ip", "netns", "del", name], capture_output=True).returncode == 0:
            removed.append(name)
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True, slots=True)
class Node:
    """One namespace on the test segment."""

    name: str  # the namespace
    role: str  # "h1", "h2", ..., "client"
    ifname: str
    interface: ipaddress.IPv4Interface  # address with the segment's prefix
    mac: str  # lower-case "aa:bb:cc:dd:ee:ff"

    @property
    def address(self) -> ipaddress.IPv4Address:
        return self.interface.ip

    @property
    def mac_bytes(self) -> bytes:
        return bytes.fromhex(self.mac.replace(":", ""))

    def run(
        self, cmd: str | Sequence[str], *, check: bool = True, timeout_s: float = COMMAND_TIMEOUT_S
    ) -> str:
        """Run a program inside this namespace (a string is split as by a POSIX shell)."""
        argv = shlex.split(cmd) if isinstance(cmd, str) else list(cmd)
        return run(["ip", "netns", "exec", self.name, *argv], check=check, timeout_s=timeout_s)

    def sysctl(self, *settings: str) -> None:
        """Write `key=value` sysctls in this namespace (net.* sysctls are per namespace)."""
        write_sysctls(self.name, settings)

    def read_sysctl(self, key: str) -> str:
        return self.run(["cat", _sysctl_path(key)]).strip()

    def neighbour(self, address: object) -> tuple[str, str] | None:
        """(MAC, state) of the neighbour-table entry for `address` on eth0, read with `ip -j`;
        None when there is none. States are upper case as ip prints them (REACHABLE, STALE...)."""
        text = run(["ip", "-n", self.name, "-j", "neigh", "show", "dev", self.ifname, str(address)])
        for entry in json.loads(text or "[]"):
            mac = entry.get("lladdr")
            states = entry.get("state") or ["NONE"]
            if mac is not None:
                return mac.lower(), states[0]
        return None

    def add_neighbour(self, address: object, mac: str, state: str = "stale") -> None:
        lladdr = ["lladdr", mac, "nud", state, "dev", self.ifname]
        run(["ip", "-n", self.name, "neigh", "replace", str(address), *lladdr])

    def addresses_text(self) -> str:
        """`ip -o addr show dev eth0`, the form operators read (labels, prefixes)."""
        return run(["ip", "-n", self.name, "-o", "addr", "show", "dev", self.ifname])


class Testbed:
    """A bridge namespace plus `hosts` host namespaces (and a client), removed on exit."""

    __test__ = False  # not a pytest test class despite the name

    def __init__(self, hosts: int = 2, client: bool = True, subnet: str = DEFAULT_SUBNET) -> None:
        network = ipaddress.IPv4Network(subnet)
        if not network.subnet_of(SAFE_SPACE):
            raise ValueError(f"{subnet} is outside {SAFE_SPACE}: tests use benchmarking space only")
        if network.prefixlen > 24:
            raise ValueError(f"{subnet}: the testbed needs at least a /24")
        if not 0 <= hosts <= HOSTS_MAX:
            raise ValueError(f"hosts must be 0..{HOSTS_MAX}")
        self.subnet = network
        self._host_count = hosts
        self._with_client = client
        self.prefix = f"{NAME_PREFIX}{os.getpid()}-{secrets.token_hex(3)}"
        self.bridge = f"{self.prefix}-br"
        self.hosts: tuple[Node, ...] = ()
        self.client: Node | None = None
        self._created: list[str] = []

    # -- lifecycle ------------------------------------------------------------------------------

    def __enter__(self) -> Testbed:
        cleanup_stale()
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close(raise_errors=exc is None)

    def close(self, *, raise_errors: bool = False) -> None:
        """Delete every namespace this testbed created (nodes first, then the bridge)."""
        errors = []
        while self._created:
            name = self._created.pop()
            done = subprocess.run(["ip", "netns", "del", name], capture_output=True, text=True)
            if done.returncode != 0 and (NETNS_DIR / name).exists():
                errors.append(f"ip netns del {name}: {done.stderr.strip()}")
        if errors and raise_errors:
            raise TestbedError("; ".join(errors))

    # -- building -------------------------------------------------------------------------------

    def _netns_add(self, name: str) -> None:
        run(["ip", "netns", "add", name])
        self._created.append(name)

    def _build(self) -> None:
        self._netns_add(self.bridge)
        write_sysctls(self.bridge, _BRIDGE_SYSCTLS)
        options = ["forward_delay", "0", "stp_state", "0", "mcast_snooping", "0"]
        run(["ip", "-n", self.bridge, "link", "add", BRIDGE, "type", "bridge", *options])
        run(["ip", "-n", self.bridge, "link", "set", BRIDGE, "up"])
        roles = [(f"h{i}", i) for i in range(1, self._host_count + 1)]
        if self._with_client:
            roles.append(("client", CLIENT_HOST_NUMBER))
        nodes = [self._add_node(role, number) for role, number in roles]
        self.hosts = tuple(n for n in nodes if n.role != "client")
        self.client = next((n for n in nodes if n.role == "client"), None)

    def _add_node(self, role: str, number: int) -> Node:
        name = f"{self.prefix}-{role}"
        self._netns_add(name)
        write_sysctls(name, _NODE_SYSCTLS)
        port = f"p-{role}"[:15]
        peer = ["peer", "name", IFNAME, "netns", name]
        run(["ip", "-n", self.bridge, "link", "add", port, "type", "veth", *peer])
        run(["ip", "-n", self.bridge, "link", "set", port, "master", BRIDGE, "up"])
        interface = ipaddress.IPv4Interface(f"{self.subnet[number]}/{self.subnet.prefixlen}")
        run(["ip", "-n", name, "link", "set", "lo", "up"])
        run(["ip", "-n", name, "addr", "add", str(interface), "dev", IFNAME])
        run(["ip", "-n", name, "link", "set", IFNAME, "up"])
        link = json.loads(run(["ip", "-n", name, "-j", "link", "show", IFNAME]))[0]
        return Node(name, role, IFNAME, interface, link["address"].lower())

    # -- helpers --------------------------------------------------------------------------------

    @property
    def nodes(self) -> tuple[Node, ...]:
        return self.hosts + ((self.client,) if self.client is not None else ())

    @property
    def namespaces(self) -> tuple[str, ...]:
        """Every namespace still owned by this testbed (empty after close)."""
        return tuple(self._created)

    def vip(self, n: int = 1, prefixlen: int | None = None) -> ipaddress.IPv4Interface:
        """A free address of the segment (`.200+n`), by default with the segment's prefix."""
        if not 1 <= n <= 50:
            raise ValueError("vip number must be 1..50")
        plen = self.subnet.prefixlen if prefixlen is None else prefixlen
        return ipaddress.IPv4Interface(f"{self.subnet[VIP_HOST_BASE + n]}/{plen}")

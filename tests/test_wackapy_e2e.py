"""wackapy end to end: real spreadpy and wackapy processes in network namespaces on a bridge.

The seed's scenario (shared/spec/wackamole.md §1.7, §2.9) on three hosts and a client
(tests/netns.py: 198.18.0.0/24, bridge in a namespace of its own, nothing in the host's):
each host runs a spreadpy daemon (`TimeoutProfile = fast`, the segment address is the
subnet's broadcast address 198.18.0.255) and a wackapy with six one-address VIP sets, short
`Mature` and balancing interval. A UDP responder in each host namespace answers with the
host's name, so the client learns *who* answers a VIP, not just that something does.

One test walks through the whole story, because each step starts from the state the previous
one left (a cluster takes seconds to build): even spread and `wackatrl -l`; the client reaches
every VIP; kill -9 of one host's spreadpy and wackapy: its VIPs move to the survivors, the
client's neighbour entries change to the survivors' MACs without the client sending anything
(the gratuitous ARP), and the survivors answer; the host restarts: leftovers are removed, it
matures at once and balancing hands it its share; a partition (the host's bridge port cut)
and heal leave every VIP on exactly one host and answered by it; `wackatrl -f`/`-s`; SIGTERM
releases everything. Failover times are printed, not asserted (run with -s to see them).

Every process is started by this file and killed by PID; the namespaces (and with them every
link) are removed by the Testbed, even when a step fails. Needs root: skipped without it,
except under CI (which runs as root), where that is a failure.
"""

from __future__ import annotations

import json
import os
import secrets
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from pyroute2 import netns as pyroute2_netns

from spreadpy.daemon import query_status
from tests import netns as nsbed
from tests.netns import BRIDGE, Node, Testbed
from wackapy.control import ControlError, read_state

T = TypeVar("T")

_REASON = nsbed.unavailable_reason()
pytestmark = pytest.mark.slow

VIP_COUNT = 6
PROBE_PORT = 7777
GROUP = "wacktest"
POLL_S = 0.05
PROBE_TIMEOUT_S = 0.3
PROCESS_EXIT_S = 10.0
SETTLE_S = 30.0  # bound for the slow steps (first start: imports, ring, maturity)
FAILOVER_S = 15.0
METRICS_PORT = 9102


@pytest.fixture
def netns_required() -> None:
    if _REASON is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the namespace tests, but: {_REASON}")
    pytest.skip(_REASON)


def poll(probe: Callable[[], T | None], timeout_s: float, what: str) -> T:
    """Call `probe` every POLL_S until it returns something truthy; fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(POLL_S)


# ---------------------------------------------------------------------------------------------
# UDP responders (who answers a VIP?) and the client's probe


class Responders:
    """One UDP socket per host namespace on 0.0.0.0:PROBE_PORT, answering `<role> <nonce>`,
    served by one thread of this process (no extra processes to clean up)."""

    def __init__(self) -> None:
        self._sockets: dict[str, socket.socket] = {}
        self._lock = threading.Lock()
        self._stop_r, self._stop_w = os.pipe()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def start(self, node: Node) -> None:
        sock = pyroute2_netns.create_socket(
            node.name, socket.AF_INET, socket.SOCK_DGRAM, 0, flags=0
        )
        sock.bind(("0.0.0.0", PROBE_PORT))
        sock.setblocking(False)
        with self._lock:
            self._sockets[node.role] = sock
        os.write(self._stop_w, b"r")  # wake the thread: new socket

    def stop(self, role: str) -> None:
        with self._lock:
            sock = self._sockets.pop(role, None)
        os.write(self._stop_w, b"r")
        if sock is not None:
            sock.close()

    def close(self) -> None:
        with self._lock:
            sockets, self._sockets = list(self._sockets.values()), {}
        os.write(self._stop_w, b"q")
        self._thread.join(5)
        for sock in sockets:
            sock.close()
        os.close(self._stop_r)
        os.close(self._stop_w)

    def _serve(self) -> None:
        while True:
            with self._lock:
                by_fd = {s.fileno(): (role, s) for role, s in self._sockets.items()}
            readable, _, _ = select.select([self._stop_r, *by_fd], [], [], 1.0)
            for fd in readable:
                if fd == self._stop_r:
                    if b"q" in os.read(self._stop_r, 64):
                        return
                    continue
                role, sock = by_fd[fd]
                try:
                    data, peer = sock.recvfrom(512)
                    sock.sendto(role.encode() + b" " + data, peer)
                except OSError:
                    continue  # closed meanwhile, or the peer's ICMP error


class Prober:
    """The client's UDP socket: `ask(vip)` returns the role of the host that answered."""

    def __init__(self, client: Node) -> None:
        self.sock = pyroute2_netns.create_socket(
            client.name, socket.AF_INET, socket.SOCK_DGRAM, 0, flags=0
        )
        self.sock.bind(("0.0.0.0", 0))

    def ask(self, vip: str) -> str | None:
        nonce = secrets.token_hex(4).encode()
        try:
            self.sock.sendto(nonce, (vip, PROBE_PORT))
        except OSError:
            return None
        deadline = time.monotonic() + PROBE_TIMEOUT_S
        while (left := deadline - time.monotonic()) > 0:
            readable, _, _ = select.select([self.sock], [], [], left)
            if not readable:
                break
            try:
                data = self.sock.recv(512)
            except OSError:  # ICMP port unreachable from a host without a responder
                continue
            role, _, echoed = data.partition(b" ")
            if echoed == nonce:
                return role.decode()
        return None

    def close(self) -> None:
        self.sock.close()


# ---------------------------------------------------------------------------------------------
# the cluster


@dataclass
class Host:
    node: Node
    name: str  # "h1", ...
    spread_conf: Path
    wack_conf: Path
    control: Path
    spread_status: Path
    log_dir: Path
    spread: subprocess.Popen[bytes] | None = None
    wackapy: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def hook_log(self) -> Path:
        return self.log_dir / f"{self.name}-hooks.txt"

    def hook_lines(self) -> list[str]:
        try:
            return self.hook_log.read_text().splitlines()
        except FileNotFoundError:
            return []


@dataclass
class Cluster:
    bed: Testbed
    base: Path
    hosts: dict[str, Host] = field(default_factory=dict)
    vips: tuple[str, ...] = ()

    @classmethod
    def build(cls, bed: Testbed, base: Path) -> Cluster:
        cluster = cls(bed, base)
        cluster.vips = tuple(str(bed.vip(n).ip) for n in range(1, VIP_COUNT + 1))
        ring = "\n".join(f"\t{n.role}\t{n.address}" for n in bed.hosts)
        broadcast = bed.subnet.broadcast_address
        vifs = "\n".join(f"\teth0:{bed.vip(n)}" for n in range(1, VIP_COUNT + 1))
        client = bed.client
        assert client is not None
        for node in bed.hosts:
            name = node.role
            sock = base / f"{name}.sock"
            host = Host(
                node=node,
                name=name,
                spread_conf=base / f"{name}-spread.conf",
                wack_conf=base / f"{name}-wackamole.conf",
                control=base / f"{name}.ctl",
                spread_status=Path(f"{sock}.status"),
                log_dir=base,
            )
            host.spread_conf.write_text(
                f"Spread_Segment {broadcast}:4803 {{\n{ring}\n}}\n"
                f'ClientSocketPath = "{sock}"\n'
                "TimeoutProfile = fast\n"
                "EventTimeStamp\n"
            )
            host.wack_conf.write_text(
                f"Spread = {sock}\n"
                "SpreadRetryInterval = 500ms\n"
                f"Group = {GROUP}\n"
                f"Control = {host.control}\n"
                f"VirtualInterfaces {{\n{vifs}\n}}\n"
                f"Notify {{\n\t{node.ifname}:{client.address}/32\n\tarp-cache\n}}\n"
                "Arp-Cache = 2s\n"
                "Balance {\n\tAcquisitionsPerRound = 1\n\tInterval = 300ms\n}\n"
                "Mature = 1s\n"
                f"MetricsPort = {METRICS_PORT}\n"
                f"RunCommand \"sh -c 'echo up $0 $1 >> {host.hook_log}'\" on up\n"
                f"RunCommand \"sh -c 'echo down $0 $1 >> {host.hook_log}'\" on down\n"
                f"RunCommand \"sh -c 'echo post-up >> {host.hook_log}'\" post up\n"
            )
            cluster.hosts[name] = host
        return cluster

    # -- processes (every one started here is killed here, by PID) ----------------------------

    def _popen(self, host: Host, kind: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = (host.log_dir / f"{host.name}-{kind}.log").open("ab")
        try:
            return subprocess.Popen(
                ["ip", "netns", "exec", host.node.name, *argv],  # ip execs: same PID
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log.close()

    def start_spread(self, name: str) -> None:
        host = self.hosts[name]
        host.spread = self._popen(
            host,
            "spreadpy",
            [
                sys.executable,
                "-m",
                "spreadpy",
                "-c",
                str(host.spread_conf),
                "-n",
                name,
                "--state-dir",
                str(self.base),
            ],
        )

    def start_wackapy(self, name: str) -> None:
        host = self.hosts[name]
        host.starts += 1
        host.wackapy = self._popen(
            host,
            "wackapy",
            [
                sys.executable,
                "-m",
                "wackapy.cli",
                "-d",
                "-c",
                str(host.wack_conf),
                "-u",
                f"{name}w{host.starts}",
            ],
        )

    def kill(self, name: str) -> None:
        """kill -9 this host's wackapy and spreadpy (by the PIDs we started)."""
        host = self.hosts[name]
        for proc in (host.wackapy, host.spread):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
        for proc in (host.wackapy, host.spread):
            if proc is not None:
                proc.wait(PROCESS_EXIT_S)

    def terminate_wackapy(self, name: str) -> int:
        proc = self.hosts[name].wackapy
        assert proc is not None
        proc.send_signal(signal.SIGTERM)
        return proc.wait(PROCESS_EXIT_S)

    def close(self) -> None:
        for host in self.hosts.values():
            for proc in (host.wackapy, host.spread):
                if proc is not None and proc.poll() is None:
                    proc.send_signal(signal.SIGKILL)
                    proc.wait(PROCESS_EXIT_S)

    def logs(self) -> str:
        return "\n".join(
            f"----- {path.name}\n{path.read_text(errors='replace')[-4000:]}"
            for path in sorted(self.base.glob("*.log"))
        )

    # -- observations -----------------------------------------------------------------------

    def ring_of(self, names: tuple[str, ...]) -> bool:
        """Every named spreadpy is operational in a ring of exactly those daemons."""
        try:
            states = [query_status(str(self.hosts[n].spread_status)) for n in names]
        except (OSError, ValueError):
            return False
        return all(
            s["state"] == "operational" and sorted(s["members"]) == sorted(names) for s in states
        )

    def holders(self) -> dict[str, list[str]]:
        """VIP -> hosts that have it on eth0 (read with `ip`, an independent oracle)."""
        held: dict[str, list[str]] = {vip: [] for vip in self.vips}
        for name, host in self.hosts.items():
            text = nsbed.run(["ip", "-n", host.node.name, "-j", "addr", "show", "dev", "eth0"])
            for link in json.loads(text or "[]"):
                for info in link.get("addr_info", []):
                    if info.get("local") in held:
                        held[info["local"]].append(name)
        return held

    def state(self, name: str) -> dict[str, Any] | None:
        try:
            doc, _ = read_state(str(self.hosts[name].control), timeout_s=2.0)
        except ControlError:
            return None
        return doc

    def settled(self, names: tuple[str, ...]) -> dict[str, str] | None:
        """VIP -> holder once: every VIP is on exactly one of `names` (hosts not named are not
        looked at: a killed one keeps its addresses), the counts differ by at most one, and
        every named daemon is in RUN with a view of exactly `names` and the same table, which
        matches the interfaces."""
        held = {vip: [h for h in hosts if h in names] for vip, hosts in self.holders().items()}
        if any(len(h) != 1 for h in held.values()):
            return None
        owner = {vip: h[0] for vip, h in held.items()}
        counts = [sum(1 for o in owner.values() if o == n) for n in names]
        if max(counts) - min(counts) > 1:
            return None
        tables = []
        for name in names:
            doc = self.state(name)
            if doc is None or doc["member"]["state"] != "run" or doc["view"] is None:
                return None
            if len(doc["view"]["members"]) != len(names):
                return None
            tables.append([(s["set_id"], s["owner_label"]) for s in doc["sets"]])
        if any(t != tables[0] for t in tables):
            return None
        by_label = {str(self.hosts[n].node.address): n for n in names}
        if {vip: by_label.get(label or "") for vip, label in tables[0]} != owner:
            return None
        return owner

    def answers(self, prober: Prober, owner: dict[str, str]) -> bool:
        return all(prober.ask(vip) == holder for vip, holder in owner.items())

    def wackatrl(self, name: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "wackatrl", "-c", str(self.hosts[name].wack_conf), *args],
            capture_output=True,
            text=True,
            timeout=PROCESS_EXIT_S,
            check=False,
        )

    def expected_listing(self, owner: dict[str, str]) -> str:
        lines = []
        for vip in self.vips:
            holder = self.hosts[owner[vip]].node.address if vip in owner else None
            lines.append(f"Owner: {holder if holder else 'not acquired'}\n")
            lines.append(f"\t*    eth0:{vip}/24\n")
        return "".join(lines)


@pytest.fixture
def cluster(tmp_path: Path, netns_required: None) -> Iterator[tuple[Cluster, Prober, Responders]]:
    with Testbed(hosts=3, client=True) as bed:
        assert bed.client is not None
        c = Cluster.build(bed, tmp_path)
        responders = Responders()
        prober = Prober(bed.client)
        try:
            yield c, prober, responders
        except BaseException:
            print(c.logs())
            raise
        finally:
            c.close()
            prober.close()
            responders.close()


def metrics_text(node: Node) -> str:
    sock = pyroute2_netns.create_socket(node.name, socket.AF_INET, socket.SOCK_STREAM, 0, flags=0)
    try:
        sock.settimeout(5)
        sock.connect(("127.0.0.1", METRICS_PORT))
        sock.sendall(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    finally:
        sock.close()
    return b"".join(chunks).decode(errors="replace")


# ---------------------------------------------------------------------------------------------


def test_failover_rebalance_partition_and_shutdown(
    cluster: tuple[Cluster, Prober, Responders],
) -> None:
    c, prober, responders = cluster
    all3 = ("h1", "h2", "h3")
    client = c.bed.client
    assert client is not None

    # --- start: ring, maturity, even spread ------------------------------------------------
    for name in all3:
        c.start_spread(name)
        responders.start(c.hosts[name].node)
    poll(lambda: c.ring_of(all3), SETTLE_S, "a spreadpy ring of h1, h2, h3")
    for name in all3:
        c.start_wackapy(name)
    owner = poll(lambda: c.settled(all3), SETTLE_S, "6 VIPs spread 2/2/2 over h1-h3")
    for name in all3:
        listing = c.wackatrl(name, "-l")
        assert listing.returncode == 0, listing.stderr
        assert listing.stdout == c.expected_listing(owner)  # true /24, not upstream's /32
    doc = json.loads(c.wackatrl("h1", "-l", "--json").stdout)
    assert [s["set_id"] for s in doc["sets"]] == list(c.vips)
    assert "wackapy_sets_held 2.0" in metrics_text(c.hosts["h1"].node)

    # --- the client reaches every VIP, answered by its holder -----------------------------
    if shutil.which("ping"):
        for vip in c.vips:
            client.run(["ping", "-c", "1", "-W", "2", vip])
    poll(lambda: c.answers(prober, owner), FAILOVER_S, "every VIP answered by its holder")
    macs = {name: host.node.mac for name, host in c.hosts.items()}
    for vip, holder in owner.items():
        assert client.neighbour(vip) is not None
        assert client.neighbour(vip)[0] == macs[holder]  # type: ignore[index]

    # --- kill -9 h3's spreadpy and wackapy (and its responder) -----------------------------
    moved = sorted(vip for vip, holder in owner.items() if holder == "h3")
    assert len(moved) == 2
    responders.stop("h3")
    crash = time.monotonic()
    c.kill("h3")
    survivors = ("h1", "h2")

    def on_survivors() -> float | None:
        held = c.holders()
        ok = all(any(h in survivors for h in held[vip]) for vip in moved)
        return time.monotonic() if ok else None

    t_addresses = poll(on_survivors, FAILOVER_S, "h3's VIPs on h1 or h2") - crash
    new_owner = poll(lambda: c.settled(survivors), FAILOVER_S, "6 VIPs 3/3 on h1, h2")
    # The client sends nothing to the moved VIPs: only the gratuitous ARP can move its entry.
    updated_at: dict[str, float] = {}

    def entries_moved() -> bool:
        for vip in moved:
            entry = client.neighbour(vip)
            if vip not in updated_at and entry and entry[0] == macs[new_owner[vip]]:
                updated_at[vip] = time.monotonic()
        return len(updated_at) == len(moved)

    poll(entries_moved, FAILOVER_S, "the client's neighbour entries of h3's VIPs to move")
    t_garp = max(updated_at.values()) - crash
    poll(lambda: c.answers(prober, new_owner), FAILOVER_S, "the survivors to answer every VIP")
    t_answer = time.monotonic() - crash
    print(
        f"\nfailover after kill -9 of h3 (spreadpy + wackapy): VIPs on survivors "
        f"{t_addresses:.3f}s, client ARP entries moved (gratuitous ARP) {t_garp:.3f}s, "
        f"every moved VIP answering {t_answer:.3f}s"
    )
    # kill -9 leaves h3's addresses behind (nothing ran to remove them)
    assert all("h3" in c.holders()[vip] for vip in moved)

    # --- restart h3, wackapy first: it removes the leftovers while Spread is not there yet,
    # retries every SpreadRetryInterval, and once spreadpy is up it matures at once (mature
    # peers) and balancing hands it its share
    c.start_wackapy("h3")
    poll(lambda: not any("h3" in h for h in c.holders().values()), SETTLE_S, "no VIP on h3")
    assert c.hosts["h3"].wackapy is not None and c.hosts["h3"].wackapy.poll() is None
    restart = time.monotonic()
    c.start_spread("h3")
    responders.start(c.hosts["h3"].node)
    owner = poll(lambda: c.settled(all3), SETTLE_S, "2/2/2 again after h3's restart")
    print(f"h3's spreadpy restart to rebalanced: {time.monotonic() - restart:.3f}s")
    h3_state = c.state("h3")
    assert h3_state is not None and h3_state["member"]["mature"]
    poll(lambda: c.answers(prober, owner), FAILOVER_S, "every VIP answered after rebalancing")

    # --- partition h3 (its bridge port detached), then heal ---------------------------------
    port = "p-h3"
    nsbed.run(["ip", "-n", c.bed.bridge, "link", "set", port, "nomaster"])
    try:
        poll(lambda: c.ring_of(("h3",)) and c.ring_of(survivors), SETTLE_S, "two rings")

        def split() -> bool:  # by design each side serves every VIP (spec §2.9)
            held = c.holders()
            return all("h3" in h and len([x for x in h if x != "h3"]) == 1 for h in held.values())

        poll(split, FAILOVER_S, "each side of the partition to hold every VIP")
    finally:
        nsbed.run(["ip", "-n", c.bed.bridge, "link", "set", port, "master", BRIDGE])
    heal = time.monotonic()
    owner = poll(lambda: c.settled(all3), SETTLE_S, "one holder per VIP after the heal")
    print(f"heal to one holder per VIP, balanced: {time.monotonic() - heal:.3f}s")
    # the keepers re-announce contested sets: the client follows without re-resolving
    poll(lambda: c.answers(prober, owner), FAILOVER_S, "every VIP answered by its one holder")

    # --- wackatrl -f / -s -------------------------------------------------------------------
    failed = c.wackatrl("h2", "-f")
    assert failed.returncode == 0, failed.stderr
    assert failed.stdout == c.expected_listing({})  # everything "not acquired" right after -f
    poll(lambda: c.settled(("h1", "h3")), FAILOVER_S, "h2's VIPs on h1 and h3 after -f")
    resumed = c.wackatrl("h2", "-s")
    assert resumed.returncode == 0, resumed.stderr
    owner = poll(lambda: c.settled(all3), SETTLE_S, "2/2/2 after wackatrl -s")

    # --- h1's spreadpy dies under a running wackapy: it releases at once, and comes back ------
    spread_h1 = c.hosts["h1"].spread
    assert spread_h1 is not None
    spread_h1.send_signal(signal.SIGKILL)
    spread_h1.wait(PROCESS_EXIT_S)
    poll(lambda: c.settled(("h2", "h3")), FAILOVER_S, "h1's VIPs on h2 and h3")
    assert not any("h1" in h for h in c.holders().values())  # released, not just taken over
    assert all(c.hosts[n].wackapy.poll() is None for n in all3)  # type: ignore[union-attr]
    c.start_spread("h1")
    owner = poll(lambda: c.settled(all3), SETTLE_S, "2/2/2 after h1's spreadpy restart")

    # --- SIGTERM releases everything ---------------------------------------------------------
    for name in all3:
        assert c.terminate_wackapy(name) == 0
    assert c.holders() == {vip: [] for vip in c.vips}
    # hooks: each address brought up and down with its arguments; every up on h1 and h2 (never
    # killed -9) has its down; h3 got its share back by balancing: post up
    for name in ("h1", "h2"):
        lines = c.hosts[name].hook_lines()
        ups = sorted(line.removeprefix("up ") for line in lines if line.startswith("up "))
        downs = sorted(line.removeprefix("down ") for line in lines if line.startswith("down "))
        assert ups and ups == downs
        assert {line.split()[0] for line in ups} <= {f"{vip}/24" for vip in c.vips}
        assert all(line.endswith(" eth0") for line in ups)
    assert "post-up" in c.hosts["h3"].hook_lines()
    gone = c.wackatrl("h1", "-l")
    assert gone.returncode == 1
    assert gone.stdout == (
        f"connect to: {c.hosts['h1'].control} failed.\nPerhaps wackamole is not running?\n"
    )

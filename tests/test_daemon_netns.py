"""spreadpy daemons on a real segment: three network namespaces on one bridge (tests/netns.py).

Each host namespace runs one daemon, the way a seed cluster runs: one segment, addresses from
198.18.0.0/24, the daemons' own addresses only (no loopback tricks). The segment address picks
the ring transport (spreadpy/daemon.py, docs/daemon.md):
  198.18.0.255   the subnet's broadcast address: data to the whole segment is IP broadcast
  239.192.0.1    an IP multicast group (TTL 1), joined on each daemon's address; the testbed's
                 bridge floods multicast (mcast_snooping 0) and veth links carry the MULTICAST
                 flag by default, so nothing else is needed (the test checks the flag)
Clients connect over TCP from inside the namespaces (a socket made in a namespace stays there),
so client traffic, like ring traffic, never touches the host's own network. Every namespace and
process is removed at the end. Needs root (CI runs as root: there a missing capability fails).
"""

from __future__ import annotations

import glob
import ipaddress
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pyroute2 import netns as pyroute2_netns

from spreadpy.wire import MembershipCause, ServiceType
from tests import netns as nsbed
from tests.daemons import wait_until
from tests.netns import Node, Testbed
from tests.spclient import Closed, SpClient

PORT = 4803  # the namespaces are private: the default port cannot collide with anything
ST = ServiceType
JOIN, NETWORK = MembershipCause.JOIN, MembershipCause.NETWORK
_REASON = nsbed.unavailable_reason()


@pytest.fixture
def netns_required() -> None:
    """Skip without root, except in CI: CI runs as root, so there it is a failure."""
    if _REASON is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the namespace tests, but: {_REASON}")
    pytest.skip(_REASON)


pytestmark = pytest.mark.usefixtures("netns_required")


class NamespaceRing:
    """One spreadpy daemon per host namespace; killed by our own PIDs at the end."""

    def __init__(
        self, bed: Testbed, base: Path, segments: str, *, socket_paths: bool = True
    ) -> None:
        self.bed = bed
        self.base = base
        self.config = segments + "TimeoutProfile = fast\nEventTimeStamp\n"
        self.socket_paths = socket_paths  # False: the daemon picks its default path
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def __enter__(self) -> NamespaceRing:
        return self

    def __exit__(self, *exc: object) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
                process.wait(5)

    def socket_path(self, host: Node) -> str:
        return str(self.base / f"{host.role}.sock")

    def log(self, host: Node) -> str:
        return (self.base / f"{host.role}.log").read_text(errors="replace")

    def start(self, host: Node) -> None:
        config = self.base / f"{host.role}.conf"
        own = f'ClientSocketPath = "{self.socket_path(host)}"\n' if self.socket_paths else ""
        config.write_text(self.config + own)
        with (self.base / f"{host.role}.log").open("ab") as log:
            # `ip netns exec` enters the namespace and execs: the PID we hold is the daemon's.
            self.processes[host.role] = subprocess.Popen(
                [
                    "ip",
                    "netns",
                    "exec",
                    host.name,
                    sys.executable,
                    "-m",
                    "spreadpy",
                    "-c",
                    str(config),
                    "-n",
                    host.role,
                    "--state-dir",
                    str(self.base / "state"),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def stop(self, host: Node) -> None:
        """SIGTERM: a clean exit, which removes the daemon's socket files."""
        process = self.processes[host.role]
        process.terminate()
        process.wait(10)

    def kill(self, host: Node) -> None:
        process = self.processes[host.role]
        process.kill()
        process.wait(5)

    def status(self, host: Node) -> dict[str, Any]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(2.0)
            sock.connect(self.socket_path(host) + ".status")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        result: dict[str, Any] = json.loads(data)
        return result

    def wait_ring(self, hosts: tuple[Node, ...], timeout_s: float = 20.0) -> dict[str, Any]:
        """Wait until `hosts` are operational in one ring of exactly them; one's status."""
        expected = sorted(h.role for h in hosts)

        def one_ring() -> bool:
            try:
                states = [self.status(h) for h in hosts]
            except OSError:
                return False
            return (
                len({tuple(s["ring_id"]) for s in states}) == 1
                and all(s["state"] == "operational" for s in states)
                and all(sorted(s["members"]) == expected for s in states)
            )

        if not wait_until(one_ring, timeout_s):
            logs = "\n".join(f"--- {h.role}\n{self.log(h)[-3000:]}" for h in self.bed.hosts)
            raise AssertionError(f"no ring of {expected} within {timeout_s}s\n{logs}")
        return self.status(hosts[0])

    def client(self, host: Node, name: str) -> SpClient:
        """A client connected over TCP from inside `host`'s namespace to its daemon."""
        return self.client_via(host, str(host.address), name)

    def client_via(self, host: Node, address: str, name: str) -> SpClient:
        """A client in `host`'s namespace connected to `address` there."""
        sock = tcp_socket_in(host)
        try:
            sock.settimeout(10.0)
            sock.connect((address, PORT))
        except BaseException:
            sock.close()
            raise
        return SpClient.on_socket(sock, name)


def segment(address: str, hosts: tuple[Node, ...], port: int = PORT) -> str:
    """One Spread_Segment block: `address` and the hosts with their current addresses."""
    lines = "".join(f"\t{h.role}\t{h.address}\n" for h in hosts)
    return f"Spread_Segment {address}:{port} {{\n{lines}}}\n"


def tcp_socket_in(host: Node) -> socket.socket:
    """A TCP socket that belongs to `host`'s namespace (it stays there once made)."""
    pyroute2_netns.pushns(host.name)
    try:
        return socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    finally:
        pyroute2_netns.popns()


@pytest.fixture
def bed() -> Iterator[Testbed]:
    with Testbed(hosts=3, client=False) as testbed:
        yield testbed


@pytest.mark.parametrize(
    ("address", "mode"),
    [("198.18.0.255", "broadcast"), ("239.192.0.1", "multicast")],
)
def test_ring_on_a_segment_survives_kill_9(
    bed: Testbed, tmp_path: Path, address: str, mode: str
) -> None:
    h1, h2, h3 = bed.hosts
    for host in bed.hosts:  # multicast needs the flag; veth sets it, the test makes sure
        assert "MULTICAST" in host.run(["ip", "-o", "link", "show", "eth0"])
    with NamespaceRing(bed, tmp_path, segment(address, bed.hosts)) as ring:
        for host in bed.hosts:
            ring.start(host)
        status = ring.wait_ring(bed.hosts)
        assert status["transport"]["mode"] == mode
        assert status["transport"]["foreign_packets"] == 0
        a, b, c = ring.client(h1, "a"), ring.client(h2, "b"), ring.client(h3, "c")
        try:
            g = "seg"
            joined: list[SpClient] = []
            for member in (a, b, c):
                member.join(g)
                joined.append(member)
                views = [m.receive_membership(g, JOIN) for m in joined]
                assert all(v == views[0] for v in views)
            assert views[0].members == ("#a#h1", "#b#h2", "#c#h3")
            for sender, data in ((a, b"from h1"), (b, b"from h2"), (a, b"again h1")):
                sender.multicast(ST.AGREED_MESS, g, data)
                for member in (a, b, c):
                    got = member.receive_regular()
                    assert (got.sender, got.data) == (sender.private_group, data)
            b.multicast(ST.SAFE_MESS, "#a#h1", b"private, h2 to h1")
            assert a.receive_regular().data == b"private, h2 to h1"

            ring.kill(h3)
            with pytest.raises(Closed):
                c.receive()
            before = views[0].group_id
            after = []
            for member in (a, b):
                assert member.receive_transitional(g).group_id == before
                after.append(member.receive_membership(g, NETWORK))
            assert after[0] == after[1]
            assert after[0].members == ("#a#h1", "#b#h2")
            assert after[0].vs_sets == (("#a#h1", "#b#h2"),)
            assert sorted(ring.wait_ring((h1, h2))["members"]) == ["h1", "h2"]
            b.multicast(ST.AGREED_MESS, g, b"two left")
            for member in (a, b):
                assert member.receive_regular().data == b"two left"
        finally:
            for client in (a, b, c):
                client.close()


def test_clients_reach_the_daemon_through_any_local_address(bed: Testbed, tmp_path: Path) -> None:
    h1 = bed.hosts[0]
    with NamespaceRing(bed, tmp_path, segment("198.18.0.255", bed.hosts)) as ring:
        ring.start(h1)
        ring.wait_ring((h1,))
        client = ring.client_via(h1, "127.0.0.1", "lo")
        try:
            assert client.private_group == "#lo#h1"
        finally:
            client.close()


def test_a_ring_spans_two_segments(bed: Testbed, tmp_path: Path) -> None:
    h1, h2, h3 = bed.hosts
    # h3 moves to its own subnet on the same wire; both sides route to each other directly.
    h3.run(["ip", "addr", "flush", "dev", "eth0"])
    h3.run(["ip", "addr", "add", "198.18.1.3/24", "dev", "eth0"])
    h3.run(["ip", "route", "add", "198.18.0.0/24", "dev", "eth0"])
    for host in (h1, h2):
        host.run(["ip", "route", "add", "198.18.1.0/24", "dev", "eth0"])
    moved = Node(h3.name, h3.role, h3.ifname, ipaddress.IPv4Interface("198.18.1.3/24"), h3.mac)
    hosts = (h1, h2, moved)
    segments = segment("198.18.0.255", (h1, h2)) + segment("198.18.1.255", (moved,))
    with NamespaceRing(bed, tmp_path, segments) as ring:
        for host in hosts:
            ring.start(host)
        ring.wait_ring(hosts, timeout_s=6.0)


def test_default_unix_socket_is_tmp_port_on_every_host(bed: Testbed, tmp_path: Path) -> None:
    port = next(p for p in range(24811, 24999, 2) if not glob.glob(f"/tmp/{p}*"))
    h2 = bed.hosts[1]
    ring = NamespaceRing(
        bed, tmp_path, segment("198.18.0.255", bed.hosts, port), socket_paths=False
    )
    try:
        with ring:
            ring.start(h2)  # the second host of the file, alone on its machine
            assert wait_until(lambda: glob.glob(f"/tmp/{port}*.status"), 10.0), ring.log(h2)
            found = sorted(glob.glob(f"/tmp/{port}*"))
            ring.stop(h2)
        assert found == [f"/tmp/{port}", f"/tmp/{port}.status"]
    finally:
        for leftover in glob.glob(f"/tmp/{port}*"):  # only if the daemon could not remove them
            os.unlink(leftover)

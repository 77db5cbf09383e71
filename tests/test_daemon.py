"""The spreadpy daemon as real processes: real UDP rings, TCP and Unix clients, loopback only.

What runs (tests/daemons.py `Cluster`, TimeoutProfile = fast): three daemons on 127.0.0.1, .2
and .3 sharing one port, each with its own Unix socket and status socket; clients are
tests/spclient.py (a small blocking client over wire_session.ClientConnection). Covered:
  * group views across daemons: members in daemon order, the same group ids and vs sets;
  * every service level, total order of AGREED and SAFE traffic from several senders,
    SELF_DISCARD, private-group and multigroup sends, 100 KB and largest messages, oversize;
  * failures: kill -9 (TRANSITION then REG_MEMB|CAUSED_BY_NETWORK), restart (binds at once,
    takes over the stale Unix socket), a frozen daemon that comes back (a merge view with two
    vs sets), a second daemon with the same name or socket (refused at start);
  * garbage clients: each gets the original's answer or is dropped, is counted, and the ring
    traffic of the others goes on without a gap;
  * every captured client exchange of shared/spec/vectors/client replayed against a daemon
    named `localhost` (the capture's name), byte for byte except run-specific values;
  * ring authentication (RingAuthKeyFile), `spreadpy status`, `--metrics-port`;
  * conf/spreadpy.service and conf/default-spread.

No sleeps: every wait is a blocking receive with a timeout, or a poll of the status socket.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from spreadpy.errors import LocalProtocolError, WireError
from spreadpy.wire import (
    MAX_GROUP_NAME,
    MESSAGE_HEADER_LEN,
    Endian,
    MembershipCause,
    MembershipMessage,
    Multicast,
    ServiceType,
    TransitionalMessage,
    check_request_header,
    daemon_frame_len,
    decode_header,
    split_private_group,
)
from spreadpy.wire_session import ClientConnection
from tests.daemons import Cluster, DaemonProc, free_port, wait_until
from tests.spclient import (
    Closed,
    Rejected,
    SpClient,
    open_socket,
    read_exactly,
    read_until_closed,
)
from tests.vectors import (
    LIBSPREAD_SCENARIOS,
    RAW_PROBES,
    VECTOR_DIR,
    chunk_bytes,
    load_vector,
    needs_vectors,
)

REPO = Path(__file__).resolve().parents[1]
ST = ServiceType
JOIN, LEAVE = MembershipCause.JOIN, MembershipCause.LEAVE
DISCONNECT, NETWORK = MembershipCause.DISCONNECT, MembershipCause.NETWORK
SERVICES = (
    ST.UNRELIABLE_MESS,
    ST.RELIABLE_MESS,
    ST.FIFO_MESS,
    ST.CAUSAL_MESS,
    ST.AGREED_MESS,
    ST.SAFE_MESS,
)
MAX_MESSAGE = 142752  # data + 32 per group: spreadpy's default MaxMessageSize (spread-daemon.md §4)
REJECT_ILLEGAL_NAME, REJECT_VERSION = b"\xfb", b"\xf9"


# --------------------------------------------------------------------------------- helpers


class Clients:
    """Every client a test opens, closed at the end whatever happens.

    Closing waits until each daemon still running has let all its sessions go, so the next
    test can reuse private names, and a session a daemon failed to release is an error.
    """

    def __init__(self) -> None:
        self._stack = contextlib.ExitStack()
        self._daemons: dict[str, DaemonProc] = {}

    def connect(self, d: DaemonProc, name: str = "", *, unix: bool = False, **kw: Any) -> SpClient:
        self._daemons[d.name] = d
        address = d.unix_socket if unix else (d.address, d.port)
        return self._stack.enter_context(SpClient.connect(address, name, **kw))

    def raw(self, d: DaemonProc) -> socket.socket:
        self._daemons[d.name] = d
        return self._stack.enter_context(open_socket((d.address, d.port)))

    def close(self) -> None:
        self._stack.close()
        for d in self._daemons.values():
            if d.alive:
                assert wait_until(lambda d=d: d.status()["clients"] == 0, 10.0), d.status()


@pytest.fixture
def clients() -> Iterator[Clients]:
    opened = Clients()
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture(scope="module")
def ring3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One three-daemon ring shared by the tests that leave it as they found it."""
    with Cluster(tmp_path_factory.mktemp("ring3")) as cluster:
        cluster.wait_ring()
        yield cluster


@pytest.fixture
def fresh3(tmp_path: Path) -> Iterator[Cluster]:
    """A three-daemon ring of its own, for tests that kill, freeze or restart daemons."""
    with Cluster(tmp_path) as cluster:
        cluster.wait_ring()
        yield cluster


def join_all(
    group: str, members: list[SpClient], present: tuple[SpClient, ...] = ()
) -> MembershipMessage:
    """Join one by one; every member so far (`present` ones too) gets the same JOIN view."""
    joined = list(present)
    view: MembershipMessage | None = None
    for member in members:
        member.join(group)
        joined.append(member)
        views = [m.receive_membership(group, JOIN) for m in joined]
        view = views[0]
        assert all(v == view for v in views), views
        assert view.vs_sets == ((member.private_group,),)
        assert set(view.members) == {m.private_group for m in joined}
    assert view is not None
    return view


def counters(d: DaemonProc) -> dict[str, int]:
    result: dict[str, int] = d.status()["counters"]["clients"]
    return result


def header(
    sender: str, service: int, num_groups: int, data_len: int, hint: int = 0x80000080
) -> bytes:
    """A little-endian request header with any field values, legal or not."""
    return struct.pack(
        "<I32siIi",
        (service | 0x80000080) & 0xFFFFFFFF,
        sender.encode().ljust(32, b"\0"),
        num_groups,
        hint,
        data_len,
    )


def name_field(name: str | bytes) -> bytes:
    raw = name.encode() if isinstance(name, str) else name
    return raw.ljust(MAX_GROUP_NAME, b"\0")[:MAX_GROUP_NAME]


def spreadpy_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "spreadpy", *args]


def start_with(cluster: Cluster, name: str, *extra: str) -> DaemonProc:
    """Cluster.start with extra command-line flags; the cluster still kills it at the end."""
    d = cluster[name]
    with d.log_path.open("ab") as log:
        d.process = subprocess.Popen(
            spreadpy_command(
                "-c",
                str(cluster.config_for(name)),
                "-n",
                name,
                "--state-dir",
                str(cluster.state_dir),
                *extra,
            ),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    assert wait_until(lambda: os.path.exists(d.status_socket) or not d.alive, 10.0)
    assert d.alive, d.log()
    return d


# ------------------------------------------------------------------------ views and delivery


def test_clients_on_three_daemons_see_the_same_views(ring3: Cluster, clients: Clients) -> None:
    # Names chosen so that name order is not daemon order: members are listed by the daemons'
    # order in spread.conf, then by private group name (spread-daemon.md §6).
    zed = clients.connect(ring3["n1"], "zed")
    mid = clients.connect(ring3["n2"], "mid", unix=True)
    amy = clients.connect(ring3["n3"], "amy")
    bob = clients.connect(ring3["n1"], "bob", unix=True)
    g = "views"
    first = join_all(g, [zed, mid, amy])
    assert first.members == ("#zed#n1", "#mid#n2", "#amy#n3")
    view = join_all(g, [bob], present=(zed, mid, amy))
    assert view.members == ("#bob#n1", "#zed#n1", "#mid#n2", "#amy#n3")
    assert (view.group_id.proc_id, view.group_id.time) == (
        first.group_id.proc_id,
        first.group_id.time,
    )
    assert view.group_id.index == first.group_id.index + 1
    assert view.local_vs_set == 0

    amy.leave(g)
    assert amy.receive_self_leave(g)
    left = [c.receive_membership(g, LEAVE) for c in (bob, zed, mid)]
    assert left[0] == left[1] == left[2]
    assert left[0].members == ("#bob#n1", "#zed#n1", "#mid#n2")
    assert left[0].vs_sets == (("#amy#n3",),)
    assert left[0].group_id.index == view.group_id.index + 1

    mid.disconnect()  # KILL, then close
    gone = [c.receive_membership(g, DISCONNECT) for c in (bob, zed)]
    assert gone[0] == gone[1]
    assert gone[0].members == ("#bob#n1", "#zed#n1") and gone[0].vs_sets == (("#mid#n2",),)
    bob.close()  # EOF without KILL: the same disconnect (client-protocol.md §6.2)
    assert zed.receive_membership(g, DISCONNECT).vs_sets == (("#bob#n1",),)
    assert ring3["n3"].status()["groups"] == {g: ["#zed#n1"]}
    zed.assert_quiet("views")
    amy.assert_quiet("views")


def test_agreed_and_safe_traffic_from_many_senders_arrives_in_one_order(
    ring3: Cluster, clients: Clients
) -> None:
    senders = [
        clients.connect(ring3["n1"], "s1"),
        clients.connect(ring3["n2"], "s2", unix=True),
        clients.connect(ring3["n3"], "s3"),
        clients.connect(ring3["n1"], "s4"),
    ]
    g = "order"
    join_all(g, senders)
    per_sender = 40
    for i in range(per_sender):  # interleaved, without waiting for anything
        for s in senders:
            service = ST.SAFE_MESS if (i + len(s.private_group)) % 2 else ST.AGREED_MESS
            s.multicast(service, g, f"{s.private_group} {i}".encode(), mess_type=i)
    total = per_sender * len(senders)
    seen = [[s.receive_regular() for _ in range(total)] for s in senders]
    order = [(m.sender, m.data, m.service_type) for m in seen[0]]
    for got in seen[1:]:
        assert [(m.sender, m.data, m.service_type) for m in got] == order
    for s in senders:  # per-sender FIFO inside the total order
        mine = [m for m in seen[0] if m.sender == s.private_group]
        assert [m.mess_type for m in mine] == list(range(per_sender))
        assert [m.data for m in mine] == [
            f"{s.private_group} {i}".encode() for i in range(per_sender)
        ]
    assert {m.service_type for m in seen[0]} == {ST.AGREED_MESS, ST.SAFE_MESS}
    for s in senders:
        s.assert_quiet("order")


@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.name)
def test_every_service_level_reaches_every_member(
    ring3: Cluster, clients: Clients, service: ServiceType
) -> None:
    g = f"svc-{service.name}"
    a = clients.connect(ring3["n1"], "a")
    b = clients.connect(ring3["n2"], "b")
    c = clients.connect(ring3["n3"], "c", unix=True)
    join_all(g, [a, b, c])
    sent = [f"{service.name} {i}".encode() for i in range(10)]
    for data in sent:
        a.multicast(service, g, data, mess_type=7)
    for member in (a, b, c):
        got = [member.receive_regular() for _ in sent]
        assert {(m.service_type, m.sender, m.groups, m.mess_type) for m in got} == {
            (service, "#a#n1", (g,), 7)
        }
        if service in (ST.UNRELIABLE_MESS, ST.RELIABLE_MESS):  # reliable, no order promised
            assert sorted(m.data for m in got) == sorted(sent)
        else:  # FIFO and up are totally ordered (spread-daemon.md §3)
            assert [m.data for m in got] == sent
        member.assert_quiet(g)


def test_self_discard_skips_only_the_sender(ring3: Cluster, clients: Clients) -> None:
    a = clients.connect(ring3["n1"], "a")
    b = clients.connect(ring3["n1"], "b")  # same daemon as the sender
    c = clients.connect(ring3["n3"], "c")
    g = "discard"
    join_all(g, [a, b, c])
    a.multicast(ST.AGREED_MESS | ST.SELF_DISCARD, g, b"not for a")
    for member in (b, c):
        got = member.receive_regular()
        # SELF_DISCARD stays set in the copies the others get (client-protocol.md §5)
        assert (got.service_type, got.data) == (ST.AGREED_MESS | ST.SELF_DISCARD, b"not for a")
    a.assert_quiet(g)
    b.assert_quiet(g)


def test_a_daemon_keeps_the_idle_token_for_its_clients_answer(
    ring3: Cluster, clients: Clients
) -> None:
    # n3's client gets n1's message: on the idle ring, n3 keeps the next token a moment for
    # a possible answer (docs/ring.md). n2, with no receiver, passes it on as always.
    def holds() -> list[int]:
        return [ring3[n].status()["counters"]["ring"]["reply_holds"] for n in ("n2", "n3")]

    asker = clients.connect(ring3["n1"], "asker")
    answerer = clients.connect(ring3["n3"], "answerer")
    join_all("question", [answerer])
    before = holds()
    asker.multicast(ST.AGREED_MESS, "question", b"anyone?")
    assert answerer.receive_regular().data == b"anyone?"
    assert wait_until(lambda: holds()[1] > before[1], 5.0), (before, holds())
    assert holds()[0] == before[0]


def test_private_group_send_reaches_one_connection(ring3: Cluster, clients: Clients) -> None:
    a = clients.connect(ring3["n1"], "a")
    b = clients.connect(ring3["n2"], "b")
    twin = clients.connect(ring3["n3"], "b")  # same private name on another daemon
    bystander = clients.connect(ring3["n2"], "c", membership=False)
    for service in (ST.FIFO_MESS, ST.SAFE_MESS, ST.RELIABLE_MESS):
        a.multicast(service, "#b#n2", b"for b only", mess_type=3)
        got = b.receive_regular()
        assert (got.service_type, got.sender, got.groups, got.data) == (
            service,
            "#a#n1",
            ("#b#n2",),
            b"for b only",
        )
    a.multicast(ST.AGREED_MESS, "#ghost#n3", b"nobody has this name")  # ordered, then dropped
    a.multicast(ST.AGREED_MESS, "#b#n9", b"no such daemon")
    for quiet in (a, b, twin, bystander):
        quiet.assert_quiet("private")


def test_multigroup_send_is_delivered_once_per_connection(ring3: Cluster, clients: Clients) -> None:
    a = clients.connect(ring3["n1"], "a")
    b = clients.connect(ring3["n2"], "b")
    c = clients.connect(ring3["n3"], "c")
    d = clients.connect(ring3["n3"], "d", membership=False)  # member of nothing
    join_all("mg1", [a, b])
    join_all("mg2", [a, c])
    targets = ("mg1", "mg2", "#d#n3", "mg-empty")
    b.multicast(ST.AGREED_MESS, targets, b"to many", mess_type=9)
    for receiver in (a, b, c, d):
        got = receiver.receive_regular()
        assert (got.sender, got.groups, got.data, got.mess_type) == (
            "#b#n2",
            targets,
            b"to many",
            9,
        )
        receiver.assert_quiet("multigroup")


@pytest.mark.parametrize(
    ("size", "groups"),
    [(100_000, 1), (MAX_MESSAGE - 32, 1), (MAX_MESSAGE - 3 * 32, 3)],
    ids=["100KB", "largest-1-group", "largest-3-groups"],
)
def test_large_messages_cross_the_ring_whole(
    ring3: Cluster, clients: Clients, size: int, groups: int
) -> None:
    a = clients.connect(ring3["n1"], "a")
    b = clients.connect(ring3["n2"], "b")
    c = clients.connect(ring3["n3"], "c")
    names = [f"big{i}" for i in range(groups)]
    join_all(names[0], [a, b, c])
    payload = random.Random(size).randbytes(size)
    assert size + 32 * groups <= MAX_MESSAGE
    for service in (ST.AGREED_MESS, ST.RELIABLE_MESS):
        a.multicast(service, names, payload)
        for member in (a, b, c):
            got = member.receive_regular()
            assert (got.service_type, got.groups) == (service, tuple(names))
            assert hashlib.sha256(got.data).digest() == hashlib.sha256(payload).digest()


@pytest.mark.parametrize("size", [MAX_MESSAGE + 1, 144000 - 48 + 1])
def test_oversize_message_drops_the_sender(ring3: Cluster, clients: Clients, size: int) -> None:
    """Above MaxMessageSize the session is closed without a reply, as the 5.0.1 daemon does for
    requests above its own bound (144000 - 48; between the two it is undefined there: we saw
    it crash with an assertion at 143952, see docs/daemon.md)."""
    watcher = clients.connect(ring3["n2"], "w")
    sender = clients.connect(ring3["n1"], "big")
    g = f"over{size}"
    join_all(g, [watcher, sender])
    with pytest.raises(LocalProtocolError):  # our codec refuses to write it at all
        ClientConnection(max_body_len=MAX_MESSAGE).send(
            Multicast(service_type=ST.AGREED_MESS, groups=(g,), data=bytes(size - 32))
        )
    bad = counters(ring3["n1"])["bad"]
    data = bytes(size - 32)
    sender.send_raw(header(sender.private_group, ST.AGREED_MESS, 1, len(data)) + name_field(g))
    sender.send_raw(data[:1000])  # the daemon decides on the header alone
    assert read_until_closed(sender.sock) == b""
    left = watcher.receive_membership(g, DISCONNECT)
    assert left.vs_sets == (("#big#n1",),)
    assert counters(ring3["n1"])["bad"] == bad + 1
    watcher.assert_quiet(g)


# ----------------------------------------------------------------------------------- failures


def test_kill_9_gives_transition_then_network_view(fresh3: Cluster, clients: Clients) -> None:
    a = clients.connect(fresh3["n1"], "a")
    b = clients.connect(fresh3["n2"], "b", unix=True)
    c = clients.connect(fresh3["n3"], "c")
    g = "crash"
    before = join_all(g, [a, b, c])
    fresh3.kill("n3")
    with pytest.raises(Closed):  # its own daemon is gone: CONNECTION_CLOSED at once
        c.receive()
    after = []
    for member in (a, b):
        trans = member.receive_transitional(g)
        assert trans == TransitionalMessage(g, before.group_id)
        after.append(member.receive_membership(g, NETWORK))
    assert after[0] == after[1]
    assert after[0].members == ("#a#n1", "#b#n2")
    assert after[0].vs_sets == (("#a#n1", "#b#n2"),)
    assert after[0].group_id != before.group_id
    assert fresh3.wait_ring() == ["n1", "n2"]
    for service in (ST.AGREED_MESS, ST.SAFE_MESS, ST.FIFO_MESS):  # traffic goes on
        b.multicast(service, g, b"still here")
        for member in (a, b):
            assert member.receive_regular().data == b"still here"


def test_restart_after_kill_binds_at_once_and_takes_over_the_stale_socket(
    fresh3: Cluster, clients: Clients
) -> None:
    n3 = fresh3["n3"]
    old_ring = n3.status()["ring_id"]
    a = clients.connect(fresh3["n1"], "a")
    c = clients.connect(n3, "c", unix=True)
    g = "restart"
    join_all(g, [a, c])
    fresh3.kill("n3")
    assert a.receive_transitional(g)
    assert a.receive_membership(g, NETWORK).members == ("#a#n1",)
    assert os.path.exists(n3.unix_socket)  # left behind by kill -9
    assert os.path.exists(n3.status_socket)
    fresh3.start("n3")  # at once: no "address in use" from the UDP, TCP or Unix sockets
    assert fresh3.wait_ring() == ["n1", "n2", "n3"]
    assert n3.status()["ring_id"][0] > old_ring[0]  # ring seq kept in the state dir
    c2 = clients.connect(n3, "c", unix=True)  # the same name is free on the new daemon
    # The merge changed no group's membership: nothing for g (spread-daemon.md §6).
    a.assert_quiet(g)
    c2.join(g)
    views = [m.receive_membership(g, JOIN) for m in (a, c2)]
    assert views[0] == views[1]
    assert views[0].members == ("#a#n1", "#c#n3")
    assert n3.log().count("spreadpy n3 up") == 2


def test_restart_with_a_lost_state_file_rejoins(fresh3: Cluster) -> None:
    for _ in range(2):  # a few incarnations, so that its next one would be "older"
        fresh3.kill("n3")
        fresh3.wait_ring()
        fresh3.start("n3")
        fresh3.wait_ring()
    fresh3.kill("n3")
    fresh3.wait_ring()
    (fresh3.state_dir / "n3.ringseq").unlink()
    fresh3.start("n3")
    assert fresh3.wait_ring(timeout_s=5.0) == ["n1", "n2", "n3"]


def test_frozen_daemon_comes_back_as_a_merge_view(fresh3: Cluster, clients: Clients) -> None:
    """SIGSTOP n3 (a partition, for the others), then SIGCONT: the heal is a merge."""
    a = clients.connect(fresh3["n1"], "a")
    b = clients.connect(fresh3["n2"], "b")
    c = clients.connect(fresh3["n3"], "c")
    g = "freeze"
    join_all(g, [a, b, c])
    process = fresh3["n3"].process
    assert process is not None
    process.send_signal(signal.SIGSTOP)
    try:
        for member in (a, b):
            assert member.receive_transitional(g)
            assert member.receive_membership(g, NETWORK).members == ("#a#n1", "#b#n2")
    finally:
        process.send_signal(signal.SIGCONT)
    merged = [m.receive_membership(g, NETWORK) for m in (a, b)]
    assert merged[0] == merged[1]
    # c went through its own partition first: TRANSITION, maybe a view of itself, then the merge.
    while True:
        message = c.receive()
        assert isinstance(message, (TransitionalMessage, MembershipMessage)), message
        if isinstance(message, MembershipMessage) and len(message.members) == 3:
            break
    assert message.cause is NETWORK
    for view in (message, merged[0]):
        assert view.members == ("#a#n1", "#b#n2", "#c#n3")
        assert sorted(view.vs_sets) == [("#a#n1", "#b#n2"), ("#c#n3",)]
    assert message.group_id == merged[0].group_id
    assert merged[0].local_vs_set is not None and message.local_vs_set is not None
    assert merged[0].vs_sets[merged[0].local_vs_set] == ("#a#n1", "#b#n2")  # each its own set
    assert message.vs_sets[message.local_vs_set] == ("#c#n3",)
    assert fresh3.wait_ring() == ["n1", "n2", "n3"]
    c.multicast(ST.SAFE_MESS, g, b"back")
    for member in (a, b, c):
        assert member.receive_regular().data == b"back"


def test_second_daemon_with_the_same_name_fails_at_once(ring3: Cluster) -> None:
    n1 = ring3["n1"]
    done = subprocess.run(
        spreadpy_command(
            "-c", str(ring3.base / "n1.conf"), "-n", "n1", "--state-dir", str(ring3.state_dir)
        ),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 1
    output = done.stdout + done.stderr
    assert f"{n1.address}:{n1.port}" in output and "in use" in output, output
    assert "another daemon is running as n1" in output
    assert n1.status()["state"] == "operational"  # the running one did not notice


def test_a_unix_socket_served_by_a_running_daemon_is_not_stolen(
    ring3: Cluster, tmp_path: Path
) -> None:
    n1 = ring3["n1"]
    config = tmp_path / "other.conf"
    config.write_text(
        f"Spread_Segment 127.0.0.255:{free_port()} {{\n\tother\t127.0.0.1\n}}\n"
        f'ClientSocketPath = "{n1.unix_socket}"\nTimeoutProfile = fast\n'
    )
    done = subprocess.run(
        spreadpy_command("-c", str(config), "-n", "other", "--state-dir", str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 1
    assert f"{n1.unix_socket} is served by a running daemon" in done.stdout + done.stderr
    with SpClient.connect(n1.unix_socket, "still") as client:  # and it still is
        assert client.private_group == "#still#n1"


# ------------------------------------------------------------------------------ garbage


class Witness:
    """Two clients on n1 and n2 whose numbered traffic must survive whatever happens nearby."""

    def __init__(self, ring: Cluster, clients: Clients, group: str) -> None:
        self.a = clients.connect(ring["n1"], "wa")
        self.b = clients.connect(ring["n2"], "wb")
        self.group = group
        self.sent = 0
        join_all(group, [self.a, self.b])

    def check(self) -> None:
        """One more AGREED message; both must get exactly it next (nothing lost or doubled)."""
        self.sent += 1
        data = f"{self.group} #{self.sent}".encode()
        self.a.multicast(ST.AGREED_MESS, self.group, data)
        for member in (self.a, self.b):
            assert member.receive_regular().data == data


def handshake_reply(sock: socket.socket, data: bytes) -> bytes:
    sock.sendall(data)
    return read_until_closed(sock)


def established(clients: Clients, d: DaemonProc, name: str, group: str) -> SpClient:
    """A client that joined `group` (so others see it leave), its view read."""
    client = clients.connect(d, name)
    client.join(group)
    client.receive_membership(group, JOIN)
    return client


HANDSHAKE_GARBAGE = {
    # case: (bytes, the 5.0.1 daemon's answer) - session.c Sess_accept_continue
    "library-2.5": (b"\x02\x05\x01\x03abc", REJECT_VERSION),
    "name-length-200": (b"\x05\x00\x01\x01\xc8" + b"x" * 10, REJECT_ILLEGAL_NAME),
    "name-with-controls": (b"\x05\x00\x01\x01\x03a\x01b", REJECT_ILLEGAL_NAME),
    "name-with-hash": (b"\x05\x00\x01\x01\x03a#b", REJECT_ILLEGAL_NAME),
}


@pytest.mark.parametrize("case", sorted(HANDSHAKE_GARBAGE))
def test_handshake_garbage_gets_the_original_reject(
    ring3: Cluster, clients: Clients, case: str
) -> None:
    witness = Witness(ring3, clients, f"wh-{case}")
    n1 = ring3["n1"]
    before = counters(n1)
    data, expected = HANDSHAKE_GARBAGE[case]
    witness.check()
    assert handshake_reply(clients.raw(n1), data) == expected
    witness.check()
    after = counters(n1)
    assert after["bad"] + after["rejected"] == before["bad"] + before["rejected"] + 1


def test_handshake_with_a_high_version_byte_gets_reject_version(
    ring3: Cluster, clients: Clients
) -> None:
    rng = random.Random(7)
    garbage = [bytes([rng.randrange(0x80, 0x100)]) + rng.randbytes(199) for _ in range(4)]
    library_3_200 = b"\x03\xc8\x00\x01\x02ab"  # 3*10000 + (-56)*100 < 30100
    for data in [*garbage, library_3_200]:
        assert handshake_reply(clients.raw(ring3["n1"]), data) == REJECT_VERSION, data[:6].hex()


def test_random_bytes_after_the_handshake_drop_the_client(ring3: Cluster, clients: Clients) -> None:
    witness = Witness(ring3, clients, "w-random")
    n1 = ring3["n1"]
    victim = established(clients, n1, "rnd", "w-random-g")
    watcher = established(clients, ring3["n3"], "watch", "w-random-g")
    assert victim.receive_membership("w-random-g", JOIN)
    garbage = random.Random(11).randbytes(4096)
    with pytest.raises(WireError):  # precondition: not a request header by chance
        check_request_header(decode_header(garbage[:MESSAGE_HEADER_LEN]))
    bad = counters(n1)["bad"]
    witness.check()
    victim.send_raw(garbage)
    assert read_until_closed(victim.sock) == b""  # killed with no reply (§6.3)
    assert watcher.receive_membership("w-random-g", DISCONNECT).vs_sets == (("#rnd#n1",),)
    witness.check()
    assert counters(n1)["bad"] == bad + 1


BAD_REQUESTS: dict[str, Callable[[str], bytes]] = {
    # The 5.0.1 daemon kills the session without a reply for each of these (§6.3).
    "data-len-2G": lambda me: header(me, ST.AGREED_MESS, 1, 0x7FFFFFFF) + name_field("g"),
    "num-groups-2G": lambda me: header(me, ST.AGREED_MESS, 0x7FFFFFFF, 0),
    "num-groups-101": lambda me: header(me, ST.AGREED_MESS, 101, 0),
    "negative-data-len": lambda me: header(me, ST.AGREED_MESS, 1, -1) + name_field("g"),
    "two-services": lambda me: header(me, ST.AGREED_MESS | ST.SAFE_MESS, 1, 0) + name_field("g"),
    "no-service": lambda me: header(me, 0, 1, 0) + name_field("g"),
    "groups-mess": lambda me: header(me, ST.GROUPS_MESS, 0, 0),
    "bad-hint": lambda me: header(me, ST.AGREED_MESS, 1, 0, hint=0x7F000000) + name_field("g"),
    "wrong-sender": lambda me: header("#other#n1", ST.AGREED_MESS, 1, 0) + name_field("g"),
    # These the 5.0.1 daemon accepts (we tried: it joins a group named "bad name", or "");
    # libspread never sends them (SP_join checks names), so spreadpy drops the client.
    "join-name-with-space": lambda me: header(me, ST.JOIN_MESS, 1, 0) + name_field("bad name"),
    "join-empty-name": lambda me: header(me, ST.JOIN_MESS, 1, 0) + name_field(""),
    "join-name-without-nul": lambda me: header(me, ST.JOIN_MESS, 1, 0) + b"x" * 32,
    "join-two-groups": lambda me: header(me, ST.JOIN_MESS, 2, 0) + name_field("a") * 2,
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_requests_drop_the_client_and_are_counted(
    ring3: Cluster, clients: Clients, case: str
) -> None:
    g = f"bad-{case}"
    witness = Witness(ring3, clients, f"w-{case}")
    n1 = ring3["n1"]
    victim = established(clients, n1, "victim", g)
    watcher = established(clients, ring3["n2"], "watch", g)
    victim.receive_membership(g, JOIN)
    bad = counters(n1)["bad"]
    witness.check()
    victim.send_raw(BAD_REQUESTS[case](victim.private_group))
    assert read_until_closed(victim.sock) == b""
    assert watcher.receive_membership(g, DISCONNECT).vs_sets == (("#victim#n1",),)
    witness.check()
    assert counters(n1)["bad"] == bad + 1
    assert ring3["n2"].status()["groups"].get(g) == ["#watch#n2"]


def test_duplicate_private_name_is_rejected_not_unique(ring3: Cluster, clients: Clients) -> None:
    witness = Witness(ring3, clients, "w-dup")
    n1 = ring3["n1"]
    first = clients.connect(n1, "twice")
    rejected = counters(n1)["rejected"]
    witness.check()
    with pytest.raises(Rejected) as caught:
        clients.connect(n1, "twice", unix=True)
    assert caught.value.code == -6  # REJECT_NOT_UNIQUE, one byte, then close
    witness.check()
    assert counters(n1)["rejected"] == rejected + 1
    first.assert_quiet("dup")


def test_truncated_handshake_is_dropped_and_counted(ring3: Cluster, clients: Clients) -> None:
    n1 = ring3["n1"]
    before = counters(n1)
    # Version and flags only: the 5.0.1 daemon closes at once without a reply; spreadpy waits
    # up to its 1 s handshake deadline for the rest (segmentation tolerance), then closes.
    assert handshake_reply(clients.raw(n1), b"\x05\x00\x01") == b""
    after = counters(n1)
    assert sum(after.values()) > sum(before.values())


def test_truncated_header_then_eof_is_dropped_and_counted(ring3: Cluster, clients: Clients) -> None:
    g = "truncated"
    n1 = ring3["n1"]
    victim = established(clients, n1, "cut", g)
    watcher = established(clients, ring3["n2"], "watch", g)
    victim.receive_membership(g, JOIN)
    bad = counters(n1)["bad"]
    victim.send_raw(header(victim.private_group, ST.AGREED_MESS, 1, 5)[:20])
    victim.sock.shutdown(socket.SHUT_WR)
    assert read_until_closed(victim.sock) == b""
    assert watcher.receive_membership(g, DISCONNECT).vs_sets == (("#cut#n1",),)
    assert counters(n1)["bad"] == bad + 1


def test_half_a_header_waits_for_the_rest(ring3: Cluster, clients: Clients) -> None:
    """TCP may split a request anywhere: a partial header is kept, not treated as garbage."""
    a = clients.connect(ring3["n1"], "slow")
    b = clients.connect(ring3["n2"], "fast")
    g = "split"
    join_all(g, [a, b])
    frame = a.conn.multicast(ST.AGREED_MESS, g, b"in pieces")
    for cut in (1, 20, 47, 48, 60, len(frame) - 1):
        a.send_raw(frame[:cut])
        b.assert_quiet(f"split{cut}")  # nothing delivered from half a request
        a.send_raw(frame[cut:])
        assert a.receive_regular().data == b.receive_regular().data == b"in pieces"


# ----------------------------------------------------------------------- captured vectors


@pytest.fixture(scope="module")
def localhost(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProc]:
    """One daemon named as in the captures, so private groups read `#alice#localhost`."""
    with Cluster(tmp_path_factory.mktemp("vectors"), names=("localhost",)) as cluster:
        cluster.wait_ring()
        yield cluster["localhost"]


def read_unit(sock: socket.socket, unit: str) -> bytes:
    """One daemon unit, whatever its run-specific length (names and bodies)."""
    match unit:
        case "auth method list":
            head = read_exactly(sock, 1)
            return head + read_exactly(sock, head[0])
        case "connect accepted":
            head = read_exactly(sock, 5)
            return head + read_exactly(sock, head[4])
        case "connect rejected":
            return read_exactly(sock, 1)
    head = read_exactly(sock, MESSAGE_HEADER_LEN)
    return head + read_exactly(sock, daemon_frame_len(decode_header(head)) - MESSAGE_HEADER_LEN)


class Structural:
    """Run-specific values, compared by shape: group ids and daemon-generated names.

    A group id's (proc_id, time) names the daemon ring (ours: leader and ring seq; 5.0.1: its
    VirtualID and the wall clock), so it must only be the same within a run; its index counts
    changes, so ours must move by the captured steps (spreadpy keeps counting when a group is
    emptied and re-created, where 5.0.1 restarts at 1: docs/daemon.md).
    """

    def __init__(self) -> None:
        self.ring: dict[str, bytes] = {}  # "ours"/"captured" -> the id's (proc_id, time) bytes
        self.index_base: dict[str, int] = {}  # "ours <group>"/"captured <group>" -> first index
        self.names: dict[str, str] = {}  # captured generated private group -> ours

    def membership_gid(self, frame: bytes, side: str) -> tuple[bytes, int]:
        """`frame` with its group id zeroed, and the id's index counted from the first one."""
        h = decode_header(frame)
        at = MESSAGE_HEADER_LEN + MAX_GROUP_NAME * h.num_groups
        ring, index = frame[at : at + 8], struct.unpack_from("<i", frame, at + 8)[0]
        assert self.ring.setdefault(side, ring) == ring, "one daemon ring per scenario"
        base = self.index_base.setdefault(f"{side} {h.sender}", index)
        return frame[:at] + bytes(12) + frame[at + 12 :], index - base

    def compare(self, ours: bytes, captured: bytes, unit: str) -> None:
        if unit == "connect accepted":
            assert ours[:4] == captured[:4]
            mine, theirs = ours[5:].decode(), captured[5:].decode()
            if mine != theirs:  # a name the daemon invented (random_name.json)
                for group in (mine, theirs):
                    split = split_private_group(group)
                    assert split is not None and re.fullmatch(r"r\d{1,4}-\d+", split[0]), group
                    assert len(split[0]) <= 9 and split[1] == "localhost"
                self.names[theirs] = mine
            return
        is_membership = len(ours) >= 48 and int.from_bytes(ours[:4], "little") & 0x1000
        if is_membership:
            ours_zeroed, ours_step = self.membership_gid(ours, "ours")
            theirs_zeroed, their_step = self.membership_gid(captured, "captured")
            assert ours_step == their_step, f"group id index moved {ours_step}, not {their_step}"
            ours, captured = ours_zeroed, theirs_zeroed
        assert ours.hex() == captured.hex()

    def client_bytes(self, data: bytes) -> bytes:
        """Client bytes with a generated private group replaced by ours (sender and slot)."""
        for theirs, mine in self.names.items():
            if data[4:36].split(b"\0")[0] == theirs.encode():
                data = data[:4] + name_field(mine) + data[36:]
                if data[48:80].split(b"\0")[0] == theirs.encode():
                    data = data[:48] + name_field(mine) + data[80:]
        return data


def replay_libspread(name: str, d: DaemonProc) -> None:
    shape = Structural()
    socks: dict[int, socket.socket] = {}
    try:
        for chunk in load_vector(name)["chunks"]:
            conn, unit = chunk["conn"], chunk["unit"]
            if conn not in socks:
                socks[conn] = open_socket((d.address, d.port))
            sock = socks[conn]
            data = chunk_bytes(chunk)
            where = f"{name} seq {chunk['seq']} ({unit})"
            if chunk["dir"] == "client->daemon":
                if data:
                    sock.sendall(shape.client_bytes(data))
                else:
                    sock.shutdown(socket.SHUT_WR)
            elif data:
                try:
                    shape.compare(read_unit(sock, unit), data, unit)
                except AssertionError as exc:
                    raise AssertionError(f"{where}: {exc}") from None
            else:  # the daemon closed: nothing more may come first
                assert read_until_closed(sock) == b"", where
    finally:
        for sock in socks.values():
            sock.close()


@needs_vectors
def test_every_vector_file_is_replayed() -> None:
    assert {p.stem for p in VECTOR_DIR.glob("*.json")} == {*LIBSPREAD_SCENARIOS, *RAW_PROBES}


@needs_vectors
@pytest.mark.parametrize("name", LIBSPREAD_SCENARIOS)
def test_libspread_capture_replayed_against_a_daemon(localhost: DaemonProc, name: str) -> None:
    replay_libspread(name, localhost)
    with SpClient.connect((localhost.address, localhost.port), "after") as client:
        client.assert_quiet(name)  # the daemon is fine, and every name was released
    assert localhost.status()["clients"] == 0


def probe_cases(name: str) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = {}
    for chunk in load_vector(name)["chunks"]:
        grouped.setdefault(chunk["case"], []).append(chunk)
    return grouped


@needs_vectors
@pytest.mark.parametrize("probe", ["connect_errors", "legacy_handshakes"])
def test_handshake_probes_replayed_against_a_daemon(localhost: DaemonProc, probe: str) -> None:
    for case, chunks in probe_cases(probe).items():
        with open_socket((localhost.address, localhost.port)) as sock:
            for chunk in chunks:
                data = bytes.fromhex(chunk["hex"])
                if chunk["dir"] == "client->daemon":
                    sock.sendall(data)
                    continue
                # short_auth_choice: 5.0.1 answers at once (single read); spreadpy waits for the
                # rest until its 1 s handshake deadline, then gives the same answer.
                assert read_exactly(sock, len(data)).hex() == data.hex(), case
                if "closed" in chunk["note"] or "reset" in chunk["note"]:
                    assert read_until_closed(sock) == b"", case
            with contextlib.suppress(OSError):  # not after a reset
                sock.shutdown(socket.SHUT_WR)
            assert read_until_closed(sock) == b"", case


@needs_vectors
def test_invalid_request_probes_replayed_against_a_daemon(localhost: DaemonProc) -> None:
    for case, (request, reply) in probe_cases("invalid_requests").items():
        data = bytes.fromhex(request["hex"])
        split = split_private_group(decode_header(data).sender)
        assert split is not None
        name = "ivan" if case == "invalid_header_wrong_sender" else split[0]
        with SpClient.connect((localhost.address, localhost.port), name) as client:
            client.send_raw(data)
            assert read_until_closed(client.sock) == bytes.fromhex(reply["hex"]) == b"", case


@needs_vectors
def test_big_endian_client_probe_replayed_against_a_daemon(
    localhost: DaemonProc, clients: Clients
) -> None:
    vector = load_vector("big_endian_client")
    alice = clients.connect(localhost, "alice")
    alice.join("test")
    alice.receive_membership("test", JOIN)
    bige = clients.connect(localhost, "bige", endian=Endian.BIG)
    shape = Structural()
    for chunk in (c for c in vector["chunks"] if c["dir"] != "note"):
        data = bytes.fromhex(chunk["hex"])
        if chunk["dir"] == "client->daemon":
            bige.send_raw(data)
        else:
            shape.compare(read_unit(bige.sock, ""), data, "")
    joined = alice.receive_membership("test", JOIN)
    assert joined.members == ("#alice#localhost", "#bige#localhost")
    got = alice.receive_regular()  # libspread reported: mess_type=258 endian=1, "BEmsg"
    assert (got.sender, got.mess_type, got.endian, got.data) == (
        "#bige#localhost",
        258,
        Endian.BIG,
        b"BEmsg",
    )
    view = "\n".join(vector["little_endian_receiver_api_view"])
    assert "mess_type=258 endian=1" in view and b"BEmsg".hex() in view


# ------------------------------------------------------------------------ ring authentication


def test_ring_auth_key_keeps_a_wrong_key_out(tmp_path: Path) -> None:
    # Each daemon's config names its own key file: the cluster writes one config per daemon,
    # replacing `<base>/SOCKET` by that daemon's socket path, which we reuse as a key prefix.
    cluster = Cluster(
        tmp_path,
        names=("n1", "n2", "n3", "n4"),
        extra_config=f'TimeoutProfile = fast\nRingAuthKeyFile = "{tmp_path}/SOCKET.key"\n',
    )
    good = b"correct horse battery staple 0123456789\n"
    for name in ("n1", "n2", "n3"):
        Path(cluster[name].unix_socket + ".key").write_bytes(good)
    Path(cluster["n4"].unix_socket + ".key").write_bytes(b"wrong key, but long enough\n")
    try:
        for name in ("n1", "n2", "n3"):
            cluster.start(name)
        assert cluster.wait_ring() == ["n1", "n2", "n3"]
        ring_id = cluster["n1"].status()["ring_id"]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as forger:
            forger.bind(("127.0.0.4", 0))  # n4's configured address: passes the source check
            forger.sendto(b"\x00" * 40, ("127.0.0.1", cluster.port))
            forger.sendto(b"no hmac here", ("127.0.0.1", cluster.port + 1))
        n1 = cluster["n1"]
        assert wait_until(lambda: n1.status()["transport"]["bad_packets"] >= 2, 10.0)
        cluster.start("n4")  # the wrong key: its packets are bad everywhere, and theirs at n4
        n4 = cluster["n4"]
        assert wait_until(
            lambda: (
                all(cluster[n].status()["transport"]["bad_packets"] > 2 for n in ("n1", "n2"))
                and n4.status()["transport"]["bad_packets"] > 0
            ),
            10.0,
        )
        assert n4.status()["members"] == ["n4"]
        for name in ("n1", "n2", "n3"):
            status = cluster[name].status()
            assert (status["members"], status["ring_id"]) == (["n1", "n2", "n3"], ring_id)
            assert status["transport"]["mode"] == "unicast"
    finally:
        cluster.stop_all()


# ------------------------------------------------------------------------ status and metrics


def test_spreadpy_status_text_and_json(ring3: Cluster, clients: Clients) -> None:
    n2 = ring3["n2"]
    member = clients.connect(n2, "st")
    join_all("status-group", [member])
    text = subprocess.run(
        spreadpy_command("status", "--socket", n2.status_socket),
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    assert text.startswith("daemon n2: operational, ring ")
    assert "members: n1 n2 n3" in text
    assert "status-group: #st#n2" in text
    by_config = subprocess.run(
        spreadpy_command("status", "--json", "-c", str(ring3.base / "n2.conf"), "-n", "n2"),
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    status = json.loads(by_config)
    assert status["daemon"] == "n2" and status["members"] == ["n1", "n2", "n3"]
    assert status["groups"]["status-group"] == ["#st#n2"]
    assert status["clients"] >= 1
    assert status["unix_socket"] == n2.unix_socket
    assert set(status["counters"]) >= {"ring", "groups", "clients"}
    assert status["transport"]["mode"] == "unicast"
    missing = subprocess.run(
        spreadpy_command("status", "--socket", str(ring3.base / "nothing.status")),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert missing.returncode == 1 and "no daemon answers" in missing.stderr


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            samples[key] = float(value)
    return samples


def test_metrics_port_serves_prometheus_counters(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, names=("m1",))
    port = free_port()
    try:
        d = start_with(cluster, "m1", "--metrics-port", str(port))
        cluster.wait_ring()
        before = scrape(port)
        assert before["spreadpy_ring_members"] == 1
        assert before["spreadpy_clients"] == 0
        with SpClient.connect((d.address, d.port), "metric") as client:
            client.join("m")
            client.receive_membership("m", JOIN)
            client.multicast(ST.AGREED_MESS, "m", b"counted")
            client.receive_regular()
            during = scrape(port)
            assert during["spreadpy_clients"] == 1
        status = d.status()["counters"]
        assert (
            during["spreadpy_clients_accepted_total"]
            == before["spreadpy_clients_accepted_total"] + 1
            == status["clients"]["accepted"]
        )
        assert during["spreadpy_clients_messages_total"] >= 2
        assert during["spreadpy_ring_delivered_total"] > before["spreadpy_ring_delivered_total"]
        for section, values in status.items():
            for key in values:
                assert f"spreadpy_{section}_{key}_total" in during
    finally:
        cluster.stop_all()


# --------------------------------------------------------------------------- service files


def test_systemd_unit_parses(tmp_path: Path) -> None:
    unit = REPO / "conf" / "spreadpy.service"
    text = unit.read_text()
    sections = re.findall(r"^\[(\w+)\]$", text, re.MULTILINE)
    assert sections == ["Unit", "Service", "Install"]
    keys = dict(re.findall(r"^(\w+)=(.*)$", text, re.MULTILINE))
    assert keys["EnvironmentFile"] == "-/etc/default/spread"
    assert "$OPTIONS" in keys["ExecStart"] and "spreadpy" in keys["ExecStart"]
    assert "ENABLED" in keys["ExecCondition"]
    assert keys["WantedBy"] == "multi-user.target"
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        return  # no systemd here: the key checks above are what we can do
    copy = tmp_path / "spreadpy.service"
    copy.write_text(text)
    done = subprocess.run(
        [analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60, check=False
    )
    problems = [  # spreadpy need not be installed where the tests run
        line
        for line in done.stderr.splitlines()
        if "spreadpy.service" in line and "Command spreadpy is not executable" not in line
    ]
    assert not problems, done.stderr


@pytest.mark.parametrize("enabled", ["0", "1"])
def test_default_file_is_sourceable_and_gates_the_start(tmp_path: Path, enabled: str) -> None:
    default = (REPO / "conf" / "default-spread").read_text()
    copy = tmp_path / "spread"
    copy.write_text(re.sub(r"^ENABLED=.*$", f"ENABLED={enabled}", default, flags=re.MULTILINE))
    shown = subprocess.run(
        ["sh", "-c", '. "$1" && printf "%s|%s" "$ENABLED" "$OPTIONS"', "sh", str(copy)],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    ).stdout
    got_enabled, options = shown.split("|")
    assert got_enabled == enabled
    assert "-n " in options and "-c /etc/spread/spread.conf" in options
    assert re.search(r"^ENABLED=0$", default, re.MULTILINE)  # shipped disabled
    # The unit's ExecCondition, run by hand with this file's values in the environment.
    unit = (REPO / "conf" / "spreadpy.service").read_text()
    condition = re.search(r"^ExecCondition=(.*)$", unit, re.MULTILINE)
    assert condition is not None
    argv = condition[1].split(" ", 2)
    assert argv[:2] == ["/bin/sh", "-c"]
    script = argv[2].strip("'").replace("$$", "$")  # systemd's escape for a literal $
    result = subprocess.run(
        ["sh", "-c", script],
        env={"ENABLED": got_enabled, "PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        timeout=10,
        check=False,
    )
    assert (result.returncode == 0) == (enabled == "1")

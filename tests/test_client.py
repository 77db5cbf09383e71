"""The client libraries (spreadpy.client, spreadpy.aioclient) against real daemons and captures.

* real daemons (tests/daemons.py, loopback): every service type, agreed order, a 100 KB
  message, multigroup and private-group sends, SELF_DISCARD, membership causes and group ids,
  errors with their Spread codes, poll, timeouts, threads, the loss of a daemon;
* the captured libspread sessions (shared/spec/vectors/client), replayed through a socketpair:
  the Mailbox must write libspread's bytes and report what libspread reported;
* the sans-I/O core alone: segmentation never matters, garbage raises only our errors;
* asyncio: 200 mailboxes in one process on one daemon, each message once to each member.
"""

from __future__ import annotations

import asyncio
import random
import re
import select
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spreadpy import aioclient, client
from spreadpy.client import (
    AGREED_MESS,
    SELF_DISCARD,
    DaemonAddress,
    Mailbox,
    MailboxCore,
    MembershipCause,
    MembershipMessage,
    Message,
    RegularMessage,
    SelfLeave,
    ServiceType,
    SpreadClientError,
    TransitionalMessage,
)
from spreadpy.wire import (
    Accept,
    AuthList,
    Endian,
    GroupId,
    Join,
    Kill,
    Leave,
    Multicast,
    SpError,
    decode_connect_request,
    decode_request,
    encode_accept,
    encode_auth_list,
    encode_daemon_message,
)
from tests.daemons import Cluster, free_port
from tests.vectors import VECTOR_DIR, chunk_bytes, load_vector, without_kill_junk

WAIT_S = 10.0  # a guard against hangs, never a timing assertion
SERVICES = (
    client.UNRELIABLE_MESS,
    client.RELIABLE_MESS,
    client.FIFO_MESS,
    client.CAUSAL_MESS,
    client.AGREED_MESS,
    client.SAFE_MESS,
)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with Cluster(tmp_path_factory.mktemp("client"), names=("n1", "n2", "n3")) as running:
        running.wait_ring()
        yield running


def unix(cluster: Cluster, node: str) -> str:
    return cluster[node].unix_socket


def tcp(cluster: Cluster, node: str) -> str:
    return f"{cluster.port}@{cluster[node].address}"


def receive(mb: Mailbox) -> Message:
    return mb.receive(timeout=WAIT_S)


def next_regular(mb: Mailbox) -> RegularMessage:
    """The next data message, skipping membership notices."""
    while True:
        message = receive(mb)
        if isinstance(message, RegularMessage):
            return message


def join_all(group: str, *mailboxes: Mailbox) -> MembershipMessage:
    """Each joins `group`; returns once every one has seen the view with all of them."""
    for mb in mailboxes:
        mb.join(group)
    view = None
    for mb in mailboxes:
        while True:
            message = receive(mb)
            if isinstance(message, MembershipMessage) and len(message.members) == len(mailboxes):
                view = message
                break
    assert view is not None
    return view


# --- daemon names ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (None, DaemonAddress(unix_path="/tmp/4803", port=4803)),
        ("", DaemonAddress(unix_path="/tmp/4803", port=4803)),
        ("4803", DaemonAddress(unix_path="/tmp/4803", port=4803)),
        ("24803", DaemonAddress(unix_path="/tmp/24803", port=24803)),
        ("4803@127.0.0.2", DaemonAddress(host="127.0.0.2", port=4803)),
        ("4803@::1", DaemonAddress(host="::1", port=4803)),
        ("4803@[::1]", DaemonAddress(host="::1", port=4803)),
        ("/run/spread/n1.sock", DaemonAddress(unix_path="/run/spread/n1.sock")),
        ("./n1.sock", DaemonAddress(unix_path="./n1.sock")),
    ],
)
def test_daemon_names_follow_libspread(spec: str | None, expected: DaemonAddress) -> None:
    assert client.parse_daemon_address(spec) == expected


@pytest.mark.parametrize("spec", ["localhost", "4803@", "0", "65536", "48o3@host", "-1", "@h"])
def test_illegal_daemon_names(spec: str) -> None:
    with pytest.raises(client.IllegalSpreadError) as caught:
        client.parse_daemon_address(spec)
    assert caught.value.code == -1  # ILLEGAL_SPREAD


def test_errors_carry_codes_and_libspread_texts() -> None:
    for code in SpError:
        error = client.error_for(code)
        assert error.code == code
        assert str(error).startswith(f"({int(code)}) ")
        assert str(error) == f"({int(code)}) {client.strerror(code)}"
    assert isinstance(client.error_for(-6), client.RejectNotUniqueError)
    assert isinstance(client.error_for(-6), client.ConnectionRejectedError)
    assert str(client.error_for(-6, "x")) == "(-6) Connection rejected, name not unique. (x)"
    assert client.error_for(-99).code == -99
    assert client.strerror(-99) == "Unrecognized error."


# --- real daemons ------------------------------------------------------------------------------


def test_every_service_type_reaches_every_member(cluster: Cluster) -> None:
    with (
        client.connect(unix(cluster, "n1"), "svc_a") as alice,
        client.connect(tcp(cluster, "n2"), "svc_b") as bob,
    ):
        join_all("services", alice, bob)
        for mess_type, service in enumerate(SERVICES):
            data = f"via {service.name}".encode()
            assert alice.multicast(service, "services", data, mess_type=mess_type) == len(data)
            for mb in (alice, bob):
                got = next_regular(mb)
                assert got.service_type == service
                assert (got.sender, got.groups) == (alice.private_group, ("services",))
                assert (got.mess_type, got.data) == (mess_type, data)
                assert not mb.endian_mismatch(got)


def test_agreed_and_safe_messages_arrive_in_one_order_everywhere(cluster: Cluster) -> None:
    with (
        client.connect(unix(cluster, "n1"), "ord_a") as a,
        client.connect(unix(cluster, "n2"), "ord_b") as b,
        client.connect(unix(cluster, "n3"), "ord_c") as c,
    ):
        join_all("order", a, b, c)
        for i in range(30):
            service = client.SAFE_MESS if i % 3 == 0 else client.AGREED_MESS
            a.multicast(service, "order", b"a%d" % i)
            c.multicast(service, "order", b"c%d" % i)
        seen = [[next_regular(mb).data for _ in range(60)] for mb in (a, b, c)]
        assert seen[0] == seen[1] == seen[2]
        for sender in (b"a", b"c"):  # and each sender's own order is kept
            mine = [d for d in seen[0] if d.startswith(sender)]
            assert mine == [sender + b"%d" % i for i in range(30)]


def test_a_100_kb_message_crosses_the_ring_whole(cluster: Cluster) -> None:
    payload = random.Random(4803).randbytes(100_000)
    with (
        client.connect(unix(cluster, "n1"), "big_a") as alice,
        client.connect(unix(cluster, "n3"), "big_b") as bob,
    ):
        join_all("big", alice, bob)
        alice.multicast(AGREED_MESS, "big", payload, mess_type=5)
        alice.multicast(AGREED_MESS, "big", b"after")
        for mb in (bob, alice):
            got = next_regular(mb)
            assert (len(got.data), got.data, got.mess_type) == (100_000, payload, 5)
            assert next_regular(mb).data == b"after"


def test_multigroup_send_is_delivered_once_per_member(cluster: Cluster) -> None:
    with (
        client.connect(unix(cluster, "n1"), "mg_a") as alice,
        client.connect(unix(cluster, "n2"), "mg_b") as bob,
        client.connect(unix(cluster, "n3"), "mg_c") as carol,
    ):
        join_all("mg_one", alice)
        join_all("mg_two", alice, bob)
        carol.multicast(client.FIFO_MESS, ["mg_one", "mg_two", "mg_nobody"], b"both", 9)
        carol.multicast(client.FIFO_MESS, "mg_two", b"second")
        for mb in (alice, bob):
            got = next_regular(mb)
            assert (got.data, got.groups) == (b"both", ("mg_one", "mg_two", "mg_nobody"))
            assert next_regular(mb).data == b"second"  # no second copy of the first
        assert carol.poll() == 0  # not a member of any of them: nothing for carol


def test_a_private_group_reaches_one_mailbox(cluster: Cluster) -> None:
    with (
        client.connect(unix(cluster, "n1"), "pg_a") as alice,
        client.connect(tcp(cluster, "n3"), "pg_b") as bob,
    ):
        assert bob.private_group == "#pg_b#n3"
        join_all("pg_group", alice, bob)
        alice.multicast(client.RELIABLE_MESS, bob.private_group, b"just you", mess_type=7)
        alice.multicast(AGREED_MESS, "pg_group", b"everyone")
        got = next_regular(bob)
        assert (got.groups, got.data, got.mess_type) == ((bob.private_group,), b"just you", 7)
        assert next_regular(bob).data == b"everyone"
        assert next_regular(alice).data == b"everyone"


def test_self_discard_skips_only_the_sender(cluster: Cluster) -> None:
    with (
        client.connect(unix(cluster, "n1"), "sd_a") as alice,
        client.connect(unix(cluster, "n2"), "sd_b") as bob,
    ):
        join_all("sd", alice, bob)
        alice.multicast(AGREED_MESS, "sd", b"not for me", self_discard=True)
        alice.multicast(AGREED_MESS | SELF_DISCARD, "sd", b"nor this")
        alice.multicast(AGREED_MESS, "sd", b"for all")
        first, second = next_regular(bob), next_regular(bob)
        assert (first.data, second.data) == (b"not for me", b"nor this")
        assert first.service_type == AGREED_MESS | SELF_DISCARD  # the bit stays for others
        assert next_regular(bob).data == b"for all"
        assert next_regular(alice).data == b"for all"


def test_membership_causes_ids_and_indexes(cluster: Cluster) -> None:
    group = "memb"
    with client.connect(unix(cluster, "n2"), "m_a") as alice:
        alice.join(group)
        first = receive(alice)
        assert isinstance(first, MembershipMessage)
        assert (first.group, first.cause, first.members) == (
            group,
            MembershipCause.JOIN,
            ("#m_a#n2",),
        )
        assert first.vs_sets == (("#m_a#n2",),) and first.changed_member == "#m_a#n2"
        base = first.group_id
        with client.connect(unix(cluster, "n1"), "m_b") as bob:  # n1 is first in the config
            bob.join(group)
            for mb, index in ((alice, 1), (bob, 0)):
                view = receive(mb)
                assert isinstance(view, MembershipMessage)
                assert view.members == ("#m_b#n1", "#m_a#n2")  # daemon order, then name
                assert view.index_of(mb.private_group) == index  # libspread's mess_type
                assert view.group_id == GroupId(base.proc_id, base.time, base.index + 1)
                assert view.cause is MembershipCause.JOIN and view.changed_member == "#m_b#n1"
            bob.leave(group)
            assert receive(bob) == SelfLeave(group)
            left = receive(alice)
            assert isinstance(left, MembershipMessage)
            assert (left.cause, left.members, left.changed_member) == (
                MembershipCause.LEAVE,
                ("#m_a#n2",),
                "#m_b#n1",
            )
            assert left.group_id.index == base.index + 2
            bob.join(group)
            assert isinstance(receive(alice), MembershipMessage)
        gone = receive(alice)  # bob's mailbox closed by the with block
        assert isinstance(gone, MembershipMessage)
        assert (gone.cause, gone.changed_member) == (MembershipCause.DISCONNECT, "#m_b#n1")
        assert gone.group_id.index == base.index + 4


def test_a_client_without_membership_still_gets_data(cluster: Cluster) -> None:
    with (
        client.connect(unix(cluster, "n1"), "nm_a", membership=False, priority=1) as quiet,
        client.connect(unix(cluster, "n3"), "nm_b") as loud,
    ):
        join_all("nm", loud)
        quiet.join("nm")
        view = receive(loud)  # quiet's join, seen by loud: it is ordered before what follows
        assert isinstance(view, MembershipMessage) and view.members == ("#nm_a#n1", "#nm_b#n3")
        loud.multicast(AGREED_MESS, "nm", b"data")
        got = receive(quiet)  # no membership message before it
        assert isinstance(got, RegularMessage) and got.data == b"data"


def test_random_private_name(cluster: Cluster) -> None:
    with client.connect(unix(cluster, "n2")) as mb:
        assert re.fullmatch(r"#r\d{1,4}-\d+#n2", mb.private_group), mb.private_group


def test_duplicate_private_name_is_rejected(cluster: Cluster) -> None:
    with client.connect(unix(cluster, "n1"), "dup") as first:
        with pytest.raises(client.RejectNotUniqueError) as caught:
            client.connect(tcp(cluster, "n1"), "dup")
        assert caught.value.code == -6  # REJECT_NOT_UNIQUE
        with client.connect(unix(cluster, "n2"), "dup") as other:  # unique per daemon only
            assert other.private_group == "#dup#n2" != first.private_group


def test_no_daemon_means_could_not_connect(tmp_path: Path) -> None:
    for spec in (f"{free_port()}@127.0.0.1", str(tmp_path / "no-daemon.sock")):
        with pytest.raises(client.CouldNotConnectError) as caught:
            client.connect(spec, "nobody", timeout=2)
        assert caught.value.code == -2  # COULD_NOT_CONNECT


def test_illegal_private_name_is_refused_before_connecting() -> None:
    with pytest.raises(client.RejectIllegalNameError) as caught:
        client.connect(f"{free_port()}@127.0.0.1", "has space")
    assert caught.value.code == -5


def test_illegal_requests_are_refused_and_the_mailbox_lives_on(cluster: Cluster) -> None:
    with client.connect(unix(cluster, "n1"), "bad") as mb:
        for group in ("", "bad#group", "x" * 32, "tab\there"):
            with pytest.raises(client.IllegalGroupError):
                mb.join(group)
        with pytest.raises(client.IllegalGroupError):
            mb.leave("")
        with pytest.raises(client.IllegalServiceError):
            mb.multicast(AGREED_MESS | client.SAFE_MESS, "g", b"")
        with pytest.raises(client.IllegalServiceError):
            mb.multicast(ServiceType.JOIN_MESS, "g", b"")
        with pytest.raises(client.IllegalGroupError):
            mb.multicast(AGREED_MESS, [f"g{i}" for i in range(101)], b"")
        with pytest.raises(client.IllegalGroupError):
            mb.multicast(AGREED_MESS, [], b"")
        with pytest.raises(client.IllegalMessageError):
            mb.multicast(AGREED_MESS, "g", b"", mess_type=0x8000)
        with pytest.raises(client.MessageTooLongError) as caught:
            mb.multicast(AGREED_MESS, "g", bytes(142_752))
        assert caught.value.code == -17
        mb.multicast(AGREED_MESS, mb.private_group, bytes(142_752 - 32))  # the largest
        assert len(next_regular(mb).data) == 142_720


def test_poll_counts_the_bytes_waiting(cluster: Cluster) -> None:
    with client.connect(unix(cluster, "n1"), "poller") as mb:
        assert mb.poll() == 0
        mb.multicast(client.SAFE_MESS, mb.private_group, b"while detached\n", 1)
        assert select.select([mb], [], [], WAIT_S)[0] == [mb]  # arrived, not yet read
        assert mb.poll() == 48 + 32 + 15  # spuser's "Polling sais: 95"
        assert next_regular(mb).data == b"while detached\n"
        assert mb.poll() == 0
        with pytest.raises(TimeoutError):
            mb.receive(timeout=0)
        with pytest.raises(client.IllegalTimeError):
            mb.receive(timeout=-1)


def test_disconnect_from_another_thread_ends_a_blocked_receive(cluster: Cluster) -> None:
    mb = client.connect(unix(cluster, "n2"), "threads")
    got: list[Message] = []
    first = threading.Event()

    def reader() -> None:
        for message in mb:  # blocks in receive() until the disconnect
            got.append(message)
            first.set()

    thread = threading.Thread(target=reader)
    thread.start()
    mb.multicast(AGREED_MESS, mb.private_group, b"one")  # sent while the reader waits
    assert first.wait(WAIT_S)
    mb.disconnect()  # the reader is blocked again: this must wake it
    thread.join(WAIT_S)
    assert not thread.is_alive()
    assert [m.data for m in got if isinstance(m, RegularMessage)] == [b"one"]
    assert mb.closed
    for call in (lambda: mb.join("g"), mb.poll, lambda: mb.receive(0)):
        with pytest.raises(client.IllegalSessionError) as caught:
            call()
        assert caught.value.code == -11
    mb.disconnect()  # twice is harmless


def test_losing_the_daemon(tmp_path: Path) -> None:
    with Cluster(tmp_path, names=("n1", "n2")) as pair:
        pair.wait_ring()
        alice = client.connect(unix(pair, "n1"), "alice")
        bob = client.connect(unix(pair, "n2"), "bob")
        join_all("crash", alice, bob)
        pair.kill("n2")
        transitional = receive(alice)
        assert isinstance(transitional, TransitionalMessage) and transitional.group == "crash"
        network = receive(alice)
        assert isinstance(network, MembershipMessage)
        assert (network.cause, network.members) == (MembershipCause.NETWORK, ("#alice#n1",))
        assert network.vs_sets[network.local_vs_set or 0] == ("#alice#n1",)
        assert network.group_id != transitional.group_id
        for call in (lambda: receive(bob), lambda: bob.join("x"), lambda: receive(bob)):
            with pytest.raises(client.ConnectionClosedError) as caught:
                call()
            assert caught.value.code == -8
        bob.disconnect()
        alice.disconnect()


# --- the captured libspread sessions, through a socketpair -------------------------------------


def vector_names() -> list[str]:
    if not VECTOR_DIR.is_dir():
        return []
    return sorted(
        p.stem for p in VECTOR_DIR.glob("*.json") if "client_api_results" in load_vector(p.stem)
    )


def drain(sock: socket.socket) -> bytes:
    out = b""
    while True:
        try:
            chunk = sock.recv(1 << 20, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return out
        if not chunk:
            return out
        out += chunk


def render(mb: Mailbox, message: Message, last_gid: list[GroupId]) -> list[str]:
    """What libspread's test program printed for the same message."""
    match message:
        case RegularMessage():
            lines = [
                f"RECV ret={len(message.data)} service=0x{int(message.service_type):08x} "
                f"sender={message.sender} num_groups={len(message.groups)} "
                f"mess_type={message.mess_type} endian={int(mb.endian_mismatch(message))}"
            ]
            lines += [f"  group[{i}]={g}" for i, g in enumerate(message.groups)]
            return [*lines, f"  data[0:{len(message.data[:64])}]={message.data[:64].hex()}"]
        case MembershipMessage():
            last_gid[:] = [gid := message.group_id]
            size = 20 + sum(4 + 32 * len(vs) for vs in message.vs_sets)
            lines = [
                f"RECV ret={size} service=0x{int(message.service_type):08x} "
                f"sender={message.group} num_groups={len(message.members)} "
                f"mess_type={message.index_of(mb.private_group)} endian=0"
            ]
            lines += [f"  group[{i}]={m}" for i, m in enumerate(message.members)]
            lines.append(
                f"  gid={gid.proc_id} {gid.time} {gid.index} "
                f"changed={message.changed_member or '-'} num_vs_sets={len(message.vs_sets)}"
            )
            for i, vs in enumerate(message.vs_sets):
                local = "(local)" if i == message.local_vs_set else ""
                lines.append(f"  vs_set[{i}]{local} n={len(vs)}: {' '.join(vs)}")
            return lines
        case SelfLeave():
            gid = last_gid[0]  # the program printed its previous group id again
            return [
                f"RECV ret=0 service=0x00000200 sender={message.group} num_groups=0 "
                "mess_type=-1 endian=0",
                f"  gid={gid.proc_id} {gid.time} {gid.index} changed=- num_vs_sets=0",
            ]
    raise AssertionError(message)


class ReplayedConnection:
    """One captured connection: our Mailbox on one end of a socketpair, the capture on the other."""

    def __init__(self) -> None:
        self.ours, self.daemon = socket.socketpair()
        for sock in (self.ours, self.daemon):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.mb: Mailbox | None = None
        self.api: list[str] = []
        self.last_gid: list[GroupId] = []

    def close(self) -> None:
        if self.mb is not None:
            self.mb.disconnect()
        self.ours.close()
        self.daemon.close()


HANDSHAKE_ENDS = ("connect accepted", "connect rejected")


@pytest.mark.parametrize("name", vector_names())
def test_mailbox_replays_the_libspread_captures(name: str) -> None:
    vector = load_vector(name)
    chunks = vector["chunks"]
    keys = dict(
        zip(sorted(vector["connections"], key=int), vector["client_api_results"], strict=True)
    )
    conns = {int(c): ReplayedConnection() for c in vector["connections"]}
    done: set[int] = set()
    try:
        for index, chunk in enumerate(chunks):
            if index in done:
                continue
            conn = conns[chunk["conn"]]
            expected = vector["client_api_results"][keys[str(chunk["conn"])]]
            data, unit = chunk_bytes(chunk), chunk["unit"]
            if unit == "connect request":
                steps = []  # this connection's units up to the accept or the reject
                for later in range(index + 1, len(chunks)):
                    if chunks[later]["conn"] == chunk["conn"]:
                        steps.append(later)
                        if chunks[later]["unit"] in HANDSHAKE_ENDS:
                            break
                done.update(steps)
                replay_connect(conn, data, [chunks[i] for i in steps])
            elif chunk["dir"] == "client->daemon" and data:
                replay_request(conn, data)
            elif chunk["dir"] == "client->daemon":  # a FIN: closed without KILL, or after it
                if conn.mb is not None and not conn.mb.closed:
                    conn.ours.close()  # the process ended without SP_disconnect
                    conn.mb = None
            elif data:
                conn.daemon.sendall(data)
                assert conn.mb is not None
                conn.api += render(conn.mb, conn.mb.receive(timeout=WAIT_S), conn.last_gid)
            while len(conn.api) < len(expected) and expected[len(conn.api)].startswith("POLL"):
                assert conn.mb is not None
                conn.api.append(f"POLL {conn.mb.poll()}")
        for number, conn in conns.items():
            assert conn.api == vector["client_api_results"][keys[str(number)]], number
    finally:
        for conn in conns.values():
            conn.close()


def replay_connect(conn: ReplayedConnection, request: bytes, steps: list[dict[str, Any]]) -> None:
    for step in steps:
        if step["dir"] == "daemon->client":
            conn.daemon.sendall(chunk_bytes(step))
    req = decode_connect_request(request)
    try:
        conn.mb = client.handshake(
            conn.ours,
            req.private_name,
            membership=req.wants_membership,
            priority=req.priority,
            timeout=WAIT_S,
        )
        conn.api.append(f"CONNECT ret=1 private_group={conn.mb.private_group}")
    except client.ConnectionRejectedError as exc:
        conn.api.append(f"CONNECT ret={exc.code} private_group=-")
    sent = [request] + [chunk_bytes(s) for s in steps if s["dir"] == "client->daemon"]
    assert drain(conn.daemon) == b"".join(sent)  # libspread's bytes, to the byte


def replay_request(conn: ReplayedConnection, captured: bytes) -> None:
    mb = conn.mb
    assert mb is not None
    sender, request = decode_request(captured)
    assert sender == mb.private_group
    match request:
        case Join(group):
            mb.join(group)
            conn.api.append("JOIN ret=0")
        case Leave(group):
            mb.leave(group)
            conn.api.append("LEAVE ret=0")
        case Multicast():
            sent = mb.multicast(
                request.service_type, request.groups, request.data, request.mess_type
            )
            conn.api.append(f"SEND ret={sent}")
        case Kill():
            mb.disconnect()
            conn.api.append("DISCONNECT ret=0")
            captured = without_kill_junk(captured)  # libspread leaves junk after the NUL
    assert drain(conn.daemon) == captured


REJECTS = {
    "illegal_name_char": client.RejectIllegalNameError,
    "name_too_long": client.RejectIllegalNameError,
    "old_version": client.RejectVersionError,
    "unknown_auth_method": client.RejectAuthError,
    "short_auth_choice": client.RejectAuthError,
}


@pytest.mark.parametrize("case", sorted(REJECTS))
def test_mailbox_reports_each_captured_reject(case: str) -> None:
    """The daemon's replies of connect_errors.json, read by our library, give the right error."""
    if not VECTOR_DIR.is_dir():
        pytest.skip("client protocol vectors not found")
    chunks = [c for c in load_vector("connect_errors")["chunks"] if c["case"] == case]
    replies = b"".join(bytes.fromhex(c["hex"]) for c in chunks if c["dir"] == "daemon->client")
    ours, daemon = socket.socketpair()
    with ours, daemon:
        daemon.sendall(replies)
        daemon.shutdown(socket.SHUT_WR)
        with pytest.raises(REJECTS[case]) as caught:
            client.handshake(ours, "probe", timeout=WAIT_S)
        assert caught.value.code == replies[-1] - 256


def test_big_endian_mailbox_writes_the_captured_bytes() -> None:
    if not VECTOR_DIR.is_dir():
        pytest.skip("client protocol vectors not found")
    chunks = [c for c in load_vector("big_endian_client")["chunks"] if c["dir"] != "note"]
    units = [bytes.fromhex(c["hex"]) for c in chunks]
    ours, daemon = socket.socketpair()
    daemon.sendall(
        encode_auth_list(AuthList(("NULL",)))
        + encode_accept(Accept(private_group="#bige#localhost"))
    )
    with client.handshake(ours, "bige", endian=Endian.BIG, timeout=WAIT_S) as bige:
        drain(daemon)
        bige.join("test")
        assert drain(daemon) == units[0]
        daemon.sendall(units[1])  # membership, in the (little-endian) daemon's order
        view = bige.receive(timeout=WAIT_S)
        assert isinstance(view, MembershipMessage)
        assert view.members == ("#alice#localhost", "#bige#localhost")
        assert view.index_of(bige.private_group) == 1
        bige.multicast(AGREED_MESS, "test", b"BEmsg", mess_type=0x0102)
        assert drain(daemon) == units[2]
        daemon.sendall(units[3])  # its own message back: hint in its own order
        own = bige.receive(timeout=WAIT_S)
        assert isinstance(own, RegularMessage) and own.mess_type == 258
        assert not bige.endian_mismatch(own)
    daemon.close()
    ours, daemon = socket.socketpair()  # the same delivery seen by a little-endian mailbox
    daemon.sendall(
        encode_auth_list(AuthList(("NULL",)))
        + encode_accept(Accept(private_group="#alice#localhost"))
        + units[3]
    )
    with client.handshake(ours, "alice", endian=Endian.LITTLE, timeout=WAIT_S) as alice:
        got = alice.receive(timeout=WAIT_S)
        assert isinstance(got, RegularMessage)
        assert (got.mess_type, got.data, alice.endian_mismatch(got)) == (258, b"BEmsg", True)
    daemon.close()


# --- the sans-I/O core -------------------------------------------------------------------------


def established_core(name: str = "alice") -> MailboxCore:
    core = MailboxCore(name)
    core.start()
    core.feed(encode_auth_list(AuthList(("NULL",))))
    choice = core.handshake()
    assert isinstance(choice, bytes) and len(choice) == 90
    core.feed(encode_accept(Accept(private_group=f"#{name}#n1")))
    assert core.handshake() == Accept(private_group=f"#{name}#n1")
    return core


SAMPLE_MESSAGES: list[Message] = [
    RegularMessage(
        service_type=ServiceType.SAFE_MESS, sender="#bob#n2", groups=("g", "h"), data=b"x" * 300
    ),
    MembershipMessage(
        group="g",
        cause=MembershipCause.NETWORK,
        group_id=GroupId(1, 7, 1),
        members=("#alice#n1", "#bob#n2"),
        vs_sets=(("#alice#n1",), ("#bob#n2",)),
        local_vs_set=0,
    ),
    TransitionalMessage("g", GroupId(1, 7, 1)),
    SelfLeave("g"),
]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=200), min_size=1, max_size=30))
def test_core_framing_ignores_segmentation(cuts: list[int]) -> None:
    stream = b"".join(encode_daemon_message(m) for m in SAMPLE_MESSAGES)
    core = established_core()
    got: list[Message] = []
    position = 0
    for cut in [*cuts, len(stream)]:
        core.feed(stream[position : position + cut])
        position += cut
        while (message := core.next_message()) is not None:
            got.append(message)
        assert core.pending_bytes == min(position, len(stream)) - sum(
            len(encode_daemon_message(m)) for m in got
        )
        if position >= len(stream):
            break
    assert got == SAMPLE_MESSAGES


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=400))
def test_core_rejects_garbage_only_with_spread_errors(garbage: bytes) -> None:
    core = established_core()
    core.feed(garbage)
    core.feed(b"")
    with pytest.raises(SpreadClientError):
        while core.next_message() is not None:
            pass
    with pytest.raises(SpreadClientError):  # and it stays failed
        core.next_message()


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=60))
def test_core_handshake_on_garbage_raises_only_spread_errors(garbage: bytes) -> None:
    core = MailboxCore("alice")
    core.start()
    core.feed(garbage)
    core.feed(b"")
    with pytest.raises(SpreadClientError):
        while (step := core.handshake()) is not None:
            if isinstance(step, Accept):
                core.next_message()  # EOF after an accept: closed


def test_core_refuses_a_daemon_without_null_auth() -> None:
    core = MailboxCore("alice")
    core.start()
    core.feed(encode_auth_list(AuthList(("PWORD",))))
    with pytest.raises(client.RejectAuthError):
        core.handshake()


# --- asyncio -----------------------------------------------------------------------------------

CROWD = 200
CROWD_SENDERS = 10
CROWD_ROUNDS = 5


async def crowd(daemon: str) -> None:
    async with await aioclient.connect(daemon, "watcher") as watcher:
        await watcher.join("crowd")
        members = await asyncio.gather(
            *(aioclient.connect(daemon, f"c{i}", membership=False) for i in range(CROWD))
        )
        try:
            await asyncio.gather(*(m.join("crowd") for m in members))
            async for message in watcher:  # every join is ordered once the watcher sees it
                if isinstance(message, MembershipMessage) and len(message.members) == CROWD + 1:
                    break
            for rnd in range(CROWD_ROUNDS):
                await asyncio.gather(
                    *(
                        m.multicast(AGREED_MESS, "crowd", f"{i}/{rnd}".encode())
                        for i, m in enumerate(members[:CROWD_SENDERS])
                    )
                )

            async def collect(mb: aioclient.AsyncMailbox) -> list[bytes]:
                return [
                    (await mb.receive(timeout=WAIT_S)).data  # type: ignore[union-attr]
                    for _ in range(CROWD_SENDERS * CROWD_ROUNDS)
                ]

            seen = await asyncio.gather(*(collect(m) for m in members))
            expected = {
                f"{i}/{r}".encode() for i in range(CROWD_SENDERS) for r in range(CROWD_ROUNDS)
            }
            for got in seen:
                assert len(got) == len(expected) and set(got) == expected  # each exactly once
                assert got == seen[0]  # AGREED: the same order everywhere
            assert all(m.poll() == 0 for m in members)
        finally:
            await asyncio.gather(*(m.disconnect() for m in members))


def test_asyncio_200_mailboxes_each_message_once_to_each_member(cluster: Cluster) -> None:
    asyncio.run(crowd(unix(cluster, "n3")))


async def async_basics(cluster: Cluster) -> None:
    alice = await aioclient.connect(tcp(cluster, "n1"), "as_a")
    async with await aioclient.connect(unix(cluster, "n2"), "as_b") as bob:
        await alice.join("async")
        await bob.join("async")
        while True:
            view = await alice.receive(timeout=WAIT_S)
            if isinstance(view, MembershipMessage) and len(view.members) == 2:
                break
        await bob.multicast(client.SAFE_MESS, "async", b"hi", mess_type=3)
        got = None
        while not isinstance(got, RegularMessage):
            got = await alice.receive(timeout=WAIT_S)
        assert (got.data, got.mess_type, got.sender) == (b"hi", 3, bob.private_group)
        with pytest.raises(client.RejectNotUniqueError):
            await aioclient.connect(unix(cluster, "n2"), "as_b")
        with pytest.raises(TimeoutError):
            await alice.receive(timeout=0)

        received: list[Message] = []
        direct = asyncio.Event()

        async def read_all() -> None:
            async for message in alice:  # ends when alice disconnects
                received.append(message)
                if isinstance(message, RegularMessage) and message.data == b"direct":
                    direct.set()

        reader = asyncio.create_task(read_all())
        await bob.multicast(AGREED_MESS, alice.private_group, b"direct")
        await asyncio.wait_for(direct.wait(), WAIT_S)
        await alice.disconnect()  # wakes the reader, waiting for the next message
        await asyncio.wait_for(reader, WAIT_S)
        assert isinstance(received[-1], RegularMessage) and received[-1].data == b"direct"
        with pytest.raises(client.IllegalSessionError):
            await alice.join("x")
    with pytest.raises(client.CouldNotConnectError):
        await aioclient.connect(f"{free_port()}@127.0.0.1", "nobody", timeout=2)


def test_asyncio_mailbox_basics(cluster: Cluster) -> None:
    asyncio.run(async_basics(cluster))

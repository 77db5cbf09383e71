"""wackapy daemon pieces without a network: View translation, settings, the control socket
protocol (codec, server, client, C-daemon fallback), the wackatrl command and its listing, and
the daemon's session handling in this process against a fake Spread, fake netlink and a fake
frame sender (no root needed).

The real thing runs end to end in tests/test_wackapy_e2e.py (namespaces, root)."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import socket
import stat
import struct
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spreadpy.client import ConnectionClosedError, CouldNotConnectError
from spreadpy.errors import MalformedPacket
from spreadpy.wire import (
    GroupId,
    MembershipCause,
    MembershipMessage,
    RegularMessage,
    RejectMessage,
    ServiceType,
)
from spreadpy.wire import TransitionalMessage as WireTransitional
from wackapy import daemon as daemon_module
from wackapy.balance import Balancer, Cause, Multicast, View, ViewKind
from wackapy.config import VipAddress, parse_config, parse_spread
from wackapy.control import (
    SET_BYTES,
    ControlClient,
    ControlServer,
    ListedAddress,
    ListedSet,
    Opcode,
    SessionClosed,
    Unreachable,
    decode_state,
    encode_state,
    format_listing,
    frame,
    listed_from_document,
    read_state,
)
from wackapy.daemon import (
    balancer_settings,
    default_private_name,
    state_document,
    view_from_message,
)
from wackatrl import cli as wackatrl

GROUP = "www"
ME = "#wack1#h1"
PEER = "#wack2#h2"
GID = GroupId(proc_id=3, time=1700000000, index=7)


def vip(text: str, ifname: str = "eth4", hint: int = 24) -> VipAddress:
    return VipAddress(ifname, ipaddress.ip_interface(text), hint)


# ---------------------------------------------------------------------------------------------
# View translation


def _regular(
    group: str = GROUP,
    members: tuple[str, ...] = (ME, PEER),
    cause: MembershipCause = MembershipCause.JOIN,
    vs_sets: tuple[tuple[str, ...], ...] = ((PEER,),),
) -> MembershipMessage:
    return MembershipMessage(
        group=group, cause=cause, group_id=GID, members=members, vs_sets=vs_sets
    )


@pytest.mark.parametrize("cause", list(MembershipCause))
def test_regular_view_keeps_order_id_cause_and_vs_sets(cause: MembershipCause) -> None:
    msg = _regular(members=(PEER, ME), cause=cause, vs_sets=((PEER,), (ME,)))
    view = view_from_message(msg, GROUP, me=ME, last_members=None)
    assert view == View(
        group=GROUP,
        kind=ViewKind.REGULAR,
        view_id=(3, 1700000000, 7),
        members=(PEER, ME),  # Spread's order: it decides the leader and the tie-breaks
        cause=Cause[cause.name],
        vs_sets=((PEER,), (ME,)),
    )
    assert view.is_merge == (cause is MembershipCause.NETWORK)


@pytest.mark.parametrize(
    ("last", "members"),
    [
        ((ME, PEER), (ME, PEER)),  # the last regular view: what the group shrinks from
        (None, (ME,)),  # before any regular view
        ((PEER,), (ME,)),  # a stale list without us is never passed on
    ],
)
def test_transitional_view_takes_the_last_regular_members(
    last: tuple[str, ...] | None, members: tuple[str, ...]
) -> None:
    view = view_from_message(WireTransitional(GROUP, GID), GROUP, me=ME, last_members=last)
    assert view == View(
        group=GROUP, kind=ViewKind.TRANSITIONAL, view_id=(3, 1700000000, 7), members=members
    )


@pytest.mark.parametrize(
    "msg",
    [
        _regular(group="other"),  # another group's view never reaches the balancer
        WireTransitional("other", GID),
        _regular(members=(PEER,)),  # a regular view without us
        RegularMessage(service_type=0x10, sender=PEER, groups=(GROUP,), data=b"x"),
    ],
)
def test_messages_that_are_not_our_views(msg: Any) -> None:
    assert view_from_message(msg, GROUP, me=ME, last_members=(ME,)) is None


def test_translated_views_drive_a_balancer() -> None:
    """A real Spread membership, translated, is what the balancer accepts (no protocol error),
    and a transitional one in between is only counted."""
    config = parse_config(SEED.replace("eth4", "eth0"), "seed")
    balancer = Balancer(balancer_settings(config, label="198.18.0.1"))
    balancer.start(0.0)
    balancer.connected(ME, 0.0)
    for msg in (
        _regular(members=(ME,), vs_sets=((ME,),)),
        WireTransitional(GROUP, GID),
        _regular(members=(ME,), cause=MembershipCause.NETWORK, vs_sets=((ME,),)),
    ):
        view = view_from_message(msg, GROUP, me=ME, last_members=(ME,))
        assert view is not None
        balancer.membership(view, 0.0)
    assert balancer.counters["transitional_views"] == 1
    assert balancer.counters["regular_views"] == 2


# ---------------------------------------------------------------------------------------------
# settings from wackamole.conf

SEED = """Spread = 4803
SpreadRetryInterval = 5s
Group = www
Control = /var/run/wackamole/wackamole.it
VirtualInterfaces {
{ eth4:192.168.1.20/24 }
{ eth4:192.168.1.21/24 }
}
Arp-Cache = 90s
Notify {
eth4:192.168.1.1/32
arp-cache
}
balance {
AcquisitionsPerRound = all
interval = 4s
}
mature = 5s
"""


def test_balancer_settings_from_the_seed() -> None:
    settings_ = balancer_settings(parse_config(SEED, "seed"), label="192.168.1.10")
    assert settings_.group == "www"
    assert [(s.set_id, s.addresses) for s in settings_.vip_sets] == [
        ("192.168.1.20", ("192.168.1.20",)),
        ("192.168.1.21", ("192.168.1.21",)),
    ]
    assert settings_.acquisitions_per_round is None  # all
    assert (settings_.mature_s, settings_.spread_retry_s, settings_.label) == (
        5.0,
        5.0,
        "192.168.1.10",
    )
    assert settings_.prefer == ()


def test_balancer_settings_prefer_and_sets() -> None:
    text = SEED.replace(
        "{ eth4:192.168.1.21/24 }", "{ eth4:192.168.1.21/24 eth5:198.18.0.21/24 }"
    ).replace("AcquisitionsPerRound = all", "AcquisitionsPerRound = 3")
    text += "Prefer eth4:192.168.1.21/32\n"
    settings_ = balancer_settings(parse_config(text, "f"))
    assert settings_.vip_sets[1].addresses == ("192.168.1.21", "198.18.0.21")
    assert settings_.prefer == ("192.168.1.21",)
    assert settings_.acquisitions_per_round == 3 and settings_.balance_interval_s == 4.0


@pytest.mark.parametrize(
    ("pid", "name"), [(1, "wack1"), (999999, "wack999999"), (4194304, "w4194304")]
)
def test_default_private_name_fits_spread(pid: int, name: str) -> None:
    assert default_private_name(pid) == name
    assert len(name) <= 10


def test_spread_may_be_a_socket_path() -> None:
    assert parse_spread("/run/spread/4803.sock") == "/run/spread/4803.sock"
    with pytest.raises(ValueError):
        parse_spread("/" + "x" * 200)
    config = parse_config(SEED.replace("Spread = 4803", "Spread = /tmp/h1.sock"), "f")
    assert (config.spread, config.spread_port, config.spread_host) == ("/tmp/h1.sock", None, None)


# ---------------------------------------------------------------------------------------------
# GET_STATE: the original's binary table


def test_get_state_bytes_for_the_seed() -> None:
    payload = encode_state(
        [(2, "192.168.1.10", [vip("192.168.1.20/24")]), (0, None, [vip("192.168.1.21/24")])]
    )
    assert len(payload) == 2 * SET_BYTES == 1800
    first = payload[:SET_BYTES]
    assert first[:4] == b"\0\0\0\x02"  # claim priority, big endian
    assert first[4:32] == bytes(16) + bytes([192, 168, 1, 10]) + bytes(8)  # owner record
    assert first[32:60] == (
        b"eth4".ljust(16, b"\0")
        + bytes([192, 168, 1, 20])
        + bytes([192, 168, 1, 255])  # broadcast
        + bytes([255, 255, 255, 0])  # netmask, network order
    )
    assert first[60:] == bytes(SET_BYTES - 60)  # no extra addresses
    assert payload[SET_BYTES + 4 : SET_BYTES + 8] == bytes(4)  # not acquired: owner 0


def test_decode_reads_the_true_prefix_of_a_network_order_netmask() -> None:
    """A C wackamole's reply for a /24 (upstream's client would print /32 on x86)."""
    record = struct.pack("!16s4s4s4s", b"eth0", bytes([198, 18, 3, 5]), bytes(4), bytes(4))
    extra = struct.pack(
        "!16s4s4s4s", b"eth1", bytes([198, 19, 5, 5]), bytes(4), bytes([255, 255, 255, 0])
    )
    head = record[:24] + bytes([255, 255, 255, 0])
    payload = struct.pack("!i", 0) + bytes(28) + head + extra + bytes(28 * 29)
    assert decode_state(payload) == (
        ListedSet(
            None,
            0,
            (
                ListedAddress("eth0", ipaddress.IPv4Interface("198.18.3.5/24")),
                ListedAddress("eth1", ipaddress.IPv4Interface("198.19.5.5/24")),
            ),
        ),
    )


_ipv4_vips = st.builds(
    lambda a, p, n: vip(f"{ipaddress.IPv4Address(a)}/{p}", f"eth{n}"),
    st.integers(1, 2**32 - 2),
    st.integers(8, 32),
    st.integers(0, 99),
)


@settings(max_examples=100, deadline=None, derandomize=bool(os.environ.get("CI")))
@given(
    st.lists(
        st.tuples(
            st.sampled_from([0, 2, 4, 5]),
            st.one_of(st.none(), st.ip_addresses(v=4).map(str)),
            st.lists(_ipv4_vips, min_size=1, max_size=31),
        ),
        max_size=8,
    )
)
def test_get_state_round_trip(rows: list[tuple[int, str | None, list[VipAddress]]]) -> None:
    expected = tuple(
        ListedSet(
            None if owner == "0.0.0.0" else owner,  # owner 0 means "not acquired" on the wire
            priority,
            tuple(ListedAddress(a.ifname, a.interface) for a in addresses),
        )
        for priority, owner, addresses in rows
    )
    assert decode_state(encode_state(rows)) == expected


def test_get_state_encodes_what_it_cannot_carry_as_zeros() -> None:
    payload = encode_state([(2, "h1.example", [vip("2001:db8::10/64", "eth0")])])
    rows = decode_state(payload)
    assert rows[0].owner is None  # a label that is not IPv4 cannot be sent
    assert rows[0].addresses[0].interface == ipaddress.IPv4Interface("0.0.0.0/0")
    with pytest.raises(ValueError):
        encode_state([(2, None, [vip(f"198.18.0.{n}/24") for n in range(1, 33)])])


@pytest.mark.parametrize("size", [1, SET_BYTES - 1, SET_BYTES + 4])
def test_decode_refuses_truncated_tables(size: int) -> None:
    with pytest.raises(MalformedPacket):
        decode_state(bytes(size))


# ---------------------------------------------------------------------------------------------
# wackatrl -l layout


def _set(owner: str | None, *addresses: str) -> ListedSet:
    listed = []
    for text in addresses:
        ifname, _, address = text.partition(":")
        plain = address.replace("[", "").replace("]", "")
        listed.append(ListedAddress(ifname, ipaddress.ip_interface(plain)))
    return ListedSet(owner, 2, tuple(listed))


def test_listing_of_the_seed_with_true_prefixes() -> None:
    rows = [
        _set("192.168.1.10", "eth4:192.168.1.20/24"),
        _set("192.168.1.11", "eth4:192.168.1.21/24"),
    ]
    assert format_listing(rows) == (
        "Owner: 192.168.1.10\n"
        "\t*    eth4:192.168.1.20/24\n"
        "Owner: 192.168.1.11\n"
        "\t*    eth4:192.168.1.21/24\n"
    )


def test_listing_of_an_unowned_multi_address_set() -> None:
    rows = [_set(None, "eth0:198.18.3.5/24", "eth1:198.19.5.5/24", "bond0.100:198.18.0.9/32")]
    assert format_listing(rows) == (
        "Owner: not acquired\n"
        "\t*    eth0:198.18.3.5/24\n"
        "\t ->  eth1:198.19.5.5/24\n"
        "\t -> bond0.100:198.18.0.9/32\n"  # names of 5+ characters get no padding
    )


def test_listing_ipv6_in_brackets_and_empty_table() -> None:
    rows = [_set("198.18.0.1", "eth0:[2001:db8::10]/64")]
    assert format_listing(rows) == "Owner: 198.18.0.1\n\t*    eth0:[2001:db8::10]/64\n"
    assert format_listing([]) == ""  # upstream printed a garbage block


def test_listing_from_a_balancer_state_document() -> None:
    """A single member, mature: it holds every set; the document and the listing agree."""
    config = parse_config(SEED, "seed")
    balancer = Balancer(balancer_settings(config, label="192.168.1.10"))
    balancer.start(0.0)
    balancer.connected(ME, 0.0)
    view = view_from_message(
        _regular(members=(ME,), vs_sets=((ME,),)), GROUP, me=ME, last_members=None
    )
    assert view is not None
    balancer.membership(view, 0.0)
    _deliver_own(balancer, 0.0)
    balancer.timer(config.mature_s)  # the Mature timer: MATURING
    _deliver_own(balancer, config.mature_s)
    doc = state_document(
        balancer,
        {vif.set_id: vif for vif in config.vifs},
        label="192.168.1.10",
        spread=config.spread,
        simulated_failure=False,
        counters={"balancer": balancer.counters},
    )
    json.dumps(doc)  # JSON-ready
    assert doc["member"]["state"] == "run" and doc["member"]["held"] == [
        "192.168.1.20",
        "192.168.1.21",
    ]
    assert [(s["owner"], s["owner_label"], s["held_here"]) for s in doc["sets"]] == [
        (ME, "192.168.1.10", True)
    ] * 2
    assert doc["view"]["leader"] == ME and doc["view"]["cause"] == "JOIN"
    assert format_listing(listed_from_document(doc)) == (
        "Owner: 192.168.1.10\n\t*    eth4:192.168.1.20/24\n"
        "Owner: 192.168.1.10\n\t*    eth4:192.168.1.21/24\n"
    )


def _deliver_own(balancer: Balancer, now: float) -> None:
    """Spread self-delivery: hand the balancer back its own multicasts."""
    for action in balancer.drain_actions():
        if isinstance(action, Multicast):
            balancer.message(ME, action.payload, now)


@pytest.mark.parametrize(
    "doc",
    [
        {},
        {"sets": [{"owner": None}]},
        {"sets": [{"owner": None, "priority": 0, "addresses": [{}]}]},
    ],
)
def test_bad_documents_are_refused(doc: dict[str, Any]) -> None:
    with pytest.raises(MalformedPacket):
        listed_from_document(doc)


# ---------------------------------------------------------------------------------------------
# the control socket: server and client over a real Unix socket

TABLE = encode_state([(2, "198.18.0.1", [vip("198.18.0.201/24", "eth0")])])
DOCUMENT = {
    "version": 1,
    "sets": [
        {
            "set_id": "198.18.0.201",
            "owner": ME,
            "owner_label": "198.18.0.1",
            "priority": 2,
            "addresses": [{"ifname": "eth0", "address": "198.18.0.201", "prefixlen": 24}],
        }
    ],
}


class FakeDaemon:
    """The daemon's side of the protocol: records requests, answers like wackapy."""

    def __init__(self) -> None:
        self.requests: list[Opcode] = []
        self.failed = False

    async def handle(self, opcode: Opcode) -> bytes:
        self.requests.append(opcode)
        match opcode:
            case Opcode.GET_STATE:
                return frame(TABLE)
            case Opcode.GET_STATE_JSON:
                doc = DOCUMENT if not self.failed else {**DOCUMENT, "sets": []}
                return frame(json.dumps(doc).encode())
            case Opcode.SIMULATE_FAILURE:
                self.failed = True
                return (0).to_bytes(4, "big")
            case Opcode.SIMULATE_SUCCESS:
                self.failed = False
                return (0).to_bytes(4, "big")


@contextlib.contextmanager
def serving(path: Path, handler: Callable[[Opcode], Awaitable[bytes]]) -> Iterator[ControlServer]:
    """A ControlServer on its own loop in a thread (wackatrl and ControlClient block)."""
    loop = asyncio.new_event_loop()
    server = ControlServer(str(path), handler)
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(server.start(), loop).result(5)
        yield server
    finally:
        asyncio.run_coroutine_threadsafe(server.close(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def test_session_carries_several_requests(tmp_path: Path) -> None:
    daemon = FakeDaemon()
    path = tmp_path / "ctl"
    with serving(path, daemon.handle) as server, ControlClient(str(path)) as client:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600  # as upstream: root only
        assert client.request(Opcode.GET_STATE) == TABLE
        assert client.request(Opcode.SIMULATE_FAILURE) == bytes(4)
        assert client.state_document()["sets"] == []
        assert client.request(Opcode.SIMULATE_SUCCESS) == bytes(4)
        assert client.state_table() == decode_state(TABLE)
        assert server.counters["requests"] == 5
    assert daemon.requests == [
        Opcode.GET_STATE,
        Opcode.SIMULATE_FAILURE,
        Opcode.GET_STATE_JSON,
        Opcode.SIMULATE_SUCCESS,
        Opcode.GET_STATE,
    ]
    assert not path.exists()  # removed at close


def test_unknown_request_ends_the_session(tmp_path: Path) -> None:
    path = tmp_path / "ctl"
    with serving(path, FakeDaemon().handle) as server:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(str(path))
            sock.sendall(b"\x07")
            assert sock.recv(16) == b""  # closed, nothing answered
        assert server.counters["bad"] == 1


def test_stale_socket_is_replaced_and_live_one_refused(tmp_path: Path) -> None:
    path = tmp_path / "ctl"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens: a killed daemon's socket
    with serving(path, FakeDaemon().handle), ControlClient(str(path)) as client:
        assert client.request(Opcode.GET_STATE) == TABLE
        loop = asyncio.new_event_loop()
        try:
            with pytest.raises(OSError, match="running"):
                loop.run_until_complete(ControlServer(str(path), FakeDaemon().handle).start())
        finally:
            loop.close()


def test_unreachable_daemon(tmp_path: Path) -> None:
    with pytest.raises(Unreachable, match="connect to"):
        ControlClient(str(tmp_path / "nothing"))


@contextlib.contextmanager
def c_wackamole(path: Path) -> Iterator[list[int]]:
    """A C wackamole's control socket: knows opcodes 0-2, closes the session on anything else."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(5)
    seen: list[int] = []

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = listener.accept()
                with conn:
                    while op := conn.recv(1):
                        seen.append(op[0])
                        if op[0] == 0:
                            conn.sendall(frame(TABLE))
                        elif op[0] in (1, 2):
                            conn.sendall(bytes(4))
                        else:
                            break

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
        thread.join(5)
        listener.close()


def test_read_state_falls_back_to_the_binary_table(tmp_path: Path) -> None:
    path = tmp_path / "ctl"
    with c_wackamole(path) as seen:
        with ControlClient(str(path)) as client, pytest.raises(SessionClosed):
            client.request(Opcode.GET_STATE_JSON)
        doc, rows = read_state(str(path))
    assert doc is None and rows == decode_state(TABLE)
    assert seen == [3, 3, 0]  # JSON refused, so the original request on a new session


# ---------------------------------------------------------------------------------------------
# the wackatrl command


def _config(tmp_path: Path, control: Path | None) -> Path:
    text = SEED.replace("Control = /var/run/wackamole/wackamole.it\n", "")
    if control is not None:
        text += f"Control = {control}\n"
    path = tmp_path / "wackamole.conf"
    path.write_text(text)
    return path


def test_wackatrl_list_json_fail_and_resume(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ctl = tmp_path / "ctl"
    conf = _config(tmp_path, ctl)
    daemon = FakeDaemon()
    with serving(ctl, daemon.handle):
        assert wackatrl.main(["-c", str(conf), "-l"]) == 0
        assert capsys.readouterr().out == "Owner: 198.18.0.1\n\t*    eth0:198.18.0.201/24\n"
        assert wackatrl.main(["-c", str(conf), "-l", "--json"]) == 0
        assert json.loads(capsys.readouterr().out) == DOCUMENT
        assert wackatrl.main(["-c", str(conf), "-f"]) == 0
        assert capsys.readouterr().out == ""  # the table after -f: empty in this fake
        assert daemon.requests[-2:] == [Opcode.SIMULATE_FAILURE, Opcode.GET_STATE_JSON]
        assert wackatrl.main(["-c", str(conf), "-l", "-s"]) == 0  # the last one wins
        assert capsys.readouterr().out.startswith("Owner: 198.18.0.1\n")
        assert daemon.requests[-2:] == [Opcode.SIMULATE_SUCCESS, Opcode.GET_STATE_JSON]


def test_wackatrl_against_a_c_wackamole(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ctl = tmp_path / "ctl"
    conf = _config(tmp_path, ctl)
    with c_wackamole(ctl):
        assert wackatrl.main(["-c", str(conf), "-l"]) == 0
        assert capsys.readouterr().out == "Owner: 198.18.0.1\n\t*    eth0:198.18.0.201/24\n"
        assert wackatrl.main(["-c", str(conf), "-l", "--json"]) == 1
        assert "does not answer JSON" in capsys.readouterr().err


def test_wackatrl_usage_and_failures(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert wackatrl.main([]) == 0  # no command: usage on stdout, as upstream
    assert capsys.readouterr().out.startswith("usage: wackatrl")
    ctl = tmp_path / "ctl"
    conf = _config(tmp_path, ctl)
    assert wackatrl.main(["-c", str(conf), "-l"]) == 1
    assert capsys.readouterr().out == (
        f"connect to: {ctl} failed.\nPerhaps wackamole is not running?\n"
    )
    assert wackatrl.main(["-c", str(_config(tmp_path, None)), "-l"]) == 1
    assert "sets no Control socket" in capsys.readouterr().err
    assert wackatrl.main(["-c", str(tmp_path / "missing.conf"), "-l"]) == 1
    assert "cannot read" in capsys.readouterr().err
    bad = tmp_path / "bad.conf"
    bad.write_text("Group = \n")
    assert wackatrl.main(["-c", str(bad), "-l"]) == 1
    assert f"{bad}:" in capsys.readouterr().err
    assert wackatrl.main(["-x"]) == 2


# ---------------------------------------------------------------------------------------------
# the daemon in this process, with a fake Spread, fake netlink and a fake frame sender

_END = object()
UNTIL_POLL_S = 0.01


class FakeMailbox:
    """One session of a one-member group: a join brings a view of just us; multicasts come
    back to us (Spread's self-delivery)."""

    def __init__(self, spread: FakeSpread, private_group: str) -> None:
        self.spread = spread
        self.private_group = private_group
        self.queue: asyncio.Queue[object] = asyncio.Queue()
        self.closed = False

    async def join(self, group: str) -> None:
        if self.spread.reject_joins:
            self.queue.put_nowait(
                RejectMessage(
                    old_type=ServiceType.CAUSED_BY_JOIN,
                    sender=self.private_group,
                    groups=(group, self.private_group),
                )
            )
            return
        self.spread.views += 1
        self.queue.put_nowait(
            MembershipMessage(
                group=group,
                cause=MembershipCause.JOIN,
                group_id=GroupId(1, 1, self.spread.views),
                members=(self.private_group,),
                vs_sets=((self.private_group,),),
            )
        )

    async def multicast(self, service: int, group: str, data: bytes, mess_type: int = 0) -> int:
        self.queue.put_nowait(
            RegularMessage(
                service_type=ServiceType(service),
                sender=self.private_group,
                groups=(group,),
                mess_type=mess_type,
                data=data,
            )
        )
        return len(data)

    def crash(self) -> None:
        self.queue.put_nowait(ConnectionClosedError())

    def __aiter__(self) -> FakeMailbox:
        return self

    async def __anext__(self) -> object:
        msg = await self.queue.get()
        if msg is _END:
            raise StopAsyncIteration
        if isinstance(msg, Exception):
            raise msg
        return msg

    async def disconnect(self) -> None:
        self.closed = True
        self.queue.put_nowait(_END)


class FakeSpread:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.sessions: list[FakeMailbox] = []
        self.attempts: list[float] = []
        self.down = False
        self.reject_joins = False
        self.views = 0

    async def connect(self, daemon: str, name: str, **_: object) -> FakeMailbox:
        self.attempts.append(self.loop.time())
        if self.down:
            raise CouldNotConnectError("the fake daemon is down")
        mailbox = FakeMailbox(self, f"#{name}#h1")
        self.sessions.append(mailbox)
        return mailbox


class FakeAddresses:
    """AddressManager's surface the daemon uses; records every call (called from threads)."""

    def __init__(self) -> None:
        self.present: set[str] = {"198.18.0.202"}  # a leftover of an earlier run
        self.calls: list[tuple[str, str, bool]] = []

    def addresses(self, ifname: str) -> tuple[Any, ...]:
        return ()

    def acquire(self, vip: VipAddress) -> bool:
        self.calls.append(("acquire", str(vip.address), False))
        added = str(vip.address) not in self.present
        self.present.add(str(vip.address))
        return added

    def release(self, vip: VipAddress, *, force: bool = False) -> bool:
        self.calls.append(("release", str(vip.address), force))
        if str(vip.address) in self.present:
            self.present.discard(str(vip.address))
            return True
        return False

    def reup(self) -> tuple[VipAddress, ...]:
        return ()

    def release_all(self) -> tuple[VipAddress, ...]:
        return ()

    def close(self) -> None:
        pass


class FakeSender:
    def __init__(self) -> None:
        self.frames: list[Any] = []
        self.counters: dict[str, int] = {}

    def send(self, frames: Any) -> int:
        self.frames.extend(frames)
        return len(frames)

    def close(self) -> None:
        pass


DAEMON_CONF = """Spread = /nonexistent/spread.sock
SpreadRetryInterval = 200ms
Group = www
Control = {control}
VirtualInterfaces {{
    eth0:198.18.0.201/24
    eth0:198.18.0.202/24
}}
Notify {{ eth0:198.18.0.100/32 }}
Mature = 50ms
Balance {{ AcquisitionsPerRound = 1  Interval = 100ms }}
"""


async def until(probe: Callable[[], object], what: str, timeout_s: float = 5.0) -> None:
    """Let the daemon run until `probe()` holds; fail after `timeout_s`."""
    for _ in range(round(timeout_s / UNTIL_POLL_S)):
        if probe():
            return
        await asyncio.sleep(UNTIL_POLL_S)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def test_daemon_session_life_cycle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Leftovers removed before anything else; a single member matures and holds both sets,
    announced; a lost session releases at once and reconnects; a refused join waits a retry
    interval (no busy loop); wackatrl -f / -s; shutdown releases and leaves Spread."""
    control = tmp_path / "ctl"
    config = parse_config(DAEMON_CONF.format(control=control), "daemon.conf")
    addresses = FakeAddresses()
    sender = FakeSender()
    monkeypatch.setattr(daemon_module, "AddressManager", lambda: addresses)
    monkeypatch.setattr(daemon_module, "FrameSender", lambda: sender)
    monkeypatch.setattr(daemon_module, "read_arp_cache", lambda **_: ())

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        spread = FakeSpread(loop)
        monkeypatch.setattr(daemon_module.aioclient, "connect", spread.connect)
        daemon = daemon_module.Daemon(config, private_name="wack1", label="198.18.0.1")
        await daemon.start()
        serving = loop.create_task(daemon.serve())
        both = {"198.18.0.201", "198.18.0.202"}

        # start-up: forced releases of every configured address, then the acquisitions
        await until(lambda: addresses.present == both and daemon.balancer.held, "both held")
        assert addresses.calls[:2] == [
            ("release", "198.18.0.201", True),
            ("release", "198.18.0.202", True),
        ]
        assert [c[0] for c in addresses.calls[2:4]] == ["acquire", "acquire"]
        await until(lambda: len(sender.frames) >= 6, "announcements")
        assert {str(f.vip) for f in sender.frames} == both
        doc, rows = await asyncio.to_thread(read_state, str(control))
        assert doc is not None and doc["member"]["state"] == "run"
        assert format_listing(rows).startswith("Owner: 198.18.0.1\n\t*    eth0:198.18.0.201/24\n")

        # Spread goes away: everything released at once (not forced), reconnect at once
        first = spread.sessions[0]
        spread.down = True
        first.crash()
        await until(lambda: not addresses.present, "released on session loss")
        assert addresses.calls[-2:] == [
            ("release", "198.18.0.201", False),
            ("release", "198.18.0.202", False),
        ]
        await until(lambda: len(spread.attempts) >= 3, "a retry after the failed reconnect")
        retry_s = config.spread_retry_interval_s - 1e-3  # the loop's clock resolution aside
        assert spread.attempts[2] - spread.attempts[1] >= retry_s
        spread.down = False
        await until(lambda: addresses.present == both, "held again after reconnecting")

        # a join the daemon refuses: session lost at once, the next attempt waits
        spread.reject_joins = True
        count = len(spread.attempts)
        spread.sessions[-1].crash()
        await until(lambda: len(spread.attempts) >= count + 2, "two more attempts")
        assert spread.attempts[count + 1] - spread.attempts[count] >= retry_s  # no busy loop
        spread.reject_joins = False
        await until(lambda: addresses.present == both, "held after the refusals stop")

        # wackatrl -f: releases, leaves Spread, stays away; -s: back at once
        doc, rows = await asyncio.to_thread(read_state, str(control), first=Opcode.SIMULATE_FAILURE)
        assert doc is not None and doc["member"]["simulated_failure"] is True
        assert all(row.owner is None for row in rows) and not addresses.present
        assert spread.sessions[-1].closed
        sessions = len(spread.sessions)
        await asyncio.to_thread(read_state, str(control), first=Opcode.SIMULATE_SUCCESS)
        await until(lambda: addresses.present == both, "held again after -s")
        assert len(spread.sessions) == sessions + 1

        # SIGTERM's path: release everything, leave Spread, remove the control socket
        daemon.stop()
        assert await serving == 0
        assert not addresses.present and spread.sessions[-1].closed
        assert not control.exists()

    asyncio.run(scenario())

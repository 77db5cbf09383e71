"""spreadpy.wire and spreadpy.wire_session: codec tables, byte order, state machines, fuzzing.

The captured vectors are replayed in test_wire_vectors.py; here every row is written by hand
from the layout in shared/spec/client-protocol.md, so the two cannot share a mistake.
"""

from __future__ import annotations

import contextlib
import itertools
import random
import struct
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spreadpy.errors import LocalProtocolError, WireError
from spreadpy.wire import (
    AUTH_CHOICE_LEN,
    DAEMON_MAX_BODY_LEN,
    ENDIAN_MARK,
    MAX_GROUP_NAME,
    MAX_GROUPS_PER_MESSAGE,
    MAX_MESSAGE_BODY_LEN,
    MAX_PRIVATE_NAME,
    MULTICAST_REQUEST_TYPES,
    RING_SAFE_MAX_BODY_LEN,
    Accept,
    AuthChoice,
    AuthList,
    ConnectRequest,
    DaemonMessage,
    Endian,
    GroupId,
    Join,
    Kill,
    Leave,
    MembershipCause,
    MembershipMessage,
    Multicast,
    MulticastFrame,
    RegularMessage,
    Reject,
    RejectMessage,
    SelfLeave,
    ServiceType,
    SpError,
    TransitionalMessage,
    check_request_header,
    decode_accept_reply,
    decode_auth_choice,
    decode_auth_reply,
    decode_connect_request,
    decode_daemon_message,
    decode_header,
    decode_request,
    encode_accept,
    encode_auth_choice,
    encode_auth_list,
    encode_connect_request,
    encode_daemon_message,
    encode_multicast,
    encode_reject,
    encode_request,
    generate_private_name,
    is_membership,
    is_regular,
    is_self_leave,
    name_field,
    private_group_name,
    read_request_head,
    regular_message_from_frame,
    relay_frame_targets,
    request_frame_len,
    split_private_group,
    valid_group_name,
    valid_private_name,
)
from spreadpy.wire_session import (
    CLIENT_TRANSITIONS,
    NEED_DATA,
    PAUSED,
    SERVER_TRANSITIONS,
    Authenticated,
    ClientConnection,
    ClientInput,
    ClientState,
    ConnectionClosed,
    Sentinel,
    ServerInput,
    ServerSession,
    ServerState,
)

ST = ServiceType
SETTINGS = settings(deadline=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow])


# --- independent byte builders (the spec's tables, not our encoder) ---------------------------


def name32(name: str) -> bytes:
    return name.encode("latin-1").ljust(32, b"\0")


def word(value: int, order: str) -> bytes:
    return value.to_bytes(4, order, signed=value < 0)


def header(
    order: str, type_: int, sender: str, groups: int, hint: int, data_len: int, hint_order: str
) -> bytes:
    mark = ENDIAN_MARK if order == "little" else 0
    return (
        word(type_ | mark, order)
        + name32(sender)
        + word(groups, order)
        + word(hint, hint_order)
        + word(data_len, order)
    )


ALICE = "#alice#localhost"

HANDSHAKE_ROWS: list[tuple[str, object, str, Callable[[bytes], object]]] = [
    (
        "connect 5.0.1 membership",
        ConnectRequest(private_name="alice"),
        "0500010105616c696365",
        decode_connect_request,
    ),
    (
        "connect 4.4.0 priority 1 no membership",
        ConnectRequest(
            major=4, minor=4, patch=0, wants_membership=False, priority=1, private_name="eve"
        ),
        "0404001003657665",
        decode_connect_request,
    ),
    (
        "connect 3.14 has no patch byte",
        ConnectRequest(major=3, minor=14, patch=0, private_name="x"),
        "030e010178",
        decode_connect_request,
    ),
    ("connect empty name", ConnectRequest(), "0500010100", decode_connect_request),
    ("auth list NULL", AuthList(), "054e554c4c20", decode_auth_reply),
    ("auth list two", AuthList(("NULL", "IP")), "084e554c4c20495020", decode_auth_reply),
    ("reject not unique", Reject(SpError.REJECT_NOT_UNIQUE), "fa", decode_auth_reply),
    ("reject quota", Reject(SpError.REJECT_QUOTA), "fd", decode_auth_reply),
    (
        "auth choice NULL IP",
        AuthChoice(("NULL", "IP")),
        ("4e554c4c".ljust(60, "0") + "4950".ljust(60, "0")).ljust(180, "0"),
        decode_auth_choice,
    ),
    (
        "accept with patch",
        Accept(private_group="#a#b"),
        "010500010423612362",
        lambda b: decode_accept_reply(b, with_patch=True),
    ),
    (
        "accept without patch",
        Accept(patch=None, private_group="#a#b"),
        "0105000423612362",
        lambda b: decode_accept_reply(b, with_patch=False),
    ),
    (
        "reject auth at accept time",
        Reject(SpError.REJECT_AUTH),
        "f7",
        lambda b: decode_accept_reply(b, with_patch=True),
    ),
]


def encode_any(obj: object) -> bytes:
    match obj:
        case ConnectRequest():
            return encode_connect_request(obj)
        case AuthList():
            return encode_auth_list(obj)
        case Reject():
            return encode_reject(obj)
        case AuthChoice():
            return encode_auth_choice(obj)
        case Accept():
            return encode_accept(obj)
    raise AssertionError(obj)


@pytest.mark.parametrize(
    ("obj", "hex_", "decode"), [pytest.param(*row[1:], id=row[0]) for row in HANDSHAKE_ROWS]
)
def test_handshake_table(obj: object, hex_: str, decode: Callable[[bytes], object]) -> None:
    assert encode_any(obj) == bytes.fromhex(hex_)
    assert decode(bytes.fromhex(hex_)) == obj


REQUEST_ROWS: list[tuple[str, object, str, Endian, bytes]] = [
    (
        "agreed LE",
        Multicast(service_type=ST.AGREED_MESS, groups=("test",), mess_type=7, data=b"hi"),
        ALICE,
        Endian.LITTLE,
        header("little", 0x10, ALICE, 1, 0x80000780, 2, "little") + name32("test") + b"hi",
    ),
    (
        "safe|self_discard BE two groups negative mess_type",
        Multicast(
            service_type=ST.SAFE_MESS | ST.SELF_DISCARD,
            groups=("a", "#b#c"),
            mess_type=-2,
            data=b"",
            endian=Endian.BIG,
        ),
        ALICE,
        Endian.BIG,
        header("big", 0x60, ALICE, 2, 0x00FFFE00, 0, "big") + name32("a") + name32("#b#c"),
    ),
    (
        "multicast to no group",
        Multicast(service_type=ST.UNRELIABLE_MESS, groups=(), data=b"z"),
        ALICE,
        Endian.LITTLE,
        header("little", 0x01, ALICE, 0, 0x80000080, 1, "little") + b"z",
    ),
    (
        "join BE",
        Join("test"),
        "#bige#localhost",
        Endian.BIG,
        header("big", 0x10000, "#bige#localhost", 1, 0, 0, "big") + name32("test"),
    ),
    (
        "leave LE",
        Leave("g$~"),
        ALICE,
        Endian.LITTLE,
        header("little", 0x20000, ALICE, 1, 0x80000080, 0, "little") + name32("g$~"),
    ),
    (
        "kill names the sender",
        Kill(),
        ALICE,
        Endian.LITTLE,
        header("little", 0x40000, ALICE, 1, 0x80000080, 0, "little") + name32(ALICE),
    ),
]


@pytest.mark.parametrize(
    ("request_", "sender", "endian", "frame"),
    [pytest.param(*row[1:], id=row[0]) for row in REQUEST_ROWS],
)
def test_request_table(request_: Any, sender: str, endian: Endian, frame: bytes) -> None:
    assert encode_request(request_, sender=sender, endian=endian) == frame
    assert decode_request(frame) == (sender, request_)


def membership_body(
    order: str, gid: tuple[int, int, int], sets: list[list[str]], local: int
) -> bytes:
    body = b"".join(word(v, order) for v in gid) + word(len(sets), order)
    offsets, area = [], b""
    for vs in sets:
        offsets.append(len(area))
        area += word(len(vs), order) + b"".join(name32(m) for m in vs)
    return body + word(offsets[local] if sets else 0, order) + area


DAEMON_ROWS: list[tuple[str, DaemonMessage, Endian, bytes]] = [
    (
        "regular LE relaying a BE hint",
        RegularMessage(
            service_type=ST.AGREED_MESS,
            sender="#bige#localhost",
            groups=("test",),
            mess_type=258,
            data=b"BEmsg",
            endian=Endian.BIG,
        ),
        Endian.LITTLE,
        header("little", 0x10, "#bige#localhost", 1, 0x00010200, 5, "big")
        + name32("test")
        + b"BEmsg",
    ),
    (
        "regular BE self discard",
        RegularMessage(
            service_type=ST.FIFO_MESS | ST.SELF_DISCARD,
            sender=ALICE,
            groups=("#bob#localhost",),
            mess_type=9,
            data=b"p2p",
        ),
        Endian.BIG,
        header("big", 0x44, ALICE, 1, 0x80000980, 3, "little") + name32("#bob#localhost") + b"p2p",
    ),
    (
        "network membership BE, receiver in the second vs_set",
        MembershipMessage(
            group="g",
            cause=MembershipCause.NETWORK,
            group_id=GroupId(-1958641374, 1795587608, 1),
            members=("#a#d1", "#b#d2", "#c#d2"),
            vs_sets=(("#a#d1",), ("#b#d2", "#c#d2")),
            local_vs_set=1,
        ),
        Endian.BIG,
        header("big", 0x1800, "g", 3, 0, 20 + 36 + 68, "big")
        + name32("#a#d1")
        + name32("#b#d2")
        + name32("#c#d2")
        + membership_body("big", (-1958641374, 1795587608, 1), [["#a#d1"], ["#b#d2", "#c#d2"]], 1),
    ),
    (
        "disconnect membership LE",
        MembershipMessage(
            group="test",
            cause=MembershipCause.DISCONNECT,
            group_id=GroupId(482711334, 1795587525, 3),
            members=(ALICE,),
            vs_sets=(("#bob#localhost",),),
        ),
        Endian.LITTLE,
        bytes.fromhex("80140080")
        + name32("test")
        + word(1, "little")
        + bytes.fromhex("80000080")
        + word(56, "little")
        + name32(ALICE)
        + membership_body("little", (482711334, 1795587525, 3), [["#bob#localhost"]], 0),
    ),
    (
        "transitional BE",
        TransitionalMessage("g", GroupId(1, 2, 3)),
        Endian.BIG,
        header("big", 0x2000, "g", 0, 0, 12, "big")
        + word(1, "big")
        + word(2, "big")
        + word(3, "big"),
    ),
    (
        "self leave LE",
        SelfLeave("test"),
        Endian.LITTLE,
        bytes.fromhex("80020080") + name32("test") + bytes.fromhex("00000000 80000080 00000000"),
    ),
    (
        "reject of a join, BE",
        RejectMessage(
            old_type=ST.CAUSED_BY_JOIN,
            sender=ALICE,
            groups=("test", ALICE),
            endian=Endian.BIG,
        ),
        Endian.BIG,
        header("big", 0x400000, ALICE, 2, 0, 0, "big")
        + word(0x100, "big")
        + name32("test")
        + name32(ALICE),
    ),
]


@pytest.mark.parametrize(
    ("message", "endian", "frame"), [pytest.param(*row[1:], id=row[0]) for row in DAEMON_ROWS]
)
def test_daemon_message_table(message: DaemonMessage, endian: Endian, frame: bytes) -> None:
    assert encode_daemon_message(message, endian=endian) == frame
    assert decode_daemon_message(frame) == message


def swapped_type(frame: bytes) -> int:
    """The type word read in the order its mark says it was written in."""
    little = int.from_bytes(frame[:4], "little")
    return little if little & ENDIAN_MARK == ENDIAN_MARK else int.from_bytes(frame[:4], "big")


@pytest.mark.parametrize("message", [pytest.param(row[1], id=row[0]) for row in DAEMON_ROWS])
def test_endianness_flip_of_daemon_messages(message: DaemonMessage) -> None:
    little = encode_daemon_message(message, endian=Endian.LITTLE)
    big = encode_daemon_message(message, endian=Endian.BIG)
    assert decode_daemon_message(little) == decode_daemon_message(big) == message
    assert swapped_type(big) | ENDIAN_MARK == swapped_type(little)  # LE writers mark it
    for start in (36, 44):  # num_groups and data_len swap; the hint does not
        assert big[start : start + 4] == little[start : start + 4][::-1]
    assert big[4:36] == little[4:36]
    if isinstance(message, (RegularMessage, RejectMessage)):  # the sender's hint, relayed
        assert big[40:44] == little[40:44]
    else:  # the daemon's own hint: just its mark
        assert (big[40:44], little[40:44]) == (bytes(4), bytes.fromhex("80000080"))


@pytest.mark.parametrize("request_", [pytest.param(row[1], id=row[0]) for row in REQUEST_ROWS])
def test_endianness_flip_of_requests(request_: Any) -> None:
    little = encode_request(request_, sender=ALICE, endian=Endian.LITTLE)
    big = encode_request(request_, sender=ALICE, endian=Endian.BIG)
    assert decode_request(little) == decode_request(big) == (ALICE, request_)
    assert swapped_type(big) | ENDIAN_MARK == swapped_type(little)
    assert big[36:40] == little[36:40][::-1]
    assert decode_header(big).endian is Endian.BIG


def test_constants_match_the_spec() -> None:
    assert (ST.REG_MEMB_MESS | ST.CAUSED_BY_JOIN) == 0x1100
    assert ST.MEMBERSHIP_MESS == 0x3F00 and ST.REGULAR_MESS == 0x3F
    assert (ST.JOIN_MESS, ST.LEAVE_MESS, ST.KILL_MESS) == (0x10000, 0x20000, 0x40000)
    assert (ST.REJECT_MESS, ST.DROP_RECV, ENDIAN_MARK) == (0x400000, 0x1000000, 0x80000080)
    assert SpError.ILLEGAL_MESSAGE == -13 and SpError.CONNECTION_CLOSED == -8
    assert SpError.MESSAGE_TOO_LONG == -17 and SpError.ILLEGAL_TIME == -20
    assert (MAX_GROUP_NAME, MAX_PRIVATE_NAME, MAX_GROUPS_PER_MESSAGE) == (32, 10, 100)
    assert (MAX_MESSAGE_BODY_LEN, RING_SAFE_MAX_BODY_LEN, AUTH_CHOICE_LEN) == (144000, 142752, 90)
    assert is_regular(0x10) and not is_regular(0x400010)
    assert is_membership(0x1100) and is_self_leave(0x200) and not is_self_leave(0x1200)


def test_names() -> None:
    assert valid_private_name("$~") and not valid_private_name("a#b")
    assert not valid_private_name("") and not valid_private_name("a" * 11)
    assert not valid_private_name("\u0124x")  # '?' after a lossy encode would pass: must not
    assert valid_group_name("a" * 31) and not valid_group_name("a" * 32)
    assert not valid_group_name("#priv#d") and not valid_group_name("a b")
    assert private_group_name("abcdefghij", "d" * 19) == "#abcdefghij#" + "d" * 19
    assert private_group_name("abcdefghij", "d" * 25) == ("#abcdefghij#" + "d" * 25)[:31]
    assert split_private_group("#alice#localhost") == ("alice", "localhost")
    assert split_private_group("alice") is None and split_private_group("#a#b#c") is None
    names = {generate_private_name(random.Random(seed), 9) for seed in range(50)}
    assert all(valid_private_name(n) and len(n) <= 9 and n.startswith("r") for n in names)
    assert generate_private_name(random.Random(1), 123456) == generate_private_name(
        random.Random(1), 123456
    )


def test_reject_for_a_full_group_list_replaces_the_last_name() -> None:
    groups = tuple(f"g{i}" for i in range(100))
    m = Multicast(service_type=ST.AGREED_MESS, groups=groups, data=b"d")
    reject = RejectMessage.for_request(m, ALICE)
    assert reject.groups == (*groups[:99], ALICE)
    assert decode_daemon_message(encode_daemon_message(reject)) == reject
    leave = RejectMessage.for_request(Leave("g"), ALICE)
    assert leave.old_type == ST.CAUSED_BY_LEAVE and leave.groups == ("g", ALICE)


def test_membership_helpers() -> None:
    m = DAEMON_ROWS[3][1]
    assert isinstance(m, MembershipMessage)
    assert m.changed_member == "#bob#localhost" and m.index_of(ALICE) == 0
    assert m.index_of("#x#y") == -1 and m.service_type == 0x1400
    network = DAEMON_ROWS[2][1]
    assert isinstance(network, MembershipMessage) and network.changed_member is None


@pytest.mark.parametrize(
    ("encode", "why"),
    [
        (lambda: encode_connect_request(ConnectRequest(private_name="a b")), "bad name"),
        (lambda: encode_connect_request(ConnectRequest(priority=16)), "priority"),
        (lambda: encode_connect_request(ConnectRequest(major=3, minor=14, patch=1)), "patch"),
        (lambda: encode_auth_list(AuthList(("A B",))), "space"),
        (lambda: encode_auth_choice(AuthChoice(("A", "B", "C", "D"))), "four methods"),
        (lambda: encode_auth_choice(AuthChoice(("x" * 30,))), "long method"),
        (lambda: encode_reject(Reject(SpError.ILLEGAL_MESSAGE)), "not a reject code"),
        (lambda: encode_accept(Accept(private_group="#" * 32)), "long group"),
        (
            lambda: encode_request(
                Multicast(service_type=ST.AGREED_MESS | ST.SAFE_MESS, groups=("g",)), sender=ALICE
            ),
            "two services",
        ),
        (
            lambda: encode_request(
                Multicast(service_type=ST.AGREED_MESS, groups=("g",), mess_type=40000),
                sender=ALICE,
            ),
            "mess_type range",
        ),
        (
            lambda: encode_request(
                Multicast(service_type=ST.AGREED_MESS, groups=("g\0",)), sender=ALICE
            ),
            "NUL in a group",
        ),
        (
            lambda: encode_request(
                Multicast(service_type=ST.AGREED_MESS, groups=("€",)), sender=ALICE
            ),
            "not latin-1",
        ),
        (
            lambda: encode_request(
                Multicast(service_type=ST.AGREED_MESS, groups=("g",) * 101), sender=ALICE
            ),
            "101 groups",
        ),
        (
            lambda: encode_request(
                Multicast(
                    service_type=ST.AGREED_MESS, groups=("g",), data=bytes(RING_SAFE_MAX_BODY_LEN)
                ),
                sender=ALICE,
            ),
            "too long",
        ),
        (lambda: encode_request(Join("#p#d"), sender=ALICE), "join a private group"),
        (
            lambda: encode_daemon_message(
                RegularMessage(service_type=ST.REJECT_MESS | ST.AGREED_MESS, sender="s", groups=())
            ),
            "regular must be regular",
        ),
        (
            lambda: encode_daemon_message(
                MembershipMessage(
                    group="g",
                    cause=MembershipCause.JOIN,
                    group_id=GroupId(0, 0, 2**31),
                    members=(),
                    vs_sets=((),),
                )
            ),
            "index beyond int32",
        ),
        (
            lambda: encode_daemon_message(
                MembershipMessage(
                    group="g",
                    cause=MembershipCause.JOIN,
                    group_id=GroupId(0, 0, 1),
                    members=(),
                    vs_sets=((),),
                    local_vs_set=1,
                )
            ),
            "local vs_set out of range",
        ),
    ],
)
def test_encoders_refuse_what_the_wire_cannot_carry(encode: Callable[[], bytes], why: str) -> None:
    with pytest.raises(LocalProtocolError):
        encode()


def test_body_limit_boundary() -> None:
    fits = Multicast(
        service_type=ST.AGREED_MESS, groups=("g",), data=bytes(RING_SAFE_MAX_BODY_LEN - 32)
    )
    frame = encode_request(fits, sender=ALICE)
    assert decode_request(frame) == (ALICE, fits)
    s = established_server()
    s.receive_data(frame)
    assert s.next_event() == MulticastFrame.from_request(fits, ALICE)
    over = bytearray(frame)
    over[44:48] = word(RING_SAFE_MAX_BODY_LEN - 31, "little")
    s2 = established_server()
    s2.receive_data(bytes(over[:48]))  # refused on the header alone, before any data
    with pytest.raises(WireError) as err:
        s2.next_event()
    assert err.value.code == SpError.MESSAGE_TOO_LONG


# --- daemon-side request validation (§6.3 and our stricter rules) ---------------------------


def raw_request(
    type_: int,
    groups: list[bytes] | None = None,
    *,
    sender: str = ALICE,
    hint: bytes = bytes.fromhex("80000080"),
    data: bytes = b"",
    num_groups: int | None = None,
    data_len: int | None = None,
) -> bytes:
    groups = [name32("test")] if groups is None else groups
    return (
        word(type_ | ENDIAN_MARK, "little")
        + name32(sender)
        + word(len(groups) if num_groups is None else num_groups, "little")
        + hint
        + word(len(data) if data_len is None else data_len, "little")
        + b"".join(groups)
        + data
    )


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        pytest.param(raw_request(0x30), SpError.ILLEGAL_SERVICE, id="agreed|safe"),
        pytest.param(raw_request(0x30000), SpError.ILLEGAL_SERVICE, id="join|leave"),
        pytest.param(raw_request(0x10010), SpError.ILLEGAL_SERVICE, id="agreed|join"),
        pytest.param(raw_request(0x0), SpError.ILLEGAL_SERVICE, id="no bit"),
        pytest.param(raw_request(0x40), SpError.ILLEGAL_SERVICE, id="self discard alone"),
        pytest.param(raw_request(0x1110), SpError.ILLEGAL_SERVICE, id="forged membership bits"),
        pytest.param(raw_request(0x400010), SpError.ILLEGAL_SERVICE, id="forged reject bit"),
        pytest.param(raw_request(0x80010), SpError.ILLEGAL_SERVICE, id="groups_mess bit"),
        pytest.param(raw_request(0x10, sender="#bob#localhost"), SpError.ILLEGAL_SESSION,
                     id="another session"),
        pytest.param(raw_request(0x10, sender="#alice#elsewhere"), SpError.ILLEGAL_SESSION,
                     id="another daemon"),
        pytest.param(raw_request(0x10, num_groups=101, groups=[]), SpError.ILLEGAL_MESSAGE,
                     id="101 groups"),
        pytest.param(raw_request(0x10, num_groups=-1, groups=[]), SpError.ILLEGAL_MESSAGE,
                     id="negative groups"),
        pytest.param(raw_request(0x10, data_len=-5), SpError.ILLEGAL_MESSAGE, id="negative data"),
        pytest.param(raw_request(0x10, hint=bytes.fromhex("80000081")), SpError.ILLEGAL_MESSAGE,
                     id="hint low bits"),
        pytest.param(raw_request(0x10, hint=bytes.fromhex("80000000")), SpError.ILLEGAL_MESSAGE,
                     id="hint half mark"),
        pytest.param(raw_request(0x10, groups=[b"x" * 32]), SpError.ILLEGAL_GROUP,
                     id="group without NUL"),
        pytest.param(raw_request(0x10000, groups=[name32("#p#localhost")]),
                     SpError.ILLEGAL_GROUP, id="join a private group"),
        pytest.param(raw_request(0x10000, groups=[name32("")]), SpError.ILLEGAL_GROUP,
                     id="join the empty name"),
        pytest.param(raw_request(0x20000, groups=[name32("a"), name32("b")]),
                     SpError.ILLEGAL_GROUP, id="leave two groups"),
        pytest.param(raw_request(0x10, sender="x" * 32), SpError.ILLEGAL_MESSAGE,
                     id="sender without NUL"),
    ],
)  # fmt: skip
def test_server_refuses_bad_requests_silently(frame: bytes, code: int) -> None:
    s = established_server()
    s.receive_data(frame)
    with pytest.raises(WireError) as err:
        s.next_event()
    assert err.value.code == code
    assert s.state is ServerState.ERROR and s.failure_reply() == b""
    with pytest.raises(LocalProtocolError):
        s.next_event()


def test_server_keeps_only_self_discard_of_extra_bits() -> None:
    s = established_server()
    s.receive_data(raw_request(0x01000050, data=b"d"))  # AGREED | SELF_DISCARD | DROP_RECV
    event = s.next_event()
    assert isinstance(event, Multicast)
    assert event.service_type == ST.AGREED_MESS | ST.SELF_DISCARD
    s.receive_data(raw_request(0x10 | 0x40000000, groups=[b"test\0junk".ljust(32, b"\xee")]))
    event = s.next_event()
    assert isinstance(event, Multicast) and event.groups == ("test",)


def test_kill_ignores_its_group_slot_and_ends_the_session() -> None:
    s = established_server()
    s.receive_data(raw_request(0x40000, groups=[b"\x01" * 32], data=b"x"))
    assert s.next_event() == Kill()
    assert s.state is ServerState.CLOSED
    s.receive_data(b"anything after KILL is dropped")
    assert s.next_event() == ConnectionClosed()
    with pytest.raises(LocalProtocolError):
        s.send(SelfLeave("g"))


# --- sessions --------------------------------------------------------------------------------


def server_step(
    s: ServerSession, taken: frozenset[str] = frozenset()
) -> tuple[bytes, list[object]]:
    """Run a server until it needs data, answering decisions the way a daemon would."""
    out, events = b"", []
    while True:
        event = s.next_event()
        if isinstance(event, (Sentinel, ConnectionClosed)):
            return out, events
        events.append(event)
        match event:
            case ConnectRequest():
                name = event.private_name or "r1-1"
                out += s.reject(SpError.REJECT_NOT_UNIQUE) if name in taken else s.assign_name(name)
            case Authenticated():
                out += s.accept()


def client_events(c: ClientConnection) -> list[object]:
    events = []
    while not isinstance(event := c.next_event(), Sentinel):
        events.append(event)
        if isinstance(event, ConnectionClosed):
            break
    return events


def connect_pair(
    name: str = "alice",
    *,
    request: ConnectRequest | None = None,
    server_endian: Endian = Endian.LITTLE,
    client_endian: Endian = Endian.LITTLE,
) -> tuple[ServerSession, ClientConnection]:
    s = ServerSession(daemon_name="localhost", endian=server_endian)
    c = ClientConnection(endian=client_endian)
    s.receive_data(c.send(request or ConnectRequest(private_name=name)))
    out, _ = server_step(s)
    c.receive_data(out)
    events = client_events(c)
    if isinstance(events[0], AuthList):
        s.receive_data(c.send(AuthChoice()))
        out, _ = server_step(s)
        c.receive_data(out)
        events = client_events(c)
    assert isinstance(events[0], Accept)
    assert s.state is ServerState.ESTABLISHED and c.state is ClientState.ESTABLISHED
    return s, c


def established_server(name: str = "alice") -> ServerSession:
    return connect_pair(name)[0]


def as_server_event(request: object) -> object:
    """What a ServerSession of ALICE hands the daemon for `request`."""
    if isinstance(request, Multicast):
        return MulticastFrame.from_request(request, ALICE)
    return request


@pytest.mark.parametrize("server_endian", list(Endian))
@pytest.mark.parametrize("client_endian", list(Endian))
def test_pair_talks_in_any_byte_order(server_endian: Endian, client_endian: Endian) -> None:
    s, c = connect_pair(server_endian=server_endian, client_endian=client_endian)
    assert c.private_group == s.private_group == ALICE
    s.receive_data(c.join("test"))
    assert s.next_event() == Join("test")
    s.receive_data(c.multicast(ST.SAFE_MESS, ["test", "other"], b"payload", mess_type=-7))
    sent = s.next_event()
    assert isinstance(sent, MulticastFrame) and sent.message().endian is client_endian
    c.receive_data(s.relay(sent.frame))
    (got,) = client_events(c)
    assert isinstance(got, RegularMessage)
    assert (got.mess_type, got.data, got.endian, got.groups) == (
        -7,
        b"payload",
        client_endian,
        ("test", "other"),
    )
    frames = [sent.frame, sent.frame]  # a run, as the daemon relays it: the same bytes each
    relayed = s.relay_frames(frames)
    assert relayed == [s.relay(sent.frame)] * 2
    assert (relayed is frames) is (server_endian is Endian.LITTLE)  # nothing built for little
    c.receive_data(b"".join(relayed))
    assert [(m.data, m.endian) for m in client_events(c)] == [(b"payload", client_endian)] * 2
    s.receive_data(c.disconnect())
    assert s.next_event() == Kill() and c.state is ClientState.CLOSED


def test_handshake_survives_one_byte_segments() -> None:
    s = ServerSession(daemon_name="localhost")
    c = ClientConnection()
    wire = c.send(ConnectRequest(private_name="alice"))
    for i in range(len(wire) - 1):
        s.receive_data(wire[i : i + 1])
        assert s.next_event() is NEED_DATA
    s.receive_data(wire[-1:])
    assert s.next_event() == ConnectRequest(private_name="alice")
    assert s.next_event() is PAUSED  # our move
    auth_list = s.assign_name("alice")
    for byte in auth_list:
        c.receive_data(bytes((byte,)))
    assert client_events(c) == [AuthList()]
    assert c.next_event() is PAUSED
    choice = c.send(AuthChoice())
    s.receive_data(choice[:89])
    assert s.next_event() is NEED_DATA
    s.receive_data(choice[89:])
    assert s.next_event() == Authenticated(("NULL",))
    c.receive_data(s.accept())
    assert client_events(c) == [Accept(private_group=ALICE)]


def test_pipelined_client_bytes_wait_for_their_turn() -> None:
    c = ClientConnection()
    request = c.send(ConnectRequest(private_name="alice"))
    choice = encode_auth_choice(AuthChoice())
    join = encode_request(Join("test"), sender=ALICE)
    s = ServerSession(daemon_name="localhost")
    s.receive_data(request + choice + join)
    out, events = server_step(s)
    assert events == [ConnectRequest(private_name="alice"), Authenticated(("NULL",)), Join("test")]
    assert out == encode_auth_list(AuthList()) + encode_accept(Accept(private_group=ALICE))


def test_legacy_library_gets_no_auth_exchange() -> None:
    legacy = ConnectRequest(major=3, minor=14, patch=0, private_name="carol")
    _, c = connect_pair(request=legacy)
    assert c.accepted == Accept(patch=None, private_group="#carol#localhost")
    _, c315 = connect_pair(request=ConnectRequest(major=3, minor=15, patch=0, private_name="d"))
    assert c315.accepted is not None and c315.accepted.patch == 1
    s2 = ServerSession(daemon_name="localhost")
    s2.receive_data(encode_connect_request(legacy))
    s2.next_event()
    assert s2.assign_name("carol") == b""
    assert s2.next_event() == Authenticated(())
    assert s2.next_event() is PAUSED


def test_empty_name_takes_the_daemons_choice() -> None:
    s = ServerSession(daemon_name="localhost")
    s.receive_data(encode_connect_request(ConnectRequest()))
    assert s.next_event() == ConnectRequest()
    with pytest.raises(LocalProtocolError):
        s.assign_name("")
    s.assign_name("r6504-9")
    assert s.private_group == "#r6504-9#localhost"


def test_name_decisions_are_checked() -> None:
    s = ServerSession(daemon_name="localhost")
    with pytest.raises(LocalProtocolError):
        s.assign_name("alice")  # nothing requested yet
    with pytest.raises(LocalProtocolError):
        s.accept()
    s.receive_data(encode_connect_request(ConnectRequest(private_name="alice")))
    s.next_event()
    with pytest.raises(LocalProtocolError):
        s.assign_name("bob")  # not what the client asked for
    with pytest.raises(LocalProtocolError):
        s.reject(SpError.ILLEGAL_MESSAGE)  # not a reject code
    assert s.reject(SpError.REJECT_NOT_UNIQUE) == b"\xfa"
    assert s.state is ServerState.CLOSED and s.next_event() == ConnectionClosed()


def test_quota_reject_before_reading() -> None:
    s = ServerSession(daemon_name="localhost")
    assert s.reject(SpError.REJECT_QUOTA) == b"\xfd"
    c = ClientConnection()
    c.send(ConnectRequest(private_name="x"))
    c.receive_data(b"\xfd")
    assert client_events(c) == [Reject(SpError.REJECT_QUOTA), ConnectionClosed()]


@pytest.mark.parametrize(
    ("data", "code", "reply"),
    [
        (bytes.fromhex("0300000105"), SpError.REJECT_VERSION, b"\xf9"),
        (bytes.fromhex("05000101"), None, None),  # waiting for the length byte
        (bytes.fromhex("050001010b"), SpError.REJECT_ILLEGAL_NAME, b"\xfb"),
        (bytes.fromhex("05000101ff"), SpError.REJECT_ILLEGAL_NAME, b"\xfb"),
        (bytes.fromhex("0500010103612362"), SpError.REJECT_ILLEGAL_NAME, b"\xfb"),
        (bytes.fromhex("050001010361007f"), SpError.REJECT_ILLEGAL_NAME, b"\xfb"),
    ],
)
def test_connect_request_errors(data: bytes, code: int | None, reply: bytes | None) -> None:
    s = ServerSession(daemon_name="localhost")
    s.receive_data(data)
    if code is None:
        assert s.next_event() is NEED_DATA
        return
    with pytest.raises(WireError) as err:
        s.next_event()
    assert err.value.code == code and s.failure_reply() == reply


@pytest.mark.parametrize(
    ("choice", "offered"),
    [
        (encode_auth_choice(AuthChoice(("PWORD",))), ("NULL",)),
        (encode_auth_choice(AuthChoice(("NULL", "IP"))), ("NULL",)),
        (bytes(AUTH_CHOICE_LEN), ("NULL",)),
    ],
)
def test_auth_choice_errors(choice: bytes, offered: tuple[str, ...]) -> None:
    s = ServerSession(daemon_name="localhost", auth_methods=offered)
    s.receive_data(encode_connect_request(ConnectRequest(private_name="a")))
    server_step(s)
    s.receive_data(choice)
    with pytest.raises(WireError) as err:
        s.next_event()
    assert err.value.code == SpError.REJECT_AUTH and s.failure_reply() == b"\xf7"


def test_auth_policy_and_ip_method() -> None:
    s = ServerSession(daemon_name="localhost", auth_methods=("NULL", "IP"))
    c = ClientConnection()
    s.receive_data(c.send(ConnectRequest(private_name="a")))
    out, _ = server_step(s)
    c.receive_data(out)
    assert client_events(c) == [AuthList(("NULL", "IP"))]
    with pytest.raises(LocalProtocolError):
        c.send(AuthChoice(("PWORD",)))  # not offered
    s.receive_data(c.send(AuthChoice(("IP",))))
    assert s.next_event() == Authenticated(("IP",))
    c.receive_data(s.reject(SpError.REJECT_AUTH))  # the access policy said no
    assert client_events(c) == [Reject(SpError.REJECT_AUTH), ConnectionClosed()]


@pytest.mark.parametrize(
    ("fed", "reply"),
    [
        (b"", b""),
        (bytes.fromhex("050001"), b""),
        (bytes.fromhex("0500010105"), b""),  # no name byte yet
        (bytes.fromhex("050001010561"), b"\xfb"),  # name cut short
        (bytes.fromhex("030e0105616263"), b"\xfb"),  # same for a 3.14 library
    ],
)
def test_handshake_deadline_before_the_request(fed: bytes, reply: bytes) -> None:
    s = ServerSession(daemon_name="localhost")
    if fed:
        s.receive_data(fed)
    assert s.next_event() is NEED_DATA
    assert s.handshake_timed_out() == reply
    assert s.state is ServerState.CLOSED


def test_handshake_deadline_during_auth_and_after() -> None:
    s = ServerSession(daemon_name="localhost")
    s.receive_data(encode_connect_request(ConnectRequest(private_name="a")))
    server_step(s)
    s.receive_data(b"NULL\0")
    assert s.next_event() is NEED_DATA
    assert s.handshake_timed_out() == b"\xf7"
    with pytest.raises(LocalProtocolError):
        established_server().handshake_timed_out()


def test_eof_and_data_after_eof() -> None:
    s = established_server()
    s.receive_data(raw_request(0x10, data=b"abc")[:60])
    assert s.next_event() is NEED_DATA
    s.receive_data(b"")
    assert s.next_event() == ConnectionClosed()
    assert s.state is ServerState.CLOSED
    s2 = ServerSession(daemon_name="localhost")
    s2.receive_data(b"")
    with pytest.raises(LocalProtocolError):
        s2.receive_data(b"x")


def test_buffer_bound_while_paused() -> None:
    s = ServerSession(daemon_name="localhost", max_buffered_bytes=200)
    s.receive_data(encode_connect_request(ConnectRequest(private_name="a")) + bytes(300))
    assert isinstance(s.next_event(), ConnectRequest)
    with pytest.raises(WireError):
        s.next_event()  # our move, with more buffered than any unit may be


def test_client_bounds_daemon_messages() -> None:
    _, c = connect_pair()
    c2 = ClientConnection(max_frame_bytes=1000)
    c2.send(ConnectRequest(private_name="alice"))
    c2.receive_data(encode_auth_list(AuthList()))
    c2.next_event()
    c2.send(AuthChoice())
    c2.receive_data(encode_accept(Accept(private_group=ALICE)))
    c2.next_event()
    big = RegularMessage(service_type=ST.AGREED_MESS, sender=ALICE, groups=(), data=bytes(2000))
    c2.receive_data(encode_daemon_message(big)[:48])
    with pytest.raises(WireError) as err:
        c2.next_event()
    assert err.value.code == SpError.MESSAGE_TOO_LONG and c2.state is ClientState.ERROR
    c.receive_data(encode_daemon_message(big))
    assert client_events(c) == [big]


def test_membership_only_for_sessions_that_asked() -> None:
    s, _ = connect_pair(request=ConnectRequest(wants_membership=False, private_name="quiet"))
    assert not s.wants_membership
    for notice in (SelfLeave("g"), TransitionalMessage("g", GroupId(1, 2, 3))):
        with pytest.raises(LocalProtocolError):
            s.send(notice)
    regular = RegularMessage(service_type=ST.AGREED_MESS, sender="#x#y", groups=("g",))
    assert s.send(regular) == encode_daemon_message(regular)
    with pytest.raises(LocalProtocolError):
        s.send(RejectMessage.for_request(Join("g"), "#other#localhost"))


@pytest.mark.parametrize(
    ("reply", "code"),
    [
        (bytes.fromhex("0102000104232a2361"), SpError.REJECT_VERSION),  # daemon 2.0
        (bytes.fromhex("010500012023"), SpError.CONNECTION_CLOSED),  # name length 32
        (bytes.fromhex("0105000100"), SpError.CONNECTION_CLOSED),  # empty private group
        (bytes.fromhex("02"), SpError.CONNECTION_CLOSED),  # neither accept nor reject
        (bytes.fromhex("018500010423612362"), SpError.CONNECTION_CLOSED),  # negative version
    ],
)
def test_client_refuses_bad_accepts(reply: bytes, code: int) -> None:
    c = ClientConnection()
    c.send(ConnectRequest(private_name="a"))
    c.receive_data(encode_auth_list(AuthList()))
    c.next_event()
    c.send(AuthChoice())
    c.receive_data(reply)
    with pytest.raises(WireError) as err:
        c.next_event()
    assert err.value.code == code and c.state is ClientState.ERROR


def test_priority_needs_a_daemon_from_3_8() -> None:
    c = ClientConnection()
    c.send(ConnectRequest(priority=1, private_name="a"))
    c.receive_data(encode_auth_list(AuthList()))
    c.next_event()
    c.send(AuthChoice())
    c.receive_data(encode_accept(Accept(major=3, minor=7, patch=0, private_group="#a#d")))
    with pytest.raises(WireError) as err:
        c.next_event()
    assert err.value.code == SpError.REJECT_VERSION


def test_client_moves_out_of_turn() -> None:
    c = ClientConnection()
    with pytest.raises(LocalProtocolError):
        c.join("test")
    with pytest.raises(LocalProtocolError):
        c.send(AuthChoice())
    with pytest.raises(LocalProtocolError):
        c.send(ConnectRequest(major=3, minor=0, patch=0))  # daemons refuse it
    assert c.next_event() is PAUSED
    c.send(ConnectRequest(private_name="a"))
    with pytest.raises(LocalProtocolError):
        c.send(ConnectRequest(private_name="a"))
    with pytest.raises(LocalProtocolError):
        c.multicast(ST.AGREED_MESS, "g")
    _, c2 = connect_pair()
    with pytest.raises(LocalProtocolError):
        c2.multicast(ST.AGREED_MESS | ST.SAFE_MESS, "g")
    with pytest.raises(LocalProtocolError):
        c2.join("bad name")
    assert c2.state is ClientState.ESTABLISHED  # refused moves change nothing
    c2.disconnect()
    with pytest.raises(LocalProtocolError):
        c2.join("test")


def test_server_constructor_checks() -> None:
    for kwargs in (
        {"daemon_name": ""},
        {"daemon_name": "x" * 20},
        {"daemon_name": "a#b"},
        {"daemon_name": "d", "auth_methods": ()},
        {"daemon_name": "d", "daemon_version": (5, 0, 200)},
        {"daemon_name": "d", "max_body_len": MAX_MESSAGE_BODY_LEN},
    ):
        with pytest.raises(LocalProtocolError):
            ServerSession(**kwargs)  # type: ignore[arg-type]


# --- the tables (h2-style totality) ----------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "states", "inputs", "start", "terminal"),
    [
        (SERVER_TRANSITIONS, list(ServerState), list(ServerInput), ServerState.AWAIT_CONNECT,
         {ServerState.CLOSED, ServerState.ERROR}),
        (CLIENT_TRANSITIONS, list(ClientState), list(ClientInput), ClientState.START,
         {ClientState.CLOSED, ClientState.ERROR}),
    ],
)  # fmt: skip
def test_transition_tables_are_total_and_sound(
    table: Any, states: list[Any], inputs: list[Any], start: Any, terminal: set[Any]
) -> None:
    for state in states:
        for inp in inputs:
            nxt = table.get((state, inp))
            assert nxt is None or nxt in states
        exits = {inp for (s, inp) in table if s is state}
        if state in terminal:
            assert not exits, f"{state} must be final"
        else:
            assert {i for i in inputs if i.name in ("EOF", "PROTOCOL_ERROR")} <= exits
    reached, frontier = {start}, [start]
    while frontier:
        state = frontier.pop()
        for (s, _), nxt in table.items():
            if s is state and nxt not in reached:
                reached.add(nxt)
                frontier.append(nxt)
    assert reached == set(states)


SERVER_MOVES: dict[str, Callable[[ServerSession], object]] = {
    "assign_name": lambda s: s.assign_name("alice"),
    "accept": ServerSession.accept,
    "reject": lambda s: s.reject(SpError.REJECT_AUTH),
    "send": lambda s: s.send(SelfLeave("g")),
    "handshake_timed_out": ServerSession.handshake_timed_out,
    "failure_reply": ServerSession.failure_reply,
    "next_event": ServerSession.next_event,
}
ALLOWED_MOVES = {
    ServerState.AWAIT_CONNECT: {"reject", "handshake_timed_out", "next_event"},
    ServerState.NAME_DECISION: {"assign_name", "reject", "next_event"},
    ServerState.AWAIT_AUTH_CHOICE: {"handshake_timed_out", "next_event"},
    ServerState.AUTH_DECISION: {"accept", "reject", "next_event"},
    ServerState.ESTABLISHED: {"send", "next_event"},
    ServerState.CLOSED: {"next_event"},
    ServerState.ERROR: {"failure_reply"},
}


@pytest.mark.parametrize("state", list(ServerState))
@pytest.mark.parametrize("move", list(SERVER_MOVES))
def test_every_server_move_in_every_state(state: ServerState, move: str) -> None:
    """Each (state, our move) pair is either allowed or refused without changing anything."""
    s = server_in(state)
    if move in ALLOWED_MOVES[state]:
        SERVER_MOVES[move](s)
    else:
        with pytest.raises(LocalProtocolError):
            SERVER_MOVES[move](s)
        assert s.state is state


def server_in(state: ServerState) -> ServerSession:
    s = ServerSession(daemon_name="localhost")
    request = encode_connect_request(ConnectRequest(private_name="alice"))
    if state is ServerState.AWAIT_CONNECT:
        return s
    if state is ServerState.ERROR:
        s.receive_data(b"\x00\x00")
        with pytest.raises(WireError):
            s.next_event()
        return s
    if state is ServerState.CLOSED:
        s.reject(SpError.REJECT_QUOTA)
        return s
    s.receive_data(request)
    s.next_event()
    if state is ServerState.NAME_DECISION:
        return s
    s.assign_name("alice")
    if state is ServerState.AWAIT_AUTH_CHOICE:
        return s
    s.receive_data(encode_auth_choice(AuthChoice()))
    s.next_event()
    if state is ServerState.AUTH_DECISION:
        return s
    s.accept()
    return s


# --- hypothesis: round trips -----------------------------------------------------------------

latin_names = st.text(st.characters(min_codepoint=1, max_codepoint=255), max_size=31)
group_names = st.text(
    st.characters(min_codepoint=0x24, max_codepoint=0x7E), min_size=1, max_size=31
)
private_names = st.text(
    st.characters(min_codepoint=0x24, max_codepoint=0x7E), min_size=1, max_size=10
)
endians = st.sampled_from(list(Endian))
mess_types = st.integers(-0x8000, 0x7FFF)
i32 = st.integers(-(2**31), 2**31 - 1)
services = st.builds(
    lambda bit, discard: ServiceType(bit | (0x40 if discard else 0)),
    st.sampled_from([1, 2, 4, 8, 16, 32]),
    st.booleans(),
)
multicasts = st.builds(
    Multicast,
    service_type=services,
    groups=st.lists(latin_names, max_size=6).map(tuple),
    mess_type=mess_types,
    data=st.binary(max_size=300),
    endian=endians,
)
requests = st.one_of(multicasts, group_names.map(Join), group_names.map(Leave), st.just(Kill()))
regular_types = (
    st.integers(0, 2**32 - 1).map(lambda t: t & ~ENDIAN_MARK).filter(is_regular).map(ServiceType)
)


@st.composite
def memberships(draw: st.DrawFn) -> MembershipMessage:
    vs_sets = draw(st.lists(st.lists(latin_names, max_size=4).map(tuple), max_size=4).map(tuple))
    local = draw(st.integers(0, len(vs_sets) - 1)) if vs_sets else None
    return MembershipMessage(
        group=draw(latin_names),
        cause=draw(st.sampled_from(list(MembershipCause))),
        group_id=GroupId(draw(i32), draw(i32), draw(i32)),
        members=draw(st.lists(latin_names, max_size=6).map(tuple)),
        vs_sets=vs_sets,
        local_vs_set=local,
    )


daemon_messages = st.one_of(
    st.builds(
        RegularMessage,
        service_type=regular_types,
        sender=latin_names,
        groups=st.lists(latin_names, max_size=6).map(tuple),
        mess_type=mess_types,
        data=st.binary(max_size=300),
        endian=endians,
    ),
    memberships(),
    st.builds(TransitionalMessage, latin_names, st.builds(GroupId, i32, i32, i32)),
    st.builds(SelfLeave, latin_names),
    st.builds(
        RejectMessage,
        old_type=st.integers(0, 2**32 - 1)
        .map(lambda t: t & ~ENDIAN_MARK & ~int(ST.REJECT_MESS))
        .map(ServiceType),
        sender=latin_names,
        groups=st.lists(latin_names, max_size=6).map(tuple),
        mess_type=mess_types,
        data=st.binary(max_size=100),
        endian=endians,
    ),
)
connect_requests = st.builds(
    ConnectRequest,
    # Version bytes are signed chars to the daemon (as to the original): real libraries keep
    # them below 0x80; bytes above that make a "version" older than 3.1 (REJECT_VERSION).
    major=st.integers(4, 127),
    minor=st.integers(0, 127),
    patch=st.integers(0, 255),
    wants_membership=st.booleans(),
    priority=st.integers(0, 15),
    private_name=st.one_of(st.just(""), private_names),
)


@given(requests, private_names, endians)
@SETTINGS
def test_request_round_trip(request_: Any, name: str, endian: Endian) -> None:
    sender = private_group_name(name, "daemon")
    assert decode_request(encode_request(request_, sender=sender, endian=endian)) == (
        sender,
        request_,
    )


@given(daemon_messages, endians)
@SETTINGS
def test_daemon_message_round_trip(message: DaemonMessage, endian: Endian) -> None:
    assert decode_daemon_message(encode_daemon_message(message, endian=endian)) == message


@given(connect_requests, st.lists(private_names, min_size=1, max_size=3), latin_names)
@SETTINGS
def test_handshake_round_trip(request: ConnectRequest, methods: list[str], group: str) -> None:
    assert decode_connect_request(encode_connect_request(request)) == request
    assert decode_auth_reply(encode_auth_list(AuthList(tuple(methods)))) == AuthList(tuple(methods))
    choice = AuthChoice(tuple(methods))
    assert decode_auth_choice(encode_auth_choice(choice)) == choice
    if group:
        accept = Accept(private_group=group)
        assert decode_accept_reply(encode_accept(accept), with_patch=True) == accept


# --- hypothesis: arbitrary and truncated bytes -----------------------------------------------

DECODERS: list[Callable[[bytes], object]] = [
    decode_connect_request,
    decode_auth_reply,
    decode_auth_choice,
    lambda b: decode_accept_reply(b, with_patch=True),
    lambda b: decode_accept_reply(b, with_patch=False),
    decode_header,
    decode_request,
    decode_daemon_message,
]


@given(st.binary(max_size=400), st.sampled_from(range(len(DECODERS))))
@SETTINGS
def test_decoders_raise_only_wire_error(data: bytes, which: int) -> None:
    with contextlib.suppress(WireError):
        DECODERS[which](data)


def mutate(data: bytes, edits: list[tuple[int, int]]) -> bytes:
    out = bytearray(data)
    for pos, value in edits:
        if out:
            out[pos % len(out)] = value
    return bytes(out)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


@given(
    request=connect_requests,
    wire_requests=st.lists(requests, max_size=4),
    edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=4),
    cuts=st.lists(st.integers(0, 10**6), max_size=6),
    noise=st.binary(max_size=64),
    eof=st.booleans(),
)
@SETTINGS
def test_server_session_takes_any_bytes(
    request: ConnectRequest,
    wire_requests: list[Any],
    edits: list[tuple[int, int]],
    cuts: list[int],
    noise: bytes,
    eof: bool,
) -> None:
    sender = private_group_name(request.private_name or "r1-1", "localhost")
    stream = encode_connect_request(request) + encode_auth_choice(AuthChoice())
    stream += b"".join(encode_request(r, sender=sender) for r in wire_requests) + noise
    s = ServerSession(daemon_name="localhost")
    try:
        for piece in split(mutate(stream, edits), cuts):
            s.receive_data(piece)
            server_step(s)
        if eof:
            s.receive_data(b"")
            server_step(s)
            assert s.state is ServerState.CLOSED
    except WireError:
        assert s.state is ServerState.ERROR
        assert s.failure_reply() in (b"", b"\xf9", b"\xfb", b"\xf7")


@given(
    messages=st.lists(daemon_messages, max_size=4),
    endian=endians,
    edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=4),
    cuts=st.lists(st.integers(0, 10**6), max_size=6),
    noise=st.binary(max_size=64),
)
@SETTINGS
def test_client_connection_takes_any_bytes(
    messages: list[DaemonMessage],
    endian: Endian,
    edits: list[tuple[int, int]],
    cuts: list[int],
    noise: bytes,
) -> None:
    stream = encode_auth_list(AuthList()) + encode_accept(Accept(private_group=ALICE))
    stream += b"".join(encode_daemon_message(m, endian=endian) for m in messages) + noise
    c = ClientConnection()
    c.send(ConnectRequest(private_name="alice"))
    try:
        for piece in split(mutate(stream, edits), cuts):
            c.receive_data(piece)
            client_events(c)
            if c.state is ClientState.AUTH_CHOICE:
                assert c.auth_list is not None
                if "NULL" not in c.auth_list.methods:
                    return  # the mutated list no longer offers NULL: a real client stops here
                c.send(AuthChoice())
                client_events(c)
    except WireError:
        assert c.state is ClientState.ERROR


@given(daemon_messages, endians, st.data())
@SETTINGS
def test_truncated_daemon_frames_wait_then_complete(
    message: DaemonMessage, endian: Endian, data: st.DataObject
) -> None:
    _, c = connect_pair()
    frame = encode_daemon_message(message, endian=endian)
    cut = data.draw(st.integers(1, len(frame) - 1))  # b"" would mean EOF
    c.receive_data(frame[:cut])
    assert c.next_event() is NEED_DATA
    c.receive_data(frame[cut:])
    assert c.next_event() == message
    c.receive_data(frame[: data.draw(st.integers(1, len(frame) - 1))])
    c.receive_data(b"")  # the daemon went away mid-message
    assert c.next_event() == ConnectionClosed()


@given(requests, st.data())
@SETTINGS
def test_truncated_requests_wait_then_complete(request_: Any, data: st.DataObject) -> None:
    s = established_server()
    frame = encode_request(request_, sender=ALICE)
    cut = data.draw(st.integers(1, len(frame) - 1))  # b"" would mean EOF
    s.receive_data(frame[:cut])
    assert s.next_event() is NEED_DATA
    s.receive_data(frame[cut:])
    assert s.next_event() == as_server_event(request_)


def test_wire_error_carries_the_code() -> None:
    with pytest.raises(WireError) as err:
        decode_request(struct.pack("<I", 0x80000000) + bytes(44))
    assert err.value.code == SpError.ILLEGAL_SERVICE


# --- relayed multicasts (§7.1) ---------------------------------------------------------------


@given(st.binary(min_size=48, max_size=48), st.sampled_from(["little", "big"]), st.data())
@SETTINGS
def test_request_fast_path_agrees_with_the_general_decoder(
    raw: bytes, order: str, data: st.DataObject
) -> None:
    """read_request_head (the daemon's per-request path) accepts and refuses exactly what
    decode_header + check_request_header do, with the same codes, for a clean sender field."""
    head = bytearray(raw)
    head[4:36] = ALICE.encode().ljust(32, b"\0")
    if data.draw(st.booleans()):  # plausible words, so the checks get past the type
        service = data.draw(st.sampled_from([1, 2, 4, 8, 16, 32, 0x50, 0x10000, 0x20000]))
        head[0:4] = word(service | (ENDIAN_MARK if order == "little" else 0), order)
        head[36:40] = word(data.draw(st.integers(-2, 102)), order)
        head[44:48] = word(data.draw(st.integers(-2, 200_000)), order)
    try:
        h = decode_header(bytes(head))
        check_request_header(h, max_body_len=DAEMON_MAX_BODY_LEN)
        general: object = (request_frame_len(h), h.service_type, h.endian is Endian.LITTLE)
    except WireError as exc:
        general = exc.code
    try:
        size, service_type, little, groups = read_request_head(bytes(head), DAEMON_MAX_BODY_LEN)
        fast: object = (size, service_type, little)
        assert groups == h.num_groups
    except WireError as exc:
        fast = exc.code
    assert fast == general


def test_relayed_frame_is_the_delivery_and_cleans_the_sender_field() -> None:
    s = established_server()
    request = Multicast(service_type=ST.FIFO_MESS, groups=("g", "h"), mess_type=3, data=b"abc")
    frame = bytearray(encode_request(request, sender=ALICE))
    frame[4 + len(ALICE) + 1 : 36] = b"\xee" * (31 - len(ALICE))  # junk after the NUL, as libspread
    s.receive_data(bytes(frame))
    event = s.next_event()
    assert isinstance(event, MulticastFrame)
    assert event.frame == encode_request(request, sender=ALICE)
    assert event.message() == RegularMessage.from_multicast(request, ALICE)
    assert relay_frame_targets(event.frame) == (int(ST.FIFO_MESS), ("g", "h"))


def test_group_names_are_read_per_frame_whatever_was_read_before() -> None:
    """The group fields' decoding is remembered per distinct block of fields: a frame must get
    its own names, and a bad field must fail even right after a good one."""

    def frame(*groups: str) -> bytes:
        return encode_request(Multicast(service_type=ST.AGREED_MESS, groups=groups), sender=ALICE)

    for _ in range(2):  # the second round reads every block from the cache
        assert relay_frame_targets(frame("g")) == (int(ST.AGREED_MESS), ("g",))
        assert relay_frame_targets(frame("h")) == (int(ST.AGREED_MESS), ("h",))
        assert relay_frame_targets(frame("g", "h"))[1] == ("g", "h")
        assert relay_frame_targets(frame("h", "g"))[1] == ("h", "g")
        assert relay_frame_targets(frame(*"abcdef"))[1] == tuple("abcdef")  # not remembered
        bad = bytearray(frame("g", "h"))
        bad[80:112] = b"h" * 32  # the second field loses its NUL
        with pytest.raises(ValueError, match="NUL"):
            relay_frame_targets(bytes(bad))


def test_group_field_without_nul_is_illegal_group() -> None:
    s = established_server()
    frame = bytearray(
        encode_request(Multicast(service_type=ST.AGREED_MESS, groups=("g",)), sender=ALICE)
    )
    frame[48:80] = b"g" * 32
    s.receive_data(bytes(frame))
    with pytest.raises(WireError) as err:
        s.next_event()
    assert err.value.code == SpError.ILLEGAL_GROUP


def _relay(groups: tuple[str, ...] = ("g",), data: bytes = b"xy") -> bytes:
    return MulticastFrame.from_request(
        Multicast(service_type=ST.SAFE_MESS, groups=groups, data=data), ALICE
    ).frame


@pytest.mark.parametrize(
    ("frame", "why"),
    [
        (_relay()[:47], "shorter than a header"),
        (_relay()[:-1], "wrong length"),
        (_relay() + b"\0", "wrong length"),
        (word(0x10, "big") + _relay()[4:], "lacks the little-endian mark"),
        (word(ENDIAN_MARK | 0x30, "little") + _relay()[4:], "not one service"),
        (word(ENDIAN_MARK | 0x1000, "little") + _relay()[4:], "not one service"),
        (_relay()[:36] + word(101, "little") + _relay()[40:], "101 groups"),
        (_relay()[:48] + b"g" * 32 + _relay()[80:], "no NUL"),
    ],
)
def test_malformed_relay_frames_are_refused(frame: bytes, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        relay_frame_targets(frame)
    with pytest.raises(ValueError, match=why):
        relay_frame_targets(
            b"\1\0\0\0\7" + frame, 5
        )  # inside a ring item, as the groups layer reads


@given(daemon_messages, endians)
@SETTINGS
def test_library_fast_path_decodes_as_the_general_decoder(message: Any, endian: Endian) -> None:
    """regular_message_from_frame gives what decode_daemon_message gives, or None (and the
    library then decodes the general way) — never a different message."""
    frame = encode_daemon_message(message, endian=endian)
    fast = regular_message_from_frame(frame)
    assert fast is None or fast == decode_daemon_message(frame)
    if isinstance(message, RegularMessage) and int(message.service_type) in MULTICAST_REQUEST_TYPES:
        assert fast == message  # every message a daemon relays takes the fast path


@given(multicasts, st.sampled_from([ALICE, "#b#n2"]), endians)
@SETTINGS
def test_encode_multicast_matches_encode_request(m: Multicast, sender: str, endian: Endian) -> None:
    fields = [name_field(g) for g in m.groups]
    frame = encode_multicast(
        int(m.service_type), name_field(sender), fields, m.data, m.mess_type, endian
    )
    assert frame == encode_request(replace(m, endian=endian), sender=sender, endian=endian)

"""Replay every captured client-protocol vector (shared/spec/vectors/client, spec §11).

Three layers, each against bytes captured from the real 5.0.1 daemon and libspread:
  * codec: every unit decodes to the values its `fields` list, and re-encodes to the same bytes
    (KILL's group slot compared up to its NUL: libspread sends junk after it, spec §4);
  * libspread scenarios: a tiny one-daemon replay (names, groups, group ids, delivery) drives one
    ServerSession per connection and must write exactly the captured daemon bytes; one
    ClientConnection per connection must write exactly the captured library bytes and decode what
    libspread reported to the test program (`client_api_results`);
  * raw probes (connect errors, legacy handshakes, invalid headers, a big-endian client).
"""

from __future__ import annotations

import re
from collections import defaultdict, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from spreadpy.errors import WireError
from spreadpy.wire import (
    ENDIAN_MARK,
    Accept,
    AuthChoice,
    AuthList,
    ConnectRequest,
    Endian,
    GroupId,
    Join,
    Kill,
    Leave,
    MembershipCause,
    MembershipMessage,
    MessageHeader,
    Multicast,
    MulticastFrame,
    RegularMessage,
    Reject,
    RejectMessage,
    SelfLeave,
    ServiceType,
    SpError,
    TransitionalMessage,
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
    encode_reject,
    encode_request,
    split_private_group,
)
from spreadpy.wire_session import (
    Authenticated,
    ClientConnection,
    ConnectionClosed,
    Sentinel,
    ServerSession,
    ServerState,
)

from .vectors import (
    LIBSPREAD_SCENARIOS,
    RAW_PROBES,
    VECTOR_DIR,
    chunk_bytes,
    load_vector,
    needs_vectors,
    without_kill_junk,
)

pytestmark = needs_vectors

DAEMON = "localhost"


def fields_of(chunk: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = list(chunk.get("fields", []))
    for message in chunk.get("messages", []):
        assert message["hex"] == chunk["hex"]
        found += message["fields"]
    return found


def test_every_vector_file_is_replayed() -> None:
    on_disk = {p.stem for p in VECTOR_DIR.glob("*.json")}
    assert on_disk == set(LIBSPREAD_SCENARIOS) | set(RAW_PROBES)


# --- codec layer: decode to the listed fields, re-encode to the same bytes ---------------------


def decode_unit(chunk: dict[str, Any], data: bytes) -> object:
    unit = chunk.get("unit") or ""
    first = fields_of(chunk)[0]["field"] if fields_of(chunk) else ""
    if unit == "connect request" or first == "lib major version":
        return decode_connect_request(data)
    if unit in ("auth method list", "connect rejected") or first.startswith("reject code"):
        return decode_auth_reply(data)
    if unit == "auth method choice":
        return decode_auth_choice(data)
    if unit == "connect accepted":
        return decode_accept_reply(data, with_patch=True)
    if chunk["dir"] == "client->daemon":
        return decode_request(data)
    return decode_daemon_message(data)


def reencode(obj: object, header: MessageHeader | None) -> bytes:
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
        case (str() as sender, request):
            assert header is not None
            return encode_request(request, sender=sender, endian=header.endian)
    assert header is not None
    return encode_daemon_message(obj, endian=header.endian)  # type: ignore[arg-type]


def typed_type(obj: object) -> int:
    match obj:
        case (_, Multicast() as m):
            return int(m.service_type)
        case (_, Join()):
            return int(ServiceType.JOIN_MESS)
        case (_, Leave()):
            return int(ServiceType.LEAVE_MESS)
        case (_, Kill()):
            return int(ServiceType.KILL_MESS)
        case RegularMessage() | MembershipMessage():
            return int(obj.service_type)
        case SelfLeave():
            return int(ServiceType.CAUSED_BY_LEAVE)
    raise AssertionError(obj)


def typed_names(obj: object, raw: bytes) -> tuple[str, ...]:
    match obj:
        case (_, Multicast() as m):
            return m.groups
        case (_, Join(group) | Leave(group)):
            return (group,)
        case (_, Kill()):  # the typed Kill drops the slot; libspread writes its own group there
            return (raw[48:80].split(b"\0")[0].decode(),)
        case RegularMessage():
            return obj.groups
        case MembershipMessage():
            return obj.members
    return ()


def typed_hint_bytes(obj: object, header: MessageHeader) -> bytes:
    mark = ENDIAN_MARK if header.endian is Endian.LITTLE else 0
    match obj:
        case (_, Multicast() as m):
            mess_type, order = m.mess_type, m.endian
        case RegularMessage():
            mess_type, order = obj.mess_type, obj.endian
        case MembershipMessage() | SelfLeave():
            return mark.to_bytes(4, "little" if header.endian is Endian.LITTLE else "big")
        case _:  # join, leave, kill: nothing typed; libspread writes mess_type 0
            mess_type, order = 0, header.endian
    value = ((mess_type << 8) & 0xFFFF00) | (ENDIAN_MARK if order is Endian.LITTLE else 0)
    return value.to_bytes(4, "little" if order is Endian.LITTLE else "big")


def typed_data_len(obj: object) -> int:
    match obj:
        case (_, Multicast() as m):
            return len(m.data)
        case RegularMessage():
            return len(obj.data)
        case MembershipMessage():
            return 20 + sum(4 + 32 * len(vs) for vs in obj.vs_sets)
    return 0


def check_field(obj: object, header: MessageHeader | None, raw: bytes, f: dict[str, Any]) -> None:
    name, value = f["field"], f["value"]
    key = re.sub(r"\[\d+\]", "[i]", name)
    idx = [int(i) for i in re.findall(r"\[(\d+)\]", name)]
    order = "big" if header is not None and header.endian is Endian.BIG else "little"
    match obj, key:
        case ConnectRequest(), "lib major version":
            assert obj.major == value
        case ConnectRequest(), "lib minor version":
            assert obj.minor == value
        case ConnectRequest(), "lib patch version":
            assert obj.patch == value
        case ConnectRequest(), "flags byte":
            assert (obj.priority << 4) | obj.wants_membership == int(value, 16)
        case ConnectRequest(), "private name length":
            assert len(obj.private_name) == value
        case ConnectRequest(), "private name":
            assert obj.private_name == value
        case AuthList(), "auth list length":
            assert len("".join(f"{m} " for m in obj.methods)) == value
        case AuthList(), "auth list (space separated, trailing space)":
            assert "".join(f"{m} " for m in obj.methods) == value
        case AuthChoice(), _ if key.startswith("auth method slot"):
            slot = int(key.split()[3])
            assert (obj.methods[slot] if slot < len(obj.methods) else "") == value
        case Accept(), "accept code (ACCEPT_SESSION)":
            assert value == 1
        case Accept(), "daemon major":
            assert obj.major == value
        case Accept(), "daemon minor":
            assert obj.minor == value
        case Accept(), "daemon patch":
            assert obj.patch == value
        case Accept(), "private group name length":
            assert len(obj.private_group) == value
        case Accept(), "private group name":
            assert obj.private_group == value
        case Reject(), _ if key.startswith("reject code"):
            assert obj.code == value
        case _, _ if key.startswith("type ("):
            assert header is not None
            assert typed_type(obj) | (ENDIAN_MARK if order == "little" else 0) == int(value, 16)
        case _, _ if key.startswith("sender"):
            sender = obj[0] if isinstance(obj, tuple) else getattr(obj, "sender", None)
            assert (sender or getattr(obj, "group", None)) == value
        case _, _ if key.startswith("num_groups"):
            assert len(typed_names(obj, raw)) == value
        case _, _ if key.startswith("hint"):
            assert header is not None
            assert int.from_bytes(typed_hint_bytes(obj, header), order) == int(value, 16)
        case _, _ if key.startswith("data_len"):
            assert typed_data_len(obj) == value
        case _, "group[i]":
            assert typed_names(obj, raw)[idx[0]] == value
        case MembershipMessage(), "group_id {proc_id, time, index} (3 x i32)":
            gid = obj.group_id
            assert [gid.proc_id, gid.time, gid.index] == value
        case MembershipMessage(), "num_vs_sets (u32)":
            assert len(obj.vs_sets) == value
        case MembershipMessage(), "local vs_set offset (u32, bytes from start of first vs_set)":
            assert obj.local_vs_set is not None
            assert sum(4 + 32 * len(vs) for vs in obj.vs_sets[: obj.local_vs_set]) == value
        case MembershipMessage(), "vs_set[i].num_members (u32)":
            assert len(obj.vs_sets[idx[0]]) == value
        case MembershipMessage(), "vs_set[i].member[i]":
            assert obj.vs_sets[idx[0]][idx[1]] == value
        case (_, Multicast() as m), "data":
            assert m.data.decode() == value
        case RegularMessage(), "data":
            assert obj.data.decode() == value
        case (_, Multicast() as m), "data (payload, not inlined)":
            assert len(m.data) == int(value.split()[0])
        case RegularMessage(), "data (payload, not inlined)":
            assert len(obj.data) == int(value.split()[0])
        case _:
            raise AssertionError(f"no check for field {name!r} of {type(obj).__name__}")


def check_header_fields(h: MessageHeader, raw: bytes, fields: list[dict[str, Any]]) -> None:
    mark = ENDIAN_MARK if h.endian is Endian.LITTLE else 0
    for f in fields:
        name, value = f["field"], f["value"]
        if name.startswith("type"):
            assert h.service_type | mark == int(value, 16)
        elif name.startswith("sender"):
            assert h.sender == value
        elif name.startswith("num_groups"):
            assert h.num_groups == value
        elif name.startswith("hint"):
            assert h.hint == int(value, 16)
        elif name.startswith("data_len"):
            assert h.data_len == value
        else:
            index = int(re.fullmatch(r"group\[(\d+)\]", name)[1])  # type: ignore[index]
            assert raw[48 + 32 * index : 80 + 32 * index].split(b"\0")[0].decode() == value


def captured_units() -> Iterator[tuple[str, int, dict[str, Any]]]:
    if not VECTOR_DIR.is_dir():
        return
    for name in (*LIBSPREAD_SCENARIOS, *RAW_PROBES):
        for i, chunk in enumerate(load_vector(name)["chunks"]):
            if chunk["hex"] and (chunk.get("unit") or fields_of(chunk)):
                yield name, i, chunk


@pytest.mark.parametrize(
    ("name", "index", "chunk"),
    [pytest.param(n, i, c, id=f"{n}-{i}") for n, i, c in captured_units()],
)
def test_unit_decodes_to_its_fields_and_reencodes(
    name: str, index: int, chunk: dict[str, Any]
) -> None:
    data = chunk_bytes(chunk)
    if name == "invalid_requests":  # headers a daemon must refuse: they decode, then fail
        check_header_fields(decode_header(data), data, fields_of(chunk))
        if chunk["case"] == "invalid_header_wrong_sender":  # only a session can tell
            assert decode_request(data)[0] == "#nobody#localhost"
        else:
            with pytest.raises(WireError):
                decode_request(data)
        return
    obj = decode_unit(chunk, data)
    header = (
        decode_header(data)
        if len(data) >= 48
        and chunk.get("unit") not in ("auth method choice",)
        and not isinstance(obj, (ConnectRequest, AuthList, Reject, Accept))
        else None
    )
    for f in fields_of(chunk):
        check_field(obj, header, data, f)
    again = reencode(obj, header)
    if isinstance(obj, tuple) and isinstance(obj[1], Kill):
        assert again == without_kill_junk(data)
    else:
        assert again == data


# --- libspread scenarios: sessions on both ends ------------------------------------------------


@dataclass
class ReplayDaemon:
    """Just enough of a one-daemon Spread to answer the captured sessions.

    It makes the decisions a vector fixes: private names (a generated one is read from the
    capture), group membership ordered by private group name, group ids counting changes from 1
    under the ring id the capture shows, and delivery to members and addressed private groups.
    """

    proc_id: int
    ring_time: int
    generated_names: dict[int, str] = field(default_factory=dict)
    sessions: dict[int, ServerSession] = field(default_factory=dict)
    names: dict[str, int] = field(default_factory=dict)
    groups: dict[str, list[int]] = field(default_factory=dict)
    index: dict[str, int] = field(default_factory=dict)
    gone: set[int] = field(default_factory=set)
    outbox: defaultdict[int, deque[bytes]] = field(default_factory=lambda: defaultdict(deque))

    def connect(self, conn: int) -> None:
        self.sessions[conn] = ServerSession(daemon_name=DAEMON)

    def feed(self, conn: int, data: bytes) -> None:
        session = self.sessions[conn]
        session.receive_data(data)
        while True:
            event = session.next_event()
            match event:
                case Sentinel():
                    return
                case ConnectRequest():
                    name = event.private_name or self.generated_names[conn]
                    if name in self.names:
                        self.outbox[conn].append(session.reject(SpError.REJECT_NOT_UNIQUE))
                    else:
                        self.names[name] = conn
                        self.outbox[conn].append(session.assign_name(name))
                case Authenticated():
                    self.outbox[conn].append(session.accept())
                case Join(group):
                    self._join(conn, group)
                case Leave(group):
                    self._leave(conn, group)
                case MulticastFrame():
                    self._multicast(conn, event)
                case Kill() | ConnectionClosed():
                    self._gone(conn)
                    return

    def _pg(self, conn: int) -> str:
        group = self.sessions[conn].private_group
        assert group is not None
        return group

    def _notify(self, group: str, cause: MembershipCause, changed: str) -> None:
        members = self.groups[group]
        message = MembershipMessage(
            group=group,
            cause=cause,
            group_id=GroupId(self.proc_id, self.ring_time, self.index[group]),
            members=tuple(self._pg(c) for c in members),
            vs_sets=((changed,),),
            local_vs_set=0,
        )
        for conn in members:
            if self.sessions[conn].wants_membership:
                self.outbox[conn].append(self.sessions[conn].send(message))

    def _join(self, conn: int, group: str) -> None:
        members = self.groups.setdefault(group, [])
        if conn in members:
            return
        members.append(conn)
        members.sort(key=self._pg)
        self.index[group] = self.index.get(group, 0) + 1
        self._notify(group, MembershipCause.JOIN, self._pg(conn))

    def _remove(self, conn: int, group: str, cause: MembershipCause) -> None:
        self.groups[group].remove(conn)
        self.index[group] += 1
        if self.groups[group]:
            self._notify(group, cause, self._pg(conn))
        else:
            del self.groups[group], self.index[group]

    def _leave(self, conn: int, group: str) -> None:
        if conn not in self.groups.get(group, ()):
            return
        if self.sessions[conn].wants_membership:
            self.outbox[conn].append(self.sessions[conn].send(SelfLeave(group)))
        self._remove(conn, group, MembershipCause.LEAVE)

    def _gone(self, conn: int) -> None:
        if conn in self.gone:
            return
        self.gone.add(conn)
        for group in [g for g, members in self.groups.items() if conn in members]:
            self._remove(conn, group, MembershipCause.DISCONNECT)
        name = self.sessions[conn].private_name
        if name is not None and self.names.get(name) == conn:
            del self.names[name]

    def _multicast(self, conn: int, m: MulticastFrame) -> None:
        """The daemon relays the frame its session built: the capture must show those bytes."""
        message = m.message()
        assert message.sender == self._pg(conn)
        for other, session in self.sessions.items():
            if other in self.gone or session.state is not ServerState.ESTABLISHED:
                continue
            if other == conn and m.service_type & ServiceType.SELF_DISCARD:
                continue
            addressed = session.private_group in message.groups
            member = any(other in self.groups.get(g, ()) for g in message.groups)
            if addressed or member:
                self.outbox[other].append(session.relay(m.frame))


def render(
    client: ClientConnection, event: object, last_gid: dict[int, GroupId], key: int
) -> list[str]:
    """What libspread reported to the capture's test program for the same message."""
    match event:
        case Accept():
            return [f"CONNECT ret=1 private_group={event.private_group}"]
        case Reject():
            return [f"CONNECT ret={event.code} private_group=-"]
        case RegularMessage():
            mismatch = int(event.endian is not client.endian)
            lines = [
                f"RECV ret={len(event.data)} service=0x{int(event.service_type):08x} "
                f"sender={event.sender} num_groups={len(event.groups)} "
                f"mess_type={event.mess_type} endian={mismatch}"
            ]
            lines += [f"  group[{i}]={g}" for i, g in enumerate(event.groups)]
            shown = event.data[:64]
            return [*lines, f"  data[0:{len(shown)}]={shown.hex()}"]
        case MembershipMessage():
            assert client.private_group is not None
            last_gid[key] = gid = event.group_id
            lines = [
                f"RECV ret={typed_data_len(event)} service=0x{int(event.service_type):08x} "
                f"sender={event.group} num_groups={len(event.members)} "
                f"mess_type={event.index_of(client.private_group)} endian=0"
            ]
            lines += [f"  group[{i}]={m}" for i, m in enumerate(event.members)]
            lines.append(
                f"  gid={gid.proc_id} {gid.time} {gid.index} "
                f"changed={event.changed_member or '-'} num_vs_sets={len(event.vs_sets)}"
            )
            for i, vs in enumerate(event.vs_sets):
                local = "(local)" if i == event.local_vs_set else ""
                lines.append(f"  vs_set[{i}]{local} n={len(vs)}: {' '.join(vs)}")
            return lines
        case SelfLeave():
            # The test program printed its previous group id again: a self-leave has no body.
            gid = last_gid[key]
            return [
                f"RECV ret=0 service=0x{int(ServiceType.CAUSED_BY_LEAVE):08x} "
                f"sender={event.group} num_groups=0 mess_type=-1 endian=0",
                f"  gid={gid.proc_id} {gid.time} {gid.index} changed=- num_vs_sets=0",
            ]
    return []


def drain(client: ClientConnection, last_gid: dict[int, GroupId], key: int) -> list[str]:
    lines: list[str] = []
    while not isinstance(event := client.next_event(), (Sentinel, ConnectionClosed)):
        lines += render(client, event, last_gid, key)
    return lines


def api_view(lines: list[str]) -> list[str]:
    """The CONNECT and RECV reports (with their detail lines); call results carry no bytes."""
    kept: list[str] = []
    keep = False
    for line in lines:
        if not line.startswith(" "):
            keep = line.startswith(("CONNECT ", "RECV "))
        if keep:
            kept.append(line)
    return kept


def ring_id(vector: dict[str, Any]) -> tuple[int, int]:
    views = vector.get("client_api_results") or {"": vector.get("little_endian_receiver_api_view")}
    for lines in views.values():
        for line in lines:
            if match := re.match(r"\s+gid=(-?\d+) (-?\d+) ", line):
                return int(match[1]), int(match[2])
    return 0, 0


def our_client_bytes(client: ClientConnection, unit: str, data: bytes) -> bytes:
    if unit == "connect request":
        return client.send(decode_connect_request(data))
    if unit == "auth method choice":
        return client.send(AuthChoice(("NULL",)))
    sender, request = decode_request(data)
    assert sender == client.private_group
    return client.send(request)


@pytest.mark.parametrize("name", LIBSPREAD_SCENARIOS)
def test_libspread_scenario(name: str) -> None:
    vector = load_vector(name)
    conns = sorted(int(c) for c in vector["connections"])
    api_keys = list(vector["client_api_results"])
    assert len(conns) == len(api_keys)
    chunks = vector["chunks"]
    generated: dict[int, str] = {}
    for i, chunk in enumerate(chunks):  # a name the daemon invented is fixed by the capture
        if chunk["unit"] == "connect request" and bytes.fromhex(chunk["hex"])[4] == 0:
            accept = next(c for c in chunks[i:] if c["unit"] == "connect accepted")
            reply = decode_accept_reply(bytes.fromhex(accept["hex"]), with_patch=True)
            assert isinstance(reply, Accept)
            split = split_private_group(reply.private_group)
            assert split is not None and split[1] == DAEMON
            generated[chunk["conn"]] = split[0]
    daemon = ReplayDaemon(*ring_id(vector), generated_names=generated)
    clients: dict[int, ClientConnection] = {}
    seen: dict[int, list[str]] = defaultdict(list)
    last_gid: dict[int, GroupId] = {}
    for chunk in chunks:
        conn, unit, data = chunk["conn"], chunk["unit"], chunk_bytes(chunk)
        if conn not in clients:
            clients[conn] = ClientConnection()
            daemon.connect(conn)
        client = clients[conn]
        if chunk["dir"] == "client->daemon":
            if data:
                ours = our_client_bytes(client, unit, data)
                expected = without_kill_junk(data) if unit.startswith("KILL") else data
                assert ours == expected, f"seq {chunk['seq']}: our {unit} differs"
            daemon.feed(conn, data)
        elif data:
            assert daemon.outbox[conn], f"seq {chunk['seq']}: we have nothing for {unit}"
            assert daemon.outbox[conn].popleft() == data, f"seq {chunk['seq']}: {unit} differs"
            client.receive_data(data)
            seen[conn] += drain(client, last_gid, conn)
        else:  # the daemon closed: after a reject, or after the client's KILL or EOF
            assert daemon.sessions[conn].state is ServerState.CLOSED
            client.receive_data(b"")
            drain(client, last_gid, conn)
    for conn, key in zip(conns, api_keys, strict=True):
        assert not daemon.outbox[conn], f"{key}: we would send more than was captured"
        assert seen[conn] == api_view(vector["client_api_results"][key]), key


# --- raw probes ------------------------------------------------------------------------------


def cases(name: str) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for chunk in load_vector(name)["chunks"]:
        grouped[chunk["case"]].append(chunk)
    return dict(grouped)


def drive(session: ServerSession, data: bytes) -> tuple[bytes, WireError | None]:
    """Feed one client unit; what the daemon writes back (names are all free here)."""
    session.receive_data(data)
    out = b""
    while True:
        try:
            event = session.next_event()
        except WireError as err:
            return out + session.failure_reply(), err
        match event:
            case ConnectRequest():
                out += session.assign_name(event.private_name or "anon")
            case Authenticated():
                out += session.accept()
            case _:
                return out, None


CONNECT_ERRORS = {
    "illegal_name_char": SpError.REJECT_ILLEGAL_NAME,
    "name_too_long": SpError.REJECT_ILLEGAL_NAME,
    "old_version": SpError.REJECT_VERSION,
    "unknown_auth_method": SpError.REJECT_AUTH,
    "short_auth_choice": None,  # we wait for the rest (spec §3.8); the deadline answers
}


def test_connect_errors() -> None:
    found = cases("connect_errors")
    assert set(found) == set(CONNECT_ERRORS)
    for case, chunks in found.items():
        session = ServerSession(daemon_name=DAEMON)
        reply, error = b"", None
        for chunk in chunks:
            data = bytes.fromhex(chunk["hex"])
            if chunk["dir"] == "client->daemon":
                reply, error = drive(session, data)
                continue
            if case == "short_auth_choice" and chunk["hex"] == "f7":
                assert (reply, error) == (b"", None)  # 5 of 90 bytes: still waiting
                assert session.state is ServerState.AWAIT_AUTH_CHOICE
                reply = session.handshake_timed_out()
            assert reply == data, case
            reply = b""
        expected = CONNECT_ERRORS[case]
        assert (error.code if error else None) == expected, case
        if expected is not None:  # and the library side reads the byte as that reject
            assert decode_auth_reply(bytes((expected & 0xFF,))) == Reject(expected)


def test_legacy_handshakes() -> None:
    found = cases("legacy_handshakes")
    assert set(found) == {"lib_3_14_no_auth", "lib_3_15_no_auth", "lib_4_4_0"}
    for case, chunks in found.items():
        session = ServerSession(daemon_name=DAEMON)
        client = ClientConnection()
        for chunk in chunks:
            data = bytes.fromhex(chunk["hex"])
            if chunk["dir"] == "client->daemon":
                if len(data) == 90:
                    assert client.send(AuthChoice()) == data
                else:
                    assert client.send(decode_connect_request(data)) == data
                reply, error = drive(session, data)
                assert error is None
            else:
                assert reply == data, case
                client.receive_data(data)
                event = client.next_event()
                assert isinstance(event, (AuthList, Accept))
        assert session.state is ServerState.ESTABLISHED
        assert client.accepted is not None
        assert client.accepted.patch == (None if case == "lib_3_14_no_auth" else 1)
        assert client.private_group == session.private_group


INVALID_REQUESTS = {
    "invalid_header_two_services": SpError.ILLEGAL_SERVICE,
    "invalid_header_wrong_sender": SpError.ILLEGAL_SESSION,
    "groups_mess_from_client": SpError.ILLEGAL_SERVICE,
    "too_long": SpError.MESSAGE_TOO_LONG,
}


def established(name: str) -> ServerSession:
    session = ServerSession(daemon_name=DAEMON)
    client = ClientConnection()
    reply, _ = drive(session, client.send(ConnectRequest(private_name=name)))
    client.receive_data(reply)
    assert isinstance(client.next_event(), AuthList)
    reply, _ = drive(session, client.send(AuthChoice()))
    assert session.state is ServerState.ESTABLISHED
    return session


def test_invalid_requests_kill_the_session_without_reply() -> None:
    found = cases("invalid_requests")
    assert set(found) == set(INVALID_REQUESTS)
    for case, (request, reply) in found.items():
        sender = request["fields"][1]["value"]
        split = split_private_group(sender)
        assert split is not None
        name = "ivan" if case == "invalid_header_wrong_sender" else split[0]
        session = established(name)
        out, error = drive(session, bytes.fromhex(request["hex"]))
        assert error is not None and error.code == INVALID_REQUESTS[case], case
        assert session.state is ServerState.ERROR
        assert out == bytes.fromhex(reply["hex"]) == b""


def test_big_endian_client() -> None:
    vector = load_vector("big_endian_client")
    chunks = [c for c in vector["chunks"] if c["dir"] != "note"]
    daemon = ReplayDaemon(*ring_id(vector))
    alice = ClientConnection()  # the little-endian libspread receiver, written by us
    bige = ClientConnection(endian=Endian.BIG)
    clients = {1: alice, 2: bige}
    last_gid: dict[int, GroupId] = {}
    seen: list[str] = []

    def pump(conn: int) -> list[str]:
        lines: list[str] = []
        while daemon.outbox[conn]:
            clients[conn].receive_data(daemon.outbox[conn].popleft())
            lines += drain(clients[conn], last_gid, conn)
        return lines

    def handshake(conn: int, name: str) -> list[str]:
        daemon.connect(conn)
        daemon.feed(conn, clients[conn].send(ConnectRequest(private_name=name)))
        lines = pump(conn)
        daemon.feed(conn, clients[conn].send(AuthChoice()))
        return lines + pump(conn)

    seen += handshake(1, "alice")
    daemon.feed(1, alice.join("test"))
    seen += pump(1)
    assert handshake(2, "bige") == ["CONNECT ret=1 private_group=#bige#localhost"]
    for chunk in chunks:
        data = bytes.fromhex(chunk["hex"])
        if chunk["dir"] == "client->daemon":
            sender, request = decode_request(data)
            assert sender == "#bige#localhost"
            assert bige.send(request) == data  # our big-endian client writes the same bytes
            daemon.feed(2, data)
            seen += pump(1)
        else:
            assert daemon.outbox[2].popleft() == data
            bige.receive_data(data)
            event = bige.next_event()
            assert isinstance(event, (MembershipMessage, RegularMessage))
    assert isinstance(event, RegularMessage)
    assert (event.mess_type, event.endian, event.data) == (258, Endian.BIG, b"BEmsg")
    assert not daemon.outbox[2]
    daemon.feed(1, alice.disconnect())
    assert seen == api_view(vector["little_endian_receiver_api_view"])


def test_reject_message_layout_from_source() -> None:
    """Not capturable on one daemon (§7.5, [src only]): check our layout matches the text."""
    multicast = Multicast(
        service_type=ServiceType.AGREED_MESS | ServiceType.SELF_DISCARD,
        groups=("test",),
        mess_type=7,
        data=b"x",
    )
    reject = RejectMessage.for_request(multicast, "#alice#localhost")
    frame = encode_daemon_message(reject)
    assert frame[:4] == (0x80400040 | 0x80).to_bytes(4, "little")  # REJECT | SELF_DISCARD | mark
    assert int.from_bytes(frame[36:40], "little") == 2  # original groups + own private group
    assert frame[48:52] == (0x80000050 | 0x80).to_bytes(4, "little")  # old_type, mark set
    assert frame[52:84].rstrip(b"\0") == b"test"
    assert frame[84:116].rstrip(b"\0") == b"#alice#localhost"
    assert frame[116:] == b"x"
    decoded = decode_daemon_message(frame)
    assert decoded == reject
    assert int(decoded.service_type) == 0x00400050  # what libspread reports
    transitional = encode_daemon_message(TransitionalMessage("g", GroupId(1, 2, 3)))
    assert transitional[:4] == bytes.fromhex("80200080") and len(transitional) == 48 + 12

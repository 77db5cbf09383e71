"""Per-connection state machines of the Spread client protocol, sans I/O (h11-style).

`ServerSession` is the daemon's side of one client connection, `ClientConnection` the library's.
Both buffer what `receive_data(bytes)` hands them (b"" means EOF); `next_event()` returns one
event, `NEED_DATA` (feed more bytes) or `PAUSED` (it is our move); our moves return the bytes to
write. Every state change goes through `SERVER_TRANSITIONS` / `CLIENT_TRANSITIONS` below: a move
missing from the table raises `LocalProtocolError` (a bug in the caller); a peer breaking the
protocol raises `WireError(code)` and leaves the machine in ERROR. Codecs: `spreadpy.wire`.
Spec: shared/spec/client-protocol.md §3 (handshake), §6 (requests), §7 (daemon messages).

Daemon code drives a ServerSession like this:

    ConnectRequest        -> s.assign_name(name): the requested name if no other session has it,
                             or a generated one (wire.generate_private_name) when it is ""; or
                             s.reject(SpError.REJECT_NOT_UNIQUE) (or REJECT_QUOTA at any point
                             before this). Writes the auth list (libraries >= 3.16).
    Authenticated         -> s.accept() or s.reject(SpError.REJECT_AUTH) (access policy).
    MulticastFrame        -> order its frame on the ring; each receiving session gets
                             s.relay(frame) (the delivery frame is the request's, §7.1).
    Multicast             -> the same for a request with unusual type bits (decoded the general
                             way: wire.MulticastFrame.from_request makes its frame).
    Join, Leave           -> order it on the ring; later s.send(MembershipMessage / SelfLeave
                             / TransitionalMessage / RejectMessage) to each receiver
                             (membership notices only where s.wants_membership, §7.6).
    Kill, ConnectionClosed-> the session is over (send() now refuses); both mean a disconnect.
    WireError raised      -> write s.failure_reply() (the reject byte during the handshake,
                             nothing afterwards: §3.6, §6.3), then close the socket.
    handshake deadline    -> write s.handshake_timed_out(), then close (§3.8; answers what the
                             original answers to a request or auth choice that stopped short).

Segmentation never matters: units are read whole whatever the TCP pieces (spec §3.8 advice), and
bytes a client pipelines behind a handshake unit wait for their turn (the original would answer
REJECT_ILLEGAL_NAME or REJECT_AUTH to those). `max_buffered_bytes` bounds what is held while
a unit is incomplete or while it is our move.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum, auto
from types import MappingProxyType
from typing import Final, Generic, TypeVar

from spreadpy.errors import LocalProtocolError, WireError
from spreadpy.wire import (
    AUTH_CHOICE_LEN,
    MAX_MESSAGE_BODY_LEN,
    MAX_PROC_NAME,
    MESSAGE_HEADER_LEN,
    MULTICAST_REQUEST_TYPES,
    REJECT_CODES,
    RING_SAFE_MAX_BODY_LEN,
    SPREAD_VERSION,
    Accept,
    AuthChoice,
    AuthList,
    ClientRequest,
    ConnectRequest,
    DaemonMessage,
    Endian,
    Join,
    Kill,
    Leave,
    MembershipMessage,
    MessageHeader,
    Multicast,
    MulticastFrame,
    Reject,
    RejectMessage,
    SelfLeave,
    ServiceType,
    SpError,
    TransitionalMessage,
    check_request_header,
    daemon_frame_len,
    daemon_message_from_frame,
    decode_auth_choice,
    decode_header,
    encode_accept,
    encode_auth_choice,
    encode_auth_list,
    encode_connect_request,
    encode_daemon_message,
    encode_reject,
    encode_request,
    name_field,
    parse_accept_reply,
    parse_auth_reply,
    parse_connect_request,
    private_group_name,
    read_request_head,
    relay_frame,
    relay_frame_in,
    request_frame_len,
    request_from_frame,
    valid_private_name,
)

__all__ = [
    "CLIENT_TRANSITIONS",
    "DEFAULT_CLIENT_MAX_FRAME_BYTES",
    "NEED_DATA",
    "PAUSED",
    "SERVER_TRANSITIONS",
    "Authenticated",
    "ClientConnection",
    "ClientEvent",
    "ClientInput",
    "ClientState",
    "ConnectionClosed",
    "Sentinel",
    "ServerEvent",
    "ServerInput",
    "ServerSession",
    "ServerState",
]


class Sentinel(Enum):
    NEED_DATA = "NEED_DATA"  # the next unit is incomplete: feed more bytes
    PAUSED = "PAUSED"  # it is our move (a decision, or the next thing to send)


NEED_DATA: Final = Sentinel.NEED_DATA
PAUSED: Final = Sentinel.PAUSED

# Largest valid incomplete unit the daemon side ever holds: one request at libspread's limit.
_SERVER_MAX_BUFFERED: Final = MESSAGE_HEADER_LEN + MAX_MESSAGE_BODY_LEN
DEFAULT_CLIENT_MAX_FRAME_BYTES: Final = 1 << 24  # membership messages grow with the group
_CONNECT_REQUEST_MAX: Final = 3 + 2 + 10
_AUTH_REPLY_MAX: Final = 1 + 127
_ACCEPT_MAX: Final = 5 + 31


@dataclass(frozen=True, slots=True)
class Authenticated:
    """The client finished authentication with `methods` (each allowed, none exchanging bytes).

    `methods` is () for libraries older than 3.16, which have no auth exchange: the original
    then admits them if NULL (or IP, by address) is allowed. Answer with accept() or reject().
    """

    methods: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The peer closed its side, or the session already ended (KILL, reject)."""


ServerEvent = (
    ConnectRequest
    | Authenticated
    | MulticastFrame
    | Multicast
    | Join
    | Leave
    | Kill
    | ConnectionClosed
)
ClientEvent = AuthList | Accept | Reject | DaemonMessage | ConnectionClosed


# --- the tables -------------------------------------------------------------------------------


class ServerState(Enum):
    AWAIT_CONNECT = auto()  # waiting for the connect request
    NAME_DECISION = auto()  # our move: assign_name() or reject()
    AWAIT_AUTH_CHOICE = auto()  # auth list sent, waiting for the 90-byte choice
    AUTH_DECISION = auto()  # our move: accept() or reject()
    ESTABLISHED = auto()
    CLOSED = auto()
    ERROR = auto()


class ServerInput(Enum):
    CONNECT_REQUEST = auto()  # peer
    ASSIGN_NAME = auto()  # ours, library >= 3.16: the auth list goes out
    ASSIGN_NAME_LEGACY = auto()  # ours, library < 3.16: no auth exchange
    AUTH_CHOICE = auto()  # peer
    ACCEPT = auto()  # ours
    REJECT = auto()  # ours: one reject byte, then close
    REQUEST = auto()  # peer: multicast, join, leave
    KILL = auto()  # peer
    SEND = auto()  # ours: a daemon message
    TIMEOUT = auto()  # ours: the handshake deadline passed
    EOF = auto()  # peer
    PROTOCOL_ERROR = auto()  # peer broke the protocol


_SS, _SI = ServerState, ServerInput
_SERVER_LIVE: Final = (
    _SS.AWAIT_CONNECT,
    _SS.NAME_DECISION,
    _SS.AWAIT_AUTH_CHOICE,
    _SS.AUTH_DECISION,
    _SS.ESTABLISHED,
)
SERVER_TRANSITIONS: Final[Mapping[tuple[ServerState, ServerInput], ServerState]] = MappingProxyType(
    {
        (_SS.AWAIT_CONNECT, _SI.CONNECT_REQUEST): _SS.NAME_DECISION,
        (_SS.AWAIT_CONNECT, _SI.REJECT): _SS.CLOSED,  # REJECT_QUOTA, before reading
        (_SS.AWAIT_CONNECT, _SI.TIMEOUT): _SS.CLOSED,
        (_SS.NAME_DECISION, _SI.ASSIGN_NAME): _SS.AWAIT_AUTH_CHOICE,
        (_SS.NAME_DECISION, _SI.ASSIGN_NAME_LEGACY): _SS.AUTH_DECISION,
        (_SS.NAME_DECISION, _SI.REJECT): _SS.CLOSED,
        (_SS.AWAIT_AUTH_CHOICE, _SI.AUTH_CHOICE): _SS.AUTH_DECISION,
        (_SS.AWAIT_AUTH_CHOICE, _SI.TIMEOUT): _SS.CLOSED,
        (_SS.AUTH_DECISION, _SI.ACCEPT): _SS.ESTABLISHED,
        (_SS.AUTH_DECISION, _SI.REJECT): _SS.CLOSED,
        (_SS.ESTABLISHED, _SI.REQUEST): _SS.ESTABLISHED,
        (_SS.ESTABLISHED, _SI.SEND): _SS.ESTABLISHED,
        (_SS.ESTABLISHED, _SI.KILL): _SS.CLOSED,
        **{(s, _SI.EOF): _SS.CLOSED for s in _SERVER_LIVE},
        **{(s, _SI.PROTOCOL_ERROR): _SS.ERROR for s in _SERVER_LIVE},
    }
)


class ClientState(Enum):
    START = auto()  # our move: send the ConnectRequest
    AWAIT_AUTH_LIST = auto()
    AUTH_CHOICE = auto()  # our move: send the AuthChoice
    AWAIT_ACCEPT = auto()
    ESTABLISHED = auto()
    CLOSED = auto()
    ERROR = auto()


class ClientInput(Enum):
    SEND_CONNECT = auto()  # ours, library >= 3.16
    SEND_CONNECT_LEGACY = auto()  # ours, older library: no auth exchange
    AUTH_LIST = auto()  # peer
    SEND_AUTH_CHOICE = auto()  # ours
    ACCEPT = auto()  # peer
    REJECT = auto()  # peer: a reject byte instead of the auth list or the accept
    MESSAGE = auto()  # peer: a daemon message
    SEND_REQUEST = auto()  # ours: multicast, join, leave
    SEND_KILL = auto()  # ours: disconnect; the caller closes the socket
    EOF = auto()  # peer
    PROTOCOL_ERROR = auto()  # peer broke the protocol


_CS, _CI = ClientState, ClientInput
_CLIENT_LIVE: Final = (
    _CS.START,
    _CS.AWAIT_AUTH_LIST,
    _CS.AUTH_CHOICE,
    _CS.AWAIT_ACCEPT,
    _CS.ESTABLISHED,
)
CLIENT_TRANSITIONS: Final[Mapping[tuple[ClientState, ClientInput], ClientState]] = MappingProxyType(
    {
        (_CS.START, _CI.SEND_CONNECT): _CS.AWAIT_AUTH_LIST,
        (_CS.START, _CI.SEND_CONNECT_LEGACY): _CS.AWAIT_ACCEPT,
        (_CS.AWAIT_AUTH_LIST, _CI.AUTH_LIST): _CS.AUTH_CHOICE,
        (_CS.AWAIT_AUTH_LIST, _CI.REJECT): _CS.CLOSED,
        (_CS.AUTH_CHOICE, _CI.SEND_AUTH_CHOICE): _CS.AWAIT_ACCEPT,
        (_CS.AWAIT_ACCEPT, _CI.ACCEPT): _CS.ESTABLISHED,
        (_CS.AWAIT_ACCEPT, _CI.REJECT): _CS.CLOSED,
        (_CS.ESTABLISHED, _CI.MESSAGE): _CS.ESTABLISHED,
        (_CS.ESTABLISHED, _CI.SEND_REQUEST): _CS.ESTABLISHED,
        (_CS.ESTABLISHED, _CI.SEND_KILL): _CS.CLOSED,
        **{(s, _CI.EOF): _CS.CLOSED for s in _CLIENT_LIVE},
        **{(s, _CI.PROTOCOL_ERROR): _CS.ERROR for s in _CLIENT_LIVE},
    }
)

_State = TypeVar("_State", bound=Enum)
_Input = TypeVar("_Input", bound=Enum)


class _Machine(Generic[_State, _Input]):
    """A state and the table that moves it; nothing else."""

    __slots__ = ("_table", "state")

    def __init__(self, table: Mapping[tuple[_State, _Input], _State], initial: _State) -> None:
        self._table = table
        self.state = initial

    def require(self, inp: _Input) -> None:
        if (self.state, inp) not in self._table:
            raise self._refusal(inp)

    def fire(self, inp: _Input) -> _State:
        # One lookup, not two: enum hashing runs in Python (every join and leave fires).
        state = self._table.get((self.state, inp))
        if state is None:
            raise self._refusal(inp)
        self.state = state
        return state

    def _refusal(self, inp: _Input) -> LocalProtocolError:
        return LocalProtocolError(f"{inp.name} is not allowed in state {self.state.name}")


class _ReceiveBuffer:
    """Received bytes not yet consumed; consuming is amortised O(bytes)."""

    __slots__ = ("_data", "_start", "eof")

    def __init__(self) -> None:
        self._data = bytearray()
        self._start = 0
        self.eof = False  # the peer closed its side

    def feed(self, data: bytes) -> None:
        """Buffer bytes from the peer; b"" means it closed its side."""
        if self.eof:
            if data:
                raise LocalProtocolError("data after EOF")
            return
        if not data:
            self.eof = True
            return
        self._data += data

    def __len__(self) -> int:
        return len(self._data) - self._start

    def peek(self, size: int) -> bytes:
        return bytes(self._data[self._start : self._start + size])

    def take(self, size: int) -> bytes:
        start = self._start
        out = bytes(self._data[start : start + size])
        self._start = start + len(out)
        if self._start > 65536 and 2 * self._start > len(self._data):
            del self._data[: self._start]
            self._start = 0
        return out

    def clear(self) -> None:
        self._data.clear()
        self._start = 0


def _reject_byte(code: int) -> bytes:
    return encode_reject(Reject(code))


# --- daemon side ------------------------------------------------------------------------------


class ServerSession:
    """The daemon's end of one client connection (spec §3, §6, §7)."""

    def __init__(
        self,
        *,
        daemon_name: str,
        daemon_version: tuple[int, int, int] = SPREAD_VERSION,
        auth_methods: Sequence[str] = ("NULL",),
        endian: Endian = Endian.LITTLE,
        max_body_len: int = RING_SAFE_MAX_BODY_LEN,
        max_buffered_bytes: int = _SERVER_MAX_BUFFERED,
    ) -> None:
        if not 1 <= len(daemon_name) < MAX_PROC_NAME or not daemon_name.isprintable():
            raise LocalProtocolError(f"daemon name {daemon_name!r} is not 1..19 printable chars")
        if "#" in daemon_name or not daemon_name.isascii():
            raise LocalProtocolError(f"daemon name {daemon_name!r} must be ASCII without '#'")
        if not auth_methods:
            raise LocalProtocolError("at least one auth method must be enabled")
        if not 0 < max_body_len <= MAX_MESSAGE_BODY_LEN - MESSAGE_HEADER_LEN:
            raise LocalProtocolError(f"max_body_len {max_body_len} out of range")
        self._daemon_name = daemon_name
        self._version = daemon_version
        self._auth_methods = tuple(auth_methods)
        self._auth_list = encode_auth_list(AuthList(self._auth_methods))
        if len(daemon_version) != 3 or not all(0 <= v < 0x80 for v in daemon_version):
            raise LocalProtocolError(f"daemon version {daemon_version} is not 3 bytes < 128")
        self._endian = endian
        self._max_body_len = max_body_len
        self._max_buffered = max_buffered_bytes
        self._machine: _Machine[ServerState, ServerInput] = _Machine(
            SERVER_TRANSITIONS, ServerState.AWAIT_CONNECT
        )
        self._buf = _ReceiveBuffer()
        # (frame length, service type, little-endian?, num_groups) of a partial request
        self._head: tuple[int, int, bool, int] | None = None
        self._sender_field = b""  # the private group as a 32-byte field, once named
        self._pending: Authenticated | None = None
        self._failure_reply = b""
        self.request: ConnectRequest | None = None
        self.private_name: str | None = None
        self.private_group: str | None = None

    @property
    def state(self) -> ServerState:
        return self._machine.state

    @property
    def endian(self) -> Endian:
        return self._endian

    @property
    def wants_membership(self) -> bool:
        """The client asked for membership messages (flags bit 0, §7.6)."""
        return self.request is not None and self.request.wants_membership

    @property
    def pending_bytes(self) -> int:
        """Bytes received but not yet part of a whole unit (a partial request, say)."""
        return len(self._buf)

    # input

    def receive_data(self, data: bytes) -> None:
        """Buffer bytes from the client; b"" means it closed its side."""
        if self._machine.state in (ServerState.CLOSED, ServerState.ERROR):
            return
        self._buf.feed(data)

    def next_event(self) -> ServerEvent | Sentinel:
        state = self._machine.state
        if state is ServerState.ERROR:
            raise LocalProtocolError("the session failed: write failure_reply() and close it")
        if state is ServerState.CLOSED:
            return ConnectionClosed()
        if self._pending is not None:
            event, self._pending = self._pending, None
            return event
        try:
            result = self._parse(state)
            if result is NEED_DATA and self._buf.eof:
                self._machine.fire(ServerInput.EOF)
                self._buf.clear()
                return ConnectionClosed()
            if type(result) is Sentinel and len(self._buf) > self._max_buffered:
                raise WireError(
                    SpError.ILLEGAL_MESSAGE, f"{len(self._buf)} bytes buffered without a unit"
                )
        except WireError as err:
            self._fail(state, err)
            raise
        return result

    def _fail(self, state: ServerState, err: WireError) -> None:
        handshake = state in (ServerState.AWAIT_CONNECT, ServerState.AWAIT_AUTH_CHOICE)
        self._failure_reply = (
            _reject_byte(err.code) if handshake and err.code in REJECT_CODES else b""
        )
        self._machine.fire(ServerInput.PROTOCOL_ERROR)
        self._buf.clear()

    def _parse(self, state: ServerState) -> ServerEvent | Sentinel:
        if state is ServerState.ESTABLISHED:  # every request after the handshake
            return self._parse_request()
        match state:
            case ServerState.AWAIT_CONNECT:
                parsed = parse_connect_request(self._buf.peek(_CONNECT_REQUEST_MAX))
                if parsed is None:
                    return NEED_DATA
                request, size = parsed
                self._buf.take(size)
                self._machine.fire(ServerInput.CONNECT_REQUEST)
                self.request = request
                return request
            case ServerState.AWAIT_AUTH_CHOICE:
                if len(self._buf) < AUTH_CHOICE_LEN:
                    return NEED_DATA
                choice = decode_auth_choice(self._buf.take(AUTH_CHOICE_LEN))
                if not choice.methods:
                    raise WireError(SpError.REJECT_AUTH, "no auth method chosen")
                for method in choice.methods:
                    if method not in self._auth_methods:
                        raise WireError(SpError.REJECT_AUTH, f"auth method {method!r} not allowed")
                self._machine.fire(ServerInput.AUTH_CHOICE)
                return Authenticated(choice.methods)
        return PAUSED

    def _parse_request(self) -> ServerEvent | Sentinel:
        buf = self._buf
        available = len(buf)
        head = self._head
        if head is None:
            if available < MESSAGE_HEADER_LEN:
                return NEED_DATA
            raw = buf.peek(MESSAGE_HEADER_LEN)
            if raw.startswith(self._sender_field, 4):
                head = read_request_head(raw, self._max_body_len)
            else:
                # Junk after the name's NUL, or a wrong sender: the general path and its errors.
                header = decode_header(raw)
                check_request_header(header, max_body_len=self._max_body_len)
                if header.sender != self.private_group:
                    raise WireError(
                        SpError.ILLEGAL_SESSION,
                        f"sender {header.sender!r} is not this session ({self.private_group!r})",
                    )
                little = header.endian is Endian.LITTLE
                head = (request_frame_len(header), header.service_type, little, header.num_groups)
            self._head = head
        size, service_type, little, num_groups = head
        if available < size:
            return NEED_DATA
        frame = buf.take(size)
        self._head = None
        if service_type in MULTICAST_REQUEST_TYPES:
            # ESTABLISHED + REQUEST stays ESTABLISHED: the per-message path skips the firing.
            return MulticastFrame(
                service_type, relay_frame(frame, little, num_groups, self._sender_field)
            )
        request = request_from_frame(decode_header(frame), frame)
        if isinstance(request, Kill):
            self._machine.fire(ServerInput.KILL)
            self._buf.clear()
        else:
            self._machine.fire(ServerInput.REQUEST)
        return request

    # our moves

    def assign_name(self, private_name: str) -> bytes:
        """Admit the connect request under `private_name`, unique on this daemon.

        It must be the requested name, or any legal name when the client sent none. Returns the
        auth list to write (libraries >= 3.16), or b"" and an `Authenticated(())` event.
        """
        request = self.request
        legacy = request is not None and not request.uses_auth
        inp = ServerInput.ASSIGN_NAME_LEGACY if legacy else ServerInput.ASSIGN_NAME
        self._machine.require(inp)
        assert request is not None  # NAME_DECISION is entered with the request
        if not valid_private_name(private_name):
            raise LocalProtocolError(f"illegal private name {private_name!r}")
        if request.private_name and private_name != request.private_name:
            raise LocalProtocolError(
                f"the client asked for {request.private_name!r}, not {private_name!r}"
            )
        self._machine.fire(inp)
        self.private_name = private_name
        self.private_group = private_group_name(private_name, self._daemon_name)
        self._sender_field = name_field(self.private_group)
        if legacy:
            self._pending = Authenticated(())
            return b""
        return self._auth_list

    def accept(self) -> bytes:
        """Accept the authenticated session (§3.5); returns the accept unit."""
        self._machine.require(ServerInput.ACCEPT)
        assert self.request is not None and self.private_group is not None
        major, minor, patch = self._version
        data = encode_accept(
            Accept(
                major=major,
                minor=minor,
                patch=patch if self.request.accept_has_patch else None,
                private_group=self.private_group,
            )
        )
        self._machine.fire(ServerInput.ACCEPT)
        return data

    def reject(self, code: int) -> bytes:
        """Refuse the session with one of REJECT_CODES; write the byte and close (§3.6)."""
        self._machine.require(ServerInput.REJECT)
        data = encode_reject(Reject(code))
        self._machine.fire(ServerInput.REJECT)
        self._buf.clear()
        return data

    def send(self, message: DaemonMessage, encoded: bytes | None = None) -> bytes:
        """`message` encoded for this client, in the daemon's byte order (§7).

        `encoded`: the same message already encoded in this session's byte order (a message
        for many sessions is encoded once).
        """
        self._machine.require(ServerInput.SEND)
        notice = isinstance(message, (MembershipMessage, TransitionalMessage, SelfLeave))
        if notice and not self.wants_membership:
            raise LocalProtocolError("this client did not ask for membership messages (§7.6)")
        if isinstance(message, RejectMessage) and message.sender != self.private_group:
            raise LocalProtocolError("a reject goes only to the session that sent the request")
        data = (
            encoded if encoded is not None else encode_daemon_message(message, endian=self._endian)
        )
        self._machine.fire(ServerInput.SEND)
        return data

    def relay(self, frame: bytes) -> bytes:
        """A relayed multicast's frame (wire.MulticastFrame.frame) as this session receives it."""
        return self.relay_frames([frame])[0]

    def relay_frames(self, frames: list[bytes]) -> list[bytes]:
        """`relay` for each of `frames`, in order: the daemon's per-delivery path. Nothing is
        decoded or built when the session is little-endian, as every machine we run on is:
        then the list itself comes back."""
        if self._machine.state is not ServerState.ESTABLISHED:
            raise LocalProtocolError(f"cannot send in state {self._machine.state.name}")
        endian = self._endian
        if endian is Endian.LITTLE:
            return frames
        return [relay_frame_in(frame, endian) for frame in frames]

    def failure_reply(self) -> bytes:
        """After a WireError: the reject byte to write before closing, or b"" (§3.6, §6.3)."""
        if self._machine.state is not ServerState.ERROR:
            raise LocalProtocolError("failure_reply() is only for a failed session")
        return self._failure_reply

    def handshake_timed_out(self) -> bytes:
        """The handshake deadline passed: what to write before closing (§3.8).

        A connect request cut inside the name gets REJECT_ILLEGAL_NAME and a missing or short auth
        choice REJECT_AUTH, as from the original's single reads; anything shorter gets nothing.
        """
        state = self._machine.state
        self._machine.require(ServerInput.TIMEOUT)
        reply = b""
        if state is ServerState.AWAIT_AUTH_CHOICE:
            reply = _reject_byte(SpError.REJECT_AUTH)
        elif self._name_cut_short():
            reply = _reject_byte(SpError.REJECT_ILLEGAL_NAME)
        self._machine.fire(ServerInput.TIMEOUT)
        self._buf.clear()
        return reply

    def _name_cut_short(self) -> bool:
        head = self._buf.peek(_CONNECT_REQUEST_MAX)
        if len(head) < 2:
            return False
        name_at = (3 if head[0] * 10000 + head[1] * 100 > 31400 else 2) + 2
        return name_at < len(head) and len(head) - name_at < head[name_at - 1]


# --- library side -----------------------------------------------------------------------------


class ClientConnection:
    """The library's end of one connection to a daemon (spec §3, §6, §7)."""

    def __init__(
        self,
        *,
        endian: Endian = Endian.LITTLE,
        max_body_len: int = RING_SAFE_MAX_BODY_LEN,
        max_frame_bytes: int = DEFAULT_CLIENT_MAX_FRAME_BYTES,
    ) -> None:
        self._endian = endian
        self._max_body_len = max_body_len
        self._max_frame = max_frame_bytes
        self._machine: _Machine[ClientState, ClientInput] = _Machine(
            CLIENT_TRANSITIONS, ClientState.START
        )
        self._buf = _ReceiveBuffer()
        self._header: MessageHeader | None = None
        self.request: ConnectRequest | None = None
        self.auth_list: AuthList | None = None
        self.accepted: Accept | None = None

    @property
    def state(self) -> ClientState:
        return self._machine.state

    @property
    def endian(self) -> Endian:
        return self._endian

    @property
    def private_group(self) -> str | None:
        """`#name#daemon` once accepted."""
        return None if self.accepted is None else self.accepted.private_group

    # input

    def receive_data(self, data: bytes) -> None:
        """Buffer bytes from the daemon; b"" means it closed its side."""
        if self._machine.state in (ClientState.CLOSED, ClientState.ERROR):
            return
        self._buf.feed(data)

    def next_event(self) -> ClientEvent | Sentinel:
        state = self._machine.state
        if state is ClientState.ERROR:
            raise LocalProtocolError("the connection failed: close it")
        if state is ClientState.CLOSED:
            return ConnectionClosed()
        try:
            result = self._parse(state)
            if result is NEED_DATA and self._buf.eof:
                self._machine.fire(ClientInput.EOF)
                self._buf.clear()
                return ConnectionClosed()
            if isinstance(result, Sentinel) and len(self._buf) > self._max_frame:
                raise WireError(
                    SpError.MESSAGE_TOO_LONG, f"{len(self._buf)} bytes buffered without a unit"
                )
        except WireError:
            self._machine.fire(ClientInput.PROTOCOL_ERROR)
            self._buf.clear()
            raise
        return result

    def _parse(self, state: ClientState) -> ClientEvent | Sentinel:
        match state:
            case ClientState.AWAIT_AUTH_LIST:
                parsed = parse_auth_reply(self._buf.peek(_AUTH_REPLY_MAX))
                if parsed is None:
                    return NEED_DATA
                reply, size = parsed
                self._buf.take(size)
                if isinstance(reply, Reject):
                    self._machine.fire(ClientInput.REJECT)
                    self._buf.clear()
                    return reply
                self._machine.fire(ClientInput.AUTH_LIST)
                self.auth_list = reply
                return reply
            case ClientState.AWAIT_ACCEPT:
                return self._parse_accept()
            case ClientState.ESTABLISHED:
                return self._parse_message()
        return PAUSED

    def _parse_accept(self) -> ClientEvent | Sentinel:
        assert self.request is not None
        with_patch = self.request.accept_has_patch
        parsed = parse_accept_reply(self._buf.peek(_ACCEPT_MAX), with_patch=with_patch)
        if parsed is None:
            return NEED_DATA
        reply, size = parsed
        self._buf.take(size)
        if isinstance(reply, Reject):
            self._machine.fire(ClientInput.REJECT)
            self._buf.clear()
            return reply
        if reply.major < 3:
            raise WireError(SpError.REJECT_VERSION, f"daemon version {reply.major} is below 3")
        if self.request.priority and reply.major * 100 + reply.minor < 308:
            raise WireError(SpError.REJECT_VERSION, "priorities need a daemon >= 3.8")
        self._machine.fire(ClientInput.ACCEPT)
        self.accepted = reply
        return reply

    def _parse_message(self) -> ClientEvent | Sentinel:
        header = self._header
        if header is None:
            if len(self._buf) < MESSAGE_HEADER_LEN:
                return NEED_DATA
            header = decode_header(self._buf.peek(MESSAGE_HEADER_LEN))
            if daemon_frame_len(header) > self._max_frame:
                raise WireError(
                    SpError.MESSAGE_TOO_LONG,
                    f"daemon message of {daemon_frame_len(header)} bytes exceeds the bound",
                )
            self._header = header
        size = daemon_frame_len(header)
        if len(self._buf) < size:
            return NEED_DATA
        frame = self._buf.take(size)
        self._header = None
        message = daemon_message_from_frame(header, frame)
        self._machine.fire(ClientInput.MESSAGE)
        return message

    # our moves

    def send(self, event: ConnectRequest | AuthChoice | ClientRequest) -> bytes:
        """Bytes for one of our moves; LocalProtocolError if illegal now or malformed."""
        match event:
            case ConnectRequest():
                inp = (
                    ClientInput.SEND_CONNECT if event.uses_auth else ClientInput.SEND_CONNECT_LEGACY
                )
                self._machine.require(inp)
                if not event.supported:
                    raise LocalProtocolError("libraries older than 3.1 are refused by daemons")
                data = encode_connect_request(event)
                self._machine.fire(inp)
                self.request = event
                return data
            case AuthChoice():
                self._machine.require(ClientInput.SEND_AUTH_CHOICE)
                assert self.auth_list is not None
                if not event.methods:
                    raise LocalProtocolError("choose at least one auth method")
                missing = [m for m in event.methods if m not in self.auth_list.methods]
                if missing:
                    raise LocalProtocolError(f"the daemon does not offer {missing}")
                data = encode_auth_choice(event)
                self._machine.fire(ClientInput.SEND_AUTH_CHOICE)
                return data
            case Multicast() | Join() | Leave() | Kill():
                inp = ClientInput.SEND_KILL if isinstance(event, Kill) else ClientInput.SEND_REQUEST
                self._machine.require(inp)
                assert self.private_group is not None
                data = encode_request(
                    event,
                    sender=self.private_group,
                    endian=self._endian,
                    max_body_len=self._max_body_len,
                )
                self._machine.fire(inp)
                if inp is ClientInput.SEND_KILL:
                    self._buf.clear()
                return data
        raise LocalProtocolError(f"cannot send {event!r}")

    def multicast(
        self,
        service_type: ServiceType,
        groups: str | Sequence[str],
        data: bytes = b"",
        mess_type: int = 0,
    ) -> bytes:
        """SP_multicast / SP_multigroup_multicast, hint written in this connection's order."""
        names = (groups,) if isinstance(groups, str) else tuple(groups)
        return self.send(
            Multicast(
                service_type=service_type,
                groups=names,
                mess_type=mess_type,
                data=data,
                endian=self._endian,
            )
        )

    def join(self, group: str) -> bytes:
        return self.send(Join(group))

    def leave(self, group: str) -> bytes:
        return self.send(Leave(group))

    def disconnect(self) -> bytes:
        """SP_disconnect: the KILL request; write it, then close the socket."""
        return self.send(Kill())

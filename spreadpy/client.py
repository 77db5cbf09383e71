"""Spread client library, blocking: libspread's API in Python (`aioclient` is the asyncio one).

    from spreadpy import client

    with client.connect("4803", "alice") as mb:          # Unix socket /tmp/4803
        mb.join("test")
        mb.multicast(client.SAFE_MESS, "test", b"Hello World!", mess_type=1)
        for msg in mb:                                    # blocks; ends after mb.disconnect()
            match msg:
                case client.RegularMessage():    print(msg.sender, msg.data)
                case client.MembershipMessage(): print(msg.group, msg.members, msg.cause.name)

Layers, each usable alone:
  `MailboxCore`   sans-I/O: handshake steps, message framing and request checks over the wire
                  codec (`spreadpy.wire_session.ClientConnection`); shared with `aioclient`.
  `Mailbox`       one blocking socket around a core; `connect()` opens one, `handshake()` runs the
                  handshake over a socket you connected yourself.

Daemon names follow libspread's `SP_connect` (shared/spec/client-protocol.md §1): "" or None is
"4803"; "<port>" is the Unix socket /tmp/<port>; "<port>@<host>" is TCP, the host resolved with
getaddrinfo (first IPv4 or IPv6 answer). Our extension: a name containing "/" is a Unix socket
path (several daemons on one machine, e.g. a test cluster).

Received messages are the wire codec's frozen dataclasses (`Message`): `RegularMessage`,
`MembershipMessage` (a REGULAR view: cause JOIN/LEAVE/DISCONNECT/NETWORK, group id, members,
vs_sets), `TransitionalMessage`, `SelfLeave` (this client left the group) and `RejectMessage`.
What libspread computes on receipt is a call away: `msg.index_of(mb.private_group)` is the
"where I am member N" of a membership, `mb.endian_mismatch(msg)` its `endian_mismatch`.

Errors are `SpreadClientError` subclasses carrying libspread's code (`err.code`, e.g. -6 for
`RejectNotUniqueError`); `str(err)` starts with SP_error's "(-6) Connection rejected, name not
unique.". `receive(timeout=...)` raises the builtin `TimeoutError` when nothing arrived in time.

Where we differ from libspread 5.0.1, on purpose:
  * Requests the daemon would kill the session for are refused locally, before any byte is sent:
    a service type with several service bits (IllegalServiceError; libspread sends it), data
    beyond the daemon's ring-safe limit of 142752 bytes with the group names (MessageTooLongError;
    libspread allows 144000), group names that are empty or longer than 31 bytes
    (IllegalGroupError), a private name with characters outside '$'..'~'
    (RejectIllegalNameError, without connecting; the daemon would answer the same code).
  * A mailbox has no receive-buffer sizes, so BUFFER_TOO_SHORT, GROUPS_TOO_SHORT and DROP_RECV
    never arise: every message arrives whole.
  * Calls on a mailbox this process disconnected raise IllegalSessionError (libspread's answer
    for a stale mailbox); a daemon that went away gives ConnectionClosedError, then again on
    every later call.
  * Socket buffers are left to the kernel's autotuning (libspread pins them at 200 KiB).
Thread safety: one thread may receive while others send, join or disconnect (as with sptuser);
`disconnect()` wakes a blocked `receive()`, which then raises IllegalSessionError.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import select
import socket
import struct
import sys
import termios
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType, TracebackType
from typing import Final

from spreadpy.errors import SpreadError, WireError
from spreadpy.sockbuf import set_session_buffers
from spreadpy.wire import (
    MAX_GROUP_NAME,
    MAX_GROUPS_PER_MESSAGE,
    MAX_MESSAGE_BODY_LEN,
    MAX_PRIVATE_NAME,
    MESSAGE_HEADER_LEN,
    RING_SAFE_MAX_BODY_LEN,
    SPREAD_VERSION,
    Accept,
    AuthChoice,
    AuthList,
    ConnectRequest,
    DaemonMessage,
    Endian,
    GroupId,
    MembershipCause,
    MembershipMessage,
    RegularMessage,
    Reject,
    RejectMessage,
    SelfLeave,
    ServiceType,
    SpError,
    TransitionalMessage,
    daemon_frame_len_at,
    encode_multicast,
    name_field,
    regular_message_from_frame,
    valid_group_name,
    valid_private_name,
)
from spreadpy.wire_session import (
    DEFAULT_CLIENT_MAX_FRAME_BYTES,
    NEED_DATA,
    ClientConnection,
    ClientState,
    ConnectionClosed,
)

__all__ = [
    "AGREED_MESS",
    "CAUSAL_MESS",
    "DEFAULT_CONNECT_TIMEOUT_S",
    "DEFAULT_DAEMON",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "FIFO_MESS",
    "LIBRARY_VERSION",
    "NATIVE_ENDIAN",
    "RELIABLE_MESS",
    "SAFE_MESS",
    "SELF_DISCARD",
    "UNRELIABLE_MESS",
    "BufferTooShortError",
    "ConnectionClosedError",
    "ConnectionRejectedError",
    "CouldNotConnectError",
    "DaemonAddress",
    "Endian",
    "GroupId",
    "GroupsTooShortError",
    "IllegalGroupError",
    "IllegalMessageError",
    "IllegalServiceError",
    "IllegalSessionError",
    "IllegalSpreadError",
    "IllegalTimeError",
    "Mailbox",
    "MailboxCore",
    "MailboxViews",
    "MembershipCause",
    "MembershipMessage",
    "Message",
    "MessageTooLongError",
    "NetErrorOnSessionError",
    "RegularMessage",
    "RejectAuthError",
    "RejectIllegalNameError",
    "RejectMessage",
    "RejectNoNameError",
    "RejectNotUniqueError",
    "RejectQuotaError",
    "RejectVersionError",
    "SelfLeave",
    "ServiceType",
    "SpBugError",
    "SpError",
    "SpreadClientError",
    "TransitionalMessage",
    "connect",
    "connect_unix",
    "error_for",
    "handshake",
    "open_socket",
    "parse_daemon_address",
    "resolve",
    "service_name",
    "strerror",
]

# --- public constants -------------------------------------------------------------------------

UNRELIABLE_MESS: Final = ServiceType.UNRELIABLE_MESS
RELIABLE_MESS: Final = ServiceType.RELIABLE_MESS
FIFO_MESS: Final = ServiceType.FIFO_MESS
CAUSAL_MESS: Final = ServiceType.CAUSAL_MESS
AGREED_MESS: Final = ServiceType.AGREED_MESS
SAFE_MESS: Final = ServiceType.SAFE_MESS
SELF_DISCARD: Final = ServiceType.SELF_DISCARD

# What receive() returns: RegularMessage | MembershipMessage | TransitionalMessage | SelfLeave |
# RejectMessage, the wire codec's own values.
Message = DaemonMessage

LIBRARY_VERSION: Final = SPREAD_VERSION  # what we announce in the connect request: 5.0.1
DEFAULT_DAEMON: Final = "4803"
DEFAULT_CONNECT_TIMEOUT_S: Final = 5.0  # spuser's SP_connect_timeout
NATIVE_ENDIAN: Final = Endian.LITTLE if sys.byteorder == "little" else Endian.BIG
UNIX_SOCKET_DIR: Final = "/tmp"  # libspread's SP_UNIX_SOCKET
RECV_CHUNK_BYTES: Final = 256 * 1024
_GROUP_FIELDS_CACHED_MAX: Final = 1024  # target names whose 32-byte field is kept
# data + 32 x groups, at most: the daemon's default MaxMessageSize (spread-daemon.md §4)
DEFAULT_MAX_MESSAGE_BYTES: Final = RING_SAFE_MAX_BODY_LEN
_SERVICE_BITS: Final = (
    UNRELIABLE_MESS,
    RELIABLE_MESS,
    FIFO_MESS,
    CAUSAL_MESS,
    AGREED_MESS,
    SAFE_MESS,
)
# Plain ints for the per-message checks: IntFlag arithmetic runs in Python and is slow.
_SERVICE_BIT_VALUES: Final = frozenset(int(bit) for bit in _SERVICE_BITS)
_SELF_DISCARD_BIT: Final = int(SELF_DISCARD)
_FIONREAD_BUF: Final = struct.Struct("i")
_TIMEVAL: Final = struct.Struct("@ll")  # struct timeval, for SO_SNDTIMEO

# --- errors -----------------------------------------------------------------------------------

# libspread's SP_strerror texts (5.0.1), printed by SP_error as "SP_error: (code) text".
_STRERROR: Final[Mapping[int, str]] = MappingProxyType(
    {
        SpError.ILLEGAL_SPREAD: "Illegal spread name provided.",
        SpError.COULD_NOT_CONNECT: "Could not connect.",
        SpError.REJECT_QUOTA: "Connection rejected, too many users.",
        SpError.REJECT_NO_NAME: "Connection rejected, no name was supplied.",
        SpError.REJECT_ILLEGAL_NAME: "Connection rejected, illegal name.",
        SpError.REJECT_NOT_UNIQUE: "Connection rejected, name not unique.",
        SpError.REJECT_VERSION: "Connection rejected, client library incompatible with daemon.",
        SpError.CONNECTION_CLOSED: "Connection closed by Spread.",
        SpError.REJECT_AUTH: "Connection rejected, authentication failed.",
        SpError.ILLEGAL_SESSION: "Illegal session was supplied.",
        SpError.ILLEGAL_SERVICE: "Illegal service request.",
        SpError.ILLEGAL_MESSAGE: "Illegal message.",
        SpError.ILLEGAL_GROUP: "Illegal group.",
        SpError.BUFFER_TOO_SHORT: "Buffer too short.",
        SpError.GROUPS_TOO_SHORT: "Groups list too short.",
        SpError.MESSAGE_TOO_LONG: "Message (body + group names) too large.",
        SpError.NET_ERROR_ON_SESSION: "Network socket error. SP_kill() the mailbox.",
        SpError.SP_BUG: "Internal Spread bug detected.",
        SpError.ILLEGAL_TIME: "Illegal time.",
    }
)


def strerror(code: int) -> str:
    """libspread's text for an error code ("Unrecognized error." for unknown codes)."""
    return _STRERROR.get(code, "Unrecognized error.")


class SpreadClientError(SpreadError):
    """A Spread client call failed; `code` is libspread's (negative) error code."""

    code: int = SpError.SP_BUG

    def __init__(self, detail: str = "", *, code: int | None = None) -> None:
        if code is not None:
            self.code = code
        self.detail = detail
        text = f"({self.code}) {strerror(self.code)}"
        super().__init__(f"{text} ({detail})" if detail else text)


class IllegalSpreadError(SpreadClientError):
    code = SpError.ILLEGAL_SPREAD


class CouldNotConnectError(SpreadClientError):
    code = SpError.COULD_NOT_CONNECT


class ConnectionRejectedError(SpreadClientError):
    """The daemon refused the session (one of the reject codes of spec §3.6)."""


class RejectQuotaError(ConnectionRejectedError):
    code = SpError.REJECT_QUOTA


class RejectNoNameError(ConnectionRejectedError):
    code = SpError.REJECT_NO_NAME


class RejectIllegalNameError(ConnectionRejectedError):
    code = SpError.REJECT_ILLEGAL_NAME


class RejectNotUniqueError(ConnectionRejectedError):
    code = SpError.REJECT_NOT_UNIQUE


class RejectVersionError(ConnectionRejectedError):
    code = SpError.REJECT_VERSION


class RejectAuthError(ConnectionRejectedError):
    code = SpError.REJECT_AUTH


class ConnectionClosedError(SpreadClientError):
    code = SpError.CONNECTION_CLOSED


class IllegalSessionError(SpreadClientError):
    code = SpError.ILLEGAL_SESSION


class IllegalServiceError(SpreadClientError):
    code = SpError.ILLEGAL_SERVICE


class IllegalMessageError(SpreadClientError):
    code = SpError.ILLEGAL_MESSAGE


class IllegalGroupError(SpreadClientError):
    code = SpError.ILLEGAL_GROUP


class BufferTooShortError(SpreadClientError):
    code = SpError.BUFFER_TOO_SHORT


class GroupsTooShortError(SpreadClientError):
    code = SpError.GROUPS_TOO_SHORT


class MessageTooLongError(SpreadClientError):
    code = SpError.MESSAGE_TOO_LONG


class NetErrorOnSessionError(SpreadClientError):
    code = SpError.NET_ERROR_ON_SESSION


class SpBugError(SpreadClientError):
    code = SpError.SP_BUG


class IllegalTimeError(SpreadClientError):
    code = SpError.ILLEGAL_TIME


_ERROR_CLASSES: Final[Mapping[int, type[SpreadClientError]]] = MappingProxyType(
    {
        cls.code: cls
        for cls in (
            IllegalSpreadError,
            CouldNotConnectError,
            RejectQuotaError,
            RejectNoNameError,
            RejectIllegalNameError,
            RejectNotUniqueError,
            RejectVersionError,
            ConnectionClosedError,
            RejectAuthError,
            IllegalSessionError,
            IllegalServiceError,
            IllegalMessageError,
            IllegalGroupError,
            BufferTooShortError,
            GroupsTooShortError,
            MessageTooLongError,
            NetErrorOnSessionError,
            SpBugError,
            IllegalTimeError,
        )
    }
)


def error_for(code: int, detail: str = "") -> SpreadClientError:
    """The exception for a Spread error code (a plain SpreadClientError for unknown codes)."""
    cls = _ERROR_CLASSES.get(code)
    return cls(detail) if cls is not None else SpreadClientError(detail, code=code)


def service_name(service_type: int) -> str | None:
    """UNRELIABLE, RELIABLE, FIFO, CAUSAL, AGREED or SAFE: the first service bit set (as spuser)."""
    for bit in _SERVICE_BITS:
        if service_type & bit:
            assert bit.name is not None
            return bit.name.removesuffix("_MESS")
    return None


# --- daemon names -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DaemonAddress:
    """Where a daemon listens for clients: a Unix socket path, or a TCP host and port."""

    unix_path: str | None = None
    host: str | None = None
    port: int | None = None

    def __str__(self) -> str:
        if self.unix_path is not None:
            return self.unix_path
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_daemon_address(spec: str | None) -> DaemonAddress:
    """libspread's daemon names (spec §1), plus Unix socket paths. IllegalSpreadError if bad."""
    text = spec or DEFAULT_DAEMON
    if "/" in text:
        return DaemonAddress(unix_path=text)
    port_text, at, host = text.partition("@")
    if not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) < 65536:
        raise IllegalSpreadError(f"{text!r}: expected <port>, <port>@<host> or a socket path")
    port = int(port_text)
    if not at:
        return DaemonAddress(unix_path=f"{UNIX_SOCKET_DIR}/{port}", port=port)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host:
        raise IllegalSpreadError(f"{text!r}: no host after '@'")
    return DaemonAddress(host=host, port=port)


def _check_target(name: str) -> None:
    """A name we can send to: 1..31 latin-1 characters without NUL (groups or private groups)."""
    try:
        raw = name.encode("latin-1")
    except UnicodeEncodeError:
        raw = b""
    if not 0 < len(raw) < MAX_GROUP_NAME or b"\0" in raw:
        raise IllegalGroupError(f"{name!r}: group names are 1..31 latin-1 characters")


# --- the sans-I/O core ------------------------------------------------------------------------


class MailboxCore:
    """One client connection without I/O: feed it the daemon's bytes, write what it returns.

        core = MailboxCore("alice")
        write(core.start())
        while not isinstance(step := core.handshake(), Accept):
            if step is None: core.feed(read())   # b"" at EOF
            else: write(step)                     # the auth choice
        write(core.join("test"))
        msg = core.next_message()                 # None: feed more bytes

    The wire codec (`ClientConnection`) is handed exactly one unit at a time: the handshake byte
    by byte, then one whole message frame. So the core's own buffer holds everything not yet
    decoded and `pending_bytes` is what libspread's SP_poll would count.
    """

    def __init__(
        self,
        private_name: str = "",
        *,
        membership: bool = True,
        priority: int = 0,
        endian: Endian = NATIVE_ENDIAN,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        max_frame_bytes: int = DEFAULT_CLIENT_MAX_FRAME_BYTES,
    ) -> None:
        name = private_name[:MAX_PRIVATE_NAME]  # libspread cuts longer names
        if name and not valid_private_name(name):
            raise RejectIllegalNameError(f"{private_name!r}: use 1..10 characters in '$'..'~'")
        if not 0 < max_message_bytes <= MAX_MESSAGE_BODY_LEN - MESSAGE_HEADER_LEN:
            raise MessageTooLongError(f"max_message_bytes {max_message_bytes} out of range")
        self._conn = ClientConnection(
            endian=endian, max_body_len=max_message_bytes, max_frame_bytes=max_frame_bytes
        )
        self._max_message = max_message_bytes
        self._request = ConnectRequest(
            private_name=name, wants_membership=membership, priority=1 if priority > 0 else 0
        )
        self._max_frame = max_frame_bytes
        self._buf = bytearray()
        self._start = 0
        self._eof = False
        self._frame_len: int | None = None
        self._failure: SpreadClientError | None = None
        self.disconnected = False  # this side sent KILL or gave up the connection
        self._group_fields: dict[str, bytes] = {}  # target name -> its 32-byte field
        self._sender_field = b""  # our private group as a 32-byte field, once accepted

    @property
    def endian(self) -> Endian:
        return self._conn.endian

    @property
    def private_group(self) -> str | None:
        """`#name#daemon` once the daemon accepted us."""
        return self._conn.private_group

    @property
    def established(self) -> bool:
        return self._conn.state is ClientState.ESTABLISHED and not self.disconnected

    @property
    def pending_bytes(self) -> int:
        """Bytes received and not yet returned as messages."""
        return len(self._buf) - self._start

    @property
    def eof(self) -> bool:
        return self._eof

    def feed(self, data: bytes) -> None:
        """Bytes from the daemon; b"" when it closed the connection."""
        if not data:
            self._eof = True
        elif not self._eof:
            self._buf += data

    def _take(self, size: int) -> bytes:
        out = bytes(self._buf[self._start : self._start + size])
        self._start += len(out)
        if self._start >= RECV_CHUNK_BYTES and 2 * self._start > len(self._buf):
            del self._buf[: self._start]
            self._start = 0
        return out

    def _fail(self, error: SpreadClientError) -> SpreadClientError:
        self._failure = error
        self._buf.clear()
        self._start = 0
        return error

    # handshake

    def start(self) -> bytes:
        """The connect request to write first."""
        return self._conn.send(self._request)

    def handshake(self) -> bytes | Accept | None:
        """Advance the handshake: bytes to write, the Accept when done, or None (feed more)."""
        if self._failure is not None:
            raise self._failure
        conn = self._conn
        while True:
            match conn.state:
                case ClientState.AUTH_CHOICE:
                    assert conn.auth_list is not None
                    if "NULL" not in conn.auth_list.methods:
                        offered = " ".join(conn.auth_list.methods)
                        raise self._fail(RejectAuthError(f"the daemon offers only {offered}"))
                    return conn.send(AuthChoice(("NULL",)))
                case ClientState.ESTABLISHED:
                    assert conn.accepted is not None
                    self._sender_field = name_field(conn.accepted.private_group)
                    return conn.accepted
            if self.pending_bytes == 0 and not self._eof:
                return None
            conn.receive_data(self._take(1) if self.pending_bytes else b"")
            try:
                event = conn.next_event()
            except WireError as exc:
                raise self._fail(error_for(exc.code, str(exc))) from None
            match event:
                case Reject(code=code):
                    raise self._fail(error_for(code, "refused by the daemon"))
                case ConnectionClosed():
                    raise self._fail(ConnectionClosedError("during the handshake"))
                case Accept() | AuthList():
                    continue
            assert event is NEED_DATA, event

    # messages

    def next_message(self) -> Message | None:
        """The next whole message, or None until more bytes are fed.

        ConnectionClosedError once the daemon closed and every message before that was taken.
        """
        if self._failure is not None:
            raise self._failure
        if self._frame_len is None:
            if self.pending_bytes < MESSAGE_HEADER_LEN:
                self._raise_at_eof()
                return None
            try:
                self._frame_len = daemon_frame_len_at(self._buf, self._start)
            except WireError as exc:
                raise self._fail(error_for(exc.code, str(exc))) from None
            if self._frame_len > self._max_frame:
                raise self._fail(
                    MessageTooLongError(f"a {self._frame_len}-byte message exceeds the bound")
                )
        if self.pending_bytes < self._frame_len:
            self._raise_at_eof()
            return None
        frame = self._take(self._frame_len)
        self._frame_len = None
        # Data messages, nearly all of them, are decoded straight from the frame; the codec
        # (which would only go from ESTABLISHED to ESTABLISHED) sees everything else.
        if self._conn.state is ClientState.ESTABLISHED:
            message = regular_message_from_frame(frame)
            if message is not None:
                return message
        self._conn.receive_data(frame)
        try:
            event = self._conn.next_event()
        except WireError as exc:
            raise self._fail(error_for(exc.code, str(exc))) from None
        assert isinstance(
            event,
            (RegularMessage, MembershipMessage, TransitionalMessage, SelfLeave, RejectMessage),
        ), event
        return event

    def _raise_at_eof(self) -> None:
        """More bytes are needed: if none can come, the connection is over."""
        if self._eof:
            raise self._fail(ConnectionClosedError())

    # requests

    def _check_usable(self) -> None:
        if self.disconnected:
            raise IllegalSessionError("this mailbox was disconnected")
        if self._failure is not None:
            raise self._failure
        if self._eof:
            raise self._fail(ConnectionClosedError())
        if self._conn.state is not ClientState.ESTABLISHED:
            raise IllegalSessionError("the handshake has not finished")

    def join(self, group: str) -> bytes:
        self._check_usable()
        if not valid_group_name(group):
            raise IllegalGroupError(f"{group!r}: use 1..31 characters in '$'..'~'")
        return self._conn.join(group)

    def leave(self, group: str) -> bytes:
        self._check_usable()
        if not valid_group_name(group):
            raise IllegalGroupError(f"{group!r}: use 1..31 characters in '$'..'~'")
        return self._conn.leave(group)

    def multicast(
        self,
        service: int,
        groups: str | Sequence[str],
        data: bytes | bytearray | memoryview,
        mess_type: int = 0,
        *,
        self_discard: bool = False,
    ) -> bytes:
        """The request for SP_multicast / SP_multigroup_multicast."""
        self._check_usable()
        names = (groups,) if isinstance(groups, str) else tuple(groups)
        if not 1 <= len(names) <= MAX_GROUPS_PER_MESSAGE:
            raise IllegalGroupError(f"{len(names)} groups: send to 1..{MAX_GROUPS_PER_MESSAGE}")
        fields = self._group_fields  # names checked before, as their 32-byte fields
        group_fields = []
        for name in names:
            field = fields.get(name)
            if field is None:
                _check_target(name)
                if len(fields) >= _GROUP_FIELDS_CACHED_MAX:
                    fields.clear()
                field = fields[name] = name_field(name)
            group_fields.append(field)
        service = int(service)
        base = service & ~_SELF_DISCARD_BIT
        if base not in _SERVICE_BIT_VALUES:
            raise IllegalServiceError(f"service {service:#x}: one of the six service types")
        if self_discard or service & _SELF_DISCARD_BIT:
            base |= _SELF_DISCARD_BIT
        if not -0x8000 <= mess_type <= 0x7FFF:
            raise IllegalMessageError(f"mess_type {mess_type} is not a 16-bit signed value")
        payload = data if isinstance(data, bytes) else bytes(data)
        if len(payload) + MAX_GROUP_NAME * len(names) > self._max_message:
            raise MessageTooLongError(
                f"{len(payload)} bytes + 32 x {len(names)} groups > {self._max_message}"
            )
        return encode_multicast(
            base, self._sender_field, group_fields, payload, mess_type, self._conn.endian
        )

    def disconnect(self) -> bytes:
        """The KILL request to write before closing (b"" if there is no session to end)."""
        if self.disconnected:
            return b""
        self.disconnected = True
        if self._conn.state is not ClientState.ESTABLISHED or self._eof or self._failure:
            return b""
        return self._conn.disconnect()


# --- the blocking mailbox ---------------------------------------------------------------------


DISCONNECT_DRAIN_S: Final = 1.0  # at most this long reading to the daemon's close


class MailboxViews:
    """What the blocking Mailbox and aioclient.AsyncMailbox show alike, read from their core."""

    _core: MailboxCore
    _closed: bool
    daemon: str  # the daemon name as given to connect()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<{type(self).__name__} {self.private_group} via {self.daemon or '?'} {state}>"

    @property
    def private_group(self) -> str:
        """`#<private name>#<daemon name>`: send here to reach this mailbox alone."""
        group = self._core.private_group
        assert group is not None
        return group

    @property
    def endian(self) -> Endian:
        """The byte order this mailbox writes in (the machine's own)."""
        return self._core.endian

    @property
    def closed(self) -> bool:
        """True once `disconnect()` was called."""
        return self._closed

    def endian_mismatch(self, msg: Message) -> bool:
        """libspread's endian_mismatch: the sender of `msg` runs on the other byte order."""
        if isinstance(msg, (RegularMessage, RejectMessage)):
            return msg.endian is not self._core.endian
        return False


class Mailbox(MailboxViews):
    """A connection to a Spread daemon (libspread's `mailbox`). Make one with `connect()`."""

    def __init__(self, sock: socket.socket, core: MailboxCore, *, daemon: str = "") -> None:
        if not core.established:
            raise IllegalSessionError("the core has not finished its handshake")
        self._sock = sock
        self._core = core
        self.daemon = daemon  # the daemon name as given to connect()
        self._codec_lock = threading.Lock()  # the core: held briefly, never across I/O
        self._send_lock = threading.Lock()
        self._recv_lock = threading.RLock()
        self._poller = select.poll()
        self._poller.register(sock.fileno(), select.POLLIN)
        self._closed = False

    def fileno(self) -> int:
        """The socket, for select/poll; readable when a message may be waiting."""
        return self._sock.fileno()

    # requests

    def join(self, group: str) -> None:
        """Join `group` (SP_join); the membership message comes back through receive()."""
        self._send(lambda: self._core.join(group))

    def leave(self, group: str) -> None:
        self._send(lambda: self._core.leave(group))

    def multicast(
        self,
        service: int,
        groups: str | Sequence[str],
        data: bytes | bytearray | memoryview,
        mess_type: int = 0,
        *,
        self_discard: bool = False,
    ) -> int:
        """Send `data` to one group or up to 100 (private groups too). Returns len(data).

        `service` is one of UNRELIABLE_MESS .. SAFE_MESS, optionally | SELF_DISCARD (or pass
        self_discard=True): with it this mailbox does not get its own copy.
        """
        size = len(data)
        self._send(
            lambda: self._core.multicast(
                service, groups, data, mess_type, self_discard=self_discard
            )
        )
        return size

    def _send(self, make: Callable[[], bytes]) -> None:
        with self._send_lock:
            with self._codec_lock:
                request = make()
            try:
                self._sock.sendall(request)
            except OSError as exc:
                with self._codec_lock:
                    self._core.feed(b"")
                raise ConnectionClosedError(str(exc.strerror or exc)) from exc

    # receiving

    def receive(self, timeout: float | None = None) -> Message:
        """The next message, waiting at most `timeout` seconds (None: for ever; 0: no wait).

        TimeoutError if none came in time; ConnectionClosedError once the daemon is gone and
        every message it sent was returned; IllegalSessionError after disconnect().
        """
        if timeout is not None and timeout < 0:
            raise IllegalTimeError(f"timeout {timeout} < 0")
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._recv_lock:
            while True:
                if self._closed:
                    raise IllegalSessionError("this mailbox was disconnected")
                with self._codec_lock:
                    message = self._core.next_message()
                if message is not None:
                    return message
                remaining_ms = -1
                if deadline is not None:
                    remaining_ms = max(0, round((deadline - time.monotonic()) * 1000))
                if not self._poller.poll(remaining_ms):
                    raise TimeoutError(f"no message within {timeout} s")
                self._read_some()

    def _read_some(self) -> None:
        try:
            data = self._sock.recv(RECV_CHUNK_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            if exc.errno not in (errno.ECONNRESET, errno.EPIPE, errno.ENOTCONN, errno.EBADF):
                raise
            data = b""
        with self._codec_lock:
            self._core.feed(data)

    def poll(self) -> int:
        """Bytes waiting to be received (SP_poll): 0 means receive() would block."""
        if self._closed:
            raise IllegalSessionError("this mailbox was disconnected")
        with self._codec_lock:
            pending = self._core.pending_bytes
        buf = bytearray(_FIONREAD_BUF.size)
        try:
            fcntl.ioctl(self._sock.fileno(), termios.FIONREAD, buf)
        except OSError:
            return pending
        waiting: int = _FIONREAD_BUF.unpack(buf)[0]
        return pending + waiting

    def __iter__(self) -> Iterator[Message]:
        """Messages until this mailbox is disconnected; ConnectionClosedError if the daemon goes."""
        while True:
            try:
                yield self.receive()
            except IllegalSessionError:
                if self._closed:
                    return
                raise

    # ending

    def disconnect(self) -> None:
        """End the session (SP_disconnect): the daemon tells the groups, we close the socket."""
        with self._send_lock:
            if self._closed:
                return
            with self._codec_lock:
                kill = self._core.disconnect()
            self._closed = True
            with contextlib.suppress(OSError):  # already gone: nothing left to end
                if kill:
                    self._sock.sendall(kill)
                    # Close our half only, then read to the daemon's end: closing a socket
                    # with unread data sends a reset, and a reset makes the daemon's kernel
                    # throw away requests it had received but the daemon had not read yet.
                    self._sock.shutdown(socket.SHUT_WR)
                    if self._recv_lock.acquire(timeout=DISCONNECT_DRAIN_S):
                        try:
                            self._drain_to_eof()
                        finally:
                            self._recv_lock.release()
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)  # wakes a receive() blocked in poll
        with self._recv_lock:
            self._sock.close()

    def _drain_to_eof(self) -> None:
        deadline = time.monotonic() + DISCONNECT_DRAIN_S
        while (left := deadline - time.monotonic()) > 0:
            if not self._poller.poll(left * 1000):
                return
            if not self._sock.recv(65536):
                return  # the daemon has closed: everything we sent was read

    close = disconnect

    def __enter__(self) -> Mailbox:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.disconnect()


# --- opening ----------------------------------------------------------------------------------


def _remaining(deadline: float | None) -> float | None:
    if deadline is None:
        return None
    return max(0.001, deadline - time.monotonic())


def resolve(address: DaemonAddress) -> tuple[int, tuple[str, int] | tuple[str, int, int, int]]:
    """(family, sockaddr) of a TCP daemon: getaddrinfo's first IPv4 or IPv6 answer."""
    assert address.host is not None and address.port is not None
    try:
        infos = socket.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise CouldNotConnectError(f"{address.host}: {exc.strerror}") from None
    for family, _type, _proto, _name, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6):
            return family, sockaddr  # type: ignore[return-value]
    raise CouldNotConnectError(f"{address.host}: no IPv4 or IPv6 address")


def connect_unix(path: str, timeout: float | None) -> socket.socket:
    """A blocking connect to a Unix socket, waiting up to `timeout` while its backlog is full.

    A non-blocking (or Python-timeout) connect fails at once with EAGAIN when the daemon's listen
    backlog is full, e.g. with a few hundred clients connecting together; the kernel's own wait,
    bounded by SO_SNDTIMEO, does not.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    set_session_buffers(sock)
    try:
        if timeout is not None:
            seconds = max(timeout, 0.001)
            whole = int(seconds)
            sock.setsockopt(
                socket.SOL_SOCKET,
                socket.SO_SNDTIMEO,
                _TIMEVAL.pack(whole, int((seconds - whole) * 1_000_000)),
            )
        sock.connect(path)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _TIMEVAL.pack(0, 0))
    except BaseException:
        sock.close()
        raise
    return sock


def open_socket(address: DaemonAddress, timeout: float | None) -> socket.socket:
    """A socket connected to the daemon (no handshake yet); CouldNotConnectError if not."""
    try:
        if address.unix_path is not None:
            return connect_unix(address.unix_path, timeout)
        family, target = resolve(address)
        sock = socket.socket(family, socket.SOCK_STREAM)
        set_session_buffers(sock)
        try:
            sock.settimeout(timeout)
            sock.connect(target)
        except BaseException:
            sock.close()
            raise
    except OSError as exc:
        why = "timed out" if isinstance(exc, TimeoutError) else exc.strerror or str(exc)
        raise CouldNotConnectError(f"{address}: {why}") from None
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    return sock


def handshake(
    sock: socket.socket,
    private_name: str = "",
    *,
    membership: bool = True,
    priority: int = 0,
    timeout: float | None = DEFAULT_CONNECT_TIMEOUT_S,
    endian: Endian = NATIVE_ENDIAN,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    daemon: str = "",
) -> Mailbox:
    """Run the client handshake over a connected socket; the Mailbox owns it afterwards.

    `endian` is for tests and tools that play a client on other hardware; leave it alone.
    """
    core = MailboxCore(
        private_name,
        membership=membership,
        priority=priority,
        endian=endian,
        max_message_bytes=max_message_bytes,
    )
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        sock.settimeout(_remaining(deadline))
        sock.sendall(core.start())
        while not isinstance(step := core.handshake(), Accept):
            if step is not None:
                sock.sendall(step)  # the 90-byte auth choice, in one send (spec §3.4)
                continue
            sock.settimeout(_remaining(deadline))
            try:
                data = sock.recv(RECV_CHUNK_BYTES)
            except (ConnectionResetError, BrokenPipeError):
                data = b""
            core.feed(data)
        sock.settimeout(None)
    except TimeoutError:
        raise CouldNotConnectError(f"no answer within {timeout or 0:.3g} s") from None
    except (ConnectionResetError, BrokenPipeError) as exc:
        raise ConnectionClosedError(f"{exc.strerror} during the handshake") from None
    return Mailbox(sock, core, daemon=daemon)


def connect(
    daemon: str | None = DEFAULT_DAEMON,
    private_name: str = "",
    *,
    membership: bool = True,
    priority: int = 0,
    timeout: float | None = DEFAULT_CONNECT_TIMEOUT_S,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
) -> Mailbox:
    """Connect to a daemon (SP_connect_timeout) and return the mailbox.

    `daemon`: "4803" (Unix socket /tmp/4803), "4803@host" (TCP) or a socket path.
    `private_name`: up to 10 characters, unique on that daemon; "" lets the daemon pick one.
    `membership`: receive membership messages for the groups joined. `priority`: sent in the
    connect request (no effect in Spread 5.0.1). `timeout` covers the connect and the handshake
    (None: wait for ever). `max_message_bytes` (data + 32 per group) must stay within the
    daemon's MaxMessageSize: the daemon drops a client that sends more.
    """
    address = parse_daemon_address(daemon)
    MailboxCore(private_name, max_message_bytes=max_message_bytes)  # check before connecting
    deadline = None if timeout is None else time.monotonic() + timeout
    sock = open_socket(address, timeout)
    try:
        return handshake(
            sock,
            private_name,
            membership=membership,
            priority=priority,
            timeout=_remaining(deadline),
            max_message_bytes=max_message_bytes,
            daemon=daemon or DEFAULT_DAEMON,
        )
    except BaseException:
        sock.close()
        raise

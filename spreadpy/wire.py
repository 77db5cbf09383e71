"""Spread 4.x/5.x client <-> daemon wire protocol: constants, message values and byte codecs.

Pure: bytes in, frozen dataclasses out, and back. No I/O, no clock, no state. The per-connection
state machines that drive these codecs (`ServerSession` for the daemon, `ClientConnection` for
the library) live in `spreadpy.wire_session`. Facts follow `shared/spec/client-protocol.md`
(section numbers below refer to it); the daemon's limits come from `shared/spec/spread-daemon.md`.

Units on the wire
  handshake  connect request (§3.2), auth list (§3.3), auth choice (§3.4), accept (§3.5), or one
             signed reject byte instead of the auth list or the accept (§3.6); legacy (§3.7)
  messages   48-byte header (§4), then [4-byte old_type, REJECT_MESS only], num_groups 32-byte
             names, data_len bytes; client requests (§6) and daemon messages (§7)

Byte order (§2): every writer uses its own order and sets ENDIAN_MARK in `type` and `hint` when it
is little-endian. Decoders undo the writer's order. The hint keeps its own order, carried as the
`endian` field of Multicast, RegularMessage and RejectMessage, because the daemon relays it
verbatim and receivers use it to report `endian_mismatch`. Encoders take the order to write in.

Names are `str` whose code points are the bytes (latin-1), so whatever a peer sends decodes and
re-encodes unchanged. Only the bytes before the first NUL of a 32-byte field count (§4).

Errors: decoders raise `WireError(code, message)` for malformed input, carrying the Spread error
code (`SpError`) to report; encoders raise `LocalProtocolError` when asked to write something the
protocol cannot carry. No other exception escapes a decoder, whatever the bytes.

Where we knowingly differ from the 5.0.1 daemon (stricter only where it relays garbage to other
clients, more tolerant only of TCP segmentation):
  * Request `type` (§6.3): besides the original's "exactly one service bit or one of JOIN, LEAVE,
    KILL", we refuse membership, reject and daemon-internal bits (a client could otherwise make a
    data message look like a membership or reject message to receivers) and drop every other
    extra bit (e.g. DROP_RECV) instead of relaying it. SELF_DISCARD is kept.
  * A hint whose two mark bits disagree is refused: receivers on different hardware would read
    different mess_types from it. libspread always sets both or neither.
  * A 32-byte name field with no NUL is refused (the original cuts the sender at 31 bytes and
    reads group names past their field).
  * JOIN and LEAVE must carry exactly one group whose name passes the library's own check
    (1..31 bytes in '$'..'~', so private groups cannot be joined): ILLEGAL_GROUP otherwise.
  * Group fields of relayed messages are written NUL padded: junk after the NUL (uninitialised
    client memory, §4, quirk 5) is not forwarded to other clients. Receivers cannot tell.
  * Body limit: the daemon side defaults to RING_SAFE_MAX_BODY_LEN (142752,
    spread-daemon.md §4) rather than the original's 143952, whose last 1200 bytes overflow the
    original's 100-fragment message; the client side uses the same default, because libspread's
    own 144000 lets an application send messages the daemon kills it for.
  * Version bytes are unsigned (the original reads signed chars).
"""

from __future__ import annotations

import functools
import random
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum, IntEnum, IntFlag
from types import SimpleNamespace
from typing import Final

from spreadpy.errors import LocalProtocolError, WireError

__all__ = [
    "ACCEPT_SESSION",
    "AUTH_CHOICE_LEN",
    "DAEMON_MAX_BODY_LEN",
    "DEFAULT_MAX_SESSION_MESSAGES",
    "DEFAULT_SPREAD_PORT",
    "ENDIAN_MARK",
    "HINT_BITS",
    "MAX_AUTH_METHODS",
    "MAX_AUTH_NAME",
    "MAX_CLIENT_SCATTER_ELEMENTS",
    "MAX_GROUPS_PER_MESSAGE",
    "MAX_GROUP_NAME",
    "MAX_LOCAL_GROUP_MEMBERS",
    "MAX_MESSAGE_BODY_LEN",
    "MAX_PRIVATE_NAME",
    "MAX_PROC_NAME",
    "MAX_SESSIONS",
    "MESSAGE_HEADER_LEN",
    "MULTICAST_REQUEST_TYPES",
    "REJECT_CODES",
    "RING_SAFE_MAX_BODY_LEN",
    "SPREAD_VERSION",
    "Accept",
    "AuthChoice",
    "AuthList",
    "ClientRequest",
    "ConnectRequest",
    "DaemonMessage",
    "Endian",
    "GroupId",
    "Join",
    "Kill",
    "Leave",
    "MembershipCause",
    "MembershipMessage",
    "MessageHeader",
    "Multicast",
    "MulticastFrame",
    "RegularMessage",
    "Reject",
    "RejectMessage",
    "SelfLeave",
    "ServiceType",
    "SpError",
    "TransitionalMessage",
    "check_request_header",
    "check_request_words",
    "daemon_frame_len",
    "daemon_frame_len_at",
    "daemon_message_from_frame",
    "decode_accept_reply",
    "decode_auth_choice",
    "decode_auth_reply",
    "decode_connect_request",
    "decode_daemon_message",
    "decode_header",
    "decode_request",
    "encode_accept",
    "encode_auth_choice",
    "encode_auth_list",
    "encode_connect_request",
    "encode_daemon_message",
    "encode_header",
    "encode_multicast",
    "encode_reject",
    "encode_request",
    "generate_private_name",
    "is_membership",
    "is_reg_memb",
    "is_regular",
    "is_reject",
    "is_self_leave",
    "is_transition",
    "name_field",
    "parse_accept_reply",
    "parse_auth_reply",
    "parse_connect_request",
    "private_group_name",
    "read_request_head",
    "regular_message_from_frame",
    "relay_frame",
    "relay_frame_in",
    "relay_frame_targets",
    "request_frame_len",
    "request_from_frame",
    "split_private_group",
    "valid_group_name",
    "valid_private_name",
]

# --- limits (§8) ------------------------------------------------------------------------------

DEFAULT_SPREAD_PORT: Final = 4803
MAX_GROUP_NAME: Final = 32  # every name field, NUL included
MAX_PRIVATE_NAME: Final = 10
MAX_PROC_NAME: Final = 20  # daemon name, NUL included
MAX_GROUPS_PER_MESSAGE: Final = 100
MAX_MESSAGE_BODY_LEN: Final = 144000  # data + 32 * groups, libspread's limit
MESSAGE_HEADER_LEN: Final = 48
DAEMON_MAX_BODY_LEN: Final = MAX_MESSAGE_BODY_LEN - MESSAGE_HEADER_LEN  # 5.0.1 daemon kills above
RING_SAFE_MAX_BODY_LEN: Final = 100 * 1428 - MESSAGE_HEADER_LEN  # fits 100 ring fragments
MAX_CLIENT_SCATTER_ELEMENTS: Final = 100  # library scatter API
MAX_SESSIONS: Final = 997
DEFAULT_MAX_SESSION_MESSAGES: Final = 1000  # spread.conf MaxSessionMessages: queued per session
MAX_LOCAL_GROUP_MEMBERS: Final = 3122
MAX_AUTH_NAME: Final = 30
MAX_AUTH_METHODS: Final = 3
AUTH_CHOICE_LEN: Final = MAX_AUTH_NAME * MAX_AUTH_METHODS  # 90
ACCEPT_SESSION: Final = 1
SPREAD_VERSION: Final = (5, 0, 1)

ENDIAN_MARK: Final = 0x80000080  # set in `type` and `hint` by little-endian writers (§2)
HINT_BITS: Final = 0x80FFFF80  # mark + 16-bit mess_type; anything else in a hint is illegal

_NAME_FIRST: Final = 0x24  # '$': names and group names use bytes '$'..'~'
_NAME_LAST: Final = 0x7E


class ServiceType(IntFlag):
    """Service-type and command bits of the `type` word (§5), endian mark excluded."""

    UNRELIABLE_MESS = 0x00000001
    RELIABLE_MESS = 0x00000002
    FIFO_MESS = 0x00000004
    CAUSAL_MESS = 0x00000008
    AGREED_MESS = 0x00000010
    SAFE_MESS = 0x00000020
    REGULAR_MESS = 0x0000003F
    SELF_DISCARD = 0x00000040
    CAUSED_BY_JOIN = 0x00000100
    CAUSED_BY_LEAVE = 0x00000200
    CAUSED_BY_DISCONNECT = 0x00000400
    CAUSED_BY_NETWORK = 0x00000800
    REG_MEMB_MESS = 0x00001000
    TRANSITION_MESS = 0x00002000
    MEMBERSHIP_MESS = 0x00003F00
    RETRANSMIT_TYPE = 0x00004000
    LATENCY_MESS = 0x00008000
    JOIN_MESS = 0x00010000
    LEAVE_MESS = 0x00020000
    KILL_MESS = 0x00040000
    GROUPS_MESS = 0x00080000
    DUMMY_MESS = 0x00100000
    STATETRANS_MESS = 0x00200000
    RESERVED = 0x003FC000
    REJECT_MESS = 0x00400000
    DROP_RECV = 0x01000000


_ST = ServiceType
# The same bits as plain ints, for bit tests in the per-message paths: IntFlag arithmetic runs
# in Python (Flag.__and__), about ten times slower than int's.
_B: Final = SimpleNamespace(**{name: int(m) for name, m in ServiceType.__members__.items()})
# Every combination of the service bits and SELF_DISCARD, built once: ServiceType(value) is
# slow, and a regular message's type is always one of these.
_LOW_TYPES: Final = tuple(ServiceType(v) for v in range(0x80))


def service_type_of(value: int) -> ServiceType:
    return _LOW_TYPES[value] if 0 <= value < 0x80 else ServiceType(value)


_SERVICE_BITS: Final = tuple(1 << i for i in range(6))
_COMMAND_BITS: Final = int(_ST.JOIN_MESS | _ST.LEAVE_MESS | _ST.KILL_MESS)
_CAUSE_BITS: Final = int(
    _ST.CAUSED_BY_JOIN | _ST.CAUSED_BY_LEAVE | _ST.CAUSED_BY_DISCONNECT | _ST.CAUSED_BY_NETWORK
)
# Bits a client request may not carry at all (see the module docstring).
_FORBIDDEN_REQUEST_BITS: Final = int(
    _ST.MEMBERSHIP_MESS
    | _ST.REJECT_MESS
    | _ST.RETRANSMIT_TYPE
    | _ST.LATENCY_MESS
    | _ST.GROUPS_MESS
    | _ST.DUMMY_MESS
    | _ST.STATETRANS_MESS
)


class SpError(IntEnum):
    """Spread error and reject codes (include/sp.h; §3.6)."""

    ILLEGAL_SPREAD = -1
    COULD_NOT_CONNECT = -2
    REJECT_QUOTA = -3
    REJECT_NO_NAME = -4
    REJECT_ILLEGAL_NAME = -5
    REJECT_NOT_UNIQUE = -6
    REJECT_VERSION = -7
    CONNECTION_CLOSED = -8
    REJECT_AUTH = -9
    ILLEGAL_SESSION = -11
    ILLEGAL_SERVICE = -12
    ILLEGAL_MESSAGE = -13
    ILLEGAL_GROUP = -14
    BUFFER_TOO_SHORT = -15
    GROUPS_TOO_SHORT = -16
    MESSAGE_TOO_LONG = -17
    NET_ERROR_ON_SESSION = -18
    SP_BUG = -19
    ILLEGAL_TIME = -20


# The codes a daemon sends as its single reject byte (§3.6).
REJECT_CODES: Final = frozenset(
    {
        SpError.REJECT_QUOTA,
        SpError.REJECT_ILLEGAL_NAME,
        SpError.REJECT_NOT_UNIQUE,
        SpError.REJECT_VERSION,
        SpError.REJECT_AUTH,
    }
)


class Endian(Enum):
    """A writer's byte order; the value is the `struct` prefix."""

    LITTLE = "<"
    BIG = ">"


class MembershipCause(IntEnum):
    """Why a regular membership message was sent (exactly one per message, §7.2)."""

    JOIN = 0x00000100
    LEAVE = 0x00000200
    DISCONNECT = 0x00000400
    NETWORK = 0x00000800


# --- libspread's predicates on a mark-cleared type (sp.h, §5) --------------------------------


def is_reject(service_type: int) -> bool:
    return bool(service_type & _B.REJECT_MESS)


def is_regular(service_type: int) -> bool:
    return bool(service_type & _B.REGULAR_MESS) and not is_reject(service_type)


def is_membership(service_type: int) -> bool:
    return bool(service_type & _B.MEMBERSHIP_MESS) and not is_reject(service_type)


def is_reg_memb(service_type: int) -> bool:
    return is_membership(service_type) and bool(service_type & _B.REG_MEMB_MESS)


def is_transition(service_type: int) -> bool:
    return is_membership(service_type) and bool(service_type & _B.TRANSITION_MESS)


def is_self_leave(service_type: int) -> bool:
    return (
        is_membership(service_type)
        and bool(service_type & _B.CAUSED_BY_LEAVE)
        and not service_type & (_B.REG_MEMB_MESS | _B.TRANSITION_MESS)
    )


# --- names ------------------------------------------------------------------------------------


def _name_bytes_ok(raw: bytes) -> bool:
    return all(_NAME_FIRST <= b <= _NAME_LAST for b in raw)


def _name_chars_ok(name: str) -> bool:
    return all(_NAME_FIRST <= ord(c) <= _NAME_LAST for c in name)


def valid_private_name(name: str) -> bool:
    """1..10 characters, each in '$'..'~' (§3.2; '#', space and controls are illegal)."""
    return 1 <= len(name) <= MAX_PRIVATE_NAME and _name_chars_ok(name)


def valid_group_name(name: str) -> bool:
    """libspread's rule for SP_join/SP_leave: 1..31 characters, each in '$'..'~' (§6.2)."""
    return 1 <= len(name) < MAX_GROUP_NAME and _name_chars_ok(name)


def private_group_name(private_name: str, daemon_name: str) -> str:
    """`#name#daemon`, cut to 31 bytes like the original's snprintf (§3.5)."""
    return f"#{private_name}#{daemon_name}"[: MAX_GROUP_NAME - 1]


def split_private_group(group: str) -> tuple[str, str] | None:
    """(private name, daemon name) of `#name#daemon`, or None if `group` is not of that form."""
    if not group.startswith("#"):
        return None
    name, sep, daemon = group[1:].partition("#")
    if not sep or not name or not daemon or "#" in daemon:
        return None
    return name, daemon


def generate_private_name(rng: random.Random, serial: int) -> str:
    """A name for a client that sent none: `r<0..9998>-<serial>` cut to 9 characters (§3.2).

    The original uses the socket number as `serial`; the caller retries until it is unique.
    """
    return f"r{rng.randrange(9999)}-{serial}"[: MAX_PRIVATE_NAME - 1]


def _name_field(name: str, what: str) -> bytes:
    """`name` as a NUL-padded 32-byte field."""
    try:
        raw = name.encode("latin-1")
    except UnicodeEncodeError:
        raise LocalProtocolError(f"{what} {name!r} is not latin-1") from None
    if len(raw) >= MAX_GROUP_NAME or b"\0" in raw:
        raise LocalProtocolError(f"{what} {name!r} must be at most 31 bytes with no NUL")
    return raw.ljust(MAX_GROUP_NAME, b"\0")


def _name_from(buf: bytes | memoryview, offset: int, what: str, code: int) -> str:
    """The NUL-terminated name in the 32-byte field at `offset`."""
    field = bytes(buf[offset : offset + MAX_GROUP_NAME])
    end = field.find(b"\0")
    if end < 0:
        raise WireError(code, f"{what} field has no NUL terminator")
    return field[:end].decode("latin-1")


def _names_at(frame: bytes, pos: int, count: int) -> tuple[str, ...] | None:
    """The names in `count` 32-byte fields from `pos`, or None if one has no NUL or the frame
    ends first (the per-message paths; each reports that its own way)."""
    fields = bytes(frame[pos : pos + MAX_GROUP_NAME * count])
    return _remembered_names_in(fields, count) if count <= 4 else _names_in(fields, count)


def _names_in(fields: bytes, count: int) -> tuple[str, ...] | None:
    if len(fields) != MAX_GROUP_NAME * count:
        return None
    names = []
    for pos in range(0, len(fields), MAX_GROUP_NAME):
        end = fields.find(b"\0", pos, pos + MAX_GROUP_NAME)
        if end < 0:
            return None
        names.append(fields[pos:end].decode("latin-1"))
    return tuple(names)


# A flood names the same groups in every message: decode each distinct block of a few fields
# once (at most 1024 blocks of 128 bytes are kept).
_remembered_names_in = functools.lru_cache(maxsize=1024)(_names_in)


def _names_from(
    buf: bytes | memoryview, offset: int, count: int, what: str, code: int
) -> tuple[str, ...]:
    return tuple(_name_from(buf, offset + i * MAX_GROUP_NAME, what, code) for i in range(count))


def _u8(value: int, what: str) -> int:
    if not 0 <= value <= 0xFF:
        raise LocalProtocolError(f"{what} {value} does not fit in a byte")
    return value


def _i32(value: int, what: str) -> int:
    if not -(2**31) <= value < 2**31:
        raise LocalProtocolError(f"{what} {value} does not fit in an int32")
    return value


def _mess_type_ok(mess_type: int) -> int:
    if not -0x8000 <= mess_type <= 0x7FFF:
        raise LocalProtocolError(f"mess_type {mess_type} is not a 16-bit signed value")
    return mess_type


def _mess_type_of(hint: int) -> int:
    value = (hint >> 8) & 0xFFFF
    return value - 0x10000 if value & 0x8000 else value


def _hint(mess_type: int, endian: Endian) -> int:
    mark = ENDIAN_MARK if endian is Endian.LITTLE else 0
    return ((_mess_type_ok(mess_type) << 8) & 0x00FFFF00) | mark


def _mark(endian: Endian) -> int:
    return ENDIAN_MARK if endian is Endian.LITTLE else 0


# --- handshake values (§3) --------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectRequest:
    """Client -> daemon, first unit (§3.2). Libraries <= 3.14 send no patch byte: patch is 0."""

    major: int = SPREAD_VERSION[0]
    minor: int = SPREAD_VERSION[1]
    patch: int = SPREAD_VERSION[2]
    wants_membership: bool = True
    priority: int = 0  # 0..15, high nibble of the flags byte; no visible effect in 5.0.1
    private_name: str = ""  # "" asks the daemon to invent one

    @property
    def has_patch_byte(self) -> bool:
        return self.major * 10000 + self.minor * 100 > 31400

    @property
    def version_number(self) -> int:
        return self.major * 10000 + self.minor * 100 + self.patch

    @property
    def uses_auth(self) -> bool:
        """Libraries >= 3.16 do the auth list / auth choice exchange (§3.7)."""
        return self.version_number >= 31600

    @property
    def accept_has_patch(self) -> bool:
        """The daemon's accept carries its patch byte for libraries >= 3.15 (§3.5)."""
        return self.version_number >= 31500

    @property
    def supported(self) -> bool:
        """The 5.0.1 daemon rejects libraries older than 3.1.0 (REJECT_VERSION)."""
        return self.version_number >= 30100


@dataclass(frozen=True, slots=True)
class AuthList:
    """Daemon -> client: names of the enabled auth methods (§3.3)."""

    methods: tuple[str, ...] = ("NULL",)


@dataclass(frozen=True, slots=True)
class AuthChoice:
    """Client -> daemon: the methods the client runs, in order (§3.4; 90 bytes on the wire)."""

    methods: tuple[str, ...] = ("NULL",)


@dataclass(frozen=True, slots=True, kw_only=True)
class Accept:
    """Daemon -> client: session accepted (§3.5). `patch` is None when not on the wire."""

    major: int = SPREAD_VERSION[0]
    minor: int = SPREAD_VERSION[1]
    patch: int | None = SPREAD_VERSION[2]
    private_group: str


@dataclass(frozen=True, slots=True)
class Reject:
    """Daemon -> client: one signed byte, then the daemon closes (§3.6). `code` is negative."""

    code: int


def encode_connect_request(req: ConnectRequest) -> bytes:
    if req.private_name and not valid_private_name(req.private_name):
        raise LocalProtocolError(f"illegal private name {req.private_name!r}")
    raw_name = req.private_name.encode("ascii")
    if not 0 <= req.priority <= 15:
        raise LocalProtocolError(f"priority {req.priority} is not 0..15")
    out = bytearray((_u8(req.major, "major version"), _u8(req.minor, "minor version")))
    if req.has_patch_byte:
        out.append(_u8(req.patch, "patch version"))
    elif req.patch != 0:
        raise LocalProtocolError("libraries <= 3.14 send no patch byte: patch must be 0")
    out.append((req.priority << 4) | int(req.wants_membership))
    out.append(len(raw_name))
    out += raw_name
    return bytes(out)


def _signed8(byte: int) -> int:
    return byte - 256 if byte >= 0x80 else byte


def parse_connect_request(buf: bytes | bytearray) -> tuple[ConnectRequest, int] | None:
    """The connect request at the start of `buf` and its length, or None if incomplete.

    Raises WireError(REJECT_VERSION / REJECT_ILLEGAL_NAME) as soon as the bytes that decide it
    are there, like the original (which answers before the rest arrives, §3.2).
    """
    if len(buf) < 2:
        return None
    major, minor = buf[0], buf[1]
    # The original reads the version bytes as signed chars: a byte >= 0x80 is negative, so
    # such a "version" is old and gets REJECT_VERSION (seen live against 5.0.1).
    version = _signed8(major) * 10000 + _signed8(minor) * 100
    has_patch = version > 31400
    if not has_patch and version < 30100:
        raise WireError(SpError.REJECT_VERSION, f"library {major}.{minor} is older than 3.1")
    pos = 3 if has_patch else 2
    if len(buf) < pos + 2:
        return None
    patch = buf[2] if has_patch else 0
    flags, name_len = buf[pos], buf[pos + 1]
    if name_len > MAX_PRIVATE_NAME:
        raise WireError(SpError.REJECT_ILLEGAL_NAME, f"private name length {name_len} > 10")
    end = pos + 2 + name_len
    if len(buf) < end:
        return None
    raw_name = bytes(buf[pos + 2 : end])
    if not _name_bytes_ok(raw_name):
        raise WireError(SpError.REJECT_ILLEGAL_NAME, f"illegal private name {raw_name!r}")
    req = ConnectRequest(
        major=major,
        minor=minor,
        patch=patch,
        wants_membership=bool(flags & 1),
        priority=flags >> 4,
        private_name=raw_name.decode("latin-1"),
    )
    return req, end


def decode_connect_request(data: bytes) -> ConnectRequest:
    parsed = parse_connect_request(data)
    if parsed is None or parsed[1] != len(data):
        raise WireError(SpError.REJECT_ILLEGAL_NAME, "connect request has the wrong length")
    return parsed[0]


def encode_auth_list(auth: AuthList) -> bytes:
    text = "".join(f"{m} " for m in auth.methods)
    for m in auth.methods:
        if not m or " " in m or "\0" in m:
            raise LocalProtocolError(f"illegal auth method name {m!r}")
    try:
        raw = text.encode("latin-1")
    except UnicodeEncodeError:
        raise LocalProtocolError("auth method names must be latin-1") from None
    if len(raw) > 127:  # the library reads the length as a signed char
        raise LocalProtocolError("auth list longer than 127 bytes")
    return bytes((len(raw),)) + raw


def parse_auth_reply(buf: bytes | bytearray) -> tuple[AuthList | Reject, int] | None:
    """Auth list or reject byte at the start of `buf` (§3.3), or None if incomplete."""
    if not buf:
        return None
    length = buf[0]
    if length >= 0x80:
        return Reject(length - 0x100), 1
    if len(buf) < 1 + length:
        return None
    text = bytes(buf[1 : 1 + length]).decode("latin-1")
    return AuthList(tuple(text.split())), 1 + length


def decode_auth_reply(data: bytes) -> AuthList | Reject:
    parsed = parse_auth_reply(data)
    if parsed is None or parsed[1] != len(data):
        raise WireError(SpError.CONNECTION_CLOSED, "auth list has the wrong length")
    return parsed[0]


def encode_auth_choice(choice: AuthChoice) -> bytes:
    if len(choice.methods) > MAX_AUTH_METHODS:
        raise LocalProtocolError(f"at most {MAX_AUTH_METHODS} auth methods")
    out = bytearray()
    for m in choice.methods:
        try:
            raw = m.encode("latin-1")
        except UnicodeEncodeError:
            raise LocalProtocolError(f"auth method {m!r} is not latin-1") from None
        if not raw or len(raw) >= MAX_AUTH_NAME or b"\0" in raw:
            raise LocalProtocolError(f"auth method {m!r} must be 1..29 bytes with no NUL")
        out += raw.ljust(MAX_AUTH_NAME, b"\0")
    return bytes(out.ljust(AUTH_CHOICE_LEN, b"\0"))


def decode_auth_choice(data: bytes | bytearray) -> AuthChoice:
    """The 90-byte choice: slots up to the first empty one (§3.4)."""
    if len(data) != AUTH_CHOICE_LEN:
        raise WireError(SpError.REJECT_AUTH, f"auth choice is {len(data)} bytes, not 90")
    methods = []
    for slot in range(MAX_AUTH_METHODS):
        field = bytes(data[slot * MAX_AUTH_NAME : (slot + 1) * MAX_AUTH_NAME])
        name = field.split(b"\0", 1)[0]
        if not name:
            break
        methods.append(name.decode("latin-1"))
    return AuthChoice(tuple(methods))


def encode_accept(acc: Accept) -> bytes:
    out = bytearray((ACCEPT_SESSION, _u8(acc.major, "major"), _u8(acc.minor, "minor")))
    if acc.patch is not None:
        out.append(_u8(acc.patch, "patch"))
    try:
        raw = acc.private_group.encode("latin-1")
    except UnicodeEncodeError:
        raise LocalProtocolError("private group name is not latin-1") from None
    if not raw or len(raw) >= MAX_GROUP_NAME or b"\0" in raw:
        raise LocalProtocolError(f"private group {acc.private_group!r} is not 1..31 bytes")
    out.append(len(raw))
    out += raw
    return bytes(out)


def encode_reject(rej: Reject) -> bytes:
    if rej.code not in REJECT_CODES:
        raise LocalProtocolError(f"{rej.code} is not a code the daemon rejects with")
    return bytes((rej.code & 0xFF,))


def parse_accept_reply(
    buf: bytes | bytearray, *, with_patch: bool
) -> tuple[Accept | Reject, int] | None:
    """Accept or reject byte at the start of `buf` (§3.5), or None if incomplete.

    `with_patch`: the library is >= 3.15, so the accept carries the daemon's patch byte.
    """
    if not buf:
        return None
    first = buf[0]
    if first >= 0x80:
        return Reject(first - 0x100), 1
    if first != ACCEPT_SESSION:
        raise WireError(SpError.CONNECTION_CLOSED, f"accept byte is {first}, not 1")
    head = 4 if with_patch else 3
    if len(buf) < head + 1:
        return None
    versions = buf[1:head]
    length = buf[head]
    if any(v >= 0x80 for v in versions) or length >= MAX_GROUP_NAME:
        raise WireError(SpError.CONNECTION_CLOSED, "accept has a negative version or long name")
    end = head + 1 + length
    if len(buf) < end:
        return None
    raw = bytes(buf[head + 1 : end])
    if not raw or b"\0" in raw:
        raise WireError(SpError.CONNECTION_CLOSED, "accept carries no usable private group")
    acc = Accept(
        major=versions[0],
        minor=versions[1],
        patch=versions[2] if with_patch else None,
        private_group=raw.decode("latin-1"),
    )
    return acc, end


def decode_accept_reply(data: bytes, *, with_patch: bool) -> Accept | Reject:
    parsed = parse_accept_reply(data, with_patch=with_patch)
    if parsed is None or parsed[1] != len(data):
        raise WireError(SpError.CONNECTION_CLOSED, "accept has the wrong length")
    return parsed[0]


# --- the message header (§4) ------------------------------------------------------------------

_HEADER_LE: Final = struct.Struct("<I32siIi")
_HEADER_BE: Final = struct.Struct(">I32siIi")
_I32_LE: Final = struct.Struct("<i")
_I32_BE: Final = struct.Struct(">i")
_U32_LE: Final = struct.Struct("<I")
_U32_BE: Final = struct.Struct(">I")


def _header_struct(endian: Endian) -> struct.Struct:
    return _HEADER_LE if endian is Endian.LITTLE else _HEADER_BE


def _u32_struct(endian: Endian) -> struct.Struct:
    return _U32_LE if endian is Endian.LITTLE else _U32_BE


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageHeader:
    """The 48-byte header, decoded. `service_type` has the mark cleared; `endian` is the order
    `type`, `num_groups` and `data_len` were written in. `hint` is the word as its own writer
    meant it (mark included when that writer was little-endian)."""

    service_type: int
    sender: str
    num_groups: int
    hint: int
    data_len: int
    endian: Endian = Endian.LITTLE

    @property
    def hint_endian(self) -> Endian:
        return Endian.LITTLE if self.hint & ENDIAN_MARK == ENDIAN_MARK else Endian.BIG

    @property
    def mess_type(self) -> int:
        return _mess_type_of(self.hint)

    @property
    def hint_mark_consistent(self) -> bool:
        """False when exactly one of the two mark bits is set (ambiguous order)."""
        return self.hint & ENDIAN_MARK in (0, ENDIAN_MARK)


def encode_header(h: MessageHeader) -> bytes:
    if not 0 <= h.service_type <= 0xFFFFFFFF or h.service_type & ENDIAN_MARK:
        raise LocalProtocolError(f"service type {h.service_type:#x} is not a mark-free u32")
    if not 0 <= h.hint <= 0xFFFFFFFF:
        raise LocalProtocolError(f"hint {h.hint:#x} is not a u32")
    head = _header_struct(h.endian).pack(
        h.service_type | _mark(h.endian),
        _name_field(h.sender, "sender"),
        _i32(h.num_groups, "num_groups"),
        0,
        _i32(h.data_len, "data_len"),
    )
    return head[:40] + _u32_struct(h.hint_endian).pack(h.hint) + head[44:]


def decode_header(
    data: bytes | bytearray | memoryview, code: int = SpError.ILLEGAL_MESSAGE
) -> MessageHeader:
    """The header in the first 48 bytes of `data` (§2, §4). `code` is reported for a bad name."""
    if len(data) < MESSAGE_HEADER_LEN:
        raise WireError(code, f"header needs 48 bytes, got {len(data)}")
    raw_type = _U32_LE.unpack_from(data, 0)[0]
    endian = Endian.LITTLE if raw_type & ENDIAN_MARK == ENDIAN_MARK else Endian.BIG
    type_word, _sender, num_groups, _hint_raw, data_len = _header_struct(endian).unpack_from(data)
    hint_raw = bytes(data[40:44])
    hint_le = hint_raw[0] & 0x80 and hint_raw[3] & 0x80
    hint = int.from_bytes(hint_raw, "little" if hint_le else "big")
    return MessageHeader(
        service_type=type_word & ~ENDIAN_MARK & 0xFFFFFFFF,
        sender=_name_from(data, 4, "sender", code),
        num_groups=num_groups,
        hint=hint,
        data_len=data_len,
        endian=endian,
    )


# --- client requests (§6) ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Multicast:
    """A data message to up to 100 groups or private groups (§6.1).

    `service_type` is one of the six service bits, optionally with SELF_DISCARD. `endian` is the
    byte order the sender wrote its hint in; the daemon relays the hint in that order.
    """

    service_type: ServiceType
    groups: tuple[str, ...]
    mess_type: int = 0
    data: bytes = b""
    endian: Endian = Endian.LITTLE


@dataclass(frozen=True, slots=True)
class Join:
    group: str


@dataclass(frozen=True, slots=True)
class Leave:
    group: str


@dataclass(frozen=True, slots=True)
class Kill:
    """Disconnect (SP_disconnect). The daemon ignores the group slot the library fills in."""


ClientRequest = Multicast | Join | Leave | Kill


def _single_service_bit(service_type: int) -> bool:
    return sum(1 for b in _SERVICE_BITS if service_type & b) == 1


def _check_multicast_type(service_type: int) -> None:
    allowed = int(_B.REGULAR_MESS | _B.SELF_DISCARD)
    if service_type & ~allowed or not _single_service_bit(service_type):
        raise LocalProtocolError(
            f"service type {service_type:#x} must be one service bit, optionally | SELF_DISCARD"
        )


def _check_body(num_groups: int, data_len: int, max_body_len: int) -> None:
    if not 0 <= num_groups <= MAX_GROUPS_PER_MESSAGE:
        raise LocalProtocolError(f"{num_groups} groups; at most {MAX_GROUPS_PER_MESSAGE}")
    if data_len + MAX_GROUP_NAME * num_groups > max_body_len:
        raise LocalProtocolError(
            f"data {data_len} + 32 * {num_groups} groups exceeds {max_body_len} bytes"
        )


def encode_request(
    req: ClientRequest,
    *,
    sender: str,
    endian: Endian = Endian.LITTLE,
    max_body_len: int = RING_SAFE_MAX_BODY_LEN,
) -> bytes:
    """One request from the session whose private group is `sender`, header in `endian`."""
    match req:
        case Multicast():
            _check_multicast_type(req.service_type)
            _check_body(len(req.groups), len(req.data), max_body_len)
            header = MessageHeader(
                service_type=int(req.service_type),
                sender=sender,
                num_groups=len(req.groups),
                hint=_hint(req.mess_type, req.endian),
                data_len=len(req.data),
                endian=endian,
            )
            names = b"".join(_name_field(g, "group") for g in req.groups)
            return encode_header(header) + names + req.data
        case Join() | Leave():
            if not valid_group_name(req.group):
                raise LocalProtocolError(f"illegal group name {req.group!r}")
            bit = _B.JOIN_MESS if isinstance(req, Join) else _B.LEAVE_MESS
            return _command(int(bit), req.group, sender, endian)
        case Kill():
            return _command(int(_B.KILL_MESS), sender, sender, endian)
    raise LocalProtocolError(f"not a client request: {req!r}")


def _command(bit: int, group: str, sender: str, endian: Endian) -> bytes:
    header = MessageHeader(
        service_type=bit,
        sender=sender,
        num_groups=1,
        hint=_mark(endian),
        data_len=0,
        endian=endian,
    )
    return encode_header(header) + _name_field(group, "group")


def check_request_header(h: MessageHeader, *, max_body_len: int = DAEMON_MAX_BODY_LEN) -> None:
    """The daemon's checks on a request header that need no session (§6.3), in its order.

    Raises WireError; the daemon then closes the session without a reply.
    """
    check_request_words(h.service_type, h.num_groups, h.hint, h.data_len, max_body_len)


# The multicast request types: one service bit, optionally with SELF_DISCARD. With the three
# command bits, every request type that passes the checks below: the per-request check is then
# one set lookup.
MULTICAST_REQUEST_TYPES: Final = frozenset(
    b | d for b in _SERVICE_BITS for d in (0, _B.SELF_DISCARD)
)
_REQUEST_TYPES: Final = MULTICAST_REQUEST_TYPES | {_B.JOIN_MESS, _B.LEAVE_MESS, _B.KILL_MESS}


def check_request_words(
    service_type: int, num_groups: int, hint: int, data_len: int, max_body_len: int
) -> None:
    """`check_request_header` on the header's words (the daemon's per-request path)."""
    t = service_type
    if t not in _REQUEST_TYPES:
        services = sum(1 for b in _SERVICE_BITS if t & b)
        commands = bin(t & _COMMAND_BITS).count("1")
        if services > 1 or commands > 1 or services + commands != 1:
            raise WireError(SpError.ILLEGAL_SERVICE, f"request type {t:#x} is not one service")
        if t & _FORBIDDEN_REQUEST_BITS:
            raise WireError(SpError.ILLEGAL_SERVICE, f"request type {t:#x} has daemon-only bits")
    if not 0 <= num_groups <= MAX_GROUPS_PER_MESSAGE:
        raise WireError(SpError.ILLEGAL_MESSAGE, f"num_groups {num_groups} not in 0..100")
    if hint & ~HINT_BITS or hint & ENDIAN_MARK not in (0, ENDIAN_MARK):
        raise WireError(SpError.ILLEGAL_MESSAGE, f"illegal hint {hint:#x}")
    if data_len < 0:
        raise WireError(SpError.ILLEGAL_MESSAGE, f"negative data_len {data_len}")
    if data_len + MAX_GROUP_NAME * num_groups > max_body_len:
        raise WireError(
            SpError.MESSAGE_TOO_LONG,
            f"data {data_len} + 32 * {num_groups} groups exceeds {max_body_len} bytes",
        )


def request_frame_len(h: MessageHeader) -> int:
    return MESSAGE_HEADER_LEN + MAX_GROUP_NAME * h.num_groups + h.data_len


def request_from_frame(h: MessageHeader, frame: bytes | bytearray | memoryview) -> ClientRequest:
    """The request in a complete frame whose header passed `check_request_header`."""
    t = h.service_type
    groups_end = MESSAGE_HEADER_LEN + MAX_GROUP_NAME * h.num_groups
    if t & _B.KILL_MESS:
        return Kill()
    if t & (_B.JOIN_MESS | _B.LEAVE_MESS):
        if h.num_groups != 1:
            raise WireError(SpError.ILLEGAL_GROUP, f"join/leave with {h.num_groups} groups")
        group = _name_from(frame, MESSAGE_HEADER_LEN, "group", SpError.ILLEGAL_GROUP)
        if not valid_group_name(group):
            raise WireError(SpError.ILLEGAL_GROUP, f"illegal group name {group!r}")
        return Join(group) if t & _B.JOIN_MESS else Leave(group)
    groups = _names_from(frame, MESSAGE_HEADER_LEN, h.num_groups, "group", SpError.ILLEGAL_GROUP)
    return Multicast(
        service_type=service_type_of(t & (_B.REGULAR_MESS | _B.SELF_DISCARD)),
        groups=groups,
        mess_type=h.mess_type,
        data=bytes(frame[groups_end : groups_end + h.data_len]),
        endian=h.hint_endian,
    )


def decode_request(
    data: bytes, *, max_body_len: int = DAEMON_MAX_BODY_LEN
) -> tuple[str, ClientRequest]:
    """(sender, request) from exactly one request frame. The sender is not checked here."""
    h = decode_header(data)
    check_request_header(h, max_body_len=max_body_len)
    if len(data) != request_frame_len(h):
        raise WireError(SpError.ILLEGAL_MESSAGE, "request frame has the wrong length")
    return h.sender, request_from_frame(h, data)


# --- relayed multicasts (§7.1) ----------------------------------------------------------------
#
# A regular message reaches its receivers as the sender wrote it, except that the header's type,
# num_groups and data_len are in the daemon's byte order under the daemon's mark, and the sender
# field holds the sender's private group. So the daemon builds that delivery frame once, when it
# reads the request: it travels the ring as it is, and each receiving daemon writes the same
# bytes to its clients. Frames on the ring are always little-endian (the mark is set), whatever
# the daemons' own order; a daemon writing big-endian reorders three words per delivery.

# A header's type, num_groups and data_len words, skipping the rest, in either byte order.
_WORDS_LE: Final = struct.Struct("<I32xi4xi")
_WORDS_BE: Final = struct.Struct(">I32xi4xi")


class MulticastFrame:
    """A multicast request as the daemon relays it: the delivery frame of §7.1, built once.

    `service_type` is the request's service bit, optionally with SELF_DISCARD; `frame` is the
    little-endian delivery frame (see above). The other fields are read from the frame on demand:
    the daemon's per-message path needs only the type and the bytes.
    """

    __slots__ = ("frame", "service_type")
    __match_args__ = ("service_type", "frame")

    def __init__(self, service_type: int, frame: bytes) -> None:
        self.service_type = service_type
        self.frame = frame

    @classmethod
    def from_request(cls, m: Multicast, sender: str) -> MulticastFrame:
        """The frame that `m`, sent by the session whose private group is `sender`, travels as."""
        data = encode_request(
            m, sender=sender, endian=Endian.LITTLE, max_body_len=MAX_MESSAGE_BODY_LEN
        )
        return cls(int(m.service_type), data)

    def message(self) -> RegularMessage:
        """The frame decoded, as a client library would."""
        message = decode_daemon_message(self.frame)
        assert isinstance(message, RegularMessage)
        return message

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MulticastFrame):
            return NotImplemented
        return self.service_type == other.service_type and self.frame == other.frame

    __hash__ = None  # type: ignore[assignment]  # equality by value, like the dataclasses here

    def __repr__(self) -> str:
        return f"MulticastFrame({self.service_type:#x}, {len(self.frame)} bytes)"


def read_request_head(head: bytes, max_body_len: int) -> tuple[int, int, bool, int]:
    """(frame length, service type, little-endian?, num_groups) of a request header.

    The daemon's per-request path: the checks and errors of `check_request_header`, without
    building a MessageHeader. The sender field is the caller's to check.
    """
    little = bool(head[0] & 0x80 and head[3] & 0x80)
    words = _WORDS_LE if little else _WORDS_BE
    type_word, num_groups, data_len = words.unpack_from(head)
    hint_le = head[40] & 0x80 and head[43] & 0x80
    hint = int.from_bytes(head[40:44], "little" if hint_le else "big")
    service_type = type_word & ~ENDIAN_MARK & 0xFFFFFFFF
    check_request_words(service_type, num_groups, hint, data_len, max_body_len)
    size = MESSAGE_HEADER_LEN + MAX_GROUP_NAME * num_groups + data_len
    return size, service_type, little, num_groups


def relay_frame(frame: bytes, little: bool, num_groups: int, sender_field: bytes) -> bytes:
    """The delivery frame of a multicast request `frame` whose header passed the checks.

    `sender_field` is the session's private group as a 32-byte field. WireError(ILLEGAL_GROUP)
    for a group field without a NUL, as `request_from_frame`.
    """
    if _names_at(frame, MESSAGE_HEADER_LEN, num_groups) is None:
        raise WireError(SpError.ILLEGAL_GROUP, "group field has no NUL terminator")
    if little and frame[4:36] == sender_field:
        return frame  # the common case: already the delivery frame
    words = _WORDS_LE if little else _WORDS_BE
    type_word, num_groups, data_len = words.unpack_from(frame)
    head = _HEADER_LE.pack(type_word | ENDIAN_MARK, sender_field, num_groups, 0, data_len)
    return head[:40] + frame[40:44] + head[44:] + frame[MESSAGE_HEADER_LEN:]


def name_field(name: str) -> bytes:
    """`name` as a NUL-padded 32-byte field (LocalProtocolError if it does not fit)."""
    return _name_field(name, "name")


def relay_frame_targets(frame: bytes, offset: int = 0) -> tuple[int, tuple[str, ...]]:
    """(service type, target group names) of the relay frame at `offset` of `frame`.

    The frame must end where `frame` ends. Raises ValueError when it is not a well-formed relay
    frame: its bytes come from the ring, and the caller counts and drops what fails here.
    """
    if len(frame) - offset < MESSAGE_HEADER_LEN:
        raise ValueError("relay frame shorter than a header")
    type_word, num_groups, data_len = _WORDS_LE.unpack_from(frame, offset)
    if type_word & ENDIAN_MARK != ENDIAN_MARK:
        raise ValueError(f"relay frame type {type_word:#x} lacks the little-endian mark")
    service_type = type_word & ~ENDIAN_MARK & 0xFFFFFFFF
    if service_type not in MULTICAST_REQUEST_TYPES:
        raise ValueError(f"relay frame type {service_type:#x} is not one service")
    if not 0 <= num_groups <= MAX_GROUPS_PER_MESSAGE or data_len < 0:
        raise ValueError(f"relay frame with {num_groups} groups and {data_len} data bytes")
    pos = offset + MESSAGE_HEADER_LEN
    if len(frame) != pos + MAX_GROUP_NAME * num_groups + data_len:
        raise ValueError("relay frame has the wrong length")
    targets = _names_at(frame, pos, num_groups)
    if targets is None:
        raise ValueError("relay frame group name has no NUL terminator")
    return service_type, targets


def relay_frame_in(frame: bytes, endian: Endian) -> bytes:
    """A (little-endian) relay frame as a daemon writing in `endian` delivers it."""
    if endian is Endian.LITTLE:
        return frame
    type_word, num_groups, data_len = _WORDS_LE.unpack_from(frame)
    head = _HEADER_BE.pack(type_word & ~ENDIAN_MARK, frame[4:36], num_groups, 0, data_len)
    return head[:40] + frame[40:44] + head[44:] + frame[MESSAGE_HEADER_LEN:]


# --- daemon messages (§7) ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class RegularMessage:
    """A data message delivered to a client (§7.1): the sender's request, relayed.

    `endian` is the order the original sender wrote its hint in; a receiver whose own order
    differs reports libspread's `endian_mismatch`.
    """

    service_type: ServiceType
    sender: str
    groups: tuple[str, ...]
    mess_type: int = 0
    data: bytes = b""
    endian: Endian = Endian.LITTLE

    @classmethod
    def from_multicast(cls, m: Multicast, sender: str) -> RegularMessage:
        """What every receiver of `m`, sent by the session whose private group is `sender`, gets."""
        return cls(
            service_type=m.service_type,
            sender=sender,
            groups=m.groups,
            mess_type=m.mess_type,
            data=m.data,
            endian=m.endian,
        )


@dataclass(frozen=True, slots=True)
class GroupId:
    """A group view id: daemon membership id (proc_id, time) and a change counter (§7.2)."""

    proc_id: int
    time: int
    index: int


@dataclass(frozen=True, slots=True, kw_only=True)
class MembershipMessage:
    """REG_MEMB_MESS | cause (§7.2).

    `members` is the new member list in daemon order; `vs_sets` the sets of members that moved
    together; `local_vs_set` the index in `vs_sets` of the receiver's own set (None only when
    there are no sets). For join/leave/disconnect there is one set: the changed member.
    """

    group: str
    cause: MembershipCause
    group_id: GroupId
    members: tuple[str, ...]
    vs_sets: tuple[tuple[str, ...], ...]
    local_vs_set: int | None = 0

    @property
    def service_type(self) -> ServiceType:
        return _B.REG_MEMB_MESS | ServiceType(int(self.cause))

    @property
    def changed_member(self) -> str | None:
        """The member who joined, left or disconnected (libspread's `changed_member`)."""
        if self.cause is MembershipCause.NETWORK or not self.vs_sets or not self.vs_sets[0]:
            return None
        return self.vs_sets[0][0]

    def index_of(self, private_group: str) -> int:
        """The receiver's index in `members` (libspread's mess_type), or -1."""
        try:
            return self.members.index(private_group)
        except ValueError:
            return -1


@dataclass(frozen=True, slots=True)
class TransitionalMessage:
    """TRANSITION_MESS: the group's view is about to change for network reasons (§7.3)."""

    group: str
    group_id: GroupId


@dataclass(frozen=True, slots=True)
class SelfLeave:
    """CAUSED_BY_LEAVE alone: sent to a session that left `group` (§7.4)."""

    group: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RejectMessage:
    """A request the daemon refused, echoed to its sender only (§7.5).

    `old_type` is the refused request's type (JOIN/LEAVE replaced by CAUSED_BY_JOIN/LEAVE);
    libspread reports `old_type | REJECT_MESS`. `groups` is the original list with the sender's
    private group appended (replacing the 100th name if there were 100).
    """

    old_type: ServiceType
    sender: str
    groups: tuple[str, ...]
    mess_type: int = 0
    data: bytes = b""
    endian: Endian = Endian.LITTLE

    @property
    def service_type(self) -> ServiceType:
        return self.old_type | _B.REJECT_MESS

    @classmethod
    def for_request(
        cls, req: Multicast | Join | Leave, sender: str, *, endian: Endian = Endian.LITTLE
    ) -> RejectMessage:
        """The reject for `req` from the session whose private group is `sender`.

        `endian` is the hint order for a join or leave (a Multicast carries its own).
        """
        if isinstance(req, Multicast):
            old, groups = req.service_type, req.groups
            mess_type, data, endian = req.mess_type, req.data, req.endian
        else:
            cause = _B.CAUSED_BY_JOIN if isinstance(req, Join) else _B.CAUSED_BY_LEAVE
            old, groups, mess_type, data = cause, (req.group,), 0, b""
        if len(groups) >= MAX_GROUPS_PER_MESSAGE:
            groups = groups[: MAX_GROUPS_PER_MESSAGE - 1]
        return cls(
            old_type=ServiceType(old),
            sender=sender,
            groups=(*groups, sender),
            mess_type=mess_type,
            data=data,
            endian=endian,
        )


DaemonMessage = RegularMessage | MembershipMessage | TransitionalMessage | SelfLeave | RejectMessage


def encode_daemon_message(msg: DaemonMessage, *, endian: Endian = Endian.LITTLE) -> bytes:
    """`msg` as the daemon writes it, in the daemon's byte order `endian` (hint: see `msg`)."""
    match msg:
        case RegularMessage():
            if not is_regular(msg.service_type):
                raise LocalProtocolError(f"{msg.service_type!r} is not a regular service type")
            return _data_frame(
                int(msg.service_type), msg.sender, msg.groups, msg.mess_type, msg.data,
                msg.endian, endian, b"",
            )  # fmt: skip
        case RejectMessage():
            old = int(msg.old_type)
            if not 0 <= old <= 0xFFFFFFFF or old & ENDIAN_MARK or old & _B.REJECT_MESS:
                raise LocalProtocolError(f"old_type {old:#x} is not a mark-free request type")
            if len(msg.groups) > MAX_GROUPS_PER_MESSAGE:
                raise LocalProtocolError("a reject carries at most 100 groups")
            head_type = int(_B.REJECT_MESS | (old & _B.SELF_DISCARD))
            old_word = _u32_struct(endian).pack(old | _mark(endian))
            return _data_frame(
                head_type, msg.sender, msg.groups, msg.mess_type, msg.data,
                msg.endian, endian, old_word,
            )  # fmt: skip
        case MembershipMessage():
            return _membership_frame(msg, endian)
        case TransitionalMessage():
            body = _gid_bytes(msg.group_id, endian)
            return _notice(int(_B.TRANSITION_MESS), msg.group, body, endian)
        case SelfLeave():
            return _notice(int(_B.CAUSED_BY_LEAVE), msg.group, b"", endian)
    raise LocalProtocolError(f"not a daemon message: {msg!r}")


def _data_frame(
    service_type: int,
    sender: str,
    groups: Sequence[str],
    mess_type: int,
    data: bytes,
    hint_endian: Endian,
    endian: Endian,
    old_type_word: bytes,
) -> bytes:
    header = MessageHeader(
        service_type=service_type,
        sender=sender,
        num_groups=len(groups),
        hint=_hint(mess_type, hint_endian),
        data_len=len(data),
        endian=endian,
    )
    names = b"".join(_name_field(g, "group") for g in groups)
    return encode_header(header) + old_type_word + names + data


def regular_message_from_frame(frame: bytes) -> RegularMessage | None:
    """A regular message's complete frame decoded as `daemon_message_from_frame` does, or None
    for anything else (decode that the general way, which also reports its errors).

    The library's per-message path: one struct call and no MessageHeader.
    """
    little = frame[0] & 0x80 and frame[3] & 0x80
    words = _WORDS_LE if little else _WORDS_BE
    type_word, num_groups, data_len = words.unpack_from(frame)
    service_type = type_word & ~ENDIAN_MARK & 0xFFFFFFFF
    if service_type not in MULTICAST_REQUEST_TYPES:
        return None
    sender_end = frame.find(b"\0", 4, 36)
    if sender_end < 0 or not 0 <= num_groups <= MAX_GROUPS_PER_MESSAGE:
        return None
    groups = _names_at(frame, MESSAGE_HEADER_LEN, num_groups)
    if groups is None:
        return None
    pos = MESSAGE_HEADER_LEN + MAX_GROUP_NAME * num_groups
    hint_le = frame[40] & 0x80 and frame[43] & 0x80
    hint = int.from_bytes(frame[40:44], "little" if hint_le else "big")
    return RegularMessage(
        service_type=_LOW_TYPES[service_type],
        sender=frame[4:sender_end].decode("latin-1"),
        groups=groups,
        mess_type=_mess_type_of(hint),
        data=frame[pos : pos + data_len],
        endian=Endian.LITTLE if hint_le else Endian.BIG,
    )


def encode_multicast(
    service_type: int,
    sender_field: bytes,
    group_fields: Sequence[bytes],
    data: bytes,
    mess_type: int,
    endian: Endian,
) -> bytes:
    """A multicast request from parts the caller has checked (the library's per-message path).

    `service_type`: one of MULTICAST_REQUEST_TYPES; `sender_field` and `group_fields`: 32-byte
    NUL-padded names (see `name_field`); `mess_type`: a 16-bit signed value.
    """
    mark = ENDIAN_MARK if endian is Endian.LITTLE else 0
    hint = ((mess_type << 8) & 0x00FFFF00) | mark
    head = _header_struct(endian).pack(
        service_type | mark, sender_field, len(group_fields), hint, len(data)
    )
    return b"".join((head, *group_fields, data))


def _gid_bytes(gid: GroupId, endian: Endian) -> bytes:
    fmt = struct.Struct(endian.value + "iii")
    return fmt.pack(_i32(gid.proc_id, "proc_id"), _i32(gid.time, "time"), _i32(gid.index, "index"))


def _notice(service_type: int, group: str, body: bytes, endian: Endian) -> bytes:
    header = MessageHeader(
        service_type=service_type,
        sender=group,
        num_groups=0,
        hint=_mark(endian),
        data_len=len(body),
        endian=endian,
    )
    return encode_header(header) + body


def _membership_frame(msg: MembershipMessage, endian: Endian) -> bytes:
    u32 = _u32_struct(endian)
    sets = bytearray()
    offsets = []
    for vs in msg.vs_sets:
        offsets.append(len(sets))
        sets += u32.pack(len(vs))
        sets += b"".join(_name_field(m, "vs_set member") for m in vs)
    if msg.local_vs_set is None:
        if msg.vs_sets:
            raise LocalProtocolError("local_vs_set may be None only when there are no vs_sets")
        local_offset = 0
    elif 0 <= msg.local_vs_set < len(offsets):
        local_offset = offsets[msg.local_vs_set]
    else:
        raise LocalProtocolError(f"local_vs_set {msg.local_vs_set} is not a vs_set index")
    body = (
        _gid_bytes(msg.group_id, endian)
        + u32.pack(len(msg.vs_sets))
        + u32.pack(local_offset)
        + bytes(sets)
    )
    header = MessageHeader(
        service_type=int(msg.service_type),
        sender=msg.group,
        num_groups=len(msg.members),
        hint=_mark(endian),
        data_len=len(body),
        endian=endian,
    )
    names = b"".join(_name_field(m, "member") for m in msg.members)
    return encode_header(header) + names + body


def daemon_frame_len(h: MessageHeader) -> int:
    """Total bytes of the daemon message with header `h`; WireError if impossible."""
    return _frame_len(h.service_type, h.num_groups, h.data_len)


def daemon_frame_len_at(buf: bytes | bytearray, offset: int = 0) -> int:
    """`daemon_frame_len` of the header at `offset` of `buf` (48 bytes there), undecoded."""
    little = buf[offset] & 0x80 and buf[offset + 3] & 0x80
    words = _WORDS_LE if little else _WORDS_BE
    type_word, num_groups, data_len = words.unpack_from(buf, offset)
    return _frame_len(type_word, num_groups, data_len)


def _frame_len(service_type: int, num_groups: int, data_len: int) -> int:
    if num_groups < 0 or data_len < 0:
        raise WireError(SpError.ILLEGAL_MESSAGE, "negative num_groups or data_len")
    extra = 4 if service_type & _B.REJECT_MESS else 0
    return MESSAGE_HEADER_LEN + extra + MAX_GROUP_NAME * num_groups + data_len


def daemon_message_from_frame(
    h: MessageHeader, frame: bytes | bytearray | memoryview
) -> DaemonMessage:
    """Decode a complete daemon frame, classified as libspread does (§5 predicates)."""
    bad = SpError.ILLEGAL_MESSAGE
    t = h.service_type
    pos = MESSAGE_HEADER_LEN
    if is_reject(t):
        old = _u32_struct(h.endian).unpack_from(frame, pos)[0] & ~ENDIAN_MARK & 0xFFFFFFFF
        pos += 4
        groups = _names_from(frame, pos, h.num_groups, "group", bad)
        pos += MAX_GROUP_NAME * h.num_groups
        return RejectMessage(
            old_type=ServiceType(old & ~int(_B.REJECT_MESS)),
            sender=h.sender,
            groups=groups,
            mess_type=h.mess_type,
            data=bytes(frame[pos : pos + h.data_len]),
            endian=h.hint_endian,
        )
    if is_regular(t):
        groups = _names_from(frame, pos, h.num_groups, "group", bad)
        pos += MAX_GROUP_NAME * h.num_groups
        return RegularMessage(
            service_type=service_type_of(t),
            sender=h.sender,
            groups=groups,
            mess_type=h.mess_type,
            data=bytes(frame[pos : pos + h.data_len]),
            endian=h.hint_endian,
        )
    body_at = pos + MAX_GROUP_NAME * h.num_groups
    if is_reg_memb(t):
        return _membership_from(h, frame, body_at)
    if is_transition(t):
        if h.num_groups != 0 or h.data_len != 12:
            raise WireError(bad, "transitional message must have no members and a 12-byte body")
        return TransitionalMessage(h.sender, _gid_from(frame, body_at, h.endian))
    if is_self_leave(t):
        if h.num_groups != 0 or h.data_len != 0:
            raise WireError(bad, "self-leave notice must be empty")
        return SelfLeave(h.sender)
    raise WireError(bad, f"unknown daemon message type {t:#x}")


def _gid_from(frame: bytes | bytearray | memoryview, pos: int, endian: Endian) -> GroupId:
    fmt = struct.Struct(endian.value + "iii")
    return GroupId(*fmt.unpack_from(frame, pos))


def _membership_from(
    h: MessageHeader, frame: bytes | bytearray | memoryview, body_at: int
) -> MembershipMessage:
    bad = SpError.ILLEGAL_MESSAGE
    causes = [c for c in MembershipCause if h.service_type & c]
    if len(causes) != 1:
        raise WireError(bad, f"membership type {h.service_type:#x} needs exactly one cause")
    if h.data_len < 20:
        raise WireError(bad, f"membership body of {h.data_len} bytes is shorter than 20")
    u32 = _u32_struct(h.endian)
    end = body_at + h.data_len
    gid = _gid_from(frame, body_at, h.endian)
    num_sets, local_offset = (
        u32.unpack_from(frame, body_at + 12)[0],
        u32.unpack_from(frame, body_at + 16)[0],
    )
    sets_at = body_at + 20
    pos = sets_at
    vs_sets = []
    local = None
    if num_sets > (end - pos) // 4:
        raise WireError(bad, f"{num_sets} vs_sets cannot fit in the body")
    for index in range(num_sets):
        if pos + 4 > end:
            raise WireError(bad, "vs_set count past the end of the body")
        if pos - sets_at == local_offset:
            local = index
        count = u32.unpack_from(frame, pos)[0]
        pos += 4
        if count > (end - pos) // MAX_GROUP_NAME:
            raise WireError(bad, f"vs_set of {count} members past the end of the body")
        vs_sets.append(_names_from(frame, pos, count, "vs_set member", bad))
        pos += MAX_GROUP_NAME * count
    if pos != end:
        raise WireError(bad, f"membership body has {end - pos} stray bytes")
    if num_sets == 0 and local_offset != 0:
        raise WireError(bad, "local vs_set offset without vs_sets")
    if num_sets and local is None:
        raise WireError(bad, f"local vs_set offset {local_offset} is not a vs_set start")
    return MembershipMessage(
        group=h.sender,
        cause=causes[0],
        group_id=gid,
        members=_names_from(frame, MESSAGE_HEADER_LEN, h.num_groups, "member", bad),
        vs_sets=tuple(vs_sets),
        local_vs_set=local,
    )


def decode_daemon_message(data: bytes) -> DaemonMessage:
    """Exactly one daemon -> client message frame."""
    h = decode_header(data)
    if len(data) != daemon_frame_len(h):
        raise WireError(SpError.ILLEGAL_MESSAGE, "daemon message has the wrong length")
    return daemon_message_from_frame(h, data)

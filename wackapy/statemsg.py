"""The messages wackapy members multicast to their Spread group, and their codec.

Content follows the original's messages (shared/spec/wackamole.md §2.2, §2.5, §2.8, §3.6); the
byte layout is our own, because the original's (integers in the sender's native byte order,
addresses byte-swapped on mixed-endian receipt, spec §6 bug 14) cannot be carried over safely.

Format version 1: the payload is one msgpack array ``[1, code, field, ...]``:

=========  ====  ===========================================================================
message    code  fields after the code
=========  ====  ===========================================================================
STATE      1     view_id[3], label, mature, eligible, claims [[set_id, priority], ...],
                 prefer [set_id, ...], table_digest (bin, 8)
MATURING   2     view_id[3]
BALANCE    3     view_id[3], moves [[set_id, from_member, to_member], ...]
ARPCACHE   5     records (bin: 10-byte records, IPv4 address 4 + MAC 6)
HEALTH     6     view_id[3], eligible              (our extension: the health gate)
=========  ====  ===========================================================================

Code 4 (OPERATOR) is reserved, as upstream, and never sent. Differences from the original's
content, each deliberate:

* Sets are named by their configured ``set_id`` instead of the head address, and members by
  their Spread private group name instead of the host's "real" address (which need not be
  unique: spec §6 bug 15). The real address travels as ``label``, for display only.
* The STATE carries no sender index and no held count (receivers know the first from the view
  and recompute the second from the agreed table, spec §2.7's own recommendation); it adds
  ``eligible`` (health gate) and ``table_digest`` (a hash of the VIP table, so members with
  different tables are noticed instead of silently disagreeing).
* MATURING carries the view id (receivers do not need it; it helps tracing).
* A BALANCE move names the member it moves *from*, so a move planned on a table that changed
  before delivery is skipped identically by every member (the original's moves are blind).

``decode`` validates everything and raises only ``MalformedPacket``; ``encode`` raises
``LocalProtocolError`` for a message that ``decode`` would refuse (a bug of the caller).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import IntEnum

import msgpack

from spreadpy.errors import LocalProtocolError, MalformedPacket

FORMAT_VERSION = 1
PAYLOAD_BYTES_MAX = 100_000  # the original's MAX_MESS_LEN; Spread itself allows ~142 kB
SETS_MAX = 1024  # bound on claims, prefer entries and moves in one message
NAME_CHARS_MAX = 128  # set ids, labels, member (Spread private group) names
DIGEST_BYTES = 8
ARP_RECORD_BYTES = 10
ARP_ENTRIES_MAX = 9000  # 90 000 bytes of records: fits PAYLOAD_BYTES_MAX with room to spare
INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1

ViewId = tuple[int, int, int]
"""Spread's group id of a regular view: (membership proc id, membership time, change index)."""


class MessageCode(IntEnum):
    """The original's message codes (Spread ``mess_type``), plus HEALTH."""

    STATE = 1
    MATURING = 2
    BALANCE = 3
    OPERATOR = 4  # reserved upstream, never sent, refused by decode
    ARPCACHE = 5
    HEALTH = 6


class Priority(IntEnum):
    """Claim priority of a VIP set (the original's values, shown by wackatrl's GET_STATE)."""

    UNCLAIMED = 0
    CLAIMED = 2
    PREFER = 4
    PREFER_CLAIMED = 5


CLAIM_PRIORITIES = (Priority.CLAIMED, Priority.PREFER_CLAIMED)


@dataclass(frozen=True, slots=True)
class Claim:
    """A set the STATE's sender physically holds, with the priority it holds it at."""

    set_id: str
    priority: Priority


@dataclass(frozen=True, slots=True, kw_only=True)
class StateMsg:
    view_id: ViewId
    label: str
    mature: bool
    eligible: bool
    claims: tuple[Claim, ...]
    prefer: tuple[str, ...]
    table_digest: bytes


@dataclass(frozen=True, slots=True)
class MaturingMsg:
    view_id: ViewId


@dataclass(frozen=True, slots=True)
class Move:
    """One BALANCE move: ``set_id`` goes from member ``from_member`` to ``to_member``."""

    set_id: str
    from_member: str
    to_member: str


@dataclass(frozen=True, slots=True)
class BalanceMsg:
    view_id: ViewId
    moves: tuple[Move, ...]


@dataclass(frozen=True, slots=True)
class HealthMsg:
    view_id: ViewId
    eligible: bool


@dataclass(frozen=True, slots=True)
class ArpEntry:
    """One ARP table row shared through ARPCACHE: dotted IPv4 address and 6-byte MAC."""

    address: str
    mac: bytes


@dataclass(frozen=True, slots=True)
class ArpCacheMsg:
    entries: tuple[ArpEntry, ...]


Message = StateMsg | MaturingMsg | BalanceMsg | HealthMsg | ArpCacheMsg

# msgpack.unpackb bounds: nothing we send needs maps or ext types, or strings longer than a name.
_UNPACK_LIMITS = {
    "max_str_len": NAME_CHARS_MAX * 4,  # utf-8 bytes; the character count is checked later
    "max_bin_len": ARP_ENTRIES_MAX * ARP_RECORD_BYTES,
    "max_array_len": SETS_MAX,
    "max_map_len": 0,
    "max_ext_len": 0,
}


# ---------------------------------------------------------------------------------------------
# encoding


def encode(msg: Message) -> bytes:
    """Serialize ``msg``; raises ``LocalProtocolError`` if it breaks the format's bounds."""
    match msg:
        case StateMsg():
            _check_names([msg.label], "label")
            _check_names([c.set_id for c in msg.claims], "claim set id")
            _check_names(msg.prefer, "prefer set id")
            _check_count(len(msg.claims), "claims")
            _check_count(len(msg.prefer), "prefer entries")
            if any(c.priority not in CLAIM_PRIORITIES for c in msg.claims):
                raise LocalProtocolError("a claim must be CLAIMED or PREFER_CLAIMED")
            if len(msg.table_digest) != DIGEST_BYTES:
                raise LocalProtocolError(f"table digest must be {DIGEST_BYTES} bytes")
            body: list[object] = [
                MessageCode.STATE,
                _view(msg.view_id),
                msg.label,
                msg.mature,
                msg.eligible,
                [[c.set_id, int(c.priority)] for c in msg.claims],
                list(msg.prefer),
                msg.table_digest,
            ]
        case MaturingMsg():
            body = [MessageCode.MATURING, _view(msg.view_id)]
        case BalanceMsg():
            _check_count(len(msg.moves), "moves")
            for move in msg.moves:
                _check_names([move.set_id, move.from_member, move.to_member], "move field")
            body = [
                MessageCode.BALANCE,
                _view(msg.view_id),
                [[m.set_id, m.from_member, m.to_member] for m in msg.moves],
            ]
        case HealthMsg():
            body = [MessageCode.HEALTH, _view(msg.view_id), msg.eligible]
        case ArpCacheMsg():
            if len(msg.entries) > ARP_ENTRIES_MAX:
                raise LocalProtocolError(f"more than {ARP_ENTRIES_MAX} ARP entries")
            body = [MessageCode.ARPCACHE, b"".join(_arp_record(e) for e in msg.entries)]
    data: bytes = msgpack.packb([FORMAT_VERSION, *body], use_bin_type=True)
    if len(data) > PAYLOAD_BYTES_MAX:
        raise LocalProtocolError(f"message of {len(data)} bytes exceeds {PAYLOAD_BYTES_MAX}")
    return data


def _view(view_id: ViewId) -> list[int]:
    if len(view_id) != 3 or any(not INT32_MIN <= v <= INT32_MAX for v in view_id):
        raise LocalProtocolError(f"view id {view_id!r} is not three int32")
    return list(view_id)


def _check_names(names: object, what: str) -> None:
    assert isinstance(names, list | tuple)
    for name in names:
        if not isinstance(name, str) or len(name) > NAME_CHARS_MAX:
            raise LocalProtocolError(f"{what} {name!r} is not a string of <= {NAME_CHARS_MAX}")


def _check_count(count: int, what: str) -> None:
    if count > SETS_MAX:
        raise LocalProtocolError(f"{count} {what} exceed {SETS_MAX}")


def _arp_record(entry: ArpEntry) -> bytes:
    try:
        packed = ipaddress.IPv4Address(entry.address).packed
    except ValueError as exc:
        raise LocalProtocolError(f"ARP entry address {entry.address!r}: {exc}") from None
    if len(entry.mac) != 6:
        raise LocalProtocolError(f"ARP entry MAC {entry.mac!r} is not 6 bytes")
    return packed + entry.mac


# ---------------------------------------------------------------------------------------------
# decoding


def decode(data: bytes) -> Message:
    """Parse one payload; raises ``MalformedPacket`` (only) for anything we did not send."""
    if len(data) > PAYLOAD_BYTES_MAX:
        raise MalformedPacket(f"payload of {len(data)} bytes exceeds {PAYLOAD_BYTES_MAX}")
    try:
        # Any: msgpack yields arbitrary nested values; every one is type-checked below.
        top = msgpack.unpackb(data, raw=False, strict_map_key=True, **_UNPACK_LIMITS)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise MalformedPacket(f"not msgpack: {exc}") from None
    fields = _list(top, "message")
    if len(fields) < 2:
        raise MalformedPacket("message has no version and code")
    version = _int(fields[0], "version")
    if version != FORMAT_VERSION:
        raise MalformedPacket(f"unsupported format version {version}")
    code = _int(fields[1], "code")
    args = fields[2:]
    match code:
        case MessageCode.STATE:
            _arity(args, 7, "STATE")
            return StateMsg(
                view_id=_view_id(args[0]),
                label=_name(args[1], "label"),
                mature=_bool(args[2], "mature"),
                eligible=_bool(args[3], "eligible"),
                claims=tuple(_claim(c) for c in _list(args[4], "claims")),
                prefer=tuple(_name(p, "prefer") for p in _list(args[5], "prefer")),
                table_digest=_digest(args[6]),
            )
        case MessageCode.MATURING:
            _arity(args, 1, "MATURING")
            return MaturingMsg(_view_id(args[0]))
        case MessageCode.BALANCE:
            _arity(args, 2, "BALANCE")
            return BalanceMsg(_view_id(args[0]), tuple(_move(m) for m in _list(args[1], "moves")))
        case MessageCode.HEALTH:
            _arity(args, 2, "HEALTH")
            return HealthMsg(_view_id(args[0]), _bool(args[1], "eligible"))
        case MessageCode.ARPCACHE:
            _arity(args, 1, "ARPCACHE")
            return ArpCacheMsg(_arp_entries(args[0]))
        case _:
            raise MalformedPacket(f"unknown message code {code}")


def _arity(args: list[object], count: int, what: str) -> None:
    if len(args) != count:
        raise MalformedPacket(f"{what} has {len(args)} fields, expected {count}")


def _list(value: object, what: str) -> list[object]:
    if type(value) is not list:
        raise MalformedPacket(f"{what} is not an array")
    return value


def _int(value: object, what: str) -> int:
    if type(value) is not int:  # bool is an int subclass: refuse it here
        raise MalformedPacket(f"{what} is not an integer")
    return value


def _bool(value: object, what: str) -> bool:
    if type(value) is not bool:
        raise MalformedPacket(f"{what} is not a boolean")
    return value


def _name(value: object, what: str) -> str:
    if type(value) is not str or len(value) > NAME_CHARS_MAX:
        raise MalformedPacket(f"{what} is not a string of <= {NAME_CHARS_MAX} characters")
    return value


def _view_id(value: object) -> ViewId:
    parts = _list(value, "view id")
    if len(parts) != 3:
        raise MalformedPacket("view id is not three integers")
    a, b, c = (_int(p, "view id part") for p in parts)
    if any(not INT32_MIN <= v <= INT32_MAX for v in (a, b, c)):
        raise MalformedPacket("view id part out of int32 range")
    return (a, b, c)


def _claim(value: object) -> Claim:
    parts = _list(value, "claim")
    if len(parts) != 2:
        raise MalformedPacket("claim is not [set_id, priority]")
    priority = _int(parts[1], "claim priority")
    if priority not in CLAIM_PRIORITIES:
        raise MalformedPacket(f"claim priority {priority} is not CLAIMED or PREFER_CLAIMED")
    return Claim(_name(parts[0], "claim set id"), Priority(priority))


def _move(value: object) -> Move:
    parts = _list(value, "move")
    if len(parts) != 3:
        raise MalformedPacket("move is not [set_id, from, to]")
    return Move(*(_name(p, "move field") for p in parts))


def _digest(value: object) -> bytes:
    if type(value) is not bytes or len(value) != DIGEST_BYTES:
        raise MalformedPacket(f"table digest is not {DIGEST_BYTES} bytes")
    return value


def _arp_entries(value: object) -> tuple[ArpEntry, ...]:
    if type(value) is not bytes or len(value) % ARP_RECORD_BYTES:
        raise MalformedPacket(f"ARP records are not a multiple of {ARP_RECORD_BYTES} bytes")
    return tuple(
        ArpEntry(
            str(ipaddress.IPv4Address(value[i : i + 4])),
            value[i + 4 : i + ARP_RECORD_BYTES],
        )
        for i in range(0, len(value), ARP_RECORD_BYTES)
    )

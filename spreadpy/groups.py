"""Process groups over the ring: what Spread's groups layer (groups.c) shows clients, sans I/O.

One `GroupsLayer` per daemon sits between the ring (`membership.Processor`: totally ordered
`Deliver`s, EVS `ViewChange`s) and the client sessions. Spec: shared/spec/spread-daemon.md §3
(service types, multigroup, private groups, open groups) and §6 (group membership as clients see
it); shared/spec/client-protocol.md §6-§7 (requests, what clients receive); shared/spec/totem.md
§2.8 (transitional, then regular configuration), §3 (EVS) and pitfall P17.

Inputs (none needs a clock):
  client_connected(session, private_name, wants_membership)   the caller checked name and quota
  client_request(session, request)      wire.MulticastFrame (or Multicast) / Join / Leave, or
                                        Kill (= disconnected)
  client_disconnected(session)          EOF or KILL (once per session); after our CloseSession,
                                        call it once as the acknowledgement
  session_backlog(session, unwritten)   after the adapter wrote what it could to the client:
                                        `unwritten` of our messages still wait in its buffer
  deliver(Deliver)                      from the ring, in its agreed order
  view_change(ViewChange)               from the ring: a first regular view, then trans/reg pairs
Outputs, from drain_actions():
  SubmitToRing(data, service)           give to Processor.submit (service: packets.Service)
  ToSession(session, message)           a wire.DaemonMessage for one client
  RelayFrames(session, frames)          multicasts' relay frames (wire.MulticastFrame.frame) for
                                        one client, in order: consecutive deliveries to a session
                                        share one, until any other action comes between
  CloseSession(session, reason)         we dropped the session: close its socket

Every join, leave, kill and multicast goes round the ring as a compact item (`encode_item`);
joins, leaves and kills travel AGREED, multicasts at their own service level. A multicast's item
is the delivery frame its session built (client-protocol.md §7.1) behind a 5-byte prefix:
receiving daemons read the target names and write the frame's bytes to their clients. Nothing
changes group state until the ring delivers the item, so every daemon applies the same changes in
the same order.

States (Spread's Gstate) and the view table `_VIEW_HANDLERS`:
  START    no view yet; client requests are held
  GOP      operational: items are applied as delivered
  GTRANS   after a transitional view: groups that lost daemons got a TRANSITION_MESS and are
           "changed"; a join/leave/disconnect in such a group yields REG_MEMB|CAUSED_BY_NETWORK
           (the joiner alone in a last vs set) followed by another TRANSITION_MESS
  GGATHER  after a regular view that brought daemons from other rings: the GROUPS-state
           exchange. Each daemon multicasts (AGREED) one STATE item, in parts if large, tagged
           with the regular view's ring id, listing its own local members of every group with
           the group's id and changed flag. When the last part from every member of the view is
           in, every daemon computes the same merged state and members of each group whose
           membership changed get REG_MEMB|CAUSED_BY_NETWORK, one vs set per previous group view
           (a pure merge sends no TRANSITION_MESS: nobody lost daemons)
  GGT      a transitional view arrived during the exchange. If the exchange still completes in
           it, the merge is notified and then the transitional view is applied (GTRANS). If the
           next regular view comes first, the exchange is abandoned: its STATE parts are
           dropped (pitfall P17: a STATE item counts only in the view it was tagged with) and a
           new exchange starts.
A regular view after GTRANS whose members all came with us (purely subtractive) needs no
exchange: changed groups drop the lost daemons' members and get CAUSED_BY_NETWORK with one vs set.

Group ids {proc_id, time, index}: an `Epoch` names the daemon view a group id was stamped in. A
regular view with ring id (ring_seq, rep) gives proc_id = rep and time = ring_seq; a transitional
view gives proc_id = its smallest member and time = ~ring_seq of the regular view that follows
(negative, so never equal to a regular one). Daemon ids and seqs are shown as int32
(two's complement; seq modulo 2^31). Internally the full values are compared.

Where we differ from Spread 5.0.1, on purpose:
  * Spread never delivers a client item during the exchange: it switches the ring's send queue
    (Prot_set_down_queue). Our ring keeps its unsequenced messages across a view change, so items
    sent before the view can arrive during the exchange. Every daemon ignores them there
    (they are all in the exchange at the same point of the total order), and the originator
    sends its own again, in order, once the exchange is done. New client requests are held
    during the exchange. Net effect as in Spread: no join, leave, kill or multicast is applied
    while group states are being merged.
  * Each daemon sends its own local members (Spread 4 has one daemon per synced set send for
    all of them); so no synced-set bookkeeping is needed.
  * A local member is bound to the session that sent its JOIN (by a per-daemon session number
    carried in the item), not to its name: a new session reusing the name of a session whose
    KILL is still in flight never inherits the old one's groups or messages.
  * Empty vs sets are omitted (Spread emits one when a join from a partitioned daemon makes
    that daemon's own set empty).
  * When the exchange completes after a transitional view (GGT), groups with members on
    daemons that view lost are notified of the merge before their TRANSITION_MESS, as in
    Spread; we decide it from the merged state (the same at every daemon), not each one's own.
  * A group emptied and re-created under the same epoch continues its index instead of
    starting at 1 again, so no two different views of a group share an id (the last
    _RETIRED_MAX such groups per epoch are remembered).
  * MaxSessionMessages is checked against the messages the adapter could not yet write
    (`session_backlog`), as Spread checks its session queue: one ring delivery that hands a
    client more messages than the limit, all written at once, drops nobody.
"""

from __future__ import annotations

import bisect
import logging
import struct
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum, IntEnum
from types import MappingProxyType
from typing import Any, Final

from .errors import LocalProtocolError, MalformedPacket
from .membership import Deliver, ViewChange
from .packets import RingId, Service
from .wire import (
    MAX_GROUP_NAME,
    MAX_LOCAL_GROUP_MEMBERS,
    DaemonMessage,
    GroupId,
    Join,
    Kill,
    Leave,
    MembershipCause,
    MembershipMessage,
    Multicast,
    MulticastFrame,
    RejectMessage,
    SelfLeave,
    ServiceType,
    TransitionalMessage,
    private_group_name,
    relay_frame_targets,
    split_private_group,
    valid_group_name,
    valid_private_name,
)

__all__ = [
    "DEFAULT_MAX_SESSION_MESSAGES",
    "STATE_PART_BYTES_MAX",
    "Action",
    "CloseSession",
    "Epoch",
    "GroupsCounters",
    "GroupsLayer",
    "GroupsState",
    "Item",
    "ItemKind",
    "JoinItem",
    "KillItem",
    "LeaveItem",
    "McastItem",
    "RelayFrames",
    "SessionId",
    "StateEntry",
    "StateItem",
    "SubmitToRing",
    "ToSession",
    "decode_item",
    "encode_item",
    "ring_service",
]

log = logging.getLogger(__name__)

SessionId = int

DEFAULT_MAX_SESSION_MESSAGES: Final = 1000  # spread.conf MaxSessionMessages
STATE_PART_BYTES_MAX: Final = 100_000  # a STATE item is cut into parts of about this size
_U32: Final = 0xFFFFFFFF
_U64: Final = (1 << 64) - 1
_MEMBERS_PER_ENTRY_MAX: Final = 0xFFFF
_WARN_FIRST: Final = 8  # log the first few drops of each kind, then one in _WARN_EVERY
_WARN_EVERY: Final = 1024
_RETIRED_MAX: Final = 4096  # emptied groups remembered per epoch (see _remove_group)

_ST = ServiceType
_SERVICE_BITS: Final = (
    (_ST.UNRELIABLE_MESS, Service.UNRELIABLE),
    (_ST.RELIABLE_MESS, Service.RELIABLE),
    (_ST.FIFO_MESS, Service.FIFO),
    (_ST.CAUSAL_MESS, Service.CAUSAL),
    (_ST.AGREED_MESS, Service.AGREED),
    (_ST.SAFE_MESS, Service.SAFE),
)
_MCAST_TYPE_BITS: Final = int(_ST.REGULAR_MESS | _ST.SELF_DISCARD)
_SELF_DISCARD: Final = int(_ST.SELF_DISCARD)


# Every valid multicast type (one service bit, SELF_DISCARD or not) -> its ring service. A
# table, because this runs three times per message and IntFlag arithmetic is slow.
_RING_SERVICE: Final = {
    int(bit) | extra: svc for bit, svc in _SERVICE_BITS for extra in (0, int(_ST.SELF_DISCARD))
}


def ring_service(service_type: int) -> Service:
    """The ring service for a client multicast type: exactly one service bit (SELF_DISCARD ok)."""
    svc = _RING_SERVICE.get(int(service_type))
    if svc is None:
        if service_type & ~_MCAST_TYPE_BITS:
            raise ValueError(f"service type {service_type:#x} has bits besides a service level")
        raise ValueError(f"service type {service_type:#x} needs exactly one service bit")
    return svc


# ------------------------------------------------------------------------------------- epochs


def _int32(value: int) -> int:
    value &= _U32
    return value - (1 << 32) if value & 0x80000000 else value


@dataclass(frozen=True, slots=True)
class Epoch:
    """The daemon view a group id was stamped in (Spread's membership id in a group id)."""

    daemon: int  # regular: the ring's representative; transitional: its smallest member
    ring_seq: int  # the regular ring's seq (for a transitional view: of the ring that follows)
    transitional: bool = False

    @classmethod
    def regular(cls, ring_id: RingId) -> Epoch:
        return cls(ring_id[1], ring_id[0], False)

    @property
    def proc_id(self) -> int:
        return _int32(self.daemon)

    @property
    def time(self) -> int:
        seq = self.ring_seq & 0x7FFFFFFF
        return ~seq if self.transitional else seq

    def group_id(self, index: int) -> GroupId:
        return GroupId(self.proc_id, self.time, _int32(index))

    def sort_key(self) -> tuple[int, int, int, int, bool]:
        # Spread orders vs sets by membership id: proc_id, then time (as signed ints).
        return (self.proc_id, self.time, self.ring_seq, self.daemon, self.transitional)


# ------------------------------------------------------------------------------ ring items


class ItemKind(IntEnum):
    MCAST = 1
    JOIN = 2
    LEAVE = 3
    KILL = 4
    STATE = 5


@dataclass(frozen=True, slots=True)
class McastItem:
    """A client multicast: the delivery frame the sender's daemon built (wire.MulticastFrame).

    Its sender field is the private group; its daemon is the ring originator. Receiving daemons
    read only the type and the target names, and write the frame to their clients as it is.
    """

    ref: int  # the sending session's number at its daemon (SELF_DISCARD)
    frame: bytes


@dataclass(frozen=True, slots=True)
class JoinItem:
    ref: int
    sender: str
    group: str


@dataclass(frozen=True, slots=True)
class LeaveItem:
    ref: int
    sender: str
    group: str


@dataclass(frozen=True, slots=True)
class KillItem:
    ref: int
    sender: str


@dataclass(frozen=True, slots=True)
class StateEntry:
    """One group as the sending daemon knows it, with that daemon's own members of it."""

    group: str
    epoch: Epoch
    index: int
    changed: bool
    members: tuple[str, ...]  # private names, local to the sending daemon


@dataclass(frozen=True, slots=True)
class StateItem:
    view: RingId  # the regular view this state was sent for (stale anywhere else)
    last: bool  # the sender's last part for this view
    entries: tuple[StateEntry, ...]


Item = McastItem | JoinItem | LeaveItem | KillItem | StateItem

_REF_HDR: Final = struct.Struct("!BI")  # kind, ref (a multicast's frame follows)
_MCAST_KIND: Final = bytes((ItemKind.MCAST,))
_STATE_HDR: Final = struct.Struct("!BBQII")  # kind, flags, view seq, view rep, entry count
_ENTRY: Final = struct.Struct("!IQBIBH")  # epoch daemon, seq, transitional, index, changed, n
_U8: Final = struct.Struct("!B")
_FLAG_LAST: Final = 0x01


def _name8(name: str) -> bytes:
    raw = name.encode("latin-1")
    if len(raw) >= MAX_GROUP_NAME or b"\0" in raw:
        raise LocalProtocolError(f"name {name!r} must be at most 31 bytes with no NUL")
    return bytes((len(raw),)) + raw


def _entry_bytes(e: StateEntry) -> bytes:
    if len(e.members) > _MEMBERS_PER_ENTRY_MAX:
        raise LocalProtocolError(f"group {e.group!r} has {len(e.members)} local members")
    ep = e.epoch
    head = _ENTRY.pack(
        ep.daemon, ep.ring_seq, ep.transitional, e.index & _U32, e.changed, len(e.members)
    )
    return _name8(e.group) + head + b"".join(_name8(m) for m in e.members)


def encode_item(item: Item) -> bytes:
    """The bytes of one groups-layer item, as it travels the ring."""
    match item:
        case McastItem():
            try:
                relay_frame_targets(item.frame)
            except ValueError as exc:
                raise LocalProtocolError(f"not a relay frame: {exc}") from None
            return _REF_HDR.pack(ItemKind.MCAST, item.ref) + item.frame
        case JoinItem() | LeaveItem():
            kind = ItemKind.JOIN if isinstance(item, JoinItem) else ItemKind.LEAVE
            return _REF_HDR.pack(kind, item.ref) + _name8(item.sender) + _name8(item.group)
        case KillItem():
            return _REF_HDR.pack(ItemKind.KILL, item.ref) + _name8(item.sender)
        case StateItem():
            flags = _FLAG_LAST if item.last else 0
            head = _STATE_HDR.pack(
                ItemKind.STATE, flags, item.view[0], item.view[1], len(item.entries)
            )
            return head + b"".join(_entry_bytes(e) for e in item.entries)
    raise LocalProtocolError(f"not a groups item: {item!r}")


class _Reader:
    """Bounds-checked reads; every shortfall is a MalformedPacket."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def unpack(self, fmt: struct.Struct) -> tuple[int, ...]:
        end = self.pos + fmt.size
        if end > len(self.data):
            raise MalformedPacket("groups item is truncated")
        values: tuple[int, ...] = fmt.unpack_from(self.data, self.pos)
        self.pos = end
        return values

    def name(self) -> str:
        if self.pos >= len(self.data):
            raise MalformedPacket("groups item is truncated")
        n = self.data[self.pos]
        end = self.pos + 1 + n
        if n >= MAX_GROUP_NAME or end > len(self.data):
            raise MalformedPacket("bad name length in groups item")
        raw = self.data[self.pos + 1 : end]
        if b"\0" in raw:
            raise MalformedPacket("NUL in a name of a groups item")
        self.pos = end
        return raw.decode("latin-1")

    def private(self) -> str:
        name = self.name()
        if not valid_private_name(name):
            raise MalformedPacket(f"illegal private name {name!r}")
        return name

    def group(self) -> str:
        name = self.name()
        if not valid_group_name(name):
            raise MalformedPacket(f"illegal group name {name!r}")
        return name

    def rest(self) -> bytes:
        out = self.data[self.pos :]
        self.pos = len(self.data)
        return out

    def done(self) -> None:
        if self.pos != len(self.data):
            raise MalformedPacket("trailing bytes after a groups item")


def decode_item(data: bytes) -> Item:
    """The item in `data`. Raises MalformedPacket (and nothing else) for any bad input."""
    if not data:
        raise MalformedPacket("empty groups item")
    r = _Reader(bytes(data))
    kind = data[0]
    if kind == ItemKind.MCAST:
        _, ref = r.unpack(_REF_HDR)
        frame = r.rest()
        try:
            relay_frame_targets(frame)
        except ValueError as exc:
            raise MalformedPacket(str(exc)) from None
        return McastItem(ref, frame)
    if kind in (ItemKind.JOIN, ItemKind.LEAVE):
        _, ref = r.unpack(_REF_HDR)
        sender, group = r.private(), r.group()
        r.done()
        return (
            JoinItem(ref, sender, group) if kind == ItemKind.JOIN else LeaveItem(ref, sender, group)
        )
    if kind == ItemKind.KILL:
        _, ref = r.unpack(_REF_HDR)
        sender = r.private()
        r.done()
        return KillItem(ref, sender)
    if kind == ItemKind.STATE:
        _, flags, seq, rep, count = r.unpack(_STATE_HDR)
        if flags & ~_FLAG_LAST:
            raise MalformedPacket(f"unknown state flags {flags:#x}")
        entries = []
        for _ in range(count):  # bounded by the bytes: each entry takes at least 20
            group = r.group()
            daemon, eseq, trans, index, changed, n = r.unpack(_ENTRY)
            if trans > 1 or changed > 1 or daemon == 0:
                raise MalformedPacket("bad epoch or flag in a state entry")
            members = tuple(r.private() for _ in range(n))
            epoch = Epoch(daemon, eseq, bool(trans))
            entries.append(StateEntry(group, epoch, index, bool(changed), members))
        r.done()
        return StateItem((seq, rep), bool(flags & _FLAG_LAST), tuple(entries))
    raise MalformedPacket(f"unknown groups item kind {kind}")


# ----------------------------------------------------------------------------------- actions


# Not frozen: one is built per message, and a frozen dataclass costs three times as much to
# build (0.25 against 0.09 us). Treat it as a value all the same.
@dataclass(slots=True)
class SubmitToRing:
    data: bytes
    service: int  # a packets.Service value


@dataclass(frozen=True, slots=True)
class ToSession:
    session: SessionId
    message: DaemonMessage


# Not frozen: the layer appends to `frames` while no other action has followed this one.
@dataclass(slots=True)
class RelayFrames:
    session: SessionId
    frames: list[bytes]  # relay frames, each as ServerSession.relay takes it


@dataclass(frozen=True, slots=True)
class CloseSession:
    session: SessionId
    reason: str


Action = SubmitToRing | ToSession | RelayFrames | CloseSession


class GroupsState(Enum):
    START = "start"
    GOP = "op"
    GTRANS = "trans"
    GGATHER = "gather"
    GGT = "gather-trans"


# The states with a view in place: client requests go to the ring at once (else they wait for
# the next view), and multicasts are delivered as they come. A tuple: `in` on it compares
# identities, where a set would hash the enum in Python every time.
_SETTLED: Final = (GroupsState.GOP, GroupsState.GTRANS)


@dataclass(slots=True)
class GroupsCounters:
    delivered_messages: int = 0  # relay frames handed to sessions (one per receiver)
    dropped_no_receiver: int = 0  # multicasts with no local receiver (not an error)
    malformed: int = 0
    unknown_origin: int = 0
    stale_state: int = 0  # STATE parts of another view, or arriving outside an exchange
    deferred: int = 0  # items delivered during an exchange (their originator resends them)
    resubmitted: int = 0
    exchanges_started: int = 0
    exchanges_completed: int = 0
    exchanges_aborted: int = 0
    sessions_overflowed: int = 0
    rejects: int = 0


# ------------------------------------------------------------------------------ group state


@dataclass(slots=True)
class _DaemonMembers:
    lineage: Epoch | None  # None: the daemon is partitioned from us (Spread: unknown memb_id)
    members: list[str]  # private group names, sorted (strcmp order)


@dataclass(slots=True)
class _Group:
    name: str
    epoch: Epoch
    index: int
    changed: bool = False
    daemons: dict[int, _DaemonMembers] = field(default_factory=dict)
    mailboxes: dict[str, SessionId] = field(default_factory=dict)  # live local members

    @property
    def group_id(self) -> GroupId:
        return self.epoch.group_id(self.index)

    def is_empty(self) -> bool:
        return not any(d.members for d in self.daemons.values())

    def restamp(self, epoch: Epoch) -> None:
        """New group id (epoch, 1); every daemon still with us takes the new lineage."""
        self.epoch = epoch
        self.index = 1
        self.changed = False
        for entry in self.daemons.values():
            if entry.lineage is not None:
                entry.lineage = epoch


@dataclass(slots=True)
class _Session:
    sid: SessionId
    ref: int
    private_name: str
    private_group: str
    wants_membership: bool
    groups: dict[str, None] = field(default_factory=dict)  # where it holds a mailbox


class _DaemonLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    def process(self, msg: object, kwargs: Any) -> tuple[object, Any]:  # Any: logging's type
        return f"[{self.extra['daemon'] if self.extra else '?'}] {msg}", kwargs


# --------------------------------------------------------------------------------- the layer


class GroupsLayer:
    """The process-groups state machine of one daemon (see the module docstring)."""

    def __init__(
        self,
        me: int,
        daemons: Mapping[int, str],
        *,
        max_session_messages: int = DEFAULT_MAX_SESSION_MESSAGES,
        max_local_group_members: int = MAX_LOCAL_GROUP_MEMBERS,
        logger: logging.Logger | logging.LoggerAdapter[logging.Logger] | None = None,
    ) -> None:
        """`daemons`: every configured daemon id -> name, in configuration order."""
        if me not in daemons:
            raise LocalProtocolError(f"daemon {me} is not in the configuration")
        for daemon_id, name in daemons.items():
            if not 0 < daemon_id <= _U32 or not name:
                raise LocalProtocolError(f"bad daemon entry {daemon_id}: {name!r}")
        if max_session_messages < 1 or max_local_group_members < 1:
            raise LocalProtocolError("limits must be positive")
        self.me = me
        self.name = daemons[me]
        self._names: dict[int, str] = dict(daemons)
        self._order: dict[int, int] = {d: i for i, d in enumerate(daemons)}
        self.max_session_messages = max_session_messages
        self.max_local_group_members = max_local_group_members
        self.log = logger or _DaemonLog(log, {"daemon": self.name})
        self.counters = GroupsCounters()
        self._actions: list[Action] = []
        # The RelayFrames that further frames may join: those behind the last action that is
        # not one (at len(_actions) == _runs_end). Any other action closes them all, so a
        # session's messages keep their order.
        self._open_runs: dict[SessionId, list[bytes]] = {}
        self._runs_end = 0
        # The local receivers of the last multicast's target names (relay_frame_targets hands
        # out one tuple per distinct name block). Only consecutive multicast deliveries share
        # it: every other input clears it first, as any of them may change who is local.
        self._memo_targets: tuple[str, ...] | None = None
        self._memo_receivers: list[_Session] = []

        self._state = GroupsState.START
        self._groups: dict[str, _Group] = {}
        self._sessions: dict[SessionId, _Session] = {}
        self._by_ref: dict[int, _Session] = {}
        # Private groups are unique per daemon exactly when private names are.
        self._by_private_group: dict[str, _Session] = {}
        self._closed_by_us: set[SessionId] = set()
        self._next_ref = 1

        self._reg: RingId | None = None
        self._reg_members: frozenset[int] = frozenset()
        self._reg_epoch: Epoch | None = None
        self._trans_members: frozenset[int] = frozenset()
        self._trans_epoch: Epoch | None = None
        # The exchange: STATE entries gathered per daemon, and who has sent its last part.
        self._gathered: dict[int, list[StateEntry]] = {}
        self._gather_done: set[int] = set()
        # Our items waiting for the ring: resends of ours ignored during an exchange first,
        # then requests that arrived while we could not send.
        self._resubmit: deque[tuple[bytes, int]] = deque()
        self._held: deque[tuple[bytes, int]] = deque()
        self._warned: dict[str, int] = {}
        # Groups emptied since the last view change: name -> (epoch, last index).
        self._retired: dict[str, tuple[Epoch, int]] = {}

    # ---------------------------------------------------------------------------- interface

    @property
    def state(self) -> GroupsState:
        return self._state

    @property
    def backlog(self) -> int:
        """Our items held back from the ring (the adapter may stop reading clients)."""
        return len(self._resubmit) + len(self._held)

    def drain_actions(self) -> list[Action]:
        actions = self._actions
        self._actions = []
        self._open_runs = {}  # what the caller took must not grow (nor may a length match)
        return actions

    def group_names(self) -> list[str]:
        return sorted(self._groups)

    def group_members(self, group: str) -> tuple[str, ...]:
        """Current members in Spread's order (daemon config order, then name); () if none."""
        g = self._groups.get(group)
        return self._member_list(g) if g is not None else ()

    def group_id(self, group: str) -> GroupId | None:
        g = self._groups.get(group)
        return g.group_id if g is not None else None

    def local_members(self, group: str) -> int:
        g = self._groups.get(group)
        return len(g.mailboxes) if g is not None else 0

    def client_connected(
        self, session: SessionId, private_name: str, wants_membership: bool
    ) -> str:
        """Register a session; returns its private group `#name#daemon`."""
        self._memo_targets = None
        if session in self._sessions or session in self._closed_by_us:
            raise LocalProtocolError(f"session {session} is already known")
        if not valid_private_name(private_name):
            raise LocalProtocolError(f"illegal private name {private_name!r}")
        private_group = private_group_name(private_name, self.name)
        if private_group in self._by_private_group:
            raise LocalProtocolError(f"private name {private_name!r} is already connected")
        ref = self._next_ref
        while ref in self._by_ref:  # only after 2^32 connections; bounded by live sessions
            ref = 1 if ref >= _U32 else ref + 1
        self._next_ref = 1 if ref >= _U32 else ref + 1
        s = _Session(session, ref, private_name, private_group, wants_membership)
        self._sessions[session] = s
        self._by_ref[ref] = s
        self._by_private_group[private_group] = s
        return s.private_group

    def client_request(
        self, session: SessionId, request: MulticastFrame | Multicast | Join | Leave | Kill
    ) -> None:
        self._memo_targets = None
        s = self._sessions.get(session)
        if s is None:
            if session in self._closed_by_us:
                return  # bytes read before our CloseSession took effect
            raise LocalProtocolError(f"request from unknown session {session}")
        match request:
            case MulticastFrame():
                self._multicast(s, request)
            case Multicast():
                self.client_request(session, MulticastFrame.from_request(request, s.private_group))
            case Join(group=group):
                self._check_group(group)
                g = self._groups.get(group)
                if g is not None and len(g.mailboxes) >= self.max_local_group_members:
                    # groups.h MAX_LOCAL_GROUP_MEMBERS: the joiner alone gets a REJECT_MESS.
                    self.counters.rejects += 1
                    self._to_session(s, RejectMessage.for_request(request, s.private_group))
                    return
                self._submit(encode_item(JoinItem(s.ref, s.private_name, group)), Service.AGREED)
            case Leave(group=group):
                self._check_group(group)
                self._submit(encode_item(LeaveItem(s.ref, s.private_name, group)), Service.AGREED)
            case Kill():
                self._drop_session(s)
            case _:
                raise LocalProtocolError(f"not a client request: {request!r}")

    def client_multicast(self, session: SessionId, request: MulticastFrame) -> None:
        """`client_request` for a MulticastFrame: the per-message path, without the dispatch."""
        s = self._sessions.get(session)
        if s is None:
            self.client_request(session, request)  # its errors and its closed-by-us case
        else:
            self._multicast(s, request)

    def _multicast(self, s: _Session, request: MulticastFrame) -> None:
        service = _RING_SERVICE.get(request.service_type)
        if service is None:
            raise LocalProtocolError(f"service type {request.service_type:#x} is not one service")
        # The session built and checked the frame: it travels as it is.
        self._submit(_REF_HDR.pack(ItemKind.MCAST, s.ref) + request.frame, service)

    def client_disconnected(self, session: SessionId) -> None:
        """The client sent KILL or its connection ended. Others will see a disconnect."""
        self._memo_targets = None
        if session in self._closed_by_us:
            self._closed_by_us.discard(session)
            return
        s = self._sessions.get(session)
        if s is None:
            raise LocalProtocolError(f"unknown session {session}")
        self._drop_session(s)

    def session_backlog(self, session: SessionId, unwritten: int) -> None:
        """The adapter wrote what it could: `unwritten` of this session's messages still wait.

        At MaxSessionMessages the session is dropped (Sess_write: "killing mbox for not
        reading"); others see it disconnect.
        """
        self._memo_targets = None
        s = self._sessions.get(session)
        if s is None or unwritten < self.max_session_messages:
            return
        self.counters.sessions_overflowed += 1
        self.log.warning(
            "closing session %s (%s): %d messages not read", s.sid, s.private_group, unwritten
        )
        self._actions.append(CloseSession(s.sid, "not reading"))
        self._closed_by_us.add(s.sid)
        self._drop_session(s)

    def deliver(self, d: Deliver) -> bool:
        """One message from the ring, in agreed order.

        Returns whether a local client was handed another daemon's multicast: it may answer
        at once, which the ring can wait for (`Processor.expect_reply`).
        """
        if self._state is GroupsState.START:
            raise LocalProtocolError("a delivery before the first view")
        origin_name = self._names.get(d.originator)
        if origin_name is None:
            self.counters.unknown_origin += 1
            self._warn("origin", "dropped a groups item from unknown daemon %s", d.originator)
            return False
        data = d.data
        if data[:1] == _MCAST_KIND and self._state in _SETTLED:
            # The per-message path: no item is decoded.
            return self._on_mcast(d.originator, data) and d.originator != self.me
        self._memo_targets = None
        try:
            item = decode_item(data)
        except MalformedPacket as exc:
            self.counters.malformed += 1
            self._warn(
                "malformed", "dropped a malformed groups item from %s: %s", d.originator, exc
            )
            return False
        if isinstance(item, StateItem):
            self._on_state(d.originator, item)
            return False
        if self._state in (GroupsState.GGATHER, GroupsState.GGT):
            # Sent before this view: nobody applies it now, its originator sends it again.
            self.counters.deferred += 1
            if d.originator == self.me:
                self._resubmit.append((d.data, d.service))
            return False
        match item:  # (a multicast in GOP or GTRANS took the fast path above)
            case JoinItem():
                self._on_join(d.originator, origin_name, item)
            case LeaveItem():
                self._on_leave(d.originator, origin_name, item)
            case KillItem():
                self._on_kill(d.originator, origin_name, item)
        return False

    def view_change(self, vc: ViewChange) -> None:
        """A daemon view from the ring: "reg" (RingId) or "trans" ((old, new) RingIds)."""
        self._memo_targets = None
        handler = _VIEW_HANDLERS.get((self._state, vc.kind))
        if handler is None:
            raise LocalProtocolError(f"{vc.kind!r} view {vc.view} in state {self._state.name}")
        if self.me not in vc.members:
            raise LocalProtocolError(f"view {vc.view} does not include daemon {self.me}")
        self.log.info("groups: %s view %s members %s", vc.kind, vc.view, vc.members)
        handler(self, vc)
        self._retired.clear()  # a new epoch starts: ids of older epochs cannot recur

    # ------------------------------------------------------------------------- view changes

    def _first_regular(self, vc: ViewChange) -> None:
        if tuple(vc.members) == (self.me,):
            self._set_regular(vc)
            self._state = GroupsState.GOP
            self._flush()
        else:
            self._start_exchange(vc)

    def _trans_in_op(self, vc: ViewChange) -> None:
        self._set_transitional(vc)
        self._apply_transitional()
        self._state = GroupsState.GTRANS

    def _regular_after_trans(self, vc: ViewChange) -> None:
        if frozenset(vc.members) == self._trans_members:
            # Purely subtractive: everyone here shares our state; no exchange needed.
            self._set_regular(vc)
            epoch = self._reg_epoch
            assert epoch is not None
            for name in sorted(self._groups):
                g = self._groups[name]
                if not g.changed:
                    continue
                self._drop_partitioned(g)
                if g.is_empty():
                    self._remove_group(g)
                    continue
                g.restamp(epoch)
                self._send_network(g)
            self._state = GroupsState.GOP
            self._flush()
            return
        for name in sorted(self._groups):
            g = self._groups[name]
            if g.changed:
                self._drop_partitioned(g)
                if g.is_empty():
                    self._remove_group(g)
        self._start_exchange(vc)

    def _trans_in_gather(self, vc: ViewChange) -> None:
        # Keep gathering: the missing STATE parts may still come in this transitional view.
        self._set_transitional(vc)
        self._state = GroupsState.GGT

    def _regular_after_cascade(self, vc: ViewChange) -> None:
        # The exchange did not complete: forget it, keep our own state, start over.
        self.counters.exchanges_aborted += 1
        trans = self._trans_members
        for name in sorted(self._groups):
            g = self._groups[name]
            lost = [d for d in g.daemons if d not in trans]
            if not lost:
                continue
            for d in lost:
                del g.daemons[d]
            g.changed = True
            if g.is_empty():
                self._remove_group(g)
        self._start_exchange(vc)

    def _set_regular(self, vc: ViewChange) -> None:
        ring_id = _ring_id(vc.view)
        self._reg = ring_id
        self._reg_members = frozenset(vc.members)
        self._reg_epoch = Epoch.regular(ring_id)

    def _set_transitional(self, vc: ViewChange) -> None:
        view = vc.view
        if not (isinstance(view, tuple) and len(view) == 2):
            raise LocalProtocolError(f"transitional view id {view!r} is not (old, new)")
        new = _ring_id(view[1])
        self._trans_members = frozenset(vc.members)
        self._trans_epoch = Epoch(min(vc.members), new[0], True)

    def _apply_transitional(self) -> None:
        """Groups that lost daemons: TRANSITION_MESS with the old id, then a transitional id."""
        trans, epoch = self._trans_members, self._trans_epoch
        assert epoch is not None
        for name in sorted(self._groups):
            g = self._groups[name]
            lost = [entry for d, entry in g.daemons.items() if d not in trans]
            if not lost:
                continue
            for entry in lost:
                entry.lineage = None
            self._send_trans(g)
            g.restamp(epoch)
            g.changed = True

    def _drop_partitioned(self, g: _Group) -> None:
        for d in [d for d, entry in g.daemons.items() if entry.lineage is None]:
            del g.daemons[d]

    # ---------------------------------------------------------------------------- exchange

    def _start_exchange(self, vc: ViewChange) -> None:
        self._set_regular(vc)
        assert self._reg is not None
        self._state = GroupsState.GGATHER
        self._gathered = {}
        self._gather_done = set()
        self.counters.exchanges_started += 1
        entries = []
        for name in sorted(self._groups):
            g = self._groups[name]
            mine = g.daemons.get(self.me)
            if mine is None or not mine.members:
                continue
            privates = tuple(_private_part(m) for m in mine.members)
            entries.append(StateEntry(name, g.epoch, g.index, g.changed, privates))
        for part in _state_parts(self._reg, entries):
            self._emit_submit(part, Service.AGREED)

    def _on_state(self, origin: int, item: StateItem) -> None:
        if (
            self._state not in (GroupsState.GGATHER, GroupsState.GGT)
            or item.view != self._reg
            or origin not in self._reg_members
            or origin in self._gather_done
        ):
            self.counters.stale_state += 1  # totem.md pitfall P17
            return
        self._gathered.setdefault(origin, []).extend(item.entries)
        if item.last:
            self._gather_done.add(origin)
            if self._gather_done == self._reg_members:
                self._complete_exchange()

    def _complete_exchange(self) -> None:
        epoch = self._reg_epoch
        assert epoch is not None
        merged = self._merge()
        cascade = self._state is GroupsState.GGT
        old = self._groups
        self._groups = merged
        for name, g in merged.items():
            previous = old.get(name)
            mine = g.daemons.get(self.me)
            if previous is not None and mine is not None:
                local = set(mine.members)
                g.mailboxes = {
                    m: sid
                    for m, sid in previous.mailboxes.items()
                    if m in local and sid in self._sessions
                }
        for name in sorted(merged):
            g = merged[name]
            if cascade and any(d not in self._trans_members for d in g.daemons):
                g.changed = True
            if g.changed:
                g.epoch, g.index = epoch, 1
                self._send_network(g)  # vs sets from the previous lineages
                g.restamp(epoch)
        for name, g in old.items():
            if name not in merged:
                assert not g.mailboxes, f"group {name} with local members vanished in a merge"
        self._gathered = {}
        self._gather_done = set()
        self.counters.exchanges_completed += 1
        self._state = GroupsState.GOP
        if cascade:
            self._apply_transitional()
            self._state = GroupsState.GTRANS
        self._flush()

    def _merge(self) -> dict[str, _Group]:
        merged: dict[str, _Group] = {}
        for d in sorted(self._reg_members, key=self._daemon_order):
            daemon_name = self._names[d]
            for e in self._gathered.get(d, ()):
                g = merged.get(e.group)
                if g is None:
                    g = _Group(e.group, e.epoch, e.index, e.changed)
                    merged[e.group] = g
                elif e.changed or e.epoch != g.epoch or e.index != g.index:
                    g.changed = True  # different previous views (or a daemon said changed)
                entry = g.daemons.get(d)
                if entry is None:
                    entry = g.daemons[d] = _DaemonMembers(e.epoch, [])
                names = {private_group_name(m, daemon_name) for m in e.members}
                entry.members = sorted(names.union(entry.members))
        for name in [n for n, g in merged.items() if g.is_empty()]:
            del merged[name]
        return merged

    # --------------------------------------------------------------------- applying items

    def _on_mcast(self, origin: int, data: bytes) -> bool:
        """A multicast item (`encode_item`'s bytes): hand its frame to every local receiver.

        Returns whether any local receiver got it.
        """
        try:
            service_type, targets = relay_frame_targets(data, _REF_HDR.size)
        except ValueError as exc:
            self.counters.malformed += 1
            self._warn("malformed", "dropped a malformed multicast from %s: %s", origin, exc)
            return False
        if targets is self._memo_targets:
            receivers = self._memo_receivers
        else:
            receivers = self._receivers_of(targets)
            self._memo_targets, self._memo_receivers = targets, receivers
        if origin == self.me and service_type & _SELF_DISCARD:
            _, ref = _REF_HDR.unpack_from(data)
            receivers = [s for s in receivers if s.ref != ref]
        if not receivers:
            self.counters.dropped_no_receiver += 1
            return False
        frame = data[_REF_HDR.size :]
        actions = self._actions
        runs = self._open_runs
        if len(actions) != self._runs_end:
            runs.clear()
        self.counters.delivered_messages += len(receivers)
        for s in receivers:
            run = runs.get(s.sid)
            if run is None:
                run = runs[s.sid] = []
                actions.append(RelayFrames(s.sid, run))
            run.append(frame)
        self._runs_end = len(actions)
        return True

    def _receivers_of(self, targets: tuple[str, ...]) -> list[_Session]:
        """The local sessions that a multicast to `targets` reaches, each once."""
        receivers: dict[SessionId, _Session] = {}
        sessions = self._sessions
        for target in targets:
            if target[:1] == "#":
                s = self._by_private_group.get(target)
                if s is not None:
                    receivers[s.sid] = s
                continue
            g = self._groups.get(target)
            if g is None:
                continue
            for sid in g.mailboxes.values():
                s = sessions.get(sid)
                if s is not None:
                    receivers[sid] = s
        return list(receivers.values())

    def _on_join(self, origin: int, origin_name: str, item: JoinItem) -> None:
        member = private_group_name(item.sender, origin_name)
        g = self._groups.get(item.group)
        if g is None:
            epoch = self._current_epoch()
            retired = self._retired.pop(item.group, None)
            index = retired[1] if retired is not None and retired[0] == epoch else 0
            g = _Group(item.group, epoch, index)
            self._groups[item.group] = g
        entry = g.daemons.get(origin)
        if entry is None:
            partitioned = self._state is GroupsState.GTRANS and origin not in self._trans_members
            entry = g.daemons[origin] = _DaemonMembers(None if partitioned else g.epoch, [])
        pos = bisect.bisect_left(entry.members, member)
        if pos < len(entry.members) and entry.members[pos] == member:
            return  # already a member: ignored, as G_handle_join does
        entry.members.insert(pos, member)
        g.index += 1
        if origin == self.me:
            s = self._by_ref.get(item.ref)
            if s is not None and s.private_group == member:
                g.mailboxes[member] = s.sid
                s.groups[g.name] = None
        if entry.lineage is None:
            g.changed = True
        if not g.mailboxes:
            return
        if g.changed:
            self._send_network(g, joiner=member)
            self._send_trans(g)
        else:
            self._send_light(g, MembershipCause.JOIN, member)

    def _on_leave(self, origin: int, origin_name: str, item: LeaveItem) -> None:
        member = private_group_name(item.sender, origin_name)
        g = self._groups.get(item.group)
        entry = g.daemons.get(origin) if g is not None else None
        if g is None or entry is None or member not in entry.members:
            return  # not a member: ignored, as G_handle_leave does
        sid = g.mailboxes.pop(member, None)
        if sid is not None:
            s = self._sessions.get(sid)
            if s is not None:
                s.groups.pop(g.name, None)
                if s.wants_membership:
                    self._to_session(s, SelfLeave(g.name))
        self._remove_member(g, origin, entry, member)
        if g.name not in self._groups or not g.mailboxes:
            return
        if g.changed:
            self._send_network(g)
            self._send_trans(g)
        else:
            self._send_light(g, MembershipCause.LEAVE, member)

    def _on_kill(self, origin: int, origin_name: str, item: KillItem) -> None:
        member = private_group_name(item.sender, origin_name)
        for name in sorted(self._groups):
            g = self._groups.get(name)
            entry = g.daemons.get(origin) if g is not None else None
            if g is None or entry is None or member not in entry.members:
                continue
            sid = g.mailboxes.pop(member, None)
            if sid is not None and (s := self._sessions.get(sid)) is not None:
                s.groups.pop(name, None)
            self._remove_member(g, origin, entry, member)
            if name not in self._groups or not g.mailboxes:
                continue
            if g.changed:
                self._send_network(g)
                self._send_trans(g)
            else:
                self._send_light(g, MembershipCause.DISCONNECT, member)

    def _remove_member(self, g: _Group, origin: int, entry: _DaemonMembers, member: str) -> None:
        entry.members.remove(member)
        if not entry.members:
            del g.daemons[origin]
        if g.is_empty():
            self._remove_group(g)
        else:
            g.index += 1

    def _remove_group(self, g: _Group) -> None:
        assert not g.mailboxes, f"removing group {g.name} that has local members"
        del self._groups[g.name]
        # Re-created under this same epoch, it continues the index: no two views of a group
        # share an id (Spread would start again at 1). Every daemon sharing the epoch removes
        # the same groups in the same order, so the oldest-first bound is the same everywhere.
        self._retired[g.name] = (g.epoch, g.index)
        if len(self._retired) > _RETIRED_MAX:
            del self._retired[next(iter(self._retired))]

    def _epoch_now(self) -> Epoch | None:
        return self._trans_epoch if self._state is GroupsState.GTRANS else self._reg_epoch

    def _current_epoch(self) -> Epoch:
        epoch = self._epoch_now()
        assert epoch is not None
        return epoch

    # ----------------------------------------------------------------------- notifications

    def _member_list(self, g: _Group) -> tuple[str, ...]:
        out: list[str] = []
        for d in sorted(g.daemons, key=self._daemon_order):
            out.extend(g.daemons[d].members)
        return tuple(out)

    def _vs_sets(self, g: _Group, joiner: str | None) -> tuple[tuple[str, ...], ...]:
        """Members grouped by the group view they come from; partitioned daemons alone."""

        def key(d: int) -> tuple[bool, tuple[int, int, int, int, bool], tuple[int, int]]:
            lineage = g.daemons[d].lineage
            lkey = lineage.sort_key() if lineage is not None else (0, 0, 0, 0, False)
            return (lineage is None, lkey, self._daemon_order(d))

        sets: list[list[str]] = []
        previous: Epoch | None = None
        for d in sorted(g.daemons, key=key):
            entry = g.daemons[d]
            if not sets or entry.lineage is None or entry.lineage != previous:
                sets.append([])
            previous = entry.lineage
            sets[-1].extend(m for m in entry.members if m != joiner)
        if joiner is not None:
            sets.append([joiner])
        return tuple(tuple(s) for s in sets if s)

    def _recipients(self, g: _Group) -> list[tuple[str, _Session]]:
        out = []
        for member, sid in list(g.mailboxes.items()):
            s = self._sessions.get(sid)
            if s is not None and s.wants_membership:
                out.append((member, s))
        return out

    def _send_light(self, g: _Group, cause: MembershipCause, changed_member: str) -> None:
        message = MembershipMessage(
            group=g.name,
            cause=cause,
            group_id=g.group_id,
            members=self._member_list(g),
            vs_sets=((changed_member,),),
            local_vs_set=0,
        )
        for _, s in self._recipients(g):
            self._to_session(s, message)

    def _send_network(self, g: _Group, joiner: str | None = None) -> None:
        recipients = self._recipients(g)
        if not recipients:
            return
        members = self._member_list(g)
        vs_sets = self._vs_sets(g, joiner)
        gid = g.group_id
        where = {m: i for i, vs in enumerate(vs_sets) for m in vs}
        for member, s in recipients:
            message = MembershipMessage(
                group=g.name,
                cause=MembershipCause.NETWORK,
                group_id=gid,
                members=members,
                vs_sets=vs_sets,
                local_vs_set=where[member],
            )
            self._to_session(s, message)

    def _send_trans(self, g: _Group) -> None:
        message = TransitionalMessage(g.name, g.group_id)
        for _, s in self._recipients(g):
            self._to_session(s, message)

    # ---------------------------------------------------------------------------- sessions

    def _to_session(self, s: _Session, message: DaemonMessage) -> None:
        if s.sid in self._sessions:
            self._actions.append(ToSession(s.sid, message))

    def _drop_session(self, s: _Session) -> None:
        for name in s.groups:
            g = self._groups.get(name)
            if g is not None:
                g.mailboxes.pop(s.private_group, None)
        s.groups.clear()
        del self._sessions[s.sid]
        del self._by_ref[s.ref]
        del self._by_private_group[s.private_group]
        # The member stays in its groups until this KILL is delivered (in order, everywhere).
        self._submit(encode_item(KillItem(s.ref, s.private_name)), Service.AGREED)

    # ------------------------------------------------------------------------- ring output

    def _submit(self, data: bytes, service: int) -> None:
        if self._can_send() and not self._resubmit and not self._held:
            self._emit_submit(data, service)
        else:
            self._held.append((data, service))

    def _can_send(self) -> bool:
        return self._state in _SETTLED

    def _flush(self) -> None:
        if not self._can_send():
            return
        while self._resubmit:
            self.counters.resubmitted += 1
            self._emit_submit(*self._resubmit.popleft())
        while self._held:
            self._emit_submit(*self._held.popleft())

    def _emit_submit(self, data: bytes, service: int) -> None:
        self._actions.append(SubmitToRing(data, int(service)))

    # ------------------------------------------------------------------------------ helpers

    def _daemon_order(self, d: int) -> tuple[int, int]:
        # Configuration order; daemons we do not know come after, by id.
        pos = self._order.get(d)
        return (pos, 0) if pos is not None else (len(self._order), d)

    def _check_group(self, group: str) -> None:
        if not valid_group_name(group):
            raise LocalProtocolError(f"illegal group name {group!r}")

    def _warn(self, kind: str, msg: str, *args: object) -> None:
        n = self._warned.get(kind, 0) + 1
        self._warned[kind] = n
        if n <= _WARN_FIRST or n % _WARN_EVERY == 0:
            self.log.warning(msg + " (%d so far)", *args, n)


_ViewHandler = Callable[[GroupsLayer, ViewChange], None]
_VIEW_HANDLERS: Final[Mapping[tuple[GroupsState, str], _ViewHandler]] = MappingProxyType(
    {
        (GroupsState.START, "reg"): GroupsLayer._first_regular,
        (GroupsState.GOP, "trans"): GroupsLayer._trans_in_op,
        (GroupsState.GTRANS, "reg"): GroupsLayer._regular_after_trans,
        (GroupsState.GGATHER, "trans"): GroupsLayer._trans_in_gather,
        (GroupsState.GGT, "reg"): GroupsLayer._regular_after_cascade,
    }
)


def _ring_id(view: object) -> RingId:
    if (
        isinstance(view, tuple)
        and len(view) == 2
        and all(isinstance(v, int) for v in view)
        and 0 <= view[0] <= _U64
        and 0 < view[1] <= _U32
    ):
        return (view[0], view[1])
    raise LocalProtocolError(f"{view!r} is not a ring id (ring_seq, rep)")


def _private_part(member: str) -> str:
    parts = split_private_group(member)
    assert parts is not None, member
    return parts[0]


def _state_parts(view: RingId, entries: list[StateEntry]) -> list[bytes]:
    """STATE items for `entries`, each about STATE_PART_BYTES_MAX at most; the last is flagged."""
    parts: list[list[StateEntry]] = [[]]
    size = 0
    for e in entries:
        n = len(_entry_bytes(e))
        if parts[-1] and size + n > STATE_PART_BYTES_MAX:
            parts.append([])
            size = 0
        parts[-1].append(e)
        size += n
    last = len(parts) - 1
    return [encode_item(StateItem(view, i == last, tuple(p))) for i, p in enumerate(parts)]

"""Wackamole's balancer as a pure state machine: which member holds which VIP set.

Follows shared/spec/wackamole.md §2 (the algorithm) and §3 (what acquire, release and notify
mean), over Spread group membership as clients see it (shared/spec/spread-daemon.md §6).
No sockets, no clock, no randomness: the adapter (wackapy/daemon.py) or the simulator
(wackapy/groupsim.py) feeds inputs and executes the actions.

Inputs (every one takes ``now``, monotonic seconds):
  start(now)                        clean up leftover addresses, then connect
  connected(private_name, now)      the Spread session is up (private group name)
  disconnected(now)                 a connect attempt failed or the session was lost
  membership(view, now)             a membership message for our group (regular or transitional)
  message(sender, payload, now)     a group multicast, our own included (Spread self-delivers)
  timer(now)                        at or after next_deadline(); harmless early or late
  set_healthy(healthy, now)         health gate (our extension, below)
  share_arp_cache(entries, now)     a local ARP-table sample to multicast (ARPCACHE)
  shutdown(now)                     release everything and stop
Outputs: drain_actions() -> list[Action] and next_deadline() -> float | None. Actions:
ConnectSpread, JoinGroup, Multicast, Acquire, Release, Announce, SampleArpCache,
ArpCacheLearned (see their docstrings).

States (``State``): IDLE -> CONNECTING -> BOOT -> GATHER <-> RUN, plus DISCONNECTED (waiting
SpreadRetryInterval before the next connect attempt) and STOPPED. BOOT: connected, holding
nothing (no view yet, or nobody in the view is mature). GATHER: a regular view arrived, one
STATE per member is awaited. RUN: the allocation is agreed and applied. Maturity is a flag
beside the state, as upstream; RUN implies mature. ``ALLOWED_INPUTS`` is the (state, input)
table; any other pair raises ``LocalProtocolError``.

The algorithm, as upstream (spec §2.3-§2.9): on every regular view each member multicasts a
STATE (AGREED) listing the sets it holds; when every member's STATE is in, every mature member
computes the same table from the same STATEs in the same agreed order: claims are kept,
duplicate claims go to the first claimant in delivery order (a PREFER_CLAIMED claim beating a
CLAIMED one), sets a member prefers go to the first preferring member, and the rest go to the
least-loaded member (ties: lowest index in Spread's member order). Transitional views are only
noted. The Mature timer multicasts MATURING, which makes the whole view mature; a STATE from a
mature member makes the receiver mature. The leader (index 0) runs a balancing round every
Balance Interval (or once after each allocation with AcquisitionsPerRound = all) and
multicasts BALANCE (AGREED) with at most AcquisitionsPerRound moves; every member applies them.
The leader keeps at most one BALANCE in flight: a round falling due before its previous BALANCE
came back runs when it does, so no round is planned on a table that is about to change.
Losing Spread releases everything and reconnects at once, then every SpreadRetryInterval.

Deliberate differences from the original (spec §2.7, §2.8, §6), each the obvious right thing:

* Counts are always recomputed from the agreed table (upstream keeps them incrementally and
  they can diverge between members after merges with Prefer).
* The allocation is one pure function (``allocate``) evaluated when the exchange completes, not
  incremental side effects while STATEs arrive. Conflict losers therefore release when the last
  STATE is delivered rather than at their rival's STATE: the same agreed instant for everyone.
* A member preferring a set it already holds keeps it against a preferring rival whose STATE
  came first (upstream, the first preferrer in delivery order wins even over a holder, so a
  twice-preferred set could move on every view change).
* After a merge (a NETWORK view with several vs sets), and for every set that more than one
  member claimed, each keeper re-announces the sets it keeps (upstream never does: neighbours
  keep the loser's MAC, bug 10). Nothing is ever announced for a set not held: ``Release``
  means "stop announcing it too" to the executor (upstream keeps announcing, bug 7).
* Balancing never moves a preferred set and stops when no member with a movable set exceeds
  the least-loaded by 2 or more; an empty BALANCE is never sent (bug 12). A move names its
  source member; a move whose set changed owner before delivery is skipped (by everyone).
  ``AcquisitionsPerRound = all`` (``None``) means a complete balance right after each
  (re)allocation, not one round of floor(n/2) moves that can leave it unbalanced (bug 13).
* A BALANCE is honoured only from the view's leader and for the current view; a Mature timer
  firing before the first view is remembered and its MATURING sent once the view arrives.
* Members are identified by Spread private group names (unique), not by the host's address
  (bug 15); the address is carried as ``label`` for display.
* A message that cannot be decoded is counted and dropped; if its sender's STATE is still
  awaited it stands for an empty, ineligible STATE (members running the same codec decode the
  same bytes the same way, so all agree), so a faulty peer cannot stall the exchange.
* Leftover addresses are removed (``Release`` with reason STARTUP) once, at ``start``; upstream
  repeats that clean-up, with its ``on down`` hooks, before every reconnect attempt (bug 16).
  After a lost session only the sets actually held are released.

Health gate (our extension): ``set_healthy(False, now)`` releases every set at once and
multicasts HEALTH (AGREED) saying the member is not eligible; STATEs carry the same flag. When
a HEALTH is delivered every member marks the sender (in)eligible and, in RUN, reallocates with
the same pure function: an ineligible member's sets go to the least-loaded eligible members,
and a member that becomes eligible again takes back its preferred sets and is filled up by
balancing. An unhealthy member never acquires, even if the table still names it (its HEALTH is
then in flight). Health changes while disconnected are simply reported in the next STATE.

Not here: ARP notification pacing (Notify targets, throttling: the executor of ``Announce``),
the upstream Linux "re-up" after releases (spec §3.3, for kernels without promote_secondaries),
and the ``post up``/``post down`` hooks (the executor can run them per drained batch).
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import Enum, IntEnum
from typing import TYPE_CHECKING

from spreadpy.errors import LocalProtocolError, MalformedPacket
from wackapy.statemsg import (
    ARP_ENTRIES_MAX,
    ArpCacheMsg,
    ArpEntry,
    BalanceMsg,
    Claim,
    HealthMsg,
    MaturingMsg,
    Message,
    MessageCode,
    Move,
    Priority,
    StateMsg,
    ViewId,
    decode,
    encode,
)

if TYPE_CHECKING:
    Log = logging.Logger | logging.LoggerAdapter[logging.Logger]

__all__ = [
    "ALLOWED_INPUTS",
    "Acquire",
    "Action",
    "Allocation",
    "Announce",
    "ArpCacheLearned",
    "Balancer",
    "BalancerSettings",
    "Cause",
    "ConnectSpread",
    "Input",
    "JoinGroup",
    "Multicast",
    "Reason",
    "Release",
    "SampleArpCache",
    "Service",
    "SetStatus",
    "Slot",
    "State",
    "View",
    "ViewKind",
    "VipSet",
    "allocate",
    "plan_balance",
]

MALFORMED_WARNINGS_MAX = 10  # warnings for the first malformed messages, then
MALFORMED_WARN_EVERY = 1000  # one per this many


# ---------------------------------------------------------------------------------------------
# settings


@dataclass(frozen=True, slots=True)
class VipSet:
    """A VIP set (upstream "virtual interface"): addresses owned as a unit, head first."""

    set_id: str
    addresses: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.set_id:
            raise ValueError("a VIP set needs a non-empty set_id")
        if not self.addresses:
            raise ValueError(f"VIP set {self.set_id!r} has no address")

    @property
    def head(self) -> str:
        return self.addresses[0]


@dataclass(frozen=True, slots=True, kw_only=True)
class BalancerSettings:
    """What the balancer needs from wackamole.conf (the lead builds it from WackamoleConfig).

    ``vip_sets`` must be identical, in the same order, on every member. ``prefer`` entries
    match a set by set_id or by head address. ``acquisitions_per_round`` None means upstream's
    ``AcquisitionsPerRound = all``. Defaults are upstream's effective ones (spec §1.5).
    """

    group: str
    vip_sets: tuple[VipSet, ...]
    prefer: tuple[str, ...] = ()
    mature_s: float = 300.0
    balance_interval_s: float = 300.0
    acquisitions_per_round: int | None = 1
    spread_retry_s: float = 5.0
    label: str = ""  # this member's "real" address, shown by wackatrl as Owner

    def __post_init__(self) -> None:
        if not self.group:
            raise ValueError("group name is empty")
        ids = [s.set_id for s in self.vip_sets]
        if len(set(ids)) != len(ids):
            raise ValueError("VIP set ids are not unique")
        if self.mature_s < 0 or self.balance_interval_s < 0:
            raise ValueError("mature_s and balance_interval_s must be >= 0")
        if self.spread_retry_s <= 0:
            raise ValueError("spread_retry_s must be > 0")
        if self.acquisitions_per_round is not None and self.acquisitions_per_round < 0:
            raise ValueError("acquisitions_per_round must be >= 0 or None (all)")

    def prefer_set_ids(self) -> tuple[str, ...]:
        """Set ids of ``prefer`` in config order; entries naming no set are dropped."""
        wanted = set(self.prefer)
        return tuple(s.set_id for s in self.vip_sets if s.set_id in wanted or s.head in wanted)

    def balance_cap(self) -> int | None:
        """Moves per round: AcquisitionsPerRound clamped to floor(#sets/2); None = unlimited."""
        if self.acquisitions_per_round is None:
            return None
        return min(self.acquisitions_per_round, len(self.vip_sets) // 2)

    def table_digest(self) -> bytes:
        """8-byte digest of the VIP table (ids and addresses, in order), sent in STATE."""
        h = hashlib.blake2b(digest_size=8)
        for vip_set in self.vip_sets:
            h.update(repr((vip_set.set_id, vip_set.addresses)).encode())
        return h.digest()


# ---------------------------------------------------------------------------------------------
# inputs: views


class ViewKind(Enum):
    REGULAR = "regular"
    TRANSITIONAL = "transitional"


class Cause(Enum):
    """Why a regular view changed (Spread's CAUSED_BY_* bits)."""

    JOIN = 0x100
    LEAVE = 0x200
    DISCONNECT = 0x400
    NETWORK = 0x800


@dataclass(frozen=True, slots=True, kw_only=True)
class View:
    """A Spread membership message for one group, as the client library reports it.

    ``members``: private group names in Spread's order (identical at every member).
    ``view_id``: the group id (three int32). ``cause``: None for a transitional view.
    ``vs_sets``: the virtual-synchrony sets (members that came together from one view).
    """

    group: str
    kind: ViewKind
    view_id: ViewId
    members: tuple[str, ...]
    cause: Cause | None = None
    vs_sets: tuple[tuple[str, ...], ...] = ()

    @property
    def is_merge(self) -> bool:
        return self.cause is Cause.NETWORK and len(self.vs_sets) > 1


# ---------------------------------------------------------------------------------------------
# outputs: actions


class Service(IntEnum):
    """Spread service bits used by wackamole."""

    RELIABLE = 0x02
    AGREED = 0x10
    SAFE = 0x20


class Reason(Enum):
    """Why an address set is acquired or released (for logs and hooks)."""

    STARTUP = "startup"  # release of leftovers before the first connect (set may be absent)
    ALLOCATE = "allocate"  # claimed after a view change or maturity
    PREFERENCE = "preference"  # moved to / away from a member that prefers it
    CONFLICT = "conflict"  # lost a duplicate claim after a merge
    BALANCE = "balance"  # moved by a BALANCE round
    UNHEALTHY = "unhealthy"  # health gate closed
    DISCONNECTED = "disconnected"  # Spread session lost
    SHUTDOWN = "shutdown"


@dataclass(frozen=True, slots=True)
class ConnectSpread:
    """Open a session to the configured Spread daemon with group membership messages on.

    Answer with ``connected(private_name, now)`` or ``disconnected(now)``.
    """


@dataclass(frozen=True, slots=True)
class JoinGroup:
    """Join the group; a failure means the session is unusable: report ``disconnected``."""

    group: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Multicast:
    """Multicast ``payload`` to ``group``; ``mess_type`` is the original's message code."""

    group: str
    service: Service
    mess_type: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class Acquire:
    """Plumb every address of the set (an address already present counts as done)."""

    set_id: str
    addresses: tuple[str, ...]
    reason: Reason


@dataclass(frozen=True, slots=True)
class Release:
    """Remove every address of the set and cancel any announcement still pending for it.

    With reason STARTUP the set may not be present: remove leftovers if any.
    """

    set_id: str
    addresses: tuple[str, ...]
    reason: Reason


@dataclass(frozen=True, slots=True)
class Announce:
    """Send gratuitous ARP for the set's addresses to the configured Notify targets."""

    set_id: str
    addresses: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SampleArpCache:
    """Read the local ARP table and pass it to ``share_arp_cache`` (upstream: every view)."""


@dataclass(frozen=True, slots=True)
class ArpCacheLearned:
    """ARP entries a member shared: merge them into the cluster-wide cache (Notify arp-cache)."""

    sender: str
    entries: tuple[ArpEntry, ...]


Action = (
    ConnectSpread
    | JoinGroup
    | Multicast
    | Acquire
    | Release
    | Announce
    | SampleArpCache
    | ArpCacheLearned
)


# ---------------------------------------------------------------------------------------------
# the pure allocation and balancing functions


@dataclass(frozen=True, slots=True)
class Slot:
    """One entry of the agreed table: who owns a set, at which priority."""

    owner: str | None
    priority: Priority


UNOWNED = Slot(None, Priority.UNCLAIMED)


@dataclass(frozen=True, slots=True)
class Allocation:
    slots: Mapping[str, Slot]  # every set id, config order
    contested: frozenset[str]  # sets claimed by more than one eligible member


def allocate(
    set_ids: Sequence[str],
    members: Sequence[str],
    eligible: Collection[str],
    claims: Mapping[str, Sequence[tuple[str, Priority]]],
    preferrers: Mapping[str, Sequence[str]],
) -> Allocation:
    """The agreed table after a state exchange (upstream Handle_state + Priority_claim +
    Claim_unclaimed, spec §2.5, §2.7).

    ``members``: the view in Spread's order; ``claims[s]``: (member, priority) of each member
    holding ``s``, in agreed STATE delivery order; ``preferrers[s]``: members preferring ``s``,
    in the same order. Only eligible members count. Per set in config order: a set preferred by
    an eligible member goes to a preferring holder if there is one, else to the first
    preferrer; otherwise to the first claimant at the highest priority; otherwise (second pass,
    config order) to the eligible member holding the fewest sets, ties to the lowest index.
    """
    fit = frozenset(eligible).intersection(members)
    slots: dict[str, Slot] = {}
    contested: list[str] = []
    for set_id in set_ids:
        claimants = [(m, p) for m, p in claims.get(set_id, ()) if m in fit]
        if len({m for m, _ in claimants}) > 1:
            contested.append(set_id)
        fans = [m for m in preferrers.get(set_id, ()) if m in fit]
        if fans:
            holders = [m for m, _ in claimants if m in fans]
            slots[set_id] = Slot(holders[0] if holders else fans[0], Priority.PREFER_CLAIMED)
        elif claimants:
            top = max(p for _, p in claimants)
            winner = next(m for m, p in claimants if p == top)
            slots[set_id] = Slot(winner, Priority.CLAIMED)
        else:
            slots[set_id] = UNOWNED
    order = [m for m in members if m in fit]
    if order:
        counts = _counts(order, slots.values())
        for set_id in set_ids:
            if slots[set_id].owner is None:
                least = min(order, key=counts.__getitem__)  # first minimum: lowest index
                counts[least] += 1
                slots[set_id] = Slot(least, Priority.CLAIMED)
    return Allocation(slots, frozenset(contested))


def plan_balance(
    set_ids: Sequence[str],
    members: Sequence[str],
    eligible: Collection[str],
    slots: Mapping[str, Slot],
    cap: int | None,
) -> tuple[Move, ...]:
    """One balancing round (upstream Balance(), spec §2.8): up to ``cap`` moves (None: until
    balanced), each from the most loaded eligible member that holds a movable (not preferred)
    set and exceeds the least loaded by 2 or more, to the least loaded; ties go to the lowest
    index; the set moved is the donor's first movable one in config order.
    """
    order = [m for m in members if m in frozenset(eligible)]
    if len(order) < 2:
        return ()
    rank = {m: i for i, m in enumerate(order)}
    movable: dict[str, str] = {}  # set id -> owner, config order: sets balancing may move
    for set_id in set_ids:
        slot = slots[set_id]
        if slot.owner in rank and slot.priority is not Priority.PREFER_CLAIMED:
            assert slot.owner is not None
            movable[set_id] = slot.owner
    counts = _counts(order, slots.values())
    moves: list[Move] = []
    for _ in range(len(set_ids) if cap is None else cap):
        least = min(order, key=counts.__getitem__)  # first minimum: lowest index
        donors = {m for m in movable.values() if counts[m] >= counts[least] + 2}
        if not donors:
            break
        donor = max(sorted(donors, key=rank.__getitem__), key=counts.__getitem__)
        set_id = next(s for s, m in movable.items() if m == donor)
        moves.append(Move(set_id, donor, least))
        del movable[set_id]  # a set moves at most once per round
        counts[donor] -= 1
        counts[least] += 1
    return tuple(moves)


def _counts(order: Sequence[str], slots: Iterable[Slot]) -> dict[str, int]:
    counts = dict.fromkeys(order, 0)
    for slot in slots:
        if slot.owner in counts:
            counts[slot.owner] += 1
    return counts


# ---------------------------------------------------------------------------------------------
# the state machine


class State(Enum):
    IDLE = "idle"
    CONNECTING = "connecting"
    DISCONNECTED = "disconnected"
    BOOT = "boot"
    GATHER = "gather"
    RUN = "run"
    STOPPED = "stopped"


class Input(Enum):
    START = "start"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    MEMBERSHIP = "membership"
    MESSAGE = "message"
    TIMER = "timer"
    SET_HEALTHY = "set_healthy"
    SHARE_ARP_CACHE = "share_arp_cache"
    SHUTDOWN = "shutdown"


_ANY_TIME = frozenset({Input.TIMER, Input.SET_HEALTHY, Input.SHARE_ARP_CACHE, Input.SHUTDOWN})
_IN_SESSION = _ANY_TIME | {Input.DISCONNECTED, Input.MEMBERSHIP, Input.MESSAGE}

ALLOWED_INPUTS: Mapping[State, frozenset[Input]] = {
    State.IDLE: _ANY_TIME | {Input.START},
    State.CONNECTING: _ANY_TIME | {Input.CONNECTED, Input.DISCONNECTED},
    State.DISCONNECTED: _ANY_TIME,
    State.BOOT: _IN_SESSION,
    State.GATHER: _IN_SESSION,
    State.RUN: _IN_SESSION,
    State.STOPPED: _ANY_TIME,
}
"""Every (state, input) pair not listed raises LocalProtocolError."""


@dataclass(frozen=True, slots=True, kw_only=True)
class _Peer:
    """What a member's STATE (and later HEALTH) told everyone in the current view."""

    label: str
    mature: bool
    eligible: bool
    claims: tuple[Claim, ...]
    prefer: frozenset[str]


_EMPTY_PEER = _Peer(label="", mature=False, eligible=False, claims=(), prefer=frozenset())


@dataclass(frozen=True, slots=True)
class SetStatus:
    """One row of ``Balancer.ownership()`` (what wackatrl's GET_STATE reports)."""

    set_id: str
    addresses: tuple[str, ...]
    owner: str | None
    owner_label: str
    priority: Priority


class Balancer:
    """One wackamole member's balancer (see the module docstring)."""

    def __init__(self, settings: BalancerSettings, *, log: Log | None = None) -> None:
        self._settings = settings
        self._log: Log = log if log is not None else logging.getLogger(__name__)
        self._sets = {s.set_id: s for s in settings.vip_sets}
        self._set_ids = tuple(self._sets)
        self._my_prefer = frozenset(settings.prefer_set_ids())
        self._digest = settings.table_digest()
        self._cap = settings.balance_cap()
        self._actions: list[Action] = []
        self.counters: Counter[str] = Counter()
        self._state = State.IDLE
        self._me: str | None = None
        self._mature = False
        self._healthy = True
        self._held: set[str] = set()
        self._view: View | None = None
        self._in_transition = False
        self._peers: dict[str, _Peer] = {}  # STATE senders of this view, in delivery order
        self._awaited: set[str] = set()  # members whose STATE is still awaited
        self._slots: dict[str, Slot] = dict.fromkeys(self._set_ids, UNOWNED)
        self._maturing_due = False  # Mature timer fired before the first view
        self._retry_at: float | None = None
        self._mature_at: float | None = None
        self._balance_at: float | None = None
        self._balance_in_flight = False  # leader: our BALANCE not yet delivered back
        self._balance_deferred = False  # leader: a round fell due while one was in flight

    # ----- read-only views -------------------------------------------------------------------

    @property
    def state(self) -> State:
        return self._state

    @property
    def mature(self) -> bool:
        return self._mature

    @property
    def healthy(self) -> bool:
        return self._healthy

    @property
    def private_name(self) -> str | None:
        return self._me

    @property
    def view(self) -> View | None:
        """The last regular view (None when not connected or before the first one)."""
        return self._view

    @property
    def held(self) -> tuple[str, ...]:
        """Set ids this member holds (asked to acquire and not yet to release), config order."""
        return tuple(s for s in self._set_ids if s in self._held)

    def owners(self) -> dict[str, str | None]:
        """The agreed table: set id -> owner's private name (all None outside RUN)."""
        return {s: slot.owner for s, slot in self._slots.items()}

    def ownership(self) -> tuple[SetStatus, ...]:
        """The agreed table with addresses, owner labels and priorities, config order."""
        rows = []
        for set_id, slot in self._slots.items():
            label = ""
            if slot.owner is not None:
                label = self._peers.get(slot.owner, _EMPTY_PEER).label
            rows.append(
                SetStatus(set_id, self._sets[set_id].addresses, slot.owner, label, slot.priority)
            )
        return tuple(rows)

    def next_deadline(self) -> float | None:
        times = [t for t in (self._retry_at, self._mature_at, self._balance_at) if t is not None]
        return min(times, default=None)

    def drain_actions(self) -> list[Action]:
        actions, self._actions = self._actions, []
        return actions

    # ----- inputs ----------------------------------------------------------------------------

    def start(self, now: float) -> None:
        """Remove any configured address left over from an earlier run, then connect."""
        self._check(Input.START)
        for set_id in self._set_ids:
            self._emit_release(set_id, Reason.STARTUP)
        self._connect()

    def connected(self, private_name: str, now: float) -> None:
        self._check(Input.CONNECTED)
        assert not self._held, "a member holds nothing while not connected"
        self._me = private_name
        self._state = State.BOOT
        self._mature = False
        self._maturing_due = False
        self._mature_at = now + self._settings.mature_s
        self._actions.append(JoinGroup(self._settings.group))
        self._log.info("connected to Spread as %s; joining %s", private_name, self._settings.group)

    def disconnected(self, now: float) -> None:
        """The session failed. Connected: release everything and reconnect at once (upstream
        Spread_reconnect). Connecting: try again after SpreadRetryInterval."""
        self._check(Input.DISCONNECTED)
        if self._state is State.CONNECTING:
            self._state = State.DISCONNECTED
            self._retry_at = now + self._settings.spread_retry_s
            self._log.info("Spread connect failed; retry in %ss", self._settings.spread_retry_s)
            return
        self._log.warning("lost the Spread session; releasing all addresses")
        self._release_all(Reason.DISCONNECTED)
        self._reset_session()
        self._connect()

    def membership(self, view: View, now: float) -> None:
        self._check(Input.MEMBERSHIP)
        if view.group != self._settings.group:
            raise LocalProtocolError(f"membership for group {view.group!r}, we joined another")
        if self._me not in view.members:
            raise LocalProtocolError(f"membership {view.view_id} does not list us ({self._me})")
        if view.kind is ViewKind.TRANSITIONAL:
            self.counters["transitional_views"] += 1
            self._in_transition = True
            return
        self.counters["regular_views"] += 1
        self._log.info(
            "view %s (%s): %d members, %s",
            view.view_id,
            view.cause.name if view.cause else "-",
            len(view.members),
            "leader" if view.members[0] == self._me else "member",
        )
        self._view = view
        self._in_transition = False
        self._peers = {}
        self._awaited = set(view.members)
        self._slots = dict.fromkeys(self._set_ids, UNOWNED)
        self._balance_at = None
        self._balance_in_flight = False
        self._balance_deferred = False
        self._state = State.GATHER
        self._multicast(
            StateMsg(
                view_id=view.view_id,
                label=self._settings.label,
                mature=self._mature,
                eligible=self._healthy,
                claims=tuple(
                    Claim(s, self._claim_priority(s)) for s in self._set_ids if s in self._held
                ),
                prefer=tuple(s for s in self._set_ids if s in self._my_prefer),
                table_digest=self._digest,
            )
        )
        if self._maturing_due:
            self._maturing_due = False
            self._multicast(MaturingMsg(view.view_id))
        self._actions.append(SampleArpCache())

    def message(self, sender: str, payload: bytes, now: float) -> None:
        self._check(Input.MESSAGE)
        view = self._view
        if view is None:
            self.counters["messages_before_view"] += 1
            return
        if sender not in view.members:
            self.counters["messages_from_non_members"] += 1
            return
        try:
            msg = decode(payload)
        except MalformedPacket as exc:
            self._on_malformed(sender, exc, now)
            return
        match msg:
            case StateMsg():
                self._on_state(sender, msg, now)
            case MaturingMsg():
                self._on_maturing(now)
            case BalanceMsg():
                self._on_balance(sender, msg, now)
            case HealthMsg():
                self._on_health(sender, msg, now)
            case ArpCacheMsg():
                self._actions.append(ArpCacheLearned(sender, msg.entries))

    def timer(self, now: float) -> None:
        self._check(Input.TIMER)
        if self._retry_at is not None and now >= self._retry_at:
            self._retry_at = None
            if self._state is State.DISCONNECTED:
                self._connect()
        if self._mature_at is not None and now >= self._mature_at:
            self._mature_at = None
            if not self._mature:
                if self._view is None:
                    self._maturing_due = True
                else:
                    self._multicast(MaturingMsg(self._view.view_id))
        if self._balance_at is not None and now >= self._balance_at:
            self._balance_at = None
            self._balance_round(now)

    def set_healthy(self, healthy: bool, now: float) -> None:
        """Health gate: unhealthy means hold nothing and tell the group we are not eligible."""
        self._check(Input.SET_HEALTHY)
        if healthy == self._healthy:
            return
        self._healthy = healthy
        self._log.warning("health gate %s", "open" if healthy else "closed: releasing all")
        if not healthy:
            self._release_all(Reason.UNHEALTHY)
        if self._state in (State.BOOT, State.GATHER, State.RUN) and self._view is not None:
            self._multicast(HealthMsg(self._view.view_id, healthy))

    def share_arp_cache(self, entries: Sequence[ArpEntry], now: float) -> None:
        """Multicast a local ARP sample (RELIABLE, as upstream); dropped when not in a view."""
        self._check(Input.SHARE_ARP_CACHE)
        if self._view is None or self._state not in (State.BOOT, State.GATHER, State.RUN):
            self.counters["arp_samples_not_sent"] += 1
            return
        if len(entries) > ARP_ENTRIES_MAX:
            self.counters["arp_entries_truncated"] += len(entries) - ARP_ENTRIES_MAX
        self._multicast(ArpCacheMsg(tuple(entries[:ARP_ENTRIES_MAX])), Service.RELIABLE)

    def shutdown(self, now: float) -> None:
        """Release everything (upstream's signal path) and stop; the adapter closes Spread."""
        self._check(Input.SHUTDOWN)
        if self._state is State.STOPPED:
            return
        self._release_all(Reason.SHUTDOWN)
        self._reset_session()
        self._retry_at = None
        self._state = State.STOPPED

    # ----- message handlers ------------------------------------------------------------------

    def _on_state(self, sender: str, msg: StateMsg, now: float) -> None:
        assert self._view is not None
        if msg.view_id != self._view.view_id:
            self.counters["stale_states"] += 1
            return
        if self._state is not State.GATHER or sender not in self._awaited:
            self.counters["duplicate_states"] += 1
            return
        if msg.table_digest != self._digest:
            self.counters["table_mismatches"] += 1
            self._log.warning("%s has a different VIP table (digest differs)", sender)
        claims = []
        for claim in msg.claims:
            if claim.set_id in self._sets:
                claims.append(claim)
            else:
                self.counters["unknown_sets"] += 1
        prefer = frozenset(s for s in msg.prefer if s in self._sets)
        self._record_state(
            sender,
            _Peer(
                label=msg.label,
                mature=msg.mature,
                eligible=msg.eligible,
                claims=tuple(claims),
                prefer=prefer,
            ),
            now,
        )

    def _record_state(self, sender: str, peer: _Peer, now: float) -> None:
        self._peers[sender] = peer
        self._awaited.discard(sender)
        if not self._awaited:
            self._finish_exchange(now)

    def _finish_exchange(self, now: float) -> None:
        """Every STATE of the view is in: agree on maturity, then allocate (or wait in BOOT)."""
        assert self._view is not None
        if not self._mature and any(p.mature for p in self._peers.values()):
            self._mature = True
            self._mature_at = None
        if not self._mature:
            assert not self._held, "an immature member holds nothing"
            self._state = State.BOOT
            return
        claims: dict[str, list[tuple[str, Priority]]] = {}
        for name, peer in self._peers.items():
            for claim in peer.claims:
                claims.setdefault(claim.set_id, []).append((name, claim.priority))
        announce = set(self._held) if self._view.is_merge else set()
        self._allocate(claims, Reason.ALLOCATE, announce, now)

    def _allocate(
        self,
        claims: Mapping[str, Sequence[tuple[str, Priority]]],
        reason: Reason,
        announce: set[str],
        now: float,
    ) -> None:
        """Compute the agreed table, apply it to our addresses, enter RUN."""
        assert self._view is not None
        preferrers: dict[str, list[str]] = {}
        for name, peer in self._peers.items():
            for set_id in self._set_ids:
                if set_id in peer.prefer:
                    preferrers.setdefault(set_id, []).append(name)
        result = allocate(self._set_ids, self._view.members, self._eligible(), claims, preferrers)
        self._slots = dict(result.slots)
        reasons = {}
        for set_id, slot in self._slots.items():
            if set_id in result.contested:
                reasons[set_id] = Reason.CONFLICT
            elif slot.priority is Priority.PREFER_CLAIMED:
                reasons[set_id] = Reason.PREFERENCE
        self._apply(reason, reasons, announce | set(result.contested))
        if self._state is not State.RUN:
            self._state = State.RUN
            self._log.info("RUN: holding %s", ", ".join(self.held) or "nothing")
        self._arm_balance(now, allocation=True)

    def _on_maturing(self, now: float) -> None:
        if self._mature:
            return
        self._mature = True
        self._mature_at = None
        self._maturing_due = False
        self._log.info("mature")
        if self._state is State.BOOT:
            self._allocate({}, Reason.ALLOCATE, set(), now)  # BOOT: nobody holds anything
        # in GATHER the allocation happens when the last STATE arrives

    def _on_balance(self, sender: str, msg: BalanceMsg, now: float) -> None:
        assert self._view is not None
        if sender == self._me:
            self._balance_in_flight = False
        if self._state is not State.RUN or msg.view_id != self._view.view_id:
            self.counters["stale_balances"] += 1
            return
        if sender != self._view.members[0]:
            self.counters["balances_from_non_leader"] += 1
            return
        eligible = self._eligible()
        for move in msg.moves:
            slot = self._slots.get(move.set_id)
            if (
                slot is None
                or slot.owner != move.from_member
                or slot.priority is Priority.PREFER_CLAIMED
                or move.to_member == move.from_member
                or move.to_member not in eligible
            ):
                self.counters["balance_moves_skipped"] += 1
                continue
            self._slots[move.set_id] = Slot(move.to_member, Priority.CLAIMED)
        self._apply(Reason.BALANCE, {}, set())
        if sender == self._me and (self._balance_deferred or self._cap is None):
            self._balance_deferred = False
            self._balance_round(now)  # with all: until a round finds nothing to move

    def _on_health(self, sender: str, msg: HealthMsg, now: float) -> None:
        assert self._view is not None
        if msg.view_id != self._view.view_id:
            self.counters["stale_health"] += 1
            return
        peer = self._peers.get(sender)
        if peer is None:  # its STATE of this view always comes first (sender FIFO)
            self.counters["health_before_state"] += 1
            return
        self._peers[sender] = replace(peer, eligible=msg.eligible)
        self._log.info("%s is %s", sender, "eligible" if msg.eligible else "not eligible")
        if self._state is State.RUN:
            claims = {
                s: [(slot.owner, slot.priority)]
                for s, slot in self._slots.items()
                if slot.owner is not None
            }
            reason = Reason.PREFERENCE if msg.eligible else Reason.ALLOCATE
            self._allocate(claims, reason, set(), now)

    def _on_malformed(self, sender: str, exc: MalformedPacket, now: float) -> None:
        self.counters["malformed_messages"] += 1
        count = self.counters["malformed_messages"]
        if count <= MALFORMED_WARNINGS_MAX or count % MALFORMED_WARN_EVERY == 0:
            self._log.warning("dropped malformed message %d from %s: %s", count, sender, exc)
        if self._state is State.GATHER and sender in self._awaited:
            self.counters["states_replaced_by_empty"] += 1
            self._record_state(sender, _EMPTY_PEER, now)

    # ----- balancing -------------------------------------------------------------------------

    def _arm_balance(self, now: float, *, allocation: bool) -> None:
        """Leader only. With a cap: a round every Interval, the period restarting at each view
        change (as upstream). With all: one complete round right after each (re)allocation."""
        assert self._view is not None
        if self._view.members[0] != self._me or self._cap == 0:
            self._balance_at = None
        elif self._cap is None:
            self._balance_at = now if allocation else None
        elif self._balance_at is None:
            self._balance_at = now + self._settings.balance_interval_s

    def _balance_round(self, now: float) -> None:
        """Leader: plan moves on the agreed table and multicast them. One BALANCE at most is in
        flight, so every round is planned on a table that includes the previous round."""
        if self._state is not State.RUN or self._view is None or self._in_transition:
            return  # a new regular view re-arms it
        if self._balance_in_flight:
            self._balance_deferred = True
            return
        moves = plan_balance(
            self._set_ids, self._view.members, self._eligible(), self._slots, self._cap
        )
        if moves:
            self.counters["balance_rounds"] += 1
            self._balance_in_flight = True
            self._multicast(BalanceMsg(self._view.view_id, moves))
        self._arm_balance(now, allocation=False)

    # ----- helpers ---------------------------------------------------------------------------

    def _check(self, what: Input) -> None:
        if what not in ALLOWED_INPUTS[self._state]:
            raise LocalProtocolError(f"{what.value} is not allowed in state {self._state.value}")

    def _eligible(self) -> list[str]:
        assert self._view is not None
        return [m for m in self._view.members if self._peers.get(m, _EMPTY_PEER).eligible]

    def _claim_priority(self, set_id: str) -> Priority:
        return Priority.PREFER_CLAIMED if set_id in self._my_prefer else Priority.CLAIMED

    def _apply(self, reason: Reason, reasons: Mapping[str, Reason], announce: set[str]) -> None:
        """Make our addresses match the agreed table: release first, then acquire; announce
        what we acquire and the kept sets named in ``announce``. Unhealthy: hold nothing."""
        mine = {s for s, slot in self._slots.items() if slot.owner == self._me}
        wanted = mine if self._healthy else set()
        for set_id in self._set_ids:
            if set_id in self._held and set_id not in wanted:
                self._emit_release(set_id, reasons.get(set_id, reason))
                self._held.discard(set_id)
        for set_id in self._set_ids:
            if set_id not in wanted:
                continue
            addresses = self._sets[set_id].addresses
            if set_id not in self._held:
                self._held.add(set_id)
                self._actions.append(Acquire(set_id, addresses, reasons.get(set_id, reason)))
                self._actions.append(Announce(set_id, addresses))
                self.counters["acquisitions"] += 1
            elif set_id in announce:
                self._actions.append(Announce(set_id, addresses))
                self.counters["reannouncements"] += 1

    def _release_all(self, reason: Reason) -> None:
        for set_id in self._set_ids:
            if set_id in self._held:
                self._emit_release(set_id, reason)
        self._held.clear()

    def _emit_release(self, set_id: str, reason: Reason) -> None:
        self._actions.append(Release(set_id, self._sets[set_id].addresses, reason))
        if reason is not Reason.STARTUP:
            self.counters["releases"] += 1

    def _reset_session(self) -> None:
        self._me = None
        self._view = None
        self._in_transition = False
        self._peers = {}
        self._awaited = set()
        self._slots = dict.fromkeys(self._set_ids, UNOWNED)
        self._mature = False
        self._maturing_due = False
        self._mature_at = None
        self._balance_at = None
        self._balance_in_flight = False
        self._balance_deferred = False

    def _connect(self) -> None:
        self._state = State.CONNECTING
        self._actions.append(ConnectSpread())

    def _multicast(self, msg: Message, service: Service = Service.AGREED) -> None:
        code = {
            StateMsg: MessageCode.STATE,
            MaturingMsg: MessageCode.MATURING,
            BalanceMsg: MessageCode.BALANCE,
            HealthMsg: MessageCode.HEALTH,
            ArpCacheMsg: MessageCode.ARPCACHE,
        }[type(msg)]
        self._actions.append(
            Multicast(
                group=self._settings.group,
                service=service,
                mess_type=int(code),
                payload=encode(msg),
            )
        )

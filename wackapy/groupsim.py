"""Deterministic harness: N wackapy balancers over an idealised Spread group service.

Everything runs on a virtual clock from one ``random.Random(seed)``; a seed replays exactly
(same code, same Python minor version): ``python -m wackapy.groupsim --seed 17``.

The group service is perfect, as Spread promises its clients (shared/spec/spread-daemon.md §3,
§6): one member per daemon; multicasts are delivered in one agreed order to every member of
the sender's current view (the sender included), a few milliseconds later. At a membership
change in a component each member gets, in extended-virtual-synchrony order: the old view's
pending messages up to the first hole (a message from a member now elsewhere may be missing,
identically for the whole component), the transitional view (only when members were lost
through the network), the old view's remaining messages from members still together, and the
new regular view (members in daemon order, Spread's cause and vs sets). A random suffix of a
sender's pending messages is instead sequenced in its new view, as when a client sends before
it has read the new membership: they arrive there, with a stale view id, before anything sent
in the new view.

Faults (``Fault``): a process crash (peers see CAUSED_BY_DISCONNECT) or a host crash (daemon
lost: transitional + CAUSED_BY_NETWORK); its addresses vanish. A restart (a new incarnation:
clean-up, connect, join). A partition of the daemons into components, each with its own views,
messages never crossing, and a heal (a merge, no transitional view). The loss of one member's
Spread daemon for a while (the member sees ``disconnected`` and retries every
SpreadRetryInterval). A health-gate change. ``run(seed, members, sets, faults=<int>)`` draws
that many faults from the seed (a swarm: the kind and its victims are drawn when the fault is
due), then quiesces (heal, restart the crashed, all healthy) and leaves a quiet tail.

Checkers. The harness tracks which member holds which set from Acquire/Release (a crash wipes
the victim's). At every step: a member that is disconnected or unhealthy holds nothing; no
Acquire of a held set, no Release of an unheld one; an Announce only for a held set (a released
address is never announced); and, once no view or health change happened for
``SETTLE_SHORT_S``, no set is held by two members of one component. Whenever the cluster has
been quiet long enough (every connected member older than Mature, and no change for Mature
+ enough balance rounds), every component with a healthy member holds every set exactly once
and only on healthy members, all its members agree on the table, the sets are spread evenly
(max - min <= 1 among healthy members) when nobody prefers anything, and a set some healthy
member prefers is held by one of its preferrers.
"""

from __future__ import annotations

import argparse
import hashlib
import heapq
import itertools
import logging
import math
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from spreadpy.errors import SpreadError
from wackapy.balance import (
    Acquire,
    Action,
    Announce,
    ArpCacheLearned,
    Balancer,
    BalancerSettings,
    Cause,
    ConnectSpread,
    JoinGroup,
    Multicast,
    Reason,
    Release,
    SampleArpCache,
    View,
    ViewKind,
    VipSet,
)
from wackapy.statemsg import ArpEntry, ViewId

CONNECT_DELAY_S = 0.001  # time for a connect attempt to succeed or fail
SETTLE_SHORT_S = 0.5  # after a view change: every state exchange is done by then
CHECK_EVERY_S = 0.25  # period of the full (quiet-cluster) check
STEPS_MAX = 2_000_000  # bound on one run's steps: a livelocked core is a found bug
VIOLATIONS_MAX = 50  # a run stops collecting after this many
JOURNAL_LINES_MAX = 200_000
HOLE_ODDS = 0.5  # per message from a member now elsewhere: the flush stops there
LATE_ODDS = 0.3  # per sender at a view change: a suffix of its pending messages goes late


@dataclass(frozen=True, slots=True)
class MemberSpec:
    """One simulated member: its name (also its host), Prefer entries and label."""

    name: str
    prefer: tuple[str, ...] = ()
    label: str = ""


# ----- faults --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Crash:
    at_s: float
    member: str
    host: bool = False  # True: the host (daemon too) dies; False: only the wackamole process


@dataclass(frozen=True, slots=True)
class Restart:
    at_s: float
    member: str


@dataclass(frozen=True, slots=True)
class Partition:
    at_s: float
    groups: tuple[tuple[str, ...], ...]  # member names; unlisted members end up alone


@dataclass(frozen=True, slots=True)
class Heal:
    at_s: float


@dataclass(frozen=True, slots=True)
class SpreadLoss:
    at_s: float
    member: str
    down_s: float


@dataclass(frozen=True, slots=True)
class Health:
    at_s: float
    member: str
    healthy: bool


Fault = Crash | Restart | Partition | Heal | SpreadLoss | Health


@dataclass(frozen=True, slots=True)
class Violation:
    t: float
    kind: str
    detail: str

    def __str__(self) -> str:
        return f"t={self.t:.3f} {self.kind}: {self.detail}"


@dataclass(frozen=True, slots=True)
class Result:
    seed: int
    violations: tuple[Violation, ...]
    counts: Mapping[str, int]
    digest: str  # sha256 of the journal: equal digests, equal runs
    journal: tuple[str, ...]
    args: tuple[str, ...] = ()  # command-line arguments that replay the run (run() sets them)

    @property
    def ok(self) -> bool:
        return not self.violations

    @property
    def replay(self) -> str:
        return " ".join(["python -m wackapy.groupsim", *(self.args or ("--seed", str(self.seed)))])


# ----- the harness ---------------------------------------------------------------------------


@dataclass(slots=True)
class _Member:
    """Harness-side record of one member (mutable bookkeeping, not a value)."""

    name: str
    index: int
    settings: BalancerSettings
    balancer: Balancer | None = None
    incarnation: int = 0
    epoch: int = 0  # Spread session counter: stale connect/join events are ignored
    process_up: bool = False
    daemon_up: bool = True
    connected: bool = False
    joined: bool = False
    healthy: bool = True
    private: str = ""
    view: View | None = None
    connected_at: float = 0.0
    held: set[str] = field(default_factory=set)

    @property
    def in_group(self) -> bool:
        return self.process_up and self.daemon_up and self.connected and self.joined


@dataclass(frozen=True, slots=True)
class _Msg:
    seq: int
    gid: ViewId
    sender: str
    payload: bytes


class GroupSim:
    """N balancers on a virtual clock; drive it with ``schedule`` and ``run_until``."""

    def __init__(
        self,
        seed: int,
        members: int | Sequence[MemberSpec] = 3,
        sets: int | Sequence[VipSet] = 6,
        *,
        mature_s: float = 2.0,
        balance_interval_s: float = 1.0,
        acquisitions_per_round: int | None = 1,
        spread_retry_s: float = 1.0,
        latency_s: tuple[float, float] = (0.001, 0.005),
        start_spread_s: float = 0.0,
        group: str = "wack",
        autostart: bool = True,
    ) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        specs = (
            [MemberSpec(f"n{i + 1}", label=f"10.0.0.{i + 10}") for i in range(members)]
            if isinstance(members, int)
            else list(members)
        )
        vip_sets = (
            tuple(VipSet(f"s{k + 1}", (f"192.168.1.{k + 20}",)) for k in range(sets))
            if isinstance(sets, int)
            else tuple(sets)
        )
        self.set_ids = tuple(s.set_id for s in vip_sets)
        self.members = [
            _Member(
                spec.name,
                i,
                BalancerSettings(
                    group=group,
                    vip_sets=vip_sets,
                    prefer=spec.prefer,
                    mature_s=mature_s,
                    balance_interval_s=balance_interval_s,
                    acquisitions_per_round=acquisitions_per_round,
                    spread_retry_s=spread_retry_s,
                    label=spec.label,
                ),
            )
            for i, spec in enumerate(specs)
        ]
        self._by_name = {m.name: m for m in self.members}
        self._prefer = {m.name: frozenset(m.settings.prefer_set_ids()) for m in self.members}
        self.latency_s = latency_s
        self.now = 0.0
        self.components: list[frozenset[int]] = [frozenset(range(len(self.members)))]
        self.violations: list[Violation] = []
        self.counts: Counter[str] = Counter()
        self.journal: list[str] = []
        self.actions: list[tuple[float, str, Action]] = []  # every action, for scenario tests
        self.last_change = 0.0
        self._events: list[tuple[float, int, str, object]] = []
        self._seq = 0
        self._pending: dict[int, _Msg] = {}
        self._last_delivery: dict[ViewId, float] = {}
        self._views_made = 0
        self._reported: set[tuple[str, str]] = set()
        cap = self.members[0].settings.balance_cap() if self.members else 0
        rounds = 0 if not cap else math.ceil(len(vip_sets) / cap) + 1
        self._balancing = cap != 0 or len(vip_sets) <= 1  # AcquisitionsPerRound 0: no balance
        self.mature_s = mature_s
        self.settle_s = SETTLE_SHORT_S + (rounds + 1) * balance_interval_s + 1.0
        self._push(CHECK_EVERY_S, "check", None)
        if autostart:
            for m in self.members:
                self.schedule(Restart(self.rng.uniform(0.0, start_spread_s), m.name))

    # ----- public driving API ----------------------------------------------------------------

    def schedule(self, fault: Fault) -> None:
        self._push(fault.at_s, "fault", fault)

    def run_until(self, t_end: float) -> None:
        steps = 0
        while not self._stopped():
            t_event = self._events[0][0] if self._events else math.inf
            t_timer, who = math.inf, None
            for m in self.members:
                deadline = m.balancer.next_deadline() if m.balancer is not None else None
                if deadline is not None and deadline < t_timer:
                    t_timer, who = deadline, m
            t = min(t_event, t_timer)
            if t > t_end:
                break
            self.now = max(self.now, t)
            try:
                if t_event <= t_timer:
                    _, _, kind, data = heapq.heappop(self._events)
                    self._handle(kind, data)
                else:
                    assert who is not None and who.balancer is not None
                    who.balancer.timer(self.now)
                    self._drain(who)
                    after = who.balancer.next_deadline()
                    if after is not None and after <= self.now:
                        self.report("timer", f"{who.name}: deadline {after} not consumed")
                        break
            except (AssertionError, SpreadError) as exc:  # a core's assert: a found bug
                self.report("exception", f"{type(exc).__name__}: {exc}")
                break
            self._check_step()
            steps += 1
            if steps > STEPS_MAX:
                self.report("livelock", f"more than {STEPS_MAX} steps")
                break
        self.now = max(self.now, t_end)

    def holders(self) -> dict[str, tuple[str, ...]]:
        """Set id -> names of the members physically holding it (harness view)."""
        return {s: tuple(m.name for m in self.members if s in m.held) for s in self.set_ids}

    def held_by(self, name: str) -> tuple[str, ...]:
        member = self._by_name[name]
        return tuple(s for s in self.set_ids if s in member.held)

    def balancer(self, name: str) -> Balancer | None:
        return self._by_name[name].balancer

    def private_name(self, name: str) -> str:
        return self._by_name[name].private

    def result(self) -> Result:
        counts = Counter(self.counts)
        for m in self.members:
            if m.balancer is not None:
                counts.update({f"core.{k}": v for k, v in m.balancer.counters.items()})
        digest = hashlib.sha256("\n".join(self.journal).encode()).hexdigest()
        return Result(self.seed, tuple(self.violations), dict(counts), digest, tuple(self.journal))

    # ----- events ----------------------------------------------------------------------------

    def _push(self, at_s: float, kind: str, data: object) -> None:
        self._seq += 1
        heapq.heappush(self._events, (at_s, self._seq, kind, data))

    def _handle(self, kind: str, data: object) -> None:
        match kind, data:
            case "fault", (Crash() | Restart() | Partition() | Heal() | SpreadLoss() | Health()):
                self._apply_fault(data)
            case "connect", (int() as index, int() as incarnation):
                self._on_connect(self.members[index], incarnation)
            case "join", (int() as index, int() as epoch):
                member = self.members[index]
                if member.connected and member.epoch == epoch:
                    member.joined = True
                    self._log(member.name, "joined")
                    self._regroup(Cause.JOIN)
            case "deliver", int() as seq:
                self._deliver(seq)
            case "daemon_up", int() as index:
                self.members[index].daemon_up = True
                self._log(self.members[index].name, "daemon up")
            case "arp", (int() as index, int() as epoch):
                member = self.members[index]
                if member.connected and member.epoch == epoch and member.balancer is not None:
                    entry = ArpEntry(f"192.0.2.{index + 1}", bytes((2, 0, 0, 0, 0, index + 1)))
                    member.balancer.share_arp_cache([entry], self.now)
                    self._drain(member)
            case "check", None:
                self._check_quiet()
                self._push(self.now + CHECK_EVERY_S, "check", None)
            case "random_fault", None:
                self._random_fault()
            case _:
                raise AssertionError(f"unknown event {kind} {data!r}")

    def _on_connect(self, member: _Member, incarnation: int) -> None:
        if member.incarnation != incarnation or member.balancer is None:
            return
        if not member.daemon_up:
            self._log(member.name, "connect failed")
            member.balancer.disconnected(self.now)
            self._drain(member)
            return
        member.epoch += 1
        member.connected = True
        member.connected_at = self.now
        member.private = f"#w{member.name}i{incarnation}#d{member.index + 1}"
        self._log(member.name, f"connected as {member.private}")
        member.balancer.connected(member.private, self.now)
        self._drain(member)

    # ----- faults ----------------------------------------------------------------------------

    def _apply_fault(self, fault: Fault) -> None:
        self.counts["faults"] += 1
        self._log("-", f"fault {fault}")
        match fault:
            case Crash(member=name, host=host):
                self._crash(self._by_name[name], host)
            case Restart(member=name):
                self._restart(self._by_name[name])
            case Partition(groups=groups):
                index = {m.name: m.index for m in self.members}
                comps = [frozenset(index[n] for n in g) for g in groups if g]
                placed = frozenset().union(*comps) if comps else frozenset()
                comps += [frozenset({m.index}) for m in self.members if m.index not in placed]
                self.components = comps
                self._regroup(Cause.NETWORK)
            case Heal():
                self.components = [frozenset(range(len(self.members)))]
                self._regroup(Cause.NETWORK)
            case SpreadLoss(member=name, down_s=down_s):
                member = self._by_name[name]
                if not member.daemon_up:
                    self.counts["faults_skipped"] += 1
                    return
                member.daemon_up = False
                self._push(self.now + down_s, "daemon_up", member.index)
                if member.connected:
                    self._disconnect(member)
                    assert member.balancer is not None
                    member.balancer.disconnected(self.now)
                    self._drain(member)
                self._regroup(Cause.NETWORK)
            case Health(member=name, healthy=healthy):
                member = self._by_name[name]
                member.healthy = healthy
                self.last_change = self.now
                if member.balancer is not None:
                    member.balancer.set_healthy(healthy, self.now)
                    self._drain(member)

    def _crash(self, member: _Member, host: bool) -> None:
        if not member.process_up:
            self.counts["faults_skipped"] += 1
            return
        was_in = member.in_group
        member.process_up = False
        member.balancer = None
        if member.held:
            self._log(member.name, f"addresses vanish: {sorted(member.held)}")
        member.held.clear()
        self._disconnect(member)
        if host and member.daemon_up:
            member.daemon_up = False
        self.last_change = self.now
        if was_in:
            self._regroup(Cause.NETWORK if host else Cause.DISCONNECT, departed=member.private)

    def _restart(self, member: _Member) -> None:
        if member.process_up:
            self.counts["faults_skipped"] += 1
            return
        member.process_up = True
        member.daemon_up = True
        member.incarnation += 1
        member.balancer = Balancer(member.settings)
        self.last_change = self.now
        if not member.healthy:
            member.balancer.set_healthy(False, self.now)
        member.balancer.start(self.now)
        self._drain(member)

    def _disconnect(self, member: _Member) -> None:
        member.connected = False
        member.joined = False
        member.view = None
        member.epoch += 1

    def schedule_random_faults(self, count: int, t_from: float, t_until: float) -> float:
        """Plan ``count`` random faults in [t_from, t_until]; returns the last one's time."""
        t = t_from
        mean_gap = max(0.2, 0.6 * self.settle_s)
        for _ in range(count):
            t += self.rng.expovariate(1.0 / mean_gap)
            if t > t_until:
                break
            self._push(t, "random_fault", None)
        return t

    def quiesce(self, at_s: float) -> None:
        """Heal, restart every crashed member, make everyone healthy (liveness phase)."""
        self.schedule(Heal(at_s))
        for m in self.members:
            self.schedule(Restart(at_s, m.name))
            self.schedule(Health(at_s, m.name, True))

    def _random_fault(self) -> None:
        rng = self.rng
        at = self.now
        victim = self.members[rng.randrange(len(self.members))]
        if not victim.process_up:
            self._apply_fault(Restart(at, victim.name))
            return
        roll = rng.random()
        if roll < 0.15:
            fault: Fault = Crash(at, victim.name, host=False)
        elif roll < 0.25:
            fault = Crash(at, victim.name, host=True)
        elif roll < 0.4:
            fault = SpreadLoss(at, victim.name, down_s=rng.uniform(0.1, 3.0))
        elif roll < 0.6:
            fault = Health(at, victim.name, not victim.healthy)
        elif roll < 0.8 or len(self.components) == 1:
            names = [m.name for m in self.members]
            rng.shuffle(names)
            cuts = sorted(rng.sample(range(1, len(names)), min(len(names) - 1, rng.randint(1, 2))))
            bounds = [0, *cuts, len(names)]
            groups = tuple(tuple(names[a:b]) for a, b in itertools.pairwise(bounds))
            fault = Partition(at, groups)
        else:
            fault = Heal(at)
        self._apply_fault(fault)

    # ----- the group service -----------------------------------------------------------------

    def _groups(self) -> list[list[_Member]]:
        groups = []
        for comp in self.components:
            group = [m for m in self.members if m.index in comp and m.in_group]
            if group:
                groups.append(group)
        return groups

    def _regroup(self, cause: Cause, departed: str | None = None) -> None:
        """Give every component whose group membership changed its new views (EVS order).

        Each old view's pending messages go, per member: those before the first hole, the
        transitional view (members lost through the network only), those after the hole from
        senders still together, then the regular view. A random suffix of a sender's pending
        messages is instead sequenced in its new view (the sender had not yet seen the change),
        arriving there with a stale view id before anything sent in the new view.
        """
        changed = []
        for group in self._groups():
            names = tuple(m.private for m in group)
            if any(m.view is None or m.view.members != names for m in group):
                changed.append(group)
        if not changed and departed is None:
            return
        self.last_change = self.now
        old_gids = {m.view.view_id for g in changed for m in g if m.view is not None}
        old_msgs = sorted(
            (msg for msg in self._pending.values() if msg.gid in old_gids), key=lambda x: x.seq
        )
        for msg in old_msgs:
            del self._pending[msg.seq]
        views = [(group, self._new_view(group, cause, departed)) for group in changed]
        late: dict[int, ViewId] = {}
        for group, view in views:
            for m in group:
                mine = [msg for msg in old_msgs if msg.sender == m.private]
                if mine and self.rng.random() < LATE_ODDS:
                    for msg in mine[self.rng.randrange(len(mine)) :]:
                        late[msg.seq] = view.view_id
        for msg in old_msgs:
            if msg.seq in late:  # queued first: before anything sent in the new view
                self.counts["late_messages"] += 1
                self._enqueue(late[msg.seq], msg.sender, msg.payload)
        for group, view in views:
            self._install(group, view, [msg for msg in old_msgs if msg.seq not in late])

    def _new_view(self, group: list[_Member], cause: Cause, departed: str | None) -> View:
        self._views_made += 1
        if cause is Cause.JOIN:
            vs_sets: tuple[tuple[str, ...], ...] = (
                tuple(m.private for m in group if m.view is None),
            )
        elif cause is Cause.NETWORK:
            by_old: dict[object, list[str]] = {}
            for m in group:
                key = m.view.view_id if m.view is not None else m.private
                by_old.setdefault(key, []).append(m.private)
            vs_sets = tuple(tuple(v) for v in by_old.values())
        else:
            vs_sets = ((departed,),) if departed else ()
        self.counts["views"] += 1
        return View(
            group=group[0].settings.group,
            kind=ViewKind.REGULAR,
            view_id=(group[0].index + 1, self._views_made, 1),
            members=tuple(m.private for m in group),
            cause=cause,
            vs_sets=vs_sets,
        )

    def _install(self, group: list[_Member], view: View, old_msgs: list[_Msg]) -> None:
        """Flush the old views' messages to ``group`` and deliver its new views."""
        here = {m.private for m in group}
        self._log("-", f"view {view.view_id} {view.cause} {[m.name for m in group]}")
        plan: dict[ViewId, tuple[list[_Msg], list[_Msg]]] = {}
        for gid in sorted({m.view.view_id for m in group if m.view is not None}):
            before: list[_Msg] = []
            after: list[_Msg] = []
            hole = False
            for msg in old_msgs:
                if msg.gid != gid:
                    continue
                if msg.sender in here:
                    (after if hole else before).append(msg)
                elif view.cause is not Cause.NETWORK or (
                    not hole and self.rng.random() >= HOLE_ODDS
                ):
                    before.append(msg)  # (a crashed process's daemon still orders its sends)
                else:
                    hole = True  # from here on only senders still together
            plan[gid] = (before, after)
        for m in group:
            assert m.balancer is not None
            old = m.view
            before, after = plan[old.view_id] if old is not None else ([], [])
            for msg in before:
                self._deliver_to(m, msg)
            if (
                view.cause is Cause.NETWORK
                and old is not None
                and not set(old.members) <= set(view.members)
            ):
                trans = View(
                    group=view.group,
                    kind=ViewKind.TRANSITIONAL,
                    view_id=old.view_id,
                    members=tuple(p for p in old.members if p in view.members),
                )
                m.balancer.membership(trans, self.now)
                self._drain(m)
            for msg in after:
                self._deliver_to(m, msg)
            m.view = view
            m.balancer.membership(view, self.now)
            self._drain(m)

    def _send(self, member: _Member, action: Multicast) -> None:
        if member.view is None:
            self.counts["multicasts_outside_view"] += 1
            return
        self.counts["multicasts"] += 1
        self._enqueue(member.view.view_id, member.private, action.payload)

    def _enqueue(self, gid: ViewId, sender: str, payload: bytes) -> None:
        """Sequence a message in view ``gid``: after everything already queued there."""
        at = max(self.now + self.rng.uniform(*self.latency_s), self._last_delivery.get(gid, 0.0))
        self._last_delivery[gid] = at
        self._seq += 1
        self._pending[self._seq] = _Msg(self._seq, gid, sender, payload)
        self._push(at, "deliver", self._seq)

    def _deliver(self, seq: int) -> None:
        msg = self._pending.pop(seq, None)
        if msg is None:
            return  # flushed at a view change
        for m in self.members:
            if m.view is not None and m.view.view_id == msg.gid:
                self._deliver_to(m, msg)

    def _deliver_to(self, member: _Member, msg: _Msg) -> None:
        assert member.balancer is not None
        self.counts["deliveries"] += 1
        member.balancer.message(msg.sender, msg.payload, self.now)
        self._drain(member)

    # ----- actions ---------------------------------------------------------------------------

    def _drain(self, member: _Member) -> None:
        assert member.balancer is not None
        for action in member.balancer.drain_actions():
            self.actions.append((self.now, member.name, action))
            match action:
                case ConnectSpread():
                    self._push(
                        self.now + CONNECT_DELAY_S, "connect", (member.index, member.incarnation)
                    )
                case JoinGroup():
                    at = self.now + self.rng.uniform(*self.latency_s)
                    self._push(at, "join", (member.index, member.epoch))
                case Multicast():
                    self._send(member, action)
                case Acquire(set_id=set_id, reason=reason):
                    self.counts["acquisitions"] += 1
                    self._log(member.name, f"acquire {set_id} ({reason.value})")
                    if set_id in member.held:
                        self.report("double-acquire", f"{member.name} acquires held {set_id}")
                    if not member.healthy or not member.in_group:
                        self.report(
                            "bad-acquire",
                            f"{member.name} acquires {set_id} while "
                            f"healthy={member.healthy} in_group={member.in_group}",
                        )
                    member.held.add(set_id)
                case Release(set_id=set_id, reason=reason):
                    if reason is not Reason.STARTUP:
                        self.counts["releases"] += 1
                        self.counts[f"releases.{reason.value}"] += 1
                        self._log(member.name, f"release {set_id} ({reason.value})")
                        if set_id not in member.held:
                            self.report("bad-release", f"{member.name} releases {set_id}")
                    member.held.discard(set_id)
                case Announce(set_id=set_id):
                    self.counts["announcements"] += 1
                    if set_id not in member.held:
                        self.report("stale-announce", f"{member.name} announces {set_id}")
                case SampleArpCache():
                    self._push(self.now, "arp", (member.index, member.epoch))
                case ArpCacheLearned():
                    self.counts["arp_learned"] += 1

    # ----- checkers --------------------------------------------------------------------------

    def _check_step(self) -> None:
        for m in self.members:
            if m.held and not m.connected:
                self.report("held-while-disconnected", f"{m.name} holds {sorted(m.held)}")
            if m.held and not m.healthy:
                self.report("held-while-unhealthy", f"{m.name} holds {sorted(m.held)}")
        if self.now - self.last_change < SETTLE_SHORT_S:
            return
        for group in self._groups():
            for set_id in self.set_ids:
                holders = [m.name for m in group if set_id in m.held]
                if len(holders) > 1:
                    self.report("two-holders", f"{set_id} held by {holders}")

    def quiet(self) -> bool:
        """True when the full check applies (see the module docstring)."""
        if self.now - self.last_change < self.settle_s:
            return False
        return all(
            self.now - m.connected_at >= self.mature_s + SETTLE_SHORT_S
            for m in self.members
            if m.in_group
        )

    def _check_quiet(self) -> None:
        if not self.quiet():
            return
        self.counts["quiet_checks"] += 1
        for group in self._groups():
            healthy = [m for m in group if m.healthy]
            if not healthy:
                continue
            for set_id in self.set_ids:
                holders = [m.name for m in group if set_id in m.held]
                if len(holders) != 1:
                    self.report("not-held-once", f"{set_id} held by {holders}")
                fans = [m.name for m in healthy if set_id in self._prefer[m.name]]
                if fans and holders and holders[0] not in fans:
                    self.report("prefer", f"{set_id} held by {holders[0]}, preferred by {fans}")
            tables = {tuple(m.balancer.owners().items()) for m in group if m.balancer is not None}
            if len(tables) > 1:
                self.report("tables-differ", f"{[m.name for m in group]}")
            if self._balancing and not any(self._prefer[m.name] for m in group):
                counts = [len(m.held) for m in healthy]
                if max(counts) - min(counts) > 1:
                    detail = {m.name: len(m.held) for m in healthy}
                    self.report("uneven", f"{detail}")

    def report(self, kind: str, detail: str) -> None:
        if (kind, detail) in self._reported or len(self.violations) >= VIOLATIONS_MAX:
            return
        self._reported.add((kind, detail))
        self.violations.append(Violation(self.now, kind, detail))
        self._log("!", f"VIOLATION {kind}: {detail}")

    def _stopped(self) -> bool:
        return len(self.violations) >= VIOLATIONS_MAX

    def _log(self, who: str, text: str) -> None:
        if len(self.journal) < JOURNAL_LINES_MAX:
            self.journal.append(f"{self.now:9.4f} {who:>4} {text}")


def run(
    seed: int,
    members: int | Sequence[MemberSpec] = 3,
    sets: int | Sequence[VipSet] = 6,
    faults: int | Sequence[Fault] = 10,
    duration_s: float = 60.0,
    *,
    mature_s: float = 2.0,
    balance_interval_s: float = 1.0,
    acquisitions_per_round: int | None = 1,
    spread_retry_s: float = 1.0,
) -> Result:
    """One seeded run. ``faults``: a number of random faults, or a script.

    With a number, faults fall between Mature and the start of the quiet tail; then the run
    quiesces (heal, restart, healthy) and stays quiet long enough for the full check.
    """
    sim = GroupSim(
        seed,
        members,
        sets,
        mature_s=mature_s,
        balance_interval_s=balance_interval_s,
        acquisitions_per_round=acquisitions_per_round,
        spread_retry_s=spread_retry_s,
    )
    if isinstance(faults, int):
        tail = sim.settle_s + mature_s + 2 * spread_retry_s + 2.0
        if duration_s <= mature_s + tail:
            raise ValueError(f"duration_s must exceed {mature_s + tail:.1f} s")
        t_quiesce = duration_s - tail
        sim.schedule_random_faults(faults, mature_s, t_quiesce)
        sim.quiesce(t_quiesce)
    else:
        for fault in faults:
            sim.schedule(fault)
    sim.run_until(duration_s)
    if isinstance(faults, int) and not sim.violations and sim.counts["quiet_checks"] == 0:
        sim.report("never-quiet", "the run ended without one full check")
    result = sim.result()
    if isinstance(faults, int) and isinstance(members, int) and isinstance(sets, int):
        aqpr = "all" if acquisitions_per_round is None else str(acquisitions_per_round)
        args = (
            f"--seed {seed} --members {members} --sets {sets} --faults {faults} "
            f"--duration {duration_s:g} --mature {mature_s:g} --interval {balance_interval_s:g} "
            f"--aqpr {aqpr} --retry {spread_retry_s:g}"
        )
        result = replace(result, args=tuple(args.split()))
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Replay one wackapy group simulation.")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--members", type=int, default=3)
    parser.add_argument("--sets", type=int, default=6)
    parser.add_argument("--faults", type=int, default=10)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--mature", type=float, default=2.0, help="Mature, seconds")
    parser.add_argument("--interval", type=float, default=1.0, help="Balance Interval, seconds")
    parser.add_argument("--aqpr", default="1", help="AcquisitionsPerRound: a number or all")
    parser.add_argument("--retry", type=float, default=1.0, help="SpreadRetryInterval, seconds")
    parser.add_argument("--journal", action="store_true", help="print the whole journal")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    result = run(
        args.seed,
        args.members,
        args.sets,
        args.faults,
        args.duration,
        mature_s=args.mature,
        balance_interval_s=args.interval,
        acquisitions_per_round=None if args.aqpr == "all" else int(args.aqpr),
        spread_retry_s=args.retry,
    )
    if args.journal:
        print("\n".join(result.journal))
    for violation in result.violations:
        print(violation)
    print(f"seed {result.seed}: {'ok' if result.ok else 'FAILED'}; digest {result.digest[:16]}")
    print(", ".join(f"{k}={v}" for k, v in sorted(result.counts.items())))
    return 0 if result.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

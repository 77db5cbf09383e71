"""Soak: traffic on all three hosts while daemons are killed and links are cut; then a checker.

    python benchmarks/soak.py --duration 600            # `make soak`
    python benchmarks/soak.py --duration 60             # the CI version
    python benchmarks/soak.py --duration 20 --bed loopback --seed 7

Clients on every host (two per host by default, each its own process) join group `soak` and
multicast numbered messages, AGREED and SAFE mixed, sizes from 16 B to 9 KB (some fragmented),
at a steady rate, writing everything they send and receive to a journal. Meanwhile:
  every --kill-every seconds (20) a random daemon is killed with kill -9 and restarted 0.5-3 s
  later; its clients see the connection close and reconnect as a new incarnation;
  every --cut-every seconds (40, netns bed only) a random host's cable is pulled for 2-6 s
  (its port on the bridge goes down, then up).
Faults stop --settle seconds before the end. Then every link comes back, every daemon runs, and
the soak waits (bounded) for one ring holding every client in `soak`; clients stop sending,
wait for their own last messages, disconnect.

The checker reads the journals: the history as clients saw it, cut into configurations by the
membership messages of `soak` (a regular view, then, after a transitional signal, the messages
of the transitional configuration). Violations:
  duplicate       an incarnation delivered a message twice
  unknown         a delivered message nobody sent (or with another service than sent)
  view members    two incarnations name different members for one view id
  configuration   a message delivered in different views at different incarnations
  order           two incarnations delivered common messages of a view in different orders
  virtual synchrony  incarnations that moved together from view V to the same next view
                  delivered different sets of messages in V
  safe            a SAFE message delivered in the regular part of V was not delivered by a
                  member of V that went on to a next view
  self delivery   a client that ended cleanly did not get back one of its own messages
  liveness        after the faults, no single ring of every client within the bound, or a
                  client that never finished
It prints counts (sent, delivered, kills, partitions, views, violations) and exits 1 on any
violation; the journals are kept under benchmarks/results/soak-<time>/ when there is one.

With wackapy (on the netns bed, where VIPs are real addresses): wackapy runs beside every
daemon with three VIP sets and lives through its daemon's kills. Before each fault, if nothing
has changed for VIP_STABLE_S and one ring holds every daemon, no VIP may be on two hosts; at the
end every VIP must be on exactly one (`vip` violations).

Hook: `SoakHook` objects get called at start, before each fault, after each change (fault,
restart, link restored) and once quiet; quiet() returns the violations they found.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import itertools
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final, Protocol

REPO: Final = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.testbed import (
    BedError,
    Ring,
    RingConfig,
    git_commit,
    open_bed,
    source_digest,
    terminate_on_sigterm,
    vip_owners,
    wackapy_argv,
    wackapy_conf,
)
from spreadpy import client

GROUP: Final = "soak"
SOAK_MESS_TYPE: Final = 0x534B  # "SK"
SIZES: Final = (16, 64, 200, 1000, 1400, 3000, 9000)
SIZE_WEIGHTS: Final = (20, 20, 20, 15, 10, 10, 5)
WINDOW: Final = 300  # own messages in flight before a client waits
INCARNATIONS_MAX: Final = 9999  # private names are <tag>i<n>, at most 10 characters
CONNECT_RETRY_S: Final = 0.1
JOIN_TIMEOUT_S: Final = 10.0
DRAIN_TIMEOUT_S: Final = 15.0
QUIET_TIMEOUT_S: Final = 60.0
VIPS: Final = ("198.18.0.201", "198.18.0.202", "198.18.0.203")  # one VIP set each
VIP_GROUP: Final = "soak-vip"
# Membership unchanged this long counts as stable: wackapy has reconnected (every 1 s), matured
# (1 s) and balanced (every 1 s) well within it.
VIP_STABLE_S: Final = 8.0
VIP_SETTLE_TIMEOUT_S: Final = 20.0  # at the end: every VIP on exactly one host by then
CLIENT_EXIT_TIMEOUT_S: Final = 30.0
VIOLATIONS_SHOWN: Final = 25
RESULTS_DIR: Final = REPO / "benchmarks" / "results"
_ID: Final = struct.Struct("!H")


# ====================================================================================== client


class _Incarnation:
    """One connection of a soak client: what its two threads share."""

    def __init__(self, mailbox: client.Mailbox) -> None:
        self.mailbox = mailbox
        self.joined = threading.Event()
        self.closed = threading.Event()
        self.cond = threading.Condition()
        self.own_sent = 0
        self.own_delivered = 0


class Journal:
    """JSON lines, written by two threads."""

    def __init__(self, path: Path) -> None:
        self._file: IO[str] = path.open("a", buffering=1 << 16)
        self._lock = threading.Lock()

    def log(self, **record: Any) -> None:  # Any: JSON values
        line = json.dumps(record, separators=(",", ":")) + "\n"
        with self._lock:
            self._file.write(line)

    def close(self) -> None:
        with self._lock:
            self._file.close()


def client_main(args: argparse.Namespace) -> int:
    """A soak client: reconnects across daemon restarts until its stdin closes."""
    journal = Journal(Path(args.journal))
    stop = threading.Event()
    threading.Thread(target=_wait_stdin_eof, args=(stop,), daemon=True).start()
    rng = random.Random(args.seed)
    counter = 0
    try:
        for inc in range(INCARNATIONS_MAX):
            if stop.is_set():
                break
            try:
                mailbox = client.connect(args.daemon, f"{args.tag}i{inc}", timeout=2.0)
            except client.SpreadClientError:
                stop.wait(CONNECT_RETRY_S)
                continue
            journal.log(k="inc", n=inc, pg=mailbox.private_group, t=time.monotonic())
            counter = _run_incarnation(args, mailbox, journal, stop, rng, counter)
    finally:
        journal.close()
    return 0


def _wait_stdin_eof(stop: threading.Event) -> None:
    with contextlib.suppress(OSError):
        while os.read(sys.stdin.fileno(), 4096):
            pass
    stop.set()


def _run_incarnation(
    args: argparse.Namespace,
    mailbox: client.Mailbox,
    journal: Journal,
    stop: threading.Event,
    rng: random.Random,
    counter: int,
) -> int:
    inc = _Incarnation(mailbox)
    receiver = threading.Thread(target=_receive, args=(inc, journal), daemon=True)
    receiver.start()
    try:
        mailbox.join(GROUP)
        if _wait_event(inc.joined, inc.closed, JOIN_TIMEOUT_S):
            counter = _send(args, inc, journal, stop, rng, counter)
        if not inc.closed.is_set():
            _drain(inc)
            journal.log(k="end", why="stop", t=time.monotonic())
    except client.SpreadClientError:
        pass  # the daemon went away: the receiver logs the end
    finally:
        mailbox.disconnect()
        receiver.join(5.0)
    return counter


def _wait_event(wanted: threading.Event, broken: threading.Event, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not broken.is_set():
        if wanted.wait(0.05):
            return True
    return False


def _send(
    args: argparse.Namespace,
    inc: _Incarnation,
    journal: Journal,
    stop: threading.Event,
    rng: random.Random,
    counter: int,
) -> int:
    interval = 1.0 / args.rate
    next_at = time.monotonic()
    while not stop.is_set() and not inc.closed.is_set():
        with inc.cond:
            if inc.own_sent - inc.own_delivered >= WINDOW:
                inc.cond.wait(0.1)
                continue
        counter += 1
        ident = f"{args.tag}:{counter}"
        safe = rng.random() < 0.5
        size = rng.choices(SIZES, SIZE_WEIGHTS)[0]
        data = _ID.pack(len(ident)) + ident.encode() + bytes(max(0, size - len(ident) - 2))
        journal.log(k="s", i=ident, s="S" if safe else "A")
        try:
            inc.mailbox.multicast(
                client.SAFE_MESS if safe else client.AGREED_MESS, GROUP, data, SOAK_MESS_TYPE
            )
        except client.SpreadClientError:
            journal.log(k="sfail", i=ident)
            break
        with inc.cond:
            inc.own_sent += 1
        next_at += interval
        delay = next_at - time.monotonic()
        if delay > 0:
            stop.wait(delay)
        else:
            next_at = time.monotonic()  # behind (flow control): no burst to catch up
    return counter


def _drain(inc: _Incarnation) -> None:
    """Wait for our own messages to come back (bounded)."""
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    with inc.cond:
        while inc.own_delivered < inc.own_sent and not inc.closed.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            inc.cond.wait(min(remaining, 0.1))


def _receive(inc: _Incarnation, journal: Journal) -> None:
    me = inc.mailbox.private_group
    while True:
        try:
            message = inc.mailbox.receive(timeout=1.0)
        except TimeoutError:
            continue
        except client.IllegalSessionError:
            return  # we disconnected
        except client.SpreadClientError:
            journal.log(k="end", why="closed", t=time.monotonic())
            inc.closed.set()
            with inc.cond:
                inc.cond.notify_all()
            return
        match message:
            case client.RegularMessage(mess_type=mess_type, data=data, sender=sender):
                if mess_type != SOAK_MESS_TYPE:
                    continue
                (length,) = _ID.unpack_from(data)
                ident = data[2 : 2 + length].decode()
                safe = bool(message.service_type & client.SAFE_MESS)
                journal.log(k="d", i=ident, s="S" if safe else "A")
                if sender == me:
                    with inc.cond:
                        inc.own_delivered += 1
                        inc.cond.notify_all()
            case client.MembershipMessage(group=group, group_id=g, members=members, cause=cause):
                if group != GROUP:
                    continue
                view = f"{g.proc_id}.{g.time}.{g.index}"
                journal.log(k="reg", g=view, m=list(members), c=cause.name, t=time.monotonic())
                if me in members:
                    inc.joined.set()
            case client.TransitionalMessage(group=group):
                if group == GROUP:
                    journal.log(k="tr", t=time.monotonic())


# ===================================================================================== checker


@dataclass(slots=True, kw_only=True)
class Segment:
    """One regular view of `soak` at one incarnation, and what was delivered in it."""

    view: str
    members: tuple[str, ...]
    regular: list[str] = field(default_factory=list)  # before the transitional signal
    transitional: list[str] = field(default_factory=list)  # after it
    trans_seen: bool = False
    next_view: str | None = None

    @property
    def delivered(self) -> list[str]:
        return self.regular + self.transitional


@dataclass(slots=True, kw_only=True)
class Incarnation:
    client: str
    name: str  # its private group
    segments: list[Segment] = field(default_factory=list)
    before_view: list[str] = field(default_factory=list)  # deliveries before any view
    sent: dict[str, str] = field(default_factory=dict)  # id -> "A" / "S", multicast returned
    failed: set[str] = field(default_factory=set)
    end: str = "eof"  # "stop", "closed", or "eof" (the journal just ends)


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckReport:
    incarnations: int
    sent: int
    delivered: int
    unique_delivered: int
    views: int
    compared: int  # pairs of incarnations that moved together from one view to the next
    undelivered: int  # sent but delivered nowhere (a killed daemon's client, or a violation)
    violations: tuple[str, ...]


def parse_journal(client_name: str, lines: Iterable[str]) -> list[Incarnation]:
    """One client's journal, cut into incarnations and views."""
    incarnations: list[Incarnation] = []
    current: Incarnation | None = None
    for raw in lines:
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except ValueError:
            break  # a torn last line: the journal ends here
        kind = record["k"]
        if kind == "inc":
            current = Incarnation(client=client_name, name=record["pg"])
            incarnations.append(current)
            continue
        if current is None:
            continue
        segment = current.segments[-1] if current.segments else None
        match kind:
            case "s":
                current.sent[record["i"]] = record["s"]
            case "sfail":
                current.failed.add(record["i"])
            case "d":
                ident = f"{record['i']}/{record['s']}"
                if segment is None:
                    current.before_view.append(ident)
                elif segment.trans_seen:
                    segment.transitional.append(ident)
                else:
                    segment.regular.append(ident)
            case "tr":
                if segment is not None:
                    segment.trans_seen = True
            case "reg":
                if segment is not None:
                    segment.next_view = record["g"]
                current.segments.append(Segment(view=record["g"], members=tuple(record["m"])))
            case "end":
                current.end = record["why"]
    return incarnations


def check(incarnations: Sequence[Incarnation]) -> CheckReport:
    """Every EVS property clients can see, over every client's history."""
    violations: list[str] = []
    sent: dict[str, str] = {}
    for inc in incarnations:
        for ident, svc in inc.sent.items():
            sent[f"{ident}/{svc}"] = inc.name
    by_view: dict[str, list[tuple[Incarnation, Segment]]] = defaultdict(list)
    view_of: dict[str, str] = {}
    delivered = 0
    unique: set[str] = set()
    for inc in incarnations:
        counts = Counter(d for seg in inc.segments for d in seg.delivered)
        counts.update(inc.before_view)
        delivered += sum(counts.values())
        unique.update(counts)
        violations += [
            f"duplicate: {inc.name} delivered {d} {n} times" for d, n in counts.items() if n > 1
        ]
        violations += [
            f"unknown: {inc.name} delivered {d}, never sent so" for d in counts if d not in sent
        ]
        violations += [f"view: {inc.name} delivered {d} before any view" for d in inc.before_view]
        for seg in inc.segments:
            by_view[seg.view].append((inc, seg))
            for d in seg.delivered:
                first = view_of.setdefault(d, seg.view)
                if first != seg.view:
                    violations.append(
                        f"configuration: {d} delivered in view {first}, "
                        f"and in {seg.view} at {inc.name}"
                    )
    compared = 0
    for view, holders in by_view.items():
        found, pairs = _check_view(view, holders)
        violations += found
        compared += pairs
    violations += _check_self_delivery(incarnations)
    return CheckReport(
        incarnations=len(incarnations),
        sent=len(sent),
        delivered=delivered,
        unique_delivered=len(unique),
        views=len(by_view),
        compared=compared,
        undelivered=sum(1 for d in sent if d not in unique),
        violations=tuple(violations),
    )


def _check_view(view: str, holders: list[tuple[Incarnation, Segment]]) -> tuple[list[str], int]:
    """Violations within one view, and how many pairs moved together out of it."""
    out: list[str] = []
    pairs = 0
    members = {seg.members for _, seg in holders}
    if len(members) > 1:
        out.append(f"view members: view {view} has members {sorted(members)}")
    for i, (a, sa) in enumerate(holders):
        pos = {d: k for k, d in enumerate(sa.delivered)}
        for b, sb in holders[i + 1 :]:
            common = [pos[d] for d in sb.delivered if d in pos]
            if any(x > y for x, y in itertools.pairwise(common)):
                out.append(
                    f"order: {a.name} and {b.name} delivered the messages of view {view} "
                    "in different orders"
                )
            if sa.next_view is not None and sa.next_view == sb.next_view:
                pairs += 1
                diff = set(sa.delivered) ^ set(sb.delivered)
                if diff:
                    out.append(
                        f"virtual synchrony: {a.name} and {b.name} moved from {view} to "
                        f"{sa.next_view} but {len(diff)} messages differ (e.g. {sorted(diff)[:3]})"
                    )
    safe_regular = {d for _, seg in holders for d in seg.regular if d.endswith("/S")}
    for inc, seg in holders:
        if seg.next_view is None:
            continue  # it crashed or left inside this view: no obligation
        missing = safe_regular - set(seg.delivered)
        if missing:
            out.append(
                f"safe: {inc.name} went on from view {view} without {len(missing)} SAFE messages "
                f"delivered there by others (e.g. {sorted(missing)[:3]})"
            )
    return out, pairs


def _check_self_delivery(incarnations: Sequence[Incarnation]) -> list[str]:
    out = []
    for inc in incarnations:
        if inc.end != "stop":
            continue
        got = {d for seg in inc.segments for d in seg.delivered}
        missing = [
            f"{i}/{s}" for i, s in inc.sent.items() if f"{i}/{s}" not in got and i not in inc.failed
        ]
        if missing:
            out.append(
                f"self delivery: {inc.name} never got {len(missing)} of its messages "
                f"(e.g. {missing[:3]})"
            )
    return out


def check_journals(paths: Sequence[Path]) -> CheckReport:
    incarnations: list[Incarnation] = []
    for path in sorted(paths):
        with path.open() as f:
            incarnations += parse_journal(path.stem, f)
    report = check(incarnations)
    unfinished = [inc.name for inc in incarnations if inc.end == "eof"]
    if unfinished:
        extra = (f"liveness: {name}'s journal ends without an end (killed?)" for name in unfinished)
        report = CheckReport(**{**_fields(report), "violations": (*report.violations, *extra)})
    return report


def _fields(report: CheckReport) -> dict[str, Any]:  # Any: the dataclass's field values
    return {name: getattr(report, name) for name in CheckReport.__slots__}


# ====================================================================================== driver


class SoakHook(Protocol):
    """Extra checks run beside the soak (VipOwners)."""

    def start(self, ring: Ring) -> None: ...
    def before_fault(self, ring: Ring) -> None: ...
    def after_change(self, ring: Ring, what: str) -> None: ...
    def quiet(self, ring: Ring) -> list[str]: ...  # violations
    def summary(self) -> str: ...


class VipOwners:
    """wackapy beside every daemon; once membership is stable no VIP is on two hosts."""

    def __init__(self) -> None:
        self.processes: list[subprocess.Popen[bytes]] = []
        self.last_change = time.monotonic()
        self.checks = 0
        self.problems: list[str] = []
        self.skipped = ""

    def start(self, ring: Ring) -> None:
        if ring.bed.kind != "netns":
            self.skipped = "VIPs need the netns bed"
            return
        for host in ring.bed.hosts:
            conf = wackapy_conf(ring, host, VIP_GROUP, VIPS)
            with (ring.workdir / f"wackapy-{host.name}.log").open("ab") as log:
                argv = wackapy_argv(conf, f"wk{host.name}")
                self.processes.append(
                    ring.bed.spawn(host, argv, stdout=log, stderr=subprocess.STDOUT)
                )
        self.last_change = time.monotonic()

    def before_fault(self, ring: Ring) -> None:
        stable_s = time.monotonic() - self.last_change
        if self.skipped or stable_s < VIP_STABLE_S or ring.bed.cut_hosts:
            return
        if not ring.ring_formed(ring.names):
            return
        self.checks += 1
        for vip, hosts in vip_owners(ring.bed, VIPS).items():
            if len(hosts) > 1:
                self.problems.append(
                    f"vip: {vip} on {', '.join(hosts)} with membership stable for {stable_s:.0f} s"
                )

    def after_change(self, ring: Ring, what: str) -> None:
        self.last_change = time.monotonic()

    def quiet(self, ring: Ring) -> list[str]:
        if self.skipped:
            return []
        deadline = time.monotonic() + VIP_SETTLE_TIMEOUT_S
        while True:
            owners = vip_owners(ring.bed, VIPS)
            if all(len(hosts) == 1 for hosts in owners.values()):
                break
            if time.monotonic() > deadline:
                self.problems += [
                    f"vip: {vip} on {', '.join(hosts) or 'no host'} at the end, "
                    f"{VIP_SETTLE_TIMEOUT_S:.0f} s after the ring was complete"
                    for vip, hosts in owners.items()
                    if len(hosts) != 1
                ]
                break
            time.sleep(0.2)
        self.checks += 1
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(5)
        return self.problems

    def summary(self) -> str:
        if self.skipped:
            return f"vip checks skipped: {self.skipped}"
        return f"vip checks {self.checks} ({len(VIPS)} VIPs, wackapy beside every daemon)"


@dataclass(frozen=True, slots=True, kw_only=True)
class Fault:
    at_s: float
    kind: str  # "kill" or "cut"
    host: str
    length_s: float  # down time before the restart / the link comes back


def schedule(
    duration_s: float,
    hosts: Sequence[str],
    rng: random.Random,
    *,
    kill_every_s: float,
    cut_every_s: float | None,
    settle_s: float,
) -> list[Fault]:
    """Kills every `kill_every_s` from half of it on; cuts every `cut_every_s` (+0-5 s) from
    its half on; nothing that would still be going on `settle_s` before the end."""
    faults: list[Fault] = []
    last_start = duration_s - settle_s
    t = kill_every_s / 2
    while t + 3.0 <= last_start and len(faults) < 10_000:
        host, down_s = rng.choice(hosts), rng.uniform(0.5, 3.0)
        faults.append(Fault(at_s=t, kind="kill", host=host, length_s=down_s))
        t += kill_every_s
    if cut_every_s:
        t = cut_every_s / 2 + rng.uniform(0, 5)
        while t + 6.0 <= last_start and len(faults) < 20_000:
            host, cut_s = rng.choice(hosts), rng.uniform(2.0, 6.0)
            faults.append(Fault(at_s=t, kind="cut", host=host, length_s=cut_s))
            t += cut_every_s + rng.uniform(0, 5)
    return sorted(faults, key=lambda f: f.at_s)


@dataclass(slots=True)
class Counts:
    kills: int = 0
    restarts: int = 0
    partitions: int = 0


def run_faults(
    ring: Ring,
    faults: Sequence[Fault],
    *,
    hooks: Sequence[SoakHook],
    log: list[str],
    tick: Any = None,  # Any: a callable(seconds) for the progress bar, or None
) -> Counts:
    """Carry out the schedule in time; each fault is undone (restart, link up) after its
    length; whatever is still undone at the end is undone then."""
    bed = ring.bed
    counts = Counts()
    start = time.monotonic()
    todo: list[tuple[float, int, str, str, float]] = [
        (f.at_s, i, f.kind, f.host, f.length_s) for i, f in enumerate(faults)
    ]
    heapq.heapify(todo)
    serial = len(todo)
    for _ in range(4 * len(faults) + 1):
        if not todo:
            break
        at_s, _, action, host, length = todo[0]
        while (wait := start + at_s - time.monotonic()) > 0:
            time.sleep(min(wait, 0.5))
            if tick is not None:
                tick(time.monotonic() - start)
        heapq.heappop(todo)
        serial += 1
        if action in ("kill", "cut"):
            for hook in hooks:
                hook.before_fault(ring)
        match action:
            case "kill":
                if not ring.alive(host):
                    continue
                ring.kill(host)
                counts.kills += 1
                heapq.heappush(todo, (at_s + length, serial, "restart", host, 0.0))
            case "cut":
                if host in bed.cut_hosts:
                    continue
                bed.cut_link(bed.host(host))
                counts.partitions += 1
                heapq.heappush(todo, (at_s + length, serial, "restore", host, 0.0))
            case "restart":
                ring.start(host)
                counts.restarts += 1
            case "restore":
                bed.restore_link(bed.host(host))
        detail = f" for {length:.1f} s" if action in ("kill", "cut") else ""
        log.append(f"{time.monotonic() - start:8.2f} s  {action} {host}{detail}")
        for hook in hooks:
            hook.after_change(ring, f"{action} {host}")
    return counts


def soak_group_complete(ring: Ring, clients: int) -> bool:
    """One ring of every daemon, each of which shows all `clients` in group `soak`."""
    if not ring.ring_formed(ring.names):
        return False
    for name in ring.names:
        status = ring.status(name)
        if status is None or len(status["groups"].get(GROUP, ())) != clients:
            return False
    return True


@dataclass(frozen=True, slots=True, kw_only=True)
class SoakResult:
    bed: str
    seed: int
    duration_s: float
    counts: Counts
    report: CheckReport
    kept: Path | None  # where the evidence of a failed run was copied
    fault_log: tuple[str, ...]
    commit: str
    source_changed: bool  # the code on disk changed during the run: restarts ran other code
    hook_summaries: tuple[str, ...] = ()


def run_soak(args: argparse.Namespace, hooks: Sequence[SoakHook] = ()) -> SoakResult:
    """Set up, run the faults under traffic, quiesce, check."""
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 31)
    digest = source_digest()
    rng = random.Random(seed)
    config = RingConfig(fast=args.timeouts == "fast")
    with terminate_on_sigterm(), open_bed(args.bed) as bed, Ring(bed, config) as ring:
        ring.wait_ring()
        journal_dir = ring.workdir / "journals"
        journal_dir.mkdir()
        clients = [
            _start_client(ring, host.name, j, journal_dir, args.rate, rng.randrange(1 << 31))
            for host in bed.hosts
            for j in range(args.clients_per_host)
        ]
        for hook in hooks:
            hook.start(ring)
        cut_every = args.cut_every if bed.can_cut_links and args.cut_every > 0 else None
        faults = schedule(
            args.duration,
            ring.names,
            rng,
            kill_every_s=args.kill_every,
            cut_every_s=cut_every,
            settle_s=args.settle,
        )
        log: list[str] = []
        bar = Ticker(args.duration, enabled=args.progress)
        started = time.monotonic()
        try:
            counts = run_faults(ring, faults, hooks=hooks, log=log, tick=bar.update)
            while (left := started + args.duration - time.monotonic()) > 0:
                time.sleep(min(left, 0.5))
                bar.update(time.monotonic() - started)
        finally:
            bar.close()
        problems = _quiesce(ring, clients, hooks)
        report = check_journals(sorted(journal_dir.glob("*.jsonl")))
        if problems:
            report = CheckReport(
                **{**_fields(report), "violations": (*report.violations, *problems)}
            )
        kept = None
        if report.violations or args.keep:
            kept = args.out / time.strftime("soak-%Y%m%d-%H%M%S")
            shutil.copytree(journal_dir, kept)
            (kept / "faults.txt").write_text("\n".join(log) + "\n")
            for name in ring.names:
                (kept / f"{name}.log").write_text(ring.log_tail(name, 1 << 24))
        commit, dirty = git_commit()
        return SoakResult(
            bed=bed.kind,
            seed=seed,
            duration_s=args.duration,
            counts=counts,
            report=report,
            kept=kept,
            fault_log=tuple(log),
            commit=commit + (" (dirty)" if dirty else ""),
            source_changed=source_digest() != digest,
            hook_summaries=tuple(hook.summary() for hook in hooks),
        )


def _start_client(
    ring: Ring, host: str, index: int, journal_dir: Path, rate: float, seed: int
) -> subprocess.Popen[bytes]:
    tag = f"{host}{'abcdefgh'[index]}"
    argv = [sys.executable, "-m", "benchmarks.soak", "client", "-s", ring.client_address(host)]
    argv += ["--tag", tag, "--rate", str(rate), "--seed", str(seed)]
    argv += ["--journal", str(journal_dir / f"{tag}.jsonl")]
    return ring.bed.spawn(ring.bed.host(host), argv, stdin=subprocess.PIPE, stdout=None)


def _quiesce(
    ring: Ring, clients: Sequence[subprocess.Popen[bytes]], hooks: Sequence[SoakHook]
) -> list[str]:
    """Faults are over: wait for one ring with every client, stop the clients."""
    problems = []
    deadline = time.monotonic() + QUIET_TIMEOUT_S
    while not soak_group_complete(ring, len(clients)):
        if time.monotonic() > deadline:
            problems.append(
                f"liveness: no ring with all {len(clients)} clients in group {GROUP} "
                f"{QUIET_TIMEOUT_S:.0f} s after the last fault"
            )
            break
        time.sleep(0.1)
    for hook in hooks:
        problems += hook.quiet(ring)
    for process in clients:
        if process.stdin is not None:
            process.stdin.close()
    for process in clients:
        try:
            process.wait(CLIENT_EXIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
            problems.append(f"liveness: a client (pid {process.pid}) did not finish")
    return problems


class Ticker:
    """A progress bar over the soak's seconds (tqdm on a terminal, else nothing)."""

    def __init__(self, total_s: float, enabled: bool) -> None:
        self._bar: Any = None  # Any: tqdm.tqdm, an optional dependency
        self._shown = 0
        if enabled and sys.stderr.isatty():
            with contextlib.suppress(ImportError):
                from tqdm import tqdm  # type: ignore[import-untyped]

                self._bar = tqdm(total=round(total_s), unit="s", file=sys.stderr, leave=False)

    def update(self, elapsed_s: float) -> None:
        if self._bar is not None and int(elapsed_s) > self._shown:
            self._bar.update(int(elapsed_s) - self._shown)
            self._shown = int(elapsed_s)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def render(result: SoakResult) -> str:
    r, c = result.report, result.counts
    lines = [
        f"soak: {result.duration_s:.0f} s on the {result.bed} bed, seed {result.seed}, "
        f"commit {result.commit[:12]}",
        f"  messages sent {r.sent}, deliveries {r.delivered} ({r.unique_delivered} distinct "
        f"messages; {r.undelivered} reached no one, sent just before their daemon was killed)",
        f"  client incarnations {r.incarnations}, views {r.views}, pairs of clients checked "
        f"moving together from one view to the next {r.compared}",
        f"  kills {c.kills}, restarts {c.restarts}, partitions {c.partitions}, "
        f"violations {len(r.violations)}",
        *(f"  {line}" for line in result.hook_summaries),
    ]
    lines += [f"  fault {line.strip()}" for line in result.fault_log]
    lines += [f"  VIOLATION {v}" for v in r.violations[:VIOLATIONS_SHOWN]]
    if len(r.violations) > VIOLATIONS_SHOWN:
        lines.append(f"  ... and {len(r.violations) - VIOLATIONS_SHOWN} more")
    if result.source_changed:
        lines.append(
            "  NOTE the daemons' source changed during the run: restarted daemons and reconnected"
            " clients ran other code than the first ones (a violation may come from that)"
        )
    if result.kept is not None:
        lines.append(f"  journals, fault log and daemon logs kept in {result.kept}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="benchmarks/soak.py", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    c = sub.add_parser("client", help="one soak client (started by the soak itself)")
    c.add_argument("-s", dest="daemon", required=True)
    c.add_argument("--tag", required=True, help="message ids are TAG:N; private names TAGi<n>")
    c.add_argument("--rate", type=float, default=40.0)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--journal", required=True)
    parser.add_argument("--duration", type=float, default=600.0, help="seconds (default 600)")
    parser.add_argument("--bed", choices=("auto", "netns", "loopback"), default="auto")
    parser.add_argument("--timeouts", choices=("fast", "default"), default="fast")
    parser.add_argument("--kill-every", type=float, default=20.0, help="seconds between kills")
    parser.add_argument(
        "--cut-every",
        type=float,
        default=40.0,
        help="about this many seconds between link cuts (0: none)",
    )
    parser.add_argument(
        "--settle", type=float, default=5.0, help="no fault starts this close to the end"
    )
    parser.add_argument("--clients-per-host", type=int, default=2, choices=range(1, 9))
    parser.add_argument("--rate", type=float, default=40.0, help="messages/s per client")
    parser.add_argument("--seed", type=int)
    parser.add_argument(
        "--out", type=Path, default=RESULTS_DIR, help="where a failing run's journals go"
    )
    parser.add_argument("--keep", action="store_true", help="keep the journals even if clean")
    parser.add_argument(
        "--no-vips", action="store_true", help="no wackapy beside the daemons (no vip checks)"
    )
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "client":
        return client_main(args)
    if args.duration < 1 or args.kill_every <= 0:
        raise SystemExit("--duration must be at least 1 s and --kill-every positive")
    try:
        result = run_soak(args, hooks=[] if args.no_vips else [VipOwners()])
    except KeyboardInterrupt:
        print("soak interrupted: the bed was taken down", file=sys.stderr)
        return 130
    except BedError as exc:
        print(f"soak could not run: {exc}", file=sys.stderr)
        return 2
    print(render(result))
    return 1 if result.report.violations else 0


if __name__ == "__main__":
    sys.exit(main())

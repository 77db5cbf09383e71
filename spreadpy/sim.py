"""Deterministic, seeded simulator: N Totem processors over a faulty simulated network.

One seed fully determines a run: the network's delays, losses, duplicates and reorderings, the
workload, the fault schedule and the protocol parameters are all drawn from `random.Random(seed)`
(FoundationDB style: parameters are randomised per seed within their valid ranges). Virtual time
jumps straight to the next packet arrival or timer deadline, so a run costs only CPU.

A run has two phases (TigerBeetle's VOPR shape): a fault phase, where crashes, restarts,
partitions, heals and pauses happen while clients send; then, after a `quiesce` mark, a liveness
phase on a healed network, which must end with one ring of every live processor and every
message of a live sender delivered. The trace (see the ring-core issue for the format) is judged
by `spreadpy.evscheck` on every run.

Command line:
  python -m spreadpy.sim --seeds N [--first-seed S] --nodes K --loss P --dup P --reorder P
                         --faults none|crash|partition|all --messages M --trace-dir DIR
"""

from __future__ import annotations

import argparse
import hashlib
import heapq
import json
import multiprocessing
import os
import platform
import random
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .membership import (
    FAST_TIMEOUTS,
    Deliver,
    PersistRingSeq,
    Processor,
    Received,
    SendPacket,
    Sequenced,
    State,
    TotemConfig,
    ViewChange,
)
from .packets import SERVICE_NAMES, Kind, Service

FAULT_KINDS = ("none", "crash", "partition", "all")
INF = float("inf")


@dataclass(frozen=True, slots=True)
class SimOptions:
    nodes: int = 5
    loss: float = 0.0
    dup: float = 0.0
    reorder: float = 0.0
    faults: str = "none"
    messages: int = 200
    fault_phase_s: float = 12.0
    settle_limit_s: float = 60.0
    event_budget: int = 3_000_000
    profile: str | None = None  # None: drawn per seed; "default" or "fast" to fix it


@dataclass(slots=True)
class SimResult:
    seed: int
    violations: list[str]
    events: list[dict[str, Any]]
    sim_time_s: float
    steps: int
    counters: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.violations


def _name(node: int) -> str:
    return f"n{node}"


def view_name(view: object) -> str:
    """Trace name of a view: "seq.nREP" for a regular one, "OLD>NEW" for a transitional one."""
    match view:
        case (int(seq), int(rep)):
            return f"{seq}.n{rep}"
        case ((int(), int()) as old, (int(), int()) as new):
            return f"{view_name(old)}>{view_name(new)}"
    raise ValueError(f"not a view id: {view!r}")


def payload_for(msg_id: str, size: int) -> bytes:
    """A message body that names itself and carries a CRC, so corruption is visible."""
    head = msg_id.encode() + b"|"
    body = (head * (size // len(head) + 1))[: max(0, size - 4)]
    return body + zlib.crc32(body).to_bytes(4, "big")


class _Node:
    __slots__ = ("alive", "buffered", "incarnation", "paused", "proc")

    def __init__(self) -> None:
        self.proc: Processor | None = None
        self.alive = False
        self.paused = False
        self.incarnation = 0
        self.buffered: list[tuple[bytes, int]] = []


class Simulation:
    """One seeded run. Scripted scenarios drive it with crash(), partition(), run_until()."""

    def __init__(self, seed: int, options: SimOptions, config: TotemConfig | None = None) -> None:
        self.seed = seed
        self.options = options
        self.rng = random.Random(seed)
        self.config = config or self._draw_config()
        self.now = 0.0
        self.events: list[dict[str, Any]] = []
        self.violations: list[str] = []
        self.steps = 0
        self._heap: list[tuple[float, int, str, Any]] = []
        self._counter = 0
        self.nodes = {i: _Node() for i in range(1, options.nodes + 1)}
        self.node_configs: dict[int, TotemConfig] = {}  # per-node overrides, from the next start
        self.persisted: dict[int, int] = {i: 0 for i in self.nodes}
        self.groups: dict[int, int] = {i: 0 for i in self.nodes}  # partition component per node
        self.oneway: set[tuple[int, int]] = set()
        # Extra loss on packets *to* a node: a slow or badly connected receiver.
        self.receive_loss: dict[int, float] = {}
        # Nodes that get no multicast data packets at all, only tokens and membership
        # traffic: a receiver that keeps missing the same messages (pitfall P2).
        self.deaf_to_data: set[int] = set()
        self._tx_free_at: dict[int, float] = {i: 0.0 for i in self.nodes}
        self._sent_count: dict[int, int] = {i: 0 for i in self.nodes}
        self._msg_ids: dict[tuple[int, int], str] = {}  # (node, msg_no) -> trace id
        self._payloads: dict[str, bytes] = {}
        self._sent_by: dict[str, tuple[int, int]] = {}  # id -> (node, incarnation)
        # Link model, drawn once per run.
        self.base_delay_s = self.rng.uniform(20e-6, 300e-6)
        self.jitter_s = self.rng.uniform(5e-6, 100e-6)
        self.bandwidth_bps = self.rng.choice((1e8, 1e9, 1e10)) / 8
        for node in self.nodes:
            self._start(node)

    # ------------------------------------------------------------------ parameters per seed

    def _draw_config(self) -> TotemConfig:
        rng = self.rng
        profile = self.options.profile or rng.choice(("default", "default", "fast"))
        personal = rng.choice((5, 10, 20, 40))
        cfg = TotemConfig(
            window=rng.choice((personal, 80, 160, 400)),
            personal_window=personal,
            accelerated_window=rng.choice((0, 0, min(15, personal - 1))),
            packet_size_max=rng.choice((1472, 1472, 9000)),
            seq_gap_max=rng.choice((100, 1600)),
            rtr_max=rng.choice((16, 256)),
        )
        if profile == "fast":
            cfg = replace(cfg, **FAST_TIMEOUTS)  # type: ignore[arg-type]
        return cfg

    # ------------------------------------------------------------------------- the network

    def _push(self, at: float, kind: str, data: Any) -> None:
        self._counter += 1
        heapq.heappush(self._heap, (at, self._counter, kind, data))

    def connected(self, src: int, dst: int) -> bool:
        return self.groups[src] == self.groups[dst] and (src, dst) not in self.oneway

    def _transmit(self, src: int, dest: int | None, payload: bytes) -> None:
        rng = self.rng
        opts = self.options
        depart = max(self.now, self._tx_free_at[src]) + len(payload) / self.bandwidth_bps
        self._tx_free_at[src] = depart
        targets = [dest] if dest is not None else [n for n in self.nodes if n != src]
        if self.deaf_to_data and payload[0] == Kind.DATA:
            targets = [n for n in targets if n not in self.deaf_to_data]
        for dst in targets:
            if dst == src:
                self._push(depart, "pkt", (dst, payload, src))
                continue
            copies = 2 if rng.random() < opts.dup else 1
            loss = opts.loss + self.receive_loss.get(dst, 0.0)
            for _ in range(copies):
                if rng.random() < loss:
                    continue
                delay = self.base_delay_s + rng.expovariate(1 / self.jitter_s)
                if rng.random() < opts.reorder:
                    delay += rng.uniform(0, 2e-3)
                self._push(depart + delay, "pkt", (dst, payload, src))

    # ------------------------------------------------------------------------ processors

    def _start(self, node: int) -> None:
        n = self.nodes[node]
        n.incarnation += 1
        n.alive = True
        n.paused = False
        n.buffered = []
        ring_seq = self.persisted[node] + 1
        config = self.node_configs.get(node, self.config)
        n.proc = Processor(node, config, ring_seq=ring_seq, now=self.now, trace=True)
        # Message numbers stay unique across incarnations, so trace ids never collide.
        n.proc._next_msg_no = self._sent_count[node] + 1
        self._drain(node)

    def _drain(self, node: int) -> None:
        n = self.nodes[node]
        proc = n.proc
        assert proc is not None
        name = _name(node)
        t = round(self.now, 9)
        events = self.events
        for action in proc.drain_actions():
            match action:
                case SendPacket(dest=dest, payload=payload):
                    self._transmit(node, dest, payload)
                case Deliver():
                    msg_id = self._msg_ids.get((action.originator, action.msg_no))
                    if msg_id is None:
                        self.violations.append(
                            f"EVS-15 integrity: {name} delivered unknown message "
                            f"{action.originator}:{action.msg_no}"
                        )
                        continue
                    if self._payloads[msg_id] != action.data:
                        self.violations.append(
                            f"EVS-15 integrity: {name} delivered {msg_id} with a corrupted body"
                        )
                    if action.originator != node:
                        # As a daemon does when a local client got another daemon's message:
                        # every simulated node stands for a daemon with a client in the group.
                        proc.expect_reply()
                    events.append(
                        {
                            "t": t,
                            "node": name,
                            "ev": "deliver",
                            "id": msg_id,
                            "svc": SERVICE_NAMES[Service(action.service)],
                            "conf": view_name(action.view),
                        }
                    )
                case ViewChange(kind=kind, view=view, members=members):
                    events.append(
                        {
                            "t": t,
                            "node": name,
                            "ev": "conf",
                            "kind": kind,
                            "conf": view_name(view),
                            "members": [_name(m) for m in members],
                        }
                    )
                case PersistRingSeq(ring_seq=ring_seq):
                    self.persisted[node] = max(self.persisted[node], ring_seq)
                case Sequenced(msg_no=msg_no, ring_id=ring_id, seq=seq):
                    events.append(
                        {
                            "t": t,
                            "node": name,
                            "ev": "seq",
                            "id": self._msg_ids[(node, msg_no)],
                            "conf": view_name(ring_id),
                            "seq": seq,
                        }
                    )
                case Received(originator=orig, msg_no=msg_no, ring_id=ring_id, seq=seq):
                    msg_id = self._msg_ids.get((orig, msg_no))
                    if msg_id is not None:
                        events.append(
                            {
                                "t": t,
                                "node": name,
                                "ev": "recv",
                                "id": msg_id,
                                "conf": view_name(ring_id),
                                "seq": seq,
                            }
                        )

    def submit(self, node: int, service: Service, size: int) -> str | None:
        n = self.nodes[node]
        if not n.alive or n.paused or n.proc is None:
            return None
        self._sent_count[node] += 1
        msg_no = self._sent_count[node]
        msg_id = f"{_name(node)}:{msg_no}"
        payload = payload_for(msg_id, size)
        self._msg_ids[(node, msg_no)] = msg_id
        self._payloads[msg_id] = payload
        self._sent_by[msg_id] = (node, n.incarnation)
        self.events.append(
            {
                "t": round(self.now, 9),
                "node": _name(node),
                "ev": "send",
                "id": msg_id,
                "svc": SERVICE_NAMES[service],
                "size": size,
            }
        )
        got = n.proc.submit(payload, service, self.now)
        assert got == msg_no, (got, msg_no)
        self._drain(node)
        return msg_id

    # ----------------------------------------------------------------------------- faults

    def crash(self, node: int) -> None:
        n = self.nodes[node]
        if not n.alive:
            return
        n.alive = False
        n.proc = None
        n.paused = False
        n.buffered = []
        self.events.append({"t": round(self.now, 9), "node": _name(node), "ev": "crash"})

    def restart(self, node: int) -> None:
        if self.nodes[node].alive:
            return
        self.events.append({"t": round(self.now, 9), "node": _name(node), "ev": "restart"})
        self._start(node)

    def partition(
        self, components: list[list[int]], oneway: set[tuple[int, int]] = frozenset()
    ) -> None:  # type: ignore[assignment]
        for index, component in enumerate(components):
            for node in component:
                self.groups[node] = index
        self.oneway = set(oneway)
        event: dict[str, Any] = {
            "t": round(self.now, 9),
            "ev": "partition",
            "groups": [[_name(n) for n in sorted(c)] for c in components],
        }
        if oneway:
            event["oneway"] = [[_name(a), _name(b)] for a, b in sorted(oneway)]
        self.events.append(event)

    def heal(self) -> None:
        for node in self.groups:
            self.groups[node] = 0
        self.oneway = set()
        self.receive_loss = {}
        self.deaf_to_data = set()
        self.events.append({"t": round(self.now, 9), "ev": "heal"})

    def pause(self, node: int) -> None:
        n = self.nodes[node]
        if n.alive and not n.paused:
            n.paused = True
            self.events.append({"t": round(self.now, 9), "node": _name(node), "ev": "pause"})

    def resume(self, node: int) -> None:
        n = self.nodes[node]
        if not (n.alive and n.paused):
            return
        n.paused = False
        self.events.append({"t": round(self.now, 9), "node": _name(node), "ev": "resume"})
        assert n.proc is not None
        # A paused process wakes to a late clock and a full socket buffer (pitfall P3).
        n.proc.handle_timer(self.now)
        self._drain(node)
        for payload, _src in n.buffered:
            if n.proc is None:
                break
            n.proc.receive_packet(payload, self.now)
            self._drain(node)
        n.buffered = []

    # ------------------------------------------------------------------------ main loop

    def _next_timer(self) -> tuple[float, int]:
        best, who = INF, 0
        for node, n in self.nodes.items():
            if n.alive and not n.paused and n.proc is not None:
                d = n.proc.next_deadline()
                if d is not None and d < best:
                    best, who = d, node
        return best, who

    def run_until(
        self, t_end: float, stop: Callable[[], bool] | None = None, check_every_s: float = 0.05
    ) -> bool:
        """Advance virtual time to t_end (or until `stop()` holds). Returns whether it held.

        `stop` is evaluated every `check_every_s` of virtual time; 0 checks after every step.
        """
        check_every = check_every_s
        next_check = self.now + check_every
        while True:
            t_timer, who = self._next_timer()
            t_evt = self._heap[0][0] if self._heap else INF
            t = min(t_timer, t_evt)
            if stop is not None and check_every == 0 and stop():
                return True
            if stop is not None and check_every and t >= next_check:
                if stop():
                    return True
                next_check = max(t, next_check) + check_every
                continue
            if t > t_end:
                self.now = max(self.now, t_end)
                return stop() if stop is not None else True
            self.steps += 1
            if self.steps > self.options.event_budget:
                raise SimLivelock(f"more than {self.options.event_budget} steps by t={t:.3f}s")
            self.now = max(self.now, t)
            if t_timer <= t_evt:
                proc = self.nodes[who].proc
                assert proc is not None
                proc.handle_timer(self.now)
                self._drain(who)
                continue
            _, _, kind, data = heapq.heappop(self._heap)
            if kind == "pkt":
                dst, payload, src = data
                n = self.nodes[dst]
                if not n.alive or n.proc is None or not self.connected(src, dst):
                    continue
                if n.paused:
                    n.buffered.append((payload, src))
                    continue
                n.proc.receive_packet(payload, self.now)
                self._drain(dst)
            elif kind == "call":
                data()

    def at(self, t: float, fn: Callable[[], Any]) -> None:
        self._push(t, "call", fn)

    # ----------------------------------------------------------------------- conditions

    def live_nodes(self) -> list[int]:
        return [i for i, n in self.nodes.items() if n.alive]

    def settled(self) -> bool:
        """One ring of every live processor, nothing pending, everything delivered."""
        live = self.live_nodes()
        if not live:
            return True
        rings = set()
        for node in live:
            n = self.nodes[node]
            proc = n.proc
            if n.paused or proc is None or proc.state is not State.OPERATIONAL:
                return False
            ring = proc.ring
            if proc.pending_count() or ring.delivered < ring.high_seq:
                return False
            if ring.members != tuple(live):
                return False
            rings.add((ring.ring_id, ring.high_seq))
        # One ring, and every member knows the same highest seq: nothing left in flight.
        return len(rings) == 1

    def finish(self, restart: list[int] | None = None, check: bool = True) -> list[str]:
        """End the fault phase: wake, heal, restart, settle, then judge the whole trace.

        Returns (and keeps in self.violations) every violation found, the first one first.
        """
        if not self.violations:
            try:
                for node, n in self.nodes.items():
                    if n.paused:
                        self.resume(node)
                if (
                    any(g != 0 for g in self.groups.values())
                    or self.oneway
                    or self.receive_loss
                    or self.deaf_to_data
                ):
                    self.heal()
                for node in restart or ():
                    self.restart(node)
                self._heap = [e for e in self._heap if e[2] != "call"]
                heapq.heapify(self._heap)
                self.events.append({"t": round(self.now, 9), "ev": "quiesce"})
                limit = self.options.settle_limit_s
                if not self.run_until(self.now + limit, self.settled):
                    self.violations.append(
                        f"EVS-16 liveness: no single settled ring of {self.live_nodes()} "
                        f"within {limit}s after faults stopped"
                    )
                else:
                    # Let the ring run a while, and end on a settled moment: with heavy loss
                    # and the fast profile a token can still be lost now and then, and a run
                    # must not end in the middle of the membership change that follows.
                    self.run_until(self.now + 0.5)
                    if not self.run_until(self.now + limit, self.settled):
                        self.violations.append(
                            f"EVS-16 liveness: the ring of {self.live_nodes()} did not settle "
                            f"again within {limit}s"
                        )
            except SimLivelock as exc:
                self.violations.append(f"livelock: {exc}")
            except AssertionError as exc:
                self.violations.append(f"EVS-17 invariant: {exc}")
        self.events.append({"t": round(self.now, 9), "ev": "end"})
        if check:
            from .evscheck import check_trace

            self.violations.extend(str(v) for v in check_trace(self.events))
        return self.violations

    def counters(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for n in self.nodes.values():
            if n.proc is None:
                continue
            for key in n.proc.counters.__slots__:
                total[key] = total.get(key, 0) + getattr(n.proc.counters, key)
        return total


class SimLivelock(Exception):
    pass


# ------------------------------------------------------------------------------ one seed


def _schedule_workload(sim: Simulation, rng: random.Random, duration_s: float) -> None:
    opts = sim.options
    services = list(Service)
    for _ in range(opts.messages):
        node = rng.randint(1, opts.nodes)
        t = rng.uniform(0.0, duration_s)
        service = rng.choice(services)
        roll = rng.random()
        if roll < 0.02:
            size = rng.randint(20_000, 120_000)
        elif roll < 0.15:
            size = rng.randint(1_500, 10_000)
        else:
            size = rng.randint(8, 1_000)
        sim.at(t, lambda node=node, service=service, size=size: sim.submit(node, service, size))


def _schedule_faults(sim: Simulation, rng: random.Random, duration_s: float) -> None:
    kinds = sim.options.faults
    if kinds == "none":
        return
    nodes = list(sim.nodes)
    allowed = {
        "crash": ("crash", "restart"),
        "partition": ("partition", "heal"),
        "all": ("crash", "restart", "partition", "heal", "pause", "oneway"),
    }[kinds]
    t = rng.uniform(0.2, 2.0)
    while t < duration_s:
        fault = rng.choice(allowed)
        if fault == "crash":
            victim = rng.choice(nodes)
            sim.at(t, lambda v=victim: sim.crash(v))
            if rng.random() < 0.7:
                sim.at(t + rng.uniform(0.05, 4.0), lambda v=victim: sim.restart(v))
        elif fault == "restart":
            victim = rng.choice(nodes)
            sim.at(t, lambda v=victim: sim.restart(v))
        elif fault in ("partition", "oneway"):
            shuffled = nodes[:]
            rng.shuffle(shuffled)
            cuts = sorted(
                rng.sample(range(1, len(nodes)), k=rng.randint(1, min(3, len(nodes) - 1)))
            )
            components = [
                shuffled[a:b] for a, b in zip([0, *cuts], [*cuts, len(nodes)], strict=True)
            ]
            oneway: set[tuple[int, int]] = set()
            if fault == "oneway":
                a, b = rng.sample(nodes, 2)
                oneway.add((a, b))
                components = [nodes[:]] if rng.random() < 0.5 else components
            sim.at(t, lambda c=components, o=oneway: sim.partition(c, o))
            if rng.random() < 0.8:
                sim.at(t + rng.uniform(0.1, 5.0), sim.heal)
        elif fault == "heal":
            sim.at(t, sim.heal)
        elif fault == "pause":
            victim = rng.choice(nodes)
            length = rng.choice((0.05, 0.5, 2.0, 4.0))
            sim.at(t, lambda v=victim: sim.pause(v))
            sim.at(t + length, lambda v=victim: sim.resume(v))
        t += rng.expovariate(1 / 1.5)


def run_seed(seed: int, options: SimOptions, check: bool = True) -> SimResult:
    """Run one seed through the fault phase and the liveness phase, then check the trace."""
    sim = Simulation(seed, options)
    rng = random.Random(seed * 7919 + 17)
    phase = options.fault_phase_s if options.faults != "none" else 3.0
    _schedule_workload(sim, rng, phase)
    _schedule_faults(sim, rng, phase)
    try:
        sim.run_until(phase)
    except SimLivelock as exc:
        sim.violations.append(f"livelock: {exc}")
    except AssertionError as exc:
        sim.violations.append(f"EVS-17 invariant: {exc}")
    # Liveness phase: restart about half of the dead, then heal and settle.
    restart = [node for node, n in sim.nodes.items() if not n.alive and rng.random() < 0.5]
    sim.finish(restart=restart, check=check)
    return SimResult(seed, sim.violations, sim.events, sim.now, sim.steps, sim.counters())


# ---------------------------------------------------------------------------------- CLI


def _worker(args: tuple[int, SimOptions, str | None]) -> tuple[int, list[str], float]:
    seed, options, trace_dir = args
    result = run_seed(seed, options)
    if trace_dir:
        path = Path(trace_dir) / f"seed-{seed}.jsonl"
        with path.open("w") as f:
            for event in result.events:
                f.write(json.dumps(event, separators=(",", ":")) + "\n")
    return seed, result.violations, result.sim_time_s


def trace_digest(events: list[dict[str, Any]]) -> str:
    h = hashlib.sha256()
    for event in events:
        h.update(json.dumps(event, sort_keys=True).encode())
    return h.hexdigest()


def _commit_id() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
            cwd=Path(__file__).parent,
        )
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m spreadpy.sim", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--first-seed", type=int, default=1)
    parser.add_argument("--nodes", type=int, default=5)
    parser.add_argument("--loss", type=float, default=0.0)
    parser.add_argument("--dup", type=float, default=0.0)
    parser.add_argument("--reorder", type=float, default=0.0)
    parser.add_argument("--faults", choices=FAULT_KINDS, default="none")
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--profile", choices=("default", "fast"), default=None)
    parser.add_argument("--trace-dir", default=None)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--nodes-max",
        type=int,
        default=None,
        help="draw the node count per seed from --nodes..--nodes-max",
    )
    args = parser.parse_args(argv)
    if args.trace_dir:
        Path(args.trace_dir).mkdir(parents=True, exist_ok=True)
    print(
        f"spreadpy.sim: commit {_commit_id()}, Python {platform.python_version()}, "
        f"seeds {args.first_seed}..{args.first_seed + args.seeds - 1}",
        flush=True,
    )
    jobs = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        nodes = args.nodes
        if args.nodes_max:
            nodes = random.Random(seed).randint(args.nodes, args.nodes_max)
        options = SimOptions(
            nodes=nodes,
            loss=args.loss,
            dup=args.dup,
            reorder=args.reorder,
            faults=args.faults,
            messages=args.messages,
            profile=args.profile,
        )
        jobs.append((seed, options, args.trace_dir))
    started = time.monotonic()
    passed = failed = 0
    if args.jobs > 1:
        with multiprocessing.Pool(args.jobs) as pool:
            results = pool.imap_unordered(_worker, jobs, chunksize=4)
            for seed, violations, _ in results:
                if violations:
                    failed += 1
                    print(f"seed {seed}: {violations[0]}", flush=True)
                else:
                    passed += 1
    else:
        for job in jobs:
            seed, violations, _ = _worker(job)
            if violations:
                failed += 1
                print(f"seed {seed}: {violations[0]}", flush=True)
            else:
                passed += 1
    elapsed = time.monotonic() - started
    print(f"# {len(jobs)} seeds in {elapsed:.1f}s", file=sys.stderr)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

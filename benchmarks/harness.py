"""The spreadpy benchmarks: throughput, latency, failover, on three hosts.

    python -m benchmarks.harness                  # everything, about 5 minutes on 2 cores
    python -m benchmarks.harness --quick          # seconds: the smoke test's run
    python -m benchmarks.harness --only latency,failover --bed loopback
    python -m benchmarks.harness --jumbo          # + throughput again on an MTU 9000 bed
    PEER=/tmp/spread-peer python -m benchmarks.harness    # side by side with the original

What is measured (benchmarks/README.md says more; shared/spec/totem.md §5 has the published
numbers to compare with):
  throughput  spflooder's shape: one sender on h1 floods a group, clients on h2 and h3 read
              (the sender reads too: it waits for its own messages, at most 200 in flight).
              msgs/s = messages / (first send .. last delivery at the slowest reader).
              100 B, 1000 B, 10000 B; RELIABLE, AGREED and SAFE; then three senders (one per
              host, each also reading all); on the original and on the accelerated ring.
  latency     spping: 48-byte AGREED pings from h1, echoed by `spping --echo` on h3, two
              trips through the ring each; mean, p50, p99. The idle ring's token rotation
              time comes from the representative's `rotations` counter (`spreadpy status`).
  failover    kill -9 one daemon (h3, h1, h2 in turn) and time until the survivors' clients
              hold the new membership (CAUSED_BY_NETWORK); default and fast timeouts.
  vip         with wackapy's daemon: the VIP owner's host dies (daemons killed, cable
              pulled) and a client host pings the VIP until the new owner answers.
`--mtu 9000` runs everything on a bed whose veths and bridge have that MTU (spreadpy's daemons
get RingPacketSize = MTU - 28); `--jumbo` keeps MTU 1500 for every part and measures throughput
once more on a second bed with MTU 9000, built after the first is gone.
With PEER (an install prefix of the original Spread 5.0.1), every part but vip runs on it too,
on the same bed, with every client of both daemons on TCP; its C spflooder and spping, when
installed, run against both daemons; the table ends with spreadpy/original ratios.
Results: a table on stdout, benchmarks/results/bench-<time>.json (machine, parameters, every
figure) and PNG plots beside it when matplotlib is installed (the `bench` extra).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import queue
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

REPO: Final = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.testbed import (
    ETHERNET_MTU,
    JUMBO_MTU,
    PEER_PACKET_SIZE,
    PEER_USER,
    Bed,
    BedError,
    Host,
    PeerInstall,
    Ring,
    RingConfig,
    bed_kind,
    check_mtu,
    find_peer,
    git_commit,
    open_bed,
    packet_size,
    ring_packet_size,
    source_digest,
    terminate_on_sigterm,
    vip_owners,
    wackapy_argv,
    wackapy_conf,
)
from spreadpy.config import DEFAULT_PERSONAL_WINDOW, DEFAULT_WINDOW

RESULTS_DIR: Final = REPO / "benchmarks" / "results"
SIZES: Final = (100, 1000, 10000)
SERVICES: Final = ("reliable", "agreed", "safe")
PARTS: Final = ("throughput", "latency", "failover", "vip")
# Messages per run (with three senders, a third each): about 3 s each on 2 cores.
MESSAGES: Final = MappingProxyType({100: 40000, 1000: 25000, 10000: 6000})
QUICK_MESSAGES: Final = MappingProxyType({100: 600, 1000: 400, 10000: 100})
PING_SIZE: Final = 48  # also the C spping's smallest message (its ping header)
C_PING_PERIOD_MS: Final = 5  # the C spping sends on a timer, not one at a time: every 5 ms
C_PING_GROUP: Final = "bench-spping"
WORKER_TIMEOUT_S: Final = 120.0
VIEW_TIMEOUT_S: Final = 30.0
FLOOD_GROUP: Final = "bench-flood"
FAILOVER_GROUP: Final = "bench-failover"
PING_GROUP: Final = "bench-ping"
VIP_GROUP: Final = "bench-vip"
PROFILE_SECONDS: Final = 5
CPU_SECONDS_MIN: Final = 0.2  # report a daemon's CPU per message only above this much
PROFILE_TOP: Final = 15
OURS: Final = "spreadpy"
PEER: Final = "spread-5.0.1"


class BenchError(RuntimeError):
    """A measurement could not be made (a worker failed, a view never came)."""


# ------------------------------------------------------------------------------ parameters


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """Everything that shapes a run; recorded with the results."""

    quick: bool = False
    parts: tuple[str, ...] = PARTS
    bed: str = "auto"
    transport: str = "broadcast"
    sizes: tuple[int, ...] = SIZES
    services: tuple[str, ...] = SERVICES
    messages: dict[int, int] = field(default_factory=lambda: dict(MESSAGES))
    repeat: int = 3
    accelerated: bool = True  # also measure the accelerated ring
    three_senders: bool = True
    ping_count: int = 1000
    ping_warmup: int = 50
    idle_s: float = 3.0
    failover_runs: int = 5
    failover_timeouts: tuple[str, ...] = ("default", "fast")
    vip_runs: int = 3
    peer: str | None = None
    peer_user: str = PEER_USER
    profile: bool = False
    mtu: int = ETHERNET_MTU  # of the bed every part runs on
    jumbo: bool = False  # throughput once more on a second bed with MTU 9000

    def beds(self) -> list[tuple[int, tuple[str, ...]]]:
        """(MTU, parts) of each bed, in the order they are built (one at a time)."""
        beds = [(self.mtu, self.parts)]
        if self.jumbo and "throughput" in self.parts:
            beds.append((JUMBO_MTU, ("throughput",)))
        return beds

    @classmethod
    def quick_plan(cls, **overrides: Any) -> Plan:  # Any: field values
        base = cls(
            quick=True,
            messages=dict(QUICK_MESSAGES),
            repeat=1,
            services=("reliable",),
            ping_count=50,
            ping_warmup=5,
            idle_s=0.5,
            failover_runs=1,
            failover_timeouts=("fast",),
            vip_runs=1,
        )
        return replace(base, **overrides)


# -------------------------------------------------------------------------------- progress


class Progress:
    """tqdm when it is installed and stderr is a terminal; otherwise one line per step."""

    def __init__(self, total: int, enabled: bool) -> None:
        self._bar: Any = None  # Any: tqdm.tqdm, an optional dependency
        self._done = 0
        self._total = total
        self._enabled = enabled
        if enabled and sys.stderr.isatty():
            with contextlib.suppress(ImportError):
                from tqdm import tqdm  # type: ignore[import-untyped]

                self._bar = tqdm(total=total, unit="step", file=sys.stderr, leave=False)

    def step(self, what: str) -> None:
        self._done += 1
        if self._bar is not None:
            self._bar.set_description(what[:40])
            self._bar.update(1)
        elif self._enabled:
            print(f"[{self._done}/{self._total}] {what}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def count_steps(plan: Plan, systems: int, tools: PeerInstall | None = None) -> int:
    steps = vip = 0
    rings = 2 if plan.accelerated else 1
    for _, parts in plan.beds():
        if "throughput" in parts:
            per_ring = len(plan.sizes) * (len(plan.services) + int(plan.three_senders))
            per_ring = per_ring * plan.repeat
            if tools is not None and tools.flooder is not None:
                per_ring += len(plan.sizes)
            steps += per_ring * rings
        if "latency" in parts:
            steps += (2 + int(tools is not None and tools.ping is not None)) * rings
        if "failover" in parts:
            steps += len(plan.failover_timeouts) * plan.failover_runs
        vip += int("vip" in parts) * len(plan.failover_timeouts) * plan.vip_runs
    return max(1, steps * systems + vip)


# --------------------------------------------------------------------------------- workers


class Worker:
    """One `benchmarks.workers` process on a host; its JSON lines arrive in a queue."""

    def __init__(self, bed: Bed, host: Host, args: Sequence[str]) -> None:
        self.host = host
        self.args = list(args)
        self.process = bed.spawn(
            host,
            [sys.executable, "-m", "benchmarks.workers", *args],
            stdin=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()  # Any: JSON values
        self.history: list[dict[str, Any]] = []  # Any: JSON values
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            try:
                event = json.loads(raw)
            except ValueError:
                continue
            self.events.put(event)
        self.events.put({"ev": "exit"})

    def next_event(self, timeout_s: float) -> dict[str, Any]:  # Any: JSON values
        try:
            event = self.events.get(timeout=max(0.0, timeout_s))
        except queue.Empty:
            raise BenchError(f"{self.describe()}: nothing within {timeout_s:.1f} s") from None
        self.history.append(event)
        if event["ev"] == "error":
            raise BenchError(f"{self.describe()}: {event['error']}")
        if event["ev"] == "exit":
            self.events.put(event)  # later waits fail the same way
            last = [e for e in self.history if e["ev"] != "exit"][-2:]
            said = f" after {json.dumps(last)}" if last else ""
            raise BenchError(f"{self.describe()} exited{said}: {self.stderr_tail()}")
        return event

    def wait_for(
        self,
        predicate: Callable[[dict[str, Any]], bool],  # Any: JSON values
        timeout_s: float,
        what: str,
    ) -> dict[str, Any]:  # Any: JSON values
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BenchError(f"{self.describe()}: no {what} within {timeout_s:.1f} s")
            event = self.next_event(remaining)
            if predicate(event):
                return event

    def result(self, timeout_s: float = WORKER_TIMEOUT_S) -> dict[str, Any]:  # Any: JSON
        return self.wait_for(lambda e: e["ev"] == "result", timeout_s, "result")

    def stderr_tail(self) -> str:
        """What it said on stderr, once it has exited (its stdout closing comes first)."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(2)
        if self.process.poll() is None or self.process.stderr is None:
            return ""
        said = self.process.stderr.read().decode(errors="replace")[-1500:]
        return f"exit status {self.process.returncode}" + (f": {said}" if said else "")

    def describe(self) -> str:
        return f"worker {self.args[0]} on {self.host.name}"

    def stop(self) -> None:
        """Close its stdin (watchers and probes end on that), then make sure it is gone."""
        if self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


@contextlib.contextmanager
def workers(*items: Worker) -> Iterator[tuple[Worker, ...]]:
    try:
        yield items
    finally:
        for w in items:
            w.stop()


# ------------------------------------------------------------------------------ throughput


def ring_counters(ring: Ring, name: str) -> dict[str, int] | None:
    status = ring.status(name)
    return None if status is None else dict(status["counters"]["ring"])


def flood_once(
    ring: Ring, *, size: int, service: str, senders: int, messages: int
) -> dict[str, Any]:  # Any: JSON values
    """One flood; `messages` in all (each of three senders sends a third)."""
    hosts = ring.bed.hosts
    per_sender = messages // senders
    total = per_sender * senders
    timeout = WORKER_TIMEOUT_S + total * size / 5e6
    group = ["--group", FLOOD_GROUP, "--size", str(size), "--service", service]
    common = [*group, "--expect", str(total), "--timeout", str(timeout)]
    before = ring_counters(ring, hosts[0].name)
    cpu_before = {h.name: ring.cpu_seconds(h.name) for h in hosts}
    started = []
    for i, host in enumerate(hosts):
        sends = per_sender if i < senders else 0
        wait = ["--members", str(len(hosts))] if sends else []
        address = ["-s", ring.client_address(host.name), "-u", f"fl{i}"]
        started.append(
            Worker(ring.bed, host, ["flood", *address, "--send", str(sends), *wait, *common])
        )
    with workers(*started):
        results = [w.result(timeout + 10) for w in started]
    after = ring_counters(ring, hosts[0].name)
    cpu_after = {h.name: ring.cpu_seconds(h.name) for h in hosts}
    first = min(r["first_send"] for r in results[:senders])
    readers = results if senders > 1 else results[1:]
    last = max(r["last_delivery"] for r in readers)
    seconds = last - first
    row: dict[str, Any] = {  # Any: JSON values
        "size": size,
        "service": service,
        "senders": senders,
        "messages": total,
        "seconds": seconds,
        "msgs_per_s": total / seconds,
        "mbit_per_s": total * size * 8 / seconds / 1e6,
    }
    used = {}
    for name, start in cpu_before.items():
        end = cpu_after[name]
        if start is not None and end is not None:
            used[name] = end - start
    # /proc counts CPU time in clock ticks (10 ms): too short a run says nothing per message.
    cpu = {name: s * 1e6 / total for name, s in used.items() if s >= CPU_SECONDS_MIN}
    if cpu:
        row["daemon_cpu_us_per_msg"] = cpu
    if before is not None and after is not None:
        rotations = after["rotations"] - before["rotations"]
        row["token_rotations_per_s"] = rotations / seconds
        row["retransmitted"] = after["retransmitted"] - before["retransmitted"]
    return row


def median_row(runs: list[dict[str, Any]]) -> dict[str, Any]:  # Any: JSON values
    """The run with the median rate, plus every run's rate."""
    ordered = sorted(runs, key=lambda r: r["msgs_per_s"])
    chosen = dict(ordered[(len(ordered) - 1) // 2])
    chosen["runs_msgs_per_s"] = [r["msgs_per_s"] for r in runs]
    return chosen


def throughput(ring: Ring, plan: Plan, progress: Progress) -> list[dict[str, Any]]:  # Any: JSON
    cases = [(size, service, 1) for size in plan.sizes for service in plan.services]
    if plan.three_senders:
        cases += [(size, "agreed", 3) for size in plan.sizes]
    rows = []
    for size, service, senders in cases:
        runs = []
        for _ in range(plan.repeat):
            runs.append(
                flood_once(
                    ring,
                    size=size,
                    service=service,
                    senders=senders,
                    messages=plan.messages[size],
                )
            )
            progress.step(f"flood {size} B {service} x{senders}")
        rows.append(median_row(runs))
    return rows


# --------------------------------------------------------------------------------- latency


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of sorted values (spping's definition)."""
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def latency(ring: Ring, plan: Plan) -> dict[str, Any]:  # Any: JSON values
    h1, h3 = ring.bed.hosts[0], ring.bed.hosts[-1]
    echo_argv = [sys.executable, "-m", "spuser.ping", "--echo", "-s"]
    echo_argv += [ring.client_address(h3.name), "-g", PING_GROUP, "-u", "echo"]
    echo = ring.bed.spawn(h3, echo_argv, stdout=subprocess.DEVNULL)
    args = ["ping", "-s", ring.client_address(h1.name), "-u", "pinger", "--group", PING_GROUP]
    args += ["--size", str(PING_SIZE), "--service", "agreed", "--timeout", "10"]
    args += ["--count", str(plan.ping_count), "--warmup", str(plan.ping_warmup)]
    try:
        with workers(Worker(ring.bed, h1, args)) as (pinger,):
            rtts = sorted(pinger.result()["rtts_s"])
    finally:
        echo.kill()
        echo.wait(5)
    return {
        "size": PING_SIZE,
        "service": "agreed",
        "count": len(rtts),
        "mean_ms": statistics.fmean(rtts) * 1e3,
        "p50_ms": percentile(rtts, 0.50) * 1e3,
        "p99_ms": percentile(rtts, 0.99) * 1e3,
        "min_ms": rtts[0] * 1e3,
        "max_ms": rtts[-1] * 1e3,
        "rtts_ms": [round(r * 1e3, 4) for r in rtts],
    }


def idle_rotation(ring: Ring, plan: Plan) -> dict[str, Any] | None:  # Any: JSON values
    """Token rotation time of an idle ring from the representative's rotation counter."""
    rep = ring.bed.hosts[0].name  # the lowest address: the representative of a full ring
    first = ring_counters(ring, rep)
    t0 = time.monotonic()
    time.sleep(plan.idle_s)
    last = ring_counters(ring, rep)
    elapsed = time.monotonic() - t0
    if first is None or last is None:
        return None
    rotations = last["rotations"] - first["rotations"]
    return {
        "seconds": elapsed,
        "rotations": rotations,
        "rotation_ms": elapsed / rotations * 1e3 if rotations else None,
    }


# -------------------------------------------------------------------------------- failover


def _is_view(event: dict[str, Any], members: int, cause: str | None = None) -> bool:  # Any
    return (
        event["ev"] == "memb"
        and event["group"] == FAILOVER_GROUP
        and len(event["members"]) == members
        and (cause is None or event["cause"] == cause)
    )


def _watcher(ring: Ring, host: Host, tag: str) -> Worker:
    args = ["watch", "-s", ring.client_address(host.name), "-u", f"w{host.name}{tag}"[:10]]
    return Worker(ring.bed, host, [*args, "--group", FAILOVER_GROUP, "--timeout", "3600"])


def failover(ring: Ring, plan: Plan, progress: Progress) -> list[dict[str, Any]]:  # Any: JSON
    """kill -9 h3, h1, h2, ... in turn; per run, how long each survivor's client waited."""
    hosts = ring.bed.hosts
    n = len(hosts)
    watch: dict[str, Worker] = {h.name: _watcher(ring, h, "0") for h in hosts}
    runs = []
    try:
        for w in watch.values():
            w.wait_for(lambda e: _is_view(e, n), VIEW_TIMEOUT_S, f"a view of {n}")
        for run in range(plan.failover_runs):
            victim = hosts[(run + n - 1) % n]
            t_kill = ring.kill(victim.name)
            waited = {}
            for host in hosts:
                if host is victim:
                    continue
                view = watch[host.name].wait_for(
                    lambda e: _is_view(e, n - 1, "NETWORK"), VIEW_TIMEOUT_S, "the new view"
                )
                waited[host.name] = view["t"] - t_kill
            runs.append(
                {
                    "victim": victim.name,
                    "survivors_s": waited,
                    "seconds": max(waited.values()),
                }
            )
            progress.step(f"failover {victim.name}")
            watch[victim.name].stop()
            ring.start(victim.name)
            ring.wait_ring()
            watch[victim.name] = _watcher(ring, victim, str(run + 1))
            for w in watch.values():
                w.wait_for(lambda e: _is_view(e, n), VIEW_TIMEOUT_S, f"a view of {n} again")
    finally:
        for w in watch.values():
            w.stop()
    return runs


def summarise_failover(runs: list[dict[str, Any]]) -> dict[str, Any]:  # Any: JSON values
    seconds = sorted(r["seconds"] for r in runs)
    return {
        "runs": runs,
        "mean_s": statistics.fmean(seconds),
        "median_s": statistics.median(seconds),
        "min_s": seconds[0],
        "max_s": seconds[-1],
    }


# ------------------------------------------------------------------------------------- vip


VIP_ADDRESS: Final = "198.18.0.201"


def vip_unavailable(bed: Bed) -> str | None:
    if not (REPO / "wackapy" / "daemon.py").exists():
        return "wackapy's daemon (wackapy/daemon.py) is not there yet"
    if bed.kind != "netns":
        return "needs the netns bed (VIPs are real addresses on the hosts' interfaces)"
    return None


def _vip_owners(bed: Bed) -> list[str]:
    return vip_owners(bed, [VIP_ADDRESS])[VIP_ADDRESS]


def _wait_single_owner(bed: Bed, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    owners: list[str] = []
    while time.monotonic() < deadline:
        owners = _vip_owners(bed)
        if len(owners) == 1:
            return owners[0]
        time.sleep(0.05)
    raise BenchError(f"{VIP_ADDRESS} not held by exactly one host (held by {owners})")


def _reply_after(t: float) -> Callable[[dict[str, Any]], bool]:  # Any: JSON values
    return lambda e: e["ev"] == "reply" and e["t"] > t


def vip_failover(ring: Ring, plan: Plan, progress: Progress) -> dict[str, Any]:  # Any: JSON
    """The VIP owner's host dies; time until the VIP answers from the client namespace."""
    bed = ring.bed
    client_host = bed.client
    assert client_host is not None
    wacks: dict[str, subprocess.Popen[bytes]] = {}

    def start_wackapy(host: Host) -> None:
        conf = wackapy_conf(ring, host, VIP_GROUP, [VIP_ADDRESS])
        log = (ring.workdir / f"wackapy-{host.name}.log").open("ab")
        wacks[host.name] = bed.spawn(
            host, wackapy_argv(conf, f"wk{host.name}"), stdout=log, stderr=subprocess.STDOUT
        )
        log.close()

    for host in bed.hosts:
        start_wackapy(host)
    runs = []
    probe = Worker(bed, client_host, ["probe", "--target", VIP_ADDRESS, "--duration", "3600"])
    with workers(probe):
        probe.wait_for(lambda e: e["ev"] == "ready", 10, "ready")
        for _ in range(plan.vip_runs):
            owner = bed.host(_wait_single_owner(bed, VIEW_TIMEOUT_S))
            probe.wait_for(lambda e: e["ev"] == "reply", 10, "a reply from the VIP")
            bed.cut_link(owner)
            wacks[owner.name].kill()
            t_kill = ring.kill(owner.name)
            reply = probe.wait_for(_reply_after(t_kill), VIEW_TIMEOUT_S, "a reply after")
            new_owner = [h for h in _vip_owners(bed) if h != owner.name]
            runs.append(
                {"owner": owner.name, "new_owner": new_owner, "seconds": reply["t"] - t_kill}
            )
            progress.step(f"vip failover from {owner.name}")
            wacks[owner.name].wait(5)
            with contextlib.suppress(BedError):  # it rebooted: its addresses are gone
                bed.run(owner, ["ip", "addr", "del", f"{VIP_ADDRESS}/24", "dev", "eth0"])
            bed.restore_link(owner)
            ring.start(owner.name)
            ring.wait_ring()
            start_wackapy(owner)
    for process in wacks.values():
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(5)
    return summarise_failover(runs)


# ----------------------------------------------------------------------------- peer flooder


FLOODER_DONE = re.compile(rb"completed multicast of")
FLOODER_TAIL = 400  # two windows
C_PING_REPLY = re.compile(r"seq = (\d+) time = ([0-9.]+) ms")


def line_buffered(argv: list[str]) -> list[str]:
    """The C examples printf without fflush: on a pipe their lines would only come out at 4 KB
    or at exit, and the times taken when they arrive would mean nothing."""
    stdbuf = shutil.which("stdbuf")
    if stdbuf is None:
        raise BenchError("stdbuf (coreutils) is needed to time the C spflooder's output")
    return [stdbuf, "-oL", *argv]


def c_flooder(ring: Ring, flooder: Path, size: int, messages: int) -> dict[str, Any]:  # Any
    """The original spflooder binary: one sender, two `-ro` readers, timed from here (the
    sender's "starting" line to the last reader's "completed" line, each read as it is printed:
    stdbuf -oL). A `-ro` flooder counts every message, the few membership messages too: they
    are not subtracted."""
    hosts = ring.bed.hosts
    lines: queue.Queue[tuple[str, float, bytes]] = queue.Queue()

    def follow(tag: str, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        for raw in process.stdout:
            lines.put((tag, time.monotonic(), raw))

    def start(host: Host, tag: str, count: int, extra: list[str]) -> subprocess.Popen[bytes]:
        argv = [str(flooder), "-m", str(count), "-b", str(size)]
        argv += ["-s", ring.client_address(host.name), "-u", tag, *extra]
        process = ring.bed.spawn(host, line_buffered(argv), stderr=subprocess.STDOUT)
        threading.Thread(target=follow, args=(tag, process), daemon=True).start()
        return process

    run = secrets.token_hex(2)  # fresh private names: the last run's may still be leaving
    readers = [start(h, f"r{run}{h.name}", messages, ["-ro"]) for h in hosts[1:]]
    wait_group(ring, hosts[0], "flooder", len(readers))
    # The sender sends a tail the readers do not wait for: a flooder exits with its own
    # messages unread, its socket then closes with a reset, and the daemon loses whatever it
    # had not read yet (TCP), which would leave the readers short.
    sender = start(hosts[0], f"s{run}", messages + FLOODER_TAIL, [])
    started: float | None = None
    done: dict[str, float] = {}
    last: dict[str, bytes] = {}
    deadline = time.monotonic() + WORKER_TIMEOUT_S
    while len(done) < len(readers) and time.monotonic() < deadline:
        try:
            tag, t, raw = lines.get(timeout=1)
        except queue.Empty:
            continue
        last[tag] = raw
        if tag.startswith("s") and started is None and b"starting" in raw:
            started = t
        elif tag.startswith("r") and FLOODER_DONE.search(raw):
            done[tag] = t
    for p in (*readers, sender):
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)
    if started is None or len(done) < len(readers):
        said = "; ".join(
            f"{tag}: {raw.decode(errors='replace').strip()}" for tag, raw in last.items()
        )
        logs = "".join(f"\n--- {h.name}\n{ring.log_tail(h.name, 1500)}" for h in hosts)
        raise BenchError(f"spflooder {size} B did not finish (last lines: {said}){logs}")
    seconds = max(done.values()) - started
    return {
        "size": size,
        "messages": messages,
        "seconds": seconds,
        "msgs_per_s": messages / seconds,
        "mbit_per_s": messages * size * 8 / seconds / 1e6,
    }


def c_ping(ring: Ring, spping: Path, plan: Plan) -> dict[str, Any]:  # Any: JSON values
    """The C spping: `spping -ro` on h3 reflects, spping on h1 sends a 48-byte ping every
    C_PING_PERIOD_MS (RELIABLE | SELF_DISCARD, its only service) and prints each round trip.
    The first `ping_warmup` pings are not counted; a ping whose answer came after spping had
    sent its last and exited is simply missing (the count says how many came back)."""
    h1, h3 = ring.bed.hosts[0], ring.bed.hosts[-1]
    run = secrets.token_hex(2)  # fresh private names
    group = ["-g", C_PING_GROUP, "-b", str(PING_SIZE)]
    reflector_argv = [str(spping), "-ro", "-s", ring.client_address(h3.name), *group]
    reflector = ring.bed.spawn(h3, [*reflector_argv, "-u", f"e{run}"], stdout=subprocess.DEVNULL)
    try:
        wait_group(ring, h1, C_PING_GROUP, 1)
        sent = plan.ping_count + plan.ping_warmup
        argv = [str(spping), "-s", ring.client_address(h1.name), *group, "-u", f"p{run}"]
        argv += ["-p", str(C_PING_PERIOD_MS), "-m", str(sent)]
        pinger = ring.bed.spawn(h1, argv, stderr=subprocess.STDOUT)
        try:
            out, _ = pinger.communicate(timeout=sent * C_PING_PERIOD_MS / 1e3 + VIEW_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pinger.kill()
            out, _ = pinger.communicate()
            said = out.decode(errors="replace")[-500:]
            raise BenchError(f"spping did not finish: {said}") from None
    finally:
        reflector.kill()
        reflector.wait(5)
    text = out.decode(errors="replace")
    rtts = sorted(
        float(m.group(2))
        for m in C_PING_REPLY.finditer(text)
        if int(m.group(1)) >= plan.ping_warmup
    )
    if pinger.returncode != 0 or not rtts:
        raise BenchError(f"spping (exit {pinger.returncode}) timed no ping: {text[-500:]}")
    return {
        "size": PING_SIZE,
        "service": "reliable",
        "period_ms": C_PING_PERIOD_MS,
        "sent": plan.ping_count,
        "count": len(rtts),
        "mean_ms": statistics.fmean(rtts),
        "p50_ms": percentile(rtts, 0.50),
        "p99_ms": percentile(rtts, 0.99),
        "min_ms": rtts[0],
        "max_ms": rtts[-1],
        "rtts_ms": rtts,
    }


def wait_group(ring: Ring, host: Host, group: str, others: int) -> None:
    """Wait until `others` clients are in `group`, seen by a client on `host` (which leaves)."""
    args = ["watch", "-s", ring.client_address(host.name), "-u", "gprobe", "--group", group]
    args += ["--until-members", str(others + 1), "--timeout", str(VIEW_TIMEOUT_S)]
    with workers(Worker(ring.bed, host, args)) as (probe,):
        probe.result(VIEW_TIMEOUT_S + 5)


# --------------------------------------------------------------------------------- profile


def profile_daemon(ring: Ring, plan: Plan, out_stem: Path) -> dict[str, Any] | None:  # Any
    """py-spy on h1's daemon while h1 floods 1000-byte RELIABLE messages."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not os.access(py_spy, os.X_OK):
        print("profile: py-spy is not installed; skipped", file=sys.stderr)
        return None
    raw = out_stem.with_name(out_stem.name + "-profile.txt")
    hosts = ring.bed.hosts
    common = ["--group", FLOOD_GROUP, "--size", "1000", "--service", "reliable"]
    common += ["--expect", "200000", "--timeout", "40"]
    started = []
    for i, host in enumerate(hosts):
        send = ["--send", "200000", "--members", "3"] if i == 0 else []
        address = ["-s", ring.client_address(host.name), "-u", f"pf{i}"]
        started.append(Worker(ring.bed, host, ["flood", *address, *send, *common]))
    with workers(*started):
        started[0].wait_for(lambda e: e["ev"] == "ready", 30, "ready")
        time.sleep(1.0)  # the flood is under way
        argv = [py_spy, "record", "-p", str(ring.pid(hosts[0].name)), "-d", str(PROFILE_SECONDS)]
        argv += ["--format", "raw", "-o", str(raw)]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0 or not raw.exists():
        print(f"profile: py-spy failed: {done.stderr.strip()[-500:]}", file=sys.stderr)
        return None
    return summarise_profile(raw.read_text())


_FRAME_LINE = re.compile(r":\d+\)$")


def summarise_profile(text: str) -> dict[str, Any]:  # Any: JSON values
    """Self and total samples per function from py-spy's raw (collapsed stack) output."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        samples += count
        frames = [_FRAME_LINE.sub(")", f) for f in stack.split(";")]
        own[frames[-1]] += count
        for frame in set(frames):
            total[frame] += count
    return {
        "samples": samples,
        "top_self": [
            {"frame": f, "self_pct": 100 * c / samples, "total_pct": 100 * total[f] / samples}
            for f, c in own.most_common(PROFILE_TOP)
        ],
        "top_total": [
            {"frame": f, "total_pct": 100 * c / samples} for f, c in total.most_common(PROFILE_TOP)
        ],
    }


# ---------------------------------------------------------------------------- the whole run


def machine_info() -> dict[str, Any]:  # Any: JSON values
    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.partition(":")[2].strip()
                break

    commit, dirty = git_commit()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "commit": commit,
        "dirty": dirty,
        "source_digest": source_digest(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def ring_key(accelerated: bool, mtu: int | None) -> str:
    """The key of a ring's figures: original or accelerated, and the MTU when not 1500."""
    key = "accelerated" if accelerated else "original"
    return key if mtu in (None, ETHERNET_MTU) else f"{key} mtu{mtu}"


def describe_ring(key: str) -> str:
    """The table's words for a ring key: "original mtu9000" is "original ring, MTU 9000"."""
    ring, _, mtu = key.partition(" mtu")
    return f"{ring} ring" + (f", MTU {mtu}" if mtu else "")


@dataclass(frozen=True, slots=True, kw_only=True)
class System:
    """One implementation to measure and how its clients reach it."""

    name: str  # OURS or PEER
    peer: Path | None  # the original's install prefix; None: spreadpy
    client_transport: str  # unix, or tcp for both when comparing
    tools: PeerInstall | None  # the original's C clients, run against this system too

    def ring_config(
        self, plan: Plan, *, accelerated: bool = False, fast: bool = False
    ) -> RingConfig:
        return RingConfig(
            accelerated=accelerated,
            fast=fast,
            peer=self.peer,
            peer_user=plan.peer_user,
            client_transport=self.client_transport,
        )


def systems_for(plan: Plan) -> list[System]:
    """spreadpy alone, or spreadpy and the original (clients on TCP for both, so that the two
    are measured the same way: the original's Unix socket is fixed at /tmp/<port>)."""
    if plan.peer is None:
        return [System(name=OURS, peer=None, client_transport="unix", tools=None)]
    tools = find_peer(plan.peer)
    return [
        System(name=OURS, peer=None, client_transport="tcp", tools=tools),
        System(name=PEER, peer=tools.prefix, client_transport="tcp", tools=tools),
    ]


@contextlib.contextmanager
def explained(ring: Ring, what: str) -> Iterator[Ring]:
    """A measurement that fails says what it was and how the daemons were doing."""
    try:
        yield ring
    except BenchError as exc:
        raise BenchError(f"{what}: {exc}\n{ring.daemons_state()}") from None


def run_system(
    bed: Bed, plan: Plan, system: System, progress: Progress, out_stem: Path
) -> dict[str, Any]:  # Any: JSON values
    """Every part of the plan on one implementation, on one bed."""
    result: dict[str, Any] = {}  # Any: JSON values
    rings = [False, True] if plan.accelerated else [False]
    is_peer = system.peer is not None
    tools = system.tools
    if {"throughput", "latency"} & set(plan.parts):
        for accelerated in rings:
            key = ring_key(accelerated, bed.mtu)
            config = system.ring_config(plan, accelerated=accelerated)
            with Ring(bed, config) as ring, explained(ring, f"{system.name}, {key} ring"):
                ring.wait_ring()
                if "throughput" in plan.parts:
                    result.setdefault("throughput", {})[key] = throughput(ring, plan, progress)
                    if tools is not None and tools.flooder is not None:
                        rows = []
                        for size in plan.sizes:
                            rows.append(c_flooder(ring, tools.flooder, size, plan.messages[size]))
                            progress.step(f"spflooder {size} B")
                        result.setdefault("spflooder", {})[key] = rows
                if "latency" in plan.parts:
                    result.setdefault("latency", {})[key] = latency(ring, plan)
                    progress.step(f"latency {key}")
                    if tools is not None and tools.ping is not None:
                        result.setdefault("spping", {})[key] = c_ping(ring, tools.ping, plan)
                        progress.step(f"spping {key}")
                    result.setdefault("idle_rotation", {})[key] = idle_rotation(ring, plan)
                    progress.step(f"idle ring {key}")
                if plan.profile and not is_peer and not accelerated:
                    result["profile"] = profile_daemon(ring, plan, out_stem)
    if "failover" in plan.parts:
        for key in plan.failover_timeouts:
            config = system.ring_config(plan, fast=key == "fast")
            with Ring(bed, config) as ring, explained(ring, f"{system.name}, failover {key}"):
                ring.wait_ring()
                runs = failover(ring, plan, progress)
                result.setdefault("failover", {})[key] = summarise_failover(runs)
    if "vip" in plan.parts and not is_peer:
        reason = vip_unavailable(bed)
        if reason is not None:
            print(f"vip failover: skipped: {reason}", file=sys.stderr)
            result["vip"] = {"skipped": reason}
        else:
            result["vip"] = {}
            for key in plan.failover_timeouts:
                with Ring(bed, system.ring_config(plan, fast=key == "fast")) as ring:
                    ring.wait_ring()
                    try:
                        result["vip"][key] = vip_failover(ring, plan, progress)
                    except BenchError as exc:
                        print(f"vip failover ({key}): {exc}", file=sys.stderr)
                        result["vip"][key] = {"error": str(exc)}
    return result


def merge(into: dict[str, Any], more: dict[str, Any]) -> None:  # Any: JSON values
    """Add one bed's figures to a system's (parts keyed by ring, so beds never collide)."""
    for part, value in more.items():
        if isinstance(value, dict) and isinstance(into.get(part), dict):
            into[part].update(value)
        else:
            into[part] = value


def _ratio(what: str, unit: str, ours: float, theirs: float) -> dict[str, Any]:  # Any: JSON
    return {"what": what, "unit": unit, "ours": ours, "peer": theirs, "ratio": ours / theirs}


def compare(ours: dict[str, Any], peer: dict[str, Any]) -> list[dict[str, Any]]:  # Any: JSON
    """spreadpy / original for every figure both have (>1: spreadpy's figure is higher, which
    is better for msgs/s and worse for times)."""
    rows: list[dict[str, Any]] = []  # Any: JSON values
    for ring, ours_rows in ours.get("throughput", {}).items():
        theirs = {
            (r["size"], r["service"], r["senders"]): r
            for r in peer.get("throughput", {}).get(ring, [])
        }
        for r in ours_rows:
            other = theirs.get((r["size"], r["service"], r["senders"]))
            if not other:
                continue
            case = f"{ring} {r['size']} B {r['service']} x{r['senders']}"
            rows.append(
                _ratio(f"throughput {case}", "msgs/s", r["msgs_per_s"], other["msgs_per_s"])
            )
            cpu, other_cpu = (
                r.get("daemon_cpu_us_per_msg", {}),
                other.get("daemon_cpu_us_per_msg", {}),
            )
            hosts = sorted(set(cpu) & set(other_cpu))
            if hosts:
                mean = statistics.fmean(cpu[h] for h in hosts)
                other_mean = statistics.fmean(other_cpu[h] for h in hosts)
                rows.append(_ratio(f"daemon CPU {case}", "us/msg", mean, other_mean))
    for ring, ours_rows in ours.get("spflooder", {}).items():
        theirs = {r["size"]: r for r in peer.get("spflooder", {}).get(ring, [])}
        for r in ours_rows:
            other = theirs.get(r["size"])
            if other:
                what = f"spflooder (C) {ring} {r['size']} B"
                rows.append(_ratio(what, "msgs/s", r["msgs_per_s"], other["msgs_per_s"]))
    for part, label in (("latency", "latency"), ("spping", "spping (C)")):
        for ring, lat in ours.get(part, {}).items():
            other = peer.get(part, {}).get(ring)
            if other:
                what = f"{label} {ring} {lat['service']} p50"
                rows.append(_ratio(what, "ms", lat["p50_ms"], other["p50_ms"]))
    for key, fo in ours.get("failover", {}).items():
        other = peer.get("failover", {}).get(key)
        if other:
            rows.append(_ratio(f"failover {key} median", "s", fo["median_s"], other["median_s"]))
    return rows


# ------------------------------------------------------------------------------------ output


def render(report: dict[str, Any]) -> str:  # Any: JSON values
    """The table printed at the end of a run."""
    m = report["machine"]
    out = [
        f"machine: {m['cpu']}, {m['cores']} cores, Linux {m['kernel']}, Python {m['python']}, "
        f"commit {m['commit'][:12]}{' (dirty)' if m['dirty'] else ''}",
        f"bed: {_render_beds(report)}{' (quick)' if report['parameters']['quick'] else ''}",
    ]
    out += [f"note: {note}" for note in report.get("notes", [])]
    for system, res in report["systems"].items():
        out.append(f"\n== {system}")
        out += _render_throughput(res, report["parameters"]["repeat"])
        out += _render_latency(res)
        out += _render_failover(res)
        prof = res.get("profile")
        if prof:
            out.append(
                f"profile of h1's daemon under flood ({prof['samples']} samples), self time:"
            )
            out += [f"  {e['self_pct']:5.1f}%  {e['frame']}" for e in prof["top_self"][:10]]
    if report.get("comparison"):
        out.append(f"\n{OURS} / {PEER} (same bed, same clients; >1: {OURS}'s figure is higher):")
        out.append(f"  {'ratio':>6} {OURS:>10} {PEER:>12} {'unit':<6} what")
        out += [
            f"  {r['ratio']:6.2f} {figure(r['ours']):>10} {figure(r['peer']):>12} "
            f"{r['unit']:<6} {r['what']}"
            for r in report["comparison"]
        ]
    return "\n".join(out)


def figure(value: float) -> str:
    """A measured value with as many decimals as mean something: 12345, 12.3, 0.834."""
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.3f}"


def _render_beds(report: dict[str, Any]) -> str:  # Any: JSON values
    beds = report.get("beds") or [{"kind": report["bed"], "mtu": None, "parts": []}]
    described = []
    for bed in beds:
        mtu = "" if bed["mtu"] is None else f", MTU {bed['mtu']}"
        sizes = ", ".join(f"{k} {v} B" for k, v in bed.get("ring_packet_size", {}).items())
        parts = ",".join(bed["parts"])
        described.append(
            f"{bed['kind']}{mtu}" + (f" ({parts}; ring packets: {sizes})" if parts else "")
        )
    return "; ".join(described)


def _render_throughput(res: dict[str, Any], repeat: int) -> list[str]:  # Any: JSON values
    out = []
    for ring, rows in res.get("throughput", {}).items():
        out.append(f"throughput, {describe_ring(ring)} (median of {repeat}):")
        out.append(
            f"  {'size':>6} {'service':<9} {'senders':>7} {'msgs/s':>9} {'Mbit/s':>8} "
            f"{'rot/s':>6}  daemon CPU us/msg h1 h2 h3"
        )
        for r in rows:
            rot = r.get("token_rotations_per_s")
            cpu = " ".join(f"{v:4.0f}" for v in r.get("daemon_cpu_us_per_msg", {}).values())
            out.append(
                f"  {r['size']:>6} {r['service']:<9} {r['senders']:>7} {r['msgs_per_s']:>9.0f} "
                f"{r['mbit_per_s']:>8.1f} {'-' if rot is None else f'{rot:.0f}':>6}  {cpu}"
            )
    for ring, rows in res.get("spflooder", {}).items():
        out.append(f"spflooder (C), {describe_ring(ring)}, one sender:")
        out += [
            f"  {r['size']:>6} B {r['msgs_per_s']:>9.0f} msgs/s {r['mbit_per_s']:>8.1f} Mbit/s"
            for r in rows
        ]
    return out


def _render_latency(res: dict[str, Any]) -> list[str]:  # Any: JSON values
    out = []
    for ring, lat in res.get("latency", {}).items():
        out.append(
            f"latency, {describe_ring(ring)}, {lat['count']} x {lat['size']} B {lat['service']}: "
            f"mean {lat['mean_ms']:.3f} ms, p50 {lat['p50_ms']:.3f} ms, p99 {lat['p99_ms']:.3f} ms"
        )
    for ring, lat in res.get("spping", {}).items():
        out.append(
            f"spping (C), {describe_ring(ring)}, {lat['count']}/{lat['sent']} x {lat['size']} B "
            f"{lat['service']} every {lat['period_ms']} ms: mean {lat['mean_ms']:.3f} ms, "
            f"p50 {lat['p50_ms']:.3f} ms, p99 {lat['p99_ms']:.3f} ms"
        )
    for ring, idle in res.get("idle_rotation", {}).items():
        if idle and idle["rotation_ms"] is not None:
            out.append(
                f"idle ring, {describe_ring(ring)}: one token rotation per "
                f"{idle['rotation_ms']:.2f} ms "
                f"({idle['rotations']} in {idle['seconds']:.1f} s)"
            )
    return out


def _render_failover(res: dict[str, Any]) -> list[str]:  # Any: JSON values
    out = []
    for key, fo in res.get("failover", {}).items():
        out.append(
            f"failover, {key} timeouts, {len(fo['runs'])} runs: median {fo['median_s']:.3f} s, "
            f"min {fo['min_s']:.3f} s, max {fo['max_s']:.3f} s"
        )
    vip = res.get("vip")
    if vip and "skipped" in vip:
        out.append(f"vip failover: skipped: {vip['skipped']}")
    elif vip:
        for key, fo in vip.items():
            if "error" in fo:
                out.append(f"vip failover, {key} timeouts: failed: {fo['error']}")
            else:
                out.append(
                    f"vip failover, {key} timeouts, {len(fo['runs'])} runs: median "
                    f"{fo['median_s']:.3f} s, min {fo['min_s']:.3f} s, max {fo['max_s']:.3f} s"
                )
    return out


def plot(report: dict[str, Any], stem: Path) -> list[Path]:  # Any: JSON values
    """PNG plots beside the JSON (nothing, with a note, without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(
            "plots: matplotlib is not installed (pip install -e '.[bench]'); skipped",
            file=sys.stderr,
        )
        return []
    written = []
    systems = report["systems"]
    if any("throughput" in s for s in systems.values()):
        written.append(_plot_throughput(plt, systems, stem))
    if any("latency" in s for s in systems.values()):
        fig, ax = plt.subplots(figsize=(6, 4))
        for system, res in systems.items():
            for ring, lat in res.get("latency", {}).items():
                values = lat["rtts_ms"]
                ax.plot(
                    values,
                    [i / len(values) for i in range(1, len(values) + 1)],
                    label=f"{system} {ring}",
                )
        ax.set_xlabel("round trip (ms)")
        ax.set_ylabel("fraction of pings")
        ax.set_title(f"{PING_SIZE} B AGREED ping h1 -> h3 -> h1")
        ax.legend(fontsize=7)
        written.append(_save(fig, stem, "latency"))
    if any("failover" in s for s in systems.values()):
        fig, ax = plt.subplots(figsize=(6, 4))
        labels = []
        for system, res in systems.items():
            for part, what in (("failover", "view"), ("vip", "VIP")):
                for key, fo in res.get(part, {}).items():
                    if not isinstance(fo, dict) or "runs" not in fo:
                        continue  # skipped or failed
                    labels.append(f"{system}\n{what}, {key}")
                    ys = [r["seconds"] for r in fo["runs"]]
                    ax.scatter([len(labels) - 1] * len(ys), ys)
        ax.set_xticks(range(len(labels)), labels, fontsize=7)
        ax.set_ylabel("kill -9 to new view / VIP answering (s)")
        ax.set_title("failover")
        written.append(_save(fig, stem, "failover"))
    plt.close("all")
    return written


def _plot_throughput(plt: Any, systems: dict[str, Any], stem: Path) -> Path:  # Any: pyplot, JSON
    """One panel per size: a group of bars per (service, senders), one bar per system and ring,
    the whiskers spanning the repeated runs."""
    series = [
        (f"{system} {ring}", rows)
        for system, res in systems.items()
        for ring, rows in res.get("throughput", {}).items()
    ]
    sizes = sorted({r["size"] for _, rows in series for r in rows})
    fig, axes = plt.subplots(1, len(sizes), figsize=(4.5 * len(sizes), 4), squeeze=False)
    width = 0.8 / max(1, len(series))
    for ax, size in zip(axes[0], sizes, strict=True):
        cases = sorted(
            {(r["service"], r["senders"]) for _, rows in series for r in rows if r["size"] == size},
            key=lambda c: (c[1], SERVICES.index(c[0]) if c[0] in SERVICES else 9),
        )
        for k, (label, rows) in enumerate(series):
            found = {(r["service"], r["senders"]): r for r in rows if r["size"] == size}
            xs, ys, lo, hi = [], [], [], []
            for i, case in enumerate(cases):
                if case in found:
                    r = found[case]
                    runs = r.get("runs_msgs_per_s") or [r["msgs_per_s"]]
                    xs.append(i + (k - (len(series) - 1) / 2) * width)
                    ys.append(r["msgs_per_s"])
                    lo.append(r["msgs_per_s"] - min(runs))
                    hi.append(max(runs) - r["msgs_per_s"])
            ax.bar(xs, ys, width, yerr=[lo, hi], capsize=2, label=label)
        ax.set_xticks(range(len(cases)), [f"{svc}\nx{n}" for svc, n in cases], fontsize=8)
        ax.set_title(f"{size} B messages")
        ax.set_ylabel("msgs/s (median, whiskers: min-max)")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, stem, "throughput")


def _save(fig: Any, stem: Path, what: str) -> Path:  # Any: a matplotlib Figure
    path = stem.with_name(f"{stem.name}-{what}.png")
    fig.savefig(path, dpi=110)
    return path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.harness", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--quick", action="store_true", help="a few seconds: tiny runs of every part"
    )
    parser.add_argument("--only", help=f"comma-separated parts ({','.join(PARTS)})")
    parser.add_argument("--bed", choices=("auto", "netns", "loopback"), default="auto")
    parser.add_argument(
        "--transport",
        choices=("broadcast", "multicast"),
        default="broadcast",
        help="how the ring reaches the segment on the netns bed",
    )
    parser.add_argument("--repeat", type=int, help="runs per throughput figure (median kept)")
    parser.add_argument(
        "--sizes", help=f"comma-separated message sizes of {','.join(map(str, SIZES))}"
    )
    parser.add_argument("--failover-runs", type=int)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply message counts")
    parser.add_argument("--no-accelerated", action="store_true", help="the original ring only")
    parser.add_argument("--profile", action="store_true", help="py-spy the sender's daemon")
    parser.add_argument(
        "--peer",
        default=os.environ.get("PEER") or None,
        metavar="PREFIX",
        help="an original Spread 5.0.1 install prefix to compare with (env PEER)",
    )
    parser.add_argument(
        "--peer-user",
        default=PEER_USER,
        metavar="USER",
        help=f"the unprivileged user the original daemon runs as (default {PEER_USER})",
    )
    parser.add_argument(
        "--mtu",
        type=int,
        default=ETHERNET_MTU,
        help="MTU of the netns bed's veths and bridge; spreadpy gets RingPacketSize = MTU - 28",
    )
    parser.add_argument(
        "--jumbo",
        action="store_true",
        help=f"measure throughput once more on a second bed with MTU {JUMBO_MTU}",
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="where results go")
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def plan_from_args(args: argparse.Namespace) -> Plan:
    overrides: dict[str, Any] = {"bed": args.bed, "transport": args.transport}  # Any: fields
    if args.only:
        parts = tuple(p.strip() for p in args.only.split(",") if p.strip())
        unknown = set(parts) - set(PARTS)
        if unknown:
            raise SystemExit(
                f"unknown parts: {', '.join(sorted(unknown))} (known: {', '.join(PARTS)})"
            )
        overrides["parts"] = parts
    if args.repeat:
        overrides["repeat"] = args.repeat
    if args.sizes:
        try:
            sizes = tuple(int(x) for x in args.sizes.split(",") if x.strip())
        except ValueError:
            raise SystemExit(f"--sizes: not a list of numbers: {args.sizes}") from None
        if not sizes or set(sizes) - set(SIZES):
            raise SystemExit(f"--sizes: choose among {','.join(map(str, SIZES))}")
        overrides["sizes"] = sizes
    if args.failover_runs:
        overrides["failover_runs"] = args.failover_runs
    if args.no_accelerated:
        overrides["accelerated"] = False
    overrides["peer"] = args.peer or None
    overrides["peer_user"] = args.peer_user
    overrides["profile"] = args.profile
    try:
        overrides["mtu"] = check_mtu(args.mtu)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    if args.jumbo and args.mtu == JUMBO_MTU:
        raise SystemExit(
            f"--jumbo adds a bed with MTU {JUMBO_MTU}: with --mtu {JUMBO_MTU} it is that"
        )
    overrides["jumbo"] = args.jumbo
    plan = Plan.quick_plan(**overrides) if args.quick else Plan(**overrides)
    if args.scale != 1.0:
        scaled = {s: max(10, round(n * args.scale)) for s, n in plan.messages.items()}
        plan = replace(plan, messages=scaled)
    return plan


def bed_notes(plan: Plan, systems: Sequence[System]) -> list[str]:
    """What a reader of the table must know about how the systems were set up."""
    notes = []
    if len(systems) > 1:
        notes.append(
            f"clients of both {OURS} and {PEER} connect by TCP (the original's Unix socket is "
            f"/tmp/<port>, compiled in); {PEER} runs as user {plan.peer_user}, not root"
        )
        notes.append(
            f"both rings run Window = {DEFAULT_WINDOW}, PersonalWindow = "
            f"{DEFAULT_PERSONAL_WINDOW} ({OURS}'s defaults; the original's own PersonalWindow "
            "default is 20)"
        )
    for mtu, _ in plan.beds():
        size = ring_packet_size(mtu)
        if size is None:
            continue
        note = f"MTU {mtu}: {OURS}'s daemons get RingPacketSize = {size}"
        if len(systems) > 1:
            note += (
                f"; {PEER} has no such setting and keeps its compiled-in {PEER_PACKET_SIZE}-byte"
                " packets"
            )
        notes.append(note)
    return notes


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    plan = plan_from_args(args)
    try:
        systems = systems_for(plan)
        kind = bed_kind(plan.bed)
    except BedError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    notes = []
    if kind == "loopback":
        if len(systems) > 1:
            print(f"benchmark failed: PEER needs the netns bed (root), not {kind}", file=sys.stderr)
            return 1
        if plan.mtu != ETHERNET_MTU:
            print(f"benchmark failed: --mtu {plan.mtu} needs the netns bed", file=sys.stderr)
            return 1
        if plan.jumbo:
            plan = replace(plan, jumbo=False)
            notes.append(f"throughput at MTU {JUMBO_MTU} skipped: it needs the netns bed (root)")
            print(f"note: {notes[-1]}", file=sys.stderr)
    notes += bed_notes(plan, systems)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / time.strftime("bench-%Y%m%d-%H%M%S")
    tools = systems[-1].tools
    progress = Progress(count_steps(plan, len(systems), tools), enabled=not args.no_progress)
    report: dict[str, Any] = {  # Any: JSON values
        "machine": machine_info(),
        "parameters": {k: (dict(v) if isinstance(v, dict) else v) for k, v in asdict(plan).items()},
        "bed": kind,
        "beds": [],
        "notes": notes,
        "systems": {system.name: {} for system in systems},
    }
    try:
        with terminate_on_sigterm():
            for mtu, parts in plan.beds():  # one bed at a time
                bed_plan = replace(plan, parts=parts)
                with open_bed(plan.bed, plan.transport, mtu) as bed:
                    sizes = {s.name: packet_size(bed, peer=s.peer is not None) for s in systems}
                    report["beds"].append(
                        {
                            "kind": bed.kind,
                            "mtu": bed.mtu,
                            "parts": list(parts),
                            "ring_packet_size": sizes,
                        }
                    )
                    for system in systems:
                        figures = run_system(bed, bed_plan, system, progress, stem)
                        merge(report["systems"][system.name], figures)
    except KeyboardInterrupt:
        progress.close()
        print("\ninterrupted: the bed was taken down, nothing written", file=sys.stderr)
        return 130
    except (BenchError, BedError) as exc:
        progress.close()
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    progress.close()
    if source_digest() != report["machine"]["source_digest"]:
        report["machine"]["source_changed_during_run"] = True
        print(
            "note: spreadpy/spuser/wackapy changed during the run: restarted daemons and later"
            " clients ran other code than the first ones",
            file=sys.stderr,
        )
    if len(systems) > 1:
        report["comparison"] = compare(report["systems"][OURS], report["systems"][PEER])
    json_path = stem.with_suffix(".json")
    json_path.write_text(json.dumps(report, indent=1) + "\n")
    print(render(report))
    written = [] if args.no_plots else plot(report, stem)
    print(f"\nwritten: {json_path}" + "".join(f", {p.name}" for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())

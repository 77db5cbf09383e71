"""Tests for spreadpy.evscheck: hand-built traces, one minimal mutation per property, a random
reference model of a correct EVS system (every run must pass), and the command line."""

from __future__ import annotations

import copy
import json
import random
import subprocess
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from spreadpy import evscheck as ec
from spreadpy.evscheck import (
    EVS1,
    EVS2,
    EVS3,
    EVS4,
    EVS5,
    EVS6,
    EVS7,
    EVS8,
    EVS9,
    EVS10,
    EVS11,
    EVS12,
    EVS13,
    EVS14,
    EVS15,
    EVS16,
    TRACE,
    EvsChecker,
    Violation,
    check_trace,
    format_timeline,
)

Event = dict[str, object]
ALL3 = ["n1", "n2", "n3"]


# ---- builder ------------------------------------------------------------------------------


class Trace:
    """Writes a trace the way the simulator would, one call per protocol step.

    Time advances by 10 ms per event. Message ids are "<node>:<counter>"; seq numbers count up
    per ring. `install(vid, members)` does the usual view change at every member: a transitional
    view (the members coming from the same regular view) then the regular one; `trans`/`reg_view`
    do the two halves so a test can deliver in between.
    """

    def __init__(self, nodes: Iterable[str], ringseq: int = 1) -> None:
        self.events: list[Event] = []
        self.t = 0.0
        self.reg: dict[str, str] = {}
        self.cur: dict[str, str] = {}
        self.alive: dict[str, bool] = {}
        self.counter: dict[str, int] = {}
        self.ring_seq: dict[str, int] = {}
        self.members: dict[str, list[str]] = {}
        self.svc: dict[str, str] = {}
        self.ids: dict[str, str] = {}
        self.seqs: dict[str, tuple[str, int]] = {}
        for n in nodes:
            self.alive[n] = True
            self.conf(n, "reg", f"{ringseq}.{n}", [n])

    def emit(self, **ev: object) -> Event:
        self.t = round(self.t + 0.01, 6)
        out: Event = {"t": self.t, **ev}
        self.events.append(out)
        return out

    def conf(self, node: str, kind: str, vid: str, members: list[str]) -> None:
        self.emit(node=node, ev="conf", kind=kind, conf=vid, members=sorted(members))
        self.cur[node] = vid
        self.members[vid] = sorted(members)
        if kind == "reg":
            self.reg[node] = vid

    def trans(self, vid: str, members: list[str], nodes: list[str] | None = None) -> None:
        old = dict(self.reg)
        for n in nodes if nodes is not None else members:
            together = [q for q in members if old.get(q) == old[n] and self.alive[q]]
            self.conf(n, "trans", f"{old[n]}>{vid}", together)

    def reg_view(self, vid: str, members: list[str], nodes: list[str] | None = None) -> None:
        for n in nodes if nodes is not None else members:
            self.conf(n, "reg", vid, members)

    def install(self, vid: str, members: list[str]) -> None:
        self.trans(vid, members)
        self.reg_view(vid, members)

    def send(self, node: str, svc: str = "agreed") -> str:
        self.counter[node] = self.counter.get(node, 0) + 1
        mid = f"{node}:{self.counter[node]}"
        self.svc[mid] = svc
        self.emit(node=node, ev="send", id=mid, svc=svc, size=100)
        return mid

    def seq(self, mid: str, seq: int | None = None) -> None:
        node = mid.split(":")[0]
        ring = self.reg[node]
        if seq is None:
            seq = self.ring_seq.get(ring, 0) + 1
        self.ring_seq[ring] = max(seq, self.ring_seq.get(ring, 0))
        self.emit(node=node, ev="seq", id=mid, conf=ring, seq=seq)
        self.seqs[mid] = (ring, seq)

    def recv(self, node: str, mid: str) -> None:
        ring, seq = self.seqs[mid]
        self.emit(node=node, ev="recv", id=mid, conf=ring, seq=seq)

    def deliver(self, node: str, mid: str) -> None:
        self.emit(node=node, ev="deliver", id=mid, svc=self.svc[mid], conf=self.cur[node])

    def mcast(self, node: str, svc: str = "agreed", to: list[str] | None = None) -> str:
        """send + seq, recv at every member of the sender's view, deliver at `to` (default all)."""
        mid = self.send(node, svc)
        self.seq(mid)
        group = self.members[self.reg[node]]
        for q in group:
            if q != node:
                self.recv(q, mid)
        for q in to if to is not None else group:
            self.deliver(q, mid)
        return mid

    def crash(self, node: str) -> None:
        self.alive[node] = False
        self.emit(node=node, ev="crash")

    def restart(self, node: str, vid: str) -> None:
        self.alive[node] = True
        self.emit(node=node, ev="restart")
        self.conf(node, "reg", vid, [node])

    def partition(self, *groups: list[str]) -> None:
        self.emit(ev="partition", groups=[list(g) for g in groups])

    def heal(self) -> None:
        self.emit(ev="heal")

    def quiesce(self) -> None:
        self.emit(ev="quiesce")

    def end(self) -> None:
        self.emit(ev="end")


# ---- correct scenarios ------------------------------------------------------------------------


def crash_run() -> Trace:
    """3 nodes form 2.n1; every service; n3 crashes; n1, n2 move through a transitional view
    {n1, n2} to 3.n1, delivering there what is left of 2.n1 (n3's last message, which only they
    hold, and a SAFE message n3 never acknowledged)."""
    b = Trace(ALL3)
    b.install("2.n1", ALL3)
    for node, svc in [
        ("n1", "agreed"), ("n2", "safe"), ("n3", "fifo"), ("n1", "causal"),
        ("n2", "reliable"), ("n3", "unreliable"),
    ]:  # fmt: skip
        b.ids[f"{node}-{svc}"] = b.mcast(node, svc)
    x = b.ids["x"] = b.send("n3", "agreed")  # n1 and n2 get it; n3 crashes before delivering
    b.seq(x)
    b.recv("n1", x)
    b.recv("n2", x)
    a = b.ids["a"] = b.send("n1", "agreed")  # n2 has it, n3 never will
    b.seq(a)
    b.recv("n2", a)
    s = b.ids["s"] = b.send("n2", "safe")  # not safe in 2.n1: n3 never received it
    b.seq(s)
    b.recv("n1", s)
    b.crash("n3")
    b.trans("3.n1", ["n1", "n2"])
    for m in (x, a, s):
        b.deliver("n1", m)
        b.deliver("n2", m)
    b.reg_view("3.n1", ["n1", "n2"])
    b.ids["after"] = b.mcast("n2", "safe")
    b.ids["last"] = b.mcast("n1", "agreed")
    b.quiesce()
    b.end()
    return b


def partition_run() -> Trace:
    """3 nodes in 2.n1, partition {n1,n2} | {n3}, each side moves on and talks, heal, merge."""
    b = Trace(ALL3)
    b.install("2.n1", ALL3)
    b.mcast("n1", "agreed")
    b.mcast("n3", "safe")
    b.partition(["n1", "n2"], ["n3"])
    a = b.send("n1", "agreed")  # n3 never hears of it
    b.seq(a)
    b.recv("n2", a)
    c = b.send("n3", "agreed")  # sequenced by n3 just before the ring broke; only n3 has it
    b.seq(c)
    b.trans("3.n1", ["n1", "n2"])
    b.deliver("n1", a)
    b.deliver("n2", a)
    b.reg_view("3.n1", ["n1", "n2"])
    b.trans("3.n3", ["n3"])
    b.deliver("n3", c)
    b.reg_view("3.n3", ["n3"])
    b.mcast("n2", "fifo")
    b.mcast("n3", "causal")
    b.mcast("n3", "safe")
    b.heal()
    b.quiesce()
    b.install("4.n1", ALL3)
    b.mcast("n3", "agreed")
    b.ids["last"] = b.mcast("n1", "safe")
    b.end()
    return b


def restart_run() -> Trace:
    """n3 crashes and restarts as a new incarnation (singleton 4.n3, above its old 2.n1), then
    merges back; its message counter continues."""
    b = Trace(ALL3)
    b.install("2.n1", ALL3)
    b.mcast("n3", "agreed")
    b.crash("n3")
    b.install("3.n1", ["n1", "n2"])
    b.mcast("n1", "agreed")
    b.restart("n3", "4.n3")
    b.mcast("n3", "safe")  # alone in its singleton view
    b.install("5.n1", ALL3)
    b.mcast("n3", "agreed")
    b.mcast("n2", "safe")
    b.quiesce()
    b.end()
    return b


SCENARIOS: dict[str, Callable[[], Trace]] = {
    "crash": crash_run,
    "partition": partition_run,
    "restart": restart_run,
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_correct_scenarios_pass(name: str) -> None:
    events = SCENARIOS[name]().events
    assert check_trace(events) == []
    assert check_trace(events, liveness=False) == []


# ---- mutation helpers -----------------------------------------------------------------------


def find(events: list[Event], **match: object) -> int:
    for i, ev in enumerate(events):
        if all(ev.get(k) == v for k, v in match.items()):
            return i
    raise LookupError(match)


def drop(events: list[Event], **match: object) -> list[Event]:
    out = copy.deepcopy(events)
    del out[find(out, **match)]
    return out


def first_prop(events: list[Event], **kw: bool) -> str | None:
    found = check_trace(events, **kw)
    return found[0].prop if found else None


# ---- one minimal mutation per property ------------------------------------------------------


def test_evs1_duplicate_delivery() -> None:
    ev = copy.deepcopy(crash_run().events)
    i = find(ev, ev="deliver", node="n2", id="n1:1")
    ev.insert(i + 1, dict(ev[i]))
    found = check_trace(ev)
    assert found[0].prop == EVS1
    assert found[0].node == "n2"
    assert "n1:1" in found[0].detail


def test_evs1_view_installed_twice() -> None:
    ev = copy.deepcopy(crash_run().events)
    i = find(ev, ev="conf", node="n1", conf="2.n1")
    ev.insert(i + 1, dict(ev[i]))
    assert first_prop(ev) == EVS1


def test_evs2_self_inclusion() -> None:
    ev = copy.deepcopy(partition_run().events)
    i = find(ev, ev="conf", node="n3", conf="2.n1>3.n3")
    ev[i]["members"] = []
    assert first_prop(ev) == EVS2


def test_evs3_members_disagree() -> None:
    ev = copy.deepcopy(crash_run().events)
    i = find(ev, ev="conf", node="n2", conf="3.n1", kind="reg")
    ev[i]["members"] = ["n1", "n2", "n3"]
    assert first_prop(ev) == EVS3


def test_evs3_regular_ids_must_grow_across_restart() -> None:
    ev = copy.deepcopy(restart_run().events)
    i = find(ev, ev="conf", node="n3", conf="4.n3")
    ev[i]["conf"] = "2.n0"  # (2, "n0") < (2, "n1"), n3's last view before its crash
    found = check_trace(ev, liveness=False)
    assert found[0].prop == EVS3
    assert "2.n0" in found[0].detail


def test_evs4_regular_after_regular() -> None:
    ev = drop(restart_run().events, ev="conf", node="n2", conf="2.n1>3.n1")
    assert first_prop(ev) == EVS4


def test_evs4_first_view_not_singleton() -> None:
    ev = drop(crash_run().events, ev="conf", node="n2", conf="1.n2")
    assert first_prop(ev) == EVS4


def test_evs4_transitional_not_within_next_regular() -> None:
    b = Trace(ALL3)
    b.install("2.n1", ALL3)
    b.crash("n3")
    for node in ("n1", "n2"):  # both claim n3 moved with them, but 3.n1 is {n1, n2}
        b.conf(node, "trans", "2.n1>3.n1", ALL3)
    b.reg_view("3.n1", ["n1", "n2"])
    found = check_trace(b.events, liveness=False)
    assert found[0].prop == EVS4
    assert "not within 3.n1" in found[0].detail


@pytest.mark.parametrize("n2_first", [False, True])
def test_evs5_member_of_transitional_view_goes_elsewhere(n2_first: bool) -> None:
    # No partition, pause or crash after the old view: only packet loss could explain it, and
    # the core must bring n2 along (it installs the new view late when it learns of it).
    b = Trace(ALL3)
    b.crash("n3")
    b.install("2.n1", ["n1", "n2"])

    def n1_moves() -> None:  # n1: 2.n1>3.n1 {n1, n2}: "n2 moves with me"
        b.conf("n1", "trans", "2.n1>3.n1", ["n1", "n2"])
        b.conf("n1", "reg", "3.n1", ["n1", "n2"])

    def n2_moves() -> None:  # n2 did not fail but went elsewhere
        b.conf("n2", "trans", "2.n1>3.n2", ["n2"])
        b.conf("n2", "reg", "3.n2", ["n2"])

    for step in (n2_moves, n1_moves) if n2_first else (n1_moves, n2_moves):
        step()
    found = check_trace(b.events, liveness=False)
    assert [v.prop for v in found] == [EVS5]
    assert found[0].node == ("n1" if n2_first else "n2")
    # Totem cannot promise this when the last recovery token is lost: relaxed mode allows it...
    assert check_trace(b.events, liveness=False, strict_transitional=False) == []
    # ... but n1 may not go on claiming that n2 moved with it.
    b.conf("n1", "trans", "3.n1>4.n1", ["n1", "n2"])
    found = check_trace(b.events, liveness=False, strict_transitional=False)
    assert [v.prop for v in found] == [EVS5]
    assert "n2 never installed 3.n1" in found[0].detail


@pytest.mark.parametrize("n2_first", [False, True])
@pytest.mark.parametrize("cut", ["partition", "pause"])
def test_evs5_member_cut_off_after_installing_counts_as_failed(n2_first: bool, cut: str) -> None:
    b = Trace(ALL3)
    b.install("2.n1", ALL3)
    b.crash("n3")
    if cut == "partition":
        b.partition(["n1"], ["n2", "n3"])  # after n2 installed 2.n1: n1 cannot tell it crashed
    else:
        b.emit(node="n2", ev="pause")
        b.emit(node="n2", ev="resume")
    moves = [
        lambda: (
            b.conf("n1", "trans", "2.n1>3.n1", ["n1", "n2"]),
            b.conf("n1", "reg", "3.n1", ["n1", "n2"]),
        ),
        lambda: (b.conf("n2", "trans", "2.n1>3.n2", ["n2"]), b.conf("n2", "reg", "3.n2", ["n2"])),
    ]
    for step in reversed(moves) if n2_first else moves:
        step()
    assert check_trace(b.events, liveness=False) == []


def test_evs5_member_never_was_in_the_old_view() -> None:
    b = Trace(ALL3)
    b.trans("2.n1", ALL3, nodes=["n1", "n2"])  # n3 is a member of 2.n1 but never installs it
    b.reg_view("2.n1", ALL3, nodes=["n1", "n2"])
    b.conf("n1", "trans", "2.n1>3.n1", ["n1", "n3"])  # "n3 moves from 2.n1 with me"
    found = check_trace(b.events, liveness=False, strict_transitional=False)
    assert [v.prop for v in found] == [EVS5]
    assert "n3 never installed 2.n1" in found[0].detail


def test_evs6_sequenced_outside_the_originators_view() -> None:
    ev = copy.deepcopy(crash_run().events)
    ev[find(ev, ev="seq", id="n1:1")]["conf"] = "1.n1"  # n1's singleton, which it has left
    found = check_trace(ev)
    assert found[0].prop == EVS6
    assert found[0].node == "n1" and "sequenced in 1.n1" in found[0].detail


def test_evs6_delivery_tagged_with_another_view() -> None:
    ev = copy.deepcopy(crash_run().events)
    ev[find(ev, ev="deliver", node="n2", id="n1:1")]["conf"] = "1.n2"
    found = check_trace(ev)
    assert [v.prop for v in found] == [EVS6]


def test_evs6_delivery_in_a_later_regular_view() -> None:
    b = Trace(ALL3)
    b.install("2.n1", ALL3)
    m = b.send("n1", "agreed")
    b.seq(m)
    for q in ("n2", "n3"):
        b.recv(q, m)
    for q in ALL3:
        b.deliver(q, m)
    b.install("3.n1", ALL3)
    assert check_trace(b.events, liveness=False) == []
    i = find(b.events, ev="deliver", node="n3", id=m)
    ev = copy.deepcopy(b.events)
    moved = ev.pop(i)
    ev.append(moved | {"conf": "3.n1"})  # n3 delivers it only after installing 3.n1
    # n3's move 2.n1 -> 3.n1 is judged when it installs 3.n1, before the late delivery: it left
    # the transitional view without n1's message (EVS-10) and so differs from n1 and n2 (EVS-8).
    # The late delivery itself is EVS-6.
    assert [v.prop for v in check_trace(ev, liveness=False)] == [EVS10, EVS8, EVS6]


def test_evs7_sender_never_delivers_its_own() -> None:
    b = crash_run()
    ev = drop(b.events, ev="deliver", node="n1", id=b.ids["last"])
    found = check_trace(ev)
    assert found[0].prop == EVS7
    assert found[0].node == "n1"


def test_evs7_unsequenced_message_of_live_sender() -> None:
    b = crash_run()
    b.events.pop()  # end
    b.send("n2", "agreed")
    b.end()
    assert first_prop(b.events) == EVS7
    assert check_trace(b.events, liveness=False) == []


def test_evs7_before_next_regular_view() -> None:
    b = crash_run()
    ev = drop(b.events, ev="deliver", node="n2", id=b.ids["s"])
    found = check_trace(ev, liveness=False)
    assert found[0].prop == EVS7
    assert "3.n1" in found[0].detail


def test_evs8_failure_atomicity() -> None:
    # n3's last agreed message reached n1 and n2 in 2.n1; n2 now skips it (originator left).
    b = crash_run()
    ev = drop(b.events, ev="deliver", node="n2", id=b.ids["x"])
    found = check_trace(ev)
    assert found[0].prop == EVS8
    assert b.ids["x"] in found[0].detail


def test_evs9_order_differs() -> None:
    ev = copy.deepcopy(crash_run().events)
    moved = ev.pop(find(ev, ev="deliver", node="n2", id="n1:1"))
    ev.insert(find(ev, ev="deliver", node="n2", id="n2:1") + 1, moved)
    found = check_trace(ev)
    assert found[0].prop == EVS9
    assert found[0].node == "n2"


def test_evs9_order_differs_in_transitional_view() -> None:
    b = Trace(ALL3)
    b.install("2.n1", ALL3)
    x = b.send("n1", "agreed")
    b.seq(x)
    b.recv("n2", x)
    y = b.send("n2", "agreed")
    b.seq(y)
    b.recv("n1", y)
    b.crash("n3")
    b.trans("3.n1", ["n1", "n2"])
    b.deliver("n1", x)
    b.deliver("n1", y)
    b.deliver("n2", y)  # gaps are allowed in a transitional view, disorder is not
    b.deliver("n2", x)
    b.reg_view("3.n1", ["n1", "n2"])
    found = check_trace(b.events, liveness=False)
    assert [v.prop for v in found] == [EVS9]


def test_evs10_skipped_message_of_transitional_member() -> None:
    b = Trace(ALL3)
    b.install("2.n1", ALL3)
    x = b.send("n1", "agreed")
    b.seq(x)
    b.recv("n2", x)
    b.crash("n3")
    b.trans("3.n1", ["n1", "n2"])
    b.deliver("n1", x)
    b.reg_view("3.n1", ["n1", "n2"], nodes=["n1"])
    b.reg_view("3.n1", ["n1", "n2"], nodes=["n2"])  # n2 skipped x, whose sender is in T
    found = check_trace(b.events, liveness=False)
    assert found[0].prop == EVS10
    assert found[0].node == "n2"


def test_evs11_fifo() -> None:
    b = Trace(ALL3)
    b.install("2.n1", ALL3)
    a = b.send("n1", "fifo")
    c = b.send("n1", "fifo")
    b.seq(c)  # the ring sequenced n1's second message first
    b.seq(a)
    for m in (c, a):
        for q in ("n2", "n3"):
            b.recv(q, m)
    for m in (c, a):
        for q in ALL3:
            b.deliver(q, m)
    found = check_trace(b.events)
    assert found[0].prop == EVS11
    assert "FIFO" in found[0].detail


def test_evs11_causal_successor_sequenced_first() -> None:
    # n2 delivers a (seq 5) and answers with c, which the ring sequences at 1, below a. The seq
    # events alone prove it, before anybody delivers c.
    b = Trace(ALL3)
    b.install("2.n1", ALL3)
    a = b.send("n1", "causal")
    b.seq(a, seq=5)
    b.recv("n2", a)
    b.deliver("n2", a)
    c = b.send("n2", "causal")
    b.seq(c, seq=1)
    found = check_trace(b.events, liveness=False)
    assert [v.prop for v in found] == [EVS11]
    assert a in found[0].detail and c in found[0].detail


def test_evs11_causal_edge_seen_at_a_receiver() -> None:
    # Three messages in one ring; seqs put c (n2's answer to a) before a. n3 delivers c then a:
    # in seq order (EVS-9 holds), but against causality.
    b = Trace(ALL3)
    b.install("2.n1", ALL3)
    a = b.send("n1", "agreed")
    b.seq(a, seq=2)
    b.recv("n2", a)
    b.deliver("n2", a)  # no gap yet: seq 1 is not assigned
    c = b.send("n2", "agreed")
    b.seq(c, seq=1)
    b.recv("n3", c)
    b.recv("n3", a)
    b.deliver("n3", c)
    b.deliver("n3", a)
    found = check_trace(b.events, liveness=False)
    assert [v.prop for v in found] == [EVS11, EVS11]
    assert "sequenced at 2.n1#1, below n1:1" in found[0].detail  # at c's seq event
    assert found[1].node == "n3" and "n2 sent after delivering n1:1" in found[1].detail


def test_evs12_delivered_before_and_after_the_same_view() -> None:
    b = Trace(ALL3)
    b.install("2.n1", ALL3)
    x = b.send("n1", "agreed")
    b.seq(x)
    b.recv("n2", x)
    b.deliver("n1", x)  # n1 delivers x in 2.n1
    b.crash("n3")
    b.trans("3.n1", ["n1", "n2"])
    b.deliver("n2", x)  # n2 delivers x in 2.n1>3.n1, which n1 installed after delivering x
    b.reg_view("3.n1", ["n1", "n2"])
    found = check_trace(b.events, liveness=False)
    assert found[0].prop == EVS12
    assert found[0].node == "n2"


def test_evs13_safe_before_everyone_received() -> None:
    ev = copy.deepcopy(crash_run().events)
    moved = ev.pop(find(ev, ev="recv", node="n3", id="n2:1"))
    ev.insert(find(ev, ev="deliver", node="n1", id="n2:1") + 1, moved)  # n3 gets it too late
    found = check_trace(ev)
    assert found[0].prop == EVS13
    assert found[0].node == "n1" and "before n3 received it" in found[0].detail


def test_evs13_safe_member_never_delivers() -> None:
    b = Trace(ALL3)
    b.install("2.n1", ALL3)
    s = b.send("n1", "safe")
    b.seq(s)
    b.recv("n2", s)
    b.recv("n3", s)
    b.deliver("n1", s)
    b.deliver("n2", s)
    b.partition(["n1", "n2"], ["n3"])
    b.install("3.n1", ["n1", "n2"])
    b.install("3.n3", ["n3"])  # n3 did not fail and never delivered the SAFE message
    found = check_trace(b.events, liveness=False)
    assert found[0].prop == EVS13
    assert found[0].node == "n3"


def test_evs14_safe_blocks_later() -> None:
    b = Trace(ALL3)
    b.install("2.n1", ALL3)
    s = b.send("n1", "safe")
    b.seq(s)
    g = b.send("n2", "agreed")
    b.seq(g)
    for q, m in (("n2", s), ("n3", s), ("n1", g), ("n3", g)):
        b.recv(q, m)
    for q in ALL3:
        b.deliver(q, s)
        b.deliver(q, g)
    assert check_trace(b.events, liveness=False) == []
    ev = copy.deepcopy(b.events)
    i = find(ev, ev="deliver", node="n3", id=s)
    j = find(ev, ev="deliver", node="n3", id=g)
    ev[i], ev[j] = ev[j], ev[i]
    found = check_trace(ev, liveness=False)
    assert found[0].prop == EVS14
    assert found[0].node == "n3"


def test_evs15_service_mismatch() -> None:
    ev = copy.deepcopy(crash_run().events)
    ev[find(ev, ev="deliver", node="n2", id="n1:1")]["svc"] = "safe"
    assert first_prop(ev) == EVS15


def test_evs15_delivered_before_sent() -> None:
    ev = copy.deepcopy(crash_run().events)
    i = find(ev, ev="send", id="n1:1")
    j = find(ev, ev="deliver", node="n2", id="n1:1")
    ev.insert(i, ev.pop(j))  # n2 delivers n1:1 before n1 sent it
    found = check_trace(ev)
    assert found[0].prop == EVS15
    assert found[0].node == "n2"


def test_evs15_unknown_id() -> None:
    b = crash_run()
    ev = copy.deepcopy(b.events)
    ev.insert(len(ev) - 3, {"t": 9.0, "node": "n1", "ev": "deliver", "id": "n9:1",
                            "svc": "agreed", "conf": "3.n1"})  # fmt: skip
    assert first_prop(ev) == EVS15


def test_evs16_member_misses_message_of_final_view() -> None:
    b = partition_run()
    ev = drop(b.events, ev="deliver", node="n2", id=b.ids["last"])
    found = check_trace(ev)
    assert [v.prop for v in found] == [EVS16]
    assert found[0].node == "n2"
    assert check_trace(ev, liveness=False) == []


def test_evs16_views_do_not_converge() -> None:
    b = Trace(ALL3)
    b.install("2.n1", ALL3)
    b.partition(["n1", "n2"], ["n3"])
    b.install("3.n1", ["n1", "n2"])
    b.install("3.n3", ["n3"])
    b.heal()
    b.end()  # healed but never merged
    found = check_trace(b.events)
    assert [v.prop for v in found] == [EVS16]
    assert "different views" in found[0].detail
    # Still partitioned at the end: each side converged on its own, which is fine.
    ev = [e for e in b.events if e.get("ev") != "heal"]
    assert check_trace(ev) == []


def test_trace_event_at_crashed_node() -> None:
    ev = copy.deepcopy(crash_run().events)
    i = find(ev, ev="crash", node="n3")
    ev.insert(i + 1, {"t": ev[i]["t"], "node": "n3", "ev": "send", "id": "n3:99", "svc": "safe",
                      "size": 1})  # fmt: skip
    assert first_prop(ev) == TRACE


def test_trace_missing_field_and_unknown_event() -> None:
    assert first_prop([{"t": 0.0, "ev": "conf", "node": "n1"}]) == TRACE
    assert first_prop([{"t": 0.0, "ev": "nonsense"}]) == TRACE
    assert first_prop([{"ev": "heal"}]) == TRACE


def test_trace_fault_after_quiesce() -> None:
    b = crash_run()
    b.events.pop()
    b.crash("n1")
    b.end()
    assert first_prop(b.events) == TRACE


# ---- liveness corner cases -------------------------------------------------------------------


def test_no_end_event_means_no_liveness() -> None:
    b = partition_run()
    ev = drop(b.events, ev="deliver", node="n2", id=b.ids["last"])
    ev.pop()  # end
    assert check_trace(ev) == []


def test_paused_node_at_end_is_not_required() -> None:
    b = Trace(ALL3)
    b.install("2.n1", ALL3)
    b.emit(node="n3", ev="pause")
    b.install("3.n1", ["n1", "n2"])  # n1 and n2 move on without the frozen n3
    b.mcast("n1", "safe")
    b.quiesce()
    b.end()
    assert check_trace(b.events) == []
    b.events.insert(len(b.events) - 2, {"t": b.t, "node": "n3", "ev": "resume"})
    found = check_trace(b.events)  # resumed, n3 counts again: it never rejoined
    assert [v.prop for v in found] == [EVS16]


def test_one_way_cut_at_the_end_excuses_its_nodes() -> None:
    b = Trace(ALL3)
    b.install("2.n1", ALL3)
    b.emit(ev="partition", groups=[ALL3], oneway=[["n1", "n3"]])
    b.install("3.n1", ["n1", "n2"])
    b.install("3.n3", ["n3"])
    b.end()
    assert check_trace(b.events) == []


def test_final_view_must_be_exactly_the_live_nodes() -> None:
    b = Trace(ALL3)
    b.install("2.n1", ALL3)
    b.crash("n3")
    b.end()  # n1, n2 never noticed
    found = check_trace(b.events)
    assert [v.prop for v in found] == [EVS16]
    assert "live connected nodes are {n1,n2}" in found[0].detail


def test_node_may_start_with_restart() -> None:
    b = Trace(["n1"])
    b.emit(node="n2", ev="restart")
    b.conf("n2", "reg", "1.n2", ["n2"])
    b.alive["n2"] = True
    b.install("2.n1", ["n1", "n2"])
    b.end()
    assert check_trace(b.events) == []


def test_trace_contract_violations() -> None:
    b = crash_run()
    ev = copy.deepcopy(b.events)
    ev[find(ev, ev="seq", id="n1:1")]["node"] = "n2"  # seq not at the originator
    assert first_prop(ev) == TRACE
    ev = copy.deepcopy(b.events)
    ev.append({"t": 99.0, "ev": "heal"})  # after end
    assert [v.prop for v in check_trace(ev)] == [TRACE]
    ev = copy.deepcopy(b.events)
    ev[find(ev, ev="recv", id="n1:1")]["seq"] = 42  # recv disagrees with the seq event
    assert first_prop(ev) == TRACE


def test_no_faults_at_all() -> None:
    b = Trace(["n1", "n2"])
    b.install("2.n1", ["n1", "n2"])
    for i in range(20):
        b.mcast("n1" if i % 2 else "n2", sorted(ec.SERVICES)[i % 6])
    b.end()
    assert check_trace(b.events) == []


# ---- a random reference model: correct EVS histories must pass -------------------------------


class MRing:
    """One regular view of the model: its sequence space and what each member holds."""

    def __init__(self, rid: str, members: list[str]) -> None:
        self.id = rid
        self.members = list(members)
        self.msgs: list[tuple[str, str, str]] = []  # (mid, originator, svc); seq = index + 1
        self.held: dict[str, set[int]] = {m: set() for m in members}
        self.aru: dict[str, int] = dict.fromkeys(members, 0)  # contiguous prefix held
        self.nxt: dict[str, int] = dict.fromkeys(members, 0)  # next index to deliver (ordered)


@dataclass
class Model:
    """A small, obviously correct EVS system, driven by a seeded rng, writing a trace.

    One ring per component; the ring sequences queued messages in send order; nodes receive
    packets in any order; agreed delivery needs the contiguous prefix, SAFE needs every member's
    prefix. A crash, partition or merge reconfigures atomically: members coming from the same
    old ring pool what they hold, deliver in the old view up to the first hole or unsafe SAFE
    message, install the transitional view, deliver the rest (after a hole only from transitional
    members), install the new view. At the end: resume, heal, merge, flush.
    """

    seed: int
    n: int = 4
    steps: int = 300
    rng: random.Random = field(init=False)
    b: Trace = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.nodes = [f"n{i}" for i in range(1, self.n + 1)]
        self.b = Trace(self.nodes)
        self.k = 2
        self.alive = dict.fromkeys(self.nodes, True)
        self.paused: set[str] = set()
        self.pending: dict[str, list[str]] = {x: [] for x in self.nodes}
        self.ring_of = {x: MRing(f"1.{x}", [x]) for x in self.nodes}
        self.groups: list[set[str]] | None = None

    # -- helpers
    def active(self) -> list[str]:
        return [x for x in self.nodes if self.alive[x] and x not in self.paused]

    def rings(self) -> list[MRing]:
        seen: dict[str, MRing] = {}
        for x in self.nodes:
            if self.alive[x]:
                seen.setdefault(self.ring_of[x].id, self.ring_of[x])
        return list(seen.values())

    def hold(self, ring: MRing, p: str, idx: int) -> None:
        ring.held[p].add(idx)
        while ring.aru[p] in ring.held[p]:
            ring.aru[p] += 1

    def recv(self, ring: MRing, p: str, idx: int, *, early: bool = True) -> None:
        mid, _orig, svc = ring.msgs[idx]
        self.b.emit(node=p, ev="recv", id=mid, conf=ring.id, seq=idx + 1)
        self.hold(ring, p, idx)
        if svc == "reliable" or (svc == "unreliable" and early and self.rng.random() < 0.7):
            self.b.deliver(p, mid)

    def progress(self, p: str) -> None:
        ring = self.ring_of[p]
        safe_line = min(ring.aru.values())
        while ring.nxt[p] < len(ring.msgs):
            idx = ring.nxt[p]
            if idx not in ring.held[p]:
                break
            mid, _orig, svc = ring.msgs[idx]
            if svc in ec.ORDERED:
                if svc == "safe" and idx >= safe_line:
                    break
                self.b.deliver(p, mid)
            ring.nxt[p] += 1

    def sequence(self, ring: MRing, p: str) -> None:
        mid = self.pending[p].pop(0)
        svc = self.b.svc[mid]
        ring.msgs.append((mid, p, svc))
        idx = len(ring.msgs) - 1
        self.b.emit(node=p, ev="seq", id=mid, conf=ring.id, seq=idx + 1)
        self.hold(ring, p, idx)
        if svc in ("reliable", "unreliable"):
            self.b.deliver(p, mid)

    def reconfigure(self, comps: list[list[str]]) -> None:
        olds = {self.ring_of[p].id: self.ring_of[p] for c in comps for p in c}
        safe_upto = {rid: min(r.aru.values()) for rid, r in olds.items()}
        for comp in comps:
            comp = sorted(comp, key=ec._natural)
            new_id = f"{self.k}.{comp[0]}"
            self.k += 1
            by_old: dict[str, list[str]] = {}
            for p in comp:
                by_old.setdefault(self.ring_of[p].id, []).append(p)
            for rid, group in by_old.items():
                ring = olds[rid]
                union: set[int] = set().union(*(ring.held[p] for p in group))
                for p in group:
                    for idx in sorted(union - ring.held[p]):
                        self.recv(ring, p, idx, early=False)
                stop = len(ring.msgs)
                for idx, (_mid, _orig, svc) in enumerate(ring.msgs):
                    if idx not in union or (svc == "safe" and idx >= safe_upto[rid]):
                        stop = idx
                        break
                for p in group:  # (a) still in the old regular view
                    while ring.nxt[p] < stop:
                        mid, _orig, svc = ring.msgs[ring.nxt[p]]
                        if svc in ec.ORDERED:
                            self.b.deliver(p, mid)
                        ring.nxt[p] += 1
                for p in group:  # (b) transitional view, (c) the rest, (d) new regular view
                    self.b.conf(p, "trans", f"{rid}>{new_id}", group)
                    hole = False
                    for idx in range(stop, len(ring.msgs)):
                        mid, orig, svc = ring.msgs[idx]
                        if idx not in union:
                            hole = True
                        elif svc in ec.ORDERED and (orig in group or not hole):
                            self.b.deliver(p, mid)
                    self.b.conf(p, "reg", new_id, comp)
            new = MRing(new_id, comp)
            for p in comp:
                self.ring_of[p] = new

    # -- actions
    def a_send(self) -> None:
        if cands := self.active():
            p = self.rng.choice(cands)
            mid = self.b.send(p, self.rng.choice(sorted(ec.SERVICES)))
            self.pending[p].append(mid)

    def a_token(self) -> None:
        rings = [r for r in self.rings() if not self.paused.intersection(r.members)]
        if rings:
            ring = self.rng.choice(rings)
            for p in ring.members:
                for _ in range(self.rng.randint(0, 2)):
                    if self.pending[p]:
                        self.sequence(ring, p)

    def a_receive(self) -> None:
        if not (cands := self.active()):
            return
        p = self.rng.choice(cands)
        ring = self.ring_of[p]
        missing = [i for i in range(len(ring.msgs)) if i not in ring.held[p]]
        if missing:
            self.recv(ring, p, self.rng.choice(missing[:3]))
            if self.rng.random() < 0.5:
                self.progress(p)

    def a_progress(self) -> None:
        if cands := self.active():
            self.progress(self.rng.choice(cands))

    def a_crash(self) -> None:
        live = [x for x in self.nodes if self.alive[x]]
        if self.paused or not live:
            return
        p = self.rng.choice(live)
        self.b.crash(p)
        self.alive[p] = False
        self.pending[p] = []
        rest = [x for x in self.ring_of[p].members if self.alive[x]]
        if rest:
            self.reconfigure([rest])

    def a_restart(self) -> None:
        if dead := [x for x in self.nodes if not self.alive[x]]:
            p = self.rng.choice(dead)
            vid = f"{self.k}.{p}"
            self.k += 1
            self.b.restart(p, vid)
            self.alive[p] = True
            self.ring_of[p] = MRing(vid, [p])

    def a_partition(self) -> None:
        if self.paused:
            return
        order = list(self.nodes)
        self.rng.shuffle(order)
        cut = self.rng.randint(1, self.n - 1)
        groups = [set(order[:cut]), set(order[cut:])]
        self.b.partition(*(sorted(g, key=ec._natural) for g in groups))
        self.groups = groups
        comps: list[list[str]] = []
        for ring in self.rings():
            parts = [[m for m in ring.members if m in g] for g in groups]
            parts = [part for part in parts if part]
            if len(parts) > 1:
                comps.extend(parts)
        if not comps:
            return
        # The first side notices at once; the rest keep using their old ring for a while:
        # sequencing, receiving among themselves, delivering what is deliverable there.
        self.reconfigure(comps[:1])
        for part in comps[1:]:
            ring = self.ring_of[part[0]]
            for p in part:
                while self.pending[p] and self.rng.random() < 0.5:
                    self.sequence(ring, p)
            for p in part:
                for idx in range(len(ring.msgs)):
                    if idx not in ring.held[p] and self.rng.random() < 0.7:
                        self.recv(ring, p, idx)
                self.progress(p)
        if comps[1:]:
            self.reconfigure(comps[1:])

    def a_heal(self) -> None:
        if self.groups is not None:
            self.b.heal()
            self.groups = None

    def a_merge(self) -> None:
        if self.paused:
            return
        by_group: dict[int, list[MRing]] = {}
        for ring in self.rings():
            g = 0 if self.groups is None else int(ring.members[0] in self.groups[1])
            by_group.setdefault(g, []).append(ring)
        choices = [rs for rs in by_group.values() if len(rs) > 1]
        if choices:
            rs = self.rng.sample(self.rng.choice(choices), 2)
            self.reconfigure([[m for r in rs for m in r.members]])

    def a_pause(self) -> None:
        if not self.paused and (cands := self.active()):
            p = self.rng.choice(cands)
            self.b.emit(node=p, ev="pause")
            self.paused.add(p)

    def a_resume(self) -> None:
        for p in sorted(self.paused):
            self.b.emit(node=p, ev="resume")
        self.paused.clear()

    ACTIONS = (
        ("a_send", 30), ("a_token", 15), ("a_receive", 40), ("a_progress", 10), ("a_crash", 2),
        ("a_restart", 2), ("a_partition", 2), ("a_heal", 2), ("a_merge", 4), ("a_pause", 1),
        ("a_resume", 2),
    )  # fmt: skip

    def run(self) -> list[Event]:
        names = [a for a, _ in self.ACTIONS]
        weights = [w for _, w in self.ACTIONS]
        for _ in range(self.steps):
            getattr(self, self.rng.choices(names, weights)[0])()
        self.a_resume()
        self.b.quiesce()
        self.a_heal()
        live = [x for x in self.nodes if self.alive[x]]
        if len(self.rings()) > 1:
            self.reconfigure([live])
        if live:
            ring = self.ring_of[live[0]]
            while any(self.pending[p] for p in ring.members):
                for p in ring.members:
                    while self.pending[p]:
                        self.sequence(ring, p)
            for p in ring.members:
                for idx in range(len(ring.msgs)):
                    if idx not in ring.held[p]:
                        self.recv(ring, p, idx)
            for p in ring.members:
                self.progress(p)
        self.b.end()
        return self.b.events


@pytest.mark.parametrize("seed", range(60))
def test_model_runs_pass(seed: int) -> None:
    events = Model(seed, n=3 + seed % 3).run()
    assert any(e["ev"] == "conf" and e["kind"] == "trans" for e in events)
    found = check_trace(events)
    assert found == [], format_timeline(events, found[0].t, 0.2) if found else ""


@pytest.mark.parametrize("seed", range(20))
def test_model_mutations_are_caught_at_the_mutation(seed: int) -> None:
    rng = random.Random(seed)
    events = Model(1000 + seed, n=4).run()
    delivers = [i for i, e in enumerate(events) if e["ev"] == "deliver"]
    confs = [i for i, e in enumerate(events) if e["ev"] == "conf"]
    cases: list[tuple[str, list[Event], int]] = []
    i = rng.choice(delivers)
    ev = copy.deepcopy(events)
    ev.insert(i + 1, dict(ev[i]))
    cases.append((EVS1, ev, i + 1))
    ev = copy.deepcopy(events)
    ev[i]["svc"] = "unreliable" if ev[i]["svc"] != "unreliable" else "agreed"
    cases.append((EVS15, ev, i))
    j = rng.choice(confs)
    ev = copy.deepcopy(events)
    ev[j]["members"] = [m for m in ev[j]["members"] if m != ev[j]["node"]]  # type: ignore[attr-defined]
    cases.append((EVS2, ev, j))
    for prop, ev, at in cases:
        checker = EvsChecker()
        for k, e in enumerate(ev):
            if checker.feed(e):
                assert (k, checker.violations[0].prop) == (at, prop)
                break
        else:
            raise AssertionError(f"{prop} mutation at {at} not caught")


# ---- API details -----------------------------------------------------------------------------


def test_violation_str_is_one_line() -> None:
    v = Violation(EVS9, 1.5, "n2", "two\nlines")
    assert str(v) == "EVS-9 agreed-order at t=1.500000 on n2: two lines"
    assert "on network" in str(Violation(EVS16, 0.0, None, "x"))


def test_streaming_feed_reports_at_the_event() -> None:
    b = crash_run()
    ev = drop(b.events, ev="deliver", node="n2", id=b.ids["x"])
    checker = EvsChecker()
    hits = []
    for i, e in enumerate(ev):
        new = checker.feed(e)
        if new:
            hits.append((i, new[0].prop))
    assert hits[0][1] == EVS8
    assert ev[hits[0][0]]["ev"] == "conf"
    assert checker.first is not None and checker.first.prop == EVS8


def test_max_violations_caps_the_report() -> None:
    ev = copy.deepcopy(crash_run().events)
    for e in ev:
        if e.get("ev") == "deliver":
            e["svc"] = "unreliable" if e["svc"] != "unreliable" else "safe"
    assert len(check_trace(ev, max_violations=3)) == 3


def test_format_timeline() -> None:
    ev = crash_run().events
    t_crash = next(float(e["t"]) for e in ev if e.get("ev") == "crash")  # type: ignore[arg-type]
    text = format_timeline(ev, t_crash, 0.045)
    lines = text.splitlines()
    assert lines[0].split("|")[1].strip() == "net"
    assert [c.strip() for c in lines[0].split("|")[2:]] == ["n1", "n2", "n3"]
    marked = [line for line in lines if line.startswith(">>")]
    assert len(marked) == 1 and "CRASH" in marked[0]
    near = [e for e in ev if abs(float(e["t"]) - t_crash) <= 0.045]  # type: ignore[arg-type]
    assert len(lines) == 2 + len(near)
    assert len(format_timeline(ev, t_crash, 100.0, max_rows=5).splitlines()) == 7


# ---- the command line -------------------------------------------------------------------------


def write_jsonl(path: Path, events: list[Event]) -> None:
    path.write_text("".join(json.dumps(e) + "\n" for e in events))


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good, bad, broken = tmp_path / "seed-1.jsonl", tmp_path / "seed-2.jsonl", tmp_path / "x.jsonl"
    write_jsonl(good, partition_run().events)
    b = crash_run()
    write_jsonl(bad, drop(b.events, ev="deliver", node="n2", id=b.ids["x"]))
    broken.write_text('{"t": 0.0, "ev": "heal"}\nnot json\n')
    assert ec.main([str(good)]) == 0
    assert capsys.readouterr().out.splitlines() == [f"{good}: ok", "1 passed, 0 failed"]
    assert ec.main([str(good), str(bad), str(broken), "--timeline", "0.05"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{good}: ok"
    assert out[1].startswith(f"{bad}: {EVS8} at t=")
    assert any(line.startswith(f"{broken}: {TRACE}") for line in out)
    assert out[-1] == "1 passed, 2 failed"


def test_cli_as_module(tmp_path: Path) -> None:
    path = tmp_path / "seed-7.jsonl"
    write_jsonl(path, restart_run().events)
    proc = subprocess.run(
        [sys.executable, "-m", "spreadpy.evscheck", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [f"{path}: ok", "1 passed, 0 failed"]

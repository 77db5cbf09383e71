"""Named, scripted simulator runs for each path of the ring and membership protocol.

Each scenario ends with Simulation.finish(), which heals the network, waits for one ring of all
live processors and judges the whole trace with the EVS checker (every property of
shared/spec/totem.md §3). So every test asserts the EVS properties, plus what it is about.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest

from spreadpy import membership
from spreadpy.membership import FAST_TIMEOUTS, State, TotemConfig
from spreadpy.packets import Service
from spreadpy.sim import SimOptions, Simulation, payload_for, run_seed, trace_digest

DEFAULT = TotemConfig()
FAST = replace(DEFAULT, **FAST_TIMEOUTS)  # type: ignore[arg-type]


def make_sim(
    nodes: int = 3, config: TotemConfig = DEFAULT, seed: int = 1, **net: float
) -> Simulation:
    sim = Simulation(seed, SimOptions(nodes=nodes, **net), config)  # type: ignore[arg-type]
    assert sim.run_until(10.0, sim.settled), "the initial ring did not form"
    return sim


def send_mix(sim: Simulation, count: int, start: float, every_s: float = 0.002) -> None:
    """Every node sends `count` messages of every service level, a few of them large."""
    services = list(Service)
    for i in range(count):
        for node in sim.nodes:
            service = services[(i + node) % len(services)]
            size = 120_000 if i % 17 == 5 else 5_000 if i % 5 == 1 else 60
            sim.at(start + i * every_s, lambda n=node, s=service, z=size: sim.submit(n, s, z))


def regular_views(sim: Simulation, node: int) -> list[tuple[str, list[str]]]:
    name = f"n{node}"
    return [
        (e["conf"], e["members"])
        for e in sim.events
        if e["ev"] == "conf" and e["node"] == name and e["kind"] == "reg"
    ]


def delivered(sim: Simulation, node: int) -> list[str]:
    name = f"n{node}"
    return [e["id"] for e in sim.events if e["ev"] == "deliver" and e["node"] == name]


def run_until_state(sim: Simulation, node: int, state: State, limit_s: float = 10.0) -> None:
    def reached() -> bool:
        proc = sim.nodes[node].proc
        return proc is not None and proc.state is state

    reached_it = sim.run_until(sim.now + limit_s, reached, check_every_s=0)
    assert reached_it, f"n{node} never reached {state}"


def assert_clean(sim: Simulation, restart: list[int] | None = None) -> None:
    violations = sim.finish(restart=restart)
    assert not violations, "\n".join(violations[:5])


def test_stable_ring_delivers_every_service_in_one_order() -> None:
    sim = make_sim(nodes=3)
    send_mix(sim, 40, sim.now + 0.01)
    sim.run_until(sim.now + 2.0)
    assert_clean(sim)
    orders = [delivered(sim, n) for n in sim.nodes]
    assert len(orders[0]) == 3 * 40
    assert orders[0] == orders[1] == orders[2]
    # A 120 KB message crossed the ring in many fragments and arrived intact at every node
    # (the simulator compares every delivered body with what was sent).
    assert any(e["ev"] == "send" and e["size"] == 120_000 for e in sim.events)


def test_payload_names_itself() -> None:
    body = payload_for("n1:7", 64)
    assert len(body) == 64 and body.startswith(b"n1:7|")


@pytest.mark.parametrize("victim", [1, 2, 3])
def test_crash_any_member_under_traffic(victim: int) -> None:
    sim = make_sim(nodes=3)
    send_mix(sim, 30, sim.now + 0.01)
    sim.at(sim.now + 0.03, lambda: sim.crash(victim))
    sim.run_until(sim.now + 5.0)
    survivors = [n for n in sim.nodes if n != victim]
    for node in survivors:
        assert regular_views(sim, node)[-1][1] == [f"n{n}" for n in survivors]
    assert_clean(sim)


@pytest.mark.parametrize("state", [State.GATHER, State.COMMIT, State.RECOVERY])
def test_second_crash_during_each_membership_state(state: State) -> None:
    sim = make_sim(nodes=5)
    send_mix(sim, 20, sim.now + 0.01)
    sim.run_until(sim.now + 0.02)
    sim.crash(5)
    run_until_state(sim, 2, state)
    sim.crash(3)
    sim.run_until(sim.now + 8.0)
    for node in (1, 2, 4):
        assert regular_views(sim, node)[-1][1] == ["n1", "n2", "n4"]
    assert_clean(sim)


def test_restart_before_token_timeout_is_a_new_incarnation() -> None:
    sim = make_sim(nodes=3)
    before = len(regular_views(sim, 1))
    sim.crash(1)
    sim.run_until(sim.now + 0.05)  # far below the token timeout: the others have not noticed
    sim.restart(1)
    sim.run_until(sim.now + 6.0)
    views = regular_views(sim, 1)
    assert len(views) > before + 1, "the new incarnation starts alone, then joins the others"
    seqs = [int(v.split(".")[0]) for v, _ in views]
    assert seqs == sorted(set(seqs)), "ring ids of a node must keep increasing across restarts"
    assert views[-1][1] == ["n1", "n2", "n3"]
    assert_clean(sim)


def test_partition_then_merge() -> None:
    sim = make_sim(nodes=4)
    send_mix(sim, 20, sim.now + 0.01)
    sim.at(sim.now + 0.02, lambda: sim.partition([[1, 2], [3, 4]]))
    sim.run_until(sim.now + 5.0)
    assert regular_views(sim, 1)[-1][1] == ["n1", "n2"]
    assert regular_views(sim, 4)[-1][1] == ["n3", "n4"]
    sim.heal()
    sim.run_until(sim.now + 5.0)
    for node in sim.nodes:
        assert regular_views(sim, node)[-1][1] == ["n1", "n2", "n3", "n4"]
    assert_clean(sim)


def test_merge_of_idle_rings_is_found_by_merge_detect() -> None:
    sim = make_sim(nodes=3)
    sim.partition([[1], [2, 3]])
    sim.run_until(sim.now + 5.0)
    sim.heal()
    # No traffic at all: only the representatives' merge probes can bring them together.
    assert sim.run_until(sim.now + 5.0, sim.settled)
    assert_clean(sim)


def test_pause_longer_than_token_timeout() -> None:
    sim = make_sim(nodes=3)
    send_mix(sim, 30, sim.now + 0.01)
    sim.at(sim.now + 0.02, lambda: sim.pause(2))
    sim.run_until(sim.now + 4.0)
    sim.submit(2, Service.AGREED, 100)  # queued while frozen: must go out in a later ring
    sim.resume(2)
    sim.run_until(sim.now + 5.0)
    assert_clean(sim)


def test_every_packet_duplicated_through_a_membership_change() -> None:
    sim = make_sim(nodes=4, dup=1.0)
    send_mix(sim, 10, sim.now + 0.01)
    sim.at(sim.now + 0.02, lambda: sim.crash(1))
    sim.run_until(sim.now + 6.0)
    assert_clean(sim)


def test_one_way_link_failure_then_heal() -> None:
    sim = make_sim(nodes=3)
    send_mix(sim, 10, sim.now + 0.01)
    sim.partition([[1, 2, 3]], oneway={(1, 2)})
    sim.run_until(sim.now + 8.0)
    assert_clean(sim)


def test_cascading_failures() -> None:
    sim = make_sim(nodes=6)
    send_mix(sim, 20, sim.now + 0.01)
    for i, victim in enumerate((6, 5, 4, 3)):
        sim.at(sim.now + 0.05 + i * 0.3, lambda v=victim: sim.crash(v))
    sim.run_until(sim.now + 10.0)
    assert regular_views(sim, 1)[-1][1] == ["n1", "n2"]
    assert_clean(sim, restart=[3, 4, 5, 6])


def test_sequence_numbers_renumber_before_wrap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(membership, "SEQ_LIMIT", 300)
    sim = make_sim(nodes=3)
    before = len(regular_views(sim, 1))
    send_mix(sim, 60, sim.now + 0.01)
    sim.run_until(sim.now + 6.0)
    assert len(regular_views(sim, 1)) > before, "reaching the limit must force a new ring"
    assert_clean(sim)


def test_token_seq_renumbers_before_wrap(monkeypatch: pytest.MonkeyPatch) -> None:
    # An idle ring parks its token, but a ring with a little traffic all the time passes it
    # thousands of times a second: its token_seq (u32) must not wrap either.
    monkeypatch.setattr(membership, "SEQ_LIMIT", 1000)
    sim = make_sim(nodes=3)
    before = len(regular_views(sim, 1))
    for i in range(400):
        sim.at(sim.now + 0.01 + i * 0.005, lambda: sim.submit(1, Service.AGREED, 60))
    sim.run_until(sim.now + 3.0)
    proc = sim.nodes[1].proc
    assert proc is not None
    assert proc.counters.tokens_forwarded > 1000  # more hops than the limit...
    assert proc.ring.high_seq < 1000 / 2  # ...with far fewer messages...
    assert len(regular_views(sim, 1)) > before  # ...so the token seq renewed the ring
    assert proc._my_token_seq < 1000
    assert_clean(sim)


def test_fast_profile_floods_without_spurious_views() -> None:
    sim = make_sim(nodes=3, config=FAST)
    views_before = sum(1 for e in sim.events if e["ev"] == "conf")
    for i in range(3000):
        sim.at(sim.now + i * 0.0002, lambda: sim.submit(1, Service.AGREED, 1000))
    sim.run_until(sim.now + 3.0)
    assert sum(1 for e in sim.events if e["ev"] == "conf") == views_before
    assert len(delivered(sim, 3)) == 3000
    assert_clean(sim)


def test_same_seed_same_trace() -> None:
    options = SimOptions(nodes=4, loss=0.1, dup=0.05, reorder=0.05, faults="all")
    first = run_seed(7, options)
    second = run_seed(7, options)
    assert trace_digest(first.events) == trace_digest(second.events)


def test_flooding_sender_does_not_starve_others() -> None:
    # One personal window fills the whole ring's window: only the backlog share on the token
    # leaves n2 any room while n1 has 5000 messages queued.
    sim = make_sim(nodes=3, config=replace(DEFAULT, window=20, personal_window=20))
    start = sim.now
    for _ in range(5000):
        sim.submit(1, Service.AGREED, 100)
    sim.run_until(start + 0.002)  # n1's flood is under way
    late = [sim.submit(2, Service.AGREED, 100) for _ in range(5)]
    sim.run_until(start + 10.0)
    order = delivered(sim, 3)
    assert len(order) == 5005
    first_late = order.index(late[0])
    assert first_late > 20, "the flood was not under way yet: the test proves nothing"
    # The backlog share on the token gives n2 its turn every rotation: its messages are not
    # queued behind n1's 5000.
    assert max(order.index(m) for m in late) < 1000
    assert_clean(sim)


def test_ring_never_runs_ahead_of_its_slowest_member() -> None:
    config = replace(DEFAULT, seq_gap_max=100, window=80, personal_window=20)
    sim = make_sim(nodes=3, config=config)
    sim.receive_loss[3] = 0.5  # n3 misses half of what is sent to it
    for _ in range(3000):
        sim.submit(1, Service.AGREED, 1000)
    worst = 0

    def check() -> bool:
        nonlocal worst
        procs = [n.proc for n in sim.nodes.values() if n.proc is not None]
        if all(p.state is State.OPERATIONAL for p in procs):
            high = max(p.ring.high_seq for p in procs)
            lowest = min(p.ring.my_aru for p in procs)
            worst = max(worst, high - lowest)
        return False

    sim.run_until(sim.now + 5.0, check, check_every_s=0)
    # New packets stop once they would be more than seq_gap_max ahead of the safe line, which
    # itself trails the slowest member's aru: a slow receiver throttles the ring.
    assert 0 < worst <= config.seq_gap_max + config.personal_window
    assert_clean(sim)


def test_member_that_cannot_receive_leaves_the_ring() -> None:
    config = replace(DEFAULT, fail_to_receive_s=2.0)
    sim = make_sim(nodes=3, config=config)
    sim.deaf_to_data.add(3)  # tokens and joins reach n3, data never does (pitfall P2)
    for i in range(50):
        sim.at(sim.now + 0.01 * i, lambda: sim.submit(1, Service.SAFE, 100))
    sim.run_until(sim.now + 8.0)
    # n3 holds back every SAFE message until it gives up and leaves; the others then deliver
    # them (in a ring without n3, or in the new ring n3's merge probe brings it back into:
    # that depends on how the timeouts fall, and both are right).
    assert len(delivered(sim, 1)) == len(delivered(sim, 2)) == 50
    proc = sim.nodes[3].proc
    assert proc is not None and proc.counters.failed_to_receive >= 1
    assert len(regular_views(sim, 1)) > 2  # the ring changed after n3 gave up
    assert_clean(sim)


def test_differently_configured_daemons_never_share_a_ring() -> None:
    sim = make_sim(nodes=3, config=replace(DEFAULT, cluster_tag=7))
    sim.node_configs[3] = replace(DEFAULT, cluster_tag=8)  # another spread.conf
    sim.crash(3)
    sim.restart(3)
    sim.run_until(sim.now + 6.0)
    assert regular_views(sim, 1)[-1][1] == ["n1", "n2"]
    assert regular_views(sim, 3)[-1][1] == ["n3"]
    proc = sim.nodes[1].proc
    assert proc is not None and proc.counters.foreign_config > 0


@pytest.mark.parametrize("config", [DEFAULT, FAST], ids=["default", "fast"])
@pytest.mark.parametrize("seed", range(1, 9))
def test_a_crash_costs_the_token_and_consensus_timeouts_and_no_more(
    config: TotemConfig, seed: int
) -> None:
    """Simulated protocol time, not wall-clock: the survivors take the dead member's silence
    for failure once (token loss, then consensus) and then agree at once. A member whose sets
    another's join changed counts that join towards consensus instead of waiting a JoinTimeout
    for the next one (it did, on one crash in ten)."""
    sim = make_sim(nodes=4, config=config, seed=seed)
    for i in range(50):
        sim.at(sim.now + i * 0.002, lambda n=i % 4 + 1: sim.submit(n, Service.AGREED, 200))
    sim.run_until(sim.now + 0.05 + seed * 0.01)
    victim = seed % 4 + 1
    crashed_at = sim.now
    sim.crash(victim)
    survivors = [n for n in range(1, 5) if n != victim]

    def survivors_agree() -> bool:
        procs = [sim.nodes[n].proc for n in survivors]
        return all(
            p is not None and p.state is State.OPERATIONAL and list(p.ring.members) == survivors
            for p in procs
        )

    assert sim.run_until(sim.now + 10.0, survivors_agree, check_every_s=0)
    bound = config.token_timeout_s + config.consensus_timeout_s + config.join_timeout_s / 2
    assert sim.now - crashed_at < bound
    assert_clean(sim)


def test_member_cut_off_before_its_install_installs_late_when_a_join_names_the_ring(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """n1 installs the survivors' ring while n3 is still recovering; n3 is cut off, gives up
    the recovery holding every packet, and, healed, learns from n1's join (which names the ring
    n1 installed) that it must install that ring too before going on (sweep seed 41085)."""
    sim = make_sim(nodes=4)
    send_mix(sim, 10, sim.now + 0.01)
    sim.run_until(sim.now + 0.05)
    sim.crash(4)
    procs = {n: sim.nodes[n].proc for n in (1, 2, 3)}

    def n1_installed_n3_recovering() -> bool:
        p1, p3 = procs[1], procs[3]
        assert p1 is not None and p3 is not None
        return (
            p1.state is State.OPERATIONAL
            and len(p1.ring.members) == 3
            and p3.state is State.RECOVERY
        )

    assert sim.run_until(sim.now + 10.0, n1_installed_n3_recovering, check_every_s=0)
    p1 = procs[1]
    assert p1 is not None
    installed = f"{p1.ring.ring_id[0]}.n{p1.ring.ring_id[1]}"
    sim.partition([[3], [1, 2]])
    sim.run_until(sim.now + DEFAULT.token_timeout_s + 0.3)  # n3's recovery is given up
    with caplog.at_level(logging.INFO, logger="spreadpy.membership"):
        sim.heal()
        sim.run_until(sim.now + 6.0)
    assert installed in [view for view, _ in regular_views(sim, 3)]
    assert any(
        "late: 1 did" in r.getMessage() or "late: 2 did" in r.getMessage() for r in caplog.records
    ), "n3 did not learn of the install from a join"
    assert_clean(sim)


# ----------------------------------------------------------------- keeping an idle token


def _keep_token_for_reply(sim: Simulation, node: int) -> membership.Processor:
    """`node`'s client was handed a message: run until the idle token comes and is kept."""
    proc = sim.nodes[node].proc
    assert proc is not None
    proc.expect_reply()
    kept = sim.run_until(sim.now + 1.0, lambda: proc.hold_until is not None, check_every_s=0)
    assert kept, f"n{node} never kept the token for a reply"
    return proc


def test_an_answer_leaves_with_the_kept_token_at_once() -> None:
    # The hold is far longer than any hop here, so only the answer can end it.
    sim = make_sim(nodes=3, config=replace(DEFAULT, reply_hold_s=0.05))
    proc = _keep_token_for_reply(sim, 3)
    assert proc.counters.reply_holds == 1
    msg_id = sim.submit(3, Service.AGREED, 60)
    assert proc.hold_until is None
    (ordered,) = [e for e in sim.events if e["ev"] == "seq" and e["id"] == msg_id]
    assert ordered["t"] == round(sim.now, 9)  # sequenced by the submit itself
    assert_clean(sim)


def test_an_unanswered_hold_ends_by_itself() -> None:
    sim = make_sim(nodes=3, config=replace(DEFAULT, reply_hold_s=0.005))
    proc = _keep_token_for_reply(sim, 3)
    forwarded, views = proc.counters.tokens_forwarded, proc.counters.views
    sim.run_until(sim.now + 0.0049)
    assert proc.hold_until is not None and proc.counters.tokens_forwarded == forwarded
    sim.run_until(sim.now + 0.0002)
    assert proc.hold_until is None and proc.counters.tokens_forwarded == forwarded + 1
    sim.run_until(sim.now + 0.5)
    assert proc.counters.views == views and proc.state is State.OPERATIONAL
    assert_clean(sim)


def test_another_members_message_ends_a_kept_token() -> None:
    # n2 sends while n3 keeps the token: n2 saw an idle ring, so it asks whoever keeps the
    # token for it, and its message is delivered long before n3's hold would have ended.
    sim = make_sim(nodes=3, config=replace(DEFAULT, reply_hold_s=0.05))
    proc = _keep_token_for_reply(sim, 3)
    held_at = sim.now
    msg_id = sim.submit(2, Service.AGREED, 60)
    everywhere = lambda: all(msg_id in delivered(sim, n) for n in sim.nodes)  # noqa: E731
    assert sim.run_until(held_at + 0.01, everywhere, check_every_s=0)
    assert proc.hold_until is None
    assert_clean(sim)


def test_no_token_is_kept_while_messages_wait() -> None:
    # n1's burst takes many visits; n2 and n3 deliver all along (so they expect replies) but
    # the token tells them that messages wait, and nobody keeps it until the burst is out.
    sim = make_sim(nodes=3)
    sender, *receivers = (sim.nodes[n].proc for n in (1, 2, 3))
    assert sender is not None and None not in receivers
    for _ in range(300):
        sim.submit(1, Service.AGREED, 1000)
    kept_while_busy: list[float] = []

    def burst_out() -> bool:
        if sender.pending_count() and any(p.hold_until is not None for p in receivers):
            kept_while_busy.append(sim.now)
        return sender.pending_count() == 0

    assert sim.run_until(sim.now + 5.0, burst_out, check_every_s=0)
    assert kept_while_busy == []
    sim.run_until(sim.now + 0.5)
    assert sum(p.counters.reply_holds for p in receivers) > 0
    assert_clean(sim)

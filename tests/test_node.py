"""The pure daemon node: spread.conf onto ring parameters, and the fast profile agreement."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import replace

from spreadpy.client import AGREED_MESS, Accept, MailboxCore
from spreadpy.config import parse_config
from spreadpy.membership import FAST_TIMEOUTS, SendPacket, TotemConfig
from spreadpy.node import Node, ToClient, ToClientFrames, totem_config
from spreadpy.wire import RegularMessage

LOOPBACK = "Spread_Segment 127.0.0.255:4803 {\n n1 127.0.0.1\n n2 127.0.0.2\n}\n"


def test_fast_profile_in_spread_conf_is_the_simulated_fast_profile() -> None:
    config = parse_config(LOOPBACK + "TimeoutProfile = fast\n", "fast.conf")
    simulated = replace(TotemConfig(), **FAST_TIMEOUTS)  # type: ignore[arg-type]
    daemon = totem_config(config)
    for field in FAST_TIMEOUTS:
        assert getattr(daemon, field) == getattr(simulated, field), field


def test_default_timeouts_map_onto_the_ring() -> None:
    daemon = totem_config(parse_config(LOOPBACK, "lan.conf"))
    assert daemon.token_timeout_s == 1.25  # TokenTimeout
    assert daemon.consensus_timeout_s == 0.625  # GatherTimeout / 2
    assert daemon.consensus_timeout_s == TotemConfig().consensus_timeout_s  # the simulated one
    assert daemon.join_timeout_s == 0.25  # JoinTimeout
    # HurryTimeout (500 ms) is capped at a fifth of the token timeout: five resends fit in it.
    assert daemon.token_retransmit_s == 0.25
    assert daemon.commit_timeout_s < daemon.consensus_timeout_s


def test_windows_and_ring_variant_come_from_the_file() -> None:
    text = LOOPBACK + (
        "Window = 300\nPersonalWindow = 30\nAcceleratedRing = true\nAcceleratedWindow = 10\n"
    )
    daemon = totem_config(parse_config(text, "w.conf"))
    assert (daemon.window, daemon.personal_window, daemon.accelerated_window) == (300, 30, 10)
    # Without `AcceleratedRing = true`, 5.0.1 runs the original ring (spread-conf.md §5).
    plain = totem_config(parse_config(LOOPBACK + "AcceleratedWindow = 10\n", "p.conf"))
    assert plain.accelerated_window == 0


def test_configuration_hash_is_the_cluster_tag() -> None:
    a = totem_config(parse_config(LOOPBACK, "a.conf"))
    b = totem_config(parse_config(LOOPBACK.replace("n2 127.0.0.2", "n2 127.0.0.3"), "b.conf"))
    assert a.cluster_tag != b.cluster_tag


# --- deferred delivery: two nodes in one process -----------------------------------------------


class _TwoNodes:
    """n1 and n2 on loopback addresses, datagrams handed over by hand; a client on each."""

    def __init__(self) -> None:
        config = parse_config(LOOPBACK, "two.conf")
        # One packet per visit: a few messages keep the ring busy for a few rotations.
        totem = replace(totem_config(config), window=1, personal_window=1)
        self.now = 0.0
        self.nodes = {
            i + 1: Node(
                config, config.hosts[i], ring_seq=1, now=0.0, rng=random.Random(i), totem=totem
            )
            for i in range(2)
        }
        self.to_client: dict[int, list[bytes]] = {1: [], 2: []}
        self.run_for(5.0)  # the ring forms
        self.clients = {nid: self._connect(nid) for nid in self.nodes}

    def _connect(self, nid: int) -> MailboxCore:
        core = MailboxCore(f"c{nid}")
        node = self.nodes[nid]
        node.client_opened(1, self.now)
        node.client_data(1, core.start(), self.now)
        while True:
            self.pump()
            for data in self.to_client[nid]:
                core.feed(data)
            self.to_client[nid].clear()
            step = core.handshake()
            if isinstance(step, Accept):
                return core
            if step is not None:
                node.client_data(1, step, self.now)

    def pump(
        self, *, defer_at: int | None = None, until: Callable[[], bool] = lambda: False
    ) -> list[tuple[int, object]]:
        """Hand datagrams over until none is left, or `until()` holds after one; return
        (node, action) in order."""
        seen = []
        moved = True
        while moved and not until():
            moved = False
            for nid, node in self.nodes.items():
                for action in node.drain_actions():
                    moved = True
                    seen.append((nid, action))
                    if isinstance(action, ToClient):
                        self.to_client[nid].append(action.data)
                    elif isinstance(action, ToClientFrames):
                        self.to_client[nid] += action.frames
                    if not isinstance(action, SendPacket):
                        continue
                    for other, peer in self.nodes.items():
                        if other != nid and action.dest in (None, other) and not until():
                            peer.receive_packet(
                                action.payload, self.now, defer_delivery=other == defer_at
                            )
        return seen

    def run_for(self, seconds: float, *, defer_at: int | None = None) -> list[tuple[int, object]]:
        end = self.now + seconds
        seen = self.pump(defer_at=defer_at)
        while True:
            due = [d for d in (n.next_deadline() for n in self.nodes.values()) if d is not None]
            if not due or min(due) > end:
                break
            self.now = max(self.now, min(due))
            for node in self.nodes.values():
                node.handle_timer(self.now)
            seen += self.pump(defer_at=defer_at)
        self.now = end
        return seen


def _reader_got(ring: _TwoNodes) -> list[bytes]:
    reader = ring.clients[2]
    for data in ring.to_client[2]:
        reader.feed(data)
    ring.to_client[2].clear()
    return [m.data for m in iter(reader.next_message, None) if isinstance(m, RegularMessage)]


def _busy_ring_with_a_reader() -> _TwoNodes:
    ring = _TwoNodes()
    ring.nodes[2].client_data(1, ring.clients[2].join("g"), ring.now)
    ring.run_for(1.0)
    _reader_got(ring)  # its own join
    return ring


def _send(ring: _TwoNodes, count: int) -> list[bytes]:
    texts = [b"m%d-" % i + bytes(1000) for i in range(count)]  # a packet each
    for text in texts:
        ring.nodes[1].client_data(1, ring.clients[1].multicast(AGREED_MESS, "g", text, 0), ring.now)
    return texts


def test_on_a_busy_ring_deliveries_wait_for_the_batch_end_and_keep_their_order() -> None:
    ring = _busy_ring_with_a_reader()
    n2 = ring.nodes[2]
    texts = _send(ring, 6)
    seen = ring.pump(defer_at=2, until=lambda: n2.waiting_deliveries >= 2)
    # n2 kept forwarding the token, and handed its client only what came before.
    assert sum(1 for nid, a in seen if nid == 2 and isinstance(a, SendPacket)) >= 3
    early = _reader_got(ring)
    assert len(early) <= len(texts) - 2
    n2.process_deferred(ring.now)
    assert n2.waiting_deliveries == 0
    ring.run_for(2.0)  # (the datagrams `until` held back are lost: the ring resends them)
    assert early + _reader_got(ring) == texts


def test_any_other_input_first_delivers_what_waits() -> None:
    ring = _busy_ring_with_a_reader()
    n2 = ring.nodes[2]
    texts = _send(ring, 6)
    ring.pump(defer_at=2, until=lambda: n2.waiting_deliveries >= 2)
    early = _reader_got(ring)
    n2.handle_timer(ring.now)  # an unrelated input, with nothing due
    assert n2.waiting_deliveries == 0
    late = [f for a in n2.drain_actions() if isinstance(a, ToClientFrames) for f in a.frames]
    assert len(late) >= 2  # what waited, handed over by that input
    ring.to_client[2] += late
    ring.run_for(2.0)
    assert early + _reader_got(ring) == texts


def test_on_an_idle_ring_nothing_waits() -> None:
    ring = _busy_ring_with_a_reader()
    texts = _send(ring, 1)
    ring.pump(defer_at=2)
    assert ring.nodes[2].waiting_deliveries == 0
    assert _reader_got(ring) == texts

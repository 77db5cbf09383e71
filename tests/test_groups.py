"""GroupsLayer: what clients see of groups, over a perfect in-memory ring (tests/groups_harness.py).

Scenario tests follow shared/spec/spread-daemon.md §6 and client-protocol.md §7 row by row;
a seeded random walk checks the group-level EVS properties on many histories; hypothesis checks
the item codec and that arbitrary ring bytes are dropped, never raised.
"""

from __future__ import annotations

import random
from collections import defaultdict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spreadpy import groups as groups_module
from spreadpy.errors import LocalProtocolError, MalformedPacket
from spreadpy.groups import (
    Epoch,
    GroupsLayer,
    GroupsState,
    JoinItem,
    KillItem,
    LeaveItem,
    McastItem,
    RelayFrames,
    StateEntry,
    StateItem,
    SubmitToRing,
    ToSession,
    decode_item,
    encode_item,
    ring_service,
)
from spreadpy.membership import Deliver, ViewChange
from spreadpy.packets import Service
from spreadpy.wire import (
    Endian,
    GroupId,
    Join,
    Kill,
    Leave,
    MembershipCause,
    MembershipMessage,
    Multicast,
    MulticastFrame,
    RegularMessage,
    RejectMessage,
    SelfLeave,
    ServiceType,
    TransitionalMessage,
    private_group_name,
)

from .groups_harness import Client, Cluster

ST = ServiceType
NET = MembershipCause.NETWORK


def memb(m: object) -> MembershipMessage:
    assert isinstance(m, MembershipMessage), m
    return m


def gid(c: Cluster, daemon: int, index: int) -> GroupId:
    """The group id stamped by the regular view `daemon` is in now."""
    seq, rep = c.view[daemon]
    return GroupId(rep, seq, index)


def together(ids: tuple[int, ...] = (1, 2, 3)) -> Cluster:
    c = Cluster(ids)
    c.reconfigure([ids])
    c.run()
    return c


def clear(*clients: Client) -> None:
    for x in clients:
        x.take()


# --------------------------------------------------------------------------- join / leave


def test_seed_scenario_two_daemons() -> None:
    """Two clients join `test`, one multicasts "Hello World!", the other gets it."""
    c = together((1, 2))
    alice, bob = c.connect(1, "alice"), c.connect(2, "bob")
    c.join(alice, "test")
    c.run()
    c.join(bob, "test")
    c.run()
    c.mcast(alice, "test", b"Hello World!", mess_type=7)
    c.run()
    first, second, hello = alice.inbox
    assert first == MembershipMessage(
        group="test",
        cause=MembershipCause.JOIN,
        group_id=gid(c, 1, 1),
        members=("#alice#d1",),
        vs_sets=(("#alice#d1",),),
        local_vs_set=0,
    )
    expected_second = MembershipMessage(
        group="test",
        cause=MembershipCause.JOIN,
        group_id=gid(c, 1, 2),
        members=("#alice#d1", "#bob#d2"),
        vs_sets=(("#bob#d2",),),
        local_vs_set=0,
    )
    assert second == expected_second
    expected_hello = RegularMessage(
        service_type=ST.AGREED_MESS,
        sender="#alice#d1",
        groups=("test",),
        mess_type=7,
        data=b"Hello World!",
    )
    assert hello == expected_hello  # the sender gets its own message back
    assert bob.inbox == [expected_second, expected_hello]
    assert c.layers[2].group_members("test") == ("#alice#d1", "#bob#d2")


def test_group_id_is_the_regular_ring_id() -> None:
    c = Cluster((5, 9))  # configured ids need not be small
    c.reconfigure([(5, 9)])
    c.run()
    x, y = c.connect(9, "x"), c.connect(9, "y")
    c.join(x, "g")
    c.join(y, "g")
    c.run()
    seq, rep = c.view[9]
    assert (seq, rep) == (4, 5)
    assert [memb(m).group_id for m in x.inbox] == [GroupId(5, 4, 1), GroupId(5, 4, 2)]
    assert Epoch(0xF0000001, 7).group_id(3) == GroupId(-268435455, 7, 3)  # int32 like Spread
    assert Epoch(3, 8, transitional=True).time == -9  # never equal to a regular view's time


def test_recreated_group_continues_its_index() -> None:
    c = together((1, 2))
    a = c.connect(1, "a")
    for _ in range(2):
        c.join(a, "g")
        c.leave(a, "g")
    c.join(a, "g")
    c.run()
    joins = [memb(m).group_id for m in a.memberships() if isinstance(m, MembershipMessage)]
    assert joins == [gid(c, 1, 1), gid(c, 1, 2), gid(c, 1, 3)]  # never the same id twice
    c.leave(a, "g")
    c.run()
    c.reconfigure([(1,), (2,)])
    c.join(a, "g")
    c.run()
    assert memb(a.inbox[-1]).group_id == gid(c, 1, 1)  # a new epoch starts at 1


def test_members_in_config_order_then_name() -> None:
    c = Cluster((3, 1, 2))  # configuration order 3, 1, 2
    c.reconfigure([(1, 2, 3)])
    c.run()
    for daemon, name in ((1, "zed"), (2, "amy"), (3, "mia"), (3, "bob")):
        c.join(c.connect(daemon, name), "g")
    c.run()
    assert c.layers[1].group_members("g") == ("#bob#d3", "#mia#d3", "#zed#d1", "#amy#d2")


def test_leave_sends_self_leave_and_light_leave() -> None:
    c = together()
    alice, bob = c.connect(1, "alice"), c.connect(2, "bob")
    for x in (alice, bob):
        c.join(x, "test")
    c.run()
    clear(alice, bob)
    c.leave(bob, "test")
    c.run()
    assert bob.inbox == [SelfLeave("test")]
    assert alice.inbox == [
        MembershipMessage(
            group="test",
            cause=MembershipCause.LEAVE,
            group_id=gid(c, 1, 3),
            members=("#alice#d1",),
            vs_sets=(("#bob#d2",),),
            local_vs_set=0,
        )
    ]
    clear(alice, bob)
    c.mcast(alice, "test", b"after")
    c.run()
    assert bob.inbox == []  # no longer a member
    assert [m.data for m in alice.data()] == [b"after"]


def test_disconnect_and_kill_request() -> None:
    c = together()
    alice, bob, carol = c.connect(1, "alice"), c.connect(2, "bob"), c.connect(3, "carol")
    for x in (alice, bob, carol):
        c.join(x, "test")
        c.join(x, "other")
    c.run()
    clear(alice, bob, carol)
    c.disconnect(bob)
    c.kill(carol)  # SP_disconnect: the same as a closed socket
    c.run()
    causes = [(memb(m).group, memb(m).cause, memb(m).vs_sets) for m in alice.inbox]
    assert causes == [
        ("other", MembershipCause.DISCONNECT, (("#bob#d2",),)),
        ("test", MembershipCause.DISCONNECT, (("#bob#d2",),)),
        ("other", MembershipCause.DISCONNECT, (("#carol#d3",),)),
        ("test", MembershipCause.DISCONNECT, (("#carol#d3",),)),
    ]
    assert memb(alice.inbox[-1]).members == ("#alice#d1",)
    assert bob.inbox == [] and carol.inbox == []  # a disconnecting session gets nothing


def test_duplicate_join_and_unknown_leave_are_ignored() -> None:
    c = together((1, 2))
    alice, bob = c.connect(1, "alice"), c.connect(2, "bob")
    c.join(alice, "g")
    c.join(alice, "g")
    c.leave(bob, "g")
    c.leave(bob, "nosuch")
    c.run()
    assert [memb(m).group_id.index for m in alice.inbox] == [1]
    assert bob.inbox == []


def test_no_membership_client_gets_data_only() -> None:
    c = together((1, 2))
    quiet, loud = c.connect(1, "quiet", membership=False), c.connect(2, "loud")
    c.join(quiet, "g")
    c.join(loud, "g")
    c.run()
    c.mcast(loud, "g", b"x")
    c.run()
    c.leave(quiet, "g")
    c.run()
    assert quiet.inbox == [
        RegularMessage(service_type=ST.AGREED_MESS, sender="#loud#d2", groups=("g",), data=b"x")
    ]
    # quiet's join was ordered first (before loud was a member), then loud's, then the leave
    assert [memb(m).cause for m in loud.memberships()] == [
        MembershipCause.JOIN,
        MembershipCause.LEAVE,
    ]


def test_reject_when_too_many_local_members() -> None:
    c = Cluster((1, 2), max_local_group_members=2)
    c.reconfigure([(1, 2)])
    c.run()
    a, b, x = c.connect(1, "a"), c.connect(1, "b"), c.connect(1, "x")
    c.join(a, "g")
    c.join(b, "g")
    c.run()
    c.join(x, "g")
    assert x.inbox == [
        RejectMessage(old_type=ST.CAUSED_BY_JOIN, sender="#x#d1", groups=("g", "#x#d1"))
    ]
    assert c.layers[1].counters.rejects == 1
    c.run()
    assert c.layers[1].group_members("g") == ("#a#d1", "#b#d1")


def test_reused_name_does_not_inherit_membership() -> None:
    """A new session named like one whose JOIN and KILL are still in flight gets nothing of it."""
    c = together((1, 2))
    watcher = c.connect(2, "w")
    c.join(watcher, "g")
    c.run()
    old = c.connect(1, "alice")
    c.join(old, "g")
    c.disconnect(old)
    new = c.connect(1, "alice")
    c.run()
    assert new.inbox == []
    assert [memb(m).cause for m in watcher.memberships()][1:] == [
        MembershipCause.JOIN,
        MembershipCause.DISCONNECT,
    ]
    assert c.layers[1].group_members("g") == ("#w#d2",)


# ------------------------------------------------------------------------------ multicast


@pytest.mark.parametrize(
    ("bit", "service"),
    [
        (ST.UNRELIABLE_MESS, Service.UNRELIABLE),
        (ST.RELIABLE_MESS, Service.RELIABLE),
        (ST.FIFO_MESS, Service.FIFO),
        (ST.CAUSAL_MESS, Service.CAUSAL),
        (ST.AGREED_MESS, Service.AGREED),
        (ST.SAFE_MESS, Service.SAFE),
    ],
)
def test_each_service_level(bit: ServiceType, service: Service) -> None:
    c = together((1, 2))
    a, b = c.connect(1, "a"), c.connect(2, "b")
    c.join(b, "g")
    c.run()
    c.submitted.clear()
    c.mcast(a, "g", b"payload", service=bit, mess_type=-3)
    c.run()
    assert [s.service for d, s in c.submitted if d == 1] == [service]
    assert b.data() == [
        RegularMessage(
            service_type=bit, sender="#a#d1", groups=("g",), mess_type=-3, data=b"payload"
        )
    ]
    assert a.inbox == []  # open group: the sender is not a member


def test_join_leave_kill_travel_agreed() -> None:
    c = together((1, 2))
    a = c.connect(1, "a")
    c.submitted.clear()
    c.join(a, "g")
    c.leave(a, "g")
    c.disconnect(a)
    assert [s.service for _, s in c.submitted] == [Service.AGREED] * 3
    kinds = [type(decode_item(s.data)) for _, s in c.submitted]
    assert kinds == [JoinItem, LeaveItem, KillItem]


def test_multigroup_send_is_delivered_once_per_session() -> None:
    c = together()
    alice, bob, carol = c.connect(1, "alice"), c.connect(2, "bob"), c.connect(3, "carol")
    c.join(alice, "A")
    c.join(alice, "B")
    c.join(bob, "B")
    c.run()
    c.mcast(carol, ["A", "B", "C", "#bob#d2"], b"m")
    c.run()
    for x in (alice, bob):
        assert [(m.groups, m.data) for m in x.data()] == [(("A", "B", "C", "#bob#d2"), b"m")]
    assert carol.data() == []


def test_private_group_send() -> None:
    c = together()
    alice, bob, carol = c.connect(1, "alice"), c.connect(2, "bob"), c.connect(3, "carol")
    c.join(carol, "g")
    c.run()
    c.mcast(bob, "#alice#d1", b"p2p", service=ST.FIFO_MESS)
    c.mcast(bob, "#nobody#d1", b"lost")
    c.mcast(bob, "#alice#d3", b"wrong daemon")
    c.run()
    assert alice.data() == [
        RegularMessage(
            service_type=ST.FIFO_MESS, sender="#bob#d2", groups=("#alice#d1",), data=b"p2p"
        )
    ]
    assert bob.data() == [] and carol.data() == []
    assert c.layers[1].counters.dropped_no_receiver == 2


def test_self_discard() -> None:
    c = together((1, 2))
    alice, ann, bob = c.connect(1, "alice"), c.connect(1, "ann"), c.connect(2, "bob")
    for x in (alice, ann, bob):
        c.join(x, "g")
    c.run()
    clear(alice, ann, bob)
    svc = ST.AGREED_MESS | ST.SELF_DISCARD
    c.mcast(alice, ["g", "#alice#d1"], b"not to me", service=svc)
    c.run()
    assert alice.inbox == []
    for x in (ann, bob):
        assert [(m.service_type, m.data) for m in x.data()] == [(svc, b"not to me")]


def test_deliver_says_when_a_local_client_got_another_daemons_message() -> None:
    # The ring keeps an idle token briefly for a client's answer only when this is true.
    c = together((1, 2, 3))
    a, b = c.connect(1, "a"), c.connect(3, "b")
    for x in (a, b):
        c.join(x, "g")
    c.run()
    assert not any(said for _, _, said in c.reply_hints)  # joins and views: no client message
    c.reply_hints.clear()
    c.mcast(a, "g", b"question")
    c.run()
    # d1 delivers its own multicast, d2 has no receiver, d3's client b got it.
    assert sorted(c.reply_hints) == [(1, 1, False), (2, 1, False), (3, 1, True)]
    c.reply_hints.clear()
    c.mcast(b, "#a#d1", b"answer")
    c.run()
    assert sorted(c.reply_hints) == [(1, 3, True), (2, 3, False), (3, 3, False)]


def test_message_to_empty_group_is_dropped() -> None:
    c = together((1, 2))
    a = c.connect(1, "a")
    c.mcast(a, "nobody-here", b"x")
    c.run()
    assert a.inbox == []
    assert c.layers[1].counters.dropped_no_receiver == 1
    assert c.layers[2].counters.dropped_no_receiver == 1


def test_large_message() -> None:
    c = together((1, 2))
    a, b = c.connect(1, "a"), c.connect(2, "b")
    c.join(b, "g")
    c.run()
    size = 144_000 - 32  # libspread's limit on data + 32 bytes per group
    body = bytes(range(256)) * (size // 256) + b"\x01" * (size % 256)
    assert len(body) == size
    c.mcast(a, "g", body, service=ST.SAFE_MESS)
    c.run()
    (got,) = b.data()
    assert got.data == body


# -------------------------------------------------------------------------- bounded queues


def test_session_queue_overflow_closes_only_that_session() -> None:
    c = Cluster((1, 2), max_session_messages=5)
    c.reconfigure([(1, 2)])
    c.run()
    alice, slow, ok = c.connect(1, "alice"), c.connect(2, "slow"), c.connect(2, "ok")
    for x in (alice, slow, ok):
        c.join(x, "g")
    c.run()
    clear(alice, slow, ok)
    slow.reading = False
    for i in range(8):
        c.mcast(alice, "g", b"%d" % i)
    c.run()
    assert slow.closed == "not reading"
    assert [m.data for m in slow.data()] == [b"0", b"1", b"2", b"3", b"4"]
    assert [m.data for m in ok.data()] == [b"%d" % i for i in range(8)]
    for x in (alice, ok):
        (gone,) = x.memberships()
        assert memb(gone).cause is MembershipCause.DISCONNECT
        assert memb(gone).vs_sets == (("#slow#d2",),)
    assert c.layers[2].counters.sessions_overflowed == 1
    assert c.layers[1].group_members("g") == ("#alice#d1", "#ok#d2")


def test_written_messages_free_the_queue() -> None:
    c = Cluster((1,), max_session_messages=2)
    c.run()
    a = c.connect(1, "a")
    a.reading = False
    c.join(a, "g")
    c.run()
    layer = c.layers[1]
    for i in range(6):
        a.unread = 0  # it read everything so far: the adapter wrote it all
        layer.session_backlog(a.sid, 0)
        c.mcast(a, "g", b"%d" % i)
        c.run()
    assert a.closed is None
    assert len(a.data()) == 6
    c.mcast(a, "g", b"unread")  # a second unwritten message reaches the limit
    c.run()
    assert a.closed == "not reading"


# ------------------------------------------------------------------------ daemon failures


def three_in_test(c: Cluster) -> tuple[Client, Client, Client]:
    alice, bob, carol = c.connect(1, "alice"), c.connect(2, "bob"), c.connect(3, "carol")
    for x in (alice, bob, carol):
        c.join(x, "test")
    c.run()
    clear(alice, bob, carol)
    return alice, bob, carol


def test_daemon_crash_gives_trans_then_network() -> None:
    c = together()
    alice, bob, _carol = three_in_test(c)
    old_gid = c.layers[1].group_id("test")
    assert old_gid == gid(c, 1, 3)
    c.mcast(bob, "test", b"in flight")
    c.hold()
    c.run()  # ordered in the old ring, delivered only after the transitional view
    c.hold(False)
    c.crash(3)
    c.reconfigure([(1, 2)])
    c.run()
    for x in (alice, bob):
        trans, data, reg = x.inbox
        assert trans == TransitionalMessage("test", old_gid)
        assert isinstance(data, RegularMessage) and data.data == b"in flight"
        assert reg == MembershipMessage(
            group="test",
            cause=NET,
            group_id=gid(c, 1, 1),
            members=("#alice#d1", "#bob#d2"),
            vs_sets=(("#alice#d1", "#bob#d2"),),
            local_vs_set=0,
        )
    assert c.layers[1].counters.exchanges_started == 1  # purely subtractive: no exchange


def test_group_without_lost_members_gets_nothing_on_crash() -> None:
    c = together()
    alice, bob = c.connect(1, "alice"), c.connect(2, "bob")
    c.join(alice, "g")
    c.join(bob, "g")
    c.run()
    clear(alice, bob)
    c.crash(3)
    c.reconfigure([(1, 2)])
    c.run()
    assert alice.inbox == [] and bob.inbox == []
    assert c.layers[1].group_id("g") == GroupId(1, 4, 2)  # unchanged


def test_partition_then_merge() -> None:
    c = together()
    alice, bob, carol = three_in_test(c)
    solo = c.connect(3, "solo")
    c.join(solo, "only3")
    c.run()
    c.reconfigure([(1, 2), (3,)])
    c.run()
    part_seq = c.view[1][0]
    for x in (alice, bob):
        assert [type(m) for m in x.inbox] == [TransitionalMessage, MembershipMessage]
        assert memb(x.inbox[1]).members == ("#alice#d1", "#bob#d2")
    assert memb(carol.inbox[1]).members == ("#carol#d3",)
    assert memb(carol.inbox[1]).group_id == GroupId(3, part_seq, 1)
    clear(alice, bob, carol, solo)

    c.reconfigure([(1, 2, 3)])
    c.run()
    merged = gid(c, 1, 1)
    for x, local in ((alice, 0), (bob, 0), (carol, 1)):
        assert x.inbox == [  # no TRANSITION_MESS for a pure merge
            MembershipMessage(
                group="test",
                cause=NET,
                group_id=merged,
                members=("#alice#d1", "#bob#d2", "#carol#d3"),
                vs_sets=(("#alice#d1", "#bob#d2"), ("#carol#d3",)),
                local_vs_set=local,
            )
        ]
    assert solo.inbox == []  # its group did not change
    for d in (1, 2, 3):
        assert c.layers[d].group_names() == ["only3", "test"]
        assert c.layers[d].group_id("only3") == GroupId(1, 4, 1)  # stamped when all were together


def test_join_during_transitional_period_is_heavyweight() -> None:
    c = together()
    alice, bob, _carol = three_in_test(c)
    dave = c.connect(2, "dave")
    c.join(dave, "test")
    c.hold()
    c.run()
    c.hold(False)
    c.crash(3)
    c.reconfigure([(1, 2)])
    c.run()
    trans_gid = GroupId(1, ~c.view[1][0], 2)  # (smallest of the transitional set, ~seq), 2
    members4 = ("#alice#d1", "#bob#d2", "#dave#d2", "#carol#d3")
    sets = (("#alice#d1", "#bob#d2"), ("#carol#d3",), ("#dave#d2",))
    for x, local in ((alice, 0), (bob, 0), (dave, 2)):
        msgs = x.memberships()
        if x is not dave:
            assert isinstance(msgs.pop(0), TransitionalMessage)
        hw, again, reg = msgs
        assert hw == MembershipMessage(
            group="test",
            cause=NET,
            group_id=trans_gid,
            members=members4,
            vs_sets=sets,
            local_vs_set=local,
        )
        assert again == TransitionalMessage("test", trans_gid)
        assert memb(reg).members == ("#alice#d1", "#bob#d2", "#dave#d2")
        assert memb(reg).vs_sets == (("#alice#d1", "#bob#d2", "#dave#d2"),)
        assert memb(reg).group_id == gid(c, 1, 1)


def test_leave_during_transitional_period_is_heavyweight() -> None:
    c = together()
    alice, bob, _carol = three_in_test(c)
    c.leave(bob, "test")
    c.hold()
    c.run()
    c.hold(False)
    c.crash(3)
    c.reconfigure([(1, 2)])
    c.run()
    assert [type(m) for m in bob.inbox] == [TransitionalMessage, SelfLeave]
    _trans, hw, again, reg = alice.inbox
    assert memb(hw).cause is NET and memb(hw).members == ("#alice#d1", "#carol#d3")
    assert memb(hw).vs_sets == (("#alice#d1",), ("#carol#d3",))
    assert isinstance(again, TransitionalMessage)
    assert memb(reg).members == ("#alice#d1",)


def test_join_from_partitioned_daemon_in_transitional_tail() -> None:
    c = together()
    alice, _bob, carol = three_in_test(c)
    late = c.connect(3, "late")
    c.join(late, "test")
    c.mcast(carol, "test", b"last words")
    c.hold()
    c.run()
    c.hold(False)
    c.crash(3)
    c.reconfigure([(1, 2)])
    c.run()
    trans, hw, again, words, reg = alice.inbox
    assert isinstance(trans, TransitionalMessage) and isinstance(again, TransitionalMessage)
    assert memb(hw).members == ("#alice#d1", "#bob#d2", "#carol#d3", "#late#d3")
    # d3 is partitioned: its old member and the joiner each stand alone (no empty set).
    assert memb(hw).vs_sets == (("#alice#d1", "#bob#d2"), ("#carol#d3",), ("#late#d3",))
    assert isinstance(words, RegularMessage) and words.sender == "#carol#d3"
    assert memb(reg).members == ("#alice#d1", "#bob#d2")


# ------------------------------------------------------------------------- state exchange


def test_items_in_flight_at_a_merge_are_applied_once_after_it() -> None:
    c = Cluster((1, 2))
    c.run()
    alice, bob = c.connect(1, "alice"), c.connect(2, "bob")
    c.join(bob, "g")
    c.run()
    clear(bob)
    c.join(alice, "g")  # submitted, not yet ordered when the rings merge
    c.mcast(alice, "g", b"early")
    c.reconfigure([(1, 2)])
    c.join(alice, "h")  # arrives during the exchange: held
    assert c.layers[1].backlog == 1
    c.run()
    layer = c.layers[1]
    assert layer.counters.deferred == 2 and layer.counters.resubmitted == 2
    assert layer.backlog == 0
    join = MembershipMessage(
        group="g",
        cause=MembershipCause.JOIN,
        group_id=GroupId(2, 0, 2),  # unchanged by the merge: d2's singleton view still names it
        members=("#alice#d1", "#bob#d2"),
        vs_sets=(("#alice#d1",),),
        local_vs_set=0,
    )
    assert bob.inbox == [join, RegularMessage(
        service_type=ST.AGREED_MESS, sender="#alice#d1", groups=("g",), data=b"early"
    )]  # fmt: skip
    assert [memb(m).group for m in alice.memberships()] == ["g", "h"]
    assert c.layers[2].group_members("g") == ("#alice#d1", "#bob#d2")


def test_crash_during_exchange_drops_its_state() -> None:
    """A daemon dies mid-exchange (totem.md P17): nothing of it survives, no ghost members."""
    c = Cluster((1, 2, 3))
    c.run()
    alice, bob, carol = c.connect(1, "alice"), c.connect(2, "bob"), c.connect(3, "carol")
    for x in (alice, bob, carol):
        c.join(x, "g")
    c.run()
    clear(alice, bob, carol)
    c.reconfigure([(1, 2, 3)])
    c.run(senders=[1, 2])  # d1's and d2's STATE delivered, d3's never ordered
    assert c.layers[1].state is GroupsState.GGATHER
    c.crash(3)
    c.reconfigure([(1, 2)])
    assert c.layers[1].counters.exchanges_aborted == 1
    c.run()
    for d in (1, 2):
        assert c.layers[d].state is GroupsState.GOP
        assert c.layers[d].group_members("g") == ("#alice#d1", "#bob#d2")
    (a,) = alice.inbox  # no TRANSITION_MESS: nothing was delivered in between
    assert a == MembershipMessage(
        group="g",
        cause=NET,
        group_id=gid(c, 1, 1),
        members=("#alice#d1", "#bob#d2"),
        vs_sets=(("#alice#d1",), ("#bob#d2",)),
        local_vs_set=0,
    )
    assert memb(bob.inbox[0]).local_vs_set == 1


def test_state_of_an_older_view_is_dropped() -> None:
    c = Cluster((1, 2, 3))
    c.run()
    alice, bob = c.connect(1, "alice"), c.connect(2, "bob")
    c.join(alice, "g")
    c.join(bob, "g")
    c.run()
    c.reconfigure([(1, 2, 3)])
    c.run(senders=[1, 3])  # d2's STATE stays in its send queue ...
    c.crash(3)
    c.reconfigure([(1, 2)])  # ... and is ordered in the next ring, where it is stale
    c.run()
    assert c.layers[1].counters.stale_state == 1
    assert c.layers[2].counters.stale_state == 1
    for d in (1, 2):
        assert c.layers[d].state is GroupsState.GOP
        assert c.layers[d].group_members("g") == ("#alice#d1", "#bob#d2")


def test_exchange_that_completes_in_a_transitional_view() -> None:
    """GGT: the last STATE arrives after the transitional view: merge first, then TRANS."""
    c = Cluster((1, 2, 3))
    c.reconfigure([(1, 3), (2,)])
    c.run()
    alice, carol = c.connect(1, "alice"), c.connect(3, "carol")
    c.join(alice, "h")  # d1 and d3 share this group's view before the merge
    c.join(carol, "h")
    c.run()
    bob = c.connect(2, "bob")
    c.join(bob, "g")
    c.join(alice, "g")
    c.run()
    clear(alice, bob, carol)
    c.reconfigure([(1, 2, 3)])
    c.hold()
    c.run()  # every STATE ordered, none delivered
    c.hold(False)
    c.crash(3)
    c.reconfigure([(1, 2)])
    c.run()
    merge_gid = GroupId(1, c.view[1][0] - 4, 1)
    g_msgs = alice.memberships("g")
    assert [memb(m).cause for m in g_msgs] == [NET]  # g lost nobody: no TRANS
    assert memb(g_msgs[0]).vs_sets == (("#alice#d1",), ("#bob#d2",))
    # h did not change in the merge, but the cascade took d3: notified as Spread does.
    net, trans, reg = alice.memberships("h")
    assert memb(net).group_id == merge_gid and memb(net).cause is NET
    assert memb(net).vs_sets == (("#alice#d1", "#carol#d3"),)
    assert trans == TransitionalMessage("h", merge_gid)
    assert memb(reg).members == ("#alice#d1",) and memb(reg).group_id == gid(c, 1, 1)


def state_of(layer: GroupsLayer) -> GroupsState:
    return layer.state  # read afresh (no type narrowing across deliveries)


def test_state_tagged_with_another_view_is_ignored() -> None:
    layer = layer_in(GroupsState.GGATHER)  # regular view (8, 1) with daemon 2
    (own,) = layer.drain_actions()
    assert isinstance(own, SubmitToRing)
    layer.deliver(Deliver(1, 1, own.service, own.data, (8, 1)))
    stale = encode_item(StateItem((4, 2), True, ()))
    layer.deliver(Deliver(2, 1, Service.AGREED, stale, (8, 1)))
    assert layer.state is GroupsState.GGATHER and layer.counters.stale_state == 1
    fresh = encode_item(StateItem((8, 1), True, ()))
    layer.deliver(Deliver(2, 2, Service.AGREED, fresh, (8, 1)))
    assert state_of(layer) is GroupsState.GOP
    layer.deliver(Deliver(2, 3, Service.AGREED, fresh, (8, 1)))  # outside any exchange
    assert layer.counters.stale_state == 2


def test_disconnect_during_transitional_period_is_heavyweight() -> None:
    c = together()
    alice, bob, _carol = three_in_test(c)
    c.disconnect(bob)
    c.hold()
    c.run()
    c.hold(False)
    c.crash(3)
    c.reconfigure([(1, 2)])
    c.run()
    trans, hw, again, reg = alice.inbox
    assert isinstance(trans, TransitionalMessage) and isinstance(again, TransitionalMessage)
    assert memb(hw).cause is NET and memb(hw).members == ("#alice#d1", "#carol#d3")
    assert memb(hw).group_id == GroupId(1, ~c.view[1][0], 2)
    assert memb(reg).members == ("#alice#d1",) and memb(reg).vs_sets == (("#alice#d1",),)


def test_large_state_is_sent_in_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(groups_module, "STATE_PART_BYTES_MAX", 2000)
    c = Cluster((1, 2))
    c.run()
    xs = [c.connect(1, f"m{i}") for i in range(40)]
    for i in range(300):
        c.join(xs[i % 40], f"group-{i:04d}-{'x' * 16}")
    c.run()
    c.submitted.clear()
    c.reconfigure([(1, 2)])
    parts = [decode_item(s.data) for d, s in c.submitted if d == 1]
    assert len(parts) >= 2 and all(isinstance(p, StateItem) for p in parts)
    assert [p.last for p in parts if isinstance(p, StateItem)][-1]
    c.run()
    assert c.layers[2].group_names() == c.layers[1].group_names()
    assert len(c.layers[2].group_names()) == 300


# --------------------------------------------------------------- state table and codecs


VIEWS: dict[str, ViewChange] = {
    "reg": ViewChange("reg", (8, 1), (1, 2)),
    "trans": ViewChange("trans", ((4, 1), (8, 1)), (1,)),
}


def layer_in(state: GroupsState) -> GroupsLayer:
    layer = GroupsLayer(1, {1: "d1", 2: "d2"})
    if state is GroupsState.START:
        return layer
    layer.view_change(ViewChange("reg", (4, 1), (1,)))
    if state is GroupsState.GOP:
        return layer
    layer.view_change(ViewChange("trans", ((4, 1), (8, 1)), (1,)))
    if state is GroupsState.GTRANS:
        return layer
    layer.view_change(ViewChange("reg", (8, 1), (1, 2)))
    if state is GroupsState.GGATHER:
        return layer
    layer.view_change(ViewChange("trans", ((8, 1), (12, 1)), (1,)))
    assert state is GroupsState.GGT
    return layer


@pytest.mark.parametrize("state", list(GroupsState))
@pytest.mark.parametrize("kind", ["reg", "trans"])
def test_view_table_is_total(state: GroupsState, kind: str) -> None:
    layer = layer_in(state)
    assert layer.state is state
    legal = {
        (GroupsState.START, "reg"),
        (GroupsState.GOP, "trans"),
        (GroupsState.GTRANS, "reg"),
        (GroupsState.GGATHER, "trans"),
        (GroupsState.GGT, "reg"),
    }
    if (state, kind) in legal:
        layer.view_change(VIEWS[kind])
        assert layer.state in set(GroupsState) - {GroupsState.START}
    else:
        with pytest.raises(LocalProtocolError):
            layer.view_change(VIEWS[kind])


def test_caller_errors_raise() -> None:
    layer = layer_in(GroupsState.GOP)
    with pytest.raises(LocalProtocolError):
        layer.client_request(5, Join("g"))
    layer.client_connected(5, "a", True)
    with pytest.raises(LocalProtocolError):
        layer.client_connected(6, "a", True)
    with pytest.raises(LocalProtocolError):
        layer.client_connected(5, "b", True)
    with pytest.raises(LocalProtocolError):
        layer.client_request(5, Join("#private"))
    with pytest.raises(LocalProtocolError):
        layer.client_disconnected(99)
    with pytest.raises(LocalProtocolError):
        layer.view_change(ViewChange("trans", ((4, 1), (8, 2)), (2,)))  # not our view
    with pytest.raises(LocalProtocolError):
        GroupsLayer(3, {1: "d1"})
    with pytest.raises(LocalProtocolError):
        GroupsLayer(1, {1: "d1"}).deliver(Deliver(1, 1, 5, b"", (0, 1)))


def test_client_multicast_is_client_request_for_a_frame() -> None:
    """The daemon's per-message entry: the same submit, the same errors, the same tolerance
    of bytes read after the layer closed the session."""
    frame = MulticastFrame.from_request(
        Multicast(service_type=ST.AGREED_MESS, groups=("g",), mess_type=7, data=b"hi"),
        private_group_name("a", "d1"),
    )
    submitted = []
    for call in ("client_request", "client_multicast"):
        layer = layer_in(GroupsState.GOP)
        with pytest.raises(LocalProtocolError):
            getattr(layer, call)(5, frame)  # no such session
        layer.client_connected(5, "a", True)
        getattr(layer, call)(5, frame)
        (submit,) = layer.drain_actions()
        assert isinstance(submit, SubmitToRing) and submit.service == Service.AGREED
        submitted.append(submit)
        with pytest.raises(LocalProtocolError):
            getattr(layer, call)(5, MulticastFrame(ST.JOIN_MESS, frame.frame))  # not a service
        layer.session_backlog(5, layer.max_session_messages)  # the layer closes the session
        layer.drain_actions()
        getattr(layer, call)(5, frame)  # read before the close took effect: ignored
        assert not any(isinstance(a, SubmitToRing) for a in layer.drain_actions())
    assert submitted[0] == submitted[1]
    item = decode_item(submitted[0].data)
    assert isinstance(item, McastItem) and item.frame == frame.frame


def test_requests_before_the_first_view_are_held() -> None:
    layer = GroupsLayer(1, {1: "d1"})
    layer.client_connected(5, "a", True)
    layer.client_request(5, Join("g"))
    assert layer.drain_actions() == [] and layer.backlog == 1
    layer.view_change(ViewChange("reg", (0, 1), (1,)))
    (submit,) = layer.drain_actions()
    assert isinstance(submit, SubmitToRing) and decode_item(submit.data) == JoinItem(1, "a", "g")
    layer.deliver(Deliver(1, 1, submit.service, submit.data, (0, 1)))
    (note,) = layer.drain_actions()
    assert isinstance(note, ToSession) and memb(note.message).group_id == GroupId(1, 0, 1)


def test_a_run_of_multicasts_is_one_relay_frames_per_session() -> None:
    """The busy path batches: one RelayFrames per session for consecutive deliveries. Any
    other action closes the open runs, so each session still gets its messages in delivery
    order, and a drained RelayFrames never changes afterwards."""
    layer = layer_in(GroupsState.GOP)
    delivered = 0

    def ring(submits: list[object]) -> None:  # the ring delivers what the layer submitted
        nonlocal delivered
        for a in submits:
            assert isinstance(a, SubmitToRing)
            delivered += 1
            layer.deliver(Deliver(1, delivered, a.service, a.data, (4, 1)))

    for sid, name in ((5, "a"), (6, "b")):
        layer.client_connected(sid, name, True)
        layer.client_request(sid, Join("g"))
    ring(layer.drain_actions())
    layer.drain_actions()  # the join notices
    frames = [
        MulticastFrame.from_request(
            Multicast(service_type=ST.AGREED_MESS, groups=("g",), mess_type=0, data=b"m%d" % i),
            private_group_name("a", "d1"),
        )
        for i in range(5)
    ]
    for f in frames[:2]:
        layer.client_request(5, f)
    layer.client_request(6, Leave("g"))
    for f in frames[2:4]:
        layer.client_request(5, f)
    ring(layer.drain_actions())  # m0, m1, b's leave, m2, m3: delivered in one batch
    out = layer.drain_actions()
    m = [f.frame for f in frames]
    assert [(type(a).__name__, a.session) for a in out] == [
        ("RelayFrames", 5),
        ("RelayFrames", 6),
        ("ToSession", 6),
        ("ToSession", 5),
        ("RelayFrames", 5),
    ]
    assert [a.frames for a in out if isinstance(a, RelayFrames)] == [m[:2], m[:2], m[2:4]]
    assert isinstance(out[2].message, SelfLeave) and memb(out[3].message).group == "g"
    layer.client_request(5, frames[4])
    ring(layer.drain_actions())
    (last,) = layer.drain_actions()
    assert last == RelayFrames(5, [m[4]]) and out[4].frames == m[2:4]


def test_who_receives_follows_every_change_between_multicasts() -> None:
    """Consecutive multicasts to the same names share one lookup of their receivers. A join,
    a leave, a new session, a kill, a disconnect or a session dropped for not reading, in
    between, must each show in who gets the next one."""
    layer = layer_in(GroupsState.GOP)
    delivered = 0
    item = encode_item(  # from a client of daemon 2, to the group g and a private group here
        McastItem(
            1,
            MulticastFrame.from_request(
                Multicast(service_type=ST.AGREED_MESS, groups=("g", "#c#d1"), data=b"m"),
                private_group_name("z", "d2"),
            ).frame,
        )
    )

    def deliver(origin: int, data: bytes) -> list[int]:
        """The sessions a delivery's multicasts reached, in order."""
        nonlocal delivered
        delivered += 1
        layer.deliver(Deliver(origin, delivered, Service.AGREED, data, (4, 1)))
        reached = []
        for a in layer.drain_actions():
            if isinstance(a, RelayFrames):
                reached += [a.session] * len(a.frames)
        return reached

    def request(session: int, request: Join | Leave) -> None:
        """`request`'s item reaches the ring behind another daemon's multicast."""
        layer.client_request(session, request)
        (submit,) = layer.drain_actions()
        assert isinstance(submit, SubmitToRing)
        reached = multicast()  # the receivers as they were
        assert deliver(1, submit.data) == []
        assert multicast() != reached  # ... are not the receivers now

    def multicast() -> list[int]:
        return deliver(2, item)

    for sid, name in ((5, "a"), (6, "b"), (8, "d")):
        layer.client_connected(sid, name, sid != 6)  # b asks for no membership messages
    request(5, Join("g"))
    assert multicast() == [5]
    request(6, Join("g"))  # with no message for anyone here
    assert multicast() == [5, 6]
    request(5, Leave("g"))
    assert multicast() == [6]
    layer.session_backlog(6, layer.max_session_messages)  # dropped for not reading
    assert multicast() == []
    layer.client_connected(7, "c", True)  # the private group #c#d1 now exists
    assert multicast() == [7]
    layer.client_request(7, Kill())
    assert multicast() == []
    request(8, Join("g"))
    assert multicast() == [8]
    layer.client_disconnected(8)
    assert multicast() == []


def test_ring_service_mapping() -> None:
    assert ring_service(ST.SAFE_MESS | ST.SELF_DISCARD) is Service.SAFE
    for bad in (0, ST.AGREED_MESS | ST.SAFE_MESS, ST.JOIN_MESS, ST.SELF_DISCARD):
        with pytest.raises(ValueError):
            ring_service(bad)


names = st.text(alphabet=st.characters(min_codepoint=0x24, max_codepoint=0x7E), min_size=1)
privates = names.map(lambda s: s[:10])
groups = names.map(lambda s: s[:31])
targets = st.text(alphabet=st.characters(min_codepoint=1, max_codepoint=255), max_size=31)
epochs = st.builds(
    Epoch,
    st.integers(1, 2**32 - 1),
    st.integers(0, 2**64 - 1),
    st.booleans(),
)
services = st.sampled_from([b for b, _ in ((ST.UNRELIABLE_MESS, 0), (ST.RELIABLE_MESS, 0),
    (ST.FIFO_MESS, 0), (ST.CAUSAL_MESS, 0), (ST.AGREED_MESS, 0), (ST.SAFE_MESS, 0))])  # fmt: skip
items = st.one_of(
    st.builds(
        lambda ref, sender, service, mess_type, endian, targets, data: McastItem(
            ref,
            MulticastFrame.from_request(
                Multicast(
                    service_type=service,
                    groups=targets,
                    mess_type=mess_type,
                    data=data,
                    endian=endian,
                ),
                private_group_name(sender, "d1"),
            ).frame,
        ),
        st.integers(0, 2**32 - 1),
        privates,
        st.tuples(services, st.booleans()).map(lambda t: t[0] | ST.SELF_DISCARD if t[1] else t[0]),
        st.integers(-0x8000, 0x7FFF),
        st.sampled_from(Endian),
        st.lists(targets, max_size=100).map(tuple),
        st.binary(max_size=300),
    ),
    st.builds(JoinItem, st.integers(0, 2**32 - 1), privates, groups),
    st.builds(LeaveItem, st.integers(0, 2**32 - 1), privates, groups),
    st.builds(KillItem, st.integers(0, 2**32 - 1), privates),
    st.builds(
        StateItem,
        st.tuples(st.integers(0, 2**64 - 1), st.integers(1, 2**32 - 1)),
        st.booleans(),
        st.lists(
            st.builds(
                StateEntry,
                groups,
                epochs,
                st.integers(0, 2**32 - 1),
                st.booleans(),
                st.lists(privates, max_size=5).map(tuple),
            ),
            max_size=5,
        ).map(tuple),
    ),
)


@settings(deadline=None)
@given(items)
def test_item_codec_roundtrip(item: object) -> None:
    data = encode_item(item)  # type: ignore[arg-type]
    assert decode_item(data) == item
    for cut in {0, 1, len(data) // 2, len(data) - 1}:
        if cut < len(data):
            with pytest.raises(MalformedPacket):
                decode_item(data[:cut])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.sampled_from([GroupsState.GOP, GroupsState.GGATHER]))
def test_arbitrary_ring_bytes_are_dropped(data: bytes, state: GroupsState) -> None:
    layer = layer_in(state)
    layer.client_connected(5, "a", True)
    layer.drain_actions()
    before = layer.counters.malformed
    layer.deliver(Deliver(2, 1, Service.AGREED, data, (8, 1)))
    layer.deliver(Deliver(77, 1, Service.AGREED, data, (8, 1)))  # not a configured daemon
    assert layer.counters.unknown_origin == 1
    try:
        decode_item(data)
    except MalformedPacket:
        assert layer.counters.malformed == before + 1
    for action in layer.drain_actions():
        assert isinstance(action, SubmitToRing | ToSession | RelayFrames)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=60).map(lambda b: bytes([5]) + b))
def test_arbitrary_state_bytes_are_dropped(data: bytes) -> None:
    layer = layer_in(GroupsState.GGATHER)
    layer.deliver(Deliver(2, 1, Service.AGREED, data, (8, 1)))
    assert layer.state in (GroupsState.GGATHER, GroupsState.GOP)


# ------------------------------------------------------------------ random histories (EVS)


def random_history(seed: int) -> tuple[Cluster, list[Client]]:
    rng = random.Random(seed)
    c = Cluster((1, 2, 3, 4))
    c.reconfigure([(1, 2, 3, 4)])
    c.run()
    clients: list[Client] = []
    counter = 0
    for _ in range(70):
        live = c.alive()
        open_clients = [x for x in clients if x.closed is None and x.daemon in c.layers]
        r = rng.random()
        if r < 0.15 or not open_clients:
            d = rng.choice(live)
            clients.append(c.connect(d, f"c{len(clients)}"))
        elif r < 0.35:
            c.join(rng.choice(open_clients), rng.choice("ABC"))
        elif r < 0.45:
            c.leave(rng.choice(open_clients), rng.choice("ABC"))
        elif r < 0.65:
            counter += 1
            tgt = rng.sample("ABC", rng.randint(1, 2))
            svc = rng.choice([ST.RELIABLE_MESS, ST.FIFO_MESS, ST.AGREED_MESS, ST.SAFE_MESS])
            c.mcast(rng.choice(open_clients), tgt, b"m%d" % counter, service=svc)
        elif r < 0.7:
            c.disconnect(rng.choice(open_clients))
        elif r < 0.8:
            c.hold(rng.random() < 0.5)
            c.run(senders=rng.sample(live, rng.randint(1, len(live))))
        elif r < 0.9:
            order = live[:]
            rng.shuffle(order)
            cut = sorted(rng.sample(range(1, len(order)), rng.randint(0, len(order) - 1)))
            comps = [order[i:j] for i, j in zip([0, *cut], [*cut, len(order)], strict=True)]
            c.reconfigure(comps)
        elif r < 0.93 and len(live) > 2:
            c.crash(rng.choice(live))
            c.reconfigure([c.alive()])
        else:
            c.run()
    c.hold(False)
    c.run()
    c.reconfigure([c.alive()])
    c.run()
    return c, clients


def check_history(c: Cluster, clients: list[Client]) -> None:
    views: dict[tuple[str, GroupId], tuple[tuple[str, ...], tuple[tuple[str, ...], ...]]] = {}
    # Per client and group: ("view", gid, vs set) | ("trans",) | ("left",) | ("msg", data).
    lines: dict[tuple[int, str], list[tuple[object, ...]]] = defaultdict(list)
    for x in clients:
        member_of: set[str] = set()
        for m in x.inbox:
            if isinstance(m, MembershipMessage):
                assert x.private_group in m.members, (x.name, m)  # self-inclusion
                if m.cause is NET:  # join/leave/disconnect: the one set is the changed member
                    assert x.private_group in m.vs_sets[m.local_vs_set or 0], (x.name, m)
                assert list(m.members) == sorted(m.members, key=lambda n: (n[-1], n)), m
                seen = views.setdefault((m.group, m.group_id), (m.members, m.vs_sets))
                assert seen == (m.members, m.vs_sets), f"two views named {m.group_id}"
                member_of.add(m.group)
                lines[x.sid, m.group].append(("view", m.group_id, m.local_vs_set))
            elif isinstance(m, TransitionalMessage):
                lines[x.sid, m.group].append(("trans",))
            elif isinstance(m, SelfLeave):
                member_of.discard(m.group)
                lines[x.sid, m.group].append(("left",))
            elif isinstance(m, RegularMessage):
                for g in m.groups:
                    if g in member_of:
                        lines[x.sid, g].append(("msg", m.data))
    # Clients that go from one group view to the next together saw the same things in between;
    # receivers of a network view that share a vs set all come from the same previous view.
    between: dict[tuple[object, ...], tuple[object, ...]] = {}
    came_from: dict[tuple[object, ...], set[object]] = defaultdict(set)
    for (_, group), line in lines.items():
        previous: int | None = None
        for j, e in enumerate(line):
            if e[0] == "left":
                previous = None
            if e[0] != "view":
                continue
            if previous is not None:
                key = (group, line[previous][1], e[1])
                seg = tuple(line[previous + 1 : j])
                assert between.setdefault(key, seg) == seg, f"{key}: {between[key]} vs {seg}"
            came_from[group, e[1], e[2]].add(line[previous][1] if previous is not None else None)
            previous = j
    for where, sources in came_from.items():
        assert len(sources - {None}) <= 1, f"vs set (group, view, index) {where} from {sources}"
    # After the final merge every daemon holds the same groups, and every connected member
    # saw the current view last.
    layers = list(c.layers.values())
    for layer in layers[1:]:
        assert layer.group_names() == layers[0].group_names()
        for g in layer.group_names():
            assert layer.group_members(g) == layers[0].group_members(g)
            assert layer.group_id(g) == layers[0].group_id(g)
    for x in clients:
        if x.closed is not None:
            continue
        layer = c.layers[x.daemon]
        for g in "ABC":
            last = [m for m in x.memberships(g) if not isinstance(m, TransitionalMessage)]
            if x.private_group in layer.group_members(g):
                assert last and memb(last[-1]).members == layer.group_members(g), (x.name, g)
                assert memb(last[-1]).group_id == layer.group_id(g)
            else:
                assert not last or isinstance(last[-1], SelfLeave), (x.name, g, last[-1:])


@pytest.mark.parametrize("seed", range(150))
def test_random_histories_keep_group_evs(seed: int) -> None:
    c, clients = random_history(seed)
    check_history(c, clients)

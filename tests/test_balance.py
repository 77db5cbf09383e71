"""wackapy balancer: codec, pure allocation/balancing, state table, scenarios, seeded sweep."""

from __future__ import annotations

import contextlib
import itertools
import math
from collections import Counter

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spreadpy.errors import LocalProtocolError, MalformedPacket
from wackapy.balance import (
    ALLOWED_INPUTS,
    Acquire,
    Announce,
    ArpCacheLearned,
    Balancer,
    BalancerSettings,
    Cause,
    ConnectSpread,
    Input,
    JoinGroup,
    Multicast,
    Reason,
    Release,
    SampleArpCache,
    Service,
    Slot,
    State,
    View,
    ViewKind,
    VipSet,
    allocate,
    plan_balance,
)
from wackapy.groupsim import (
    Crash,
    GroupSim,
    Heal,
    Health,
    MemberSpec,
    Partition,
    Restart,
    SpreadLoss,
    run,
)
from wackapy.statemsg import (
    ARP_ENTRIES_MAX,
    NAME_CHARS_MAX,
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
    decode,
    encode,
)

FAST = settings(max_examples=150, deadline=None)
C, P = Priority.CLAIMED, Priority.PREFER_CLAIMED
ME, PEER = "#a#d1", "#b#d2"

# ---------------------------------------------------------------------------------------------
# codec

STATE = StateMsg(
    view_id=(1, 2, 3),
    label="198.18.0.1",
    mature=True,
    eligible=True,
    claims=(Claim("s1", C),),
    prefer=("s2",),
    table_digest=bytes(8),
)
VECTORS = [
    ("maturing", MaturingMsg((1, 2, 3)), "93010293010203"),
    ("health", HealthMsg((-1, 7, 2), False), "94010693ff0702c2"),
    (
        "balance",
        BalanceMsg((1, 2, 3), (Move("s1", "#a#d1", "#b#d2"),)),
        "940103930102039193a27331a52361236431a52362236432",
    ),
    (
        "arpcache",
        ArpCacheMsg((ArpEntry("192.168.1.1", bytes.fromhex("020000000001")),)),
        "930105c40ac0a80101020000000001",
    ),
    (
        "state",
        STATE,
        "99010193010203aa3139382e31382e302e31c3c39192a273310291a27332c4080000000000000000",
    ),
]


@pytest.mark.parametrize(("name", "msg", "hexbytes"), VECTORS, ids=[v[0] for v in VECTORS])
def test_codec_vectors_both_ways(name: str, msg: Message, hexbytes: str) -> None:
    assert encode(msg).hex() == hexbytes
    assert decode(bytes.fromhex(hexbytes)) == msg


names = st.text(max_size=12)
view_ids = st.tuples(*[st.integers(-(2**31), 2**31 - 1)] * 3)
messages = st.one_of(
    st.builds(
        StateMsg,
        view_id=view_ids,
        label=names,
        mature=st.booleans(),
        eligible=st.booleans(),
        claims=st.lists(st.builds(Claim, names, st.sampled_from([C, P])), max_size=5).map(tuple),
        prefer=st.lists(names, max_size=5).map(tuple),
        table_digest=st.binary(min_size=8, max_size=8),
    ),
    st.builds(MaturingMsg, view_ids),
    st.builds(
        BalanceMsg, view_ids, st.lists(st.builds(Move, names, names, names), max_size=5).map(tuple)
    ),
    st.builds(HealthMsg, view_ids, st.booleans()),
    st.builds(
        ArpCacheMsg,
        st.lists(
            st.builds(
                ArpEntry,
                st.ip_addresses(v=4).map(str),
                st.binary(min_size=6, max_size=6),
            ),
            max_size=5,
        ).map(tuple),
    ),
)


@FAST
@given(messages)
def test_codec_roundtrip(msg: Message) -> None:
    assert decode(encode(msg)) == msg


def _decode_or_malformed(data: bytes) -> None:
    with contextlib.suppress(MalformedPacket):
        decode(data)


@FAST
@given(st.binary(max_size=200))
def test_decode_arbitrary_bytes_raises_only_malformed(data: bytes) -> None:
    _decode_or_malformed(data)


msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.text(max_size=8)
    | st.binary(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=8) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=20,
)


@FAST
@given(st.lists(msgpack_values, max_size=9), st.integers(0, 7))
def test_decode_wrong_shapes_raise_only_malformed(fields: list[object], code: int) -> None:
    for top in ([1, code, *fields], fields):
        _decode_or_malformed(msgpack.packb(top, use_bin_type=True))


@FAST
@given(messages, st.data())
def test_decode_truncated_raises_malformed(msg: Message, data: st.DataObject) -> None:
    raw = encode(msg)
    cut = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(MalformedPacket):
        decode(raw[:cut])


@pytest.mark.parametrize(
    "payload",
    [
        msgpack.packb([2, 2, [1, 2, 3]]),  # unknown version
        msgpack.packb([1, 4]),  # OPERATOR: reserved, never sent
        msgpack.packb([1, 99, [1, 2, 3]]),
        msgpack.packb([1, 2, [1, 2, True]]),  # a bool is not an int
        msgpack.packb([1, 2, [1, 2, 2**31]]),
        msgpack.packb([1, 6, [1, 2, 3], 1]),  # an int is not a bool
        msgpack.packb([1, 5, b"\x00" * 9]),
        msgpack.packb([1, 3, [1, 2, 3], [["s1", "a"]]]),
        msgpack.packb([1, 1, [1, 2, 3], "x", True, True, [["s1", 4]], [], bytes(8)]),  # PREFER
        msgpack.packb([1, 1, [1, 2, 3], "x" * (NAME_CHARS_MAX + 1), True, True, [], [], bytes(8)]),
        msgpack.packb([1, 2, [1, 2, 3]]) + b"\x00",  # trailing bytes
        b"",
    ],
)
def test_decode_refuses(payload: bytes) -> None:
    with pytest.raises(MalformedPacket):
        decode(payload)


def test_encode_refuses_what_decode_would() -> None:
    with pytest.raises(LocalProtocolError):
        encode(ArpCacheMsg((ArpEntry("198.18.2.4", bytes(6)),) * (ARP_ENTRIES_MAX + 1)))
    with pytest.raises(LocalProtocolError):
        encode(HealthMsg((1, 2, 2**31), True))
    with pytest.raises(LocalProtocolError):
        encode(ArpCacheMsg((ArpEntry("::1", bytes(6)),)))


# ---------------------------------------------------------------------------------------------
# the pure functions

SETS = ("s1", "s2", "s3", "s4")
ABC = ("a", "b", "c")

ALLOCATE_CASES = [
    # (name, eligible, claims, preferrers, expected owners in set order)
    ("empty view spreads by count, ties to lowest index", ABC, {}, {}, "abca"),
    ("claims are kept, the rest fills the least loaded", ABC, {"s1": [("c", C)]}, {}, "caba"),
    ("duplicate claims: first in delivery order", ABC, {"s1": [("b", C), ("a", C)]}, {}, "baca"),
    (
        "prefer-claimed beats an earlier claim",
        ABC,
        {"s1": [("b", C), ("a", P)]},
        {"s1": ["a"]},
        "abca",
    ),
    ("preferrer preempts a plain holder", ABC, {"s2": [("a", C)]}, {"s2": ["c"]}, "acba"),
    ("first preferrer wins among non-holders", ABC, {}, {"s1": ["c", "b"]}, "caba"),
    ("a preferring holder keeps it", ABC, {"s1": [("b", P)]}, {"s1": ["c", "b"]}, "baca"),
    ("ineligible claims and prefers do not count", "ac", {"s1": [("b", C)]}, {"s1": ["b"]}, "acac"),
    ("nobody eligible: nothing owned", "", {"s1": [("a", C)]}, {}, "----"),
]


@pytest.mark.parametrize(
    ("name", "eligible", "claims", "prefer", "expected"),
    ALLOCATE_CASES,
    ids=[c[0] for c in ALLOCATE_CASES],
)
def test_allocate_cases(
    name: str,
    eligible: str,
    claims: dict[str, list[tuple[str, Priority]]],
    prefer: dict[str, list[str]],
    expected: str,
) -> None:
    result = allocate(SETS, ABC, tuple(eligible), claims, prefer)
    got = "".join(result.slots[s].owner or "-" for s in SETS)
    assert got == expected
    contested = {s for s, cl in claims.items() if len({m for m, _ in cl if m in eligible}) > 1}
    assert result.contested == contested


@FAST
@given(
    st.lists(st.sampled_from(ABC), unique=True),
    st.dictionaries(
        st.sampled_from(SETS), st.lists(st.tuples(st.sampled_from(ABC), st.sampled_from([C, P])))
    ),
    st.dictionaries(st.sampled_from(SETS), st.lists(st.sampled_from(ABC), unique=True)),
)
def test_allocate_properties(
    eligible: list[str],
    claims: dict[str, list[tuple[str, Priority]]],
    prefer: dict[str, list[str]],
) -> None:
    result = allocate(SETS, ABC, eligible, claims, prefer)
    assert result == allocate(SETS, ABC, eligible, claims, prefer)  # a pure function
    for set_id in SETS:
        owner = result.slots[set_id].owner
        if not eligible:
            assert owner is None
            continue
        assert owner in eligible  # every set has exactly one eligible owner
        fans = [m for m in prefer.get(set_id, []) if m in eligible]
        holders = [m for m, _ in claims.get(set_id, []) if m in eligible]
        if fans:
            assert owner in fans
            assert result.slots[set_id].priority is P
        elif holders:
            assert owner in holders  # held sets never move on a view change without prefer


@FAST
@given(
    st.lists(st.sampled_from(ABC), min_size=1, unique=True),
    st.lists(st.sampled_from([*ABC, None]), min_size=4, max_size=4),
    st.lists(st.booleans(), min_size=4, max_size=4),
    st.one_of(st.none(), st.integers(0, 4)),
)
def test_plan_balance_properties(
    eligible: list[str], owners: list[str | None], preferred: list[bool], cap: int | None
) -> None:
    slots = {
        s: Slot(o, P if (pref and o is not None) else (C if o else Priority.UNCLAIMED))
        for s, o, pref in zip(SETS, owners, preferred, strict=True)
    }
    moves = plan_balance(SETS, ABC, eligible, slots, cap)
    assert cap is None or len(moves) <= cap
    table = {s: slot.owner for s, slot in slots.items()}
    counts = Counter(o for o in table.values() if o in eligible)
    for move in moves:
        assert slots[move.set_id].priority is not P
        assert table[move.set_id] == move.from_member
        assert move.to_member in eligible
        assert counts[move.from_member] >= counts[move.to_member] + 2
        table[move.set_id] = move.to_member
        counts[move.from_member] -= 1
        counts[move.to_member] += 1
    if cap is None and not any(slot.priority is P for slot in slots.values()):
        loads = [sum(1 for o in table.values() if o == m) for m in eligible]
        if all(table[s] in eligible for s in SETS) and len(eligible) > 1:
            assert max(loads) - min(loads) <= 1


# ---------------------------------------------------------------------------------------------
# the state machine, driven directly


def _settings(**overrides: object) -> BalancerSettings:
    base: dict[str, object] = {
        "group": "www",
        "vip_sets": (VipSet("s1", ("192.168.1.20",)), VipSet("s2", ("192.168.1.21",))),
        "mature_s": 5.0,
        "balance_interval_s": 4.0,
        "acquisitions_per_round": None,
        "spread_retry_s": 5.0,
        "label": "192.168.1.10",
    }
    base.update(overrides)
    return BalancerSettings(**base)  # type: ignore[arg-type]


def _view(members: tuple[str, ...], n: int = 1, cause: Cause = Cause.JOIN) -> View:
    return View(group="www", kind=ViewKind.REGULAR, view_id=(1, n, 1), members=members, cause=cause)


def _multicasts(balancer: Balancer) -> list[Multicast]:
    return [a for a in balancer.drain_actions() if isinstance(a, Multicast)]


def _connected(balancer: Balancer, now: float = 0.0) -> None:
    balancer.start(now)
    balancer.connected(ME, now)
    balancer.drain_actions()


def _in_view(members: tuple[str, ...], **overrides: object) -> tuple[Balancer, bytes]:
    """A member in GATHER for ``members``; returns it and its own STATE payload."""
    balancer = Balancer(_settings(**overrides))
    _connected(balancer)
    balancer.membership(_view(members), 0.01)
    (state,) = [m for m in _multicasts(balancer) if m.mess_type == MessageCode.STATE]
    return balancer, state.payload


def _running_alone(**overrides: object) -> Balancer:
    balancer, own_state = _in_view((ME,), mature_s=0.0, **overrides)
    balancer.message(ME, own_state, 0.02)
    assert balancer.state is State.BOOT
    balancer.timer(0.02)
    (maturing,) = _multicasts(balancer)
    balancer.message(ME, maturing.payload, 0.03)
    assert balancer.state is State.RUN
    return balancer


def _running_with_peer(**overrides: object) -> Balancer:
    """We lead a RUN view (ME, PEER); the peer is mature and eligible; s1 is ours, s2 the peer's."""
    balancer, own_state = _in_view((ME, PEER), mature_s=0.0, **overrides)
    balancer.message(ME, own_state, 0.02)
    assert balancer.view is not None
    peer_state = StateMsg(
        view_id=balancer.view.view_id,
        label="192.168.1.11",
        mature=True,
        eligible=True,
        claims=(),
        prefer=(),
        table_digest=_settings(**overrides).table_digest(),
    )
    balancer.message(PEER, encode(peer_state), 0.03)
    assert balancer.state is State.RUN and balancer.owners() == {"s1": ME, "s2": PEER}
    balancer.drain_actions()
    return balancer


def _in_state(state: State) -> Balancer:
    balancer = Balancer(_settings())
    match state:
        case State.CONNECTING:
            balancer.start(0.0)
        case State.DISCONNECTED:
            balancer.start(0.0)
            balancer.disconnected(0.0)
        case State.BOOT:
            _connected(balancer)
        case State.GATHER:
            balancer = _in_view((ME, PEER))[0]
        case State.RUN:
            balancer = _running_alone()
        case State.STOPPED:
            balancer.shutdown(0.0)
    assert balancer.state is state
    balancer.drain_actions()
    return balancer


def _feed(balancer: Balancer, what: Input) -> None:
    now = 1.0
    match what:
        case Input.START:
            balancer.start(now)
        case Input.CONNECTED:
            balancer.connected(ME, now)
        case Input.DISCONNECTED:
            balancer.disconnected(now)
        case Input.MEMBERSHIP:
            balancer.membership(_view((ME,), 9), now)
        case Input.MESSAGE:
            balancer.message(ME, encode(MaturingMsg((1, 1, 1))), now)
        case Input.TIMER:
            balancer.timer(now)
        case Input.SET_HEALTHY:
            balancer.set_healthy(False, now)
        case Input.SHARE_ARP_CACHE:
            balancer.share_arp_cache([ArpEntry("198.19.2.1", bytes(6))], now)
        case Input.SHUTDOWN:
            balancer.shutdown(now)


@pytest.mark.parametrize("state", list(State))
@pytest.mark.parametrize("what", list(Input))
def test_state_table_is_total(state: State, what: Input) -> None:
    balancer = _in_state(state)
    if what in ALLOWED_INPUTS[state]:
        _feed(balancer, what)
        assert balancer.state in State
    else:
        with pytest.raises(LocalProtocolError):
            _feed(balancer, what)
        assert balancer.state is state


def test_start_cleans_up_then_connects_and_joins() -> None:
    balancer = Balancer(_settings())
    balancer.start(0.0)
    assert balancer.drain_actions() == [
        Release("s1", ("192.168.1.20",), Reason.STARTUP),
        Release("s2", ("192.168.1.21",), Reason.STARTUP),
        ConnectSpread(),
    ]
    balancer.connected(ME, 0.5)
    assert balancer.drain_actions() == [JoinGroup("www")]
    assert balancer.next_deadline() == 5.5  # the Mature timer


def test_connect_failure_retries_after_interval() -> None:
    balancer = Balancer(_settings(spread_retry_s=5.0))
    balancer.start(0.0)
    balancer.drain_actions()
    balancer.disconnected(0.1)
    assert balancer.state is State.DISCONNECTED and balancer.next_deadline() == 5.1
    balancer.timer(5.0)  # early: harmless
    assert balancer.drain_actions() == []
    balancer.timer(5.1)
    assert balancer.drain_actions() == [ConnectSpread()]


def test_disconnect_releases_everything_and_reconnects_at_once() -> None:
    balancer = _running_alone()
    assert balancer.held == ("s1", "s2")
    balancer.drain_actions()
    balancer.disconnected(1.0)
    assert balancer.drain_actions() == [
        Release("s1", ("192.168.1.20",), Reason.DISCONNECTED),
        Release("s2", ("192.168.1.21",), Reason.DISCONNECTED),
        ConnectSpread(),
    ]
    assert balancer.held == () and not balancer.mature and balancer.view is None


def test_acquire_comes_with_announce_and_ownership_shows_labels() -> None:
    balancer, own_state = _in_view((ME,), mature_s=0.0)
    balancer.message(ME, own_state, 0.02)
    balancer.timer(0.02)
    (maturing,) = _multicasts(balancer)
    balancer.message(ME, maturing.payload, 0.03)
    actions = balancer.drain_actions()
    assert actions == [
        Acquire("s1", ("192.168.1.20",), Reason.ALLOCATE),
        Announce("s1", ("192.168.1.20",)),
        Acquire("s2", ("192.168.1.21",), Reason.ALLOCATE),
        Announce("s2", ("192.168.1.21",)),
    ]
    assert [(r.owner, r.owner_label, r.priority) for r in balancer.ownership()] == [
        (ME, "192.168.1.10", C),
        (ME, "192.168.1.10", C),
    ]


def test_malformed_peer_messages_are_ignored_and_counted() -> None:
    balancer = _running_alone()
    balancer.membership(_view((ME, PEER), 2), 1.0)
    (own_state,) = [m.payload for m in _multicasts(balancer) if m.mess_type == 1]
    balancer.message(ME, own_state, 1.01)
    assert balancer.state is State.GATHER
    # garbage from the peer whose STATE is awaited stands for an empty, ineligible STATE
    balancer.message(PEER, b"\xc1garbage", 1.02)
    assert balancer.counters["malformed_messages"] == 1
    assert balancer.counters["states_replaced_by_empty"] == 1
    assert balancer.state is State.RUN
    assert balancer.owners() == {"s1": ME, "s2": ME}  # the peer is not eligible
    before = (balancer.state, balancer.owners(), balancer.held)
    bad = [
        b"",
        b"\x93\x01\x02",
        msgpack.packb([1, 4]),
        msgpack.packb([7, 2, [1, 2, 1]]),
        msgpack.packb([1, 3, [1, 2, 1], [["s1", ME]]]),
        msgpack.packb({"a": 1}),
        bytes(range(256)),
    ]
    for payload in bad:
        balancer.message(PEER, payload, 1.1)
    assert balancer.counters["malformed_messages"] == 1 + len(bad)
    assert (balancer.state, balancer.owners(), balancer.held) == before
    balancer.message("#stranger#d9", encode(MaturingMsg((1, 2, 1))), 1.2)
    assert balancer.counters["messages_from_non_members"] == 1


def test_stale_and_unexpected_messages_are_ignored() -> None:
    balancer = _running_alone()
    balancer.drain_actions()
    assert balancer.view is not None
    view_id = balancer.view.view_id
    stale = (9, 9, 9)
    state = StateMsg(
        view_id=view_id,
        label="x",
        mature=True,
        eligible=True,
        claims=(Claim("s1", C), Claim("nope", C)),
        prefer=(),
        table_digest=bytes(8),
    )
    before = balancer.owners()
    balancer.message(ME, encode(state), 1.0)  # a second STATE in the same view
    balancer.message(ME, encode(BalanceMsg(stale, (Move("s1", ME, ME),))), 1.0)
    balancer.message(ME, encode(HealthMsg(stale, False)), 1.0)
    assert balancer.owners() == before and balancer.drain_actions() == []
    assert balancer.counters["duplicate_states"] == 1
    assert balancer.counters["stale_balances"] == 1
    assert balancer.counters["stale_health"] == 1


def test_balance_only_from_the_leader_and_stale_moves_are_skipped() -> None:
    balancer = _running_with_peer(acquisitions_per_round=1)  # no follow-up round (as with all)
    assert balancer.view is not None
    view_id = balancer.view.view_id
    take_s2 = encode(BalanceMsg(view_id, (Move("s2", PEER, ME),)))
    balancer.message(PEER, take_s2, 1.0)  # PEER is not the leader
    assert balancer.counters["balances_from_non_leader"] == 1
    assert balancer.owners() == {"s1": ME, "s2": PEER} and balancer.drain_actions() == []
    balancer.message(ME, encode(BalanceMsg(view_id, (Move("s2", ME, PEER),))), 1.1)
    assert balancer.counters["balance_moves_skipped"] == 1  # s2 is not ME's to give
    assert balancer.owners() == {"s1": ME, "s2": PEER}
    balancer.message(ME, take_s2, 1.2)
    assert balancer.owners() == {"s1": ME, "s2": ME}
    assert balancer.drain_actions() == [
        Acquire("s2", ("192.168.1.21",), Reason.BALANCE),
        Announce("s2", ("192.168.1.21",)),
    ]


def test_health_change_does_not_postpone_the_balance_round() -> None:
    balancer = _running_with_peer(acquisitions_per_round=1, balance_interval_s=4.0)
    assert balancer.next_deadline() == pytest.approx(4.03)
    assert balancer.view is not None
    balancer.message(PEER, encode(HealthMsg(balancer.view.view_id, False)), 1.0)
    assert balancer.owners() == {"s1": ME, "s2": ME}  # the peer's set came to us at once
    assert balancer.next_deadline() == pytest.approx(4.03)


def test_wrong_group_or_view_without_us_is_a_caller_bug() -> None:
    balancer = _in_state(State.BOOT)
    with pytest.raises(LocalProtocolError):
        balancer.membership(
            View(group="other", kind=ViewKind.REGULAR, view_id=(1, 1, 1), members=(ME,)), 1.0
        )
    with pytest.raises(LocalProtocolError):
        balancer.membership(_view((PEER,)), 1.0)


def test_transitional_view_is_noted_only() -> None:
    balancer = _running_alone()
    balancer.drain_actions()
    trans = View(group="www", kind=ViewKind.TRANSITIONAL, view_id=(1, 1, 1), members=(ME,))
    balancer.membership(trans, 1.0)
    assert balancer.state is State.RUN and balancer.drain_actions() == []
    assert balancer.counters["transitional_views"] == 1


def test_unhealthy_member_holds_nothing_and_says_so() -> None:
    balancer = _running_alone()
    balancer.drain_actions()
    balancer.set_healthy(False, 1.0)
    actions = balancer.drain_actions()
    assert [a for a in actions if isinstance(a, Release)] == [
        Release("s1", ("192.168.1.20",), Reason.UNHEALTHY),
        Release("s2", ("192.168.1.21",), Reason.UNHEALTHY),
    ]
    (health,) = [a for a in actions if isinstance(a, Multicast)]
    assert health.service is Service.AGREED
    assert balancer.view is not None
    assert decode(health.payload) == HealthMsg(balancer.view.view_id, False)
    balancer.message(ME, health.payload, 1.01)
    assert balancer.owners() == {"s1": None, "s2": None} and balancer.held == ()
    balancer.set_healthy(True, 2.0)
    (health,) = _multicasts(balancer)
    balancer.message(ME, health.payload, 2.01)
    assert balancer.held == ("s1", "s2")


def test_arp_cache_sharing() -> None:
    balancer = _running_alone()
    balancer.membership(_view((ME,), 5), 1.0)
    assert SampleArpCache() in balancer.drain_actions()
    entry = ArpEntry("192.168.1.1", bytes.fromhex("0a0000000001"))
    balancer.share_arp_cache([entry], 1.0)
    (mc,) = _multicasts(balancer)
    assert mc.service is Service.RELIABLE and mc.mess_type == MessageCode.ARPCACHE
    balancer.message(ME, mc.payload, 1.01)
    assert balancer.drain_actions() == [ArpCacheLearned(ME, (entry,))]


# ---------------------------------------------------------------------------------------------
# scenarios on the group harness

SEED_SETS = (VipSet("192.168.1.20", ("192.168.1.20",)), VipSet("192.168.1.21", ("192.168.1.21",)))
SEED_HOSTS = (MemberSpec("A", label="192.168.1.10"), MemberSpec("B", label="192.168.1.11"))


def _seed_sim(**kw: object) -> GroupSim:
    """The seed tutorial configuration (spec §1.7): mature 5s, balance all, retry 5s."""
    options: dict[str, object] = {
        "mature_s": 5.0,
        "balance_interval_s": 4.0,
        "acquisitions_per_round": None,
        "spread_retry_s": 5.0,
    }
    options.update(kw)
    return GroupSim(1, SEED_HOSTS, SEED_SETS, **options)  # type: ignore[arg-type]


def _balance_messages(sim: GroupSim) -> list[tuple[float, str, BalanceMsg]]:
    out = []
    for t, who, action in sim.actions:
        if isinstance(action, Multicast) and action.mess_type == MessageCode.BALANCE:
            msg = decode(action.payload)
            assert isinstance(msg, BalanceMsg)
            out.append((t, who, msg))
    return out


def test_worked_example_two_hosts_started_together() -> None:
    sim = _seed_sim()
    sim.run_until(4.9)
    assert sim.holders() == {"192.168.1.20": (), "192.168.1.21": ()}  # immature
    sim.run_until(5.5)
    assert sim.holders() == {"192.168.1.20": ("A",), "192.168.1.21": ("B",)}
    a = sim.balancer("A")
    assert a is not None
    assert [(r.set_id, r.owner_label) for r in a.ownership()] == [
        ("192.168.1.20", "192.168.1.10"),
        ("192.168.1.21", "192.168.1.11"),
    ]
    announced = [(w, x.set_id) for _, w, x in sim.actions if isinstance(x, Announce)]
    assert announced == [("A", "192.168.1.20"), ("B", "192.168.1.21")]
    assert _balance_messages(sim) == []  # counts 1/1: nothing to send
    assert not sim.violations


def test_worked_example_second_host_joins_later() -> None:
    sim = _seed_sim(autostart=False)
    sim.schedule(Restart(0.0, "A"))
    sim.run_until(6.0)
    assert sim.holders() == {"192.168.1.20": ("A",), "192.168.1.21": ("A",)}
    sim.schedule(Restart(10.0, "B"))
    sim.run_until(10.2)
    b = sim.balancer("B")
    assert b is not None and b.mature  # matured from A's STATE, long before its own timer
    assert sim.holders() == {"192.168.1.20": ("B",), "192.168.1.21": ("A",)}
    ((_, leader, msg),) = _balance_messages(sim)
    assert leader == "A"
    assert msg.moves == (Move("192.168.1.20", sim.private_name("A"), sim.private_name("B")),)
    assert not sim.violations


def test_one_member_alone_takes_everything_after_maturity() -> None:
    sim = GroupSim(3, [MemberSpec("solo")], 5, mature_s=3.0)
    sim.run_until(2.9)
    assert sim.held_by("solo") == ()
    sim.run_until(3.1)
    assert sim.held_by("solo") == ("s1", "s2", "s3", "s4", "s5")
    assert not sim.violations


def test_crash_moves_sets_to_survivors() -> None:
    sim = GroupSim(4, 3, 6, mature_s=1.0)
    sim.run_until(2.0)
    assert [len(sim.held_by(n)) for n in ("n1", "n2", "n3")] == [2, 2, 2]
    orphans = sim.held_by("n2")
    sim.schedule(Crash(3.0, "n2"))
    sim.run_until(3.2)
    holders = sim.holders()
    assert all(len(h) == 1 and h[0] != "n2" for h in holders.values())
    assert [len(sim.held_by(n)) for n in ("n1", "n3")] == [3, 3]
    acquired = {x.set_id for t, _, x in sim.actions if t >= 3.0 and isinstance(x, Acquire)}
    assert acquired == set(orphans)  # only the orphans move
    assert not sim.violations


@pytest.mark.parametrize("cap", [1, 2])
def test_restart_rebalances_paced_by_acquisitions_per_round(cap: int) -> None:
    interval = 1.0
    sim = GroupSim(5, 3, 6, mature_s=1.0, balance_interval_s=interval, acquisitions_per_round=cap)
    sim.schedule(Crash(2.0, "n3", host=True))
    sim.schedule(Crash(2.5, "n2"))
    sim.run_until(4.0)
    assert len(sim.held_by("n1")) == 6
    sim.schedule(Restart(5.0, "n2"))
    sim.schedule(Restart(5.0, "n3"))
    sim.run_until(5.1)
    assert sim.held_by("n2") == sim.held_by("n3") == ()  # held sets stay put at a join
    sim.run_until(20.0)
    assert [len(sim.held_by(n)) for n in ("n1", "n2", "n3")] == [2, 2, 2]
    rounds = _balance_messages(sim)
    assert all(who == "n1" and 1 <= len(msg.moves) <= cap for _, who, msg in rounds)
    assert sum(len(msg.moves) for _, _, msg in rounds) == 4
    assert len(rounds) == math.ceil(4 / cap)
    times = [t for t, _, _ in rounds]
    assert all(b - a >= interval for a, b in itertools.pairwise(times))
    assert not sim.violations


def test_partition_then_heal_leaves_one_holder_and_the_loser_releases() -> None:
    sim = GroupSim(6, 4, 6, mature_s=1.0)
    sim.run_until(2.0)
    sim.schedule(Partition(3.0, (("n1", "n2"), ("n3", "n4"))))
    sim.run_until(3.5)
    holders = sim.holders()
    for side in (("n1", "n2"), ("n3", "n4")):  # each side serves every VIP, once
        assert all(len([h for h in holders[s] if h in side]) == 1 for s in sim.set_ids)
    sim.schedule(Heal(5.0))
    sim.run_until(5.2)
    assert all(len(h) == 1 for h in sim.holders().values())
    after = [(who, x) for t, who, x in sim.actions if t >= 5.0]
    lost = {(who, x.set_id) for who, x in after if isinstance(x, Release)}
    assert lost and all(x.reason is Reason.CONFLICT for _, x in after if isinstance(x, Release))
    assert len(lost) == 6  # every set was double-held; one loser each
    kept = {(who, x.set_id) for who, x in after if isinstance(x, Announce)}
    assert kept == {(h[0], s) for s, h in sim.holders().items()}  # every keeper re-announces
    owners = {tuple(b.owners().items()) for n in ("n1", "n2", "n3", "n4") if (b := sim.balancer(n))}
    assert len(owners) == 1  # everyone agrees who keeps what
    sim.run_until(15.0)
    assert sorted(len(sim.held_by(n)) for n in ("n1", "n2", "n3", "n4")) == [1, 1, 2, 2]
    assert not sim.violations


def test_after_a_merge_every_holder_reannounces() -> None:
    sim = GroupSim(10, 3, 6, mature_s=1.0)
    sim.schedule(Health(1.5, "n3", False))  # n3's side will hold nothing: no conflicts
    sim.run_until(2.0)
    sim.schedule(Partition(3.0, (("n1", "n2"), ("n3",))))
    sim.schedule(Heal(5.0))
    sim.run_until(5.2)
    after = [(who, x) for t, who, x in sim.actions if t >= 5.0]
    assert not [x for _, x in after if isinstance(x, Acquire | Release)]
    announced = {(who, x.set_id) for who, x in after if isinstance(x, Announce)}
    assert announced == {(h[0], s) for s, h in sim.holders().items()}
    assert {h[0] for h in sim.holders().values()} == {"n1", "n2"}
    assert not sim.violations


def test_spread_loss_releases_everything_at_once_then_rejoins() -> None:
    sim = GroupSim(7, 3, 6, mature_s=1.0, spread_retry_s=1.0)
    sim.run_until(2.0)
    held = sim.held_by("n2")
    assert held
    sim.schedule(SpreadLoss(3.0, "n2", down_s=2.5))
    sim.run_until(3.0)
    assert sim.held_by("n2") == ()
    released = [(t, x) for t, w, x in sim.actions if w == "n2" and isinstance(x, Release)]
    assert [x.set_id for t, x in released if t == 3.0] == list(held)
    assert all(x.reason is Reason.DISCONNECTED for t, x in released if t == 3.0)
    sim.run_until(3.2)
    assert all(len(h) == 1 and h[0] != "n2" for h in sim.holders().values())
    sim.run_until(15.0)
    assert [len(sim.held_by(n)) for n in ("n1", "n2", "n3")] == [2, 2, 2]
    assert not sim.violations


def test_prefer_is_honoured_and_preempts_after_restart() -> None:
    members = [MemberSpec("n1"), MemberSpec("n2", prefer=("192.168.1.20", "s3")), MemberSpec("n3")]
    sim = GroupSim(8, members, 4, mature_s=1.0)
    sim.run_until(2.0)
    assert set(sim.held_by("n2")) >= {"s1", "s3"}  # s1 matched by its head address
    sim.schedule(Crash(3.0, "n2"))
    sim.run_until(3.5)
    assert all(len(h) == 1 and h[0] != "n2" for h in sim.holders().values())
    sim.schedule(Restart(5.0, "n2"))
    sim.run_until(5.5)
    assert set(sim.held_by("n2")) >= {"s1", "s3"}
    preempted = [
        (x.set_id, x.reason)
        for t, _, x in sim.actions
        if t >= 5.0 and isinstance(x, Release) and x.reason is not Reason.STARTUP
    ]
    assert sorted(preempted) == [("s1", Reason.PREFERENCE), ("s3", Reason.PREFERENCE)]
    sim.run_until(20.0)
    assert not [
        m for _, _, m in _balance_messages(sim) if {"s1", "s3"} & {x.set_id for x in m.moves}
    ]
    assert not sim.violations


def test_health_gate_moves_sets_away_and_back() -> None:
    sim = GroupSim(9, 3, 6, mature_s=1.0)
    sim.run_until(2.0)
    sim.schedule(Health(3.0, "n3", False))
    sim.run_until(3.0)
    assert sim.held_by("n3") == ()
    sim.run_until(3.1)
    assert [len(sim.held_by(n)) for n in ("n1", "n2")] == [3, 3]
    sim.schedule(Crash(4.0, "n3"))
    sim.schedule(Restart(4.5, "n3"))  # comes back still unhealthy: stays empty
    sim.run_until(8.0)
    assert sim.held_by("n3") == ()
    sim.schedule(Health(9.0, "n3", True))
    sim.run_until(15.0)
    assert [len(sim.held_by(n)) for n in ("n1", "n2", "n3")] == [2, 2, 2]
    assert not sim.violations


def test_same_seed_same_run() -> None:
    first, second = run(11, 4, 6, 20, 60.0), run(11, 4, 6, 20, 60.0)
    assert first.digest == second.digest and first.counts == second.counts
    assert run(12, 4, 6, 20, 60.0).digest != first.digest


SWEEP_PROFILES = [
    {"acquisitions_per_round": 1},
    {"acquisitions_per_round": None},
    {"acquisitions_per_round": 2, "mature_s": 0.0},
    {"acquisitions_per_round": 0, "spread_retry_s": 0.5},
]


SWEEP_SEEDS_PER_PROFILE = 60


@pytest.mark.parametrize("profile", range(len(SWEEP_PROFILES)))
def test_seeded_sweep_keeps_the_invariants(profile: int) -> None:
    """Random faults (crashes, restarts, partitions, heals, Spread loss, health flaps), then a
    quiet tail; the harness checks the invariants at every step and whenever quiet."""
    failures = []
    quiet_checks = 0
    first = profile * SWEEP_SEEDS_PER_PROFILE
    for seed in range(first, first + SWEEP_SEEDS_PER_PROFILE):
        members, sets = 2 + seed % 4, 1 + seed % 7
        result = run(seed, members, sets, 35, 90.0, **SWEEP_PROFILES[profile])  # type: ignore[arg-type]
        quiet_checks += result.counts.get("quiet_checks", 0)
        if not result.ok:
            failures.append(f"{result.replay}: {result.violations[0]}")
    assert not failures, "\n".join(failures)
    assert quiet_checks > SWEEP_SEEDS_PER_PROFILE * 10  # the full check did run

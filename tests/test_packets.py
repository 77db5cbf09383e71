"""Ring packet codec: table-driven round trips, and garbage never raises anything but ours."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spreadpy import packets as pk
from spreadpy.errors import MalformedPacket

CHUNKS: tuple[pk.Chunk, ...] = (
    (7, pk.Service.AGREED, pk.FRAG_WHOLE, b"hello"),
    (8, pk.Service.AGREED, pk.FRAG_FIRST, b"x" * 300),
)

ROUND_TRIPS = [
    (
        "data",
        pk.encode_data((12, 3), 41, 3, 0, CHUNKS),
        pk.DataPacket((12, 3), 41, 3, 0, CHUNKS),
    ),
    (
        "safe data",
        pk.encode_data((12, 3), 42, 5, pk.FLAG_SAFE, CHUNKS[:1]),
        pk.DataPacket((12, 3), 42, 5, pk.FLAG_SAFE, CHUNKS[:1]),
    ),
    (
        "token",
        pk.encode_token(pk.Token((9, 1), 17, 100, 90, 2, 80, 20, 3, 4, 0, [91, 95])),
        pk.Token((9, 1), 17, 100, 90, 2, 80, 20, 3, 4, 0, [91, 95]),
    ),
    (
        "join",
        pk.encode_join(
            pk.Join(2, 5, 77, 9, frozenset({1, 2, 3}), frozenset({3}), 0xC0FFEE, (8, 1))
        ),
        pk.Join(2, 5, 77, 9, frozenset({1, 2, 3}), frozenset({3}), 0xC0FFEE, (8, 1)),
    ),
    (
        "merge detect",
        pk.encode_probe(pk.Probe(pk.Kind.MERGE_DETECT, 4, (8, 4), 17)),
        pk.Probe(pk.Kind.MERGE_DETECT, 4, (8, 4), 17),
    ),
]


@pytest.mark.parametrize(("name", "raw", "value"), ROUND_TRIPS, ids=[r[0] for r in ROUND_TRIPS])
def test_round_trip(name: str, raw: bytes, value: object) -> None:
    assert pk.decode(raw) == value


def test_commit_token_round_trip() -> None:
    entry = pk.CommitEntry(pk.RingState((5, 1), 10, 12, 9), pk.NO_RING, True)
    commit = pk.CommitToken((9, 1), 3, 2, (1, 2), (entry, pk.EMPTY_ENTRY))
    assert pk.decode(pk.encode_commit(commit)) == commit


def test_recovery_packet_carries_old_packet_whole() -> None:
    old = pk.encode_data((5, 1), 3, 2, 0, CHUNKS)
    decoded = pk.decode(pk.encode_recovery((9, 1), 1, 1, old))
    assert isinstance(decoded, pk.DataPacket)
    assert decoded.flags & pk.FLAG_RECOVERY
    assert decoded.inner == old
    assert pk.decode(decoded.inner) == pk.DataPacket((5, 1), 3, 2, 0, CHUNKS)


RECOVERY_INSIDE = pk.encode_recovery((1, 1), 1, 1, pk.encode_data((1, 1), 1, 1, 0, CHUNKS))
UNSORTED_COMMIT = pk.CommitToken((1, 1), 0, 0, (2, 1), (pk.EMPTY_ENTRY,) * 2)


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("empty", b""),
        ("unknown kind", b"\x63abc"),
        ("truncated token", pk.encode_token(pk.Token((1, 1), 1, 0, 0, 0, 0, 0, 0, 1, 0, []))[:-3]),
        ("chunk past end", pk.encode_data((1, 1), 1, 1, 0, CHUNKS)[:-10]),
        ("trailing bytes", pk.encode_data((1, 1), 1, 1, 0, CHUNKS) + b"zz"),
        ("seq zero", pk.encode_data((1, 1), 0, 1, 0, CHUNKS)),
        ("recovery of recovery", pk.encode_recovery((2, 1), 1, 1, RECOVERY_INSIDE)),
        ("unsorted commit", pk.encode_commit(UNSORTED_COMMIT)),
        ("chunk list not msgpack", pk.encode_data((1, 1), 1, 1, 0, CHUNKS)[:25] + b"\xc1"),
        ("chunk list too short", pk.encode_data((1, 1), 1, 1, 0, CHUNKS)[:-1]),
        ("bad service", pk.encode_data((1, 1), 1, 1, 0, ((1, 9, 3, b"x"),))),
        ("bad frag", pk.encode_data((1, 1), 1, 1, 0, ((1, 5, 7, b"x"),))),
    ],
)
def test_malformed_is_rejected(name: str, raw: bytes) -> None:
    with pytest.raises(MalformedPacket):
        pk.decode(raw)


@settings(deadline=None, max_examples=300)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_malformed(raw: bytes) -> None:
    with contextlib.suppress(MalformedPacket):
        pk.decode(raw)


@settings(deadline=None, max_examples=300)
@given(st.sampled_from([r[1] for r in ROUND_TRIPS]), st.data())
def test_mutated_packets_raise_only_malformed(raw: bytes, data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, len(raw)))
    flip = data.draw(st.integers(0, max(0, len(raw) - 1)))
    mutated = bytearray(raw[:cut] + raw[cut:])
    if mutated:
        mutated[flip % len(mutated)] ^= data.draw(st.integers(1, 255))
    for candidate in (bytes(mutated), raw[:cut]):
        with contextlib.suppress(MalformedPacket):
            pk.decode(candidate)

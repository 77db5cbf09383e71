"""The daemon's ring transport: a visit's data packets leave in segmented runs (UDP GSO) and
arrive coalesced (UDP GRO) where the kernel can, with nothing lost, reordered or unsealed."""

from __future__ import annotations

import asyncio
import errno
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from spreadpy import client
from spreadpy.config import parse_config
from spreadpy.daemon import GSO_BYTES_MAX, GSO_SEGMENTS_MAX, RingTransport, _gso_runs

from .daemons import FAST_TIMEOUTS, Cluster, free_port


def sizes(runs: list[list[bytes]]) -> list[list[int]]:
    return [[len(p) for p in run] for run in runs]


def packets(*lengths: int) -> list[bytes]:
    return [bytes([i % 256]) * n for i, n in enumerate(lengths)]


@pytest.mark.parametrize(
    ("lengths", "expected"),
    [
        ((1472,), [[1472]]),
        ((1472, 1472, 1472), [[1472, 1472, 1472]]),
        # a shorter packet may end a run, and then ends it
        ((1472, 1472, 900, 1472), [[1472, 1472, 900], [1472]]),
        # a longer one cannot join a run of shorter ones
        ((900, 1472, 1472), [[900], [1472, 1472]]),
        ((100, 200, 300), [[100], [200], [300]]),
        ((300, 200, 100), [[300, 200], [100]]),
    ],
)
def test_runs_keep_order_and_one_size_but_a_shorter_last(
    lengths: tuple[int, ...], expected: list[list[int]]
) -> None:
    given = packets(*lengths)
    runs = _gso_runs(given)
    assert sizes(runs) == expected
    assert [p for run in runs for p in run] == given


def test_runs_stay_within_the_kernels_limits() -> None:
    many = packets(*([100] * (GSO_SEGMENTS_MAX + 5)))
    assert sizes(_gso_runs(many)) == [[100] * GSO_SEGMENTS_MAX, [100] * 5]
    big = packets(*([8972] * 10))
    runs = _gso_runs(big)
    assert all(sum(len(p) for p in run) <= GSO_BYTES_MAX for run in runs)
    assert sizes(runs) == [[8972] * 7, [8972] * 3]


@pytest.mark.skipif(sys.platform != "linux", reason="UDP segmentation offload is Linux's")
def test_a_flood_through_segmented_sends_and_coalesced_receives_loses_nothing(
    tmp_path: Path,
) -> None:
    # 1 KB messages in 1472-byte ring packets: one per packet, so each visit sends runs of
    # equal packets. Sealed with a ring key, so each datagram of a run is checked alone.
    extra = (
        FAST_TIMEOUTS + "RingPacketSize = 1472\n" + f'RingAuthKeyFile = "{tmp_path}/SOCKET.key"\n'
    )
    cluster = Cluster(tmp_path, names=("n1", "n2", "n3"), extra_config=extra)
    for name in cluster.names:
        Path(cluster[name].unix_socket + ".key").write_bytes(b"a ring key for this test only\n")
    count = 2000
    try:
        for name in cluster.names:
            cluster.start(name)
        assert cluster.wait_ring() == ["n1", "n2", "n3"]
        readers = {n: client.connect(cluster[n].unix_socket, f"r{n}") for n in ("n2", "n3")}
        got: dict[str, list[bytes]] = {n: [] for n in readers}

        def read(name: str) -> None:
            while len(got[name]) < count:
                message = readers[name].receive(timeout=10)
                if isinstance(message, client.RegularMessage):
                    got[name].append(message.data[:8])

        for reader in readers.values():
            reader.join("flood")
            reader.receive(timeout=5)  # its own join
        threads = [threading.Thread(target=read, args=(n,)) for n in readers]
        for thread in threads:
            thread.start()
        with client.connect(cluster["n1"].unix_socket, "sender") as sender:
            for i in range(count):
                sender.multicast(client.AGREED_MESS, "flood", b"%08d" % i + bytes(992))
            for thread in threads:
                thread.join(timeout=30)
        expected = [b"%08d" % i for i in range(count)]
        assert got == {"n2": expected, "n3": expected}
        transport = {n: cluster[n].status()["transport"] for n in cluster.names}
        assert transport["n1"]["segmented_sends"] > 0, transport
        assert all(transport[n]["coalesced_receives"] > 0 for n in ("n2", "n3")), transport
        assert all(t["bad_packets"] == 0 for t in transport.values()), transport
        for reader in readers.values():
            reader.disconnect()
    finally:
        cluster.stop_all()


class _Refusing:
    """Stands in for the data socket of a kernel that cannot segment (none here can be made
    to refuse): sendmsg fails with `errno`, sendto records what would have left."""

    def __init__(self, error: int) -> None:
        self.error = error
        self.sent: list[tuple[bytes, tuple[str, int]]] = []

    def sendmsg(self, *args: object) -> int:
        raise OSError(self.error, os.strerror(self.error))

    def sendto(self, payload: bytes, address: tuple[str, int]) -> int:
        self.sent.append((payload, address))
        return len(payload)


@pytest.fixture
def transport(tmp_path: Path) -> Iterator[RingTransport]:
    port = free_port()
    config = parse_config(
        f"Spread_Segment 127.0.0.255:{port} {{\n n1 127.0.0.1\n n2 127.0.0.2\n}}\n", "t.conf"
    )
    loop = asyncio.new_event_loop()
    ring = RingTransport(config, config.hosts[0], loop, lambda data: None, lambda: None, None)
    real = ring.data_sock
    try:
        yield ring
    finally:
        ring.data_sock = real
        ring.close()
        loop.close()


def test_a_kernel_that_cannot_segment_gets_single_datagrams_from_then_on(
    transport: RingTransport,
) -> None:
    refusing = _Refusing(errno.EIO)
    transport.data_sock = refusing  # type: ignore[assignment]
    run = packets(1472, 1472, 1472)
    transport._send_run(run, ("127.0.0.2", 1))
    assert [p for p, _ in refusing.sent] == run  # nothing lost
    assert transport.gso is False


def test_a_network_error_does_not_turn_segmentation_off(transport: RingTransport) -> None:
    # A cut link (the soak cuts them) is not the kernel refusing: the run is lost, as single
    # datagrams would be, and the ring retransmits it.
    refusing = _Refusing(errno.ENETUNREACH)
    transport.data_sock = refusing  # type: ignore[assignment]
    transport._send_run(packets(1472, 1472), ("127.0.0.2", 1))
    assert refusing.sent == []
    assert transport.gso is True

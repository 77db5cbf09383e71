"""Per-session limits of the real daemon: MaxSessionMessages and MaxMessageSize."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from spreadpy import client
from spreadpy.client import MembershipCause, MembershipMessage

from .daemons import FAST_TIMEOUTS, Cluster


def test_a_client_that_does_not_read_is_dropped_after_max_session_messages(
    tmp_path: Path,
) -> None:
    extra = FAST_TIMEOUTS + "MaxSessionMessages = 50\n"
    with Cluster(tmp_path, names=("n1",), extra_config=extra) as cluster:
        cluster.wait_ring()
        path = cluster["n1"].unix_socket
        with (
            client.connect(path, "busy") as busy,
            client.connect(path, "lazy") as lazy,
            client.connect(path, "watch") as watch,
        ):
            # busy sends to g without being a member (groups are open); lazy is in g and in w
            # and never reads; watch is only in w, so it sees lazy go without reading g's data.
            lazy.join("g")
            lazy.join("w")
            watch.join("w")
            payload = b"x" * 10_000
            deadline = time.monotonic() + 20
            dropped = None
            sent = 0
            while dropped is None and time.monotonic() < deadline and sent < 5000:
                busy.multicast(client.AGREED_MESS, "g", payload)
                sent += 1
                while watch.poll():
                    message = watch.receive(timeout=1)
                    if (
                        isinstance(message, MembershipMessage)
                        and message.cause is MembershipCause.DISCONNECT
                    ):
                        dropped = message
            assert dropped is not None, f"lazy was not dropped after {sent} messages"
            assert dropped.changed_member == "#lazy#n1"
            assert dropped.members == ("#watch#n1",)
            status = cluster["n1"].status()
            assert status["counters"]["groups"]["sessions_overflowed"] == 1


def test_a_reading_client_is_not_dropped_when_one_delivery_exceeds_the_limit(
    tmp_path: Path,
) -> None:
    """MaxSessionMessages counts what the kernel did not take, as the original's session queue:
    a token visit that delivers hundreds of small messages at once, all written, drops nobody."""
    extra = FAST_TIMEOUTS + "MaxSessionMessages = 20\n"
    count = 3000
    with Cluster(tmp_path, names=("n1",), extra_config=extra) as cluster:
        cluster.wait_ring()
        path = cluster["n1"].unix_socket
        with client.connect(path, "busy") as busy, client.connect(path, "reader") as reader:
            reader.join("g")
            reader.receive(timeout=5)  # its own join
            got: list[bytes] = []

            def read() -> None:
                while len(got) < count:
                    message = reader.receive(timeout=10)
                    if isinstance(message, client.RegularMessage):
                        got.append(message.data)

            thread = threading.Thread(target=read)
            thread.start()
            for i in range(count):
                busy.multicast(client.AGREED_MESS, "g", b"%d" % i)
            thread.join(timeout=30)
            assert got == [b"%d" % i for i in range(count)]
            status = cluster["n1"].status()
            assert status["counters"]["groups"]["sessions_overflowed"] == 0
            assert status["counters"]["ring"]["delivered"] >= count


def test_max_message_size_above_the_protocol_limit_still_accepts_clients(
    tmp_path: Path,
) -> None:
    extra = FAST_TIMEOUTS + "MaxMessageSize = 200000\n"
    with Cluster(tmp_path, names=("n1",), extra_config=extra) as cluster:
        cluster.wait_ring()
        with client.connect(cluster["n1"].unix_socket, "big", timeout=3) as mb:
            mb.join("g")
            mb.multicast(client.AGREED_MESS, "g", b"y" * (142_752 - 32))  # body + 32 per group
            while True:
                message = mb.receive(timeout=5)
                if isinstance(message, client.RegularMessage):
                    assert len(message.data) == 142_752 - 32
                    break
        assert "above what the client protocol can carry" in cluster["n1"].log()


def test_ring_packet_size_is_8192_on_loopback_unless_configured(tmp_path: Path) -> None:
    with Cluster(tmp_path / "a", names=("n1",)) as cluster:
        cluster.wait_ring()
        assert cluster["n1"].status()["ring_packet_size"] == 8192
    extra = FAST_TIMEOUTS + "RingPacketSize = 1472\n"
    with Cluster(tmp_path / "b", names=("n1",), extra_config=extra) as cluster:
        cluster.wait_ring()
        assert cluster["n1"].status()["ring_packet_size"] == 1472

"""spping: round-trip latency between two Spread clients, through the ring.

    spping --echo [-s ADDRESS] [-g GROUP]                 # on one daemon: answer pings
    spping [-s ADDRESS] [-c COUNT] [-b BYTES] [-t agreed]  # on another: measure
    spping -s 4803@127.0.0.1 --echo-at 4803@127.0.0.2     # both in one process

Spread 5.0.1 ships an spping of its own in examples/ (built, not installed by `make install`):
it pings on a timer (`-p` ms, `-m` count, `-ro` to reflect only) and prints percentiles. This
one sends the next ping when the last echo is back, and its flags are our own; the benchmark
harness runs both.

The echoer joins GROUP (default `spping`) and sends every ping back to the pinger's private
group with the same service type. The pinger joins GROUP too, waits until another member is
there, then sends COUNT pings to the group one at a time (SELF_DISCARD, so only echoers get
them) and times each until its echo is back: two trips through the ring, one per service's
ordering. Prints min, mean, p50, p99 and max (nearest-rank percentiles) in milliseconds.
Several echoers may answer; the first echo of each ping counts.
"""

from __future__ import annotations

import argparse
import math
import signal
import struct
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Final

from spreadpy import client
from spreadpy.client import MembershipMessage, RegularMessage, SpreadClientError

PING_TYPE: Final = 0x5049  # mess_type of a ping ("PI")
PONG_TYPE: Final = 0x504F  # ... and of its echo ("PO")
DEFAULT_GROUP: Final = "spping"
DEFAULT_COUNT: Final = 100
_SEQ: Final = struct.Struct("!Q")
SERVICES: Final = {
    name.lower(): service
    for name, service in (
        ("UNRELIABLE", client.UNRELIABLE_MESS),
        ("RELIABLE", client.RELIABLE_MESS),
        ("FIFO", client.FIFO_MESS),
        ("CAUSAL", client.CAUSAL_MESS),
        ("AGREED", client.AGREED_MESS),
        ("SAFE", client.SAFE_MESS),
    )
}


class PingError(Exception):
    """The measurement cannot go on (no echoer, an echo that never came)."""


@dataclass(frozen=True, slots=True)
class Summary:
    count: int
    min_ms: float
    mean_ms: float
    p50_ms: float
    p99_ms: float
    max_ms: float

    @classmethod
    def of(cls, rtts_s: Sequence[float]) -> Summary:
        ordered = sorted(rtts_s)
        n = len(ordered)

        def rank(q: float) -> float:
            return ordered[max(0, math.ceil(q * n) - 1)] * 1000

        return cls(
            count=n,
            min_ms=ordered[0] * 1000,
            mean_ms=sum(ordered) / n * 1000,
            p50_ms=rank(0.50),
            p99_ms=rank(0.99),
            max_ms=ordered[-1] * 1000,
        )

    def line(self) -> str:
        values = (self.min_ms, self.mean_ms, self.p50_ms, self.p99_ms, self.max_ms)
        return "rtt min/mean/p50/p99/max = " + "/".join(f"{v:.3f}" for v in values) + " ms"


def echo(mailbox: client.Mailbox, group: str, count: int = 0) -> int:
    """Answer pings in `group` until `count` were answered (0: until the mailbox closes)."""
    mailbox.join(group)
    answered = 0
    try:
        for message in mailbox:
            if (
                isinstance(message, RegularMessage)
                and message.mess_type == PING_TYPE
                and message.sender != mailbox.private_group
            ):
                service = message.service_type & ~client.SELF_DISCARD
                mailbox.multicast(service, message.sender, message.data, PONG_TYPE)
                answered += 1
                if answered == count:
                    break
    except client.ConnectionClosedError:
        pass  # the daemon went away: nothing left to echo
    return answered


def wait_for_echoer(mailbox: client.Mailbox, group: str, wait_s: float) -> str:
    """Join `group` and return the first other member once one is there."""
    mailbox.join(group)
    deadline = time.monotonic() + wait_s
    while True:
        remaining = deadline - time.monotonic()
        try:
            message = mailbox.receive(timeout=max(0.0, remaining))
        except TimeoutError:
            raise PingError(f"no echoer joined group {group} within {wait_s} s") from None
        if isinstance(message, MembershipMessage) and message.group == group:
            others = [m for m in message.members if m != mailbox.private_group]
            if others:
                return others[0]


def ping(
    mailbox: client.Mailbox,
    group: str,
    *,
    count: int,
    size: int,
    service: int,
    wait_s: float,
) -> list[float]:
    """Round-trip times in seconds of `count` pings, one after the other."""
    rtts: list[float] = []
    padding = bytes(max(0, size - _SEQ.size))
    for seq in range(count):
        data = _SEQ.pack(seq) + padding
        started = time.perf_counter()
        mailbox.multicast(service, group, data, PING_TYPE, self_discard=True)
        deadline = time.monotonic() + wait_s
        while True:
            remaining = deadline - time.monotonic()
            try:
                message = mailbox.receive(timeout=max(0.0, remaining))
            except TimeoutError:
                raise PingError(f"ping {seq} got no echo within {wait_s} s") from None
            if (
                isinstance(message, RegularMessage)
                and message.mess_type == PONG_TYPE
                and message.data[: _SEQ.size] == data[: _SEQ.size]
            ):
                rtts.append(time.perf_counter() - started)
                break
    return rtts


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spping", description="Round-trip latency between two Spread clients."
    )
    parser.add_argument(
        "-s",
        dest="daemon",
        default=client.DEFAULT_DAEMON,
        metavar="ADDRESS",
        help="daemon: port, port@host or socket path (default 4803)",
    )
    parser.add_argument(
        "-u",
        dest="user",
        default="",
        metavar="NAME",
        help="private name (default: one the daemon picks)",
    )
    parser.add_argument(
        "-g",
        dest="group",
        default=DEFAULT_GROUP,
        help=f"group pings go through (default {DEFAULT_GROUP})",
    )
    parser.add_argument(
        "-c",
        dest="count",
        type=int,
        default=None,
        help=f"pings to send (default {DEFAULT_COUNT}); with --echo, pings to "
        "answer before exiting (default: answer until stopped)",
    )
    parser.add_argument(
        "-b",
        dest="size",
        type=int,
        default=64,
        help="bytes per ping, at least 8 are used (default 64)",
    )
    parser.add_argument(
        "-t",
        dest="service",
        choices=sorted(SERVICES),
        default="agreed",
        help="service type (default agreed)",
    )
    parser.add_argument(
        "-w",
        dest="wait_s",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="wait this long for an echoer, and for each echo (default 5)",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--echo", action="store_true", help="answer pings instead of sending")
    mode.add_argument(
        "--echo-at",
        metavar="ADDRESS",
        help="also run an echoer in this process, connected to ADDRESS",
    )
    return parser


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        if args.echo:
            with client.connect(args.daemon, args.user, membership=False) as mailbox:
                print(f"spping: {mailbox.private_group} echoing pings in group {args.group}")
                sys.stdout.flush()
                answered = echo(mailbox, args.group, count=args.count or 0)
                print(f"spping: answered {answered} pings")
            return 0
        return _measure(args)
    except SpreadClientError as exc:
        print(f"SP_error: ({exc.code}) {client.strerror(exc.code)}", file=sys.stderr)
        return 1
    except PingError as exc:
        print(f"spping: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _measure(args: argparse.Namespace) -> int:
    count = DEFAULT_COUNT if args.count is None else args.count
    echoer: threading.Thread | None = None
    echo_box: client.Mailbox | None = None
    if args.echo_at:
        echo_box = client.connect(args.echo_at, membership=False)
        echoer = threading.Thread(target=echo, args=(echo_box, args.group), daemon=True)
        echoer.start()
    try:
        with client.connect(args.daemon, args.user) as mailbox:
            peer = wait_for_echoer(mailbox, args.group, args.wait_s)
            service = SERVICES[args.service]
            print(
                f"spping: {mailbox.private_group} -> group {args.group} -> {peer}: "
                f"{count} pings of {max(args.size, _SEQ.size)} bytes, "
                f"{client.service_name(service)}"
            )
            sys.stdout.flush()
            rtts = ping(
                mailbox,
                args.group,
                count=count,
                size=args.size,
                service=service,
                wait_s=args.wait_s,
            )
    finally:
        if echo_box is not None:
            echo_box.disconnect()
        if echoer is not None:
            echoer.join(args.wait_s)
    if not rtts:
        print("spping: no pings sent")
        return 0
    summary = Summary.of(rtts)
    print(f"spping: {summary.count} round trips, {summary.line()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

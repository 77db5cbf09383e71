"""Client processes the benchmarks start on the test bed's hosts (one process per client).

    python -m benchmarks.workers flood  -s ADDR --send 20000 --size 1000 --service reliable
    python -m benchmarks.workers ping   -s ADDR --count 1000 --size 48
    python -m benchmarks.workers watch  -s ADDR --group failover
    python -m benchmarks.workers probe  --target 198.18.0.201 --duration 30

Each prints JSON lines on stdout: `{"ev": "ready", ...}` once it is set up, then events, then
one `{"ev": "result", ...}` (or `{"ev": "error", "error": ...}` and exit status 1). Times are
`time.monotonic()`: one clock for every process on the machine, network namespaces included,
so the harness can subtract a sender's time from a reader's.

`flood` keeps spflooder's client shape (spuser/flooder.py): a sender multicasts its messages
and, from message WINDOW + 1 on, waits for its own message to come back before the next, so at
most WINDOW are in flight. Unlike spflooder it takes any service type, counts the messages of
every sender (so three senders can flood at once), and records the time of its first send and
of its last delivery. `ping` is spping (spuser/ping.py) with the round-trip times returned
raw; the echo side is spping itself (`python -m spuser.ping --echo`). `watch` reports every
membership event of one group with its arrival time (failover). `probe` sends ICMP echo requests
to an address and reports each reply's arrival time (the VIP failover, from the client host).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import socket
import struct
import sys
import time
from collections.abc import Sequence
from typing import Any, Final

from spreadpy import client
from spreadpy.client import MembershipMessage, RegularMessage, TransitionalMessage

SERVICES: Final = {
    "reliable": client.RELIABLE_MESS,
    "fifo": client.FIFO_MESS,
    "agreed": client.AGREED_MESS,
    "safe": client.SAFE_MESS,
}
WINDOW: Final = 200  # spflooder's WINDOW_MESSAGES
FLOOD_MESS_TYPE: Final = 0x464C  # "FL"
ICMP_ECHO_REQUEST: Final = 8
ICMP_ECHO_REPLY: Final = 0
PROBE_REPLIES_MAX: Final = 100_000
WATCH_BATCH_MAX: Final = 1000  # messages handled per wake-up


def emit(ev: str, **fields: Any) -> None:  # Any: JSON values
    sys.stdout.write(json.dumps({"ev": ev, **fields}) + "\n")
    sys.stdout.flush()


def wait_members(mailbox: client.Mailbox, group: str, members: int, deadline: float) -> None:
    """Receive until a regular view of `group` with at least `members` members arrives."""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"group {group} did not reach {members} members")
        message = mailbox.receive(timeout=remaining)
        if (
            isinstance(message, MembershipMessage)
            and message.group == group
            and len(message.members) >= members
        ):
            return


# ------------------------------------------------------------------------------------ flood


def flood(args: argparse.Namespace) -> dict[str, Any]:  # Any: JSON values
    deadline = time.monotonic() + args.timeout
    service = SERVICES[args.service]
    with client.connect(args.daemon, args.name) as mailbox:
        mailbox.join(args.group)
        wait_members(mailbox, args.group, args.members, deadline)
        emit("ready", private_group=mailbox.private_group)
        me = mailbox.private_group
        payload = bytes(args.size)
        received = own = 0
        first_send = last_delivery = 0.0

        def take() -> None:
            nonlocal received, own, last_delivery
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"flood: {received} of {args.expect} messages in time")
            message = mailbox.receive(timeout=remaining)
            if isinstance(message, RegularMessage) and message.mess_type == FLOOD_MESS_TYPE:
                received += 1
                last_delivery = time.monotonic()
                if message.sender == me:
                    own += 1

        for sent in range(args.send):
            if sent == 0:
                first_send = time.monotonic()
            mailbox.multicast(service, args.group, payload, FLOOD_MESS_TYPE)
            while sent + 1 - own > WINDOW:
                take()
        while received < args.expect:
            take()
    return {
        "first_send": first_send,
        "last_delivery": last_delivery,
        "sent": args.send,
        "received": received,
    }


# ------------------------------------------------------------------------------------- ping


def ping(args: argparse.Namespace) -> dict[str, Any]:  # Any: JSON values
    from spuser import ping as spping  # the tool's own loop: what `spping` measures

    service = SERVICES[args.service]
    with client.connect(args.daemon, args.name) as mailbox:
        spping.wait_for_echoer(mailbox, args.group, args.timeout)
        emit("ready", private_group=mailbox.private_group)
        spping.ping(
            mailbox,
            args.group,
            count=args.warmup,
            size=args.size,
            service=service,
            wait_s=args.timeout,
        )
        rtts = spping.ping(
            mailbox,
            args.group,
            count=args.count,
            size=args.size,
            service=service,
            wait_s=args.timeout,
        )
    return {"rtts_s": rtts}


# ------------------------------------------------------------------------------------ watch


def watch(args: argparse.Namespace) -> dict[str, Any]:  # Any: JSON values
    """Report membership events of a group until stdin closes, the daemon goes, or timeout.

    With --until-members N: until a view of the group has N members (a timeout is an error),
    ignoring stdin.
    """
    deadline = time.monotonic() + args.timeout
    members = 0
    with client.connect(args.daemon, args.name) as mailbox:
        mailbox.join(args.group)
        emit("ready", private_group=mailbox.private_group)
        stdin = sys.stdin.fileno()
        watched = [mailbox] if args.until_members else [mailbox, stdin]
        while (remaining := deadline - time.monotonic()) > 0:
            readable, _, _ = select.select(watched, [], [], remaining)
            if stdin in readable and not os.read(stdin, 4096):
                break  # the harness is done with us
            if mailbox not in readable:
                continue
            try:
                largest = _report_views(mailbox, args.group)
            except client.ConnectionClosedError:
                emit("closed", t=time.monotonic())
                break
            if largest is not None:
                members = largest
                if args.until_members and largest >= args.until_members:
                    return {"members": largest}
    if args.until_members:
        raise TimeoutError(f"group {args.group} did not reach {args.until_members} members")
    return {"members": members}


def _report_views(mailbox: client.Mailbox, group: str) -> int | None:
    """Emit every view event already received (the core may hold several); return the size
    of the largest view of `group` among them."""
    size: int | None = None
    for _ in range(WATCH_BATCH_MAX):
        try:
            message = mailbox.receive(timeout=0)
        except TimeoutError:
            break
        now = time.monotonic()
        match message:
            case MembershipMessage(group=g, cause=cause, members=members):
                emit("memb", t=now, group=g, cause=cause.name, members=list(members))
                if g == group:
                    size = max(size or 0, len(members))
            case TransitionalMessage(group=g):
                emit("trans", t=now, group=g)
    return size


# ------------------------------------------------------------------------------------ probe


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def probe(args: argparse.Namespace) -> dict[str, Any]:  # Any: JSON values
    """ICMP echo to `--target` every `--interval` seconds; one event per reply."""
    ident = os.getpid() & 0xFFFF
    replies = 0
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as sock:
        sock.setblocking(False)
        emit("ready")
        end = time.monotonic() + args.duration
        next_send = 0.0
        seq = 0
        stdin = sys.stdin.fileno()
        while (now := time.monotonic()) < end and replies < PROBE_REPLIES_MAX:
            if now >= next_send:
                seq = (seq + 1) & 0xFFFF
                body = struct.pack("!d", now)
                header = struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, 0, ident, seq)
                check = _checksum(header + body)
                packet = struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, check, ident, seq) + body
                with contextlib.suppress(OSError):  # no route while the link is down
                    sock.sendto(packet, (args.target, 0))
                next_send = now + args.interval
            wait = max(0.0, min(next_send, end) - time.monotonic())
            readable, _, _ = select.select([sock, stdin], [], [], wait)
            if stdin in readable and not os.read(stdin, 4096):
                break
            if sock not in readable:
                continue
            data, (source, _) = sock.recvfrom(2048)
            header_len = (data[0] & 0x0F) * 4
            kind, _, _, rid, rseq = struct.unpack_from("!BBHHH", data, header_len)
            if kind == ICMP_ECHO_REPLY and rid == ident and source == args.target:
                replies += 1
                emit("reply", t=time.monotonic(), seq=rseq)
    return {"replies": replies}


# ------------------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.workers")
    sub = parser.add_subparsers(dest="kind", required=True)
    for kind in ("flood", "ping", "watch"):
        p = sub.add_parser(kind)
        p.add_argument("-s", dest="daemon", required=True, help="daemon address")
        p.add_argument("-u", dest="name", default="", help="private name")
        p.add_argument("--group", default=f"bench-{kind}")
        p.add_argument("--timeout", type=float, default=60.0, help="give up after (s)")
        if kind != "watch":
            p.add_argument("--size", type=int, default=100)
            p.add_argument("--service", choices=sorted(SERVICES), default="agreed")
    w = sub.choices["watch"]
    w.add_argument("--until-members", type=int, default=0, help="exit at a view this big")
    f = sub.choices["flood"]
    f.add_argument("--send", type=int, default=0, help="messages to send (0: only read)")
    f.add_argument("--expect", type=int, required=True, help="messages to receive in all")
    f.add_argument("--members", type=int, default=1, help="wait for this many group members")
    p = sub.choices["ping"]
    p.add_argument("--count", type=int, default=1000)
    p.add_argument("--warmup", type=int, default=50, help="pings sent first, not counted")
    q = sub.add_parser("probe")
    q.add_argument("--target", required=True)
    q.add_argument("--interval", type=float, default=0.01)
    q.add_argument("--duration", type=float, default=60.0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    run = {"flood": flood, "ping": ping, "watch": watch, "probe": probe}[args.kind]
    try:
        result = run(args)
    except (client.SpreadClientError, TimeoutError, OSError) as exc:
        emit("error", error=f"{type(exc).__name__}: {exc}")
        return 1
    except KeyboardInterrupt:
        return 130
    emit("result", **result)
    return 0


if __name__ == "__main__":
    sys.exit(main())

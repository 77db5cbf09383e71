"""spflooder: Spread's flooder (examples/flooder.c of Spread 5.0.1), over spreadpy.client.

    spflooder [-u <user name>] [-m <num messages>] [-n <num members>] [-b <num bytes>]
              [-s <spread name>] [-ro] [-wo]

Flags, usage text, progress lines and exit statuses are the original's (shared/spec/spuser.md
§6): it joins group `flooder` and multicasts `-m` messages of `-b` bytes (RELIABLE; FIFO with
`-n`), and from message 201 on waits after each send until its own message came back, so at
most 200 are in flight. With `-n N` it first waits for a membership of N members, puts its
index in the member list in the first 4 bytes of each message, and paces itself so that no
sender runs more than 200 messages ahead of the slowest one. `-ro` only receives, `-wo` only
sends (it does not join, so it never gets its own messages). Every 1000 messages it prints
`flooder: completed N messages of R bytes` (R: the size of the last message received, or sent).

Where we differ, on purpose:
  * Membership messages received while flooding with `-n` are not counted as some sender's
    message (the original reads a sender index out of the membership body).
  * It disconnects before exiting (the original just exits; the daemon sees the same thing).
  * `-s` also takes a Unix socket path.
"""

from __future__ import annotations

import re
import struct
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Final

from spreadpy import client
from spreadpy.client import MembershipMessage, Message, RegularMessage, SpreadClientError
from spuser.cli import c_string, describe

GROUP: Final = "flooder"
MAX_MESSLEN: Final = 100000
MAX_MEMBERS: Final = 100  # FLOODER_MAX_GROUPS
WINDOW_MESSAGES: Final = 200  # sends before the flooder waits for its own messages
REPORT_EVERY: Final = 1000
_SENDER_INDEX: Final = struct.Struct("=i")  # native int, as the original memcpy()s it
_INT: Final = re.compile(r"\s*([+-]?\d+)")

USAGE: Final = (
    "Usage: spflooder\n"
    "\t[-u <user name>]     : unique (in this machine) user name\n"
    "\t[-m <num messages>]  : number of messages\n"
    "\t[-n <num members>]   : number of group members to wait for (also turn on multi-sender FC)\n"
    "\t[-b <num bytes>]     : number of bytes per message 1-100,000\n"
    "\t[-s <spread name>]   : either port or port@machine\n"
    "\t[-ro]   \t\t: read  only (no multicast)\n"
    "\t[-wo]   \t\t: write only (no receive)\n"
)


class UsageError(Exception):
    """Print the usage text (after `message`, if any) and exit with status 1."""


@dataclass(frozen=True, slots=True)
class Options:
    user: str = "flooder"
    spread_name: str = client.DEFAULT_DAEMON
    messages: int = 10000
    members: int = 0
    size: int = 1000
    read_only: bool = False
    write_only: bool = False


def _scan_int(text: str, current: int) -> int:
    """sscanf("%d"): the leading decimal, or `current` unchanged when there is none."""
    match = _INT.match(text)
    return int(match[1]) if match else current


def parse_args(argv: Sequence[str]) -> Options:
    """The original's flags, by prefix (-u, -b, -m, -n, -s by 2 characters, -ro, -wo by 3)."""
    o = Options()
    args = list(argv)
    while args:
        flag = args.pop(0)
        if flag.startswith("-ro"):
            o = replace(o, read_only=True, write_only=False)
            continue
        if flag.startswith("-wo"):
            o = replace(o, read_only=False, write_only=True)
            continue
        if flag[:2] not in ("-u", "-b", "-m", "-n", "-s") or not args:
            raise UsageError("")
        value = args.pop(0)
        match flag[:2]:
            case "-u":
                o = replace(o, user=value)
            case "-s":
                o = replace(o, spread_name=value)
            case "-b":
                o = replace(o, size=_scan_int(value, o.size))
            case "-m":
                o = replace(o, messages=_scan_int(value, o.messages))
            case "-n":
                o = replace(o, members=_scan_int(value, o.members))
    if o.members > MAX_MEMBERS:
        raise UsageError(f"Too many members. The max is {MAX_MEMBERS}\n")
    return o


def _say(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _returned_size(message: Message) -> int:
    """SP_receive's return value: the data length (the body length for a membership)."""
    match message:
        case RegularMessage() | client.RejectMessage():
            return len(message.data)
        case MembershipMessage():
            return 20 + sum(4 + 32 * len(vs) for vs in message.vs_sets)
        case client.TransitionalMessage():
            return 12
    return 0


def describe_during_wait(message: Message, mailbox: client.Mailbox) -> bytes:
    """What the original prints for a message received while it waits for the members."""
    match message:
        case RegularMessage():
            kind = client.service_name(message.service_type)
            endian = int(mailbox.endian_mismatch(message))
            head = (
                f"received {kind} message during wait for members, from {message.sender}, "
                f"of type {message.mess_type}, (endian {endian}) to {len(message.groups)} groups "
                f"\n({len(message.data)} bytes): "
            )
            return head.encode("latin-1") + c_string(message.data) + b"\n"
        case MembershipMessage():
            index = message.index_of(mailbox.private_group)
            lines = [
                f"Received REGULAR membership for group {message.group} with "
                f"{len(message.members)} members, where I am member {index}:\n",
                *(f"\t{member}\n" for member in message.members),
            ]
            return "".join(lines).encode("latin-1")
    return b"".join(describe(message, mailbox))  # transitional, self-leave, reject: as spuser


class Flooder:
    def __init__(self, options: Options, mailbox: client.Mailbox) -> None:
        self.o = options
        self.mb = mailbox
        self.my_index = 0
        self.send_counter = 0
        self.recv_counters = [0] * MAX_MEMBERS
        self.lowest_recv_counter = 0

    def wait_for_members(self) -> None:
        joined = 0
        while joined < self.o.members:
            message = self.mb.receive()
            sys.stdout.buffer.write(describe_during_wait(message, self.mb))
            sys.stdout.flush()
            if isinstance(message, MembershipMessage):
                joined = len(message.members)
                self.my_index = message.index_of(self.mb.private_group)

    def run(self) -> None:
        o = self.o
        payload = bytearray(max(0, o.size))
        if o.members and len(payload) >= _SENDER_INDEX.size:
            _SENDER_INDEX.pack_into(payload, 0, self.my_index)
        service = client.FIFO_MESS if o.members else client.RELIABLE_MESS
        ret = 0
        for i in range(1, o.messages + 1):
            if not o.read_only:
                ret = self.mb.multicast(service, GROUP, payload)
                self.send_counter += 1
            if o.read_only or (i > WINDOW_MESSAGES and not o.write_only):
                ret = self.receive_until_caught_up()
            if i % REPORT_EVERY == 0:
                _say(f"flooder: completed {i:6d} messages of {ret} bytes\n")
        _say(f"flooder: completed multicast of {o.messages} messages, {o.size} bytes each.\n")

    def receive_until_caught_up(self) -> int:
        while True:
            message = self.mb.receive()
            ret = _returned_size(message)
            if self.o.read_only:
                return ret
            if not self.o.members:
                if isinstance(message, RegularMessage) and message.sender == self.mb.private_group:
                    return ret
                continue
            if isinstance(message, RegularMessage) and len(message.data) >= 4:
                self.count_from(_SENDER_INDEX.unpack_from(message.data)[0])
            if self.lowest_recv_counter >= self.send_counter - WINDOW_MESSAGES:
                return ret

    def count_from(self, sender: int) -> None:
        """One more message from member `sender`; the slowest active sender's count moves on."""
        if not 0 <= sender < MAX_MEMBERS:
            return
        self.recv_counters[sender] += 1
        if self.recv_counters[sender] == self.lowest_recv_counter + 1:
            active = [c for c in self.recv_counters[: self.o.members] if c]
            self.lowest_recv_counter = min(active) if active else 0


def main(argv: Sequence[str] | None = None) -> int:
    try:
        options = parse_args(sys.argv[1:] if argv is None else argv)
    except UsageError as exc:
        _say(str(exc) + USAGE)
        return 1
    membership = options.members > 0
    suffix = " with group membership" if membership else ""
    _say(f"flooder: connecting to {options.spread_name}{suffix}\n")
    try:
        with client.connect(options.spread_name, options.user, membership=membership) as mb:
            flooder = Flooder(options, mb)
            each = f"{options.messages} messages, {options.size} bytes each"
            if options.read_only:
                _say("flooder: Only receiving messages\n")
                mb.join(GROUP)
            elif options.write_only:
                _say(f"flooder: starting  multicast of {each} (self discarding).\n")
            else:
                mb.join(GROUP)
                _say(f"flooder: starting  multicast of {each}.\n")
            flooder.wait_for_members()
            flooder.run()
    except SpreadClientError as exc:
        _say(f"SP_error: ({exc.code}) {client.strerror(exc.code)}\n")
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""spuser: Spread's interactive test client (examples/user.c of Spread 5.0.1), over spreadpy.client.

    spuser [-u <user name>] [-s <address>] [-r] [-n <username>] [-p <password>]

Flags, menu, prompts and every line printed are the original's, byte for byte, spelling
included ("commnad", "sais", "asynchonous"): shared/spec/spuser.md. Like the original it is one
event loop over stdin and the mailbox, incoming messages first; a command that prompts for
more input (`s`, `m`, `b`) reads it straight away, so messages wait until the command is done.
Input is read line by line from the file descriptor, so spuser is as scriptable through pipes
as on a terminal (tests/test_spuser.py replays the spec's byte-exact transcript that way).

Where we differ, on purpose:
  * `-n` / `-p` (PWORD authentication) are accepted and ignored, as in the stock build.
  * `-s` also takes a Unix socket path (spreadpy.client's extension).
  * A group name longer than 31 characters given to `s`, `m` or `b` is refused with
    `SP_error: (-14) Illegal group.` (and, as for any send error, `Bye.`); the original
    overflows its 32-byte buffer and sends a name without terminator.
  * A membership message with more than 10 vs sets is printed whole (the original stops with
    "BUG: ... Recompile with larger MAX_VSSETS").
  * Ctrl-C disconnects cleanly and exits with status 130.
"""

from __future__ import annotations

import os
import re
import selectors
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import BinaryIO, Final, NoReturn

from spreadpy import client
from spreadpy.client import (
    LIBRARY_VERSION,
    MembershipCause,
    MembershipMessage,
    Message,
    RegularMessage,
    RejectMessage,
    SelfLeave,
    SpreadClientError,
    TransitionalMessage,
)

MAX_MESSLEN: Final = 102400  # receive buffer and largest burst message
MAX_MEMBERS: Final = 100  # group names the receive call takes
MAX_SEND_GROUPS: Final = 10  # groups one `s` or `m` command sends to
COMMAND_LINE_BYTES: Final = 130  # fgets(command, 130): 129 bytes per read at most
MESSAGE_LINE_BYTES: Final = 200  # fgets(mess, 200)
BURST_MESSAGES: Final = 10
DEFAULT_USER: Final = "user"

SEPARATOR: Final = b"\n============================\n"
PROMPT: Final = b"\nUser> "
MENU: Final = (
    b"\n"
    b"==========\n"
    b"User Menu:\n"
    b"----------\n"
    b"\n"
    b"\tj <group> -- join a group\n"
    b"\tl <group> -- leave a group\n"
    b"\n"
    b"\ts <group> -- send a message\n"
    b"\tm <group> -- send a multiline message to group. Terminate with empty line\n"
    b"\tb <group> -- send a burst of messages\n"
    b"\n"
    b"\tr -- receive a message (stuck) \n"
    b"\tp -- poll for a message \n"
    b"\te -- enable asynchonous read (default)\n"
    b"\td -- disable asynchronous read \n"
    b"\n"
    b"\tq -- quit\n"
)
USAGE: Final = (
    b"Usage: spuser\n"
    b"\t[-u <user name>]  : unique (in this machine) user name\n"
    b"\t[-s <address>]    : either port or port@machine\n"
    b"\t[-n <username>]    : username for authentication\n"
    b"\t[-p <password>]    : users password\n"
    b"\t[-r ]    : use random user name\n"
)
_UNSIGNED: Final = re.compile(rb"\s*([+-]?)(\d+)")


class Exit(Exception):
    """Leave the program with `status` (the original calls exit() from deep inside)."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class Output:
    """stdout as bytes, flushed after every write (the order of bytes is what matters)."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream

    def write(self, data: bytes | str) -> None:
        if isinstance(data, str):
            data = data.encode("latin-1", "replace")  # names carry one byte per code point
        try:
            self._stream.write(data)
            self._stream.flush()
        except BrokenPipeError:
            raise Exit(0) from None

    def sp_error(self, code: int) -> None:
        """libspread's SP_error (printed on stdout)."""
        self.write(f"SP_error: ({code}) {client.strerror(code)}\n")


class LineReader:
    """fgets() over a file descriptor: no read-ahead hidden from select()."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._buf = bytearray()
        self.eof = False

    def fill(self) -> None:
        """One read(2); blocks if nothing is there."""
        data = os.read(self.fd, 65536)
        if data:
            self._buf += data
        else:
            self.eof = True

    def ready(self, size: int) -> bool:
        """readline(size) would not block."""
        return self.eof or len(self._buf) >= size - 1 or b"\n" in self._buf

    def readline(self, size: int) -> bytes | None:
        """Up to size - 1 bytes, through the first newline; None at end of input."""
        while True:
            end = self._buf.find(b"\n", 0, size - 1)
            if end >= 0:
                return self._take(end + 1)
            if len(self._buf) >= size - 1:
                return self._take(size - 1)
            if self.eof:
                return self._take(len(self._buf)) if self._buf else None
            self.fill()

    def _take(self, size: int) -> bytes:
        line = bytes(self._buf[:size])
        del self._buf[:size]
        return line


def c_string(data: bytes) -> bytes:
    """What %s prints of a buffer: everything before the first NUL."""
    end = data.find(b"\0")
    return data if end < 0 else data[:end]


def parse_unsigned(text: bytes) -> int | None:
    """sscanf("%u"): a leading (optionally signed) decimal, wrapped to 32 bits; None if none."""
    match = _UNSIGNED.match(text)
    if match is None:
        return None
    value = int(match[2]) & 0xFFFFFFFF
    return (-value) & 0xFFFFFFFF if match[1] == b"-" else value


@dataclass(frozen=True, slots=True)
class Options:
    user: str = DEFAULT_USER
    spread_name: str = client.DEFAULT_DAEMON


def parse_args(argv: Sequence[str]) -> Options | None:
    """The original's flags, recognised by their first two characters; None: print usage."""
    user, spread_name = DEFAULT_USER, client.DEFAULT_DAEMON
    args = list(argv)
    while args:
        flag = args.pop(0)
        if flag.startswith("-r"):
            user = ""
            continue
        if not flag.startswith(("-u", "-s", "-n", "-p")) or not args:
            return None
        value = args.pop(0)
        if flag.startswith("-u"):
            user = value
        elif flag.startswith("-s"):
            spread_name = value
        # -n / -p: PWORD credentials, unused without ENABLE_PASSWORD (the stock build)
    return Options(user, spread_name)


class Spuser:
    """The command loop of one connected spuser."""

    def __init__(self, mailbox: client.Mailbox, out: Output, stdin: LineReader) -> None:
        self.mb = mailbox
        self.out = out
        self.stdin = stdin
        self.attached = True  # e / d: print messages as they arrive
        self.num_sent = 0
        self.previous_len = 0

    def run(self) -> int:
        self.out.write(MENU)
        self.out.write(PROMPT)
        try:
            with selectors.PollSelector() as selector:  # poll(2) takes files too (spuser < file)
                selector.register(self.stdin.fd, selectors.EVENT_READ)
                self._loop(selector)
        except Exit as done:
            return done.status
        except KeyboardInterrupt:
            self.mb.disconnect()
            return 130
        raise AssertionError("the command loop ends only through Exit")

    def _loop(self, selector: selectors.BaseSelector) -> NoReturn:
        mailbox_fd = self.mb.fileno()
        while True:
            if self.attached and (arrived := self._arrived()) is not None:
                self.show(arrived)
                continue
            if self.stdin.ready(COMMAND_LINE_BYTES):
                self.command()
                continue
            if self.attached:
                selector.register(mailbox_fd, selectors.EVENT_READ)
            try:
                ready = {key.fd for key, _ in selector.select()}
            finally:
                if self.attached:
                    selector.unregister(mailbox_fd)
            if self.stdin.fd in ready and not (self.attached and mailbox_fd in ready):
                self.stdin.fill()

    def _arrived(self) -> Message | SpreadClientError | None:
        """A whole message, or the error that ended the mailbox; None if nothing is here yet."""
        try:
            return self.mb.receive(timeout=0)
        except TimeoutError:
            return None
        except SpreadClientError as exc:
            return exc

    # --- commands ---------------------------------------------------------------------------

    def bye(self) -> NoReturn:
        self.out.write(b"\nBye.\n")
        self.mb.disconnect()
        raise Exit(0)

    def read_line(self, size: int) -> bytes:
        line = self.stdin.readline(size)
        if line is None:
            self.bye()
        return line

    def command(self) -> None:
        line = c_string(self.read_line(COMMAND_LINE_BYTES))
        argument = line[2:]
        match line[:1]:
            case b"j" | b"l":
                self.join_or_leave(line[:1], argument)
            case b"s":
                self.send(argument)
            case b"m":
                self.send(argument, multiline=True)
            case b"b":
                self.burst(argument)
            case b"r":
                self.read_message()
            case b"p":
                self.out.write(f"Polling sais: {self.mb.poll()}\n")
            case b"e":
                self.attached = True
            case b"d":
                self.attached = False
            case b"q":
                self.bye()
            case _:
                self.out.write(b"\nUnknown commnad\n")
                self.out.write(MENU)
        self.out.write(PROMPT)

    def join_or_leave(self, verb: bytes, argument: bytes) -> None:
        tokens = argument.split()
        if not tokens:
            self.out.write(b" invalid group \n")
            return
        group = tokens[0].decode("latin-1")
        try:
            if verb == b"j":
                self.mb.join(group)
            else:
                self.mb.leave(group)
        except SpreadClientError as exc:
            self.out.sp_error(exc.code)

    def send(self, argument: bytes, *, multiline: bool = False) -> None:
        groups = [t.decode("latin-1") for t in argument.split()[:MAX_SEND_GROUPS]]
        if not groups:
            self.out.write(b" invalid group \n")
            return
        self.out.write(b"enter message: ")
        if multiline:
            parts: list[bytes] = []
            size = 0
            while size < MAX_MESSLEN:
                line = self.read_line(MESSAGE_LINE_BYTES)
                if line.startswith(b"\n"):
                    break
                part = c_string(line)
                parts.append(part)
                size += len(part)
            message = b"".join(parts)
        else:
            message = c_string(self.read_line(MESSAGE_LINE_BYTES))
        self.multicast(client.SAFE_MESS, groups, message, 1)
        self.num_sent += 1

    def burst(self, argument: bytes) -> None:
        tokens = argument.split()
        group = tokens[0].decode("latin-1") if tokens else "dummy_group_name"
        self.out.write(b"enter size of each message: ")
        size = parse_unsigned(self.read_line(MESSAGE_LINE_BYTES))
        size = min(self.previous_len if size is None else size, MAX_MESSLEN)
        self.previous_len = size
        self.out.write(f"sending {BURST_MESSAGES} messages of {size} bytes\n")
        for i in range(1, BURST_MESSAGES + 1):
            self.num_sent += 1
            text = f"mess num {self.num_sent} ".encode()
            payload = (text + bytes(max(0, size - len(text))))[:size]
            self.multicast(client.FIFO_MESS, group, payload, 2)
            self.out.write(f"sent message {i} (total {self.num_sent})\n")

    def multicast(self, service: int, groups: str | list[str], data: bytes, mess_type: int) -> None:
        try:
            self.mb.multicast(service, groups, data, mess_type)
        except SpreadClientError as exc:
            self.out.sp_error(exc.code)
            self.bye()

    # --- messages ---------------------------------------------------------------------------

    def read_message(self) -> None:
        """The `r` command: wait for one message and print it."""
        try:
            arrived: Message | SpreadClientError = self.mb.receive()
        except SpreadClientError as exc:
            arrived = exc
        self.show(arrived)

    def show(self, arrived: Message | SpreadClientError) -> None:
        """Print a message as the original does; a receive error ends the program."""
        out = self.out
        out.write(SEPARATOR)
        if isinstance(arrived, SpreadClientError):
            out.sp_error(arrived.code)
            out.write(SEPARATOR)
            out.write(b"\nBye.\n")
            raise Exit(0)
        for line in describe(arrived, self.mb):
            out.write(line)
        out.write(b"\n")
        out.write(b"User> ")


def describe(message: Message, mailbox: client.Mailbox) -> list[bytes]:
    """The lines spuser prints for a received message (after the separator)."""
    match message:
        case RegularMessage() | RejectMessage():
            return _describe_data(message, mailbox)
        case MembershipMessage():
            return _describe_membership(message, mailbox)
        case TransitionalMessage(group=group):
            return [f"received TRANSITIONAL membership for group {group}\n".encode("latin-1")]
        case SelfLeave(group=group):
            return [f"received membership message that left group {group}\n".encode("latin-1")]
    raise AssertionError(f"unexpected message {message!r}")


def _too_short(groups: int, data_len: int) -> list[bytes]:
    if groups > MAX_MEMBERS or data_len > MAX_MESSLEN:
        return [b"\n========Buffers or Groups too Short=======\n"]
    return []


def _describe_data(message: RegularMessage | RejectMessage, mailbox: client.Mailbox) -> list[bytes]:
    lines = _too_short(len(message.groups), len(message.data))
    data = message.data[:MAX_MESSLEN]
    groups = min(len(message.groups), MAX_MEMBERS)
    endian = int(mailbox.endian_mismatch(message))
    if isinstance(message, RegularMessage):
        kind = client.service_name(message.service_type)
        head = (
            f"received {kind} message from {message.sender}, of type {message.mess_type}, "
            f"(endian {endian}) to {groups} groups \n({len(data)} bytes): "
        )
    else:
        head = (
            f"REJECTED message from {message.sender}, of servicetype "
            f"0x{int(message.service_type):x} messtype {message.mess_type}, (endian {endian}) "
            f"to {groups} groups \n({len(data)} bytes): "
        )
    lines.append(head.encode("latin-1") + c_string(data) + b"\n")
    return lines


def _describe_membership(message: MembershipMessage, mailbox: client.Mailbox) -> list[bytes]:
    lines = _too_short(len(message.members), 0)
    members = message.members[:MAX_MEMBERS]
    gid = message.group_id
    text = [
        f"Received REGULAR membership for group {message.group} with {len(members)} members, "
        f"where I am member {message.index_of(mailbox.private_group)}:\n",
        *(f"\t{member}\n" for member in members),
        f"grp id is {gid.proc_id} {gid.time} {gid.index}\n",
    ]
    if message.cause is MembershipCause.NETWORK:
        text.append(f"Due to NETWORK change with {len(message.vs_sets)} VS sets\n")
        for i, vs_set in enumerate(message.vs_sets):
            where = "LOCAL" if i == message.local_vs_set else "OTHER"
            text.append(f"{where} VS set {i} has {len(vs_set)} members:\n")
            text.extend(f"\t{member}\n" for member in vs_set)
    else:
        text.append(f"Due to the {message.cause.name} of {message.changed_member}\n")
    lines.extend(line.encode("latin-1") for line in text)
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(sys.argv[1:] if argv is None else argv)
    out = Output(sys.stdout.buffer)
    try:
        if options is None:
            out.write(USAGE)
            return 0
        major, minor, patch = LIBRARY_VERSION
        out.write(f"Spread library version is {major}.{minor}.{patch}\n")
        try:
            mailbox = client.connect(options.spread_name, options.user, membership=True)
        except SpreadClientError as exc:
            out.sp_error(exc.code)
            out.write(b"\nBye.\n")
            return 0
        out.write(
            os.fsencode(f"User: connected to {options.spread_name} with private group ")
            + f"{mailbox.private_group}\n".encode("latin-1")
        )
        return Spuser(mailbox, out, LineReader(sys.stdin.fileno())).run()
    except Exit as done:
        return done.status
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

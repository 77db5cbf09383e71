"""A minimal blocking Spread client for daemon tests, over the sans-I/O `ClientConnection`.

    with SpClient.connect(("127.0.0.1", port), "alice") as alice:   # or a Unix socket path
        alice.join("g")
        view = alice.receive_membership("g")
        alice.multicast(ServiceType.AGREED_MESS, "g", b"hi")
        msg = alice.receive_regular()

Deliberately small and strict: every receive has a timeout (ReceiveTimeout), an EOF raises
Closed, and a reject during the handshake raises Rejected with the daemon's code. For bytes no
library would write: `send_raw()` on a connected client, or `open_socket()` with `read_exactly()`
/ `read_until_closed()` before any handshake. `SpClient.on_socket()` handshakes over a socket
made elsewhere (in another network namespace). Test scaffolding only; the client library is
spreadpy/client.py.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import TypeVar

from spreadpy.wire import (
    MAX_MESSAGE_BODY_LEN,
    Accept,
    AuthChoice,
    AuthList,
    ConnectRequest,
    DaemonMessage,
    Endian,
    MembershipCause,
    MembershipMessage,
    RegularMessage,
    Reject,
    SelfLeave,
    ServiceType,
    TransitionalMessage,
)
from spreadpy.wire_session import NEED_DATA, PAUSED, ClientConnection, ConnectionClosed

Address = str | tuple[str, int]  # a Unix socket path, or (IPv4 address, TCP port)
DEFAULT_TIMEOUT_S = 10.0
RECV_BYTES = 1 << 20

M = TypeVar("M")


class Rejected(Exception):
    """The daemon refused the connection with one reject byte (`code`, negative)."""

    def __init__(self, code: int) -> None:
        super().__init__(f"connection rejected with code {code}")
        self.code = code


class Closed(Exception):
    """The daemon closed the connection (EOF or reset)."""


class ReceiveTimeout(Exception):
    """Nothing (or not the expected thing) arrived in time."""


def open_socket(address: Address, timeout_s: float = DEFAULT_TIMEOUT_S) -> socket.socket:
    """A connected stream socket to a daemon's TCP port or Unix socket."""
    if isinstance(address, str):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.settimeout(timeout_s)
    try:
        sock.connect(address)
    except BaseException:
        sock.close()
        raise
    return sock


def read_exactly(sock: socket.socket, size: int, timeout_s: float = DEFAULT_TIMEOUT_S) -> bytes:
    """`size` bytes from `sock`; Closed on EOF/reset first, ReceiveTimeout when too slow."""
    deadline = time.monotonic() + timeout_s
    out = bytearray()
    while len(out) < size:
        sock.settimeout(max(deadline - time.monotonic(), 0.001))
        try:
            chunk = sock.recv(size - len(out))
        except TimeoutError:
            raise ReceiveTimeout(
                f"got {len(out)} of {size} bytes: {bytes(out[:64]).hex()}"
            ) from None
        except ConnectionResetError:
            raise Closed(f"reset after {len(out)} of {size} bytes") from None
        if not chunk:
            raise Closed(f"EOF after {len(out)} of {size} bytes: {bytes(out[:64]).hex()}")
        out += chunk
    return bytes(out)


def read_until_closed(sock: socket.socket, timeout_s: float = DEFAULT_TIMEOUT_S) -> bytes:
    """Everything the peer sends until it closes (EOF or reset); ReceiveTimeout if it does not."""
    deadline = time.monotonic() + timeout_s
    out = bytearray()
    while True:
        sock.settimeout(max(deadline - time.monotonic(), 0.001))
        try:
            chunk = sock.recv(RECV_BYTES)
        except TimeoutError:
            raise ReceiveTimeout(f"still open after {timeout_s}s, got {bytes(out).hex()}") from None
        except ConnectionResetError:
            return bytes(out)
        if not chunk:
            return bytes(out)
        out += chunk


class SpClient:
    """One client connection, blocking, with a timeout on every receive."""

    def __init__(
        self, sock: socket.socket, conn: ClientConnection, timeout_s: float = DEFAULT_TIMEOUT_S
    ) -> None:
        self.sock = sock
        self.conn = conn
        self.timeout_s = timeout_s
        self._closed = False

    # -- connecting ------------------------------------------------------------------------

    @classmethod
    def connect(
        cls,
        address: Address,
        name: str = "",
        *,
        membership: bool = True,
        endian: Endian = Endian.LITTLE,
        max_body_len: int = MAX_MESSAGE_BODY_LEN - 48,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> SpClient:
        """Connect and authenticate with NULL, as libspread 5.0.1 does; Rejected on a reject."""
        sock = open_socket(address, timeout_s)
        return cls.on_socket(
            sock,
            name,
            membership=membership,
            endian=endian,
            max_body_len=max_body_len,
            timeout_s=timeout_s,
        )

    @classmethod
    def on_socket(
        cls,
        sock: socket.socket,
        name: str = "",
        *,
        membership: bool = True,
        endian: Endian = Endian.LITTLE,
        max_body_len: int = MAX_MESSAGE_BODY_LEN - 48,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> SpClient:
        """The handshake over a socket already connected (e.g. made in another namespace)."""
        client = cls(sock, ClientConnection(endian=endian, max_body_len=max_body_len), timeout_s)
        try:
            client._handshake(ConnectRequest(private_name=name, wants_membership=membership))
        except BaseException:
            sock.close()
            raise
        return client

    def _handshake(self, request: ConnectRequest) -> None:
        self.sock.sendall(self.conn.send(request))
        reply = self._next(lambda e: e if isinstance(e, (AuthList, Reject)) else None)
        if isinstance(reply, Reject):
            raise Rejected(reply.code)
        self.sock.sendall(self.conn.send(AuthChoice(("NULL",))))
        accept = self._next(lambda e: e if isinstance(e, (Accept, Reject)) else None)
        if isinstance(accept, Reject):
            raise Rejected(accept.code)

    def __enter__(self) -> SpClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def private_group(self) -> str:
        group = self.conn.private_group
        assert group is not None, "not connected"
        return group

    # -- sending ---------------------------------------------------------------------------

    def join(self, group: str) -> None:
        self.sock.sendall(self.conn.join(group))

    def leave(self, group: str) -> None:
        self.sock.sendall(self.conn.leave(group))

    def multicast(
        self,
        service: ServiceType,
        groups: str | Sequence[str],
        data: bytes = b"",
        mess_type: int = 0,
    ) -> None:
        self.sock.sendall(self.conn.multicast(service, groups, data, mess_type))

    def send_raw(self, data: bytes) -> None:
        """Bytes no library would write (the session's state machine is bypassed)."""
        self.sock.sendall(data)

    def disconnect(self) -> None:
        """SP_disconnect: the KILL request, then close."""
        if not self._closed:
            with contextlib.suppress(OSError):
                self.sock.sendall(self.conn.disconnect())
        self.close()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.sock.close()

    # -- receiving -------------------------------------------------------------------------

    def _next(self, accept: Callable[[object], M | None], timeout_s: float | None = None) -> M:
        """The next event `accept` maps to a value; other events are an error."""
        deadline = time.monotonic() + (self.timeout_s if timeout_s is None else timeout_s)
        while True:
            event = self.conn.next_event()
            if isinstance(event, ConnectionClosed):
                raise Closed("the daemon closed the connection")
            if event is not NEED_DATA and event is not PAUSED:
                value = accept(event)
                if value is None:
                    raise AssertionError(f"unexpected {event!r}")
                return value
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ReceiveTimeout("nothing arrived")
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(RECV_BYTES)
            except TimeoutError:
                raise ReceiveTimeout("nothing arrived") from None
            except ConnectionResetError:
                data = b""
            self.conn.receive_data(data)

    def receive(self, timeout_s: float | None = None) -> DaemonMessage:
        """The next message from the daemon, whatever it is."""
        return self._next(lambda e: e, timeout_s)  # type: ignore[arg-type,return-value]

    def receive_regular(self, timeout_s: float | None = None) -> RegularMessage:
        """The next message, which must be a data message."""
        message = self.receive(timeout_s)
        if not isinstance(message, RegularMessage):
            raise AssertionError(f"expected a data message, got {message!r}")
        return message

    def receive_membership(
        self, group: str, cause: MembershipCause | None = None, timeout_s: float | None = None
    ) -> MembershipMessage:
        """The next message, which must be a regular membership message of `group`."""
        message = self.receive(timeout_s)
        if not isinstance(message, MembershipMessage) or message.group != group:
            raise AssertionError(f"expected a membership message of {group}, got {message!r}")
        if cause is not None and message.cause is not cause:
            raise AssertionError(f"expected cause {cause.name}, got {message!r}")
        return message

    def receive_transitional(
        self, group: str, timeout_s: float | None = None
    ) -> TransitionalMessage:
        message = self.receive(timeout_s)
        if not isinstance(message, TransitionalMessage) or message.group != group:
            raise AssertionError(f"expected a transitional message of {group}, got {message!r}")
        return message

    def receive_self_leave(self, group: str, timeout_s: float | None = None) -> SelfLeave:
        message = self.receive(timeout_s)
        if message != SelfLeave(group):
            raise AssertionError(f"expected the self-leave of {group}, got {message!r}")
        return SelfLeave(group)

    def expect_closed(self, timeout_s: float | None = None) -> None:
        """The daemon closes the connection with nothing more to say."""
        try:
            message = self.receive(timeout_s)
        except Closed:
            return
        raise AssertionError(f"expected the daemon to close, got {message!r}")

    def assert_quiet(self, group_marker: str) -> None:
        """Nothing is pending before the daemon's answer to a probe sent to ourselves.

        Sends an AGREED message to our own private group and requires it to be the very next
        message: whatever was queued before it would come first. No waiting, no sleeps.
        """
        marker = f"quiet:{group_marker}".encode()
        self.multicast(ServiceType.AGREED_MESS, self.private_group, marker)
        message = self.receive()
        if not (isinstance(message, RegularMessage) and message.data == marker):
            raise AssertionError(f"expected nothing pending, got {message!r}")

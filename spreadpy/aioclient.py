"""Spread client library for asyncio: the blocking `spreadpy.client` API with `await`.

    from spreadpy import aioclient, client

    async with await aioclient.connect("4803@127.0.0.1", "alice") as mb:
        await mb.join("test")
        await mb.multicast(client.AGREED_MESS, "test", b"hello")
        async for msg in mb:                 # ends after mb.disconnect()
            ...

Same daemon names, message types and exceptions as `spreadpy.client`; both drive the same
sans-I/O `client.MailboxCore`, so framing, request checks and errors are identical. One
`asyncio.Protocol` per mailbox reads eagerly into the core; reading pauses while more than
`READ_BUFFER_HIGH_BYTES` wait undecoded (the daemon then queues for us, and drops a client that
falls `MaxSessionMessages` behind, as with libspread). `poll()` is what the core holds.

Sends write at once and wait only while the transport's buffer is over its high-water mark.
`receive(timeout=...)` and `connect(timeout=...)` mirror the blocking API (asyncio.timeout
around a call works as well).
One task at a time may receive; any task may send. Works with uvloop.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Sequence
from types import TracebackType
from typing import Final, cast

from spreadpy.client import (
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_DAEMON,
    DEFAULT_MAX_MESSAGE_BYTES,
    NATIVE_ENDIAN,
    ConnectionClosedError,
    CouldNotConnectError,
    DaemonAddress,
    IllegalSessionError,
    IllegalTimeError,
    MailboxCore,
    MailboxViews,
    Message,
    connect_unix,
    parse_daemon_address,
)
from spreadpy.sockbuf import set_session_buffers
from spreadpy.wire import Accept, Endian

__all__ = ["READ_BUFFER_HIGH_BYTES", "AsyncMailbox", "connect"]

READ_BUFFER_HIGH_BYTES: Final = 4 * 1024 * 1024  # undecoded bytes before we stop reading
READ_BUFFER_LOW_BYTES: Final = 1024 * 1024  # ... and start again


class _MailboxProtocol(asyncio.Protocol):
    """Feeds the core and wakes whoever waits for bytes or for the write buffer to drain."""

    def __init__(self, core: MailboxCore) -> None:
        self.core = core
        self.transport: asyncio.Transport | None = None
        self._data_waiter: asyncio.Future[None] | None = None
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._write_paused = False
        self._read_paused = False
        self.lost = False
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.core.feed(data)
        if not self._read_paused and self.core.pending_bytes > READ_BUFFER_HIGH_BYTES:
            assert self.transport is not None
            self.transport.pause_reading()
            self._read_paused = True
        self.wake()

    def eof_received(self) -> bool:
        self.core.feed(b"")
        self.wake()
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.core.feed(b"")
        self.wake()
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._drain_waiters.clear()
        if not self.closed.done():
            self.closed.set_result(None)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._drain_waiters.clear()

    def wake(self) -> None:
        if self._data_waiter is not None and not self._data_waiter.done():
            self._data_waiter.set_result(None)

    async def wait_data(self) -> None:
        """Until bytes or EOF arrive."""
        if self.core.eof:
            return
        self._data_waiter = asyncio.get_running_loop().create_future()
        try:
            await self._data_waiter
        finally:
            self._data_waiter = None

    def consumed(self) -> None:
        """A message was taken out of the core: read again once it has room."""
        if self._read_paused and self.core.pending_bytes < READ_BUFFER_LOW_BYTES:
            self._read_paused = False
            if self.transport is not None and not self.transport.is_closing():
                self.transport.resume_reading()

    def write(self, data: bytes) -> None:
        if self.lost or self.transport is None or self.transport.is_closing():
            self.core.feed(b"")
            raise ConnectionClosedError("the connection is gone")
        self.transport.write(data)

    async def drain(self) -> None:
        if self._write_paused and not self.lost:
            waiter = asyncio.get_running_loop().create_future()
            self._drain_waiters.append(waiter)
            await waiter
        if self.lost:
            raise ConnectionClosedError("the connection is gone")


class AsyncMailbox(MailboxViews):
    """An asyncio connection to a Spread daemon. Make one with `await connect(...)`."""

    def __init__(self, protocol: _MailboxProtocol, *, daemon: str = "") -> None:
        if not protocol.core.established:
            raise IllegalSessionError("the core has not finished its handshake")
        self._protocol = protocol
        self._core = protocol.core
        self.daemon = daemon
        self._recv_lock = asyncio.Lock()
        self._closed = False

    # requests

    async def join(self, group: str) -> None:
        await self._send(self._core.join(group))

    async def leave(self, group: str) -> None:
        await self._send(self._core.leave(group))

    async def multicast(
        self,
        service: int,
        groups: str | Sequence[str],
        data: bytes | bytearray | memoryview,
        mess_type: int = 0,
        *,
        self_discard: bool = False,
    ) -> int:
        """As `client.Mailbox.multicast`; returns len(data)."""
        request = self._core.multicast(service, groups, data, mess_type, self_discard=self_discard)
        await self._send(request)
        return len(data)

    async def _send(self, request: bytes) -> None:
        self._protocol.write(request)
        await self._protocol.drain()

    # receiving

    async def receive(self, timeout: float | None = None) -> Message:  # noqa: ASYNC109
        """The next message; TimeoutError after `timeout` seconds (0: only what is here)."""
        if timeout is not None and timeout < 0:
            raise IllegalTimeError(f"timeout {timeout} < 0")
        async with self._recv_lock:
            message = self._take()
            if message is not None:
                return message
            if timeout == 0:
                raise TimeoutError("no message waiting")
            try:
                async with asyncio.timeout(timeout):
                    while message is None:
                        await self._protocol.wait_data()
                        message = self._take()
            except TimeoutError:
                raise TimeoutError(f"no message within {timeout} s") from None
            return message

    def _take(self) -> Message | None:
        if self._closed:
            raise IllegalSessionError("this mailbox was disconnected")
        message = self._core.next_message()
        if message is not None:
            self._protocol.consumed()
        return message

    def poll(self) -> int:
        """Bytes received and not yet returned by receive() (SP_poll)."""
        if self._closed:
            raise IllegalSessionError("this mailbox was disconnected")
        return self._core.pending_bytes

    def __aiter__(self) -> AsyncMailbox:
        return self

    async def __anext__(self) -> Message:
        try:
            return await self.receive()
        except IllegalSessionError:
            if self._closed:
                raise StopAsyncIteration from None
            raise

    # ending

    async def disconnect(self) -> None:
        """End the session (SP_disconnect) and close the connection."""
        if self._closed:
            return
        self._closed = True
        kill = self._core.disconnect()
        protocol = self._protocol
        transport = protocol.transport
        if transport is None:
            return
        if kill and not protocol.lost and not transport.is_closing():
            transport.write(kill)
        transport.close()
        protocol.wake()  # a receive() waiting for bytes ends with IllegalSessionError
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(DEFAULT_CONNECT_TIMEOUT_S):
                await asyncio.shield(protocol.closed)

    close = disconnect

    async def __aenter__(self) -> AsyncMailbox:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.disconnect()


async def _connect_unix(path: str, timeout_s: float | None) -> socket.socket:
    """Connected without blocking the loop, even while the daemon's listen backlog is full.

    (asyncio's create_unix_connection takes EAGAIN from a full backlog for "in progress" and
    hands back a socket that is not connected.)
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    set_session_buffers(sock)
    sock.setblocking(False)
    try:
        sock.connect(path)  # Unix sockets connect at once, or fail with EAGAIN
    except BlockingIOError:
        sock.close()
        return await asyncio.to_thread(connect_unix, path, timeout_s)
    except BaseException:
        sock.close()
        raise
    return sock


async def _open(
    address: DaemonAddress, core: MailboxCore, timeout_s: float | None
) -> tuple[asyncio.BaseTransport, _MailboxProtocol]:
    loop = asyncio.get_running_loop()
    try:
        if address.unix_path is not None:
            sock = await _connect_unix(address.unix_path, timeout_s)
            return await loop.create_unix_connection(lambda: _MailboxProtocol(core), sock=sock)
        assert address.host is not None and address.port is not None
        infos = await loop.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM)
        for family, _type, _proto, _name, sockaddr in infos:
            if family in (socket.AF_INET, socket.AF_INET6):
                transport, protocol = await loop.create_connection(
                    lambda: _MailboxProtocol(core), str(sockaddr[0]), address.port
                )
                sock = transport.get_extra_info("socket")
                if sock is not None:
                    set_session_buffers(sock)
                return transport, protocol
        raise CouldNotConnectError(f"{address.host}: no IPv4 or IPv6 address")
    except socket.gaierror as exc:
        raise CouldNotConnectError(f"{address.host}: {exc.strerror}") from None
    except OSError as exc:
        raise CouldNotConnectError(f"{address}: {exc.strerror or exc}") from None


async def connect(
    daemon: str | None = DEFAULT_DAEMON,
    private_name: str = "",
    *,
    membership: bool = True,
    priority: int = 0,
    timeout: float | None = DEFAULT_CONNECT_TIMEOUT_S,  # noqa: ASYNC109 (SP_connect_timeout)
    endian: Endian = NATIVE_ENDIAN,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
) -> AsyncMailbox:
    """Connect to a daemon; arguments as `spreadpy.client.connect`."""
    address = parse_daemon_address(daemon)
    core = MailboxCore(
        private_name,
        membership=membership,
        priority=priority,
        endian=endian,
        max_message_bytes=max_message_bytes,
    )
    protocol: _MailboxProtocol | None = None
    try:
        async with asyncio.timeout(timeout):
            _transport, protocol = await _open(address, core, timeout)
            protocol.write(core.start())
            while not isinstance(step := core.handshake(), Accept):
                if step is None:
                    await protocol.wait_data()
                else:
                    protocol.write(step)
    except BaseException as exc:
        if protocol is not None and protocol.transport is not None:
            protocol.transport.abort()
        if isinstance(exc, TimeoutError):
            raise CouldNotConnectError(f"no answer within {timeout or 0:.3g} s") from None
        raise
    return AsyncMailbox(protocol, daemon=daemon or DEFAULT_DAEMON)

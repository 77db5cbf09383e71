"""The control socket between `wackatrl` and the daemon: codec, listing format, server, client.

Follows shared/spec/wackamole.md §4. A Unix stream socket at the configured ``Control`` path;
a session carries any number of requests in sequence. A request is one opcode byte:

======  ===================  ===============================================================
opcode  name                 reply
======  ===================  ===============================================================
0       GET_STATE            4-byte big-endian length L, then L = #sets x 900 bytes (below)
1       SIMULATE_FAILURE     4-byte big-endian 0, once every address is released
2       SIMULATE_SUCCESS     4-byte big-endian 0
3       GET_STATE_JSON       4-byte big-endian length L, then L bytes of UTF-8 JSON (ours)
======  ===================  ===============================================================

Any other byte ends the session. GET_STATE is the original's layout, byte for byte, so the C
``wackatrl`` works against wackapy: per set, in config order, the claim priority (4 bytes, big
endian) and 32 records of 28 bytes (interface name, 16 bytes NUL padded; address, broadcast
and netmask, 4 bytes each in network order). Record 0 is the owner (only its address is used;
zero: not acquired), record 1 the head address, records 2-31 the extra addresses (zeros when
unused). GET_STATE_JSON is our extension: the same table with what the binary form cannot
carry (IPv6 addresses, owners without an IPv4 label, the Spread member names, this member's
state and counters). See ``state_document`` in wackapy/daemon.py for its fields.

``wackatrl -l`` prints the original's layout (spec §4.3), TAB and spaces included::

    Owner: 192.168.1.10
    \t*    eth4:192.168.1.20/24
    \t ->  eth1:192.168.5.5/24

with one deliberate difference: the prefix length is the true one. The original printed /32
for any ordinary netmask on little-endian hosts (it counted the bits of a network-order mask
as if it were in host order: spec §3.4, §6 bug 5). IPv6 addresses print in brackets
(``eth0:[2001:db8::10]/64``) so that the interface stays the text before the first colon.
Other differences: with no sets nothing is printed (upstream printed a garbage block); the
binary reply encodes an IPv6 address, or an owner whose label is not an IPv4 address, as
zeros (the C client then shows ``0.0.0.0`` or ``not acquired``); the server bounds its
sessions (``SESSIONS_MAX``) and drops one idle for ``SESSION_IDLE_S``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import socket
import struct
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING, Any, cast

from spreadpy.errors import MalformedPacket, SpreadError
from spreadpy.unixpath import PathInUse, claim_unix_path
from wackapy.config import IFNAME_BYTES_MAX, VipAddress

if TYPE_CHECKING:
    Log = logging.Logger | logging.LoggerAdapter[logging.Logger]

__all__ = [
    "RECORDS_PER_SET",
    "SET_BYTES",
    "ControlClient",
    "ControlError",
    "ControlServer",
    "ListedAddress",
    "ListedSet",
    "Opcode",
    "SessionClosed",
    "Unreachable",
    "decode_state",
    "encode_state",
    "format_listing",
    "frame",
    "listed_from_document",
    "read_state",
    "unframe_int",
]

IFNAMSIZ = 16  # Linux; the original's record width depends on it
RECORDS_PER_SET = 32  # owner, head, 30 extra slots (upstream MAX_DEP_IF = 30)
RECORD = struct.Struct("!16s4s4s4s")  # name, address, broadcast, netmask: 28 bytes
PRIORITY = struct.Struct("!i")
LENGTH = struct.Struct("!I")
SET_BYTES = PRIORITY.size + RECORDS_PER_SET * RECORD.size  # 900
REPLY_BYTES_MAX = 16 * 1024 * 1024  # a client refuses a longer reply (254 sets x 900 is 229 kB)
SESSIONS_MAX = 16  # concurrent control sessions; more are closed at once
SESSION_IDLE_S = 60.0  # a session that sends nothing for this long is closed
CLIENT_TIMEOUT_S = 15.0  # wackatrl's bound on one request (SIMULATE_FAILURE waits for releases)
ZERO4 = bytes(4)

_LOG = logging.getLogger(__name__)


class Opcode(IntEnum):
    GET_STATE = 0
    SIMULATE_FAILURE = 1
    SIMULATE_SUCCESS = 2
    GET_STATE_JSON = 3  # wackapy extension


class ControlError(SpreadError):
    """The control socket could not be reached, or answered something unreadable."""


class Unreachable(ControlError):
    """No daemon answers at the socket path."""


class SessionClosed(ControlError):
    """The daemon closed the session instead of answering (a C wackamole does that for
    GET_STATE_JSON, which it does not know)."""


# ---------------------------------------------------------------------------------------------
# the table as wackatrl lists it


@dataclass(frozen=True, slots=True)
class ListedAddress:
    ifname: str
    interface: ipaddress.IPv4Interface | ipaddress.IPv6Interface

    @property
    def address_text(self) -> str:
        """``192.168.1.20/24``; IPv6 in brackets: ``[2001:db8::10]/64``."""
        ip, plen = self.interface.ip, self.interface.network.prefixlen
        return f"{ip}/{plen}" if ip.version == 4 else f"[{ip}]/{plen}"

    def __str__(self) -> str:
        return f"{self.ifname}:{self.address_text}"


@dataclass(frozen=True, slots=True)
class ListedSet:
    """One row of the table: who holds a set (None: not acquired) and its addresses."""

    owner: str | None
    priority: int
    addresses: tuple[ListedAddress, ...]  # head first; may be empty only in a C daemon's reply


def format_listing(sets: Iterable[ListedSet]) -> str:
    """The original's ``wackatrl -l`` text (spec §4.3), with true prefix lengths."""
    lines = []
    for row in sets:
        lines.append(f"Owner: {row.owner if row.owner is not None else 'not acquired'}")
        for i, address in enumerate(row.addresses):
            text = f"{address.ifname:>5}:{address.address_text}"
            lines.append(f"\t*   {text}" if i == 0 else f"\t -> {text}")
    return "".join(line + "\n" for line in lines)


# ---------------------------------------------------------------------------------------------
# binary GET_STATE (the original's layout)


def encode_state(rows: Sequence[tuple[int, str | None, Sequence[VipAddress]]]) -> bytes:
    """The GET_STATE payload (without the length) for (priority, owner label, addresses) rows.

    The owner label is the owner's "real" address; anything that is not an IPv4 address (and
    None: not acquired) is sent as zeros. IPv6 addresses are sent as zeros too.
    """
    out = bytearray()
    for priority, owner, addresses in rows:
        if len(addresses) > RECORDS_PER_SET - 1:
            raise ValueError(f"a set has at most {RECORDS_PER_SET - 1} addresses")
        out += PRIORITY.pack(priority)
        out += RECORD.pack(b"", _ipv4_bytes(owner), ZERO4, ZERO4)
        for vip in addresses:
            out += _record(vip)
        out += bytes(RECORD.size * (RECORDS_PER_SET - 1 - len(addresses)))
    return bytes(out)


def _ipv4_bytes(text: str | None) -> bytes:
    if not text:
        return ZERO4
    try:
        return ipaddress.IPv4Address(text).packed
    except ValueError:
        return ZERO4


def _record(vip: VipAddress) -> bytes:
    name = vip.ifname.encode()[:IFNAME_BYTES_MAX]
    interface = vip.interface
    if not isinstance(interface, ipaddress.IPv4Interface):
        return RECORD.pack(name, ZERO4, ZERO4, ZERO4)
    network = interface.network
    return RECORD.pack(
        name,
        interface.ip.packed,
        network.broadcast_address.packed,
        network.netmask.packed,
    )


def decode_state(payload: bytes) -> tuple[ListedSet, ...]:
    """Parse a GET_STATE payload (ours or a C wackamole's); MalformedPacket if it is not one.

    Extra addresses end at the first empty slot, as in the original client. The prefix length
    is read from the netmask in network order (the original's /32 display bug is not copied).
    """
    if len(payload) % SET_BYTES:
        raise MalformedPacket(f"GET_STATE reply of {len(payload)} bytes: not a multiple of 900")
    rows = []
    for base in range(0, len(payload), SET_BYTES):
        (priority,) = PRIORITY.unpack_from(payload, base)
        records = [
            RECORD.unpack_from(payload, base + PRIORITY.size + i * RECORD.size)
            for i in range(RECORDS_PER_SET)
        ]
        owner_ip = records[0][1]
        owner = None if owner_ip == ZERO4 else str(ipaddress.IPv4Address(owner_ip))
        addresses = []
        for i, (name, address, _broadcast, netmask) in enumerate(records[1:]):
            if i > 0 and address == ZERO4 and not name.strip(b"\0"):
                break
            addresses.append(
                ListedAddress(
                    name.split(b"\0", 1)[0].decode("utf-8", "replace"),
                    ipaddress.IPv4Interface((address, _prefixlen(netmask))),
                )
            )
        rows.append(ListedSet(owner, priority, tuple(addresses)))
    return tuple(rows)


def _prefixlen(netmask: bytes) -> int:
    """Bits set in a network-order netmask (a non-contiguous mask counts its bits)."""
    return int.from_bytes(netmask, "big").bit_count()


# ---------------------------------------------------------------------------------------------
# JSON GET_STATE_JSON


def listed_from_document(doc: Mapping[str, Any]) -> tuple[ListedSet, ...]:
    """The table of a GET_STATE_JSON document (``Any``: parsed JSON); MalformedPacket if bad."""
    try:
        rows = []
        for entry in doc["sets"]:
            owner = entry["owner"]
            shown = None if owner is None else (entry.get("owner_label") or owner)
            addresses = tuple(
                ListedAddress(
                    str(a["ifname"]),
                    ipaddress.ip_interface(f"{a['address']}/{int(a['prefixlen'])}"),
                )
                for a in entry["addresses"]
            )
            rows.append(ListedSet(shown, int(entry["priority"]), addresses))
        return tuple(rows)
    except (KeyError, TypeError, ValueError) as exc:
        raise MalformedPacket(f"state document without a valid table: {exc!r}") from None


def frame(payload: bytes) -> bytes:
    """A length-prefixed reply."""
    return LENGTH.pack(len(payload)) + payload


def unframe_int(data: bytes) -> int:
    """The 4-byte big-endian integer reply of SIMULATE_FAILURE / SIMULATE_SUCCESS."""
    if len(data) != LENGTH.size:
        raise MalformedPacket(f"expected a 4-byte reply, got {len(data)} bytes")
    return int(struct.unpack("!i", data)[0])


# ---------------------------------------------------------------------------------------------
# the server (daemon side)

Handler = Callable[[Opcode], Awaitable[bytes]]


class ControlServer:
    """Serves the control socket: ``handler(opcode)`` returns the complete reply bytes."""

    def __init__(self, path: str, handler: Handler, *, log: Log | None = None) -> None:
        self.path = path
        self._handler = handler
        self._log = log if log is not None else _LOG
        self._server: asyncio.AbstractServer | None = None
        self._sessions: set[asyncio.Task[None]] = set()
        self.counters: dict[str, int] = {"sessions": 0, "requests": 0, "refused": 0, "bad": 0}

    async def start(self) -> None:
        """Create the socket (mode 0600); OSError if it cannot be created or is in use."""
        _claim_path(self.path)
        self._server = await asyncio.start_unix_server(self._session, self.path)
        # Upstream set a umask around the bind; the umask is per process (threads!), so the
        # mode is set right after instead. Connecting needs write permission, which the
        # default umask never grants to others, so the socket is never open to them meanwhile.
        os.chmod(self.path, 0o600)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for task in list(self._sessions):
            task.cancel()
        for task in list(self._sessions):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(OSError):
            os.unlink(self.path)

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._sessions) >= SESSIONS_MAX:
            self.counters["refused"] += 1
            writer.close()
            return
        self._sessions.add(task)
        self.counters["sessions"] += 1
        try:
            while True:
                try:
                    async with asyncio.timeout(SESSION_IDLE_S):
                        byte = await reader.read(1)
                except TimeoutError:
                    break
                if not byte:
                    break
                try:
                    opcode = Opcode(byte[0])
                except ValueError:
                    self.counters["bad"] += 1
                    self._log.warning("control session: unknown request %d; closing", byte[0])
                    break
                self.counters["requests"] += 1
                writer.write(await self._handler(opcode))
                await writer.drain()
        except (ConnectionError, OSError) as exc:
            self._log.info("control session ended: %s", exc)
        finally:
            self._sessions.discard(task)
            writer.close()


def _claim_path(path: str) -> None:
    """Remove a stale socket left by a dead daemon; refuse one a live daemon still serves."""
    try:
        claim_unix_path(path)
    except PathInUse:
        raise OSError(f"{path} is served by a running wackapy") from None


# ---------------------------------------------------------------------------------------------
# the client (wackatrl side)


class ControlClient:
    """A blocking control session; ControlError when the daemon cannot be reached or fails."""

    def __init__(self, path: str, *, timeout_s: float = CLIENT_TIMEOUT_S) -> None:
        self.path = path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout_s)
        try:
            self._sock.connect(path)
        except OSError as exc:
            self._sock.close()
            raise Unreachable(f"connect to: {path} failed: {exc.strerror or exc}") from None

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._sock.close()

    def request(self, opcode: Opcode) -> bytes:
        """Send one request and return its reply (the payload, for the length-prefixed ones)."""
        try:
            self._sock.sendall(bytes((int(opcode),)))
            head = self._read(LENGTH.size)
            if opcode in (Opcode.SIMULATE_FAILURE, Opcode.SIMULATE_SUCCESS):
                return head
            (length,) = LENGTH.unpack(head)
            if length > REPLY_BYTES_MAX:
                raise ControlError(f"a {length}-byte reply is longer than {REPLY_BYTES_MAX}")
            return self._read(length)
        except TimeoutError:
            raise ControlError(f"{self.path}: no answer") from None
        except OSError as exc:
            raise ControlError(f"{self.path}: {exc.strerror or exc}") from None

    def state_document(self) -> dict[str, Any]:
        """GET_STATE_JSON: the daemon's state document (``Any``: parsed JSON)."""
        try:
            doc = json.loads(self.request(Opcode.GET_STATE_JSON))
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
            raise ControlError(f"{self.path}: the state document is not JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise ControlError(f"{self.path}: the state document is not a JSON object")
        return cast(dict[str, Any], doc)

    def state_table(self) -> tuple[ListedSet, ...]:
        """GET_STATE (the original's binary table)."""
        try:
            return decode_state(self.request(Opcode.GET_STATE))
        except MalformedPacket as exc:
            raise ControlError(f"{self.path}: {exc}") from None

    def _read(self, size: int) -> bytes:
        chunks = []
        left = size
        while left:
            chunk = self._sock.recv(min(left, 65536))
            if not chunk:
                raise SessionClosed(f"{self.path}: the daemon closed the session")
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)


def read_state(
    path: str, *, first: Opcode | None = None, timeout_s: float = CLIENT_TIMEOUT_S
) -> tuple[dict[str, Any] | None, tuple[ListedSet, ...]]:
    """Run ``first`` (SIMULATE_FAILURE or _SUCCESS) if given, then read the table: (document,
    rows) from wackapy; (None, rows) from a C wackamole, which closes the session on
    GET_STATE_JSON, so the table is then asked again, in the original's form, on a new one."""
    with ControlClient(path, timeout_s=timeout_s) as client:
        if first is not None:
            try:
                code = unframe_int(client.request(first))
            except MalformedPacket as exc:
                raise ControlError(f"{path}: {exc}") from None
            if code != 0:
                raise ControlError(f"{path}: the daemon answered {code}")
        try:
            doc = client.state_document()
        except SessionClosed:
            doc = None
        else:
            try:
                return doc, listed_from_document(doc)
            except MalformedPacket as exc:
                raise ControlError(f"{path}: {exc}") from None
    with ControlClient(path, timeout_s=timeout_s) as client:
        return None, client.state_table()

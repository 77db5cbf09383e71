"""The spreadpy daemon: a thin asyncio (uvloop when installed) adapter around `node.Node`.

The only place with sockets, clocks and signals. It feeds the pure node with datagrams, client
bytes and time (`loop.time()`), carries out the node's actions, and keeps one timer armed at
`node.next_deadline()` (aioquic's transmit / handle_timer pattern).

Ring transport (shared/spec/spread-daemon.md §9; our own packet format, not Spread's):
  data   UDP on the segment port (4803): DATA, JOIN, MERGE_DETECT, HOLD_CANCEL
  token  UDP on port + 1 (4804): TOKEN and COMMIT, always unicast to one daemon
How "send to the whole segment" is done is chosen from the segment address:
  127.0.0.0/8 or 0.0.0.0   unicast to every configured daemon, one datagram each. This is what
                           runs several daemons on one machine (127.0.0.1, .2, .3, same port),
                           and the way to cross networks where broadcast does not reach.
  224.0.0.0/4              IP multicast to that group (TTL 1), joined on this daemon's address.
  anything else            IP broadcast to that address (e.g. 192.168.1.255).
Datagrams from addresses that are not configured daemons are dropped and counted. With
`RingAuthKeyFile`, every datagram carries an HMAC-SHA256 tag (packets.seal / unseal).

Before a token is handled, the data socket is drained (totem.md pitfall P1): multicast sent
before a token must not look lost because the unicast token overtook it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import json
import logging
import os
import random
import signal
import socket
import struct
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

from . import packets as pk
from .config import HostEntry, IfaceType, IPAddress, SpreadConfig, is_local_address
from .errors import MalformedPacket
from .membership import Channel, PersistRingSeq, SendPacket
from .node import CloseClient, Node, ToClient, ToClientFrames, ViewInstalled, totem_config
from .sockbuf import set_session_buffers
from .unixpath import PathInUse, claim_unix_path

log = logging.getLogger("spreadpy")

RECV_BATCH_MAX = 512  # datagrams read per socket per wake-up: the token must not wait long
SOCKET_BUFFER_BYTES = 8 * 1024 * 1024
CLIENT_WRITE_BUFFER_MAX = 64 * 1024 * 1024  # a client this far behind is not reading: drop it
CLIENT_WRITE_BUFFER_HIGH = 256 * 1024  # pause_writing above this; resume_writing below LOW
CLIENT_WRITE_BUFFER_LOW = 64 * 1024
# A client's messages are gathered into one write per batch of ring packets, or per this many
# bytes if that comes first: a write is a system call, and the kernel's buffer is finite.
CLIENT_WRITE_CHUNK = 64 * 1024
LOOPBACK_PACKET_SIZE = 8192  # ring packet size when every daemon is on this machine
# Linux UDP segmentation offload (linux/udp.h; not in Python's socket module): a token visit's
# data packets leave in one sendmsg that the kernel cuts into datagrams (UDP_SEGMENT), and a
# receiver may get a run of them in one recvmsg with the datagram size beside it (UDP_GRO).
# A receiver that does not ask for UDP_GRO gets plain datagrams, so daemons mix freely.
UDP_SEGMENT = 103
UDP_GRO = 104
GSO_SEGMENTS_MAX = 64  # the kernel's UDP_MAX_SEGMENTS
GSO_BYTES_MAX = 65507  # one UDP payload: the run before segmentation
GSO_REFUSED = {errno.EIO, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOPROTOOPT}  # cannot segment
_GRO_SIZE = struct.Struct("=i")
_GSO_SIZE = struct.Struct("=H")
RING_BACKLOG_HIGH = 5000  # messages waiting for the token: stop reading clients
RING_BACKLOG_LOW = 1000


class StartupError(Exception):
    """The daemon cannot start: port or socket taken, key unreadable... (message says which)."""


@dataclass(frozen=True, slots=True)
class Paths:
    unix_socket: str
    status_socket: str
    ring_seq_file: Path


def segment_mode(config: SpreadConfig, me: HostEntry) -> str:
    address = config.segments[me.segment_index].address
    if address.is_loopback or address.is_unspecified:
        return "unicast"
    if address.is_multicast:
        return "multicast"
    return "broadcast"


def local_hosts(config: SpreadConfig, local_addresses: Iterable[IPAddress]) -> list[HostEntry]:
    """The configured daemons whose address belongs to this machine, in file order."""
    local = list(local_addresses)
    return [h for h in config.hosts if is_local_address(h.address, local)]


def default_paths(
    config: SpreadConfig,
    me: HostEntry,
    state_dir: str | None,
    local_addresses: Iterable[IPAddress],
) -> Paths:
    """Where this daemon's sockets and ring-seq file live.

    The first configured daemon whose address is on this machine takes the original's Unix
    socket `/tmp/<port>`; the others (several daemons on one machine) take `/tmp/<port>-<name>`.
    `ClientSocketPath` in spread.conf overrides it.
    """
    if config.client_socket_path:
        unix = config.client_socket_path
    else:
        here = local_hosts(config, local_addresses)
        first = here[0] if here else me
        unix = f"/tmp/{me.port}" if first == me else f"/tmp/{me.port}-{me.name}"
    base = Path(state_dir) if state_dir else default_state_dir(config)
    return Paths(unix, unix + ".status", base / f"{me.name}.ringseq")


def default_state_dir(config: SpreadConfig) -> Path:
    runtime = Path(config.runtime_dir)
    if runtime.is_dir() and os.access(runtime, os.W_OK):
        return runtime
    return Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local" / "state")) / "spreadpy"


def load_ring_seq(path: Path) -> int:
    try:
        return int(path.read_text().strip() or 0)
    except FileNotFoundError:
        return 0
    except ValueError as exc:
        raise StartupError(f"{path}: not a ring sequence number: {exc}") from None


def store_ring_seq(path: Path, ring_seq: int) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"{ring_seq}\n")
    os.replace(tmp, path)


# ---------------------------------------------------------------------------- ring transport


class RingTransport:
    def __init__(
        self,
        config: SpreadConfig,
        me: HostEntry,
        loop: asyncio.AbstractEventLoop,
        on_packet: Callable[[bytes], None],
        on_batch_end: Callable[[], None],
        key: bytes | None,
        ring_busy: Callable[[], bool] = lambda: False,
    ) -> None:
        self.loop = loop
        self.me = me
        self.mode = segment_mode(config, me)
        self.key = key
        self._on_packet = on_packet
        self._on_batch_end = on_batch_end
        self._ring_busy = ring_busy  # then read a waiting token with the data
        self.bad_packets = 0
        self.foreign_packets = 0
        self.segmented_sends = 0  # sendmsg calls that the kernel cut into several datagrams
        self.coalesced_receives = 0  # recvmsg calls that returned several datagrams
        self.peers: dict[int, tuple[str, int, int]] = {
            h.index + 1: (str(h.address), h.port, h.token_port) for h in config.hosts
        }
        self.allowed = {str(h.address) for h in config.hosts}
        segment = config.segments[me.segment_index]
        self.group = (str(segment.address), me.port)
        self._my_ip = str(me.address)
        self.data_sock, self.token_sock = self._open_sockets()
        self._data_out: list[bytes] = []  # broadcast data packets waiting for flush()
        self.gso = sys.platform == "linux"
        self.gro = self.gso and self._enable_gro()
        # Where each data packet goes: in unicast mode every other daemon; else the segment's
        # group, plus a unicast copy for each daemon of another segment, which our broadcast
        # or multicast does not reach (Spread forwards through each segment's representative).
        if self.mode == "unicast":
            self._data_destinations = [
                (ip, port) for node, (ip, port, _) in self.peers.items() if node != me.index + 1
            ]
        else:
            self._data_destinations = [self.group] + [
                (str(h.address), h.port)
                for h in config.hosts
                if h.segment_index != me.segment_index
            ]

    def _open_sockets(self) -> tuple[socket.socket, socket.socket]:
        family = socket.AF_INET6 if self.me.address.version == 6 else socket.AF_INET
        my_ip = str(self.me.address)
        data = socket.socket(family, socket.SOCK_DGRAM)
        token = socket.socket(family, socket.SOCK_DGRAM)
        try:
            data_bind = my_ip
            if self.mode == "broadcast":
                data.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
                data_bind = "0.0.0.0"
            elif self.mode == "multicast":
                data_bind = "0.0.0.0"
            for sock, address, what in (
                (data, (data_bind, self.me.port), "ring data"),
                (token, (my_ip, self.me.token_port), "ring token"),
            ):
                _grow_buffers(sock)
                try:
                    sock.bind(address)
                except OSError as exc:
                    if exc.errno == errno.EADDRINUSE:
                        raise StartupError(
                            f"UDP {address[0]}:{address[1]} ({what} port) is in use: another "
                            f"daemon is running as {self.me.name}, or the port is taken"
                        ) from None
                    raise StartupError(
                        f"cannot bind UDP {address[0]}:{address[1]}: {exc}"
                    ) from None
                sock.setblocking(False)
            if self.mode == "multicast":
                group = socket.inet_aton(self.group[0])
                mine = socket.inet_aton(my_ip)
                data.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, group + mine)
                data.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, mine)
                data.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
                data.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
        except BaseException:
            data.close()
            token.close()
            raise
        return data, token

    def _enable_gro(self) -> bool:
        try:
            self.data_sock.setsockopt(socket.IPPROTO_UDP, UDP_GRO, 1)
        except OSError:
            return False
        return True

    def start(self) -> None:
        self.loop.add_reader(self.data_sock.fileno(), self._readable, False)
        self.loop.add_reader(self.token_sock.fileno(), self._readable, True)

    def close(self) -> None:
        for sock in (self.data_sock, self.token_sock):
            with contextlib.suppress(ValueError, OSError):
                self.loop.remove_reader(sock.fileno())
            sock.close()

    def _readable(self, token_ready: bool) -> None:
        # Data first, always: a token must not overtake the data sent before it (P1). On a
        # busy ring, then any token already there, whichever socket woke us: its visit goes
        # out before this batch's deliveries are made (the daemon defers them to the batch's
        # end), so the next daemon works while this one delivers.
        self._drain(self.data_sock, self._my_ip)
        if token_ready or self._ring_busy():
            self._drain(self.token_sock, None)
        self._on_batch_end()

    def _drain(self, sock: socket.socket, ignore_source: str | None) -> None:
        key = self.key
        gro = self.gro and sock is self.data_sock
        for _ in range(RECV_BATCH_MAX):
            try:
                if gro:
                    data, ancillary, _flags, source = sock.recvmsg(65536, _GRO_CMSG_SPACE)
                else:
                    data, source = sock.recvfrom(65536)
                    ancillary = None
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. ICMP port unreachable reported on a UDP socket
                log.debug("ring socket: %s", exc)
                continue
            if source[0] == ignore_source:
                continue  # our own broadcast, looped back: not worth decoding
            if source[0] not in self.allowed:
                self.foreign_packets += 1
                continue
            if ancillary:  # a run of datagrams of one size (the last may be shorter)
                size = _gro_segment_size(ancillary)
                datagrams = [data[i : i + size] for i in range(0, len(data), size)]
                self.coalesced_receives += 1
            else:
                datagrams = [data]
            for datagram in datagrams:
                if key is not None:
                    try:
                        datagram = pk.unseal(key, datagram)
                    except MalformedPacket:
                        self.bad_packets += 1
                        if self.bad_packets % 1000 == 1:
                            log.warning(
                                "dropped ring packet from %s: bad or missing HMAC", source[0]
                            )
                        continue
                self._on_packet(datagram)

    def send(self, action: SendPacket) -> None:
        """Send now, or (a broadcast data packet) gather it for `flush`, which the adapter
        calls once per batch of actions. Order is kept: anything else flushes first."""
        payload = action.payload
        if self.key is not None:
            payload = pk.seal(self.key, payload)
        if action.dest is None:
            self._data_out.append(payload)
            return
        self.flush()
        ip, port, token_port = self.peers[action.dest]
        try:
            if action.channel is Channel.TOKEN:
                self.token_sock.sendto(payload, (ip, token_port))
            else:
                self.data_sock.sendto(payload, (ip, port))
        except (BlockingIOError, InterruptedError):
            pass  # a full socket buffer is a lost datagram: the ring retransmits
        except OSError as exc:
            log.debug("ring send: %s", exc)

    def flush(self) -> None:
        """Send the gathered data packets to every daemon, in runs of one size where possible."""
        packets = self._data_out
        if not packets:
            return
        self._data_out = []
        runs = _gso_runs(packets) if self.gso and len(packets) > 1 else [[p] for p in packets]
        for run in runs:
            for address in self._data_destinations:
                self._send_run(run, address)

    def _send_run(self, run: list[bytes], address: tuple[str, int]) -> None:
        try:
            if len(run) == 1:
                self.data_sock.sendto(run[0], address)
                return
            size = _GSO_SIZE.pack(len(run[0]))
            try:
                self.data_sock.sendmsg(run, [(socket.IPPROTO_UDP, UDP_SEGMENT, size)], 0, address)
                self.segmented_sends += 1
            except OSError as exc:
                if exc.errno not in GSO_REFUSED:
                    raise  # e.g. a link that is down: the run is lost like single datagrams
                # This kernel or route cannot segment (no checksum offload, IPsec, datagrams
                # above the MTU...): from now on, one datagram per call.
                log.info("ring send: no UDP segmentation offload here (%s); sending singly", exc)
                self.gso = False
                for payload in run:
                    self.data_sock.sendto(payload, address)
        except (BlockingIOError, InterruptedError):
            pass  # a full socket buffer: lost datagrams, which the ring retransmits
        except OSError as exc:
            log.debug("ring send: %s", exc)


_GRO_CMSG_SPACE = socket.CMSG_SPACE(_GRO_SIZE.size) if hasattr(socket, "CMSG_SPACE") else 0


def _gro_segment_size(ancillary: list[tuple[int, int, bytes]]) -> int:
    for level, kind, value in ancillary:
        if level == socket.IPPROTO_UDP and kind == UDP_GRO:
            return int(_GRO_SIZE.unpack_from(value)[0])
    return 65536


def _gso_runs(packets: list[bytes]) -> list[list[bytes]]:
    """Split packets, in order, into runs the kernel can segment: all of the first one's size
    but the last, which may be shorter; at most GSO_SEGMENTS_MAX and GSO_BYTES_MAX each."""
    runs: list[list[bytes]] = []
    run: list[bytes] = []
    size = total = 0
    for p in packets:
        n = len(p)
        if run and n <= size and len(run) < GSO_SEGMENTS_MAX and total + n <= GSO_BYTES_MAX:
            run.append(p)
            total += n
            if n < size:  # a shorter one ends its run
                runs.append(run)
                run = []
            continue
        if run:
            runs.append(run)
        run, size, total = [p], n, n
    if run:
        runs.append(run)
    return runs


def _grow_buffers(sock: socket.socket) -> None:
    for force, plain in (
        (getattr(socket, "SO_RCVBUFFORCE", None), socket.SO_RCVBUF),
        (getattr(socket, "SO_SNDBUFFORCE", None), socket.SO_SNDBUF),
    ):
        try:
            if force is None:
                raise PermissionError
            sock.setsockopt(socket.SOL_SOCKET, force, SOCKET_BUFFER_BYTES)
        except PermissionError:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, plain, SOCKET_BUFFER_BYTES)


# ------------------------------------------------------------------------------- clients


class _ClientProtocol(asyncio.Protocol):
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.session = 0
        self.transport: asyncio.Transport | None = None
        # Messages count against MaxSessionMessages while any of their bytes wait in the
        # transport's buffer (the kernel has not taken them): the end offset of each, in bytes
        # handed to the transport since the start.
        self.handed = 0
        self.message_ends: deque[int] = deque()
        self.pending: list[bytes] = []  # messages gathered for the next write
        self.pending_bytes = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            set_session_buffers(sock)
        self.transport.set_write_buffer_limits(
            high=CLIENT_WRITE_BUFFER_HIGH, low=CLIENT_WRITE_BUFFER_LOW
        )
        self.session = self.daemon.client_opened(self)

    def unwritten_messages(self) -> int:
        """The messages with bytes still in the transport's buffer (the kernel took the rest)."""
        ends = self.message_ends
        if self.transport is not None:
            written = self.handed - self.transport.get_write_buffer_size()
            while ends and ends[0] <= written:
                ends.popleft()
        return len(ends)

    def pause_writing(self) -> None:
        pass  # messages keep counting against the session's limit until they are written

    def resume_writing(self) -> None:
        self.daemon.report_backlog(self.session)

    def data_received(self, data: bytes) -> None:
        self.daemon.client_data(self.session, data)

    def eof_received(self) -> bool:
        self.daemon.client_data(self.session, b"")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.daemon.client_lost(self.session)


# -------------------------------------------------------------------------------- daemon


class Daemon:
    def __init__(
        self,
        config: SpreadConfig,
        me: HostEntry,
        *,
        state_dir: str | None = None,
        metrics_port: int | None = None,
        membership_log: str | None = None,
        local_addresses: Iterable[IPAddress] | None = None,
    ) -> None:
        if local_addresses is None:
            from .cli import gather_local_addresses

            local_addresses = gather_local_addresses()
        self.config = config
        self.me = me
        self.local_hosts = local_hosts(config, local_addresses)
        self.paths = default_paths(config, me, state_dir, local_addresses)
        self.metrics_port = metrics_port
        self.membership_log = membership_log
        self.loop = asyncio.get_running_loop()
        self.node: Node | None = None
        self.transport: RingTransport | None = None
        self._servers: list[asyncio.AbstractServer] = []
        self._clients: dict[int, _ClientProtocol] = {}
        self._next_session = 1
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._reading_paused = False
        self._stopped = asyncio.Event()
        self._flushing = False
        self._clients_waiting: dict[int, None] = {}  # sessions with gathered messages, in order
        self.counters_internal_errors = 0

    # ------------------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        key = _read_key(self.config.ring_auth_key_file)
        self.paths.ring_seq_file.parent.mkdir(parents=True, exist_ok=True)
        ring_seq = load_ring_seq(self.paths.ring_seq_file) + 1
        now = self.loop.time()
        self.transport = RingTransport(
            self.config, self.me, self.loop, self._on_packet, self._flush, key, self._ring_busy
        )
        try:
            await self._open_client_servers()
        except BaseException:
            self.transport.close()
            raise
        totem = totem_config(self.config)
        if self.config.ring_packet_size is not None:
            totem = replace(totem, packet_size_max=self.config.ring_packet_size)
        elif all(h.address.is_loopback for h in self.config.hosts):
            # Loopback carries 64 KB datagrams: bigger ring packets, fewer system calls.
            totem = replace(totem, packet_size_max=LOOPBACK_PACKET_SIZE)
        self.node = Node(
            self.config,
            self.me,
            totem=totem,
            ring_seq=ring_seq,
            now=now,
            rng=random.Random(random.SystemRandom().getrandbits(64)),
            # Wall-clock ms: grows across restarts even if the ring-seq file was lost, so peers
            # never take this incarnation's joins for late ones of the last.
            incarnation=max(ring_seq, time.time_ns() // 1_000_000),
        )
        self.transport.start()
        if self.metrics_port is not None:
            _start_metrics(self, self.metrics_port)
        log.info(
            "spreadpy %s up: ring %s via %s on %s:%d/%d, clients on %s:%d and %s",
            self.me.name,
            ring_seq,
            self.transport.mode,
            self.me.address,
            self.me.port,
            self.me.token_port,
            self.me.address,
            self.me.port,
            self.paths.unix_socket,
        )
        self._flush()

    def client_listen_addresses(self) -> list[str]:
        """Where TCP clients are accepted (spread.conf interface specs, spread-conf.md §2).

        With `C` interfaces: those (0.0.0.0 / :: meaning every address). Without an interface
        list the original listens on every address; so do we, unless several configured
        daemons share this machine (they share the port), where each takes its own address.
        """
        me = self.me
        if me.interfaces_explicit:
            return [str(i.address) for i in me.interfaces_for(IfaceType.CLIENT)]
        if self.local_hosts == [me]:
            return ["::" if me.address.version == 6 else "0.0.0.0"]
        return [str(me.address)]

    async def _open_client_servers(self) -> None:
        loop = self.loop
        for host in self.client_listen_addresses():
            try:
                server = await loop.create_server(
                    lambda: _ClientProtocol(self), host, self.me.port, reuse_address=True
                )
            except OSError as exc:
                raise StartupError(
                    f"cannot listen on TCP {host}:{self.me.port}: {exc.strerror}"
                ) from None
            self._servers.append(server)
        for path, factory in (
            (self.paths.unix_socket, lambda: _ClientProtocol(self)),
            (self.paths.status_socket, lambda: _StatusProtocol(self)),
        ):
            _claim_unix_path(path)
            self._servers.append(await loop.create_unix_server(factory, path))
            with contextlib.suppress(OSError):
                os.chmod(path, 0o777)  # the original's socket is open to every local user

    async def serve_forever(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.loop.add_signal_handler(sig, self._stopped.set)
        await self._stopped.wait()
        await self.stop()

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for server in self._servers:
            server.close()
        for client in list(self._clients.values()):
            if client.transport is not None:
                client.transport.abort()
        if self.transport is not None:
            self.transport.close()
        for path in (self.paths.unix_socket, self.paths.status_socket):
            with contextlib.suppress(OSError):
                os.unlink(path)
        log.info("Spread daemon exiting normally!")

    # ------------------------------------------------------------------------- inputs

    def _on_packet(self, data: bytes) -> None:
        node = self.node
        assert node is not None
        node.receive_packet(data, self.loop.time(), defer_delivery=True)
        # Packets out at once (the token goes on without waiting for the rest of the batch);
        # deliveries at the end of the batch (_flush), and client messages then too, or per
        # CLIENT_WRITE_CHUNK.
        if not self._flushing:
            self._flushing = True
            try:
                self._write_out(node, final=False)
            finally:
                self._flushing = False

    def _ring_busy(self) -> bool:
        return self.node is not None and self.node.processor.ring_busy

    def client_opened(self, protocol: _ClientProtocol) -> int:
        session = self._next_session
        self._next_session += 1
        self._clients[session] = protocol
        assert self.node is not None
        self.node.client_opened(session, self.loop.time())
        if self._reading_paused and protocol.transport is not None:
            protocol.transport.pause_reading()
        self._flush()
        return session

    def client_data(self, session: int, data: bytes) -> None:
        assert self.node is not None
        try:
            self.node.client_data(session, data, self.loop.time())
        except Exception:
            # A bug of ours, met on one client's bytes: log it with the traceback and drop that
            # client, rather than let the event loop kill its transport behind the node's back.
            log.exception("internal error on client %d's data: dropping the client", session)
            self.counters_internal_errors += 1
            client = self._clients.get(session)
            if client is not None and client.transport is not None:
                client.transport.abort()
        self._flush()

    def report_backlog(self, session: int) -> None:
        """Tell the node how many of this client's messages still wait to be written."""
        client = self._clients.get(session)
        if client is not None and self.node is not None:
            self.node.client_backlog(session, client.unwritten_messages(), self.loop.time())
            self._flush()

    def client_lost(self, session: int) -> None:
        self._clients_waiting.pop(session, None)
        if self._clients.pop(session, None) is None:
            return
        assert self.node is not None
        self.node.client_lost(session, self.loop.time())
        self._flush()

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        assert self.node is not None
        # The core tolerates early or late calls; never hand it a time before the deadline.
        self.node.handle_timer(self.loop.time())
        self._flush()

    # ------------------------------------------------------------------------ outputs

    def _flush(self) -> None:
        """Carry out the node's actions, then set back-pressure and the timer for its state."""
        node = self.node
        if node is None or self._flushing:
            return
        node.process_deferred(self.loop.time())  # what this batch's packets delivered
        self._flushing = True
        try:
            self._write_out(node, final=True)
            self._apply_backpressure(node)
            # Re-arm only for an earlier deadline. Token visits push the ring's deadlines later
            # thousands of times a second; a timer armed for an earlier one just fires early,
            # finds nothing due, and is armed again here.
            deadline = node.next_deadline()
            if deadline is not None and (self._timer_at is None or deadline < self._timer_at):
                if self._timer is not None:
                    self._timer.cancel()
                self._timer = self.loop.call_at(deadline, self._on_timer)
                self._timer_at = deadline
        finally:
            self._flushing = False

    def _write_out(self, node: Node, *, final: bool) -> None:
        """Send the node's packets and gather its client messages, until it has nothing left.

        A client's messages are written when CLIENT_WRITE_CHUNK bytes have gathered or, with
        `final`, at the end (one system call for many messages). After each write the messages
        the kernel did not take are reported to the node: a client's MaxSessionMessages counts
        only what waits in our buffer, as the original's session queue does.
        """
        transport = self.transport
        assert transport is not None
        waiting = self._clients_waiting
        while True:
            actions = node.drain_actions()
            if not actions:
                if not final or not waiting:
                    return
                for session in list(waiting):
                    self._write_gathered(node, session)
                continue  # the node may have answered a backlog report
            for action in actions:
                kind = type(action)
                if kind is ToClientFrames:  # multicasts relayed from the ring: the busy path
                    self._gather(node, action.session, action.frames)
                    continue
                if kind is ToClient:
                    self._gather(node, action.session, (action.data,))
                    continue
                if kind is SendPacket:
                    transport.send(action)
                    continue
                match action:
                    case CloseClient(session=session, reason=reason):
                        if session in waiting:
                            self._write_gathered(node, session)
                        self._close(session, reason)
                    case ViewInstalled():
                        self._log_view(action)
                    case PersistRingSeq(ring_seq=ring_seq):
                        try:
                            store_ring_seq(self.paths.ring_seq_file, ring_seq)
                        except OSError as exc:
                            log.error(
                                "cannot save ring seq to %s: %s", self.paths.ring_seq_file, exc
                            )
            transport.flush()

    def _gather(self, node: Node, session: int, messages: Sequence[bytes]) -> None:
        """Queue whole messages for a client; write once CLIENT_WRITE_CHUNK bytes wait."""
        client = self._clients.get(session)
        if client is None:
            return
        client.pending += messages
        handed = client.handed
        ends = client.message_ends
        for message in messages:  # each counts against MaxSessionMessages until written
            handed += len(message)
            ends.append(handed)
        client.pending_bytes += handed - client.handed
        client.handed = handed
        self._clients_waiting[session] = None
        if client.pending_bytes >= CLIENT_WRITE_CHUNK:
            self._write_gathered(node, session)

    def _write_gathered(self, node: Node, session: int) -> None:
        """Write what was gathered for this client; report what the kernel did not take."""
        self._clients_waiting.pop(session, None)
        client = self._clients.get(session)
        if client is None or not client.pending:
            return
        chunks, client.pending, client.pending_bytes = client.pending, [], 0
        self._write(session, chunks[0] if len(chunks) == 1 else b"".join(chunks))
        unwritten = client.unwritten_messages()
        if unwritten:  # (the usual case, none, changes nothing in the node)
            node.client_backlog(session, unwritten, self.loop.time())

    def _log_view(self, view: ViewInstalled) -> None:
        kind = "regular" if view.kind == "reg" else "transitional"
        line = f"{kind} membership {view.view}: {' '.join(view.members)}"
        log.info("%s", line)
        if self.membership_log is not None:
            try:
                with open(self.membership_log, "a") as f:
                    f.write(f"{line}\n")
            except OSError as exc:
                log.warning("membership log %s: %s", self.membership_log, exc)

    def _write(self, session: int, data: bytes) -> None:
        client = self._clients.get(session)
        if client is None or client.transport is None or client.transport.is_closing():
            return
        client.transport.write(data)
        if client.transport.get_write_buffer_size() > CLIENT_WRITE_BUFFER_MAX:
            log.warning("client %d is not reading: dropping it", session)
            client.transport.abort()

    def _close(self, session: int, reason: str) -> None:
        self._clients_waiting.pop(session, None)
        client = self._clients.pop(session, None)
        if client is not None and client.transport is not None:
            log.debug("closing client %d: %s", session, reason)
            client.transport.close()

    def _apply_backpressure(self, node: Node) -> None:
        backlog = node.processor.pending_count()
        if not self._reading_paused and backlog > RING_BACKLOG_HIGH:
            self._reading_paused = True
            for client in self._clients.values():
                if client.transport is not None:
                    client.transport.pause_reading()
        elif self._reading_paused and backlog < RING_BACKLOG_LOW:
            self._reading_paused = False
            for client in self._clients.values():
                if client.transport is not None and not client.transport.is_closing():
                    client.transport.resume_reading()

    def status(self) -> dict[str, Any]:
        assert self.node is not None and self.transport is not None
        status = self.node.status()
        status["internal_errors"] = self.counters_internal_errors
        status["ring_packet_size"] = self.node.processor.config.packet_size_max
        status["transport"] = {
            "mode": self.transport.mode,
            "bad_packets": self.transport.bad_packets,
            "foreign_packets": self.transport.foreign_packets,
            "segmentation_offload": self.transport.gso,
            "segmented_sends": self.transport.segmented_sends,
            "coalesced_receives": self.transport.coalesced_receives,
        }
        status["unix_socket"] = self.paths.unix_socket
        return status


class _StatusProtocol(asyncio.Protocol):
    """`spreadpy status`: one JSON document per connection, then close."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        out = cast(asyncio.Transport, transport)
        out.write(json.dumps(self.daemon.status(), sort_keys=True).encode() + b"\n")
        out.close()


def _claim_unix_path(path: str) -> None:
    try:
        claim_unix_path(path)
    except PathInUse:
        raise StartupError(
            f"{path} is served by a running daemon; stop it or set ClientSocketPath"
        ) from None
    except OSError as exc:
        raise StartupError(f"{path}: {exc.strerror or exc}") from None


def _read_key(path: str | None) -> bytes | None:
    if path is None:
        return None
    try:
        key = Path(path).read_bytes().strip()
    except OSError as exc:
        raise StartupError(f"RingAuthKeyFile {path}: {exc.strerror}") from None
    if len(key) < 16:
        raise StartupError(f"RingAuthKeyFile {path}: a key needs at least 16 bytes")
    return key


def _start_metrics(daemon: Daemon, port: int) -> None:
    from prometheus_client import start_http_server
    from prometheus_client.core import REGISTRY, CounterMetricFamily, GaugeMetricFamily

    class Collector:
        def collect(self) -> Any:  # Any: prometheus_client's metric families
            status = daemon.status()
            for section, values in status["counters"].items():
                for key, value in values.items():
                    yield CounterMetricFamily(
                        f"spreadpy_{section}_{key}", f"{section} {key}", value=value
                    )
            yield GaugeMetricFamily(
                "spreadpy_ring_members", "daemons in the ring", value=len(status["members"])
            )
            yield GaugeMetricFamily(
                "spreadpy_clients", "connected clients", value=status["clients"]
            )

    REGISTRY.register(Collector())  # type: ignore[no-untyped-call]
    start_http_server(port, addr="127.0.0.1")


# ---------------------------------------------------------------------------- entry points


def configure_logging(config: SpreadConfig, name: str) -> None:
    """EventLogFile, EventTimeStamp and DebugFlags onto `logging` (spread-conf.md §3)."""
    from .config import DebugFlag, expand_log_path

    handler: logging.Handler
    if config.event_log_file:
        path = expand_log_path(config.event_log_file, socket.gethostname())
        handler = logging.FileHandler(path)
    else:
        handler = logging.StreamHandler(sys.stdout)
    stamp = config.event_timestamp
    fmt = "%(asctime)s %(message)s" if stamp else "%(message)s"
    handler.setFormatter(logging.Formatter(fmt, datefmt=stamp))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    verbose = DebugFlag.DEBUG | DebugFlag.PROTOCOL | DebugFlag.MEMBERSHIP
    root.setLevel(logging.DEBUG if config.debug_mask & verbose else logging.INFO)


def drop_privileges(config: SpreadConfig, paths: Paths) -> None:
    """As root, switch to DaemonUser/DaemonGroup after binding (no chroot: see docs)."""
    if os.geteuid() != 0:
        return
    import grp
    import pwd

    try:
        user = pwd.getpwnam(config.daemon_user)
        group = grp.getgrnam(config.daemon_group)
    except KeyError:
        log.warning(
            "running as root: DaemonUser/DaemonGroup %s/%s do not exist",
            config.daemon_user,
            config.daemon_group,
        )
        return
    for path in (paths.ring_seq_file.parent, paths.ring_seq_file):
        with contextlib.suppress(FileNotFoundError):
            os.chown(path, user.pw_uid, group.gr_gid)
    os.setgroups([])
    os.setgid(group.gr_gid)
    os.setuid(user.pw_uid)
    log.info("dropped privileges to %s/%s", config.daemon_user, config.daemon_group)


async def run(
    config: SpreadConfig,
    me: HostEntry,
    *,
    state_dir: str | None,
    metrics_port: int | None,
    membership_log: str | None = None,
    local_addresses: Iterable[IPAddress] | None = None,
) -> int:
    daemon = Daemon(
        config,
        me,
        state_dir=state_dir,
        metrics_port=metrics_port,
        membership_log=membership_log,
        local_addresses=local_addresses,
    )
    try:
        await daemon.start()
    except StartupError as exc:
        log.error("spreadpy: %s", exc)
        return 1
    drop_privileges(config, daemon.paths)
    await daemon.serve_forever()
    return 0


def main(
    config: SpreadConfig,
    me: HostEntry,
    *,
    state_dir: str | None = None,
    metrics_port: int | None = None,
    membership_log: str | None = None,
    local_addresses: Iterable[IPAddress] | None = None,
) -> int:
    """Run the daemon until SIGINT/SIGTERM. `membership_log`: a file for `-l y`."""
    coroutine = run(
        config,
        me,
        state_dir=state_dir,
        metrics_port=metrics_port,
        membership_log=membership_log,
        local_addresses=local_addresses,
    )
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency, but stay runnable
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


def query_status(path: str, timeout_s: float = 2.0) -> dict[str, Any]:
    """Ask a running daemon for its status over its status socket."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout_s)
        sock.connect(path)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    result: dict[str, Any] = json.loads(b"".join(chunks))
    return result


def is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True

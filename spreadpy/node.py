"""One spreadpy daemon as a pure state machine: ring + groups + client sessions.

This is the one object the asyncio adapter (daemon.py) and tests talk to. It owns:
  Processor    the Totem ring and EVS membership (membership.py)
  GroupsLayer  Spread's process groups over the ring (groups.py)
  sessions     one wire_session.ServerSession per client connection (wire_session.py)
and moves actions between them until nothing is left to move, so each input returns only
what must leave the process.

Inputs, each with the time passed in:
  receive_packet(data, now)         a ring datagram (already authenticated by the adapter)
  receive_packet(data, now, defer_delivery=True), then process_deferred(now) at the end of a
                                    batch of reads: on a busy ring, the packets the datagram
                                    causes (a token forwarded) come out at once, and the
                                    deliveries and views wait, in order, until then. The data
                                    read with a token no longer holds it back. Any other input
                                    first does what waits.
  client_opened(session, now)       a new TCP or Unix connection
  client_data(session, data, now)   bytes from a client; b"" when it closed its side
  client_lost(session, now)         the transport failed or we closed it
  handle_timer(now)
Outputs: drain_actions() -> SendPacket, ToClient (one message for a client), ToClientFrames
(multicasts relayed to one client, in order: the busy path), CloseClient, PersistRingSeq,
ViewInstalled; next_deadline().

Ring node ids are 1-based positions in the configuration's host list: the same at every daemon
that reads the same file.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from typing import Any

from .config import HostEntry, SpreadConfig
from .errors import LocalProtocolError, WireError
from .groups import CloseSession, GroupsLayer, RelayFrames, SubmitToRing, ToSession
from .membership import (
    Action,
    Deliver,
    PersistRingSeq,
    Processor,
    SendPacket,
    TotemConfig,
    ViewChange,
)
from .wire import (
    MAX_MESSAGE_BODY_LEN,
    MAX_SESSIONS,
    MESSAGE_HEADER_LEN,
    SpError,
    generate_private_name,
)
from .wire_session import (
    NEED_DATA,
    PAUSED,
    Authenticated,
    ConnectionClosed,
    ConnectRequest,
    Join,
    Kill,
    Leave,
    Multicast,
    MulticastFrame,
    ServerSession,
)

log = logging.getLogger(__name__)

RING_SAFE_MAX_BODY_LEN_LIMIT = MAX_MESSAGE_BODY_LEN - MESSAGE_HEADER_LEN
HANDSHAKE_TIMEOUT_S = 1.0  # the original drops a client that has not connected within 1 s
NAME_ATTEMPTS_MAX = 20


@dataclass(frozen=True, slots=True)
class ToClient:
    session: int
    data: bytes


# Not frozen: `frames` is the groups layer's RelayFrames list, handed on (no copy).
@dataclass(slots=True)
class ToClientFrames:
    """Several whole messages for one client, in order (multicasts relayed from the ring)."""

    session: int
    frames: list[bytes]


@dataclass(frozen=True, slots=True)
class CloseClient:
    session: int
    reason: str


@dataclass(frozen=True, slots=True)
class ViewInstalled:
    """A daemon membership change, for logs and the membership log (`-l y`)."""

    kind: str  # "reg" or "trans"
    view: object
    members: tuple[str, ...]  # daemon names


NodeAction = SendPacket | ToClient | ToClientFrames | CloseClient | PersistRingSeq | ViewInstalled


@dataclass(slots=True)
class _Client:
    wire: ServerSession
    handshake_until: float | None
    established: bool = False


@dataclass(slots=True)
class NodeCounters:
    clients_accepted: int = 0
    clients_rejected: int = 0
    clients_bad: int = 0
    handshake_timeouts: int = 0
    client_messages: int = 0
    extra: dict[str, int] = field(default_factory=dict)


def totem_config(config: SpreadConfig) -> TotemConfig:
    """Ring parameters from spread.conf (names and defaults in shared/spec/spread-conf.md §4).

    TokenTimeout -> token loss; GatherTimeout / 2 -> consensus; JoinTimeout -> join resend;
    HurryTimeout -> token retransmit, capped at a fifth of the token timeout so that a lost
    token is resent several times before the ring gives up on it; LookupTimeout is replaced by
    a merge probe every JoinTimeout x 4 (at most 1 s): the original's 30 s is far too slow to
    heal partitions for failover.

    Why half the GatherTimeout: the consensus timeout only waits for members that are silent.
    A live member answers a join at once and joins are resent every JoinTimeout, so 625 ms
    (two and a half join periods by default) leaves room for lost joins, while a crash costs
    TokenTimeout + 625 ms instead of Spread's 1250 + 1250 ms. The commit timeout is half of it.
    """
    t = config.timeouts
    token_s = t.token_ms / 1000
    return TotemConfig(
        token_timeout_s=token_s,
        token_retransmit_s=min(t.hurry_ms / 1000, token_s / 5),
        join_timeout_s=t.join_ms / 1000,
        consensus_timeout_s=t.gather_ms / 2000,
        merge_detect_s=min(1.0, 4 * t.join_ms / 1000),
        window=config.window,
        personal_window=config.personal_window,
        accelerated_window=config.accelerated_window if config.accelerated_ring else 0,
        cluster_tag=config.config_hash & 0xFFFFFFFF,
    )


class Node:
    def __init__(
        self,
        config: SpreadConfig,
        me: HostEntry,
        *,
        ring_seq: int,
        now: float,
        rng: random.Random,
        incarnation: int | None = None,
        totem: TotemConfig | None = None,
        logger: logging.Logger | logging.LoggerAdapter[logging.Logger] | None = None,
    ) -> None:
        self.config = config
        self.me = me
        self.node_id = me.index + 1
        self.rng = rng
        self.log = logger or log
        self.counters = NodeCounters()
        self._actions: list[NodeAction] = []
        # The ring's deliveries and views held back by defer_delivery, in order.
        self._deferred: list[Deliver | ViewChange] = []
        self._clients: dict[int, _Client] = {}
        self._names: dict[str, int] = {}  # private name -> session, from assign_name on
        self.views: list[ViewChange] = []  # the last few, for status
        daemons = {h.index + 1: h.name for h in config.hosts}
        self.processor = Processor(
            self.node_id,
            totem or totem_config(config),
            ring_seq=ring_seq,
            now=now,
            incarnation=incarnation,
            logger=logger,
        )
        self.groups = GroupsLayer(
            self.node_id,
            daemons,
            max_session_messages=config.max_session_messages,
            logger=logger,
        )
        # The client protocol cannot carry more than this, whatever MaxMessageSize says.
        self._max_body = min(config.max_message_size, RING_SAFE_MAX_BODY_LEN_LIMIT)
        if config.max_message_size > self._max_body:
            self.log.warning(
                "MaxMessageSize %d is above what the client protocol can carry; using %d",
                config.max_message_size,
                self._max_body,
            )
        self._pump(now)

    # ---------------------------------------------------------------------------- interface

    def drain_actions(self) -> list[NodeAction]:
        actions = self._actions
        self._actions = []
        return actions

    def next_deadline(self) -> float | None:
        deadline = self.processor.next_deadline()
        for client in self._clients.values():
            if client.handshake_until is not None and (
                deadline is None or client.handshake_until < deadline
            ):
                deadline = client.handshake_until
        return deadline

    def receive_packet(self, data: bytes, now: float, *, defer_delivery: bool = False) -> None:
        proc = self.processor
        # Only a busy ring gains from deferring. On an idle one a delivery must be made before
        # a token read in the same batch is: the delivery is what tells the ring to keep that
        # token for the client's answer (expect_reply).
        defer = defer_delivery and proc.ring_busy
        proc.receive_packet(data, now)
        self._pump(now, defer_delivery=defer)

    @property
    def waiting_deliveries(self) -> int:
        """Deliveries and views that receive_packet(defer_delivery=True) left waiting."""
        return len(self._deferred)

    def process_deferred(self, now: float) -> None:
        """Deliver what receive_packet(defer_delivery=True) left waiting."""
        if self._deferred:
            self._pump(now)

    def handle_timer(self, now: float) -> None:
        self.processor.handle_timer(now)
        for session, client in list(self._clients.items()):
            if client.handshake_until is not None and now >= client.handshake_until:
                self.counters.handshake_timeouts += 1
                self.log.info(
                    "client %d: no connect request within %.1fs", session, HANDSHAKE_TIMEOUT_S
                )
                self._emit_close(session, client.wire.handshake_timed_out(), "handshake timeout")
        self._pump(now)

    def client_opened(self, session: int, now: float) -> None:
        if session in self._clients:
            raise LocalProtocolError(f"session {session} is already open")
        wire = ServerSession(
            daemon_name=self.me.name,
            auth_methods=self.config.allowed_auth_methods or ("NULL",),
            max_body_len=self._max_body,
        )
        self._clients[session] = _Client(wire, now + HANDSHAKE_TIMEOUT_S)

    def client_data(self, session: int, data: bytes, now: float) -> None:
        client = self._clients.get(session)
        if client is None:
            return  # closed by us; the adapter may still hand us what it had read
        if not data and client.wire.pending_bytes:
            # It closed in the middle of a unit: a broken client, not a clean disconnect.
            self.counters.clients_bad += 1
            self.log.warning(
                "client %d closed in the middle of a message (%d bytes)",
                session,
                client.wire.pending_bytes,
            )
        client.wire.receive_data(data)
        self._client_events(session, client, now)
        self._pump(now)

    def client_backlog(self, session: int, unwritten: int, now: float) -> None:
        """The adapter wrote what it could to this client: `unwritten` messages still wait.

        At MaxSessionMessages the client is dropped, as the original does ("not reading").
        """
        if session in self._clients:
            self.groups.session_backlog(session, unwritten)
            self._pump(now)

    def client_lost(self, session: int, now: float) -> None:
        """The connection is gone (reset, or closed by us): forget the session."""
        client = self._clients.pop(session, None)
        if client is None:
            return
        self._forget_name(session, client)
        if client.established:
            self.groups.client_disconnected(session)
        self._pump(now)

    # --------------------------------------------------------------------------- status

    def status(self) -> dict[str, Any]:
        proc = self.processor
        ring = proc.ring
        return {
            "daemon": self.me.name,
            "node_id": self.node_id,
            "state": proc.state.value,
            "ring_id": list(ring.ring_id),
            "members": [self.config.hosts[m - 1].name for m in ring.members],
            "clients": sum(1 for c in self._clients.values() if c.established),
            "groups": {g: list(self.groups.group_members(g)) for g in self.groups.group_names()},
            "counters": {
                "ring": {k: getattr(proc.counters, k) for k in proc.counters.__slots__},
                "groups": {
                    k: getattr(self.groups.counters, k) for k in self.groups.counters.__slots__
                },
                "clients": {
                    "accepted": self.counters.clients_accepted,
                    "rejected": self.counters.clients_rejected,
                    "bad": self.counters.clients_bad,
                    "handshake_timeouts": self.counters.handshake_timeouts,
                    "messages": self.counters.client_messages,
                },
            },
        }

    # ---------------------------------------------------------------------------- internals

    def _emit_close(self, session: int, last_words: bytes, reason: str) -> None:
        client = self._clients.pop(session, None)
        if client is None:
            return
        self._forget_name(session, client)
        if last_words:
            self._actions.append(ToClient(session, last_words))
        self._actions.append(CloseClient(session, reason))
        if client.established:
            self.groups.client_disconnected(session)

    def _forget_name(self, session: int, client: _Client) -> None:
        name = client.wire.private_name
        if name is not None and self._names.get(name) == session:
            del self._names[name]

    def _client_events(self, session: int, client: _Client, now: float) -> None:
        wire = client.wire
        while session in self._clients:
            try:
                event = wire.next_event()
            except WireError as exc:
                self.counters.clients_bad += 1
                self.log.warning("client %d (%s): %s", session, wire.private_name or "?", exc)
                self._emit_close(session, wire.failure_reply(), f"protocol error: {exc}")
                return
            if event is NEED_DATA or event is PAUSED:
                return
            kind = type(event)
            if kind is MulticastFrame or kind is Multicast or kind is Join or kind is Leave:
                # Requests, nearly every event: tested first, without a match.
                self.counters.client_messages += 1
                try:
                    if kind is MulticastFrame:
                        self.groups.client_multicast(session, event)
                    else:
                        self.groups.client_request(session, event)
                except LocalProtocolError as exc:
                    self.counters.clients_bad += 1
                    self.log.warning("client %d: refused request: %s", session, exc)
                    self._emit_close(session, b"", f"bad request: {exc}")
                    return
                continue
            match event:
                case ConnectRequest():
                    self._on_connect_request(session, client, event)
                case Authenticated():
                    self._actions.append(ToClient(session, wire.accept()))
                    client.handshake_until = None
                    client.established = True
                    self.counters.clients_accepted += 1
                    assert wire.private_name is not None
                    self.groups.client_connected(session, wire.private_name, wire.wants_membership)
                case Kill() | ConnectionClosed():
                    self._emit_close(session, b"", "disconnect")
                    return

    def _on_connect_request(self, session: int, client: _Client, req: ConnectRequest) -> None:
        wire = client.wire
        established = sum(1 for c in self._clients.values() if c.established)
        if established >= MAX_SESSIONS:
            self.counters.clients_rejected += 1
            self._emit_close(session, wire.reject(SpError.REJECT_QUOTA), "session quota")
            return
        name = req.private_name
        if not name:
            for _ in range(NAME_ATTEMPTS_MAX):
                candidate = generate_private_name(self.rng, session)
                if candidate not in self._names:
                    name = candidate
                    break
        if not name or name in self._names:
            self.counters.clients_rejected += 1
            self.log.info("client %d: private name %r is taken", session, name)
            self._emit_close(session, wire.reject(SpError.REJECT_NOT_UNIQUE), "name not unique")
            return
        self._names[name] = session
        reply = wire.assign_name(name)
        if reply:
            self._actions.append(ToClient(session, reply))

    def _pump(self, now: float, *, defer_delivery: bool = False) -> None:
        """Move actions between ring, groups and sessions until nothing is left to move (or,
        with `defer_delivery`, pass the ring's packets on and keep the rest for later)."""
        proc, groups = self.processor, self.groups
        actions = self._actions
        last_message: object = None
        last_endian: object = None
        last_bytes = b""
        while True:
            moved = False
            batch: list[Action] = proc.drain_actions()
            if defer_delivery:
                for action in batch:
                    kind = type(action)
                    if kind is Deliver or kind is ViewChange:
                        self._deferred.append(action)
                    elif kind is SendPacket or kind is PersistRingSeq:
                        actions.append(action)
                batch = []
            elif self._deferred:
                batch = [*self._deferred, *batch]
                self._deferred = []
            for action in batch:
                moved = True
                if type(action) is Deliver:  # per message: tested first, without a match
                    if groups.deliver(action):
                        proc.expect_reply()
                    continue
                match action:
                    case ViewChange(kind=kind, view=view, members=members):
                        self.views = [*self.views[-9:], action]
                        groups.view_change(action)
                        names = tuple(self.config.hosts[m - 1].name for m in members)
                        actions.append(ViewInstalled(kind, view, names))
                    case SendPacket() | PersistRingSeq():
                        actions.append(action)
            for action in groups.drain_actions():
                moved = True
                kind = type(action)
                if kind is RelayFrames:  # multicasts for one session: the busy path, first
                    client = self._clients.get(action.session)
                    if client is not None:
                        frames = client.wire.relay_frames(action.frames)
                        actions.append(ToClientFrames(action.session, frames))
                    continue
                if kind is SubmitToRing:  # per message too
                    proc.submit(action.data, action.service, now)
                    continue
                match action:
                    case ToSession(session=session, message=message):
                        client = self._clients.get(session)
                        if client is None:
                            continue
                        wire = client.wire
                        # A message for several sessions is one object: encode it once.
                        if message is last_message and wire.endian is last_endian:
                            data = wire.send(message, last_bytes)
                        else:
                            data = wire.send(message)
                            last_message, last_endian, last_bytes = message, wire.endian, data
                        actions.append(ToClient(session, data))
                    case CloseSession(session=session, reason=reason):
                        self._emit_close(session, b"", reason)
            if not moved:
                return

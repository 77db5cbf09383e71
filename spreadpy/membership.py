"""One Totem processor: the token ring and its Extended Virtual Synchrony membership.

Sans-I/O. Inputs, each with the time passed in:
  receive_packet(data, now)   a datagram from the data or token port
  submit(data, service, now)  a message from the layer above; returns its msg_no
  handle_timer(now)           harmless when called early or late
Outputs:
  drain_actions()             SendPacket, Deliver, ViewChange, PersistRingSeq (and, when
                              tracing, Sequenced / Received for the simulator's checker)
  next_deadline()             when handle_timer wants to run next

States (shared/spec/totem.md §2.4, the Corosync shape it recommends):
  OPERATIONAL  a ring is installed; the token circulates and orders messages (§1)
  GATHER       token lost or a foreign ring heard: JOINs until every live member agrees (§2.5)
  COMMIT       the commit token's first pass: each member records its old ring's state (§2.6)
  RECOVERY     the new ring runs, carrying old-ring packets the old ring's survivors miss (§2.7);
               then the transitional and the new regular configuration are delivered (§2.8)

Departures from the reference, on purpose:
- SAFE stability does not use Totem's aru/aru_id two-rotation rule. The token carries `aru`, a
  running minimum of my_aru that the ring's representative restarts at each of its visits, and
  `safe`, the minimum of the last complete rotation. `safe` is therefore a plain lower bound of
  every member's my_aru, which makes SAFE delivery, garbage collection and the recovery barrier
  obviously correct. It costs at most one rotation of latency, as the reference rule does.
- Retransmission requests cover only seqs up to the token's seq on our previous visit: those had
  a full rotation to arrive, so a token overtaking data (pitfall P1) causes no request, and the
  accelerated ring needs no other rule.
- Ring ids are (seq, rep); seq = highest ring seq seen anywhere + 4, persisted by the adapter
  (PersistRingSeq) when a processor commits to a ring, and loaded + 1 at start (pitfall P4).
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from . import packets as pk
from .errors import MalformedPacket
from .packets import (
    FLAG_RECOVERY,
    FLAG_SAFE,
    FRAG_FIRST,
    FRAG_LAST,
    Chunk,
    CommitEntry,
    CommitToken,
    DataPacket,
    Join,
    Kind,
    Probe,
    RingId,
    RingState,
    Service,
    Token,
)
from .ring import RingStore

log = logging.getLogger(__name__)

# Force a reconfiguration long before a u32 seq or token seq could wrap (totem.md §1.5, P12).
SEQ_LIMIT = (1 << 31) - 100_000


class State(Enum):
    OPERATIONAL = "operational"
    GATHER = "gather"
    COMMIT = "commit"
    RECOVERY = "recovery"


class Channel(Enum):
    DATA = "data"
    TOKEN = "token"


@dataclass(frozen=True, slots=True)
class TotemConfig:
    """Protocol parameters. Times in seconds, windows in packets, sizes in bytes."""

    token_timeout_s: float = 1.25
    token_retransmit_s: float = 0.25
    join_timeout_s: float = 0.25
    consensus_timeout_s: float = 0.625  # the daemon's default: GatherTimeout 1250 ms / 2
    merge_detect_s: float = 1.0
    window: int = 160
    personal_window: int = 60
    accelerated_window: int = 0
    packet_size_max: int = 1472
    seq_gap_max: int = 1600
    rtr_max: int = 256
    idle_visits_before_hold: int = 2
    # Request and reply: a member whose local client was just handed another member's message
    # keeps the token of an otherwise idle ring this long for the client's answer (a submit
    # sends it on at once); without it the answer waits most of a rotation. About the event
    # loop's timer resolution (1 ms) anyway. 0 turns it off.
    reply_hold_s: float = 0.001
    # A member that has not been able to fill a gap for this long leaves the ring instead of
    # holding everyone's safe line (and so, through the seq gap, the ring) back forever
    # (totem.md pitfall P2; Corosync counts 2500 token visits, we count time).
    fail_to_receive_s: float = 10.0
    # Daemons only form rings with daemons of the same tag (the daemon uses its configuration
    # hash, as Spread drops packets of differently configured daemons).
    cluster_tag: int = 0

    @property
    def commit_timeout_s(self) -> float:
        # A commit token that does not come back in this time is lost. Well below the
        # consensus timeout: a member stuck waiting for it must be back in GATHER, sending
        # joins, before the others give up on it for its silence (seed 2532 of the sweep).
        return min(self.token_timeout_s, self.consensus_timeout_s / 2)

    @property
    def hold_s(self) -> float:
        # The representative holds an idle token this long: well inside everybody's
        # retransmit and loss timers, so a held token is never mistaken for a lost one.
        return self.token_retransmit_s * 0.5


# A documented fast profile for sub-second failover (spread.conf `TimeoutProfile = fast`).
FAST_TIMEOUTS = {
    "token_timeout_s": 0.2,
    "token_retransmit_s": 0.04,
    "join_timeout_s": 0.02,
    "consensus_timeout_s": 0.2,
    "merge_detect_s": 0.08,
}


# ------------------------------------------------------------------------------------ actions


# Not frozen: one is built per message, and a frozen dataclass costs three times as much to
# build (0.25 against 0.09 us). Treat it as a value all the same.
@dataclass(slots=True)
class SendPacket:
    dest: int | None  # None: every configured processor but ourselves
    channel: Channel
    payload: bytes


# Not frozen: one is built per message, and a frozen dataclass costs three times as much to
# build (0.25 against 0.09 us). Treat it as a value all the same.
@dataclass(slots=True)
class Deliver:
    originator: int
    msg_no: int
    service: int
    data: bytes
    view: object  # the id of the view installed when delivered (RingId or TransId)


@dataclass(frozen=True, slots=True)
class ViewChange:
    kind: str  # "reg" or "trans"
    view: object  # RingId for "reg", (old RingId, new RingId) for "trans"
    members: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class PersistRingSeq:
    ring_seq: int


@dataclass(frozen=True, slots=True)
class Sequenced:
    msg_no: int
    ring_id: RingId
    seq: int


@dataclass(frozen=True, slots=True)
class Received:
    originator: int
    msg_no: int
    ring_id: RingId
    seq: int


Action = SendPacket | Deliver | ViewChange | PersistRingSeq | Sequenced | Received


@dataclass(slots=True)
class Counters:
    packets_sent: int = 0
    packets_received: int = 0
    retransmitted: int = 0
    retransmit_requests: int = 0
    tokens_forwarded: int = 0
    token_retransmits: int = 0
    rotations: int = 0
    reply_holds: int = 0
    delivered: int = 0
    bad_packets: int = 0
    views: int = 0
    stale_dropped: int = 0
    failed_to_receive: int = 0
    foreign_config: int = 0


@dataclass(slots=True)
class _Outgoing:
    msg_no: int
    service: int
    data: bytes
    offset: int = 0


@dataclass(slots=True)
class _Recovery:
    """What one processor knows while it recovers into a new ring."""

    old: RingStore
    trans_members: tuple[int, ...]
    safe_line: int  # the highest safe line any transitional member knew of the old ring
    resend: deque[bytes] = field(default_factory=deque)
    clear_visits: int = 0
    install_seq: int | None = None


class _NodeLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    def process(self, msg: object, kwargs: Any) -> tuple[object, Any]:
        return f"[{self.extra['node'] if self.extra else '?'}] {msg}", kwargs


class Processor:
    def __init__(
        self,
        me: int,
        config: TotemConfig,
        *,
        ring_seq: int,
        now: float,
        incarnation: int | None = None,
        trace: bool = False,
        logger: logging.Logger | logging.LoggerAdapter[logging.Logger] | None = None,
    ) -> None:
        """`ring_seq`: the persisted ring seq + 1. `incarnation`: a number that grows with
        every start of this processor, also when the persisted ring seq was lost (the daemon
        passes the wall clock in ms); by default the ring seq."""
        assert me > 0
        self.me = me
        self.config = config
        self.trace = trace
        self.log = logger or _NodeLog(log, {"node": me})
        self.counters = Counters()
        self._actions: list[Action] = []
        self._pending: deque[_Outgoing] = deque()
        self._next_msg_no = 1

        # Ring and membership state.
        self.state = State.GATHER
        self.ring = RingStore((ring_seq, me), (me,))
        self.view: object = self.ring.ring_id
        self.highest_ring_seq = ring_seq
        self.committed_ring_seq = ring_seq
        self.incarnation = ring_seq if incarnation is None else incarnation
        self._join_seq = 0
        self._joins_seen: dict[int, tuple[int, int]] = {}  # sender -> newest (incarnation, seq)
        self._peers_ok: set[int] = set()  # senders seen with our cluster tag
        self.proc_set: set[int] = {me}
        self.fail_set: set[int] = set()
        self.consensus: set[int] = set()
        self._recovery: _Recovery | None = None
        # A recovery we had to leave (token lost) while holding its ring's packets. If a
        # member reports in a later commit token that it did install that ring, we install it
        # too, so that we really moved with it (see _effective_old).
        self._prepared: tuple[_Recovery, RingStore] | None = None
        self._commit: CommitToken | None = None
        self._first_token_sent = False
        self._reassembly: dict[int, list[bytes]] = {}

        # Token bookkeeping for the current ring.
        self._my_token_seq = 0
        self._prev_visit_seq = 0
        self._prev_sent = 0
        self._prev_backlog = 0
        self._idle_visits = 0
        self._stall_aru = 0  # fail-to-receive: my_aru, and since when it has not moved
        self._stall_since = now
        self._last_token: tuple[int, bytes] | None = None  # (dest, bytes) kept for retransmit
        self._held_token: Token | None = None
        # A member asked for the token (HOLD_CANCEL) and has not had it since while tokens
        # below this token_seq come: do not keep those.
        self._cancel_until = 0
        self._reply_expected = False  # see expect_reply
        self._ring_was_idle = True  # nothing waited anywhere when the token last left us
        self._cancel_sent = False

        # Deadlines (None: not armed).
        self.token_loss_at: float | None = None
        self.retransmit_at: float | None = None
        self.join_at: float | None = None
        self.consensus_at: float | None = None
        self.hold_until: float | None = None
        self.merge_at: float | None = None

        # A fresh incarnation starts in its own singleton regular view (totem.md EVS-4). Its
        # id is used now, so it is persisted now: a crash before the first commit must not
        # let the next incarnation reuse it (pitfall P4).
        self._actions.append(PersistRingSeq(ring_seq))
        self._emit_view("reg", self.ring.ring_id, (me,))
        self._enter_gather(now, "start")

    # ---------------------------------------------------------------------------- interface

    def drain_actions(self) -> list[Action]:
        actions = self._actions
        self._actions = []
        return actions

    def next_deadline(self) -> float | None:
        deadlines = [
            d
            for d in (
                self.token_loss_at,
                self.retransmit_at,
                self.join_at,
                self.consensus_at,
                self.hold_until,
                self.merge_at,
            )
            if d is not None
        ]
        return min(deadlines) if deadlines else None

    def pending_count(self) -> int:
        return len(self._pending)

    def submit(self, data: bytes, service: int, now: float) -> int:
        """Queue a message for the ring. It is ordered on one of our token visits."""
        msg_no = self._next_msg_no
        self._next_msg_no += 1
        self._pending.append(_Outgoing(msg_no, int(service), data))
        if self.state is State.OPERATIONAL:
            if self._held_token is not None:
                self._release_hold(now)
            elif not self._cancel_sent and self._ring_was_idle:
                # The ring was idle, so someone may be keeping the token (_hold_for): ask for
                # it. Once per visit, and never on a busy ring, where nobody holds it.
                self._cancel_sent = True
                probe = Probe(
                    Kind.HOLD_CANCEL,
                    self.me,
                    self.ring.ring_id,
                    self.config.cluster_tag,
                    self._my_token_seq,
                )
                self._send(None, Channel.DATA, pk.encode_probe(probe))
        return msg_no

    @property
    def ring_busy(self) -> bool:
        """Messages or retransmission requests were waiting somewhere when the token last
        left us (the token's backlog): a flood, not an exchange of single messages."""
        return not self._ring_was_idle

    def expect_reply(self) -> None:
        """A local client was just handed another member's message and may answer at once.

        If the ring is otherwise idle when the token next comes, it is kept up to
        `reply_hold_s` for that answer, which would else wait most of a rotation.
        """
        self._reply_expected = True

    def receive_packet(self, data: bytes, now: float) -> None:
        try:
            packet = pk.decode(data)
        except MalformedPacket as exc:
            self.counters.bad_packets += 1
            self.log.warning("dropped malformed ring packet (%d bytes): %s", len(data), exc)
            return
        self.counters.packets_received += 1
        match packet:
            case DataPacket():
                self._on_data(packet, data, now)
            case Token():
                self._on_token(packet, now)
            case Join():
                self._on_join(packet, now)
            case CommitToken():
                self._on_commit(packet, now)
            case Probe():
                self._on_probe(packet, now)

    def handle_timer(self, now: float) -> None:
        if self.retransmit_at is not None and now >= self.retransmit_at:
            self._retransmit_token(now)
        if self.hold_until is not None and now >= self.hold_until:
            self._release_hold(now)
        if self.merge_at is not None and now >= self.merge_at:
            self._send_merge_detect(now)
        if self.join_at is not None and now >= self.join_at:
            self._send_join()
            self.join_at = now + self.config.join_timeout_s
        if self.consensus_at is not None and now >= self.consensus_at:
            self.consensus_at = None
            self._consensus_timeout(now)
        if self.token_loss_at is not None and now >= self.token_loss_at:
            self.token_loss_at = None
            self._token_loss(now)

    # ------------------------------------------------------------------------ small helpers

    def _send(self, dest: int | None, channel: Channel, payload: bytes) -> None:
        self.counters.packets_sent += 1
        self._actions.append(SendPacket(dest, channel, payload))

    def _emit_view(self, kind: str, view: object, members: tuple[int, ...]) -> None:
        self.view = view
        self.counters.views += 1
        self._actions.append(ViewChange(kind, view, members))
        self.log.debug("view %s %s members %s", kind, view, members)

    def _note_ring_seq(self, ring_seq: int) -> None:
        if ring_seq > self.highest_ring_seq:
            self.highest_ring_seq = ring_seq

    # --------------------------------------------------------------------------- data path

    def _on_data(self, pkt: DataPacket, raw: bytes, now: float) -> None:
        if pkt.sender == self.me:
            return  # our own multicast looped back
        ring = self.ring
        if pkt.ring_id == ring.ring_id:
            if ring.frozen or self.state is State.COMMIT:
                self.counters.stale_dropped += 1
                return
            self._store(ring, pkt, raw)
            if self.state is State.OPERATIONAL:
                self._deliver_ready(ring)
            return
        if pkt.sender in self._peers_ok:  # data carries no cluster tag: trust known peers only
            self._foreign(pkt.sender, pkt.ring_id, now)

    def _store(self, ring: RingStore, pkt: DataPacket, raw: bytes) -> None:
        if not ring.store(pkt, raw):
            return
        if self.trace and not pkt.flags & FLAG_RECOVERY:
            self._trace_received(ring.ring_id, pkt)

    def _trace_received(self, ring_id: RingId, pkt: DataPacket) -> None:
        for msg_no, _svc, frag, _data in pkt.chunks:
            if frag & FRAG_LAST:
                self._actions.append(Received(pkt.sender, msg_no, ring_id, pkt.seq))

    def _foreign(self, sender: int, ring_id: RingId, now: float) -> None:
        """A packet of another ring: a partition healing, or a member that moved on."""
        self._note_ring_seq(ring_id[0])
        if self.state is State.OPERATIONAL:
            if sender in self.ring.members:
                if ring_id[0] <= self.ring.ring_id[0]:
                    self.counters.stale_dropped += 1
                    return  # a late packet of an older ring
            self.proc_set.add(sender)
            self._enter_gather(now, f"foreign ring {ring_id} from {sender}")
        elif self.state is State.GATHER:
            if sender not in self.proc_set and sender not in self.fail_set:
                self.proc_set.add(sender)
                self._enter_gather(now, f"found {sender}")

    def _deliver_ready(self, ring: RingStore) -> None:
        while True:
            pkt = ring.next_deliverable()
            if pkt is None:
                break
            ring.delivered = pkt.seq
            if not pkt.flags & FLAG_RECOVERY:
                self._deliver_packet(pkt)

    def _deliver_packet(self, pkt: DataPacket) -> None:
        sender = pkt.sender
        view = self.view
        actions = self._actions
        for msg_no, svc, frag, data in pkt.chunks:
            if frag != pk.FRAG_WHOLE:
                if frag & FRAG_FIRST:
                    self._reassembly[sender] = [data]
                    continue
                parts = self._reassembly.get(sender)
                if parts is None:
                    continue  # its start was in an older ring; the sender resends it whole
                parts.append(data)
                if not frag & FRAG_LAST:
                    continue
                del self._reassembly[sender]
                data = b"".join(parts)
            self.counters.delivered += 1
            actions.append(Deliver(sender, msg_no, svc, data, view))

    # -------------------------------------------------------------------------- token path

    def _on_token(self, tok: Token, now: float) -> None:
        if self.state not in (State.OPERATIONAL, State.RECOVERY):
            return
        if tok.ring_id != self.ring.ring_id or tok.token_seq <= self._my_token_seq:
            return  # a foreign ring's token, or a retransmitted copy we already handled
        self._my_token_seq = tok.token_seq
        self.retransmit_at = None
        self._last_token = None
        hold_s = self._hold_for(tok)
        if hold_s:
            self._held_token = tok
            self.hold_until = now + hold_s
            self.token_loss_at = None
            return
        self._visit(tok, now)

    def _hold_for(self, tok: Token) -> float:
        """How long to keep this token before visiting: 0 to visit now.

        On an otherwise idle ring the representative parks the token instead of spinning it,
        and a member whose local client was just handed another member's message keeps it
        briefly for the answer. A submit anywhere ends either hold (see `submit`).
        """
        if self.state is not State.OPERATIONAL:
            return 0.0
        reply_expected, self._reply_expected = self._reply_expected, False
        if self._pending or tok.rtr or tok.backlog or tok.token_seq < self._cancel_until:
            self._idle_visits = 0
            return 0.0
        if reply_expected and self.config.reply_hold_s > 0:
            self.counters.reply_holds += 1
            return self.config.reply_hold_s
        if self.me != self.ring.rep:
            return 0.0
        ring = self.ring
        if tok.seq == self._prev_visit_seq and tok.safe == tok.seq and ring.my_aru == tok.seq:
            self._idle_visits += 1
        else:
            self._idle_visits = 0
        if self._idle_visits > self.config.idle_visits_before_hold:
            return self.config.hold_s
        return 0.0

    def _release_hold(self, now: float) -> None:
        tok = self._held_token
        self.hold_until = None
        if tok is None:
            return
        self._held_token = None
        self._idle_visits = 0
        self._visit(tok, now)

    def _visit(self, tok: Token, now: float) -> None:
        """One token visit: retransmit, send new packets, update the token, forward, deliver."""
        cfg = self.config
        ring = self.ring
        me = self.me
        self._cancel_sent = False
        self.token_loss_at = now + cfg.token_timeout_s
        if tok.seq > ring.high_seq:
            ring.high_seq = tok.seq
        if (tok.seq >= SEQ_LIMIT or tok.token_seq >= SEQ_LIMIT) and me == ring.rep:
            # Renumber before a u32 seq or token seq could wrap: a new ring starts both again
            # at 1. (A busy ring passes its token some 10,000 times a second: days, not years.)
            self._enter_gather(
                now, f"seq {tok.seq} / token seq {tok.token_seq} reached the renumbering limit"
            )
            return
        if me == ring.rep:
            # A rotation is complete: its running minimum bounds every member's my_aru.
            self.counters.rotations += 1
            assert tok.aru >= tok.safe, f"rotation minimum {tok.aru} below safe {tok.safe}"
            tok.safe = tok.aru
        ring.raise_safe_line(tok.safe)
        if self.state is State.OPERATIONAL:
            ring.collect_garbage()

        # 1. Retransmissions first: they unblock everyone's aru.
        budget = min(cfg.personal_window, max(0, cfg.window - max(0, tok.fcc - self._prev_sent)))
        sent = 0
        if tok.rtr:
            keep = []
            answered = 0
            for seq in tok.rtr:
                assert seq > ring.safe_line, f"request for seq {seq} at or below the safe line"
                raw = ring.raw.get(seq)
                if raw is not None and answered < cfg.personal_window:
                    self._send(None, Channel.DATA, raw)
                    answered += 1
                else:
                    keep.append(seq)
            tok.rtr = keep
            sent += answered
            self.counters.retransmitted += answered

        # 2. New packets, within the flow-control budget and the seq gap behind the safe line.
        cur_backlog = self._backlog()
        total_backlog = max(0, tok.backlog - self._prev_backlog) + cur_backlog
        if total_backlog > cur_backlog > 0:
            budget = min(budget, max(1, cfg.window * cur_backlog // total_backlog))
        budget = min(budget - sent, ring.safe_line + cfg.seq_gap_max - tok.seq)
        late: list[bytes] = []
        if budget > 0:
            new = self._new_packets(tok, budget)
            sent += len(new)
            # Accelerated ring: the last few go out after the token (never while recovering).
            tail = cfg.accelerated_window if self.state is State.OPERATIONAL else 0
            split = max(0, len(new) - tail)
            for raw in new[:split]:
                self._send(None, Channel.DATA, raw)
            late = new[split:]

        # 3. The token's running aru minimum, flow control and backlog.
        if me == ring.rep or ring.my_aru < tok.aru:
            # The representative starts the next rotation's minimum; others lower it.
            tok.aru = ring.my_aru
            tok.aru_node = me
        tok.fcc = max(0, tok.fcc - self._prev_sent) + sent
        self._prev_sent = sent
        cur_backlog = self._backlog()
        tok.backlog = max(0, tok.backlog - self._prev_backlog) + cur_backlog
        self._prev_backlog = cur_backlog
        self._ring_was_idle = not tok.backlog and not tok.rtr

        # 4. Ask for what we lack among the seqs that had a whole rotation to reach us.
        if ring.my_aru < self._prev_visit_seq:
            if ring.my_aru > self._stall_aru:
                self._stall_aru, self._stall_since = ring.my_aru, now
            elif (
                now - self._stall_since > cfg.fail_to_receive_s and self.state is State.OPERATIONAL
            ):
                self.log.warning(
                    "failed to receive seq %d for %.1fs: leaving ring %s",
                    ring.my_aru + 1,
                    now - self._stall_since,
                    ring.ring_id,
                )
                self.counters.failed_to_receive += 1
                self.proc_set = {me}
                self.fail_set = set(ring.members) - {me}
                self._enter_gather(now, "failed to receive")
                return
        else:
            self._stall_aru, self._stall_since = ring.my_aru, now
        if ring.my_aru < self._prev_visit_seq and len(tok.rtr) < cfg.rtr_max:
            asked = set(tok.rtr)
            for seq in ring.missing(self._prev_visit_seq, cfg.rtr_max - len(tok.rtr)):
                if seq not in asked:
                    tok.rtr.append(seq)
                    self.counters.retransmit_requests += 1
        self._prev_visit_seq = tok.seq

        if self.state is State.RECOVERY:
            self._recovery_step(tok)

        # 5. Forward the token, then the accelerated tail, then deliver.
        tok.token_seq += 1
        tok.sender = me
        dest = ring.successor(me)
        raw_token = pk.encode_token(tok)
        self._send(dest, Channel.TOKEN, raw_token)
        self.counters.tokens_forwarded += 1
        self._last_token = (dest, raw_token)
        self.retransmit_at = now + cfg.token_retransmit_s
        for raw in late:
            self._send(None, Channel.DATA, raw)
        if self.state is State.OPERATIONAL:
            self._deliver_ready(ring)
        elif self._install_ready(tok):
            self._install(now)

    def _backlog(self) -> int:
        """What we have waiting for the ring: resends while recovering, else messages."""
        return len(self._recovery.resend) if self._recovery is not None else len(self._pending)

    def _new_packets(self, tok: Token, budget: int) -> list[bytes]:
        """Sequence up to `budget` packets from the send (or recovery) queue."""
        ring = self.ring
        me = self.me
        out: list[bytes] = []
        if self._recovery is not None:
            resend = self._recovery.resend
            while resend and len(out) < budget:
                tok.seq += 1
                raw = pk.encode_recovery(ring.ring_id, tok.seq, me, resend.popleft())
                ring.store(pk.decode_data(raw), raw)
                out.append(raw)
            return out
        if self.state is not State.OPERATIONAL:
            return out
        pending = self._pending
        # Room for a recovery header too, so a recovered packet stays within the size limit.
        room_max = self.config.packet_size_max - 2 * pk.DATA_HEADER_SIZE
        while pending and len(out) < budget:
            chunks: list[Chunk] = []
            room = room_max
            safe_packet = pending[0].service == Service.SAFE
            while pending:
                msg = pending[0]
                if (msg.service == Service.SAFE) != safe_packet:
                    break  # keep SAFE apart, so it holds back nothing sent beside it
                left = len(msg.data) - msg.offset
                avail = room - pk.CHUNK_HEADER_SIZE
                if left <= avail:
                    frag = FRAG_LAST | (FRAG_FIRST if msg.offset == 0 else 0)
                    chunks.append((msg.msg_no, msg.service, frag, msg.data[msg.offset :]))
                    room = avail - left
                    pending.popleft()
                    if self.trace:
                        self._actions.append(Sequenced(msg.msg_no, ring.ring_id, tok.seq + 1))
                    continue
                if chunks and left <= room_max - pk.CHUNK_HEADER_SIZE:
                    break  # a message that fits a packet of its own is not split
                if avail <= 0:
                    break
                frag = FRAG_FIRST if msg.offset == 0 else 0
                end = msg.offset + avail
                chunks.append((msg.msg_no, msg.service, frag, msg.data[msg.offset : end]))
                msg.offset = end
                break
            tok.seq += 1
            flags = FLAG_SAFE if safe_packet else 0
            raw = pk.encode_data(ring.ring_id, tok.seq, me, flags, chunks)
            ring.store(DataPacket(ring.ring_id, tok.seq, me, flags, tuple(chunks)), raw)
            out.append(raw)
        return out

    def _retransmit_token(self, now: float) -> None:
        self.retransmit_at = None
        if self._last_token is None or self.state is State.GATHER:
            return
        dest, raw = self._last_token
        self._send(dest, Channel.TOKEN, raw)
        self.counters.token_retransmits += 1
        self.retransmit_at = now + self.config.token_retransmit_s

    def _on_probe(self, probe: Probe, now: float) -> None:
        if probe.sender == self.me:
            return
        if probe.tag != self.config.cluster_tag:
            self.counters.foreign_config += 1
            return
        self._peers_ok.add(probe.sender)
        if probe.ring_id == self.ring.ring_id:
            if probe.kind is Kind.HOLD_CANCEL and self.state is State.OPERATIONAL:
                # The sender's next token is the one after its last plus a rotation; a
                # token before that has not served it yet (a later one has: a stale request).
                served_by = probe.token_seq + len(self.ring.members)
                self._cancel_until = max(self._cancel_until, served_by)
                held = self._held_token
                if held is not None and held.token_seq < served_by:
                    self._release_hold(now)
            return
        if probe.kind is Kind.MERGE_DETECT:
            self._foreign(probe.sender, probe.ring_id, now)

    def _send_merge_detect(self, now: float) -> None:
        """The representative tells any other ring within reach that we exist."""
        self.merge_at = None
        if self.state is not State.OPERATIONAL or self.me != self.ring.rep:
            return
        probe = Probe(Kind.MERGE_DETECT, self.me, self.ring.ring_id, self.config.cluster_tag)
        self._send(None, Channel.DATA, pk.encode_probe(probe))
        self.merge_at = now + self.config.merge_detect_s

    # --------------------------------------------------------------------------- membership

    def _enter_gather(self, now: float, reason: str) -> None:
        if self.state is not State.GATHER:
            self.log.info("gather: %s", reason)
        else:
            self.log.debug("gather again: %s", reason)
        if self._recovery is not None:
            # An aborted recovery: the old ring, frozen, is what we still have.
            self.ring.frozen = True
            self._prepared = (self._recovery, self.ring)
            self.ring = self._recovery.old
            self._recovery = None
        self.state = State.GATHER
        self._commit = None
        self._held_token = None
        self.hold_until = None
        self.merge_at = None
        self.retransmit_at = None
        self.token_loss_at = None
        self._last_token = None
        self.proc_set.add(self.me)
        self.consensus = {self.me}
        self._send_join()
        cfg = self.config
        self.join_at = now + cfg.join_timeout_s
        self.consensus_at = now + cfg.consensus_timeout_s

    def _send_join(self) -> None:
        self._join_seq += 1
        join = Join(
            self.me,
            self.incarnation,
            self._join_seq,
            self.highest_ring_seq,
            frozenset(self.proc_set),
            frozenset(self.fail_set),
            self.config.cluster_tag,
            self.ring.ring_id,
        )
        self._send(None, Channel.DATA, pk.encode_join(join))

    def _on_join(self, j: Join, now: float) -> None:
        if j.sender == self.me:
            return
        if j.tag != self.config.cluster_tag:
            self.counters.foreign_config += 1
            return
        self._peers_ok.add(j.sender)
        stamp = (j.incarnation, j.join_seq)
        newest = self._joins_seen.get(j.sender)
        if newest is not None and stamp <= newest:
            # Overtaken by a newer join of the same sender: its sets are history. A late join
            # that still lists us as failed would fail its sender again (seed 5030).
            self.counters.stale_dropped += 1
            return
        self._joins_seen[j.sender] = stamp
        self._note_ring_seq(j.ring_seq)
        state = self.state
        prepared = self._prepared
        if state is State.GATHER and prepared is not None and j.installed == prepared[1].ring_id:
            self._install_prepared(f"{j.sender} did")
        if state is State.OPERATIONAL:
            if self.me in j.fail_set:
                return
            if j.sender in self.ring.members and j.ring_seq < self.ring.ring_id[0]:
                return  # sent before the ring we are on formed (pitfall P6)
            self._enter_gather(now, f"join from {j.sender}")
            self._process_join(j, now)
        elif state is State.GATHER:
            self._process_join(j, now)
        else:  # COMMIT or RECOVERY
            commit = self._commit
            assert commit is not None
            if j.sender in commit.members and j.ring_seq >= commit.ring_id[0]:
                self._process_join(j, now)
                if self.state is not State.GATHER:
                    self._enter_gather(now, f"join from {j.sender} during {state.value}")

    def _process_join(self, j: Join, now: float) -> None:
        proc_set, fail_set = self.proc_set, self.fail_set
        if j.proc_set == proc_set and j.fail_set == fail_set:
            if self.state is not State.GATHER:
                return
            self.consensus.add(j.sender)
            self._check_consensus(now)
            return
        if j.proc_set <= proc_set and j.fail_set <= fail_set:
            return  # we already know more; our next join tells it
        if j.sender in fail_set:
            return
        before = (len(proc_set), len(fail_set))
        proc_set |= j.proc_set
        if self.me in j.fail_set:
            fail_set.add(j.sender)  # failure is mutual
        elif j.sender in self.ring.members:
            fail_set |= j.fail_set - {self.me}
        # Re-announce only what changed: answering every differing join with a join of our
        # own lets two processors that disagree for good flood the network until the
        # consensus timeout settles it.
        if (len(proc_set), len(fail_set)) != before:
            self._enter_gather(now, f"sets changed by {j.sender}")
            if j.proc_set == proc_set and j.fail_set == fail_set:
                # We took the sender's sets as they are: its join already agrees with ours.
                # (Waiting for its next join cost a JoinTimeout on every failover.)
                self.consensus.add(j.sender)
                self._check_consensus(now)

    def _check_consensus(self, now: float) -> None:
        live = self.proc_set - self.fail_set
        if not self.consensus >= live:
            return
        if self.me == min(live):
            self._create_commit(now, tuple(sorted(live)))

    def _consensus_timeout(self, now: float) -> None:
        live = self.proc_set - self.fail_set
        if self.consensus >= live:
            if self.me == min(live):
                self._create_commit(now, tuple(sorted(live)))
                return
            # Agreement, but no commit token from the representative yet: wait a token time.
            self.consensus = {self.me}
            self.token_loss_at = now + self.config.token_timeout_s
            return
        self.fail_set |= live - self.consensus
        self._enter_gather(now, f"no consensus from {sorted(live - self.consensus)}")
        if self.proc_set - self.fail_set == {self.me}:
            self._create_commit(now, (self.me,))  # alone: nobody to wait for

    def _token_loss(self, now: float) -> None:
        if self.state is State.OPERATIONAL:
            self.proc_set = set(self.ring.members)
            self.fail_set = set()
        self._enter_gather(now, f"token lost in {self.state.value}")

    def _create_commit(self, now: float, members: tuple[int, ...]) -> None:
        ring_seq = max(self.highest_ring_seq, self.committed_ring_seq) + 4
        self._note_ring_seq(ring_seq)
        n = len(members)
        commit = CommitToken((ring_seq, self.me), 0, 0, members, (pk.EMPTY_ENTRY,) * n)
        self._accept_commit(commit, now)

    def _on_commit(self, c: CommitToken, now: float) -> None:
        self._note_ring_seq(c.ring_id[0])
        n = len(c.members)
        if c.members[c.hop % n] != self.me:
            return
        state = self.state
        if state is State.GATHER:
            if c.hop >= n or c.ring_id[0] <= self.committed_ring_seq:
                self.log.debug(
                    "commit %s hop %d refused: committed %d",
                    c.ring_id,
                    c.hop,
                    self.committed_ring_seq,
                )
                return
            if set(c.members) != self.proc_set - self.fail_set:
                self.log.debug(
                    "commit %s for %s refused: my sets %s - %s",
                    c.ring_id,
                    c.members,
                    sorted(self.proc_set),
                    sorted(self.fail_set),
                )
                return
            self._accept_commit(c, now)
        elif state is State.COMMIT and self._commit is not None:
            if c.ring_id != self._commit.ring_id or c.hop < self._commit.hop:
                return
            if c.hop >= n and all(e.filled for e in c.entries):
                self._enter_recovery(c, now)
        elif state is State.RECOVERY and self._commit is not None:
            if c.ring_id == self._commit.ring_id and c.hop == 2 * n and not self._first_token_sent:
                self._originate_token(now)

    def _accept_commit(self, c: CommitToken, now: float) -> None:
        """First pass: record our old ring's state in our entry and pass the token on."""
        old = self.ring
        old.frozen = True
        index = c.hop
        prepared = pk.NO_RING
        if self._prepared is not None:
            p = self._prepared[1]
            prepared = RingState(p.ring_id, p.my_aru, p.high_seq, p.safe_line)
        installed = RingState(old.ring_id, old.my_aru, old.high_seq, old.safe_line)
        entry = CommitEntry(installed, prepared, True)
        entries = (*c.entries[:index], entry, *c.entries[index + 1 :])
        c = CommitToken(c.ring_id, c.token_seq + 1, c.hop + 1, c.members, entries)
        self.state = State.COMMIT
        self._commit = c
        self._first_token_sent = False
        self.committed_ring_seq = c.ring_id[0]
        self._actions.append(PersistRingSeq(c.ring_id[0]))
        self.join_at = None
        self.consensus_at = None
        self.token_loss_at = now + self.config.commit_timeout_s
        self._forward_commit(c, now)

    def _forward_commit(self, c: CommitToken, now: float) -> None:
        dest = c.members[c.hop % len(c.members)]
        raw = pk.encode_commit(c)
        self._last_token = (dest, raw)
        self.retransmit_at = now + self.config.token_retransmit_s
        if dest == self.me:
            self._on_commit(c, now)
        else:
            self._send(dest, Channel.TOKEN, raw)

    @staticmethod
    def _effective_old(c: CommitToken) -> list[RingState]:
        """Each member's old ring, as every member of the new ring computes it alike.

        A member that left a recovery holding all of that ring's recovery packets counts as
        coming from that ring if another member reports having installed it: whoever installed
        it knew every member held those packets, so the member can install it now and the
        two really did move together (totem.md EVS-5).
        """
        installed = {e.old.ring_id for e in c.entries}
        return [
            e.prepared if e.prepared.ring_id in installed - {pk.NO_RING.ring_id} else e.old
            for e in c.entries
        ]

    def _install_prepared(self, why: str) -> None:
        """Install the ring whose recovery we left holding all of its packets.

        Another member installed it: whoever did knew that every member held those packets,
        so installing it now means we really moved together (totem.md EVS-5). A join that
        names it tells us in GATHER; a commit token that reports it, in _enter_recovery.
        """
        assert self._prepared is not None
        rec, ring = self._prepared
        self.log.info("installing %s late: %s", ring.ring_id, why)
        self._prepared = None
        self._transition(rec, ring)
        ring.frozen = True
        self.ring = ring

    def _enter_recovery(self, c: CommitToken, now: float) -> None:
        olds = self._effective_old(c)
        mine = olds[c.members.index(self.me)]
        if mine.ring_id != self.ring.ring_id:
            assert self._prepared is not None and self._prepared[1].ring_id == mine.ring_id
            self._install_prepared("another member did")
        self._prepared = None
        old = self.ring
        trans = tuple(
            m
            for m, o in zip(c.members, olds, strict=True)
            if m in old.members and o.ring_id == old.ring_id
        )
        assert self.me in trans
        states = [o for m, o in zip(c.members, olds, strict=True) if m in trans]
        low_aru = min(o.aru for o in states)
        # What one of us knew to be safe, all of us deliver in the old regular view: every
        # transitional member must place each message on the same side of the transitional
        # view (totem.md EVS-12).
        rec = _Recovery(old, trans, max(o.safe_line for o in states))
        for seq in range(max(low_aru, old.released) + 1, old.high_seq + 1):
            raw = old.raw.get(seq)
            if raw is not None:
                rec.resend.append(raw)
        self._recovery = rec
        self.ring = RingStore(c.ring_id, c.members)
        self.state = State.RECOVERY
        self._my_token_seq = 0
        self._prev_visit_seq = 0
        self._prev_sent = 0
        self._prev_backlog = 0
        self._idle_visits = 0
        self._stall_aru, self._stall_since = 0, now
        self._cancel_until = 0
        self._reply_expected = False
        self._ring_was_idle = True
        c = CommitToken(c.ring_id, c.token_seq + 1, c.hop + 1, c.members, c.entries)
        self._commit = c
        self.token_loss_at = now + self.config.commit_timeout_s
        self._forward_commit(c, now)

    def _originate_token(self, now: float) -> None:
        """The representative starts the new ring's first regular token, once per ring."""
        self._first_token_sent = True
        ring = self.ring
        tok = Token(ring.ring_id, 1, 0, 0, 0, 0, 0, 0, self.me, 0, [])
        self.retransmit_at = None
        self._last_token = None
        self._my_token_seq = tok.token_seq
        self._visit(tok, now)

    def _recovery_step(self, tok: Token) -> None:
        """Find the seq by which every recovery packet has been sequenced.

        While recovering, the token's backlog is the sum of the members' resend queues as each
        last reported it (queues only shrink). Zero on two of our visits in a row means every
        member reported an empty queue in between, so every recovery packet has a seq at or
        below the token's seq now. (A one-bit flag that its setter clears, as in Corosync,
        loses a second setter's queue: seed 417 of the sweep.)
        """
        rec = self._recovery
        assert rec is not None
        if tok.backlog:
            rec.clear_visits = 0
            return
        rec.clear_visits += 1
        if rec.clear_visits == 2:
            rec.install_seq = tok.seq

    def _install_ready(self, tok: Token) -> bool:
        rec = self._recovery
        return (
            self.state is State.RECOVERY
            and rec is not None
            and rec.install_seq is not None
            and tok.safe >= rec.install_seq
        )

    def _install(self, now: float) -> None:
        rec = self._recovery
        assert rec is not None
        new = self.ring
        self._recovery = None
        self._prepared = None
        self.state = State.OPERATIONAL
        self.proc_set = set(new.members)
        self.fail_set = set()
        self.consensus = set()
        self._transition(rec, new)
        if self.me == new.rep:
            self.merge_at = now + self.config.merge_detect_s

    def _transition(self, rec: _Recovery, new: RingStore) -> None:
        """Deliver the rest of the old ring around the transitional view, then the new view."""
        old = rec.old
        # Unwrap what the other survivors sent us: now we hold exactly what they hold.
        for seq in range(1, new.my_aru + 1):
            pkt = new.packets.get(seq)
            if pkt is None or not pkt.flags & FLAG_RECOVERY:
                continue
            inner = pk.decode_data(pkt.inner)
            if inner.ring_id == old.ring_id and not old.has(inner.seq):
                old.store(inner, pkt.inner)
                if self.trace:
                    self._trace_received(old.ring_id, inner)

        # (a) In the old regular view: up to the first hole or first SAFE not yet safe.
        old.raise_safe_line(rec.safe_line)
        self._deliver_ready(old)
        # (b) The transitional view: who moved together from the old ring.
        trans = rec.trans_members
        self._emit_view("trans", (old.ring_id, new.ring_id), trans)
        # (c) The rest of the old ring. After a hole, only packets of transitional members:
        # another's might depend on the packet nobody here has.
        past_hole = False
        for seq in range(old.delivered + 1, old.high_seq + 1):
            pkt = old.packets.get(seq)
            if pkt is None:
                past_hole = True
                continue
            if past_hole and pkt.sender not in trans:
                continue
            self._deliver_packet(pkt)
        old.delivered = old.high_seq
        self._reassembly.clear()
        # Messages cut off mid-way in the old ring start again whole in the new one.
        if self._pending and self._pending[0].offset:
            self._pending[0].offset = 0

        # (d) The new regular view. Its recovery packets are not delivered; skip over them.
        self._emit_view("reg", new.ring_id, new.members)
        self._deliver_ready(new)

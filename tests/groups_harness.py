"""A perfect in-memory ring for GroupsLayer tests: one total order per ring, scripted EVS views.

`Cluster` holds one GroupsLayer per daemon and plays the ring for them: items a daemon submits
wait in its send queue (which, like the real ring's, survives view changes) until `run()`
orders them, round-robin over the members of the ring, and delivers each to every member in
that order. `reconfigure()` installs new rings as membership.Processor does: for each member a
transitional view (the members that came from its old ring), then whatever of the old ring was
ordered but not yet delivered (`hold()` keeps `run()` from delivering), then the regular view.
Clients record every ToSession message, each also encoded with the wire codec, so anything the
layer hands a session must be writable; and every frame of a RelayFrames, as the client library
decodes it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from spreadpy.groups import CloseSession, GroupsLayer, RelayFrames, SubmitToRing, ToSession
from spreadpy.membership import Deliver, ViewChange
from spreadpy.packets import RingId
from spreadpy.wire import (
    DaemonMessage,
    Join,
    Kill,
    Leave,
    MembershipMessage,
    Multicast,
    RegularMessage,
    SelfLeave,
    ServiceType,
    TransitionalMessage,
    decode_daemon_message,
    encode_daemon_message,
)


@dataclass
class Client:
    sid: int
    daemon: int
    name: str
    private_group: str
    reading: bool = True  # False: a client that stopped reading; its messages stay unwritten
    unread: int = 0  # messages the adapter could not write (counted while not reading)
    closed: str | None = None
    inbox: list[DaemonMessage] = field(default_factory=list)

    def memberships(self, group: str | None = None) -> list[DaemonMessage]:
        """Membership-type messages (REG_MEMB, TRANSITION, self-leave), optionally for one group."""
        return [
            m
            for m in self.inbox
            if isinstance(m, MembershipMessage | TransitionalMessage | SelfLeave)
            and (group is None or m.group == group)
        ]

    def data(self) -> list[RegularMessage]:
        return [m for m in self.inbox if isinstance(m, RegularMessage)]

    def take(self) -> list[DaemonMessage]:
        out, self.inbox = self.inbox, []
        return out


class Cluster:
    def __init__(
        self,
        ids: Sequence[int] = (1, 2, 3),
        *,
        max_session_messages: int = 1000,
        max_local_group_members: int = 3122,
        encode_check: bool = True,
    ) -> None:
        self.daemons = {i: f"d{i}" for i in ids}  # configuration order = order of `ids`
        self.layers: dict[int, GroupsLayer] = {
            i: GroupsLayer(
                i,
                self.daemons,
                max_session_messages=max_session_messages,
                max_local_group_members=max_local_group_members,
            )
            for i in ids
        }
        self.encode_check = encode_check
        self.ring_seq = 0
        self.view: dict[int, RingId] = {}
        self.members: dict[int, tuple[int, ...]] = {}
        self.pending: dict[int, deque[tuple[bytes, int, int]]] = {i: deque() for i in ids}
        self.msg_no = dict.fromkeys(ids, 0)
        self.log: dict[RingId, list[Deliver]] = {}
        self.position: dict[int, int] = {}
        self.holding = False
        self.clients: dict[int, Client] = {}
        self.submitted: list[tuple[int, SubmitToRing]] = []
        # (daemon, originator, what deliver() said): whether a local client may answer
        self.reply_hints: list[tuple[int, int, bool]] = []
        self._next_sid = 100
        for i in ids:  # every daemon starts in its own singleton regular view (totem.md EVS-4)
            ring = (0, i)
            self.log[ring] = []
            self._install(i, ring, (i,))

    # ------------------------------------------------------------------------- the ring

    def alive(self) -> list[int]:
        return list(self.layers)

    def rings(self) -> dict[RingId, tuple[int, ...]]:
        return {self.view[d]: self.members[d] for d in self.layers}

    def hold(self, on: bool = True) -> None:
        """While held, run() orders items but does not deliver them."""
        self.holding = on

    def run(self, *, senders: Iterable[int] | None = None, limit: int = 100_000) -> None:
        """Order and deliver until nothing moves. `senders`: order only these daemons' items."""
        allowed = set(self.layers) if senders is None else set(senders)
        for _ in range(limit):
            moved = False
            for ring, members in self.rings().items():
                moved |= self._order(ring, [m for m in members if m in allowed])
                if not self.holding:
                    moved |= self._deliver_all(ring, members)
            if not moved:
                return
        raise AssertionError("the ring did not quiesce")

    def _order(self, ring: RingId, members: Sequence[int]) -> bool:
        moved = False
        while any(self.pending[m] for m in members):
            for m in members:
                if self.pending[m]:
                    data, service, msg_no = self.pending[m].popleft()
                    self.log[ring].append(Deliver(m, msg_no, service, data, ring))
                    moved = True
        return moved

    def _deliver_all(self, ring: RingId, members: Sequence[int]) -> bool:
        moved = False
        for m in members:
            while self.position[m] < len(self.log[ring]):
                d = self.log[ring][self.position[m]]
                self.position[m] += 1
                self.reply_hints.append((m, d.originator, self.layers[m].deliver(d)))
                self._drain(m)
                moved = True
        return moved

    def reconfigure(self, components: Sequence[Sequence[int]]) -> None:
        """Install one new ring per component (all live daemons must be listed once)."""
        listed = sorted(d for comp in components for d in comp)
        assert listed == sorted(self.layers), f"{listed} vs live {sorted(self.layers)}"
        self.ring_seq += 4
        for comp in components:
            comp = tuple(sorted(comp))
            new = (self.ring_seq, comp[0])
            self.log[new] = []
            for m in comp:
                old, old_members = self.view[m], self.members[m]
                trans = tuple(x for x in comp if x in old_members)
                tid = (old, new)
                layer = self.layers[m]
                layer.view_change(ViewChange("trans", tid, trans))
                self._drain(m)
                for d in self.log[old][self.position[m] :]:
                    layer.deliver(replace(d, view=tid))
                    self._drain(m)
                self._install(m, new, comp)

    def _install(self, m: int, ring: RingId, members: tuple[int, ...]) -> None:
        self.view[m], self.members[m], self.position[m] = ring, members, 0
        self.layers[m].view_change(ViewChange("reg", ring, members))
        self._drain(m)

    def crash(self, daemon: int) -> None:
        """The daemon and its clients vanish; call reconfigure() for the survivors."""
        del self.layers[daemon]
        self.pending[daemon].clear()
        for c in self.clients.values():
            if c.daemon == daemon and c.closed is None:
                c.closed = "daemon crashed"

    def _drain(self, d: int) -> None:
        layer = self.layers.get(d)
        if layer is None:
            return
        while True:
            actions = layer.drain_actions()
            if not actions:
                return
            for a in actions:
                match a:
                    case SubmitToRing():
                        self.msg_no[d] += 1
                        self.pending[d].append((a.data, a.service, self.msg_no[d]))
                        self.submitted.append((d, a))
                    case ToSession():
                        c = self.clients[a.session]
                        assert c.closed is None, f"message to closed session {c.name}"
                        if self.encode_check:
                            encode_daemon_message(a.message)
                        c.inbox.append(a.message)
                        if not c.reading:
                            c.unread += 1
                        layer.session_backlog(a.session, c.unread)
                    case RelayFrames():
                        c = self.clients[a.session]
                        assert c.closed is None, f"messages to closed session {c.name}"
                        for frame in a.frames:
                            # What the client's library makes of a relay frame's bytes.
                            c.inbox.append(decode_daemon_message(frame))
                            if not c.reading:
                                c.unread += 1
                        layer.session_backlog(a.session, c.unread)
                    case CloseSession():
                        c = self.clients[a.session]
                        c.closed = a.reason
                        layer.client_disconnected(a.session)  # the adapter acknowledges

    # ---------------------------------------------------------------------------- clients

    def connect(self, daemon: int, name: str, *, membership: bool = True) -> Client:
        sid = self._next_sid
        self._next_sid += 1
        group = self.layers[daemon].client_connected(sid, name, membership)
        c = Client(sid, daemon, name, group)
        self.clients[sid] = c
        return c

    def join(self, c: Client, group: str) -> None:
        self._request(c, Join(group))

    def leave(self, c: Client, group: str) -> None:
        self._request(c, Leave(group))

    def mcast(
        self,
        c: Client,
        groups: str | Sequence[str],
        data: bytes,
        *,
        service: ServiceType = ServiceType.AGREED_MESS,
        mess_type: int = 0,
    ) -> None:
        targets = (groups,) if isinstance(groups, str) else tuple(groups)
        req = Multicast(service_type=service, groups=targets, mess_type=mess_type, data=data)
        self._request(c, req)

    def disconnect(self, c: Client) -> None:
        c.closed = "disconnected"
        self.layers[c.daemon].client_disconnected(c.sid)
        self._drain(c.daemon)

    def kill(self, c: Client) -> None:
        """SP_disconnect: a KILL request, which ends the session like a closed socket."""
        c.closed = "killed"
        self._request(c, Kill())

    def _request(self, c: Client, req: Multicast | Join | Leave | Kill) -> None:
        self.layers[c.daemon].client_request(c.sid, req)
        self._drain(c.daemon)

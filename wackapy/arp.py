"""Telling neighbours that a virtual address moved: gratuitous ARP and unsolicited NA.

Executes the balancer's ``Announce`` (and, through ``cancel``, the "stop announcing" half of
``Release``); follows shared/spec/wackamole.md §3.5 (who is told, pacing) and §3.6 (the ARP
cache the members share). Four parts:

* ``AnnouncePlanner``: pure. ``announce(set_id, vips, arp_cache, now)`` plans a set's
  notifications; ``handle_timer(now)`` runs the passes that are due; ``next_deadline()``;
  ``drain_frames()`` hands out ``Frame`` values; ``cancel(set_id)`` forgets a set, including
  frames planned but not drained yet, so a released address is never announced again.
* ``build_frame(frame, mac)``: pure, a ``Frame`` -> Ethernet bytes (scapy builds them).
* ``FrameSender``: writes frames to ``AF_PACKET`` sockets of one network namespace.
* ``Announcer``: the asyncio driver (planner + sender + one ``loop.call_at`` timer), and
  ``announce(...)``, a blocking one-shot driver for tools and tests.
Plus ``read_arp_cache(netns)``, the local neighbour table for ARPCACHE, and
``SharedArpCache``, the cluster-wide cache built from everyone's ARPCACHE messages.

What is sent for an acquired set (each ARP frame twice, padded to 60 bytes, as upstream):

1. Segment-wide, once per address (our addition; ``segment_announce=False`` turns it off):
   IPv4: a gratuitous ARP request (RFC 5227 announcement: sender = target = VIP, target MAC
   zero) and a gratuitous ARP reply (sender = target = VIP, target MAC = own MAC), both to
   ff:ff:ff:ff:ff:ff. IPv6: an unsolicited neighbour advertisement with the Override flag to
   ff02::1, carrying the target link-layer address option.
   Why: upstream's notifications (below) name the *notified* host as ARP target IP, so Linux
   neighbours treat them as ordinary replies and ignore a new MAC within ``locktime`` (1 s by
   default) of the entry's last update; only a true gratuitous ARP (target IP = sender IP)
   overrides at once. They also refresh switches' MAC tables, and IPv6 (our extension) has no
   other way to be announced.
2. Upstream's notifications for IPv4 addresses, per Notify entry in config order:
   address blocks: an ARP reply "VIP is-at MAC" to each host of the block that lies in the
   address's hint network, broadcast (target MAC ff:ff:ff:ff:ff:ff), at most ``throttle``
   hosts per pass; ``arp-cache``: the same to every shared-cache neighbour in the hint network,
   plus the reply unicast to its MAC and, with ``ping``, one ICMP echo from the VIP.
   A pass runs at once and, while blocks have hosts left, every ``pass_interval_s`` (1 s).

Receivers: Linux updates an *existing* neighbour entry from these frames; it creates a new one
only with ``net.ipv4.conf.<if>.arp_accept = 1`` (IPv6: ``accept_untracked_na``). A neighbour
that never talked to the VIP does not need an entry, so this is normally fine; routers that
must learn the VIP ahead of traffic need that sysctl.

Deliberate differences from upstream (spec §6), each the obvious right thing:

* Cancelling works, and the daemon cancels on release (bug 7: upstream could keep announcing a
  released address); a re-announcement restarts the set with fresh progress and a fresh cache
  snapshot instead of appending duplicate addresses (bug 8).
* Block progress is kept per (address, Notify entry), so every address of a multi-address set
  is announced to every block (bug 9); arp-cache neighbours likewise hear of every address.
* Several ``arp-cache`` entries act as one, at the first one's place (``ping`` if any asks);
  upstream's "not yet done" marks made later ones send nothing anyway.
* Blocks skip the VIP itself and the hint network's network and broadcast addresses (prefix up
  to /30); the cache skips the VIP; a zero MAC (incomplete entry) gets no unicast copy or ping.
* An unthrottled block is sent at most ``BLOCK_TARGETS_PER_PASS_MAX`` hosts per pass (upstream
  sent a whole /16 at once); a pass ends as soon as nothing is left (no trailing empty pass).
* The MAC is the one of the interface the frames leave by, read from the bound packet socket.

Namespaces. ``FrameSender`` never changes any thread's namespace: pyroute2's
``netns.create_socket`` forks a child that enters the namespace (``setns``), opens the
``AF_PACKET`` socket there and passes it back over a Unix socket; a packet socket belongs to the
namespace it was created in, so ``bind((ifname, 0))`` resolves the name there. Protocol 0 means
the socket receives nothing. (``pyroute2.netns.pushns`` switches the calling thread after saving
the *main* thread's namespace from ``/proc/self/ns/net`` in a module-level stack, which is
neither thread-safe nor correct off the main thread; scapy's own sockets resolve interfaces
through ``conf.ifaces``, a process-wide table built from the namespace scapy was imported in.
Scapy therefore only builds the bytes.)
"""

from __future__ import annotations

import asyncio
import enum
import errno
import ipaddress
import logging
import socket
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from pyroute2 import netns as pyroute2_netns
from scapy.layers.inet import ICMP, IP
from scapy.layers.inet6 import ICMPv6ND_NA, ICMPv6NDOptDstLLAddr, IPv6
from scapy.layers.l2 import ARP, Ether

from wackapy.config import IPAddress, NotifyArpCache, NotifyBlock, NotifyTarget, VipAddress
from wackapy.netlink import (
    AddressError,
    AddressManager,
    InterfaceNotFound,
    NamespaceNotFound,
    NudState,
)
from wackapy.statemsg import ArpEntry

if TYPE_CHECKING:
    Log = logging.Logger | logging.LoggerAdapter[logging.Logger]

__all__ = [
    "ARP_COPIES",
    "BLOCK_TARGETS_PER_PASS_MAX",
    "PASS_INTERVAL_S",
    "AnnouncePlanner",
    "Announcer",
    "Frame",
    "FrameKind",
    "FrameSender",
    "SharedArpCache",
    "announce",
    "build_frame",
    "read_arp_cache",
]

ARP_COPIES = 2  # upstream sends every notification twice
PASS_INTERVAL_S = 1.0  # upstream: the next pass one second after a pass that sent something
BLOCK_TARGETS_PER_PASS_MAX = 4096  # bound for an unthrottled (throttle 0) block
ETH_FRAME_BYTES_MIN = 60  # upstream pads its ARP frames with zeros to the Ethernet minimum
ICMP_ECHO_ID = 0xFEFE  # upstream's id and sequence number for the optional ping
SHARED_CACHE_ENTRIES_MAX = 65536  # bound on the cluster-wide cache (upstream: none)
BROADCAST_MAC = b"\xff" * 6
ZERO_MAC = b"\x00" * 6
IPV6_ALL_NODES = ipaddress.IPv6Address("ff02::1")
IPV6_ALL_NODES_MAC = "33:33:00:00:00:01"
# Entries worth telling: the neighbour answered recently or is being (re)checked, or is static.
ARP_CACHE_STATES = (
    NudState.REACHABLE | NudState.STALE | NudState.DELAY | NudState.PROBE | NudState.PERMANENT
)

_LOG = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# frames


class FrameKind(enum.Enum):
    GARP_REQUEST = "garp-request"  # who-has VIP tell VIP, broadcast (RFC 5227 announcement)
    GARP_REPLY = "garp-reply"  # VIP is-at MAC, target IP = VIP, broadcast
    ARP_REPLY = "arp-reply"  # upstream's notification: VIP is-at MAC, to one target IP
    PING = "ping"  # upstream's optional ICMP echo from the VIP to an arp-cache target
    UNSOLICITED_NA = "unsolicited-na"  # IPv6: neighbour advertisement, Override, to ff02::1


@dataclass(frozen=True, slots=True, kw_only=True)
class Frame:
    """One frame to send (``copies`` times back to back) out of ``ifname``."""

    set_id: str
    kind: FrameKind
    ifname: str
    vip: IPAddress
    target: ipaddress.IPv4Address | None = None  # ARP_REPLY, PING
    target_mac: bytes | None = None  # None: broadcast (ARP) / all-nodes multicast (NA)
    copies: int = 1

    def __str__(self) -> str:
        to = f" -> {self.target}" if self.target is not None else ""
        via = f" at {_mac_text(self.target_mac)}" if self.target_mac is not None else ""
        return f"{self.kind.value} {self.vip}{to}{via} on {self.ifname} x{self.copies}"


def build_frame(frame: Frame, mac: bytes) -> bytes:
    """The Ethernet bytes of ``frame`` from an interface whose hardware address is ``mac``."""
    src = _mac_text(mac)
    match frame.kind:
        case FrameKind.GARP_REQUEST:
            vip = str(frame.vip)
            packet = Ether(src=src, dst=_mac_text(BROADCAST_MAC)) / ARP(
                op=1, hwsrc=src, psrc=vip, hwdst=_mac_text(ZERO_MAC), pdst=vip
            )
        case FrameKind.GARP_REPLY:
            vip = str(frame.vip)
            packet = Ether(src=src, dst=_mac_text(BROADCAST_MAC)) / ARP(
                op=2, hwsrc=src, psrc=vip, hwdst=src, pdst=vip
            )
        case FrameKind.ARP_REPLY:
            assert frame.target is not None
            dst = _mac_text(frame.target_mac or BROADCAST_MAC)
            packet = Ether(src=src, dst=dst) / ARP(
                op=2, hwsrc=src, psrc=str(frame.vip), hwdst=dst, pdst=str(frame.target)
            )
        case FrameKind.PING:
            assert frame.target is not None and frame.target_mac is not None
            ip = IP(src=str(frame.vip), dst=str(frame.target), id=ICMP_ECHO_ID, ttl=64)
            echo = ICMP(type=8, code=0, id=ICMP_ECHO_ID, seq=ICMP_ECHO_ID)
            packet = Ether(src=src, dst=_mac_text(frame.target_mac)) / ip / echo
        case FrameKind.UNSOLICITED_NA:
            vip = str(frame.vip)
            dst = IPV6_ALL_NODES_MAC if frame.target_mac is None else _mac_text(frame.target_mac)
            packet = (
                Ether(src=src, dst=dst)
                / IPv6(src=vip, dst=str(IPV6_ALL_NODES), hlim=255)
                / ICMPv6ND_NA(R=0, S=0, O=1, tgt=vip)
                / ICMPv6NDOptDstLLAddr(lladdr=src)
            )
    return bytes(packet).ljust(ETH_FRAME_BYTES_MIN, b"\0")


def _mac_text(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


# ---------------------------------------------------------------------------------------------
# the planner (pure)


@dataclass(slots=True)
class _Announcement:
    set_id: str
    vips: tuple[VipAddress, ...]
    cache: tuple[ArpEntry, ...]  # snapshot at acquisition
    next_pass_at: float
    first_pass_done: bool = False
    block_offsets: dict[tuple[int, int], int] = field(default_factory=dict)  # (vip, notify)


class AnnouncePlanner:
    """Paces the notifications of every set being announced; no I/O, time passed in."""

    def __init__(
        self,
        notify: Sequence[NotifyTarget],
        *,
        segment_announce: bool = True,
        pass_interval_s: float = PASS_INTERVAL_S,
        log: Log | None = None,
    ) -> None:
        if pass_interval_s <= 0:
            raise ValueError("pass_interval_s must be > 0")
        self._notify = tuple(notify)
        # Several `arp-cache` entries act as one (at the first's place); `ping` if any asks.
        cache_entries = [i for i, e in enumerate(self._notify) if isinstance(e, NotifyArpCache)]
        self._cache_index = cache_entries[0] if cache_entries else None
        self._cache_ping = any(e.ping for e in self._notify if isinstance(e, NotifyArpCache))
        self._segment = segment_announce
        self._interval = pass_interval_s
        self._log = log if log is not None else _LOG
        self._pending: dict[str, _Announcement] = {}
        self._outbox: list[Frame] = []
        self.counters: Counter[str] = Counter()

    def announce(
        self, set_id: str, vips: Sequence[VipAddress], arp_cache: Iterable[ArpEntry], now: float
    ) -> None:
        """Start announcing a set now (first pass queued at once), replacing any pending one."""
        if not vips:
            raise ValueError(f"set {set_id!r}: nothing to announce")
        self._forget(set_id)
        cache = tuple(sorted(arp_cache, key=lambda e: ipaddress.IPv4Address(e.address)))
        self._pending[set_id] = _Announcement(set_id, tuple(vips), cache, next_pass_at=now)
        self.counters["announcements"] += 1
        self._run_pass(self._pending[set_id], now)

    def cancel(self, set_id: str) -> bool:
        """Stop announcing a set, dropping its undrained frames too. True if anything was left."""
        cancelled = self._forget(set_id)
        if cancelled:
            self.counters["cancelled"] += 1
        return cancelled

    def pending(self) -> tuple[str, ...]:
        """Sets with passes still to run."""
        return tuple(self._pending)

    def next_deadline(self) -> float | None:
        return min((a.next_pass_at for a in self._pending.values()), default=None)

    def handle_timer(self, now: float) -> None:
        """Run every pass that is due; harmless early or late."""
        for announcement in list(self._pending.values()):
            if announcement.next_pass_at <= now:
                self._run_pass(announcement, now)

    def drain_frames(self) -> list[Frame]:
        """Frames planned so far, oldest first; the caller sends them now."""
        frames, self._outbox = self._outbox, []
        return frames

    # -- one pass -------------------------------------------------------------------------------

    def _forget(self, set_id: str) -> bool:
        pending = self._pending.pop(set_id, None) is not None
        kept = [f for f in self._outbox if f.set_id != set_id]
        dropped = len(self._outbox) - len(kept)
        self._outbox = kept
        return pending or dropped > 0

    def _run_pass(self, a: _Announcement, now: float) -> None:
        """Upstream's pass: for each address, each Notify entry in config order."""
        before = len(self._outbox)
        first = not a.first_pass_done
        if first and self._segment:
            self._outbox.extend(self._segment_frames(a))
        more = False
        for vi, vip in enumerate(a.vips):
            if vip.address.version != 4:
                continue
            for ni, entry in enumerate(self._notify):
                if isinstance(entry, NotifyBlock):
                    more |= self._block_pass(a, vi, vip, ni, entry)
                elif first and ni == self._cache_index:  # one arp-cache round, at the first
                    self._outbox.extend(self._cache_frames(a, vip))
        a.first_pass_done = True
        self.counters["passes"] += 1
        self.counters["frames"] += len(self._outbox) - before
        if more:
            a.next_pass_at = now + self._interval
        else:
            del self._pending[a.set_id]

    def _segment_frames(self, a: _Announcement) -> Iterator[Frame]:
        for vip in a.vips:
            kinds = (
                (FrameKind.GARP_REQUEST, FrameKind.GARP_REPLY)
                if vip.address.version == 4
                else (FrameKind.UNSOLICITED_NA,)
            )
            for kind in kinds:
                yield Frame(
                    set_id=a.set_id,
                    kind=kind,
                    ifname=vip.ifname,
                    vip=vip.address,
                    copies=ARP_COPIES,
                )

    def _cache_frames(self, a: _Announcement, vip: VipAddress) -> Iterator[Frame]:
        """Unlimited, in one pass, as upstream: every snapshot neighbour within the hint."""
        hint = vip.hint_network
        for entry in a.cache:
            target = ipaddress.IPv4Address(entry.address)
            if target == vip.address or target not in hint:
                continue
            yield from _notification(a.set_id, vip, target, entry.mac, ping=self._cache_ping)

    def _block_pass(
        self, a: _Announcement, vi: int, vip: VipAddress, ni: int, entry: NotifyBlock
    ) -> bool:
        """Queue this pass's share of a block; True if hosts are left for later passes."""
        if entry.ifname is not None and entry.ifname != vip.ifname:
            return False
        span = block_span(vip, entry.network)
        if span is None:
            return False
        first, count = span
        budget = entry.throttle_pps or BLOCK_TARGETS_PER_PASS_MAX
        budget = min(budget, BLOCK_TARGETS_PER_PASS_MAX)
        offset = a.block_offsets.get((vi, ni), 0)
        sent = 0
        while offset < count and sent < budget:
            target = ipaddress.IPv4Address(first + offset)
            offset += 1
            if _skip_block_target(vip, target):
                continue
            self._outbox.extend(_notification(a.set_id, vip, target, None, ping=False))
            sent += 1
        # Step over targets that are never announced (the VIP itself, the broadcast address):
        # if only those are left, this block is done and needs no empty pass later.
        while offset < count and _skip_block_target(vip, ipaddress.IPv4Address(first + offset)):
            offset += 1
        a.block_offsets[(vi, ni)] = offset
        return offset < count


def block_span(vip: VipAddress, block: ipaddress.IPv4Network) -> tuple[int, int] | None:
    """(first address as int, number of addresses) of ``block`` within the VIP's hint network,
    or None when they do not overlap. Networks either nest or are disjoint."""
    hint = vip.hint_network
    assert isinstance(hint, ipaddress.IPv4Network)
    if block.subnet_of(hint):
        inner = block
    elif hint.subnet_of(block):
        inner = hint
    else:
        return None
    return int(inner.network_address), inner.num_addresses


def _skip_block_target(vip: VipAddress, target: ipaddress.IPv4Address) -> bool:
    if target == vip.address:
        return True
    hint = vip.hint_network
    return hint.prefixlen <= 30 and target in (hint.network_address, hint.broadcast_address)


def _notification(
    set_id: str,
    vip: VipAddress,
    target: ipaddress.IPv4Address,
    mac: bytes | None,
    *,
    ping: bool,
) -> Iterator[Frame]:
    """Upstream's per-target notification: broadcast reply; unicast reply and ping if MAC known."""
    reply = Frame(
        set_id=set_id,
        kind=FrameKind.ARP_REPLY,
        ifname=vip.ifname,
        vip=vip.address,
        target=target,
        copies=ARP_COPIES,
    )
    yield reply
    if mac is None or mac == ZERO_MAC:
        return
    yield replace(reply, target_mac=mac)
    if ping:
        yield replace(reply, kind=FrameKind.PING, target_mac=mac, copies=1)


# ---------------------------------------------------------------------------------------------
# the cluster-wide ARP cache (spec §3.6)


class SharedArpCache:
    """Every ARPCACHE record the members shared, keyed by address; never aged (as upstream).

    A newer MAC replaces the old one, except that a zero MAC (an incomplete entry upstream
    shares) never replaces a known one. At most ``max_entries`` addresses; more are dropped
    and counted.
    """

    def __init__(self, max_entries: int = SHARED_CACHE_ENTRIES_MAX) -> None:
        self._entries: dict[ipaddress.IPv4Address, bytes] = {}
        self._max = max_entries
        self.counters: Counter[str] = Counter()

    def merge(self, entries: Iterable[ArpEntry]) -> None:
        for entry in entries:
            address = ipaddress.IPv4Address(entry.address)
            known = self._entries.get(address)
            if known is None and len(self._entries) >= self._max:
                self.counters["dropped_full"] += 1
                continue
            if known is not None and entry.mac == ZERO_MAC:
                continue
            self._entries[address] = entry.mac

    def snapshot(self) -> tuple[ArpEntry, ...]:
        """The cache in ascending address order (the order notifications go out in)."""
        return tuple(ArpEntry(str(a), self._entries[a]) for a in sorted(self._entries))

    def __len__(self) -> int:
        return len(self._entries)


def read_arp_cache(
    netns: str | None = None, *, manager: AddressManager | None = None
) -> tuple[ArpEntry, ...]:
    """The local IPv4 neighbour table, for ARPCACHE: entries in a REACHABLE, STALE, DELAY, PROBE
    or PERMANENT state with an Ethernet address, one per address, ascending.

    Upstream read every line of /proc/net/arp, incomplete entries included (bug 6). Blocking
    (one netlink dump): from asyncio, use ``asyncio.to_thread``. Pass ``manager`` to reuse its
    netlink socket (its namespace is used, ``netns`` ignored).
    """
    if manager is not None:
        neighbours = manager.neighbours(socket.AF_INET)
    else:
        with AddressManager(netns) as temporary:
            neighbours = temporary.neighbours(socket.AF_INET)
    best: dict[ipaddress.IPv4Address, bytes] = {}
    for n in sorted(neighbours, key=lambda n: (int(n.address), n.ifname)):
        if not n.state & ARP_CACHE_STATES or len(n.mac) != 6 or n.mac == ZERO_MAC:
            continue
        assert isinstance(n.address, ipaddress.IPv4Address)
        best.setdefault(n.address, n.mac)
    return tuple(ArpEntry(str(a), mac) for a, mac in best.items())


# ---------------------------------------------------------------------------------------------
# the sender (I/O)


class FrameSender:
    """Sends ``Frame`` values from the interfaces of one network namespace (None: our own).

    One non-blocking ``AF_PACKET`` socket per interface, opened on first use inside the
    namespace. A frame that cannot be sent (interface gone, queue full) is logged and counted;
    ``send`` never raises for it. ``mac(ifname)`` raises ``InterfaceNotFound``.
    """

    def __init__(self, netns: str | None = None, *, log: Log | None = None) -> None:
        self.netns = netns
        self._log = log if log is not None else _LOG
        self._sockets: dict[str, tuple[socket.socket, bytes]] = {}
        self.counters: Counter[str] = Counter()

    def __enter__(self) -> FrameSender:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        for sock, _ in self._sockets.values():
            sock.close()
        self._sockets.clear()

    def mac(self, ifname: str) -> bytes:
        """Hardware address of the interface, as its bound packet socket reports it."""
        return self._socket(ifname)[1]

    def send(self, frames: Iterable[Frame]) -> int:
        """Send every frame; return the number of frames written (each copy counts)."""
        written = 0
        for frame in frames:
            try:
                written += self._send_one(frame)
            except AddressError as exc:
                self.counters["frames_failed"] += frame.copies
                self._log.warning("not sent: %s: %s", frame, exc)
        self.counters["frames_sent"] += written
        return written

    def _send_one(self, frame: Frame) -> int:
        sock, mac = self._socket(frame.ifname)
        data = build_frame(frame, mac)
        written = 0
        for _ in range(frame.copies):
            try:
                sock.send(data)
            except (BlockingIOError, InterruptedError):
                self.counters["frames_dropped_busy"] += 1
            except OSError as exc:
                if exc.errno in (errno.ENXIO, errno.ENODEV, errno.ENETDOWN):
                    self._forget(frame.ifname)  # the interface went away or down: reopen next
                    raise AddressError(f"{frame.ifname}: {exc.strerror}") from None
                if exc.errno == errno.ENOBUFS:
                    self.counters["frames_dropped_busy"] += 1
                    continue
                raise AddressError(f"{frame.ifname}: {exc}") from None
            else:
                written += 1
        if self._log.isEnabledFor(logging.DEBUG):
            self._log.debug("sent %s", frame)
        return written

    def _forget(self, ifname: str) -> None:
        entry = self._sockets.pop(ifname, None)
        if entry is not None:
            entry[0].close()

    def _socket(self, ifname: str) -> tuple[socket.socket, bytes]:
        entry = self._sockets.get(ifname)
        if entry is None:
            entry = self._sockets[ifname] = self._open(ifname)
        return entry

    def _open(self, ifname: str) -> tuple[socket.socket, bytes]:
        try:
            if self.netns is None:
                sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
            else:
                # flags=0: never create the namespace
                sock = pyroute2_netns.create_socket(
                    self.netns, socket.AF_PACKET, socket.SOCK_RAW, 0, flags=0
                )
        except FileNotFoundError:
            raise NamespaceNotFound(self.netns or "") from None
        except PermissionError as exc:
            raise AddressError(f"raw packet socket: {exc} (needs CAP_NET_RAW)") from None
        try:
            sock.bind((ifname, 0))
        except OSError as exc:
            sock.close()
            if exc.errno in (errno.ENODEV, errno.ENXIO):
                raise InterfaceNotFound(ifname, self.netns) from None
            raise AddressError(f"bind to {ifname}: {exc}") from None
        sock.setblocking(False)
        mac = bytes(sock.getsockname()[4])
        if len(mac) != 6:
            sock.close()
            raise AddressError(f"{ifname} has no Ethernet address: nothing to announce with")
        return sock, mac


# ---------------------------------------------------------------------------------------------
# drivers


class Announcer:
    """The daemon's executor for Announce/Release: planner + sender on an asyncio loop.

    Frames go out from the loop thread (packet sockets are non-blocking, so a full queue drops
    and counts rather than blocks). One timer handle, re-armed only when the deadline moves.
    """

    def __init__(
        self,
        planner: AnnouncePlanner,
        sender: FrameSender,
        loop: asyncio.AbstractEventLoop,
        *,
        log: Log | None = None,
    ) -> None:
        self.planner = planner
        self.sender = sender
        self._loop = loop
        self._log = log if log is not None else _LOG
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None

    def announce(
        self, set_id: str, vips: Sequence[VipAddress], arp_cache: Iterable[ArpEntry]
    ) -> None:
        self.planner.announce(set_id, vips, arp_cache, self._loop.time())
        self._flush()

    def cancel(self, set_id: str) -> None:
        self.planner.cancel(set_id)
        self._rearm()

    def close(self) -> None:
        """Cancel everything pending and close the sockets."""
        for set_id in self.planner.pending():
            self.planner.cancel(set_id)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = self._timer_at = None
        self.sender.close()

    def _on_timer(self) -> None:
        due = self._timer_at
        self._timer = self._timer_at = None
        now = self._loop.time()
        self.planner.handle_timer(now if due is None else max(due, now))
        self._flush()

    def _flush(self) -> None:
        frames = self.planner.drain_frames()
        if frames:
            self.sender.send(frames)
        self._rearm()

    def _rearm(self) -> None:
        deadline = self.planner.next_deadline()
        if deadline == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = None if deadline is None else self._loop.call_at(deadline, self._on_timer)


def announce(
    vips: Sequence[VipAddress],
    notify: Sequence[NotifyTarget] = (),
    *,
    arp_cache: Iterable[ArpEntry] = (),
    netns: str | None = None,
    segment_announce: bool = True,
    pass_interval_s: float = PASS_INTERVAL_S,
    log: Log | None = None,
) -> int:
    """Announce one set now and block until every pass has run; return the frames written.

    For tools and tests; the daemon uses ``Announcer``. Throttled blocks take
    ceil(hosts / throttle) - 1 more seconds (one pass per ``pass_interval_s``).
    """
    planner = AnnouncePlanner(
        notify, segment_announce=segment_announce, pass_interval_s=pass_interval_s, log=log
    )
    set_id = str(vips[0].address) if vips else ""
    written = 0
    with FrameSender(netns, log=log) as sender:
        planner.announce(set_id, vips, arp_cache, time.monotonic())
        while True:
            written += sender.send(planner.drain_frames())
            deadline = planner.next_deadline()
            if deadline is None:
                return written
            time.sleep(max(0.0, deadline - time.monotonic()))
            planner.handle_timer(time.monotonic())

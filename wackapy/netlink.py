"""Virtual addresses on Linux interfaces over rtnetlink (pyroute2), in any network namespace.

Executes the balancer's ``Acquire``/``Release`` for one address at a time; shared/spec/
wackamole.md §3.1-§3.4 describes what upstream did with old ioctls. ``AddressManager`` adds
the address with the configured (true) prefix length, a broadcast address for IPv4 prefixes up
to /30, and the alias label ``<ifname>:<n>`` (lowest free n >= 1, as upstream) when it fits the
kernel's 15-byte label; if no label fits the address gets none (the kernel then shows the
interface name). IPv6 has no labels; IPv6 addresses are added with ``IFA_F_NODAD``: a VIP moving
between hosts must be usable at once, and duplicate address detection during a hand-over would
otherwise leave it "dadfailed" for good (keepalived does the same).

Ownership. The manager remembers what it added (``owned()``) and also marks every address it
adds with ``IFA_PROTO = WACKAPY_IFA_PROTO`` (kernels >= 6.3 keep the mark; older ones ignore
the attribute). ``release`` removes an address only if it is ours (remembered or marked), or
with ``force=True``; it never touches any other address of the interface. Deliberate
differences from upstream:

* An address already on the named interface counts as acquired (upstream: "IP alias exists")
  but, unless it carries our mark (a leftover of a previous run, which is adopted), it is not
  ours: releasing it later leaves it in place (upstream removed whatever matched). The start-up
  clean-up of configured VIPs (balancer ``Release`` with reason STARTUP) should pass
  ``force=True``, which is upstream's behaviour and also catches leftovers on kernels without
  IFA_PROTO.
* Presence is checked on the named interface only (upstream looked at every interface).
* An interface that is down still gets the address (it works once the link comes up; upstream
  left a half-configured alias and reported failure); a warning is logged.
* Upstream's Linux "re-up" (§3.3) re-added every owned address after each release round and
  re-announced all of them. ``reup()`` re-adds only owned addresses that are really missing (a
  kernel with ``promote_secondaries=0`` deletes the secondaries of a removed primary) and
  returns them, so the caller re-announces just those.

Threads. pyroute2's synchronous ``IPRoute`` drives a private asyncio loop, so it cannot be used
from a thread that runs a loop, and its socket belongs to the thread that created it. The
manager therefore owns one worker thread holding one ``IPRoute``; every public method hands its
work to that thread and waits (each call is one or two kernel round trips). From asyncio, call
through ``await asyncio.to_thread(manager.acquire, vip)``. In a namespace, pyroute2 opens the
netlink socket in a short-lived forked child that enters the namespace (``setns``) and passes
the socket back; no thread of ours ever changes namespace. The namespace must exist (it is
never created).
"""

from __future__ import annotations

import concurrent.futures
import enum
import errno
import ipaddress
import logging
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from spreadpy.errors import SpreadError
from wackapy.config import IPAddress, VipAddress

if TYPE_CHECKING:
    Log = logging.Logger | logging.LoggerAdapter[logging.Logger]

__all__ = [
    "LABEL_BYTES_MAX",
    "WACKAPY_IFA_PROTO",
    "AddressError",
    "AddressInfo",
    "AddressManager",
    "AddressPermissionError",
    "InterfaceNotFound",
    "NamespaceNotFound",
    "Neighbour",
    "NudState",
]

LABEL_BYTES_MAX = 15  # IFNAMSIZ - 1: the kernel truncates longer IFA_LABELs
WACKAPY_IFA_PROTO = 0x57  # our IFA_PROTO mark; the kernel uses 0..3 (IFAPROT_*)
IFA_F_NODAD = 0x02
IFA_F_SECONDARY = 0x01
IFF_UP = 0x1
NETLINK_TIMEOUT_S = 10.0  # bound on waiting for the worker thread

T = TypeVar("T")

_LOG = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# errors (proposed for spreadpy/errors.py; kept here until the lead moves them)


class AddressError(SpreadError):
    """A virtual address could not be added, removed or checked."""


class NamespaceNotFound(AddressError):
    def __init__(self, netns: str) -> None:
        self.netns = netns
        super().__init__(f"network namespace {netns!r} does not exist")


class InterfaceNotFound(AddressError):
    def __init__(self, ifname: str, netns: str | None) -> None:
        self.ifname = ifname
        self.netns = netns
        where = f" in network namespace {netns!r}" if netns else ""
        super().__init__(f"interface {ifname!r} not found{where}")


class AddressPermissionError(AddressError):
    """Changing addresses needs CAP_NET_ADMIN (root) in the namespace."""


# ---------------------------------------------------------------------------------------------
# values


@dataclass(frozen=True, slots=True)
class AddressInfo:
    """One address as the kernel reports it."""

    ifname: str
    ifindex: int
    interface: ipaddress.IPv4Interface | ipaddress.IPv6Interface
    label: str | None  # IPv4 only
    proto: int  # IFA_PROTO; 0 when unset or unsupported
    secondary: bool

    @property
    def address(self) -> IPAddress:
        return self.interface.ip


class NudState(enum.IntFlag):
    """Neighbour (NUD_*) states of linux/neighbour.h."""

    INCOMPLETE = 0x01
    REACHABLE = 0x02
    STALE = 0x04
    DELAY = 0x08
    PROBE = 0x10
    FAILED = 0x20
    NOARP = 0x40
    PERMANENT = 0x80


@dataclass(frozen=True, slots=True)
class Neighbour:
    """One neighbour-table entry with a link-layer address."""

    ifname: str
    address: IPAddress
    mac: bytes
    state: NudState


@dataclass(slots=True)
class _Owned:
    vip: VipAddress
    label: str | None


# ---------------------------------------------------------------------------------------------


class AddressManager:
    """Adds, removes and checks virtual addresses in one network namespace (None: our own)."""

    def __init__(self, netns: str | None = None, *, log: Log | None = None) -> None:
        self.netns = netns
        self._log = log if log is not None else _LOG
        self._owned: dict[tuple[str, IPAddress], _Owned] = {}  # insertion order = acquisition
        self._lock = threading.Lock()
        self._closed = False
        self._ipr: Any = None  # pyroute2.IPRoute, untyped; touched only by the worker thread
        self._worker = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="wackapy-netlink"
        )
        try:
            self._call(self._open)
        except BaseException:
            self._worker.shutdown(wait=True)
            self._closed = True
            raise

    # -- lifecycle --------------------------------------------------------------------------

    def __enter__(self) -> AddressManager:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the netlink socket and stop the worker. Addresses stay as they are."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            self._worker.submit(self._close_socket).result(NETLINK_TIMEOUT_S)
        finally:
            self._worker.shutdown(wait=True)

    # -- queries ----------------------------------------------------------------------------

    def ifindex(self, ifname: str) -> int:
        return self._call(lambda: self._link(ifname)[0])

    def mac(self, ifname: str) -> bytes:
        """The interface's hardware address (6 bytes for Ethernet)."""
        return self._call(lambda: self._link(ifname)[1])

    def addresses(self, ifname: str) -> tuple[AddressInfo, ...]:
        """Every address of the interface, as the kernel lists them."""
        return self._call(lambda: tuple(self._dump(ifname, self._link(ifname)[0])))

    def present(self, vip: VipAddress) -> bool:
        """Whether the address is on its interface now (any prefix length)."""
        return self._call(lambda: self._find(vip) is not None)

    def owned(self) -> tuple[VipAddress, ...]:
        """What this manager added (or adopted) and has not released, in acquisition order."""
        with self._lock:
            return tuple(o.vip for o in self._owned.values())

    def label_of(self, vip: VipAddress) -> str | None:
        """The label this manager gave an owned address (None: not owned, IPv6 or no label)."""
        with self._lock:
            owned = self._owned.get(_key(vip))
        return owned.label if owned is not None else None

    def neighbours(self, family: int = socket.AF_INET) -> tuple[Neighbour, ...]:
        """Neighbour-table entries that carry a link-layer address, every interface."""
        return self._call(lambda: tuple(self._neighbours(family)))

    # -- changes ----------------------------------------------------------------------------

    def acquire(self, vip: VipAddress) -> bool:
        """Put the address on its interface. True: added now; False: it was already there."""
        return self._call(lambda: self._acquire(vip))

    def release(self, vip: VipAddress, *, force: bool = False) -> bool:
        """Remove the address if it is ours (or whatever its origin, with ``force``).

        True: removed now. False: absent, or present but not ours (left in place).
        A missing interface means the address is gone too: False, never an error.
        """
        return self._call(lambda: self._release(vip, force=force))

    def release_all(self) -> tuple[VipAddress, ...]:
        """Release every owned address; return those actually removed."""
        return tuple(vip for vip in self.owned() if self.release(vip))

    def reup(self) -> tuple[VipAddress, ...]:
        """Re-add owned addresses that vanished (upstream's Linux re-up, §3.3); return them."""
        return self._call(self._reup)

    # -- the worker thread ------------------------------------------------------------------

    def _call(self, fn: Callable[[], T]) -> T:
        if self._closed:
            raise AddressError("the address manager is closed")
        try:
            return self._worker.submit(fn).result(NETLINK_TIMEOUT_S)
        except concurrent.futures.TimeoutError:
            raise AddressError(f"netlink gave no answer within {NETLINK_TIMEOUT_S}s") from None

    def _open(self) -> None:
        try:
            if self.netns is None:
                self._ipr = IPRoute()
            else:
                # flags=0: never create the namespace (pyroute2's default would)
                self._ipr = IPRoute(netns=self.netns, flags=0)
        except FileNotFoundError:
            raise NamespaceNotFound(self.netns or "") from None
        except PermissionError as exc:
            raise AddressPermissionError(f"cannot open netlink in {self._where()}: {exc}") from None

    def _close_socket(self) -> None:
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None

    def _where(self) -> str:
        return f"network namespace {self.netns!r}" if self.netns else "this network namespace"

    def _netlink(
        self, what: str, fn: Callable[[], T], ifname: str, *, tolerate: tuple[int, ...] = ()
    ) -> T | None:
        """Run one request, mapping kernel errors to ours; errnos in `tolerate` give None."""
        try:
            return fn()
        except NetlinkError as exc:
            if exc.code in tolerate:
                return None
            if exc.code == errno.ENODEV:
                raise InterfaceNotFound(ifname, self.netns) from None
            if exc.code in (errno.EPERM, errno.EACCES):
                raise AddressPermissionError(
                    f"{what} on {ifname} in {self._where()}: permission denied (needs "
                    "CAP_NET_ADMIN)"
                ) from None
            raise AddressError(f"{what} on {ifname} in {self._where()}: {exc.args[1]}") from None

    def _link(self, ifname: str) -> tuple[int, bytes, bool]:
        """(ifindex, MAC, administratively up) of an interface."""
        msgs = self._netlink("link lookup", lambda: self._ipr.link("get", ifname=ifname), ifname)
        assert msgs, "a link lookup answers with one message or an error"
        msg = msgs[0]
        mac_text = msg.get("IFLA_ADDRESS") or ""
        mac = bytes.fromhex(mac_text.replace(":", ""))
        return int(msg["index"]), mac, bool(msg["flags"] & IFF_UP)

    def _dump(self, ifname: str, ifindex: int) -> Iterator[AddressInfo]:
        msgs = self._netlink("address dump", lambda: self._ipr.addr("dump", index=ifindex), ifname)
        for msg in msgs or ():
            if msg["index"] != ifindex:
                continue
            text = msg.get("IFA_LOCAL") or msg.get("IFA_ADDRESS")
            if text is None:
                continue
            interface = ipaddress.ip_interface(f"{text}/{msg['prefixlen']}")
            yield AddressInfo(
                ifname=ifname,
                ifindex=ifindex,
                interface=interface,
                label=msg.get("IFA_LABEL") if interface.version == 4 else None,
                proto=int(msg.get("IFA_PROTO") or 0),
                secondary=bool(msg["flags"] & IFA_F_SECONDARY),
            )

    def _find(self, vip: VipAddress) -> AddressInfo | None:
        ifindex = self._link(vip.ifname)[0]
        return next((a for a in self._dump(vip.ifname, ifindex) if a.address == vip.address), None)

    def _acquire(self, vip: VipAddress) -> bool:
        ifindex, _, up = self._link(vip.ifname)
        existing = list(self._dump(vip.ifname, ifindex))
        found = next((a for a in existing if a.address == vip.address), None)
        if found is not None:
            self._note_existing(vip, found)
            return False
        label = _free_label(vip, existing)
        self._add(vip, ifindex, label)
        with self._lock:
            self._owned[_key(vip)] = _Owned(vip, label)
        if not up:
            self._log.warning(
                "%s is down: %s added but unusable until it comes up", vip.ifname, vip
            )
        self._log.info("UP: %s:%s", label or vip.ifname, vip.interface)
        return True

    def _note_existing(self, vip: VipAddress, found: AddressInfo) -> None:
        if _key(vip) in self._owned:
            return
        if found.proto == WACKAPY_IFA_PROTO:
            with self._lock:
                self._owned[_key(vip)] = _Owned(vip, found.label)
            self._log.info("adopted %s (left by an earlier wackapy)", found.interface)
            return
        if found.interface.network.prefixlen != vip.interface.network.prefixlen:
            self._log.warning(
                "%s is already on %s as %s (not ours; kept on release)",
                vip.address,
                vip.ifname,
                found.interface,
            )
        else:
            self._log.warning("%s already on %s (not ours; kept on release)", vip, vip.ifname)

    def _add(self, vip: VipAddress, ifindex: int, label: str | None) -> None:
        request: dict[str, Any] = {  # pyroute2 keyword arguments
            "index": ifindex,
            "address": str(vip.address),
            "prefixlen": vip.interface.network.prefixlen,
            "proto": WACKAPY_IFA_PROTO,
        }
        network = vip.interface.network
        if vip.address.version == 4:
            if label is not None:
                request["label"] = label
            if network.prefixlen <= 30:
                request["broadcast"] = str(network.broadcast_address)
        else:
            request["flags"] = IFA_F_NODAD
        # EEXIST: someone added it between our dump and our add; it is there all the same.
        self._netlink(
            "address add",
            lambda: self._ipr.addr("add", **request),
            vip.ifname,
            tolerate=(errno.EEXIST,),
        )

    def _release(self, vip: VipAddress, *, force: bool) -> bool:
        key = _key(vip)
        with self._lock:
            remembered = key in self._owned
        try:
            found = self._find(vip)
        except InterfaceNotFound:
            found = None
        if found is None:
            with self._lock:
                self._owned.pop(key, None)
            if remembered:
                self._log.warning("DOWN: %s was already gone from %s", vip, vip.ifname)
            return False
        if not (remembered or force or found.proto == WACKAPY_IFA_PROTO):
            self._log.info("not removing %s from %s: not added by wackapy", vip, vip.ifname)
            return False
        answer = self._netlink(
            "address delete",
            lambda: self._ipr.addr(
                "del",
                index=found.ifindex,
                address=str(found.address),
                prefixlen=found.interface.network.prefixlen,
            ),
            vip.ifname,
            tolerate=(errno.EADDRNOTAVAIL,),  # gone between our dump and our delete
        )
        removed = answer is not None
        with self._lock:
            self._owned.pop(key, None)
        if removed:
            self._log.info("DOWN: %s:%s", found.label or vip.ifname, found.interface)
        return removed

    def _reup(self) -> tuple[VipAddress, ...]:
        with self._lock:
            owned = list(self._owned.values())
        readded = []
        for entry in owned:
            vip = entry.vip
            try:
                ifindex, _, _ = self._link(vip.ifname)
            except InterfaceNotFound:
                self._log.warning("re-up: %s is gone, so is %s", vip.ifname, vip)
                continue
            existing = list(self._dump(vip.ifname, ifindex))
            if any(a.address == vip.address for a in existing):
                continue
            label = entry.label
            if label is None or any(a.label == label for a in existing):
                label = _free_label(vip, existing)
            self._add(vip, ifindex, label)
            entry.label = label
            self._log.warning("re-up: %s had vanished from %s, added again", vip, vip.ifname)
            readded.append(vip)
        return tuple(readded)

    def _neighbours(self, family: int) -> Iterator[Neighbour]:
        names: dict[int, str] = {}
        for link in self._ipr.get_links():
            names[int(link["index"])] = link.get("IFLA_IFNAME") or str(link["index"])
        for msg in self._ipr.get_neighbours(family=family):
            dst, lladdr = msg.get("NDA_DST"), msg.get("NDA_LLADDR")
            if dst is None or lladdr is None:
                continue
            yield Neighbour(
                ifname=names.get(int(msg["ifindex"]), str(msg["ifindex"])),
                address=ipaddress.ip_address(dst),
                mac=bytes.fromhex(lladdr.replace(":", "")),
                state=NudState(msg["state"]),
            )


def _key(vip: VipAddress) -> tuple[str, IPAddress]:
    return (vip.ifname, vip.address)


def _free_label(vip: VipAddress, existing: Sequence[AddressInfo]) -> str | None:
    """Lowest free `<ifname>:<n>`, n >= 1 (`:0` is never used, as upstream); None: IPv6, or no
    label fits in LABEL_BYTES_MAX. At most len(existing)+1 candidates are ever tried."""
    if vip.address.version != 4:
        return None
    used = {a.label for a in existing}
    for n in range(1, len(existing) + 2):
        label = f"{vip.ifname}:{n}"
        if len(label.encode()) > LABEL_BYTES_MAX:
            return None
        if label not in used:
            return label
    raise AssertionError("unreachable: more candidates than existing labels")

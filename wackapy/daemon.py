"""The wackapy daemon: an asyncio (uvloop) adapter around the pure ``balance.Balancer``.

The only place in wackapy with a clock, a Spread session, signals and the control socket. It
feeds the balancer Spread events and ``loop.time()``, executes what it drains, and keeps one
timer armed at ``Balancer.next_deadline()`` (STYLE.md: the aioquic transmit / handle_timer
pattern). What it wires together:

  spreadpy.aioclient  one session to the configured Spread daemon (``Spread = 4803``,
                      ``4803@host`` or a socket path), group membership on; regular and
                      transitional views of our group become ``balance.View`` values
                      (``view_from_message``), group messages go to ``Balancer.message``
  netlink.AddressManager  Acquire / Release, in order, off the loop (``asyncio.to_thread``)
  arp.Announcer       Announce to the Notify targets and the shared ARP cache, paced as
                      upstream; every Release cancels what is still pending for the set
  arp.read_arp_cache  SampleArpCache, and every ``Arp-Cache`` interval (upstream sampled once
                      more after start-up only: spec §6 bug 6)
  hooks.HookRunner / HealthChecker   RunCommand hooks; the HealthCheck gate
  control.ControlServer   ``Control`` socket for wackatrl (spec §4); Prometheus metrics on
                      127.0.0.1:``MetricsPort``

Address work runs in one queue, in the order the balancer asked for it: an ``Announce`` is
sent only after its ``Acquire`` has put the addresses on the interface, and only while the
balancer still holds the set, so a released address is never announced. ``on up``/``on down``
hooks run per set as its addresses come and go; ``post up`` after a batch with BALANCE
acquisitions, ``post down`` after a batch that released sets for any reason other than
start-up, Spread loss or shutdown (spec §2.10). After every release round the owned
addresses are checked and re-added if the kernel dropped them (upstream's Linux re-up, §3.3,
re-announcing only what was really missing).

Life cycle: at start every configured address left on an interface is removed (the balancer's
STARTUP releases, forced: spec §2.4), then the daemon connects. A lost session releases
everything and reconnects at once, then every SpreadRetryInterval (the balancer's logic).
SIGTERM and SIGINT release everything, leave Spread and exit 0. The daemon acts in the network
namespace it was started in (``ip netns exec NAME wackapy ...`` for another one).

Deliberate differences from upstream wackamole (spec §4.4, §5), besides the balancer's own:

* No fork, no PID file: run it under systemd (conf/wackapy.service) or in the foreground.
  ``-d`` logs to stdout with upstream's timestamp; otherwise to syslog with ``LogFacility``
  (upstream ignored it) or, without /dev/log, to stderr.
* SIGHUP is logged and ignored (upstream: killed without releasing its addresses; there is no
  reload either way). SIGPIPE cannot kill the daemon.
* ``wackatrl -s`` on a member that is not simulating a failure does nothing (upstream dropped
  all of its addresses and rejoined: bug 19). ``wackatrl -f`` answers once the addresses are
  released, as upstream.
* A membership of a group we did not join is ignored and counted; a SelfLeave or a
  RejectMessage is treated as a lost session (release, reconnect) rather than a fatal exit
  without releasing (bug 17). An internal error also releases every address before the
  daemon exits (status 70). A session that ends within SpreadRetryInterval of its start is
  followed by a wait of SpreadRetryInterval, not an immediate reconnect, so a daemon that
  keeps refusing us cannot make a busy loop.
* The member's label (wackatrl's ``Owner:``) is the first IPv4 address of the first set's
  interface that is not a virtual address, not the address of the host name (bug 15); the
  member's identity in the protocol is its Spread private name.
* The default private name is ``wack<pid>`` when that fits Spread's 10 characters, else
  ``w<pid>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import logging.handlers
import os
import signal
import socket
import sys
from collections import Counter
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

from spreadpy import aioclient
from spreadpy.client import (
    MembershipMessage,
    Message,
    RegularMessage,
    RejectMessage,
    SelfLeave,
    SpreadClientError,
    TransitionalMessage,
)
from spreadpy.wire import MAX_PRIVATE_NAME
from wackapy.arp import AnnouncePlanner, Announcer, FrameSender, SharedArpCache, read_arp_cache
from wackapy.balance import (
    Acquire,
    Action,
    Announce,
    ArpCacheLearned,
    Balancer,
    BalancerSettings,
    Cause,
    ConnectSpread,
    JoinGroup,
    Multicast,
    Reason,
    Release,
    SampleArpCache,
    State,
    View,
    ViewKind,
    VipSet,
)
from wackapy.config import HookEvent, Vif, VipAddress, WackamoleConfig
from wackapy.control import ControlServer, Opcode, encode_state, frame
from wackapy.hooks import HealthChecker, HookRunner
from wackapy.netlink import AddressError, AddressManager

log = logging.getLogger("wackapy")

__all__ = [
    "EXIT_INTERNAL_ERROR",
    "Daemon",
    "balancer_settings",
    "default_private_name",
    "main",
    "run",
    "state_document",
    "view_from_message",
]

CONNECT_TIMEOUT_S = 5.0  # one connect attempt (SP_connect_timeout)
SHUTDOWN_RELEASE_S = 15.0  # bound on releasing every address at shutdown or for wackatrl -f
SHUTDOWN_HOOKS_S = 10.0  # bound on waiting for queued hooks (on down) at shutdown
METRICS_SNAPSHOT_S = 5.0  # bound on the metrics thread waiting for the loop
EXIT_INTERNAL_ERROR = 70  # EX_SOFTWARE
DOCUMENT_VERSION = 1
DEBUG_TIME_FORMAT = "[%a %d %b %Y %H:%M:%S]"  # upstream's -d timestamp
SYSLOG_SOCKET = "/dev/log"

_SESSION_STATES = frozenset({State.BOOT, State.GATHER, State.RUN})
_QUIET_RELEASES = frozenset({Reason.STARTUP, Reason.DISCONNECTED, Reason.SHUTDOWN})


# ---------------------------------------------------------------------------------------------
# pure helpers


def balancer_settings(config: WackamoleConfig, *, label: str = "") -> BalancerSettings:
    """The balancer's view of wackamole.conf: sets named by their head address, config order."""
    return BalancerSettings(
        group=config.group,
        vip_sets=tuple(
            VipSet(vif.set_id, tuple(str(a.address) for a in vif.addresses)) for vif in config.vifs
        ),
        prefer=tuple(vif.set_id for vif in config.vifs if config.prefers(vif)),
        mature_s=config.mature_s,
        balance_interval_s=config.balance.interval_s,
        acquisitions_per_round=config.balance.acquisitions_per_round,
        spread_retry_s=config.spread_retry_interval_s,
        label=label,
    )


def default_private_name(pid: int) -> str:
    """Upstream's ``wack<pid>``, or ``w<pid>`` when that would exceed Spread's 10 characters."""
    name = f"wack{pid}"
    return name if len(name) <= MAX_PRIVATE_NAME else f"w{pid}"


def view_from_message(
    msg: Message, group: str, *, me: str, last_members: tuple[str, ...] | None
) -> View | None:
    """A membership message as the balancer's ``View``, or None when it is not for it.

    Only our group's regular and transitional views pass. The view id is Spread's group id.
    A transitional message names no members: it gets those of the last regular view (or just
    ``me`` before the first one), which is what the group shrinks from. A regular view that
    does not list us (not something Spread sends to a member) is refused too.
    """
    match msg:
        case MembershipMessage() if msg.group == group:
            if me not in msg.members:
                return None
            gid = msg.group_id
            return View(
                group=group,
                kind=ViewKind.REGULAR,
                view_id=(gid.proc_id, gid.time, gid.index),
                members=msg.members,
                cause=Cause(int(msg.cause)),
                vs_sets=msg.vs_sets,
            )
        case TransitionalMessage() if msg.group == group:
            gid = msg.group_id
            members = last_members if last_members and me in last_members else (me,)
            return View(
                group=group,
                kind=ViewKind.TRANSITIONAL,
                view_id=(gid.proc_id, gid.time, gid.index),
                members=members,
            )
    return None


def state_document(
    balancer: Balancer,
    vifs: Mapping[str, Vif],
    *,
    label: str,
    spread: str,
    simulated_failure: bool,
    counters: Mapping[str, Mapping[str, int]],
    arp_cache_entries: int = 0,
) -> dict[str, Any]:
    """What GET_STATE_JSON returns and ``wackatrl --json`` prints (``Any``: JSON values).

    ``sets``: one entry per set in config order: ``set_id`` (head address), ``owner`` (the
    holder's Spread private name or null), ``owner_label`` (its address, for display),
    ``priority`` and ``priority_name`` (the original's claim priority), ``held_here``, and
    ``addresses`` (``ifname``, ``address``, ``prefixlen``, ``hint_prefixlen``). ``member``:
    this daemon; ``view``: the last regular view (null outside a session); ``counters``.
    """
    view = balancer.view
    held = set(balancer.held)
    sets = []
    for row in balancer.ownership():
        vif = vifs[row.set_id]
        sets.append(
            {
                "set_id": row.set_id,
                "owner": row.owner,
                "owner_label": row.owner_label or None,
                "priority": int(row.priority),
                "priority_name": row.priority.name,
                "held_here": row.set_id in held,
                "addresses": [_address_entry(a) for a in vif.addresses],
            }
        )
    return {
        "version": DOCUMENT_VERSION,
        "member": {
            "private_name": balancer.private_name,
            "label": label,
            "state": balancer.state.value,
            "mature": balancer.mature,
            "healthy": balancer.healthy,
            "spread": spread,
            "simulated_failure": simulated_failure,
            "held": list(balancer.held),
            "arp_cache_entries": arp_cache_entries,
        },
        "view": None
        if view is None
        else {
            "id": list(view.view_id),
            "members": list(view.members),
            "leader": view.members[0],
            "cause": view.cause.name if view.cause is not None else None,
        },
        "sets": sets,
        "counters": {k: dict(sorted(v.items())) for k, v in counters.items()},
    }


def _address_entry(vip: VipAddress) -> dict[str, Any]:
    return {
        "ifname": vip.ifname,
        "address": str(vip.address),
        "prefixlen": vip.interface.network.prefixlen,
        "hint_prefixlen": vip.hint_prefixlen,
    }


# ---------------------------------------------------------------------------------------------
# the daemon


@dataclass(frozen=True, slots=True)
class _Op:
    """One step of address work, executed in order by the address worker."""

    kind: str  # "acquire", "release", "announce", "end"
    set_id: str = ""
    reason: Reason | None = None
    post_up: bool = False
    post_down: bool = False


class Daemon:
    """One wackapy member. ``await start()``, then ``await serve()`` until stopped."""

    def __init__(
        self,
        config: WackamoleConfig,
        *,
        private_name: str,
        label: str | None = None,
    ) -> None:
        self.config = config
        self.private_name = private_name
        self.label = label or ""
        self._label_given = label is not None
        self.loop = asyncio.get_running_loop()
        self._vifs = {vif.set_id: vif for vif in config.vifs}
        self.balancer: Balancer | None = None
        self._addresses: AddressManager | None = None
        self._announcer: Announcer | None = None
        self._shared_arp = SharedArpCache()
        self._hooks = HookRunner(config.command_hooks)
        self._health: HealthChecker | None = None
        self._control: ControlServer | None = None
        self._metrics: Any = None  # prometheus_client's WSGIServer (untyped)
        self.counters: Counter[str] = Counter()
        # the Spread session
        self._generation = 0  # bumped whenever a session ends: late events of it are ignored
        self._mailbox: aioclient.AsyncMailbox | None = None
        self._outbox: asyncio.Queue[JoinGroup | Multicast] | None = None
        self._session_tasks: list[asyncio.Task[None]] = []
        self._last_members: tuple[str, ...] | None = None
        self._spread_lock = False  # wackatrl -f: stay away from Spread until -s
        self._hold_off = False  # the last session was short-lived: wait before the next one
        self._session_started_at = 0.0
        # address work
        self._ops: asyncio.Queue[_Op] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._arp_timer: asyncio.TimerHandle | None = None
        self._arp_sampling = False
        self._flushing = False
        self._stopped = asyncio.Event()
        self._stopping = False
        self.exit_code = 0

    # ----- life cycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Open netlink and packet sockets, the control socket and metrics; clean up; connect."""
        self._addresses = await asyncio.to_thread(AddressManager)
        if not self._label_given:
            self.label = await self._find_label()
        self.balancer = Balancer(balancer_settings(self.config, label=self.label))
        self._announcer = Announcer(AnnouncePlanner(self.config.notify), FrameSender(), self.loop)
        if self.config.control_path:
            server = ControlServer(self.config.control_path, self._on_control)
            try:
                await server.start()
            except OSError as exc:
                log.error(
                    "control socket %s: %s; disabling wackatrl support.",
                    self.config.control_path,
                    exc,
                )
            else:
                self._control = server
        if self.config.metrics_port is not None:
            self._start_metrics(self.config.metrics_port)
        log.info(
            "wackapy %s starting: group %s via Spread %s, %d sets, label %s",
            self.private_name,
            self.config.group,
            self.config.spread,
            len(self.config.vifs),
            self.label or "-",
        )
        if self.config.dynamic_hooks:
            log.warning(
                "%d RunDynamic hooks are not run: wackapy loads no shared objects (use RunCommand)",
                len(self.config.dynamic_hooks),
            )
        self._worker = self._spawn(self._address_worker(), "addresses")
        if self.config.health_check is not None:
            self._health = HealthChecker(self.config.health_check)
            self._spawn(self._health.run(self._on_health), "health")
        self._arm_arp_sampling()
        self._input(self.balancer.start)

    async def serve(self) -> int:
        """Run until SIGTERM/SIGINT (or an internal error), then shut down; the exit status."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(sig, self.stop)
        self.loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        try:
            await self._stopped.wait()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                self.loop.remove_signal_handler(sig)
            await self.shutdown()
        return self.exit_code

    def stop(self, exit_code: int = 0) -> None:
        if not self._stopped.is_set():
            self.exit_code = exit_code
            self._stopped.set()

    def _on_sighup(self) -> None:
        log.warning("SIGHUP ignored: there is no reload; restart wackapy to apply changes")

    async def shutdown(self) -> None:
        """Release every address, leave Spread, close everything. Safe to call again."""
        if self._stopping:
            return
        self._stopping = True
        log.info("shutting down: releasing every address")
        for handle in (self._timer, self._arp_timer):
            if handle is not None:
                handle.cancel()
        for task in list(self._tasks):
            if task is not self._worker:
                task.cancel()
        if self.balancer is not None:
            try:
                self._input(self.balancer.shutdown)
            except Exception:
                log.exception("the balancer failed at shutdown")
            await self._wait_ops("shutdown")
        if self._timer is not None:
            self._timer.cancel()
        leaving = self._end_session()  # after the releases: upstream's order (spec §5.3)
        if leaving is not None:
            with contextlib.suppress(TimeoutError, SpreadClientError):
                async with asyncio.timeout(CONNECT_TIMEOUT_S):
                    await leaving
        if self._addresses is not None:
            # Belt and braces: whatever the manager still owns goes, even after a bug.
            try:
                leftovers = await asyncio.to_thread(self._addresses.release_all)
            except AddressError as exc:
                log.error("releasing at shutdown: %s", exc)
            else:
                if leftovers:
                    log.error("released %d addresses the balancer had not", len(leftovers))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(SHUTDOWN_HOOKS_S):
                await self._hooks.drain()
        await self._hooks.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._announcer is not None:
            self._announcer.close()
        if self._control is not None:
            await self._control.close()
        if self._metrics is not None:
            await asyncio.to_thread(self._metrics.shutdown)
            self._metrics.server_close()
        if self._addresses is not None:
            await asyncio.to_thread(self._addresses.close)
        log.info("wackapy %s exiting", self.private_name)

    # ----- balancer plumbing -----------------------------------------------------------------

    def _input(self, fn: Callable[[float], None]) -> None:
        """Feed one input to the balancer at the loop's time, then execute what it asked."""
        fn(self.loop.time())
        self._flush()

    def _flush(self) -> None:
        balancer = self.balancer
        if balancer is None or self._flushing:
            return
        self._flushing = True
        try:
            while actions := balancer.drain_actions():
                self._execute(actions)
        finally:
            self._flushing = False
        deadline = balancer.next_deadline()
        if deadline != self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = deadline
            self._timer = None if deadline is None else self.loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        due = self._timer_at
        self._timer = self._timer_at = None
        balancer = self.balancer
        assert balancer is not None and due is not None
        # The loop may wake a hair early: never hand the balancer a time before its deadline.
        self._guard(lambda: self._input(lambda now: balancer.timer(max(now, due))))

    def _execute(self, actions: list[Action]) -> None:
        post_up = post_down = released = False
        for action in actions:
            match action:
                case ConnectSpread():
                    self._connect_soon()
                case JoinGroup() | Multicast():
                    if self._outbox is None:
                        self.counters["sends_without_session"] += 1
                    else:
                        self._outbox.put_nowait(action)
                case Acquire(set_id=set_id, reason=reason):
                    self._ops.put_nowait(_Op("acquire", set_id, reason))
                    post_up |= reason is Reason.BALANCE
                case Release(set_id=set_id, reason=reason):
                    assert self._announcer is not None
                    self._announcer.cancel(set_id)  # no further frame for it from now on
                    self._ops.put_nowait(_Op("release", set_id, reason))
                    released |= reason is not Reason.STARTUP
                    post_down |= reason not in _QUIET_RELEASES
                case Announce(set_id=set_id):
                    self._ops.put_nowait(_Op("announce", set_id))
                case SampleArpCache():
                    self._sample_arp_soon()
                case ArpCacheLearned(entries=entries):
                    self._shared_arp.merge(entries)
        if released or post_up:
            self._ops.put_nowait(_Op("end", post_up=post_up, post_down=post_down))

    # ----- the Spread session ----------------------------------------------------------------

    def _connect_soon(self) -> None:
        self._end_session()
        generation = self._generation
        self._session_tasks.append(self._spawn(self._connect(generation), "spread-connect"))

    async def _connect(self, generation: int) -> None:
        assert self.balancer is not None
        if generation != self._generation or self._stopping:
            return
        if self._spread_lock or self._hold_off:
            # Counted as a failed attempt: the balancer retries after SpreadRetryInterval.
            why = "simulated failure (wackatrl -f)" if self._spread_lock else "session flapping"
            log.info("%s: not connecting to Spread now", why)
            self._hold_off = False
            self._input(self.balancer.disconnected)
            return
        log.info("connecting to %s", self.config.spread)
        try:
            mailbox = await aioclient.connect(
                self.config.spread,
                self.private_name,
                membership=True,
                timeout=CONNECT_TIMEOUT_S,
            )
        except SpreadClientError as exc:
            if generation == self._generation and not self._stopping:
                log.warning("Spread connect failed [%s].", exc)
                self.counters["connect_failures"] += 1
                self._input(self.balancer.disconnected)
            return
        if generation != self._generation or self._stopping:
            await mailbox.disconnect()
            return
        self.counters["sessions"] += 1
        self._session_started_at = self.loop.time()
        self._mailbox = mailbox
        outbox: asyncio.Queue[JoinGroup | Multicast] = asyncio.Queue()
        self._outbox = outbox
        self._session_tasks.append(self._spawn(self._send(generation, mailbox, outbox), "send"))
        self._session_tasks.append(self._spawn(self._receive(generation, mailbox), "receive"))
        self._last_members = None
        balancer = self.balancer
        self._input(lambda now: balancer.connected(mailbox.private_group, now))

    async def _send(
        self,
        generation: int,
        mailbox: aioclient.AsyncMailbox,
        outbox: asyncio.Queue[JoinGroup | Multicast],
    ) -> None:
        while True:
            item = await outbox.get()
            try:
                match item:
                    case JoinGroup(group=group):
                        await mailbox.join(group)
                    case Multicast():
                        await mailbox.multicast(
                            int(item.service), item.group, item.payload, item.mess_type
                        )
                        self.counters["multicasts"] += 1
            except SpreadClientError as exc:
                if generation == self._generation:
                    self._lose_session(f"send failed: {exc}")
                return

    async def _receive(self, generation: int, mailbox: aioclient.AsyncMailbox) -> None:
        try:
            async for msg in mailbox:
                if generation != self._generation or self._stopping:
                    return
                self._on_spread_message(msg)
        except SpreadClientError as exc:
            if generation == self._generation and not self._stopping:
                self._lose_session(str(exc))

    def _on_spread_message(self, msg: Message) -> None:
        balancer = self.balancer
        assert balancer is not None
        now = self.loop.time()
        group = self.config.group
        match msg:
            case RegularMessage():
                if group in msg.groups:
                    balancer.message(msg.sender, msg.data, now)
                else:
                    self.counters["foreign_messages"] += 1
            case MembershipMessage() | TransitionalMessage():
                me = balancer.private_name
                assert me is not None
                view = view_from_message(msg, group, me=me, last_members=self._last_members)
                if view is None:
                    self.counters["foreign_views"] += 1
                    log.warning("ignored a membership message not for us: %s", msg)
                else:
                    if view.kind is ViewKind.REGULAR:
                        self._last_members = view.members
                    balancer.membership(view, now)
            case SelfLeave():
                self._lose_session(f"Spread says we left {msg.group}")
                return
            case RejectMessage():
                self._lose_session(f"Spread refused a request (type {msg.service_type:#x})")
                return
        self._flush()

    def _lose_session(self, reason: str) -> None:
        assert self.balancer is not None
        log.warning("lost the Spread session: %s", reason)
        self.counters["sessions_lost"] += 1
        # The balancer reconnects at once (upstream). A session that did not last one retry
        # interval (a daemon refusing our join, say) waits for the retry instead, so a
        # persistent failure cannot become a busy loop.
        lasted_s = self.loop.time() - self._session_started_at
        self._hold_off = lasted_s < self.config.spread_retry_interval_s
        self._end_session()
        if self.balancer.state in _SESSION_STATES:
            self._input(self.balancer.disconnected)

    def _end_session(self) -> asyncio.Task[None] | None:
        """Forget the current session (or connect attempt); later events of it are ignored.
        Returns the task that disconnects the mailbox, if there was one."""
        self._generation += 1
        current = asyncio.current_task()
        for task in self._session_tasks:
            if task is not current:
                task.cancel()
        self._session_tasks = []
        self._outbox = None
        self._last_members = None
        mailbox, self._mailbox = self._mailbox, None
        if mailbox is None:
            return None
        return self._spawn(mailbox.disconnect(), "spread-disconnect")

    # ----- address work ----------------------------------------------------------------------

    async def _address_worker(self) -> None:
        while True:
            op = await self._ops.get()
            try:
                await self._do(op)
            except AddressError as exc:
                self.counters["address_errors"] += 1
                log.error("%s %s: %s", op.kind, op.set_id, exc)
            finally:
                self._ops.task_done()

    async def _do(self, op: _Op) -> None:
        manager, announcer = self._addresses, self._announcer
        assert manager is not None and announcer is not None and self.balancer is not None
        match op.kind:
            case "acquire":
                vips = self._vifs[op.set_id].addresses
                for vip in vips:
                    try:
                        await asyncio.to_thread(manager.acquire, vip)
                    except AddressError as exc:
                        self.counters["acquire_errors"] += 1
                        log.error("cannot add %s: %s", vip, exc)
                log.info("acquired %s (%s)", op.set_id, op.reason.value if op.reason else "-")
                self._hooks.fire(HookEvent.ON_UP, vips)
            case "release":
                announcer.cancel(op.set_id)
                vips = self._vifs[op.set_id].addresses
                startup = op.reason is Reason.STARTUP
                removed = []
                for vip in vips:
                    try:
                        if await asyncio.to_thread(manager.release, vip, force=startup):
                            removed.append(vip)
                    except AddressError as exc:
                        self.counters["release_errors"] += 1
                        log.error("cannot remove %s: %s", vip, exc)
                if startup:
                    if removed:
                        log.warning("removed leftover %s", ", ".join(map(str, removed)))
                        self._hooks.fire(HookEvent.ON_DOWN, removed)
                else:
                    log.info("released %s (%s)", op.set_id, op.reason.value if op.reason else "-")
                    self._hooks.fire(HookEvent.ON_DOWN, vips)
            case "announce":
                if op.set_id in self.balancer.held:
                    announcer.announce(
                        op.set_id, self._vifs[op.set_id].addresses, self._shared_arp.snapshot()
                    )
                else:
                    self.counters["announcements_skipped"] += 1
            case "end":
                readded = await asyncio.to_thread(manager.reup)
                for set_id in dict.fromkeys(self._set_of(vip) for vip in readded):
                    if set_id in self.balancer.held:
                        announcer.announce(
                            set_id, self._vifs[set_id].addresses, self._shared_arp.snapshot()
                        )
                if op.post_up:
                    self._hooks.fire(HookEvent.POST_UP)
                if op.post_down:
                    self._hooks.fire(HookEvent.POST_DOWN)

    def _set_of(self, vip: VipAddress) -> str:
        return next(s for s, vif in self._vifs.items() if vip in vif.addresses)

    async def _wait_ops(self, why: str) -> None:
        if self._worker is None or self._worker.done():
            return
        try:
            async with asyncio.timeout(SHUTDOWN_RELEASE_S):
                await self._ops.join()
        except TimeoutError:
            log.error("%s: address work still pending after %ss", why, SHUTDOWN_RELEASE_S)

    async def _find_label(self) -> str:
        """The first IPv4 address, not a virtual one, on the first set's interface."""
        assert self._addresses is not None
        virtual = {a.address for a in self.config.addresses}
        ifnames = dict.fromkeys(a.ifname for a in self.config.addresses)
        for ifname in ifnames:
            try:
                infos = await asyncio.to_thread(self._addresses.addresses, ifname)
            except AddressError:
                continue
            for info in infos:
                if info.address.version == 4 and info.address not in virtual:
                    return str(info.address)
        return socket.gethostname()

    # ----- ARP cache sampling ----------------------------------------------------------------

    def _arm_arp_sampling(self) -> None:
        self._arp_timer = self.loop.call_later(self.config.arp_cache_s, self._on_arp_timer)

    def _on_arp_timer(self) -> None:
        self._sample_arp_soon()
        self._arm_arp_sampling()

    def _sample_arp_soon(self) -> None:
        if not self._arp_sampling and not self._stopping:
            self._arp_sampling = True
            self._spawn(self._sample_arp(), "arp-sample")

    async def _sample_arp(self) -> None:
        try:
            entries = await asyncio.to_thread(read_arp_cache, manager=self._addresses)
        except AddressError as exc:
            log.warning("cannot read the ARP table: %s", exc)
            return
        finally:
            self._arp_sampling = False
        balancer = self.balancer
        if balancer is not None and not self._stopping:
            self._input(lambda now: balancer.share_arp_cache(entries, now))

    # ----- health, control, metrics ------------------------------------------------------------

    def _on_health(self, healthy: bool) -> None:
        balancer = self.balancer
        if balancer is not None and not self._stopping:
            self._input(lambda now: balancer.set_healthy(healthy, now))

    async def _on_control(self, opcode: Opcode) -> bytes:
        match opcode:
            case Opcode.GET_STATE:
                return frame(self.state_table_bytes())
            case Opcode.GET_STATE_JSON:
                return frame(json.dumps(self.state_document()).encode())
            case Opcode.SIMULATE_FAILURE:
                await self.simulate_failure()
                return (0).to_bytes(4, "big")
            case Opcode.SIMULATE_SUCCESS:
                self.simulate_success()
                return (0).to_bytes(4, "big")

    async def simulate_failure(self) -> None:
        """wackatrl -f: leave Spread and release everything until -s (spec §4.4)."""
        balancer = self.balancer
        assert balancer is not None
        if not self._spread_lock and not self._stopping:
            self._spread_lock = True
            log.warning("wackatrl -f: simulating a failure: leaving Spread, releasing all")
            if balancer.state in _SESSION_STATES or balancer.state is State.CONNECTING:
                self._end_session()
                self._input(balancer.disconnected)
        await self._wait_ops("wackatrl -f")

    def simulate_success(self) -> None:
        """wackatrl -s: end a simulated failure and reconnect at once; otherwise nothing."""
        balancer = self.balancer
        assert balancer is not None
        if not self._spread_lock:
            return
        self._spread_lock = False
        log.warning("wackatrl -s: failure simulation over: reconnecting")
        deadline = balancer.next_deadline()
        if balancer.state is State.DISCONNECTED and deadline is not None:
            # Waiting for the retry: the retry is due now (the balancer only compares times).
            self._input(lambda now: balancer.timer(max(now, deadline)))

    def state_document(self) -> dict[str, Any]:
        assert self.balancer is not None
        counters: dict[str, Mapping[str, int]] = {
            "balancer": self.balancer.counters,
            "daemon": self.counters,
            "hooks": self._hooks.counters,
            "shared_arp_cache": self._shared_arp.counters,
        }
        if self._announcer is not None:
            counters["announcer"] = self._announcer.planner.counters
            counters["frames"] = self._announcer.sender.counters
        if self._health is not None:
            counters["health"] = self._health.counters
        if self._control is not None:
            counters["control"] = self._control.counters
        return state_document(
            self.balancer,
            self._vifs,
            label=self.label,
            spread=self.config.spread,
            simulated_failure=self._spread_lock,
            counters=counters,
            arp_cache_entries=len(self._shared_arp),
        )

    def state_table_bytes(self) -> bytes:
        assert self.balancer is not None
        return encode_state(
            [
                (
                    int(row.priority),
                    row.owner_label if row.owner is not None else None,
                    self._vifs[row.set_id].addresses,
                )
                for row in self.balancer.ownership()
            ]
        )

    def _start_metrics(self, port: int) -> None:
        from prometheus_client import CollectorRegistry, start_http_server
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        daemon = self
        loop = self.loop

        async def snapshot() -> dict[str, Any]:
            return daemon.state_document()

        class Collector:
            def collect(self) -> Any:  # Any: prometheus_client's metric families
                doc = asyncio.run_coroutine_threadsafe(snapshot(), loop).result(METRICS_SNAPSHOT_S)
                for section, values in doc["counters"].items():
                    for key, value in values.items():
                        name = f"wackapy_{section}_{key}".replace("-", "_")
                        yield CounterMetricFamily(name, f"wackapy {section} {key}", value=value)
                member = doc["member"]
                yield GaugeMetricFamily(
                    "wackapy_sets_held", "VIP sets this member holds", value=len(member["held"])
                )
                yield GaugeMetricFamily(
                    "wackapy_sets", "configured VIP sets", value=len(doc["sets"])
                )
                view = doc["view"]
                yield GaugeMetricFamily(
                    "wackapy_view_members",
                    "members of the current view (0: none)",
                    value=0 if view is None else len(view["members"]),
                )
                yield GaugeMetricFamily(
                    "wackapy_arp_cache_entries",
                    "addresses in the cluster-wide ARP cache",
                    value=member["arp_cache_entries"],
                )
                yield GaugeMetricFamily("wackapy_mature", "1 when mature", value=member["mature"])
                yield GaugeMetricFamily(
                    "wackapy_healthy", "1 when the health gate is open", value=member["healthy"]
                )
                state = GaugeMetricFamily("wackapy_state", "balancer state", labels=["state"])
                for s in State:
                    state.add_metric([s.value], 1 if member["state"] == s.value else 0)
                yield state

        registry = CollectorRegistry()
        registry.register(Collector())  # type: ignore[arg-type]
        try:
            self._metrics, _thread = start_http_server(port, addr="127.0.0.1", registry=registry)
        except OSError as exc:
            log.error("metrics on 127.0.0.1:%d: %s; no metrics", port, exc)

    # ----- tasks -------------------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = self.loop.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.critical("internal error in %s", task.get_name(), exc_info=exc)
            self.stop(EXIT_INTERNAL_ERROR)

    def _guard(self, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception:
            log.critical("internal error", exc_info=True)
            self.stop(EXIT_INTERNAL_ERROR)


# ---------------------------------------------------------------------------------------------
# entry points


def configure_logging(config: WackamoleConfig, *, debug: bool) -> None:
    """-d: stdout with upstream's timestamp, debug level; else syslog (LogFacility) or stderr."""
    handler: logging.Handler
    if debug:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", DEBUG_TIME_FORMAT))
        level = logging.DEBUG
    elif os.path.exists(SYSLOG_SOCKET):
        facility = logging.handlers.SysLogHandler.facility_names[config.log_facility or "daemon"]
        handler = logging.handlers.SysLogHandler(SYSLOG_SOCKET, facility=facility)
        handler.setFormatter(logging.Formatter(f"wackapy[{os.getpid()}]: %(message)s"))
        level = logging.INFO
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        level = logging.INFO
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # pyroute2 and scapy log a lot at debug level; keep them at warnings even with -d
    for noisy in ("pyroute2", "scapy", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


async def run(config: WackamoleConfig, *, private_name: str, label: str | None = None) -> int:
    daemon = Daemon(config, private_name=private_name, label=label)
    try:
        await daemon.start()
    except AddressError as exc:
        log.error("wackapy: %s", exc)
        await daemon.shutdown()
        return 1
    return await daemon.serve()


def main(
    config: WackamoleConfig,
    *,
    private_name: str | None = None,
    debug: bool = False,
    label: str | None = None,
) -> int:
    """Run the daemon in the foreground until SIGTERM/SIGINT; return the exit status."""
    configure_logging(config, debug=debug)
    name = private_name or default_private_name(os.getpid())
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency, but stay runnable
        return asyncio.run(run(config, private_name=name, label=label))
    return uvloop.run(run(config, private_name=name, label=label))

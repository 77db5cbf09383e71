"""RunCommand hooks and the HealthCheck command, as asyncio subprocesses.

Follows shared/spec/wackamole.md §2.10 for the events and docs/wackamole-conf.md ("Hooks",
"Health check") for the arguments: ``on up`` and ``on down`` commands run once per address of
the set, with ``ADDRESS/PREFIX`` and ``IFNAME`` appended; ``post up`` and ``post down`` get no
extra arguments; nothing runs through a shell.

``HookRunner.fire(event, addresses)`` queues a run and returns at once; one worker task runs the
queue in order, one command at a time, so an ``on down`` never overtakes the ``on up`` before
it. ``await HookRunner.run(...)`` runs directly (tests, tools). A command that cannot start,
exits non-zero or outlives ``timeout_s`` is logged with the tail of its output and counted in
``counters``; it is never fatal and never blocks the event loop. On timeout the command's whole
process group (it runs in a session of its own) gets SIGTERM, then SIGKILL after
``KILL_GRACE_S``.

``HealthChecker.check()`` runs the health command once: healthy means exit status 0 within the
interval (docs: a check that runs longer than ``HealthCheckInterval`` counts as failed).
``HealthChecker.run(report)`` checks every interval and passes each result to ``report``
(the daemon feeds it to ``Balancer.set_healthy``, which ignores repeats).

Differences from upstream: hooks are programs, not shared objects or embedded Perl called in
the daemon's thread; a hung hook therefore cannot stall the protocol. ``on down`` runs once per
address (as upstream's quirk, documented) but only for sets this host held, which is the
caller's business: the balancer emits ``Release`` for held sets only (apart from STARTUP).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from wackapy.config import CommandHook, HealthCheck, HookEvent, VipAddress

if TYPE_CHECKING:
    Log = logging.Logger | logging.LoggerAdapter[logging.Logger]

__all__ = [
    "HOOK_TIMEOUT_S",
    "CommandResult",
    "HealthChecker",
    "HookRunner",
    "hook_argv",
    "run_command",
]

HOOK_TIMEOUT_S = 30.0  # default bound on one hook command
KILL_GRACE_S = 1.0  # SIGTERM to SIGKILL
OUTPUT_GRACE_S = 1.0  # after exit, how long a background child may keep the output pipe open
OUTPUT_TAIL_BYTES_MAX = 2048  # what is kept of a command's output, for the log
READ_CHUNK_BYTES = 4096
QUEUE_RUNS_MAX = 1024  # fired runs waiting for the worker; more are dropped and counted

_LOG = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int | None  # None: could not start, or killed after the timeout
    timed_out: bool = False
    error: str | None = None  # why it could not start
    output: str = ""  # the last OUTPUT_TAIL_BYTES_MAX bytes of stdout and stderr

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def describe(self) -> str:
        if self.error is not None:
            return f"could not start: {self.error}"
        if self.timed_out:
            return "timed out, killed"
        assert self.returncode is not None
        if self.returncode < 0:
            return f"killed by signal {-self.returncode}"
        return f"exit status {self.returncode}"


def hook_argv(hook: CommandHook, vip: VipAddress | None) -> tuple[str, ...]:
    """The command line of a hook: with ``ADDRESS/PREFIX IFNAME`` for a per-address event."""
    if vip is None:
        return hook.argv
    return (*hook.argv, str(vip.interface), vip.ifname)


async def run_command(argv: Sequence[str], *, timeout_s: float) -> CommandResult:
    """Run a program (no shell) with stdin closed; wait at most ``timeout_s``; never raises for
    the program's own failures."""
    args = tuple(argv)
    try:
        proc = await asyncio.create_subprocess_exec(
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # its own process group, so a timeout kills its children
        )
    except OSError as exc:
        return CommandResult(argv=args, returncode=None, error=exc.strerror or str(exc))
    tail = bytearray()
    assert proc.stdout is not None
    reader = asyncio.ensure_future(_read_tail(proc.stdout, tail))
    timed_out = False
    try:
        await asyncio.wait_for(proc.wait(), timeout_s)
    except TimeoutError:
        timed_out = True
        await _kill_group(proc)
    finally:
        if proc.returncode is None:  # cancelled from outside: leave nothing running
            await _kill_group(proc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(reader, OUTPUT_GRACE_S)
    output = bytes(tail).decode("utf-8", "replace")
    return CommandResult(
        argv=args,
        returncode=None if timed_out else proc.returncode,
        timed_out=timed_out,
        output=output,
    )


async def _read_tail(stream: asyncio.StreamReader, tail: bytearray) -> None:
    while chunk := await stream.read(READ_CHUNK_BYTES):
        tail += chunk
        del tail[:-OUTPUT_TAIL_BYTES_MAX]


async def _kill_group(proc: asyncio.subprocess.Process) -> None:
    for sig, wait_s in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, None)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            await asyncio.wait_for(proc.wait(), wait_s)
        except TimeoutError:
            continue
        return


@dataclass(frozen=True, slots=True)
class _Run:
    event: HookEvent
    addresses: tuple[VipAddress, ...]


class HookRunner:
    """Runs the RunCommand hooks of each event, in config order."""

    def __init__(
        self,
        hooks: Sequence[CommandHook],
        *,
        timeout_s: float = HOOK_TIMEOUT_S,
        log: Log | None = None,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError("timeout_s must be > 0")
        self._hooks = tuple(hooks)
        self._timeout_s = timeout_s
        self._log = log if log is not None else _LOG
        self._queue: asyncio.Queue[_Run] | None = None
        self._worker: asyncio.Task[None] | None = None
        self.counters: Counter[str] = Counter()

    def commands(
        self, event: HookEvent, addresses: Sequence[VipAddress] = ()
    ) -> list[tuple[str, ...]]:
        """The command lines an event runs, in order: each hook, for each address."""
        per_address = event in (HookEvent.ON_UP, HookEvent.ON_DOWN)
        lines = []
        for hook in self._hooks:
            if hook.event is not event:
                continue
            if per_address:
                lines.extend(hook_argv(hook, vip) for vip in addresses)
            else:
                lines.append(hook_argv(hook, None))
        return lines

    async def run(
        self, event: HookEvent, addresses: Sequence[VipAddress] = ()
    ) -> list[CommandResult]:
        """Run an event's commands one after the other; failures are logged and counted."""
        results = []
        for argv in self.commands(event, addresses):
            result = await run_command(argv, timeout_s=self._timeout_s)
            self._account(event, result)
            results.append(result)
        return results

    def fire(self, event: HookEvent, addresses: Sequence[VipAddress] = ()) -> None:
        """Queue an event's commands behind those fired before; call from the event loop."""
        if not any(h.event is event for h in self._hooks):
            return
        if self._queue is None:
            self._queue = asyncio.Queue(QUEUE_RUNS_MAX)
            self._worker = asyncio.get_running_loop().create_task(self._work())
        try:
            self._queue.put_nowait(_Run(event, tuple(addresses)))
        except asyncio.QueueFull:
            self.counters["dropped_queue_full"] += 1
            self._log.error("hook queue full (%d): %s not run", QUEUE_RUNS_MAX, event.value)

    async def drain(self) -> None:
        """Wait until every fired run has finished."""
        if self._queue is not None:
            await self._queue.join()

    async def close(self) -> None:
        """Stop the worker; a command still running is killed, queued ones are dropped."""
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        self._queue = None
        self._worker = None

    async def _work(self) -> None:
        assert self._queue is not None
        queue = self._queue
        while True:
            item = await queue.get()
            try:
                await self.run(item.event, item.addresses)
            finally:
                queue.task_done()

    def _account(self, event: HookEvent, result: CommandResult) -> None:
        self.counters["runs"] += 1
        if result.ok:
            self._log.info("hook %s: %s: ok", event.value, " ".join(result.argv))
            return
        self.counters["failures"] += 1
        if result.timed_out:
            self.counters["timeouts"] += 1
        if result.error is not None:
            self.counters["start_errors"] += 1
        self._log.warning(
            "hook %s: %s: %s%s",
            event.value,
            " ".join(result.argv),
            result.describe(),
            f"; output: {result.output.strip()!r}" if result.output.strip() else "",
        )


class HealthChecker:
    """Runs the HealthCheck command; a run longer than the interval counts as a failure."""

    def __init__(
        self, check: HealthCheck, *, timeout_s: float | None = None, log: Log | None = None
    ) -> None:
        self.check_config = check
        self._timeout_s = check.interval_s if timeout_s is None else timeout_s
        self._log = log if log is not None else _LOG
        self._last: bool | None = None
        self.counters: Counter[str] = Counter()

    async def check(self) -> bool:
        result = await run_command(self.check_config.argv, timeout_s=self._timeout_s)
        self.counters["runs"] += 1
        healthy = result.ok
        if not healthy:
            self.counters["failures"] += 1
            if result.timed_out:
                self.counters["timeouts"] += 1
        if healthy != self._last:
            level = logging.INFO if healthy else logging.WARNING
            self._log.log(
                level,
                "health check %s: %s%s",
                "passes" if healthy else "fails",
                result.describe(),
                f"; output: {result.output.strip()!r}" if result.output.strip() else "",
            )
        self._last = healthy
        return healthy

    async def run(self, report: Callable[[bool], None]) -> None:
        """Check every interval (measured from the start of each check) until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            report(await self.check())
            await asyncio.sleep(max(0.0, started + self.check_config.interval_s - loop.time()))

"""Three hosts for the benchmarks and the soak, and the Spread daemons that run on them.

    with open_bed("auto") as bed, Ring(bed, RingConfig(fast=True)) as ring:
        ring.wait_ring()
        proc = bed.spawn(bed.hosts[0], [sys.executable, "-m", "benchmarks.workers", ...])
        ring.kill("h3"); ring.start("h3")
        bed.cut_link(bed.hosts[1]); bed.restore_link(bed.hosts[1])

Two kinds of bed:
  netns     (root) tests/netns.py's `Testbed`: a bridge namespace and one namespace per host
            (`h1`..`h3` at 198.18.0.1-3/24) plus a client namespace (.100). The ring runs by IP
            broadcast to 198.18.0.255 (or multicast to 225.18.0.1 with transport="multicast").
            Links can be cut: the host's port on the bridge is set down (`ip link set down`
            on the bridge end of its veth), as if its cable were pulled at the switch.
  loopback  (anyone) three daemons on 127.0.0.1/.2/.3 of this machine, the ring by unicast to
            each (spreadpy's mode for a 127/8 segment), a free port; no link cuts.
"auto" takes netns when tests/netns.py says namespaces can be built here, loopback otherwise.
`open_bed(mtu=9000)` (netns only) sets every veth end and the bridge to that MTU, and spreadpy's
daemons on it get `RingPacketSize = MTU - 28` (the largest UDP payload that is not fragmented).

Everything a bed or a ring started is killed when its `with` block ends, whatever ended it
(an exception, Ctrl-C, or SIGTERM once `terminate_on_sigterm()` is in force), and the namespaces
are deleted after that. Processes are started with `ip netns exec`, which execs the program in
place: the PID we hold is the program's, so `kill -9` hits the daemon itself.

A `Ring` runs spreadpy (`python -m spreadpy -c FILE -n NAME --state-dir DIR`), or, with
`RingConfig(peer=PREFIX)`, a hand-built original Spread 5.0.1 installed under PREFIX
(`make install prefix=PREFIX`: PREFIX/sbin/spread, PREFIX/bin/spflooder; never built or
shipped here). The original needs the netns bed and is started so that it never runs as root:

    ip netns exec NS unshare --mount --propagation private \
        sh -c 'mount --bind RUNDIR /tmp && exec setpriv --reuid U --regid G --clear-groups ...'

As root it would chroot into its RuntimeDir and switch to user `spread`; run by an unprivileged
user (`nobody` unless `RingConfig(peer_user=...)`), it does neither. Its Unix socket is always
`/tmp/<port>` (compiled in, not configurable), which three daemons on one machine would fight
over, and over anybody else's Spread at /tmp/4803: each daemon therefore gets a private mount
namespace where its own run directory (owned by that user) is mounted on /tmp. Whatever it
needs must then be in there: its configuration and a copy of the daemon binary (an install
prefix under /tmp would be hidden), /tmp/spread.conf and /tmp/spread in its view. Its clients
connect by TCP.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Any, Final

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from spreadpy.config import (
    DEFAULT_PERSONAL_WINDOW,
    DEFAULT_WINDOW,
    FAST_TIMEOUTS,
    LAN_TIMEOUTS,
    Timeouts,
)
from spreadpy.daemon import query_status
from tests import netns
from tests.daemons import free_port

HOSTS = 3
NETNS_SUBNET = "198.18.0.0/24"
NETNS_BROADCAST = "198.18.0.255"
NETNS_MULTICAST = "225.18.0.1"
SPREAD_PORT = 4803
START_TIMEOUT_S = 10.0
RING_TIMEOUT_S = 30.0
POLL_S = 0.02
PROBE_ATTEMPT_S = 5.0
KILL_WAIT_S = 5.0
SOURCE_PACKAGES = ("spreadpy", "spuser", "wackapy")
PROCESSES_MAX = 1000
CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")  # a bed that starts more than this is a runaway loop
ETHERNET_MTU: Final = 1500
JUMBO_MTU: Final = 9000
IP_UDP_HEADERS: Final = 28  # IPv4 (20, no options) + UDP (8)
MTU_MIN: Final = 576  # IPv4's minimum datagram every host must take
MTU_MAX: Final = 65000 + IP_UDP_HEADERS  # RingPacketSize's upper bound (spreadpy/config.py)
LOOPBACK_PACKET_SIZE: Final = 8192  # spreadpy's default when every daemon is on 127/8
PEER_USER: Final = "nobody"
PEER_PRIVATE_TMP: Final = "/tmp"  # the original's compiled-in SP_UNIX_SOCKET directory
PEER_CONF_NAME: Final = "spread.conf"
PEER_DAEMON_NAME: Final = "spread"
# Spread 5.0.1's MAX_PACKET_SIZE (libspread-util/include/spu_data_link.h): compiled in, there is
# no configuration keyword for it, so the original keeps it whatever the bed's MTU.
PEER_PACKET_SIZE: Final = 1472
# Runs as root inside the daemon's own mount namespace: $1 is its run directory, the rest the
# command to exec (setpriv, then the daemon: the PID we hold stays the daemon's).
_PEER_SHELL: Final = 'mount --bind "$1" /tmp && shift && exec "$@"'


class BedError(RuntimeError):
    """The bed or a daemon on it could not be set up (the message says what and why)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Host:
    name: str  # h1, h2, h3, or client
    address: str
    netns: str | None  # None: this machine's own namespace (loopback bed)
    bridge_port: str | None  # the bridge end of its veth, for link cuts


def ring_packet_size(mtu: int) -> int | None:
    """The RingPacketSize spreadpy's daemons get on a bed of this MTU; None at 1500 (their
    default, 1472, is already 1500 - 28)."""
    check_mtu(mtu)
    return None if mtu == ETHERNET_MTU else mtu - IP_UDP_HEADERS


def packet_size(bed: Bed, *, peer: bool) -> int:
    """The largest ring datagram the daemons of a ring on `bed` send: the original's compiled-in
    size, or spreadpy's RingPacketSize for the bed (its default when none is written)."""
    if peer:
        return PEER_PACKET_SIZE
    size = None if bed.mtu is None else ring_packet_size(bed.mtu)
    if size is not None:
        return size
    return LOOPBACK_PACKET_SIZE if bed.kind == "loopback" else ETHERNET_MTU - IP_UDP_HEADERS


def check_mtu(mtu: int) -> int:
    if not MTU_MIN <= mtu <= MTU_MAX:
        raise ValueError(f"MTU must be between {MTU_MIN} and {MTU_MAX}, not {mtu}")
    return mtu


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def terminate_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM and SIGHUP into KeyboardInterrupt so that `with` blocks clean up."""
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class Bed:
    """Hosts to start processes on; owns every process started through it."""

    def __init__(
        self,
        kind: str,
        hosts: tuple[Host, ...],
        client: Host | None,
        segment: str,
        testbed: netns.Testbed | None = None,
        mtu: int | None = None,
    ) -> None:
        self.kind = kind
        self.hosts = hosts
        self.client = client
        self.segment = segment
        self.mtu = None if mtu is None else check_mtu(mtu)  # None: lo's, not the bed's to set
        self._testbed = testbed
        self._processes: list[subprocess.Popen[bytes]] = []
        self._cut: set[str] = set()

    @property
    def can_cut_links(self) -> bool:
        return self._testbed is not None

    @property
    def cut_hosts(self) -> frozenset[str]:
        """Hosts whose cable is pulled right now."""
        return frozenset(self._cut)

    def host(self, name: str) -> Host:
        for host in (*self.hosts, self.client):
            if host is not None and host.name == name:
                return host
        raise KeyError(name)

    def command(self, host: Host, argv: Sequence[str]) -> list[str]:
        if host.netns is None:
            return list(argv)
        return ["ip", "netns", "exec", host.netns, *argv]

    def spawn(
        self,
        host: Host,
        argv: Sequence[str],
        *,
        stdout: int | IO[Any] | None = subprocess.PIPE,  # Any: bytes or text files
        stdin: int | IO[Any] | None = subprocess.DEVNULL,
        stderr: int | IO[Any] | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start `argv` on `host` (from the repository root); killed when the bed closes."""
        if len(self._processes) >= PROCESSES_MAX:
            raise BedError(f"more than {PROCESSES_MAX} processes started on one bed")
        self._processes = [p for p in self._processes if p.poll() is None]
        env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
        process = subprocess.Popen(
            self.command(host, argv),
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            cwd=REPO,
            env=env,
            start_new_session=True,  # Ctrl-C reaches us, not them: we stop them in order
        )
        self._processes.append(process)
        return process

    def run(self, host: Host, argv: Sequence[str], timeout_s: float = 10.0) -> str:
        done = subprocess.run(
            self.command(host, argv),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        if done.returncode != 0:
            raise BedError(f"{' '.join(argv)} on {host.name}: {done.stderr.strip()}")
        return done.stdout

    def cut_link(self, host: Host) -> None:
        """Pull the host's cable: its port on the bridge goes down."""
        self._set_port(host, "down")
        self._cut.add(host.name)

    def restore_link(self, host: Host) -> None:
        self._set_port(host, "up")
        self._cut.discard(host.name)

    def _set_port(self, host: Host, state: str) -> None:
        if self._testbed is None or host.bridge_port is None:
            raise BedError("links can only be cut on a netns bed")
        netns.run(["ip", "-n", self._testbed.bridge, "link", "set", host.bridge_port, state])

    def close(self) -> None:
        """Kill every process still running (kill -9), then wait for them."""
        for process in self._processes:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
        for process in self._processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(KILL_WAIT_S)
        self._processes.clear()
        if self._testbed is not None:
            for name in sorted(self._cut):
                with contextlib.suppress(netns.TestbedError):
                    self.restore_link(self.host(name))


def source_digest() -> str:
    """A digest of the code the daemons and clients run: a restarted daemon runs what is on disk
    then, so a tree edited during a run means mixed code (the runs say so)."""
    digest = hashlib.sha256()
    for package in SOURCE_PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def git_commit() -> tuple[str, bool]:
    """(HEAD's commit or "unknown", whether tracked files differ from it)."""

    def git(*args: str) -> str | None:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD") or "unknown"
    return commit, bool(git("status", "--porcelain", "--untracked-files=no"))


def netns_unavailable_reason() -> str | None:
    return netns.unavailable_reason()


def _port_name(role: str) -> str:
    """The bridge end of a node's veth, as tests/netns.py names it."""
    return f"p-{role}"[:15]


def _set_mtu(testbed: netns.Testbed, mtu: int) -> None:
    """Every veth end, then the bridge (a bridge's MTU is bounded by its ports')."""
    for node in testbed.nodes:
        netns.run(["ip", "-n", node.name, "link", "set", node.ifname, "mtu", str(mtu)])
        port = _port_name(node.role)
        netns.run(["ip", "-n", testbed.bridge, "link", "set", port, "mtu", str(mtu)])
    netns.run(["ip", "-n", testbed.bridge, "link", "set", netns.BRIDGE, "mtu", str(mtu)])


def bed_kind(kind: str = "auto") -> str:
    """The kind of bed `open_bed(kind)` builds here: netns or loopback (raises BedError when
    netns is asked for and cannot be had)."""
    if kind not in ("auto", "netns", "loopback"):
        raise ValueError(f"bed kind must be auto, netns or loopback, not {kind!r}")
    reason = netns.unavailable_reason()
    if kind == "netns" and reason is not None:
        raise BedError(f"cannot build a netns bed: {reason}")
    return "loopback" if kind == "loopback" or reason is not None else "netns"


@contextlib.contextmanager
def open_bed(
    kind: str = "auto", transport: str = "broadcast", mtu: int = ETHERNET_MTU
) -> Iterator[Bed]:
    """A three-host bed (see the module docstring); everything on it is gone afterwards."""
    check_mtu(mtu)
    if bed_kind(kind) == "loopback":
        if mtu != ETHERNET_MTU:
            raise BedError(
                f"MTU {mtu} needs the netns bed (the loopback bed runs over lo, whatever its MTU)"
            )
        hosts = tuple(
            Host(name=f"h{i}", address=f"127.0.0.{i}", netns=None, bridge_port=None)
            for i in range(1, HOSTS + 1)
        )
        bed = Bed("loopback", hosts, None, "127.0.0.255")
        try:
            yield bed
        finally:
            bed.close()
        return
    segment = {"broadcast": NETNS_BROADCAST, "multicast": NETNS_MULTICAST}.get(transport)
    if segment is None:
        raise ValueError(f"transport must be broadcast or multicast, not {transport!r}")
    with netns.Testbed(hosts=HOSTS, client=True, subnet=NETNS_SUBNET) as testbed:
        assert testbed.client is not None
        hosts = tuple(
            Host(name=n.role, address=str(n.address), netns=n.name, bridge_port=_port_name(n.role))
            for n in testbed.hosts
        )
        c = testbed.client
        client = Host(
            name="client", address=str(c.address), netns=c.name, bridge_port=_port_name("client")
        )
        if mtu != ETHERNET_MTU:
            try:
                _set_mtu(testbed, mtu)
            except netns.TestbedError as exc:
                raise BedError(f"cannot set MTU {mtu} on the bed: {exc}") from None
        bed = Bed("netns", hosts, client, segment, testbed, mtu)
        try:
            yield bed
        finally:
            bed.close()


# -------------------------------------------------------------------------------- daemons


@dataclass(frozen=True, slots=True, kw_only=True)
class RingConfig:
    accelerated: bool = False
    fast: bool = False  # TimeoutProfile = fast
    peer: Path | None = None  # prefix of an original Spread 5.0.1 install, instead of spreadpy
    peer_user: str = PEER_USER  # the unprivileged user the original runs as
    client_transport: str = "unix"  # how clients reach their daemon: unix or tcp (peer: tcp)

    @property
    def implementation(self) -> str:
        return "spread-5.0.1" if self.peer is not None else "spreadpy"

    @property
    def label(self) -> str:
        ring = "accelerated" if self.accelerated else "original"
        timeouts = "fast" if self.fast else "default"
        return f"{self.implementation} {ring} ring, {timeouts} timeouts"


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerInstall:
    """The programs of an original Spread 5.0.1 installed under `prefix`."""

    prefix: Path
    daemon: Path  # sbin/spread
    flooder: Path | None  # bin/spflooder (make install puts it there)
    ping: Path | None  # bin/spping (make install does not: copy examples/spping by hand)


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def find_peer(prefix: Path | str) -> PeerInstall:
    """The original's programs under an install prefix; BedError saying what to do if the
    daemon is not there (a source tree instead of a prefix, a prefix not installed yet)."""
    prefix = Path(prefix).resolve()
    daemon = prefix / "sbin" / "spread"
    if not _executable(daemon):
        if _executable(prefix / "daemon" / "spread"):
            hint = (
                f"{prefix} is a build tree, not an install prefix: "
                f"make -C {prefix} install prefix=/tmp/spread-peer, then PEER=/tmp/spread-peer"
            )
        elif not prefix.is_dir():
            hint = f"{prefix} does not exist"
        else:
            hint = "install it with `make install prefix=PREFIX` in the configured source tree"
        raise BedError(f"PEER={prefix}: no executable {daemon}: {hint}")
    flooder = prefix / "bin" / "spflooder"
    ping = prefix / "bin" / "spping"
    return PeerInstall(
        prefix=prefix,
        daemon=daemon,
        flooder=flooder if _executable(flooder) else None,
        ping=ping if _executable(ping) else None,
    )


def peer_identity(user: str) -> tuple[int, int]:
    """(uid, gid) of the unprivileged user the original daemon runs as."""
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise BedError(
            f"user {user!r} does not exist: the original Spread must not run as root "
            "(it would chroot and switch to user `spread`); pick another with --peer-user"
        ) from None
    if entry.pw_uid == 0:
        raise BedError(f"user {user!r} is root: the original Spread needs an unprivileged user")
    return entry.pw_uid, entry.pw_gid


def _timeout_lines(t: Timeouts) -> str:
    return (
        f"TokenTimeout = {t.token_ms}\nHurryTimeout = {t.hurry_ms}\nAliveTimeout = {t.alive_ms}\n"
        f"JoinTimeout = {t.join_ms}\nRepTimeout = {t.rep_ms}\nSegTimeout = {t.seg_ms}\n"
        f"GatherTimeout = {t.gather_ms}\nFormTimeout = {t.form_ms}\n"
        f"LookupTimeout = {t.lookup_ms}\n"
    )


class Ring:
    """Spread daemons, one per bed host, with their configuration and state in a work dir."""

    def __init__(self, bed: Bed, config: RingConfig | None = None) -> None:
        config = config if config is not None else RingConfig()
        if config.peer is not None and bed.kind != "netns":
            raise BedError("the original Spread needs a netns bed (it cannot share 127.0.0.1)")
        if config.client_transport not in ("unix", "tcp"):
            raise ValueError(f"client transport must be unix or tcp, not {config.client_transport}")
        self.peer: PeerInstall | None = None
        self._peer_ids: tuple[int, int] | None = None
        if config.peer is not None:  # before anything is created: these may refuse
            self.peer = find_peer(config.peer)
            self._peer_ids = peer_identity(config.peer_user)
        self.bed = bed
        self.config = config
        self.port = SPREAD_PORT if bed.kind == "netns" else free_port()
        self.workdir = Path(tempfile.mkdtemp(prefix="spbench-"))
        self.state_dir = self.workdir / "state"
        self.state_dir.mkdir()
        self.names = tuple(h.name for h in bed.hosts)
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self.client_transport = "tcp" if config.peer is not None else config.client_transport

    @property
    def peer_daemon(self) -> Path | None:
        return None if self.peer is None else self.peer.daemon

    @property
    def packet_size(self) -> int:
        """The largest ring datagram the daemons send on this bed."""
        return packet_size(self.bed, peer=self.peer is not None)

    # -- configuration -------------------------------------------------------------------

    def config_text(self, name: str) -> str:
        daemons = "".join(f"\t{h.name}\t{h.address}\n" for h in self.bed.hosts)
        lines = [f"Spread_Segment {self.bed.segment}:{self.port} {{\n{daemons}}}\n"]
        if self.config.accelerated:
            lines.append("AcceleratedRing = true\n")
        if self.config.peer is None:
            lines.append(f'ClientSocketPath = "{self.unix_socket(name)}"\n')
            if self.config.fast:
                lines.append("TimeoutProfile = fast\n")
            size = None if self.bed.mtu is None else ring_packet_size(self.bed.mtu)
            if size is not None:
                lines.append(f"RingPacketSize = {size}\n")
        else:
            # Only the original's own keywords; it runs unprivileged, so it neither chroots
            # nor changes user and needs no RuntimeDir/DaemonUser/DaemonGroup. Without client
            # interfaces it listens on 0.0.0.0 and "auto" leaves SO_REUSEADDR off there: a
            # daemon started while the connections of the one before it (ours or its own, a
            # ring earlier or before a kill -9) sit in TIME_WAIT could not bind its port.
            lines.append("SocketPortReuse = ON\n")
            # spreadpy's flow control, not the original's PersonalWindow of 20: both rings
            # then send as much per token visit, and the figures compare the daemons alone.
            lines.append(f"Window = {DEFAULT_WINDOW}\nPersonalWindow = {DEFAULT_PERSONAL_WINDOW}\n")
            lines.append(_timeout_lines(FAST_TIMEOUTS if self.config.fast else LAN_TIMEOUTS))
        return "".join(lines)

    def run_dir(self, name: str) -> Path:
        """The original's private /tmp: its configuration and its Unix socket."""
        path = self.workdir / f"run-{name}"
        if not path.exists():
            path.mkdir()
            if self._peer_ids is not None:
                os.chown(path, *self._peer_ids)
        return path

    def config_path(self, name: str) -> Path:
        if self.peer is not None:
            path = self.run_dir(name) / PEER_CONF_NAME
        else:
            path = self.workdir / f"{name}.conf"
        if not path.exists():
            path.write_text(self.config_text(name))
            path.chmod(0o644)
        return path

    def unix_socket(self, name: str) -> str:
        return str(self.workdir / f"{name}.sock")

    def client_address(self, name: str) -> str:
        """What a client on host `name` passes to connect()/spflooder -s."""
        if self.client_transport == "unix":
            return self.unix_socket(name)
        return f"{self.port}@{self.bed.host(name).address}"

    def log_path(self, name: str) -> Path:
        return self.workdir / f"{name}.log"

    # -- processes -----------------------------------------------------------------------

    def __enter__(self) -> Ring:
        try:
            for name in self.names:
                self.start(name)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def argv(self, name: str) -> list[str]:
        conf = str(self.config_path(name))
        if self.peer is not None and self._peer_ids is not None:
            uid, gid = self._peer_ids
            run_dir = self.run_dir(name)
            daemon = run_dir / PEER_DAEMON_NAME
            if not daemon.exists():
                shutil.copy2(self.peer.daemon, daemon)
            # What it sees once its run directory is mounted on /tmp:
            daemon_seen = f"{PEER_PRIVATE_TMP}/{PEER_DAEMON_NAME}"
            conf_seen = f"{PEER_PRIVATE_TMP}/{PEER_CONF_NAME}"
            return [
                "unshare", "--mount", "--propagation", "private",
                "sh", "-c", _PEER_SHELL, "sh", str(run_dir),
                "setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups",
                "--", daemon_seen, "-n", name, "-c", conf_seen,
            ]  # fmt: skip
        state = str(self.state_dir)
        return [sys.executable, "-m", "spreadpy", "-c", conf, "-n", name, "--state-dir", state]

    def alive(self, name: str) -> bool:
        process = self._procs.get(name)
        return process is not None and process.poll() is None

    def pid(self, name: str) -> int:
        process = self._procs[name]
        return process.pid

    def cpu_seconds(self, name: str) -> float | None:
        """User + system CPU time the daemon on `name` has used so far (/proc/PID/stat)."""
        process = self._procs.get(name)
        if process is None or process.poll() is not None:
            return None
        try:
            stat = Path(f"/proc/{process.pid}/stat").read_text()
        except OSError:
            return None
        fields = stat.rpartition(")")[2].split()  # the name may hold spaces: skip past it
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS_PER_S

    def start(self, name: str) -> None:
        if self.alive(name):
            raise BedError(f"{name} is already running")
        if self.peer is None:
            ready_path = Path(self.unix_socket(name) + ".status")
        else:
            # The original's Unix socket appears once its sessions (and its ring ports) are up.
            ready_path = self.run_dir(name) / str(self.port)
            ready_path.unlink(missing_ok=True)  # left by a daemon killed with -9
        argv = self.argv(name)
        with self.log_path(name).open("ab") as log:
            self._procs[name] = self.bed.spawn(
                self.bed.host(name), argv, stdout=log, stderr=subprocess.STDOUT
            )
        ready = _poll(lambda: ready_path.exists() or not self.alive(name), START_TIMEOUT_S)
        if not ready or not self.alive(name):
            code = self._procs[name].poll()
            why = f"exit status {code}" if code is not None else f"no {ready_path}"
            raise BedError(
                f"{name} did not start within {START_TIMEOUT_S:.0f} s ({why}): "
                f"{' '.join(argv)}\n{self.log_tail(name)}"
            )

    def kill(self, name: str) -> float:
        """kill -9 the daemon on `name`; returns the monotonic time just before the signal."""
        process = self._procs.get(name)
        t = time.monotonic()
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(KILL_WAIT_S)
        return t

    def close(self) -> None:
        for name in self.names:
            self.kill(name)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def daemons_state(self, chars: int = 1500) -> str:
        """Which daemons run, and the end of the log of any that does not (for error messages)."""
        lines = []
        for name in self.names:
            process = self._procs.get(name)
            if process is None:
                lines.append(f"{name}: never started")
            elif process.poll() is None:
                lines.append(f"{name}: running, pid {process.pid}")
            else:
                lines.append(f"{name}: exited with status {process.returncode}")
                lines.append(self.log_tail(name, chars))
        return "\n".join(lines)

    def log_tail(self, name: str, chars: int = 3000) -> str:
        try:
            return self.log_path(name).read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""

    # -- state ---------------------------------------------------------------------------

    def status(self, name: str) -> dict[str, Any] | None:  # Any: the daemon's JSON
        """spreadpy's status document (`spreadpy status --json`), None if it does not answer."""
        if self.peer_daemon is not None:
            return None
        try:
            return query_status(self.unix_socket(name) + ".status")
        except (OSError, ValueError):
            return None

    def ring_formed(self, names: Sequence[str] | None = None) -> bool:
        """One operational ring of exactly `names` (default: every daemon now running)."""
        expected = sorted(names if names is not None else [n for n in self.names if self.alive(n)])
        states = [self.status(n) for n in expected]
        if any(s is None for s in states):
            return False
        return (
            len({tuple(s["ring_id"]) for s in states if s is not None}) == 1
            and all(s is not None and s["state"] == "operational" for s in states)
            and all(s is not None and sorted(s["members"]) == expected for s in states)
        )

    def wait_ring(
        self, names: Sequence[str] | None = None, timeout_s: float = RING_TIMEOUT_S
    ) -> float:
        """Wait for one ring of `names`; returns the seconds it took. Peer rings are checked
        by a client on each daemon seeing the others' clients in one group."""
        started = time.monotonic()
        if self.peer_daemon is None:
            ok = _poll(lambda: self.ring_formed(names), timeout_s)
        else:
            ok = self._wait_ring_by_clients(names or self.names, timeout_s)
        if not ok:
            logs = "\n".join(f"--- {n}\n{self.log_tail(n)}" for n in self.names)
            raise BedError(f"no ring of {names or self.names} within {timeout_s} s\n{logs}")
        return time.monotonic() - started

    def _wait_ring_by_clients(self, names: Sequence[str], timeout_s: float) -> bool:
        """A client on each daemon joins one group; wait until each sees all of them."""
        deadline = time.monotonic() + timeout_s
        while (remaining := deadline - time.monotonic()) > 0:
            attempt = min(remaining, PROBE_ATTEMPT_S)  # a daemon not up yet: try again soon
            probes = [
                self.bed.spawn(self.bed.host(name), self.probe_argv(name, i, len(names), attempt))
                for i, name in enumerate(names)
            ]
            codes = []
            for process in probes:
                try:
                    process.communicate(timeout=max(0.1, deadline - time.monotonic()) + 5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.communicate()
                codes.append(process.returncode)
            if all(code == 0 for code in codes):
                return True
            time.sleep(0.2)
        return False

    def probe_argv(self, name: str, index: int, members: int, timeout_s: float) -> list[str]:
        """A `watch` worker on `name` that exits 0 once group bench-ring-probe has `members`."""
        return [
            sys.executable, "-m", "benchmarks.workers", "watch", "-s", self.client_address(name),
            "-u", f"probe{index}", "--group", "bench-ring-probe",
            "--until-members", str(members), "--timeout", f"{timeout_s:.1f}",
        ]  # fmt: skip


def _poll(probe: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while True:
        if probe():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_S)


# ----------------------------------------------------------------------------------- wackapy


def wackapy_conf(ring: Ring, host: Host, group: str, vips: Sequence[str]) -> Path:
    """A wackamole.conf for wackapy beside `host`'s daemon: one VIP set per address in `vips`
    (on eth0, the bed's /24), balanced every second, ARP notices to the client host."""
    client = ring.bed.client
    sets = "".join(f"  {{ eth0:{vip}/24 }}\n" for vip in vips)
    notify = f"Notify {{\n  eth0:{client.address}/32\n}}\n" if client is not None else ""
    conf = ring.workdir / f"wackamole-{host.name}.conf"
    conf.write_text(
        f"Spread = {ring.client_address(host.name)}\nSpreadRetryInterval = 1s\n"
        f"Group = {group}\nControl = {ring.workdir}/wack-{host.name}.it\n"
        "Mature = 1s\nBalance {\n  AcquisitionsPerRound = all\n  interval = 1s\n}\n"
        f"VirtualInterfaces {{\n{sets}}}\n{notify}"
    )
    return conf


def wackapy_argv(conf: Path, name: str) -> list[str]:
    """wackapy in the foreground (-d) as Spread client `name`, from this source tree."""
    main = "import sys; from wackapy.cli import main; sys.exit(main(sys.argv[1:]))"
    return [sys.executable, "-c", main, "-c", str(conf), "-d", "-u", name]


def vip_owners(bed: Bed, vips: Sequence[str]) -> dict[str, list[str]]:
    """Each VIP -> the hosts that have it on eth0 now."""
    owners: dict[str, list[str]] = {vip: [] for vip in vips}
    for host in bed.hosts:
        text = bed.run(host, ["ip", "-o", "-4", "addr", "show", "dev", "eth0"])
        for vip in vips:
            if f" {vip}/" in text:
                owners[vip].append(host.name)
    return owners

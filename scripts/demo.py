"""`make demo`: three spreadpy daemons on loopback, two spusers, one daemon killed.

    python scripts/demo.py [--config conf/spread-loopback.conf]

1. starts the daemons n1, n2, n3 of conf/spread-loopback.conf (127.0.0.1-3, port 4803; ring
   state in a temporary directory) and waits until they form one ring;
2. starts two spusers, alice on n1 (`-s 4803`: the Unix socket /tmp/4803) and bob on n2
   (`-s 4803@127.0.0.2`: TCP), and drives them through pipes as Spread's own demo goes:
   both `j test`, alice `s test` with `Hello World!`;
3. kills n2 with SIGKILL and shows what alice's spuser prints as the ring re-forms without it
   (a TRANSITIONAL, then a REGULAR membership caused by the NETWORK) and bob's lost connection;
4. stops everything it started, by PID, whatever happened.

Everything the spusers print is shown as on a terminal, with the typed commands after the
prompts. Needs ports 4803/4804 on 127.0.0.1-3 and /tmp/4803 free: it says so and stops if not.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from spreadpy.cli import gather_local_addresses, load_config
from spreadpy.config import HostEntry, SpreadConfig
from spreadpy.daemon import Paths, default_paths, query_status
from spuser.pipe import SpuserProcess

DEFAULT_CONFIG = ROOT / "conf" / "spread-loopback.conf"
RING_WAIT_S = 20.0
NETWORK_CHANGE_WAIT_S = 20.0  # token loss + consensus with the default (not fast) timeouts
RULE = "-" * 78


def say(text: str = "") -> None:
    print(text, flush=True)


def section(title: str) -> None:
    say()
    say(RULE)
    say(title)
    say(RULE)


class Screen:
    """What one spuser's terminal would show: its output with the typed lines after prompts."""

    def __init__(self, spuser: SpuserProcess, name: str) -> None:
        self.spuser = spuser
        self.prefix = f"  {name:>5} | "
        self._partial = ""

    def show(self) -> None:
        """Print the complete lines received so far; a trailing prompt waits for its input."""
        text = self._partial + self.spuser.new_output().decode("latin-1")
        *lines, self._partial = text.split("\n")
        for line in lines:
            say(self.prefix + line.expandtabs(8))

    def skip_to_prompt(self) -> None:
        """Forget what was printed so far, except the prompt now waiting for input."""
        self._partial = self.spuser.new_output().decode("latin-1").rpartition("\n")[2]

    def type(self, line: str) -> None:
        self.show()
        self._partial += line + "\n"
        self.spuser.send(line)
        self.show()

    def finish(self) -> None:
        self.show()
        if self._partial:
            say(self.prefix + self._partial)
            self._partial = ""


# --- checks and daemons -----------------------------------------------------------------------


def taken_ports(config: SpreadConfig) -> list[str]:
    """Addresses a daemon of this config needs and something else holds."""
    problems = []
    for host in config.hosts:
        ip = str(host.address)
        for kind, port in (
            (socket.SOCK_STREAM, host.port),
            (socket.SOCK_DGRAM, host.port),
            (socket.SOCK_DGRAM, host.token_port),
        ):
            with socket.socket(socket.AF_INET, kind) as probe:
                # as the daemon binds: a TIME_WAIT left by a previous run is no obstacle
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind((ip, port))
                except OSError as exc:
                    proto = "TCP" if kind == socket.SOCK_STREAM else "UDP"
                    reason = "in use" if exc.errno == errno.EADDRINUSE else exc.strerror
                    problems.append(f"{proto} {ip}:{port} ({reason})")
    return problems


def live_unix_socket(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
        except OSError:
            return False
    return True


class Daemons:
    """The three daemons: started by us, stopped by PID."""

    def __init__(self, config_path: Path, config: SpreadConfig, state_dir: Path) -> None:
        self.config_path = config_path
        self.config = config
        self.state_dir = state_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def host(self, name: str) -> HostEntry:
        return next(h for h in self.config.hosts if h.name == name)

    def _paths(self, name: str) -> Paths:
        # The daemons compute theirs from this machine's addresses; so must we.
        return default_paths(
            self.config, self.host(name), str(self.state_dir), gather_local_addresses()
        )

    def status_socket(self, name: str) -> str:
        return self._paths(name).status_socket

    def unix_socket(self, name: str) -> str:
        return self._paths(name).unix_socket

    def log(self, name: str) -> Path:
        return self.state_dir / f"{name}.log"

    def start(self, name: str) -> int:
        with self.log(name).open("wb") as log:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "spreadpy",
                    "-c",
                    str(self.config_path),
                    "-n",
                    name,
                    "--state-dir",
                    str(self.state_dir),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # our Ctrl-C goes to us; we stop them ourselves
            )
        self.procs[name] = proc
        return proc.pid

    def exited(self) -> list[str]:
        return [name for name, proc in self.procs.items() if proc.poll() is not None]

    def wait_ring(self, names: list[str], timeout_s: float) -> list[str]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if dead := [n for n in self.exited() if n in names]:
                raise RuntimeError(f"{', '.join(dead)} exited at start:\n{self.tail(dead[0])}")
            try:
                states = [query_status(self.status_socket(n), 1.0) for n in names]
            except OSError:
                states = []
            if states and all(
                s["state"] == "operational" and sorted(s["members"]) == sorted(names)
                for s in states
            ):
                return [str(m) for m in states[0]["members"]]
            time.sleep(0.05)
        raise RuntimeError(f"no ring of {names} within {timeout_s} s")

    def kill(self, name: str) -> None:
        proc = self.procs[name]
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(5)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def tail(self, name: str, lines: int = 15) -> str:
        try:
            text = self.log(name).read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


@contextlib.contextmanager
def spusers(*args_list: list[str]) -> Iterator[list[SpuserProcess]]:
    started: list[SpuserProcess] = []
    try:
        started.extend(SpuserProcess(args, label=args[1]) for args in args_list)
        yield started
    finally:
        for spuser in started:
            spuser.close()


# --- the demo ---------------------------------------------------------------------------------


def run(config_path: Path) -> int:
    config = load_config(str(config_path))
    names = [h.name for h in config.hosts][:3]
    if len(names) < 3:
        say(f"demo: {config_path} names {len(names)} daemons; the demo needs three")
        return 1
    problems = taken_ports(config)
    with tempfile.TemporaryDirectory(prefix="spreadpy-demo-") as tmp:
        daemons = Daemons(config_path, config, Path(tmp))
        busy_sockets = [p for p in map(daemons.unix_socket, names) if live_unix_socket(p)]
        if problems or busy_sockets:
            port = config.hosts[0].port
            say(f"demo: cannot start: port {port} (or its Unix socket) is already taken:")
            for problem in problems + [f"{p} (a daemon answers there)" for p in busy_sockets]:
                say(f"  {problem}")
            say("Stop the Spread or spreadpy daemon using it (e.g. a previous demo) and rerun.")
            return 1
        try:
            return _demo(daemons, names)
        finally:
            daemons.stop_all()


def _demo(daemons: Daemons, names: list[str]) -> int:
    first, second, _third = names
    shown = daemons.config_path
    with contextlib.suppress(ValueError):
        shown = shown.relative_to(ROOT)
    section(f"1. Three daemons on loopback ({shown})")
    for name in names:
        host = daemons.host(name)
        pid = daemons.start(name)
        say(f"  {name}: {host.address}:{host.port}  pid {pid}  log {daemons.log(name)}")
    try:
        members = daemons.wait_ring(names, RING_WAIT_S)
    except RuntimeError as exc:
        say(f"demo: {exc}")
        return 1
    say(f"  ring formed: {' '.join(members)}")

    port = daemons.host(first).port
    section(
        f"2. Two spusers: alice on {first} (-s {port}, Unix socket {daemons.unix_socket(first)}),"
        f"\n   bob on {second} (-s {port}@{daemons.host(second).address}, TCP)"
    )
    alice_args = ["-u", "alice", "-s", str(port)]
    bob_args = ["-u", "bob", "-s", f"{port}@{daemons.host(second).address}"]
    with spusers(alice_args, bob_args) as (alice_proc, bob_proc):
        alice, bob = Screen(alice_proc, "alice"), Screen(bob_proc, "bob")
        for proc in (alice_proc, bob_proc):
            proc.wait_for(b"-- quit\n\nUser> ")
        say("  $ spuser " + " ".join(alice_args))
        alice.show()
        say("  $ spuser " + " ".join(bob_args) + "   (menu as above)")
        bob.skip_to_prompt()  # the same lines again

        section("3. Both join group test")
        alice.type("j test")
        alice_proc.wait_for(f"Due to the JOIN of #alice#{first}\n\nUser> ")
        alice.show()
        bob.type("j test")
        for proc in (alice_proc, bob_proc):
            proc.wait_for(f"Due to the JOIN of #bob#{second}\n\nUser> ")
        alice.show()
        bob.show()

        section("4. alice sends 'Hello World!' to test (SAFE); both receive it")
        alice.type("s test")
        alice_proc.wait_for(b"enter message: ")
        alice.type("Hello World!")
        for proc in (alice_proc, bob_proc):
            proc.wait_for(b"Hello World!\n\n\nUser> ")
        alice.show()
        bob.show()

        section(f"5. kill -9 {second} (bob's daemon, pid {daemons.procs[second].pid})")
        daemons.kill(second)
        say(f"  waiting for the ring to re-form without {second} ...")
        bob_proc.wait_for(b"Bye.\n", timeout=NETWORK_CHANGE_WAIT_S)
        alice_proc.wait_for(b"Due to NETWORK change", timeout=NETWORK_CHANGE_WAIT_S)
        alice_proc.wait_for(b"\nUser> ")
        say("  alice, still on a live daemon, sees the group shrink:")
        alice.show()
        say("  bob's daemon is gone, so his spuser loses its connection:")
        bob.finish()

        section("6. alice quits")
        alice.type("q")
        alice_proc.wait_exit()
        alice.finish()

    section("Done: daemons stopped, temporary state removed.")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    args = parser.parse_args(argv)
    os.chdir(ROOT)
    try:
        return run(args.config.resolve())
    except TimeoutError as exc:
        say(f"demo: a spuser did not print what was expected:\n{exc}")
        return 1
    except KeyboardInterrupt:
        say("demo: interrupted; everything it started is stopped")
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""Real spreadpy daemons for tests: separate processes on loopback addresses.

    with Cluster(tmp_path, names=("n1", "n2", "n3"), port=free_port()) as cluster:
        cluster.wait_ring()                    # one ring of every running daemon
        d = cluster["n2"]; d.address, d.port, d.unix_socket
        cluster.kill("n3")                     # kill -9, by our own PID
        cluster.start("n3")                    # restart (same state dir: ring ids keep growing)

Each cluster gets its own port (so tests never collide with each other or with a demo on 4803)
and its own Unix socket paths and state directory under tmp_path. Every process a Cluster
started is killed when it exits, even when the test fails.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FAST_TIMEOUTS = "TimeoutProfile = fast\n"


def free_port() -> int:
    """A port whose UDP pair (port, port+1) and TCP port look free on 127.0.0.1."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port >= 65000:
            continue
        try:
            for kind in (socket.SOCK_DGRAM, socket.SOCK_DGRAM):
                with socket.socket(socket.AF_INET, kind) as s:
                    s.bind(("127.0.0.1", port + 1))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair found")


@dataclass
class DaemonProc:
    name: str
    address: str
    port: int
    unix_socket: str
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def status_socket(self) -> str:
        return self.unix_socket + ".status"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def status(self, timeout_s: float = 2.0) -> dict[str, Any]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout_s)
            sock.connect(self.status_socket)
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        result: dict[str, Any] = json.loads(data)
        return result

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


class Cluster:
    def __init__(
        self,
        base: Path,
        names: Iterable[str] = ("n1", "n2", "n3"),
        *,
        port: int | None = None,
        extra_config: str = FAST_TIMEOUTS,
    ) -> None:
        self.base = base
        self.port = port or free_port()
        self.names = tuple(names)
        self.state_dir = base / "state"
        self.state_dir.mkdir(parents=True, exist_ok=True)
        hosts = "\n".join(f"\t{n}\t127.0.0.{i + 1}" for i, n in enumerate(self.names))
        self.config_path = base / "spread.conf"
        self.config_path.write_text(
            f"Spread_Segment 127.0.0.255:{self.port} {{\n{hosts}\n}}\n"
            f'ClientSocketPath = "{base}/SOCKET"\n'
            "EventTimeStamp\n" + extra_config
        )
        self.daemons: dict[str, DaemonProc] = {}
        for i, name in enumerate(self.names):
            self.daemons[name] = DaemonProc(
                name, f"127.0.0.{i + 1}", self.port, f"{base}/{name}.sock", base / f"{name}.log"
            )

    def __getitem__(self, name: str) -> DaemonProc:
        return self.daemons[name]

    def __enter__(self) -> Cluster:
        try:
            for name in self.names:
                self.start(name)
        except BaseException:
            self.stop_all()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()

    def config_for(self, name: str) -> Path:
        """One config file per daemon: each names its own Unix socket path."""
        path = self.base / f"{name}.conf"
        text = self.config_path.read_text().replace(
            f"{self.base}/SOCKET", self.daemons[name].unix_socket
        )
        path.write_text(text)
        return path

    def start(self, name: str) -> DaemonProc:
        d = self.daemons[name]
        if d.alive:
            raise RuntimeError(f"{name} is already running")
        log = d.log_path.open("ab")
        d.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "spreadpy",
                "-c",
                str(self.config_for(name)),
                "-n",
                name,
                "--state-dir",
                str(self.state_dir),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        wait_until(lambda: os.path.exists(d.status_socket) or not d.alive, 10.0)
        if not d.alive:
            raise RuntimeError(f"{name} exited at start:\n{d.log()}")
        return d

    def kill(self, name: str) -> None:
        """kill -9 one daemon, by the PID we started."""
        d = self.daemons[name]
        if d.process is not None and d.process.poll() is None:
            d.process.send_signal(signal.SIGKILL)
            d.process.wait(5)

    def stop(self, name: str) -> None:
        d = self.daemons[name]
        if d.process is not None and d.process.poll() is None:
            d.process.send_signal(signal.SIGTERM)
            try:
                d.process.wait(5)
            except subprocess.TimeoutExpired:
                d.process.kill()
                d.process.wait(5)

    def stop_all(self) -> None:
        for name in self.names:
            self.kill(name)

    def running(self) -> list[DaemonProc]:
        return [d for d in self.daemons.values() if d.alive]

    def wait_ring(self, timeout_s: float = 15.0) -> list[str]:
        """Wait until every running daemon is operational in one ring of exactly them."""
        expected = sorted(d.name for d in self.running())

        def one_ring() -> bool:
            try:
                states = [d.status() for d in self.running()]
            except OSError:
                return False
            rings = {tuple(s["ring_id"]) for s in states}
            return (
                len(rings) == 1
                and all(s["state"] == "operational" for s in states)
                and all(sorted(s["members"]) == expected for s in states)
            )

        if not wait_until(one_ring, timeout_s):
            logs = "\n".join(f"--- {d.name}\n{d.log()[-3000:]}" for d in self.daemons.values())
            raise AssertionError(f"no single ring of {expected} within {timeout_s}s\n{logs}")
        return expected


def wait_until(predicate: Any, timeout_s: float, every_s: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every_s)
    return bool(predicate())

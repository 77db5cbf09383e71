"""Drive a spuser process through pipes: type commands, wait for what it prints.

    with SpuserProcess(["-u", "alice", "-s", "4803@127.0.0.1"]) as alice:
        alice.wait_for(b"User> ")
        alice.send("j test")
        alice.wait_for(b"Due to the JOIN of #alice#")
        print(alice.output.decode())

stdout is collected byte for byte by a reader thread (spuser writes it unbuffered); stderr is
kept apart. `wait_for` only waits for output, never for time to pass: it gives up with
TimeoutError (carrying everything printed so far) after `timeout` seconds.
Used by scripts/demo.py and tests/test_spuser.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import IO, Final

DEFAULT_WAIT_S: Final = 10.0


class _Collector:
    """Everything a pipe delivers, and a condition to wait for more."""

    def __init__(self, pipe: IO[bytes], name: str) -> None:
        self.data = bytearray()
        self.closed = False
        self.cond = threading.Condition()
        self._fd = pipe.fileno()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                chunk = os.read(self._fd, 65536)
            except OSError:
                chunk = b""
            with self.cond:
                if chunk:
                    self.data += chunk
                else:
                    self.closed = True
                self.cond.notify_all()
            if not chunk:
                return

    def join(self, timeout_s: float) -> None:
        self._thread.join(timeout_s)


class SpuserProcess:
    """One `python -m spuser ARGS` child with its stdin and stdout on pipes."""

    def __init__(
        self,
        args: Sequence[str],
        *,
        label: str = "",
        env: Mapping[str, str] | None = None,
        python: str = sys.executable,
    ) -> None:
        self.label = label or " ".join(args)
        self.process = subprocess.Popen(
            [python, "-m", "spuser", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(env) if env is not None else None,
        )
        assert self.process.stdout is not None and self.process.stderr is not None
        self._stdout = _Collector(self.process.stdout, f"spuser-out-{self.label}")
        self._stderr = _Collector(self.process.stderr, f"spuser-err-{self.label}")
        self._mark = 0  # wait_for searches from here
        self._shown = 0  # new_output() returns from here

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def output(self) -> bytes:
        """All of stdout so far."""
        with self._stdout.cond:
            return bytes(self._stdout.data)

    @property
    def errors(self) -> bytes:
        """All of stderr so far."""
        with self._stderr.cond:
            return bytes(self._stderr.data)

    def new_output(self) -> bytes:
        """stdout printed since the previous call."""
        with self._stdout.cond:
            data = bytes(self._stdout.data[self._shown :])
            self._shown = len(self._stdout.data)
        return data

    def send(self, line: str | bytes) -> None:
        """Type one line (a newline is added)."""
        raw = line.encode() if isinstance(line, str) else line
        stdin = self.process.stdin
        assert stdin is not None
        stdin.write(raw + b"\n")
        stdin.flush()

    def close_stdin(self) -> None:
        stdin = self.process.stdin
        if stdin is not None and not stdin.closed:
            stdin.close()

    def wait_for(
        self, pattern: bytes | str, *, count: int = 1, timeout: float = DEFAULT_WAIT_S
    ) -> bytes:
        """Wait until `pattern` was printed `count` more times; return the output up to it.

        Searching starts where the previous wait_for stopped, so each call consumes output.
        """
        needle = pattern.encode() if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        out = self._stdout
        with out.cond:
            while True:
                end = self._mark
                for _ in range(count):
                    found = out.data.find(needle, end)
                    if found < 0:
                        break
                    end = found + len(needle)
                else:
                    chunk = bytes(out.data[self._mark : end])
                    self._mark = end
                    return chunk
                remaining = deadline - time.monotonic()
                if out.closed or remaining <= 0:
                    why = "exited" if out.closed else f"did not print it within {timeout} s"
                    raise TimeoutError(
                        f"spuser {self.label} {why}: waiting for {needle!r} x{count}\n"
                        f"--- stdout since the last match:\n"
                        f"{bytes(out.data[self._mark :]).decode(errors='replace')}\n"
                        f"--- stderr:\n{self.errors.decode(errors='replace')}"
                    )
                out.cond.wait(remaining)

    def wait_exit(self, timeout: float = DEFAULT_WAIT_S) -> int:
        """The exit status, once the process ended and its output is all in."""
        status = self.process.wait(timeout)
        self._stdout.join(timeout)
        self._stderr.join(timeout)
        return status

    def kill(self) -> None:
        """SIGKILL to our own child (by its PID), then reap it."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()

    def close(self) -> None:
        self.close_stdin()
        self.kill()
        self._stdout.join(DEFAULT_WAIT_S)  # the child is gone: its pipes are at EOF
        self._stderr.join(DEFAULT_WAIT_S)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()

    def __enter__(self) -> SpuserProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

"""Taking a Unix socket path at start-up, for spreadpy's and wackapy's listeners."""

from __future__ import annotations

import contextlib
import os
import socket


class PathInUse(OSError):
    """A live process serves the path: another daemon with the same configuration."""


def claim_unix_path(path: str) -> None:
    """Make `path` free to bind: remove a socket left by a killed process (nothing answers
    on it); raise PathInUse if something still answers, OSError if it cannot be checked."""
    if not os.path.exists(path):
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # stale: its process is gone
        return
    finally:
        probe.close()
    raise PathInUse(f"{path} is served by a running process")

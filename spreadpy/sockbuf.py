"""Socket buffer sizes for client sessions, shared by the daemon and the client libraries.

The original daemon (session.c `Sess_accept`) and libspread (sp.c `set_large_socket_buffers`)
both raise a session socket's send and receive buffers to 200 KB (Linux doubles what is asked,
so getsockopt reports 400 KB). The daemon's MaxSessionMessages counts only the messages the
kernel has not taken, so these buffers are what lets a reader fall a few thousand small
messages behind under a flood without being dropped "for not reading".
"""

from __future__ import annotations

import contextlib
import socket
from typing import Final

SESSION_BUFFER_BYTES: Final = 200 * 1024


def set_session_buffers(sock: socket.socket) -> None:
    """Ask for SESSION_BUFFER_BYTES each way; a refusal leaves the kernel's defaults."""
    for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, option, SESSION_BUFFER_BYTES)

"""The captured client-protocol vectors (shared/spec/vectors/client), for every test that
replays them: where they are, which there are, and how to read them.

They sit beside the repository (CI checks shared/ out there); tests marked `needs_vectors`
are skipped with that reason when they are missing.
"""

from __future__ import annotations

import hashlib
import json
from functools import cache
from typing import Any

import pytest

from .spec_examples import SPEC_DIR

VECTOR_DIR = SPEC_DIR / "vectors" / "client"
LIBSPREAD_SCENARIOS = (
    "abort_without_kill",
    "agreed_message",
    "connect_accept",
    "connect_reject_duplicate",
    "disconnect",
    "join",
    "large_message",
    "leave",
    "multigroup_send",
    "no_membership_client",
    "private_and_self_discard",
    "random_name",
    "safe_message",
    "second_join",
)
RAW_PROBES = ("big_endian_client", "connect_errors", "invalid_requests", "legacy_handshakes")
needs_vectors = pytest.mark.skipif(
    not VECTOR_DIR.is_dir(),
    reason=f"client protocol vectors not found at {VECTOR_DIR} (CI checks shared/ out beside "
    "the repository)",
)


@cache
def load_vector(name: str) -> dict[str, Any]:  # Any: parsed JSON
    data: dict[str, Any] = json.loads((VECTOR_DIR / f"{name}.json").read_text())
    return data


def chunk_bytes(chunk: dict[str, Any]) -> bytes:
    """The unit's bytes, with a payload given only by length + pattern + sha256 rebuilt."""
    data = bytes.fromhex(chunk["hex"])
    payload = chunk.get("payload_not_inlined")
    if payload:
        assert payload["offset"] == len(data)
        body = bytes(ord("A") + i % 26 for i in range(payload["len"]))
        assert hashlib.sha256(body).hexdigest() == payload["sha256"]
        assert body[:64].hex() == payload["first_64_hex"]
        data += body
    return data


def without_kill_junk(frame: bytes) -> bytes:
    """A KILL with the bytes after the NUL of its group slot zeroed."""
    slot = frame[48:80]
    return frame[:48] + slot[: slot.index(b"\0")].ljust(32, b"\0") + frame[80:]

"""Example text read from the specs in shared/spec at run time.

Our tests write IPv4 addresses only from 127.0.0.0/8 and 198.18.0.0/15 (plus the seed files'
192.168.1.x). Some spec examples use other addresses, and values the spec pins for them (a
configuration hash, the VirtualID of a daemon named by its address) depend on that exact text.
Such examples are read from the spec here instead of being copied into the tests, so those
addresses live only in the spec.

The specs sit in shared/spec beside the repository (CI checks it out there). A test that needs
a missing spec file is skipped, with a reason naming the file; a spec file that is present but
no longer holds the expected example raises LookupError, so the test fails loudly.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

SPEC_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "spec"

_FENCED = re.compile(r"^```[^\n]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
_HEADING = re.compile(r"(#+)\s")


def spec_text(name: str) -> str:
    """The text of shared/spec/<name>, or skip the calling test when the file is absent."""
    path = SPEC_DIR / name
    if not path.is_file():
        pytest.skip(f"spec file {path} is missing; this test reads its example from there")
    return path.read_text(encoding="utf-8")


def section(text: str, heading: str) -> str:
    """The section whose heading line starts with ``heading`` (e.g. ``"## 7."``), heading
    included, up to the next heading of the same or a higher level. Lines inside fenced
    blocks are never headings (config comments start with ``#`` too)."""
    lines = text.splitlines(keepends=True)
    start: int | None = None
    level = 0
    in_fence = False
    for i, line in enumerate(lines):
        if line.startswith("```"):
            in_fence = not in_fence
            continue
        if in_fence:
            continue
        match = _HEADING.match(line)
        if start is None:
            if match and line.startswith(heading):
                start, level = i, len(match.group(1))
        elif match and len(match.group(1)) <= level:
            return "".join(lines[start:i])
    if start is None:
        raise LookupError(f"no section headed {heading!r} in the spec")
    return "".join(lines[start:])


def between(text: str, start: str, end: str) -> str:
    """The text from the first ``start`` up to (not including) the next ``end``."""
    at = text.find(start)
    if at < 0:
        raise LookupError(f"{start!r} not found in the spec")
    stop = text.find(end, at + len(start))
    if stop < 0:
        raise LookupError(f"{end!r} not found after {start!r} in the spec")
    return text[at:stop]


def block_after(text: str, marker: str) -> tuple[str, str]:
    """The first fenced block after ``marker``, and the prose that follows it up to the next
    fenced block or heading (where the spec states the example's outcome)."""
    at = text.find(marker)
    if at < 0:
        raise LookupError(f"{marker!r} not found in the spec")
    block = _FENCED.search(text, at)
    if block is None:
        raise LookupError(f"no fenced block after {marker!r} in the spec")
    rest = text[block.end() :]
    cut = re.search(r"^(?:```|#)", rest, re.MULTILINE)
    return block.group(1), rest[: cut.start() if cut else len(rest)]


def spread_conf_example(number: int) -> tuple[str, str]:
    """spread-conf.md §9 example ``number``: its file text and the outcome stated after it."""
    block, outcome = block_after(section(spec_text("spread-conf.md"), "## 9."), f"**Ex. {number} (")
    return block, outcome.split("**Ex. ", 1)[0]

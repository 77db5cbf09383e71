"""The one error tree of spreadpy and wackapy.

SpreadError
  ConfigError        a configuration file is wrong; carries every problem found, each located
  MalformedPacket    a peer sent bytes we cannot decode: count, log, drop
  WireError          a client broke the client protocol; carries the Spread error code to return
  LocalProtocolError the caller asked a core for something illegal: a bug on our side
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class SpreadError(Exception):
    """Base of every error spreadpy and wackapy raise on purpose."""


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One thing wrong with a configuration file, at a 1-based line and column."""

    path: str
    line: int
    col: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.col}: {self.message}"


class ConfigError(SpreadError):
    """A configuration file could not be accepted. `problems` lists every error, in file order."""

    def __init__(self, problems: Sequence[ConfigProblem]) -> None:
        if not problems:
            raise ValueError("ConfigError needs at least one problem")
        self.problems: tuple[ConfigProblem, ...] = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))

    @property
    def path(self) -> str:
        return self.problems[0].path

    @property
    def line(self) -> int:
        return self.problems[0].line

    @property
    def col(self) -> int:
        return self.problems[0].col


class MalformedPacket(SpreadError):
    """A ring packet that cannot be decoded or fails authentication."""


class WireError(SpreadError):
    """A client message that breaks the client protocol.

    `code` is the Spread error code (negative int, e.g. -13 for ILLEGAL_MESSAGE) the daemon
    answers with, when the protocol has a reply for it.
    """

    def __init__(self, code: int, message: str) -> None:
        self.code = code
        super().__init__(message)


class LocalProtocolError(SpreadError):
    """A core was asked to do something its state does not allow: a bug in the caller."""

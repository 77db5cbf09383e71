"""wackamole.conf text -> `WackamoleConfig`; pure (no I/O, no DNS); shared/spec/wackamole.md §1.

Input: the file's text and its path (used only in messages). Output: a frozen `WackamoleConfig`
with every omitted setting at its default, or `spreadpy.errors.ConfigError` listing every problem
found, each at a 1-based line and column (columns count characters; a tab is one column).
Things that are legal but probably not meant come back as `WackamoleConfig.warnings`.

The dialect is upstream's (keywords case-insensitive, `#` comments anywhere, `"..."`/`'...'`
strings without escapes, free-form layout) with these deliberate differences; the user-facing
list, with examples, is docs/wackamole-conf.md:

* `=` needs no blanks around it (`Group=www`); upstream lexed `Group=www` as one word.
* `Nh` means N hours (upstream: N seconds). `Nms` is accepted (milliseconds).
* Mature and Balance Interval default to the documented 5 s and 4 s (upstream code: 300 s).
* A keyword is a plain value when it stands on the same line as its `=` (`Group = all`).
* Missing Group, missing VirtualInterfaces, a bad Group name, duplicate virtual addresses, a
  virtual address without interface or prefix length, bad octets and prefixes, and table
  overruns are errors (upstream: accepted, used anyway, or memory corruption).
* `Prefer` takes blocks and bare addresses and means what the man page says (every VIF head in
  the block); host names are rejected (upstream: uninitialised data). `Prefer None` adds nothing.
* `Notify` items take `throttle`/`ping` in either order; braceless `Notify ITEM` works for any
  item; a block without interface name matches every interface.
* Empty `{ }` blocks are accepted as no-ops, except an empty address set inside VirtualInterfaces.
* Quoted strings must close on their line; text glued to a closing quote is an error.
* IPv6 virtual addresses (`eth0:2001:db8::10/64`) and `Prefer` blocks; IPv4-only `Notify`.
* Perl (`PerlUse`, `PerlUseLib`, `RunDynamic a::b`) is an error: there is no embedded Perl.
* Extensions: `RunCommand "CMD" on up|on down|post up|post down`, `HealthCheck = "CMD"`,
  `HealthCheckInterval = T`, `MetricsPort = N`; `LogFacility` is validated and kept.

Alias labels (`eth4:1`) are never written here: the daemon picks them when it adds an address.
"""

from __future__ import annotations

import enum
import ipaddress
import re
import shlex
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import NoReturn, TypeVar

from spreadpy.errors import ConfigError, ConfigProblem

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Table bounds from upstream defines.h, which never checked them.
VIFS_MAX = 254  # MAX_PSEUDO
EXTRAS_MAX = 30  # MAX_DEP_IF: extra addresses per VIF after its head
PREFER_MAX = 254  # MAX_PSEUDO
NOTIFY_MAX = 1024  # MAX_NOTIF
HOOKS_MAX = 1024  # RunDynamic + RunCommand entries together

IFNAME_BYTES_MAX = 15  # Linux IFNAMSIZ - 1
GROUP_NAME_LEN_MAX = 31  # Spread MAX_GROUP_NAME - 1; bytes '$'..'~'
CONTROL_PATH_BYTES_MAX = 107  # sizeof(sun_path) - 1 on Linux
NUMBER_DIGITS_MAX = 9  # every count, port and time fits; bounds int() work on hostile input
TIME_MAX_S = 365 * 24 * 3600.0

DEFAULT_SPREAD = "4803"
DEFAULT_SPREAD_RETRY_INTERVAL_S = 5.0
DEFAULT_MATURE_S = 5.0  # documented value; upstream code overwrote it with 300 s
DEFAULT_ARP_CACHE_S = 60.0
DEFAULT_ACQUISITIONS_PER_ROUND = 1
DEFAULT_BALANCE_INTERVAL_S = 4.0  # documented value; upstream code overwrote it with 300 s
DEFAULT_MODULE_DIR = "."
DEFAULT_HEALTH_CHECK_INTERVAL_S = 2.0
DEFAULT_HINT_PREFIXLEN_V4 = 24
DEFAULT_HINT_PREFIXLEN_V6 = 64

SYSLOG_FACILITIES = frozenset(
    (
        "auth",
        "authpriv",
        "cron",
        "daemon",
        "ftp",
        "kern",
        "lpr",
        "mail",
        "news",
        "syslog",
        "user",
        "uucp",
        *(f"local{n}" for n in range(8)),
    )
)


# --- the result ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VipAddress:
    """One virtual address: where it goes, with its netmask, and its ARP-notification hint."""

    ifname: str  # the base interface (`eth4`), never an alias label
    interface: IPInterface  # address and the prefix length written in the file
    hint_prefixlen: int  # the `nN` suffix: which network neighbours may be notified

    @property
    def address(self) -> IPAddress:
        return self.interface.ip

    @property
    def hint_network(self) -> IPNetwork:
        """The network whose hosts may receive this address's notifications."""
        return ipaddress.ip_network(f"{self.interface.ip}/{self.hint_prefixlen}", strict=False)

    def __str__(self) -> str:
        """The form the file uses: `eth4:192.168.1.20/24`, `eth0:[2001:db8::10]/64n48`."""
        ip, prefixlen = self.interface.ip, self.interface.network.prefixlen
        address = f"{ip}/{prefixlen}" if ip.version == 4 else f"[{ip}]/{prefixlen}"
        default = _default_hint(ip.version)
        suffix = "" if self.hint_prefixlen == default else f"n{self.hint_prefixlen}"
        return f"{self.ifname}:{address}{suffix}"


@dataclass(frozen=True, slots=True)
class Vif:
    """A virtual interface: addresses owned as a unit. The head identifies it on the wire."""

    addresses: tuple[VipAddress, ...]  # head first; never empty

    @property
    def head(self) -> VipAddress:
        return self.addresses[0]

    @property
    def extras(self) -> tuple[VipAddress, ...]:
        return self.addresses[1:]

    @property
    def set_id(self) -> str:
        """The head address as text: the name all members agree on (interface names may differ
        between hosts, so they are not part of it)."""
        return str(self.head.address)


@dataclass(frozen=True, slots=True)
class NotifyBlock:
    """Announce acquired addresses to every host of `network` (the part within the hint)."""

    ifname: str | None  # only VIF addresses on this interface; None: any interface
    network: ipaddress.IPv4Network
    throttle_pps: int = 0  # packets per pass (one pass a second); 0: unlimited
    ping: bool = False  # upstream: no effect on blocks (no MAC is known); kept for fidelity


@dataclass(frozen=True, slots=True)
class NotifyArpCache:
    """Announce acquired addresses to every cluster-wide ARP-cache entry within the hint."""

    ping: bool = False


NotifyTarget = NotifyBlock | NotifyArpCache


@dataclass(frozen=True, slots=True)
class BalanceConfig:
    acquisitions_per_round: int | None = DEFAULT_ACQUISITIONS_PER_ROUND  # None: `all`
    interval_s: float = DEFAULT_BALANCE_INTERVAL_S

    @property
    def complete(self) -> bool:
        """`AcquisitionsPerRound = all`."""
        return self.acquisitions_per_round is None


class HookEvent(enum.Enum):
    ON_UP = "on up"
    ON_DOWN = "on down"
    POST_UP = "post up"
    POST_DOWN = "post down"


@dataclass(frozen=True, slots=True)
class DynamicHook:
    """`RunDynamic FILE:SYMBOL EVENT`: a C function in a shared object (nothing is loaded here)."""

    event: HookEvent
    module_dir: str  # the ModuleDir in effect at the RunDynamic line
    file: str
    symbol: str

    @property
    def module_path(self) -> str:
        """Where the daemon looks first (upstream then retries with .so and .bundle appended)."""
        return self.file if self.file.startswith("/") else f"{self.module_dir}/{self.file}"


@dataclass(frozen=True, slots=True)
class CommandHook:
    """`RunCommand "CMD" EVENT` (wackapy extension): a program run without a shell."""

    event: HookEvent
    argv: tuple[str, ...]  # never empty


@dataclass(frozen=True, slots=True)
class HealthCheck:
    """`HealthCheck = "CMD"` (wackapy extension): exit status 0 means this member may hold VIPs."""

    argv: tuple[str, ...]
    interval_s: float = DEFAULT_HEALTH_CHECK_INTERVAL_S


@dataclass(frozen=True, slots=True, kw_only=True)
class WackamoleConfig:
    group: str
    vifs: tuple[Vif, ...]
    spread: str = DEFAULT_SPREAD  # "PORT", "PORT@HOST" (normalised) or a socket path
    spread_retry_interval_s: float = DEFAULT_SPREAD_RETRY_INTERVAL_S
    control_path: str | None = None  # None: no control socket
    log_facility: str | None = None  # lower case, without LOG_; None: daemon
    mature_s: float = DEFAULT_MATURE_S
    arp_cache_s: float = DEFAULT_ARP_CACHE_S
    balance: BalanceConfig = field(default_factory=BalanceConfig)
    prefer: tuple[IPNetwork, ...] = ()
    notify: tuple[NotifyTarget, ...] = ()
    module_dir: str = DEFAULT_MODULE_DIR
    dynamic_hooks: tuple[DynamicHook, ...] = ()
    command_hooks: tuple[CommandHook, ...] = ()
    health_check: HealthCheck | None = None
    metrics_port: int | None = None
    warnings: tuple[ConfigProblem, ...] = field(default=(), compare=False)

    @property
    def addresses(self) -> tuple[VipAddress, ...]:
        """Every virtual address, VIF by VIF, head first."""
        return tuple(a for vif in self.vifs for a in vif.addresses)

    @property
    def spread_port(self) -> int | None:
        """None: `spread` is a Unix socket path."""
        return None if self.spread.startswith("/") else int(self.spread.partition("@")[0])

    @property
    def spread_host(self) -> str | None:
        """None: the local daemon."""
        return None if self.spread.startswith("/") else self.spread.partition("@")[2] or None

    @property
    def moves_per_round_max(self) -> int:
        """AcquisitionsPerRound after upstream's clamp to floor(#VIFs / 2)."""
        half = len(self.vifs) // 2
        per_round = self.balance.acquisitions_per_round
        return half if per_round is None else min(per_round, half)

    def prefers(self, vif: Vif) -> bool:
        """Whether this member's Prefer list names `vif` (matched on its head address only)."""
        head = vif.head.address
        return any(head in block for block in self.prefer)


def parse_config(text: str, path: str) -> WackamoleConfig:
    """Parse wackamole.conf text; raise ConfigError listing every problem, in file order."""
    tokens, problems = _tokenize(text, path)
    parser = _Parser(tokens, path, problems)
    parser.parse_file()
    return parser.finish()


def parse_spread(text: str) -> str:
    """Check and normalise a Spread daemon name, `PORT`, `PORT@HOST` or an absolute Unix socket
    path (spreadpy's extension, e.g. several daemons on one machine); raise ValueError."""
    if text.startswith("/"):
        if len(text.encode()) > CONTROL_PATH_BYTES_MAX:
            raise ValueError(f"Spread socket path is longer than {CONTROL_PATH_BYTES_MAX} bytes")
        return text
    port_text, at, host = text.partition("@")
    if not _DIGITS.fullmatch(port_text) or len(port_text) > NUMBER_DIGITS_MAX:
        raise ValueError(f"Spread must be PORT or PORT@HOST, got {text!r}")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ValueError(f"Spread port {port} is out of range 1-65535")
    if at and (not host or any(c.isspace() for c in host)):
        raise ValueError(f"Spread host in {text!r} is empty or has blanks")
    return f"{port}@{host}" if at else str(port)


def format_seconds(seconds: float) -> str:
    """The shortest wackamole.conf time that reads back as `seconds` (5.0 -> "5s")."""
    ms = round(seconds * 1000)
    if ms % 1000:
        return f"{ms}ms"
    for unit, size in (("h", 3600), ("m", 60)):
        if ms and ms % (size * 1000) == 0:
            return f"{ms // (size * 1000)}{unit}"
    return f"{ms // 1000}s"


def config_to_dict(config: WackamoleConfig) -> dict[str, object]:
    """A JSON-ready view of `config` (addresses as text, times in seconds)."""
    return {
        "spread": config.spread,
        "spread_retry_interval_s": config.spread_retry_interval_s,
        "group": config.group,
        "control_path": config.control_path,
        "log_facility": config.log_facility,
        "mature_s": config.mature_s,
        "arp_cache_s": config.arp_cache_s,
        "balance": {
            "acquisitions_per_round": (
                "all"
                if config.balance.acquisitions_per_round is None
                else config.balance.acquisitions_per_round
            ),
            "interval_s": config.balance.interval_s,
            "moves_per_round_max": config.moves_per_round_max,
        },
        "prefer": [str(block) for block in config.prefer],
        "vifs": [[_vip_to_dict(a) for a in vif.addresses] for vif in config.vifs],
        "notify": [_notify_to_dict(t) for t in config.notify],
        "module_dir": config.module_dir,
        "dynamic_hooks": [
            {
                "event": h.event.value,
                "module_dir": h.module_dir,
                "file": h.file,
                "module_path": h.module_path,
                "symbol": h.symbol,
            }
            for h in config.dynamic_hooks
        ],
        "command_hooks": [
            {"event": h.event.value, "argv": list(h.argv)} for h in config.command_hooks
        ],
        "health_check": (
            None
            if config.health_check is None
            else {
                "argv": list(config.health_check.argv),
                "interval_s": config.health_check.interval_s,
            }
        ),
        "metrics_port": config.metrics_port,
    }


def format_config(config: WackamoleConfig) -> str:
    """Canonical wackamole.conf text that parses back to `config` (warnings aside).

    Raises ValueError for a string no wackamole.conf can hold (both quote characters in it).
    """
    per_round = config.balance.acquisitions_per_round
    lines = [
        f"Spread = {config.spread}",
        f"SpreadRetryInterval = {format_seconds(config.spread_retry_interval_s)}",
        f"Group = {_quote(config.group)}",
    ]
    if config.control_path is not None:
        lines.append(f"Control = {_quote(config.control_path)}")
    if config.log_facility is not None:
        lines.append(f"LogFacility = {config.log_facility}")
    lines += [
        f"Mature = {format_seconds(config.mature_s)}",
        f"Arp-Cache = {format_seconds(config.arp_cache_s)}",
        "Balance {",
        f"    AcquisitionsPerRound = {'all' if per_round is None else per_round}",
        f"    Interval = {format_seconds(config.balance.interval_s)}",
        "}",
        "VirtualInterfaces {",
        *(f"    {{ {' '.join(str(a) for a in vif.addresses)} }}" for vif in config.vifs),
        "}",
    ]
    if config.prefer:
        lines.append(f"Prefer {{ {' '.join(str(block) for block in config.prefer)} }}")
    if config.notify:
        lines += ["Notify {", *(f"    {_format_notify(t)}" for t in config.notify), "}"]
    module_dir = DEFAULT_MODULE_DIR
    for hook in config.dynamic_hooks:
        if hook.module_dir != module_dir:
            module_dir = hook.module_dir
            lines.append(f"ModuleDir = {_quote(module_dir)}")
        lines.append(f"RunDynamic {_quote(f'{hook.file}:{hook.symbol}')} {hook.event.value}")
    if config.module_dir != module_dir:
        lines.append(f"ModuleDir = {_quote(config.module_dir)}")
    lines += [
        f"RunCommand {_quote(shlex.join(h.argv))} {h.event.value}" for h in config.command_hooks
    ]
    if config.health_check is not None:
        lines.append(f"HealthCheck = {_quote(shlex.join(config.health_check.argv))}")
        lines.append(f"HealthCheckInterval = {format_seconds(config.health_check.interval_s)}")
    if config.metrics_port is not None:
        lines.append(f"MetricsPort = {config.metrics_port}")
    return "\n".join(lines) + "\n"


def _format_notify(target: NotifyTarget) -> str:
    match target:
        case NotifyArpCache(ping=ping):
            words = ["arp-cache"]
        case NotifyBlock(ifname=ifname, network=network, throttle_pps=throttle, ping=ping):
            words = [str(network) if ifname is None else f"{ifname}:{network}"]
            if throttle:
                words.append(f"throttle {throttle}")
    if ping:
        words.append("ping")
    return " ".join(words)


def _quote(text: str) -> str:
    if any(_bad_char(c) for c in text):
        raise ValueError(f"{text!r} cannot be written in wackamole.conf")
    if text and text[0] not in "\"'" and not any(c.isspace() or c in "#{}=" for c in text):
        return text
    for quote in "\"'":
        if quote not in text and "\n" not in text:
            return f"{quote}{text}{quote}"
    raise ValueError(f"{text!r} cannot be written in wackamole.conf")


def _vip_to_dict(vip: VipAddress) -> dict[str, object]:
    out: dict[str, object] = {
        "ifname": vip.ifname,
        "address": str(vip.address),
        "prefixlen": vip.interface.network.prefixlen,
        "netmask": str(vip.interface.netmask),
        "hint": str(vip.hint_network),
    }
    if isinstance(vip.interface, ipaddress.IPv4Interface):
        out["broadcast"] = str(vip.interface.network.broadcast_address)
    return out


def _notify_to_dict(target: NotifyTarget) -> dict[str, object]:
    match target:
        case NotifyArpCache(ping=ping):
            return {"kind": "arp-cache", "ping": ping}
        case NotifyBlock(ifname=ifname, network=network, throttle_pps=throttle, ping=ping):
            return {
                "kind": "block",
                "ifname": ifname,
                "network": str(network),
                "throttle_pps": throttle,
                "ping": ping,
            }


def _default_hint(version: int) -> int:
    return DEFAULT_HINT_PREFIXLEN_V4 if version == 4 else DEFAULT_HINT_PREFIXLEN_V6


# --- lexer -----------------------------------------------------------------------------------


class _Kind(enum.Enum):
    WORD = "word"
    QUOTED = "quoted string"
    LBRACE = "'{'"
    RBRACE = "'}'"
    EQUALS = "'='"


@dataclass(frozen=True, slots=True)
class _Token:
    kind: _Kind
    text: str
    line: int
    col: int
    glued: bool  # no blank between this token and the previous one
    line_start: bool  # first token on its line


_BLANKS = " \t\r"
_WORD_STOP = frozenset(" \t\r\n#{}=")  # a quote opens a string only at a word's start
_PUNCT = {"{": _Kind.LBRACE, "}": _Kind.RBRACE, "=": _Kind.EQUALS}
_BRACES = (_Kind.LBRACE, _Kind.RBRACE)


def _bad_char(ch: str) -> bool:
    return ch not in "\t\n\r" and unicodedata.category(ch) in ("Cc", "Cs")


def _word_end(text: str, i: int) -> int:
    """Index just past the word starting at i (quotes inside a word are ordinary characters)."""
    n = len(text)
    j = i + 1
    while j < n and text[j] not in _WORD_STOP and not _bad_char(text[j]):
        j += 1
    return j


def _tokenize(text: str, path: str) -> tuple[list[_Token], list[ConfigProblem]]:
    tokens: list[_Token] = []
    problems: list[ConfigProblem] = []
    i = 1 if text.startswith("\ufeff") else 0
    n = len(text)
    line, line_begin = 1, i
    prev_end = -1
    line_has_token = False

    def emit(kind: _Kind, value: str, start: int, end: int) -> None:
        nonlocal prev_end, line_has_token
        tokens.append(
            _Token(kind, value, line, start - line_begin + 1, start == prev_end, not line_has_token)
        )
        prev_end = end
        line_has_token = True

    while i < n:
        ch = text[i]
        if ch == "\n":
            line, line_begin, line_has_token = line + 1, i + 1, False
            i += 1
        elif ch in _BLANKS:
            i += 1
        elif ch == "#":
            newline = text.find("\n", i)
            i = n if newline < 0 else newline
        elif _bad_char(ch):
            problems.append(
                ConfigProblem(
                    path, line, i - line_begin + 1, f"character U+{ord(ch):04X} not allowed"
                )
            )
            i += 1
        elif ch in _PUNCT:
            emit(_PUNCT[ch], ch, i, i + 1)
            i += 1
        elif ch in "\"'":
            i = _quoted(text, i, line, line_begin, path, emit, problems)
        else:
            end = _word_end(text, i)
            emit(_Kind.WORD, text[i:end], i, end)
            i = end
    return tokens, problems


def _quoted(
    text: str,
    i: int,
    line: int,
    line_begin: int,
    path: str,
    emit: Callable[[_Kind, str, int, int], None],
    problems: list[ConfigProblem],
) -> int:
    """Lex the quoted string opening at i; return the index to go on from."""
    n = len(text)
    close = text.find(text[i], i + 1)
    newline = text.find("\n", i + 1)
    line_end = n if newline < 0 else newline
    if close < 0 or close > line_end:
        problems.append(
            ConfigProblem(path, line, i - line_begin + 1, "quoted string is not closed on its line")
        )
        emit(_Kind.QUOTED, text[i + 1 : line_end], i, line_end)  # spares a second complaint
        return line_end
    value = text[i + 1 : close]
    for k, ch in enumerate(value):
        if _bad_char(ch):
            col = i + 2 + k - line_begin
            problems.append(
                ConfigProblem(path, line, col, f"character U+{ord(ch):04X} not allowed")
            )
    emit(_Kind.QUOTED, value, i, close + 1)
    after = close + 1
    if after < n and text[after] not in " \t\r\n#{}=":
        end = _word_end(text, after)
        problems.append(
            ConfigProblem(
                path,
                line,
                after - line_begin + 1,
                f"unexpected {text[after:end]!r} right after a closing quote",
            )
        )
        return end
    return after


# --- keywords --------------------------------------------------------------------------------


class _Kw(enum.Enum):
    SPREAD = "spread"
    SPREAD_RETRY_INTERVAL = "spreadretryinterval"
    GROUP = "group"
    CONTROL = "control"
    LOG_FACILITY = "logfacility"
    MATURE = "mature"
    BALANCE = "balance"
    AQPR = "acquisitionsperround"
    INTERVAL = "interval"
    ARP_CACHE = "arp-cache"
    NOTIFY = "notify"
    THROTTLE = "throttle"
    PING = "ping"
    PREFER = "prefer"
    NONE = "none"
    ALL = "all"
    VIFS = "virtualinterfaces"
    RUN_DYNAMIC = "rundynamic"
    MODULE_DIR = "moduledir"
    PERL_USE_LIB = "perluselib"
    PERL_USE = "perluse"
    # wackapy extensions
    RUN_COMMAND = "runcommand"
    HEALTH_CHECK = "healthcheck"
    HEALTH_CHECK_INTERVAL = "healthcheckinterval"
    METRICS_PORT = "metricsport"


_KEYWORDS: dict[str, _Kw] = {kw.value: kw for kw in _Kw} | {"vifs": _Kw.VIFS, "vips": _Kw.VIFS}
_BLOCK_ONLY = frozenset((_Kw.AQPR, _Kw.INTERVAL, _Kw.THROTTLE, _Kw.PING, _Kw.NONE, _Kw.ALL))
_STATEMENTS = frozenset(_Kw) - _BLOCK_ONLY
_EVENT_FIRST = ("on", "post")
_EVENT_SECOND = ("up", "down")

_DIGITS = re.compile(r"[0-9]+", re.ASCII)
_TIME = re.compile(r"([0-9]+)(ms|s|m|h)", re.ASCII | re.IGNORECASE)
_TIME_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}
_ADDR = re.compile(
    r"(?P<ip>[^/]*)(?:/(?P<plen>[0-9]{1,3})(?:[nN](?P<hint>[0-9]{1,3}))?)?", re.ASCII
)
_BRACKETED = re.compile(
    r"(?:(?P<ifname>[^\[\]]*):)?\[(?P<ip>[^\[\]]*)\]"
    r"(?:/(?P<plen>[0-9]{1,3})(?:[nN](?P<hint>[0-9]{1,3}))?)?",
    re.ASCII,
)
_ALIAS_LABEL = re.compile(r"[0-9]+:", re.ASCII)


def _keyword(tok: _Token | None) -> _Kw | None:
    if tok is None or tok.kind is not _Kind.WORD or not tok.text.isascii():
        return None
    return _KEYWORDS.get(tok.text.lower())


# --- addresses -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Addr:
    ifname: str | None
    ip: IPAddress
    prefixlen: int | None
    hint: int | None


class _Bad(Exception):
    """A value is wrong; the statement's shape is fine, so parsing goes on after it."""


def _check_ifname(name: str) -> None:
    if not name:
        raise _Bad("empty interface name before ':'")
    if len(name.encode()) > IFNAME_BYTES_MAX:
        raise _Bad(f"interface name {name!r} is longer than {IFNAME_BYTES_MAX} bytes")
    if name in (".", "..") or any(c in "/:" or c.isspace() for c in name):
        raise _Bad(f"{name!r} is not a valid Linux interface name")


def _parse_ip(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _parse_addr(text: str) -> _Addr:
    """`[IFACE:]ADDRESS[/PREFIX[nHINT]]`; an IPv6 ADDRESS may be in brackets, which it must be
    when the text before its first ':' could be read as the interface name."""
    if "%" in text:
        raise _Bad(f"scoped address {text!r}: zone suffixes (%...) are not supported")
    ifname: str | None = None
    if "[" in text or "]" in text:
        match = _BRACKETED.fullmatch(text)
        if match is None:
            raise _Bad(f"{text!r} is not an address: expected IFACE:[IPV6]/PREFIX")
        ifname = match["ifname"]
        ip = _parse_ip(match["ip"])
        if not isinstance(ip, ipaddress.IPv6Address):
            raise _Bad(f"{text!r}: brackets hold an IPv6 address")
    else:
        rest = text
        whole = _ADDR.fullmatch(text)
        if ":" in text and (whole is None or _parse_ip(whole["ip"]) is None):
            ifname, rest = text.split(":", 1)
        match = _ADDR.fullmatch(rest)
        if match is None:
            raise _Bad(f"{text!r} is not an address: expected IFACE:ADDRESS/PREFIX")
        ip = _parse_ip(match["ip"])
        if ip is None:
            if ifname is not None and _ALIAS_LABEL.match(rest):
                raise _Bad(
                    f"{text!r}: name the base interface ({ifname}:ADDRESS/PREFIX); "
                    "alias labels are chosen by the daemon"
                )
            raise _Bad(f"{match['ip']!r} is not an IPv4 or IPv6 address")
    if ifname is not None:
        _check_ifname(ifname)
    prefixlen = None if match["plen"] is None else int(match["plen"])
    hint = None if match["hint"] is None else int(match["hint"])
    for what, bits in (("prefix length", prefixlen), ("network hint", hint)):
        if bits is not None and bits > ip.max_prefixlen:
            raise _Bad(f"{what} /{bits} is out of range 0-{ip.max_prefixlen} in {text!r}")
    return _Addr(ifname, ip, prefixlen, hint)


def _check_vip(ip: IPAddress, text: str) -> None:
    if ip.is_unspecified or ip.is_multicast or ip == ipaddress.IPv4Address("255.255.255.255"):
        raise _Bad(f"{text!r}: {ip} cannot be a virtual address")


# --- values ----------------------------------------------------------------------------------


def _number(text: str, what: str) -> int:
    if not _DIGITS.fullmatch(text):
        raise _Bad(f"{what} must be a whole number, got {text!r}")
    if len(text) > NUMBER_DIGITS_MAX:
        raise _Bad(f"{what} {text} is too large")
    return int(text)


def _seconds(text: str, what: str, *, positive: bool = False) -> float:
    match = _TIME.fullmatch(text)
    if match is None:
        if _DIGITS.fullmatch(text):
            raise _Bad(f"{what} needs a unit: {text}s, {text}m or {text}h")
        raise _Bad(f"{what} must be a time such as 5s, 2m or 1h, got {text!r}")
    count = _number(match[1], what)
    value = count * _TIME_UNIT_MS[match[2].lower()] / 1000  # exact for whole milliseconds
    if value > TIME_MAX_S:
        raise _Bad(f"{what} {text} is longer than {format_seconds(TIME_MAX_S)}")
    if positive and value == 0:
        raise _Bad(f"{what} must be more than 0")
    return value


def _group(text: str) -> str:
    if not 1 <= len(text) <= GROUP_NAME_LEN_MAX:
        raise _Bad(f"Group name must have 1-{GROUP_NAME_LEN_MAX} characters, got {len(text)}")
    for ch in text:
        if not "$" <= ch <= "~":
            raise _Bad(f"Group name {text!r} has {ch!r}: Spread allows only '$'..'~'")
    return text


def _argv(text: str, what: str) -> tuple[str, ...]:
    try:
        argv = tuple(shlex.split(text))
    except ValueError as err:
        raise _Bad(f"{what} command {text!r}: {err}") from None
    if not argv:
        raise _Bad(f"{what} command is empty")
    return argv


def _port(text: str, what: str) -> int:
    port = _number(text, what)
    if not 1 <= port <= 65535:
        raise _Bad(f"{what} {port} is out of range 1-65535")
    return port


# --- parser ----------------------------------------------------------------------------------


class _Syntax(Exception):
    """The statement's shape is wrong: record it and skip to the next statement."""

    def __init__(self, tok: _Token, message: str) -> None:
        super().__init__(message)
        self.tok = tok
        self.message = message


@dataclass(frozen=True, slots=True)
class _Value:
    text: str
    tok: _Token


@dataclass(slots=True)
class _Draft:
    """What the statements set so far; `finish()` fills defaults and checks the whole."""

    scalars: dict[str, tuple[object, _Token]] = field(default_factory=dict)
    balance: dict[str, tuple[object, _Token]] = field(default_factory=dict)
    vifs: list[tuple[_Token, list[tuple[VipAddress, _Token]]]] = field(default_factory=list)
    vif_statement: _Token | None = None
    prefer: list[tuple[IPNetwork, _Token]] = field(default_factory=list)
    notify: list[tuple[NotifyTarget, _Token]] = field(default_factory=list)
    dynamic_hooks: list[tuple[DynamicHook, _Token]] = field(default_factory=list)
    command_hooks: list[tuple[CommandHook, _Token]] = field(default_factory=list)
    module_dir: str = DEFAULT_MODULE_DIR
    seen: set[_Kw] = field(default_factory=set)  # statements written, valid or not
    broken: set[_Kw] = field(default_factory=set)  # statements cut short by a syntax error


T = TypeVar("T")


class _Parser:
    def __init__(self, tokens: list[_Token], path: str, problems: list[ConfigProblem]) -> None:
        self.tokens = tokens
        self.path = path
        self.problems = problems
        self.warnings: list[ConfigProblem] = []
        self.pos = 0
        self.draft = _Draft()

    # token access

    def peek(self, ahead: int = 0) -> _Token | None:
        k = self.pos + ahead
        return self.tokens[k] if k < len(self.tokens) else None

    def take(self) -> _Token:
        tok = self.tokens[self.pos]
        self.pos += 1
        return tok

    def problem(self, tok: _Token | None, message: str) -> None:
        line, col = (tok.line, tok.col) if tok else (1, 1)
        self.problems.append(ConfigProblem(self.path, line, col, message))

    def warn(self, tok: _Token | None, message: str) -> None:
        line, col = (tok.line, tok.col) if tok else (1, 1)
        self.warnings.append(ConfigProblem(self.path, line, col, message))

    def fail(self, tok: _Token, message: str) -> NoReturn:
        raise _Syntax(tok, message)

    def starts_statement(self, k: int) -> bool:
        """Token k begins a line and a top-level statement (used to resync and to spot a
        missing '}')."""
        tok = self.tokens[k]
        kw = _keyword(tok)
        if not tok.line_start or kw not in _STATEMENTS:
            return False
        if kw is _Kw.ARP_CACHE:  # also a Notify item; the setting has '='
            nxt = self.tokens[k + 1] if k + 1 < len(self.tokens) else None
            return nxt is not None and nxt.kind is _Kind.EQUALS
        return True

    # file

    def parse_file(self) -> None:
        while self.pos < len(self.tokens):
            start = self.pos
            try:
                self.statement()
            except _Syntax as err:
                self.problem(err.tok, err.message)
                if (kw := _keyword(self.tokens[start])) is not None:
                    self.draft.broken.add(kw)
                # Rescan from just after the failed statement's first token: a statement the
                # failure swallowed (say, a line after a missing value) is parsed after all.
                self.pos = start + 1
                while self.pos < len(self.tokens) and not self.starts_statement(self.pos):
                    self.pos += 1

    def statement(self) -> None:
        tok = self.take()
        kw = _keyword(tok)
        if kw is not None:
            self.draft.seen.add(kw)
        match kw:
            case _Kw.SPREAD:
                self.assign(tok, "spread", self.spread_value)
            case _Kw.SPREAD_RETRY_INTERVAL:
                self.assign(tok, "spread_retry_interval_s", self.positive_time(tok))
            case _Kw.GROUP:
                self.assign(tok, "group", lambda v: _group(v.text))
            case _Kw.CONTROL:
                self.assign(tok, "control_path", self.control_value)
            case _Kw.LOG_FACILITY:
                self.assign(tok, "log_facility", self.facility_value)
            case _Kw.MATURE:
                self.assign(tok, "mature_s", lambda v: _seconds(v.text, tok.text))
            case _Kw.ARP_CACHE:
                self.assign(tok, "arp_cache_s", self.positive_time(tok))
            case _Kw.BALANCE:
                self.balance(tok)
            case _Kw.NOTIFY:
                self.notify(tok)
            case _Kw.PREFER:
                self.prefer(tok)
            case _Kw.VIFS:
                self.vifs(tok)
            case _Kw.MODULE_DIR:
                self.assign(tok, "module_dir", self.module_dir_value)
            case _Kw.PERL_USE | _Kw.PERL_USE_LIB:
                self.value(tok)
                self.problem(tok, f"{tok.text}: wackapy has no embedded Perl")
            case _Kw.RUN_DYNAMIC:
                self.run_dynamic(tok)
            case _Kw.RUN_COMMAND:
                self.run_command(tok)
            case _Kw.HEALTH_CHECK:
                self.assign(tok, "health_check", lambda v: _argv(v.text, "HealthCheck"))
            case _Kw.HEALTH_CHECK_INTERVAL:
                self.assign(tok, "health_check_interval_s", self.positive_time(tok))
            case _Kw.METRICS_PORT:
                self.assign(tok, "metrics_port", lambda v: _port(v.text, "MetricsPort"))
            case _Kw.AQPR | _Kw.INTERVAL:
                self.fail(tok, f"{tok.text} belongs inside a balance {{ }} block")
            case None if tok.kind is _Kind.WORD:
                self.fail(tok, f"unknown setting {tok.text!r}")
            case None:
                self.fail(tok, f"expected a setting, found {tok.kind.value}")
            case _:
                self.fail(tok, f"{tok.text!r} cannot start a setting")

    # settings of the form KEYWORD = VALUE

    def equals(self, key: _Token) -> _Token:
        tok = self.peek()
        if tok is None or tok.kind is not _Kind.EQUALS:
            self.fail(tok or key, f"expected '=' after {key.text}")
        return self.take()

    def value(self, key: _Token, after: _Token | None = None) -> _Value:
        """The value of `key` (after `after`, default `key`): one word or quoted string, plus
        anything glued to it. A keyword counts as a value only on the line of `after`."""
        after = after or key
        tok = self.peek()
        if tok is None or tok.kind in _BRACES:
            self.fail(tok or after, f"expected a value for {key.text}")
        if _keyword(tok) is not None and tok.line != after.line:
            self.fail(tok, f"expected a value for {key.text} on line {after.line}")
        parts = [self.take()]
        while (nxt := self.peek()) is not None and nxt.glued and nxt.kind not in _BRACES:
            parts.append(self.take())
        if len(parts) > 1 and any(p.kind is _Kind.QUOTED for p in parts):
            self.problem(parts[0], "a quoted string must stand alone")
        return _Value("".join(p.text for p in parts), parts[0])

    def assign(self, key: _Token, name: str, convert: Callable[[_Value], object]) -> None:
        value = self.value(key, self.equals(key))
        try:
            result = convert(value)
        except _Bad as bad:
            self.problem(value.tok, str(bad))
            return
        self.record(self.draft.scalars, name, key, result)

    def record(
        self, table: dict[str, tuple[object, _Token]], name: str, key: _Token, result: object
    ) -> None:
        if name in table:
            first = table[name][1]
            self.warn(key, f"{key.text} set again: replaces the value from line {first.line}")
        table[name] = (result, key)

    def positive_time(self, key: _Token) -> Callable[[_Value], float]:
        return lambda v: _seconds(v.text, key.text, positive=True)

    def spread_value(self, value: _Value) -> str:
        try:
            return parse_spread(value.text)
        except ValueError as err:
            raise _Bad(str(err)) from None

    def control_value(self, value: _Value) -> str:
        text = value.text
        if not text:
            raise _Bad("Control path is empty")
        if len(text.encode()) > CONTROL_PATH_BYTES_MAX:
            raise _Bad(f"Control path is longer than {CONTROL_PATH_BYTES_MAX} bytes")
        if not text.startswith("/"):
            self.warn(value.tok, f"Control path {text!r} is relative to the daemon's directory")
        return text

    def facility_value(self, value: _Value) -> str | None:
        name = value.text.lower().removeprefix("log_")
        if name in SYSLOG_FACILITIES:
            return name
        self.warn(value.tok, f"unknown syslog facility {value.text!r}: using daemon")
        return None

    def module_dir_value(self, value: _Value) -> str:
        if not value.text:
            raise _Bad("ModuleDir is empty")
        self.draft.module_dir = value.text
        return value.text

    # blocks

    def open_block(self, key: _Token) -> _Token:
        tok = self.peek()
        if tok is None or tok.kind is not _Kind.LBRACE:
            self.fail(tok or key, f"expected '{{' after {key.text}")
        return self.take()

    def items(self, lbrace: _Token) -> Iterator[_Token]:
        """Each token starting an item inside the block; the caller consumes the item."""
        while True:
            tok = self.peek()
            if tok is None:
                self.fail(lbrace, "this '{' is never closed")
            if tok.kind is _Kind.RBRACE:
                self.take()
                return
            if self.starts_statement(self.pos):
                self.fail(tok, f"missing '}}' for the '{{' on line {lbrace.line}")
            before = self.pos
            yield tok
            assert self.pos > before, "an item parser consumed nothing"

    def balance(self, key: _Token) -> None:
        for tok in self.items(self.open_block(key)):
            self.take()
            match _keyword(tok):
                case _Kw.AQPR:
                    value = self.value(tok, self.equals(tok))
                    try:
                        per_round = self.per_round(value)
                    except _Bad as bad:
                        self.problem(value.tok, str(bad))
                    else:
                        self.record(self.draft.balance, "per_round", tok, per_round)
                case _Kw.INTERVAL:
                    value = self.value(tok, self.equals(tok))
                    try:
                        interval = _seconds(value.text, "Interval", positive=True)
                    except _Bad as bad:
                        self.problem(value.tok, str(bad))
                    else:
                        self.record(self.draft.balance, "interval_s", tok, interval)
                case _:
                    self.fail(tok, "expected AcquisitionsPerRound or Interval in balance")

    def per_round(self, value: _Value) -> int | None:
        if value.text.lower() == "all":
            return None
        return _number(value.text, "AcquisitionsPerRound")

    def vifs(self, key: _Token) -> None:
        if self.draft.vif_statement is None:
            self.draft.vif_statement = key
        for tok in self.items(self.open_block(key)):
            if tok.kind is _Kind.LBRACE:
                self.take()
                members = [self.vip() for _ in self.items(tok)]
                if not members:
                    self.problem(tok, "empty address set")
                self.draft.vifs.append((tok, [m for m in members if m is not None]))
            else:
                vip = self.vip()
                self.draft.vifs.append((tok, [] if vip is None else [vip]))

    def vip(self) -> tuple[VipAddress, _Token] | None:
        tok = self.take()
        if tok.kind is _Kind.LBRACE:
            self.fail(tok, "address sets do not nest")
        if tok.kind is not _Kind.WORD:
            self.problem(tok, f"expected a virtual address, found {tok.kind.value}")
            return None
        try:
            addr = _parse_addr(tok.text)
            if addr.ifname is None:
                example = f"eth0:[{addr.ip}]/64" if addr.ip.version == 6 else f"eth0:{tok.text}"
                raise _Bad(f"{tok.text!r} needs an interface name, as in {example}")
            if addr.prefixlen is None:
                raise _Bad(f"{tok.text!r} needs a prefix length, e.g. {tok.text}/24")
            _check_vip(addr.ip, tok.text)
        except _Bad as bad:
            self.problem(tok, str(bad))
            return None
        interface = ipaddress.ip_interface(f"{addr.ip}/{addr.prefixlen}")
        if (
            isinstance(interface, ipaddress.IPv4Interface)
            and interface.network.prefixlen <= 30
            and addr.ip in (interface.network.network_address, interface.network.broadcast_address)
        ):
            self.warn(tok, f"{addr.ip} is the network or broadcast address of {interface.network}")
        hint = _default_hint(addr.ip.version) if addr.hint is None else addr.hint
        return VipAddress(addr.ifname, interface, hint), tok

    def notify(self, key: _Token) -> None:
        tok = self.peek()
        if tok is None:
            self.fail(key, "expected none, arp-cache, an address or '{' after Notify")
        if _keyword(tok) is _Kw.NONE:
            self.take()
        elif tok.kind is _Kind.LBRACE:
            for _ in self.items(self.take()):
                self.notify_item()
        else:
            self.notify_item()

    def notify_item(self) -> None:
        tok = self.take()
        kw = _keyword(tok)
        if tok.kind is not _Kind.WORD or kw not in (None, _Kw.ARP_CACHE):
            self.fail(tok, f"expected arp-cache or an address to notify, found {tok.text!r}")
        throttle, ping = self.notify_options(allow_throttle=kw is None)
        if kw is _Kw.ARP_CACHE:
            self.draft.notify.append((NotifyArpCache(ping=ping), tok))
            return
        try:
            addr = _parse_addr(tok.text)
            if not isinstance(addr.ip, ipaddress.IPv4Address):
                raise _Bad(f"{tok.text!r}: Notify targets are IPv4 (ARP) blocks")
        except _Bad as bad:
            self.problem(tok, str(bad))
            return
        if addr.hint is not None:
            self.warn(tok, "a network hint (nN) has no meaning in Notify; ignored")
        if ping:
            self.warn(tok, "ping has no effect on address blocks (only on arp-cache)")
        network = ipaddress.IPv4Network(
            f"{addr.ip}/{32 if addr.prefixlen is None else addr.prefixlen}", strict=False
        )
        target = NotifyBlock(addr.ifname, network, throttle, ping)
        self.draft.notify.append((target, tok))

    def notify_options(self, *, allow_throttle: bool) -> tuple[int, bool]:
        throttle: int | None = None
        ping = False
        while (kw := _keyword(self.peek())) in (_Kw.THROTTLE, _Kw.PING):
            opt = self.take()
            if kw is _Kw.PING:
                if ping:
                    self.problem(opt, "ping given twice")
                ping = True
                continue
            if not allow_throttle:
                self.problem(opt, "arp-cache notifications cannot be throttled")
            elif throttle is not None:
                self.problem(opt, "throttle given twice")
            if (eq := self.peek()) is not None and eq.kind is _Kind.EQUALS:
                self.take()
            value = self.value(opt)
            try:
                throttle = _number(value.text, "throttle")
            except _Bad as bad:
                self.problem(value.tok, str(bad))
        return throttle or 0, ping

    def prefer(self, key: _Token) -> None:
        tok = self.peek()
        if tok is None:
            self.fail(key, "expected none, an address or '{' after Prefer")
        if _keyword(tok) is _Kw.NONE:
            self.take()
        elif tok.kind is _Kind.LBRACE:
            for _ in self.items(self.take()):
                self.prefer_item()
        else:
            self.prefer_item()

    def prefer_item(self) -> None:
        tok = self.take()
        if tok.kind is not _Kind.WORD or _keyword(tok) is not None:
            self.fail(tok, f"expected an address to prefer, found {tok.text!r}")
        try:
            addr = _parse_addr(tok.text)
        except _Bad as bad:
            hostname = "." not in tok.text and ":" not in tok.text
            message = (
                f"Prefer takes addresses, not host names: {tok.text!r}" if hostname else str(bad)
            )
            self.problem(tok, message)
            return
        if addr.hint is not None:
            self.warn(tok, "a network hint (nN) has no meaning in Prefer; ignored")
        prefixlen = addr.ip.max_prefixlen if addr.prefixlen is None else addr.prefixlen
        self.draft.prefer.append(
            (ipaddress.ip_network(f"{addr.ip}/{prefixlen}", strict=False), tok)
        )

    # hooks

    def event(self, after: _Token) -> HookEvent:
        first, second = self.peek(), self.peek(1)
        words = [
            t.text.lower() if t and t.kind is _Kind.WORD and t.text.isascii() else ""
            for t in (first, second)
        ]
        if words[0] not in _EVENT_FIRST or words[1] not in _EVENT_SECOND:
            self.fail(first or after, "expected an event: on up, on down, post up or post down")
        self.take()
        self.take()
        return HookEvent(f"{words[0]} {words[1]}")

    def run_dynamic(self, key: _Token) -> None:
        spec = self.value(key)
        event = self.event(spec.tok)
        file, colon, symbol = spec.text.partition(":")
        if "::" in spec.text or not colon:
            self.problem(spec.tok, f"{spec.text!r} is a Perl hook: wackapy has no embedded Perl")
            return
        if not file or not symbol:
            self.problem(spec.tok, f"RunDynamic needs FILE:SYMBOL, got {spec.text!r}")
            return
        hook = DynamicHook(event, self.draft.module_dir, file, symbol)
        self.draft.dynamic_hooks.append((hook, key))

    def run_command(self, key: _Token) -> None:
        command = self.value(key)
        event = self.event(command.tok)
        try:
            argv = _argv(command.text, "RunCommand")
        except _Bad as bad:
            self.problem(command.tok, str(bad))
            return
        self.draft.command_hooks.append((CommandHook(event, argv), key))

    # the whole file

    def scalar(self, name: str, default: T) -> T:
        entry = self.draft.scalars.get(name)
        return default if entry is None else entry[0]  # type: ignore[return-value]

    def finish(self) -> WackamoleConfig:
        draft = self.draft
        if _Kw.GROUP not in draft.seen:
            self.problem(None, "no Group: set the Spread group all members join (Group = NAME)")
        vifs = self.finish_vifs()
        self.check_bounds()
        if self.problems:
            self.problems.sort(key=lambda p: (p.line, p.col))
            raise ConfigError(self.problems)
        self.check_prefer(vifs)
        balance_per_round = draft.balance.get("per_round")
        balance_interval = draft.balance.get("interval_s")
        health_argv: tuple[str, ...] | None = self.scalar("health_check", None)
        health_interval = self.scalar("health_check_interval_s", DEFAULT_HEALTH_CHECK_INTERVAL_S)
        if health_argv is None and "health_check_interval_s" in draft.scalars:
            self.warn(
                draft.scalars["health_check_interval_s"][1],
                "HealthCheckInterval without HealthCheck",
            )
        self.warnings.sort(key=lambda p: (p.line, p.col))
        return WackamoleConfig(
            group=self.scalar("group", ""),
            vifs=vifs,
            spread=self.scalar("spread", DEFAULT_SPREAD),
            spread_retry_interval_s=self.scalar(
                "spread_retry_interval_s", DEFAULT_SPREAD_RETRY_INTERVAL_S
            ),
            control_path=self.scalar("control_path", None),
            log_facility=self.scalar("log_facility", None),
            mature_s=self.scalar("mature_s", DEFAULT_MATURE_S),
            arp_cache_s=self.scalar("arp_cache_s", DEFAULT_ARP_CACHE_S),
            balance=BalanceConfig(
                acquisitions_per_round=(
                    DEFAULT_ACQUISITIONS_PER_ROUND
                    if balance_per_round is None
                    else balance_per_round[0]  # type: ignore[arg-type]
                ),
                interval_s=(
                    DEFAULT_BALANCE_INTERVAL_S if balance_interval is None else balance_interval[0]  # type: ignore[arg-type]
                ),
            ),
            prefer=tuple(block for block, _ in draft.prefer),
            notify=tuple(target for target, _ in draft.notify),
            module_dir=draft.module_dir,
            dynamic_hooks=tuple(h for h, _ in draft.dynamic_hooks),
            command_hooks=tuple(h for h, _ in draft.command_hooks),
            health_check=(
                None if health_argv is None else HealthCheck(health_argv, health_interval)
            ),
            metrics_port=self.scalar("metrics_port", None),
            warnings=tuple(self.warnings),
        )

    def finish_vifs(self) -> tuple[Vif, ...]:
        draft = self.draft
        if not draft.vifs:
            if _Kw.VIFS in draft.broken:  # already reported
                return ()
            where = draft.vif_statement
            self.problem(where, "no virtual interfaces: add a VirtualInterfaces { ... } block")
            return ()
        seen: dict[IPAddress, _Token] = {}
        for n, (start, members) in enumerate(draft.vifs):
            if n == VIFS_MAX:
                self.problem(start, f"more than {VIFS_MAX} virtual interfaces")
            if len(members) > 1 + EXTRAS_MAX:
                self.problem(
                    members[1 + EXTRAS_MAX][1], f"more than {EXTRAS_MAX} extra addresses in one set"
                )
            for vip, tok in members:
                first = seen.setdefault(vip.address, tok)
                if first is not tok:
                    self.problem(
                        tok,
                        f"{vip.address} is already a virtual address "
                        f"(line {first.line}, column {first.col})",
                    )
        return tuple(Vif(tuple(vip for vip, _ in members)) for _, members in draft.vifs if members)

    def check_bounds(self) -> None:
        draft = self.draft
        hooks = [tok for _, tok in draft.dynamic_hooks] + [tok for _, tok in draft.command_hooks]
        tables = (
            ([tok for _, tok in draft.notify], NOTIFY_MAX, "Notify entries"),
            ([tok for _, tok in draft.prefer], PREFER_MAX, "Prefer entries"),
            (sorted(hooks, key=lambda t: (t.line, t.col)), HOOKS_MAX, "hooks"),
        )
        for toks, bound, what in tables:
            if len(toks) > bound:
                self.problem(toks[bound], f"more than {bound} {what}")

    def check_prefer(self, vifs: tuple[Vif, ...]) -> None:
        heads = [vif.head.address for vif in vifs]
        for block, tok in self.draft.prefer:
            if not any(head in block for head in heads):
                self.warn(tok, f"Prefer {block} names no VirtualInterfaces head address")

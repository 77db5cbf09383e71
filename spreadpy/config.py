"""spread.conf: the configuration language of Spread 5.0.1, parsed into a frozen `SpreadConfig`.

Input: the text of a file and the path to name in messages. Output: a `SpreadConfig` built from
frozen dataclasses and tuples, or `ConfigError` listing every problem found, each with a 1-based
line and column. No I/O: names are never resolved, `%h` in EventLogFile is kept as written
(`expand_log_path` does it at daemon start), local interface addresses are passed in
(`select_own_host`).

Follows shared/spec/spread-conf.md (lexer §1, grammar §2, parameters §3, timeouts §4, ring
selection §5, checks §6, identity and hash §7, own-host selection §8). The lexer reproduces the
original's longest-match rules: a plain string runs until a blank, `#`, a brace or a bracket, so
`=`, `:` and `;` do not end it; keywords are case-sensitive; words such as `yes`, `ALL`, `M` or a
1-9 digit number are never plain strings.

Where Spread 5.0.1 is needlessly strict or wrong, spreadpy does the obvious thing (all listed in
docs/spread-conf.md): `Key=value` and `Key =value` are read as `Key = value` (the original
rejects them, so no accepted file changes meaning); reserved words are accepted as string values
(`DaemonUser = no`); `ActiveIPVersion` and `TimeoutProfile` values are case-insensitive; errors
carry the real line and column, all of them, in plain words; the all-nine-timeouts rule is checked
here rather than at daemon start; a daemon given by name only is an error unless the name is
itself an IP literal, because resolving names is I/O (the original calls getaddrinfo); port 65535
is refused (the daemon also needs port+1); the EventTimeStamp format and the auth-method list are
not cut to 39 and 90 characters; stray `[`, `]`, VT and FF are skipped with a warning (the
original skips them and echoes them to stdout).

Faithful on purpose, for wire compatibility: names are cut to 19 bytes (with a warning), virtual
ids and the configuration hash use the original's one-at-a-time hash, and `accelerated_ring` is
what the 5.0.1 binary runs at start-up: true only when `AcceleratedRing = true` is written (§5).

spreadpy's own keywords (never changes to the original ones, recognised only at the start of a
statement, so daemon names are unaffected): RingAuthKeyFile, TimeoutProfile, MaxMessageSize,
ClientSocketPath, RingPacketSize.
"""

from __future__ import annotations

import bisect
import enum
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Final

from spreadpy.errors import ConfigError, ConfigProblem

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# ----------------------------------------------------------------------------------------------
# Limits and defaults (spread_params.h, configuration.c, alarm.c; spec §3, §8)

DEFAULT_PORT: Final = 4803
MAX_SEGMENTS: Final = 20
MAX_DAEMONS: Final = 128
MAX_SEGMENT_ADDRESSES: Final = 5
MAX_INTERFACES: Final = 10
MAX_NAME_BYTES: Final = 19
MAX_USER_NAME_CHARS: Final = 32
MAX_PATH_BYTES: Final = 4096
MAX_UNIX_SOCKET_PATH_BYTES: Final = 107  # sun_path is 108 bytes with the NUL

DEFAULT_WINDOW: Final = 160
# The original's is 20. A lone sender's visit may carry 60 packets here: per-visit costs (the
# token, the wake-ups, a client write per visit) are then shared by three times as many
# messages (on the bench, 1 KB floods +35% and 10 KB +60%), and Window still bounds the round.
DEFAULT_PERSONAL_WINDOW: Final = 60
DEFAULT_ACCELERATED_WINDOW: Final = 15
DEFAULT_MAX_SESSION_MESSAGES: Final = 1000
DEFAULT_RUNTIME_DIR: Final = "/var/run/spread"
DEFAULT_DAEMON_USER: Final = "spread"
DEFAULT_DAEMON_GROUP: Final = "spread"
DEFAULT_ACCESS_CONTROL_POLICY: Final = "PERMIT"
DEFAULT_TIMESTAMP_FORMAT: Final = "%m/%d/%y %H:%M:%S"
KNOWN_AUTH_METHODS: Final = ("NULL", "IP", "PWORD")

# MaxMessageSize counts as Spread's MAX_MESSAGE_BODY_LEN does: body + 32 bytes per group.
# Default: the largest message the original can really carry in 100 fragments of 1428 bytes
# after the 48-byte message header (spread-daemon.md §4). Ceiling: a message split into at most
# 32767 fragments, since the fragment index is a signed 16-bit number on the wire.
RING_PACKET_BODY_BYTES: Final = 1428
MESSAGE_HEADER_BYTES: Final = 48
DEFAULT_MAX_MESSAGE_SIZE: Final = 100 * RING_PACKET_BODY_BYTES - MESSAGE_HEADER_BYTES  # 142752
RING_PACKET_SIZE_MIN: Final = 512
RING_PACKET_SIZE_MAX: Final = 65000
MAX_MESSAGE_SIZE_LIMIT: Final = 32767 * RING_PACKET_BODY_BYTES - MESSAGE_HEADER_BYTES


class DebugFlag(enum.IntFlag):
    """Event-type bits of DebugFlags (spu_alarm.h, spu_alarm_types.h)."""

    NONE = 0
    EXIT = 0x1
    DATA_LINK = 0x2
    MEMORY = 0x4
    EVENTS = 0x8
    PRINT = 0x10
    NETWORK = 0x20
    PROTOCOL = 0x40
    SESSION = 0x80
    CONFIGURATION = 0x100
    MEMBERSHIP = 0x200
    FLOW_CONTROL = 0x400
    STATUS = 0x800
    DEBUG = 0x1000
    GROUPS = 0x2000
    SKIPLIST = 0x200000
    ACM = 0x400000
    SECURITY = 0x800000
    ALL = 0xFFFFFFFF


DEFAULT_DEBUG_MASK: Final = int(DebugFlag.PRINT | DebugFlag.EXIT | DebugFlag.CONFIGURATION)


class Priority(enum.IntEnum):
    """EventPriority levels; the file spells DEBUG as `pDEBUG`. FATAL is the PRINT level."""

    DEBUG = 1
    INFO = 2
    WARNING = 3
    ERROR = 4
    CRITICAL = 5
    FATAL = 6


class PortReuse(enum.IntEnum):
    """SocketPortReuse: SO_REUSEADDR on the client TCP listener."""

    OFF = 0
    ON = 1
    AUTO = 2


class IfaceType(enum.IntFlag):
    """Interface kinds (configuration.h). ANY marks the implicit interface: bind the wildcard."""

    MONITOR = 0x1
    CLIENT = 0x2
    DAEMON = 0x4
    ANY = 0x8
    ALL = 0x7


class TimeoutProfile(enum.Enum):
    """spreadpy's TimeoutProfile keyword."""

    DEFAULT = "default"
    FAST = "fast"


@dataclass(frozen=True, slots=True)
class Timeouts:
    """The nine membership timeouts, in milliseconds (membership.c Memb_init)."""

    token_ms: int
    hurry_ms: int
    alive_ms: int
    join_ms: int
    rep_ms: int
    seg_ms: int
    gather_ms: int
    form_ms: int
    lookup_ms: int


LAN_TIMEOUTS: Final = Timeouts(
    token_ms=1250,
    hurry_ms=500,
    alive_ms=250,
    join_ms=250,
    rep_ms=625,
    seg_ms=500,
    gather_ms=1250,
    form_ms=1250,
    lookup_ms=30000,
)
WAN_TIMEOUTS: Final = Timeouts(
    token_ms=5000,
    hurry_ms=1500,
    alive_ms=250,
    join_ms=250,
    rep_ms=1250,
    seg_ms=500,
    gather_ms=2500,
    form_ms=2500,
    lookup_ms=45000,
)
# TimeoutProfile = fast: quick failure detection for a LAN or a single host; the rest as LAN.
FAST_TIMEOUTS: Final = Timeouts(
    token_ms=200,
    hurry_ms=40,
    alive_ms=LAN_TIMEOUTS.alive_ms,
    join_ms=20,
    rep_ms=LAN_TIMEOUTS.rep_ms,
    seg_ms=LAN_TIMEOUTS.seg_ms,
    gather_ms=400,  # the ring waits half of it for consensus: 200 ms
    form_ms=200,
    lookup_ms=LAN_TIMEOUTS.lookup_ms,
)

# keyword -> Timeouts field
TIMEOUT_KEYWORDS: Final = {
    "TokenTimeout": "token_ms",
    "HurryTimeout": "hurry_ms",
    "AliveTimeout": "alive_ms",
    "JoinTimeout": "join_ms",
    "RepTimeout": "rep_ms",
    "SegTimeout": "seg_ms",
    "GatherTimeout": "gather_ms",
    "FormTimeout": "form_ms",
    "LookupTimeout": "lookup_ms",
}


# ----------------------------------------------------------------------------------------------
# The configuration


@dataclass(frozen=True, slots=True)
class Interface:
    """One interface of a daemon. `types` holds ANY for the implicit one: bind the wildcard."""

    address: IPAddress
    types: IfaceType

    @property
    def wildcard(self) -> bool:
        return bool(self.types & IfaceType.ANY)

    def serves(self, kind: IfaceType) -> bool:
        """True if this interface carries traffic of `kind` (DAEMON, CLIENT or MONITOR)."""
        return bool(self.types & (kind | IfaceType.ANY))


@dataclass(frozen=True, slots=True, kw_only=True)
class HostEntry:
    """One configured daemon. `address` may carry an IPv6 scope (`fe80::1%eth0`)."""

    name: str
    address: IPAddress
    port: int  # the segment's port: data and membership on UDP port, tokens on port + 1
    index: int  # position in SpreadConfig.hosts (file order)
    segment_index: int
    index_in_segment: int
    virtual_id: int  # unsigned 32-bit
    virtual_id_explicit: bool
    interfaces: tuple[Interface, ...]
    interfaces_explicit: bool
    line: int = field(compare=False)
    col: int = field(compare=False)

    @property
    def token_port(self) -> int:
        return self.port + 1

    def interfaces_for(self, kind: IfaceType) -> tuple[Interface, ...]:
        """The interfaces that carry `kind` traffic (DAEMON, CLIENT or MONITOR)."""
        return tuple(i for i in self.interfaces if i.serves(kind))


@dataclass(frozen=True, slots=True, kw_only=True)
class Segment:
    """A Spread_Segment: broadcast/multicast addresses, one port, its daemons in file order."""

    index: int
    port: int
    addresses: tuple[IPAddress, ...]
    hosts: tuple[HostEntry, ...]
    line: int = field(compare=False)
    col: int = field(compare=False)

    @property
    def address(self) -> IPAddress:
        return self.addresses[0]


@dataclass(frozen=True, slots=True, kw_only=True)
class SpreadConfig:
    """A parsed spread.conf. Every field holds the effective value (defaults filled in)."""

    path: str
    segments: tuple[Segment, ...]
    hosts: tuple[HostEntry, ...]
    ip_version: int  # 4 or 6
    # logging (takes effect in the daemon; the parser only records)
    debug_mask: int = DEFAULT_DEBUG_MASK
    event_priority: Priority = Priority.INFO
    event_log_file: str | None = None  # raw: %h / %H not expanded; None: stdout
    event_timestamp: str | None = None  # strftime format; None: no timestamps
    event_precise_timestamp: bool = False
    # daemon
    dangerous_monitor: bool = False
    socket_port_reuse: PortReuse = PortReuse.AUTO
    runtime_dir: str = DEFAULT_RUNTIME_DIR
    daemon_user: str = DEFAULT_DAEMON_USER
    daemon_group: str = DEFAULT_DAEMON_GROUP
    allowed_auth_methods: tuple[str, ...] = ("NULL",)
    required_auth_methods: tuple[str, ...] = ()
    access_control_policy: str = DEFAULT_ACCESS_CONTROL_POLICY
    max_session_messages: int = DEFAULT_MAX_SESSION_MESSAGES
    # ring
    window: int = DEFAULT_WINDOW
    personal_window: int = DEFAULT_PERSONAL_WINDOW
    accelerated_ring: bool = False  # what 5.0.1 runs at start-up (spec §5)
    accelerated_ring_explicit: bool = False
    accelerated_window: int = DEFAULT_ACCELERATED_WINDOW
    wide_area_network_explicit: bool | None = None  # None: not in the file
    exclude_seg_addrs_from_hash: bool = False
    ignore_multicast_join_errors: bool = False
    configured_timeouts: Timeouts | None = None  # all nine, or None
    # spreadpy extensions
    timeout_profile: TimeoutProfile = TimeoutProfile.DEFAULT
    ring_auth_key_file: str | None = None
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    # Largest ring datagram; None: 1472 (an Ethernet frame), or 8192 when every daemon is on
    # loopback. All daemons of a ring should agree, and it must fit the path's MTU.
    ring_packet_size: int | None = None
    client_socket_path: str | None = None
    # derived
    config_hash: int = 0
    warnings: tuple[ConfigProblem, ...] = field(default=(), compare=False)

    @property
    def wide_area_network(self) -> bool:
        """WideAreaNetwork as given, else true iff there is more than one segment."""
        if self.wide_area_network_explicit is not None:
            return self.wide_area_network_explicit
        return len(self.segments) > 1

    @property
    def timeouts(self) -> Timeouts:
        return effective_timeouts(
            self.configured_timeouts, self.timeout_profile, self.wide_area_network
        )

    @property
    def timeouts_source(self) -> str:
        """Where `timeouts` comes from: 'explicit', 'fast', 'wan' or 'lan'."""
        if self.configured_timeouts is not None:
            return "explicit"
        if self.timeout_profile is TimeoutProfile.FAST:
            return "fast"
        return "wan" if self.wide_area_network else "lan"

    @property
    def log_timestamp_format(self) -> str | None:
        """The strftime format log lines start with, as alarm.c builds it; None: no stamp.

        EventPreciseTimeStamp turns stamps on by itself, and appends " %s" (epoch seconds, the
        microseconds follow it) unless the format already ends in %s or %S.
        """
        if not self.event_precise_timestamp:
            return self.event_timestamp
        fmt = self.event_timestamp or DEFAULT_TIMESTAMP_FORMAT
        return fmt if fmt.endswith(("%s", "%S")) else fmt + " %s"

    def host_by_name(self, name: str) -> HostEntry | None:
        for host in self.hosts:
            if host.name == name:
                return host
        return None

    def host_by_id(self, virtual_id: int) -> HostEntry | None:
        for host in self.hosts:
            if host.virtual_id == virtual_id:
                return host
        return None

    def segment_of(self, host: HostEntry) -> Segment:
        return self.segments[host.segment_index]


def effective_timeouts(
    configured: Timeouts | None, profile: TimeoutProfile, wide_area: bool
) -> Timeouts:
    """The membership timeouts a daemon runs with: configured, else the profile's, else LAN/WAN."""
    if configured is not None:
        return configured
    if profile is TimeoutProfile.FAST:
        return FAST_TIMEOUTS
    return WAN_TIMEOUTS if wide_area else LAN_TIMEOUTS


def expand_log_path(raw: str, hostname: str) -> str:
    """EventLogFile expansion done by the daemon at start: %h and %H become the host name."""
    return re.sub(r"%[hH]", lambda _m: hostname, raw)


# ----------------------------------------------------------------------------------------------
# Identity: one-at-a-time hash, virtual ids, configuration hash (spec §7)

_U32: Final = 0xFFFFFFFF


def oaat_hash(data: bytes) -> int:
    """Bob Jenkins' one-at-a-time hash as stdutil computes it: seeded with the length, over
    *signed* chars."""
    h = len(data) & _U32
    for byte in data:
        h = (h + (byte - 256 if byte >= 0x80 else byte)) & _U32
        h = (h + (h << 10)) & _U32
        h ^= h >> 6
    h = (h + (h << 3)) & _U32
    h ^= h >> 11
    return (h + (h << 15)) & _U32


def _name_bytes(name: str) -> bytes:
    return name.encode("utf-8", "surrogateescape")


def auto_virtual_id(name: str) -> int:
    """The virtual id 5.0.1 derives from a daemon name (Conf_str_to_id)."""
    data = _name_bytes(name) + b"\0"
    vid = oaat_hash(data)
    if vid in (0, _U32):
        vid = (len(data) << 16) & _U32 or 1 << 16
    return vid


def _canonical(address: IPAddress) -> str:
    """spu_addr_ntop_canon: dotted quad, or all 16 IPv6 bytes as 8 groups of 4 hex digits."""
    if isinstance(address, ipaddress.IPv4Address):
        return str(address)
    return ipaddress.IPv6Address(int(address)).exploded


def config_hash_text(
    segments: Iterable[Segment], *, exclude_segment_addresses: bool, accelerated_ring: bool
) -> str:
    """The text whose hash (plus a NUL) all daemons of a ring must agree on."""
    parts: list[str] = []
    for seg in segments:
        parts.append(f"Segment: port = {seg.port};")
        if not exclude_segment_addresses:
            parts.extend(f" [{_canonical(a)}]" for a in seg.addresses)
        parts.append("\n")
        parts.extend(
            f"\t'{h.name}' [{_canonical(h.address)}] [{h.virtual_id}]\n" for h in seg.hosts
        )
        parts.append("\n")
    protocol = "Accelerated Ring" if accelerated_ring else "Original Ring"
    parts.append(f"Version: 5\nProtocol: {protocol}\n")
    return "".join(parts)


def compute_config_hash(
    segments: Iterable[Segment], *, exclude_segment_addresses: bool, accelerated_ring: bool
) -> int:
    text = config_hash_text(
        segments,
        exclude_segment_addresses=exclude_segment_addresses,
        accelerated_ring=accelerated_ring,
    )
    return oaat_hash(_name_bytes(text) + b"\0")


def _bare(address: IPAddress) -> IPAddress:
    """The address without an IPv6 scope, for comparisons."""
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id is not None:
        return ipaddress.IPv6Address(int(address))
    return address


def is_local_address(address: IPAddress, local_addresses: Iterable[IPAddress]) -> bool:
    """True if `address` (IPv6 scope ignored) is one of `local_addresses`.

    Any 127.0.0.0/8 address counts as local when a local address is in 127.0.0.0/8: Linux
    answers for the whole block on `lo` although it lists only 127.0.0.1 (the original compares
    with the listed addresses only, so it cannot run daemons on 127.0.0.2 and up).
    """
    bare = _bare(address)
    local = [_bare(a) for a in local_addresses]
    if bare in local:
        return True
    return (
        isinstance(bare, ipaddress.IPv4Address)
        and bare.is_loopback
        and any(isinstance(a, ipaddress.IPv4Address) and a.is_loopback for a in local)
    )


# ----------------------------------------------------------------------------------------------
# Own-host selection (configuration.c Conf_load_conf_file; spec §8)


def select_own_host(
    config: SpreadConfig,
    name: str | None,
    local_addresses: Iterable[IPAddress],
    *,
    allow_nonlocal: bool = False,
) -> HostEntry:
    """Pick the daemon this process runs as.

    With `name` (`-n`): the daemon of that name (at most 19 bytes, as the original's `-n`), whose
    address must be one of `local_addresses` unless `allow_nonlocal`. Without: the first daemon
    in file order whose address is local. Raises ConfigError otherwise.
    """
    local = list(local_addresses)
    anchor = config.segments[0] if config.segments else None
    line, col = (anchor.line, anchor.col) if anchor else (1, 1)

    def fail(message: str, at: HostEntry | None = None) -> ConfigError:
        where = (at.line, at.col) if at else (line, col)
        return ConfigError([ConfigProblem(config.path, where[0], where[1], message)])

    if name is None:
        for host in config.hosts:
            if is_local_address(host.address, local):
                return host
        addresses = ", ".join(str(h.address) for h in config.hosts)
        raise fail(
            "none of this machine's addresses matches a daemon's address "
            f"({addresses}); give the daemon's name with -n"
        )
    if len(_name_bytes(name)) > MAX_NAME_BYTES:
        raise fail(f"daemon name {name!r} is longer than {MAX_NAME_BYTES} bytes")
    named = config.host_by_name(name)
    if named is None:
        names = ", ".join(h.name for h in config.hosts)
        raise fail(f"no daemon named {name!r} in the configuration (daemons: {names})")
    if not allow_nonlocal and not is_local_address(named.address, local):
        raise fail(
            f"daemon {name!r} has address {named.address}, which is not an address of this machine",
            named,
        )
    return named


# ----------------------------------------------------------------------------------------------
# Lexer (config_gram.l rules; spec §1)


class _K(enum.Enum):
    LBRACE = "'{'"
    RBRACE = "'}'"
    EQUALS = "'='"
    COLON = "':'"
    SEMICOLON = "';'"
    BANG = "'!'"
    KEYWORD = "keyword"
    BOOL = "boolean"
    TRIVAL = "on/off/auto"
    FLAG = "debug flag"
    IFACE = "interface letter"
    PRIORITY = "priority"
    IPADDR = "IP address"
    IPPORT = "IP address with port"
    NUMBER = "number"
    STRING = "string"
    EOF = "end of file"


ORIGINAL_KEYWORDS: Final = (
    "Spread_Segment",
    "EventLogFile",
    "EventTimeStamp",
    "EventPreciseTimeStamp",
    "EventPriority",
    "DebugFlags",
    "DangerousMonitor",
    "SocketPortReuse",
    "RuntimeDir",
    "DaemonUser",
    "DaemonGroup",
    "RequiredAuthMethods",
    "AllowedAuthMethods",
    "AccessControlPolicy",
    "MaxSessionMessages",
    "ActiveIPVersion",
    "Window",
    "PersonalWindow",
    "AcceleratedRing",
    "AcceleratedWindow",
    *TIMEOUT_KEYWORDS,
    "VirtualID",
    "WideAreaNetwork",
    "ExcludeSegAddrsFromHash",
    "IgnoreMulticastJoinErrors",
)
EXTENSION_KEYWORDS: Final = (
    "RingAuthKeyFile",
    "TimeoutProfile",
    "MaxMessageSize",
    "ClientSocketPath",
    "RingPacketSize",
)
_ORIGINAL_KEYWORD_SET: Final = frozenset(ORIGINAL_KEYWORDS)
_EXTENSION_KEYWORD_SET: Final = frozenset(EXTENSION_KEYWORDS)
# keywords that start a top-level statement (everything but VirtualID)
_STATEMENT_KEYWORDS: Final = (_ORIGINAL_KEYWORD_SET - {"VirtualID"}) | _EXTENSION_KEYWORD_SET
_PARAM_KEYWORDS: Final = _STATEMENT_KEYWORDS - {"Spread_Segment"}
_KEYWORD_BY_FOLDED: Final = {k.casefold(): k for k in (*ORIGINAL_KEYWORDS, *EXTENSION_KEYWORDS)}

_FLAG_NAMES: Final = frozenset(DebugFlag.__members__)
_PRIORITY_WORDS: Final = {
    "pDEBUG": Priority.DEBUG,
    "INFO": Priority.INFO,
    "WARNING": Priority.WARNING,
    "ERROR": Priority.ERROR,
    "CRITICAL": Priority.CRITICAL,
    "FATAL": Priority.FATAL,
}
_IFACE_LETTERS: Final = {"M": IfaceType.MONITOR, "C": IfaceType.CLIENT, "D": IfaceType.DAEMON}
_BOOL_WORDS: Final = {"true": True, "yes": True, "false": False, "no": False}
_TRIVAL_WORDS: Final = {"on": PortReuse.ON, "off": PortReuse.OFF, "auto": PortReuse.AUTO}

_PLAIN_RUN = re.compile(r"[^ \t\r\n\v\f#{}\[\]]+")
_QUAD = r"[0-9A-Fa-f]{1,4}"
_V6 = (
    rf"(?:{_QUAD}(?::{_QUAD}){{7}}"
    rf"|(?:(?:{_QUAD}:){{0,6}}{_QUAD})?::(?:{_QUAD}(?::{_QUAD}){{0,6}})?)"
)
_IPV4_RE = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}")
_IPV4PORT_RE = re.compile(r"([0-9]{1,3}(?:\.[0-9]{1,3}){3}):([0-9]{1,5})")
_IPV6_RE = re.compile(rf"{_V6}(?:%[^ \t\r\n\v\f#{{}}\[\]]+)?")
_IPV6PORT_RE = re.compile(rf"\[({_V6}(?:%[^ \t\r\n\v\f#{{}}\[\]]+)?)\]:([0-9]{{1,5}})")
_NUMBER_RE = re.compile(r"[0-9]{1,9}")
_LOOKS_LIKE_IP = re.compile(r"[0-9.]+|[0-9A-Fa-f:.%\[\]]*:[0-9A-Fa-f:.%\[\]]*")


@dataclass(frozen=True, slots=True)
class _Token:
    kind: _K
    text: str  # source text; for a quoted string, without the quotes
    start: int
    end: int
    value: object = None
    quoted: bool = False
    bad_ip: bool = False  # looked like an IP address but is not one: read as a string


@dataclass(frozen=True, slots=True)
class _Note:
    offset: int
    message: str
    error: bool


def _parse_ip(text: str) -> IPAddress | None:
    """inet_pton on the part before any '%'; the scope (if any) is kept on the IPv6 address."""
    addr_text, _, scope = text.partition("%")
    try:
        if ":" in addr_text:
            v6 = ipaddress.IPv6Address(addr_text)
            return ipaddress.IPv6Address(f"{v6}%{scope}") if scope else v6
        return ipaddress.IPv4Address(addr_text)
    except ValueError:
        return None


def _scan(text: str, pos: int) -> tuple[_Token, list[_Note]]:
    """The next token at or after `pos`, by the original's longest-match rules."""
    notes: list[_Note] = []
    n = len(text)
    while pos < n:
        c = text[pos]
        if c in " \t\r\n":
            pos += 1
        elif c in "\v\f":
            notes.append(_Note(pos, "vertical tab or form feed read as a blank", False))
            pos += 1
        elif c == "#":
            nl = text.find("\n", pos)
            pos = n if nl < 0 else nl
        elif c == "{":
            return _Token(_K.LBRACE, c, pos, pos + 1), notes
        elif c == "}":
            return _Token(_K.RBRACE, c, pos, pos + 1), notes
        elif c == "[":
            m = _IPV6PORT_RE.match(text, pos)
            if m:
                tok = _address_with_port(m.group(0), m.group(1), m.group(2), pos, notes)
                if tok is not None:
                    return tok, notes
            notes.append(_Note(pos, "stray '[' skipped (Spread 5.0.1 skips it too)", False))
            pos += 1
        elif c == "]":
            notes.append(_Note(pos, "stray ']' skipped (Spread 5.0.1 skips it too)", False))
            pos += 1
        elif c == "!" and pos + 1 < n and text[pos + 1] != "\n":
            return _Token(_K.BANG, c, pos, pos + 1), notes
        else:
            m = _PLAIN_RUN.match(text, pos)
            assert m is not None
            run_end = m.end()
            if c in "\"'":
                close = text.find(c, pos + 1)
                if close >= 0 and close + 1 >= run_end:
                    if "\n" in text[pos:close]:
                        notes.append(
                            _Note(pos, "quoted string runs over more than one line", False)
                        )
                    return (
                        _Token(_K.STRING, text[pos + 1 : close], pos, close + 1, quoted=True),
                        notes,
                    )
                notes.append(
                    _Note(
                        pos,
                        f"unbalanced {c}: read as part of the word {text[pos:run_end]!r}",
                        False,
                    )
                )
            return _classify(text[pos:run_end], pos, notes), notes
    return _Token(_K.EOF, "", n, n), notes


def _address_with_port(
    whole: str, addr_text: str, port_text: str, pos: int, notes: list[_Note]
) -> _Token | None:
    address = _parse_ip(addr_text)
    if address is None:
        return None
    port = int(port_text)
    if port > 0xFFFF:
        notes.append(_Note(pos, f"port {port} is out of range (0 to 65535)", True))
    return _Token(_K.IPPORT, whole, pos, pos + len(whole), value=(address, port))


def _classify(word: str, pos: int, notes: list[_Note]) -> _Token:
    end = pos + len(word)
    folded = word.lower()
    if word in ("=", ":", ";"):
        kind = {"=": _K.EQUALS, ":": _K.COLON, ";": _K.SEMICOLON}[word]
        return _Token(kind, word, pos, end)
    if word in _ORIGINAL_KEYWORD_SET:
        return _Token(_K.KEYWORD, word, pos, end, value=word)
    if folded in _BOOL_WORDS:
        return _Token(_K.BOOL, word, pos, end, value=_BOOL_WORDS[folded])
    if folded in _TRIVAL_WORDS:
        return _Token(_K.TRIVAL, word, pos, end, value=_TRIVAL_WORDS[folded])
    if word in _FLAG_NAMES:
        return _Token(_K.FLAG, word, pos, end, value=int(DebugFlag[word]))
    if word in _IFACE_LETTERS:
        return _Token(_K.IFACE, word, pos, end, value=_IFACE_LETTERS[word])
    if word in _PRIORITY_WORDS:
        return _Token(_K.PRIORITY, word, pos, end, value=_PRIORITY_WORDS[word])
    bad_ip = False
    if _IPV4_RE.fullmatch(word) or _IPV6_RE.fullmatch(word):
        address = _parse_ip(word)
        if address is not None:
            return _Token(_K.IPADDR, word, pos, end, value=address)
        bad_ip = True
    m = _IPV4PORT_RE.fullmatch(word)
    if m:
        tok = _address_with_port(word, m.group(1), m.group(2), pos, notes)
        if tok is not None:
            return tok
        bad_ip = True
    if _NUMBER_RE.fullmatch(word):
        return _Token(_K.NUMBER, word, pos, end, value=int(word))
    return _Token(_K.STRING, word, pos, end, bad_ip=bad_ip)


# ----------------------------------------------------------------------------------------------
# Parser


_STRING_LIKE: Final = frozenset(
    {
        _K.STRING,
        _K.BOOL,
        _K.TRIVAL,
        _K.FLAG,
        _K.IFACE,
        _K.PRIORITY,
        _K.NUMBER,
        _K.IPADDR,
        _K.IPPORT,
    }
)

# keyword -> kind of value
_VALUE_KIND: Final = {
    "EventLogFile": "string",
    "EventPriority": "priority",
    "DebugFlags": "flags",
    "DangerousMonitor": "bool",
    "SocketPortReuse": "trival",
    "RuntimeDir": "string",
    "DaemonUser": "string",
    "DaemonGroup": "string",
    "RequiredAuthMethods": "string",
    "AllowedAuthMethods": "string",
    "AccessControlPolicy": "string",
    "MaxSessionMessages": "number",
    "ActiveIPVersion": "string",
    "Window": "number",
    "PersonalWindow": "number",
    "AcceleratedRing": "bool",
    "AcceleratedWindow": "number",
    **dict.fromkeys(TIMEOUT_KEYWORDS, "number"),
    "WideAreaNetwork": "bool",
    "ExcludeSegAddrsFromHash": "bool",
    "IgnoreMulticastJoinErrors": "bool",
    "RingAuthKeyFile": "string",
    "TimeoutProfile": "string",
    "MaxMessageSize": "number",
    "ClientSocketPath": "string",
    "RingPacketSize": "number",
}


def _show(tok: _Token) -> str:
    if tok.kind is _K.EOF:
        return "end of file"
    if tok.quoted:
        return f'"{tok.text}"'
    return f"'{tok.text}'"


@dataclass(slots=True)
class _SegmentBuild:
    index: int
    start: int
    port: int
    addresses: list[IPAddress]
    address_offsets: list[int]
    hosts: list[HostEntry] = field(default_factory=list)


class _Parser:
    """One use: `_Parser(text, path).parse()`. All state is local to the instance."""

    def __init__(self, text: str, path: str) -> None:
        self.text = text
        self.path = path
        self.pos = 0
        self.tok: _Token | None = None
        self.errors: dict[tuple[int, str], ConfigProblem] = {}
        self.warns: dict[tuple[int, str], ConfigProblem] = {}
        self.line_starts = [0] + [m.end() for m in re.finditer("\n", text)]
        self.segments: list[_SegmentBuild] = []
        self.hosts: list[HostEntry] = []
        self.ip_family: int | None = None
        self.ip_family_origin = ""
        self.deferred_segments: list[_SegmentBuild] = []
        self.values: dict[str, object] = {}
        self.where: dict[str, int] = {}  # keyword -> offset of its last statement
        self.first_timeout_at: int | None = None
        self.auth_configured = False
        self.allowed_auth: list[str] = ["NULL"]
        self.required_auth: list[str] = []
        self.too_many_daemons_reported = False

    # -- locations and reporting -------------------------------------------------------------

    def loc(self, offset: int) -> tuple[int, int]:
        line = bisect.bisect_right(self.line_starts, offset)
        return line, offset - self.line_starts[line - 1] + 1

    def error(self, offset: int, message: str) -> None:
        line, col = self.loc(offset)
        self.errors.setdefault((offset, message), ConfigProblem(self.path, line, col, message))

    def warn(self, offset: int, message: str) -> None:
        line, col = self.loc(offset)
        self.warns.setdefault((offset, message), ConfigProblem(self.path, line, col, message))

    def at(self, offset: int) -> str:
        line, col = self.loc(offset)
        return f"{line}:{col}"

    # -- token stream ------------------------------------------------------------------------

    def peek(self) -> _Token:
        if self.tok is None:
            self.tok, notes = _scan(self.text, self.pos)
            for note in notes:
                (self.error if note.error else self.warn)(note.offset, note.message)
        return self.tok

    def advance(self) -> _Token:
        tok = self.peek()
        self.pos = tok.end
        self.tok = None
        return tok

    def resume_at(self, offset: int) -> None:
        self.pos = offset
        self.tok = None

    def line_of(self, offset: int) -> int:
        return self.loc(offset)[0]

    def is_statement_start(self, tok: _Token, *, in_block: bool = False) -> bool:
        """Does `tok` start a top-level statement? Inside a block, one of our own keywords
        starts a statement only when `=` follows: otherwise it is a daemon name, as in 5.0.1."""
        if tok.kind is _K.KEYWORD:
            return tok.value != "VirtualID"
        if tok.kind is not _K.STRING or tok.quoted or tok.text not in _EXTENSION_KEYWORD_SET:
            return False
        if not in_block:
            return True
        nxt = _scan(self.text, tok.end)[0]
        return nxt.kind is _K.EQUALS or (
            nxt.kind is _K.STRING and not nxt.quoted and nxt.text.startswith("=")
        )

    def glued_keyword(self, tok: _Token, allowed: frozenset[str]) -> str | None:
        """`Window=5` lexes as one string; return 'Window' when the string starts so."""
        if tok.kind is not _K.STRING or tok.quoted:
            return None
        head, eq, _ = tok.text.partition("=")
        return head if eq and head in allowed else None

    def expect_equals(self, keyword: str) -> bool:
        tok = self.peek()
        if tok.kind is _K.EQUALS:
            self.advance()
            return True
        if tok.kind is _K.STRING and not tok.quoted and tok.text.startswith("="):
            self.resume_at(tok.start + 1)  # `=5`: the original reads one string; we split it
            return True
        self.error(tok.start, f"expected '=' after {keyword}, found {_show(tok)}")
        return False

    def skip_to_statement(self, error_offset: int) -> None:
        """Error recovery at top level: drop the rest of the line of the error (and any brace
        block opened on it), stopping early at a statement keyword."""
        line = self.line_of(error_offset)
        depth = 0
        while True:
            tok = self.peek()
            if tok.kind is _K.EOF or self.is_statement_start(tok):
                return
            if self.glued_keyword(tok, _PARAM_KEYWORDS):
                return
            if depth == 0 and self.line_of(tok.start) > line:
                return
            if tok.kind is _K.LBRACE:
                depth += 1
            elif tok.kind is _K.RBRACE:
                depth = max(0, depth - 1)
            self.advance()

    # -- top level ---------------------------------------------------------------------------

    def parse(self) -> SpreadConfig:
        while True:
            tok = self.peek()
            if tok.kind is _K.EOF:
                break
            glued = self.glued_keyword(tok, _PARAM_KEYWORDS)
            if glued is not None:
                self.resume_at(tok.start + len(glued))
                self.parse_param(glued, tok.start)
            elif tok.kind is _K.KEYWORD and tok.value == "Spread_Segment":
                self.advance()
                self.parse_segment(tok.start)
            elif self.is_statement_start(tok):
                self.advance()
                self.parse_param(tok.text, tok.start)
            else:
                self.error(tok.start, self.not_a_statement(tok))
                self.skip_to_statement(tok.start)
        return self.finish()

    def not_a_statement(self, tok: _Token) -> str:
        if tok.kind is _K.STRING and not tok.quoted:
            word = tok.text.partition("=")[0]
            known = _KEYWORD_BY_FOLDED.get(word.casefold())
            if known is not None and known != "VirtualID":
                return f"unknown keyword '{word}': keywords are case-sensitive, write '{known}'"
            return f"unknown keyword {_show(tok)}"
        if tok.kind is _K.KEYWORD:  # VirtualID
            return "VirtualID belongs after a daemon inside a Spread_Segment block"
        if tok.kind is _K.RBRACE:
            return "'}' without a matching '{'"
        return f"expected a keyword or Spread_Segment, found {_show(tok)}"

    # -- parameters --------------------------------------------------------------------------

    def parse_param(self, keyword: str, offset: int) -> None:
        if keyword == "EventPreciseTimeStamp":
            self.where[keyword] = offset
            self.values[keyword] = True
            nxt = self.peek()
            if nxt.kind is _K.EQUALS or (nxt.text.startswith("=") and not nxt.quoted):
                self.error(nxt.start, "EventPreciseTimeStamp takes no value")
                self.skip_to_statement(nxt.start)
            return
        if keyword == "EventTimeStamp":
            nxt = self.peek()
            self.where[keyword] = offset
            if nxt.kind is _K.EQUALS or (
                nxt.kind is _K.STRING and not nxt.quoted and nxt.text.startswith("=")
            ):
                self.expect_equals(keyword)
                fmt = self.read_string(keyword)
                if fmt is not None:
                    self.values[keyword] = fmt
            else:
                self.values[keyword] = DEFAULT_TIMESTAMP_FORMAT
            return
        if not self.expect_equals(keyword):
            self.skip_to_statement(self.peek().start)
            return
        kind = _VALUE_KIND[keyword]
        value_at = self.peek().start
        value: object
        if kind == "flags":
            value = self.read_flags()
        elif kind == "string":
            value = self.read_string(keyword)
        else:
            value = self.read_scalar(keyword, kind)
        if value is None:
            return
        self.apply(keyword, value, offset, value_at)

    def read_value_token(self, keyword: str, wanted: str, ok: frozenset[_K]) -> _Token | None:
        tok = self.peek()
        if tok.kind in ok:
            return self.advance()
        self.error(tok.start, f"{keyword}: expected {wanted}, found {_show(tok)}")
        if tok.kind is not _K.EOF and not self.is_statement_start(tok):
            self.advance()
        return None

    def read_string(self, keyword: str) -> str | None:
        tok = self.read_value_token(keyword, "a string", _STRING_LIKE)
        return None if tok is None else tok.text

    def read_scalar(self, keyword: str, kind: str) -> object:
        tok = self.peek()
        expected = {
            "number": (_K.NUMBER, "a number"),
            "bool": (_K.BOOL, "true, false, yes or no"),
            "trival": (_K.TRIVAL, "on, off or auto"),
            "priority": (_K.PRIORITY, "pDEBUG, INFO, WARNING, ERROR, CRITICAL or FATAL"),
        }[kind]
        if tok.kind is expected[0]:
            self.advance()
            return tok.value
        if kind == "number" and tok.kind is _K.STRING and not tok.quoted:
            if tok.text.isdigit():
                self.error(tok.start, f"{keyword}: {tok.text} has more than 9 digits")
                self.advance()
                return None
            if re.fullmatch(r"-[0-9]+", tok.text):
                self.error(tok.start, f"{keyword}: must not be negative, found {tok.text}")
                self.advance()
                return None
        if kind == "priority" and tok.kind is _K.FLAG and tok.text == "DEBUG":
            self.error(tok.start, "EventPriority: the debug priority is spelled pDEBUG")
            self.advance()
            return None
        return self.read_value_token(keyword, expected[1], frozenset())

    def read_flags(self) -> int | None:
        tok = self.peek()
        if tok.kind is not _K.LBRACE:
            self.error(tok.start, f"DebugFlags: expected '{{', found {_show(tok)}")
            if tok.kind is not _K.EOF and not self.is_statement_start(tok):
                self.advance()
            return None
        open_at = self.advance().start
        mask = 0
        ok = True
        while True:
            tok = self.peek()
            if tok.kind is _K.RBRACE:
                self.advance()
                return mask if ok else None
            if tok.kind is _K.EOF or self.is_statement_start(tok):
                self.error(open_at, "DebugFlags: '{' is never closed by '}'")
                return None
            self.advance()
            negate = tok.kind is _K.BANG
            if negate:
                tok = self.peek()
                if tok.kind is not _K.FLAG:
                    self.error(
                        tok.start, f"DebugFlags: expected a flag after '!', found {_show(tok)}"
                    )
                    ok = False
                    continue
                self.advance()
            if tok.kind is _K.FLAG:
                assert isinstance(tok.value, int)
                mask = mask & ~tok.value & _U32 if negate else mask | tok.value
                continue
            ok = False
            if tok.kind is _K.STRING and tok.text.upper() in _FLAG_NAMES:
                msg = f"DebugFlags: flag names are upper-case, write '{tok.text.upper()}'"
            else:
                names = " ".join(sorted(_FLAG_NAMES))
                msg = f"DebugFlags: unknown flag {_show(tok)} (flags: {names})"
            self.error(tok.start, msg)

    def apply(self, keyword: str, value: object, offset: int, value_at: int) -> None:
        """Validate one parameter value and record it (last statement wins, as in 5.0.1)."""
        match keyword:
            case "Window" | "PersonalWindow" if value == 0:
                self.error(value_at, f"{keyword} must be greater than 0")
                return
            case _ if keyword in TIMEOUT_KEYWORDS:
                if value == 0:
                    self.error(value_at, f"{keyword} must be greater than 0 (milliseconds)")
                    return
                if self.first_timeout_at is None:
                    self.first_timeout_at = offset
            case "MaxSessionMessages" if value == 0:
                self.warn(
                    value_at,
                    "MaxSessionMessages = 0 disconnects a client as soon as "
                    "one message waits for it",
                )
            case "DaemonUser" | "DaemonGroup" | "RuntimeDir":
                assert isinstance(value, str)
                if not value:
                    self.warn(value_at, f"empty {keyword} ignored (as Spread 5.0.1 does)")
                    return
                limit = MAX_PATH_BYTES if keyword == "RuntimeDir" else MAX_USER_NAME_CHARS
                if len(_name_bytes(value)) > limit:
                    self.error(value_at, f"{keyword} is longer than {limit} characters")
                    return
            case "AccessControlPolicy" if value != "PERMIT":
                self.error(
                    value_at,
                    f"AccessControlPolicy: unknown policy '{value}' (the only policy is PERMIT)",
                )
                return
            case "ActiveIPVersion":
                assert isinstance(value, str)
                family = {"ipv4": 4, "ipv6": 6}.get(value.lower())
                if family is None:
                    self.error(value_at, f"ActiveIPVersion must be IPv4 or IPv6, not '{value}'")
                    return
                if self.ip_family is not None and self.ip_family != family:
                    self.error(
                        value_at,
                        f"ActiveIPVersion = IPv{family} conflicts with "
                        f"IPv{self.ip_family} ({self.ip_family_origin}); "
                        "put ActiveIPVersion before the segments",
                    )
                    return
                if self.ip_family is None:
                    self.ip_family = family
                    self.ip_family_origin = f"set by ActiveIPVersion at {self.at(offset)}"
                value = family
            case "AllowedAuthMethods" | "RequiredAuthMethods":
                assert isinstance(value, str)
                self.apply_auth(keyword, value, value_at)
                return
            case "TimeoutProfile":
                assert isinstance(value, str)
                try:
                    value = TimeoutProfile(value.lower())
                except ValueError:
                    self.error(value_at, f"TimeoutProfile must be default or fast, not '{value}'")
                    return
            case "MaxMessageSize":
                assert isinstance(value, int)
                if not 1 <= value <= MAX_MESSAGE_SIZE_LIMIT:
                    self.error(
                        value_at,
                        f"MaxMessageSize must be between 1 and "
                        f"{MAX_MESSAGE_SIZE_LIMIT} bytes, not {value}",
                    )
                    return
            case "RingPacketSize":
                assert isinstance(value, int)
                if not RING_PACKET_SIZE_MIN <= value <= RING_PACKET_SIZE_MAX:
                    self.error(
                        value_at,
                        f"RingPacketSize must be between {RING_PACKET_SIZE_MIN} and "
                        f"{RING_PACKET_SIZE_MAX} bytes, not {value}",
                    )
                    return
            case "RingAuthKeyFile" if value == "":
                self.error(value_at, "RingAuthKeyFile must not be empty")
                return
            case "ClientSocketPath":
                assert isinstance(value, str)
                if not value:
                    self.error(value_at, "ClientSocketPath must not be empty")
                    return
                if len(_name_bytes(value)) > MAX_UNIX_SOCKET_PATH_BYTES:
                    self.error(
                        value_at,
                        f"ClientSocketPath is longer than "
                        f"{MAX_UNIX_SOCKET_PATH_BYTES} bytes (the Unix socket limit)",
                    )
                    return
            case _:
                pass
        self.values[keyword] = value
        self.where[keyword] = offset

    def apply_auth(self, keyword: str, value: str, offset: int) -> None:
        if not self.auth_configured:
            self.auth_configured = True
            self.allowed_auth = []  # the first auth statement disables the default NULL method
        target = self.allowed_auth if keyword == "AllowedAuthMethods" else self.required_auth
        for method in value.split():
            if method not in KNOWN_AUTH_METHODS:
                known = ", ".join(KNOWN_AUTH_METHODS)
                self.warn(offset, f"{keyword}: unknown method '{method}' ignored (known: {known})")
            elif method not in target:
                target.append(method)
        self.where[keyword] = offset

    # -- segments ----------------------------------------------------------------------------

    def parse_segment(self, start: int) -> None:
        seg = _SegmentBuild(
            index=len(self.segments),
            start=start,
            port=DEFAULT_PORT,
            addresses=[],
            address_offsets=[],
        )
        if len(self.segments) == MAX_SEGMENTS:
            self.error(start, f"more than {MAX_SEGMENTS} segments")
        self.segments.append(seg)
        tok = self.peek()
        if tok.kind in (_K.IPADDR, _K.IPPORT):
            self.advance()
            if tok.kind is _K.IPPORT:
                assert isinstance(tok.value, tuple)
                address, port = tok.value
                self.set_segment_port(seg, port, tok.start)
            else:
                address = tok.value
            self.add_segment_address(seg, address, tok.start)
        else:
            self.error(tok.start, self.bad_address_message("Spread_Segment", tok, port_ok=True))
            if tok.kind is _K.STRING:
                self.advance()
        while True:
            tok = self.peek()
            if tok.kind is _K.IPADDR:
                self.advance()
                self.add_segment_address(seg, tok.value, tok.start)
            elif tok.kind is _K.IPPORT:
                self.advance()
                self.error(tok.start, "only the first segment address may carry a port")
                assert isinstance(tok.value, tuple)
                self.add_segment_address(seg, tok.value[0], tok.start)
            elif tok.kind is _K.STRING and not self.is_statement_start(tok):
                self.advance()
                self.error(tok.start, self.bad_address_message("Spread_Segment", tok))
            else:
                break
        tok = self.peek()
        if tok.kind is not _K.LBRACE:
            self.error(
                tok.start, f"expected '{{' to open the Spread_Segment block, found {_show(tok)}"
            )
            self.skip_to_statement(tok.start)
            self.close_segment(seg)
            return
        open_at = self.advance().start
        while True:
            tok = self.peek()
            if tok.kind is _K.RBRACE:
                self.advance()
                break
            if tok.kind is _K.EOF or self.is_statement_start(tok, in_block=True):
                self.error(
                    open_at,
                    f"the Spread_Segment block opened here is not closed by "
                    f"'}}' (found {_show(tok)} at {self.at(tok.start)})",
                )
                break
            if tok.kind in (_K.STRING, _K.IPADDR):
                self.parse_daemon(seg)
            else:
                self.advance()
                self.error(tok.start, self.not_a_daemon(tok))
                self.skip_rest_of_entry(tok)
        self.close_segment(seg)

    def bad_address_message(self, where: str, tok: _Token, *, port_ok: bool = False) -> str:
        wanted = "an IP address" + (" (optionally :port)" if port_ok else "")
        if tok.bad_ip or (tok.kind is _K.STRING and _LOOKS_LIKE_IP.fullmatch(tok.text)):
            return f"{where}: {_show(tok)} is not a valid IP address"
        if tok.kind is _K.STRING:
            return (
                f"{where}: expected {wanted}, found {_show(tok)} (host names are not "
                "resolved; write the address)"
            )
        return f"{where}: expected {wanted}, found {_show(tok)}"

    def set_segment_port(self, seg: _SegmentBuild, port: int, offset: int) -> None:
        if port == 0:
            self.warn(offset, f"port 0 means the default port {DEFAULT_PORT}")
            port = DEFAULT_PORT
        elif port == 0xFFFF:
            self.error(offset, "port 65535 cannot be used: the daemon also needs port + 1")
        elif port > 0xFFFF:
            return  # already reported by the lexer
        seg.port = port

    def add_segment_address(self, seg: _SegmentBuild, address: object, offset: int) -> None:
        assert isinstance(address, ipaddress.IPv4Address | ipaddress.IPv6Address)
        if len(seg.addresses) == MAX_SEGMENT_ADDRESSES:
            self.error(offset, f"a segment has at most {MAX_SEGMENT_ADDRESSES} addresses")
            return
        if address.is_unspecified:
            self.error(offset, f"segment address {address} is the unspecified address")
        elif address.is_loopback:
            self.warn(
                offset,
                f"segment address {address} is a loopback address: only daemons "
                "on this machine can use it",
            )
        elif address.version == 6 and not address.is_multicast:
            self.warn(offset, f"IPv6 segment address {address} is not a multicast address")
        seg.addresses.append(address)
        seg.address_offsets.append(offset)

    def close_segment(self, seg: _SegmentBuild) -> None:
        if self.ip_family is None:
            self.deferred_segments.append(seg)
        else:
            self.check_segment_family(seg)

    def check_segment_family(self, seg: _SegmentBuild) -> None:
        for address, offset in zip(seg.addresses, seg.address_offsets, strict=True):
            if self.ip_family is not None and address.version != self.ip_family:
                self.error(
                    offset,
                    f"segment address {address} is IPv{address.version} but the "
                    f"active IP version is IPv{self.ip_family} ({self.ip_family_origin})",
                )

    def not_a_daemon(self, tok: _Token) -> str:
        if tok.kind in (_K.BOOL, _K.TRIVAL, _K.FLAG, _K.IFACE, _K.PRIORITY, _K.NUMBER):
            return (
                f"{_show(tok)} is a reserved word and cannot be a bare daemon name; "
                f'quote it ("{tok.text}")'
            )
        if tok.kind is _K.IPPORT:
            return "a daemon address takes no port: every daemon uses its segment's port"
        if tok.kind is _K.KEYWORD:  # VirtualID
            return "VirtualID must follow a daemon's name and address"
        return f"expected a daemon name or address, found {_show(tok)}"

    def skip_rest_of_entry(self, bad: _Token) -> None:
        """Error recovery in a segment: drop the rest of the line of `bad` (and any
        interface block started on it)."""
        line = self.line_of(bad.start)
        depth = 0
        while True:
            tok = self.peek()
            if tok.kind is _K.EOF or self.is_statement_start(tok, in_block=True):
                return
            if depth == 0 and (tok.kind is _K.RBRACE or self.line_of(tok.start) != line):
                return
            if tok.kind is _K.LBRACE:
                depth += 1
            elif tok.kind is _K.RBRACE:
                depth -= 1
            self.advance()

    # -- daemons -----------------------------------------------------------------------------

    def parse_daemon(self, seg: _SegmentBuild) -> None:
        first = self.advance()
        address: IPAddress | None = None
        bad = False
        if first.kind is _K.IPADDR:
            assert isinstance(first.value, ipaddress.IPv4Address | ipaddress.IPv6Address)
            address = first.value
            name = first.text.partition("%")[0]
        elif not first.text:
            self.error(first.start, "empty daemon name")
            bad = True
            name = ""
            if self.peek().kind is _K.IPADDR:
                self.advance()
        else:
            name = first.text
            nxt = self.peek()
            if nxt.kind is _K.IPADDR:
                self.advance()
                assert isinstance(nxt.value, ipaddress.IPv4Address | ipaddress.IPv6Address)
                address = nxt.value
                if first.bad_ip:
                    self.warn(
                        first.start, f"daemon name {_show(first)} looks like a malformed IP address"
                    )
            elif nxt.kind is _K.IPPORT:
                self.advance()
                self.error(
                    nxt.start,
                    "a daemon address takes no port: every daemon uses its segment's port",
                )
                bad = True
            else:
                address = _parse_ip(first.text)
                if address is None:
                    bad = True
                    self.error(first.start, self.no_address_message(first))
        vid: int | None = None
        vid_offset = first.start
        tok = self.peek()
        glued = self.glued_keyword(tok, frozenset({"VirtualID"}))
        has_vid = False
        if glued is not None and _scan(self.text, tok.end)[0].kind is not _K.IPADDR:
            self.resume_at(tok.start + len(glued))  # `VirtualID=5`: split, as `Window=5`
            has_vid = True
        elif tok.kind is _K.KEYWORD and tok.value == "VirtualID":
            self.advance()
            has_vid = True
        if has_vid:
            vid_offset = tok.start
            if self.expect_equals("VirtualID"):
                value = self.read_scalar("VirtualID", "number")
                if value == 0:
                    self.error(vid_offset, "VirtualID must be greater than 0")
                    bad = True
                elif isinstance(value, int):
                    vid = value
                else:
                    bad = True
            else:
                bad = True
        interfaces: list[Interface] = []
        explicit_ifaces = self.peek().kind is _K.LBRACE
        if explicit_ifaces:
            bad |= not self.parse_interfaces(interfaces)
        if self.peek().kind is _K.SEMICOLON:
            self.advance()
        if bad or address is None:
            return
        self.add_daemon(seg, first, name, address, vid, vid_offset, interfaces, explicit_ifaces)

    def no_address_message(self, tok: _Token) -> str:
        if tok.bad_ip:
            return f"{_show(tok)} is not a valid IP address"
        if tok.text.endswith(";") and _parse_ip(tok.text[:-1]) is not None:
            return f"{_show(tok)}: put a blank before ';' (the ';' is read as part of the name)"
        hint = (
            " (the ';' is part of the name: put a blank before it)"
            if tok.text.endswith(";")
            else ""
        )
        return (
            f"daemon {_show(tok)} has no address: spreadpy does not resolve host names, "
            f"write '{tok.text} <IP address>'{hint}"
        )

    def parse_interfaces(self, out: list[Interface]) -> bool:
        """`{ [M|C|D]... IPADDR ... }`; returns False on error."""
        open_at = self.advance().start
        ok = True
        types = IfaceType(0)
        while True:
            tok = self.peek()
            if tok.kind is _K.RBRACE:
                self.advance()
                break
            if tok.kind is _K.EOF or self.is_statement_start(tok, in_block=True):
                self.error(
                    open_at,
                    f"the interface block opened here is not closed by '}}' "
                    f"(found {_show(tok)} at {self.at(tok.start)})",
                )
                return False
            self.advance()
            if tok.kind is _K.IFACE:
                assert isinstance(tok.value, IfaceType)
                types |= tok.value
                continue
            if tok.kind is _K.IPADDR:
                assert isinstance(tok.value, ipaddress.IPv4Address | ipaddress.IPv6Address)
                if len(out) == MAX_INTERFACES:
                    self.error(tok.start, f"a daemon has at most {MAX_INTERFACES} interfaces")
                    ok = False
                else:
                    out.append(Interface(tok.value, types or IfaceType.ALL))
                types = IfaceType(0)
                continue
            ok = False
            if tok.kind is _K.IPPORT:
                self.error(tok.start, "interface addresses take no port")
                types = IfaceType(0)
            elif tok.kind is _K.STRING and tok.text and set(tok.text) <= set("MCD"):
                letters = " ".join(tok.text)
                self.error(tok.start, f"interface letters are separate words: write '{letters}'")
            elif tok.kind is _K.STRING:
                self.error(tok.start, self.bad_address_message("interface", tok))
            else:
                self.error(
                    tok.start, f"interface: expected M, C, D or an IP address, found {_show(tok)}"
                )
        if types:
            self.error(self.pos - 1, "interface letters must be followed by an IP address")
            ok = False
        if ok and not out:
            self.error(open_at, "empty interface block: list at least one interface")
            ok = False
        return ok

    def add_daemon(
        self,
        seg: _SegmentBuild,
        first: _Token,
        name: str,
        address: IPAddress,
        vid: int | None,
        vid_offset: int,
        interfaces: list[Interface],
        explicit_ifaces: bool,
    ) -> None:
        at = first.start
        ok = True
        if not name:
            self.error(at, "empty daemon name")
            return
        if name.endswith(";"):
            self.warn(
                at,
                f"daemon name '{name}' ends with ';': to separate two daemons put "
                "blanks around ';'",
            )
        raw = _name_bytes(name)
        if len(raw) > MAX_NAME_BYTES:
            name = raw[:MAX_NAME_BYTES].decode("utf-8", "surrogateescape")
            self.warn(at, f"daemon name cut to {MAX_NAME_BYTES} bytes: '{name}'")
        if any(ch <= "#" or ch > "~" for ch in name):
            self.warn(
                at,
                f"clients cannot use daemon name '{name}': characters must be "
                "printable ASCII above '#'",
            )
        if address.is_unspecified:
            self.error(at, f"daemon address {address} is the unspecified address")
            ok = False
        if address.is_multicast:
            self.error(at, f"daemon address {address} is a multicast address")
            ok = False
        if self.ip_family is None:
            self.ip_family = address.version
            self.ip_family_origin = f"set by daemon '{name}' at {self.at(at)}"
            for pending in self.deferred_segments:
                self.check_segment_family(pending)
            self.deferred_segments.clear()
        elif address.version != self.ip_family:
            self.error(
                at,
                f"daemon '{name}' has an IPv{address.version} address but the "
                f"active IP version is IPv{self.ip_family} ({self.ip_family_origin})",
            )
            ok = False
        if explicit_ifaces and not any(
            i.serves(IfaceType.DAEMON)
            and (
                _bare(i.address) == _bare(address)
                or (i.address.version == address.version and i.address.is_unspecified)
            )
            for i in interfaces
        ):
            self.error(
                at,
                f"the interfaces of daemon '{name}' need a D (or untyped) entry for "
                f"its address {address} or for the unspecified address",
            )
            ok = False
        for other in self.hosts:
            if other.name == name:
                where = f"at {other.line}:{other.col}"
                if other.segment_index != seg.index:
                    where += f" in segment {other.segment_index}"
                self.error(at, f"daemon name '{name}' is already used by the daemon {where}")
                ok = False
            elif _bare(other.address) == _bare(address) and other.port == seg.port:
                self.error(
                    at,
                    f"daemon '{name}': address {address} port {seg.port} is already "
                    f"used by daemon '{other.name}' at {other.line}:{other.col}",
                )
                ok = False
        virtual_id = vid if vid is not None else auto_virtual_id(name)
        clash = next((h for h in self.hosts if h.virtual_id == virtual_id), None)
        if clash is not None and clash.name != name:
            how = "" if vid is not None else " (derived from its name)"
            self.error(
                vid_offset,
                f"virtual id {virtual_id}{how} of daemon '{name}' is already "
                f"used by daemon '{clash.name}'; set VirtualID explicitly",
            )
            ok = False
        if len(self.hosts) >= MAX_DAEMONS:
            if not self.too_many_daemons_reported:
                self.error(at, f"more than {MAX_DAEMONS} daemons")
                self.too_many_daemons_reported = True
            ok = False
        if not ok:
            return
        line, col = self.loc(at)
        host = HostEntry(
            name=name,
            address=address,
            port=seg.port,
            index=len(self.hosts),
            segment_index=seg.index,
            index_in_segment=len(seg.hosts),
            virtual_id=virtual_id,
            virtual_id_explicit=vid is not None,
            interfaces=(
                tuple(interfaces)
                if explicit_ifaces
                else (Interface(address, IfaceType.ALL | IfaceType.ANY),)
            ),
            interfaces_explicit=explicit_ifaces,
            line=line,
            col=col,
        )
        self.hosts.append(host)
        seg.hosts.append(host)

    # -- end of file -------------------------------------------------------------------------

    def get_int(self, keyword: str, default: int) -> int:
        value = self.values.get(keyword, default)
        assert isinstance(value, int)
        return value

    def get_bool(self, keyword: str) -> bool:
        value = self.values.get(keyword, False)
        assert isinstance(value, bool)
        return value

    def get_str(self, keyword: str) -> str | None:
        value = self.values.get(keyword)
        assert value is None or isinstance(value, str)
        return value

    def finish(self) -> SpreadConfig:
        v = self.values
        end = len(self.text)
        if not self.segments:
            self.error(end, "no Spread_Segment: configure at least one segment with its daemons")
        elif not self.hosts and not self.errors:
            self.error(self.segments[0].start, "no daemons: the segments list no daemon")
        window = self.get_int("Window", DEFAULT_WINDOW)
        # Never above Window when not given: `Window = 40` alone is valid for the original.
        personal = self.get_int("PersonalWindow", min(DEFAULT_PERSONAL_WINDOW, window))
        accel_window = self.get_int("AcceleratedWindow", DEFAULT_ACCELERATED_WINDOW)
        accel_explicit = "AcceleratedRing" in v
        accelerated = self.get_bool("AcceleratedRing")
        if personal > window:
            at = max(self.where.get("Window", 0), self.where.get("PersonalWindow", 0))
            self.error(at, f"PersonalWindow ({personal}) is larger than Window ({window})")
        if accelerated and accel_window > personal:
            at = max(self.where.get("AcceleratedWindow", 0), self.where.get("PersonalWindow", 0))
            self.error(
                at, f"AcceleratedWindow ({accel_window}) is larger than PersonalWindow ({personal})"
            )
        given = [k for k in TIMEOUT_KEYWORDS if k in v]
        configured: Timeouts | None = None
        if given and len(given) < len(TIMEOUT_KEYWORDS):
            missing = ", ".join(k for k in TIMEOUT_KEYWORDS if k not in v)
            assert self.first_timeout_at is not None
            self.error(
                self.first_timeout_at,
                f"membership timeouts must be set all nine or not at all; missing: {missing}",
            )
        elif given:
            configured = Timeouts(**{f: self.get_int(k, 0) for k, f in TIMEOUT_KEYWORDS.items()})
        profile = v.get("TimeoutProfile", TimeoutProfile.DEFAULT)
        assert isinstance(profile, TimeoutProfile)
        if given and profile is TimeoutProfile.FAST:
            self.error(
                self.where["TimeoutProfile"],
                "TimeoutProfile = fast cannot be combined "
                "with explicit *Timeout settings: use one or the other",
            )
        if self.errors:
            problems = sorted(self.errors.values(), key=lambda p: (p.line, p.col))
            raise ConfigError(problems)

        segments = tuple(
            Segment(
                index=s.index,
                port=s.port,
                addresses=tuple(s.addresses),
                hosts=tuple(s.hosts),
                line=self.loc(s.start)[0],
                col=self.loc(s.start)[1],
            )
            for s in self.segments
        )
        exclude = self.get_bool("ExcludeSegAddrsFromHash")
        assert self.ip_family is not None
        return SpreadConfig(
            path=self.path,
            segments=segments,
            hosts=tuple(self.hosts),
            ip_version=self.ip_family,
            debug_mask=self.get_int("DebugFlags", DEFAULT_DEBUG_MASK),
            event_priority=Priority(self.get_int("EventPriority", Priority.INFO)),
            event_log_file=self.get_str("EventLogFile"),
            event_timestamp=self.get_str("EventTimeStamp"),
            event_precise_timestamp=self.get_bool("EventPreciseTimeStamp"),
            dangerous_monitor=self.get_bool("DangerousMonitor"),
            socket_port_reuse=PortReuse(self.get_int("SocketPortReuse", PortReuse.AUTO)),
            runtime_dir=self.get_str("RuntimeDir") or DEFAULT_RUNTIME_DIR,
            daemon_user=self.get_str("DaemonUser") or DEFAULT_DAEMON_USER,
            daemon_group=self.get_str("DaemonGroup") or DEFAULT_DAEMON_GROUP,
            allowed_auth_methods=tuple(self.allowed_auth),
            required_auth_methods=tuple(self.required_auth),
            access_control_policy=self.get_str("AccessControlPolicy")
            or DEFAULT_ACCESS_CONTROL_POLICY,
            max_session_messages=self.get_int("MaxSessionMessages", DEFAULT_MAX_SESSION_MESSAGES),
            window=window,
            personal_window=personal,
            accelerated_ring=accelerated,
            accelerated_ring_explicit=accel_explicit,
            accelerated_window=accel_window,
            wide_area_network_explicit=(
                self.get_bool("WideAreaNetwork") if "WideAreaNetwork" in v else None
            ),
            exclude_seg_addrs_from_hash=exclude,
            ignore_multicast_join_errors=self.get_bool("IgnoreMulticastJoinErrors"),
            configured_timeouts=configured,
            timeout_profile=profile,
            ring_auth_key_file=self.get_str("RingAuthKeyFile"),
            max_message_size=self.get_int("MaxMessageSize", DEFAULT_MAX_MESSAGE_SIZE),
            client_socket_path=self.get_str("ClientSocketPath"),
            ring_packet_size=self.get_int("RingPacketSize", 0) or None,
            config_hash=compute_config_hash(
                segments, exclude_segment_addresses=exclude, accelerated_ring=accelerated
            ),
            warnings=tuple(sorted(self.warns.values(), key=lambda p: (p.line, p.col))),
        )


def parse_config(text: str, path: str) -> SpreadConfig:
    """Parse spread.conf `text` (named `path` in messages). Raises ConfigError listing every
    problem, in file order; nothing of a bad file is returned."""
    return _Parser(text, path).parse()


# ----------------------------------------------------------------------------------------------
# JSON-ready view (spreadpy --dump-config)


def _plain(value: object) -> object:
    match value:
        case enum.Flag():
            return [m.name for m in value]
        case enum.Enum():
            return value.value
        case ipaddress.IPv4Address() | ipaddress.IPv6Address():
            return str(value)
        case tuple() | list():
            return [_plain(v) for v in value]
        case _ if is_dataclass(value) and not isinstance(value, type):
            return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
        case _:
            return value


def config_to_dict(config: SpreadConfig) -> dict[str, object]:
    """The configuration as JSON-ready data, keys in declaration order, effective values added."""
    out: dict[str, object] = {}
    for f in fields(config):
        if f.name in ("warnings", "hosts"):
            continue
        value = getattr(config, f.name)
        if f.name == "debug_mask":
            out["debug_mask"] = f"0x{value:08x}"
            out["debug_flags"] = debug_flag_names(value)
        elif f.name == "event_priority":
            out[f.name] = value.name
        elif f.name == "socket_port_reuse":
            out[f.name] = value.name.lower()
        else:
            out[f.name] = _plain(value)
    out["wide_area_network"] = config.wide_area_network
    out["timeouts_source"] = config.timeouts_source
    out["timeouts"] = _plain(config.timeouts)
    out["log_timestamp_format"] = config.log_timestamp_format
    return out


def debug_flag_names(mask: int) -> list[str]:
    """Names of the flags set in a DebugFlags mask ('ALL' when every bit is set)."""
    if mask & _U32 == _U32:
        return ["ALL"]
    return [
        name
        for name, flag in DebugFlag.__members__.items()
        if flag.value and flag.value.bit_count() == 1 and mask & flag.value
    ]

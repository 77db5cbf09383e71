"""spread.conf parser, own-host selection and the `spreadpy` command line.

Rows come from shared/spec/spread-conf.md (§7 vectors, §9 examples and one-liners) plus our own.
Line numbers are 1-based and real (the original reports one less, §6).

IPv4 addresses written here come from 127.0.0.0/8 and 198.18.0.0/15, plus the seed's 192.168.1.x.
The spec's Ex. 3 and Ex. 4 use other addresses, and the values it pins for them (hash 1133016416,
the VirtualID 211192335 of a daemon named by its address) depend on that exact text, so the tests
of those vectors read the examples from the spec at run time (tests/spec_examples.py); EX3 and
EX4 below are the same files with their daemons moved into 198.18.2.0/24.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spreadpy import cli
from spreadpy.config import (
    DEFAULT_DEBUG_MASK,
    DEFAULT_MAX_MESSAGE_SIZE,
    FAST_TIMEOUTS,
    LAN_TIMEOUTS,
    MAX_MESSAGE_SIZE_LIMIT,
    WAN_TIMEOUTS,
    DebugFlag,
    IfaceType,
    Interface,
    PortReuse,
    Priority,
    SpreadConfig,
    TimeoutProfile,
    Timeouts,
    auto_virtual_id,
    config_hash_text,
    config_to_dict,
    expand_log_path,
    is_local_address,
    oaat_hash,
    parse_config,
    select_own_host,
)
from spreadpy.errors import ConfigError

from .spec_examples import section, spec_text, spread_conf_example

REPO = Path(__file__).resolve().parent.parent
ip = ipaddress.ip_address

SEED = """\
Spread_Segment 192.168.1.255:4803 {
www1 192.168.1.10
www2 192.168.1.11
}
DebugFlags = { PRINT EXIT }
EventLogFile = /var/log/spread.log
EventTimeStamp
DangerousMonitor = false
DaemonUser = spread
DaemonGroup = spread
"""

EX2 = """\
# single daemon, loopback only
Spread_Segment 127.0.0.255:24803 {
\tlo1\t127.0.0.1
}
DebugFlags = { PRINT EXIT CONFIGURATION MEMBERSHIP }
EventPriority = INFO
EventTimeStamp = "[%H:%M:%S]"
MaxSessionMessages = 500
"""

# spec Ex. 3 and Ex. 4 with their daemons in 198.18.2.0/24 (the spec's own text: test_spec_*)
EX3 = """\
Spread_Segment 198.18.2.255 {
\tother1 198.18.2.10
\t198.18.2.11
\tother3 198.18.2.12 ;
\t198.18.2.13
\tm1 198.18.2.20 VirtualID = 5 { D 198.18.2.20 C 0.0.0.0 M 198.18.2.20 }
}
Spread_Segment 225.1.2.3:5000 {
\tfar1 198.18.3.1
}
ActiveIPVersion = IPv4
"""

EX4 = """\
Spread_Segment 198.18.2.255 {
\tother1\t\t198.18.2.10
\t\t\t198.18.2.11
\tother3
\t\t\t198.18.2.13
}
"""

# a valid one-daemon file; the one-liners of §9 are appended as line 4
BASE = "Spread_Segment 192.168.1.255 {\nwww1 192.168.1.10\n}\n"

ALL_OPTIONS = """\
Spread_Segment 127.0.0.255:24803 {
\tlo1 127.0.0.1
\tabcdefghijklmnopqrstuvwxy 127.0.0.2
}
DebugFlags = { ALL !DATA_LINK !MEMORY }
EventTimeStamp = "[%a %d %b %Y %H:%M:%S]"
EventPriority = WARNING
SocketPortReuse = AUTO
AllowedAuthMethods = "NULL IP"
RequiredAuthMethods = "IP"
AccessControlPolicy = PERMIT
RuntimeDir = /tmp
ExcludeSegAddrsFromHash = yes
IgnoreMulticastJoinErrors = no
AcceleratedRing = true
AcceleratedWindow = 10
TokenTimeout = 1250
HurryTimeout = 500
AliveTimeout = 250
JoinTimeout = 250
RepTimeout = 625
SegTimeout = 500
GatherTimeout = 1250
FormTimeout = 1250
LookupTimeout = 30000
"""

NINE_TIMEOUTS = "".join(
    f"{k} = {v}\n"
    for k, v in [
        ("TokenTimeout", 1000),
        ("HurryTimeout", 400),
        ("AliveTimeout", 200),
        ("JoinTimeout", 100),
        ("RepTimeout", 500),
        ("SegTimeout", 300),
        ("GatherTimeout", 900),
        ("FormTimeout", 800),
        ("LookupTimeout", 20000),
    ]
)


def hosts_of(config: SpreadConfig) -> list[tuple[str, str, int, int]]:
    return [(h.name, str(h.address), h.port, h.virtual_id) for h in config.hosts]


# ----------------------------------------------------------------------------------------------
# Identity vectors (§7)


@pytest.mark.parametrize(
    ("name", "vid"),
    [
        ("www1", 3910437945),
        ("www2", 929409026),
        ("other1", 1534364283),
        ("lo1", 2336325922),
        ("d1", 1552775919),
        ("d2", 348480928),
    ],
)
def test_auto_virtual_id_vectors(name: str, vid: int) -> None:
    assert auto_virtual_id(name) == vid


def test_oaat_uses_signed_chars() -> None:
    # seed 1, then 0xff counts as -1: the state is 0 and stays 0; unsigned chars would not
    assert oaat_hash(b"\xff") == 0
    assert oaat_hash(b"\x7f") != 0


def test_auto_virtual_id_vectors_of_the_spec() -> None:
    # §7 lists the vectors as `name`→id; one name is an IP address, so read them all from there
    vectors = re.findall(r"`([^`]+)`→(\d+)", section(spec_text("spread-conf.md"), "## 7."))
    assert len(vectors) >= 7, vectors
    assert [(name, auto_virtual_id(name)) for name, _ in vectors] == [
        (name, int(vid)) for name, vid in vectors
    ]


@pytest.mark.parametrize(("text", "config_hash"), [(SEED, 1378690782), (EX2, 1489073659)])
def test_config_hash_vectors(text: str, config_hash: int) -> None:
    assert parse_config(text, "f").config_hash == config_hash


@pytest.mark.parametrize(
    ("number", "config_hash"), [(1, 1378690782), (2, 1489073659), (3, 1133016416)]
)
def test_config_hash_vectors_of_the_spec_examples(number: int, config_hash: int) -> None:
    text, outcome = spread_conf_example(number)
    assert f"hash {config_hash}" in outcome
    assert parse_config(text, f"ex{number}").config_hash == config_hash


def test_seed_and_loopback_copies_are_the_spec_examples() -> None:
    assert spread_conf_example(1)[0] == SEED
    assert spread_conf_example(2)[0] == EX2


def test_spec_ex3_daemons_named_by_their_address() -> None:
    text, outcome = spread_conf_example(3)
    config = parse_config(text, "ex3")
    # "6 daemons (`a` and `b` are named by their address, `m1` has vid 5)"
    stated = re.search(
        r"(\d+) daemons \(`([^`]+)` and `([^`]+)` are named by their address", outcome
    )
    assert stated is not None, outcome
    assert len(config.hosts) == int(stated[1]) == 6
    by_address = [h.name for h in config.hosts if h.name == str(h.address)]
    assert by_address == [stated[2], stated[3]]
    assert config.hosts[1].name == stated[2]
    assert config.hosts[1].virtual_id == 211192335  # the §7 vector of that name
    m1 = config.host_by_name("m1")
    assert m1 is not None and m1.virtual_id == 5
    assert all(h.virtual_id == auto_virtual_id(h.name) for h in config.hosts if h is not m1)
    assert [s.port for s in config.segments] == [4803, 5000]
    assert config.wide_area_network


def test_spec_ex4_pairs_names_with_addresses_across_lines() -> None:
    text, outcome = spread_conf_example(4)
    # "3 daemons: `other1`/a, `b`/b, `other3`/**c**."
    stated = re.findall(r"`([^`]+)`/\**([0-9.]+[0-9])", outcome)
    assert len(stated) == 3, outcome
    config = parse_config(text, "ex4")
    assert [(h.name, str(h.address)) for h in config.hosts] == stated
    assert config.hosts[1].virtual_id == 211192335  # named by its address, as in Ex. 3


def test_config_hash_text_of_seed() -> None:
    config = parse_config(SEED, "f")
    assert config_hash_text(
        config.segments, exclude_segment_addresses=False, accelerated_ring=False
    ) == (
        "Segment: port = 4803; [192.168.1.255]\n"
        "\t'www1' [192.168.1.10] [3910437945]\n"
        "\t'www2' [192.168.1.11] [929409026]\n"
        "\nVersion: 5\nProtocol: Original Ring\n"
    )


def test_hash_changes_with_accelerated_ring_and_excluded_addresses() -> None:
    plain = parse_config(SEED, "f").config_hash
    accel = parse_config(SEED + "AcceleratedRing = true\n", "f").config_hash
    off = parse_config(SEED + "AcceleratedRing = false\n", "f").config_hash
    excl = parse_config(SEED + "ExcludeSegAddrsFromHash = true\n", "f").config_hash
    assert len({plain, accel, excl}) == 3
    assert off == plain


def test_ipv6_addresses_hash_in_full_form() -> None:
    config = parse_config("Spread_Segment ff02::1 {\n a 2001:db8::1\n}\n", "f")
    text = config_hash_text(
        config.segments, exclude_segment_addresses=False, accelerated_ring=False
    )
    assert "[ff02:0000:0000:0000:0000:0000:0000:0001]" in text
    assert "'a' [2001:0db8:0000:0000:0000:0000:0000:0001]" in text


# ----------------------------------------------------------------------------------------------
# Valid files: (id, text, expectations). Keys: "hosts" (name, address, port, vid), "warnings"
# ((line, col, substring), ...), or a SpreadConfig attribute / property name.

VALID: list[tuple[str, str, dict[str, Any]]] = [
    (
        "seed",
        SEED,
        {
            "hosts": [
                ("www1", "192.168.1.10", 4803, 3910437945),
                ("www2", "192.168.1.11", 4803, 929409026),
            ],
            "debug_mask": int(DebugFlag.PRINT | DebugFlag.EXIT),
            "event_log_file": "/var/log/spread.log",
            "event_timestamp": "%m/%d/%y %H:%M:%S",
            "dangerous_monitor": False,
            "daemon_user": "spread",
            "daemon_group": "spread",
            "accelerated_ring": False,
            "accelerated_ring_explicit": False,
            "wide_area_network": False,
            "timeouts": LAN_TIMEOUTS,
            "ip_version": 4,
            "warnings": [],
        },
    ),
    (
        "ex2-loopback",
        EX2,
        {
            "hosts": [("lo1", "127.0.0.1", 24803, 2336325922)],
            "debug_mask": 0x311,
            "event_priority": Priority.INFO,
            "event_timestamp": "[%H:%M:%S]",
            "max_session_messages": 500,
            "warnings": [(2, 16, "loopback")],
        },
    ),
    (
        "ex3-segments-ip-only-semicolon-vid-interfaces",
        EX3,
        {
            "hosts": [
                ("other1", "198.18.2.10", 4803, 1534364283),
                ("198.18.2.11", "198.18.2.11", 4803, auto_virtual_id("198.18.2.11")),
                ("other3", "198.18.2.12", 4803, auto_virtual_id("other3")),
                ("198.18.2.13", "198.18.2.13", 4803, auto_virtual_id("198.18.2.13")),
                ("m1", "198.18.2.20", 4803, 5),
                ("far1", "198.18.3.1", 5000, auto_virtual_id("far1")),
            ],
            "wide_area_network": True,
            "timeouts": WAN_TIMEOUTS,
            "timeouts_source": "wan",
        },
    ),
    (
        "ex4-pairing-across-lines",
        EX4,
        {
            "hosts": [
                ("other1", "198.18.2.10", 4803, auto_virtual_id("other1")),
                ("198.18.2.11", "198.18.2.11", 4803, auto_virtual_id("198.18.2.11")),
                ("other3", "198.18.2.13", 4803, auto_virtual_id("other3")),
            ]
        },
    ),
    (
        "ex5-glued-equals-accepted",
        BASE + "DebugFlags={ PRINT EXIT }\n",
        {"debug_mask": 0x11},
    ),
    (
        "glued-equals-all-forms",
        "Spread_Segment 198.18.0.255 {\n a 198.18.0.1 VirtualID=7\n}\n"
        'Window=100\nPersonalWindow =10\nAcceleratedWindow= 3\nEventTimeStamp="[%H]"\n',
        {
            "hosts": [("a", "198.18.0.1", 4803, 7)],
            "window": 100,
            "personal_window": 10,
            "accelerated_window": 3,
            "event_timestamp": "[%H]",
        },
    ),
    (
        # `VirtualID=5` followed by an address is a daemon *named* VirtualID=5, as in 5.0.1
        "glued-virtualid-before-address-is-a-name",
        "Spread_Segment 198.18.0.255 {\n a 198.18.0.1 VirtualID=5 198.18.0.2\n}\n",
        {
            "hosts": [
                ("a", "198.18.0.1", 4803, auto_virtual_id("a")),
                ("VirtualID=5", "198.18.0.2", 4803, auto_virtual_id("VirtualID=5")),
            ]
        },
    ),
    (
        "all-options-at-once",
        ALL_OPTIONS,
        {
            "debug_mask": 0xFFFFFFF9,
            "event_timestamp": "[%a %d %b %Y %H:%M:%S]",
            "event_priority": Priority.WARNING,
            "socket_port_reuse": PortReuse.AUTO,
            "allowed_auth_methods": ("NULL", "IP"),
            "required_auth_methods": ("IP",),
            "access_control_policy": "PERMIT",
            "runtime_dir": "/tmp",
            "exclude_seg_addrs_from_hash": True,
            "ignore_multicast_join_errors": False,
            "accelerated_ring": True,
            "accelerated_ring_explicit": True,
            "accelerated_window": 10,
            "configured_timeouts": LAN_TIMEOUTS,
            "timeouts_source": "explicit",
            "hosts": [
                ("lo1", "127.0.0.1", 24803, 2336325922),
                ("abcdefghijklmnopqrs", "127.0.0.2", 24803, auto_virtual_id("abcdefghijklmnopqrs")),
            ],
            "warnings": [(1, 16, "loopback"), (3, 2, "cut to 19 bytes")],
        },
    ),
    (
        "accelerated-ring-explicit-false",
        BASE + "AcceleratedRing = false\nAcceleratedWindow = 99\n",
        {"accelerated_ring": False, "accelerated_ring_explicit": True, "accelerated_window": 99},
    ),
    (
        "two-segments-wan-false-gives-lan",
        EX3 + "WideAreaNetwork = false\n",
        {"wide_area_network": False, "timeouts": LAN_TIMEOUTS, "accelerated_ring": False},
    ),
    (
        "one-segment-wan-true",
        BASE + "WideAreaNetwork = TRUE\n",
        {"wide_area_network": True, "timeouts": WAN_TIMEOUTS},
    ),
    (
        "nine-timeouts",
        BASE + NINE_TIMEOUTS,
        {
            "timeouts": Timeouts(1000, 400, 200, 100, 500, 300, 900, 800, 20000),
            "timeouts_source": "explicit",
        },
    ),
    (
        "timeout-profile-fast",
        BASE + "TimeoutProfile = fast\n",
        {
            "timeout_profile": TimeoutProfile.FAST,
            "timeouts": FAST_TIMEOUTS,
            "timeouts_source": "fast",
        },
    ),
    (
        "timeout-profile-case-insensitive-and-wan-ignored",
        EX3 + "TimeoutProfile = FAST\n",
        {"timeouts": FAST_TIMEOUTS},
    ),
    (
        "extensions",
        BASE
        + 'RingAuthKeyFile = "/etc/spread/ring key"\nMaxMessageSize = 1048576\n'
        + "ClientSocketPath = /run/spread/4803.sock\n",
        {
            "ring_auth_key_file": "/etc/spread/ring key",
            "max_message_size": 1048576,
            "client_socket_path": "/run/spread/4803.sock",
        },
    ),
    (
        "extension-defaults",
        BASE,
        {
            "ring_auth_key_file": None,
            "max_message_size": DEFAULT_MAX_MESSAGE_SIZE,
            "client_socket_path": None,
            "timeout_profile": TimeoutProfile.DEFAULT,
            "debug_mask": DEFAULT_DEBUG_MASK,
            "window": 160,
            "personal_window": 60,
            "accelerated_window": 15,
            "event_priority": Priority.INFO,
            "event_log_file": None,
            "event_timestamp": None,
            "log_timestamp_format": None,
            "runtime_dir": "/var/run/spread",
            "allowed_auth_methods": ("NULL",),
            "required_auth_methods": (),
            "socket_port_reuse": PortReuse.AUTO,
        },
    ),
    (
        "extension-keywords-are-still-daemon-names",
        "Spread_Segment 198.18.0.255 {\n TimeoutProfile 198.18.0.1\n}\n",
        {"hosts": [("TimeoutProfile", "198.18.0.1", 4803, auto_virtual_id("TimeoutProfile"))]},
    ),
    (
        "reserved-words-as-string-values",
        BASE + "DaemonUser = no\nDaemonGroup = ALL\nRuntimeDir = 12345\n",
        {"daemon_user": "no", "daemon_group": "ALL", "runtime_dir": "12345"},
    ),
    (
        "comments-quotes-and-blanks",
        "# header\nSpread_Segment 198.18.0.255:4900 { # open\n"
        "  'quoted name' 198.18.0.1 # a comment after tokens\n}\n"
        'EventLogFile = "/var/log/x #1 {}.log"   # trailing\n'
        "EventTimeStamp = '%H:%M'\n",
        {
            "hosts": [("quoted name", "198.18.0.1", 4900, auto_virtual_id("quoted name"))],
            "event_log_file": "/var/log/x #1 {}.log",
            "event_timestamp": "%H:%M",
            "warnings": [(3, 3, "clients cannot use daemon name")],
        },
    ),
    (
        "crlf-line-endings",
        SEED.replace("\n", "\r\n"),
        {"config_hash": 1378690782},
    ),
    (
        "precise-timestamp-alone",
        BASE + "EventPreciseTimeStamp\n",
        {"event_timestamp": None, "log_timestamp_format": "%m/%d/%y %H:%M:%S"},
    ),
    (
        "precise-timestamp-with-seconds-format",
        BASE + 'EventPreciseTimeStamp\nEventTimeStamp = "[%H:%M]"\n',
        {"event_precise_timestamp": True, "log_timestamp_format": "[%H:%M] %s"},
    ),
    (
        "empty-daemon-user-ignored",
        BASE + 'DaemonUser = ""\n',
        {"daemon_user": "spread", "warnings": [(4, 14, "empty DaemonUser ignored")]},
    ),
    (
        "unknown-auth-method-ignored",
        BASE + 'AllowedAuthMethods = "IP KERBEROS"\n',
        {"allowed_auth_methods": ("IP",), "warnings": [(4, 22, "unknown method 'KERBEROS'")]},
    ),
    (
        "port-reuse-and-priority-words",
        BASE + "SocketPortReuse = on\nEventPriority = pDEBUG\nDangerousMonitor = YES\n",
        {
            "socket_port_reuse": PortReuse.ON,
            "event_priority": Priority.DEBUG,
            "dangerous_monitor": True,
        },
    ),
    (
        "debug-flags-empty-and-bang",
        BASE + "DebugFlags = { }\nDebugFlags = { ALL ! PRINT !EXIT }\n",
        {"debug_mask": 0xFFFFFFEE},
    ),
    (
        # Valid for the original (its PersonalWindow default is 20): ours, 60, must give way.
        "small-window-alone-bounds-the-personal-default",
        BASE + "Window = 40\n",
        {"window": 40, "personal_window": 40},
    ),
    (
        "last-statement-wins",
        BASE + "Window = 200\nWindow = 300\n",
        {"window": 300},
    ),
    (
        "segment-addresses-and-port-zero",
        "Spread_Segment 192.168.1.255:0 225.0.0.1 225.0.0.2 {\n a 192.168.1.1\n}\n",
        {
            "hosts": [("a", "192.168.1.1", 4803, auto_virtual_id("a"))],
            "warnings": [(1, 16, "port 0 means the default port 4803")],
        },
    ),
    (
        "interfaces-untyped-and-wildcard",
        "Spread_Segment 198.18.0.255 {\n a 198.18.0.1 { 0.0.0.0 }\n"
        " b 198.18.0.2 { C D 198.18.0.2 }\n}\n",
        {
            "hosts": [
                ("a", "198.18.0.1", 4803, auto_virtual_id("a")),
                ("b", "198.18.0.2", 4803, auto_virtual_id("b")),
            ]
        },
    ),
    (
        "ipv6-scoped-and-ip-only",
        "ActiveIPVersion = IPv6\nSpread_Segment [ff02::1%eth0]:5000 {\n"
        " a fe80::1%eth0\n 2001:db8::2\n}\n",
        {
            "ip_version": 6,
            "hosts": [
                ("a", "fe80::1%eth0", 5000, auto_virtual_id("a")),
                ("2001:db8::2", "2001:db8::2", 5000, auto_virtual_id("2001:db8::2")),
            ],
        },
    ),
    (
        "name-only-literal-ip-is-accepted",
        'Spread_Segment 198.18.0.255 {\n "198.18.0.5"\n}\n',
        {"hosts": [("198.18.0.5", "198.18.0.5", 4803, auto_virtual_id("198.18.0.5"))]},
    ),
    (
        "name-ending-in-semicolon-warns",
        "Spread_Segment 198.18.0.255 {\n other3;\n 198.18.0.13\n}\n",
        {
            "hosts": [("other3;", "198.18.0.13", 4803, auto_virtual_id("other3;"))],
            "warnings": [(2, 2, "ends with ';'")],
        },
    ),
    (
        "stray-brackets-skipped",
        "Spread_Segment 198.18.0.255 {\n www1 [198.18.0.1]\n}\n",
        {
            "hosts": [("www1", "198.18.0.1", 4803, 3910437945)],
            "warnings": [(2, 7, "stray '['"), (2, 18, "stray ']'")],
        },
    ),
    (
        "same-address-different-ports",
        "Spread_Segment 198.18.0.255:4803 {\n a 198.18.0.1\n}\n"
        "Spread_Segment 198.18.1.255:4903 {\n b 198.18.0.1\n}\nWideAreaNetwork = no\n",
        {
            "hosts": [
                ("a", "198.18.0.1", 4803, auto_virtual_id("a")),
                ("b", "198.18.0.1", 4903, auto_virtual_id("b")),
            ]
        },
    ),
    (
        "unbalanced-quote-warns",
        BASE + 'DaemonUser = "spread\n',
        {"daemon_user": '"spread', "warnings": [(4, 14, "unbalanced")]},
    ),
    (
        "multi-line-quote-warns",
        BASE + 'EventLogFile = "/var/log/a\nb.log"\n',
        {"event_log_file": "/var/log/a\nb.log", "warnings": [(4, 16, "more than one line")]},
    ),
    (
        "quoted-values-are-never-split",
        BASE + 'EventLogFile = "=x"\nDaemonUser = "Window=5"\n',
        {"event_log_file": "=x", "daemon_user": "Window=5"},
    ),
    (
        "max-session-messages-zero-warns",
        BASE + "MaxSessionMessages = 0\n",
        {"max_session_messages": 0, "warnings": [(4, 22, "disconnects")]},
    ),
    (
        "empty-segment-besides-a-full-one",
        "Spread_Segment 198.18.0.255 {\n}\nSpread_Segment 198.18.1.255 {\n a 198.18.1.1\n}\n",
        {"hosts": [("a", "198.18.1.1", 4803, auto_virtual_id("a"))], "wide_area_network": True},
    ),
]


@pytest.mark.parametrize(
    ("text", "expected"), [(t, e) for _, t, e in VALID], ids=[i for i, _, _ in VALID]
)
def test_valid(text: str, expected: dict[str, Any]) -> None:
    config = parse_config(text, "spread.conf")
    for key, want in expected.items():
        if key == "hosts":
            assert hosts_of(config) == want
        elif key == "warnings":
            got = [(w.line, w.col, w.message) for w in config.warnings]
            assert len(got) == len(want), got
            for (line, col, message), (wline, wcol, part) in zip(got, want, strict=True):
                assert (line, col) == (wline, wcol), got
                assert part in message
        else:
            assert getattr(config, key) == want, key
    json.dumps(config_to_dict(config))  # always serialisable


def test_ex3_structure() -> None:
    config = parse_config(EX3, "f")
    assert [s.port for s in config.segments] == [4803, 5000]
    assert [len(s.hosts) for s in config.segments] == [5, 1]
    m1 = config.host_by_name("m1")
    assert m1 is not None
    assert m1.virtual_id_explicit and m1.interfaces_explicit
    assert m1.interfaces == (
        Interface(ip("198.18.2.20"), IfaceType.DAEMON),
        Interface(ip("0.0.0.0"), IfaceType.CLIENT),
        Interface(ip("198.18.2.20"), IfaceType.MONITOR),
    )
    assert m1.interfaces_for(IfaceType.CLIENT) == (Interface(ip("0.0.0.0"), IfaceType.CLIENT),)
    far1 = config.host_by_name("far1")
    assert far1 is not None
    assert (far1.segment_index, far1.index_in_segment, far1.index) == (1, 0, 5)
    assert (far1.port, far1.token_port) == (5000, 5001)
    assert config.segment_of(far1).address == ip("225.1.2.3")
    assert far1.interfaces == (Interface(ip("198.18.3.1"), IfaceType.ALL | IfaceType.ANY),)
    assert far1.interfaces[0].wildcard
    assert config.host_by_id(5) is m1
    assert config.host_by_name("nobody") is None
    assert (far1.line, far1.col) == (9, 2)


def test_config_is_immutable() -> None:
    config = parse_config(SEED, "f")
    with pytest.raises(AttributeError):
        config.window = 5  # type: ignore[misc]
    with pytest.raises(AttributeError):
        config.hosts[0].name = "x"  # type: ignore[misc]
    assert isinstance(config.hosts, tuple)
    assert isinstance(config.segments[0].hosts, tuple)
    assert parse_config(SEED, "f") == config


def test_expand_log_path() -> None:
    assert expand_log_path("/var/log/spread-%h.%H.log", "www1") == "/var/log/spread-www1.www1.log"
    assert expand_log_path("/var/log/%d%%h", "n") == "/var/log/%d%n"
    config = parse_config(BASE + "EventLogFile = /var/log/%h.log\n", "f")
    assert config.event_log_file == "/var/log/%h.log"  # kept raw by the parser


# ----------------------------------------------------------------------------------------------
# Invalid files: (id, text, [(line, col, substring), ...]) listing every error, in file order.

ERRORS: list[tuple[str, str, list[tuple[int, int, str]]]] = [
    (
        "ex6-personal-window",
        BASE + "Window = 10\nPersonalWindow = 20\n",
        [(5, 1, "PersonalWindow (20) is larger than Window (10)")],
    ),
    (
        "ex7-duplicate-name",
        "Spread_Segment 192.168.1.255 {\nwww1 192.168.1.10\nwww1 192.168.1.11\n}\n",
        [(3, 1, "daemon name 'www1' is already used by the daemon at 2:1")],
    ),
    (
        "ex8-no-daemon-interface",
        "Spread_Segment 192.168.1.255 {\nwww1 192.168.1.10 {\n C 192.168.1.10\n}\n}\n",
        [(2, 1, "need a D (or untyped) entry")],
    ),
    (
        "ex9-partial-timeouts",
        BASE + "TokenTimeout = 1000\n",
        [(4, 1, "all nine or not at all; missing: HurryTimeout, AliveTimeout")],
    ),
    ("unknown-keyword", BASE + "FooBar = 3\n", [(4, 1, "unknown keyword 'FooBar'")]),
    ("missing-equals", BASE + "Window 100\n", [(4, 8, "expected '=' after Window, found '100'")]),
    ("ten-digits", BASE + "Window = 1234567890\n", [(4, 10, "more than 9 digits")]),
    ("window-zero", BASE + "Window = 0\n", [(4, 10, "Window must be greater than 0")]),
    ("negative", BASE + "PersonalWindow = -5\n", [(4, 18, "must not be negative")]),
    (
        "ip-version-after-daemons",
        BASE + "ActiveIPVersion = IPv6\n",
        [(4, 19, "ActiveIPVersion = IPv6 conflicts with IPv4 (set by daemon 'www1' at 2:1)")],
    ),
    ("ip-version-bad-value", BASE + "ActiveIPVersion = IPv5\n", [(4, 19, "IPv4 or IPv6")]),
    (
        "access-control-policy",
        BASE + "AccessControlPolicy = DENYALL\n",
        [(4, 23, "unknown policy 'DENYALL'")],
    ),
    (
        "accelerated-window",
        BASE + "AcceleratedRing = true\nAcceleratedWindow = 70\n",
        [(5, 1, "AcceleratedWindow (70) is larger than PersonalWindow (60)")],
    ),
    (
        "reserved-word-daemon-name",
        "Spread_Segment 198.18.0.255 {\n a 198.18.0.2\n ALL 198.18.0.1\n}\n",
        [(3, 2, "'ALL' is a reserved word")],
    ),
    (
        "case-sensitive-keyword",
        BASE + "window = 5\n",
        [(4, 1, "keywords are case-sensitive, write 'Window'")],
    ),
    (
        "case-sensitive-segment",
        "spread_segment 198.18.0.255 {\n a 198.18.0.1\n}\n",
        [(1, 1, "write 'Spread_Segment'"), (4, 1, "no Spread_Segment")],
    ),
    ("empty-file", "", [(1, 1, "no Spread_Segment")]),
    ("only-comments", "# nothing\n\n", [(3, 1, "no Spread_Segment")]),
    ("no-daemons", "Spread_Segment 198.18.0.255 {\n}\n", [(1, 1, "no daemons")]),
    (
        "name-only-host",
        "Spread_Segment 198.18.0.255 {\n www1\n}\n",
        [(2, 2, "daemon 'www1' has no address: spreadpy does not resolve host names")],
    ),
    (
        "name-only-host-then-address-with-port",
        "Spread_Segment 198.18.0.255 {\n n1 198.18.0.1:5000\n}\n",
        [(2, 5, "a daemon address takes no port")],
    ),
    (
        "ip-with-glued-semicolon",
        "Spread_Segment 198.18.0.255 {\n 198.18.0.1;\n}\n",
        [(2, 2, "put a blank before ';'")],
    ),
    (
        "malformed-ip",
        "Spread_Segment 198.18.0.255 {\n 999.1.1.1\n}\n",
        [(2, 2, "'999.1.1.1' is not a valid IP address")],
    ),
    (
        "bad-segment-address",
        "Spread_Segment www.example.com {\n a 198.18.0.1\n}\n",
        [(1, 16, "host names are not resolved")],
    ),
    (
        "duplicate-address",
        "Spread_Segment 198.18.0.255 {\n a 198.18.0.1\n b 198.18.0.1\n}\n",
        [(3, 2, "address 198.18.0.1 port 4803 is already used by daemon 'a' at 2:2")],
    ),
    (
        "host-in-two-segments",
        "Spread_Segment 198.18.0.255 {\n a 198.18.0.1\n}\n"
        "Spread_Segment 198.18.1.255:5000 {\n a 198.18.1.1\n}\n",
        [(5, 2, "daemon name 'a' is already used by the daemon at 2:2 in segment 0")],
    ),
    (
        "duplicate-after-cut-to-19",
        "Spread_Segment 198.18.0.255 {\n abcdefghijklmnopqrsXX 198.18.0.1\n"
        " abcdefghijklmnopqrsYY 198.18.0.2\n}\n",
        [(3, 2, "daemon name 'abcdefghijklmnopqrs' is already used")],
    ),
    (
        "duplicate-virtual-id",
        "Spread_Segment 198.18.0.255 {\n a 198.18.0.1 VirtualID = 5\n"
        " b 198.18.0.2 VirtualID = 5\n}\n",
        [(3, 15, "virtual id 5 of daemon 'b' is already used by daemon 'a'")],
    ),
    (
        "virtual-id-equals-auto-id",
        "Spread_Segment 198.18.0.255 {\n d1 198.18.0.1\n x 198.18.0.2 VirtualID = 155277591\n"
        " www1 198.18.0.3 VirtualID = 3\n www2 198.18.0.4 VirtualID = 3\n}\n",
        [(5, 18, "virtual id 3 of daemon 'www2'")],
    ),
    (
        "virtual-id-zero",
        "Spread_Segment 198.18.0.255 {\n a 198.18.0.1 VirtualID = 0\n}\n",
        [(2, 15, "VirtualID must be greater than 0")],
    ),
    (
        "empty-interface-block",
        "Spread_Segment 198.18.0.255 {\n a 198.18.0.1 { }\n}\n",
        [(2, 15, "empty interface block")],
    ),
    (
        "interface-letters-glued",
        "Spread_Segment 198.18.0.255 {\n a 198.18.0.1 { DC 198.18.0.1 }\n}\n",
        [(2, 17, "write 'D C'")],
    ),
    (
        "interface-with-port",
        "Spread_Segment 198.18.0.255 {\n a 198.18.0.1 { D 198.18.0.1:4803 }\n}\n",
        [(2, 19, "interface addresses take no port")],
    ),
    (
        "too-many-interfaces",
        "Spread_Segment 198.18.0.255 {\n a 198.18.0.1 {" + " 198.18.0.1" * 11 + " }\n}\n",
        [(2, 127, "at most 10 interfaces")],
    ),
    (
        "interface-block-not-closed",
        "Spread_Segment 198.18.0.255 {\n a 198.18.0.1 { D 198.18.0.1\nWindow = 200\n",
        [
            (1, 29, "the Spread_Segment block opened here is not closed"),
            (2, 15, "the interface block opened here is not closed"),
        ],
    ),
    (
        "segment-not-closed",
        "Spread_Segment 198.18.0.255 {\n a 198.18.0.1\nWindow = 200\n",
        [(1, 29, "not closed by '}' (found 'Window' at 3:1)")],
    ),
    (
        "segment-not-closed-at-eof",
        "Spread_Segment 198.18.0.255 {\n a 198.18.0.1 { D 198.18.0.1\n}\n",
        [(1, 29, "not closed by '}' (found end of file at 4:1)")],
    ),
    (
        "segment-not-closed-before-extension-keyword",
        "Spread_Segment 198.18.0.255 {\n a 198.18.0.1\nTimeoutProfile = fast\n",
        [(1, 29, "not closed by '}' (found 'TimeoutProfile' at 3:1)")],
    ),
    ("stray-closing-brace", BASE + "}\n", [(4, 1, "'}' without a matching '{'")]),
    (
        "six-segment-addresses",
        "Spread_Segment 198.18.0.255 225.0.0.1 225.0.0.2 225.0.0.3 225.0.0.4 225.0.0.5 {\n"
        " a 198.18.0.1\n}\n",
        [(1, 69, "at most 5 addresses")],
    ),
    (
        "port-on-extra-segment-address",
        "Spread_Segment 198.18.0.255 225.0.0.1:4803 {\n a 198.18.0.1\n}\n",
        [(1, 29, "only the first segment address may carry a port")],
    ),
    (
        "port-out-of-range",
        "Spread_Segment 198.18.0.255:70000 {\n a 198.18.0.1\n}\n",
        [(1, 16, "port 70000 is out of range")],
    ),
    (
        "port-65535",
        "Spread_Segment 198.18.0.255:65535 {\n a 198.18.0.1\n}\n",
        [(1, 16, "daemon also needs port + 1")],
    ),
    (
        "unspecified-segment-address",
        "Spread_Segment 0.0.0.0 {\n a 198.18.0.1\n}\n",
        [(1, 16, "unspecified address")],
    ),
    (
        "segment-family-mismatch",
        "Spread_Segment ff02::1 {\n a 198.18.0.1\n}\n",
        [(1, 16, "segment address ff02::1 is IPv6 but the active IP version is IPv4")],
    ),
    (
        "daemon-family-mismatch",
        "ActiveIPVersion = IPv6\nSpread_Segment ff02::1 {\n a 198.18.0.1\n}\n",
        [(3, 2, "daemon 'a' has an IPv4 address but the active IP version is IPv6")],
    ),
    (
        "multicast-daemon",
        "Spread_Segment 198.18.0.255 {\n a 225.0.0.1\n}\n",
        [(2, 2, "multicast address")],
    ),
    (
        "unspecified-daemon",
        "Spread_Segment 198.18.0.255 {\n a 0.0.0.0\n}\n",
        [(2, 2, "unspecified address")],
    ),
    (
        "empty-name",
        'Spread_Segment 198.18.0.255 {\n "" 198.18.0.1\n}\n',
        [(2, 2, "empty daemon name")],
    ),
    (
        "debug-flags-unknown-and-lowercase",
        BASE + "DebugFlags = { PRINT foo exit }\n",
        [(4, 22, "unknown flag 'foo'"), (4, 26, "write 'EXIT'")],
    ),
    (
        "debug-flags-lone-bang",
        BASE + "DebugFlags = { ALL !\n PRINT }\n",
        [(4, 20, "unknown flag '!'")],
    ),
    (
        "debug-flags-not-closed",
        BASE + "DebugFlags = { PRINT\nWindow = 100\n",
        [(4, 14, "'{' is never closed")],
    ),
    ("priority-debug", BASE + "EventPriority = DEBUG\n", [(4, 17, "spelled pDEBUG")]),
    ("bool-expected", BASE + "DangerousMonitor = maybe\n", [(4, 20, "true, false, yes or no")]),
    (
        "precise-timestamp-value",
        BASE + "EventPreciseTimeStamp = true\n",
        [(4, 23, "EventPreciseTimeStamp takes no value")],
    ),
    (
        "virtual-id-at-top-level",
        BASE + "VirtualID = 3\n",
        [(4, 1, "VirtualID belongs after a daemon")],
    ),
    ("daemon-user-too-long", BASE + "DaemonUser = " + "u" * 33 + "\n", [(4, 14, "longer than 32")]),
    (
        "timeout-zero",
        BASE + NINE_TIMEOUTS.replace("SegTimeout = 300", "SegTimeout = 0"),
        [(9, 14, "SegTimeout must be greater than 0"), (4, 1, "missing: SegTimeout")],
    ),
    (
        "fast-profile-with-timeouts",
        BASE + "TimeoutProfile = fast\n" + NINE_TIMEOUTS,
        [(4, 1, "TimeoutProfile = fast cannot be combined")],
    ),
    ("bad-timeout-profile", BASE + "TimeoutProfile = slow\n", [(4, 18, "default or fast")]),
    ("max-message-size-zero", BASE + "MaxMessageSize = 0\n", [(4, 18, "between 1 and")]),
    (
        "max-message-size-too-big",
        BASE + "MaxMessageSize = 999999999\n",
        [(4, 18, f"between 1 and {MAX_MESSAGE_SIZE_LIMIT}")],
    ),
    (
        "client-socket-path-too-long",
        BASE + "ClientSocketPath = /" + "s" * 110 + "\n",
        [(4, 20, "longer than 107 bytes")],
    ),
    ("ring-auth-key-empty", BASE + 'RingAuthKeyFile = ""\n', [(4, 19, "must not be empty")]),
    (
        "many-errors-all-reported",
        "Spread_Segment 198.18.0.255 {\n a 198.18.0.1\n b\n a 198.18.0.3\n}\nWindow = 0\nFoo = 1\n"
        "EventPriority = LOUD\n",
        [
            (3, 2, "daemon 'b' has no address"),
            (4, 2, "daemon name 'a' is already used"),
            (6, 10, "Window must be greater than 0"),
            (7, 1, "unknown keyword 'Foo'"),
            (8, 17, "pDEBUG, INFO, WARNING"),
        ],
    ),
]


@pytest.mark.parametrize(
    ("text", "expected"), [(t, e) for _, t, e in ERRORS], ids=[i for i, _, _ in ERRORS]
)
def test_invalid(text: str, expected: list[tuple[int, int, str]]) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "bad.conf")
    got = [(p.line, p.col, p.message) for p in info.value.problems]
    assert all(p.path == "bad.conf" for p in info.value.problems)
    assert len(got) == len(expected), got
    for want in expected:
        assert any((line, col) == want[:2] and want[2] in msg for line, col, msg in got), (
            want,
            got,
        )
    assert got == sorted(got, key=lambda g: (g[0], g[1]))


def test_too_many_segments_and_daemons() -> None:
    segs = "".join(f"Spread_Segment 198.18.{i}.255 {{\n d{i} 198.18.{i}.1\n}}\n" for i in range(21))
    with pytest.raises(ConfigError) as info:
        parse_config(segs, "f")
    assert [(p.line, p.message) for p in info.value.problems] == [(61, "more than 20 segments")]
    daemons = "".join(f" n{i} 198.18.{i // 200}.{i % 200 + 1}\n" for i in range(129))
    with pytest.raises(ConfigError) as info:
        parse_config("Spread_Segment 198.18.0.255 {\n" + daemons + "}\n", "f")
    assert [(p.line, p.message) for p in info.value.problems] == [(130, "more than 128 daemons")]


def test_error_text_format() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(BASE + "Window = 0\n", "conf/x.conf")
    assert str(info.value) == "conf/x.conf:4:10: Window must be greater than 0"


# ----------------------------------------------------------------------------------------------
# Own-host selection


def test_select_by_name_and_locality() -> None:
    config = parse_config(SEED, "spread.conf")
    www1 = select_own_host(config, "www1", [ip("192.168.1.10"), ip("127.0.0.1")])
    assert www1.address == ip("192.168.1.10")
    with pytest.raises(ConfigError) as info:
        select_own_host(config, "www1", [ip("127.0.0.1")])
    assert (info.value.line, info.value.col) == (2, 1)
    assert "192.168.1.10, which is not an address of this machine" in str(info.value)
    assert select_own_host(config, "www2", [], allow_nonlocal=True).name == "www2"
    with pytest.raises(ConfigError, match=r"no daemon named 'www3'.*www1, www2"):
        select_own_host(config, "www3", [], allow_nonlocal=True)
    with pytest.raises(ConfigError, match="longer than 19 bytes"):
        select_own_host(config, "x" * 20, [], allow_nonlocal=True)


def test_select_by_local_address_takes_first_in_file_order() -> None:
    config = parse_config(SEED, "spread.conf")
    host = select_own_host(config, None, [ip("192.168.1.11"), ip("192.168.1.10")])
    assert host.name == "www1"
    assert select_own_host(config, None, [ip("192.168.1.11")]).name == "www2"
    with pytest.raises(ConfigError, match="none of this machine's addresses") as info:
        select_own_host(config, None, [ip("127.0.0.1")])
    assert (info.value.line, info.value.col) == (1, 1)


def test_loopback_block_is_local_and_ipv6_scope_ignored() -> None:
    config = parse_config((REPO / "conf" / "spread-loopback.conf").read_text(), "lo.conf")
    assert select_own_host(config, "n3", [ip("127.0.0.1")]).address == ip("127.0.0.3")
    assert select_own_host(config, None, [ip("127.0.0.1")]).name == "n1"
    assert not is_local_address(ip("127.0.0.2"), [ip("198.18.0.1")])
    assert is_local_address(ip("fe80::1%eth0"), [ip("fe80::1")])
    assert not is_local_address(ip("198.18.0.2"), [ip("198.18.0.1")])


# ----------------------------------------------------------------------------------------------
# Shipped files


def test_shipped_seed_file_is_the_spec_seed() -> None:
    text = (REPO / "conf" / "spread.conf").read_text()
    assert text == SEED
    config = parse_config(text, "conf/spread.conf")
    assert select_own_host(config, "www1", [ip("192.168.1.10")]).address == ip("192.168.1.10")
    assert config.config_hash == 1378690782


def test_shipped_loopback_files() -> None:
    lo = parse_config((REPO / "conf" / "spread-loopback.conf").read_text(), "lo")
    fast = parse_config((REPO / "conf" / "spread-loopback-fast.conf").read_text(), "fast")
    for config in (lo, fast):
        assert hosts_of(config) == [
            (n, f"127.0.0.{i}", 4803, auto_virtual_id(n))
            for i, n in enumerate(("n1", "n2", "n3"), start=1)
        ]
    assert lo.timeouts == LAN_TIMEOUTS
    assert fast.timeouts == FAST_TIMEOUTS
    assert lo.config_hash == fast.config_hash  # the profile is local, not part of the hash


# ----------------------------------------------------------------------------------------------
# Command line


@pytest.fixture
def no_local(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "gather_local_addresses", lambda: [])


def write(tmp_path: Path, text: str, name: str = "spread.conf") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_cli_check_valid_with_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_local: None
) -> None:
    path = write(tmp_path, SEED)
    assert cli.main(["--check-config", "-c", path, "-n", "www1"]) == 0
    out, err = capsys.readouterr()
    assert out == (
        f"{path}: OK: 1 segment, 2 daemons; this daemon: www1 (192.168.1.10 port 4803, not an "
        "address of this machine); ring: original; timeouts: lan (token 1250 ms); "
        "hash 1378690782\n"
    )
    assert err == ""


def test_cli_check_valid_by_local_match(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli, "gather_local_addresses", lambda: [ip("192.168.1.11")])
    path = write(tmp_path, SEED + "AcceleratedRing = true\nTimeoutProfile = fast\n")
    assert cli.main(["--check-config", "-c", path]) == 0
    out = capsys.readouterr().out
    assert "this daemon: www2 (192.168.1.11 port 4803);" in out
    assert "ring: accelerated; timeouts: fast (token 200 ms)" in out


def test_cli_check_valid_without_match(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_local: None
) -> None:
    path = write(tmp_path, EX3)
    assert cli.main(["--check-config", "-c", path]) == 0
    out, _ = capsys.readouterr()
    assert "2 segments, 6 daemons; this daemon: none" in out
    assert out.count("\n") == 1


def test_cli_check_invalid(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_local: None
) -> None:
    path = write(
        tmp_path, "Spread_Segment 198.18.0.255 {\n a 198.18.0.1\n a 198.18.0.2\n}\nFoo = 1\n"
    )
    assert cli.main(["--check-config", "-c", path]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        f"{path}:3:2: daemon name 'a' is already used by the daemon at 2:2",
        f"{path}:5:1: unknown keyword 'Foo'",
    ]


def test_cli_check_unknown_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_local: None
) -> None:
    path = write(tmp_path, SEED)
    assert cli.main(["--check-config", "-c", path, "-n", "www9"]) == 1
    assert "no daemon named 'www9'" in capsys.readouterr().err


def test_cli_warnings_go_to_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_local: None
) -> None:
    path = write(tmp_path, EX2)
    assert cli.main(["--check-config", "-c", path]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"{path}: OK: 1 segment, 1 daemon;")
    assert err.startswith(f"{path}:2:16: warning: segment address 127.0.0.255 is a loopback")


def test_cli_name_too_long(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["--check-config", "-n", "n" * 20])
    assert info.value.code == 2
    assert "longer than 19 bytes" in capsys.readouterr().err


def test_cli_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = str(tmp_path / "nope.conf")
    assert cli.main(["--check-config", "-c", missing]) == 1
    assert "nope.conf" in capsys.readouterr().err


def test_cli_default_search(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    no_local: None,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli, "DEFAULT_CONFIG_SEARCH", ("spread.conf", str(tmp_path / "etc.conf")))
    assert cli.main(["--check-config"]) == 1
    assert "no configuration file found" in capsys.readouterr().err
    write(tmp_path, EX2, "etc.conf")
    assert cli.main(["--check-config"]) == 0
    assert "etc.conf: OK" in capsys.readouterr().out
    write(tmp_path, SEED)
    assert cli.main(["--check-config"]) == 0
    assert capsys.readouterr().out.startswith("spread.conf: OK: 1 segment, 2 daemons")


def test_cli_dump_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, EX3)
    assert cli.main(["--dump-config", "-c", path]) == 0
    first = capsys.readouterr().out
    assert cli.main(["--dump-config", "-c", path]) == 0
    assert capsys.readouterr().out == first  # stable
    data = json.loads(first)
    assert list(data)[:4] == ["path", "segments", "ip_version", "debug_mask"]
    assert data["config_hash"] == parse_config(EX3, path).config_hash
    assert data["debug_flags"] == ["EXIT", "PRINT", "CONFIGURATION"]
    assert data["timeouts"]["token_ms"] == 5000
    m1 = data["segments"][0]["hosts"][4]
    assert m1["name"] == "m1" and m1["virtual_id"] == 5
    assert m1["interfaces"][1] == {"address": "0.0.0.0", "types": ["CLIENT"]}


def test_cli_daemon_refuses_a_name_whose_address_is_not_here(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, SEED)  # www1 is 192.168.1.10: not an address of this machine
    assert cli.main(["-c", path, "-n", "www1", "-l", "y"]) == 1
    err = capsys.readouterr().err
    assert "www1" in err and "192.168.1.10" in err


def test_cli_arg_parser() -> None:
    args = cli.build_arg_parser().parse_args(["-n", "a", "-c", "f", "-l", "y"])
    assert (args.name, args.config, args.membership_log) == ("a", "f", "y")
    assert not args.check_config and not args.dump_config
    with pytest.raises(SystemExit):
        cli.build_arg_parser().parse_args(["-l", "maybe"])
    with pytest.raises(SystemExit):
        cli.build_arg_parser().parse_args(["--check-config", "--dump-config"])


def test_gather_local_addresses_includes_loopback() -> None:
    assert ip("127.0.0.1") in cli.gather_local_addresses()


# ----------------------------------------------------------------------------------------------
# Properties: any input gives a config or a located ConfigError, never another exception.

VALID_TEXTS = [SEED, EX2, EX3, EX4, ALL_OPTIONS, BASE + NINE_TIMEOUTS] + [t for _, t, _ in VALID]
TOKENS = [
    "{",
    "}",
    "=",
    ";",
    ":",
    "!",
    "#",
    "[",
    "]",
    '"',
    "'",
    "\n",
    " ",
    "\t",
    "\v",
    "Spread_Segment",
    "VirtualID",
    "Window",
    "DebugFlags",
    "EventTimeStamp",
    "TimeoutProfile",
    "TokenTimeout",
    "ActiveIPVersion",
    "IPv6",
    "ALL",
    "M",
    "C",
    "D",
    "yes",
    "auto",
    "pDEBUG",
    "198.18.0.1",
    "198.18.0.1:4803",
    "999.1.1.1",
    "ff02::1",
    "[ff02::1]:4803",
    "fe80::1%lo",
    "0.0.0.0",
    "225.0.0.1",
    "1234567890",
    "0",
    "7",
    "www1",
    "Window=3",
    "=5",
    "é",
    "\x00",
]


def assert_located(text: str, parse: Callable[[], SpreadConfig]) -> None:
    lines = text.split("\n")
    try:
        config = parse()
    except ConfigError as exc:
        problems = exc.problems
    else:
        problems = config.warnings
        json.dumps(config_to_dict(config))
    for p in problems:
        assert p.path == "p.conf"
        assert 1 <= p.line <= len(lines), p
        assert 1 <= p.col <= len(lines[p.line - 1]) + 1, p
        assert p.message


@st.composite
def mutated(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from(VALID_TEXTS))
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(text)))
        match draw(st.sampled_from(["insert", "delete", "replace", "token"])):
            case "insert":
                text = text[:pos] + draw(st.text(max_size=3)) + text[pos:]
            case "delete":
                text = text[:pos] + text[pos + draw(st.integers(1, 12)) :]
            case "replace":
                text = text[:pos] + draw(st.characters()) + text[pos + 1 :]
            case _:
                text = text[:pos] + draw(st.sampled_from(TOKENS)) + text[pos:]
    return text


@settings(deadline=None, max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_files_give_config_or_located_error(text: str) -> None:
    assert_located(text, lambda: parse_config(text, "p.conf"))


@settings(deadline=None, max_examples=300)
@given(st.lists(st.sampled_from(TOKENS) | st.text(max_size=4), max_size=40).map(" ".join))
def test_random_token_soup_gives_config_or_located_error(text: str) -> None:
    assert_located(text, lambda: parse_config(text, "p.conf"))


@settings(deadline=None, max_examples=200)
@given(st.text(max_size=200))
def test_random_text_gives_config_or_located_error(text: str) -> None:
    assert_located(text, lambda: parse_config(text, "p.conf"))


NAMES = st.from_regex(r"[a-z][a-z0-9_.-]{0,18}", fullmatch=True).filter(
    lambda s: s.lower() not in {"yes", "no", "on", "off", "auto", "true", "false"}
)
SEPARATORS = st.sampled_from([" ", "\t", "\n", " # note\n", "\n\n  "])


@st.composite
def rendered_configs(draw: st.DrawFn) -> tuple[str, list[list[tuple[str, str]]]]:
    n_segments = draw(st.integers(1, 3))
    names = draw(st.lists(NAMES, min_size=n_segments, max_size=12, unique=True))
    hosts = [(n, f"198.19.{i // 250}.{i % 250 + 1}") for i, n in enumerate(names)]
    cuts = sorted(
        draw(st.lists(st.integers(1, len(hosts)), min_size=n_segments - 1, max_size=n_segments - 1))
    )
    groups = [hosts[a:b] for a, b in zip([0, *cuts], [*cuts, len(hosts)], strict=True)]
    parts = []
    for i, group in enumerate(groups):
        parts.append(f"Spread_Segment 198.18.{i}.255:{4803 + 10 * i} {{{draw(SEPARATORS)}")
        for name, addr in group:
            parts.append(f"{name}{draw(SEPARATORS)}{addr}{draw(st.sampled_from([' ;', '']))}")
            parts.append(draw(SEPARATORS))
        parts.append("}\n")
    return "".join(parts), groups


@settings(deadline=None, max_examples=150)
@given(rendered_configs())
def test_rendered_configs_round_trip(case: tuple[str, list[list[tuple[str, str]]]]) -> None:
    text, groups = case
    config = parse_config(text, "p.conf")
    assert [[(h.name, str(h.address)) for h in s.hosts] for s in config.segments] == groups
    assert [s.port for s in config.segments] == [4803 + 10 * i for i in range(len(groups))]
    assert config.wide_area_network == (len(groups) > 1)
    assert [h.index for h in config.hosts] == list(range(len(config.hosts)))


def test_ring_packet_size_extension() -> None:
    base = "Spread_Segment 127.0.0.255:4803 {\n n1 127.0.0.1\n}\n"
    assert parse_config(base, "a.conf").ring_packet_size is None
    assert parse_config(base + "RingPacketSize = 8972\n", "b.conf").ring_packet_size == 8972
    for bad in ("100", "70000"):
        with pytest.raises(ConfigError) as caught:
            parse_config(base + f"RingPacketSize = {bad}\n", "c.conf")
        problem = caught.value.problems[0]
        assert (problem.line, problem.col) == (4, 18)
        assert "RingPacketSize must be between 512 and 65000" in problem.message

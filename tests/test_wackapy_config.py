"""wackapy.config and the `wackapy` command line: valid and invalid files, the seed, the CLI,
and property tests (round trip through format_config; arbitrary text never escapes ConfigError).

Addresses: the seed's 192.168.1.x, 198.18.0.0/15 and 2001:db8::/32, as config text only. The
forms that shared/spec/wackamole.md quotes from the upstream sample and man page (§1.7, §4.3) use
other addresses: test_spec_quoted_forms_parse reads them from the spec at run time, and the rows
below that mirror them carry the same shapes with 198.18.0.0/15 addresses (their /8 is our /15).
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import re
import string
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spreadpy.errors import ConfigError, ConfigProblem
from wackapy import cli
from wackapy.config import (
    EXTRAS_MAX,
    NOTIFY_MAX,
    VIFS_MAX,
    BalanceConfig,
    CommandHook,
    DynamicHook,
    HealthCheck,
    HookEvent,
    NotifyArpCache,
    NotifyBlock,
    Vif,
    VipAddress,
    WackamoleConfig,
    config_to_dict,
    format_config,
    format_seconds,
    parse_config,
    parse_spread,
)

from .spec_examples import between, section, spec_text

SEED_PATH = Path(__file__).resolve().parents[1] / "conf" / "wackamole.conf"
DOC_PATH = Path(__file__).resolve().parents[1] / "docs" / "wackamole-conf.md"

SEED = """\
Spread = 4803
SpreadRetryInterval = 5s
Group = www
Control = /var/run/wackamole/wackamole.it
VirtualInterfaces {
{ eth4:192.168.1.20/24 }
{ eth4:192.168.1.21/24 }
}
Arp-Cache = 90s
Notify {
eth4:192.168.1.1/32
arp-cache
}
balance {
AcquisitionsPerRound = all
interval = 4s
}
mature = 5s
"""

# The upstream repository's own sample file (postwait/wackamole wackamole.conf), verbatim except
# that its addresses are moved into 198.18.0.0/15 (10.a.b.c/8 -> 198.18.b.c/15,
# 192.168.x.y -> 198.18.x.y; the seed's 192.168.1.x stays).
UPSTREAM_SAMPLE = """\
# The Spread daemon we are going to connect to.  It should be on the local box
Spread = 4803@127.0.0.1
SpreadRetryInterval = 5s
# The group name
Group = wack1

# Named socket for online control
#Control = /var/run/wack.it

# Win32: specify a host:port combination for the control
Control = 127.0.0.1:2413

#PerlUseLib .
#PerlUse example
#RunDynamic funcs:killhup on up
#RunDynamic example::dump_it on up
# Denote the interface we prefer to have
#prefer eth0:198.18.4.5/15
#prefer { eth0:198.18.3.4/15 eth1:198.18.10.23/24 }

# In most cases, I just don't care.  Let wackamole decide.
Prefer None

# List all the virtual interfaces (ALL of them)
VirtualInterfaces {
\t# The following two lines have the same effect
\t# en0:192.168.1.2/24

\t{ brlan0:198.18.116.41/23 }
\t
#\t{ en1:198.18.0.1/15 en0:198.18.35.64/26 }
}

# Collect and broadcast the IPs in our ARP table every so often
Arp-Cache = 90s

Notify {
\t# Let's notify our router:
#\ten0:198.18.10.1/32
\tbrlan0:198.18.116.41/23
#\ten0:198.18.0.0/24 throttle 128
\tarp-cache
}
balance {
\tAcquisitionsPerRound = all
\tinterval = 4s
}
# How long it takes us to mature
mature = 5s
"""

BASE = "Group = g\nVIFs { eth0:192.168.1.20/24 }\n"


def vip(ifname: str, iface: str, hint: int | None = None) -> VipAddress:
    interface = ipaddress.ip_interface(iface)
    default = 24 if interface.version == 4 else 64
    return VipAddress(ifname, interface, default if hint is None else hint)


def one_vif(*addresses: VipAddress) -> tuple[Vif, ...]:
    return (Vif(addresses),)


def parse(text: str) -> WackamoleConfig:
    return parse_config(text, "t.conf")


def problems_of(text: str) -> list[tuple[int, int, str]]:
    with pytest.raises(ConfigError) as info:
        parse(text)
    for problem in info.value.problems:
        assert problem.path == "t.conf"
    return [(p.line, p.col, p.message) for p in info.value.problems]


# --- the seed --------------------------------------------------------------------------------

SEED_CONFIG = WackamoleConfig(
    spread="4803",
    spread_retry_interval_s=5.0,
    group="www",
    control_path="/var/run/wackamole/wackamole.it",
    vifs=(
        Vif((vip("eth4", "192.168.1.20/24"),)),
        Vif((vip("eth4", "192.168.1.21/24"),)),
    ),
    arp_cache_s=90.0,
    notify=(NotifyBlock("eth4", ipaddress.IPv4Network("192.168.1.1/32")), NotifyArpCache()),
    balance=BalanceConfig(acquisitions_per_round=None, interval_s=4.0),
    mature_s=5.0,
)


def test_seed_file_is_the_seed_unchanged() -> None:
    assert SEED_PATH.read_text() == SEED


def test_seed_parses_to_the_spec_result() -> None:
    config = parse_config(SEED, str(SEED_PATH))
    assert config == SEED_CONFIG
    assert config.warnings == ()
    # §1.7: netmask, broadcast and hint of VIF 0; per-round cap floor(2/2) = 1.
    head = config.vifs[0].head
    assert str(head.interface.netmask) == "255.255.255.0"
    assert str(head.interface.network.broadcast_address) == "192.168.1.255"
    assert head.hint_network == ipaddress.ip_network("192.168.1.0/24")
    assert config.vifs[0].extras == ()
    assert [v.set_id for v in config.vifs] == ["192.168.1.20", "192.168.1.21"]
    assert config.moves_per_round_max == 1
    assert config.balance.complete
    assert config.prefer == ()
    assert (config.spread_port, config.spread_host) == (4803, None)


def test_defaults_for_every_omitted_setting() -> None:
    config = parse(BASE)
    assert config == WackamoleConfig(group="g", vifs=one_vif(vip("eth0", "192.168.1.20/24")))
    assert config.spread == "4803"
    assert config.spread_retry_interval_s == 5.0
    assert config.control_path is None
    assert config.log_facility is None
    assert config.mature_s == 5.0
    assert config.arp_cache_s == 60.0
    assert config.balance == BalanceConfig(acquisitions_per_round=1, interval_s=4.0)
    assert config.notify == ()
    assert config.module_dir == "."
    assert config.dynamic_hooks == ()
    assert config.command_hooks == ()
    assert config.health_check is None
    assert config.metrics_port is None


def test_upstream_sample_parses() -> None:
    config = parse(UPSTREAM_SAMPLE)
    assert config.spread == "4803@127.0.0.1"
    assert (config.spread_port, config.spread_host) == (4803, "127.0.0.1")
    assert config.group == "wack1"
    assert config.control_path == "127.0.0.1:2413"
    assert config.prefer == ()
    assert config.vifs == one_vif(vip("brlan0", "198.18.116.41/23"))
    assert config.notify == (
        NotifyBlock("brlan0", ipaddress.IPv4Network("198.18.116.0/23")),
        NotifyArpCache(),
    )
    assert [(w.line, w.col) for w in config.warnings] == [(11, 11)]
    assert "relative" in config.warnings[0].message


SPEC_ADDRESS = re.compile(
    r"(?P<ifname>[A-Za-z][\w.-]*):(?P<address>\d+(?:\.\d+){3})/(?P<plen>\d+)(?:n(?P<hint>\d+))?"
)


def spec_quoted_forms() -> list[str]:
    """The `code` forms §1.7 says upstream's sample and man page show (and that all must parse),
    plus the multi-address set of the §4.3 `wackatrl -l` example."""
    text = spec_text("wackamole.md")
    quoted = between(section(text, "### 1.7"), "Upstream's own sample", "All of these must parse")
    listing = between(section(text, "### 4.3"), "A VIF set `", "held by nobody")
    forms = re.findall(r"`([^`]+)`", quoted) + re.findall(r"`([^`]+)`", listing)
    return [f for f in forms if f != "wackamole.conf"]  # the sample's file name, not a form


def test_spec_quoted_forms_parse() -> None:
    forms = spec_quoted_forms()
    seen: set[str] = set()
    for form in forms:
        addresses = [
            vip(m["ifname"], f"{m['address']}/{m['plen']}", int(m["hint"]) if m["hint"] else None)
            for m in SPEC_ADDRESS.finditer(form)
        ]
        if form.lower().startswith("prefer {"):
            kind = "prefer block"
            prefer = tuple(a.interface.network for a in addresses)
            assert parse(BASE + form + "\n").prefer == prefer, form
        elif form.startswith("{"):
            kind = "VIF set"
            assert parse(f"Group = g\nVIFs {{ {form} }}\n").vifs == one_vif(*addresses), form
        elif "throttle" in form:
            kind = "notify block"
            (head,) = addresses
            rate = int(form.split()[-1])
            expected = (NotifyBlock(head.ifname, head.interface.network, rate),)
            assert parse(f"{BASE}Notify {{ {form} }}\n").notify == expected, form
        elif addresses:
            kind = "VIF address"
            assert parse(f"Group = g\nVIFs {{ {form} }}\n").vifs == one_vif(*addresses), form
        elif form.startswith("Perl") or "::" in form:
            kind = "Perl"  # §1.5: fatal without embedded Perl, and we have none
            assert any("Perl" in m for _, _, m in problems_of(BASE + form + "\n")), form
        else:
            kind = "setting"
            parse(BASE + form + "\n")
        seen.add(kind)
    assert len(forms) >= 12, forms
    assert seen == {"prefer block", "VIF set", "notify block", "VIF address", "Perl", "setting"}


# --- valid files: (name, text, expected attributes) -------------------------------------------

V4 = ipaddress.IPv4Network
NET = ipaddress.ip_network

VALID: list[tuple[str, str, dict[str, object]]] = [
    ("no blanks around =", "Group=www\nVIFs{eth0:192.168.1.20/24}\n", {"group": "www"}),
    (
        "blank on one side",
        BASE + "Mature =7s\nArp-Cache= 8s\n",
        {"mature_s": 7.0, "arp_cache_s": 8.0},
    ),
    (
        "keywords any case",
        BASE + "MATURE = 6s\nsPrEaD = 4804\n",
        {"mature_s": 6.0, "spread": "4804"},
    ),
    ("1h is an hour", BASE + "Mature = 1h\n", {"mature_s": 3600.0}),
    (
        "2m and 3M",
        BASE + "Mature = 2m\nArp-Cache = 3M\n",
        {"mature_s": 120.0, "arp_cache_s": 180.0},
    ),
    ("5S upper-case unit", BASE + "SpreadRetryInterval = 5S\n", {"spread_retry_interval_s": 5.0}),
    ("milliseconds", BASE + "Mature = 1500ms\n", {"mature_s": 1.5}),
    ("Mature 0s is allowed", BASE + "Mature = 0s\n", {"mature_s": 0.0}),
    ("Spread port@host", BASE + "Spread = 4803@127.0.0.1\n", {"spread": "4803@127.0.0.1"}),
    ("Spread leading zero", BASE + "Spread = 04803\n", {"spread": "4803"}),
    ("Spread quoted", BASE + 'Spread = "4803@localhost"\n', {"spread": "4803@localhost"}),
    ("keyword value on its line", "Group = all\nVIFs { eth0:192.168.1.20/24 }", {"group": "all"}),
    ("quoted keyword value", 'Group = "none"\nVIFs { eth0:192.168.1.20/24 }', {"group": "none"}),
    (
        "word starting with keyword",
        "Group = nonesuch\nVIFs { e:192.168.1.2/24 }",
        {"group": "nonesuch"},
    ),
    ("single-quoted", "Group = 'allhosts'\nVIFs { e:192.168.1.2/24 }", {"group": "allhosts"}),
    ("value on the next line", "Group =\n  www\nVIFs { e:192.168.1.2/24 }", {"group": "www"}),
    ("comment after value", "Group = www # the group\nVIFs { e:192.168.1.2/24 }", {"group": "www"}),
    ("comment ends a word", "Group = www#x\nVIFs { e:192.168.1.2/24 }", {"group": "www"}),
    ("= inside a value", BASE + "Control = /run/a=b\n", {"control_path": "/run/a=b"}),
    (
        "quoted path with blanks",
        BASE + 'Control = "/run/my dir/w.it"\n',
        {"control_path": "/run/my dir/w.it"},
    ),
    ("later setting wins", BASE + "Mature = 1s\nMature = 2s\n", {"mature_s": 2.0}),
    ("CRLF line ends", BASE.replace("\n", "\r\n") + "Mature = 9s\r\n", {"mature_s": 9.0}),
    ("byte order mark", "\ufeff" + BASE, {"group": "g"}),
    ("LogFacility kept", BASE + "LogFacility = LOCAL3\n", {"log_facility": "local3"}),
    ("LogFacility LOG_ prefix", BASE + "LogFacility = LOG_USER\n", {"log_facility": "user"}),
    (
        "balance block",
        BASE + "Balance {\n AcquisitionsPerRound = 3\n Interval = 10s\n}\n",
        {"balance": BalanceConfig(acquisitions_per_round=3, interval_s=10.0)},
    ),
    (
        "balance one line, case",
        BASE + "BALANCE { acquisitionsperround = ALL INTERVAL = 1m }\n",
        {"balance": BalanceConfig(acquisitions_per_round=None, interval_s=60.0)},
    ),
    (
        "balance zero moves",
        BASE + "balance { AcquisitionsPerRound = 0 }",
        {"moves_per_round_max": 0},
    ),
    ("empty balance block", BASE + "balance { }", {"balance": BalanceConfig()}),
    (
        "VIFs and VIPs spellings accumulate",
        "Group = g\nVIFs { a:192.168.1.2/24 }\nVIPs { b:192.168.1.3/24 }\n",
        {"vifs": (Vif((vip("a", "192.168.1.2/24"),)), Vif((vip("b", "192.168.1.3/24"),)))},
    ),
    (
        "multi-address set (shape of the spec §4.3 example)",
        "Group = g\nVirtualInterfaces { { eth0:198.18.0.5/24 eth1:198.18.5.5/24 } }",
        {"vifs": one_vif(vip("eth0", "198.18.0.5/24"), vip("eth1", "198.18.5.5/24"))},
    ),
    (
        "man page multi-IP sample shape with nN hints",
        "Group = g\nVirtualInterfaces {\n"
        "    { fxp0:198.18.10.2/32n23 fxp1:198.19.2.2/32n29 }\n"
        "    { fxp0:198.18.10.3/32n23 fxp1:198.19.2.3/32n29 }\n}\n",
        {
            "vifs": (
                Vif((vip("fxp0", "198.18.10.2/32", 23), vip("fxp1", "198.19.2.2/32", 29))),
                Vif((vip("fxp0", "198.18.10.3/32", 23), vip("fxp1", "198.19.2.3/32", 29))),
            ),
            "moves_per_round_max": 1,
        },
    ),
    (
        "upstream sample's commented set",
        "Group = g\nVIFs { { en1:198.18.0.1/15 en0:198.18.35.64/26 } }",
        {"vifs": one_vif(vip("en1", "198.18.0.1/15"), vip("en0", "198.18.35.64/26"))},
    ),
    (
        "IPv6 VIPs, bracketed and not",
        "Group = g\nVIFs { { eth0:2001:db8::10/64 eth0:[2001:db8::11]/64n48 } }",
        {"vifs": one_vif(vip("eth0", "2001:db8::10/64"), vip("eth0", "2001:db8::11/64", 48))},
    ),
    (
        "hex-looking interface in brackets form",
        "Group = g\nVIFs { dead:[2001:db8::10]/64 }",
        {"vifs": one_vif(vip("dead", "2001:db8::10/64"))},
    ),
    (
        "15-byte interface name",
        "Group = g\nVIFs { abcdefghijklmno:192.168.1.2/24 }",
        {"vifs": one_vif(vip("abcdefghijklmno", "192.168.1.2/24"))},
    ),
    (
        "30 extra addresses",
        "Group = g\nVIFs { { " + " ".join(f"e:198.18.0.{k}/24" for k in range(1, 32)) + " } }",
        {"addresses": tuple(vip("e", f"198.18.0.{k}/24") for k in range(1, 32))},
    ),
    ("Prefer None", BASE + "Prefer None\n", {"prefer": ()}),
    (
        "Prefer /32 (spec)",
        BASE + "Prefer eth0:192.168.1.20/32\n",
        {"prefer": (NET("192.168.1.20/32"),)},
    ),
    (
        "Prefer block means the block",
        BASE + "Prefer eth0:192.168.1.5/24\n",
        {"prefer": (NET("192.168.1.0/24"),)},
    ),
    ("Prefer bare address", BASE + "Prefer 192.168.1.20\n", {"prefer": (NET("192.168.1.20/32"),)}),
    (
        "Prefer braces accumulate",
        BASE + "Prefer { eth0:192.168.1.20/32 198.18.0.0/15 }\nPrefer none\nPrefer 2001:db8::/32",
        {"prefer": (NET("192.168.1.20/32"), NET("198.18.0.0/15"), NET("2001:db8::/32"))},
    ),
    ("Notify none", BASE + "Notify none\n", {"notify": ()}),
    ("Notify arp-cache braceless", BASE + "Notify arp-cache\n", {"notify": (NotifyArpCache(),)}),
    (
        "Notify arp-cache ping",
        BASE + "Notify { arp-cache ping }",
        {"notify": (NotifyArpCache(True),)},
    ),
    (
        "Notify throttle (upstream sample)",
        BASE + "Notify {\n en0:198.18.0.0/24 throttle 128\n}\n",
        {"notify": (NotifyBlock("en0", V4("198.18.0.0/24"), 128),)},
    ),
    (
        "Notify throttle after ping, with =",
        BASE + "Notify { eth0:192.168.1.0/24 ping throttle = 5 }",
        {"notify": (NotifyBlock("eth0", V4("192.168.1.0/24"), 5, True),)},
    ),
    (
        "Notify block without interface or mask",
        BASE + "Notify 192.168.1.1\nNotify { 198.18.0.0/24 arp-cache }\n",
        {
            "notify": (
                NotifyBlock(None, V4("192.168.1.1/32")),
                NotifyBlock(None, V4("198.18.0.0/24")),
                NotifyArpCache(),
            )
        },
    ),
    ("empty Notify block", BASE + "Notify { }", {"notify": ()}),
    (
        "RunDynamic shared object (upstream sample)",
        BASE + "RunDynamic funcs:killhup on up\n",
        {"dynamic_hooks": (DynamicHook(HookEvent.ON_UP, ".", "funcs", "killhup"),)},
    ),
    (
        "RunDynamic uses the ModuleDir of its line",
        BASE
        + "ModuleDir = /opt/w\nRunDynamic f.so:a POST  DOWN\nModuleDir = /x\n"
        + "RunDynamic /abs/g:b post up\n",
        {
            "module_dir": "/x",
            "dynamic_hooks": (
                DynamicHook(HookEvent.POST_DOWN, "/opt/w", "f.so", "a"),
                DynamicHook(HookEvent.POST_UP, "/x", "/abs/g", "b"),
            ),
        },
    ),
    (
        "RunCommand hooks",
        BASE
        + "RunCommand \"/usr/bin/logger -t 'wack amole'\" on up\n"
        + "RunCommand /usr/local/sbin/vip-down on down\n",
        {
            "command_hooks": (
                CommandHook(HookEvent.ON_UP, ("/usr/bin/logger", "-t", "wack amole")),
                CommandHook(HookEvent.ON_DOWN, ("/usr/local/sbin/vip-down",)),
            )
        },
    ),
    (
        "HealthCheck with interval",
        BASE + 'HealthCheck = "/bin/check --fast"\nHealthCheckInterval = 500ms\n',
        {"health_check": HealthCheck(("/bin/check", "--fast"), 0.5)},
    ),
    (
        "HealthCheck default interval",
        BASE + "HealthCheck = /bin/true\n",
        {"health_check": HealthCheck(("/bin/true",), 2.0)},
    ),
    ("MetricsPort", BASE + "MetricsPort = 9102\n", {"metrics_port": 9102}),
]


@pytest.mark.parametrize(("text", "expected"), [r[1:] for r in VALID], ids=[r[0] for r in VALID])
def test_valid(text: str, expected: dict[str, object]) -> None:
    config = parse(text)
    for name, value in expected.items():
        assert getattr(config, name) == value, name


def test_valid_rows_have_unique_names() -> None:
    names = [row[0] for row in VALID]
    assert len(names) == len(set(names))


# --- invalid files: (name, text, [(line, col, message fragment)]) -----------------------------

INVALID: list[tuple[str, str, list[tuple[int, int, str]]]] = [
    ("empty file", "", [(1, 1, "no Group"), (1, 1, "no virtual interfaces")]),
    ("no Group", "VIFs { eth0:192.168.1.20/24 }", [(1, 1, "no Group")]),
    ("no VIFs", "Group = g\n", [(1, 1, "no virtual interfaces")]),
    ("empty VIF block", "Group = g\nVIFs { }", [(2, 1, "no virtual interfaces")]),
    ("unknown setting", BASE + "Grup = www\n", [(3, 1, "unknown setting 'Grup'")]),
    ("missing =", BASE + "Mature 5s\n", [(3, 8, "expected '=' after Mature")]),
    ("bare number time", BASE + "Mature = 5\n", [(3, 10, "needs a unit: 5s, 5m or 5h")]),
    (
        "bad time",
        BASE + "mature = 5 s\n",
        [(3, 10, "needs a unit"), (3, 12, "unknown setting 's'")],
    ),
    ("fraction time", BASE + "Mature = 1.5s\n", [(3, 10, "must be a time")]),
    ("zero retry", BASE + "SpreadRetryInterval = 0s\n", [(3, 23, "must be more than 0")]),
    ("zero balance interval", BASE + "balance { interval = 0m }", [(3, 22, "must be more than 0")]),
    ("huge time", BASE + "Mature = 999999999h\n", [(3, 10, "is longer than 8760h")]),
    ("too many digits", BASE + "Mature = 1234567890s\n", [(3, 10, "too large")]),
    (
        "missing value swallows nothing",
        "Group =\nControl = /run/w.it\nVIFs { e:192.168.1.2/24 }\n",
        [(2, 1, "expected a value for Group on line 1")],
    ),
    ("value at end of file", BASE + "Control =", [(3, 9, "expected a value for Control")]),
    ("setting at end of file", BASE + "Control", [(3, 1, "expected '=' after Control")]),
    (
        "Group with blank",
        'Group = "a b"\nVIFs { e:192.168.1.2/24 }',
        [(1, 9, "Spread allows only")],
    ),
    ("Group with #-like char", "Group = a!b\nVIFs { e:192.168.1.2/24 }", [(1, 9, "has '!'")]),
    (
        "Group too long",
        f"Group = {'g' * 32}\nVIFs {{ e:192.168.1.2/24 }}",
        [(1, 9, "1-31 characters")],
    ),
    ("empty quoted Group", "Group = ''\nVIFs { e:192.168.1.2/24 }", [(1, 9, "1-31 characters")]),
    ("Spread not a port", BASE + "Spread = abc\n", [(3, 10, "PORT or PORT@HOST")]),
    ("Spread port range", BASE + "Spread = 70000\n", [(3, 10, "out of range")]),
    ("Spread empty host", BASE + "Spread = 4803@\n", [(3, 10, "empty")]),
    ("Control too long", BASE + f"Control = /{'x' * 107}\n", [(3, 11, "longer than 107")]),
    ("VIF without mask", "Group = g\nVIFs { eth0:198.18.0.1 }", [(2, 8, "needs a prefix length")]),
    ("VIF without interface", "Group = g\nVIFs { 192.168.1.2/24 }", [(2, 8, "needs an interface")]),
    (
        "IPv6 VIF without interface",
        "Group = g\nVIFs { 2001:db8::1/64 }",
        [(2, 8, "eth0:[2001:db8::1]/64")],
    ),
    ("empty interface", "Group = g\nVIFs { :192.168.1.2/24 }", [(2, 8, "empty interface name")]),
    (
        "alias label",
        "Group = g\nVIFs { eth4:1:192.168.1.2/24 }",
        [(2, 8, "alias labels are chosen")],
    ),
    (
        "16-byte interface",
        "Group = g\nVIFs { abcdefghijklmnop:192.168.1.2/24 }",
        [(2, 8, "longer than 15")],
    ),
    ("bad octet", "Group = g\nVIFs { e:192.168.1.256/24 }", [(2, 8, "not an IPv4 or IPv6")]),
    (
        "leading zero octet",
        "Group = g\nVIFs { e:198.18.01.2/24 }",
        [(2, 8, "not an IPv4 or IPv6")],
    ),
    ("prefix /33", "Group = g\nVIFs { e:192.168.1.2/33 }", [(2, 8, "prefix length /33")]),
    ("hint n33", "Group = g\nVIFs { e:192.168.1.2/32n33 }", [(2, 8, "network hint /33")]),
    ("junk after prefix", "Group = g\nVIFs { e:192.168.1.2/24x }", [(2, 8, "is not an address")]),
    ("zone suffix", "Group = g\nVIFs { e:[fe80::1%e]/64 }", [(2, 8, "zone suffixes")]),
    (
        "IPv4 in brackets",
        "Group = g\nVIFs { e:[192.168.1.2]/24 }",
        [(2, 8, "brackets hold an IPv6")],
    ),
    (
        "multicast VIP",
        "Group = g\nVIFs { e:224.0.0.1/24 }",
        [(2, 8, "cannot be a virtual address")],
    ),
    ("unspecified VIP", "Group = g\nVIFs { e:0.0.0.0/0 }", [(2, 8, "cannot be a virtual address")]),
    (
        "quoted VIP",
        'Group = g\nVIFs { "e:192.168.1.2/24" }',
        [(2, 8, "expected a virtual address")],
    ),
    ("empty set", "Group = g\nVIFs { e:192.168.1.2/24 { } }", [(2, 25, "empty address set")]),
    ("nested set", "Group = g\nVIFs { { { e:192.168.1.2/24 } } }", [(2, 10, "do not nest")]),
    (
        "duplicate address (man page VIF sample shape)",
        "Group = g\nVirtualInterfaces {\n    eth0:198.18.3.11/24\n    eth0:198.18.3.12/24\n"
        "    eth0:198.18.3.13/24\n    eth0:198.18.3.13/24\n    eth0:198.18.3.13/24\n}\n",
        [
            (6, 5, "198.18.3.13 is already a virtual address (line 5, column 5)"),
            (7, 5, "198.18.3.13 is already a virtual address (line 5, column 5)"),
        ],
    ),
    (
        "duplicate across prefix and interface",
        "Group = g\nVIFs { { a:192.168.1.2/24 b:192.168.1.2/32 } }",
        [(2, 27, "already a virtual address")],
    ),
    (
        "31 extras",
        "Group = g\nVIFs { { " + " ".join(f"e:198.18.0.{k}/24" for k in range(1, 33)) + " } }",
        [(2, 10 + 16 * 9 + 17 * 22, "more than 30 extra addresses")],
    ),
    ("unclosed block", "Group = g\nVIFs { e:192.168.1.2/24\n", [(2, 6, "never closed")]),
    (
        "missing } before the next setting",
        "Group = g\nVIFs {\n e:192.168.1.2/24\nArp-Cache = 90s\nMature = x\n",
        [(4, 1, "missing '}' for the '{' on line 2"), (5, 10, "must be a time")],
    ),
    ("stray }", BASE + "}\n", [(3, 1, "expected a setting, found '}'")]),
    ("keyword cannot start", BASE + "all\n", [(3, 1, "'all' cannot start a setting")]),
    ("Interval outside balance", BASE + "Interval = 4s\n", [(3, 1, "belongs inside a balance")]),
    ("balance without brace", BASE + "balance AcquisitionsPerRound = 1", [(3, 9, "expected '{'")]),
    (
        "balance unknown",
        BASE + "balance { mature = 5s }",
        [(3, 11, "expected AcquisitionsPerRound")],
    ),
    (
        "balance bad count",
        BASE + "balance { AcquisitionsPerRound = some }",
        [(3, 34, "whole number")],
    ),
    (
        "quoted string not closed",
        BASE + 'Control = "/run/w.it\n',
        [(3, 11, "not closed on its line")],
    ),
    ("text glued to quote", BASE + 'Control = "/run"x\n', [(3, 17, "right after a closing quote")]),
    ("quoted plus glued =", BASE + 'Control = "/a"=b\n', [(3, 11, "must stand alone")]),
    ("control character", BASE + "Mature\x0b = 5s\n", [(3, 7, "U+000B not allowed")]),
    ("NUL in quotes", BASE + 'Control = "/a\x00"\n', [(3, 14, "U+0000 not allowed")]),
    ("Prefer host name", BASE + "Prefer www\n", [(3, 8, "not host names")]),
    ("Prefer bad address", BASE + "Prefer 192.168.1.300\n", [(3, 8, "not an IPv4 or IPv6")]),
    ("Prefer keyword", BASE + "Prefer { all }\n", [(3, 10, "expected an address to prefer")]),
    ("Notify IPv6", BASE + "Notify { e:2001:db8::1/128 }", [(3, 10, "IPv4 (ARP)")]),
    ("Notify keyword", BASE + "Notify { none }", [(3, 10, "expected arp-cache or an address")]),
    (
        "throttle on arp-cache",
        BASE + "Notify { arp-cache throttle 5 }",
        [(3, 20, "cannot be throttled")],
    ),
    (
        "throttle not a number",
        BASE + "Notify { e:192.168.1.1/32 throttle x }",
        [(3, 36, "whole number")],
    ),
    (
        "throttle twice",
        BASE + "Notify e:192.168.1.1 throttle 1 throttle 2",
        [(3, 33, "throttle given twice")],
    ),
    ("ping twice", BASE + "Notify arp-cache ping ping", [(3, 23, "ping given twice")]),
    ("Notify at end", BASE + "Notify", [(3, 1, "expected none, arp-cache")]),
    ("PerlUse", BASE + "PerlUse example\n", [(3, 1, "no embedded Perl")]),
    ("PerlUseLib", BASE + "PerlUseLib .\n", [(3, 1, "no embedded Perl")]),
    (
        "Perl RunDynamic (upstream sample, man page)",
        BASE + "RunDynamic example::dump_it on up\nRunDynamic MyModule::DoMagic post up\n",
        [(3, 12, "Perl hook"), (4, 12, "Perl hook")],
    ),
    ("RunDynamic no colon", BASE + "RunDynamic killhup on up\n", [(3, 12, "Perl hook")]),
    ("RunDynamic empty symbol", BASE + "RunDynamic funcs: on up\n", [(3, 12, "FILE:SYMBOL")]),
    ("RunDynamic bad event", BASE + "RunDynamic f:s on sideways\n", [(3, 16, "expected an event")]),
    ("RunDynamic no event", BASE + "RunDynamic f:s\n", [(3, 12, "expected an event")]),
    ("RunCommand empty", BASE + 'RunCommand "" on up\n', [(3, 12, "command is empty")]),
    (
        "RunCommand bad quoting",
        BASE + 'RunCommand "a \'b" on up\n',
        [(3, 12, "No closing quotation")],
    ),
    ("HealthCheckInterval 0", BASE + "HealthCheckInterval = 0s\n", [(3, 23, "more than 0")]),
    ("MetricsPort 0", BASE + "MetricsPort = 0\n", [(3, 15, "out of range 1-65535")]),
    (
        "every problem is reported, in file order",
        "Group = a b\nMature = 5\nVIFs { e:192.168.1.2 x:192.168.1.3/24 }\nArp-Cache = -1s\n",
        [
            (1, 11, "unknown setting 'b'"),
            (2, 10, "needs a unit"),
            (3, 8, "needs a prefix length"),
            (4, 13, "must be a time"),
        ],
    ),
]


@pytest.mark.parametrize(
    ("text", "expected"), [r[1:] for r in INVALID], ids=[r[0] for r in INVALID]
)
def test_invalid(text: str, expected: list[tuple[int, int, str]]) -> None:
    found = problems_of(text)
    assert [(line, col) for line, col, _ in found] == [(line, col) for line, col, _ in expected]
    for (_, _, message), (_, _, fragment) in zip(found, expected, strict=True):
        assert fragment in message


def test_invalid_rows_have_unique_names() -> None:
    names = [row[0] for row in INVALID]
    assert len(names) == len(set(names))


def test_table_bounds() -> None:
    many_vifs = " ".join(f"e:198.18.{k // 250}.{k % 250 + 1}/16" for k in range(VIFS_MAX + 1))
    found = problems_of(f"Group = g\nVIFs {{ {many_vifs} }}")
    assert [(line, message) for line, _, message in found] == [
        (2, f"more than {VIFS_MAX} virtual interfaces")
    ]
    assert found[0][1] == 8 + many_vifs.index("e:198.18.1.5/16")
    notify = "Notify arp-cache\n" * (NOTIFY_MAX + 1)
    found = problems_of(BASE + notify)
    assert [(line, col) for line, col, _ in found] == [(3 + NOTIFY_MAX, 8)]
    assert EXTRAS_MAX == 30


# --- warnings --------------------------------------------------------------------------------

WARNINGS: list[tuple[str, str, list[tuple[int, int, str]]]] = [
    ("set twice", BASE + "Mature = 1s\nmature = 2s\n", [(4, 1, "set again")]),
    ("balance set twice", BASE + "balance { interval = 1s interval = 2s }", [(3, 25, "set again")]),
    ("relative Control", BASE + "Control = w.it\n", [(3, 11, "relative")]),
    ("unknown facility", BASE + "LogFacility = mine\n", [(3, 15, "unknown syslog facility")]),
    ("ping on a block", BASE + "Notify { e:192.168.1.1/32 ping }", [(3, 10, "ping has no effect")]),
    ("hint in Notify", BASE + "Notify { e:192.168.1.0/24n23 }", [(3, 10, "no meaning in Notify")]),
    ("hint in Prefer", BASE + "Prefer 192.168.1.20/32n23", [(3, 8, "no meaning in Prefer")]),
    (
        "Prefer matches nothing",
        BASE + "Prefer 198.18.0.1\n",
        [(3, 8, "names no VirtualInterfaces head")],
    ),
    (
        "VIP is network address",
        "Group = g\nVIFs { e:192.168.1.0/24 }",
        [(2, 8, "network or broadcast")],
    ),
    (
        "lone HealthCheckInterval",
        BASE + "HealthCheckInterval = 3s",
        [(3, 1, "without HealthCheck")],
    ),
]


@pytest.mark.parametrize(
    ("text", "expected"), [r[1:] for r in WARNINGS], ids=[r[0] for r in WARNINGS]
)
def test_warnings(text: str, expected: list[tuple[int, int, str]]) -> None:
    warnings = parse(text).warnings
    assert [(w.line, w.col) for w in warnings] == [(line, col) for line, col, _ in expected]
    for warning, (_, _, fragment) in zip(warnings, expected, strict=True):
        assert fragment in warning.message


def test_warnings_do_not_affect_equality() -> None:
    assert parse(BASE + "Mature = 5s\nMature = 5s\n") == parse(BASE)


# --- the user documentation ------------------------------------------------------------------

DOC_BLOCKS = re.findall(r"^```\n(.*?)^```", DOC_PATH.read_text(), re.MULTILINE | re.DOTALL)
DOC_EXAMPLES = [b for b in DOC_BLOCKS if not b.startswith("wackapy ")]


def test_doc_has_examples() -> None:
    assert len(DOC_EXAMPLES) >= 6
    assert DOC_EXAMPLES[0] == SEED


@pytest.mark.parametrize("block", DOC_EXAMPLES)
def test_doc_examples_parse(block: str) -> None:
    prefix = "" if "Group" in block else "Group = g\n"
    if "VirtualInterfaces" not in block:
        prefix += "VIFs { eth0:192.168.1.20/24 }\n"
    parse(prefix + block)


def test_doc_shows_the_real_check_output(capsys: pytest.CaptureFixture[str]) -> None:
    (shown,) = [b for b in DOC_BLOCKS if b.startswith("wackapy --check-config")]
    _command, output = shown.splitlines()
    assert cli.main(["--check-config", "-c", str(SEED_PATH)]) == 0
    real = capsys.readouterr().out.strip()
    assert real.replace(str(SEED_PATH), "/etc/wackamole.conf") == output


# --- helpers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.0, "0s"), (5.0, "5s"), (90.0, "90s"), (120.0, "2m"), (3600.0, "1h"), (1.5, "1500ms")],
)
def test_format_seconds(seconds: float, text: str) -> None:
    assert format_seconds(seconds) == text


@pytest.mark.parametrize(
    ("text", "result"), [("4803", "4803"), ("04803", "4803"), ("4803@h", "4803@h")]
)
def test_parse_spread(text: str, result: str) -> None:
    assert parse_spread(text) == result


@pytest.mark.parametrize("text", ["", "x", "0", "65536", "4803@", "4803@a b", "@h", "1" * 10])
def test_parse_spread_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_spread(text)


def test_prefers_matches_head_only() -> None:
    config = parse(
        "Group = g\nVIFs { { e:192.168.1.2/24 e:192.168.1.3/24 } e:192.168.1.4/24 }\n"
        "Prefer { 192.168.1.2/32 192.168.1.4/32 }"
    )
    assert [config.prefers(v) for v in config.vifs] == [True, True]
    config = parse("Group = g\nVIFs { { e:192.168.1.2/24 e:192.168.1.3/24 } }\nPrefer 192.168.1.3")
    assert not config.prefers(config.vifs[0])


def test_config_to_dict_is_json() -> None:
    config = parse(
        SEED + "RunDynamic f:s on up\nRunCommand c post down\nHealthCheck = h\nMetricsPort = 1\n"
        "VIFs { e:[2001:db8::1]/64 }\nPrefer 192.168.1.20"
    )
    data = json.loads(json.dumps(config_to_dict(config)))
    assert data["vifs"][0] == [
        {
            "ifname": "eth4",
            "address": "192.168.1.20",
            "prefixlen": 24,
            "netmask": "255.255.255.0",
            "hint": "192.168.1.0/24",
            "broadcast": "192.168.1.255",
        }
    ]
    assert data["vifs"][2][0]["hint"] == "2001:db8::/64"
    assert "broadcast" not in data["vifs"][2][0]
    assert data["balance"] == {
        "acquisitions_per_round": "all",
        "interval_s": 4.0,
        "moves_per_round_max": 1,
    }
    assert data["dynamic_hooks"][0]["module_path"] == "./f"
    assert data["command_hooks"] == [{"event": "post down", "argv": ["c"]}]
    assert data["health_check"] == {"argv": ["h"], "interval_s": 2.0}
    assert data["prefer"] == ["192.168.1.20/32"]
    assert data["notify"][1] == {"kind": "arp-cache", "ping": False}


def test_format_config_of_seed_round_trips() -> None:
    assert parse(format_config(SEED_CONFIG)) == SEED_CONFIG


def test_format_config_rejects_unwritable_strings() -> None:
    with pytest.raises(ValueError):
        format_config(WackamoleConfig(group="\"'{", vifs=SEED_CONFIG.vifs))


# --- property tests --------------------------------------------------------------------------

_name_chars = string.ascii_letters + string.digits + "-_."
ifnames = st.text(_name_chars, min_size=1, max_size=15).filter(lambda s: s not in (".", ".."))
times = st.integers(0, 10**7).map(lambda ms: ms / 1000)
positive_times = st.integers(1, 10**7).map(lambda ms: ms / 1000)
group_names = st.text(
    st.characters(min_codepoint=36, max_codepoint=126).filter(lambda c: c not in "'"),
    min_size=1,
    max_size=31,
)
# Both address families, in the test ranges; the hint defaults or is explicit.
v4_vips = st.builds(
    lambda n, plen, hint: VipAddress(
        "x", ipaddress.IPv4Interface((0xC6120000 + n, plen)), 24 if hint is None else hint
    ),
    st.integers(1, 2**17 - 2),
    st.integers(15, 32),
    st.none() | st.integers(0, 32),
)
v6_vips = st.builds(
    lambda n, plen, hint: VipAddress(
        "x", ipaddress.IPv6Interface((0x20010DB8 << 96 | n, plen)), 64 if hint is None else hint
    ),
    st.integers(1, 2**32),
    st.integers(32, 128),
    st.none() | st.integers(0, 128),
)


@st.composite
def vif_tables(draw: st.DrawFn) -> tuple[Vif, ...]:
    addresses = draw(
        st.lists(v4_vips | v6_vips, min_size=1, max_size=12, unique_by=lambda a: a.address)
    )
    names = draw(st.lists(ifnames, min_size=len(addresses), max_size=len(addresses)))
    vips = [
        VipAddress(n, a.interface, a.hint_prefixlen) for n, a in zip(names, addresses, strict=True)
    ]
    starts = {0} | draw(st.sets(st.integers(0, len(vips) - 1)))
    bounds = [*sorted(starts), len(vips)]
    return tuple(Vif(tuple(vips[a:b])) for a, b in itertools.pairwise(bounds))


argvs = st.lists(
    st.text(string.ascii_letters + string.digits + "/-_. ", min_size=1, max_size=8),
    min_size=1,
    max_size=3,
).map(tuple)
events = st.sampled_from(list(HookEvent))
notify_targets = st.one_of(
    st.builds(NotifyArpCache, st.booleans()),
    st.builds(
        NotifyBlock,
        st.none() | ifnames,
        st.builds(
            lambda n, plen: ipaddress.IPv4Network((0xC6120000 + n, plen), strict=False),
            st.integers(0, 2**17 - 1),
            st.integers(15, 32),
        ),
        st.integers(0, 1000),
        st.booleans(),
    ),
)
dir_names = st.text(string.ascii_letters + "/._-", min_size=1, max_size=10)


@st.composite
def configs(draw: st.DrawFn) -> WackamoleConfig:
    vifs = draw(vif_tables())
    module_dir = draw(dir_names)
    return WackamoleConfig(
        group=draw(group_names),
        vifs=vifs,
        spread=draw(st.sampled_from(["4803", "4804@127.0.0.1", "1@x"])),
        spread_retry_interval_s=draw(positive_times),
        control_path=draw(st.none() | st.just("/run/w.it")),
        log_facility=draw(st.none() | st.sampled_from(["daemon", "local7"])),
        mature_s=draw(times),
        arp_cache_s=draw(positive_times),
        balance=BalanceConfig(draw(st.none() | st.integers(0, 300)), draw(positive_times)),
        prefer=tuple(
            ipaddress.ip_network(f"{v.head.address}/{v.head.address.max_prefixlen}")
            for v in draw(st.lists(st.sampled_from(vifs), max_size=3))
        ),
        notify=tuple(draw(st.lists(notify_targets, max_size=4))),
        module_dir=module_dir,
        dynamic_hooks=tuple(
            draw(
                st.lists(
                    st.builds(
                        DynamicHook,
                        events,
                        dir_names,
                        dir_names,
                        st.text(string.ascii_letters, min_size=1, max_size=5),
                    ),
                    max_size=3,
                )
            )
        ),
        command_hooks=tuple(draw(st.lists(st.builds(CommandHook, events, argvs), max_size=3))),
        health_check=draw(st.none() | st.builds(HealthCheck, argvs, positive_times)),
        metrics_port=draw(st.none() | st.integers(1, 65535)),
    )


@settings(deadline=None)
@given(configs())
def test_format_then_parse_is_identity(config: WackamoleConfig) -> None:
    assert parse(format_config(config)) == config


FRAGMENTS = [
    "Group",
    "=",
    "www",
    "{",
    "}",
    "VIFs",
    "Notify",
    "arp-cache",
    "throttle",
    "ping",
    "Prefer",
    "none",
    "all",
    "balance",
    "AcquisitionsPerRound",
    "interval",
    "Mature",
    "5s",
    "1h",
    "0s",
    "eth4:192.168.1.20/24",
    "eth0:[2001:db8::1]/64n48",
    "192.168.1.1/32",
    "RunDynamic",
    "on",
    "up",
    "post",
    "down",
    "f:s",
    "a::b",
    "RunCommand",
    '"x y"',
    "'q",
    "#",
    "\n",
    " ",
    "\t",
    "Spread",
    "4803@h",
    "Control",
    "/run/x",
    "HealthCheck",
    "MetricsPort",
    "99999",
    "\x00",
    "\ufeff",
    "é",
    "\r\n",
    "=x",
    "e:1:192.168.1.2/24",
    "[",
    "]",
    "%",
    "/",
    "n",
]


def check_outcome(text: str) -> None:
    """A config, or a ConfigError whose problems all point into the text, nothing else."""
    lines = text.split("\n")
    try:
        config = parse(text)
    except ConfigError as err:
        assert err.problems
        for problem in err.problems:
            assert isinstance(problem, ConfigProblem)
            assert 1 <= problem.line <= len(lines)
            assert 1 <= problem.col <= len(lines[problem.line - 1]) + 1
            assert problem.message
        assert list(err.problems) == sorted(err.problems, key=lambda p: (p.line, p.col))
    else:
        assert config.group
        assert config.vifs
        for warning in config.warnings:
            assert 1 <= warning.line <= len(lines)


@settings(deadline=None)
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=60).map(" ".join))
def test_token_soup_gives_config_or_located_error(text: str) -> None:
    check_outcome(text)


@settings(deadline=None)
@given(st.text(max_size=300))
def test_random_text_gives_config_or_located_error(text: str) -> None:
    check_outcome(text)


@st.composite
def mutated_seeds(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from([SEED, UPSTREAM_SAMPLE, format_config(SEED_CONFIG)]))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(text)))
        match draw(st.sampled_from(["delete", "insert", "replace", "swap-lines"])):
            case "delete":
                text = text[:at] + text[at + draw(st.integers(1, 20)) :]
            case "insert":
                text = text[:at] + draw(st.sampled_from(FRAGMENTS)) + text[at:]
            case "replace":
                text = text[:at] + draw(st.text(max_size=3)) + text[at + 1 :]
            case _:
                lines = text.split("\n")
                i, j = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
                lines[i], lines[j] = lines[j], lines[i]
                text = "\n".join(lines)
    return text


@settings(deadline=None)
@given(mutated_seeds())
def test_mutated_seeds_give_config_or_located_error(text: str) -> None:
    check_outcome(text)


# --- the command line ------------------------------------------------------------------------


def write(tmp_path: Path, text: str | bytes, name: str = "w.conf") -> str:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return str(path)


def test_cli_check_config_seed(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--check-config", "-c", str(SEED_PATH)]) == 0
    out, err = capsys.readouterr()
    assert out == (
        f"{SEED_PATH}: OK: group www, spread 4803, 2 VIF sets with 2 addresses, "
        "2 notify entries, mature after 5s, balance all per round every 4s\n"
    )
    assert err == ""


def test_cli_check_config_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "Group = g\nMature = 5\nVIFs { eth0:192.168.1.2 }\n")
    assert cli.main(["--check-config", "-c", path]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        f"{path}:2:10: Mature needs a unit: 5s, 5m or 5h",
        f"{path}:3:8: 'eth0:192.168.1.2' needs a prefix length, e.g. eth0:192.168.1.2/24",
    ]


def test_cli_check_config_warnings_and_singular(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, BASE + "Control = w.it\nNotify arp-cache\nbalance { interval = 2m }")
    assert cli.main(["--check-config", "--config", path]) == 0
    out, err = capsys.readouterr()
    assert out == (
        f"{path}: OK: group g, spread 4803, 1 VIF set with 1 address, 1 notify entry, "
        "mature after 5s, balance 1 per round every 2m\n"
    )
    assert (
        err == f"{path}:3:11: warning: Control path 'w.it' is relative to the daemon's directory\n"
    )


def test_cli_dump_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--dump-config", "-c", str(SEED_PATH)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data == config_to_dict(SEED_CONFIG)
    assert data["group"] == "www"


def test_cli_spread_option_overrides_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--dump-config", "-c", str(SEED_PATH), "-s", "04804@127.0.0.1"]) == 0
    assert json.loads(capsys.readouterr().out)["spread"] == "4804@127.0.0.1"


@pytest.mark.parametrize(
    "argv",
    [
        ["-s", "nope"],
        ["-u", "much-too-long"],
        ["-u", "a#b"],
        ["--check-config", "--dump-config"],
        ["-x"],
    ],
)
def test_cli_bad_options_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(argv) == 2
    assert "usage: wackapy" in capsys.readouterr().err


def test_cli_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    assert "--check-config" in capsys.readouterr().out


def test_cli_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["-v"]) == 0
    assert capsys.readouterr().out.startswith("wackapy ")


def test_cli_unreadable_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = str(tmp_path / "missing.conf")
    assert cli.main(["--check-config", "-c", missing]) == 1
    assert capsys.readouterr().err == (
        f"wackapy: cannot read {missing}: No such file or directory\n"
    )


def test_cli_bad_utf8_is_located(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, b"Group = g\nControl = /r\xc3\xa9/\xff\n")
    assert cli.main(["--check-config", "-c", path]) == 1
    assert capsys.readouterr().err == f"{path}:2:15: not valid UTF-8\n"


def test_cli_oversized_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "#" * (cli.CONFIG_BYTES_MAX + 1))
    assert cli.main(["--check-config", "-c", path]) == 1
    assert "larger than" in capsys.readouterr().err


def test_cli_default_search(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    missing = str(tmp_path / "etc-wackamole.conf")
    monkeypatch.setattr(cli, "DEFAULT_CONFIG_PATHS", (missing, "wackamole.conf"))
    assert cli.main(["--check-config"]) == 1
    assert "no configuration file" in capsys.readouterr().err
    write(tmp_path, SEED, "wackamole.conf")
    assert cli.main(["--check-config"]) == 0
    assert capsys.readouterr().out.startswith("wackamole.conf: OK: group www")


def test_cli_parser_knows_upstream_flags() -> None:
    args = cli.build_arg_parser().parse_args(["-c", "f", "-d", "-s", "4803", "-u", "wack1"])
    assert (args.config, args.debug, args.spread, args.user) == ("f", True, "4803", "wack1")
    assert not (args.check_config or args.dump_config or args.version)

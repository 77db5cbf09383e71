"""wackapy's address and ARP executors against real namespaces, plus their pure parts.

The namespace tests build a bridge and hosts with tests/netns.py (198.18.0.0/15 only, and the
IPv6 documentation prefix 2001:db8::/32 for the NA test), add real addresses, send real frames
and read the kernel's tables back, both with pyroute2 and with `ip` as an independent oracle.
They need root; CI runs as root, so there a missing capability is a failure, not a skip.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyroute2 import netns as pyroute2_netns
from scapy.layers.inet import ICMP, IP
from scapy.layers.inet6 import ICMPv6ND_NA, ICMPv6NDOptDstLLAddr, IPv6
from scapy.layers.l2 import ARP, Ether

from tests import netns as nsbed
from tests.netns import Node, Testbed, wait_until
from wackapy.arp import (
    ARP_COPIES,
    BLOCK_TARGETS_PER_PASS_MAX,
    AnnouncePlanner,
    Announcer,
    Frame,
    FrameKind,
    FrameSender,
    SharedArpCache,
    announce,
    build_frame,
    read_arp_cache,
)
from wackapy.config import (
    CommandHook,
    HealthCheck,
    HookEvent,
    NotifyArpCache,
    NotifyBlock,
    VipAddress,
)
from wackapy.hooks import HealthChecker, HookRunner, run_command
from wackapy.netlink import (
    WACKAPY_IFA_PROTO,
    AddressInfo,
    AddressManager,
    InterfaceNotFound,
    NamespaceNotFound,
    _free_label,
)
from wackapy.statemsg import ArpEntry

_REASON = nsbed.unavailable_reason()


@pytest.fixture
def netns_required() -> None:
    """Skip without root, except in CI: CI runs as root, so there it is a failure."""
    if _REASON is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the namespace tests, but: {_REASON}")
    pytest.skip(_REASON)


needs_netns = pytest.mark.usefixtures("netns_required")

MAC_A = bytes.fromhex("020000000a0a")
MAC_B = bytes.fromhex("020000000b0b")
BOGUS_MAC = "02:00:00:00:00:99"


def vip(text: str, ifname: str = "eth0", hint: int | None = None) -> VipAddress:
    interface = ipaddress.ip_interface(text)
    default = 24 if interface.version == 4 else 64
    return VipAddress(ifname, interface, default if hint is None else hint)


def block(text: str, ifname: str | None = "eth0", throttle: int = 0) -> NotifyBlock:
    return NotifyBlock(ifname, ipaddress.IPv4Network(text), throttle)


def udp_poke(node: Node, address: object) -> None:
    """Send one datagram from `node`: the kernel ARP-resolves `address` first, so the node
    learns the address's MAC exactly as a real client would."""
    sock = pyroute2_netns.create_socket(node.name, socket.AF_INET, socket.SOCK_DGRAM, 0, flags=0)
    try:
        sock.sendto(b"wackapy test", (str(address), 9))
    finally:
        sock.close()


def wait_neighbour(node: Node, address: object, mac: str) -> tuple[str, str]:
    def probe() -> tuple[str, str] | None:
        entry = node.neighbour(address)
        return entry if entry is not None and entry[0] == mac else None

    return wait_until(probe, what=f"{node.role}: neighbour {address} at {mac}")


# =============================================================================================
# pure: labels, frames, planner, shared cache


def _info(label: str | None) -> AddressInfo:
    return AddressInfo("x", 1, ipaddress.IPv4Interface("198.18.0.9/24"), label, 0, False)


@pytest.mark.parametrize(
    ("ifname", "existing", "expected"),
    [
        ("eth0", [], "eth0:1"),
        ("eth0", ["eth0"], "eth0:1"),
        ("eth0", ["eth0", "eth0:1", "eth0:3"], "eth0:2"),
        ("eth0", ["eth0:1", "eth0:2"], "eth0:3"),
        ("abcdefghijklm", [], "abcdefghijklm:1"),  # 13 + 2 = 15 bytes: fits
        ("abcdefghijklmn", [], None),  # 14 + 2 = 16: no label fits
        ("abcdefghijklm", [f"abcdefghijklm:{n}" for n in range(1, 10)], None),  # ":10" too long
    ],
)
def test_free_label(ifname: str, existing: list[str], expected: str | None) -> None:
    infos = [_info(label) for label in existing]
    assert _free_label(vip("198.18.0.201/24", ifname), infos) == expected


def test_no_label_for_ipv6() -> None:
    assert _free_label(vip("2001:db8::10/64"), []) is None


def _frame(kind: FrameKind, **kw: object) -> Frame:
    fields: dict[str, object] = {"set_id": "s", "ifname": "eth0"}
    fields.update(kw)
    return Frame(kind=kind, **fields)  # type: ignore[arg-type]


def test_gratuitous_frames_bytes() -> None:
    v = ipaddress.IPv4Address("198.18.0.201")
    request = Ether(build_frame(_frame(FrameKind.GARP_REQUEST, vip=v), MAC_A))
    reply = Ether(build_frame(_frame(FrameKind.GARP_REPLY, vip=v), MAC_A))
    for packet in (request, reply):
        assert len(packet) == 60  # padded like upstream's frames
        assert packet.dst == "ff:ff:ff:ff:ff:ff" and packet.src == "02:00:00:00:0a:0a"
        assert packet[ARP].psrc == packet[ARP].pdst == str(v)
        assert packet[ARP].hwsrc == "02:00:00:00:0a:0a"
    assert request[ARP].op == 1 and request[ARP].hwdst == "00:00:00:00:00:00"
    assert reply[ARP].op == 2 and reply[ARP].hwdst == "02:00:00:00:0a:0a"  # Linux: tha == sha


def test_upstream_notification_bytes() -> None:
    v, t = ipaddress.IPv4Address("198.18.0.201"), ipaddress.IPv4Address("198.18.0.1")
    broadcast = Ether(build_frame(_frame(FrameKind.ARP_REPLY, vip=v, target=t), MAC_A))
    assert (broadcast.dst, broadcast[ARP].op, broadcast[ARP].hwdst) == (
        "ff:ff:ff:ff:ff:ff",
        2,
        "ff:ff:ff:ff:ff:ff",
    )
    assert (broadcast[ARP].psrc, broadcast[ARP].pdst) == (str(v), str(t))
    unicast = Ether(
        build_frame(_frame(FrameKind.ARP_REPLY, vip=v, target=t, target_mac=MAC_B), MAC_A)
    )
    assert unicast.dst == unicast[ARP].hwdst == "02:00:00:00:0b:0b"
    ping = Ether(build_frame(_frame(FrameKind.PING, vip=v, target=t, target_mac=MAC_B), MAC_A))
    assert len(bytes(ping)) == 60 and ping.dst == "02:00:00:00:0b:0b"
    assert (ping[IP].src, ping[IP].dst, ping[IP].id, ping[IP].ttl) == (str(v), str(t), 0xFEFE, 64)
    assert (ping[ICMP].type, ping[ICMP].id, ping[ICMP].seq) == (8, 0xFEFE, 0xFEFE)


def test_unsolicited_na_bytes() -> None:
    v = ipaddress.IPv6Address("2001:db8::10")
    packet = Ether(build_frame(_frame(FrameKind.UNSOLICITED_NA, vip=v), MAC_A))
    assert packet.dst == "33:33:00:00:00:01"
    assert (packet[IPv6].dst, packet[IPv6].hlim) == ("ff02::1", 255)
    na = packet[ICMPv6ND_NA]
    assert (na.R, na.S, na.O, na.tgt) == (0, 0, 1, str(v))
    assert packet[ICMPv6NDOptDstLLAddr].lladdr == "02:00:00:00:0a:0a"


def _kinds(frames: list[Frame]) -> list[tuple[str, str | None, bool]]:
    return [
        (f.kind.value, None if f.target is None else str(f.target), f.target_mac is not None)
        for f in frames
    ]


def test_first_pass_for_the_seed_config() -> None:
    """Router /32 + arp-cache ping: segment frames, then each Notify entry in config order."""
    planner = AnnouncePlanner([block("198.18.0.1/32"), NotifyArpCache(ping=True)])
    cache = [
        ArpEntry("198.18.0.10", MAC_B),
        ArpEntry("198.18.0.9", b"\0" * 6),  # incomplete upstream entry: broadcast only
        ArpEntry("198.18.1.5", MAC_B),  # outside the /24 hint
        ArpEntry("198.18.0.201", MAC_B),  # the VIP itself (its previous owner)
    ]
    planner.announce("s", [vip("198.18.0.201/24")], cache, now=0.0)
    frames = planner.drain_frames()
    assert _kinds(frames) == [
        ("garp-request", None, False),
        ("garp-reply", None, False),
        ("arp-reply", "198.18.0.1", False),
        ("arp-reply", "198.18.0.9", False),
        ("arp-reply", "198.18.0.10", False),
        ("arp-reply", "198.18.0.10", True),
        ("ping", "198.18.0.10", True),
    ]
    assert [f.copies for f in frames] == [ARP_COPIES] * 6 + [1]
    assert planner.next_deadline() is None and planner.pending() == ()


def test_pass_order_is_address_then_notify_entry() -> None:
    """Upstream's loops: each address, then each Notify entry in config order; a second
    arp-cache entry adds no second round (its `ping` still counts)."""
    notify = [NotifyArpCache(), block("198.18.0.1/32"), NotifyArpCache(ping=True)]
    planner = AnnouncePlanner(notify, segment_announce=False)
    addresses = [vip("198.18.0.201/24"), vip("198.18.0.202/24")]
    planner.announce("s", addresses, [ArpEntry("198.18.0.10", MAC_B)], now=0.0)
    frames = planner.drain_frames()
    per_address = [
        ("arp-reply", "198.18.0.10", False),
        ("arp-reply", "198.18.0.10", True),
        ("ping", "198.18.0.10", True),
        ("arp-reply", "198.18.0.1", False),
    ]
    assert _kinds(frames) == per_address * 2
    assert [str(f.vip) for f in frames] == ["198.18.0.201"] * 4 + ["198.18.0.202"] * 4


def test_segment_announce_off_and_ipv6() -> None:
    planner = AnnouncePlanner([block("198.18.0.0/24")], segment_announce=False)
    planner.announce("s", [vip("2001:db8::10/64")], [], now=0.0)
    assert planner.drain_frames() == []  # Notify targets are IPv4 only
    planner = AnnouncePlanner([block("198.18.0.0/24")])
    planner.announce("s", [vip("2001:db8::10/64")], [], now=0.0)
    assert _kinds(planner.drain_frames()) == [("unsolicited-na", None, False)]


@pytest.mark.parametrize(
    ("entry", "address", "expected"),
    [
        (block("198.18.0.0/24", "eth1"), vip("198.18.0.201/24"), []),  # other interface
        (
            block("198.18.0.0/30", None),
            vip("198.18.0.201/24", "eth7"),
            ["198.18.0.1", "198.18.0.2", "198.18.0.3"],
        ),  # any interface; .0 is the hint network's own address
        (block("198.18.9.0/24"), vip("198.18.0.201/24"), []),  # outside the hint
        (block("198.18.1.7/32"), vip("198.18.0.201/24", hint=23), ["198.18.1.7"]),  # n23
        (
            block("198.18.0.200/30"),
            vip("198.18.0.201/24"),
            ["198.18.0.200", "198.18.0.202", "198.18.0.203"],
        ),
        (block("198.18.0.0/16"), vip("198.18.0.201/30", hint=30), ["198.18.0.202"]),
    ],
)
def test_block_targets(entry: NotifyBlock, address: VipAddress, expected: list[str]) -> None:
    planner = AnnouncePlanner([entry], segment_announce=False)
    planner.announce("s", [address], [], now=0.0)
    assert [str(f.target) for f in planner.drain_frames()] == expected


def test_throttled_block_is_paced_one_pass_a_second() -> None:
    planner = AnnouncePlanner([block("198.18.0.0/24", throttle=100)], segment_announce=False)
    planner.announce("s", [vip("198.18.0.201/24")], [], now=10.0)
    per_pass = [len(planner.drain_frames())]
    deadlines = [planner.next_deadline()]
    planner.handle_timer(10.5)  # early: nothing
    assert planner.drain_frames() == []
    while (deadline := planner.next_deadline()) is not None:
        planner.handle_timer(deadline)
        per_pass.append(len(planner.drain_frames()))
        deadlines.append(planner.next_deadline())
    assert per_pass == [100, 100, 53]  # 254 hosts but the VIP
    assert deadlines == [11.0, 12.0, None]


def test_unthrottled_huge_block_is_bounded_per_pass() -> None:
    planner = AnnouncePlanner([block("198.18.0.0/16")], segment_announce=False)
    planner.announce("s", [vip("198.18.0.201/16", hint=16)], [], now=0.0)
    assert len(planner.drain_frames()) == BLOCK_TARGETS_PER_PASS_MAX
    assert planner.next_deadline() == 1.0


def test_every_address_of_a_set_reaches_every_block() -> None:
    """Upstream bug 9: progress was shared, so only the first address reached a block."""
    planner = AnnouncePlanner([block("198.18.0.1/32")], segment_announce=False)
    planner.announce("s", [vip("198.18.0.201/24"), vip("198.18.0.202/24")], [], now=0.0)
    assert [str(f.vip) for f in planner.drain_frames()] == ["198.18.0.201", "198.18.0.202"]


def test_cancel_stops_pending_passes_and_undrained_frames() -> None:
    planner = AnnouncePlanner([block("198.18.0.0/24", throttle=10)])
    planner.announce("a", [vip("198.18.0.201/24")], [], now=0.0)
    planner.announce("b", [vip("198.18.0.202/24")], [], now=0.0)
    assert planner.cancel("a") is True  # frames of "a" still queued: dropped as well
    frames = planner.drain_frames()
    assert frames and {f.set_id for f in frames} == {"b"}
    assert planner.pending() == ("b",)
    for now in (1.0, 2.0, 3.0):
        planner.handle_timer(now)
        assert {f.set_id for f in planner.drain_frames()} == {"b"}
    assert planner.cancel("b") is True
    planner.handle_timer(100.0)
    assert planner.drain_frames() == [] and planner.next_deadline() is None
    assert planner.cancel("b") is False


def test_reannouncing_restarts_without_duplicates() -> None:
    """Upstream bug 8: each acquisition appended the addresses again."""
    planner = AnnouncePlanner([block("198.18.0.1/32")], segment_announce=False)
    for now in (0.0, 5.0, 9.0):
        planner.announce("s", [vip("198.18.0.201/24")], [], now=now)
    assert len(planner.drain_frames()) == 1


@settings(max_examples=60, deadline=None, derandomize=bool(os.environ.get("CI")))
@given(
    prefixlen=st.integers(22, 32),
    throttle=st.integers(0, 300),
    offset=st.integers(0, 1023),
)
def test_passes_cover_the_block_once(prefixlen: int, throttle: int, offset: int) -> None:
    """Whatever the throttle: every host once, at most `throttle` a pass, a pass a second."""
    address = vip(f"{ipaddress.IPv4Address('198.18.0.0') + offset}/22", hint=22)
    network = ipaddress.IPv4Network(f"{address.address}/{prefixlen}", strict=False)
    planner = AnnouncePlanner([block(str(network), throttle=throttle)], segment_announce=False)
    planner.announce("s", [address], [], now=0.0)
    seen: list[str] = []
    now, passes = 0.0, 0
    while True:
        frames = planner.drain_frames()
        assert len(frames) <= (throttle or BLOCK_TARGETS_PER_PASS_MAX)
        seen.extend(str(f.target) for f in frames)
        passes += 1
        deadline = planner.next_deadline()
        if deadline is None:
            break
        assert deadline == now + 1.0
        now = deadline
        planner.handle_timer(now)
    hint = address.hint_network
    expected = [
        str(a)
        for a in network
        if a != address.address and a not in (hint.network_address, hint.broadcast_address)
    ]
    assert seen == expected
    assert passes == max(1, -(-len(expected) // (throttle or BLOCK_TARGETS_PER_PASS_MAX)))


def test_shared_arp_cache_merge() -> None:
    cache = SharedArpCache(max_entries=3)
    cache.merge([ArpEntry("198.18.0.10", MAC_A), ArpEntry("198.18.0.9", b"\0" * 6)])
    cache.merge([ArpEntry("198.18.0.10", MAC_B), ArpEntry("198.18.0.9", MAC_A)])
    cache.merge([ArpEntry("198.18.0.10", b"\0" * 6)])  # zero never replaces a known MAC
    cache.merge([ArpEntry("198.18.0.200", MAC_A), ArpEntry("198.18.0.201", MAC_A)])
    assert cache.snapshot() == (
        ArpEntry("198.18.0.9", MAC_A),  # numeric order, not text order
        ArpEntry("198.18.0.10", MAC_B),
        ArpEntry("198.18.0.200", MAC_A),
    )
    assert cache.counters["dropped_full"] == 1


# =============================================================================================
# hooks (subprocesses; no namespaces)

RECORD = "import json, sys; open(sys.argv[1], 'a').write(json.dumps(sys.argv[2:]) + '\\n')"


def _records(path: Path) -> list[list[str]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_hooks_get_documented_arguments(tmp_path: Path) -> None:
    log = tmp_path / "calls"
    record = (sys.executable, "-c", RECORD, str(log))
    hooks = [
        CommandHook(HookEvent.ON_UP, (*record, "up", "--tag", "web")),
        CommandHook(HookEvent.POST_UP, (*record, "post-up")),
        CommandHook(HookEvent.ON_DOWN, (*record, "down")),
    ]
    runner = HookRunner(hooks)
    addresses = [vip("198.18.0.201/24"), vip("2001:db8::10/64", "eth1")]
    results = asyncio.run(runner.run(HookEvent.ON_UP, addresses))
    assert [r.ok for r in results] == [True, True]
    asyncio.run(runner.run(HookEvent.POST_UP, addresses))
    assert asyncio.run(runner.run(HookEvent.POST_DOWN)) == []  # no hook for this event
    assert _records(log) == [
        ["up", "--tag", "web", "198.18.0.201/24", "eth0"],
        ["up", "--tag", "web", "2001:db8::10/64", "eth1"],
        ["post-up"],
    ]
    assert runner.counters == {"runs": 3}


def test_failing_hooks_are_counted_and_do_not_stop_the_next(tmp_path: Path) -> None:
    log = tmp_path / "calls"
    hooks = [
        CommandHook(HookEvent.POST_DOWN, ("sh", "-c", "echo broken >&2; exit 3")),
        CommandHook(HookEvent.POST_DOWN, (str(tmp_path / "no-such-program"),)),
        CommandHook(HookEvent.POST_DOWN, (sys.executable, "-c", RECORD, str(log), "after")),
    ]
    runner = HookRunner(hooks)
    results = asyncio.run(runner.run(HookEvent.POST_DOWN))
    assert [r.returncode for r in results] == [3, None, 0]
    assert results[0].output.strip() == "broken"
    assert results[1].error is not None
    assert _records(log) == [["after"]]
    assert runner.counters["failures"] == 2 and runner.counters["start_errors"] == 1


def test_hook_timeout_kills_the_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    script = f"sleep 30 & echo $! > {pidfile}; wait"
    result = asyncio.run(run_command(("sh", "-c", script), timeout_s=0.3))
    assert result.timed_out and result.returncode is None and not result.ok
    grandchild = int(pidfile.read_text())
    status = Path(f"/proc/{grandchild}/status")
    state = status.read_text().split("State:")[1].split()[0] if status.exists() else "gone"
    assert state in ("gone", "Z")  # killed with its parent's group (a zombie until reaped)


def test_fired_hooks_run_in_order(tmp_path: Path) -> None:
    log = tmp_path / "calls"
    record = (sys.executable, "-c", RECORD, str(log))
    hooks = [
        CommandHook(HookEvent.ON_UP, (*record, "up")),
        CommandHook(HookEvent.ON_DOWN, (*record, "down")),
    ]

    async def scenario() -> None:
        runner = HookRunner(hooks)
        runner.fire(HookEvent.ON_UP, [vip("198.18.0.201/24")])
        runner.fire(HookEvent.ON_DOWN, [vip("198.18.0.201/24")])
        runner.fire(HookEvent.POST_UP)  # no such hook: nothing queued
        await runner.drain()
        await runner.close()

    asyncio.run(scenario())
    assert [r[0] for r in _records(log)] == ["up", "down"]


def test_health_check() -> None:
    async def check(argv: tuple[str, ...], interval_s: float = 5.0) -> bool:
        return await HealthChecker(HealthCheck(argv, interval_s)).check()

    assert asyncio.run(check(("true",))) is True
    assert asyncio.run(check(("false",))) is False
    assert asyncio.run(check(("sleep", "30"), interval_s=0.2)) is False  # longer than interval


def test_health_check_loop_reports_each_result(tmp_path: Path) -> None:
    flag = tmp_path / "healthy"
    checker = HealthChecker(HealthCheck(("test", "-e", str(flag)), 0.01))
    reports: list[bool] = []

    async def scenario() -> None:
        done = asyncio.get_running_loop().create_future()

        def report(healthy: bool) -> None:
            reports.append(healthy)
            if len(reports) == 2:
                flag.touch()
            if healthy and not done.done():
                done.set_result(None)

        task = asyncio.create_task(checker.run(report))
        await asyncio.wait_for(done, 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert reports[:2] == [False, False] and reports[-1] is True
    assert checker.counters["failures"] == len(reports) - 1


# =============================================================================================
# namespaces: addresses


@needs_netns
def test_testbed_removes_everything_even_on_failure() -> None:
    with pytest.raises(RuntimeError, match="boom"), Testbed(hosts=1) as bed:
        names = bed.namespaces
        assert len(names) == 3 and all((nsbed.NETNS_DIR / n).exists() for n in names)
        raise RuntimeError("boom")
    assert not any((nsbed.NETNS_DIR / n).exists() for n in names)


@needs_netns
def test_stale_namespaces_of_dead_runs_are_removed() -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    name = f"{nsbed.NAME_PREFIX}{dead.pid}-abcdef-h1"
    nsbed.run(["ip", "netns", "add", name])
    try:
        assert name in nsbed.cleanup_stale()
        assert not (nsbed.NETNS_DIR / name).exists()
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def _ip_text_line(node: Node, address: object) -> str:
    lines = [ln for ln in node.addresses_text().splitlines() if f" {address}/" in ln]
    assert len(lines) == 1, node.addresses_text()
    return lines[0]


@needs_netns
def test_acquire_adds_labelled_address_with_true_prefix() -> None:
    with Testbed(hosts=1, client=False) as bed, AddressManager(bed.hosts[0].name) as manager:
        host = bed.hosts[0]
        first, second = vip(str(bed.vip(1))), vip(str(bed.vip(2, prefixlen=26)))
        assert manager.acquire(first) is True
        assert manager.acquire(second) is True
        assert manager.acquire(first) is False  # idempotent
        by_address = {a.address: a for a in manager.addresses("eth0")}
        assert str(by_address[first.address].interface) == "198.18.0.201/24"
        assert by_address[first.address].label == "eth0:1"
        assert str(by_address[second.address].interface) == "198.18.0.202/26"
        assert by_address[second.address].label == "eth0:2"
        assert by_address[first.address].proto == WACKAPY_IFA_PROTO
        assert re.search(
            r"inet 198\.18\.0\.201/24 brd 198\.18\.0\.255 .*secondary eth0:1\\",
            _ip_text_line(host, first.address),
        )
        assert re.search(
            r"inet 198\.18\.0\.202/26 brd 198\.18\.0\.255 .* eth0:2\\",
            _ip_text_line(host, second.address),
        )
        assert manager.owned() == (first, second)
        assert manager.present(first) and manager.present(second)
        assert manager.mac("eth0").hex(":") == host.mac
        assert manager.ifindex("eth0") == int(host.run("cat /sys/class/net/eth0/ifindex"))


@needs_netns
def test_ipv6_address_without_dad() -> None:
    with Testbed(hosts=1, client=False) as bed, AddressManager(bed.hosts[0].name) as manager:
        v6 = vip("2001:db8::10/64")
        assert manager.acquire(v6) is True
        assert re.search(r"inet6 2001:db8::10/64 scope global nodad", bed.hosts[0].addresses_text())
        assert manager.release(v6) is True
        assert "2001:db8::10" not in bed.hosts[0].addresses_text()


@needs_netns
def test_release_removes_only_ours() -> None:
    with Testbed(hosts=1, client=False) as bed, AddressManager(bed.hosts[0].name) as manager:
        host = bed.hosts[0]
        ours, foreign = vip(str(bed.vip(1))), vip(str(bed.vip(3)))
        host.run(["ip", "addr", "add", str(foreign.interface), "dev", "eth0"])
        assert manager.acquire(ours) is True
        assert manager.acquire(foreign) is False  # already there: counts as up, not ours
        assert manager.owned() == (ours,)
        assert manager.release(foreign) is False
        assert manager.present(foreign)
        assert manager.release(ours) is True
        assert not manager.present(ours) and manager.release(ours) is False
        text = host.addresses_text()
        assert f" {ours.address}/" not in text
        assert " 198.18.0.1/24 " in text and f" {foreign.address}/24 " in text
        assert manager.owned() == ()
        assert manager.release(foreign, force=True) is True  # start-up clean-up of a VIP
        assert f" {foreign.address}/" not in host.addresses_text()


@needs_netns
def test_leftover_of_an_earlier_run_is_adopted_and_released() -> None:
    with Testbed(hosts=1, client=False) as bed:
        name, address = bed.hosts[0].name, vip(str(bed.vip(1)))
        with AddressManager(name) as crashed:
            crashed.acquire(address)  # closed without releasing: the address stays
        with AddressManager(name) as manager:
            assert manager.present(address) and manager.owned() == ()
            assert manager.release(address) is True  # marked with our IFA_PROTO
        with AddressManager(name) as manager:
            manager.acquire(address)
        with AddressManager(name) as manager:
            assert manager.acquire(address) is False
            assert manager.owned() == (address,)  # adopted
            assert manager.release_all() == (address,)


@needs_netns
def test_present_rechecks_and_reup_restores_lost_secondaries() -> None:
    """With promote_secondaries=0 the kernel drops the secondaries of a removed primary."""
    with Testbed(hosts=1, client=False) as bed, AddressManager(bed.hosts[0].name) as manager:
        host = bed.hosts[0]
        host.sysctl("net.ipv4.conf.eth0.promote_secondaries=0")
        primary, secondary = vip("198.18.1.10/24"), vip("198.18.1.11/24")
        manager.acquire(primary)
        manager.acquire(secondary)
        assert manager.present(secondary)
        assert manager.release(primary) is True
        assert not manager.present(secondary)  # gone with its primary
        assert manager.reup() == (secondary,)
        assert manager.present(secondary) and manager.reup() == ()
        host.run(["ip", "addr", "del", str(secondary.interface), "dev", "eth0"])
        assert not manager.present(secondary)
        assert manager.reup() == (secondary,)
        assert manager.label_of(secondary) == "eth0:2"  # its label again
        assert " eth0:2\\" in _ip_text_line(host, secondary.address)


@needs_netns
def test_long_interface_names_get_no_label() -> None:
    with Testbed(hosts=1, client=False) as bed, AddressManager(bed.hosts[0].name) as manager:
        host = bed.hosts[0]
        for name in ("abcdefghijklm", "abcdefghijklmn"):
            host.run(["ip", "link", "add", name, "type", "veth", "peer", "name", f"p{len(name)}"])
        fits = vip("198.18.2.1/24", "abcdefghijklm")
        too_long = vip("198.18.3.1/24", "abcdefghijklmn")
        manager.acquire(fits)
        manager.acquire(too_long)
        assert manager.label_of(fits) == "abcdefghijklm:1"
        assert manager.label_of(too_long) is None
        text = host.run(["ip", "-o", "addr", "show"])
        assert re.search(r"inet 198\.18\.2\.1/24 .* abcdefghijklm:1\\", text)
        assert re.search(r"inet 198\.18\.3\.1/24 .* abcdefghijklmn\\", text)


@needs_netns
def test_clear_errors() -> None:
    with pytest.raises(NamespaceNotFound, match="wkt-no-such-namespace"):
        AddressManager("wkt-no-such-namespace")
    with Testbed(hosts=1, client=False) as bed, AddressManager(bed.hosts[0].name) as manager:
        with pytest.raises(InterfaceNotFound, match="'eth9'"):
            manager.acquire(vip("198.18.0.201/24", "eth9"))
        assert manager.release(vip("198.18.0.201/24", "eth9")) is False
        with FrameSender(bed.hosts[0].name) as sender, pytest.raises(InterfaceNotFound):
            sender.mac("eth9")


# =============================================================================================
# namespaces: announcements on the wire


@needs_netns
def test_gratuitous_arp_moves_the_client_between_hosts() -> None:
    with Testbed(hosts=2) as bed:
        a, b = bed.hosts
        client = bed.client
        assert client is not None
        # default: the kernel only updates entries it has; the client learns the VIP first
        assert client.read_sysctl("net.ipv4.conf.eth0.arp_accept") == "0"
        address = vip(str(bed.vip(1)))
        notify = [block(f"{client.address}/32")]
        with AddressManager(a.name) as on_a, AddressManager(b.name) as on_b:
            on_a.acquire(address)
            udp_poke(client, address.address)
            wait_neighbour(client, address.address, a.mac)
            # failover: A lets go, B takes over and announces; the entry is seconds old, so
            # only the gratuitous frames (target IP = VIP) may override it within locktime
            on_a.release(address)
            on_b.acquire(address)
            assert announce([address], notify, netns=b.name) > 0
            wait_neighbour(client, address.address, b.mac)
            on_b.release(address)
            on_a.acquire(address)
            announce([address], notify, netns=a.name)
            wait_neighbour(client, address.address, a.mac)


@needs_netns
def test_upstream_notification_alone_updates_after_locktime() -> None:
    """Upstream's reply to the notified host (target IP = the client) overrides an entry
    older than locktime; locktime=0 on the client makes that immediate for the test."""
    with Testbed(hosts=1) as bed:
        a, client = bed.hosts[0], bed.client
        assert client is not None
        client.sysctl("net.ipv4.neigh.eth0.locktime=0")
        address = vip(str(bed.vip(1)))
        client.add_neighbour(address.address, BOGUS_MAC)
        written = announce(
            [address], [block(f"{client.address}/32")], netns=a.name, segment_announce=False
        )
        assert written == ARP_COPIES  # one broadcast reply, twice
        wait_neighbour(client, address.address, a.mac)


@needs_netns
def test_arp_accept_lets_an_announcement_create_the_entry() -> None:
    with Testbed(hosts=1) as bed:
        a, client = bed.hosts[0], bed.client
        assert client is not None
        client.sysctl("net.ipv4.conf.eth0.arp_accept=1")
        address = vip(str(bed.vip(2)))
        assert client.neighbour(address.address) is None
        announce([address], [], netns=a.name)  # segment frames only
        wait_neighbour(client, address.address, a.mac)


@needs_netns
def test_unsolicited_na_moves_an_ipv6_entry() -> None:
    with Testbed(hosts=2) as bed:
        a, b = bed.hosts
        client = bed.client
        assert client is not None
        address = vip("2001:db8::10/64")
        client.add_neighbour(address.address, BOGUS_MAC)
        for node in (a, b):
            with AddressManager(node.name) as manager:
                manager.acquire(address)
                announce([address], [], netns=node.name)
                wait_neighbour(client, address.address, node.mac)
                manager.release(address)


@needs_netns
def test_announcer_runs_paced_passes_on_the_loop() -> None:
    """Throttle 4 over .96/29: the client (.100) is told only by the second, timer-driven pass."""
    with Testbed(hosts=1) as bed:
        a, client = bed.hosts[0], bed.client
        assert client is not None
        client.sysctl("net.ipv4.neigh.eth0.locktime=0")
        address = vip(str(bed.vip(1)))
        client.add_neighbour(address.address, BOGUS_MAC)
        planner = AnnouncePlanner(
            [block("198.18.0.96/29", throttle=4)], segment_announce=False, pass_interval_s=0.05
        )

        sent: list[Frame] = []

        class Recording(FrameSender):
            def send(self, frames: Iterable[Frame]) -> int:
                batch = list(frames)
                sent.extend(batch)
                written = super().send(batch)
                if not planner.pending():
                    finished.set()
                return written

        async def scenario() -> None:
            announcer = Announcer(planner, Recording(a.name), asyncio.get_running_loop())
            try:
                announcer.announce("s", [address], [])
                assert planner.pending() == ("s",)  # the second pass waits for the timer
                await asyncio.wait_for(finished.wait(), 5)
            finally:
                announcer.close()

        finished = asyncio.Event()
        asyncio.run(scenario())
        assert [str(f.target) for f in sent] == [f"198.18.0.{n}" for n in range(96, 104)]
        assert planner.counters["passes"] == 2
        wait_neighbour(client, address.address, a.mac)


@needs_netns
def test_read_arp_cache_returns_learned_entries() -> None:
    with Testbed(hosts=2) as bed:
        client = bed.client
        assert client is not None
        for host in bed.hosts:
            udp_poke(client, host.address)
            wait_neighbour(client, host.address, host.mac)
        client.add_neighbour("198.18.0.50", "02:00:00:00:00:50", "permanent")
        client.add_neighbour("198.18.0.51", "02:00:00:00:00:51", "noarp")  # not a neighbour
        entries = read_arp_cache(client.name)
        assert entries == (
            ArpEntry(str(bed.hosts[0].address), bed.hosts[0].mac_bytes),
            ArpEntry(str(bed.hosts[1].address), bed.hosts[1].mac_bytes),
            ArpEntry("198.18.0.50", bytes.fromhex("020000000050")),
        )
        with AddressManager(client.name) as manager:
            assert read_arp_cache(manager=manager) == entries

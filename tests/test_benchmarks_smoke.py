"""The benchmark harness and the soak: their checker and parsers on made-up input, and a tiny
real run of the harness on loopback daemons (127.0.0.1-3 only, whoever runs the tests).

The soak itself runs for tens of seconds, so it is not part of this file's default run:
`make soak-ci` runs it for 60 s. Set BENCH_SOAK_S=20 to run a short one here as well.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import math
import os
import random
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from benchmarks import harness, soak, testbed
from spreadpy.config import PortReuse, parse_config

REPO = Path(__file__).resolve().parents[1]

# ------------------------------------------------------------------------- journal builders

A, B, C = "#ai0#h1", "#bi0#h2", "#ci0#h3"
Record = dict[str, Any]  # Any: JSON values


def inc(pg: str) -> Record:
    return {"k": "inc", "n": 0, "pg": pg, "t": 0.0}


def reg(view: str, *members: str) -> Record:
    return {"k": "reg", "g": view, "m": list(members), "c": "NETWORK", "t": 0.0}


def tr() -> Record:
    return {"k": "tr", "t": 0.0}


def d(ident: str, svc: str = "A") -> Record:
    return {"k": "d", "i": ident, "s": svc}


def s(ident: str, svc: str = "A") -> Record:
    return {"k": "s", "i": ident, "s": svc}


def end(why: str = "stop") -> Record:
    return {"k": "end", "why": why, "t": 0.0}


def clean() -> dict[str, list[Record]]:
    """Three clients: one view, a network change to a view of all three again, a clean stop."""
    return {
        "a": [
            inc(A),
            reg("1", A, B, C),
            s("a:1"),
            s("a:2", "S"),
            d("a:1"),
            d("b:1"),
            d("a:2", "S"),
            tr(),
            d("c:1"),
            reg("2", A, B, C),
            d("b:2"),
            end(),
        ],
        "b": [
            inc(B),
            reg("1", A, B, C),
            s("b:1"),
            s("b:2"),
            d("a:1"),
            d("b:1"),
            d("a:2", "S"),
            tr(),
            d("c:1"),
            reg("2", A, B, C),
            d("b:2"),
            end(),
        ],
        "c": [
            inc(C),
            reg("1", A, B, C),
            s("c:1"),
            d("a:1"),
            d("b:1"),
            d("a:2", "S"),
            d("c:1"),
            tr(),
            reg("2", A, B, C),
            d("b:2"),
            end(),
        ],
    }


def run_check(journals: dict[str, list[Record]]) -> soak.CheckReport:
    incarnations = []
    for client, records in journals.items():
        incarnations += soak.parse_journal(client, [json.dumps(r) for r in records])
    return soak.check(incarnations)


Mutation = Callable[[dict[str, list[Record]]], None]


def _replace(client: str, old: Record, *new: Record) -> Mutation:
    def mutate(j: dict[str, list[Record]]) -> None:
        i = j[client].index(old)
        j[client][i : i + 1] = list(new)

    return mutate


def _crash_c_in_view_1(j: dict[str, list[Record]]) -> None:
    """c's daemon dies after two deliveries: c owes nothing after that."""
    j["c"] = [*j["c"][:5], end("closed")]


def _c_partitioned_alone(j: dict[str, list[Record]]) -> None:
    """c is cut off: it moves on to a view of its own without the transitional messages."""
    j["c"] = [*j["c"][:6], tr(), reg("2c", C), end()]
    j["c"][2:3] = []  # it never sent c:1...
    for client in ("a", "b"):
        j[client].remove(d("c:1"))
        j[client][j[client].index(reg("2", A, B, C))] = reg("2", A, B)


def _deliver_c1_late_at_c(j: dict[str, list[Record]]) -> None:
    """c gets its own c:1 only in view 2."""
    j["c"].remove(d("c:1"))
    j["c"].insert(j["c"].index(reg("2", A, B, C)) + 1, d("c:1"))


CASES: list[tuple[str, Mutation | None, str | None]] = [
    ("clean history", None, None),
    ("crashed member owes nothing", _crash_c_in_view_1, None),
    ("partition into two views", _c_partitioned_alone, None),
    ("duplicate delivery", _replace("b", d("b:2"), d("b:2"), d("b:2")), "duplicate"),
    ("message nobody sent", _replace("a", d("b:2"), d("b:2"), d("x:9")), "unknown"),
    ("service differs from the send", _replace("a", d("b:1"), d("b:1", "S")), "unknown"),
    ("swapped order", _replace("b", d("a:1"), d("b:1"), d("a:1")), "order"),
    ("one member misses a message", _replace("b", d("c:1")), "virtual synchrony"),
    (
        "same view id, other members",
        _replace("c", reg("2", A, B, C), reg("2", A, C)),
        "view members",
    ),
    ("delivered in two views", _deliver_c1_late_at_c, "configuration"),
    ("own message never back", _replace("b", d("b:2")), "self delivery"),
    ("a SAFE message skipped", _replace("c", d("a:2", "S")), "safe"),
]


@pytest.mark.parametrize(
    ("mutate", "expected"), [(m, e) for _, m, e in CASES], ids=[c[0] for c in CASES]
)
def test_checker_finds_the_planted_violation(mutate: Mutation | None, expected: str | None) -> None:
    journals = clean()
    if mutate is not None:
        mutate(journals)
    report = run_check(journals)
    kinds = {v.split(":")[0] for v in report.violations}
    if expected is None:
        assert report.violations == ()
    else:
        assert expected in kinds, report.violations


def test_checker_counts() -> None:
    report = run_check(clean())
    assert (report.incarnations, report.sent, report.unique_delivered, report.views) == (3, 5, 5, 2)
    assert report.delivered == 15
    assert report.compared == 3  # a-b, a-c, b-c all moved from view 1 to view 2
    assert report.undelivered == 0


def test_torn_journal_line_ends_the_journal() -> None:
    lines = [json.dumps(r) for r in clean()["a"][:5]] + ['{"k": "d", "i": "a:']
    (incarnation,) = soak.parse_journal("a", lines)
    assert incarnation.end == "eof"
    assert incarnation.segments[0].regular == ["a:1/A"]


def test_journal_from_a_real_client_round_trips(tmp_path: Path) -> None:
    journal = soak.Journal(tmp_path / "j.jsonl")
    for record in clean()["a"]:
        journal.log(**record)
    journal.close()
    (incarnation,) = soak.parse_journal("a", (tmp_path / "j.jsonl").read_text().splitlines())
    assert [seg.view for seg in incarnation.segments] == ["1", "2"]
    assert incarnation.segments[0].transitional == ["c:1/A"]
    assert incarnation.segments[0].next_view == "2"
    assert incarnation.end == "stop"


# ---------------------------------------------------------------------------- fault schedule


@pytest.mark.parametrize("duration", [20.0, 60.0, 600.0])
def test_schedule_is_bounded_seeded_and_stops_before_the_end(duration: float) -> None:
    hosts = ("h1", "h2", "h3")
    kw = {"kill_every_s": 20.0, "cut_every_s": 40.0, "settle_s": 5.0}
    faults = soak.schedule(duration, hosts, random.Random(5), **kw)
    assert faults == soak.schedule(duration, hosts, random.Random(5), **kw)
    assert [f.at_s for f in faults] == sorted(f.at_s for f in faults)
    assert all(f.at_s + f.length_s <= duration - 5.0 for f in faults)
    assert all(f.host in hosts and f.kind in ("kill", "cut") for f in faults)
    kills = sum(f.kind == "kill" for f in faults)
    assert kills == len([t for t in range(10, int(duration), 20) if t + 3 <= duration - 5])
    if duration >= 60:
        assert any(f.kind == "cut" for f in faults)


def test_schedule_without_cuts() -> None:
    faults = soak.schedule(
        60, ("h1",), random.Random(1), kill_every_s=20, cut_every_s=None, settle_s=5
    )
    assert {f.kind for f in faults} == {"kill"}


# ------------------------------------------------------------------------ harness helpers


def test_percentile_is_nearest_rank() -> None:
    values = [float(i) for i in range(1, 101)]
    assert harness.percentile(values, 0.50) == 50.0
    assert harness.percentile(values, 0.99) == 99.0
    assert harness.percentile([7.0], 0.99) == 7.0


def test_median_row_keeps_every_run() -> None:
    runs = [{"msgs_per_s": v, "n": i} for i, v in enumerate((30.0, 10.0, 20.0))]
    row = harness.median_row(runs)
    assert row["n"] == 2
    assert row["runs_msgs_per_s"] == [30.0, 10.0, 20.0]


def test_profile_summary_from_raw_stacks() -> None:
    stack = "<module> (spreadpy/__main__.py:5);run (spreadpy/daemon.py:630)"
    raw = "\n".join(
        [
            f"{stack};_drain (spreadpy/daemon.py:210) 6",
            f"{stack};_drain (spreadpy/daemon.py:212) 2",
            "<module> (spreadpy/__main__.py:5);run (spreadpy/daemon.py:631) 2",
            "not a sample line",
        ]
    )
    summary = harness.summarise_profile(raw)
    assert summary["samples"] == 10
    top = summary["top_self"][0]
    assert top["frame"] == "_drain (spreadpy/daemon.py)"
    assert math.isclose(top["self_pct"], 80.0)
    totals = {e["frame"]: e["total_pct"] for e in summary["top_total"]}
    assert math.isclose(totals["run (spreadpy/daemon.py)"], 100.0)


def test_quick_plan_and_only() -> None:
    args = harness.build_parser().parse_args(["--quick", "--only", "latency", "--peer", ""])
    plan = harness.plan_from_args(args)
    assert plan.quick and plan.parts == ("latency",) and plan.peer is None
    with pytest.raises(SystemExit):
        harness.plan_from_args(harness.build_parser().parse_args(["--only", "speed"]))


def _plan(*argv: str) -> harness.Plan:
    return harness.plan_from_args(harness.build_parser().parse_args([*argv, "--peer", ""]))


def test_mtu_and_jumbo_choose_the_beds() -> None:
    assert _plan().beds() == [(1500, harness.PARTS)]
    assert _plan("--mtu", "9000").beds() == [(9000, harness.PARTS)]
    assert _plan("--jumbo").beds() == [(1500, harness.PARTS), (9000, ("throughput",))]
    jumbo_latency = _plan("--jumbo", "--only", "latency")
    assert jumbo_latency.beds() == [(1500, ("latency",))]  # nothing to measure at 9000
    plan = _plan("--quick", "--sizes", "1000,10000", "--mtu", "4000")
    assert (plan.sizes, plan.mtu, plan.jumbo) == ((1000, 10000), 4000, False)


@pytest.mark.parametrize(
    "argv",
    [
        ["--mtu", "100"],
        ["--mtu", "70000"],
        ["--jumbo", "--mtu", "9000"],
        ["--sizes", "999"],
        ["--sizes", "big"],
    ],
)
def test_bad_bed_arguments_are_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        _plan(*argv)


@pytest.mark.parametrize(
    ("mtu", "expected"), [(1500, None), (9000, 8972), (4000, 3972), (576, 548)]
)
def test_ring_packet_size_fills_the_mtu(mtu: int, expected: int | None) -> None:
    assert testbed.ring_packet_size(mtu) == expected


def _hosts() -> tuple[testbed.Host, ...]:
    return tuple(
        testbed.Host(name=f"h{i}", address=f"198.18.0.{i}", netns=f"ns{i}", bridge_port=None)
        for i in (1, 2, 3)
    )


@contextlib.contextmanager
def _ring(mtu: int | None, config: testbed.RingConfig) -> Iterator[testbed.Ring]:
    """A Ring on a bed that was never built: configuration only, nothing is started."""
    kind = "loopback" if mtu is None else "netns"
    bed = testbed.Bed(kind, _hosts(), None, "198.18.0.255", mtu=mtu)
    ring = testbed.Ring(bed, config)
    try:
        yield ring
    finally:
        ring.close()


@pytest.mark.parametrize(("mtu", "expected"), [(9000, 8972), (1500, None), (None, None)])
def test_spreadpy_config_carries_the_beds_packet_size(mtu: int | None, expected: int) -> None:
    with _ring(mtu, testbed.RingConfig(fast=True)) as ring:
        text = ring.config_text("h1")
        parsed = parse_config(text, "h1.conf")
    assert parsed.ring_packet_size == expected
    assert ("RingPacketSize" in text) == (expected is not None)
    assert [h.name for h in parsed.hosts] == ["h1", "h2", "h3"]


def _fake_install(root: Path, *programs: str) -> Path:
    for program in programs:
        path = root / program
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\nexit 0\n")
        path.chmod(0o755)
    return root


def test_find_peer_reads_the_install_layout(tmp_path: Path) -> None:
    prefix = _fake_install(tmp_path / "p", "sbin/spread", "bin/spflooder")
    found = testbed.find_peer(prefix)
    assert found.daemon == prefix / "sbin" / "spread"
    assert found.flooder == prefix / "bin" / "spflooder"
    assert found.ping is None  # make install leaves examples/spping out


def test_find_peer_explains_a_build_tree(tmp_path: Path) -> None:
    tree = _fake_install(tmp_path / "spread-src", "daemon/spread")
    with pytest.raises(testbed.BedError, match=r"build tree.*make -C .* install prefix="):
        testbed.find_peer(tree)
    with pytest.raises(testbed.BedError, match="does not exist"):
        testbed.find_peer(tmp_path / "nowhere")


def test_peer_identity_refuses_root_and_strangers() -> None:
    with pytest.raises(testbed.BedError, match="unprivileged"):
        testbed.peer_identity("root")
    with pytest.raises(testbed.BedError, match="does not exist"):
        testbed.peer_identity("no-such-user-for-spread-bench")


def test_peer_runs_unprivileged_in_a_private_tmp(tmp_path: Path) -> None:
    prefix = _fake_install(tmp_path / "p", "sbin/spread")
    user = "nobody" if os.geteuid() == 0 else getpass.getuser()  # chown needs root otherwise
    uid, gid = testbed.peer_identity(user)
    with _ring(9000, testbed.RingConfig(peer=prefix, peer_user=user)) as ring:
        argv = ring.argv("h2")
        run_dir = ring.run_dir("h2")
        conf = (run_dir / "spread.conf").read_text()
        copied = (run_dir / "spread").read_bytes()
        owner = (run_dir.stat().st_uid, run_dir.stat().st_gid)
        assert ring.client_transport == "tcp"
        assert ring.client_address("h2") == "4803@198.18.0.2"
        assert ring.packet_size == testbed.PEER_PACKET_SIZE
    assert argv[:4] == ["unshare", "--mount", "--propagation", "private"]
    assert argv[4:6] == ["sh", "-c"] and 'mount --bind "$1" /tmp' in argv[6]
    assert argv[7:9] == ["sh", str(run_dir)]  # $0, $1: the run directory goes on /tmp
    setpriv = argv[argv.index("setpriv") :]
    assert setpriv[1:4] == [f"--reuid={uid}", f"--regid={gid}", "--clear-groups"]
    assert setpriv[5:] == ["/tmp/spread", "-n", "h2", "-c", "/tmp/spread.conf"]
    assert copied == (prefix / "sbin" / "spread").read_bytes()
    assert owner == (uid, gid)
    parsed = parse_config(conf, "spread.conf")  # the original's keywords only
    assert parsed.ring_packet_size is None and parsed.client_socket_path is None
    assert parsed.socket_port_reuse is PortReuse.ON
    assert parsed.configured_timeouts is not None
    assert "DaemonUser" not in conf and "RuntimeDir" not in conf
    # The same flow control as spreadpy's ring, whose defaults differ from the original's.
    with _ring(9000, testbed.RingConfig()) as ours:
        own = parse_config(ours.config_text("h2"), "h2.conf")
    assert (parsed.window, parsed.personal_window) == (own.window, own.personal_window)
    assert "PersonalWindow" in conf


def test_peer_needs_the_netns_bed(tmp_path: Path) -> None:
    prefix = _fake_install(tmp_path / "p", "sbin/spread")
    bed = testbed.Bed("loopback", _hosts(), None, "127.0.0.255")
    with pytest.raises(testbed.BedError, match="netns"):
        testbed.Ring(bed, testbed.RingConfig(peer=prefix))


def test_ring_keys_carry_a_non_default_mtu() -> None:
    assert harness.ring_key(False, 1500) == "original"
    assert harness.ring_key(True, None) == "accelerated"
    assert harness.ring_key(False, 9000) == "original mtu9000"
    assert harness.describe_ring("accelerated mtu9000") == "accelerated ring, MTU 9000"
    assert harness.describe_ring("original") == "original ring"


def _flood(size: int, rate: float, cpu: float | None = None) -> dict[str, Any]:
    row: dict[str, Any] = {"size": size, "service": "agreed", "senders": 1, "msgs_per_s": rate}
    if cpu is not None:
        row["daemon_cpu_us_per_msg"] = {"h1": cpu, "h2": cpu}
    return row


def test_compare_pairs_every_common_figure() -> None:
    ours = {
        "throughput": {
            "original": [_flood(1000, 300.0, 40.0)],
            "original mtu9000": [_flood(100, 9.0)],
        },
        "spflooder": {"original": [{"size": 1000, "msgs_per_s": 50.0}]},
        "latency": {"original": {"service": "agreed", "p50_ms": 0.9}},
        "spping": {"original": {"service": "reliable", "p50_ms": 0.5}},
        "failover": {"fast": {"median_s": 0.4}},
    }
    peer = {
        "throughput": {
            "original": [_flood(1000, 100.0, 10.0)],
            "original mtu9000": [_flood(100, 3.0)],
        },
        "spflooder": {"original": [{"size": 1000, "msgs_per_s": 200.0}]},
        "latency": {"original": {"service": "agreed", "p50_ms": 0.3}},
        "spping": {"original": {"service": "reliable", "p50_ms": 0.25}},
        "failover": {"fast": {"median_s": 0.8}, "default": {"median_s": 2.5}},
    }
    rows = {r["what"]: r for r in harness.compare(ours, peer)}
    assert {w: r["ratio"] for w, r in rows.items()} == pytest.approx(
        {
            "throughput original 1000 B agreed x1": 3.0,
            "daemon CPU original 1000 B agreed x1": 4.0,
            "throughput original mtu9000 100 B agreed x1": 3.0,
            "spflooder (C) original 1000 B": 0.25,
            "latency original agreed p50": 3.0,
            "spping (C) original reliable p50": 2.0,
            "failover fast median": 0.5,
        }
    )
    assert (
        rows["spflooder (C) original 1000 B"]["ours"],
        rows["spflooder (C) original 1000 B"]["peer"],
    ) == (50.0, 200.0)


def test_notes_say_the_peer_keeps_its_packet_size() -> None:
    plan = _plan("--jumbo")
    ours = harness.System(name=harness.OURS, peer=None, client_transport="tcp", tools=None)
    theirs = harness.System(name=harness.PEER, peer=Path("/p"), client_transport="tcp", tools=None)
    notes = harness.bed_notes(plan, [ours, theirs])
    assert any("TCP" in n for n in notes)
    assert any("PersonalWindow = 60" in n and "default is 20" in n for n in notes)
    (mtu_note,) = [n for n in notes if n.startswith("MTU 9000")]
    assert "RingPacketSize = 8972" in mtu_note and "1472-byte" in mtu_note
    assert harness.bed_notes(_plan(), [ours]) == []


def test_render_shows_both_figures_and_the_ratio() -> None:
    report = {
        "machine": {
            "cpu": "x",
            "cores": 2,
            "kernel": "k",
            "python": "3.11",
            "commit": "c" * 40,
            "dirty": False,
        },
        "parameters": {"quick": True, "repeat": 1},
        "bed": "netns",
        "beds": [
            {
                "kind": "netns",
                "mtu": 9000,
                "parts": ["throughput"],
                "ring_packet_size": {"spreadpy": 8972},
            }
        ],
        "notes": ["MTU 9000: a note"],
        "systems": {"spreadpy": {}, "spread-5.0.1": {}},
        "comparison": [
            {
                "what": "spflooder (C) original 1000 B",
                "unit": "msgs/s",
                "ours": 12906.4,
                "peer": 14310.0,
                "ratio": 0.9019,
            }
        ],
    }
    text = harness.render(report)
    assert "netns, MTU 9000 (throughput; ring packets: spreadpy 8972 B)" in text
    assert "note: MTU 9000: a note" in text
    assert "0.90      12906        14310 msgs/s spflooder (C) original 1000 B" in text


def test_c_tool_output_is_read_as_printed() -> None:
    argv = harness.line_buffered(["spflooder", "-ro"])
    assert argv[1:] == ["-oL", "spflooder", "-ro"]
    out = "spping: connected as '#p1#h1'\n48 bytes from #e1#h3: seq = 7 time = 0.412 ms\n"
    (match,) = harness.C_PING_REPLY.finditer(out)
    assert (int(match.group(1)), float(match.group(2))) == (7, 0.412)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--bed", "loopback", "--mtu", "9000"], "--mtu 9000 needs the netns bed"),
        (["--peer", "/nonexistent/spread-peer"], "no executable"),
    ],
)
def test_main_refuses_before_building_anything(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert harness.main([*argv, "--no-progress", "--out", str(tmp_path)]) == 1
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- real runs


def _run(argv: list[str], timeout_s: float) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PEER"}
    return subprocess.run(
        [sys.executable, *argv],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def test_harness_quick_run_on_loopback(tmp_path: Path) -> None:
    done = _run(
        [
            "-m",
            "benchmarks.harness",
            "--quick",
            "--bed",
            "loopback",
            "--no-accelerated",
            "--only",
            "throughput,latency,failover",
            "--no-progress",
            "--no-plots",
            "--out",
            str(tmp_path),
        ],
        timeout_s=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (path,) = tmp_path.glob("bench-*.json")
    report = json.loads(path.read_text())
    assert report["bed"] == "loopback"
    assert set(report["machine"]) >= {"cpu", "cores", "kernel", "python", "commit"}
    assert report["parameters"]["quick"] is True
    ours = report["systems"]["spreadpy"]
    rows = ours["throughput"]["original"]
    assert {(r["size"], r["service"], r["senders"]) for r in rows} == {
        (100, "reliable", 1),
        (1000, "reliable", 1),
        (10000, "reliable", 1),
        (100, "agreed", 3),
        (1000, "agreed", 3),
        (10000, "agreed", 3),
    }
    for r in rows:
        assert r["messages"] == harness.QUICK_MESSAGES[r["size"]] // r["senders"] * r["senders"]
        assert r["msgs_per_s"] > 0 and math.isfinite(r["msgs_per_s"])
    latency = ours["latency"]["original"]
    assert latency["count"] == 50 == len(latency["rtts_ms"])
    assert latency["min_ms"] <= latency["p50_ms"] <= latency["p99_ms"] <= latency["max_ms"]
    (run,) = ours["failover"]["fast"]["runs"]
    assert run["victim"] == "h3" and set(run["survivors_s"]) == {"h1", "h2"}
    assert "msgs/s" in done.stdout and "failover, fast timeouts" in done.stdout


@pytest.mark.skipif(not os.environ.get("BENCH_SOAK_S"), reason="set BENCH_SOAK_S=20 to run")
def test_short_soak_on_loopback(tmp_path: Path) -> None:
    seconds = float(os.environ["BENCH_SOAK_S"])
    argv = ["benchmarks/soak.py", "--duration", str(seconds), "--bed", "loopback"]
    argv += ["--kill-every", str(max(4.0, seconds / 3)), "--seed", "11", "--no-progress"]
    done = _run([*argv, "--out", str(tmp_path)], timeout_s=seconds + 150)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "violations 0" in done.stdout
    assert "kills 0," not in done.stdout


# ------------------------------------------------------------------------------- VIP owners


def _fake_ring(cut: frozenset[str] = frozenset(), formed: bool = True) -> Any:  # Any: a stand-in
    bed = SimpleNamespace(kind="netns", cut_hosts=cut, hosts=())
    return SimpleNamespace(bed=bed, names=["h1", "h2", "h3"], ring_formed=lambda names: formed)


def test_vip_hook_checks_owners_only_once_membership_is_stable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The bed part (wackapy on real interfaces) runs in `make soak-ci`; this is the rule."""
    owners = {vip: ["h1"] for vip in soak.VIPS}
    monkeypatch.setattr(soak, "vip_owners", lambda bed, vips: owners)
    hook = soak.VipOwners()
    owners[soak.VIPS[0]] = ["h1", "h2"]
    hook.after_change(_fake_ring(), "restart h2")
    hook.before_fault(_fake_ring())  # just changed: wackapy may still be balancing
    assert hook.checks == 0 and not hook.problems
    hook.last_change -= soak.VIP_STABLE_S + 1
    hook.before_fault(_fake_ring(cut=frozenset({"h3"})))  # a link is down: not stable
    hook.before_fault(_fake_ring(formed=False))  # no single ring of every daemon
    assert hook.checks == 0
    hook.before_fault(_fake_ring())
    assert hook.checks == 1
    assert hook.problems == [f"vip: {soak.VIPS[0]} on h1, h2 with membership stable for 9 s"]
    owners[soak.VIPS[0]] = ["h2"]
    assert hook.quiet(_fake_ring()) == hook.problems  # settled at the end: nothing new
    assert hook.summary() == "vip checks 2 (3 VIPs, wackapy beside every daemon)"


def test_vip_hook_needs_every_vip_on_exactly_one_host_at_the_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    owners = {vip: ["h1"] for vip in soak.VIPS}
    owners[soak.VIPS[2]] = []
    monkeypatch.setattr(soak, "vip_owners", lambda bed, vips: owners)
    monkeypatch.setattr(soak, "VIP_SETTLE_TIMEOUT_S", 0.0)
    problems = soak.VipOwners().quiet(_fake_ring())
    end = "0 s after the ring was complete"
    assert problems == [f"vip: {soak.VIPS[2]} on no host at the end, {end}"]

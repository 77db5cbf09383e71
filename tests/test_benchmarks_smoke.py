"""The benchmark harness and the soak: their checker and parsers on made-up input, and a tiny
real run of the harness on loopback daemons (127.0.0.1-3 only, whoever runs the tests).

The soak itself runs for tens of seconds, so it is not part of this file's default run:
`make soak-ci` runs it for 60 s. Set BENCH_SOAK_S=20 to run a short one here as well.
"""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from benchmarks import harness, soak

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

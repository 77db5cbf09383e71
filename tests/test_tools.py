"""spflooder and spping: short real runs against loopback daemons, and their pure parts."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from spreadpy import client
from spuser.flooder import Options, UsageError, parse_args
from spuser.ping import Summary
from tests.daemons import Cluster

WAIT_S = 30.0  # a guard against hangs, never a timing assertion


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with Cluster(tmp_path_factory.mktemp("tools"), names=("n1", "n2", "n3")) as running:
        running.wait_ring()
        yield running


def tool(module: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", module, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=WAIT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, out, err


def flooder(*args: str) -> subprocess.Popen[str]:
    return tool("spuser.flooder", *args)


# --- spflooder ---------------------------------------------------------------------------------


def test_flooder_reports_like_the_original(cluster: Cluster) -> None:
    sock = cluster["n1"].unix_socket
    status, out, err = finish(flooder("-m", "2000", "-b", "100", "-s", sock))
    assert (status, err) == (0, "")
    assert out == (
        f"flooder: connecting to {sock}\n"
        "flooder: starting  multicast of 2000 messages, 100 bytes each.\n"
        "flooder: completed   1000 messages of 100 bytes\n"
        "flooder: completed   2000 messages of 100 bytes\n"
        "flooder: completed multicast of 2000 messages, 100 bytes each.\n"
    )


def test_two_flooders_wait_for_each_other_and_pace(cluster: Cluster) -> None:
    sockets = {"fa": cluster["n1"].unix_socket, "fb": cluster["n2"].unix_socket}
    runs = {
        name: flooder("-n", "2", "-m", "2000", "-b", "200", "-u", name, "-s", sock)
        for name, sock in sockets.items()
    }
    for name, proc in runs.items():
        status, out, err = finish(proc)
        assert (status, err) == (0, ""), out
        lines = out.split("\n")
        assert lines[:2] == [
            f"flooder: connecting to {sockets[name]} with group membership",
            "flooder: starting  multicast of 2000 messages, 200 bytes each.",
        ]
        views = "\n".join(lines[2:-4]) + "\n"
        index = 0 if name == "fa" else 1
        assert views.endswith(
            "Received REGULAR membership for group flooder with 2 members, where I am member "
            f"{index}:\n\t#fa#n1\n\t#fb#n2\n"
        )
        assert re.fullmatch(
            r"(Received REGULAR membership for group flooder with \d members, where I am "
            r"member \d:\n(\t#f[ab]#n[12]\n)+)+",
            views,
        )
        assert lines[-4:] == [
            "flooder: completed   1000 messages of 200 bytes",
            "flooder: completed   2000 messages of 200 bytes",
            "flooder: completed multicast of 2000 messages, 200 bytes each.",
            "",
        ]


def test_read_only_and_write_only_flooders(cluster: Cluster) -> None:
    with client.connect(cluster["n2"].unix_socket, "fwatch") as watcher:
        watcher.join("flooder")
        reader = flooder("-ro", "-m", "1000", "-s", cluster["n1"].unix_socket)
        while True:  # the reader's join is ordered once the watcher sees it
            view = watcher.receive(timeout=WAIT_S)
            if isinstance(view, client.MembershipMessage) and len(view.members) == 2:
                break
        writer = flooder("-wo", "-m", "1000", "-b", "50", "-s", cluster["n3"].unix_socket)
        status, out, err = finish(writer)
        assert (status, err) == (0, "")
        assert out == (
            f"flooder: connecting to {cluster['n3'].unix_socket}\n"
            "flooder: starting  multicast of 1000 messages, 50 bytes each (self discarding).\n"
            "flooder: completed   1000 messages of 50 bytes\n"
            "flooder: completed multicast of 1000 messages, 50 bytes each.\n"
        )
        status, out, err = finish(reader)
        assert (status, err) == (0, "")
        assert out == (  # the original prints its own -b (default 1000) at the end
            f"flooder: connecting to {cluster['n1'].unix_socket}\n"
            "flooder: Only receiving messages\n"
            "flooder: completed   1000 messages of 50 bytes\n"
            "flooder: completed multicast of 1000 messages, 1000 bytes each.\n"
        )


def test_flooder_usage_and_errors(tmp_path: Path) -> None:
    status, out, _ = finish(flooder("-x"))
    assert status == 1 and out.startswith("Usage: spflooder\n\t[-u <user name>]     : unique")
    status, out, _ = finish(flooder("-n", "101"))
    assert status == 1 and out.startswith("Too many members. The max is 100\nUsage: spflooder\n")
    status, out, _ = finish(flooder("-s", str(tmp_path / "none.sock")))
    assert status == 1
    assert out.endswith("SP_error: (-2) Could not connect.\n")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], Options()),
        (
            ["-m", "5", "-b", "7", "-u", "me", "-s", "4803@127.0.0.1"],
            Options("me", "4803@127.0.0.1", 5, 0, 7),
        ),
        (["-ro", "-wo"], Options(write_only=True)),
        (["-wo", "-ro"], Options(read_only=True)),
        (["-mx", "12", "-n", "abc"], Options(messages=12)),  # sscanf: no number, no change
        (["-n", "3x"], Options(members=3)),
    ],
)
def test_flooder_flags(argv: list[str], expected: Options) -> None:
    assert parse_args(argv) == expected


@pytest.mark.parametrize("argv", [["-m"], ["-q"], ["-n", "101"], ["file"]])
def test_flooder_bad_flags(argv: list[str]) -> None:
    with pytest.raises(UsageError):
        parse_args(argv)


# --- spping ------------------------------------------------------------------------------------

SUMMARY = re.compile(
    r"spping: (\d+) round trips, rtt min/mean/p50/p99/max = "
    r"(\d+\.\d+)/(\d+\.\d+)/(\d+\.\d+)/(\d+\.\d+)/(\d+\.\d+) ms\n"
)


def check_summary(out: str, count: int) -> None:
    found = SUMMARY.search(out)
    assert found is not None, out
    assert int(found[1]) == count
    low, mean, p50, p99, high = (float(found[i]) for i in range(2, 7))
    assert 0 < low <= p50 <= p99 <= high and low <= mean <= high


def test_spping_with_an_echoer_in_the_same_process(cluster: Cluster) -> None:
    peer = f"{cluster.port}@127.0.0.2"
    args = ("-s", cluster["n1"].unix_socket, "--echo-at", peer, "-c", "50", "-g", "ping1")
    status, out, err = finish(tool("spuser.ping", *args))
    assert (status, err) == (0, "")
    assert re.match(
        r"spping: #r\d+-\d+#n1 -> group ping1 -> #r\d+-\d+#n2: 50 pings of 64 bytes, AGREED\n", out
    )
    check_summary(out, 50)


def test_spping_with_a_separate_echoer(cluster: Cluster) -> None:
    echoer = tool(
        "spuser.ping", "--echo", "-s", cluster["n3"].unix_socket, "-c", "20", "-u", "echo"
    )
    pinger = tool(
        "spuser.ping", "-s", cluster["n1"].unix_socket, "-c", "20", "-b", "1000", "-t", "safe"
    )
    status, out, err = finish(pinger)
    assert (status, err) == (0, "")
    assert "-> group spping -> #echo#n3: 20 pings of 1000 bytes, SAFE\n" in out
    check_summary(out, 20)
    status, out, err = finish(echoer)
    assert (status, err) == (0, "")
    assert out == "spping: #echo#n3 echoing pings in group spping\nspping: answered 20 pings\n"


def test_spping_without_an_echoer(cluster: Cluster) -> None:
    status, out, err = finish(
        tool("spuser.ping", "-s", cluster["n2"].unix_socket, "-g", "lonely", "-w", "0.2")
    )
    assert (status, out) == (1, "")
    assert err == "spping: no echoer joined group lonely within 0.2 s\n"


@pytest.mark.parametrize(
    ("rtts_ms", "expected"),
    [
        ([1.0], (1.0, 1.0, 1.0, 1.0, 1.0)),
        ([4.0, 1.0, 3.0, 2.0], (1.0, 2.5, 2.0, 4.0, 4.0)),
        ([float(i) for i in range(1, 101)], (1.0, 50.5, 50.0, 99.0, 100.0)),
        ([float(i) for i in range(1, 201)], (1.0, 100.5, 100.0, 198.0, 200.0)),
    ],
)
def test_spping_summary_uses_nearest_rank_percentiles(
    rtts_ms: list[float], expected: tuple[float, ...]
) -> None:
    s = Summary.of([r / 1000 for r in rtts_ms])
    got = (s.min_ms, s.mean_ms, s.p50_ms, s.p99_ms, s.max_ms)
    assert got == pytest.approx(expected)
    assert s.count == len(rtts_ms)

"""spuser against real daemons, driven through pipes: the spec's byte-exact transcripts.

shared/spec/spuser.md §5.2 and §5.3 were captured from the real spuser 5.0.1 with one daemon
named `localhost`; they are read from the spec and compared byte for byte, after replacing
what must differ: the daemon's name (private groups end in `#n1`), the `-s` argument echoed on
the connect line, and the ring part of group ids (proc id and time; the change counter is
compared). Then what one daemon cannot show: three spusers on three daemons, one quitting.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from spreadpy import client
from spuser.cli import MENU, Options, parse_args, parse_unsigned
from spuser.pipe import SpuserProcess
from tests.daemons import Cluster

SPEC = Path(__file__).resolve().parents[1].parent / "shared" / "spec" / "spuser.md"
needs_spec = pytest.mark.skipif(not SPEC.is_file(), reason=f"{SPEC} not found")
GRP_ID = re.compile(rb"grp id is (-?\d+) (-?\d+) (\d+)\n")
READY = MENU + b"\nUser> "  # the menu and the first prompt: spuser is connected and waiting


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with Cluster(tmp_path_factory.mktemp("spuser"), names=("n1", "n2", "n3")) as running:
        running.wait_ring()
        yield running


def spec_block(after: str) -> bytes:
    """The fenced block that follows the line starting with `after` in spuser.md."""
    lines = SPEC.read_text().split("\n")
    start = next(i for i, line in enumerate(lines) if line.startswith(after))
    opening = next(i for i in range(start + 1, len(lines)) if lines[i] == "```")
    closing = next(i for i in range(opening + 1, len(lines)) if lines[i] == "```")
    return ("\n".join(lines[opening + 1 : closing]) + "\n").encode()


def ring_ids(output: bytes) -> set[tuple[bytes, bytes]]:
    return {(m[1], m[2]) for m in GRP_ID.finditer(output)}


def normalise(output: bytes, daemon: bytes, spread_name: bytes) -> bytes:
    """The capture's daemon name and ring id in place of ours."""
    output = output.replace(b"#" + daemon + b"\n", b"#localhost\n")
    output = output.replace(b"#" + daemon + b",", b"#localhost,")
    output = output.replace(b"connected to " + spread_name + b" ", b"connected to 4803 ")
    return GRP_ID.sub(rb"grp id is 482711334 1795587525 \3\n", output)


def fence(daemon: str) -> None:
    """Return once the daemon has written out everything it delivered before this call.

    A daemon writes one delivery to its local clients one after another, and may be preempted
    in between: alice can print her copy before bob's reaches his socket. A message ordered
    after it, received here, proves the daemon finished with the earlier one.
    """
    with client.connect(daemon, "fence") as mb:
        mb.multicast(client.AGREED_MESS, mb.private_group, b"")
        assert isinstance(mb.receive(timeout=10), client.RegularMessage)


def start(args: list[str], label: str) -> SpuserProcess:
    spuser = SpuserProcess(args, label=label)
    spuser.wait_for(READY)
    return spuser


@needs_spec
def test_the_seed_exchange_prints_the_captured_bytes(cluster: Cluster) -> None:
    sock = cluster["n1"].unix_socket
    joined = b"Due to the JOIN of #%s#n1\n\nUser> "
    with (
        start(["-u", "alice", "-s", sock], "alice") as alice,
        start(["-u", "bob", "-s", sock], "bob") as bob,
    ):
        alice.send("j test")
        alice.wait_for(joined % b"alice")
        bob.send("j test")
        for spuser in (bob, alice):
            spuser.wait_for(joined % b"bob")
        alice.send("s test")
        alice.send("Hello World!")
        for spuser in (alice, bob):
            spuser.wait_for(b"(13 bytes): Hello World!\n\n\nUser> ")
        bob.send("p")
        bob.wait_for(b"Polling sais: 0\n\nUser> ")
        bob.send("x")
        bob.wait_for(b"Unknown commnad\n" + READY)
        bob.send("l test")
        bob.wait_for(b"received membership message that left group test\n\nUser> ")
        alice.wait_for(b"Due to the LEAVE of #bob#n1\n\nUser> ")
        bob.send("j test")
        for spuser in (bob, alice):
            spuser.wait_for(joined % b"bob")
        alice.send("b test")
        alice.send("20")
        for spuser in (alice, bob):
            spuser.wait_for(b"(20 bytes): mess num 11 \n\nUser> ")
        alice.send("m test")
        for line in ("line one", "line two", ""):
            alice.send(line)
        for spuser in (alice, bob):
            spuser.wait_for(b"line one\nline two\n\n\nUser> ")
        bob.send("d")
        bob.wait_for(b"\nUser> ")
        alice.send("s test")
        alice.send("while detached")
        alice.wait_for(b"(15 bytes): while detached\n\n\nUser> ")
        fence(sock)  # bob's copy is in his socket now, unread
        bob.send("p")
        bob.wait_for(b"Polling sais: 95\n\nUser> ")
        bob.send("r")
        bob.wait_for(b"(15 bytes): while detached\n\n\nUser> \nUser> ")
        bob.send("e")
        bob.send("q")
        assert bob.wait_exit() == 0
        alice.wait_for(b"Due to the DISCONNECT of #bob#n1\n\nUser> ")
        alice.send("q")
        assert alice.wait_exit() == 0
        outputs = {"alice": alice.output, "bob": bob.output}
    assert len(ring_ids(outputs["alice"] + outputs["bob"])) == 1  # one ring throughout
    for name, started_as in (("alice", "`spuser -u alice`"), ("bob", "`spuser -u bob -s 4803`")):
        expected = spec_block(f"{name} (started as {started_as})")
        assert normalise(outputs[name], b"n1", sock.encode()) == expected, name


@needs_spec
def test_errors_and_the_daemon_going_away(tmp_path: Path) -> None:
    with Cluster(tmp_path, names=("n1",)) as single:
        single.wait_ring()
        with start(["-u", "zed", "-s", single["n1"].unix_socket], "zed") as zed:
            zed.send("j test")
            zed.wait_for(b"Due to the JOIN of #zed#n1\n\nUser> ")
            zed.send("s nonexistent_group")
            zed.send("to nobody")
            zed.wait_for(b"enter message: \nUser> ")
            zed.send("j")
            zed.wait_for(b" invalid group \n\nUser> ")
            zed.send("j bad#group")
            zed.wait_for(b"SP_error: (-14) Illegal group.\n\nUser> ")
            single.stop("n1")
            assert zed.wait_exit() == 0
            after_menu = zed.output.split(MENU, 1)[1]
    expected = spec_block("Input: `j test`, `s nonexistent_group`")
    assert normalise(after_menu, b"n1", b"") == expected


def test_three_daemons_a_third_member_joins_and_quits(cluster: Cluster) -> None:
    names = {"ann": "n1", "ben": "n2", "cat": "n3"}
    tcp = {n: f"{cluster.port}@{cluster[d].address}" for n, d in names.items()}
    with (
        start(["-u", "ann", "-s", cluster["n1"].unix_socket], "ann") as ann,
        start(["-u", "ben", "-s", tcp["ben"]], "ben") as ben,
    ):
        ann.send("j trio")
        ann.wait_for(b"Due to the JOIN of #ann#n1\n\nUser> ")
        ben.send("j trio")
        for spuser in (ann, ben):
            spuser.wait_for(b"Due to the JOIN of #ben#n2\n\nUser> ")
        with start(["-u", "cat", "-s", tcp["cat"]], "cat") as cat:
            cat.send("j trio")
            views = [
                spuser.wait_for(b"Due to the JOIN of #cat#n3\n\nUser> ")
                for spuser in (ann, ben, cat)
            ]
            for index, view in enumerate(views):
                assert (
                    b"Received REGULAR membership for group trio with 3 members, where I am "
                    b"member %d:\n\t#ann#n1\n\t#ben#n2\n\t#cat#n3\n" % index
                ) in view
            cat.send("s trio")
            cat.send("meow")
            for spuser in (ann, ben, cat):
                spuser.wait_for(
                    b"received SAFE message from #cat#n3, of type 1, (endian 0) to 1 groups \n"
                    b"(5 bytes): meow\n\n\nUser> "
                )
            cat.send("q")
            assert cat.wait_exit() == 0
            assert cat.output.endswith(b"\nUser> \nBye.\n")
        for spuser in (ann, ben):
            left = spuser.wait_for(b"Due to the DISCONNECT of #cat#n3\n\nUser> ")
            assert b"with 2 members" in left and b"\t#ann#n1\n\t#ben#n2\ngrp id" in left
        ben.send("l trio")
        ben.wait_for(b"received membership message that left group trio\n\nUser> ")
        ann.wait_for(b"Due to the LEAVE of #ben#n2\n\nUser> ")
        counters = [int(m[3]) for m in GRP_ID.finditer(ann.output)]
        assert counters == [1, 2, 3, 4, 5]  # join, join, join, disconnect, leave
        assert len(ring_ids(ann.output + ben.output)) == 1
        ann.send("q")
        ben.send("q")
        assert ann.wait_exit() == ben.wait_exit() == 0


def test_a_taken_name_and_a_random_one(cluster: Cluster) -> None:
    sock = cluster["n2"].unix_socket
    with start(["-u", "twin", "-s", sock], "twin") as first:
        second = SpuserProcess(["-u", "twin", "-s", sock], label="twin2")
        with second:
            assert second.wait_exit() == 0
            assert second.output == (
                b"Spread library version is 5.0.1\n"
                b"SP_error: (-6) Connection rejected, name not unique.\n\nBye.\n"
            )
        with start(["-r", "-s", sock], "random") as anonymous:
            assert re.search(rb"with private group #r\d+-\d+#n2\n", anonymous.output)
            anonymous.close_stdin()  # end of input behaves like q
            assert anonymous.wait_exit() == 0
            assert anonymous.output.endswith(b"\nUser> \nBye.\n")
        first.send("q")
        assert first.wait_exit() == 0


def test_usage_and_no_daemon(tmp_path: Path) -> None:
    with SpuserProcess(["-x"], label="usage") as usage:
        assert usage.wait_exit() == 0
        assert usage.output.startswith(b"Usage: spuser\n\t[-u <user name>]  : unique")
    with SpuserProcess(["-s", str(tmp_path / "none.sock")], label="none") as nobody:
        assert nobody.wait_exit() == 0
        assert nobody.output.endswith(b"SP_error: (-2) Could not connect.\n\nBye.\n")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], Options("user", "4803")),
        (["-u", "alice"], Options("alice", "4803")),
        (["-uxyz", "alice", "-s", "4803@127.0.0.1"], Options("alice", "4803@127.0.0.1")),
        (["-r"], Options("", "4803")),
        (["-n", "user", "-p", "pw", "-u", "a"], Options("a", "4803")),
        (["-u"], None),
        (["-h"], None),
        (["alice"], None),
    ],
)
def test_flags_are_read_like_the_original(argv: list[str], expected: Options | None) -> None:
    assert parse_args(argv) == expected


@pytest.mark.parametrize(
    ("text", "value"),
    [(b"20\n", 20), (b"  7 bytes", 7), (b"abc", None), (b"\n", None), (b"-1", 0xFFFFFFFF)],
)
def test_burst_sizes_are_read_like_scanf(text: bytes, value: int | None) -> None:
    assert parse_unsigned(text) == value

"""The pure daemon node: spread.conf onto ring parameters, and the fast profile agreement."""

from __future__ import annotations

from dataclasses import replace

from spreadpy.config import parse_config
from spreadpy.membership import FAST_TIMEOUTS, TotemConfig
from spreadpy.node import totem_config

LOOPBACK = "Spread_Segment 127.0.0.255:4803 {\n n1 127.0.0.1\n n2 127.0.0.2\n}\n"


def test_fast_profile_in_spread_conf_is_the_simulated_fast_profile() -> None:
    config = parse_config(LOOPBACK + "TimeoutProfile = fast\n", "fast.conf")
    simulated = replace(TotemConfig(), **FAST_TIMEOUTS)  # type: ignore[arg-type]
    daemon = totem_config(config)
    for field in FAST_TIMEOUTS:
        assert getattr(daemon, field) == getattr(simulated, field), field


def test_default_timeouts_map_onto_the_ring() -> None:
    daemon = totem_config(parse_config(LOOPBACK, "lan.conf"))
    assert daemon.token_timeout_s == 1.25  # TokenTimeout
    assert daemon.consensus_timeout_s == 0.625  # GatherTimeout / 2
    assert daemon.consensus_timeout_s == TotemConfig().consensus_timeout_s  # the simulated one
    assert daemon.join_timeout_s == 0.25  # JoinTimeout
    # HurryTimeout (500 ms) is capped at a fifth of the token timeout: five resends fit in it.
    assert daemon.token_retransmit_s == 0.25
    assert daemon.commit_timeout_s < daemon.consensus_timeout_s


def test_windows_and_ring_variant_come_from_the_file() -> None:
    text = LOOPBACK + (
        "Window = 300\nPersonalWindow = 30\nAcceleratedRing = true\nAcceleratedWindow = 10\n"
    )
    daemon = totem_config(parse_config(text, "w.conf"))
    assert (daemon.window, daemon.personal_window, daemon.accelerated_window) == (300, 30, 10)
    # Without `AcceleratedRing = true`, 5.0.1 runs the original ring (spread-conf.md §5).
    plain = totem_config(parse_config(LOOPBACK + "AcceleratedWindow = 10\n", "p.conf"))
    assert plain.accelerated_window == 0


def test_configuration_hash_is_the_cluster_tag() -> None:
    a = totem_config(parse_config(LOOPBACK, "a.conf"))
    b = totem_config(parse_config(LOOPBACK.replace("n2 127.0.0.2", "n2 127.0.0.3"), "b.conf"))
    assert a.cluster_tag != b.cluster_tag

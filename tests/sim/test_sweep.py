"""Seed sweeps in CI: a fixed range of seeds, every EVS property checked on every seed.

`make sim` runs the 10,000-seed versions; these are the bounded CI slices (issue #4: 300 seeds
with loss, duplication and reordering; issue #5: 500 seeds of --faults all at 3 to 7 nodes).
"""

from __future__ import annotations

import random

import pytest

from spreadpy.sim import SimOptions, run_seed

from .regressions import REGRESSIONS, SWEEP_200_REGRESSIONS, SWEEP_REGRESSIONS

NET = {"loss": 0.1, "dup": 0.05, "reorder": 0.05}


def _sweep(seeds: range, faults: str, nodes: tuple[int, int], messages: int = 120) -> list[str]:
    failures = []
    for seed in seeds:
        count = random.Random(seed).randint(*nodes)
        result = run_seed(seed, SimOptions(nodes=count, faults=faults, messages=messages, **NET))
        if result.violations:
            failures.append(f"seed {seed} ({count} nodes): {result.violations[0]}")
    return failures


@pytest.mark.parametrize("block", range(3))
def test_ring_core_sweep_loss_dup_reorder(block: int) -> None:
    seeds = range(1 + block * 100, 1 + (block + 1) * 100)
    assert _sweep(seeds, "none", (5, 5)) == []


@pytest.mark.parametrize("block", range(5))
def test_membership_sweep_all_faults(block: int) -> None:
    seeds = range(1 + block * 100, 1 + (block + 1) * 100)
    assert _sweep(seeds, "all", (3, 7)) == []


@pytest.mark.parametrize(("seed", "faults", "what"), REGRESSIONS)
def test_regression_seed(seed: int, faults: str, what: str) -> None:
    result = run_seed(seed, SimOptions(nodes=5, faults=faults, **NET))
    assert result.violations == [], what


@pytest.mark.parametrize(("seed", "what"), SWEEP_REGRESSIONS)
def test_sweep_regression_seed(seed: int, what: str) -> None:
    assert _sweep(range(seed, seed + 1), "all", (3, 7), messages=150) == [], what


@pytest.mark.parametrize(("seed", "what"), SWEEP_200_REGRESSIONS)
def test_sweep_200_regression_seed(seed: int, what: str) -> None:
    assert _sweep(range(seed, seed + 1), "all", (3, 7), messages=200) == [], what

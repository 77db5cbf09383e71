"""Simulated time from a crash to the survivors' new regular configuration.

For each profile (Spread's LAN defaults, and TimeoutProfile = fast) and ring size, run several
seeds: form the ring, let traffic flow, crash one processor (the representative on odd runs,
another on even ones) at a random point of the token's rotation, and measure the simulated time
until every survivor has installed the regular view of the survivors. Simulated, so it shows
what the protocol's timeouts give, without the scheduling noise of a real machine; the real
daemon's figure is measured by the benchmark harness.

    python benchmarks/sim_failover.py [--runs 20] [--nodes 3,8]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
from dataclasses import replace

from spreadpy.membership import FAST_TIMEOUTS, State, TotemConfig
from spreadpy.packets import Service
from spreadpy.sim import SimOptions, Simulation


def crash_to_view_s(nodes: int, config: TotemConfig, seed: int) -> float:
    sim = Simulation(seed, SimOptions(nodes=nodes), config)
    assert sim.run_until(10.0, sim.settled), "ring did not form"
    rng = random.Random(seed)
    for i in range(200):  # a steady trickle, so the crash lands on a busy ring
        sim.at(sim.now + i * 0.002, lambda: sim.submit(rng.randint(1, nodes), Service.AGREED, 200))
    sim.run_until(sim.now + rng.uniform(0.05, 0.3))
    victim = 1 if seed % 2 else rng.randint(2, nodes)
    crash_at = sim.now
    sim.crash(victim)
    survivors = [n for n in range(1, nodes + 1) if n != victim]

    def survivors_agree() -> bool:
        for n in survivors:
            proc = sim.nodes[n].proc
            if proc is None or proc.state is not State.OPERATIONAL:
                return False
            if list(proc.ring.members) != survivors:
                return False
        return True

    assert sim.run_until(sim.now + 30.0, survivors_agree, check_every_s=0)
    return sim.now - crash_at


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--nodes", default="3,8")
    args = parser.parse_args(argv)
    profiles = {
        "default (token 1.25 s, consensus 0.625 s)": TotemConfig(),
        "fast (token 0.2 s, consensus 0.2 s)": replace(TotemConfig(), **FAST_TIMEOUTS),  # type: ignore[arg-type]
    }
    print(f"{'profile':<42} {'nodes':>5} {'min s':>7} {'mean s':>7} {'max s':>7}")
    for name, config in profiles.items():
        for nodes in (int(n) for n in args.nodes.split(",")):
            times = [crash_to_view_s(nodes, config, seed) for seed in range(1, args.runs + 1)]
            print(
                f"{name:<42} {nodes:>5} {min(times):>7.3f} {statistics.mean(times):>7.3f} "
                f"{max(times):>7.3f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())

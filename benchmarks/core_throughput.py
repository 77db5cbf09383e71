"""Messages ordered per CPU-second by the ring cores alone: the ceiling for the real daemon.

Three `Processor` cores pass packets through an in-memory, lossless, zero-latency network (a
FIFO of datagrams, no simulator, no checker, no sockets), so what is measured is the cores'
own per-message work: packing, sequencing, token handling, delivery, garbage collection.
One core floods; every core delivers. Reported: messages delivered at the slowest core per CPU
second of the whole run (all three cores share the one CPU, as on a one-core daemon).

    python benchmarks/core_throughput.py [--messages N] [--sizes 100,1000,10000] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from collections import deque
from dataclasses import replace

from spreadpy.membership import (
    Deliver,
    Processor,
    SendPacket,
    State,
    TotemConfig,
)
from spreadpy.packets import Service

NODES = (1, 2, 3)


def run(messages: int, size: int, config: TotemConfig, senders: int = 1) -> dict[str, float]:
    now = 0.0
    procs = {n: Processor(n, config, ring_seq=1, now=now) for n in NODES}
    wire: deque[tuple[int, bytes]] = deque()
    delivered = dict.fromkeys(NODES, 0)

    def drain(node: int) -> None:
        for action in procs[node].drain_actions():
            if type(action) is SendPacket:
                if action.dest is None:
                    for other in NODES:
                        if other != node:
                            wire.append((other, action.payload))
                else:
                    wire.append((action.dest, action.payload))
            elif type(action) is Deliver:
                delivered[node] += 1

    # Form the ring: joins, consensus timeout, commit, recovery.
    for n in NODES:
        drain(n)
    while not all(
        p.state is State.OPERATIONAL and len(p.ring.members) == 3 for p in procs.values()
    ):
        if wire:
            dest, payload = wire.popleft()
            procs[dest].receive_packet(payload, now)
            drain(dest)
        else:
            now = min(d for p in procs.values() if (d := p.next_deadline()) is not None)
            for n, p in procs.items():
                p.handle_timer(now)
                drain(n)
    base = dict(delivered)
    payload = b"x" * size
    per_sender = messages // senders
    started = time.process_time()
    for n in NODES[:senders]:
        for _ in range(per_sender):
            procs[n].submit(payload, Service.AGREED, now)
        drain(n)
    target = per_sender * senders
    while min(delivered[n] - base[n] for n in NODES) < target:
        if wire:
            while wire:
                dest, data = wire.popleft()
                procs[dest].receive_packet(data, now)
                drain(dest)
        else:  # a held token: let the hold timer fire
            now = min(d for p in procs.values() if (d := p.next_deadline()) is not None)
            for n, p in procs.items():
                p.handle_timer(now)
                drain(n)
    cpu_s = time.process_time() - started
    return {"size": size, "messages": target, "cpu_s": cpu_s, "msgs_per_cpu_s": target / cpu_s}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--profile", action="store_true", help="print the top functions")
    parser.add_argument("--packet-size", type=int, default=1472, help="ring packet size limit")
    args = parser.parse_args(argv)
    base = TotemConfig(window=400, personal_window=80, packet_size_max=args.packet_size)
    variants = {"plain": base, "accelerated": replace(base, accelerated_window=15)}
    print(f"{'ring':<12} {'size B':>7} {'messages':>9} {'CPU s':>7} {'msgs/CPU-s':>11}")
    for name, config in variants.items():
        for size in (int(s) for s in args.sizes.split(",")):
            count = args.messages if size < 10_000 else args.messages // 5
            result = run(count, size, config)
            print(
                f"{name:<12} {size:>7} {result['messages']:>9} {result['cpu_s']:>7.2f} "
                f"{result['msgs_per_cpu_s']:>11,.0f}"
            )
    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        run(args.messages, 100, base)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(15)
    return 0


if __name__ == "__main__":
    sys.exit(main())

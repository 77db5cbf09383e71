"""Seeds that once failed, with what they caught. Each runs again on every test run.

Seeds drift when the code changes how it draws from the rng, so the bugs they found also have
scripted scenarios in test_scenarios.py; these rows keep the original reproducers honest.
Options are those of `python -m spreadpy.sim` (5 nodes, loss 0.1, dup 0.05, reorder 0.05).
"""

from __future__ import annotations

REGRESSIONS: list[tuple[int, str, str]] = [
    (2, "all", "singleton commit token sent to ourselves was dropped as a duplicate (issue #5)"),
    (14, "all", "token lost while installing: members that aborted recovery diverged (EVS-5)"),
    (15, "all", "join storm: answering every differing join with a join (livelock)"),
    (65, "all", "join storm livelock"),
    (111, "all", "join storm livelock"),
    (113, "all", "join storm livelock"),
    (173, "all", "join storm livelock"),
    (182, "all", "join storm livelock"),
    (1, "all", "SAFE line differed between members at install: EVS-12 (issue #5)"),
    (3, "all", "EVS-5: member aborted recovery after another installed"),
    (4, "all", "EVS-12: SAFE message placed on different sides of the transitional view"),
    (36, "all", "late install of a ring another member installed"),
]

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

# Found by `python -m spreadpy.sim --nodes 3 --nodes-max 7 --faults all --messages 150` (the
# node count is drawn per seed from 3..7, as in test_sweep): (seed, what it caught).
SWEEP_REGRESSIONS: list[tuple[int, str]] = [
    (2532, "a member stuck in COMMIT was failed for its silence: commit timeout now < consensus"),
    (2954, "installer crashed before the member could learn of the install (checker)"),
    (3724, "run ended in the middle of a membership change (simulator)"),
    (5030, "a late, reordered join listing a node as failed kept excluding it from every ring"),
    (4252, "a one-way link in effect kept a member from following (checker)"),
    (5116, "a partition cut the installer off from the others a member went on with (checker)"),
    (6906, "a token lost under 10% loss with the fast profile right at the end of the run"),
    (7247, "same as 6906"),
]

# Found by the same sweep with the default 200 messages: (seed, what it caught).
SWEEP_200_REGRESSIONS: list[tuple[int, str]] = [
    (
        41085,
        "consensus at GatherTimeout/2: a member that left the recovery prepared was failed for "
        "silence before a commit token could tell it the ring was installed; joins now say so",
    ),
]

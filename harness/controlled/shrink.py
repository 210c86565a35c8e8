"""The fewest context switches that still fail: delta debugging over a schedule's forced choices.

A failing schedule found by a random walk switches threads dozens of times; most of those switches
are noise. A schedule is a list of forced choices on top of the non-preemptive default, so shrinking
it is removing choices: `ddmin` (Zeller & Hildebrandt, 2002) drops ever smaller chunks of them while
the variant still fails the same way, until no single choice can go. What is left is usually the
story of the bug — for a lost update: one thread reads, the other runs its whole increment, the
first writes.

Removing a choice shifts what later ones mean (a step number names the n-th scheduling point of the
whole run, whoever runs it), so every candidate is judged by running it, and the schedule kept is
the one the scheduler actually executed. A budget bounds the runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from harness.controlled.explore import Explorer
from harness.controlled.schedule import Decision, Schedule

__all__ = ["Attempt", "Shrunk", "shrink"]

#: Candidate schedules run at most, per shrink, and seconds spent at most.
BUDGET = 600
SECONDS = 10.0


@dataclass(frozen=True)
class Attempt:
    """One candidate, run: did it fail the same way, what ran, its switches and choice points."""

    fails: bool
    executed: Schedule
    switches: int
    preemptions: int
    decisions: tuple[Decision, ...] = ()


@dataclass(frozen=True)
class Shrunk:
    """The smallest failing schedule found, its context switches, and the runs it took."""

    schedule: Schedule
    switches: int
    runs: int


def shrink(
    schedule: Schedule,
    switches: int,
    preemptions: int,
    run: Callable[[Schedule], Attempt],
    *,
    budget: int = BUDGET,
    seconds: float = SECONDS,
    clock: Callable[[], float] = time.monotonic,
) -> Shrunk:
    """Shrink ``schedule`` (which fails, with ``switches`` context switches and ``preemptions``).

    First delta debugging removes forced choices; then, if preemptions are left, a bounded search
    looks for a failing schedule with fewer (CHESS's observation: most bugs need one or two), and
    keeps the one with the fewest switches.

    Args:
        run: Runs a candidate (recording its choice points).
        budget: The most candidates to run.
        seconds: The most time to spend (a livelock's schedules are long).
    """
    best = (switches, preemptions, len(schedule.forced), schedule)
    runs = 0
    stop = clock() + seconds

    def attempt(candidate: Schedule) -> Attempt | None:
        nonlocal best, runs, budget
        if runs >= budget or clock() > stop:
            budget = runs  # out of time: no more candidates
            return None
        runs += 1
        result = run(candidate)
        if result.fails:
            key = (result.switches, result.preemptions, len(result.executed.forced), result.executed)
            if key[:3] < best[:3]:
                best = key
        return result

    choices = list(schedule.forced)
    chunks = 2
    while choices and runs < budget:
        size = max(1, len(choices) // chunks)
        reduced = False
        for start in range(0, len(choices), size):
            candidate = choices[:start] + choices[start + size :]
            result = attempt(Schedule(tuple(candidate)))
            if result is not None and result.fails:
                choices = list(result.executed.forced)
                chunks = max(chunks - 1, 2)
                reduced = True
                break
        if not reduced:
            if size == 1:
                break
            chunks = min(chunks * 2, len(choices))

    fewest = best[1]
    for bound in range(fewest):
        explorer = Explorer(bound, limit=budget)
        found = False
        while not explorer.done() and runs < budget:
            prefix = explorer.next()
            if prefix is None:
                break
            result = attempt(Schedule(prefix))
            if result is None:
                break
            explorer.feed(prefix, list(result.decisions))
            found = found or result.fails
        if found or runs >= budget:
            break
    return Shrunk(best[3], best[0], runs)

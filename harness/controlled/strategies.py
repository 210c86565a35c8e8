"""Who runs next: the strategies of controlled mode.

A strategy is asked at every choice point (a scheduling point where more than one thread could
run); it sees the choice point's number, the progress (steps weighted by
novelty: the n-th visit of the same instruction counts 1/n), the thread that is running (-1 if it
cannot go on: it blocked or finished) and the threads that could run, and picks one.

* `RandomWalk` picks uniformly: it switches often, which finds races whose window is anywhere.
  Threads the clock wakes together are the exception: the one picked first keeps going with
  probability 2/3 at each point until it yields once. Their sleeps end at one virtual instant only
  because the clock stands still while threads run; really they began at different instants, and
  the first sleeper's wake-up usually comes first with a head start. Both the head start (a
  check-then-act whose two checks came before both sleeps: the overdraft) and its loss (two
  read-modify-writes after the wake-up: a lost update) stay reachable; only their odds move.
* `PCT` (probabilistic concurrency testing, Burckhardt et al., ASPLOS 2010) gives threads random
  priorities, always runs the highest one, and lowers the running thread's priority at d - 1 random
  points: it finds a bug that needs d ordering constraints with probability at least 1/(n·k^(d-1)),
  however long one thread runs before the racy step — where a random walk almost never keeps the
  other thread waiting that long. Here k is measured in progress, not steps, so a loop that repeats
  the same instructions does not dilute the chance of changing priority at the one that matters.
* `Forced` replays a schedule: the default, non-preemptive choice everywhere except at the choice
  points the schedule forces. Exploration and shrinking use it too.
"""

from __future__ import annotations

import random
from typing import Protocol

__all__ = ["PCT", "Forced", "RandomWalk", "Strategy", "default_choice"]


def default_choice(current: int, enabled: tuple[int, ...]) -> int:
    """Non-preemptive: keep the current thread if it can run, else the lowest-numbered one."""
    return current if current in enabled else enabled[0]


class Strategy(Protocol):
    def begin(self, threads: int) -> None: ...

    def add_thread(self, index: int) -> None: ...

    def woke_together(self, first: int) -> None:
        """The clock jumped and woke more than one thread; ``first`` was picked to run first."""

    def choose(self, step: int, progress: float, current: int, enabled: tuple[int, ...]) -> int: ...


class Forced:
    """The default policy, except at the choice points of ``forced`` (choice -> thread). A forced
    thread that cannot run there means the code no longer matches the schedule: `diverged` says so."""

    def __init__(self, forced: dict[int, int]) -> None:
        self.forced = forced
        self.diverged: int | None = None

    def begin(self, threads: int) -> None:
        pass

    def add_thread(self, index: int) -> None:
        pass

    def woke_together(self, first: int) -> None:
        pass

    def choose(self, step: int, progress: float, current: int, enabled: tuple[int, ...]) -> int:
        wanted = self.forced.get(step)
        if wanted is None:
            return default_choice(current, enabled)
        if wanted in enabled:
            return wanted
        if self.diverged is None:
            self.diverged = step
        return default_choice(current, enabled)


class RandomWalk:
    """A uniformly random runnable thread at every point, but for the head start of the first of
    threads woken together (see the module's docstring)."""

    #: How often the first of threads woken together keeps going, at each point until it yields.
    HEAD_START = 2 / 3

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.head = -1

    def begin(self, threads: int) -> None:
        self.head = -1

    def add_thread(self, index: int) -> None:
        pass

    def woke_together(self, first: int) -> None:
        self.head = first

    def choose(self, step: int, progress: float, current: int, enabled: tuple[int, ...]) -> int:
        if current == self.head and current in enabled and self.rng.random() < self.HEAD_START:
            return current
        self.head = -1
        return enabled[self.rng.randrange(len(enabled))] if len(enabled) > 1 else enabled[0]


class PCT:
    """Random priorities, highest runs, d - 1 priority drops at random points of progress.

    Threads join as they start (the body first, then each thread it or another starts): each gets a
    random priority above every changed one, which orders them as a random permutation would.

    Args:
        rng: Randomness of this schedule.
        depth: The bug depth aimed at.
        length: An estimate of the schedule's length in progress (the longest seen so far).
    """

    def __init__(self, rng: random.Random, *, depth: int, length: float) -> None:
        self.rng = rng
        self.depth = depth
        self.length = max(length, 1.0)
        self.priority: list[float] = []
        # Latest first, so the next one due is at the end.
        self.changes = sorted((self.rng.uniform(0.0, self.length) for _ in range(self.depth - 1)), reverse=True)

    def begin(self, threads: int) -> None:
        self.priority = []
        for index in range(threads):
            self.add_thread(index)

    def add_thread(self, index: int) -> None:
        while len(self.priority) <= index:
            self.priority.append(self.depth + self.rng.random())

    def woke_together(self, first: int) -> None:
        pass

    def choose(self, step: int, progress: float, current: int, enabled: tuple[int, ...]) -> int:
        while self.changes and progress >= self.changes[-1]:
            self.changes.pop()
            if 0 <= current < len(self.priority):
                # The i-th change lowers the running thread below every initial priority.
                self.priority[current] = len(self.changes)
        return max(enabled, key=lambda thread: self.priority[thread] if thread < len(self.priority) else -1)

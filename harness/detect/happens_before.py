"""Happens-before between the threads of one trial, through thread start and join only.

A lock-order cycle is a potential deadlock only if its edges can be taken at the same time: a thread
that took ``a`` then ``b`` and was joined before another thread was started to take ``b`` then
``a`` can never meet it. Bensalem and Havelund ("Dynamic deadlock analysis of multi-threaded
programs", Haifa Verification Conference 2005) cut each thread's run into *segments* at its starts
and joins and keep a cycle only if the segments of its edges are pairwise parallel; this module
keeps the same order as vector clocks. Starting a thread makes everything its starter did so far
happen before everything the new thread does; joining a thread that has ended makes everything it
did happen before what the joiner does next. Nothing else orders threads here (locks, events and
queues do, but a cycle whose edges they order is still a cycle some other interleaving could close,
which is the point of the analysis).

Threads are named by *role*, the same in every trial, so that edges of different trials compare: an
actor's name; for a thread the code under test starts, its name with every number replaced
(``Thread-# (forward)``, ``ThreadPoolExecutor-#_#``: the numbers count threads over the whole
process), numbered by start order within the trial when several share it (``Thread-# (forward)·2``).
A thread whose start was not seen (the thread that runs the trial, one left from before) has a clock
of its own, parallel to everything: it is never wrongly ordered.
"""

from __future__ import annotations

import _thread
import re
import threading

__all__ = ["Clock", "StartJoinOrder", "parallel"]

#: A vector clock, as recorded with a lock-order edge: (role, count) pairs, sorted by role.
Clock = tuple[tuple[str, int], ...]

_NUMBER = re.compile(r"\d+")


def parallel(first: Clock, second: Clock) -> bool:
    """Whether neither clock happens before the other (each has a count the other has not reached).

    >>> parallel((("main", 1),), (("main", 1), ("worker", 1)))
    False
    >>> parallel((("main", 2),), (("main", 1), ("worker", 1)))
    True
    """
    if not first or not second:
        return True  # a record without a clock: nothing known orders it
    one, other = dict(first), dict(second)
    return any(count > other.get(role, 0) for role, count in one.items()) and any(
        count > one.get(role, 0) for role, count in other.items()
    )


class _Timeline:
    """One thread's role and clock in the trial."""

    __slots__ = ("clock", "frozen", "role", "thread")

    def __init__(self, thread: threading.Thread, role: str, clock: dict[str, int]) -> None:
        self.thread = thread  # kept, so that its id names no other thread during the trial
        self.role = role
        self.clock = clock
        self.frozen: Clock | None = None

    def tick(self) -> None:
        self.clock[self.role] += 1
        self.frozen = None

    def absorb(self, other: dict[str, int]) -> None:
        clock = self.clock
        for role, count in other.items():
            if count > clock.get(role, 0):
                clock[role] = count
        self.tick()


class StartJoinOrder:
    """The start and join order of one trial's threads, as vector clocks by role."""

    def __init__(self) -> None:
        self._timelines: dict[int, _Timeline] = {}
        self._roles: dict[str, int] = {}
        self._lock = _thread.allocate_lock()  # actors name themselves at once

    def _role(self, base: str) -> str:
        with self._lock:
            seen = self._roles.get(base, 0)
            self._roles[base] = seen + 1
        return base if not seen else f"{base}·{seen + 1}"

    def _timeline(self, thread: threading.Thread) -> _Timeline:
        timeline = self._timelines.get(id(thread))
        if timeline is None or timeline.thread is not thread:
            role = self._role(thread.name)
            timeline = self._timelines[id(thread)] = _Timeline(thread, role, {role: 1})
        return timeline

    def fork(self, parent: threading.Thread) -> dict[str, int]:
        """``parent`` is starting threads: the clock they start from (call `adopt` in each)."""
        timeline = self._timeline(parent)
        origin = dict(timeline.clock)
        timeline.tick()
        return origin

    def adopt(self, thread: threading.Thread, origin: dict[str, int], *, role: str | None = None) -> None:
        """``thread`` starts from ``origin`` (see `fork`), as ``role`` (its name with numbers
        replaced unless given)."""
        base = role if role is not None else _NUMBER.sub("#", thread.name)
        name = self._role(base)
        clock = dict(origin)
        clock[name] = 1
        self._timelines[id(thread)] = _Timeline(thread, name, clock)

    def started(self, parent: threading.Thread, child: threading.Thread) -> None:
        """``parent`` starts ``child`` (called before the child runs)."""
        self.adopt(child, self.fork(parent))

    def joined(self, joiner: threading.Thread, ended: threading.Thread) -> None:
        """``joiner`` saw ``ended`` end (a join that returned with the thread gone)."""
        timeline = self._timelines.get(id(ended))
        if timeline is not None and timeline.thread is ended:
            self._timeline(joiner).absorb(timeline.clock)

    def taker(self, thread: threading.Thread) -> tuple[str, Clock]:
        """``thread``'s role and its clock now, as a lock-order edge records them."""
        timeline = self._timeline(thread)
        frozen = timeline.frozen
        if frozen is None:
            frozen = timeline.frozen = tuple(sorted(timeline.clock.items()))
        return timeline.role, frozen

    def role(self, thread: threading.Thread) -> str:
        return self._timeline(thread).role

    def __repr__(self) -> str:
        return f"StartJoinOrder({ {t.role: t.clock for t in self._timelines.values()} })"

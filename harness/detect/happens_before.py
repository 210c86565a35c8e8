"""Happens-before between the threads of one trial, through thread start and join (and executor tasks).

A lock-order cycle is a potential deadlock only if its edges can be taken at the same time: a thread
that took ``a`` then ``b`` and was joined before another thread was started to take ``b`` then
``a`` can never meet it. Bensalem and Havelund ("Dynamic deadlock analysis of multi-threaded
programs", Haifa Verification Conference 2005) cut each thread's run into *segments* at its starts
and joins and keep a cycle only if the segments of its edges are pairwise parallel; this module
keeps the same order as vector clocks. Starting a thread makes everything its starter did so far
happen before everything the new thread does; joining a thread that has ended makes everything it
did happen before what the joiner does next. A task submitted to an executor is ordered the same
way, as a thread of its own known by its function and submission order (`submitted`): after what
its submitter did before submitting it, and before what follows the call that gave its outcome
(``result()``, ``wait``, a done callback: `harness.detect.instrument`). Nothing else orders threads
here. Locks do in one
trial, but another interleaving takes them in another order, which is the point of the analysis.
Events, queues and semaphores order threads too, and a cycle only they keep apart is still
reported: the order they impose may differ from trial to trial (which consumer got which item),
and clocks compared across trials must count the same points of the program. Starts and joins are
such points.

Threads are named by *role*, the same in every trial, so that edges of different trials compare: an
actor's name; for a thread the code under test starts, its name with every number replaced
(``Thread-# (forward)``, ``ThreadPoolExecutor-#_#``: the numbers count threads over the whole
process), numbered by start order within the trial when several share it (``Thread-# (forward)·2``).
A thread whose start was not seen (the thread that runs the trial, a module-level pool's worker
started in an earlier trial) goes by its name with numbers replaced too, and has a clock of its own,
parallel to everything: it is never wrongly ordered.
"""

from __future__ import annotations

import _thread
import contextlib
import re
import threading
from typing import Any

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
    """One thread's role and clock in the trial (its thread None until the thread shows up)."""

    __slots__ = ("clock", "frozen", "role", "thread")

    def __init__(self, thread: threading.Thread | None, role: str, clock: dict[str, int]) -> None:
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
        #: Timelines of threads started under a known name, not yet seen (see `spawn`).
        self._pending: dict[str, list[_Timeline]] = {}
        self._lock = _thread.allocate_lock()  # threads of the trial name themselves at once
        #: Actor groups started and joined, in order, not yet applied to the clocks: most trials
        #: never ask for a clock, and a trial's cost is mostly its actors' start and join.
        self._log: list[tuple[threading.Thread, Any]] = []
        self._applied = 0
        self._groups: dict[int, list[tuple[str, _Timeline]]] = {}
        self._replaying = _thread.allocate_lock()

    def _role(self, base: str) -> str:
        with self._lock:
            seen = self._roles.get(base, 0)
            self._roles[base] = seen + 1
        return base if not seen else f"{base}·{seen + 1}"

    def _timeline(self, thread: threading.Thread) -> _Timeline:
        timeline = self._timelines.get(id(thread))
        if timeline is None or timeline.thread is not thread:
            waiting = self._pending.get(thread.name)
            try:
                timeline = waiting.pop(0) if waiting else None
            except IndexError:  # another thread of that name took the last one meanwhile
                timeline = None
            if timeline is None:  # a thread from before the trial: numbers count threads of the process
                role = self._role(_NUMBER.sub("#", thread.name))
                timeline = _Timeline(thread, role, {role: 1})
            timeline.thread = thread
            self._timelines[id(thread)] = timeline
        return timeline

    def spawn(self, parent: threading.Thread, names: list[str]) -> int:
        """``parent`` starts threads called ``names`` (a trial's actors), before they run: each
        starts from the parent's clock now, as its name (``name·2`` for a second of that name),
        and is claimed by the first thread of its name to show up. Returns the group's number,
        for `gather`. Only noted: applied when a clock is first asked for."""
        self._log.append((parent, names))
        return len(self._log) - 1

    def gather(self, joiner: threading.Thread, group: int) -> None:
        """``joiner`` saw every thread of ``group`` (see `spawn`) end."""
        self._log.append((joiner, group))

    def _catch_up(self) -> None:
        """Apply the noted `spawn` and `gather` calls, in order."""
        if self._applied == len(self._log):
            return
        with self._replaying:
            while self._applied < len(self._log):
                thread, what = self._log[self._applied]
                if isinstance(what, int):
                    self._gather_now(thread, self._groups.pop(what))
                else:
                    self._groups[self._applied] = self._spawn_now(thread, what)
                self._applied += 1

    def _spawn_now(self, parent: threading.Thread, names: list[str]) -> list[tuple[str, _Timeline]]:
        timeline = self._timeline(parent)
        origin = dict(timeline.clock)
        timeline.tick()
        group = []
        for name in names:
            role = self._role(name)
            clock = dict(origin)
            clock[role] = 1
            entry = _Timeline(None, role, clock)
            self._pending.setdefault(name, []).append(entry)
            group.append((name, entry))
        return group

    def _gather_now(self, joiner: threading.Thread, group: list[tuple[str, _Timeline]]) -> None:
        timeline = self._timeline(joiner)
        for name, entry in group:
            if entry.thread is None:  # never showed up: no later thread of that name may claim it
                with contextlib.suppress(ValueError):
                    self._pending.get(name, []).remove(entry)
            timeline.absorb(entry.clock)

    def started(self, parent: threading.Thread, child: threading.Thread) -> None:
        """``parent`` starts ``child`` (called before the child runs): the child's role is its name
        with numbers replaced, numbered by start order within the trial."""
        self._catch_up()
        if self._pending.get(child.name):
            return  # started for `spawn`, which has its timeline ready
        timeline = self._timeline(parent)
        origin = dict(timeline.clock)
        timeline.tick()
        role = self._role(_NUMBER.sub("#", child.name))
        origin[role] = 1
        self._timelines[id(child)] = _Timeline(child, role, origin)

    def joined(self, joiner: threading.Thread, ended: threading.Thread) -> None:
        """``joiner`` saw ``ended`` end (a join that returned with the thread gone)."""
        self._catch_up()
        timeline = self._timelines.get(id(ended))
        if timeline is not None and timeline.thread is ended:
            self._timeline(joiner).absorb(timeline.clock)

    def send(self, thread: threading.Thread) -> dict[str, int]:
        """``thread`` hands work on (submits a task, finishes one): its clock now, for `receive`."""
        self._catch_up()
        timeline = self._timeline(thread)
        clock = dict(timeline.clock)
        timeline.tick()
        return clock

    def receive(self, thread: threading.Thread, clock: dict[str, int]) -> None:
        """``thread`` goes on from work that was handed on at ``clock`` (see `send`)."""
        self._catch_up()
        self._timeline(thread).absorb(clock)

    def submitted(self, submitter: threading.Thread, function: str) -> tuple[str, dict[str, int]]:
        """``submitter`` hands an executor a task running ``function``: the task's role (the
        function's name, numbered by submission order in the trial, so the same in every trial
        whichever worker runs it) and the clock it starts from (see `run_task`)."""
        return self._role(f"task {function}"), self.send(submitter)

    def run_task(
        self, worker: threading.Thread, role: str, origin: dict[str, int], *, serial: bool
    ) -> _Timeline | None:
        """``worker`` runs the task ``role`` submitted at ``origin``: until `end_task`, what it
        does is the task's. With ``serial`` (an executor of one worker, which runs its tasks in
        submission order) the task also comes after the tasks the worker ran before it; with more
        workers, which ran which varies from trial to trial, and two may run at once. Returns the
        worker's own timeline, for `end_task`."""
        self._catch_up()
        own = self._timelines.get(id(worker))
        clock = dict(origin)
        if serial and own is not None and own.thread is worker:
            for name, count in own.clock.items():  # the tasks it ran: not itself, which worker varies
                if name != own.role and count > clock.get(name, 0):
                    clock[name] = count
        clock[role] = 1
        self._timelines[id(worker)] = _Timeline(worker, role, clock)
        return own if own is not None and own.thread is worker else None

    def end_task(self, worker: threading.Thread, own: _Timeline | None) -> dict[str, int]:
        """The task `run_task` began on ``worker`` is over: its clock at the end, for whoever
        receives its outcome; the worker goes on from there."""
        task = self._timelines[id(worker)]
        end = dict(task.clock)
        if own is None:
            own = _Timeline(worker, self._role(_NUMBER.sub("#", worker.name)), {})
        own.clock = end.copy()
        own.clock.setdefault(own.role, 1)
        own.frozen = None
        self._timelines[id(worker)] = own
        return end

    def taker(self, thread: threading.Thread) -> tuple[str, Clock]:
        """``thread``'s role and its clock now, as a lock-order edge records them."""
        self._catch_up()
        timeline = self._timeline(thread)
        frozen = timeline.frozen
        if frozen is None:
            frozen = timeline.frozen = tuple(sorted(timeline.clock.items()))
        return timeline.role, frozen

    def role(self, thread: threading.Thread) -> str:
        self._catch_up()
        return self._timeline(thread).role

    def __repr__(self) -> str:
        return f"StartJoinOrder({ {t.role: t.clock for t in self._timelines.values()} })"

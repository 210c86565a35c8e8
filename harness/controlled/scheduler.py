"""The controlled scheduler: one thread at a time, every switch a recorded choice.

Each managed thread owns a *baton* (a raw lock it blocks on while it is not its turn). The running
thread, and only it, executes the scheduler's code: at every scheduling point it asks the strategy
who runs next and, if it is someone else, releases that thread's baton and blocks on its own. So no
Python code of the code under test ever runs in two threads at once, and the interleaving is exactly
the sequence of choices.

Scheduling points are every instruction (or line) of the code under test, every operation of an
instrumented primitive, and ``time.sleep``. A thread that must wait (a lock held by another, a
condition not yet notified, a sleep) is *blocked* with a readiness test; it can be chosen again once
the test passes. Time is virtual: when nothing can run but somebody waits with a timeout or sleeps,
the clock jumps to the earliest deadline. When nothing can run and nobody will ever wake, that is a
deadlock — found at once, described by the wait-for graph, and unwound by raising `DeadlockError` in
the blocked threads one at a time. A schedule longer than the step limit is a livelock: its threads
are unwound by raising `LivelockError` at their next scheduling point.
"""

from __future__ import annotations

import sys
import threading
from _thread import allocate_lock, get_ident
from collections.abc import Callable
from types import CodeType, FrameType
from typing import Any

from harness.controlled.schedule import Decision
from harness.controlled.strategies import Strategy, default_choice
from harness.detect.wait_graph import Deadlock, DeadlockError, WaitGraph, describe_primitive

__all__ = ["LivelockError", "Managed", "Scheduler", "Step"]

RUNNABLE, BLOCKED, DONE = "runnable", "blocked", "done"

#: One recorded step: the name of the thread that ran it, where (a code object and an instruction
#: offset, or minus the line number when the point came from a line or a primitive), and what
#: primitive operation it was ("" for plain code).
Step = tuple[str, CodeType | None, int, str]


class LivelockError(DeadlockError):
    """Raised in the actors of a schedule that ran past its step limit, to unwind them."""


class Managed:
    """A thread under the scheduler's control."""

    __slots__ = ("baton", "deadline", "ident", "index", "name", "quiet", "ready", "state")

    def __init__(self, index: int, name: str) -> None:
        self.index = index
        self.name = name
        self.ident = 0
        self.baton = allocate_lock()
        self.baton.acquire()
        self.state = RUNNABLE
        self.ready: Callable[[], bool] | None = None
        self.deadline: float | None = None
        #: Inside `harness.atomic` blocks: no scheduling points.
        self.quiet = 0

    def enabled(self, now: float) -> bool:
        if self.state == RUNNABLE:
            return True
        if self.state != BLOCKED:
            return False
        if self.ready is not None and self.ready():
            return True
        return self.deadline is not None and now >= self.deadline


class Scheduler:
    """Runs groups of managed threads one step at a time under ``strategy``.

    Args:
        strategy: Picks the next thread at every point.
        graph: The trial's wait-for graph, to describe a deadlock.
        step_limit: Steps after which a schedule counts as a livelock.
        record_decisions: Keep every choice with its alternatives (for exhaustive exploration).
    """

    def __init__(
        self, strategy: Strategy, *, graph: WaitGraph, step_limit: int, record_decisions: bool = False
    ) -> None:
        self.strategy = strategy
        self.graph = graph
        self.step_limit = step_limit
        self.record_decisions = record_decisions
        self.threads: list[Managed] = []
        self.by_ident: dict[int, Managed] = {}
        self.current: Managed | None = None
        self.step = 0
        #: Choice points so far (points where more than one thread could run).
        self.choices = 0
        self.now = 0.0
        self.switches = 0
        #: Switches away from a thread that could have gone on.
        self.preemptions = 0
        #: Steps weighted by novelty (see `point`): PCT places its priority changes along it.
        self.progress = 0.0
        self._seen: dict[tuple[int, CodeType | None, int, str], int] = {}
        self.steps: list[Step] = []
        self.decisions: list[Decision] = []
        #: The executed schedule: every choice point where the choice differed from the default.
        self.forced: list[tuple[int, int]] = []
        self.finding: Deadlock | None = None
        self.livelock: tuple[str, ...] | None = None
        self.aborting = False
        self._main = allocate_lock()
        self._main.acquire()

    # -- groups of actors --------------------------------------------------------------------------

    def run_group(self, names: list[str], start: Callable[[Managed], threading.Thread]) -> None:
        """Start one thread per name (each parks on its baton), then let the strategy run them to
        the end; returns when every one has finished. Called by the thread of the variant body."""
        self.threads = [Managed(index, name) for index, name in enumerate(names)]
        self._to_park = len(self.threads)
        self._all_parked = allocate_lock()
        self._all_parked.acquire()
        threads = [start(managed) for managed in self.threads]
        for thread in threads:
            thread.start()
        self._all_parked.acquire()
        self.strategy.begin(len(self.threads))
        first = self._choose(None, self._enabled(None))
        self.current = first
        first.baton.release()
        self._main.acquire()
        for thread in threads:
            thread.join()
        self.threads = []
        self.current = None

    _to_park = 0
    _all_parked = allocate_lock()
    _park_count = allocate_lock()

    def enter(self, managed: Managed) -> None:
        """First thing an actor thread does: register, and wait for its first turn."""
        managed.ident = get_ident()
        self.by_ident[managed.ident] = managed
        with self._park_count:
            self._to_park -= 1
            last = self._to_park == 0
        if last:
            self._all_parked.release()
        managed.baton.acquire()

    def leave(self, managed: Managed) -> None:
        """Last thing an actor thread does: hand the baton on (or back to the variant body)."""
        managed.state = DONE
        self.by_ident.pop(managed.ident, None)
        if all(m.state == DONE for m in self.threads):
            self.current = None
            self._main.release()
            return
        nxt = self._next(managed)
        self.switches += 1
        self.current = nxt
        nxt.baton.release()

    # -- scheduling points -------------------------------------------------------------------------

    def point(self, code: CodeType | None = None, offset: int = 0, what: str = "") -> None:
        """A place where another thread may take over. Raises `LivelockError` once the schedule
        ran past the step limit: a thread that never blocks can only be stopped where it runs."""
        me = self.by_ident.get(get_ident())
        if me is None or me is not self.current or me.quiet:
            return
        if self.aborting:
            if self.livelock is not None:
                raise LivelockError(*self._deadlock_args())
            return
        self.step += 1
        if code is None:
            frame = _caller_in_scope(self.graph)
            if frame is not None:
                code, offset = frame.f_code, -frame.f_lineno
        # Progress weighs a step by how new its place is: the n-th visit of the same instruction
        # by the same thread counts 1/n, so a loop of twenty iterations weighs little more than one.
        key = (me.index, code, offset, what)
        seen = self._seen.get(key, 0) + 1
        self._seen[key] = seen
        self.progress += 1.0 / seen
        self.steps.append((me.name, code, offset, what))
        if self.step > self.step_limit:
            self._declare_livelock()
            raise LivelockError(*self._deadlock_args())
        chosen = self._choose(me, self._enabled(me))
        if chosen is not me:
            self._hand_over(me, chosen)
            if self.livelock is not None:
                raise LivelockError(*self._deadlock_args())

    def primitive_point(self, primitive: Any, operation: str) -> None:
        """A scheduling point at an operation of an instrumented primitive (named in the trace:
        ``lock_a.acquire()``)."""
        me = self.by_ident.get(get_ident())
        if me is None or me is not self.current or self.aborting or me.quiet:
            return
        self.point(what=f"{describe_primitive(primitive)}.{operation}()")

    def quiet(self, delta: int) -> None:
        """Enter (+1) or leave (-1) an `harness.atomic` block in the calling thread."""
        me = self.by_ident.get(get_ident())
        if me is not None:
            me.quiet += delta

    def block(self, ready: Callable[[], bool], deadline: float | None) -> bool:
        """Wait until ``ready()`` (True) or, with a deadline, until virtual time reaches it (False).
        Raises `DeadlockError` when the trial is being unwound after a deadlock."""
        me = self.by_ident.get(get_ident())
        if me is None:
            raise RuntimeError(
                "a thread the controlled scheduler does not run (not started by trial.threads() or "
                "trial.run_threads(): an executor's or a pool's, say) waited on a primitive; controlled "
                "mode schedules the trial's own actors only: run this variant in stress mode"
            )
        if self.aborting:
            raise DeadlockError(*self._deadlock_args())
        if ready():
            return True
        me.state, me.ready, me.deadline = BLOCKED, ready, deadline
        try:
            while True:
                nxt = self._next(me)
                if nxt is not me:
                    self._hand_over(me, nxt)
                if self.aborting:
                    raise DeadlockError(*self._deadlock_args())
                if ready():
                    return True
                if deadline is not None and self.now >= deadline:
                    return False
        finally:
            me.state, me.ready, me.deadline = RUNNABLE, None, None

    def sleep(self, seconds: float) -> None:
        """``time.sleep`` in virtual time: other threads run meanwhile; the clock jumps when only
        sleepers are left."""
        if seconds <= 0:
            self.point(what="sleep(0)")
            return
        self.block(lambda: False, self.now + seconds)

    def timeout_deadline(self, timeout: float) -> float | None:
        return None if timeout < 0 else self.now + timeout

    # -- choosing ----------------------------------------------------------------------------------

    def _enabled(self, me: Managed | None) -> list[Managed]:
        return [m for m in self.threads if m.enabled(self.now)]

    def _choose(self, current: Managed | None, enabled: list[Managed]) -> Managed:
        """Ask the strategy, at a choice point (more than one thread could run), who runs next.
        Choice points are numbered in order: a schedule names them by number."""
        if len(enabled) == 1:
            return enabled[0]
        indices = tuple(m.index for m in enabled)
        cur = current.index if current is not None and current in enabled else -1
        number = self.choices
        self.choices += 1
        chosen = self.strategy.choose(number, self.progress, cur, indices)
        default = default_choice(cur, indices)
        if chosen not in indices:
            chosen = default
        if chosen != default:
            self.forced.append((number, chosen))
        if cur >= 0 and chosen != cur:
            self.preemptions += 1
        if self.record_decisions:
            self.decisions.append(Decision(number, indices, cur, default, chosen))
        return self.threads[chosen]

    def _next(self, me: Managed) -> Managed:
        """Who runs after ``me`` (which blocked or finished): a runnable thread, else the earliest
        timed waiter (the clock jumps), else — nobody can ever run — a deadlock."""
        enabled = self._enabled(me)
        if not enabled:
            waiters = [m for m in self.threads if m.state == BLOCKED and m.deadline is not None]
            if waiters:
                self.now = min(m.deadline for m in waiters if m.deadline is not None)
                enabled = self._enabled(me)
        if enabled:
            return self._choose(me if me.state == RUNNABLE else None, enabled)
        self._declare_deadlock(me)
        return next(m for m in self.threads if m.state == BLOCKED)

    def _hand_over(self, me: Managed, to: Managed) -> None:
        self.switches += 1
        self.current = to
        to.baton.release()
        me.baton.acquire()

    # -- endings -----------------------------------------------------------------------------------

    def _declare_deadlock(self, me: Managed) -> None:
        if not self.aborting:
            self.aborting = True
            stuck = next((m for m in self.threads if m.state == BLOCKED), me)
            self.finding = self.graph.declare(stuck.ident)

    def _declare_livelock(self) -> None:
        if self.aborting:
            return
        self.aborting = True
        frames = sys._current_frames()
        where = []
        for managed in self.threads:
            if managed.state == DONE:
                continue
            frame = _innermost_in_scope(frames.get(managed.ident), self.graph)
            place = f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}" if frame else "?"
            where.append(f"{managed.name} at {place}")
        self.livelock = tuple(where)

    def _deadlock_args(self) -> tuple[Any, ...]:
        if self.livelock is not None:
            return (f"livelock: still running after {self.step_limit} steps", list(self.livelock))
        if self.finding is None:
            return ("the trial deadlocked",)
        return (self.finding.summary, list(self.finding.lines))


def _innermost_in_scope(frame: FrameType | None, graph: WaitGraph) -> FrameType | None:
    while frame is not None:
        if graph.scope.contains_file(frame.f_code.co_filename):
            return frame
        frame = frame.f_back
    return None


def _caller_in_scope(graph: WaitGraph) -> FrameType | None:
    return _innermost_in_scope(sys._getframe(2), graph)

"""Controlled mode for coroutines: one event loop, virtual time, every switch between tasks a choice.

A coroutine trial has one thread; what interleaves is its tasks. The scheduling points are the
start of each task a group starts and, for a scenario judged as if any await on a primitive may
suspend (``may_suspend``, `harness.detect.aio`), just before each operation on an asyncio primitive
(``lock_a.acquire()``, ``queue.put()``, ``event.wait()``) and right after a lock is taken (``took
lock_a``). Under asyncio's own model an operation on a ready primitive returns at once, and one on a
primitive that is not ready suspends anyway: neither is a choice. At a point where
another task is ready to run, the strategy chooses: the running task goes on, or it steps out —
behind every callback ready now, as a suspension would put it — and the first ready task runs. That
keeps every schedule one asyncio can produce (callbacks stay first in, first out), and it is the
same choice as a thread's: run the current thread or the other one. Tasks are numbered in the order
they are created (the variant's body is 0), so a schedule names the same tasks on every replay.

Time is virtual: with nothing ready, the clock jumps to the next timer (``asyncio.sleep``, a
timeout), so a schedule replays exactly and never waits. Deadlocks are found as in stress mode
(`harness.detect.aio.StressLoop`), the moment nothing is left to run. What the schedule cannot
decide it says: a task that waits for a file descriptor (a socket, a subprocess's pipe), a signal
handler, or a thread (an executor's, a bridge's) lets the loop go (`TaskScheduler.release`): the
schedule is *unsupported*, and the trial ends on real time, unscheduled, as in stress mode.

Strategies, replay, shrinking and bounded exhaustive search are the threads' own
(`harness.controlled.strategies`, `harness.controlled.explore`, `harness.controlled.shrink`).
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from types import CodeType, FrameType
from typing import Any

from harness.controlled.schedule import Decision
from harness.controlled.scheduler import Step
from harness.controlled.strategies import Strategy, default_choice
from harness.detect import aio
from harness.perturb.plan import ActorStart
from harness.scope import Scope

__all__ = ["ControlledLoop", "TaskScheduler"]

#: Loop iterations per scheduling step allowed before a schedule counts as a livelock (tasks that
#: keep running without ever reaching a point: ``while True: await asyncio.sleep(0)``).
ITERATIONS_PER_STEP = 20


class Entry:
    """A task under the scheduler: its number in the schedule, and its name."""

    __slots__ = ("index", "task")

    def __init__(self, index: int, task: asyncio.Task[Any]) -> None:
        self.index = index
        self.task = task

    @property
    def name(self) -> str:
        """The task's name now (a group names its tasks after creating them)."""
        return aio.task_name(self.task)


class TaskScheduler:
    """The choices of one controlled coroutine trial, and what the engine reads of it (the same
    attributes as `harness.controlled.scheduler.Scheduler`'s: the schedule, its steps and choice
    points, a livelock, why it was let go).

    Args:
        strategy: Picks, at every choice point, the task that runs next.
        step_limit: Steps after which the schedule counts as a livelock.
        record_decisions: Keep every choice with its alternatives (exhaustive exploration).
    """

    def __init__(self, strategy: Strategy, *, step_limit: int, record_decisions: bool = False) -> None:
        self.strategy = strategy
        self.step_limit = step_limit
        self.record_decisions = record_decisions
        self.threads: list[Entry] = []
        self.by_task: dict[asyncio.Task[Any], Entry] = {}
        self.step = 0
        self.choices = 0
        self.progress = 0.0
        self.switches = 0
        self.preemptions = 0
        self._seen: dict[tuple[int, CodeType | None, int, str], int] = {}
        self.steps: list[Step] = []
        self.decisions: list[Decision] = []
        self.forced: list[tuple[int, int]] = []
        #: Always None: a deadlock of tasks is the trial's (`Trial.deadlocks`), as in stress mode.
        self.finding: Any = None
        self.livelock: tuple[str, ...] | None = None
        self.too_long: str | None = None
        self.unsupported: str | None = None
        self.released = False
        self.abandoned: list[str] = []
        self.left_running: list[str] = []
        strategy.begin(0)

    def adopt(self, task: asyncio.Task[Any]) -> None:
        """Number a task created on the loop (in creation order: the body is 0)."""
        entry = Entry(len(self.threads), task)
        self.threads.append(entry)
        self.by_task[task] = entry
        self.strategy.add_thread(entry.index)

    def choose(self, current: int, enabled: tuple[int, ...]) -> int:
        """Ask the strategy who runs at a choice point (numbered in order, as a schedule names it)."""
        number = self.choices
        self.choices += 1
        chosen = self.strategy.choose(number, self.progress, current, enabled)
        default = default_choice(current, enabled)
        if chosen not in enabled:
            chosen = default
        if chosen != default:
            self.forced.append((number, chosen))
        if chosen != current:
            self.preemptions += 1
            self.switches += 1
        if self.record_decisions:
            self.decisions.append(Decision(number, enabled, current, default, chosen))
        return chosen

    def count(self, entry: Entry, code: CodeType | None, offset: int, what: str) -> Step:
        """One more step (progress weighs the n-th visit of the same place by the same task 1/n)."""
        self.step += 1
        key = (entry.index, code, offset, what)
        seen = self._seen.get(key, 0) + 1
        self._seen[key] = seen
        self.progress += 1.0 / seen
        return (entry.name, code, offset, what)

    def release(self, why: str) -> None:
        """Let the loop go: what comes next is not the schedule's to decide (the module docstring)."""
        if not self.released:
            self.unsupported = why
            self.released = True


class ControlledLoop(aio.StressLoop):
    """A coroutine trial's loop under a `TaskScheduler` (the module docstring).

    Args:
        trial: The trial whose tasks run here.
        scheduler: Makes every choice; the plan's random knobs are not used.
        scope: The code under test, to place each step at its line.
    """

    def __init__(self, trial: aio.Trial, scheduler: TaskScheduler, scope: Scope, *, may_suspend: bool = False) -> None:
        super().__init__(trial, may_suspend=may_suspend)
        self.scheduler = scheduler
        self._scope = scope
        self._sync = self._late = self._cancel = 0.0  # every choice is the scheduler's
        self.traced = False
        self._now = 0.0
        self._shift = 0.0
        self._iterations = 0

    # -- time ------------------------------------------------------------------------------------

    def _publish_timer(self) -> None:
        if self.scheduler.released:  # virtual time never waits; real time, once let go, does
            super()._publish_timer()

    def time(self) -> float:
        if self.scheduler.released:
            return time.monotonic() + self._shift
        return self._now

    # -- tasks and points ------------------------------------------------------------------------

    def _make_task(self, loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        task = super()._make_task(loop, coro, **kwargs)
        self.scheduler.adopt(task)
        return task

    def order(self, starts: list[ActorStart]) -> list[ActorStart]:
        # Who starts first is the schedule's first choice, not the plan's.
        return [ActorStart(start.actor, 0.0) for start in sorted(starts, key=lambda s: s.actor)]

    async def starting(self, delay: float, fn: Any = None) -> None:
        code = getattr(fn, "__code__", None)
        await self._choice("starts", (code, -code.co_firstlineno) if code is not None else None)

    async def taken(self, lock: asyncio.Lock) -> None:
        if self.may_suspend:  # else acquire() returns the moment it has the lock, as asyncio's does
            await self._choice(f"took {aio.name_in_caller(lock)}")

    async def point(self, primitive: Any = None, operation: str = "") -> None:
        # Under asyncio's own model, a task stands aside only where it suspends anyway, and a
        # choice there would change nothing: the task starts are the schedule's choices.
        if self.may_suspend:
            await self._choice(f"{aio.name_in_caller(primitive)}.{operation}()")

    async def _choice(self, what: str, place: tuple[CodeType | None, int] | None = None) -> None:
        scheduler = self.scheduler
        if scheduler.released or scheduler.livelock is not None or self.ended:
            return
        task = asyncio.current_task()
        me = scheduler.by_task.get(task) if task is not None else None
        if me is None:
            return
        code, offset = place if place is not None else self._place()
        step = scheduler.count(me, code, offset, what)
        if scheduler.step > scheduler.step_limit:
            scheduler.steps.append(step)
            self._livelock()
            return
        # What a point marks is done already at `took` (a step before any switch made there); any
        # other point comes before what it marks, which runs once the task has the loop again.
        done = what.startswith("took ")
        if done:
            scheduler.steps.append(step)
        other = self._first_ready_other(me)
        if other is not None:
            chosen = scheduler.choose(me.index, tuple(sorted((me.index, other.index))))
            if chosen != me.index:
                await aio.StepOut()
        if not done:
            scheduler.steps.append(step)

    def _place(self) -> tuple[CodeType | None, int]:
        """The code and line (as minus the line) of the innermost frame of the code under test."""
        frame: FrameType | None = sys._getframe(2)
        while frame is not None:
            if self._scope.contains_file(frame.f_code.co_filename):
                return frame.f_code, -frame.f_lineno
            frame = frame.f_back
        return None, 0

    def _first_ready_other(self, me: Entry) -> Entry | None:
        """The first task other than ``me`` whose next step waits in the ready queue."""
        loop: Any = self
        for handle in loop._ready:
            if handle.cancelled():
                continue
            owner = aio.step_task(handle)
            if owner is not None and owner is not me.task:
                entry = self.scheduler.by_task.get(owner)
                if entry is not None and not owner.done():
                    return entry
        return None

    def _livelock(self) -> None:
        scheduler = self.scheduler
        scheduler.livelock = tuple(
            f"{entry.name} at {where}" if (where := aio.waits_at_line(entry.task, self._scope)) else entry.name
            for entry in scheduler.threads
            if not entry.task.done()
        )
        self._unwind()

    # -- the loop's iterations -------------------------------------------------------------------

    def _run_once(self) -> None:
        loop: Any = self
        scheduler = self.scheduler
        if not scheduler.released and not self.ended:
            self._iterations += 1
            if self._iterations > ITERATIONS_PER_STEP * max(scheduler.step_limit, 1):
                self._livelock()
            elif self._waits_outside():
                self._let_go()
            elif not loop._ready:
                due = [handle.when() for handle in loop._scheduled if not handle.cancelled()]
                # With a timer due, a thread that may be at work (in real time) lets go too: virtual
                # time jumping to the timer (a timeout around an await of the thread) would fire it
                # while the thread has barely begun.
                if self._threads_stuck() is None if due else self._threads_alive():
                    scheduler.release("a task waits for a thread, which the schedule does not run")
                    self._let_go()
                elif due:
                    self._now = max(self._now, min(due))  # nothing to run: the clock jumps
        super()._run_once()

    def _waits_outside(self) -> bool:
        """Whether the loop now waits for what no schedule decides: a file descriptor other than its
        own wake-up pipe (a socket, a subprocess's pipe or pidfd), or a signal handler."""
        loop: Any = self
        if getattr(loop, "_signal_handlers", None):
            self.scheduler.release("a signal handler is installed on the loop, which the schedule does not run")
            return True
        own = loop._ssock.fileno()
        if any(fd != own for fd in loop._selector.get_map()):
            self.scheduler.release("a task waits for a file descriptor (a socket, a pipe, a subprocess)")
            return True
        return False

    def _let_go(self) -> None:
        """From now on, real time, continuous with the virtual time so far."""
        self._shift = self._now - time.monotonic()

    def _threads_alive(self) -> bool:
        graph = self.trial.graph
        me = threading.get_ident()
        preexisting = graph.preexisting if graph is not None else set()
        return any(
            t.ident is not None and t.ident != me and t.ident not in preexisting and t.is_alive()
            for t in threading.enumerate()
        )

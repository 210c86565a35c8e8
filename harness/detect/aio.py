"""Coroutine trials: variants written ``async def variant(trial)``.

A coroutine variant runs on a fresh event loop per trial (`asyncio.Runner` with a `StressLoop`), and
starts its tasks through the trial, as a thread variant starts its threads::

    @scenario.variant(expect="unsafe")
    async def check_then_act(trial):
        account = Account(100)
        await trial.run_tasks(account.withdraw, 80, count=2)
        trial.check(account.balance >= 0, f"balance {account.balance}")

**Why perturb.** asyncio runs its ready callbacks first in, first out, and an ``await`` suspends only
when what it awaits is not ready: ``await queue.put(x)`` on an unbounded queue, ``await
lock.acquire()`` on a free lock, an ``async def`` that returns at once never let another task in. A
check-then-act across such an await is safe in every plain run and breaks once the queue is bounded
or the lock contended. So, in stress mode, from the trial's plan (seeded, recorded):

* the tasks `Trial.run_tasks` starts are created in the plan's start order (``shuffle``), and each
  waits out its start delay (``jitter``) as loop iterations (`start_iterations`);
* for a scenario judged as if any await on a primitive may suspend (``may_suspend``; by default
  asyncio's own model holds, where an operation on a ready primitive returns at once, as asyncio
  documents, and none of this happens) — just before each operation on an asyncio primitive —
  `asyncio.Lock` and `asyncio.Semaphore`
  ``acquire``, `asyncio.Event` and `asyncio.Condition` ``wait``, `asyncio.Queue` ``put``, ``get``
  and ``join``, `asyncio.Barrier` ``wait`` — the task steps out for one loop iteration, behind every
  callback ready at that moment, with probability √``sync`` (the knob that forces a thread switch
  around a threading primitive's operations; a task operates on primitives a handful of times, a
  thread hundreds);
* a timer (``asyncio.sleep(d)``, a timeout) fires up to ``jitter`` late.

With ``--cancel P`` (off by default), each such operation of a task but the variant's body also
cancels the task there with probability P: a ``CancelledError`` the code must survive (a lock it
holds released, a queue's count kept). A task that ends cancelled is no finding; what the
cancellation leaves behind is.

A timer is never promised to fire on time; an operation on a primitive suspends only when the
primitive is not ready, which is why stepping out at a ready one is the scenario's choice to make.
Callbacks keep their first-in, first-out order, which asyncio does promise.

**Detection.** When the loop has nothing to run, no timer, no file descriptor but its own wake-up
pipe, no signal handler, and no thread that could call into it (none of the trial's own still runs,
and none from before it may act: `harness.detect.wait_graph.WaitGraph`), its waiting tasks can never
be woken: the trial is ``deadlocked``. The finding names each waiting task, the line of the code
under test it waits at and what it waits for — an `asyncio.Lock` and the task holding it (and
where it took it), another task it awaits, an Event, Condition, Semaphore, Queue or Future nobody
can complete — with the cycle of lock and task waits first when there is one. The tasks are then
cancelled, so that the variant's body ends. A task whose exception nobody retrieved is an ``error``,
as is any exception the loop reports to its exception handler.

A step of a task (one callback of the loop) that holds the loop while other tasks wait is
``stalled``: while it runs, none of them can. Two kinds are judged, neither by the wall clock (a
busy machine stretches every step): a step that sleeps `STALL` seconds or more in ``time.sleep``
(the seconds asked for), and one that runs `STALL_CPU` seconds of its thread's CPU time without an
await (where forced preemption did not slow it: ``--preempt 0``, controlled mode). A step blocked
in a call stress has no model of (a blocking socket, a subprocess) is not judged: should it never
return, the trial hangs, and the dump shows where.
"""

from __future__ import annotations

import asyncio
import asyncio.base_events
import functools
import math
import random
import sys
import threading
import time
import traceback
import warnings
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Generator, Iterator
from types import FrameType
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from harness.detect import primitives as _primitives
from harness.detect.thread_dump import TASKS
from harness.detect.wait_graph import DeadlockError, describe_primitive
from harness.perturb import pause as _pause
from harness.scope import HARNESS_DIR, Scope
from harness.text import short_path

if TYPE_CHECKING:
    from harness.detect.wait_graph import WaitGraph
    from harness.perturb.plan import ActorStart, Plan


class Trial(Protocol):
    """What the loop needs of `harness.trial.Trial` (which imports this module)."""

    plan: Plan
    graph: WaitGraph | None
    deadlocks: list[list[str]]
    stalls: list[tuple[str, str]]

    def deadlocked(self) -> bool: ...

    def record_exception(self, where: str, exc: BaseException) -> None: ...

    def record_traceback(self, where: str, text: str) -> None: ...


TrialT = TypeVar("TrialT", bound=Trial)


__all__ = [
    "GROUPS",
    "StepOut",
    "StressLoop",
    "describe",
    "install",
    "run_body",
    "start_iterations",
    "task_name",
    "uninstall",
]

#: The first and longest wait of an idle loop that another thread may still wake (seconds): it looks
#: again for a deadlock after each, as a thread's wait looks in slices.
SLICE_FIRST = 0.001
SLICE_MAX = 0.05
#: A loop still running this many seconds after it started writes its tasks' stacks into the dump
#: (`StressLoop._dump_tasks`), again after twice as long, and so on.
SNAPSHOT_FIRST = 1.0
#: A task's start delay is this many seconds per loop iteration it waits, and at most `START_MOST`.
START_STEP = 25e-6
START_MOST = 4
#: A step that sleeps this long in ``time.sleep`` (seconds asked for) stalls the loop: asyncio's own
#: debug mode warns of a step over 0.1 s (``loop.slow_callback_duration``).
STALL = 0.1
#: A step that runs this long on its thread's CPU stalls the loop: five times asyncio's warning (a
#: finding, not a warning). Judged only where stress did not trace the code under test: forced
#: preemption makes a step 7-70 times slower (the ``preempt`` knob's range), and a step of a few
#: milliseconds would be taken for one of a second.
STALL_CPU = 0.5
#: How many times a confirmed deadlock's tasks are cancelled before the loop is stopped (a task that
#: swallows the cancellation and waits again would keep the trial going for ever).
_CANCEL_ROUNDS = 3


class StepOut:
    """Awaited, gives the loop one iteration: a bare ``yield`` makes the task reschedule itself
    behind every callback ready now (`asyncio.sleep(0)` does the same, but `asyncio.sleep` is the
    code under test's to call)."""

    def __await__(self) -> Generator[None, None, None]:
        yield


class _Step(asyncio.Handle):
    """A callback of a `StressLoop`, timed: one that holds the loop is a finding (`StressLoop.stalled`)."""

    __slots__ = ()

    def _run(self) -> None:
        global _stepping
        loop: StressLoop = self._loop  # type: ignore[attr-defined]
        loop.slept = 0.0
        _stepping = loop
        began = time.perf_counter()
        try:
            _HANDLE_RUN(self)
        finally:
            _stepping = None
            wall = time.perf_counter() - began
            if wall >= STALL:
                loop.stalled(self, wall)


_HANDLE_RUN = asyncio.Handle._run


#: The loop whose step runs now, on its thread (`_Step`): where a ``time.sleep`` is counted.
_stepping: StressLoop | None = None


class StressLoop(asyncio.SelectorEventLoop):
    """The event loop of a coroutine trial: a selector loop that perturbs (module docstring) and
    notices when none of its tasks can ever run again.

    Args:
        trial: The trial whose tasks run here; its plan gives ``sync``, ``jitter`` and the seed.
    """

    def __init__(self, trial: Trial, *, may_suspend: bool = False) -> None:
        super().__init__()
        self.trial = trial
        #: The scenario's model of awaits (`harness.scenario.Scenario`'s ``may_suspend``): whether an
        #: operation on a ready primitive may suspend (steps out), or returns at once, as asyncio
        #: documents.
        self.may_suspend = may_suspend
        plan = trial.plan
        self._rng = random.Random(f"stress-aio/{plan.seed}")
        # A coroutine trial operates on primitives a handful of times per task, a thread trial
        # hundreds: the same knob steps a task out with its square root (sync 0.01-0.2: 0.1-0.45).
        self._sync = math.sqrt(plan.sync) if plan.sync > 0 else 0.0
        self._late = plan.jitter
        self._cancel = plan.cancel
        #: Whether stress's forced preemption traces the code under test (its CPU time says nothing
        #: of the code's own, `STALL_CPU`).
        self.traced = plan.preempt > 0
        #: The trial's outcome is decided and its tasks are being cancelled (`_unwind`).
        self.ended = False
        #: Cancellations injected so far (``--cancel``).
        self.cancels = 0
        #: Steps out forced so far (the trial's ``switches``).
        self.steps_out = 0
        self._slice = SLICE_FIRST
        #: Whether the watchdog counts the loop's thread as waiting for another thread (`_waits`).
        self._waiting = False
        self._began = time.perf_counter()
        #: When the tasks' stacks are next written into the worker's dump (`_dump_tasks`).
        self._snapshot_at = self._began + SNAPSHOT_FIRST
        self._cancel_rounds = 0
        #: The loop's own wake-up to look again (not a timer of the trial's: `_publish_timer`).
        self._recheck: asyncio.TimerHandle | None = None
        #: The trial's threads stuck at the last idle look (`_threads_stuck`).
        self._stuck_before: tuple[tuple[int, int], ...] | None = None
        #: The loop timer last told to the watchdog (`_publish_timer`).
        self._published: float | None = None
        #: Every task created on this loop, in order (for unretrieved exceptions and names).
        self.tasks: list[asyncio.Task[Any]] = []
        #: Lock -> (the task holding it, where it took it), for `asyncio.Lock`s taken on this loop.
        self.holders: weakref.WeakKeyDictionary[asyncio.Lock, tuple[asyncio.Task[Any] | None, str]] = (
            weakref.WeakKeyDictionary()
        )
        #: Seconds the running step asked ``time.sleep`` for, and where it first did (`_Step`).
        self.slept = 0.0
        self.sleep_stack: traceback.StackSummary | None = None
        #: The longest step of the iteration running now whose CPU time is to be judged, and its
        #: wall time (`stalled`).
        self._long: tuple[asyncio.Handle, float] | None = None
        self.set_task_factory(self._make_task)
        self.set_exception_handler(self._exception)

    # -- perturbation ----------------------------------------------------------------------------

    def step_out_now(self) -> bool:
        """Whether the task about to operate on a primitive steps out first (the ``sync`` draw)."""
        if self._sync <= 0 or self._rng.random() >= self._sync:
            return False
        self.steps_out += 1
        return True

    def order(self, starts: list[ActorStart]) -> list[ActorStart]:
        """The order a group's tasks are created in, and their start delays: the plan's."""
        return starts

    async def starting(self, delay: float, fn: Any = None) -> None:
        """A task of a group, running ``fn``, begins: it waits out its start delay as loop iterations."""
        for _ in range(start_iterations(delay)):
            await StepOut()

    async def taken(self, lock: asyncio.Lock) -> None:
        """A task has just taken ``lock`` (controlled mode may switch here, with the lock held)."""

    async def point(self, primitive: Any = None, operation: str = "") -> None:
        """A task is about to operate on a primitive: with the plan's ``cancel`` probability it is
        cancelled here (any task but the variant's body), else it may step out (`step_out_now`).

        Under asyncio's own model (``may_suspend`` False) only an operation that suspends anyway
        (its primitive is not ready) is a place for either: there, a cancellation lands as one
        from outside would; a step-out would suspend the task where asyncio promises it does not."""
        suspends = self.may_suspend or _would_suspend(primitive, operation)
        if self._cancel > 0 and suspends and self._rng.random() < self._cancel:
            task = asyncio.current_task()
            if task is not None and self.tasks and task is not self.tasks[0]:
                self.cancels += 1
                task.cancel()
                await StepOut()  # raises the CancelledError here, at the operation
        if self.may_suspend and self.step_out_now():
            await StepOut()

    def call_soon(self, callback: Any, *args: Any, context: Any = None) -> asyncio.Handle:  # type: ignore[override]
        loop: Any = self
        thread = loop._thread_id
        if thread is not None and thread != threading.get_ident():
            # asyncio checks this in debug mode only; without it the callback sits in the ready
            # queue while the loop sleeps in its selector, until something else wakes it.
            name = threading.current_thread().name
            self.trial.record_traceback(
                f"thread {name}",
                "Traceback (most recent call last):\n"
                + "".join(traceback.format_stack(sys._getframe(1), limit=8))
                + f"RuntimeError: loop.call_soon({_callable_name(callback)}) called from thread {name}, not the "
                "loop's: it does not wake the loop, which may sleep with the callback queued for ever "
                "(use loop.call_soon_threadsafe())\n",
            )
        return super().call_soon(callback, *args, context=context)

    def _call_soon(self, callback: Any, args: Any, context: Any) -> asyncio.Handle:
        # `BaseEventLoop._call_soon` (every ready callback but a timer's and a file descriptor's),
        # with a timed handle.
        handle = _Step(callback, args, self, context)
        loop: Any = self
        loop._ready.append(handle)
        return handle

    def call_at(self, when: float, callback: Any, *args: Any, context: Any = None) -> asyncio.TimerHandle:  # type: ignore[override]
        if self._late > 0:
            when += self._rng.uniform(0.0, self._late)  # a timer may fire late, never early
        return super().call_at(when, callback, *args, context=context)

    # -- tasks -----------------------------------------------------------------------------------

    def _make_task(self, loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        task = asyncio.Task(coro, loop=loop, **kwargs)
        self.tasks.append(task)
        return task

    def _exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        message = str(context.get("message") or "the event loop reported an error")
        exc = context.get("exception")
        task = context.get("task") or context.get("future")
        where = f"task {task_name(task)}" if isinstance(task, asyncio.Task) else "the event loop"
        if isinstance(exc, BaseException):
            self.trial.record_exception(f"{where} ({message})", exc)
        else:
            self.trial.record_traceback(where, message)

    def unretrieved(self) -> None:
        """Record, as errors, the exceptions of the loop's finished tasks that nobody retrieved
        (asyncio would log them whenever the task is collected, in a later trial)."""
        for task in self.tasks:
            if task.done() and not task.cancelled() and getattr(task, "_log_traceback", False):
                exc = task.exception()  # retrieves it: asyncio will not log it again
                if exc is not None:
                    self.trial.record_exception(f"task {task_name(task)} (its exception was never retrieved)", exc)

    # -- detection -------------------------------------------------------------------------------

    def note_sleep(self, seconds: float, caller: FrameType | None) -> None:
        """A ``time.sleep(seconds)`` called from ``caller`` during a step of this loop, on its thread."""
        if caller is None or caller.f_code.co_filename.startswith(HARNESS_DIR):
            return  # stress's own pause (a forced switch), not the code under test's
        if not self._kept_waiting(None):
            return  # nothing else on the loop yet
        if self.slept == 0.0:
            self.sleep_stack = traceback.extract_stack(caller)
        self.slept += seconds

    def stalled(self, step: asyncio.Handle, wall: float) -> None:
        """Judge a step that took ``wall`` >= `STALL` seconds (module docstring): a finding if it
        slept `STALL` in ``time.sleep``; its CPU time is judged once the iteration ends
        (`_judge_cpu`)."""
        if self.ended or self.trial.stalls:
            return
        if self.slept >= STALL and self.sleep_stack is not None:
            who = _who(step)
            # the task's own frames: below the loop's (asyncio's, stress's) and whatever ran it
            theirs = [i for i, f in enumerate(self.sleep_stack) if f.filename.startswith((HARNESS_DIR, ASYNCIO_DIR))]
            frames = list(self.sleep_stack)[theirs[-1] + 1 if theirs else 0 :]
            last = frames[-1] if frames else self.sleep_stack[-1]
            headline = (
                f"{who} blocked the event loop for {self.slept:.2f} s in time.sleep() at "
                f"{short_path(last.filename)}:{last.lineno} in {last.name}: no other task could run "
                "meanwhile (await asyncio.sleep() lets them)"
            )
            stack = traceback.StackSummary.from_list(frames or list(self.sleep_stack))
            text = f"Stack of {who} when it called time.sleep() (most recent call last):\n" + "".join(stack.format())
            self.trial.stalls.append((headline, text))
        elif not self.traced and (self._long is None or wall > self._long[1]) and self._kept_waiting(step):
            self._long = (step, wall)

    def _kept_waiting(self, step: asyncio.Handle | None) -> bool:
        """Whether anything else on the loop waits now, while ``step`` (None: the current task's)
        runs: another unfinished task, or a callback ready to run. A body that sleeps before it
        starts any task blocks nobody."""
        owner = step_task(step) if step else asyncio.current_task(self)
        loop: Any = self
        return bool(loop._ready) or any(task is not owner and not task.done() for task in self.tasks)

    def _judge_cpu(self, cpu: float) -> None:
        """The iteration with a long step (`stalled`) has ended, having used ``cpu`` seconds of its
        thread's CPU that no other callback of it can have used: a finding if `STALL_CPU` or more."""
        assert self._long is not None
        step, _ = self._long
        self._long = None
        if cpu < STALL_CPU or self.ended or self.trial.stalls:
            return
        owner = step_task(step)
        scope = self.trial.graph.scope if self.trial.graph is not None else Scope()
        line = waits_at_line(owner, scope) if owner is not None and not owner.done() else ""
        until = f"up to its await at {line}" if line else "to its end"
        headline = (
            f"{_who(step)} ran {cpu:.2f} s of CPU without an await, {until}: no other task could run meanwhile "
            "(split the work with awaits, or run it in a thread: asyncio.to_thread())"
        )
        self.trial.stalls.append((headline, ""))

    def _run_once(self) -> None:
        # `BaseEventLoop._run_once` is one iteration: run what is ready, else wait in the selector
        # for a file descriptor or the next timer (the loop's attributes below are its own).
        loop: Any = self
        if not loop._ready and self._idle():
            if self.trial.deadlocked():
                self._unwind()
            else:
                waiting = [t for t in asyncio.all_tasks(self) if not t.done()]
                # Who could wake the loop first, then whether anything is ready (again): a thread that
                # calls into the loop and ends between the two looks would otherwise be missed.
                stuck = self._threads_stuck() if waiting else None
                # A thread of the trial stuck in a wait is seen twice, a slice apart, unchanged: a
                # wait that was about to end is not taken for one that never will.
                confirmed = stuck == () or (stuck is not None and stuck == self._stuck_before)
                self._stuck_before = stuck
                if waiting and confirmed and self._nobody_can_wake() and not loop._ready and self._idle():
                    scope = self.trial.graph.scope if self.trial.graph is not None else Scope()
                    finding = describe(waiting, self.holders, scope)
                    finding += [self._thread_line(ident) for ident, _ in stuck or ()]
                    self.trial.deadlocks.append(finding)
                    if stuck and self.trial.graph is not None:
                        self.trial.graph.abort()  # the stuck threads unwind too
                    self._unwind()
                elif waiting:
                    # Another thread may still call into the loop: look again after a slice. To the
                    # watchdog, the loop's thread is in an untimed wait, as a thread's instrumented
                    # wait is between its looks for a deadlock (its wake-ups are not the trial's).
                    self._waits(True)
                    self._recheck = super().call_at(self.time() + self._slice, _nothing)
                    if self._slice < SLICE_MAX <= self._slice * 2:
                        self._dump_tasks("the loop waits for a thread to wake it")
                    self._slice = min(self._slice * 2, SLICE_MAX)
        else:
            self._waits(False)
            self._slice = SLICE_FIRST
            self._stuck_before = None
            if time.perf_counter() >= self._snapshot_at:
                # running long: should it hang (a livelock of tasks), its dump shows where they are
                self._dump_tasks(f"after {time.perf_counter() - self._began:.1f} s")
                self._snapshot_at = time.perf_counter() + 2 * (self._snapshot_at - self._began)
        self._publish_timer()
        if self.traced:
            _BASE_RUN_ONCE(self)
            return
        # A single thread's CPU time is at most its wall time: what the iteration's other callbacks
        # (and its wait in the selector) can have used is at most the wall time they took.
        cpu, began = time.thread_time(), time.perf_counter()
        _BASE_RUN_ONCE(self)
        if self._long is not None:
            others = time.perf_counter() - began - self._long[1]
            self._judge_cpu(time.thread_time() - cpu - others)

    def _waits(self, waiting: bool) -> None:
        """Tell the watchdog the loop's thread starts or ends its wait for another thread."""
        if waiting != self._waiting:
            self._waiting = waiting
            if _primitives.wait_hook is not None:
                _primitives.wait_hook(1 if waiting else -1)

    def close(self) -> None:
        self._waits(False)
        super().close()

    def _publish_timer(self) -> None:
        """Tell the watchdog when the loop, about to wait, wakes by itself (its earliest live timer):
        a trial awaiting ``asyncio.sleep(1.5)`` is waiting for a timer, not blocked."""
        hook = _pause.timer_hook
        if hook is None:
            return
        loop: Any = self
        when = None
        if not loop._ready:
            live = [h.when() for h in loop._scheduled if not h.cancelled() and h is not self._recheck]
            when = min(live) if live else None
        if when != self._published:
            self._published = when
            hook(when)

    def _dump_tasks(self, when: str) -> None:
        """Write every unfinished task's stack (`Task.get_stack`, down its chain of awaits) into the
        worker's dump (`harness.perturb.pause.dump_hook`), in ``faulthandler``'s format: should the
        trial hang, its dump shows the tasks, which ``faulthandler`` does not (a suspended task is on
        no thread's stack). `harness.detect.thread_dump.parse_dump` reads the last such block."""
        hook = _pause.dump_hook
        if hook is None:
            return
        scope = self.trial.graph.scope if self.trial.graph is not None else Scope()
        lines = [f"{TASKS}({when})"]
        for task in sorted((t for t in asyncio.all_tasks(self) if not t.done()), key=task_name):
            _, awaited, operation, frame = _waits_at(task, scope)
            if isinstance(awaited, _PRIMITIVES):
                what = f", waiting in {_name_of(awaited, frame)}.{operation}()"
            elif isinstance(awaited, asyncio.Future):
                what = f", waiting for {_name_of(awaited, frame)}"
            else:
                what = ""
            lines.append(f"Task {task_name(task)} (most recent call first){what}:")
            frames = [f for f, _ in _await_chain(task) if f is not None]
            lines += [
                f'  File "{f.f_code.co_filename}", line {f.f_lineno} in {f.f_code.co_name}' for f in reversed(frames)
            ]
            lines.append("")
        hook("\n".join(lines) + "\n")

    def _idle(self) -> bool:
        """Nothing ready, no live timer, no file descriptor but the loop's own wake-up pipe, no
        signal handler: only another thread could make anything happen."""
        loop: Any = self
        if any(not handle.cancelled() for handle in loop._scheduled):
            return False
        if getattr(loop, "_signal_handlers", None):
            return False
        own = loop._ssock.fileno()
        return all(fd == own for fd in loop._selector.get_map())

    def _threads_stuck(self) -> tuple[tuple[int, int], ...] | None:
        """The trial's other live threads, each with the primitive it waits on — when every one
        waits, untimed, on an instrumented primitive and is not about to go on (the wait-for graph
        sees it): none of them will call into the loop, which has nothing to run that could release
        them. None: one may still act."""
        graph = self.trial.graph
        if graph is None:
            return None
        me = threading.get_ident()
        stuck = []
        for thread in threading.enumerate():
            ident = thread.ident
            if ident is None or ident == me or ident in graph.preexisting or not thread.is_alive():
                continue
            wait = graph.waiting.get(ident)
            if wait is None or wait.timed or wait.runnable():
                return None
            stuck.append((ident, id(wait.primitive)))
        return tuple(sorted(stuck))

    def _thread_line(self, ident: int) -> str:
        graph = self.trial.graph
        wait = graph.waiting.get(ident) if graph is not None else None
        thread = threading._active.get(ident)  # type: ignore[attr-defined]
        name = thread.name if thread is not None else f"0x{ident:x}"
        what = describe_primitive(wait.primitive) if wait is not None else "something"
        where = graph.where(ident) if graph is not None else ""
        return (
            f"thread {name} waits for {what}{f' at {where}' if where else ''}, and only the loop's tasks could end it"
        )

    def _nobody_can_wake(self) -> bool:
        graph = self.trial.graph
        if graph is None:
            return False  # nothing to tell the trial's threads from others: never guess
        if self._threads_stuck() is None:
            return False  # a thread of the trial still runs (an executor's, a bridge's)
        # A thread `threading` does not list (``_thread.start_new_thread``), a signal timer whose
        # handler is Python code: either may call into the loop.
        return graph.unseen_waker() is None and graph.earlier_thread_may_act() is None

    def _unwind(self) -> None:
        """The trial's outcome is decided (a deadlock, a livelock): cancel every task, so that the
        body ends; a loop whose tasks keep swallowing that is stopped."""
        self.ended = True
        self._cancel_rounds += 1
        if self._cancel_rounds > _CANCEL_ROUNDS:
            self.stop()
            return
        for task in asyncio.all_tasks(self):
            task.cancel()


def step_task(handle: asyncio.Handle) -> asyncio.Task[Any] | None:
    """The task whose step ``handle`` runs (its callback is the task's bound step or wake-up), or
    None for another callback."""
    owner = getattr(getattr(handle, "_callback", None), "__self__", None)
    return owner if isinstance(owner, asyncio.Task) else None


def _who(step: asyncio.Handle) -> str:
    """Whose step ``step`` is: ``task fetch#0``, or ``a callback`` (not a task's)."""
    owner = step_task(step)
    return f"task {task_name(owner)}" if owner is not None else "a callback"


def _callable_name(callback: Any) -> str:
    name = getattr(callback, "__qualname__", None) or getattr(callback, "__name__", None) or repr(callback)
    return str(name)


def _nothing() -> None:
    pass


_BASE_RUN_ONCE: Callable[[asyncio.AbstractEventLoop], None] = asyncio.base_events.BaseEventLoop._run_once  # type: ignore[attr-defined]


# -- what waits for what ---------------------------------------------------------------------------

_PRIMITIVES: tuple[type, ...] = (
    asyncio.Lock,
    asyncio.Semaphore,
    asyncio.Event,
    asyncio.Condition,
    asyncio.Queue,
    *((asyncio.Barrier,) if hasattr(asyncio, "Barrier") else ()),
)


def task_name(task: Any) -> str:
    """A task's name: the one it was given, else its coroutine's function (``Task-3`` says nothing)."""
    name = str(task.get_name()) if isinstance(task, asyncio.Task) else "?"
    if name.startswith("Task-") or name == "None":  # 3.13.0 names a factory-made task None
        coro = task.get_coro()
        function = str(getattr(coro, "__qualname__", None) or getattr(coro, "__name__", name))
        name = function.rpartition(".<locals>.")[2] or function
    return name


def _await_chain(task: asyncio.Task[Any]) -> Iterator[tuple[FrameType | None, Any]]:
    """(frame, awaited) down the task's chain of awaits: each coroutine's frame and what it awaits."""
    coro: Any = task.get_coro()
    for _ in range(100):
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        awaited = getattr(coro, "cr_await", None)
        if awaited is None:
            awaited = getattr(coro, "gi_yieldfrom", None)
        yield frame, awaited
        if awaited is None or not (hasattr(awaited, "cr_frame") or hasattr(awaited, "gi_frame")):
            return
        coro = awaited


def _waits_at(task: asyncio.Task[Any], scope: Scope) -> tuple[str, Any, str, FrameType | None]:
    """Where ``task`` waits in the code under test (``file:line in fn``), the primitive, task or
    future it waits for (None: nothing known), the primitive's operation it is in (``join``; '' for
    a task or a future), and the frame that awaits it."""
    line, primitive, operation, user_frame = "", None, "", None
    for frame, awaited in _await_chain(task):
        if frame is not None:
            if scope.contains_file(frame.f_code.co_filename) or not frame.f_code.co_filename.startswith(
                (HARNESS_DIR, ASYNCIO_DIR)
            ):
                line = f"{short_path(frame.f_code.co_filename)}:{frame.f_lineno} in {frame.f_code.co_name}"
                user_frame = frame
            owner = frame.f_locals.get("self")
            if (
                isinstance(owner, _PRIMITIVES)
                and primitive is None
                and not frame.f_code.co_filename.startswith(HARNESS_DIR)
            ):
                primitive, operation = owner, frame.f_code.co_name  # asyncio's own, not stress's wrapper
                if operation == "__aenter__":  # `async with lock:`
                    operation = "acquire"
        if primitive is None and isinstance(awaited, asyncio.Future):
            primitive = awaited
    waiter = getattr(task, "_fut_waiter", None)
    if primitive is None and isinstance(waiter, asyncio.Future):
        primitive = waiter
    return line, primitive, operation, user_frame


def _why_stuck(primitive: Any, operation: str) -> str:
    """Why nothing will end a wait in ``primitive.operation()`` once every task waits."""
    if isinstance(primitive, asyncio.Queue):
        if operation == "join":
            count = int(getattr(primitive, "_unfinished_tasks", 0))
            items = "item was" if count == 1 else "items were"
            return f"{count} {items} never marked done (task_done())"
        return "the queue is full" if operation == "put" else "the queue is empty"
    if isinstance(primitive, asyncio.Event):
        return "nobody is left to set it"
    if isinstance(primitive, asyncio.Condition):
        return "nobody is left to notify it"
    if isinstance(primitive, asyncio.Semaphore):
        return "no permit is left, and nobody is left to release one"
    if isinstance(primitive, asyncio.Lock):
        return "it is held, and its holder is not running"
    if hasattr(asyncio, "Barrier") and isinstance(primitive, asyncio.Barrier):
        return f"{primitive.n_waiting} of {primitive.parties} parties arrived"
    return "nobody is left to complete it"


ASYNCIO_DIR = asyncio.__file__.rpartition("/")[0]


def name_in_caller(obj: Any) -> str:
    """What the code under test calling into a primitive now calls it (`_name_of`, in the innermost
    frame outside stress and asyncio)."""
    frame: FrameType | None = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith((HARNESS_DIR, ASYNCIO_DIR)):
        frame = frame.f_back
    return _name_of(obj, frame)


def waits_at_line(task: asyncio.Task[Any], scope: Scope) -> str:
    """``file:line in fn``: where ``task`` waits in the code under test ('' if nowhere known)."""
    return _waits_at(task, scope)[0]


def _name_of(obj: Any, frame: FrameType | None) -> str:
    """What the code under test calls ``obj`` where it waits: a variable (``lock_a``; one of an
    enclosing function's before the waiting function's own, which may be an alias such as ``first``),
    an attribute of one (``self.lock``), else its kind (``an asyncio.Lock``)."""
    if frame is not None:
        names = frame.f_locals
        outer = frame.f_code.co_freevars
        for name in (*outer, *(n for n in names if n not in outer)):
            if names.get(name) is obj:
                return name
        for name, value in names.items():
            attributes = getattr(value, "__dict__", None)
            if isinstance(attributes, dict):
                for attribute, inner in attributes.items():
                    if inner is obj:
                        return f"{name}.{attribute}"
    kind = type(obj).__name__
    if kind == "_GatheringFuture":
        return "a gather() of its tasks"
    return f"an asyncio.{kind}" if type(obj).__module__.startswith("asyncio") else f"a {kind}"


def describe(
    waiting: list[asyncio.Task[Any]],
    holders: weakref.WeakKeyDictionary[asyncio.Lock, tuple[asyncio.Task[Any] | None, str]],
    scope: Scope,
) -> list[str]:
    """The finding of a deadlocked loop: a headline (the cycle of lock and task waits through the
    waiting tasks, when there is one; else every waiting task and what it waits for), then one line
    per waiting task."""
    names = {task: task_name(task) for task in waiting}
    edges: dict[asyncio.Task[Any], tuple[asyncio.Task[Any], str]] = {}
    lines: list[str] = []
    short: list[str] = []
    for task in sorted(waiting, key=lambda t: names[t]):
        where, awaited, operation, frame = _waits_at(task, scope)
        if awaited in GROUPS:
            continue  # the body, waiting for the tasks it started
        at = f" at {where}" if where else ""
        if isinstance(awaited, asyncio.Lock) and operation == "acquire":
            label = _name_of(awaited, frame)
            holder, taken = holders.get(awaited, (None, ""))
            took = f" at {taken}" if taken else ""
            if holder is not None and holder in names:
                edges[task] = (holder, f"waits for {label} held by {names[holder]}")
                lines.append(f"{names[task]} waits for {label}{at}; {names[holder]} took it{took}")
                short.append(f"{names[task]} waits for {label}")
            elif holder is not None and holder.done():
                ended = "was cancelled" if holder.cancelled() else "ended"
                lines.append(
                    f"{names[task]} waits for {label}{at}; task {task_name(holder)} took it{took} and {ended} "
                    "without releasing it"
                )
                short.append(f"{names[task]} waits for {label}, left held by task {task_name(holder)}")
            else:
                lines.append(f"{names[task]} waits for {label}{at}: {_why_stuck(awaited, operation)}")
                short.append(f"{names[task]} waits for {label}")
        elif isinstance(awaited, asyncio.Task):
            other = names.get(awaited, task_name(awaited))
            if awaited in names:
                edges[task] = (awaited, f"waits for task {other}")
            lines.append(f"{names[task]} waits for task {other} to finish{at}")
            short.append(f"{names[task]} waits for task {other}")
        elif isinstance(awaited, _PRIMITIVES):
            call = f"{_name_of(awaited, frame)}.{operation}()"
            lines.append(f"{names[task]} waits in {call}{at}: {_why_stuck(awaited, operation)}")
            short.append(f"{names[task]} in {call}")
        elif awaited is not None:
            label = _name_of(awaited, frame)
            lines.append(f"{names[task]} waits for {label}{at}: {_why_stuck(awaited, operation)}")
            short.append(f"{names[task]} waits for {label}")
        else:
            lines.append(f"{names[task]} waits{at}")
            short.append(f"{names[task]} waits")
    cycle = _cycle(edges)
    if cycle:
        headline = " → ".join(f"{names[task]} {edges[task][1]}" for task in cycle)
    else:
        more = f", and {len(short) - 3} more" if len(short) > 3 else ""
        headline = "every task waits and nothing can wake them: " + ", ".join(short[:3]) + more
    return [headline, *lines]


def _cycle(edges: dict[asyncio.Task[Any], tuple[asyncio.Task[Any], str]]) -> list[asyncio.Task[Any]]:
    """The first cycle of ``edges`` (each task waits for at most one other), in wait order."""
    for start in edges:
        path: list[asyncio.Task[Any]] = []
        seen: set[asyncio.Task[Any]] = set()
        current: asyncio.Task[Any] | None = start
        while current is not None and current in edges and current not in seen:
            seen.add(current)
            path.append(current)
            current = edges[current][0]
        if current is not None and current in seen:
            return path[path.index(current) :]
    return []


# -- the primitives' operations ---------------------------------------------------------------------


def _loop_of_trial() -> StressLoop | None:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    return loop if isinstance(loop, StressLoop) else None


def _where_taken() -> str:
    """``file:line in fn`` of the innermost frame of the code under test calling a primitive."""
    frame: FrameType | None = sys._getframe(2)
    while frame is not None and frame.f_code.co_filename.startswith((HARNESS_DIR, ASYNCIO_DIR)):
        frame = frame.f_back
    if frame is None:
        return ""
    return f"{short_path(frame.f_code.co_filename)}:{frame.f_lineno} in {frame.f_code.co_name}"


def _rebind(primitive: Any) -> None:
    """A primitive made before the trial (a module's ``LOCK = asyncio.Lock()``) binds to the first
    loop that uses it; each trial has a loop of its own, so it would be "bound to a different event
    loop" in every trial but the first. One whose loop is an earlier trial's, closed, is the
    running loop's now, as it would be in a program that runs one loop."""
    bound = getattr(primitive, "_loop", None)
    if isinstance(bound, StressLoop) and bound.is_closed():
        primitive._loop = None


def _would_suspend(primitive: Any, operation: str) -> bool:
    """Whether asyncio's ``primitive.operation()`` suspends the task now (its primitive is not
    ready); asyncio documents that one on a ready primitive returns at once."""
    if isinstance(primitive, asyncio.Lock) and operation == "acquire":
        return primitive.locked() or bool(getattr(primitive, "_waiters", None))
    if isinstance(primitive, asyncio.Semaphore) and operation == "acquire":
        return primitive.locked()
    if isinstance(primitive, asyncio.Event) and operation == "wait":
        return not primitive.is_set()
    if isinstance(primitive, asyncio.Queue):
        if operation == "put":
            return primitive.full()
        if operation == "get":
            return primitive.empty()
        if operation == "join":
            return bool(getattr(primitive, "_unfinished_tasks", 0))
    return True  # Condition.wait and Barrier.wait always do (but for a barrier's last party)


def _inside_asyncio(caller: FrameType | None) -> bool:
    """Whether a primitive's operation is asyncio's own, inside another one (`Queue.join` waits on
    an Event, `Condition.wait` takes its lock back): only the operation the code under test asked
    for is a point. ``async with lock:`` is the code's, through asyncio's ``__aenter__``."""
    return (
        caller is not None
        and caller.f_code.co_filename.startswith(ASYNCIO_DIR)
        and caller.f_code.co_name != "__aenter__"
    )


def _stepping_out(original: Callable[..., Awaitable[Any]]) -> Callable[..., Coroutine[Any, Any, Any]]:
    @functools.wraps(original)
    async def operation(self: Any, *args: Any, **kwargs: Any) -> Any:
        loop = _loop_of_trial()
        if loop is not None:
            _rebind(self)
            if not _inside_asyncio(sys._getframe(1)):
                await loop.point(self, original.__name__)
        return await original(self, *args, **kwargs)

    return operation


def _lock_acquire(original: Callable[..., Awaitable[bool]]) -> Callable[..., Coroutine[Any, Any, bool]]:
    @functools.wraps(original)
    async def acquire(self: asyncio.Lock) -> bool:
        loop = _loop_of_trial()
        if loop is None:
            return await original(self)
        _rebind(self)
        where = _where_taken()
        nested = _inside_asyncio(sys._getframe(1))
        if not nested:
            await loop.point(self, "acquire")
        got = await original(self)
        if got:
            task = asyncio.current_task()
            loop.holders[self] = (task, where)
            try:
                if not nested:
                    await loop.taken(self)
            except asyncio.CancelledError:
                # asyncio's acquire() cannot be cancelled once the lock is the task's: it returns
                # holding it. A cancellation that reached the task while it stood aside here is
                # the task's again, for its next await to raise.
                if task is not None:
                    task.uncancel()
                    task.cancel()
        return got

    return acquire


def _lock_release(original: Callable[[asyncio.Lock], None]) -> Callable[[asyncio.Lock], None]:
    @functools.wraps(original)
    def release(self: asyncio.Lock) -> None:
        original(self)
        loop = _loop_of_trial()
        if loop is not None:
            loop.holders.pop(self, None)

    return release


def _operations() -> list[tuple[type, str, Callable[[Any], Any]]]:
    ops: list[tuple[type, str, Callable[[Any], Any]]] = [
        (asyncio.Lock, "acquire", _lock_acquire),
        (asyncio.Lock, "release", _lock_release),
        (asyncio.Semaphore, "acquire", _stepping_out),
        (asyncio.Event, "wait", _stepping_out),
        (asyncio.Condition, "wait", _stepping_out),
        (asyncio.Queue, "put", _stepping_out),
        (asyncio.Queue, "get", _stepping_out),
        (asyncio.Queue, "join", _stepping_out),
    ]
    if hasattr(asyncio, "Barrier"):
        ops.append((asyncio.Barrier, "wait", _stepping_out))
    return ops


_originals: list[tuple[Any, str, Any]] = []


def _sleeping(seconds: float, caller: FrameType | None) -> None:
    loop = _stepping
    if loop is not None and loop._thread_id == threading.get_ident():  # type: ignore[attr-defined]
        loop.note_sleep(seconds, caller)


#: ``time.sleep`` itself. During a trial it is wrapped, in the ``time`` module and wherever the code
#: under test bound it by name (``from time import sleep``; `_sleep_names`). Not through its audit
#: event (3.13): a Python audit hook, which stays for the life of the process, makes two threads'
#: ``sys.settrace`` calls at once raise ``RuntimeError`` on 3.11 — and stress's own primitives
#: call it (`harness.perturb.preempt.suspend`).
_real_sleep = time.sleep


def _wrapped_sleep(seconds: float) -> None:
    _sleeping(seconds, sys._getframe(1))
    _real_sleep(seconds)


#: The scope and number of loaded modules `_sleep_names` last looked at, and what it found there.
_sleep_bound: tuple[Scope | None, int, list[tuple[Any, str]]] = (None, -1, [])


def _sleep_names(scope: Scope) -> list[tuple[Any, str]]:
    """(module, name) of every ``time.sleep`` the modules of the code under test hold by name."""
    global _sleep_bound
    modules = list(sys.modules.values())
    if _sleep_bound[0] is not scope or _sleep_bound[1] != len(modules):
        found = []
        for module in modules:
            file = getattr(module, "__file__", None)
            if isinstance(file, str) and scope.contains_file(file):
                found += [(module, name) for name, value in vars(module).items() if value is _real_sleep]
        _sleep_bound = (scope, len(modules), found)
    return _sleep_bound[2]


def install(scope: Scope | None = None) -> None:
    """Wrap the asyncio primitives' operations (module docstring) for the length of a coroutine
    trial; `uninstall` puts the originals back. Outside a `StressLoop` they do what they always do.

    ``time.sleep`` is wrapped too, in ``time`` and in the modules of ``scope`` that bound it by
    name: a step that sleeps is counted (`StressLoop.stalled`)."""
    if _originals:
        return
    for module, name in [(time, "sleep"), *(_sleep_names(scope) if scope is not None else ())]:
        _originals.append((module, name, _real_sleep))
        setattr(module, name, _wrapped_sleep)
    for cls, name, wrap in _operations():
        original = cls.__dict__[name]
        _originals.append((cls, name, original))
        setattr(cls, name, wrap(original))


def uninstall() -> None:
    while _originals:
        cls, name, original = _originals.pop()
        setattr(cls, name, original)


# -- running a coroutine variant -------------------------------------------------------------------


def run_body(
    fn: Callable[[TrialT], Coroutine[Any, Any, Any]],
    trial: TrialT,
    make_loop: Callable[[], StressLoop] | None = None,
    *,
    may_suspend: bool = False,
) -> int:
    """Run the coroutine variant ``fn(trial)`` to its end on a fresh `StressLoop` (or the one
    ``make_loop`` makes: controlled mode's). Returns the number of forced step-outs (the trial's
    switches).

    Raises what the body raises, but not what follows a decided outcome (a deadlock, a livelock:
    the body's end after it is a consequence, not a finding)."""
    install(trial.graph.scope if trial.graph is not None else None)
    loop_box: list[StressLoop] = []

    def factory() -> StressLoop:
        loop = make_loop() if make_loop is not None else StressLoop(trial, may_suspend=may_suspend)
        loop_box.append(loop)
        return loop

    try:
        with asyncio.Runner(loop_factory=factory) as runner, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", RuntimeWarning)
            try:
                runner.run(fn(trial))
            except asyncio.CancelledError:
                # The body ended with a cancellation stress injected into one of its tasks
                # (``--cancel``), passed on: its checks did not run, and nothing is judged broken.
                if not trial.deadlocked() and not any(loop.cancels or loop.ended for loop in loop_box):
                    raise
            except (DeadlockError, RuntimeError):
                if not trial.deadlocked() and not any(loop.ended for loop in loop_box):
                    raise
            finally:
                for loop in loop_box:
                    loop.unretrieved()
                for warning in caught:
                    if "was never awaited" in str(warning.message):
                        # `trial.run_tasks(...)` without `await`: its tasks never ran
                        trial.record_traceback(
                            "the variant",
                            f"RuntimeWarning: {warning.message} ({short_path(warning.filename)}:{warning.lineno})",
                        )
    finally:
        uninstall()
        if _pause.timer_hook is not None:
            _pause.timer_hook(None)
    return sum(loop.steps_out for loop in loop_box)


#: The futures `harness.trial.TaskGroup` waits on for its tasks: the body's wait there is stress's,
#: not a finding.
GROUPS: weakref.WeakSet[asyncio.Future[Any]] = weakref.WeakSet()


def start_iterations(delay: float) -> int:
    """A task's start delay (``jitter``), as loop iterations it waits before its first step: one per
    `START_STEP` of delay, at most `START_MOST`. A timer would be no delay at all between tasks whose
    steps take microseconds: the first task would finish before a sleeping one woke."""
    return min(START_MOST, math.ceil(delay / START_STEP)) if delay > 0 else 0

"""The controlled scheduler: one thread at a time, every switch a recorded choice.

Each managed thread owns a *baton* (a raw lock it blocks on while it is not its turn). The running
thread, and only it, executes the scheduler's code: at every scheduling point it asks the strategy
who runs next and, if it is someone else, releases that thread's baton and blocks on its own. So no
Python code of the code under test ever runs in two threads at once, and the interleaving is exactly
the sequence of choices.

The managed threads are the thread running the variant body (number 0) and every thread started
while a managed thread runs — by the trial's actors API, by the code under test with
``threading.Thread``, by a ``Timer`` or a ``ThreadPoolExecutor`` — numbered in the order they start,
so that a schedule names the same threads on every replay. When the body returns, the scheduler
waits, like an interpreter at exit, for the non-daemon threads it started (with the grace stress
mode gives them), then unwinds whatever is left.

Scheduling points are every instruction (or line) of the code under test, every operation of an
instrumented primitive, a thread's start, and ``time.sleep``. A thread that must wait (a lock held
by another, a condition not yet notified, a join, a sleep) is *blocked* with a readiness test; it can
be chosen again once the test passes. Time is virtual: when nothing can run but somebody waits with a
timeout or sleeps, the clock jumps to the earliest deadline. When nothing can run and nobody will
ever wake, that is a deadlock — found at once, described by the wait-for graph, and unwound by raising
`DeadlockError` in the blocked threads one at a time. A schedule longer than the step limit is a
livelock (or, when its threads kept changing state, too long to schedule: undecided).

What the scheduler cannot see it says: when the running thread blocks where it has no model of the
wait (``select``, a socket, a subprocess, a lock made before the trial that nobody adopted), the
watchdog (`harness.controlled.watchdog`) calls `release`: the schedule is *unsupported*, every thread
goes on unscheduled, as in stress mode, and the trial ends as it would there.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from _thread import allocate_lock, get_ident
from collections.abc import Callable
from types import CodeType, FrameType
from typing import Any

from harness.controlled.schedule import Decision
from harness.controlled.strategies import Strategy, default_choice
from harness.detect.wait_graph import Deadlock, DeadlockError, WaitGraph, describe_primitive

__all__ = ["EXIT_GRACE", "LivelockError", "Managed", "Scheduler", "Step", "ThreadAbandoned"]

RUNNABLE, BLOCKED, DONE = "runnable", "blocked", "done"

#: Virtual seconds the body's end waits for the non-daemon threads it started (stress mode's grace).
EXIT_GRACE = 0.2
#: Real seconds a thread left at the body's end may take to unwind before it is given up on.
UNWIND_SECONDS = 2.0

#: One recorded step: the name of the thread that ran it, where (a code object and an instruction
#: offset, or minus the line number when the point came from a line or a primitive), and what
#: primitive operation it was ("" for plain code).
Step = tuple[str, CodeType | None, int, str]

_real_sleep = time.sleep
_real_monotonic = time.monotonic


class LivelockError(DeadlockError):
    """Raised in the actors of a schedule that ran past its step limit, to unwind them."""


class ThreadAbandoned(BaseException):
    """Raised in a thread still blocked when the variant body has ended, to unwind it."""


class Managed:
    """A thread under the scheduler's control."""

    __slots__ = (
        "baton",
        "daemon",
        "deadline",
        "harness",
        "ident",
        "index",
        "name",
        "native_id",
        "parked",
        "quiet",
        "ready",
        "registered",
        "state",
        "thread",
        "waits_for",
    )

    def __init__(self, index: int, name: str, *, daemon: bool = False, thread: threading.Thread | None = None) -> None:
        self.index = index
        self.name = name
        self.daemon = daemon
        self.thread = thread
        self.ident = 0
        self.native_id = 0
        self.baton = allocate_lock()
        self.baton.acquire()
        #: Released by the thread once it is registered (its starter waits for it).
        self.registered = allocate_lock()
        self.registered.acquire()
        self.state = RUNNABLE
        self.ready: Callable[[], bool] | None = None
        self.deadline: float | None = None
        #: Inside `harness.atomic` blocks: no scheduling points.
        self.quiet = 0
        #: Blocked on its baton, waiting for its turn.
        self.parked = False
        #: Inside a real wait of the harness's own (a start handshake, a finished thread's join).
        self.harness = 0
        #: What a blocked thread waits for beyond the wait-for graph: a `Managed` it joins, or a
        #: ``concurrent.futures.Future``.
        self.waits_for: Any = None

    def enabled(self, now: float) -> bool:
        if self.state == RUNNABLE:
            return True
        if self.state != BLOCKED:
            return False
        if self.ready is not None and self.ready():
            return True
        return self.deadline is not None and now >= self.deadline


class Scheduler:
    """Runs the managed threads of one trial one step at a time under ``strategy``.

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
        self.by_thread: dict[int, Managed] = {}
        self.current: Managed | None = None
        #: Managed threads not yet done.
        self.live = 0
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
        #: Why the schedule could not be finished (it was too long to tell a livelock): undecided.
        self.too_long: str | None = None
        self.aborting = False
        #: Why the scheduler let go of its threads (`release`): the schedule is unsupported.
        self.unsupported: str | None = None
        self.released = False
        #: The body has ended: the threads still here are being unwound one at a time.
        self.unwinding = False
        #: Threads the code under test started and left running, which the end of the schedule
        #: ended (`end_body`): the process is not the one the code built, and runs no more trials.
        self.abandoned: list[str] = []
        #: Non-daemon threads still blocked when the body ended (and its grace was over).
        self.left_running: list[str] = []
        #: Threads that did not unwind in time: they run on, unscheduled.
        self.given_up: list[str] = []
        #: Per-trial numbering of default thread names (``Thread-N``, ``ThreadPoolExecutor-N_M``).
        self.names: dict[str, int] = {}
        self._main = allocate_lock()
        self._main.acquire()
        self._release_lock = allocate_lock()
        #: The watchdog's last look at a running thread that seemed blocked (see `look`).
        self._look: tuple[Any, ...] | None = None
        #: Called once when the schedule becomes unsupported (the worker tells its parent).
        self.on_unsupported: Callable[[str], None] | None = None
        #: Describes a deadlock among ``blocked`` threads, joins and futures included
        #: (`harness.controlled.threads.describe_deadlock`); None: the wait-for graph alone.
        self.describe_deadlock: Callable[[Scheduler, list[Managed]], Deadlock] | None = None
        #: Whether blocked threads wait for each other in a cycle (`harness.controlled.threads.in_a_cycle`).
        self.in_a_cycle: Callable[[Scheduler, list[Managed]], bool] | None = None

    # -- the threads -------------------------------------------------------------------------------

    def adopt_body(self) -> Managed:
        """Make the calling thread — the one about to run the variant body — thread 0, running."""
        thread = threading.current_thread()
        body = Managed(0, thread.name, thread=thread)
        body.ident, body.native_id = get_ident(), threading.get_native_id()
        body.registered.release()
        self._add(body)
        self.by_ident[body.ident] = body
        self.current = body
        return body

    def takes(self, thread: threading.Thread) -> bool:
        """Whether a thread about to be started by the calling thread is to be scheduled: it is, when
        a managed thread starts it during the schedule."""
        me = self.by_ident.get(get_ident())
        return me is not None and me is self.current and not (self.released or self.unwinding or self.aborting)

    def spawn(self, thread: threading.Thread, name: str) -> Managed:
        """Register ``thread`` (about to start) as the next managed thread."""
        managed = Managed(len(self.threads), name, daemon=thread.daemon, thread=thread)
        self._add(managed)
        self.by_thread[id(thread)] = managed
        return managed

    def _add(self, managed: Managed) -> None:
        self.threads.append(managed)
        self.live += 1
        add = getattr(self.strategy, "add_thread", None)
        if add is not None:
            add(managed.index)

    def managed(self, thread: threading.Thread) -> Managed | None:
        found = self.by_thread.get(id(thread))
        return found if found is not None and found.thread is thread else None

    def enter(self, managed: Managed) -> None:
        """First thing a started thread does: register, and wait for its first turn."""
        managed.ident = get_ident()
        managed.native_id = threading.get_native_id()
        self.by_ident[managed.ident] = managed
        managed.registered.release()
        self._park(managed)
        self._raise_if_unwinding()

    def leave(self, managed: Managed) -> None:
        """Last thing a started thread does: hand the baton on."""
        managed.state = DONE
        self.live -= 1
        self.by_ident.pop(managed.ident, None)
        if self.released:
            return
        if self.unwinding:
            self.current = None
            self._main.release()
            return
        nxt = self._next(managed)
        if self.let_go():  # given up meanwhile: every thread goes on by itself
            return
        self.switches += 1
        self.current = nxt
        nxt.baton.release()

    def end_body(self) -> None:
        """The variant body has returned (or raised): wait, as an interpreter does at exit, for the
        non-daemon threads it started — with `EXIT_GRACE` of virtual time, as stress mode gives —
        then unwind, one at a time, every thread still here (`ThreadAbandoned`, or `DeadlockError`
        after a deadlock). Non-daemon threads that were left blocked are `left_running`."""
        body = self.threads[0] if self.threads else None
        if body is None or body.state == DONE:
            return
        others = self.threads[1:]
        if not (self.released or self.aborting):
            # A livelock among the others, declared meanwhile, raises here: they unwind below.
            with contextlib.suppress(DeadlockError):
                self.block(lambda: all(m.state == DONE or m.daemon for m in others), self.now + EXIT_GRACE)
        body.state = DONE
        self.live -= 1
        if self.released:
            return
        left = [m for m in others if m.state != DONE]
        stuck = [m for m in left if m.state == BLOCKED and m.deadline is None and m.ready is not None and not m.ready()]
        cycle = self.in_a_cycle
        exits = all(m.daemon for m in stuck)
        if not (self.aborting or exits) and len(stuck) == len(left) and cycle is not None and cycle(self, stuck):
            # Threads left waiting for each other, one of them not a daemon: the process could
            # never exit. A deadlock, with its cycle, not just threads left blocked.
            self._declare_deadlock(stuck[0])
        if not self.aborting:
            self.left_running = [m.name for m in left if not m.daemon and not _idle_pool_worker(m)]
        # Ended by the unwinding below (after a deadlock too), though the code under test may have
        # meant them to go on: a module's background thread started on first use.
        self.abandoned = [m.name for m in left]
        self.unwinding = True
        for managed in left:
            if managed.state == DONE:
                continue
            self.current = managed
            _release(managed.baton)
            if not self._main.acquire(timeout=UNWIND_SECONDS):
                self.given_up.append(managed.name)
                break
        self.current = None

    # -- scheduling points -------------------------------------------------------------------------

    def point(self, code: CodeType | None = None, offset: int = 0, what: str = "") -> None:
        """A place where another thread may take over. Raises `LivelockError` once the schedule
        ran past the step limit: a thread that never blocks can only be stopped where it runs."""
        me = self.by_ident.get(get_ident())
        if me is None or me is not self.current or me.quiet or self.released or self.unwinding:
            return  # unwinding raises at waits only: a point may be in a finally or a with's exit
        if self.aborting:
            if self.livelock is not None or self.too_long is not None:
                raise LivelockError(*self._deadlock_args())
            return
        if self.live < 2:
            return  # nobody to switch to: not a step of any interleaving
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
        step = (me.name, code, offset, what)
        if self.step > self.step_limit:
            self.steps.append(step)
            self._declare_livelock()
            raise LivelockError(*self._deadlock_args())
        # What a point marks is done already at a point that follows it (``took lock_a``): it is a
        # step before any switch made there. Any other point comes before what it marks.
        done = what.startswith("took ")
        if done:
            self.steps.append(step)
        chosen = self._choose(me, self._enabled(me))
        if chosen is not me:
            self._hand_over(me, chosen)
            if self.livelock is not None or self.too_long is not None:
                raise LivelockError(*self._deadlock_args())
        # The instruction at this point runs now, once this thread has the baton again: after the
        # other threads' steps, not before them (a read-modify-write whose write is switched out
        # would read as whole, before the switch, in the trace).
        if not done:
            self.steps.append(step)

    def primitive_point(self, primitive: Any, operation: str) -> None:
        """A scheduling point at an operation of an instrumented primitive (named in the trace:
        ``lock_a.acquire()``)."""
        me = self.by_ident.get(get_ident())
        if me is None or me is not self.current or self.aborting or me.quiet or self.released:
            return
        # Asking for a lock and having it are two points: a switch between them leaves the lock
        # free, a switch after ``took`` leaves it held — the trace says which.
        name = describe_primitive(primitive)
        self.point(what=f"took {name}" if operation == "acquired" else f"{name}.{operation}()")

    def quiet(self, delta: int) -> None:
        """Enter (+1) or leave (-1) an `harness.atomic` block in the calling thread."""
        me = self.by_ident.get(get_ident())
        if me is not None:
            me.quiet += delta

    def harness_wait(self, delta: int) -> None:
        """Enter (+1) or leave (-1) a real wait of the harness's own in the calling thread (the
        watchdog leaves it alone)."""
        me = self.by_ident.get(get_ident())
        if me is not None:
            me.harness += delta

    def block(
        self,
        ready: Callable[[], bool],
        deadline: float | None,
        *,
        released: Callable[[float | None], bool] | None = None,
    ) -> bool:
        """Wait until ``ready()`` (True) or, with a deadline, until virtual time reaches it (False).
        Raises `DeadlockError` when the trial is being unwound after a deadlock (`ThreadAbandoned`
        when the body has ended). A thread the scheduler does not run makes the schedule
        unsupported, and waits for real. Once the scheduler has let go of the threads (`release`),
        the wait is ``released(seconds)`` — the real time left, None for none — if given (a wait
        the wait-for graph watches, as in stress mode), else a plain real one."""
        me = self.by_ident.get(get_ident())
        if me is None and not self.released:
            name = threading.current_thread().name
            self.release(
                f"{name}, a thread the controlled scheduler does not run (started before the trial, or "
                "not with threading.Thread), waited on a primitive of the code under test"
            )
        if me is None or self.released:
            return self._after_release(ready, deadline, released)
        self._raise_if_unwinding()
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
                if self.let_go():  # the watchdog released the threads while this one was parked
                    return self._after_release(ready, deadline, released)
                self._raise_if_unwinding()
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
        if self.released:
            _real_sleep(seconds)
            return
        if seconds <= 0:
            self.point(what="sleep(0)")
            return
        self.block(lambda: False, self.now + seconds)

    def timeout_deadline(self, timeout: float) -> float | None:
        return None if timeout < 0 else self.now + timeout

    def join(self, thread: threading.Thread, timeout: float | None) -> bool | None:
        """``thread.join(timeout)`` by a managed thread: a wait the scheduler runs (True when
        ``thread`` is done, False when the virtual timeout passed first). None: not a join the
        scheduler can run — the caller joins for real (an unmanaged thread's join makes the
        schedule unsupported, since nothing here can tell when it ends)."""
        me = self.by_ident.get(get_ident())
        if me is None or self.released or self.unwinding:
            return None
        target = self.managed(thread)
        if target is None:
            if thread.is_alive() and thread is not threading.current_thread():
                self.release(
                    f"{me.name} joined {thread.name}, a thread the controlled scheduler does not run "
                    "(it was started before the trial)"
                )
            return None
        if target is me:
            return None  # the real join raises RuntimeError
        self.point(what=f"{target.name}.join()")
        if target.state == DONE:
            return True
        timed = timeout is not None
        if not timed:
            self.graph.add_joiner(me.ident, thread)
        me.waits_for = target
        try:
            return self.block(lambda: target.state == DONE, None if timeout is None else self.now + max(timeout, 0.0))
        finally:
            me.waits_for = None
            if not timed:
                self.graph.remove_joiner(me.ident)

    # -- letting go --------------------------------------------------------------------------------

    def release(self, why: str) -> None:
        """Give up scheduling: the schedule is unsupported (``why``), and every managed thread goes
        on unscheduled — its waits become real ones — so that the trial ends as it would in stress
        mode. Safe to call from any thread (the watchdog's, an unmanaged one)."""
        with self._release_lock:
            if self.released:
                return
            self.unsupported = why
            self.released = True
            for managed in self.threads:
                if managed.parked:
                    _release(managed.baton)
        if self.on_unsupported is not None:
            self.on_unsupported(why)

    def look(self, now: float) -> None:
        """One look by the watchdog: is the running thread blocked where the scheduler cannot see?
        It is when, across looks spanning `BLOCKED_FOR` seconds, the thread sleeps in the kernel
        (state ``S`` in ``/proc``), used no CPU, and stayed at the same instruction with no
        scheduling step taken: it waits in a call — ``select``, a socket, a lock made outside the
        trial — that only something outside the schedule can end. Then `release`."""
        current = self.current
        if current is None or self.released or self.unwinding or current.parked or current.harness:
            self._look = None
            return
        frame = sys._current_frames().get(current.ident)
        where = (
            current.index,
            self.step,
            self.switches,
            id(frame.f_code) if frame else 0,
            frame.f_lasti if frame else 0,
        )
        state, cpu = task_state(current.native_id)
        if state != "S":
            self._look = None
            return
        previous = self._look
        if previous is None or previous[0] != where or previous[1] != cpu:
            self._look = (where, cpu, now, 1)
            return
        looks = previous[3] + 1
        self._look = (where, cpu, previous[2], looks)
        needed = BLOCKED_FOR if cpu is not None else BLOCKED_FOR_WITHOUT_CPU
        if looks >= 4 and now - previous[2] >= needed and self.current is current and not current.parked:
            self.release(_unseen_wait(current.name, frame, self.graph))

    def let_go(self) -> bool:
        """Whether `release` was called."""
        return self.released

    def _after_release(
        self, ready: Callable[[], bool], deadline: float | None, released: Callable[[float | None], bool] | None
    ) -> bool:
        if released is None:
            return self._real_wait(ready, deadline)
        return released(None if deadline is None else max(0.0, deadline - self.now))

    def _real_wait(self, ready: Callable[[], bool], deadline: float | None) -> bool:
        """After `release`: wait for ``ready()`` in real time (a virtual deadline counts from now)."""
        end = None if deadline is None else _real_monotonic() + max(0.0, deadline - self.now)
        pause = 0.0002
        while not ready():
            if end is not None and _real_monotonic() >= end:
                return False
            _real_sleep(pause)
            pause = min(pause * 2, 0.005)
        return True

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
        jumped = False
        if not enabled:
            waiters = [m for m in self.threads if m.state == BLOCKED and m.deadline is not None]
            if waiters:
                self.now = min(m.deadline for m in waiters if m.deadline is not None)
                enabled = self._enabled(me)
                jumped = len(enabled) > 1
        if enabled:
            chosen = self._choose(me if me.state == RUNNABLE else None, enabled)
            if jumped:
                self.strategy.woke_together(chosen.index)
            return chosen
        outside = self.graph.unseen_waker(m.native_id for m in self.threads) or self.graph.unscheduled_thread(
            m.ident for m in self.threads
        )
        if outside is not None:
            # Nobody the scheduler runs can go on, but somebody it does not run may end a wait.
            self.release(f"every thread it schedules waits, and {outside} may end one of the waits")
            return me
        enabled = self._enabled(me)  # a thread it does not run may have ended a wait, then itself
        if enabled:
            return self._choose(me if me.state == RUNNABLE else None, enabled)
        self._declare_deadlock(me)
        return next((m for m in self.threads if m.state == BLOCKED), self.threads[0])

    def _hand_over(self, me: Managed, to: Managed) -> None:
        self.switches += 1
        self.current = to
        to.baton.release()
        self._park(me)

    def _park(self, me: Managed) -> None:
        with self._release_lock:
            if self.released:
                return
            me.parked = True
        me.baton.acquire()
        me.parked = False

    def _raise_if_unwinding(self) -> None:
        if self.unwinding:
            raise self._unwind_error()

    def _unwind_error(self) -> BaseException:
        if self.aborting:
            kind = LivelockError if self.livelock is not None else DeadlockError
            return kind(*self._deadlock_args())
        return ThreadAbandoned()

    # -- endings -----------------------------------------------------------------------------------

    def _declare_deadlock(self, me: Managed) -> None:
        if self.aborting:
            return
        self.aborting = True
        blocked = [m for m in self.threads if m.state == BLOCKED] or [me]
        describe = self.describe_deadlock
        self.finding = describe(self, blocked) if describe is not None else self.graph.declare(blocked[0].ident)

    def _declare_livelock(self) -> None:
        if self.aborting:
            return
        self.aborting = True
        frames = sys._current_frames()
        where = []
        for managed in self.threads:
            if managed.state == DONE or managed.waits_for is not None:
                continue  # a join waits for the others: where they are is the story
            if managed.index == 0 and self.graph.main_joining:
                continue
            frame = _innermost_in_scope(frames.get(managed.ident), self.graph)
            place = f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}" if frame else "?"
            where.append(f"{managed.name} at {place}")
        if _kept_changing(self.steps):
            self.too_long = (
                f"the schedule was still changing state after {self.step_limit} scheduling steps: too long "
                "to schedule to its end (lower --size, or raise --step-limit)"
            )
        else:
            self.livelock = tuple(where)

    def _deadlock_args(self) -> tuple[Any, ...]:
        if self.too_long is not None:
            return (self.too_long,)
        if self.livelock is not None:
            return (f"livelock: still running after {self.step_limit} steps", list(self.livelock))
        if self.finding is None:
            return ("the trial deadlocked",)
        return (self.finding.summary, list(self.finding.lines))


#: Seconds the running thread must be seen blocked, unseen, before the schedule is unsupported.
BLOCKED_FOR = 0.05
#: The same where the kernel does not say how much CPU a thread used.
BLOCKED_FOR_WITHOUT_CPU = 0.25


def task_state(native_id: int) -> tuple[str, int | None]:
    """A thread of this process as the kernel sees it: its state letter (``R`` running, ``S``
    sleeping in a wait, ``D`` in uninterruptible I/O, ...) and the nanoseconds it has run on a CPU.
    ``("?", None)`` where ``/proc`` does not tell (not Linux)."""
    try:
        with open(f"/proc/self/task/{native_id}/stat", "rb") as stat:
            state = stat.read().rpartition(b")")[2].split(None, 1)[0].decode()
    except (OSError, IndexError):
        return "?", None
    try:
        with open(f"/proc/self/task/{native_id}/schedstat", "rb") as sched:
            return state, int(sched.read().split()[0])
    except (OSError, IndexError, ValueError):
        return state, None


def _unseen_wait(name: str, frame: FrameType | None, graph: WaitGraph) -> str:
    """What an unsupported wait was: the innermost Python line (the call that blocks) and, when it
    is not the code under test's, the line of the code under test that led there."""
    from harness.text import short_path

    if frame is None:
        return f"{name} blocked in a call the controlled scheduler cannot see into"
    call = f"{short_path(frame.f_code.co_filename)}:{frame.f_lineno} ({_source(frame)})"
    text = f"{name} blocked in a call the controlled scheduler cannot see into, at {call}"
    mine = _innermost_in_scope(frame, graph)
    if mine is not None and mine is not frame:
        text += f", called from {short_path(mine.f_code.co_filename)}:{mine.f_lineno} ({_source(mine)})"
    return text


def _source(frame: FrameType) -> str:
    import linecache

    line = linecache.getline(frame.f_code.co_filename, frame.f_lineno).strip()
    return line or f"in {frame.f_code.co_name}"


def _kept_changing(steps: list[Step]) -> bool:
    """Whether the last steps of a schedule at its step limit changed state: writes (a local's
    too: a long computation, such as a sum in a loop, keeps changing its locals), calls and
    primitive operations, rather than a loop that only reads (a spin on a flag nobody will set: a
    livelock)."""
    import dis

    window = steps[-200:]
    for _, code, offset, what in window:
        if what and not what.endswith((".locked()", "sleep(0)")):
            if any(op in what for op in (".release()", ".set()", ".put(", ".notify")):
                return True
            continue
        if code is None or offset < 0:
            continue
        if _line_stores(code, offset, dis):
            return True
    return False


_stores: dict[CodeType, tuple[dict[int, int], set[int]]] = {}


def _line_stores(code: CodeType, offset: int, dis: Any) -> bool:
    """Whether the line of ``code`` holding instruction ``offset`` stores anything (``total +=
    number`` does; ``while not flag: pass`` does not). Lines, not instructions: a scheduling point
    sits before the instruction that reads shared state, and a local's store between two points is
    no step of its own."""
    known = _stores.get(code)
    if known is None:
        lines: dict[int, int] = {}
        storing: set[int] = set()
        line = code.co_firstlineno
        for instruction in dis.get_instructions(code):
            positions = instruction.positions
            if positions is not None and positions.lineno is not None:
                line = positions.lineno
            lines[instruction.offset] = line
            if instruction.opname.startswith(("STORE_", "DELETE_")):
                storing.add(line)
        known = _stores[code] = (lines, storing)
    lines, storing = known
    return lines.get(offset, -1) in storing


def _idle_pool_worker(managed: Managed) -> bool:
    """A ``ThreadPoolExecutor`` worker waiting for work: an interpreter's exit wakes and ends it."""
    thread = managed.thread
    target = getattr(thread, "_target", None)
    return getattr(target, "__module__", "") == "concurrent.futures.thread" and managed.state == BLOCKED


def _release(lock: Any) -> None:
    with contextlib.suppress(RuntimeError):  # released already: the thread was not parked after all
        lock.release()


def _innermost_in_scope(frame: FrameType | None, graph: WaitGraph) -> FrameType | None:
    while frame is not None:
        if graph.scope.contains_file(frame.f_code.co_filename):
            return frame
        frame = frame.f_back
    return None


def _caller_in_scope(graph: WaitGraph) -> FrameType | None:
    return _innermost_in_scope(sys._getframe(2), graph)

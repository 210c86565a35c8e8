"""The wait-for graph of one trial, and deadlock detection over it.

Every blocking wait on an instrumented primitive registers here: which thread waits, on what, and
whether the wait has a timeout. Two situations are deadlocks:

* **a cycle**: thread T waits for a lock held by U, U waits for a lock held by ..., held by T;
* **everyone stuck**: every thread of the trial waits without a timeout on something only another
  thread of the trial could release (an event nobody will set, a condition nobody will notify, a
  lock held by a stuck thread), and the thread that ran the variant is waiting for its actors.

A candidate is only declared after it is seen twice, unchanged, one wait slice apart: lock owners
change on the primitives' fast path without taking the graph's lock, and a deadlock, unlike a race
in this bookkeeping, does not go away. The threads involved are then released with `DeadlockError`
(a `BaseException`, so ``except Exception`` in the code under test does not swallow it), the worker
survives, and the trial ends as ``deadlocked`` with the cycle as evidence.
"""

from __future__ import annotations

import ast
import concurrent.futures.thread as futures_thread
import contextlib
import linecache
import os
import queue
import re
import signal
import sys
import threading
import time
import weakref
from _thread import RLock
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import CodeType, FrameType
from typing import Any

from harness.actors import parked_count, parked_native_ids
from harness.scope import HARNESS_DIR, Scope
from harness.text import and_join, short_path

__all__ = [
    "Deadlock",
    "DeadlockError",
    "ForkedDeadlockError",
    "FutureWaiting",
    "WaitGraph",
    "Waiting",
    "acquired_where",
    "describe_primitive",
    "describe_site",
    "forget_ended_records",
    "pool_name",
    "task_name",
]


class DeadlockError(BaseException):
    """Raised inside the threads of a deadlocked trial so that they unwind."""


class ForkedDeadlockError(Exception):
    """`DeadlockError`'s counterpart in a forked child (a Pool worker, a plain
    multiprocessing.Process): an ordinary exception, which a Pool sends back to the trial instead of
    dying on it and losing the task. Its arguments are the finding's summary and lines."""


@dataclass(frozen=True)
class Deadlock:
    """What was found: one line per thread involved, and a one-line summary."""

    kind: str  # "cycle" or "stuck"
    summary: str
    lines: tuple[str, ...]


class Waiting:
    """One thread's current blocking wait.

    Attributes:
        primitive: The user-visible primitive waited on (a Lock, an Event, a Queue, ...).
        lock: For a lock acquisition, the instrumented lock (its ``_owner`` says who holds it).
        token: For a condition wait, the private lock a ``notify`` releases.
        waiters: For a condition wait, the condition's list of waiting tokens (a ``notify`` takes
            the token off it).
        timed: The wait has a timeout, so it ends by itself.
    """

    __slots__ = ("lock", "primitive", "timed", "token", "waiters")

    def __init__(
        self, primitive: Any, *, lock: Any = None, token: Any = None, waiters: Any = None, timed: bool
    ) -> None:
        self.primitive = primitive
        self.lock = lock
        self.token = token
        self.waiters = waiters
        self.timed = timed

    def runnable(self) -> bool:
        """The wait is over in all but name: its lock is free, or a notify released its token
        (the thread may simply not have been scheduled yet).

        A locked token alone does not say "not notified": the waiter takes its token back the
        moment the notify releases it, and is still registered until its wait returns — a window
        the OS can stretch to a second on a loaded machine. A notify also takes the token off the
        condition's list, so a token no longer on it was notified, locked or not."""
        token = self.token
        if token is not None:
            if not token.locked():
                return True
            if self.waiters is not None:
                try:
                    return token not in self.waiters
                except RuntimeError:  # the list changed while we looked: somebody is moving
                    return True
        return self.lock is not None and self.lock._owner is None


#: A future's states once its outcome is there (``concurrent.futures._base``'s).
_OUTCOME_STATES = frozenset({"CANCELLED", "CANCELLED_AND_NOTIFIED", "FINISHED"})


class FutureWaiting(Waiting):
    """An untimed wait for `concurrent.futures.Future` outcomes: ``result()`` or ``exception()``
    of one, or ``concurrent.futures.wait(futures, return_when=...)``. Over once all of them are
    done, or the first (``FIRST_COMPLETED``), or the first to raise (``FIRST_EXCEPTION``). Whoever
    completes a future — the executor's worker that runs its task, or any thread that calls
    ``set_result`` — is not known in advance, so it never closes a cycle; it is a deadlock only
    when every thread of the trial is stuck, as for an event. Its primitive, for the explanation,
    is the first future not done yet."""

    __slots__ = ("futures", "return_when")

    def __init__(self, futures: Sequence[Any], return_when: str = "ALL_COMPLETED") -> None:
        pending = [f for f in futures if getattr(f, "_state", "FINISHED") not in _OUTCOME_STATES]
        super().__init__(pending[0] if pending else futures[0], timed=False)
        self.futures = tuple(futures)
        self.return_when = return_when

    def runnable(self) -> bool:
        done = [f for f in self.futures if getattr(f, "_state", "FINISHED") in _OUTCOME_STATES]
        if len(done) == len(self.futures) or (self.return_when == "FIRST_COMPLETED" and done):
            return True
        return self.return_when == "FIRST_EXCEPTION" and any(
            f._state == "FINISHED" and getattr(f, "_exception", None) is not None for f in done
        )


Snapshot = tuple[Any, ...]


#: OS ids of stress's own helper threads that `threading` does not list (the controlled
#: scheduler's watchdog): they wake no waiter of a trial.
_OWN_THREADS: set[int] = set()


def own_thread() -> None:
    """The calling thread is stress's own, started with ``_thread.start_new_thread``: not one of
    the trial's unseen threads that might end a wait (`_unseen`)."""
    _OWN_THREADS.add(threading.get_native_id())


#: When the last real-time signal timer (``setitimer``/``alarm``) armed in this process is due,
#: by ``time.monotonic()`` (None: none known), as the worker tells it (`note_alarm`).
_alarm_due: float | None = None
#: How long after a timer is due its Python handler still counts as a possible waker: the signal
#: may have reached another thread, and the main thread run the handler only later (a loaded
#: machine stretches that; the timer itself reads 0 the moment it fires).
SIGNAL_GRACE = 2.0


#: Signals the code under test sent to its own process (``os.kill``, ``signal.raise_signal``,
#: ``signal.pthread_kill``), by number: when, ``time.monotonic()``.
_sent: dict[int, float] = {}


def note_signal(signum: int) -> None:
    """The code under test sent signal ``signum`` to its own process just now: its Python handler
    runs on the main thread, maybe only later (the signal may reach another thread)."""
    _sent[int(signum)] = time.monotonic()


def note_alarm(when: float | None) -> None:
    """A real-time signal timer was armed to fire at ``when`` (``time.monotonic()``), or disarmed."""
    global _alarm_due
    if when is not None:
        _alarm_due = when


def _running(handler: Any) -> bool:
    """Whether the main thread, where Python runs signal handlers, is inside ``handler`` now (a
    handler waiting for its own thread's lock has run: it is the one stuck)."""
    code = getattr(handler, "__code__", None) or getattr(getattr(handler, "__func__", None), "__code__", None)
    if code is None:
        return False
    frame = sys._current_frames().get(threading.main_thread().ident or 0)
    while frame is not None:
        if frame.f_code is code:
            return True
        frame = frame.f_back
    return False


_active: dict[int, threading.Thread] = threading._active  # type: ignore[attr-defined]
_limbo: dict[threading.Thread, threading.Thread] = threading._limbo  # type: ignore[attr-defined]


def _handler_in(frame: FrameType | None) -> str | None:
    """The Python signal handler running in the thread whose innermost frame is ``frame``, as
    ``name()``, if one is on its stack (a signal handler runs on the main thread, between any two
    of its instructions)."""
    codes = {}
    for number in signal.valid_signals():
        with contextlib.suppress(ValueError, OSError):
            handler = signal.getsignal(number)
            code = getattr(handler, "__code__", None) or getattr(getattr(handler, "__func__", None), "__code__", None)
            if code is not None:
                codes[code] = getattr(handler, "__name__", "handler")
    while frame is not None and codes:
        name = codes.get(frame.f_code)
        if name is not None:
            return f"{name}()"
        frame = frame.f_back
    return None


def _tasks() -> set[int] | None:
    """OS ids of this process's threads now (None where ``/proc`` cannot say)."""
    try:
        return {int(name) for name in os.listdir("/proc/self/task")}
    except (OSError, ValueError):
        return None


def forget_ended_records() -> None:
    """Drop `threading`'s records of ``_thread`` threads that have ended. `threading` makes one
    (a ``_DummyThread``) the first time such a thread calls into it — asks for the current thread,
    uses an instrumented primitive — and on 3.11 and 3.12 keeps it after the thread ends, under
    the thread's ident; a later thread given the same ident inherits the record. Called before a
    trial counts the threads that were there before it: a `_thread` thread the trial starts must
    not be taken for one of them (and left out of who may still wake a waiter)."""
    dummies = [thread for thread in list(_active.values()) if isinstance(thread, _DUMMY)]
    if not dummies:
        return
    tasks = _tasks()
    if tasks is None:
        return
    for thread in dummies:
        if thread.native_id not in tasks:
            with _ACTIVE_LIMBO_LOCK:
                if _active.get(thread.ident or 0) is thread:
                    del _active[thread.ident or 0]


_DUMMY: type[threading.Thread] = threading._DummyThread

_POOL_WORKER_CODE = futures_thread._worker.__code__
_QUEUE_PLUMBING = (HARNESS_DIR, queue.__file__, threading.__file__)


def idle_executor_worker(thread: threading.Thread, frames: Mapping[int, FrameType]) -> bool:
    """Whether ``thread`` is a ``ThreadPoolExecutor``'s worker waiting for its next task, with none
    queued: its innermost frame outside ``queue`` and stress is the worker loop's ``get``, and its
    work queue is empty (a task just queued wakes it, however late the OS runs it). It can do
    nothing until someone submits. ``frames``: `sys._current_frames`."""
    if getattr(thread, "_target", None) is not futures_thread._worker:
        return False
    frame = frames.get(thread.ident or 0)
    while frame is not None and frame.f_code.co_filename.startswith(_QUEUE_PLUMBING):
        frame = frame.f_back
    if frame is None or frame.f_code is not _POOL_WORKER_CODE:
        return False
    args = getattr(thread, "_args", ())
    work = [arg for arg in args if callable(getattr(arg, "empty", None))]
    if not work or not all(queued.empty() for queued in work):
        return False
    # A task submitted in the trial that has not started, with nothing queued, was taken by a
    # worker that has not run it yet — maybe this one, back from its get and waiting for the GIL
    # (on 3.13 under load, for tens of milliseconds): that worker is not idle, and which one it
    # is cannot be told. A safe trial was called deadlocked in 1 of 200 so.
    executor = args[0]() if args and isinstance(args[0], weakref.ref) else None
    submitted = getattr(executor, "_stress_submitted", ())
    return not any(getattr(future, "_state", "") == "PENDING" for future in list(submitted))


_ACTIVE_LIMBO_LOCK: Any = threading._active_limbo_lock  # type: ignore[attr-defined]


def _unseen_at_start() -> set[int] | None:
    """`_unseen` at a trial's start, where every trial asks, so the common answer is cheap: procfs
    gives ``task/`` two links more than the process has threads, and when there are no more
    threads than `threading`, the parked actors and stress's own account for, the answer is the
    empty set without listing them. Were some of those gone already (``threading`` keeps the
    record of a `_thread` thread that ended), the set is too small: a thread it leaves out counts,
    later, as one started during the trial, which may end a wait — never the other way round. So
    only the start may take this short cut; a look for who may wake a waiter lists every thread."""
    try:
        count = os.stat("/proc/self/task").st_nlink - 2
    except OSError:
        return None
    if count <= len(_active) + len(_limbo) + parked_count() + len(_OWN_THREADS):
        return set()
    return _unseen()


def _unseen() -> set[int] | None:
    """OS ids of this process's threads that `threading` does not list (nor are parked actors):
    ones started with `_thread.start_new_thread`, or by C code. None where ``/proc`` cannot say."""
    tids = _tasks()
    if tids is None:
        return None
    tids.difference_update(t.native_id for t in threading.enumerate())
    tids.difference_update(parked_native_ids())
    tids.difference_update(_OWN_THREADS)
    return tids


def _may_wake_unseen(before: set[int] | None) -> bool:
    """Whether somebody the graph cannot see may yet wake a waiter (see `_unseen_waker`)."""
    return _unseen_waker(before) is not None


def _unseen_waker(before: set[int] | None, known: Iterable[int] = ()) -> str | None:
    """Who the graph cannot see may yet wake a waiter, in words, or None: a thread `threading`
    does not know, started since the trial began, or a signal timer whose handler is Python code
    (the handler runs on the main thread, whatever it waits for). ``known``: OS ids of threads
    that are the trial's own even when `threading` no longer lists them (one that has finished
    and whose OS thread is still on its way out)."""
    handler = signal.getsignal(signal.SIGALRM)
    if callable(handler):
        if signal.getitimer(signal.ITIMER_REAL)[0] > 0:
            return "a signal timer's handler"
        due = _alarm_due
        # (Also before it is due by our clock: the timer reads 0 the moment it fires, which can be
        # a little before the time noted when it was armed, with the handler still to run.)
        if due is not None and time.monotonic() - due < SIGNAL_GRACE and not _running(handler):
            return "a signal timer's handler, which may not have run yet"
    for signum, when in list(_sent.items()):
        handler = signal.getsignal(signum)
        if callable(handler) and time.monotonic() - when < SIGNAL_GRACE and not _running(handler):
            return "the handler of a signal the trial sent itself, which may not have run yet"
    now = _unseen()
    if before is None or now is None:
        return "a thread stress cannot list"
    if now - before - set(known):
        return "a thread threading does not know (started with _thread.start_new_thread, or by C code)"
    return None


class WaitGraph:
    """Who waits for what in one trial.

    Args:
        scope: The code under test, to point at its lines in the evidence.
        main: Ident of the thread running the variant body.
        preexisting: Idents of threads that existed before the trial (not part of it).
    """

    def __init__(self, *, scope: Scope, main: int, preexisting: set[int]) -> None:
        self.scope = scope
        self.main = main
        self.preexisting = preexisting - {main}
        self.waiting: dict[int, Waiting] = {}
        self.version = 0
        self.main_joining = False
        #: Threads of the trial inside a ``Thread.join()`` with no timeout, and the thread each
        #: joins: while that thread runs, a joiner can wake nobody, and is left out of "everyone is
        #: stuck"; once it has ended, the joiner is about to go on.
        self.joiners: dict[int, threading.Thread] = {}
        self.aborting = False
        self.finding: Deadlock | None = None
        #: Once a deadlock is confirmed: the identities of the primitives its threads wait for. The
        #: trial is over, and a thread of it that asks for one of them again is unwound too, rather
        #: than left to run the rest of its work for nothing.
        self.deadlocked_on: frozenset[int] = frozenset()
        #: Actors of the trial whose work is over, by name, in the order they finished: a party
        #: a barrier still waits for may be among them.
        self.finished: list[str] = []
        #: Of those, the ones that ended by raising: what, and where in the code under test
        #: (``ValueError at b04.py:37``), for a barrier that still waits for them.
        self.raised: dict[str, str] = {}
        #: Of those, the function each ran (its code), to say where one that never reached a
        #: barrier returned from.
        self.ran: dict[str, CodeType] = {}
        #: Idents of the trial's actors (the threads its groups run its work on).
        self.actors: set[int] = set()
        #: Threads the code under test started (no actor, not the body) that a deadlock's abort
        #: ended: a module may count on one (a flusher started on first use), and its process
        #: runs no more trials (`harness.engine.worker`).
        self.unwound: list[str] = []
        #: Threads of the process `threading` did not know when the trial began (see `_unseen`).
        self.unseen = _unseen_at_start()
        # Re-entrant: a signal handler runs on the main thread between any two bytecodes, inside
        # `check` too, and the handler may itself wait on a primitive (and so come here). With a
        # plain lock that thread would wait for itself — a hang stress made, in code that is safe.
        self._mutex = RLock()

    # -- registration (every blocking wait) ------------------------------------------------------

    def enter(self, ident: int, waiting: Waiting) -> Waiting | None:
        """Register ``ident``'s wait; returns the wait it interrupts, if any (a signal handler's
        wait inside a wait of its thread), for `leave` to put back."""
        with self._mutex:
            previous = self.waiting.get(ident)
            self.waiting[ident] = waiting
            self.version += 1
        return previous

    def leave(self, ident: int, previous: Waiting | None = None) -> None:
        with self._mutex:
            if previous is not None:
                self.waiting[ident] = previous
                self.version += 1
            elif self.waiting.pop(ident, None) is not None:
                self.version += 1

    def add_joiner(self, ident: int, joined: threading.Thread) -> None:
        """Thread ``ident`` starts a ``joined.join()`` with no timeout."""
        with self._mutex:
            self.joiners[ident] = joined
            self.version += 1

    def remove_joiner(self, ident: int) -> None:
        with self._mutex:
            self.joiners.pop(ident, None)
            self.version += 1

    def set_joining(self, joining: bool) -> None:
        with self._mutex:
            self.main_joining = joining
            self.version += 1

    # -- detection -------------------------------------------------------------------------------

    def check(self, ident: int, previous: Snapshot | None, *, cycles_only: bool = False) -> Snapshot | None:
        """Look for a deadlock involving ``ident`` (with ``cycles_only``, only a cycle of lock
        waits through it). Returns the candidate seen now; when it equals ``previous``, the
        deadlock is confirmed: `finding` is set and every wait aborts."""
        with self._mutex:
            if self.aborting:
                return previous
            candidate = self._cycle_through(ident)
            if (
                candidate is not None
                and not self._owners_only(candidate)
                and self._everyone_stuck(earlier=False) is None
            ):
                # A plain lock of the cycle may yet be released by a thread of the trial outside it.
                # One from before the trial is not counted: releasing a lock a thread of the trial
                # holds is no thing a module's heartbeat, flusher or pool does.
                candidate = None
            if candidate is None and not cycles_only:
                candidate = self._everyone_stuck()
            if candidate is None or candidate != previous:
                return candidate
            # Described before the waits are told to abort, and under the mutex: an aborted wait
            # leaves the graph, and a description made after it would say "a lock" for its lock.
            self.finding = self._described(candidate)
            self.deadlocked_on = frozenset(link[1] for link in candidate[2])
            self.aborting = True
        return candidate

    def declare(self, ident: int) -> Deadlock:
        """Describe the deadlock of a frozen trial (controlled mode: nothing runs, so no need to
        see it twice): the cycle through ``ident`` if there is one, else everyone stuck."""
        with self._mutex:
            candidate = self._cycle_through(ident) or self._everyone_stuck()
            if candidate is None:
                state = tuple((i, id(w.primitive), 0) for i, w in sorted(self.waiting.items()))
                candidate = ("stuck", self.version, state)
            self.finding = self._described(candidate)
            self.aborting = True
        return self.finding

    def unseen_waker(self, known: Iterable[int] = ()) -> str | None:
        """Who outside the graph's view may yet end a wait of the trial, in words (None: nobody):
        controlled mode, whose threads all wait, cannot call that a deadlock. ``known``: OS ids of
        the trial's own threads (see `_unseen_waker`)."""
        return _unseen_waker(self.unseen, known)

    def unscheduled_thread(self, scheduled: Iterable[int]) -> str | None:
        """A thread `threading` lists that runs beside the ones a controlled trial schedules
        (``scheduled``: their idents) and may end one of their waits, in words (None: none): started
        during the trial and not by a scheduled thread — with ``_thread.start_new_thread`` (it is
        listed once it touches `threading`, an instrumented primitive included), or by such a
        thread — and still running (`threading` keeps the record of a ``_thread`` thread that
        ended; its OS thread is gone)."""
        earlier = self._earlier_thread_may_act()
        if earlier is not None:
            return f"{earlier.name}, a thread from before the trial,"
        known = set(scheduled) | self.preexisting | {self.main}
        tasks: set[int] | None = None
        for thread in threading.enumerate():
            if thread.ident in known or thread.native_id in _OWN_THREADS:
                continue
            if tasks is None:
                tasks = _tasks()
            if tasks is None or thread.native_id in tasks:
                return f"{thread.name}, a thread it does not schedule,"
        return None

    def has_cycle(self, ident: int) -> bool:
        """Whether ``ident`` waits in a cycle of lock waits (controlled mode: nothing moves)."""
        with self._mutex:
            return self._cycle_through(ident) is not None

    def where(self, ident: int) -> str:
        """The line of the code under test where thread ``ident`` is now (its innermost one)."""
        return self._where(sys._current_frames().get(ident))

    def _cycle_through(self, ident: int) -> Snapshot | None:
        links: list[tuple[int, int, int]] = []
        current = ident
        for _ in range(len(self.waiting) + 1):
            waiting = self.waiting.get(current)
            if waiting is None or waiting.lock is None or waiting.timed or waiting.runnable():
                return None
            owner = waiting.lock._owner
            if owner is None:
                return None
            links.append((current, id(waiting.lock), owner.ident))
            if owner.ident == ident:
                return ("cycle", self.version, tuple(links))
            current = owner.ident
            if any(link[0] == current for link in links):
                return None  # a cycle that does not pass through us: its own members report it
        return None

    def _owners_only(self, cycle: Snapshot) -> bool:
        """Whether only its holder can release each lock of ``cycle`` (an RLock). A plain Lock
        may be released by any thread — a latch, a hand-off — so a cycle through one, even a
        thread waiting for a lock it took itself, is a deadlock only once every other thread of
        the trial is stuck too."""
        for waiter, _, _ in cycle[2]:
            waiting = self.waiting.get(waiter)
            if waiting is None or not getattr(waiting.lock, "owner_release_only", False):
                return False
        return True

    def _everyone_stuck(self, *, earlier: bool = True) -> Snapshot | None:
        """Every thread of the trial waits, untimed, on a primitive no one can move, and nobody the
        graph does not see may end a wait; with ``earlier``, no thread from before the trial may
        either (`_earlier_thread_may_act`)."""
        threads = [t for t in threading.enumerate() if t.ident not in self.preexisting]
        state: list[tuple[int, int, int]] = []
        tasks: set[int] | None = None
        for thread in threads:
            ident = thread.ident
            if ident is None:
                continue
            if ident == self.main and self.main_joining:
                continue
            joined = self.joiners.get(ident)
            if joined is not None:
                # It waits for a thread of the trial that still runs (and is looked at in its
                # turn). A joined thread that has ended lets its joiner go on, however long the
                # OS takes to wake it; one the trial did not start is not ours to judge.
                if joined.ident in self.preexisting or not joined.is_alive():
                    return None
                continue
            waiting = self.waiting.get(ident)
            if waiting is None and isinstance(thread, _DUMMY):
                # A `_thread` thread's record outlives it: one whose OS thread is gone runs nothing.
                tasks = tasks if tasks is not None else _tasks()
                if tasks is not None and thread.native_id not in tasks:
                    continue
            if waiting is None or waiting.timed or waiting.runnable():
                return None
            owner_ident = 0
            if waiting.lock is not None:
                owner = waiting.lock._owner
                if owner is None:
                    return None
                owner_ident = owner.ident
            state.append((ident, id(waiting.primitive), owner_ident))
        if not state or _may_wake_unseen(self.unseen) or (earlier and self._earlier_thread_may_act() is not None):
            return None
        return ("stuck", self.version, tuple(sorted(state)))

    def abort(self) -> None:
        """A deadlock found outside the graph (a coroutine trial's event loop and the threads it
        waits for, `harness.detect.aio`) is the trial's outcome: every wait of the trial unwinds,
        as after one the graph confirmed, so that its threads end instead of waiting for ever."""
        with self._mutex:
            self.aborting = True

    def earlier_thread_may_act(self) -> threading.Thread | None:
        """A thread from before the trial that may yet act on it (None: none may); see
        `_earlier_thread_may_act`. For a waiter outside the graph: a coroutine trial's idle loop."""
        with self._mutex:
            return self._earlier_thread_may_act()

    def _earlier_thread_may_act(self) -> threading.Thread | None:
        """A thread from before the trial that may yet end a wait of it (None: none may). A module's
        background thread — a flusher on a queue, a pool's worker running a task — sets the event
        the trial waits for when its work is done: it is not the trial's, but it is not stuck. Only
        one waiting, untimed, in the graph, an executor's idle worker with nothing queued, or a
        `_thread` record whose thread is gone, cannot."""
        if not self.preexisting:
            return None
        frames: Mapping[int, FrameType] | None = None
        tasks: set[int] | None = None
        for thread in threading.enumerate():
            ident = thread.ident
            if ident is None or ident not in self.preexisting or thread.native_id in _OWN_THREADS:
                continue
            waiting = self.waiting.get(ident)
            if waiting is not None and not waiting.timed and not waiting.runnable():
                continue
            if isinstance(thread, _DUMMY):
                tasks = tasks if tasks is not None else _tasks()
                if tasks is not None and thread.native_id not in tasks:
                    continue
            frames = frames if frames is not None else sys._current_frames()
            if waiting is None and idle_executor_worker(thread, frames):
                continue
            return thread
        return None

    # -- evidence --------------------------------------------------------------------------------

    def _described(self, candidate: Snapshot) -> Deadlock:
        try:
            return self._describe(candidate)
        except Exception as exc:  # evidence is best effort; the deadlock itself is certain
            return Deadlock(str(candidate[0]), "threads wait for each other", (f"(no details: {exc!r})",))

    def _describe(self, candidate: Snapshot) -> Deadlock:
        frames = sys._current_frames()
        names = {t.ident: t.name for t in threading.enumerate()}
        kind, _, links = candidate
        lines: list[str] = []
        if kind == "cycle":
            hops = []
            for ident, _, owner in links:
                waiting = self.waiting.get(ident)
                lock = waiting.lock if waiting is not None else None
                what = describe_primitive(lock) if lock is not None else "a lock"
                waiter, holder = names.get(ident, str(ident)), names.get(owner, str(owner))
                owner_state = lock._owner if lock is not None else None
                earlier = getattr(getattr(owner_state, "session", None), "graph", self) is not self
                if owner_state is not None and earlier:
                    # A lock that outlives trials (a module's) left held by one that is over.
                    holder = f"{owner_state.name} in an earlier trial, which never released it"
                    hops.append(f"{waiter} waits for {what} held by {holder}")
                    lines.append(f"{waiter} waits for {what} at {self._where(frames.get(ident))}, held by {holder}")
                    continue
                if owner_state is not None and not _alive(owner_state):
                    # Its OS thread now runs another actor (threads are reused): the holder is gone.
                    took = _took_in(lock, owner_state, self.ran)
                    holder = f"{owner_state.name}, which {took}finished without releasing it"
                    hops.append(f"{waiter} waits for {what} held by {holder}")
                    lines.append(f"{waiter} waits for {what} at {self._where(frames.get(ident))}, held by {holder}")
                    continue
                handler = _handler_in(frames.get(ident)) if ident == owner else None
                if handler is not None:
                    # Only a signal handler, run between two instructions of the thread that holds
                    # the lock, can make a thread wait for itself this way.
                    hops.append(
                        f"{waiter}, in the signal handler {handler}, waits for {what}, which {holder} "
                        "itself holds: the signal came while it held it"
                    )
                else:
                    hops.append(f"{waiter} waits for {what} held by {holder}")
                taken = acquired_where(lock, frames.get(owner), self._outside)
                lines.append(
                    f"{waiter} waits for {what} at {self._where(frames.get(ident))}; {holder} took it at {taken}"
                )
            return Deadlock("cycle", " → ".join(hops), tuple(lines))
        short: list[str] = []
        waiters: dict[int, tuple[Any, Waiting, list[str]]] = {}
        for ident, _, _ in links:
            waiting = self.waiting.get(ident)
            if waiting is not None:
                waiters.setdefault(id(waiting.primitive), (waiting.primitive, waiting, []))[2].append(
                    names.get(ident, str(ident))
                )
            what = describe_primitive(waiting.primitive) if waiting is not None else "something"
            holder = ""
            if waiting is not None and waiting.lock is not None and waiting.lock._owner is not None:
                owner = waiting.lock._owner
                if owner.ident in names and _alive(owner):
                    holder = f" held by {names[owner.ident]}"
                elif getattr(owner, "pid", os.getpid()) != os.getpid():  # copied by a fork
                    holder = f" held by {getattr(owner, 'name', 'a thread')}, a thread this process does not have"
                else:
                    took = _took_in(waiting.lock, owner, self.ran)
                    holder = f" held by {getattr(owner, 'name', 'a thread')}, which {took}finished without releasing it"
            where = self._where(frames.get(ident))
            short.append(f"{names.get(ident, ident)} waits for {what}{holder}")
            # Where it waits, then who holds it: "held by X, which finished ..." followed by a place
            # read as the place X finished.
            lines.append(f"{names.get(ident, ident)} waits for {what} at {where}{',' if holder else ''}{holder}")
            if holder.endswith("does not have"):
                lines.append("  (the lock was copied, held, when this process was forked from its parent)")
        count = len(links)
        reason, unreleased = self._why(waiters, count)
        lines.extend(unreleased)
        if reason:
            summary = reason
        elif count == 1:
            summary = f"{short[0]}, and no other thread can let it go"
        else:
            summary = f"all {count} threads of the trial wait, and none of them can wake another"
        if self.main_joining:
            summary += " (the variant body is waiting for its actors)"
        elif self.joiners:
            summary += f" ({len(self.joiners)} more waiting in Thread.join() for them)"
        return Deadlock("stuck", summary, tuple(lines))

    def why(self, idents: Iterable[int]) -> tuple[str, list[str]]:
        """Why the threads ``idents``, each in a wait on a primitive and nobody else left to end it,
        cannot go on: the headline (empty when stress has nothing to add to "they wait") and the
        lines that go with it (a semaphore's unreleased acquires). For controlled mode's frozen
        schedules, whose other threads wait in ``join()`` for these."""
        names = {t.ident: t.name for t in threading.enumerate()}
        waiters: dict[int, tuple[Any, Waiting, list[str]]] = {}
        count = 0
        for ident in idents:
            waiting = self.waiting.get(ident)
            if waiting is not None:
                count += 1
                waiters.setdefault(id(waiting.primitive), (waiting.primitive, waiting, []))[2].append(
                    names.get(ident, str(ident))
                )
        return self._why(waiters, count)

    def _why(self, waiters: dict[int, tuple[Any, Waiting, list[str]]], count: int) -> tuple[str, list[str]]:
        reasons = [
            _why_stuck(primitive, waiting, who, count - len(who), self.finished, self.raised, self.ran)
            for primitive, waiting, who in waiters.values()
        ]
        unreleased = [line for line in map(_unreleased, (p for p, _, _ in waiters.values())) if line]
        return "; ".join(reason for reason in reasons if reason), unreleased

    def _outside(self, frame: FrameType) -> bool:
        return not self.scope.contains_file(frame.f_code.co_filename)

    def _where(self, frame: FrameType | None) -> str:
        inside = _innermost_in_scope(frame, self.scope)
        if inside is not None:
            return _line_text(inside, _line(inside))
        # A thread whose target is a library's (``work.get``), or ``threading``'s own
        # (``gate.wait``): no line of the code under test is on its stack, only the call it made.
        target = None
        while frame is not None:
            if not frame.f_code.co_filename.startswith(HARNESS_DIR):
                target = frame
            elif target is not None:
                break
            frame = frame.f_back
        if target is None:
            return "an unknown place"
        return f"{target.f_code.co_qualname}(), the thread's target"


def _how_it_left(
    actor: str, raised: str | None, came: tuple[FrameType, int] | None, ran: CodeType | None = None
) -> str:
    """``worker#2 returned at jobs.py:44 in worker without reaching it (it had passed it 1 time)``:
    how a party of a barrier left (``raised``: the exception it ended with, if any; ``ran``: the
    function it ran, for one that never reached it)."""
    if raised is not None:
        return f"{actor} ({raised}) finished without reaching it"
    if came is None:
        if ran is not None:
            where = f"{short_path(ran.co_filename)}:{ran.co_firstlineno}"
            return f"{actor} returned from {ran.co_name}() ({where}) without ever reaching it"
        return f"{actor} finished without ever reaching it"
    frame, times = came
    return (
        f"{actor} returned at {_line_text(frame, _line(frame))} without reaching it "
        f"(it had passed it {times} time{'s' if times != 1 else ''})"
    )


def _why_stuck(
    primitive: Any,
    waiting: Waiting,
    who: list[str],
    others: int,
    finished: Sequence[str] = (),
    raised: Mapping[str, str] | None = None,
    ran: Mapping[str, CodeType] | None = None,
) -> str:
    """What would have to happen for the threads ``who``, waiting on ``primitive``, to go on, and
    why it cannot: "barrier needs 3 parties ...". ``others``: how many other threads of the trial
    wait too (elsewhere); none means nobody is left at all. ``finished``: the trial's actors whose
    work is over (a barrier's missing parties); ``raised``: of those, how the ones that raised
    ended. Empty when stress has nothing true to add to "they wait" (a lock: the lines name its
    holder)."""
    raised = raised or {}
    name = describe_primitive(primitive)
    who = sorted(who)
    they = and_join(who)
    wait = "waits" if len(who) == 1 else "wait"

    def nobody(verb: str) -> str:
        if others == 1:
            return "and the other thread of the trial waits too"
        if others:
            return f"and the other {others} threads of the trial wait too"
        return f"and no other thread of the trial is left to {verb}"

    if isinstance(primitive, threading.Barrier):
        parties, arrived = primitive.parties, getattr(primitive, "_count", len(who))
        if getattr(primitive, "_state", 0) != 0 or arrived >= parties:
            return ""  # every party came: it is the barrier's action that does not return
        gone = [actor for actor in finished if actor not in who]
        have = "has" if arrived == 1 else "have"
        if gone and not others:
            came: Mapping[str, tuple[FrameType, int]] = getattr(primitive, "_came", {})
            how = [_how_it_left(actor, raised.get(actor), came.get(actor), (ran or {}).get(actor)) for actor in gone]
            return (
                f"{they} {wait} at {name}, which needs {parties} parties: {arrived} {have} arrived; "
                f"{and_join(how)}, and no other thread of the trial is left"
            )
        made = getattr(primitive, "_created", None)
        where = f"; it was made for {parties} at {short_path(made[0])}:{made[1]}" if made and not others else ""
        return (
            f"{they} {wait} at {name}, which needs {parties} parties: {arrived} {have} arrived, "
            f"{nobody('reach it')}{where}"
        )
    if isinstance(primitive, threading.Semaphore):
        taken = list(getattr(primitive, "_taken", []))
        leaked = ""
        if taken:
            count = len(taken)
            leaked = f": {count} acquire{'s' if count != 1 else ''} {'were' if count != 1 else 'was'} never released"
            makers = sorted({thread.name for _, thread, _ in taken if thread.name in who})
            own = sum(1 for _, thread, _ in taken if thread.name in who)
            if own:
                # by the waiters that made them, by name: not all of them need have
                by = f"{and_join(makers)} {'itself' if len(makers) == 1 else 'themselves'}"
                leaked += f" ({own} of them by {by})" if own != count else f", all by {by}"
        return f"{they} {wait} for {name}, whose count is 0{leaked}, {nobody('release it')}"
    if isinstance(primitive, threading.Event):
        return f"{they} {wait} for {name} to be set, {nobody('set it')}"
    if isinstance(primitive, queue.Queue):
        if waiting.waiters is getattr(primitive.all_tasks_done, "_waiters", None):
            left = primitive.unfinished_tasks
            tasks = (
                "1 unfinished task: task_done() was not called for it"
                if left == 1
                else f"{left} unfinished tasks: task_done() was not called for them"
            )
            return f"{they} {wait} in {name}.join() for {tasks}, {nobody('call it')}"
        if waiting.waiters is getattr(primitive.not_full, "_waiters", None):
            return f"{they} {wait} to put into {name}, which is full, {nobody('take from it')}"
        return f"{they} {wait} to get from {name}, which is empty, {nobody('put into it')}"
    if isinstance(primitive, threading.Condition):
        return f"{they} {wait} on {name}, {nobody('notify it')}"
    if isinstance(waiting, FutureWaiting):
        task = f"the result of {task_name(getattr(primitive, '_stress_task', 'a task'))}()"
        runner = getattr(primitive, "_stress_runner", None)
        if getattr(primitive, "_state", "") == "RUNNING" and runner is not None:
            return f"{they} {wait} for {task}, which {runner.name} runs"
        executor = getattr(primitive, "_stress_executor", None)
        if getattr(primitive, "_state", "") != "PENDING" or executor is None:
            return f"{they} {wait} for {name}, which nothing has completed, {nobody('complete it')}"
        workers = sorted(getattr(executor, "_threads", ()), key=lambda thread: thread.name)
        pool = pool_name([thread.name for thread in workers])
        if len(workers) == 1:
            whose = "itself" if workers[0].name in who else workers[0].name
            return f"{they} {wait} for {task}, queued on {pool} behind {whose}, its only worker"
        return f"{they} {wait} for {task}, queued on {pool}, all of whose workers are busy"
    return ""


def task_name(qualname: str) -> str:
    """``lookup`` for ``variant.<locals>.lookup``: an executor's task as the code names it."""
    return qualname.rpartition("<locals>.")[2]


#: An executor's default worker name: ``ThreadPoolExecutor-0_1``.
POOL_NAME = re.compile(r"(ThreadPoolExecutor-)(\d+)(_\d+)$")


def pool_name(workers: Sequence[str]) -> str:
    """``ThreadPoolExecutor-0`` for workers named ``ThreadPoolExecutor-0_0``…; else "its executor"."""
    for worker in workers:
        match = POOL_NAME.match(worker)
        if match is not None:
            return f"{match.group(1)}{match.group(2)}"
    return "its executor"


def _unreleased(primitive: Any) -> str | None:
    """For a semaphore at 0: the acquires no release by the same thread answered, and where they
    were made (a semaphore has no owner: a release by another thread answers none of them)."""
    taken = list(getattr(primitive, "_taken", []))
    if not taken:
        return None
    sites: dict[tuple[threading.Thread, str], int] = {}
    for _, thread, site in taken:
        sites[thread, site] = sites.get((thread, site), 0) + 1
    shown = sorted(sites.items(), key=lambda item: (item[0][0].name, item[0][1]))
    where = "; ".join(
        f"{thread.name}{'' if thread.is_alive() else ' (finished)'} at {site}"
        + (f", {times} times" if times > 1 else "")
        for (thread, site), times in shown[:4]
    )
    more = f"; and {len(shown) - 4} more places" if len(shown) > 4 else ""
    return f"  {describe_primitive(primitive)} was acquired, and not released by the same thread, by: {where}{more}"


def _alive(owner: Any) -> bool:
    """Whether the thread a lock's owner record was made for still runs (not merely its OS thread,
    which the actor pool hands to the next actor)."""
    thread = getattr(owner, "thread", None)
    return thread is None or thread.is_alive()


def _innermost_in_scope(frame: FrameType | None, scope: Scope) -> FrameType | None:
    while frame is not None:
        if scope.contains_file(frame.f_code.co_filename):
            return frame
        frame = frame.f_back
    return None


_ACQUIRING = re.compile(r"^\s*(?:async\s+)?with\b|\.acquire\s*\(")


def acquired_where(lock: Any, frame: FrameType | None, skip: Callable[[FrameType], bool]) -> str:
    """Where the thread whose stack begins at ``frame`` took ``lock``, which it still holds.

    Locks do not record where they were acquired (that would cost every critical section a frame
    object), but the thread holding one is still inside the block that took it. So: walk the
    thread's frames from the innermost (skipping ``skip``), and in each look back from its current
    line for a line that acquires something — one naming the lock if there is one (``with
    lock_a:``), else the nearest; else the innermost frame's current line.
    """
    name = _base_name(lock)
    nearest: tuple[FrameType, int] | None = None
    innermost: FrameType | None = None
    while frame is not None:
        if not skip(frame):
            innermost = innermost or frame
            code = frame.f_code
            for number in range(_line(frame) - 1, code.co_firstlineno - 1, -1):
                text = linecache.getline(code.co_filename, number)
                if _ACQUIRING.search(text):
                    if name and re.search(rf"\b{re.escape(name)}\b", text):
                        return _line_text(frame, number)
                    if nearest is None:
                        nearest = (frame, number)
        frame = frame.f_back
    if nearest is not None:
        return _line_text(*nearest)
    return _line_text(innermost, _line(innermost)) if innermost is not None else "an unknown place"


def _took_in(lock: Any, owner: Any, ran: Mapping[str, CodeType]) -> str:
    """``took it at x.py:12 in worker and ``: where a thread that has finished took ``lock`` — the
    lines of the function it ran (an actor's, `WaitGraph.ran`; a thread's target) that acquire it by name (an
    RLock taken twice: ``x.py:12 and 13``), or, the lock having no name, the only line there that
    acquires anything; '' when no line says."""
    # An actor's function (`ran`), or the target of a thread the code started itself.
    code = ran.get(getattr(owner, "name", "")) or getattr(getattr(owner, "thread", None), "_stress_entry", None)
    if code is None:
        return ""
    name = _base_name(lock)
    lines = sorted({line for _, _, line in code.co_lines() if line is not None and line > code.co_firstlineno})
    found = [n for n in lines if _ACQUIRING.search(linecache.getline(code.co_filename, n))]
    if name:
        found = [n for n in found if re.search(rf"\b{re.escape(name)}\b", linecache.getline(code.co_filename, n))]
    if not found or (len(found) > 1 and not name):
        return ""  # none, or several acquiring something: stress does not guess which
    at = f"{found[0]}" if len(found) == 1 else ", ".join(map(str, found[:-1])) + f" and {found[-1]}"
    return f"took it at {short_path(code.co_filename)}:{at} in {code.co_name} and "


def _line(frame: FrameType) -> int:
    """The frame's current line; a frame between lines (possible in another thread, seen from
    outside) counts as on its function's first line."""
    line = frame.f_lineno
    return line if line is not None else frame.f_code.co_firstlineno


def _line_text(frame: FrameType, line: int) -> str:
    return f"{short_path(frame.f_code.co_filename)}:{line} in {frame.f_code.co_name}"


def _base_name(primitive: Any) -> str | None:
    site = getattr(primitive, "_created", None)
    if site is None:
        return None
    targets = _assigned_to(site[0], site[1])
    return targets[site[2] % len(targets)].rsplit(".", 1)[-1] if targets else None


#: What the code under test calls to make a primitive: a call of another name (``make_lock()``)
#: makes its primitive on a line of its own, not on the line that calls it.
_MAKERS = frozenset(
    {
        "Lock", "RLock", "Condition", "Semaphore", "BoundedSemaphore", "Event", "Barrier",
        "Queue", "SimpleQueue", "LifoQueue", "PriorityQueue", "JoinableQueue",
    }
)  # fmt: skip


@dataclass(frozen=True)
class _Named:
    """What a source line's assignments name the primitives it makes: one name per primitive,
    in the order the line makes them, and whether the line makes a list of them."""

    names: tuple[str, ...]
    listed: bool = False


#: Per file: its text (to see a change) and what each line names.
_NAMED: dict[str, tuple[str, dict[int, _Named]]] = {}


def _named(file: str, line: int) -> _Named:
    text = "".join(linecache.getlines(file))
    known = _NAMED.get(file)
    if known is None or known[0] != text:
        known = _NAMED[file] = (text, _index_names(text))
    return known[1].get(line, _Named(()))


def _maker(node: ast.expr) -> bool:
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    return (func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else "") in _MAKERS


def _index_names(text: str) -> dict[int, _Named]:
    """Read every assignment of a module's source: which names the primitives made on each line
    go to. ``a, b = Lock(), Lock()`` names the line's first ``a`` and its second ``b``; ``a, b =
    make(), Lock()`` its only one ``b``; ``m = Lock(); n = Lock()`` its first ``m``, its second
    ``n``; a tuple split over lines names each line's by its own target; nested tuples pair up;
    ``forks = [Lock() for _ in range(5)]`` is a list (its k-th is ``forks[k]``)."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return {}
    found: dict[int, list[tuple[int, str]]] = {}
    listed: set[int] = set()

    def name_of(target: ast.expr) -> str | None:
        if isinstance(target, ast.Name | ast.Attribute):
            return ast.unparse(target).removeprefix("self.")
        return None

    def pair(target: ast.expr, value: ast.expr) -> None:
        if isinstance(target, ast.Tuple | ast.List):
            if not isinstance(value, ast.Tuple | ast.List) or len(value.elts) != len(target.elts):
                return
            any_maker = any(_maker(v) or isinstance(v, ast.Tuple | ast.List) for v in value.elts)
            for t, v in zip(target.elts, value.elts, strict=True):
                if isinstance(v, ast.Tuple | ast.List) or _maker(v) or (not any_maker and isinstance(v, ast.Call)):
                    pair(t, v)
            return
        name = name_of(target)
        if name is None:
            return
        calls = [node for node in ast.walk(value) if isinstance(node, ast.Call) and _maker(node)]
        if isinstance(value, ast.ListComp | ast.List) and calls:
            listed.update(call.lineno for call in calls)
        for call in calls:
            found.setdefault(call.lineno, []).append((call.col_offset, name))
        if not calls:  # `lock = make_lock()` and the like: the line's, as far as it goes
            found.setdefault(value.lineno, []).append((value.col_offset, name))

    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            pair(node.targets[0], node.value)
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            pair(node.target, node.value)
    named = {}
    for line, entries in found.items():
        names = tuple(name for _, name in sorted(entries))
        if len(set(names)) == 1:
            names = names[:1]  # one name for all the line makes (`cond = Condition(Lock())`)
        named[line] = _Named(names, line in listed)
    return named


def _assigned_to(file: str, line: int) -> tuple[str, ...]:
    """The names the creating line assigns what it makes to (see `_index_names`): ``(lock_a,)``
    for ``lock_a = Lock()``; ``(a, b)`` for ``a, b = Lock(), Lock()`` (the k-th primitive the line
    makes goes to the (k mod 2)-th; ``lock, n = Lock(), 0`` gives ``(lock,)``); none for a line
    that assigns to no plain name."""
    return _named(file, line).names


def describe_primitive(primitive: Any) -> str:
    """How a person knows a primitive: the name its creating line assigned it to (``lock_a``,
    ``forks[2]``), else its type and where it was created."""
    task = getattr(primitive, "_stress_task", None)
    if task is not None:
        return f"the result of {task_name(task)}()"  # a future made by an executor's submit
    site = getattr(primitive, "_created", None)
    kind = type(primitive).__name__
    if site is None:
        return kind
    file, line, ordinal, count = site
    return describe_site(file, line, ordinal, count=count[0], kind=kind)


def describe_site(file: str, line: int, ordinal: int, *, count: int, kind: str = "lock") -> str:
    """Name a primitive by its creation site: ``lock_a``, ``forks[2]``, ``a#1``, or ``Lock#2 created at x.py:30``.

    Args:
        ordinal: Which of the primitives made on that line in its trial it was (from 0).
        count: How many the line made in that trial (at least; more than the line has names
            for, and each name is numbered by the time the line ran).
    """
    targets = _assigned_to(file, line)
    width = max(1, len(targets))
    number = f"#{ordinal // width}" if count > width else ""
    if len(targets) == 1 and count > 1 and _named(file, line).listed:
        return f"{targets[0]}[{ordinal}]"  # forks = [Lock() for _ in range(5)]: the code says forks[3]
    if targets:
        return targets[ordinal % width] + number
    return f"{kind}{number} created at {short_path(file)}:{line}"

"""Instrumented synchronization primitives: the real ones, made visible to the harness.

During a trial, code under test that writes ``threading.Lock()`` (or ``RLock``, ``Condition``,
``Semaphore``, ``BoundedSemaphore``, ``Event``, ``Barrier``, ``queue.Queue``) gets one of these
(`harness.detect.instrument` swaps the constructors). They behave like the originals — the higher-level
ones *are* the standard library's classes, with their internal lock and conditions replaced — and add:

* **ownership**: each lock knows the thread that holds it and where it was acquired;
* **visible waits**: a blocking wait registers in the trial's `WaitGraph` and waits in short slices
  on the real lock, so a detected deadlock can release it with `DeadlockError`;
* **lock order** (like Linux's lockdep): each blocking acquisition made while holding other locks
  records "held A while acquiring B" between lock identities (creation site and creation order in
  the trial), for the potential-deadlock analysis across trials;
* **perturbation**: with the plan's ``sync`` knob, a forced thread switch may happen just before
  and after each acquire, release, wait and notify.

The uncontended ``with lock:`` path is kept short (it is what every critical section pays): one
try-acquire of the real lock, the owner, the acquisition frame, and a push on the thread's chain of
held locks. Everything else happens only when a thread has to wait.
"""

from __future__ import annotations

import _thread
import contextlib
import functools
import math
import multiprocessing
import os
import queue
import random
import sys
import threading
import time
import types
from _thread import allocate_lock, get_ident
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

from harness.detect.findings import Findings
from harness.detect.happens_before import Clock, StartJoinOrder
from harness.detect.wait_graph import DeadlockError, ForkedDeadlockError, WaitGraph, Waiting, acquired_where
from harness.perturb import pause as _pause
from harness.perturb import preempt as _preempt
from harness.scope import HARNESS_DIR
from harness.text import short_path

__all__ = [
    "Barrier",
    "BoundedSemaphore",
    "Condition",
    "Event",
    "Lock",
    "Queue",
    "RLock",
    "Semaphore",
    "Session",
    "SimpleQueue",
    "activate",
    "creation",
    "creation_at",
    "deactivate",
    "note_join",
    "note_start",
]

#: First and longest slice of a blocking wait. The first is short so that a deadlock is
#: confirmed quickly; later ones are longer so that a long legitimate wait costs little. A deadlock
#: is the same wait-for state seen at both ends of a slice, nobody having entered or left a wait
#: between (`WaitGraph.check`); each look is a complete judgement on its own (every thread of the
#: trial waits, on a primitive whose holder waits too), so the slice's length is no safety margin,
#: only how soon the second look comes. (0.5 ms cost each deadlocked trial 0.4 ms more.)
SLICE_FIRST = 0.0001
SLICE_MAX = 0.008

_local = _thread._local()


class _ThreadState:
    """Per thread: its ident and name, the locks it holds (oldest first), and the semaphore permits
    it holds (identity -> (count, capacity)).

    ``held`` is changed by other threads too: a plain Lock may be released by any thread, which
    takes it out of its owner's list. Only whole-list operations, each atomic, touch it; an entry
    whose lock names another owner (a release that raced with the acquire) is stale and skipped."""

    __slots__ = ("held", "ident", "name", "permits", "pid", "session", "thread")

    def __init__(self) -> None:
        self.ident = get_ident()
        #: The process the thread ran in: another one's, in a child forked while it held a lock.
        self.pid = os.getpid()
        # Kept for a forked child's reports: there, the thread is gone but its locks are not.
        #: The thread object (an actor's is new each trial, on a reused OS thread): alive or not.
        self.thread = threading.current_thread()
        self.name = self.thread.name
        self.held: list[Any] = []
        #: The trial it was made in: a lock it holds may outlive it (a module's, left held).
        self.session = _session
        self.permits: dict[int, list[int]] = {}


def _new_state() -> _ThreadState:
    state = _local.state = _ThreadState()
    return state


def _current_state() -> _ThreadState:
    try:
        state: _ThreadState = _local.state
    except AttributeError:
        state = _new_state()
    return state


# -- the current trial -------------------------------------------------------------------------


class Session:
    """What the primitives need to know about the running trial.

    Args:
        graph: The trial's wait-for graph (None: waits are plain and invisible).
        order: The variant's lock-order edges seen so far in this worker, keyed by identity pair,
            each with the threads seen taking it: role and clock (see `order_clocks`).
        sync: Probability of a forced switch before and after each primitive operation.
        pause: Length of such a switch (0: a bare yield).
        seed: Seed for where the switches happen.
        findings: Where a process forked during the trial reports the deadlocks it finds.
    """

    def __init__(
        self,
        *,
        graph: WaitGraph | None = None,
        order: dict[Any, set[Any]] | None = None,
        sync: float = 0.0,
        pause: float = 0.0,
        seed: int = 0,
        findings: Findings | None = None,
    ) -> None:
        self.graph = graph
        self.findings = findings
        self.order = order if order is not None else {}
        self.new_order: list[dict[str, Any]] = []
        self.sync = sync
        self.pause = pause
        self._seed = seed
        self._rng: random.Random | None = None
        self.switches = 0
        #: Stress mode: primitive operations left before the next forced switch (see `due`).
        self.countdown = 1
        self._gap: Callable[[], int] | None = None
        self.site_counts: dict[tuple[str, int], list[int]] = {}
        #: Controlled mode's scheduler: operations are its scheduling points, waits go through it.
        self.controlled: Any = None
        #: Which thread of the trial took a lock-order edge (its role, the same in every trial) and
        #: what its start and join order says ran before it (a cycle needs edges that can overlap).
        self.order_clocks = StartJoinOrder()

    @property
    def rng(self) -> random.Random:
        """Where the ``sync`` switches fall, seeded from the plan (made at the first primitive
        operation: most of a small trial's cost would otherwise be seeding it)."""
        if self._rng is None:
            self._rng = random.Random(f"stress-sync/{self._seed}")
        return self._rng

    def unwind(self) -> None:
        """A deadlock of this trial is confirmed (`WaitGraph.check`): the trial is over, and its
        threads only unwind now. No more switches are forced, at primitives or in the code under
        test, and a thread of the trial that asks again for a primitive the deadlock waits on gets
        `DeadlockError` too (`_unwinding`), rather than run the rest of its work for nothing."""
        global _unwinding
        self._gap = _never
        self.countdown = _NEVER
        preemptor = _preempt.active()
        if preemptor is not None:
            preemptor.hold_off()
        if self.graph is not None and _session is self:
            _unwinding = self.graph.deadlocked_on

    def due(self) -> None:
        """The countdown to the next ``sync`` switch ran out: switch, and draw the next gap (one
        draw per switch, geometric, rather than a coin flip per operation). The first call, at the
        trial's first operation, only draws where the first switch falls."""
        gap = self._gap
        if gap is None:
            gap = self._gap = _pause.gaps(self.sync, self.rng)
            self.countdown = gap() - 1
            if self.countdown > 0:
                return
        self.countdown = gap()
        self.switches += 1
        trace = _preempt.suspend()
        try:
            _pause.switch(self.pause)
        finally:
            _preempt.resume(trace)


#: A countdown that does not run out within a trial.
_NEVER = sys.maxsize


def _never() -> int:
    return _NEVER


_session: Session | None = None
#: Identities of the primitives a confirmed deadlock of the current trial waits on (see
#: `Session.unwind`); empty otherwise, which is all the hot path looks at.
_unwinding: frozenset[int] = frozenset()
_sync = False
_gettrace, _settrace = sys.gettrace, sys.settrace
_sites: dict[tuple[str, int], int] = {}
_site_list: list[tuple[str, int]] = []


def activate(session: Session, *, controlled: bool = False) -> None:
    """Make ``session`` the current trial's (the worker calls this around each trial). In
    controlled mode every primitive operation is a scheduling point."""
    global _session, _sync, _unwinding
    _session = session
    _unwinding = frozenset()
    # The thread running the trial starts it holding nothing: a lock an earlier trial's body left
    # held (its objects dropped with that trial) is no lock this trial holds.
    _new_state()
    _sync = controlled or session.sync > 0
    _use_synced_locks(_sync, controlled=controlled)


def current_session() -> Session | None:
    """The running trial's session, if any."""
    return _session


def last_session() -> Session | None:
    """The session of the trial that ended last (between trials: the one just over)."""
    return _last_session


_last_session: Session | None = None


def note_start(child: threading.Thread) -> None:
    """The current thread starts ``child`` (before it runs): for the lock-order analysis, all it
    did so far happens before all the child does."""
    session = _session
    target = getattr(child, "_target", None)
    if target is not None and getattr(target, "__module__", None) == "concurrent.futures.thread":
        return  # an executor's worker: each task it runs is ordered on its own (see instrument)
    if session is not None:
        session.order_clocks.started(threading.current_thread(), child)


def note_join(ended: threading.Thread) -> None:
    """The current thread's join of ``ended`` returned: if ``ended`` is over, all it did happens
    before what the current thread does next."""
    session = _session
    if session is not None and not ended.is_alive():
        session.order_clocks.joined(threading.current_thread(), ended)


def _after_fork_in_child() -> None:
    """A forked child (a process actor, a Pool worker, a plain multiprocessing.Process) starts with
    a copy of its parent's trial, but with one thread. It gets a wait-for graph of its own — the
    copy's internal lock may have been held by a thread the child does not have — in which a lock
    copied held, with nobody left to release it, is a deadlock like any other."""
    global _forked, wait_hook
    _forked = True
    wait_hook = None  # the beacon counts the worker's own waiters only
    session = _session
    if session is not None and session.graph is not None:
        old = session.graph
        session.graph = WaitGraph(scope=old.scope, main=get_ident(), preexisting=set())


_forked = False
os.register_at_fork(after_in_child=_after_fork_in_child)

#: Told +1 when a thread of this process starts waiting, with no timeout, on an instrumented
#: primitive, and -1 when the wait ends (the worker's beacon counts them: a waiter wakes every few
#: milliseconds to look for a deadlock, and from outside that looks like a thread at work).
wait_hook: Callable[[int], None] | None = None


def deactivate() -> None:
    global _session, _sync, _last_session, _unwinding
    _last_session = _session
    _session = None
    _unwinding = frozenset()
    if _sync:
        _use_synced_locks(False)
    _sync = False


@contextlib.contextmanager
def atomic() -> Iterator[None]:
    """Run the block without scheduling points: for a scenario's own bookkeeping (counting who is
    inside, say), never for the code under test.

    In controlled mode no other thread runs until the block ends, so bookkeeping guarded by a lock
    stress does not instrument cannot leave another actor blocked where the scheduler cannot see
    it. Stress mode is unaffected (there the lock keeps the bookkeeping right).
    """
    session = _session
    scheduler = session.controlled if session is not None else None
    if scheduler is None:
        yield
        return
    scheduler.quiet(+1)
    try:
        yield
    finally:
        scheduler.quiet(-1)


def _sync_point(primitive: Any, operation: str) -> None:
    """Maybe force a thread switch here (the plan's ``sync`` knob); in controlled mode, let the
    scheduler choose (the trace names the operation: ``lock_a.acquire()``)."""
    session = _session
    if session is None:
        return
    if session.controlled is not None:
        session.controlled.primitive_point(getattr(primitive, "_primitive", primitive), operation)
        return
    session.countdown -= 1
    if session.countdown <= 0:
        session.due()


# -- identities: where and in which order a primitive was created --------------------------------


def creation(frame: FrameType | None) -> tuple[tuple[str, int, int, list[int]], int]:
    """The primitive's creation record and its lock-order identity.

    The record is ``(file, line, ordinal, count)``: the ordinal-th primitive created at that line
    in this trial, and a shared counter of how many were (so reports can say ``forks#3``). The
    identity packs the site and the ordinal into one int for the lock-order fast path.
    """
    while frame is not None and (
        frame.f_code.co_filename.startswith(HARNESS_DIR) or frame.f_code.co_filename == threading.__file__
    ):
        frame = frame.f_back
    site = (frame.f_code.co_filename, frame.f_lineno or frame.f_code.co_firstlineno) if frame is not None else ("?", 0)
    number = _sites.get(site)
    if number is None:
        number = _sites[site] = len(_site_list)
        _site_list.append(site)
    session = _session
    if session is None:
        return (site[0], site[1], 0, [1]), number << 20
    count = session.site_counts.setdefault(site, [0])
    ordinal = count[0]
    count[0] += 1
    return (site[0], site[1], ordinal, count), (number << 20) | (ordinal & 0xFFFFF)


def creation_at(file: str, line: int) -> tuple[tuple[str, int, int, list[int]], int]:
    """A creation record for a primitive made at ``file:line`` outside any trial (a module's
    global, adopted later): ordinal 0 of its site."""
    site = (file, line)
    number = _sites.get(site)
    if number is None:
        number = _sites[site] = len(_site_list)
        _site_list.append(site)
    return (file, line, 0, [1]), number << 20


def _identity_text(key: int) -> dict[str, Any]:
    file, line = _site_list[key >> 20]
    return {"file": file, "line": line, "ordinal": key & 0xFFFFF}


_PLUMBING = (HARNESS_DIR, threading.__file__, queue.__file__)


def _is_plumbing(frame: FrameType) -> bool:
    """Frames of the harness and of the standard library's threading machinery."""
    return frame.f_code.co_filename.startswith(_PLUMBING)


def _frame_text(frame: FrameType | None) -> str:
    """``file:line in function`` of the first frame outside the plumbing."""
    while frame is not None and _is_plumbing(frame):
        frame = frame.f_back
    if frame is None:
        return "?"
    line = frame.f_lineno if frame.f_lineno is not None else frame.f_code.co_firstlineno
    return f"{frame.f_code.co_filename}:{line} in {frame.f_code.co_name}"


#: Takers (a thread's role and clock) recorded per lock-order edge per worker: an edge taken by
#: more is recorded once more as one any thread may take.
EDGE_THREADS = 8


def _record_order(state: _ThreadState, lock: Any) -> None:
    """``lock`` is being acquired (blocking) while the locks on ``state``'s chain are held.

    Each edge "held -> lock" also carries its *gates*: the other locks and the semaphore permits
    the thread holds at that moment. A cycle whose every edge was taken inside the same gate, and
    that needs more threads than the gate admits, cannot close (a waiter admitting four of five
    philosophers); the lock-order analysis uses this to stay quiet about it.

    An edge is recorded once per *taker* (up to `EDGE_THREADS`): the thread's role in the trial
    and its clock of thread starts and joins (`harness.detect.happens_before`). A cycle needs as
    many threads as it has locks, and one whose edges only ever one thread took cannot close (a
    plain Lock released by another thread lets one thread take two locks in both orders); nor can
    one whose edges are ordered by starts and joins (one thread's, joined before the next starts).
    """
    held_now = state.held[:]  # a copy: other threads release into it
    chain = [node for node in held_now if node._owner is state]
    if len(chain) < len(held_now):
        # Entries a plain Lock's release by another thread left behind mid-acquire (`_unlink`):
        # dropped, or they pile up, and every nested acquire walks them all (without the GIL such
        # races are frequent). One released meanwhile and put back here is stale, dropped next time.
        state.held[:] = chain
    session = _session
    if session is None:
        return
    order = session.order
    key = lock._key
    permits = state.permits
    taker: tuple[str, Clock] | None = None
    for held in chain:
        if held._key == key:
            continue
        if len(chain) == 1 and not permits:
            edge: Any = (held._key << 32) | key
            gates: list[tuple[int, int]] = []
        else:
            gates = [(g._key, 1) for g in chain if g is not held] + [(k, c[1]) for k, c in permits.items()]
            edge = (held._key, key, frozenset(gates))
        if taker is None:
            taker = session.order_clocks.taker(state.thread)
        takers = order.get(edge)
        if takers is None:
            takers = order[edge] = set()
        elif taker in takers or len(takers) > EDGE_THREADS:
            continue
        takers.add(taker)
        role, clock = taker
        thread = state.name if "·" not in role else state.name + role[role.index("·") :]
        frame = sys._getframe(1)
        try:
            held_at, acquiring_at = acquired_where(held, frame, _is_plumbing), _frame_text(frame)
        except Exception:  # where is best effort; the edge itself is what the analysis needs
            held_at = acquiring_at = "?"
        session.new_order.append(
            {
                "held": _identity_text(held._key),
                "acquiring": _identity_text(key),
                "held_at": held_at,
                "acquiring_at": acquiring_at,
                "thread": thread,
                # Past `EDGE_THREADS` takers: any thread may take the edge.
                "role": role if len(takers) <= EDGE_THREADS else None,
                "clock": clock,
                "gates": [{**_identity_text(gate), "capacity": capacity} for gate, capacity in gates],
            }
        )


def _took_permit(semaphore: Any, got: bool) -> None:
    if got:
        permits = _current_state().permits
        held = permits.get(semaphore._key)
        if held is None:
            permits[semaphore._key] = [1, semaphore._capacity]
        else:
            held[0] += 1
        taken = semaphore._taken
        taken.append((get_ident(), threading.current_thread(), user_site(sys._getframe(1))))
        if len(taken) > _TAKEN_KEPT:  # acquired here, released elsewhere, over and over: keep the latest
            with contextlib.suppress(IndexError):
                del taken[0]


def _returned_permits(semaphore: Any, count: int) -> None:
    permits = _current_state().permits
    held = permits.get(semaphore._key)
    if held is not None:
        held[0] -= count
        if held[0] <= 0:
            del permits[semaphore._key]
    taken: list[tuple[int, threading.Thread, str]] = semaphore._taken
    me = get_ident()
    # Every thread of the trial does this at once, and a signal handler may do it in the middle of
    # it: only whole-list operations, each atomic (no lock, which a fork or a handler could leave
    # held), and an entry another release took meanwhile is simply not there any more. A permit has
    # no owner: a release answers this thread's own latest acquires only (another thread's release
    # says nothing of which acquire it gives back).
    mine = [entry for entry in taken[:] if entry[0] == me]  # a copy: iterating the list itself could skip
    for entry in mine[::-1][:count]:
        with contextlib.suppress(ValueError):
            taken.remove(entry)


#: Unanswered acquires a semaphore remembers at most (for a deadlock's explanation).
_TAKEN_KEPT = 64


def user_site(frame: FrameType | None) -> str:
    """``file.py:40 in worker``: the innermost frame of ``frame``'s stack that is not stress's or
    ``threading``'s (where the code under test called the primitive)."""
    while frame is not None and (
        frame.f_code.co_filename.startswith(HARNESS_DIR) or frame.f_code.co_filename == threading.__file__
    ):
        frame = frame.f_back
    if frame is None:
        return "an unknown place"
    return f"{short_path(frame.f_code.co_filename)}:{frame.f_lineno} in {frame.f_code.co_name}"


def _unlink(held: list[Any], lock: Any) -> None:
    """Remove ``lock`` from a thread's list of held locks: released out of order, or by another
    thread (a plain Lock). Not there (a release that raced with the acquire's bookkeeping) is fine:
    the entry left behind names another owner and is skipped as stale."""
    with contextlib.suppress(ValueError):
        held.remove(lock)


# -- blocking ------------------------------------------------------------------------------------


_OUT_OF_RANGE = "timestamp out of range for platform time_t"


def _unwind_if_in_trial() -> None:
    """A primitive a confirmed deadlock waits on is asked for again: raise `DeadlockError` in a
    thread of the trial. One that was running before it (a module-level pool's worker) is not the
    trial's to unwind."""
    session = _session
    graph = session.graph if session is not None else None
    if graph is not None and graph.aborting and get_ident() not in graph.preexisting:
        raise _unwind(graph, get_ident())


def _unwind(graph: WaitGraph, me: int) -> BaseException:
    """`_deadlock`'s exception, for thread ``me`` of a trial whose deadlock is confirmed; a thread
    the code under test started itself is noted (`WaitGraph.unwound`)."""
    if me != graph.main and me not in graph.actors:
        graph.unwound.append(threading.current_thread().name)
    return _deadlock(graph)


def _validate(blocking: bool, timeout: float) -> None:
    """The argument checks of the C lock's acquire, with its exceptions."""
    if not blocking and timeout != -1:
        raise ValueError("can't specify a timeout for a non-blocking call")
    if timeout != timeout:
        raise ValueError("Invalid value NaN (not a number)")
    if timeout < 0 and timeout != -1:
        raise ValueError("timeout value must be a non-negative number")
    if timeout > threading.TIMEOUT_MAX:
        raise OverflowError(_OUT_OF_RANGE)


def _deadlock(graph: WaitGraph) -> BaseException:
    """The exception that unwinds a deadlocked thread; it carries the finding, so that it still
    explains itself after crossing a process boundary (a Pool task, a process actor)."""
    finding = graph.finding
    summary, lines = ("the trial deadlocked", []) if finding is None else (finding.summary, list(finding.lines))
    if _forked:
        summary = f"in process {multiprocessing.current_process().name} (pid {os.getpid()}): {summary}"
        _report_from_child(graph, summary, lines)
        return ForkedDeadlockError(summary, lines)
    return DeadlockError(summary, lines)


_reported: WaitGraph | None = None


def _report_from_child(graph: WaitGraph, summary: str, lines: list[str]) -> None:
    """Tell the whole trial, once per finding, of a deadlock found in this forked process: the code
    that started it may never look at how it ended."""
    global _reported
    session = _session
    if _reported is graph or session is None or session.findings is None or graph.finding is None:
        return
    _reported = graph
    session.findings.report(multiprocessing.current_process().name, summary, lines)


def _block_controlled(
    scheduler: Any, graph: WaitGraph, try_acquire: Callable[..., bool], timeout: float, waiting: Waiting
) -> bool:
    """Controlled mode: the thread blocks in the scheduler (others run meanwhile) until the lock
    is free — then takes it at once, nobody else running — or its virtual deadline passes. Once the
    scheduler has let go of the threads (a process started, a signal timer armed), the wait is a
    stress-mode one, judged by the wait-for graph: a deadlock after that is still found."""
    real = try_acquire.__self__  # type: ignore[attr-defined]
    me = get_ident()
    left: list[float | None] = []  # the real time left when the scheduler let go

    def let_go(seconds: float | None) -> bool:
        left.append(seconds)
        return False

    interrupted = graph.enter(me, waiting)
    try:
        deadline = scheduler.timeout_deadline(timeout)
        while not scheduler.released:
            if not scheduler.block(lambda: not real.locked(), deadline, released=let_go):
                if not left:
                    return False
                break
            if try_acquire(False):
                return True
        if not left:
            left.append(None if deadline is None else max(0.0, deadline - scheduler.now))
    finally:
        graph.leave(me, interrupted)
    seconds = left[0]
    return _wait_in_slices(_session, graph, try_acquire, -1 if seconds is None else seconds, waiting)


def _block(try_acquire: Callable[..., bool], timeout: float, waiting: Waiting) -> bool:
    """Wait for ``try_acquire`` to succeed, visibly: registered in the graph, in slices, so that a
    confirmed deadlock can end the wait with `DeadlockError`. Runs with 3.11's preemption tracer
    suspended (`harness.perturb.preempt.suspend`)."""
    trace = _preempt.suspend()
    try:
        return _wait_visibly(try_acquire, timeout, waiting)
    finally:
        _preempt.resume(trace)


def wait_in_graph(done: Callable[[float], bool], waiting: Waiting) -> None:
    """Wait, untimed, until ``done(seconds)`` — which waits up to ``seconds`` (``-1``: for ever)
    and says whether the wait is over — returns True, registered in the wait-for graph as
    ``waiting`` (outside a trial, plainly). A confirmed deadlock ends it with
    `DeadlockError`. For waits on what stress does not replace: a `concurrent.futures.Future`."""
    if _session is None:
        done(-1)
        return
    _block(lambda blocking=True, timeout=-1: done(timeout if blocking else 0.0), -1, waiting)


def _untraced(function: Callable[..., Any]) -> Callable[..., Any]:
    """``function``, run with 3.11's preemption tracer suspended: a primitive's operation is
    stress's code (and the standard library's), where no switch is forced, and under the tracer it
    would run on the interpreter's slow path (`harness.perturb.preempt.current_tracer`). The
    primitives' public operations are wrapped so on 3.11 only; 3.12+ needs no tracer."""

    @functools.wraps(function)
    def untraced(*args: Any, **kwargs: Any) -> Any:
        trace = _preempt.suspend()
        try:
            return function(*args, **kwargs)
        finally:
            _preempt.resume(trace)

    return untraced


def _wait_visibly(try_acquire: Callable[..., bool], timeout: float, waiting: Waiting) -> bool:
    session = _session
    graph = session.graph if session is not None else None
    if graph is None:
        return bool(try_acquire(True, timeout))
    if timeout > threading.TIMEOUT_MAX:  # the real lock would refuse it; slices would hide that
        raise OverflowError(_OUT_OF_RANGE)
    if session is not None and session.controlled is not None and not session.controlled.released:
        return _block_controlled(session.controlled, graph, try_acquire, timeout, waiting)
    return _wait_in_slices(session, graph, try_acquire, timeout, waiting)


def _wait_in_slices(
    session: Session | None, graph: WaitGraph, try_acquire: Callable[..., bool], timeout: float, waiting: Waiting
) -> bool:
    """Stress mode's wait: in slices, registered in the graph, each slice a look for a deadlock."""
    me = get_ident()
    # A thread from before the trial (a module's flusher, a module pool's worker) is not the
    # trial's to unwind: ended, it would be missing from every later trial that counts on it.
    unwinds = me not in graph.preexisting
    if graph.aborting and unwinds:
        raise _unwind(graph, me)
    interrupted = graph.enter(me, waiting)
    hook = wait_hook if not waiting.timed else None
    if hook is not None:
        hook(1)
    if not waiting.timed:
        if waiting.lock is not None and (owner := waiting.lock._owner) is not None:
            # Nothing this thread can do until the holder goes on: if a forced switch keeps it
            # out, end that now rather than leave the interpreter idle for the rest of it.
            _pause.wake(owner.ident)
        _pause.stuck(waiting)
    try:
        deadline = math.inf if timeout < 0 else time.monotonic() + timeout
        # A timed wait is never judged (it ends by itself); its slices only let it see an abort, so
        # it takes them long: each slice of a wait may end up to the kernel's timer slack (50 µs)
        # late, and a 200 µs timeout cut into short slices would last half as long again.
        pause = SLICE_MAX if waiting.timed else SLICE_FIRST
        # At the start, only a cycle of lock waits is looked for (a few owner links); whether
        # everyone is stuck needs the trial's threads listed, and most waits end within a slice.
        candidate = None if waiting.timed else graph.check(me, None, cycles_only=True)
        while True:
            if graph.aborting and unwinds:
                raise _unwind(graph, me)
            if _session is not session:
                # The trial is over and nobody judges this wait any more (a daemon thread it left
                # parked on a queue, say): wait plainly, not in slices that would keep every such
                # thread waking a hundred times a second for the rest of the worker's life.
                left = -1 if deadline == math.inf else max(0.0, deadline - time.monotonic())
                return bool(try_acquire(True, left))
            if deadline == math.inf:
                if try_acquire(True, pause):
                    return True
            else:
                left = deadline - time.monotonic()
                if left <= 0:
                    return bool(try_acquire(False))
                if try_acquire(True, min(pause, left)):
                    return True
            if not waiting.timed:
                candidate = graph.check(me, candidate)
                if graph.finding is not None and session is not None:  # confirmed (this look, or another)
                    session.unwind()
            pause = min(pause * 2, SLICE_MAX)
    finally:
        graph.leave(me, interrupted)
        if hook is not None:
            hook(-1)
        if not waiting.timed:
            _pause.unstuck()


# -- locks ---------------------------------------------------------------------------------------


class Lock:
    """`threading.Lock`, instrumented.

    `acquire` and `release` are the hot path of every critical section, so they carry no
    perturbation check: when a trial's plan has forced switches at primitive operations,
    `activate` swaps in `_synced_acquire` and `_synced_release`, which add them around.
    """

    __slots__ = ("__weakref__", "_created", "_key", "_owner", "_quiet", "_real", "_release", "_try")

    def __init__(self, *, _created: Any = None, _quiet: bool = False) -> None:
        #: Internal to another primitive: no forced switches of its own (the owner has them).
        self._quiet = _quiet
        real = allocate_lock()
        self._real = real
        self._try = real.acquire
        self._release = real.release
        self._owner: Any = None
        created, key = creation(sys._getframe(1)) if _created is None else _created
        self._key: int = key
        self._created = created

    def acquire(self, blocking: bool = True, timeout: float = -1, *, _local: Any = _local) -> bool:
        if _unwinding and id(self) in _unwinding:
            _unwind_if_in_trial()
        if timeout == -1 and self._try(False):
            try:
                state = _local.state
            except AttributeError:
                state = _new_state()
            self._owner = state
            held = state.held
            if held and blocking:
                _record_order(state, self)
            held.append(self)
            return True
        return self._acquire_slow(blocking, timeout)

    __enter__ = acquire

    def _acquire_slow(self, blocking: bool, timeout: float) -> bool:
        _validate(blocking, timeout)
        if not blocking:
            got = bool(self._try(False))
        else:
            state = _current_state()
            if self._owner is None and self._real.locked() and _interrupted_inside(self, sys._getframe(1)):
                return self._wait_for_itself(state, timeout)
            if timeout == -1 and state.held:
                _record_order(state, self)  # an attempt counts: it may never succeed
            got = self._try(False) or _block(self._try, timeout, Waiting(self, lock=self, timed=timeout != -1))
        if got:
            state = _current_state()
            self._owner = state
            state.held.append(self)
        return got

    def _wait_for_itself(self, state: Any, timeout: float) -> bool:
        """A signal handler waits for this lock while its own thread is inside the lock's acquire or
        release, between the real lock and the bookkeeping: the lock is held by this very thread,
        as the C lock, whose operations a handler cannot split, would have it. A timed wait times
        out; an untimed one is a deadlock (the graph sees the thread waiting for itself). The
        bookkeeping is left to the interrupted call, which finishes it if the handler returns."""
        if timeout != -1:
            return _block(self._try, timeout, Waiting(self, lock=self, timed=True))
        self._owner = state
        try:
            return _block(self._try, timeout, Waiting(self, lock=self, timed=False))
        finally:
            self._owner = None

    def release(self) -> None:
        owner = self._owner
        if owner is not None:
            held = owner.held
            # Last in, first out: the usual case, taken only by the owner's own thread. Another
            # thread's release of a plain Lock races with the owner's appends and removes (without
            # the GIL, at any instruction: the list was emptied between the test and the index).
            if owner.ident == get_ident() and held[-1:] == [self]:
                del held[-1:]
            else:
                _unlink(held, self)
            self._owner = None
        self._release()

    def __exit__(self, *_: object) -> None:
        # `release`, repeated rather than called: this is every critical section's exit.
        owner = self._owner
        if owner is not None:
            held = owner.held
            if owner.ident == get_ident() and held[-1:] == [self]:
                del held[-1:]
            else:
                _unlink(held, self)
            self._owner = None
        self._release()

    def locked(self) -> bool:
        return bool(self._real.locked())

    # The C lock's old aliases, kept by the standard library on every supported version.
    acquire_lock = acquire
    release_lock = release
    locked_lock = locked

    def _at_fork_reinit(self) -> None:
        self._real._at_fork_reinit()  # type: ignore[attr-defined]
        self._owner = None

    def __repr__(self) -> str:
        state = "locked" if self._real.locked() else "unlocked"
        return f"<{state} stress.Lock created at {self._created[0]}:{self._created[1]}>"


_plain_acquire = Lock.acquire
_plain_release = Lock.release
_plain_exit = Lock.__exit__


# Stress mode's versions count the operation down inline: under 3.11's tracer every Python call
# of an actor thread costs a trace event, and these run at every critical section. They suspend
# that tracer for their own code, which would otherwise run on its slow path (see
# `harness.perturb.preempt.current_tracer`): two calls to ``sys.settrace`` cost less.


def _counted_acquire(self: Lock, blocking: bool = True, timeout: float = -1) -> bool:
    trace = _gettrace()
    if trace is not None:
        if trace is not _preempt.current_tracer:
            trace = None
        else:
            _settrace(None)
    try:
        session = _session
        if self._quiet or session is None:
            return _plain_acquire(self, blocking, timeout)
        session.countdown -= 1
        if session.countdown <= 0:
            session.due()
        if _plain_acquire(self, blocking, timeout):
            session.countdown -= 1
            if session.countdown <= 0:
                session.due()
            return True
        return False
    finally:
        if trace is not None:
            _preempt.resume(trace)


def _counted_release(self: Lock) -> None:
    _counted_exit(self)


def _counted_exit(self: Lock, *_: object) -> None:
    trace = _gettrace()
    if trace is not None:
        if trace is not _preempt.current_tracer:
            trace = None
        else:
            _settrace(None)
    try:
        _plain_release(self)
        session = _session
        if not self._quiet and session is not None:
            session.countdown -= 1
            if session.countdown <= 0:
                session.due()
    finally:
        if trace is not None:
            _preempt.resume(trace)


def _synced_acquire(self: Lock, blocking: bool = True, timeout: float = -1) -> bool:
    quiet = self._quiet
    if not quiet:
        _sync_point(self, "acquire")
    got = _plain_acquire(self, blocking, timeout)
    if got and not quiet:
        _sync_point(self, "acquired")  # taken: a switch here comes with the lock held
    return got


def _synced_release(self: Lock) -> None:
    _plain_release(self)
    if not self._quiet:
        _sync_point(self, "release")


def _synced_exit(self: Lock, *_: object) -> None:
    _plain_release(self)
    if not self._quiet:
        _sync_point(self, "release")


def _interrupted_inside(lock: Lock | RLock, frame: FrameType | None) -> bool:
    """Whether this thread's stack, below the current call (``frame`` and up), holds a call of
    ``lock``'s own that a signal handler interrupted: Python runs handlers between the bytecodes of
    whatever the thread was doing, so a handler can land inside the primitive's bookkeeping. Walked
    only when a lock is held with no owner recorded, never on the fast path."""
    while frame is not None and frame.f_code in _OWN_CODE and frame.f_locals.get("self") is lock:
        frame = frame.f_back  # the call being made now
    while frame is not None:
        if frame.f_code in _OWN_CODE and frame.f_locals.get("self") is lock:
            return True
        frame = frame.f_back
    return False


def _use_synced_locks(synced: bool, *, controlled: bool = False) -> None:
    if synced and controlled:
        Lock.acquire = Lock.__enter__ = _synced_acquire  # type: ignore[method-assign,assignment]
        Lock.release, Lock.__exit__ = _synced_release, _synced_exit  # type: ignore[method-assign]
    elif synced:
        Lock.acquire = Lock.__enter__ = _counted_acquire  # type: ignore[method-assign,assignment]
        Lock.release, Lock.__exit__ = _counted_release, _counted_exit  # type: ignore[method-assign]
    else:
        Lock.acquire = Lock.__enter__ = _plain_acquire  # type: ignore[method-assign]
        Lock.release, Lock.__exit__ = _plain_release, _plain_exit  # type: ignore[method-assign]


class RLock:
    """`threading.RLock`, instrumented."""

    #: Only the thread holding it may release it (a plain `Lock` may be released by any thread).
    owner_release_only = True

    __slots__ = (
        "__weakref__",
        "_count",
        "_created",
        "_handler",
        "_handler_depth",
        "_key",
        "_owner",
        "_real",
        "_releasing",
        "_try",
    )

    def __init__(self, *, _created: Any = None) -> None:
        real = allocate_lock()
        self._real = real
        self._try = real.acquire
        self._owner: Any = None
        self._count = 0
        #: The thread whose last release is under way (a signal handler may run inside it).
        self._releasing: Any = None
        #: A signal handler of this thread holding the lock while the thread itself is inside the
        #: lock's bookkeeping, and how many times it holds it.
        self._handler: Any = None
        self._handler_depth = 0
        created, key = creation(sys._getframe(1)) if _created is None else _created
        self._key: int = key
        self._created = created

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if timeout != -1:
            _validate(blocking, timeout)
        state = _current_state()
        if self._handler is state:
            self._handler_depth += 1  # a signal handler re-entering again (see below)
            return True
        if self._owner is None and self._real.locked() and _interrupted_inside(self, sys._getframe(1)):
            # A signal handler runs in this thread between the real lock and its owner's bookkeeping
            # (inside an acquire, or a last release): as with the C RLock, whose operations a handler
            # cannot split, the lock is this thread's, and the handler re-enters it. Counted apart,
            # so that the interrupted call finishes its bookkeeping undisturbed.
            self._handler, self._handler_depth = state, 1
            return True
        if self._owner is state:
            self._count += 1
            return True
        if _unwinding and id(self) in _unwinding:
            _unwind_if_in_trial()
        if _sync:
            _sync_point(self, "acquire")
        if state.held and blocking and timeout == -1:
            _record_order(state, self)  # the attempt counts: it may never succeed
        if self._try(False):
            got = True
        elif not blocking:
            got = False
        else:
            got = _block(self._try, timeout, Waiting(self, lock=self, timed=timeout != -1))
        if got:
            self._owner = state
            self._count = 1
            state.held.append(self)
            if _sync:
                _sync_point(self, "acquired")
        return got

    __enter__ = acquire

    def release(self) -> None:
        state = _current_state()
        if self._handler is state:
            self._handler_depth -= 1
            if not self._handler_depth:
                self._handler = None
            return
        if self._owner is not state:
            raise RuntimeError("cannot release un-acquired lock")
        self._count -= 1
        if self._count or self._releasing is state:
            # Not the last release; or a signal handler's, inside this thread's own last release,
            # which goes on when the handler returns (as if the handler had run just before it).
            return
        self._releasing = state  # before any call: a signal handler may run at the next one
        self._let_go(state)
        if _sync:
            _sync_point(self, "release")

    def __exit__(self, *_: object) -> None:
        self.release()

    def _let_go(self, state: Any) -> None:
        """The last release; the caller has set ``_releasing`` to this thread first."""
        _unlink(state.held, self)  # a call: a signal handler may run at its start
        self._owner = self._releasing = None
        self._real.release()

    def _is_owned(self) -> bool:
        return self._owner is _current_state()

    def _release_save(self) -> tuple[int, Any]:
        state = _current_state()
        if self._owner is not state or not self._count:
            raise RuntimeError("cannot release un-acquired lock")
        saved = (self._count, state)
        self._count = 0
        self._releasing = state
        self._let_go(state)
        return saved

    def _acquire_restore(self, saved: tuple[int, Any]) -> None:
        count, _ = saved
        self.acquire()
        self._count = count

    def _at_fork_reinit(self) -> None:
        self._real._at_fork_reinit()  # type: ignore[attr-defined]
        self._owner = None
        self._count = 0

    def __repr__(self) -> str:
        state = "locked" if self._real.locked() else "unlocked"
        owner = self._owner.ident if self._owner is not None else 0
        return f"<{state} stress.RLock owner={owner} count={self._count}>"


# -- conditions and what is built on them ---------------------------------------------------------


#: The code of the primitives' own acquire and release paths (`_interrupted_inside`).
_OWN_CODE = frozenset(
    function.__code__
    for function in (
        _plain_acquire,
        _plain_release,
        _plain_exit,
        Lock._acquire_slow,
        Lock._wait_for_itself,
        _synced_acquire,
        _synced_release,
        _synced_exit,
        RLock.acquire,
        RLock.release,
        RLock.__exit__,
        RLock._let_go,
    )
)


class Condition(threading.Condition):
    """`threading.Condition`, instrumented: its waits are visible to the wait-for graph."""

    def __init__(self, lock: Any = None, *, _created: Any = None, _primitive: Any = None, _quiet: bool = False) -> None:
        created = creation(sys._getframe(1)) if _created is None else _created
        if isinstance(lock, Lock | RLock) and _made_together(lock._created, created[0]):
            # ``Condition(RLock())`` on one line is one thing to a person: both go by the line's
            # name (``guard``), as ``Condition()`` and the lock it makes do.
            created[0][3][0] -= 1
            created = (lock._created, lock._key)
        super().__init__(RLock(_created=created) if lock is None else lock)  # type: ignore[arg-type]
        self._created = created[0]
        self._quiet = _quiet
        #: The primitive a person knows this condition by (an Event's, a Queue's, or itself).
        self._primitive = self if _primitive is None else _primitive

    def __exit__(self, *args: object) -> None:
        lock: Any = self._lock  # type: ignore[attr-defined]
        if isinstance(lock, Lock | RLock) and lock._owner is not _current_state():
            session = _session
            if session is not None and session.graph is not None and session.graph.aborting:
                # A deadlock abort interrupted wait() while it took the lock back: there is
                # nothing of ours to release, and releasing would free another thread's hold.
                return None
        lock.__exit__(*args)
        return None

    def wait(self, timeout: float | None = None) -> bool:
        if not self._is_owned():  # type: ignore[attr-defined]
            raise RuntimeError("cannot wait on un-acquired lock")
        if _sync and not self._quiet:
            _sync_point(self, "wait")
        waiter = allocate_lock()
        waiter.acquire()
        self._waiters.append(waiter)  # type: ignore[attr-defined]
        saved_state = self._release_save()  # type: ignore[attr-defined]
        gotit = False
        try:
            waiters = self._waiters  # type: ignore[attr-defined]
            if timeout is None:
                gotit = _block(waiter.acquire, -1, Waiting(self._primitive, token=waiter, waiters=waiters, timed=False))
            elif timeout > 0:
                gotit = _block(
                    waiter.acquire, timeout, Waiting(self._primitive, token=waiter, waiters=waiters, timed=True)
                )
            else:
                gotit = bool(waiter.acquire(False))
            return gotit
        finally:
            self._acquire_restore(saved_state)  # type: ignore[attr-defined]
            if not gotit:
                with contextlib.suppress(ValueError):  # a notify removed it meanwhile
                    self._waiters.remove(waiter)  # type: ignore[attr-defined]
            if _sync and not self._quiet:
                _sync_point(self, "wait")

    def notify(self, n: int = 1) -> None:
        if _sync and not self._quiet:
            _sync_point(self, "notify")
        super().notify(n)
        if _sync and not self._quiet:
            _sync_point(self, "notify")


def _made_together(lock_site: Any, site: Any) -> bool:
    """Whether a lock was made on the same line of the same trial right before a condition."""
    return bool(lock_site[:2] == site[:2] and lock_site[3] is site[3] and lock_site[2] == site[2] - 1)


def _internal_condition(owner: Any, created: Any) -> Condition:
    return Condition(Lock(_created=created, _quiet=True), _created=created, _primitive=owner, _quiet=True)


def _around(operation: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a public operation of a primitive with the plan's forced switches, before and after
    (its internal lock and condition are quiet, so each operation switches at most twice)."""

    def wrapped(self: Any, *args: Any, **kwargs: Any) -> Any:
        if _sync:
            _sync_point(self, operation.__name__)
        result = operation(self, *args, **kwargs)
        if _sync:
            _sync_point(self, operation.__name__)
        return result

    wrapped.__name__ = operation.__name__
    wrapped.__qualname__ = operation.__qualname__
    wrapped.__doc__ = operation.__doc__
    return wrapped


class Semaphore(threading.Semaphore):
    """`threading.Semaphore`, instrumented. It remembers which thread holds how many permits, so
    the lock-order analysis knows a gate that admits only so many threads."""

    def __init__(self, value: int = 1, *, _created: Any = None) -> None:
        super().__init__(value)
        created = creation(sys._getframe(1)) if _created is None else _created
        self._created = created[0]
        self._key: int = created[1]
        self._capacity = value
        self._cond = _internal_condition(self, created)
        #: Acquires not matched by a release yet: (thread ident, thread, where).
        self._taken: list[tuple[int, threading.Thread, str]] = []

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        if _sync:
            _sync_point(self, "acquire")
        got = super().acquire(blocking, timeout)
        _took_permit(self, got)
        if _sync and got:
            _sync_point(self, "acquired")
        return got

    __enter__ = acquire

    def release(self, n: int = 1) -> None:
        super().release(n)
        _returned_permits(self, n)
        if _sync:
            _sync_point(self, "release")


class BoundedSemaphore(Semaphore, threading.BoundedSemaphore):
    """`threading.BoundedSemaphore`, instrumented."""

    def __init__(self, value: int = 1, *, _created: Any = None) -> None:
        threading.BoundedSemaphore.__init__(self, value)
        created = creation(sys._getframe(1)) if _created is None else _created
        self._created = created[0]
        self._key = created[1]
        self._capacity = value
        self._cond = _internal_condition(self, created)
        self._taken = []


class Event(threading.Event):
    """`threading.Event`, instrumented."""

    def __init__(self, *, _created: Any = None) -> None:
        super().__init__()
        created = creation(sys._getframe(1)) if _created is None else _created
        self._created = created[0]
        self._cond = _internal_condition(self, created)

    set = _around(threading.Event.set)
    clear = _around(threading.Event.clear)
    wait = _around(threading.Event.wait)


class Barrier(threading.Barrier):
    """`threading.Barrier`, instrumented."""

    def __init__(
        self,
        parties: int,
        action: Callable[[], Any] | None = None,
        timeout: float | None = None,
        *,
        _created: Any = None,
    ) -> None:
        super().__init__(parties, action, timeout)
        created = creation(sys._getframe(1)) if _created is None else _created
        self._created = created[0]
        self._cond = _internal_condition(self, created)
        #: Each thread that waited here: the outermost frame of its own code (its actor function,
        #: its thread's target) and how many times it came. Once the thread is gone, the frame says
        #: where that function returned: where a party left without coming back.
        self._came: dict[str, tuple[types.FrameType, int]] = {}

    _passing = _around(threading.Barrier.wait)  # (threading.Barrier has a _wait of its own)

    def wait(self, timeout: float | None = None) -> int:
        frame: types.FrameType | None = sys._getframe(1)
        outermost = None
        while frame is not None and not (
            frame.f_code.co_filename.startswith(HARNESS_DIR) or frame.f_code.co_filename == threading.__file__
        ):
            outermost, frame = frame, frame.f_back
        name = threading.current_thread().name
        if outermost is not None:
            self._came[name] = (outermost, self._came.get(name, (outermost, 0))[1] + 1)
        return int(self._passing(timeout))

    wait.__doc__ = threading.Barrier.wait.__doc__


class Queue(queue.Queue):  # type: ignore[type-arg]
    """`queue.Queue`, instrumented: the standard class with its mutex and conditions replaced."""

    def __init__(self, maxsize: int = 0, *, _created: Any = None) -> None:
        super().__init__(maxsize)
        created = creation(sys._getframe(1)) if _created is None else _created
        self._created = created[0]
        self.mutex = Lock(_created=created, _quiet=True)  # type: ignore[assignment]
        self.not_empty = Condition(self.mutex, _created=created, _primitive=self, _quiet=True)
        self.not_full = Condition(self.mutex, _created=created, _primitive=self, _quiet=True)
        self.all_tasks_done = Condition(self.mutex, _created=created, _primitive=self, _quiet=True)

    put = _around(queue.Queue.put)
    get = _around(queue.Queue.get)
    join = _around(queue.Queue.join)


class SimpleQueue(Queue):
    """`queue.SimpleQueue`, instrumented: an unbounded FIFO queue (an executor's work queue) whose
    ``get`` is a wait the wait-for graph and the controlled scheduler see."""

    def __init__(self, *, _created: Any = None) -> None:
        super().__init__(0, _created=creation(sys._getframe(1)) if _created is None else _created)

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        """Put ``item``; never blocks (``block`` and ``timeout`` are ignored, as by
        `queue.SimpleQueue`). Reentrant, as `queue.SimpleQueue.put` is documented to be: a signal
        handler may put while its own thread is inside this queue's ``get`` or ``put`` holding the
        queue's lock; the item is added and a getter woken without taking the lock again (which
        would wait for its own thread for good)."""
        mutex: Any = self.mutex
        owner = mutex._owner
        if owner is None and not mutex._real.locked():
            super().put(item)
            return
        if owner is _current_state() or (owner is None and _interrupted_inside(mutex, sys._getframe(1))):
            self._put(item)
            self.unfinished_tasks += 1
            self.not_empty.notify()
            return
        super().put(item)

    def put_nowait(self, item: Any) -> None:
        self.put(item)


# 3.11: public operations run with the preemption tracer suspended — only those that never call the
# code under test back (a Condition calls its lock's methods and wait_for's predicate, a Barrier its
# action: code under test, which must keep its forced switches).
if not _preempt.HAS_MONITORING:
    for _class, _names in (
        (RLock, ("acquire", "release", "__exit__")),
        (Semaphore, ("acquire", "release")),
        (Event, ("set", "clear", "wait", "is_set")),
        (Barrier, ("reset", "abort")),
        (Queue, ("put", "get", "join", "task_done", "qsize", "empty", "full", "put_nowait", "get_nowait")),
    ):
        for _name in _names:
            setattr(_class, _name, _untraced(getattr(_class, _name)))
    RLock.__enter__ = RLock.acquire
    Semaphore.__enter__ = Semaphore.acquire

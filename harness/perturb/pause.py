"""Stress's own sleeps: every pause stress injects into a trial goes through `pause`.

A forced switch with ``--pause``, a delay at a multiprocessing operation, a start delay (jitter):
each is a timed sleep in a thread of the trial, and from outside (``/proc``) it looks exactly like a
sleep of the code under test. So each one is also counted (`hook`, set by the worker to bump its
beacon's progress counter), and a trial whose sleeps are stress's own is never judged as one that
only sleeps and wakes on timers.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import random
import sys
import threading
import time
from _thread import LockType, allocate_lock, get_ident
from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["Waiter", "delay", "gaps", "hook", "nobody_runs", "pause", "stuck", "switch", "track", "unstuck", "wake"]

#: Called before each pause (the worker's beacon counts them); None outside a worker.
hook: Callable[[], None] | None = None
#: Told when a coroutine trial's event loop next wakes by itself, before it waits (`time.monotonic()`;
#: None: it waits for no timer); the worker's beacon, so that the watchdog waits for that timer.
timer_hook: Callable[[float | None], None] | None = None
#: Given text for a hang's dump (the worker's dump file): a coroutine trial's tasks, which the
#: threads' stacks ``faulthandler`` writes do not show.
dump_hook: Callable[[str], None] | None = None

#: Threads switched out by `switch` right now: ident -> the lock their wait ends on.
_out: dict[int, LockType] = {}
#: Threads inside `switch` (a signal handler may run there, and switch again: it does not).
_inside: set[int] = set()
#: Longest wait for a wake-up's release once it took the thread off `_out` (it follows at once).
_HANDOVER = 0.05
#: Each thread's wake lock, kept held between switches (a release is a wake-up).
_wakes: dict[int, LockType] = {}
#: Whether pauses nobody else can use are ended (see `switch`, `track`).
_tracking = False


class Waiter(Protocol):
    """A blocking wait, as `stuck` is told of it."""

    def runnable(self) -> bool:
        """Whether the wait is over in all but name (the waiter is about to go on)."""
        ...


#: Threads in a wait with no timeout that only another thread can end (see `stuck`).
_stuck: dict[int, Waiter | None] = {}
#: The threads `threading` knows (a reused actor thread between trials is in neither).
_active: dict[int, Any] = threading._active  # type: ignore[attr-defined]
_limbo: dict[Any, Any] = threading._limbo  # type: ignore[attr-defined]
#: The shortest timed wait: the kernel's timer slack (50 µs by default) makes it last ~60 µs, as
#: long as ``time.sleep(0)`` does.
_SHORTEST = 1e-6


def gaps(probability: float, rng: random.Random) -> Callable[[], int]:
    """Draws of how many chances (instructions, primitive operations) pass until the next forced
    switch, the last one included: geometric with mean ``1 / probability`` (one draw per switch
    instead of a coin flip per chance; same distribution)."""
    if probability >= 1.0:
        return lambda: 1
    if probability <= 0.0:
        return lambda: sys.maxsize  # never
    log_q = math.log1p(-probability)
    draw = rng.random

    def gap() -> int:
        return int(math.log(1.0 - draw()) / log_q) + 1

    return gap


def pause(seconds: float) -> None:
    """Sleep ``seconds`` (``0``: just give up the interpreter to another thread) as stress's own."""
    if seconds > 0 and hook is not None:
        hook()
    time.sleep(seconds)


def switch(seconds: float) -> None:
    """A forced thread switch: stay out ``seconds`` (``0``: as long as ``time.sleep(0)`` keeps a
    thread out, ~60 µs on Linux) so that other threads run — but no longer than somebody can.

    A switch exists to let other threads run in the middle of this one's work. When none can —
    each of the process's other threads is switched out too, or waits, with no timeout, on an
    instrumented primitive or for a group of actors, or has finished — the rest of the pause is
    dead time, and it ends: the earliest thread switched out goes on (`nobody_runs`). A thread that
    starts a switch when every other thread waits does not leave at all. Who runs while a thread is
    out is unchanged; only time in which nobody could is saved. Any thread stress cannot see into
    (one in ``time.sleep``, a timed wait, I/O, C code) counts as one that can run.
    """
    me = get_ident()
    if me in _inside:
        return  # a signal handler, run by this thread in the middle of its own switch
    if seconds > 0 and hook is not None:
        hook()
    lock = _wakes.get(me)
    if lock is None:
        lock = _wakes[me] = allocate_lock()
        lock.acquire()
    _inside.add(me)
    try:
        _out[me] = lock
        if _tracking and _idle(0):
            if len(_out) == 1:  # everybody else waits for somebody: nobody to make room for
                if _out.pop(me, None) is None:
                    lock.acquire(True, _HANDOVER)  # woken meanwhile: take the release, as below
                return
            _wake_earliest(me)
        if not lock.acquire(True, seconds if seconds > _SHORTEST else _SHORTEST) and _out.pop(me, None) is None:
            # Timed out as a wake-up took us off the list: its release is on its way. Take it, so
            # that the lock is held again for the next switch. (Bounded: should the release never
            # come, the lock is held anyway; should it come late, one later switch is short.)
            lock.acquire(True, _HANDOVER)
    finally:
        _inside.discard(me)


def wake(ident: int) -> None:
    """End thread ``ident``'s forced switch now, if it is in one: the instrumented primitives call
    this when a thread starts an untimed wait for a lock ``ident`` holds."""
    if ident == get_ident():
        return  # a signal handler of a thread in its own switch: the thread is running, not out
    lock = _out.pop(ident, None)
    if lock is not None:
        lock.release()


def track(on: bool) -> None:
    """Whether `switch` ends pauses nobody else can use (the runner turns it on for a stress-mode
    trial in the worker's process, and off after it)."""
    global _tracking
    _tracking = on
    _stuck.clear()


def stuck(waiting: Waiter | None) -> None:
    """The calling thread starts a wait with no timeout that only another thread of the process
    can end: on an instrumented primitive (``waiting`` says whether it is over in all but name,
    `harness.detect.wait_graph.Waiting`), or for the group of actors it started (None)."""
    me = get_ident()
    _stuck[me] = waiting
    if _tracking and _out and _idle(0):
        _wake_earliest(me)


def unstuck() -> None:
    """The calling thread's wait (see `stuck`) is over."""
    _stuck.pop(get_ident(), None)


def nobody_runs() -> None:
    """The calling actor's work is done (its thread is about to park or end): if nobody else can
    run now, end the earliest forced switch."""
    if _tracking and _out and _idle(1):
        _wake_earliest(get_ident())


def _idle(leaving: int) -> bool:
    """Whether every thread of the process (but ``leaving`` of them, on their way out) is
    switched out or in a wait that only another thread can end (and that none has ended yet: a
    waiter whose lock was just released is about to run)."""
    if len(_active) + len(_limbo) - leaving > len(_out) + len(_stuck):
        return False
    try:
        return not any(w is not None and w.runnable() for w in list(_stuck.values()))
    except RuntimeError:  # changed while we looked: somebody is moving
        return False


def _wake_earliest(me: int) -> None:
    for ident in list(_out):
        if ident != me:
            wake(ident)
            return


def _after_fork_in_child() -> None:
    global _tracking
    _out.clear()
    _wakes.clear()
    _stuck.clear()
    _inside.clear()
    _tracking = False


os.register_at_fork(after_in_child=_after_fork_in_child)


_PR_SET_TIMERSLACK, _PR_GET_TIMERSLACK = 29, 30
_libc: Any = None
if sys.platform.startswith("linux"):
    with contextlib.suppress(OSError, AttributeError):
        _libc = ctypes.CDLL(None, use_errno=True)


def delay(seconds: float) -> None:
    """Sleep ``seconds`` as stress's own, ending on time: an actor's start delay (``--jitter``).

    Linux may end a sleep up to 50 µs late (the thread's timer slack, to batch wake-ups); for a
    start delay of a few microseconds that would be most of it. The calling thread's slack is
    lowered for this sleep alone: the forced switches of `pause` keep the usual slack, which is
    part of how long a switched-out thread stays out (and so of how often races show).

    A sleep, not a spin that yields: the other actors must have the interpreter for the whole
    delay (spinning kept it too often, and semaphore/no-limit's and philosophers/naive's
    failure rates fell by a third)."""
    if seconds <= 0:
        return
    if hook is not None:
        hook()
    libc = _libc
    if libc is None:
        time.sleep(seconds)
        return
    slack = libc.prctl(_PR_GET_TIMERSLACK, 0, 0, 0, 0)
    libc.prctl(_PR_SET_TIMERSLACK, 1, 0, 0, 0)
    try:
        time.sleep(seconds)
    finally:
        if slack > 0:
            libc.prctl(_PR_SET_TIMERSLACK, slack, 0, 0, 0)

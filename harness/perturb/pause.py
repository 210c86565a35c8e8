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
import random
import sys
import time
from _thread import LockType, allocate_lock, get_ident
from collections.abc import Callable
from typing import Any

__all__ = ["delay", "gaps", "hook", "pause", "switch", "wake"]

#: Called before each pause (the worker's beacon counts them); None outside a worker.
hook: Callable[[], None] | None = None

#: Threads switched out by `switch` right now: ident -> the lock their wait ends on.
_out: dict[int, LockType] = {}
#: Each thread's wake lock, kept held between switches (a release is a wake-up).
_wakes: dict[int, LockType] = {}
#: The shortest timed wait: the kernel's timer slack (50 µs by default) makes it last ~60 µs, as
#: long as ``time.sleep(0)`` does.
_SHORTEST = 1e-6


def gaps(probability: float, rng: random.Random) -> Callable[[], int]:
    """Draws of how many chances (instructions, primitive operations) pass until the next forced
    switch, the last one included: geometric with mean ``1 / probability`` (one draw per switch
    instead of a coin flip per chance; same distribution)."""
    if probability >= 1.0:
        return lambda: 1
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
    thread out, ~60 µs on Linux) so other threads run, or until `wake` says nobody else can.

    A thread switched out while it holds a lock leaves the others to run into that lock and block;
    from then on nobody runs until its pause ends. `wake` ends the pause at that moment (the
    instrumented primitives call it when an untimed wait starts on a lock whose holder is out), so
    the dead time is not paid, while the window in which others run is unchanged."""
    if seconds > 0 and hook is not None:
        hook()
    me = get_ident()
    lock = _wakes.get(me)
    if lock is None:
        lock = _wakes[me] = allocate_lock()
        lock.acquire()
    _out[me] = lock
    if not lock.acquire(True, seconds if seconds > _SHORTEST else _SHORTEST) and _out.pop(me, None) is None:
        # Timed out as `wake` took us off the list: its release is on its way. Take it, so that
        # the lock is held again for the next switch.
        lock.acquire()


def wake(ident: int) -> None:
    """End thread ``ident``'s forced switch now, if it is in one (see `switch`)."""
    lock = _out.pop(ident, None)
    if lock is not None:
        lock.release()


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
    part of how long a switched-out thread stays out (and so of how often races show)."""
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

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
import sys
import time
from collections.abc import Callable
from typing import Any

__all__ = ["delay", "hook", "pause"]

#: Called before each pause (the worker's beacon counts them); None outside a worker.
hook: Callable[[], None] | None = None


def pause(seconds: float) -> None:
    """Sleep ``seconds`` (``0``: just give up the interpreter to another thread) as stress's own."""
    if seconds > 0 and hook is not None:
        hook()
    time.sleep(seconds)


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

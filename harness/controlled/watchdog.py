"""The controlled scheduler's watchdog: a wait it cannot see ends the schedule as unsupported.

Only the thread holding the baton runs. If it blocks in something the scheduler has no model of —
``select`` under an asyncio loop, a socket, a pipe, a subprocess, a lock created before the trial and
never adopted — nothing will ever hand the baton on: the schedule would hang, and a safe variant
would be reported hung. The watchdog, one daemon thread per process, looks at the running thread
every `POLL` seconds (`harness.controlled.scheduler.Scheduler.look`) and, once the kernel has shown
it asleep, at the same instruction and using no CPU, for long enough, lets the scheduler go:
the trial ends unscheduled, as in stress mode, and counts as *unsupported* — neither a pass nor a
failure.
"""

from __future__ import annotations

import contextlib
import os
import time
from _thread import allocate_lock, start_new_thread
from typing import Any

from harness.actors import block_signals
from harness.detect.wait_graph import own_thread

__all__ = ["POLL", "watch"]

#: Seconds between two looks.
POLL = 0.005

_real_sleep = time.sleep
_lock = allocate_lock()
_idle = allocate_lock()
_idle.acquire()
_started = allocate_lock()
_started.acquire()
_watched: Any = None
_ident: int | None = None


def watch(scheduler: Any) -> int:
    """Watch ``scheduler`` (None: stop watching). Returns the watchdog thread's ident (a thread of
    the harness's: the trial's wait-for graph leaves it out)."""
    global _watched, _ident
    with _lock:
        _watched = scheduler
        if _ident is None:
            _ident = start_new_thread(_loop, ())
            _started.acquire()  # it has said it is stress's own before any trial looks for threads
        if scheduler is not None and _idle.locked():
            _idle.release()
        return _ident


def _loop() -> None:
    own_thread()
    block_signals()  # the code under test's signals go to its threads, not to this one
    _started.release()
    while True:
        if _watched is None:
            _idle.acquire()
            continue
        _real_sleep(POLL)
        # A look holds the lock, and keeps no reference past it: the last reference to a trial's
        # scheduler is dropped by the trial's thread, never here (finalizers of the trial's objects
        # would otherwise run on this raw thread).
        with _lock:
            scheduler = _watched
            if scheduler is not None:
                with contextlib.suppress(Exception):  # a look is best effort; the next may see more
                    scheduler.look(time.monotonic())
            del scheduler


def _after_fork_in_child() -> None:
    global _watched, _ident, _lock, _idle, _started
    _watched, _ident = None, None
    _lock = allocate_lock()
    _idle = allocate_lock()
    _idle.acquire()
    _started = allocate_lock()
    _started.acquire()


# A raw thread, not a threading.Thread: threading.enumerate() and the leak checks never see it.
os.register_at_fork(after_in_child=_after_fork_in_child)

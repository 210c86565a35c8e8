"""Stress's own sleeps: every pause stress injects into a trial goes through `pause`.

A forced switch with ``--pause``, a delay at a multiprocessing operation, a start delay (jitter):
each is a timed sleep in a thread of the trial, and from outside (``/proc``) it looks exactly like a
sleep of the code under test. So each one is also counted (`hook`, set by the worker to bump its
beacon's progress counter), and a trial whose sleeps are stress's own is never judged as one that
only sleeps and wakes on timers.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["hook", "pause"]

#: Called before each pause (the worker's beacon counts them); None outside a worker.
hook: Callable[[], None] | None = None


def pause(seconds: float) -> None:
    """Sleep ``seconds`` (``0``: just give up the interpreter to another thread) as stress's own."""
    if seconds > 0 and hook is not None:
        hook()
    time.sleep(seconds)

"""Delays at multiprocessing operations: the process-level counterpart of forced thread switches.

Processes run truly in parallel, so yielding the interpreter does nothing for them: what exposes a
race between processes is *time* — a process that stalls between reading a shared `Value` and
writing it back while another one writes. During a trial, each of these operations may be preceded
and followed by a short sleep (the plan's ``sync`` probability and ``delay`` duration):

* ``Queue.put`` / ``Queue.get`` (and ``JoinableQueue``, ``SimpleQueue``),
* ``Connection.send`` / ``Connection.recv`` (both ends of a ``Pipe``),
* reading and writing ``.value`` of a synchronized ``Value`` (each is locked on its own, which is
  exactly why ``counter.value += 1`` is a race),
* acquiring a ``multiprocessing.Lock`` / ``RLock`` / ``Semaphore``.

The patches are installed once per process and cost nothing until a trial activates them, so a
thread-only trial never pays for them.
"""

from __future__ import annotations

import functools
import multiprocessing.connection
import multiprocessing.queues
import multiprocessing.sharedctypes
import multiprocessing.synchronize
import random
from collections.abc import Callable
from typing import Any

from harness.perturb.pause import pause

__all__ = ["activate", "deactivate", "install"]

_installed = False
_probability = 0.0
_delay = 0.0
_rng: random.Random | None = None
_seed = 0
_count = 0
#: Whether a multiprocessing operation ran while delays were on (the knob had something to act on).
_touched = False


def activate(probability: float, delay: float, *, seed: int) -> None:
    """Delays on for a trial, in this process."""
    global _probability, _delay, _rng, _seed, _count, _touched
    _probability, _delay, _count, _touched = probability, delay, 0, False
    _rng, _seed = None, seed  # seeded at the first multiprocessing operation, if any


def deactivate() -> int:
    """Delays off; returns how many were injected."""
    global _probability
    _probability = 0.0
    return _count


def touched() -> bool:
    """Whether the last trial ran a multiprocessing operation of this process while delays were on."""
    return _touched


def _maybe_delay() -> None:
    global _count, _rng, _touched
    if not _probability:
        return
    _touched = True
    if _rng is None:
        _rng = random.Random(f"stress-mp/{_seed}")
    if _rng.random() < _probability:
        _count += 1
        pause(_delay)


def _around(operation: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(operation)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if _probability:
            _maybe_delay()
            result = operation(*args, **kwargs)
            _maybe_delay()
            return result
        return operation(*args, **kwargs)

    wrapped.__stress_original__ = operation  # type: ignore[attr-defined]
    return wrapped


def install() -> None:
    """Patch the multiprocessing operations, once per process."""
    global _installed
    if _installed:
        return
    _installed = True
    for cls, names in (
        (multiprocessing.queues.Queue, ("put", "get")),
        (multiprocessing.queues.SimpleQueue, ("put", "get")),
        (multiprocessing.connection._ConnectionBase, ("send", "recv")),
    ):
        for name in names:
            setattr(cls, name, _around(getattr(cls, name)))
    _patch_semlock()
    _patch_synchronized_value()


def _patch_semlock() -> None:
    """SemLock binds ``acquire`` per instance to the C semaphore; wrap it where it is bound."""
    semlock: Any = multiprocessing.synchronize.SemLock
    make_methods = semlock._make_methods

    def _make_methods(self: Any) -> None:
        make_methods(self)
        self.acquire = _around(self.acquire)

    def __enter__(self: Any) -> Any:
        return self.acquire()

    semlock._make_methods = _make_methods
    semlock.__enter__ = __enter__


def _patch_synchronized_value() -> None:
    synchronized: Any = multiprocessing.sharedctypes.Synchronized
    prop = synchronized.value
    synchronized.value = property(_around(prop.fget), _around(prop.fset))

"""Where a worker is: between trials, inside a trial's body, or in stress's own work after it.

The parent owns every deadline, and a deadline must measure the trial, not stress: not the set-up of
a freshly forked worker, not the installation of instrumentation, not the leak checks after the body.
So the worker says when a trial's body starts and when it ends, by writing a few bytes of memory it
shares with the parent (an anonymous shared mapping, made before the fork): no message, no system
call, about a microsecond per trial. The parent reads it whenever it looks at a deadline.

A reading is consistent even though the two processes never lock: the writer bumps a generation
counter to an odd value, writes, then bumps it to an even one (a seqlock, as in the Linux kernel); the
reader retries a reading that straddled a write. Times are ``time.monotonic()``, the same clock in
every process of the machine.
"""

from __future__ import annotations

import _thread
import enum
import mmap
import struct
import time
from dataclasses import dataclass

__all__ = ["Beacon", "Phase", "Reading"]

_GENERATION = struct.Struct("=q")
_DATA = struct.Struct("=qqd")  # seq, phase, since; after the generation
_PROGRESS = struct.Struct("=q")  # after the data; bumped without the seqlock (any change will do)
_ALARM = struct.Struct("=d")  # after the progress: when a signal timer the trial armed fires (0: none)
_WAITS = struct.Struct("=qq")  # after the alarm: threads in instrumented untimed waits, such waits ended
_EPOCH = struct.Struct("=q")  # after the waits: how many times the worker emptied its results spool
_PARKED = struct.Struct("=q")  # after the epoch: actor threads parked between trials (`harness.actors`)
_TIMER = struct.Struct("=d")  # after the parked count: when a coroutine trial's loop wakes by itself (0: never)
_PROGRESS_AT = _GENERATION.size + _DATA.size
_ALARM_AT = _PROGRESS_AT + _PROGRESS.size
_WAITS_AT = _ALARM_AT + _ALARM.size
_EPOCH_AT = _WAITS_AT + _WAITS.size
_PARKED_AT = _EPOCH_AT + _EPOCH.size
_TIMER_AT = _PARKED_AT + _PARKED.size
_SIZE = _TIMER_AT + _TIMER.size


class Phase(enum.IntEnum):
    """Where the worker is."""

    #: Between trials: setting up, waiting for a task, or preparing the next trial.
    IDLE = 0
    #: Running the body of trial ``seq``: the code under test, and the only time a deadline counts.
    BODY = 1
    #: Stress's own work after the body of trial ``seq``: leak checks, shrinking a failing schedule.
    AFTER = 2


@dataclass(frozen=True)
class Reading:
    """One consistent reading: trial ``seq`` is in ``phase`` since ``since`` (``time.monotonic()``)."""

    seq: int
    phase: Phase
    since: float


class Beacon:
    """A worker's position, shared between the worker (which writes it) and the parent (which reads).

    Create it in the parent before forking the worker; both sides keep the same object.
    """

    def __init__(self) -> None:
        self._map = mmap.mmap(-1, _SIZE)  # MAP_SHARED | MAP_ANONYMOUS: survives fork, shared
        self._generation = 0
        self._waits_lock = _thread.RLock()  # a signal handler's wait may come here inside another's
        _DATA.pack_into(self._map, _GENERATION.size, -1, Phase.IDLE, time.monotonic())

    def set(self, seq: int, phase: Phase) -> None:
        """The worker: trial ``seq`` enters ``phase`` now."""
        buffer = self._map
        generation = self._generation
        _GENERATION.pack_into(buffer, 0, generation + 1)  # odd: being written
        _DATA.pack_into(buffer, _GENERATION.size, seq, phase, time.monotonic())
        _GENERATION.pack_into(buffer, 0, generation + 2)
        self._generation = generation + 2

    def tick(self) -> None:
        """Count one of stress's own pauses (`harness.perturb.pause`), from the worker or any
        process forked from it: two processes bumping at once may lose a count, never a change."""
        (count,) = _PROGRESS.unpack_from(self._map, _PROGRESS_AT)
        _PROGRESS.pack_into(self._map, _PROGRESS_AT, count + 1)

    def progress(self) -> int:
        """How many of stress's own pauses the trials of this worker have taken so far."""
        (count,) = _PROGRESS.unpack_from(self._map, _PROGRESS_AT)
        return int(count)

    def set_alarm(self, when: float | None) -> None:
        """A signal timer of the trial fires at ``when`` (``time.monotonic()``; None: disarmed)."""
        _ALARM.pack_into(self._map, _ALARM_AT, when or 0.0)

    def alarm(self) -> float | None:
        """When the trial's signal timer fires, if one is armed."""
        (when,) = _ALARM.unpack_from(self._map, _ALARM_AT)
        return float(when) if when > 0 else None

    def note_wait(self, delta: int) -> None:
        """A thread of the worker starts (+1) or ends (-1) an untimed wait on an instrumented
        primitive (`harness.detect.primitives.wait_hook`)."""
        with self._waits_lock:
            waiting, ended = _WAITS.unpack_from(self._map, _WAITS_AT)
            _WAITS.pack_into(self._map, _WAITS_AT, waiting + delta, ended + (delta < 0))

    def waits(self) -> tuple[int, int]:
        """(threads in instrumented untimed waits now, such waits ended so far)."""
        waiting, ended = _WAITS.unpack_from(self._map, _WAITS_AT)
        return int(waiting), int(ended)

    def spool_epoch(self) -> int:
        """How many times the worker emptied its results spool (`harness.engine.spool`)."""
        (epoch,) = _EPOCH.unpack_from(self._map, _EPOCH_AT)
        return int(epoch)

    def set_spool_epoch(self, epoch: int) -> None:
        _EPOCH.pack_into(self._map, _EPOCH_AT, epoch)

    def set_parked(self, count: int) -> None:
        """The worker: ``count`` actor threads are parked (waiting, untimed, for a later trial)."""
        _PARKED.pack_into(self._map, _PARKED_AT, count)

    def parked(self) -> int:
        """How many of the worker's threads are parked actor threads, not the trial's."""
        (count,) = _PARKED.unpack_from(self._map, _PARKED_AT)
        return int(count)

    def set_loop_timer(self, when: float | None) -> None:
        """A coroutine trial's event loop waits for its next timer, due at ``when``
        (``time.monotonic()``; None: it waits for no timer), `harness.detect.aio`."""
        _TIMER.pack_into(self._map, _TIMER_AT, when or 0.0)

    def loop_timer(self) -> float | None:
        """When the running coroutine trial's event loop wakes by itself, if it waits for a timer."""
        (when,) = _TIMER.unpack_from(self._map, _TIMER_AT)
        return float(when) if when > 0 else None

    def read(self) -> Reading:
        """The parent: where the worker is now."""
        buffer = self._map
        for _ in range(10_000):
            (before,) = _GENERATION.unpack_from(buffer, 0)
            seq, phase, since = _DATA.unpack_from(buffer, _GENERATION.size)
            (after,) = _GENERATION.unpack_from(buffer, 0)
            if before == after and before % 2 == 0:
                return Reading(seq, Phase(phase) if phase in Phase.__members__.values() else Phase.IDLE, since)
        # A worker stopped (frozen to be looked at, or killed) in the middle of a write: what is
        # there may be half old, half new — a start time of 0 read as "running since the machine
        # booted". No trial is at any phase as far as this reading can say.
        return Reading(-1, Phase.IDLE, time.monotonic())

    def close(self) -> None:
        self._map.close()

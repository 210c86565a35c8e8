"""Actor threads reused across trials, as jcstress reuses its actors.

Starting and joining a thread costs more than a small trial's whole body: each start waits for the
new thread to say it runs, each join for it to say it ended, and every handshake waits for the OS to
wake a thread. An `ActorPool` keeps the actor threads of a worker parked between trials and releases
them together for the next one; a trial then costs two wake-ups per actor.

What a trial can observe stays as fresh as a new thread's:

* ``threading.local()`` values: after each trial an actor drops every thread-local value it holds
  (3.11 and 3.12 keep them in the thread state's dict, under ``thread.local.<address>`` keys;
  3.13 keeps them in each local object, and clears them through the callbacks that a thread's
  death would run). An actor that cannot prove its values are gone is retired, not reused: so is
  one that used the pure-Python ``_threading_local.local``, which keys its values by the `Thread`
  object.
* ``contextvars``: each trial's actor runs in an empty `contextvars.Context`, as a new thread does.
* the thread object: each trial's actor is a new `TrialThread` (``current_thread()`` returns it;
  it has the trial's actor name, ``increment#0``): attributes set on it, a ``WeakKeyDictionary``
  keyed by it and the pure-Python ``threading.local`` start empty; it is alive while the actor works,
  and ``join()`` on it returns when the work is done.
* ``threading.enumerate()``: a parked actor is not listed; it is listed while it runs a trial.
* ``threading.settrace`` and ``threading.setprofile`` hooks set before a trial (coverage, stress's
  own preemption on 3.11) apply to its actors, as to threads started then; they are removed after.
* a thread that does not come back (still running when its trial was given up) is retired: it
  ends when its work does, and is never handed another trial.

After ``os.fork`` the child has none of the parent's parked threads; its pool starts empty.
"""

from __future__ import annotations

import contextvars
import ctypes
import gc
import importlib
import os
import signal
import sys
import threading
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import Any

__all__ = ["ActorPool", "forget_thread_locals", "parked_count", "parked_native_ids"]

_allocate_lock = threading._allocate_lock  # type: ignore[attr-defined]
# threading's registry of running threads and its lock: a parked actor is taken out of it (so that
# `threading.enumerate` lists only the trial's threads) and put back when it runs.
_active: dict[int, threading.Thread] = threading._active  # type: ignore[attr-defined]
_active_lock: Any = threading._active_limbo_lock  # type: ignore[attr-defined]

#: The signals a thread of stress's own blocks (SIGKILL and SIGSTOP cannot be).
_SIGNALS: frozenset[int] = (
    frozenset(int(s) for s in signal.valid_signals()) - {signal.SIGKILL, signal.SIGSTOP}
    if hasattr(signal, "pthread_sigmask")
    else frozenset()
)

#: `_signal`'s own `pthread_sigmask`: it returns the old mask as a set of ints, where
#: `signal.pthread_sigmask` makes a `Signals` member of each (about 60 µs for a full mask: it was
#: three quarters of a trivial trial's cost, called three times per actor per trial).
_sigmask: Callable[[int, Iterable[int]], set[int]] | None = getattr(
    importlib.import_module("_signal"), "pthread_sigmask", None
)


def block_signals() -> set[int] | None:
    """Block, in the calling thread (one of stress's own), every signal a handler could take:
    the process's signals then reach the threads of the code under test, as in the program
    itself. Returns the mask it had, as signal numbers (None where threads have no signal masks)."""
    if _sigmask is None or not _SIGNALS:
        return None
    return _sigmask(signal.SIG_BLOCK, _SIGNALS)


#: Parked actor threads of this process, by ident (hidden from `threading`, but not from the OS).
_parked: dict[int, threading.Thread] = {}


def parked_count() -> int:
    """How many actor threads this process has parked."""
    return len(_parked)


def parked_native_ids() -> set[int]:
    """The OS thread ids of this process's parked actor threads: threads `threading.enumerate`
    does not list, and that belong to no trial."""
    return {t.native_id for t in list(_parked.values()) if t.native_id is not None}


#: A thread-local every actor sets before its trial: it must be gone after `forget_thread_locals`.
_PROBE = threading.local()


def _forget_in_thread_dict() -> Callable[[], None]:
    """3.11, 3.12: ``threading.local`` keeps each thread's values in the thread state's dict."""
    get_dict = ctypes.pythonapi.PyThreadState_GetDict
    get_dict.restype = ctypes.c_void_p  # a borrowed reference: never let ctypes release it
    get_dict.argtypes = []

    def forget() -> None:
        address = get_dict()
        if not address:
            return
        state: dict[Any, Any] = ctypes.cast(address, ctypes.py_object).value
        for key in [k for k in state if type(k) is str and k.startswith("thread.local.")]:
            del state[key]

    return forget


def _forget_by_callbacks() -> Callable[[], None]:
    """3.13+: each local object keeps a weak reference to a per-thread sentinel whose callback drops
    that thread's values when the thread ends; running those callbacks now does the same."""
    sentinels: dict[int, weakref.ref[Any]] = {}

    def sentinel() -> Any:
        ident = threading.get_ident()
        known = sentinels.get(ident)
        found = known() if known is not None else None
        if found is not None:
            return found
        _PROBE.seen = True
        mine = _PROBE.__dict__
        referents = gc.get_referents(_PROBE)
        dicts = [r for r in referents if type(r) is dict and any(v is mine for v in r.values())]
        watchdogs = [r for r in referents if type(r) is set]
        if len(dicts) != 1 or len(watchdogs) != 1:
            return None
        key = next(k for k, v in dicts[0].items() if v is mine)
        for ref in watchdogs[0]:
            callback = getattr(ref, "__callback__", None)
            bound = getattr(callback, "__self__", None)
            if isinstance(bound, tuple) and len(bound) == 2 and bound[1] is key:
                found = ref()
                if found is not None:
                    sentinels[ident] = weakref.ref(found)
                return found
        return None

    def forget() -> None:
        found = sentinel()
        if found is None:
            return
        for ref in weakref.getweakrefs(found):
            callback = getattr(ref, "__callback__", None)
            if callback is not None and getattr(callback, "__name__", "") == "clear_locals":
                callback(ref)

    return forget


_forget: Callable[[], None] = _forget_in_thread_dict() if sys.version_info < (3, 13) else _forget_by_callbacks()


def forget_thread_locals() -> bool:
    """Drop every ``threading.local`` value the calling thread holds, as if it had ended: the next
    access runs a local subclass's ``__init__`` again. Returns whether it worked (it relies on how
    CPython stores the values; on an interpreter where it does not, it returns False). The
    pure-Python ``_threading_local.local`` keys its values by the `Thread` object, which is new in
    every trial (`TrialThread`)."""
    _PROBE.seen = True
    try:
        _forget()
    except Exception:
        return False
    return not hasattr(_PROBE, "seen")


_make_thread_handle: Any = getattr(threading, "_make_thread_handle", None)  # 3.13+


class TrialThread(threading.Thread):
    """The `threading.Thread` object of one actor in one trial, on a reused OS thread.

    ``threading.current_thread()`` in the actor, ``threading.enumerate()`` and anything that keeps
    per-thread data on the thread object (attributes, a ``WeakKeyDictionary`` keyed by thread, the
    pure-Python ``threading.local``) see a new object every trial, as with a new thread; it is alive
    while the actor's work runs, and ``join()`` returns when the work is done — the OS thread itself
    never ends. Never started (``start()`` raises, as for a thread that ran)."""

    #: What `threading.Thread.__init__` gave the first one, started: the others copy it (two
    #: threads a trial, thousands of trials a second; its Event and Condition cost more than the
    #: rest of a trial's bookkeeping). Only what a started daemon thread never changes is shared.
    _template: dict[str, Any] | None = None

    def __init__(self, name: str, ident: int, native_id: int | None) -> None:
        template = TrialThread._template
        if template is None:
            super().__init__(name=name, daemon=True)
            self._started.set()  # type: ignore[attr-defined]
            TrialThread._template = dict(vars(self))
        else:
            vars(self).update(template)
            self._name = name
        self._ident = ident
        self._native_id = native_id
        if _make_thread_handle is not None:  # 3.13+: join and is_alive ask the handle
            self._handle = _make_thread_handle(ident)
        else:  # 3.11, 3.12: they wait for the lock a thread's end releases
            lock = _allocate_lock()
            lock.acquire()
            self._tstate_lock = lock
            self._is_stopped = False

    def _end(self) -> None:
        """The actor's work is done: the thread object is no longer alive; joins return."""
        if _make_thread_handle is not None:
            self._handle._set_done()
        else:
            self._tstate_lock.release()


class _Actor(threading.Thread):
    """One parked thread: runs the trial's work it is given, then parks again."""

    def __init__(self, pool: ActorPool) -> None:
        super().__init__(name="stress-actor", daemon=True)
        self._pool = pool
        self.gate = _allocate_lock()
        self.gate.acquire()
        self.work: Callable[[], Any] | None = None
        self.round: _Round | None = None
        #: The thread object of its current trial.
        self.trial_thread: TrialThread | None = None
        #: Set when its trial gave up on it: it ends after its work, and is never reused.
        self.retired = False
        #: Set when its thread-local values could not be dropped: it is not reused.
        self.stale = False

    def run(self) -> None:
        # Parked, a thread of stress's own: a signal sent to the process (a timer the code under
        # test armed) goes to a thread of the trial, as it would in the program itself, not to
        # this one — where the main thread, blocked, might not hear of it for seconds.
        mask = block_signals()
        while True:
            self.gate.acquire()
            work, round_ = self.work, self.round
            if work is None or round_ is None or self.retired:
                break
            if mask is not None and _sigmask is not None:
                # A new thread starts with its creator's mask: the one the trial's thread has now.
                _sigmask(signal.SIG_SETMASK, round_.mask if round_.mask is not None else mask)
            if round_.together:
                round_.arrive(self)
            trace, profile = threading.gettrace(), threading.getprofile()
            if trace is not None:
                sys.settrace(trace)
            if profile is not None:
                sys.setprofile(profile)
            try:
                contextvars.Context().run(work)
            except BaseException:  # the work records its own exceptions; this is stress's
                self._pool.failed(sys.exc_info())
            finally:
                # Only when set (by the trial or by the work itself): on a free-threaded build,
                # each call stops every thread of the process, and waits for the running ones in
                # 1 ms steps (a trivial trial took 3.4 ms, not 0.15).
                if sys.gettrace() is not None:
                    sys.settrace(None)
                if sys.getprofile() is not None:
                    sys.setprofile(None)
                if mask is not None and _sigmask is not None:
                    _sigmask(signal.SIG_BLOCK, _SIGNALS)
                self.work = None
                if self.trial_thread is not None:
                    self.trial_thread._end()
                self.stale = not forget_thread_locals()
            if not self._pool.finished(self, round_):
                break
        with _active_lock:
            _active[self.ident or 0] = self  # listed again (itself), so that threading can let it end
            _parked.pop(self.ident or 0, None)


class _Round:
    """The actors of one group of one trial: released together, counted back in."""

    def __init__(self, actors: list[_Actor], *, together: bool) -> None:
        self.actors = actors
        #: Whether the actors wait for each other before their work (a barrier).
        self.together = together and len(actors) > 1
        self.arriving = len(actors)
        self.left = len(actors)
        self.lock = _allocate_lock()
        self.done = _allocate_lock()
        self.done.acquire()
        #: The signal mask of the thread that releases the actors (None where there are none).
        self.mask: set[int] | None = _sigmask(signal.SIG_BLOCK, ()) if _sigmask is not None and _SIGNALS else None

    def arrive(self, actor: _Actor) -> None:
        """The barrier: the last actor to arrive lets the others go, in their start order."""
        with self.lock:
            self.arriving -= 1
            last = self.arriving == 0
        if not last:
            actor.gate.acquire()
            return
        for other in self.actors:
            if other is not actor:
                other.gate.release()


#: Seconds between the main thread's looks for pending signal handlers while its actors run.
_HANDLER_SLICE = 0.002
#: Whether code of this process installed a Python signal handler (the worker sets it): only then
#: does the main thread wait for its actors in slices — a thread that wakes every few milliseconds
#: looks busy, and a trial whose actors are blocked for good should look blocked.
handlers_installed = False


class ActorPool:
    """The actor threads of one process, parked between trials.

    Use: `take` as many actors as the group has, give each its work, `run` them. A group's work
    callables record their own results and exceptions (`harness.trial.ActorGroup`).

    Args:
        keep: Parked threads kept at most; more are ended when their trial is done.
    """

    def __init__(self, *, keep: int = 32) -> None:
        self.keep = keep
        self._idle: list[_Actor] = []
        self._lock = _allocate_lock()
        self._pid = os.getpid()
        #: Told how many threads are parked whenever that changes (the worker's beacon: a hang's
        #: evidence counts the trial's threads, not these).
        self.on_parked: Callable[[int], None] | None = None
        #: Actors created and reused so far (for tests and benchmarks).
        self.created = 0
        self.reused = 0
        self._errors: list[Any] = []
        os.register_at_fork(after_in_child=self._after_fork)

    def _after_fork(self) -> None:
        # The child has only the thread that forked: the parent's parked threads are not its own.
        _parked.clear()
        self._idle = []
        self._lock = _allocate_lock()
        self._pid = os.getpid()

    def take(self, count: int) -> list[_Actor]:
        """``count`` actors: parked ones first, new ones for the rest (started, and running nothing)."""
        with self._lock:
            taken = self._idle[-count:] if count else []
            del self._idle[len(self._idle) - len(taken) :]
        self.reused += len(taken)
        if taken and self.on_parked is not None:
            self.on_parked(len(self._idle))
        while len(taken) < count:
            actor = _Actor(self)
            actor.start()
            self.created += 1
            with _active_lock:
                _active.pop(actor.ident or 0, None)
                _parked[actor.ident or 0] = actor
            taken.append(actor)
        return taken

    def run(
        self,
        actors: Sequence[_Actor],
        names: Sequence[str],
        work: Sequence[Callable[[], Any]],
        *,
        together: bool = False,
    ) -> None:
        """Release ``actors`` in their order on ``work`` (the i-th actor, named ``names[i]``, runs
        ``work[i]``; with ``together``, only once all of them are awake, as at a barrier) and wait
        until every one is done. If the wait is interrupted (an exception in the waiting thread),
        the actors still running are retired and the exception goes on."""
        round_ = _Round(list(actors), together=together)
        threads = [
            TrialThread(name, actor.ident or 0, actor.native_id) for actor, name in zip(actors, names, strict=True)
        ]
        with _active_lock:
            for actor, thread, job in zip(actors, threads, work, strict=True):
                actor.trial_thread = thread
                actor.work = job
                actor.round = round_
                _active[actor.ident or 0] = thread
                _parked.pop(actor.ident or 0, None)
        for actor in actors:
            actor.gate.release()
        try:
            if handlers_installed and threading.current_thread() is threading.main_thread():
                # In slices: a signal that reached an actor's thread has its Python handler run
                # here, on the main thread, only once this wait returns (an untimed one would keep
                # it waiting for as long as the actors wait for what the handler does).
                while not round_.done.acquire(True, _HANDLER_SLICE):
                    pass
            else:
                round_.done.acquire()
        except BaseException:
            with self._lock:
                for actor in actors:
                    if actor.round is round_:
                        actor.retired = True
            raise
        if self._errors:
            error = self._errors.pop()
            self._errors.clear()
            raise RuntimeError("an actor thread of stress failed") from error[1]

    def finished(self, actor: _Actor, round_: _Round) -> bool:
        """Called by ``actor`` when its work is done; whether it parks again (else it ends)."""
        with self._lock:
            actor.round = None
            reuse = not actor.retired and not actor.stale and os.getpid() == self._pid and len(self._idle) < self.keep
            if reuse:
                with _active_lock:
                    _active.pop(actor.ident or 0, None)
                    _parked[actor.ident or 0] = actor
                actor.trial_thread = None
                self._idle.append(actor)
                if self.on_parked is not None:
                    self.on_parked(len(self._idle))
            else:
                actor.retired = True
            round_.left -= 1
            if round_.left == 0:
                round_.done.release()
        return reuse

    def failed(self, info: Any) -> None:
        self._errors.append(info)

    def close(self) -> None:
        """End the parked threads (each returns at once)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for actor in idle:
            actor.retired = True
            actor.work = None
            actor.gate.release()
        for actor in idle:
            actor.join(1.0)

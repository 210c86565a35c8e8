"""Giving the code under test instrumented primitives, for the length of a trial.

Code under test keeps writing ``threading.Lock()`` or ``queue.Queue()``. For a trial, `Instrumenter`
replaces those names in ``threading`` and ``queue`` (and any global of an in-scope module bound to
one of them, as ``from threading import Lock`` makes) with stand-ins. A stand-in builds the
instrumented primitive when it is called from code in scope, and the original otherwise, so the
standard library and the harness keep their plain, fast primitives. ``isinstance`` against a
stand-in accepts both kinds. Everything is put back when the trial ends.
"""

from __future__ import annotations

import concurrent.futures
import concurrent.futures.thread as futures_thread
import queue
import sys
import threading
import weakref
from _thread import get_ident
from collections.abc import Iterator
from types import FrameType, ModuleType
from typing import Any

from harness.detect import primitives
from harness.detect.wait_graph import FutureWaiting
from harness.perturb import pause
from harness.scope import HARNESS_DIR, Scope

__all__ = ["Instrumenter"]


class _StandIn(type):
    """Metaclass of the stand-ins: calling one picks the kind of primitive by the caller's file."""

    _original: Any
    _instrumented: type
    _scope: Scope | None = None

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        frame = sys._getframe(1)
        scope = cls._scope
        if (
            scope is not None
            # `threading`'s own (every Thread's Event, a Timer's): plain, and the commonest call.
            and frame.f_code.co_filename != _THREADING_FILE
            and (scope.contains_frame(frame) or _made_by_managed(frame))
        ):
            return cls._instrumented(*args, _created=primitives.creation(frame), **kwargs)
        return cls._original(*args, **kwargs)

    def __instancecheck__(cls, obj: Any) -> bool:
        original = cls._original
        return isinstance(obj, cls._instrumented) or (isinstance(original, type) and isinstance(obj, original))

    def __subclasscheck__(cls, sub: Any) -> bool:
        original = cls._original
        return issubclass(sub, cls._instrumented) or (isinstance(original, type) and issubclass(sub, original))

    def __getattr__(cls, name: str) -> Any:
        # For stand-ins that cannot subclass their original (Lock, RLock): class attributes
        # are the original's.
        return getattr(cls._original, name)

    def __repr__(cls) -> str:
        return f"<stress stand-in for {cls._original!r}>"


_THREADING_FILE = threading.__file__


def _made_by_managed(frame: FrameType) -> bool:
    """Controlled mode: a primitive made by a thread the scheduler runs — by the code under test or
    by a library it calls (an executor's queue, a future's condition) — must be one the scheduler
    sees, or a wait on it would block the schedule. `threading`'s own (a thread's start handshake)
    and the harness's stay plain."""
    session = primitives.current_session()
    scheduler = session.controlled if session is not None else None
    if scheduler is None or scheduler.released or scheduler.by_ident.get(get_ident()) is None:
        return False
    filename = frame.f_code.co_filename
    return filename != _THREADING_FILE and not filename.startswith(HARNESS_DIR)


def _make_stand_in(name: str, original: Any, instrumented: type) -> _StandIn:
    """A stand-in subclasses its original when it can, so that the standard library's own uses
    of the name as a class (``Semaphore.__init__(self, value)`` in `BoundedSemaphore`) still work."""
    namespace = {"_original": original, "_instrumented": instrumented}
    try:
        return _StandIn(name, (original,), namespace)
    except TypeError:  # a builtin function, or a type that cannot be subclassed
        return _StandIn(name, (), namespace)


_REPLACED: list[tuple[ModuleType, str, type]] = [
    (threading, "Lock", primitives.Lock),
    (threading, "RLock", primitives.RLock),
    (threading, "Condition", primitives.Condition),
    (threading, "Semaphore", primitives.Semaphore),
    (threading, "BoundedSemaphore", primitives.BoundedSemaphore),
    (threading, "Event", primitives.Event),
    (threading, "Barrier", primitives.Barrier),
    (queue, "Queue", primitives.Queue),
    (queue, "SimpleQueue", primitives.SimpleQueue),
]
_ORIGINALS: dict[int, Any] = {}
_STAND_INS: dict[int, _StandIn] = {}
for _module, _name, _instrumented in _REPLACED:
    _original = getattr(_module, _name)
    _ORIGINALS[id(_original)] = _original
    _STAND_INS[id(_original)] = _make_stand_in(_name, _original, _instrumented)


_real_join = threading.Thread.join
_real_start = threading.Thread.start
_real_work_item_init = futures_thread._WorkItem.__init__
_real_result = concurrent.futures.Future.result
_real_exception = concurrent.futures.Future.exception
_real_done = concurrent.futures.Future.done
_real_wait = concurrent.futures.wait
_real_as_completed = concurrent.futures.as_completed
_real_add_done_callback = concurrent.futures.Future.add_done_callback


def _work_item_init(self: Any, future: concurrent.futures.Future[Any], fn: Any, args: Any, kwargs: Any) -> None:
    """An executor's task, made by ``submit`` in the submitting thread: for the lock-order analysis,
    the task is a thread of its own, known by its function and submission order (which worker runs
    it varies from trial to trial), that starts after what its submitter did so far (and, on an
    executor of one worker, after the tasks submitted before it), and ends before what follows a
    ``result()``, ``exception()``, ``done()``, ``wait`` or ``as_completed`` that gives its outcome,
    and before its done callbacks (`harness.detect.happens_before`)."""
    session = primitives.current_session()
    if session is not None:
        clocks = session.order_clocks
        role, origin = clocks.submitted(threading.current_thread(), getattr(fn, "__qualname__", "task"))
        executor = sys._getframe(1).f_locals.get("self")  # ThreadPoolExecutor.submit's
        serial = getattr(executor, "_max_workers", 0) == 1
        # For a deadlock's explanation: what the future is the result of, and whose queue it is in.
        future._stress_task = getattr(fn, "__qualname__", "a task")  # type: ignore[attr-defined]
        future._stress_executor = executor  # type: ignore[attr-defined]
        if executor is not None:
            # Its tasks not started yet: one no longer queued is in a worker's hands, between the
            # queue's get and its run (`wait_graph.idle_executor_worker`).
            submitted = getattr(executor, "_stress_submitted", None)
            if submitted is None:
                submitted = executor._stress_submitted = weakref.WeakSet()
            submitted.add(future)

        def task(*args: Any, **kwargs: Any) -> Any:
            worker = threading.current_thread()
            future._stress_runner = worker  # type: ignore[attr-defined]
            own = clocks.run_task(worker, role, origin, serial=serial)
            try:
                return fn(*args, **kwargs)
            finally:  # before the outcome is set: a result() may return at once
                future._stress_clock = (session, clocks.end_task(worker, own))  # type: ignore[attr-defined]

        _real_work_item_init(self, future, task, args, kwargs)
    else:
        _real_work_item_init(self, future, fn, args, kwargs)


def _received(future: concurrent.futures.Future[Any]) -> None:
    """The current thread has the outcome of ``future``'s task: it goes on after the task."""
    sent = getattr(future, "_stress_clock", None)
    session = primitives.current_session()
    if sent is not None and sent[0] is session and session is not None:
        session.order_clocks.receive(threading.current_thread(), sent[1])


def _wait(fs: Any, timeout: float | None = None, return_when: str = concurrent.futures.ALL_COMPLETED) -> Any:
    """``concurrent.futures.wait``: the caller goes on after the tasks it returns as done. With no
    timeout, a wait the wait-for graph sees (`_waited_visibly`)."""
    if timeout is None:
        fs = list(fs)  # (an iterator is read once)
        _waited_visibly(fs, return_when)
    result = _real_wait(fs, timeout, return_when)
    for future in result.done:
        _received(future)
    return result


def _as_completed(fs: Any, timeout: float | None = None) -> Iterator[concurrent.futures.Future[Any]]:
    """``concurrent.futures.as_completed``: the caller goes on after each task it is given."""
    for future in _real_as_completed(fs, timeout):
        _received(future)
        yield future


def _done(self: concurrent.futures.Future[Any]) -> bool:
    done = _real_done(self)
    if done:
        _received(self)
    return done


def _add_done_callback(self: concurrent.futures.Future[Any], fn: Any) -> None:
    def after_the_task(future: concurrent.futures.Future[Any]) -> Any:
        _received(future)
        return fn(future)

    _real_add_done_callback(self, after_the_task)


def _waited_visibly(futures: list[concurrent.futures.Future[Any]], return_when: str) -> None:
    """Before an untimed ``result()``, ``exception()`` or ``wait``: wait for ``futures`` (as
    ``return_when`` says) where the wait-for graph sees it, so that a task waiting for a task that
    cannot start (its executor's only worker is the one waiting) is a deadlock at once, not a hang
    at the deadline. Controlled mode runs the futures' own wait: its scheduler knows executors."""
    session = primitives.current_session()
    if not futures or session is None or session.controlled is not None:
        return
    waiting = FutureWaiting(futures, return_when)
    if waiting.runnable():
        return

    def done(seconds: float) -> bool:
        _real_wait(futures, None if seconds < 0 else seconds, return_when)
        return waiting.runnable()

    primitives.wait_in_graph(done, waiting)


def _result(self: concurrent.futures.Future[Any], timeout: float | None = None) -> Any:
    if timeout is None:
        _waited_visibly([self], concurrent.futures.ALL_COMPLETED)
    try:
        return _real_result(self, timeout)
    finally:
        if _real_done(self):
            _received(self)


def _exception(self: concurrent.futures.Future[Any], timeout: float | None = None) -> BaseException | None:
    if timeout is None:
        _waited_visibly([self], concurrent.futures.ALL_COMPLETED)
    try:
        return _real_exception(self, timeout)
    finally:
        if _real_done(self):
            _received(self)


def _start(self: threading.Thread) -> None:
    """``Thread.start`` as the lock-order analysis sees it: what the starting thread did so far
    happens before everything the new thread does."""
    primitives.note_start(self)
    # The code it runs, kept (``Thread.run`` drops its target at the end): where a lock it took and
    # never released was taken (`wait_graph._took_in`). Once per thread the code starts itself.
    self._stress_entry = getattr(getattr(self, "_target", None), "__code__", None)  # type: ignore[attr-defined]
    _real_start(self)
    session = primitives.current_session()
    if session is not None and session.graph is not None:
        # The trial's own: its ident may be one a thread from before the trial had, which ended
        # since (the OS reuses them), and that thread's exemptions (never unwound) are not its.
        session.graph.preexisting.discard(self.ident)


def _join(self: threading.Thread, timeout: float | None = None) -> None:
    """``Thread.join`` as the wait-for graph sees it: a thread of the trial joining another with no
    timeout waits for it, and can wake nobody meanwhile (a deadlock among the rest is everyone's).
    A join that returns with the thread over orders it before the joiner (lock order)."""
    session = primitives.current_session()
    scheduler = session.controlled if session is not None else None
    if scheduler is not None:
        done = scheduler.join(self, timeout)  # controlled mode: a wait the scheduler runs
        if done is not None:
            if done:
                scheduler.harness_wait(+1)  # the thread has left the schedule: it ends at once
                try:
                    _real_join(self)
                finally:
                    scheduler.harness_wait(-1)
                primitives.note_join(self)
            return None
    graph = session.graph if session is not None else None
    if graph is None or timeout is not None:
        _real_join(self, timeout)
        primitives.note_join(self)
        return None
    me = threading.get_ident()
    graph.add_joiner(me, self)
    pause.stuck(None)
    try:
        _real_join(self, timeout)
    finally:
        pause.unstuck()
        graph.remove_joiner(me)
    primitives.note_join(self)
    return None


#: ``concurrent.futures``' functions an in-scope module bound at import (``from concurrent.futures
#: import wait``), by the original's id: (original, stand-in). The module's own names are swapped
#: in `Instrumenter.install` whatever the scope.
_FUNCTIONS: dict[int, tuple[Any, Any]] = {
    id(_real_wait): (_real_wait, _wait),
    id(_real_as_completed): (_real_as_completed, _as_completed),
}


def _is_original(value: Any) -> bool:
    """Whether ``value`` is one of the originals stress swaps: a primitive's class or factory, or
    ``concurrent.futures.wait`` or ``as_completed``."""
    key = id(value)
    return (key in _ORIGINALS and _ORIGINALS[key] is value) or (key in _FUNCTIONS and _FUNCTIONS[key][0] is value)


class Instrumenter:
    """Installs the stand-ins for one trial at a time; reused across a worker's trials.

    Args:
        scope: Code whose calls get instrumented primitives.
    """

    def __init__(self, scope: Scope) -> None:
        self.scope = scope
        self._modules: list[ModuleType] | None = None
        self._adopted = False
        self._undo: list[tuple[Any, str, Any]] = []
        #: The names to swap, found at the first install: (namespace, name, original).
        self._names: list[tuple[Any, str, Any]] | None = None
        self._held = False

    def hold(self) -> None:
        """Install for good: `install` and `uninstall` do nothing from now on. A worker, which runs
        nothing but trials, saves each trial the swapping (stand-ins give code outside the scope
        the originals whether a trial runs or not)."""
        self.install()
        self._held = True

    def install(self) -> None:
        if self._held:
            return
        if self._undo:
            raise RuntimeError("instrumentation is already installed")
        self._undo.append((threading.Thread, "join", _real_join))
        threading.Thread.join = _join  # type: ignore[method-assign]
        self._undo.append((threading.Thread, "start", _real_start))
        threading.Thread.start = _start  # type: ignore[method-assign]
        self._undo.append((futures_thread._WorkItem, "__init__", _real_work_item_init))
        futures_thread._WorkItem.__init__ = _work_item_init  # type: ignore[method-assign]
        self._undo.append((concurrent.futures.Future, "result", _real_result))
        concurrent.futures.Future.result = _result  # type: ignore[method-assign]
        self._undo.append((concurrent.futures.Future, "exception", _real_exception))
        concurrent.futures.Future.exception = _exception  # type: ignore[method-assign]
        self._undo.append((concurrent.futures.Future, "done", _real_done))
        concurrent.futures.Future.done = _done  # type: ignore[method-assign]
        self._undo.append((concurrent.futures.Future, "add_done_callback", _real_add_done_callback))
        concurrent.futures.Future.add_done_callback = _add_done_callback  # type: ignore[method-assign]
        self._undo.append((concurrent.futures, "wait", _real_wait))
        concurrent.futures.wait = _wait
        self._undo.append((concurrent.futures, "as_completed", _real_as_completed))
        concurrent.futures.as_completed = _as_completed
        for stand_in in _STAND_INS.values():
            stand_in._scope = self.scope
        if self._names is None:
            self._names = self._find_names()
        for module, name, original in self._names:
            if getattr(module, name, None) is original:  # unless rebound since (then left alone)
                self._undo.append((module, name, original))
                replacement = _STAND_INS.get(id(original))
                setattr(module, name, _FUNCTIONS[id(original)][1] if replacement is None else replacement)
        if not self._adopted:
            self._adopted = True
            for module in self._in_scope_modules():
                adopt_globals(module)

    def _find_names(self) -> list[tuple[Any, str, Any]]:
        """``threading``'s and ``queue``'s names, and every global of an in-scope module bound to
        one of their originals (``from threading import Lock``) or to ``concurrent.futures``'
        ``wait`` or ``as_completed``."""
        found = [(module, name, getattr(module, name)) for module, name, _ in _REPLACED]
        for module in self._in_scope_modules():
            for name, value in list(vars(module).items()):
                if _is_original(value):
                    found.append((module, name, value))
        return [(m, n, v) for m, n, v in found if _is_original(v)]

    def uninstall(self) -> None:
        if self._held:
            return
        while self._undo:
            namespace, name, value = self._undo.pop()
            setattr(namespace, name, value)
        for stand_in in _STAND_INS.values():
            stand_in._scope = None

    def _in_scope_modules(self) -> list[ModuleType]:
        """Modules of the code under test, found once (they are loaded before the worker forks)."""
        if self._modules is None:
            self._modules = [
                module
                for module in list(sys.modules.values())
                if isinstance(file := getattr(module, "__file__", None), str) and self.scope.contains_file(file)
            ]
        return self._modules


#: The primitives `adopt_globals` made: they outlive every trial.
ADOPTED: list[Any] = []


def left_held() -> list[Any]:
    """Adopted locks (a module's) that the trial just over left held: by one of its threads (its
    actors, the thread that ran it, one it started), or by a thread that has ended. The next trial
    would find them held for ever."""
    me, trial = threading.current_thread(), primitives.last_session()
    held = []
    for lock in ADOPTED:
        owner = getattr(lock, "_owner", None) if isinstance(lock, primitives.Lock | primitives.RLock) else None
        thread = getattr(owner, "thread", None)
        if thread is not None and (getattr(owner, "session", None) is trial or thread is me or not thread.is_alive()):
            held.append(lock)
    return held


def adopt_globals(module: ModuleType) -> list[str]:
    """Replace, for good, the plain primitives a module of the code under test made at import
    (``_registry_lock = threading.Lock()`` at the top of a file) with instrumented ones, so that the
    wait-for graph and the controlled scheduler see them. Only a primitive nobody else holds a
    reference to (no ``from module import lock`` elsewhere, no object keeping it) and that is idle
    (not held, nobody waiting) is replaced; its state (an Event's flag, a Semaphore's count) is kept.
    Returns the names replaced."""
    adopted = []
    for name, value in list(vars(module).items()):
        make = _ADOPTERS.get(type(value))
        if make is None or sys.getrefcount(value) > _UNSHARED:
            continue
        created = primitives.creation_at(getattr(module, "__file__", "?") or "?", _defined_at(module, name))
        replacement = make(value, created)
        if replacement is not None:
            setattr(module, name, replacement)
            adopted.append(name)
            ADOPTED.append(replacement)
        del value
    return adopted


def _defined_at(module: ModuleType, name: str) -> int:
    import linecache
    import re

    pattern = re.compile(rf"^{re.escape(name)}\s*(:[^=]*)?=")
    for number, line in enumerate(linecache.getlines(getattr(module, "__file__", "") or ""), start=1):
        if pattern.match(line):
            return number
    return 0


def _idle_condition(condition: Any) -> bool:
    return not condition._waiters and condition._lock.acquire(False) and (condition._lock.release() or True)


def _adopt_lock(value: Any, created: Any) -> Any:
    return None if value.locked() else primitives.Lock(_created=created)


def _adopt_rlock(value: Any, created: Any) -> Any:
    return primitives.RLock(_created=created) if repr(value).startswith("<unlocked") else None


def _adopt_semaphore(value: Any, created: Any) -> Any:
    if not _idle_condition(value._cond):
        return None
    if isinstance(value, threading.BoundedSemaphore):
        made: Any = primitives.BoundedSemaphore(value._initial_value, _created=created)  # type: ignore[attr-defined]
    else:
        made = primitives.Semaphore(value._value, _created=created)
    made._value = value._value
    return made


def _adopt_event(value: Any, created: Any) -> Any:
    if not _idle_condition(value._cond):
        return None
    made = primitives.Event(_created=created)
    made._flag = value._flag  # type: ignore[attr-defined]
    return made


_ADOPTERS: dict[type, Any] = {
    type(threading._allocate_lock()): _adopt_lock,  # type: ignore[attr-defined]
    type(threading._CRLock()): _adopt_rlock,  # type: ignore[attr-defined]
    threading.Semaphore: _adopt_semaphore,
    threading.BoundedSemaphore: _adopt_semaphore,
    threading.Event: _adopt_event,
}


def _references_when_unshared() -> int:
    """What `sys.getrefcount` says, in `adopt_globals`' loop, of a value only its module holds."""
    namespace = ModuleType("probe")
    namespace.value = object()  # type: ignore[attr-defined]
    for _, value in list(vars(namespace).items()):
        if not isinstance(value, str) and value is not None and type(value) is object:
            return sys.getrefcount(value)
    raise AssertionError("unreachable")


_UNSHARED = _references_when_unshared()

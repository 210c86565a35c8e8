"""Giving the code under test instrumented primitives, for the length of a trial.

Code under test keeps writing ``threading.Lock()`` or ``queue.Queue()``. For a trial, `Instrumenter`
replaces those names in ``threading`` and ``queue`` (and any global of an in-scope module bound to
one of them, as ``from threading import Lock`` makes) with stand-ins. A stand-in builds the
instrumented primitive when it is called from code in scope, and the original otherwise, so the
standard library and the harness keep their plain, fast primitives. ``isinstance`` against a
stand-in accepts both kinds. Everything is put back when the trial ends.
"""

from __future__ import annotations

import queue
import sys
import threading
from types import ModuleType
from typing import Any

from harness.detect import primitives
from harness.scope import Scope

__all__ = ["Instrumenter"]


class _StandIn(type):
    """Metaclass of the stand-ins: calling one picks the kind of primitive by the caller's file."""

    _original: Any
    _instrumented: type
    _scope: Scope | None = None

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        frame = sys._getframe(1)
        scope = cls._scope
        if scope is not None and scope.contains_file(frame.f_code.co_filename):
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
]
_ORIGINALS: dict[int, Any] = {}
_STAND_INS: dict[int, _StandIn] = {}
for _module, _name, _instrumented in _REPLACED:
    _original = getattr(_module, _name)
    _ORIGINALS[id(_original)] = _original
    _STAND_INS[id(_original)] = _make_stand_in(_name, _original, _instrumented)


_real_join = threading.Thread.join


def _join(self: threading.Thread, timeout: float | None = None) -> None:
    """``Thread.join`` as the wait-for graph sees it: a thread of the trial joining another with no
    timeout waits for it, and can wake nobody meanwhile (a deadlock among the rest is everyone's)."""
    session = primitives.current_session()
    graph = session.graph if session is not None else None
    if graph is None or timeout is not None:
        return _real_join(self, timeout)
    me = threading.get_ident()
    graph.add_joiner(me)
    try:
        return _real_join(self, timeout)
    finally:
        graph.remove_joiner(me)


class Instrumenter:
    """Installs the stand-ins for one trial at a time; reused across a worker's trials.

    Args:
        scope: Code whose calls get instrumented primitives.
    """

    def __init__(self, scope: Scope) -> None:
        self.scope = scope
        self._modules: list[ModuleType] | None = None
        self._undo: list[tuple[Any, str, Any]] = []

    def install(self) -> None:
        if self._undo:
            raise RuntimeError("instrumentation is already installed")
        self._undo.append((threading.Thread, "join", _real_join))
        threading.Thread.join = _join  # type: ignore[method-assign]
        for stand_in in _STAND_INS.values():
            stand_in._scope = self.scope
        for module, name, _ in _REPLACED:
            self._swap(module, name)
        for module in self._in_scope_modules():
            for name, value in list(vars(module).items()):
                if id(value) in _STAND_INS and _ORIGINALS.get(id(value)) is value:
                    self._swap(module, name)

    def uninstall(self) -> None:
        while self._undo:
            namespace, name, value = self._undo.pop()
            setattr(namespace, name, value)
        for stand_in in _STAND_INS.values():
            stand_in._scope = None

    def _swap(self, module: ModuleType, name: str) -> None:
        value = getattr(module, name)
        stand_in = _STAND_INS.get(id(value))
        if stand_in is None or _ORIGINALS.get(id(value)) is not value:
            return
        self._undo.append((module, name, value))
        setattr(module, name, stand_in)

    def _in_scope_modules(self) -> list[ModuleType]:
        """Modules of the code under test, found once (they are loaded before the worker forks)."""
        if self._modules is None:
            self._modules = [
                module
                for module in list(sys.modules.values())
                if isinstance(file := getattr(module, "__file__", None), str) and self.scope.contains_file(file)
            ]
        return self._modules

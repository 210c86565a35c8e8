"""What one controlled trial needs around the variant: a scheduler, its scheduling points, and the
surroundings held still.

`Control` says which schedule to run (a strategy and its seed, or forced choices); `controlled`
installs, for the length of the trial: the scheduler in the primitives' session (their operations
become scheduling points, their waits go through it), a scheduling point at every instruction or
line of the code under test, ``time.sleep`` in virtual time, and no garbage collection (a collection
is a point nobody chose).
"""

from __future__ import annotations

import contextlib
import dis
import functools
import gc
import multiprocessing.process
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import CodeType
from typing import Any

from harness.config import RunConfig
from harness.controlled import threads, watchdog
from harness.controlled.scheduler import Scheduler
from harness.controlled.strategies import PCT, Forced, RandomWalk, Strategy
from harness.detect import primitives
from harness.detect.wait_graph import WaitGraph
from harness.perturb.preempt import Preemptor

__all__ = ["Control", "controlled", "sampled_control"]


@dataclass(frozen=True)
class Control:
    """Which schedule a controlled trial runs.

    Attributes:
        strategy: ``random``, ``pct`` or ``forced``.
        seed: Randomness of ``random`` and ``pct``.
        forced: For ``forced``: step -> thread.
        depth: PCT's bug depth.
        length: PCT's estimate of the schedule length, in steps.
        record_decisions: Keep every choice with its alternatives (exhaustive exploration).
        granularity: ``opcode`` or ``line``.
        step_limit: Steps after which the schedule is a livelock.
    """

    strategy: str
    seed: int = 0
    forced: tuple[tuple[int, int], ...] = field(default=())
    depth: int = 3
    length: float = 100.0
    record_decisions: bool = False
    granularity: str = "opcode"
    step_limit: int = 20_000

    def make_strategy(self) -> Strategy:
        rng = random.Random(f"stress-schedule/{self.seed}")
        if self.strategy == "random":
            return RandomWalk(rng)
        if self.strategy == "pct":
            return PCT(rng, depth=self.depth, length=self.length)
        return Forced(dict(self.forced))


def sampled_control(config: RunConfig, number: int, seed: int, length: float) -> Control:
    """Schedule ``number`` of a sampled controlled run. With the default ``mixed`` strategy, two
    random walks (they find shallow races fastest) for every PCT schedule (it finds the ones a long
    run of one thread hides). ``length``: the longest schedule seen so far, in progress."""
    strategy = config.strategy
    if strategy == "mixed":
        strategy = "pct" if number % 3 == 2 else "random"
    return Control(
        strategy,
        seed=seed,
        depth=config.pct_depth,
        length=length,
        granularity=config.granularity,
        step_limit=config.step_limit,
    )


@contextlib.contextmanager
def controlled(
    control: Control, *, session: primitives.Session, graph: WaitGraph, preemptor: Preemptor
) -> Iterator[Scheduler]:
    """Run the body under a fresh scheduler following ``control``."""
    scheduler = Scheduler(
        control.make_strategy(),
        graph=graph,
        step_limit=control.step_limit,
        record_decisions=control.record_decisions,
    )
    session.controlled = scheduler
    undo = _patch_sleep(scheduler) + _patch_process_starts(scheduler) + _patch_signals(scheduler)
    collecting = gc.isenabled()
    gc.disable()
    point = scheduler.point if control.granularity == "line" else _visible_only(scheduler.point)
    graph.preexisting.add(watchdog.watch(scheduler))
    scheduler.adopt_body()
    preemptor.start_controlled(point, granularity=control.granularity)
    try:
        with threads.patched(scheduler):
            try:
                yield scheduler
            finally:
                scheduler.end_body()
    finally:
        watchdog.watch(None)
        preemptor.stop()
        if collecting:
            gc.enable()
        for namespace, name, value in undo:
            setattr(namespace, name, value)
        session.controlled = None


#: Instructions that only touch the running frame (its locals, its value stack, its position): no
#: other thread can see them or change what they do, so switching before them explores nothing new.
#: Everything else — attribute, subscript, global and closure-cell access, calls, iteration,
#: ``with`` — is a scheduling point.
_PRIVATE = frozenset(
    {
        "CACHE",
        "COPY",
        "COPY_FREE_VARS",
        "END_FOR",
        "END_SEND",
        "EXTENDED_ARG",
        "JUMP",
        "JUMP_BACKWARD",
        "JUMP_BACKWARD_NO_INTERRUPT",
        "JUMP_FORWARD",
        "JUMP_NO_INTERRUPT",
        "KW_NAMES",
        "LOAD_CLOSURE",
        "LOAD_CONST",
        "LOAD_FAST",
        "LOAD_FAST_AND_CLEAR",
        "LOAD_FAST_CHECK",
        "LOAD_FAST_LOAD_FAST",
        "MAKE_CELL",
        "NOP",
        "NOT_TAKEN",
        "POP_JUMP_BACKWARD_IF_FALSE",
        "POP_JUMP_BACKWARD_IF_NONE",
        "POP_JUMP_BACKWARD_IF_NOT_NONE",
        "POP_JUMP_BACKWARD_IF_TRUE",
        "POP_JUMP_FORWARD_IF_FALSE",
        "POP_JUMP_FORWARD_IF_NONE",
        "POP_JUMP_FORWARD_IF_NOT_NONE",
        "POP_JUMP_FORWARD_IF_TRUE",
        "POP_JUMP_IF_FALSE",
        "POP_JUMP_IF_NONE",
        "POP_JUMP_IF_NOT_NONE",
        "POP_JUMP_IF_TRUE",
        "POP_TOP",
        "PRECALL",
        "PUSH_NULL",
        "RESUME",
        "RETURN_CONST",
        "RETURN_VALUE",
        "STORE_FAST",
        "STORE_FAST_LOAD_FAST",
        "STORE_FAST_MAYBE_NULL",
        "STORE_FAST_STORE_FAST",
        "SWAP",
        "BUILD_TUPLE",
        "BUILD_LIST",
        "BUILD_SLICE",
        "BUILD_STRING",
        "POP_EXCEPT",
        "PUSH_EXC_INFO",
        "CHECK_EXC_MATCH",
        "LOAD_ASSERTION_ERROR",
        "RERAISE",
        "RAISE_VARARGS",
        "DELETE_FAST",
        "INTERPRETER_EXIT",
        "RETURN_GENERATOR",
    }
)
_visible: dict[CodeType, frozenset[int]] = {}


def visible_offsets(code: CodeType) -> frozenset[int]:
    """The offsets of ``code``'s instructions that are scheduling points (see `_PRIVATE`)."""
    found = _visible.get(code)
    if found is None:
        found = frozenset(i.offset for i in dis.get_instructions(code) if i.opname not in _PRIVATE)
        _visible[code] = found
    return found


def _visible_only(point: Callable[[CodeType, int], None]) -> Callable[[CodeType, int], None]:
    def at(code: CodeType, offset: int) -> None:
        found = _visible.get(code)
        if found is None:
            found = visible_offsets(code)
        if offset in found:
            point(code, offset)

    return at


def _patch_sleep(scheduler: Scheduler) -> list[tuple[Any, str, Any]]:
    """``time.sleep`` — and every module global bound to it (``from time import sleep``, in the code
    under test or in a library it calls) — becomes a virtual sleep for managed threads; the others,
    the harness's own, keep the real one."""
    real = time.sleep

    def sleep(seconds: Any) -> None:
        current = scheduler.current  # read once: the running thread may change under a raw thread
        if current is not None and scheduler.by_ident.get(_ident()) is current:
            scheduler.sleep(seconds)
        else:
            real(seconds)

    undo: list[tuple[Any, str, Any]] = [(time, "sleep", real)]
    time.sleep = sleep
    for module, name in _bindings(real):
        if getattr(module, name, None) is real:
            undo.append((module, name, real))
            setattr(module, name, sleep)
    return undo


def _patch_process_starts(scheduler: Scheduler) -> list[tuple[Any, str, Any]]:
    """A process the trial starts (``multiprocessing``, ``os.fork``, ``subprocess``) runs outside
    the schedule: nothing it does is a scheduling point, and a wait for it is one the scheduler
    cannot see. The schedule is unsupported from then on (`Scheduler.release`), rather than judged
    as if the process had been scheduled: a variant that only starts processes would otherwise be
    \"held\" by schedules that never ran its processes."""
    undo: list[tuple[Any, str, Any]] = []

    def guarded(namespace: Any, name: str, what: Callable[[tuple[Any, ...]], str]) -> None:
        real = getattr(namespace, name)

        def start(*args: Any, **kwargs: Any) -> Any:
            if not scheduler.released:
                scheduler.release(
                    f"{threading.current_thread().name} started {what(args)}, which the controlled "
                    "scheduler does not run"
                )
            return real(*args, **kwargs)

        undo.append((namespace, name, real))
        setattr(namespace, name, start)
        if namespace is os:  # and its names bound at import: ``from os import fork``
            # (bound before the worker wrapped the function, they hold the one it wraps)
            for original in {real, getattr(real, "__wrapped__", real)}:
                for module, bound in _bindings(original):
                    undo.append((module, bound, original))
                    setattr(module, bound, start)

    guarded(multiprocessing.process.BaseProcess, "start", lambda args: f"the process {args[0].name}")
    guarded(subprocess.Popen, "__init__", lambda args: "a subprocess")
    guarded(os, "fork", lambda args: "a process with os.fork()")
    for spawn in ("posix_spawn", "posix_spawnp", "forkpty", "system"):
        if hasattr(os, spawn):
            guarded(os, spawn, functools.partial(_spawned_with, spawn))
    return undo


def _spawned_with(call: str, args: tuple[Any, ...]) -> str:
    return f"a process with os.{call}()"


def _patch_signals(scheduler: Scheduler) -> list[tuple[Any, str, Any]]:
    """A signal's Python handler runs on the main thread between two of its instructions, at a
    moment the signal's arrival decides, not the schedule: a timer (``signal.setitimer``,
    ``signal.alarm``; or a Python handler set for a timer armed already), or a signal a thread
    other than the main one sends its own process (``os.kill``, ``signal.raise_signal``,
    ``signal.pthread_kill``; from the main thread the handler runs at once, at a point of the
    schedule). Only a signal whose handler is Python code counts. The schedule is unsupported from then on
    (`Scheduler.release`): a failure it finds is real, but the schedule does not repeat it."""
    undo: list[tuple[Any, str, Any]] = []

    def let_go(what: str) -> None:
        if not scheduler.released:
            scheduler.release(
                f"{threading.current_thread().name} {what} at {primitives.user_site(sys._getframe(2))}, "
                "and the controlled scheduler does not choose when a signal's handler runs"
            )

    def timer(which: int, seconds: float, *rest: Any) -> str | None:
        if seconds <= 0 or not _handled(_TIMER_SIGNALS.get(which)):
            return None
        return f"armed a signal timer ({_TIMERS.get(which, which)}) whose handler is Python code"

    def alarm(seconds: int) -> str | None:
        if seconds <= 0 or not _handled(signal.SIGALRM):
            return None
        return "armed a signal timer (signal.alarm) whose handler is Python code"

    def handler(signum: int, action: Any) -> str | None:
        # A Python handler for a timer armed already (say, before the trial).
        timers = [which for which, number in _TIMER_SIGNALS.items() if number == signum]
        if not callable(action) or not any(signal.getitimer(which)[0] > 0 for which in timers):
            return None
        return f"set a Python handler for {signal.Signals(signum).name}, whose timer is armed,"

    def kill(pid: int, signum: int) -> str | None:
        return _sent(signum) if pid in (0, os.getpid()) else None

    def raised(signum: int) -> str | None:
        return _sent(signum)

    def pthread_kill(thread_id: int, signum: int) -> str | None:
        return _sent(signum) if signum else None  # signal 0 only checks the thread exists

    def guarded(namespace: Any, name: str, why: Callable[..., str | None]) -> None:
        real = getattr(namespace, name, None)
        if real is None:
            return

        def call(*args: Any, **kwargs: Any) -> Any:
            what = why(*args, **kwargs)
            if what is not None:
                let_go(what)
            return real(*args, **kwargs)

        undo.append((namespace, name, real))
        setattr(namespace, name, call)
        for module, bound in _bindings(real):  # ``from signal import alarm``
            undo.append((module, bound, real))
            setattr(module, bound, call)

    guarded(signal, "setitimer", timer)
    guarded(signal, "signal", handler)
    guarded(signal, "alarm", alarm)
    guarded(os, "kill", kill)
    guarded(signal, "raise_signal", raised)
    guarded(signal, "pthread_kill", pthread_kill)
    return undo


#: ``signal.setitimer``'s timers by number.
_TIMERS = {
    getattr(signal, name): f"signal.setitimer({name})"
    for name in ("ITIMER_REAL", "ITIMER_VIRTUAL", "ITIMER_PROF")
    if hasattr(signal, name)
}


#: The signal each of ``signal.setitimer``'s timers sends.
_TIMER_SIGNALS = {
    getattr(signal, timer): getattr(signal, number)
    for timer, number in (("ITIMER_REAL", "SIGALRM"), ("ITIMER_VIRTUAL", "SIGVTALRM"), ("ITIMER_PROF", "SIGPROF"))
    if hasattr(signal, timer) and hasattr(signal, number)
}


def _handled(signum: int | None) -> bool:
    """Whether signal ``signum``'s handler is Python code (not the default action, not ignored)."""
    if signum is None:
        return False
    try:
        return callable(signal.getsignal(signum))
    except (ValueError, OSError):
        return False


def _sent(signum: int) -> str | None:
    """What sending ``signum`` to this process from the calling thread does to a schedule: None
    from the main thread (its handler runs at once, where the schedule has it), else a reason."""
    if threading.current_thread() is threading.main_thread() or not _handled(signum):
        return None
    try:
        name = signal.Signals(signum).name
    except ValueError:
        name = f"signal {signum}"
    return f"sent {name} to its own process"


#: Modules already searched for globals bound to a function (by the function's id and the
#: module's name), and the names found.
_searched: dict[tuple[int, str], tuple[Any, list[str]]] = {}
#: By the function's id: how many modules there were at the last walk, and what it found.
_walked: dict[int, tuple[int, list[tuple[Any, str]]]] = {}


def _bindings(real: Any) -> Iterator[tuple[Any, str]]:
    """The module globals bound to ``real`` (``from time import sleep``, ``from os import fork``),
    but stress's own: the watchdog and the scheduler keep their real sleep (a raw thread that
    slept through the virtual one would be taken for a managed thread the moment the running one
    finished).

    Every schedule asks again for a dozen functions; while no module was imported since the last
    walk for ``real``, its answer stands (each module's names are cached by the module anyway)."""
    walked = _walked.get(id(real))
    if walked is not None and walked[0] == len(sys.modules):
        yield from walked[1]
        return
    found: list[tuple[Any, str]] = []
    for key, module in list(sys.modules.items()):
        if key == "harness" or key.startswith("harness."):
            continue
        known = _searched.get((id(real), key))
        if known is None or known[0] is not module:
            try:
                names = [name for name, value in list(vars(module).items()) if value is real]
            except TypeError:  # no __dict__
                names = []
            known = _searched[id(real), key] = (module, names)
        found.extend((module, name) for name in known[1])
    _walked[id(real)] = (len(sys.modules), found)
    yield from found


def _ident() -> int:
    import _thread

    return _thread.get_ident()

"""The trial context: what a variant function receives.

A variant sets up fresh state, starts its actors (threads or processes) through the `Trial`, and
checks invariants when they are done. The trial applies the plan's start policy to the actors
(random order, start delays, a barrier so they begin together), catches whatever they raise, and
collects broken checks. It never decides the outcome itself: the worker does, from what was
recorded here.
"""

from __future__ import annotations

import functools
import multiprocessing
import random
import threading
import traceback
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any

from harness.detect import primitives
from harness.detect.findings import Findings
from harness.detect.wait_graph import DeadlockError, ForkedDeadlockError, WaitGraph
from harness.perturb.pause import delay as start_delay
from harness.perturb.pause import nobody_runs, stuck, unstuck
from harness.perturb.plan import ActorStart, Plan
from harness.perturb.preempt import resume, suspend
from harness.scope import HARNESS_DIR, Scope
from harness.text import actor_names, clip, exception_headline, short_path

if TYPE_CHECKING:
    from multiprocessing.context import BaseContext

    from harness.actors import ActorPool
    from harness.processes import ProcessGroup

__all__ = ["ActorGroup", "TaskGroup", "Trial"]

MESSAGE_LIMIT = 4_000
TRACEBACK_LIMIT = 16_000
_MAX_RECORDED = 20


class Trial:
    """One execution of a variant.

    Attributes:
        size: Work per actor, from the scenario's default or ``--size``.
        plan: This trial's perturbation plan.
        rng: A `random.Random` seeded from the plan, for any randomness the variant needs (amounts,
            choices), so a replayed trial sees the same values.
        pool: Parked threads the thread actors run on (`harness.actors`), or None for a new
            thread per actor (``--fresh-threads``, controlled mode).
        start_method: How process actors start: ``fork``, ``spawn`` or ``forkserver``.
        actors: How many actors a variant that lets it vary should start.
    """

    def __init__(
        self,
        *,
        plan: Plan,
        size: int,
        graph: WaitGraph | None = None,
        start_method: str = "fork",
        actors: int | None = None,
        scheduler: Any = None,
        on_failure: Callable[[str, BaseException | None], None] | None = None,
        findings: Findings | None = None,
        pool: ActorPool | None = None,
    ) -> None:
        self.plan = plan
        #: Parked actor threads to run thread actors on (None: a new thread per actor).
        self.pool = pool
        self.graph = graph
        #: Deadlocks reported by the trial's other processes (see `harness.detect.findings`).
        self.findings = findings
        self.size = size
        #: Actors per trial, for scenarios that let it vary (``--actors``, else the scenario's).
        self.actors = actors if actors is not None else 2
        #: Controlled mode's scheduler (None in stress mode).
        self.scheduler = scheduler
        #: Called at a failing check (message, None) or a recorded exception (where, exception),
        #: in the thread where it happened: `stress replay --pdb` stops there.
        self.on_failure = on_failure
        self.start_method = start_method
        self._rng: random.Random | None = None
        self.failures: list[str] = []
        self.errors: list[str] = []
        #: One line per recorded exception: what was raised, by whom, where in the code under test.
        self.headlines: list[str] = []
        self.crashes: list[str] = []
        self.deadlocks: list[list[str]] = []
        #: Steps of a coroutine trial that held its event loop: (headline, stack) (`harness.detect.aio`).
        self.stalls: list[tuple[str, str]] = []
        self.starts: list[tuple[ActorStart, ...]] = []
        #: Whether the trial started process actors (they take the plan's ``delay`` with them).
        self.ran_processes = False
        self._lock = threading.Lock()
        self._groups = 0

    @property
    def rng(self) -> random.Random:
        """A `random.Random` seeded from the plan (made on first use)."""
        if self._rng is None:
            self._rng = random.Random(self.plan.seed)
        return self._rng

    @property
    def mp(self) -> BaseContext:
        """The `multiprocessing` context of the trial's start method: make queues, pipes, values
        and locks for process actors with it (``trial.mp.Queue()``)."""
        return multiprocessing.get_context(self.start_method)

    def __repr__(self) -> str:
        return f"Trial(trial={self.plan.trial}, size={self.size})"

    def check(self, condition: object, message: str = "check failed") -> bool:
        """Record an invariant. A false ``condition`` makes the trial fail with ``message``.

        Returns the condition's truth, so a variant can stop checking what no longer makes sense.
        Safe to call from actors.
        """
        if condition:
            return True
        if self.deadlocked():
            return False  # a consequence of the deadlock, which is the trial's finding
        with self._lock:
            if len(self.failures) < _MAX_RECORDED:
                self.failures.append(clip(str(message), MESSAGE_LIMIT))
        if self.on_failure is not None:
            self.on_failure(str(message), None)
        return False

    def run_threads(self, fn: Callable[..., Any], *args: Any, count: int = 2) -> list[Any]:
        """Run ``count`` threads of ``fn(*args)`` together and wait for all of them.

        Returns their return values in actor order (``None`` for an actor that raised).
        """
        if count < 1:
            raise ValueError(f"count must be >= 1, not {count}")
        trace = suspend()  # stress's own work, run by the code under test's thread
        try:
            with self.threads() as group:
                for _ in range(count):
                    group.start(fn, *args)
        finally:
            resume(trace)
        return group.results

    def run_processes(self, fn: Callable[..., Any], *args: Any, count: int = 2) -> list[Any]:
        """Run ``count`` processes of ``fn(*args)`` together and wait for all of them.

        Returns their return values in actor order (``None`` for one that raised, died, or
        returned something that cannot be pickled).
        """
        if count < 1:
            raise ValueError(f"count must be >= 1, not {count}")
        with self.processes() as group:
            for _ in range(count):
                group.start(fn, *args)
        return group.results

    async def run_tasks(self, fn: Callable[..., Any], *args: Any, count: int = 2) -> list[Any]:
        """A coroutine variant's `run_threads`: run ``count`` tasks of ``fn(*args)`` (an ``async
        def``) on the trial's event loop together and wait for all of them (`harness.detect.aio`).

        Returns their return values in task order (``None`` for a task that raised).
        """
        if count < 1:
            raise ValueError(f"count must be >= 1, not {count}")
        async with self.tasks() as group:
            for _ in range(count):
                group.start(fn, *args)
        return group.results

    def tasks(self) -> TaskGroup:
        """A group of different tasks, started together when the ``async with`` block ends::

        async with trial.tasks() as group:
            group.start(transfer, a, b)
            group.start(transfer, b, a)
        first, second = group.results
        """
        group = TaskGroup(self, self._groups)
        self._groups += 1
        return group

    def processes(self) -> ProcessGroup:
        """A group of different process actors, started together when the ``with`` block ends::

        with trial.processes() as group:
            group.start(sender, parent_end)
            group.start(receiver, child_end)
        """
        from harness.processes import ProcessGroup

        group = ProcessGroup(self, self._groups)
        self._groups += 1
        return group

    def threads(self) -> ActorGroup:
        """A group of different actors, started together when the ``with`` block ends::

        with trial.threads() as group:
            group.start(transfer, a, b)
            group.start(transfer, b, a)
        first, second = group.results
        """
        group = ActorGroup(self, self._groups)
        self._groups += 1
        return group

    def deadlocked(self) -> bool:
        """Whether a deadlock has been found in this trial, in any of its processes: the trial's
        outcome is decided, and what its code does afterwards (a released actor's missing result,
        an assertion on a deadlocked child's exit code) is a consequence, not a finding."""
        if self.graph is not None and self.graph.finding is not None:
            return True
        if self.scheduler is not None and getattr(self.scheduler, "finding", None) is not None:
            return True
        return bool(self.deadlocks) or (self.findings is not None and self.findings.any())

    def end_if_deadlocked(self) -> None:
        """Called when a group of actors is joined: after a deadlock, the variant's body stops here
        (with `DeadlockError`, which ``except Exception`` does not catch) instead of going on with
        what the released actors left."""
        if self.deadlocked():
            raise DeadlockError("the trial deadlocked; its body stops where its actors were joined")

    def record_traceback(self, where: str, text: str) -> None:
        """Record an exception already formatted (a process actor's, reported through a pipe)."""
        if self.deadlocked():
            return
        self._keep(where, text)

    def _keep(self, where: str, text: str) -> None:
        scope = getattr(self.graph, "scope", None)
        headline = exception_headline(where, text, scope.contains_file if scope is not None else lambda _: True)
        with self._lock:
            if len(self.errors) < _MAX_RECORDED:
                self.errors.append(clip(f"in {where}:\n{text}", TRACEBACK_LIMIT))
                self.headlines.append(headline)

    def record_crash(self, where: str, exitcode: int) -> None:
        """Record a process actor that died without reporting: killed by a signal, or exited."""
        import signal

        if exitcode < 0:
            try:
                how = f"was killed by {signal.Signals(-exitcode).name}"
            except ValueError:
                how = f"was killed by signal {-exitcode}"
        else:
            how = f"exited with status {exitcode}"
        with self._lock:
            self.crashes.append(f"process {where} {how}")

    def record_child_deadlock(self, where: str | None, lines: list[str], *, explained: bool = False) -> None:
        """Record a deadlock found inside another process of the trial (its own wait-for graph):
        a process actor ``where``, or one the trial did not start itself (a Pool worker), whose
        summary already says which process (``explained``)."""
        summary = lines[0] if explained else f"in process {where or '?'}: {lines[0]}"
        with self._lock:
            self.deadlocks.append([summary, *lines[1:]])

    def record_exception(self, where: str, exc: BaseException) -> None:
        """Record an exception raised by an actor (or any thread) of this trial."""
        if isinstance(exc, DeadlockError | ForkedDeadlockError) or self.deadlocked():
            return  # how a deadlocked trial unwinds, or what follows it; the deadlock is the finding
        tb = exc.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename.startswith(HARNESS_DIR):
            tb = tb.tb_next  # the harness's own frames (actor start-up) say nothing about the bug
        self._keep(where, "".join(traceback.format_exception(type(exc), exc, tb)))
        if self.on_failure is not None:
            self.on_failure(where, exc)


def _raised(exc: BaseException, scope: Scope) -> str:
    """``ValueError at b04.py:37``: what an actor raised, and the innermost line of the code under
    test it came through."""
    where = ""
    tb = exc.__traceback__
    while tb is not None:
        if scope.contains_file(tb.tb_frame.f_code.co_filename):
            where = f" at {short_path(tb.tb_frame.f_code.co_filename)}:{tb.tb_lineno}"
        tb = tb.tb_next
    return f"it raised {type(exc).__name__}{where}"


class ActorGroup:
    """Actors registered with `start`, run together when the ``with`` block exits."""

    def __init__(self, trial: Trial, index: int) -> None:
        self._trial = trial
        self._index = index
        self._actors: list[tuple[Callable[..., Any], tuple[Any, ...], str]] = []
        self.results: list[Any] = []

    def start(self, fn: Callable[..., Any], *args: Any, name: str | None = None) -> int:
        """Register actor ``fn(*args)``; returns its index in `results`.

        The actor's thread is called ``name``, else after its function (``transfer``), numbered
        when several actors run the same function (``increment#0``, ``increment#1``).
        """
        index = len(self._actors)
        self._actors.append((fn, args, name or ""))
        return index

    def _names(self) -> list[str]:
        return actor_names([(fn, given) for fn, _, given in self._actors])

    def __enter__(self) -> ActorGroup:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None and self._actors:
            trace = suspend()  # stress's own work, run by the code under test's thread
            try:
                self._run()
            finally:
                resume(trace)

    def _run(self) -> None:
        if self._trial.scheduler is not None:
            self._run_controlled()
            return
        trial = self._trial
        count = len(self._actors)
        starts = trial.plan.starts(count, group=self._index)
        trial.starts.append(tuple(starts))
        results: list[Any] = [None] * count
        names = self._names()
        session = primitives.current_session()
        # Lock order: what the body did so far happens before the actors; they, before what it does next.
        clocks = session.order_clocks if session is not None else None
        spawned = clocks.spawn(threading.current_thread(), names) if clocks is not None else 0

        def actor_main(index: int, delay: float) -> None:
            fn, args, _ = self._actors[index]
            label = names[index]
            if trial.graph is not None:
                trial.graph.actors.add(threading.get_ident())
            try:
                if delay:
                    trace = suspend()
                    start_delay(delay)
                    resume(trace)
                results[index] = fn(*args)
            except BaseException as exc:  # an actor's SystemExit or KeyboardInterrupt is a finding too
                suspend()
                trial.record_exception(label, exc)
                if trial.graph is not None and not isinstance(exc, DeadlockError):
                    trial.graph.raised[label] = _raised(exc, trial.graph.scope)
            finally:
                suspend()  # the actor's work is over; its thread parks or ends untraced
                if trial.graph is not None:
                    trial.graph.finished.append(label)
                    _note_ran(trial.graph, label, fn)
                nobody_runs()  # a thread switched out for this one's sake need not stay out

        self._start_and_join(starts, actor_main, names, trial.pool)
        if clocks is not None:
            clocks.gather(threading.current_thread(), spawned)
        self.results = results
        trial.end_if_deadlocked()

    def _start_and_join(
        self,
        starts: list[ActorStart],
        actor_main: Callable[[int, float], None],
        names: list[str],
        pool: ActorPool | None,
    ) -> None:
        trial = self._trial
        count = len(starts)
        graph = trial.graph
        if pool is not None and not trial.plan.fresh_threads:
            actors = pool.take(count)
            work = [functools.partial(actor_main, s.actor, s.delay) for s in starts]
            if graph is not None:
                graph.set_joining(True)  # waiting for actors: this thread can wake nobody
            stuck(None)
            try:
                pool.run(actors, [names[s.actor] for s in starts], work, together=trial.plan.barrier)
            finally:
                unstuck()
                if graph is not None:
                    graph.set_joining(False)
            return
        barrier = threading.Barrier(count) if trial.plan.barrier and count > 1 else None

        def with_barrier(index: int, delay: float) -> None:
            if barrier is not None:
                barrier.wait()
            actor_main(index, delay)

        # Daemon threads: if an actor never returns, the worker is replaced, and nothing waits on it.
        threads = [
            threading.Thread(target=with_barrier, args=(s.actor, s.delay), name=names[s.actor], daemon=True)
            for s in starts
        ]
        for thread in threads:
            thread.start()
        if graph is not None:
            graph.set_joining(True)  # waiting for actors: this thread can wake nobody
        stuck(None)
        try:
            for thread in threads:
                thread.join()
        finally:
            unstuck()
            if graph is not None:
                graph.set_joining(False)

    def _run_controlled(self) -> None:
        """Controlled mode: the actors are threads the body starts and joins, like any other, and
        the scheduler decides every switch; start order, delays and the barrier mean nothing when
        only one thread runs at a time. Starting them is atomic: the first choice is who runs first."""
        trial = self._trial
        scheduler = trial.scheduler
        names = self._names()
        results: list[Any] = [None] * len(self._actors)

        def actor_main(index: int) -> None:
            fn, args, _ = self._actors[index]
            try:
                results[index] = fn(*args)
            except DeadlockError:
                raise  # the scheduler unwinds a deadlocked schedule with it: not the actor's doing
            except BaseException as exc:  # an actor's SystemExit is a finding too
                trial.record_exception(names[index], exc)
                if trial.graph is not None:
                    trial.graph.raised[names[index]] = _raised(exc, trial.graph.scope)
            finally:
                if trial.graph is not None:
                    trial.graph.finished.append(names[index])
                    _note_ran(trial.graph, names[index], fn)

        threads = [
            threading.Thread(target=actor_main, args=(index,), name=name, daemon=True)
            for index, name in enumerate(names)
        ]
        graph = trial.graph
        # Lock order: the actors by their names, as in stress mode (numbers in a name are the
        # process's thread count only for threads the code starts itself: `StartJoinOrder.started`).
        session = primitives.current_session()
        clocks = session.order_clocks if session is not None else None
        spawned = clocks.spawn(threading.current_thread(), names) if clocks is not None else 0
        scheduler.quiet(+1)  # the harness's starts and joins are no steps of the interleaving
        if graph is not None:
            graph.set_joining(True)
        try:
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        finally:
            scheduler.quiet(-1)
            if graph is not None:
                graph.set_joining(False)
        if clocks is not None:
            clocks.gather(threading.current_thread(), spawned)
        self.results = results
        trial.end_if_deadlocked()


def _note_ran(graph: WaitGraph, label: str, fn: Callable[..., Any]) -> None:
    """Remember the function an actor ran (`WaitGraph.ran`), unwrapping ``functools.partial``."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    code = getattr(fn, "__code__", None)
    if code is not None:
        graph.ran[label] = code


class TaskGroup:
    """Tasks registered with `start`, run together when the ``async with`` block exits (made by
    `Trial.tasks`)::

        async with trial.tasks() as group:
            group.start(transfer, a, b)
            group.start(transfer, b, a)
        first, second = group.results
    """

    def __init__(self, trial: Trial, index: int) -> None:
        self._trial = trial
        self._index = index
        self._actors: list[tuple[Callable[..., Awaitable[Any]], tuple[Any, ...], str]] = []
        self.results: list[Any] = []

    def start(self, fn: Callable[..., Awaitable[Any]], *args: Any, name: str | None = None) -> int:
        """Register task ``fn(*args)`` (an ``async def``); returns its index in `results`. The task
        is called ``name``, else after its function, numbered when several run the same one."""
        if not callable(fn):
            raise TypeError(f"a task runs an async function, not {fn!r}")
        self._actors.append((fn, args, name or ""))
        return len(self._actors) - 1

    async def __aenter__(self) -> TaskGroup:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is not None or not self._actors:
            return
        import asyncio  # only a coroutine trial gets here: thread trials need not import asyncio

        from harness.detect import aio

        trial = self._trial
        names = actor_names([(fn, given) for fn, _, given in self._actors])
        loop = asyncio.get_running_loop()
        starts = trial.plan.starts(len(self._actors), group=self._index)
        if isinstance(loop, aio.StressLoop):
            starts = loop.order(starts)
        trial.starts.append(tuple(starts))
        results: list[Any] = [None] * len(self._actors)

        async def actor(index: int, delay: float) -> None:
            fn, args, _ = self._actors[index]
            try:
                if isinstance(loop, aio.StressLoop):
                    await loop.starting(delay, fn)
                results[index] = await fn(*args)
            except asyncio.CancelledError:
                pass  # cancelled (by the code, a timeout, ``--cancel``): no finding in itself
            except BaseException as error:  # an actor's SystemExit is a finding too
                trial.record_exception(f"task {names[index]}", error)

        tasks = [asyncio.create_task(actor(s.actor, s.delay), name=names[s.actor]) for s in starts]
        gathered = asyncio.gather(*tasks)
        aio.GROUPS.add(gathered)
        await gathered
        self.results = results
        trial.end_if_deadlocked()

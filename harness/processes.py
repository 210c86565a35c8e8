"""Process actors: what `Trial.run_processes` starts, and what runs in each child.

A process group starts its actors in the plan's order (``fork``, ``spawn`` or ``forkserver``, as
configured), holds them at a barrier so they begin together, and joins them under the engine's
watchdog. Each child:

* dies with its worker (``PR_SET_PDEATHSIG``), so a killed run leaves no orphan;
* dumps its threads on ``SIGABRT`` into the worker's dump file (inherited when forked, handed over
  when spawned), so a hung trial's evidence covers every process;
* runs its function under the plan: forced switches in the code under test, which for a process
  pause it for the plan's ``delay`` (yielding the interpreter does nothing for another process),
  delays at multiprocessing operations, and instrumented threading primitives with their own
  wait-for graph (a forked child can inherit a lock that is held by a thread it does not have);
* reports back its return value, its exception, or its deadlock, through a pipe.

The parent turns those reports, and the exit codes, into the trial's errors, crashes and deadlocks.
"""

from __future__ import annotations

import contextlib
import faulthandler
import multiprocessing
import multiprocessing.connection
import os
import pickle
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from harness.detect import primitives
from harness.detect.instrument import Instrumenter
from harness.detect.wait_graph import DeadlockError, ForkedDeadlockError, WaitGraph, forget_ended_records
from harness.perturb import mp_delays, preempt
from harness.perturb.pause import delay as start_delay
from harness.perturb.plan import ActorStart, Plan
from harness.perturb.preempt import Preemptor
from harness.scope import Scope
from harness.text import actor_names, clip

__all__ = ["START_METHODS", "ChildSetup", "Owner", "ProcessGroup"]

START_METHODS = ("fork", "spawn", "forkserver")
TRACEBACK_LIMIT = 16_000


@dataclass(frozen=True)
class ChildSetup:
    """What every process actor of a worker needs to know, beyond its own function.

    Attributes:
        scope_files: Files of the code under test (a spawned child rebuilds its scope from them).
        scope_dirs: Folders of the code under test.
        dump: The worker's ``faulthandler`` file descriptor.
        scope_forced: Paths put in scope (``--scope``).
        scope_excluded: Paths taken out of it (``--exclude``).
    """

    scope_files: tuple[str, ...]
    scope_dirs: tuple[str, ...]
    dump: int
    scope_forced: tuple[str, ...] = ()
    scope_excluded: tuple[str, ...] = ()


#: Set by the worker when it starts (`configure`); read by process groups.
_setup: ChildSetup | None = None


def configure(setup: ChildSetup) -> None:
    global _setup
    _setup = setup


class Owner(Protocol):
    """What a process group needs of the trial that owns it (`harness.Trial` is one): the plan and
    start method to start actors by, and a record of what happened to them."""

    plan: Plan
    graph: WaitGraph | None
    start_method: str
    scheduler: Any
    starts: list[tuple[ActorStart, ...]]
    #: Set when a group starts process actors.
    ran_processes: bool

    @property
    def mp(self) -> Any: ...

    def record_traceback(self, where: str, text: str) -> None: ...

    def record_crash(self, where: str, exitcode: int) -> None: ...

    def record_child_deadlock(self, where: str | None, lines: list[str], *, explained: bool = False) -> None: ...

    def end_if_deadlocked(self) -> None: ...


class ProcessGroup:
    """Process actors registered with `start`, run together when the ``with`` block exits — or
    earlier, at `launch`, so that the variant can talk to them while they run."""

    def __init__(self, trial: Owner, index: int) -> None:
        self._trial = trial
        self._index = index
        self._actors: list[tuple[Callable[..., Any], tuple[Any, ...], str]] = []
        self._close: list[Any] = []
        self._running: list[tuple[multiprocessing.process.BaseProcess, Any, int]] | None = None
        self._dump: Any = None
        self._go: Any = None
        self.results: list[Any] = []
        self.exitcodes: list[int | None] = []

    def start(self, fn: Callable[..., Any], *args: Any, name: str | None = None) -> int:
        """Register process actor ``fn(*args)``; returns its index in `results`.

        With ``spawn`` or ``forkserver``, ``fn`` and ``args`` must be picklable (``fn`` a module-level
        function), as for `multiprocessing.Process`.
        """
        if self._running is not None:
            raise RuntimeError("the group's actors were launched already; register every actor before launch()")
        self._actors.append((fn, args, name or ""))
        return len(self._actors) - 1

    def close_after_start(self, *objects: Any) -> None:
        """Close ``objects`` (pipe ends, queues) in this process once every actor has started:
        the parent's own copies, which only the actors should hold. A pipe whose write end stays
        open anywhere never reports end-of-file."""
        self._close.extend(objects)

    def launch(self) -> None:
        """Start the registered actors now, inside the ``with`` block (in the plan's order, with its
        start delays, released together from its barrier), so that the variant can talk to them
        while they run — read a queue they fill, send them work. The end of the block waits for them
        and collects their results, as without `launch`::

            with trial.processes() as group:
                group.start(child, results)
                group.launch()
                data = results.get()   # while the child runs
        """
        if self._running is not None:
            raise RuntimeError("launch() starts a group's actors once")
        trial = self._trial
        if trial.scheduler is not None:
            raise RuntimeError("controlled mode runs thread actors only; run process scenarios in stress mode")
        ctx: Any = trial.mp
        count = len(self._actors)
        starts = trial.plan.starts(count, group=self._index)
        trial.starts.append(tuple(starts))
        trial.ran_processes = True
        names = self._names()
        # Kept until the actors are joined: a spawned child opens the event's semaphore by name, and
        # the event's last reference going away here would unlink it first.
        self._go = go = ctx.Event() if trial.plan.barrier and count > 1 else None
        setup = _setup or ChildSetup((), (), -1)
        self._dump = (
            multiprocessing.connection.Connection(os.dup(setup.dump), readable=False) if setup.dump >= 0 else None
        )
        self._running = running = []
        for start in starts:
            fn, args, _ = self._actors[start.actor]
            reader, writer = ctx.Pipe(duplex=False)
            child = _Child(
                fn=fn,
                args=args,
                name=names[start.actor],
                start=start,
                plan=trial.plan,
                setup=setup,
                method=trial.start_method,
                go=go,
                dump=self._dump,
                report=writer,
            )
            process = ctx.Process(target=_child_main, args=(child,), name=names[start.actor])
            process.start()
            writer.close()
            running.append((process, reader, start.actor))
        for thing in self._close:
            thing.close()
        if go is not None:
            go.set()

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if self._running is None:
            if exc_type is not None or not self._actors:
                return
            try:
                self.launch()
            except BaseException:
                self._clean_up()
                raise
        try:
            if exc_type is None:
                self._join()
        finally:
            self._clean_up()
        if exc_type is None:
            self._trial.end_if_deadlocked()

    def _names(self) -> list[str]:
        return actor_names([(fn, given) for fn, _, given in self._actors])

    def _join(self) -> None:
        """Wait for every actor, reading each one's report as it comes: a report larger than a
        pipe's buffer must not keep its actor from exiting while we wait for it to exit."""
        running = self._running or []
        reports: dict[int, Any] = {}
        unread: dict[Any, int] = {reader: index for _, reader, index in running}
        alive: dict[Any, multiprocessing.process.BaseProcess] = {process.sentinel: process for process, _, _ in running}
        graph = self._trial.graph
        if graph is not None:
            graph.set_joining(True)
        try:
            while unread or alive:
                ready = multiprocessing.connection.wait([*unread, *alive])
                for handle in ready:
                    reader: Any = handle
                    if handle in unread:
                        index = unread.pop(handle)
                        with contextlib.suppress(EOFError, OSError, pickle.UnpicklingError):
                            reports[index] = reader.recv()
                    elif handle in alive:
                        alive.pop(handle).join()
        finally:
            if graph is not None:
                graph.set_joining(False)
        self._collect(reports)

    def _clean_up(self) -> None:
        for process, reader, _ in self._running or []:
            reader.close()
            if process.exitcode is None:
                process.kill()
                process.join()
            process.close()
        if self._dump is not None:
            self._dump.close()
            self._dump = None
        self._go = None

    def _collect(self, reports: dict[int, Any]) -> None:
        trial = self._trial
        names = self._names()
        results: list[Any] = [None] * len(self._actors)
        exitcodes: list[int | None] = [None] * len(self._actors)
        for process, _, index in self._running or []:
            exitcodes[index] = process.exitcode
            report = reports.get(index)
            if report is None:
                if process.exitcode:
                    trial.record_crash(names[index], process.exitcode)
                continue
            kind, value = report
            if kind == "ok":
                results[index] = value
            elif kind == "error":
                trial.record_traceback(names[index], value)
            elif kind == "deadlock":
                trial.record_child_deadlock(names[index], value)
        self.results = results
        self.exitcodes = exitcodes


@dataclass
class _Child:
    """Everything a process actor needs, pickled for ``spawn``/``forkserver``."""

    fn: Callable[..., Any]
    args: tuple[Any, ...]
    name: str
    start: ActorStart
    plan: Plan
    setup: ChildSetup
    method: str
    go: Any
    dump: Any
    report: Any


def _child_main(child: _Child) -> None:
    """The body of a process actor (runs in the child)."""
    report = child.report
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if child.dump is not None:
        with contextlib.suppress(Exception):
            faulthandler.enable(file=child.dump.fileno(), all_threads=True)
            # Lets a hang's evidence say which actor each process's threads belong to.
            os.write(child.dump.fileno(), f"stress: process {os.getpid()} is {child.name}\n".encode())
    setup = child.setup
    scope = Scope(setup.scope_files, setup.scope_dirs, forced=setup.scope_forced, excluded=setup.scope_excluded)
    inherited = preempt.active()  # a forked child carries its worker's preemptor: take it over
    if inherited is not None:
        inherited.stop()
    preemptor = inherited or Preemptor(scope)
    instrumenter = Instrumenter(scope)
    forget_ended_records()
    graph = WaitGraph(
        scope=scope,
        main=threading.get_ident(),
        preexisting={t.ident for t in threading.enumerate() if t.ident is not None},
    )
    plan = child.plan
    primitives.deactivate()
    primitives.activate(primitives.Session(graph=graph, sync=plan.sync, pause=plan.delay, seed=plan.seed))
    if child.method != "fork":
        instrumenter.install()  # a forked child inherited the worker's installation
    mp_delays.install()
    try:
        if child.go is not None:
            child.go.wait()
        if child.start.delay:
            start_delay(child.start.delay)
        seed = hash((plan.seed, child.start.actor)) & ((1 << 63) - 1)
        mp_delays.activate(plan.sync, plan.delay, seed=seed)
        preemptor.start(plan.preempt, pause=plan.delay, seed=seed)
        try:
            value = child.fn(*child.args)
        finally:
            preemptor.stop()
            mp_delays.deactivate()
        _send(report, ("ok", value))
    except (DeadlockError, ForkedDeadlockError):
        finding = graph.finding
        _send(report, ("deadlock", [finding.summary, *finding.lines] if finding is not None else ["deadlocked"]))
    except BaseException as exc:
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        _send(report, ("error", clip(text, TRACEBACK_LIMIT)))
        report.close()
        sys.stdout.flush()
        os._exit(1)
    finally:
        if child.method != "fork":
            instrumenter.uninstall()
        primitives.deactivate()
    report.close()


def _send(report: Any, message: tuple[str, Any]) -> None:
    try:
        report.send(message)
    except Exception as exc:  # a result that cannot be pickled back to the trial
        kind, value = message
        if kind == "ok":
            what = f"the actor returned a {type(value).__qualname__}, which cannot be pickled back to the trial ({exc})"
        else:
            what = repr(value)
        with contextlib.suppress(Exception):
            report.send(("error", what))


def _die_with_parent() -> None:
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG

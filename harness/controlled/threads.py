"""The threads code under test starts itself, brought under the scheduler for one controlled trial.

Code as written starts its own threads: ``threading.Thread(target=...).start()``, a
``threading.Timer``, a ``concurrent.futures.ThreadPoolExecutor``'s workers. While a controlled trial
runs, `patched` makes every ``Thread.start`` called by a managed thread register the new thread with
the scheduler (numbered in start order, with per-trial names for the default ``Thread-N`` and
``ThreadPoolExecutor-N_M``, so a schedule names the same threads on every replay) and run its
``run`` only when given the baton. Its waits are then scheduling points: ``join`` and ``is_alive``
go through the scheduler; a Timer's delay runs on the virtual clock (its ``finished`` event is
replaced by an instrumented one); an executor's queue, futures and shutdown lock are instrumented
primitives (`harness.detect.instrument` gives a managed thread instrumented primitives wherever it
creates them), and the executor's bookkeeping lets a deadlock over futures be described as the cycle
it is: a task waiting for the result of another task queued behind it on the same busy workers.

An exception that ends such a thread goes to ``threading.excepthook`` before the thread hands the
baton on (the trial records it), as it would at the end of ``Thread.run``.

`wait_edge` says what a blocked managed thread waits for and on whom: the deadlock description
follows these edges to find a cycle.
"""

from __future__ import annotations

import concurrent.futures
import concurrent.futures.thread as futures_thread
import contextlib
import re
import sys
import threading
from collections.abc import Iterator
from typing import Any

from harness.controlled.scheduler import Managed, Scheduler, ThreadAbandoned
from harness.detect import primitives
from harness.detect.wait_graph import POOL_NAME, Deadlock, DeadlockError, describe_primitive, pool_name, task_name
from harness.text import and_join

__all__ = ["describe_deadlock", "patched", "wait_edge"]

_real_start = threading.Thread.start
_real_is_alive = threading.Thread.is_alive
_real_submit = futures_thread.ThreadPoolExecutor.submit
_real_work_item_run = futures_thread._WorkItem.run

_DEFAULT_NAME = re.compile(r"Thread-(\d+)( \(.*\))?$")

#: The running controlled trial's scheduler (None between trials).
_scheduler: Scheduler | None = None
#: Futures of executors submitted to during the trial: the function's name and the executor.
_submitted: dict[int, tuple[concurrent.futures.Future[Any], str, Any]] = {}
#: Futures being run, by the managed thread running them.
_running: dict[int, Managed] = {}


@contextlib.contextmanager
def patched(scheduler: Scheduler) -> Iterator[None]:
    """For the length of one controlled trial: threads started by managed threads are managed."""
    global _scheduler
    _scheduler = scheduler
    scheduler.describe_deadlock = describe_deadlock
    scheduler.in_a_cycle = in_a_cycle
    _submitted.clear()
    _running.clear()
    saved_start = threading.Thread.start  # the instrumenter's, if it is installed for good
    threading.Thread.start = _start  # type: ignore[method-assign]
    threading.Thread.is_alive = _is_alive  # type: ignore[method-assign]
    futures_thread.ThreadPoolExecutor.submit = _submit  # type: ignore[method-assign]
    futures_thread._WorkItem.run = _work_item_run  # type: ignore[method-assign]
    shutdown_lock = futures_thread._global_shutdown_lock
    # Taken by every submit() around a point (starting a worker): a plain lock would leave a second
    # submitter blocked where the scheduler cannot see.
    futures_thread._global_shutdown_lock = primitives.Lock(_created=primitives.creation(None))  # type: ignore[assignment]
    try:
        yield
    finally:
        futures_thread._global_shutdown_lock = shutdown_lock
        futures_thread._WorkItem.run = _real_work_item_run  # type: ignore[method-assign]
        futures_thread.ThreadPoolExecutor.submit = _real_submit  # type: ignore[method-assign]
        threading.Thread.is_alive = _real_is_alive  # type: ignore[method-assign]
        threading.Thread.start = saved_start  # type: ignore[method-assign]
        _scheduler = None
        _submitted.clear()
        _running.clear()


def _start(self: threading.Thread) -> None:
    scheduler = _scheduler
    if scheduler is None or not scheduler.takes(self):
        primitives.note_start(self)
        _real_start(self)
        return
    name = _trial_name(scheduler, self.name)
    if name != self.name:
        self.name = name
    primitives.note_start(self)
    if isinstance(self, threading.Timer) and not isinstance(self.finished, primitives.Event):
        finished = primitives.Event(_created=primitives.creation(sys._getframe(1)))
        if self.finished.is_set():
            finished._flag = True  # type: ignore[attr-defined]
        self.finished = finished
    managed = scheduler.spawn(self, name)
    self.run = _managed_run(scheduler, managed, self.run)  # type: ignore[method-assign]
    scheduler.harness_wait(+1)
    try:
        _real_start(self)
        managed.registered.acquire()
    finally:
        scheduler.harness_wait(-1)
    scheduler.point(what=f"{name}.start()")


def _managed_run(scheduler: Scheduler, managed: Managed, run: Any) -> Any:
    def run_managed() -> None:
        try:
            scheduler.enter(managed)
            run()
        except (SystemExit, ThreadAbandoned):
            pass  # SystemExit ends a thread quietly, as threading does
        except DeadlockError:
            if not scheduler.aborting:
                _report(managed)
        except BaseException:
            _report(managed)
        finally:
            scheduler.leave(managed)

    return run_managed


def _report(managed: Managed) -> None:
    exc_type, exc, tb = sys.exc_info()
    try:
        threading.excepthook(threading.ExceptHookArgs([exc_type, exc, tb, managed.thread]))
    finally:
        del exc, tb


def _is_alive(self: threading.Thread) -> bool:
    scheduler = _scheduler
    if scheduler is not None:
        managed = scheduler.managed(self)
        if managed is not None and managed.state == "done":
            return False  # it has left the schedule; what is left of it is the harness's
    return _real_is_alive(self)


def _trial_name(scheduler: Scheduler, name: str) -> str:
    """Default thread names numbered per trial, in start order: ``Thread-1 (worker)``, and
    ``ThreadPoolExecutor-0_0`` for the first executor's first worker."""
    names = scheduler.names
    match = _DEFAULT_NAME.match(name)
    if match is not None:
        names["Thread"] = names.get("Thread", 0) + 1
        return f"Thread-{names['Thread']}{match.group(2) or ''}"
    match = POOL_NAME.match(name)
    if match is not None:
        key = f"pool-{match.group(2)}"
        if key not in names:
            names[key] = sum(1 for k in names if k.startswith("pool-"))
        return f"{match.group(1)}{names[key]}{match.group(3)}"
    return name


def _submit(self: Any, fn: Any, /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
    future = _real_submit(self, fn, *args, **kwargs)
    _submitted[id(future)] = (future, task_name(getattr(fn, "__qualname__", None) or repr(fn)), self)
    return future


def _work_item_run(self: Any) -> None:
    scheduler = _scheduler
    managed = scheduler.by_ident.get(threading.get_ident()) if scheduler is not None else None
    if managed is not None:
        _running[id(self.future)] = managed
    try:
        _real_work_item_run(self)
    finally:
        _running.pop(id(self.future), None)


def wait_edge(scheduler: Scheduler, managed: Managed) -> tuple[str, Managed | None]:
    """What the blocked thread ``managed`` waits for, in words, and the managed thread that would
    have to act for the wait to end (None: nobody in particular)."""
    target = managed.waits_for
    if isinstance(target, Managed):
        return f"{managed.name} waits in join() for {target.name}", target
    waiting = scheduler.graph.waiting.get(managed.ident)
    if waiting is None:
        return f"{managed.name} waits", None
    future = _future_of(waiting.primitive)
    if future is not None:
        return _future_edge(scheduler, managed, future)
    what = describe_primitive(waiting.primitive)
    lock = waiting.lock
    owner = getattr(lock, "_owner", None) if lock is not None else None
    if owner is not None:
        holder = scheduler.by_ident.get(owner.ident)
        if holder is not None:
            return f"{managed.name} waits for {what} held by {holder.name}", holder
    return f"{managed.name} waits for {what}", None


def _future_of(primitive: Any) -> concurrent.futures.Future[Any] | None:
    for future, _, _ in _submitted.values():
        if getattr(future, "_condition", None) is primitive:
            return future
    return None


def _future_edge(
    scheduler: Scheduler, managed: Managed, future: concurrent.futures.Future[Any]
) -> tuple[str, Managed | None]:
    _, fn, executor = _submitted[id(future)]
    runner = _running.get(id(future))
    if runner is not None:
        return f"{managed.name} waits for the result of {fn}(), which {runner.name} runs", runner
    workers = [m for t in list(getattr(executor, "_threads", ())) if (m := scheduler.managed(t)) is not None]
    pool = pool_name([m.name for m in workers])
    busy = [m for m in workers if m.state != "done"]
    if len(busy) == 1:
        worker = busy[0]
        whose = "itself" if worker is managed else worker.name
        return (
            f"{managed.name} waits for the result of {fn}(), queued on {pool} behind {whose}, its only worker",
            worker,
        )
    return f"{managed.name} waits for the result of {fn}(), queued on {pool}, all of whose workers are busy", None


def describe_deadlock(scheduler: Scheduler, blocked: list[Managed]) -> Deadlock:
    """The deadlock of a frozen schedule: a cycle of waits if there is one — through locks (the
    wait-for graph), joins and futures — else what every blocked thread waits for."""
    graph = scheduler.graph
    for managed in blocked:
        if managed.waits_for is None and graph.has_cycle(managed.ident):
            return graph.declare(managed.ident)
    edges = {m.index: wait_edge(scheduler, m) for m in blocked}
    cycle = _wait_cycle(edges)
    if cycle is not None:
        lines = tuple(f"{edges[i][0]} at {graph.where(scheduler.threads[i].ident)}" for i in cycle)
        graph.aborting = True
        return Deadlock("cycle", " → ".join(edges[i][0] for i in cycle), lines)
    if all(m.waits_for is None for m in blocked):
        return graph.declare(blocked[0].ident)
    lines = tuple(f"{edges[m.index][0]} at {graph.where(m.ident)}" for m in blocked)
    # The threads in join() wait for those on primitives: why these cannot go on is the headline.
    roots = [m for m in blocked if m.waits_for is None]
    reason, unreleased = graph.why(m.ident for m in roots)
    graph.aborting = True
    count = len(blocked)
    if reason:
        joiners = sorted(m.name for m in blocked if m.waits_for is not None)
        verb = "waits" if len(joiners) == 1 else "wait"
        summary = reason + (f" ({and_join(joiners)} {verb} in join() for them)" if joiners else "")
        return Deadlock("stuck", summary, (*lines, *unreleased))
    if len(roots) == 1:
        # One thread on a primitive, the others joining it: what the graph says of that wait (a
        # lock's holder that finished without releasing it, and where it took it) is the headline.
        found = graph.declare(roots[0].ident)
        if found.kind == "stuck" and found.lines:
            joiners = sorted(m.name for m in blocked if m.waits_for is not None)
            verb = "waits" if len(joiners) == 1 else "wait"
            head = found.summary.split(" (the variant body", 1)[0]
            summary = head + (f" ({and_join(joiners)} {verb} in join() for it)" if joiners else "")
            return Deadlock("stuck", summary, (*lines, *found.lines[1:]))
    summary = (
        f"{edges[blocked[0].index][0]}, and no other thread can let it go"
        if count == 1
        else f"all {count} threads wait, and none of them can wake another"
    )
    return Deadlock("stuck", summary, lines)


def in_a_cycle(scheduler: Scheduler, blocked: list[Managed]) -> bool:
    """Whether some of ``blocked`` wait for each other in a cycle (of locks, joins or futures),
    decided without declaring anything: for the threads a body left behind, a cycle is a deadlock,
    anything else a thread left waiting."""
    for managed in blocked:
        if managed.waits_for is None and scheduler.graph.has_cycle(managed.ident):
            return True
    return _wait_cycle({m.index: wait_edge(scheduler, m) for m in blocked}) is not None


def _wait_cycle(edges: dict[int, tuple[str, Managed | None]]) -> list[int] | None:
    """The first cycle of ``edges`` (thread -> the thread its wait needs), as thread indices in
    order from where it was found, or None."""
    for start in edges:
        order: list[int] = []
        index: int | None = start
        while index is not None and index in edges and index not in order:
            order.append(index)
            nxt = edges[index][1]
            index = nxt.index if nxt is not None else None
            if index == start:
                return order
    return None

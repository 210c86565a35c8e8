"""Running one trial in the current process.

`run_trial` applies a plan around a variant (switch interval, forced preemption, instrumented
primitives, forced switches at primitive operations, delays at multiprocessing operations), calls it
with a fresh `Trial`, and decides the outcome from what happened: a process actor that died is
``crashed``, a confirmed deadlock (in the trial or inside a process actor) is ``deadlocked``, an
exception anywhere is ``error``, a broken check is ``failed``, otherwise ``passed``. A hang, or the
death of the worker itself, cannot be seen from inside; the engine, which owns the deadline and
watches the worker process, decides those.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from harness import mp_perturb, primitives
from harness.instrument import Instrumenter
from harness.outcome import Evidence, Outcome
from harness.plan import ActorStart, Plan
from harness.preempt import Preemptor
from harness.scenario import Variant
from harness.trial import Trial
from harness.wait_graph import DeadlockError, ForkedDeadlockError, WaitGraph

__all__ = ["TrialRun", "run_trial"]


@dataclass(frozen=True)
class TrialRun:
    """What a worker reports of a trial it ran to the end."""

    outcome: Outcome
    duration: float
    evidence: Evidence | None
    starts: tuple[tuple[ActorStart, ...], ...]
    switches: int
    lock_order: tuple[dict[str, Any], ...] = field(default=())


_current: Trial | None = None


def _excepthook(args: Any) -> None:
    """Exceptions in threads the variant started itself (not through `Trial`) count as errors."""
    trial = _current
    if trial is not None and args.exc_value is not None:
        name = args.thread.name if args.thread is not None else "a thread"
        trial.record_exception(name, args.exc_value)
    else:
        _original_excepthook(args)


_original_excepthook = threading.excepthook


def run_trial(
    variant: Variant,
    plan: Plan,
    *,
    size: int,
    preemptor: Preemptor,
    instrumenter: Instrumenter | None = None,
    lock_order: dict[Any, bool] | None = None,
    start_method: str = "fork",
    clock: Callable[[], float] = time.perf_counter,
) -> TrialRun:
    """Run ``variant`` once under ``plan`` and judge it.

    Args:
        instrumenter: Swaps in instrumented primitives for the trial (None: the code under test
            gets plain ones, and deadlocks can only end as hangs).
        lock_order: The variant's lock-order edges seen so far in this process; new ones are
            added to it and reported in the result.
        start_method: How the trial's process actors start.
    """
    global _current
    graph = WaitGraph(
        scope=preemptor.scope,
        main=threading.get_ident(),
        preexisting={t.ident for t in threading.enumerate() if t.ident is not None},
    )
    session = primitives.Session(graph=graph, order=lock_order, sync=plan.sync, pause=plan.pause, seed=plan.seed)
    trial = Trial(plan=plan, size=size, graph=graph, start_method=start_method)
    old_interval = sys.getswitchinterval()
    old_hook = threading.excepthook
    _current = trial
    threading.excepthook = _excepthook
    if plan.switch_interval is not None:
        sys.setswitchinterval(plan.switch_interval)
    primitives.activate(session)
    if instrumenter is not None:
        instrumenter.install()
    mp_perturb.activate(plan.sync, plan.delay, seed=plan.seed)
    started = clock()
    try:
        preemptor.start(plan.preempt, pause=plan.pause, seed=plan.seed)
        try:
            variant.fn(trial)
        except (DeadlockError, ForkedDeadlockError) as exc:
            if graph.finding is None:  # raised in another process (a Pool task) and sent back
                trial.record_child_deadlock(None, _deadlock_lines(exc), explained=True)
        except BaseException as exc:  # SystemExit from a variant is a finding, not a reason to stop
            trial.record_exception(f"variant {variant.name}", exc)
        finally:
            switches = preemptor.stop()
    finally:
        duration = clock() - started
        delays = mp_perturb.deactivate()
        if instrumenter is not None:
            instrumenter.uninstall()
        primitives.deactivate()
        sys.setswitchinterval(old_interval)
        threading.excepthook = old_hook
        _current = None
    outcome, evidence = _judge(trial, graph)
    return TrialRun(
        outcome=outcome,
        evidence=evidence,
        duration=duration,
        starts=tuple(trial.starts),
        switches=switches + session.switches + delays,
        lock_order=tuple(session.new_order),
    )


def _deadlock_lines(exc: BaseException) -> list[str]:
    summary = str(exc.args[0]) if exc.args else "deadlocked"
    lines = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], list) else []
    return [summary, *map(str, lines)]


def _judge(trial: Trial, graph: WaitGraph) -> tuple[Outcome, Evidence | None]:
    messages = tuple(trial.failures)
    tracebacks = tuple(trial.errors)
    if trial.crashes:
        return Outcome.CRASHED, Evidence(messages=(*trial.crashes, *messages), tracebacks=tracebacks)
    finding = graph.finding
    if finding is not None:
        return Outcome.DEADLOCKED, Evidence(
            messages=(finding.summary, *messages), tracebacks=tracebacks, wait_for=finding.lines
        )
    if trial.deadlocks:
        first = trial.deadlocks[0]
        return Outcome.DEADLOCKED, Evidence(
            messages=(first[0], *messages), tracebacks=tracebacks, wait_for=tuple(first[1:])
        )
    if tracebacks:
        return Outcome.ERROR, Evidence(messages=messages, tracebacks=tracebacks)
    if messages:
        return Outcome.FAILED, Evidence(messages=messages)
    return Outcome.PASSED, None

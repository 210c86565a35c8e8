"""Running one trial in the current process.

`run_trial` applies a plan around a variant (switch interval, forced preemption, instrumented
primitives, forced switches at primitive operations), calls it with a fresh `Trial`, and decides the
outcome from what happened: a confirmed deadlock is ``deadlocked``, an exception anywhere is
``error``, a broken check is ``failed``, otherwise ``passed``. Hangs and crashes cannot be seen from
inside; the engine, which owns the deadline and watches the worker process, decides those.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from harness import primitives
from harness.instrument import Instrumenter
from harness.outcome import Evidence, Outcome
from harness.plan import ActorStart, Plan
from harness.preempt import Preemptor
from harness.scenario import Variant
from harness.trial import Trial
from harness.wait_graph import WaitGraph

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
    lock_order: dict[int, bool] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> TrialRun:
    """Run ``variant`` once under ``plan`` and judge it.

    Args:
        instrumenter: Swaps in instrumented primitives for the trial (None: the code under test
            gets plain ones, and deadlocks can only end as hangs).
        lock_order: The variant's lock-order edges seen so far in this process; new ones are
            added to it and reported in the result.
    """
    global _current
    graph = WaitGraph(
        scope=preemptor.scope,
        main=threading.get_ident(),
        preexisting={t.ident for t in threading.enumerate() if t.ident is not None},
    )
    session = primitives.Session(graph=graph, order=lock_order, sync=plan.sync, pause=plan.pause, seed=plan.seed)
    trial = Trial(plan=plan, size=size, graph=graph)
    old_interval = sys.getswitchinterval()
    old_hook = threading.excepthook
    _current = trial
    threading.excepthook = _excepthook
    if plan.switch_interval is not None:
        sys.setswitchinterval(plan.switch_interval)
    primitives.activate(session)
    if instrumenter is not None:
        instrumenter.install()
    started = clock()
    try:
        preemptor.start(plan.preempt, pause=plan.pause, seed=plan.seed)
        try:
            variant.fn(trial)
        except BaseException as exc:  # SystemExit from a variant is a finding, not a reason to stop
            trial.record_exception(f"variant {variant.name}", exc)
        finally:
            switches = preemptor.stop()
    finally:
        duration = clock() - started
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
        switches=switches + session.switches,
        lock_order=tuple(session.new_order),
    )


def _judge(trial: Trial, graph: WaitGraph) -> tuple[Outcome, Evidence | None]:
    finding = graph.finding
    if finding is not None:
        return Outcome.DEADLOCKED, Evidence(
            messages=(finding.summary, *trial.failures),
            tracebacks=tuple(trial.errors),
            wait_for=finding.lines,
        )
    if trial.errors:
        return Outcome.ERROR, Evidence(messages=tuple(trial.failures), tracebacks=tuple(trial.errors))
    if trial.failures:
        return Outcome.FAILED, Evidence(messages=tuple(trial.failures))
    return Outcome.PASSED, None

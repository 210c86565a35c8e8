"""Running one trial in the current process.

`run_trial` applies a plan around a variant (switch interval, forced preemption), calls it with a
fresh `Trial`, and decides the outcome from what happened: an exception anywhere is ``error``, a
broken check is ``failed``, otherwise ``passed``. Hangs and crashes cannot be seen from inside; the
engine, which owns the deadline and watches the worker process, decides those.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from harness.outcome import Evidence, Outcome
from harness.plan import ActorStart, Plan
from harness.preempt import Preemptor
from harness.scenario import Variant
from harness.trial import Trial

__all__ = ["TrialRun", "run_trial"]


@dataclass(frozen=True)
class TrialRun:
    """What a worker reports of a trial it ran to the end."""

    outcome: Outcome
    duration: float
    evidence: Evidence | None
    starts: tuple[tuple[ActorStart, ...], ...]
    switches: int


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
    clock: Callable[[], float] = time.perf_counter,
) -> TrialRun:
    """Run ``variant`` once under ``plan`` and judge it."""
    global _current
    trial = Trial(plan=plan, size=size)
    old_interval = sys.getswitchinterval()
    old_hook = threading.excepthook
    _current = trial
    threading.excepthook = _excepthook
    if plan.switch_interval is not None:
        sys.setswitchinterval(plan.switch_interval)
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
        sys.setswitchinterval(old_interval)
        threading.excepthook = old_hook
        _current = None
    if trial.errors:
        outcome = Outcome.ERROR
    elif trial.failures:
        outcome = Outcome.FAILED
    else:
        outcome = Outcome.PASSED
    evidence = None
    if outcome is not Outcome.PASSED:
        evidence = Evidence(
            messages=tuple(trial.failures),
            tracebacks=tuple(trial.errors),
        )
    return TrialRun(outcome, duration, evidence, tuple(trial.starts), switches)

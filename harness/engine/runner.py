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

import contextlib
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from harness.actors import ActorPool
from harness.controlled.schedule import Decision, Schedule
from harness.controlled.scheduler import Scheduler, Step
from harness.controlled.session import Control, controlled
from harness.detect import primitives
from harness.detect.findings import Findings
from harness.detect.instrument import Instrumenter
from harness.detect.wait_graph import DeadlockError, ForkedDeadlockError, WaitGraph, forget_ended_records
from harness.engine.beacon import Phase
from harness.perturb import mp_delays, pause
from harness.perturb.plan import ActorStart, Plan
from harness.perturb.preempt import Preemptor
from harness.results.outcome import Evidence, Outcome
from harness.scenario import Variant
from harness.trial import Trial

if TYPE_CHECKING:
    from harness.controlled.coroutines import TaskScheduler

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
    #: Whether the plan's ``delay`` had anything to act on: a multiprocessing operation or a
    #: process actor (False: a trial of threads only, where the knob did nothing).
    delay_used: bool = True
    #: Controlled mode: the executed schedule, its length, its choice points (when exploring)
    #: and every step (thread, code, offset or -line, what).
    schedule: str | None = None
    steps: int = 0
    progress: float = 0.0
    preemptions: int = 0
    decisions: tuple[Decision, ...] = ()
    trace: tuple[Step, ...] = ()
    #: Controlled mode: the choice points the run reached, and, replaying a schedule, the first
    #: of its choice points whose thread could not run there (None: every one was honoured).
    choices: int = 0
    diverged: int | None = None
    #: Controlled mode: the scheduled threads' names, by the number a schedule gives them.
    threads: tuple[str, ...] = ()
    #: Threads the code under test started and stress ended: unwound by a deadlock's abort
    #: (`WaitGraph.unwound`), or left running at a controlled schedule's end (`Scheduler.abandoned`).
    #: The worker is replaced, as the code's modules may count on them.
    abandoned: tuple[str, ...] = ()
    #: Controlled mode: why the schedule did not fix what happened (the scheduler let go of the
    #: threads: a process started, a signal timer armed, a wait it cannot see), or None. A
    #: failure of such a schedule is real, but running the schedule again repeats it only by chance.
    unscheduled: str | None = None


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
    lock_order: dict[Any, set[str]] | None = None,
    start_method: str = "fork",
    actors: int | None = None,
    control: Control | None = None,
    on_failure: Callable[[str, BaseException | None], None] | None = None,
    phases: Callable[[Phase], None] | None = None,
    findings: Findings | None = None,
    clock: Callable[[], float] = time.perf_counter,
    pool: ActorPool | None = None,
) -> TrialRun:
    """Run ``variant`` once under ``plan`` and judge it.

    Args:
        instrumenter: Swaps in instrumented primitives for the trial (None: the code under test
            gets plain ones, and deadlocks can only end as hangs).
        lock_order: The variant's lock-order edges seen so far in this process; new ones are
            added to it and reported in the result.
        start_method: How the trial's process actors start.
        actors: Actors per trial for variants that let it vary (``trial.actors``).
        control: Controlled mode: the schedule to run (None: stress mode, under ``plan``).
        on_failure: Called where a check fails or an exception is recorded (`Trial.on_failure`).
        phases: Told when the variant's body starts (`Phase.BODY`) and ends (`Phase.AFTER`): the
            worker's beacon, so that the trial's deadline counts the body alone.
        findings: Where processes forked during the trial report the deadlocks they find (emptied
            here before the trial).
        pool: Parked actor threads to run the trial's thread actors on (None: a new thread per
            actor; the plan's ``fresh_threads`` asks for that too).
    """
    global _current
    forget_ended_records()
    graph = WaitGraph(
        scope=preemptor.scope,
        main=threading.get_ident(),
        preexisting={t.ident for t in threading.enumerate() if t.ident is not None},
    )
    if findings is not None:
        findings.reset()
    session = primitives.Session(
        graph=graph, order=lock_order, sync=plan.sync, pause=plan.pause, seed=plan.seed, findings=findings
    )
    trial = Trial(
        plan=plan,
        size=size,
        graph=graph,
        start_method=start_method,
        actors=actors,
        on_failure=on_failure,
        findings=findings,
        pool=pool,
    )
    old_interval = sys.getswitchinterval()
    old_hook = threading.excepthook
    _current = trial
    threading.excepthook = _excepthook
    if plan.switch_interval is not None and control is None:
        sys.setswitchinterval(plan.switch_interval)
    # A coroutine trial's controlled schedule is its tasks' (`TaskScheduler`): threading primitives
    # there are stress mode's, with the plan's knobs (off).
    primitives.activate(session, controlled=control is not None and not variant.is_coroutine)
    if instrumenter is not None:
        instrumenter.install()
    if control is None:
        mp_delays.activate(plan.sync, plan.delay, seed=plan.seed)
        pause.track(True)
    scheduler: Scheduler | TaskScheduler | None = None
    stepped_out = 0
    started = clock()
    try:
        with contextlib.ExitStack() as stack:
            if control is None:
                preemptor.start(plan.preempt, pause=plan.pause, seed=plan.seed)
                stack.callback(preemptor.stop)
            elif variant.is_coroutine:
                from harness.controlled.coroutines import TaskScheduler  # imports asyncio

                scheduler = TaskScheduler(
                    control.make_strategy(), step_limit=control.step_limit, record_decisions=control.record_decisions
                )
            else:
                scheduler = stack.enter_context(controlled(control, session=session, graph=graph, preemptor=preemptor))
                trial.scheduler = scheduler
            try:
                if phases is not None:
                    phases(Phase.BODY)
                if variant.is_coroutine:
                    stepped_out = _run_coroutines(variant, trial, scheduler, preemptor.scope)
                else:
                    variant.fn(trial)
            except (DeadlockError, ForkedDeadlockError) as exc:
                unexplained = scheduler is None or (
                    scheduler.finding is None and scheduler.livelock is None and scheduler.too_long is None
                )
                if graph.finding is None and unexplained:
                    # raised in another process (a Pool task) and sent back
                    trial.record_child_deadlock(None, _deadlock_lines(exc), explained=True)
            except BaseException as exc:  # SystemExit from a variant is a finding, not a reason to stop
                trial.record_exception(f"variant {variant.name}", exc)
            switches = preemptor.switches
    finally:
        duration = clock() - started
        if phases is not None:
            phases(Phase.AFTER)
        delays = mp_delays.deactivate()
        delay_touched = mp_delays.touched()
        pause.track(False)
        if instrumenter is not None:
            instrumenter.uninstall()
        primitives.deactivate()
        sys.setswitchinterval(old_interval)
        threading.excepthook = old_hook
        _current = None
    if findings is not None and graph.finding is None and not trial.deadlocks:
        for summary, lines in findings.read()[:1]:
            trial.deadlocks.append([summary, *lines])  # found in a process the code under test forked
    outcome, evidence = _judge(trial, graph, scheduler)
    if scheduler is None:
        return TrialRun(
            outcome=outcome,
            evidence=evidence,
            duration=duration,
            starts=tuple(trial.starts),
            switches=switches + session.switches + delays + stepped_out,
            lock_order=tuple(session.new_order),
            delay_used=delays > 0 or delay_touched or trial.ran_processes,
            abandoned=tuple(graph.unwound),
        )
    return TrialRun(
        outcome=outcome,
        evidence=evidence,
        duration=duration,
        starts=(),
        switches=scheduler.switches,
        lock_order=tuple(session.new_order),
        schedule=str(Schedule(tuple(scheduler.forced))),
        steps=scheduler.step,
        progress=scheduler.progress,
        preemptions=scheduler.preemptions,
        decisions=tuple(scheduler.decisions),
        trace=tuple(scheduler.steps),
        choices=scheduler.choices,
        diverged=getattr(scheduler.strategy, "diverged", None),
        threads=tuple(m.name for m in sorted(scheduler.threads, key=lambda m: m.index)),  # type: ignore[attr-defined]
        abandoned=tuple(scheduler.abandoned),
        unscheduled=scheduler.unsupported,
    )


def _run_coroutines(variant: Variant, trial: Trial, scheduler: Any, scope: Any) -> int:
    """Run a coroutine variant's body on its event loop (`harness.detect.aio`): stress mode's, or,
    under a `TaskScheduler`, controlled mode's (`harness.controlled.coroutines`)."""
    from harness.detect import aio  # asyncio is imported by coroutine trials alone

    if scheduler is None:
        return aio.run_body(variant.fn, trial, may_suspend=variant.may_suspend)
    from harness.controlled.coroutines import ControlledLoop

    return aio.run_body(
        variant.fn, trial, lambda: ControlledLoop(trial, scheduler, scope, may_suspend=variant.may_suspend)
    )


def _deadlock_lines(exc: BaseException) -> list[str]:
    summary = str(exc.args[0]) if exc.args else "deadlocked"
    lines = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], list) else []
    return [summary, *map(str, lines)]


def _judge(
    trial: Trial, graph: WaitGraph, scheduler: Scheduler | TaskScheduler | None = None
) -> tuple[Outcome, Evidence | None]:
    messages = tuple(trial.failures)
    tracebacks = tuple(trial.errors)
    if trial.crashes:
        return Outcome.CRASHED, Evidence(messages=(*trial.crashes, *messages), tracebacks=tracebacks)
    if scheduler is not None and scheduler.livelock is not None:
        summary = f"livelock: the threads were still going after {scheduler.step_limit} scheduling steps"
        return Outcome.HUNG, Evidence(
            messages=(summary, *messages), tracebacks=tracebacks, blocked_at=scheduler.livelock
        )
    # A controlled schedule's deadlock is the scheduler's finding; once it let go of the threads
    # (a process, a signal timer), their waits are stress mode's, judged by the graph.
    finding = scheduler.finding if scheduler is not None and scheduler.finding is not None else graph.finding
    if finding is not None:
        # An exception an actor raised first (leaving the others waiting for it) comes right after.
        return Outcome.DEADLOCKED, Evidence(
            messages=(finding.summary, *trial.headlines[:1], *messages), tracebacks=tracebacks, wait_for=finding.lines
        )
    if trial.deadlocks:
        first = trial.deadlocks[0]
        return Outcome.DEADLOCKED, Evidence(
            messages=(first[0], *trial.headlines[:1], *messages), tracebacks=tracebacks, wait_for=tuple(first[1:])
        )
    if trial.stalls:
        headline, stack = trial.stalls[0]
        return Outcome.STALLED, Evidence(
            messages=(headline, *trial.headlines[:1], *messages), tracebacks=(*([stack] if stack else []), *tracebacks)
        )
    if scheduler is not None and scheduler.left_running:
        names = ", ".join(scheduler.left_running[:5])
        left = f"the variant left {len(scheduler.left_running)} thread(s) blocked at its end ({names})"
        messages = (*messages, left)
        tracebacks = tracebacks or (left,)
    if tracebacks:
        # The exception broke the trial: it is the headline, before any check the body made after.
        return Outcome.ERROR, Evidence(messages=(*trial.headlines[:1], *messages), tracebacks=tracebacks)
    if messages:
        return Outcome.FAILED, Evidence(messages=messages)
    if scheduler is not None and scheduler.too_long is not None:
        return Outcome.UNDECIDED, Evidence(messages=(scheduler.too_long,))
    if scheduler is not None and scheduler.unsupported is not None:
        return Outcome.UNSUPPORTED, Evidence(
            messages=(f"{scheduler.unsupported}: this schedule was not checked; run the variant in stress mode",)
        )
    return Outcome.PASSED, None

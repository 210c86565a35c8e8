"""The driver, the parent's side of a run: plans trials, feeds workers, owns deadlines, records outcomes.

The parent process runs a single-threaded event loop over the workers' pipes and process sentinels
(no thread in the parent, so forking a replacement worker is always safe). Each worker has a queue of
trials sent in batches, deep enough for `QUEUED` seconds of work (`PIPELINE` trials at least, `DEPTH`
at most), so it never waits for the parent between trials. Workers append results to their spools
(`harness.engine.spool`) instead of sending a message per trial; the parent reads them at least every
`POLL` seconds, writes them to ``results.jsonl`` and tells the observer (the terminal display, say).

Outcomes the worker cannot see are decided here: a trial still running at its deadline is ``hung``
(the worker dumps its threads and is replaced), a worker that dies is ``crashed`` with its exit status.
Trials queued behind either go to another worker.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import math
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any, Protocol

from harness.config import RunConfig
from harness.controlled.explore import Explorer
from harness.controlled.schedule import Decision, ScheduleRecord
from harness.controlled.session import Control, sampled_control
from harness.detect.thread_dump import blocked_at
from harness.engine import activity, proc_tree
from harness.engine.beacon import Phase
from harness.engine.deadline import AdaptiveTimeout, Verdict, Watch
from harness.engine.janitor import Janitor
from harness.engine.worker import Task, WorkerHandle
from harness.errors import InternalError, OutputError, ScenarioError, Terminated
from harness.perturb import gil
from harness.perturb.knobs import Perturbation
from harness.perturb.plan import ActorStart, make_plan
from harness.results.outcome import Evidence, Outcome, TrialResult
from harness.results.run_dir import RESULTS, RUN, SUMMARY, ResultsWriter, make_run_dir, write_json
from harness.results.stats import Exploration, VariantStats
from harness.results.summary import RunInfo, RunReport, VariantInfo, python_info, ranked
from harness.scenario import Variant
from harness.scope import Scope

__all__ = ["RunObserver", "run", "scope_for", "trial_shape"]

PIPELINE = 2
#: The most trials queued on one worker.
DEPTH = 256
#: Seconds of work a worker's queue should hold (by the recent trials' durations).
QUEUED = 0.1
#: Seconds between reads of the workers' spools while trials are in flight.
POLL = 0.01
#: Seconds a trial costs besides its body (stress's own work in the worker), for the queue depth.
OVERHEAD = 0.0002
#: Seconds the trials in flight get to finish after a first Ctrl-C or SIGTERM.
STOP_GRACE = 0.5
#: How many times a trial is run again when its worker was not in it, or left no evidence, before
#: it is recorded as undecided.
ATTEMPTS = 3
#: Extra seconds a worker gets when it says it is shrinking a failing schedule.
SHRINK_ALLOWANCE = 60.0
TICK = 0.05
_END: Any = object()


class RunObserver(Protocol):
    """Hears of a run as it happens (the terminal display implements this)."""

    def started(self, info: RunInfo) -> None: ...

    def result(self, result: TrialResult, stats: VariantStats) -> None: ...

    def tick(self) -> None: ...

    def finished(self, report: RunReport) -> None: ...


class _NoObserver:
    def started(self, info: RunInfo) -> None:
        pass

    def result(self, result: TrialResult, stats: VariantStats) -> None:
        pass

    def tick(self) -> None:
        pass

    def finished(self, report: RunReport) -> None:
        pass


def retire_helpers(pids: Iterable[int], *, grace: float = 2.0) -> None:
    """Wait for retired workers' multiprocessing helpers (which remove the semaphores and shared
    memory they track once they see their users gone) to exit by themselves; stop any that won't.
    Polls only these pids: no scan of the machine's processes, so a stop stays quick under load."""
    deadline = time.monotonic() + grace
    remaining = [pid for pid in pids if pid > 0 and proc_tree.alive(pid)]
    while remaining and time.monotonic() < deadline:
        time.sleep(0.01)
        remaining = [pid for pid in remaining if proc_tree.alive(pid)]
    # A pid may have been reused in the meantime: only a helper still is one.
    proc_tree.kill_all(pid for pid in remaining if proc_tree.is_helper(pid))


def _without_parked(waits: tuple[str, ...], parked: int) -> tuple[str, ...]:
    """What a hang's evidence says the trial's threads wait in: not the worker's parked actor
    threads (each waits, untimed, in a lock for a later trial; it changes nothing in the verdict)."""
    kept = list(waits)
    for _ in range(parked):
        if activity.LOCK_WAIT not in kept:
            break
        kept.remove(activity.LOCK_WAIT)
    return tuple(kept)


def _without(data: dict[str, Any] | None, *keys: str) -> dict[str, Any] | None:
    if data is None:
        return None
    return {k: v for k, v in data.items() if k not in keys}


def trial_shape(variant: Variant, config: RunConfig) -> tuple[int, int | None]:
    """The size and the number of actors ``variant``'s trials get under ``config``. Controlled mode
    explores small instances (every extra step multiplies the schedules): the scenario's
    controlled size and actors (1 and 2 unless it says otherwise)."""
    if config.controlled:
        return config.size or variant.controlled_size, config.actors or (
            variant.controlled_actors if variant.actors else None
        )
    return config.size or variant.size, config.actors or variant.actors


def scope_for(variants: Sequence[Variant]) -> Scope:
    """Default injection scope: the files that define the variants being run."""
    return Scope(files=[f for v in variants for f in v.files])


def run(
    variants: Sequence[Variant],
    config: RunConfig,
    *,
    reports: Path = Path("reports"),
    out: Path | None = None,
    observer: RunObserver | None = None,
    scope: Scope | None = None,
    command: str = "",
    targets: dict[str, str] | None = None,
    clock: Callable[[], float] = time.monotonic,
    now: Callable[[], _dt.datetime] = lambda: _dt.datetime.now(_dt.UTC),
    noted_signal: Callable[[], int | None] = lambda: None,
) -> RunReport:
    """Run every variant ``config.iterations`` times and return the ranked report.

    Args:
        variants: What to run (see `harness.Registry.select`).
        config: The validated run settings.
        reports: Folder under which the run folder is created.
        out: Exact run folder to use instead (``--out``).
        observer: Told of each result as it arrives.
        scope: Code that gets forced preemption; defaults to the variants' own files.
        command: The command line, recorded for the report.
        targets: For each scenario, what to type after ``stress run`` to reach it again (a file
            path for a user's scenario); defaults to the scenario's name.
        clock: Monotonic seconds, for deadlines (tests inject a fake one).
        now: Wall-clock time, for the run id and timestamps.
        noted_signal: A Ctrl-C (``SIGINT``) or ``SIGTERM`` the caller's own handler received before
            the engine's were installed, if any: the run stops as if it came at the first tick
            (no trial is started; the report says which signal stopped it).
    """
    if not variants:
        raise InternalError("run() needs at least one variant")
    engine = _Engine(
        variants,
        config,
        reports=reports,
        out=out,
        observer=observer or _NoObserver(),
        scope=scope or scope_for(variants),
        command=command,
        targets=targets or {},
        clock=clock,
        now=now,
    )
    try:
        return engine.run(noted_signal)
    except ScenarioError:
        # The scenario cannot be set up in a worker (its import fails there): no trial ran, and
        # the run folder would hold nothing but the run's settings. Only stress's own files go.
        if not any(stats.trials for stats in engine.stats.values()):
            folder = engine.info.run_dir
            for name in (RUN, RESULTS):
                with contextlib.suppress(OSError):
                    (folder / name).unlink()
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when nothing else is in it
        raise


def open_run(
    variants: Sequence[Variant],
    config: RunConfig,
    *,
    reports: Path,
    out: Path | None,
    scope: Scope,
    command: str,
    targets: dict[str, str],
    started: _dt.datetime,
) -> RunInfo:
    """Make a run's folder (``out``, or a new one under ``reports`` named after the time and the
    scenarios) and describe the run; raises `OutputError` when the folder cannot be made."""
    names = list(dict.fromkeys(v.scenario for v in variants))
    run_id = f"{started:%Y%m%d-%H%M%S}-{'+'.join(names)[:60]}"
    run_dir = make_run_dir(out if out is not None else reports, run_id, exact=out is not None)
    return RunInfo(
        run_id=run_dir.name,
        run_dir=run_dir,
        config=config,
        variants=tuple(VariantInfo(v.key, v.expect.value, v.description) for v in variants),
        command=command,
        started=started.isoformat(timespec="seconds"),
        python=python_info(),
        jobs=min(config.jobs, config.iterations * len(variants)),
        scenarios={v.scenario: v.scenario_description for v in variants},
        targets={v.scenario: targets.get(v.scenario, v.scenario) for v in variants},
        scope=scope.to_dict(),
        cwd=os.getcwd(),
    )


class _Engine:
    def __init__(
        self,
        variants: Sequence[Variant],
        config: RunConfig,
        *,
        reports: Path,
        out: Path | None,
        observer: RunObserver,
        scope: Scope,
        command: str,
        targets: dict[str, str],
        clock: Callable[[], float],
        now: Callable[[], _dt.datetime],
    ) -> None:
        self.variants = {v.key: v for v in variants}
        self.config = config
        self.observer = observer
        self.scope = scope
        self.clock = clock
        self.now = now
        self.info = open_run(
            variants, config, reports=reports, out=out, scope=scope, command=command, targets=targets, started=now()
        )
        self.stats = {v.key: VariantStats(v.key, v.expect, v.description) for v in variants}
        self.timeouts: dict[str, AdaptiveTimeout] = {}
        for v in variants:
            self.timeouts.setdefault(v.scenario, AdaptiveTimeout(fixed=config.timeout))
        shapes = {v.key: trial_shape(v, config) for v in variants}
        self.sizes = {key: size for key, (size, _) in shapes.items()}
        self.actors = {key: actors for key, (_, actors) in shapes.items()}
        #: Controlled mode: the longest schedule seen per variant, in progress (PCT's estimate).
        self.lengths: dict[str, float] = {}
        #: Controlled mode with --max-preemptions: each variant's exhaustive search.
        self.explorers: dict[str, Explorer] | None = None
        if config.controlled and config.max_preemptions is not None:
            self.explorers = {v.key: Explorer(config.max_preemptions, config.iterations) for v in variants}
        self.tasks: Iterator[Task | None] = self._plan_tasks()
        self.requeued: deque[Task] = deque()
        self.exhausted = False
        self.workers: list[WorkerHandle] = []
        #: A worker forked and set up in advance, to take a hung or dead worker's place at once.
        self.spare: WorkerHandle | None = None
        #: Workers taken out of the pool and not yet buried (their descriptors stay out of new ones).
        self.leaving: list[WorkerHandle] = []
        #: Process groups of workers that were replaced: their multiprocessing helpers exit once
        #: every process holding their pipes is gone; the run makes sure they did.
        self.retired: set[int] = set()
        self.done = 0
        #: Recent trials' body durations, averaged (seconds; for the depth of the workers' queues).
        self.recent = 0.0
        #: Controlled mode: variants with an unsupported schedule, whose other schedules are skipped
        #: (they would block where the scheduler cannot see as well), and how many were.
        self.unsupported: set[str] = set()
        self.skipped = 0
        #: Installed packages the code under test called, whose code ran with no switch inside.
        self.atomic: set[str] = set()
        self.stopping = False
        #: The signal that stopped the run ("SIGINT", "SIGTERM"), if one did.
        self.stopped_by: str | None = None
        #: The run is cleaning up: a signal is noted (the run is reported as stopped by it), no more.
        self.cleaning = False
        #: Why the run folder could not be written to (a full disk), if it could not.
        self.output_error: OutputError | None = None
        #: Cleans up after the workers if this process is killed before it can.
        self.janitor: Janitor | None = None
        #: The CPUs this process may run on, for pinning workers (empty: not on this platform), from
        #: one that depends on the process id: two runs side by side do not start on the same CPU.
        cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        turn = os.getpid() % len(cpus) if cpus else 0
        self.cpus: list[int] = cpus[turn:] + cpus[:turn]

    # -- the run ---------------------------------------------------------------------------------

    def run(self, noted_signal: Callable[[], int | None] = lambda: None) -> RunReport:
        write_json(self.info.run_dir / RUN, self.info.to_dict())
        self.writer = ResultsWriter(self.info.run_dir, clock=self.clock)
        start = self.clock()
        self.observer.started(self.info)
        # The signal handlers stay until the summary is written: a signal in the clean-up must
        # not take away the report of a run that is as good as done.
        with self._interruptible():
            if (signum := noted_signal()) is not None:  # it came before our handlers did
                self.stopping = True
                self.stopped_by = signal.Signals(signum).name
            try:
                # Every worker forked from here inherits the scope's answers for the modules loaded.
                self.scope.decide_all(getattr(m, "__file__", None) for m in list(sys.modules.values()))
                self.janitor = Janitor()
                for _ in range(self.info.jobs):
                    if self.stopping:  # interrupted while starting the workers
                        break
                    self._enlist(self._spawn())
                self._loop()
                if self.stopping:
                    self._wind_down()
            except (KeyboardInterrupt, Terminated) as exc:
                # A second signal: stop at once (the workers are killed below, what ran is written).
                self.stopping = True
                self.stopped_by = self.stopped_by or ("SIGTERM" if isinstance(exc, Terminated) else "SIGINT")
            finally:
                self.cleaning = True  # from here, a signal is noted, never raised
                if self.stopping:
                    self._abandon_in_flight()
                self._stop_workers()
                self._close_writer()
                if self.janitor is not None:
                    self.janitor.close()
            report = self._report(self.clock() - start)
        self.observer.finished(report)
        return report

    def _report(self, wall: float) -> RunReport:
        interrupted = self.stopping
        if self.explorers is not None:
            for key, explorer in self.explorers.items():
                self.stats[key].exploration = Exploration(explorer.budget, explorer.finished, explorer.complete)
        report = RunReport(
            info=self.info,
            variants=ranked([s.summary() for s in self.stats.values()]),
            finished=self.now().isoformat(timespec="seconds"),
            wall=wall,
            trials=self.done,
            complete=self._complete(interrupted),
            interrupted=interrupted and self.output_error is None,
            stopped_by=self.stopped_by,
            output_error=str(self.output_error) if self.output_error is not None else None,
            atomic=tuple(sorted(self.atomic)),
        )
        try:
            write_json(self.info.run_dir / SUMMARY, report.to_dict())
        except OutputError as exc:
            if self.output_error is None:
                report = replace(report, output_error=str(exc))
        return report

    def _wind_down(self) -> None:
        """After a first Ctrl-C or SIGTERM: give the trials in flight `STOP_GRACE` to finish (their
        results count), then stop, whatever they do; `_abandon_in_flight` records the rest."""
        waiting = {w: w.pending[0].ticket for w in self.workers if w.pending}
        deadline = self.clock() + STOP_GRACE
        while waiting and self.clock() < deadline:
            wait([w.conn for w in waiting], timeout=min(POLL, max(0.0, deadline - self.clock())))
            for worker in list(waiting):
                if worker in self.workers:
                    self._drain(worker, self.clock())
                if worker not in self.workers or not worker.pending or worker.pending[0].ticket != waiting[worker]:
                    del waiting[worker]
                    worker.freeze()  # it finished: it must not start what was queued behind

    def _abandon_in_flight(self) -> None:
        """The trials still running when the run stops are recorded as undecided: neither a pass
        nor a failure, but the report says they were cut short."""
        now = self.clock()
        why = f"stopped by {self.stopped_by}" if self.stopped_by else "stopped"
        for worker in self.workers:
            worker.freeze()
            watch = self._watch(worker)
            if watch is not None:
                self._follow(worker, watch)
            head = self._take_head(worker)
            if head is not None and head[1].started is not None and head[1].ended is None:
                self._record_death(*head, now, Outcome.UNDECIDED, message=f"the run was {why} while this trial ran")

    def _cannot_write(self, error: OutputError) -> None:
        """The run folder cannot take more (a full disk): stop the run; what is on disk stays whole."""
        self.output_error = error
        self.stopping = True

    def _close_writer(self) -> None:
        try:
            self.writer.close()
        except OutputError as exc:
            if self.output_error is None:
                self.output_error = exc

    def _complete(self, interrupted: bool) -> bool:
        if self.explorers is not None:
            return not interrupted and all(e.complete for e in self.explorers.values())
        return self.done + self.skipped == self.info.total_trials

    def _plan_tasks(self) -> Iterator[Task | None]:
        config = self.config
        if self.explorers is not None:
            yield from self._exploration_tasks(self.explorers)
            return
        for index, value in enumerate(config.sweep_values):
            # A controlled trial's only randomness is its schedule's and the trial's own rng; its
            # actors are new threads the scheduler starts, whatever the setting.
            perturbation = (
                Perturbation.none().with_(fresh_threads=True) if config.controlled else config.perturbation_for(value)
            )
            for number in range(config.iterations):
                trial = config.trial if config.trial is not None else number
                plan = make_plan(perturbation, seed=config.seed, trial=trial)
                for key in self.variants:
                    if key in self.unsupported:
                        self.skipped += 1
                        continue
                    control = self._control(key, number, plan.seed) if config.controlled else None
                    yield Task(
                        index * config.iterations + number,
                        key,
                        plan,
                        self.sizes[key],
                        value,
                        actors=self.actors[key],
                        control=control,
                    )

    def _control(self, key: str, number: int, seed: int) -> Control:
        return sampled_control(self.config, number, seed, self.lengths.get(key, Control.length))

    def _exploration_tasks(self, explorers: dict[str, Explorer]) -> Iterator[Task | None]:
        """Round-robin over the variants' searches; None when every search waits for results."""
        config = self.config
        plan = make_plan(Perturbation.none(), seed=config.seed, trial=0)
        while not all(explorer.done() for explorer in explorers.values()):
            offered = False
            for key, explorer in explorers.items():
                prefix = explorer.next()
                if prefix is None:
                    continue
                offered = True
                number = explorer.started - 1
                control = Control(
                    "forced",
                    seed=plan.seed,
                    forced=prefix,
                    record_decisions=True,
                    granularity=config.granularity,
                    step_limit=config.step_limit,
                )
                yield Task(
                    number, key, replace(plan, trial=number), self.sizes[key], actors=self.actors[key], control=control
                )
            if not offered:
                yield None

    def _next_task(self) -> Task | None:
        if self.requeued:
            return self.requeued.popleft()
        if self.exhausted:
            return None
        task = next(self.tasks, _END)
        if task is _END:
            self.exhausted = True
            return None
        return task

    def _work_left(self) -> bool:
        return bool(self.requeued) or not self.exhausted or any(w.pending for w in self.workers)

    @contextlib.contextmanager
    def _interruptible(self) -> Iterator[None]:
        """First Ctrl-C or SIGTERM (what a CI job's timeout sends): stop at the next tick, end the
        trials in flight and report what ran. A second one: stop at once."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def on_signal(signum: int, frame: object) -> None:
            if self.stopping and not self.cleaning:
                raise Terminated if signum == signal.SIGTERM else KeyboardInterrupt
            self.stopping = True
            self.stopped_by = self.stopped_by or signal.Signals(signum).name

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        # A trial's code may signal its parent's parent by mistake (os.kill(os.getppid(), ...) from
        # a process actor): the signals nobody gave a meaning here must not end the run.
        for sig in (signal.SIGUSR1, signal.SIGUSR2):
            if signal.getsignal(sig) == signal.SIG_DFL:
                previous[sig] = signal.signal(sig, signal.SIG_IGN)
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _loop(self) -> None:
        while not self.stopping:
            self._dispatch()
            if not self._work_left():
                break
            now = self.clock()
            watches = [w for w in map(self._watch, self.workers) if w is not None]
            wake = min((w.due() for w in watches), default=now + TICK)
            period = POLL if any(w.pending for w in self.workers) else TICK
            handles: list[Any] = [w.conn for w in self.workers] + [w.sentinel for w in self.workers]
            ready = set(wait(handles, timeout=max(0.0, min(wake - now, period))))
            now = self.clock()
            for worker in list(self.workers):
                if worker.conn in ready or worker.pending:
                    self._drain(worker, now)
                if worker in self.workers and worker.sentinel in ready:
                    self._lost(worker, now)
            self._check_deadlines(self.clock())
            if self.output_error is None:
                try:
                    self.writer.tick()
                except OutputError as exc:
                    self._cannot_write(exc)
            self.observer.tick()

    def _depth(self) -> int:
        """How many trials a worker's queue should hold: `QUEUED` seconds of recent trials."""
        if not self.recent:
            return PIPELINE
        return max(PIPELINE, min(DEPTH, int(QUEUED / (self.recent + OVERHEAD))))

    def _dispatch(self) -> None:
        now = self.clock()
        depth = self._depth()
        for worker in self.workers:
            room = depth - len(worker.pending)
            # Refill in batches, once a quarter of the queue is free (or a worker has nothing
            # queued). Pending counts the trials whose results are not read yet (up to a `POLL`
            # of them): refilled only at half empty, a worker of tiny trials ran dry once a batch
            # and waited ~1.5 ms for the next, 5 % of its time.
            if not worker.alive or room <= 0 or (worker.pending and room < max(1, depth // 4)):
                continue
            batch: list[Task] = []
            while len(batch) < room:
                task = self._next_task()
                if task is None:
                    break
                batch.append(task)
            if not batch:
                return
            was_idle = not worker.pending
            try:
                worker.send(batch)
            except OSError:
                # The worker died since we last looked; its sentinel will say so and
                # `_lost` replaces it. The tasks go to whoever is free next.
                self.requeued.extendleft(reversed(batch))
                worker.alive = False
                continue
            if was_idle:
                self._start_head(worker, now)

    def _start_head(self, worker: WorkerHandle, now: float) -> None:
        # Its watch is made when the driver first looks at deadlines (`_watch`): most trials are
        # over long before that, and a run finishes thousands of them a second.
        worker.head_since = now
        worker.watch = None

    def _watch(self, worker: WorkerHandle) -> Watch | None:
        """The deadline of the trial at the head of ``worker``'s queue (None: nothing queued)."""
        if worker.watch is None and worker.pending:
            task = worker.pending[0]
            policy = self.timeouts[task.variant.partition("/")[0]]
            worker.watch = Watch(
                timeout=policy.current(task.variant), dispatched=worker.head_since, fixed=policy.fixed is not None
            )
        return worker.watch

    # -- what workers report ---------------------------------------------------------------------

    def _drain(self, worker: WorkerHandle, now: float) -> None:
        # The pipe first, then the spool: a worker appends a trial's result before it says anything
        # about a later trial, so every result a message follows is read with it.
        messages = worker.receive()
        for record in worker.results.read():
            self._finished(worker, record, now)
        for message in messages:
            if message[0] == "internal":
                raise InternalError(f"a worker failed outside any trial:\n{message[1]}")
            if message[0] == "import":
                raise ScenarioError(message[1])
            if message[0] == "retire":
                # The last trial left threads behind that only a fresh process gets rid of.
                self._replace(worker)
                return
            if message[0] == "atomic":
                self.atomic.update(message[1])
            shrinking = message[0] == "shrinking"
            watch = self._watch(worker) if shrinking else None
            if watch is not None and worker.pending[0].ticket == message[1]:
                # The worker shrinks a failing schedule before reporting it: stress's own work.
                watch.allowance += SHRINK_ALLOWANCE

    def _finished(self, worker: WorkerHandle, record: tuple[Any, ...], now: float) -> None:
        """Record a trial the worker finished (a record of its spool)."""
        ticket, label, duration, evidence, starts, switches, lock_order, schedule, delay_used = record
        task = worker.pending.popleft()
        if task.ticket != ticket:
            raise InternalError(f"worker answered dispatch {ticket} while {task.ticket} was expected")
        watch = worker.watch
        worker.watch = None
        policy = self.timeouts[task.variant.partition("/")[0]]
        timeout, extra = (watch.timeout, watch.extra) if watch is not None else (policy.current(task.variant), 0.0)
        outcome = Outcome.from_label(label)
        policy.observe(duration, task.variant)
        self.recent += (duration - self.recent) * (0.05 if self.recent else 1.0)
        self._record(
            TrialResult(
                variant=task.variant,
                seq=task.seq,
                trial=task.plan.trial,
                outcome=outcome,
                duration=duration,
                plan=task.plan,
                starts=tuple(tuple(ActorStart(a, d) for a, d in group) for group in starts),
                switches=switches,
                delay_used=delay_used,
                timeout=timeout,
                evidence=Evidence.from_dict(evidence),
                lock_order=tuple(lock_order),
                sweep=task.sweep,
                schedule=ScheduleRecord.from_dict(_without(schedule, "decisions", "progress")),
                extra=round(extra, 4),
                notes=task.notes,
            )
        )
        if schedule is not None:
            self._schedule_done(task, schedule)
        if worker.pending:
            self._start_head(worker, now)

    def _schedule_done(self, task: Task, info: dict[str, Any] | None) -> None:
        """Controlled mode: learn the schedule's length; feed an exhaustive search its choice points
        (a schedule that hung or crashed has none: its branch ends there)."""
        info = info or {}
        progress = float(info.get("progress", 0.0))
        if progress > self.lengths.get(task.variant, 0.0):
            self.lengths[task.variant] = progress
        if self.explorers is not None and task.control is not None:
            decisions = [Decision(*d) for d in info.get("decisions", ())]
            self.explorers[task.variant].feed(task.control.forced, decisions)

    def _record(self, result: TrialResult) -> None:
        if self.output_error is None:
            try:
                self.writer.write(result)
            except OutputError as exc:
                self._cannot_write(exc)
        stats = self.stats[result.variant]
        stats.add(result)
        self.done += 1
        if result.outcome is Outcome.UNSUPPORTED and result.variant not in self.unsupported:
            self.unsupported.add(result.variant)
            if self.explorers is not None:
                self.explorers[result.variant].abandon()
        self.observer.result(result, stats)

    def _lost(self, worker: WorkerHandle, now: float) -> None:
        """The worker's process ended on its own: whatever it was running crashed."""
        self._drain(worker, now)
        if worker not in self.workers:  # it retired (and was replaced) in what it said last
            return
        worker.process.join()
        worker.sweep_group()
        head = self._take_head(worker)
        self._swap_out(worker)
        if head is not None:
            task, watch = head
            self._record_death(
                task, watch, now, Outcome.CRASHED, exit_status=worker.process.exitcode, dump=worker.read_dump()
            )
        self._dispose(worker)

    def _check_deadlines(self, now: float) -> None:
        for worker in list(self.workers):
            watch = self._watch(worker)
            if watch is None:
                continue
            self._follow(worker, watch)
            if now < watch.due():
                continue
            decision = watch.step(now, functools.partial(self._look, worker))
            if decision.verdict is Verdict.WAIT:
                continue
            if decision.verdict is Verdict.STALLED:
                self._stalled(worker, now, decision.message)
            else:
                self._hang(worker, now, decision.verdict, decision.message)
            self.observer.tick()  # a hang takes seconds on a busy machine: a log still hears from us

    @staticmethod
    def _look(worker: WorkerHandle) -> activity.Snapshot:
        look = activity.snapshot(worker.process.pid or 0)
        # A signal timer's handler, or a coroutine trial's loop timer, wakes the trial by itself.
        due = [when for when in (worker.beacon.alarm(), worker.beacon.loop_timer()) if when is not None]
        alarm_in = max(0.0, min(due) - look.at) if due else math.inf
        waiters, ended = worker.beacon.waits()
        return replace(
            look,
            paused=worker.beacon.progress(),
            alarm_in=alarm_in,
            waiters=waiters,
            wait_ends=ended,
            waits=_without_parked(look.waits, worker.beacon.parked()),
        )

    def _follow(self, worker: WorkerHandle, watch: Watch) -> None:
        """Bring the head's watch up to date with where the worker says it is."""
        if watch.ended is not None:
            return
        reading = worker.beacon.read()
        if not worker.pending or reading.seq != worker.pending[0].ticket:
            return
        # The beacon's times are the machine's monotonic clock; the watch keeps the engine's. A body
        # cannot have started before its trial was sent.
        at = max(self.clock() - max(0.0, time.monotonic() - reading.since), watch.dispatched)
        if reading.phase is Phase.BODY:
            watch.begin(at)
        elif reading.phase is Phase.AFTER or reading.phase is Phase.IDLE:
            watch.begin(at)
            watch.end(at)

    def _hang(self, worker: WorkerHandle, now: float, verdict: Verdict, message: str) -> None:
        """The head's trial looks hung (or undecidable): make sure, gather its evidence, record it.

        The next trials do not wait for the evidence: a fresh worker (the spare, set up in advance,
        once the run has replaced one) takes the hung one's place before it is made to dump."""
        watch = worker.watch
        assert watch is not None
        worker.freeze()
        # It may have finished between the last look and the freeze: then it is not hung.
        self._drain(worker, now)
        if worker.watch is not watch or worker not in self.workers:
            worker.thaw()
            return
        self._follow(worker, watch)
        if watch.ended is not None:
            worker.thaw()
            return
        head = self._take_head(worker)
        assert head is not None
        task, _ = head
        self._swap_out(worker)
        self.observer.tick()
        worker.abort_for_dump()
        dump = worker.read_dump()
        where = blocked_at(dump, self.scope) if dump else ()
        if not where:
            # A hang is a claim about the code under test: without one frame of it in the dump
            # (an empty dump, or stress's own frames only), the claim has no evidence.
            self._run_again(task, watch, now, "its dump showed no frame of the code under test", dump=dump)
        else:
            outcome = Outcome.HUNG if verdict is Verdict.HUNG else Outcome.UNDECIDED
            self._record_death(task, watch, now, outcome, message=message, dump=dump, where=where)
            # Either way its trials do not finish: like a hang, it teaches the deadline to borrow.
            self.timeouts[task.variant.partition("/")[0]].hung(task.variant)
        self._dispose(worker)

    def _stalled(self, worker: WorkerHandle, now: float, message: str) -> None:
        """The worker is stuck in stress's own code: none of the trial's business."""
        worker.freeze()
        worker.kill_trial_processes()
        worker.process.kill()
        worker.process.join()
        worker.sweep_group()
        head = self._take_head(worker)
        self._swap_out(worker)
        if head is not None:
            self._run_again(*head, now, message)
        self._dispose(worker)

    def _run_again(self, task: Task, watch: Watch, now: float, why: str, *, dump: str = "") -> None:
        """Run ``task`` again on another worker, noting why; after `ATTEMPTS`, record it as
        undecided rather than guess."""
        notes = (*task.notes, why)
        if len(notes) >= ATTEMPTS:
            message = f"stress could not judge this trial in {len(notes)} attempts: {why}"
            self._record_death(task, watch, now, Outcome.UNDECIDED, message=message, dump=dump, notes=notes)
        else:
            self.requeued.appendleft(replace(task, notes=notes))

    def _record_death(
        self,
        task: Task,
        watch: Watch,
        now: float,
        outcome: Outcome,
        *,
        message: str | None = None,
        exit_status: int | None = None,
        dump: str = "",
        where: tuple[str, ...] | None = None,
        notes: tuple[str, ...] | None = None,
    ) -> None:
        """Record ``task`` as hung, undecided or crashed, with its thread dump."""
        if where is None:
            where = blocked_at(dump, self.scope) if dump else ()
        started = watch.started if watch.started is not None else watch.dispatched
        self._record(
            TrialResult(
                variant=task.variant,
                seq=task.seq,
                trial=task.plan.trial,
                outcome=outcome,
                duration=max(0.0, now - started),
                plan=task.plan,
                timeout=watch.timeout,
                evidence=Evidence(
                    messages=(message,) if message else (),
                    dump=dump or None,
                    blocked_at=where,
                    exit_status=exit_status,
                ),
                sweep=task.sweep,
                extra=round(watch.extra, 4),
                notes=notes if notes is not None else task.notes,
                # The worker could not say whether the plan's delay acted on anything: it did if
                # it did in any trial of the variant so far (a thread-only one's plan leaves it out).
                delay_used=bool(self.stats[task.variant].knobs["delay"]),
            )
        )
        if task.control is not None:
            self._schedule_done(task, None)

    # -- workers ---------------------------------------------------------------------------------

    def _spawn(self) -> WorkerHandle:
        others = [*self.workers, *self.leaving, *([self.spare] if self.spare is not None else [])]
        inherited = [fd for w in others for fd in w.fds()] + [self.writer.fileno()]
        if self.janitor is not None:
            inherited.append(self.janitor.fd)
        worker = WorkerHandle(
            variants=self.variants,
            scope=self.scope,
            close_in_child=inherited,
            start_method=self.config.start_method,
        )
        if self.janitor is not None:
            self.janitor.watch_folder(worker.tmp)
            self.janitor.watch_group(worker.process.pid or 0)
        return worker

    def _take_head(self, worker: WorkerHandle) -> tuple[Task, Watch] | None:
        """The trial the worker is running, taken off it with its watch (None if it had none)."""
        watch = self._watch(worker)
        worker.watch = None
        if not worker.pending or watch is None:
            return None
        return worker.pending.popleft(), watch

    def _swap_out(self, worker: WorkerHandle) -> None:
        """Take ``worker`` out of the pool: what it had queued goes back to the queue, and a fresh
        worker — the spare, when one is ready — takes its place and gets work at once."""
        self.requeued.extendleft(reversed(worker.pending))
        worker.pending.clear()
        worker.watch = None
        self.workers.remove(worker)
        self.leaving.append(worker)
        if self.stopping:
            return
        fresh, self.spare = self.spare, None
        if fresh is None or fresh.process.exitcode is not None:
            if fresh is not None:
                self._dispose(fresh, spare=False)
            fresh = self._spawn()
        self._enlist(fresh)
        self._dispatch()

    def _enlist(self, worker: WorkerHandle) -> None:
        """Put ``worker`` in the pool, on a CPU of its own when there is one for every worker and the
        interpreter has a GIL (without one, a worker's threads run in parallel and need them all)."""
        taken = {w.cpu for w in self.workers}
        self.workers.append(worker)
        if self.cpus and self.info.jobs <= len(self.cpus) and gil.enabled():
            worker.pin(next((cpu for cpu in self.cpus if cpu not in taken), None))

    def _dispose(self, worker: WorkerHandle, *, spare: bool = True) -> None:
        """Bury a worker taken out of the pool; keep a spare ready, since this run replaces workers."""
        worker.process.join()
        self.retired |= worker.helpers
        worker.close()
        if worker in self.leaving:
            self.leaving.remove(worker)
        if spare and self.spare is None and self._work_left() and not self.stopping:
            self.spare = self._spawn()

    def _replace(self, worker: WorkerHandle) -> None:
        """A worker that retires by itself (its trial left threads behind): swap it for a fresh one."""
        self._swap_out(worker)
        self._dispose(worker)

    def _stop_workers(self) -> None:
        """Stop every worker: a clean exit after a complete run; after a stop, all at once (frozen,
        their trials' processes killed, then the workers), so that the stop does not take longer
        with more workers."""
        if self.spare is not None:
            self.workers.append(self.spare)
            self.spare = None
        if self.stopping:
            for worker in self.workers:
                worker.freeze()  # so that it starts nothing new while its trial's processes die
            for worker in self.workers:
                worker.kill_trial_processes()
            for worker in self.workers:
                worker.process.kill()
        else:
            for worker in self.workers:
                worker.trial_processes()  # learns the helpers below it, to let them finish
                worker.ask_to_stop()
        for worker in self.workers:
            worker.stop(grace=0.0 if self.stopping else 1.0)
            self.retired |= worker.helpers
        self.workers.clear()
        retire_helpers(self.retired)

"""``stress replay``: run one stored controlled schedule again, in this process, exactly.

A controlled schedule fixes every thread switch, and a trial's randomness comes from its plan's
seed, so running the variant again under the same schedule repeats the same interleaving, the same
final state and the same failure — unless something outside the schedule decided the run (a
process it started, a signal timer: `ScheduleRecord.unscheduled`), when a replay repeats the
failure only by chance and says how often it did. Replay checks that it did (same outcome, same failure message,
same number of steps, the same switches taken) and can stop in the debugger where the failing check
or the exception happened: the threads are real, so everything a debugger shows is real.
"""

from __future__ import annotations

import json
import pdb
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from harness.config import RunConfig
from harness.controlled.schedule import Schedule, ScheduleRecord
from harness.controlled.session import Control
from harness.controlled.trace import Trace, build
from harness.engine.local import LocalRunner
from harness.engine.runner import TrialRun
from harness.errors import UserError
from harness.results.outcome import TrialResult
from harness.results.run_dir import RESULTS, RUN, read_results
from harness.results.summary import RunInfo
from harness.scenario import Variant
from harness.scope import Scope
from harness.text import untemp

__all__ = ["Expected", "Replay", "find_trial", "load_run", "replay"]


@dataclass(frozen=True)
class Expected:
    """What the stored run saw under the schedule being replayed (None: nothing stored, a
    schedule given by hand)."""

    outcome: str
    messages: tuple[str, ...]
    steps: int | None
    #: Why the stored schedule did not fix what happened (`ScheduleRecord.unscheduled`): a replay
    #: then repeats the failure only by chance, and only its outcome is compared.
    unscheduled: str | None = None


@dataclass(frozen=True)
class Replay:
    """One replay: the schedule run, what happened, and the trace of it."""

    schedule: Schedule
    run: TrialRun
    trace: Trace

    @property
    def messages(self) -> tuple[str, ...]:
        return self.run.evidence.messages if self.run.evidence is not None else ()

    def unfollowed(self) -> str | None:
        """Why the schedule asked for could not be run as written (a choice point past the end of
        the run, a thread that does not exist or cannot run there), or None."""
        threads = self.run.threads
        for point, thread in self.schedule.forced:
            if point >= self.run.choices:
                return (
                    f"choice point {point} is past the end: the run had {self.run.choices} choice points "
                    f"(0 to {self.run.choices - 1})"
                )
            if thread >= len(threads):
                listed = ", ".join(f"{n} {name}" for n, name in enumerate(threads))
                return f"there is no thread {thread} (the threads: {listed})"
            if point == self.run.diverged:
                return f"thread {thread} ({threads[thread]}) cannot run at choice point {point}"
        return None

    def differences(self, expected: Expected) -> list[str]:
        """How this replay differs from what the stored run saw (empty: reproduced)."""
        out = []
        if self.run.outcome.label != expected.outcome:
            out.append(f"outcome {self.run.outcome.label}, stored {expected.outcome}")
        if expected.unscheduled is not None:  # a failure by chance: its details differ from run to run
            return out
        if expected.messages and not _same_messages(self.messages[: len(expected.messages)], expected.messages):
            said = self.messages[0] if self.messages else "none"
            out.append(f"message {said!r}, stored {expected.messages[0]!r}")
        if expected.steps is not None and self.run.steps != expected.steps:
            out.append(f"{self.run.steps} steps, stored {expected.steps}")
        if Schedule.parse(self.run.schedule or "v2:") != self.schedule:
            out.append(f"ran schedule {self.run.schedule}, asked for {self.schedule}")
        return out


def _same_messages(got: Sequence[str], stored: Sequence[str]) -> bool:
    """Whether a replay's messages are the stored run's, but for temporary paths: the stored run
    ran in a worker's temporary folder, the replay in this process's, and a folder the code under
    test made with `tempfile` has a name drawn anew each time."""
    return len(got) == len(stored) and all(untemp(a) == untemp(b) for a, b in zip(got, stored, strict=True))


def load_run(run_dir: Path) -> RunInfo:
    if not (run_dir / RUN).is_file() or not (run_dir / RESULTS).is_file():
        raise UserError(f"{str(run_dir)!r} is not a run folder (it needs {RUN} and {RESULTS})")
    try:
        return RunInfo.from_dict(json.loads((run_dir / RUN).read_text(encoding="utf-8")), run_dir)
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{run_dir / RUN}: not a run description stress can read ({exc})") from None


def find_trial(info: RunInfo, variant: str | None, trial: int | None) -> TrialResult:
    """The stored failing schedule to replay: trial ``trial`` of ``variant`` (NAME or
    SCENARIO/NAME); without ``trial``, the variant's first failure; without ``variant``, the only
    variant that failed."""
    if not info.config.controlled:
        raise UserError(
            f"{info.run_dir} is a stress-mode run: its trials are not schedules. Re-run a trial with the "
            "'replay' command its report prints, or run the scenario with --mode controlled"
        )
    keys = [v.key for v in info.variants]
    if variant is not None:
        matches = [k for k in keys if k == variant or k.partition("/")[2] == variant]
        if not matches:
            raise UserError(f"the run has no variant {variant!r}; it ran {', '.join(keys)}")
        if len(matches) > 1:
            raise UserError(f"{variant!r} is in several scenarios of the run: use one of {', '.join(matches)}")
        keys = matches
    failing: dict[str, list[TrialResult]] = {}
    for result in read_results(info.run_dir):
        if result.variant in keys and result.schedule is not None and result.schedule.schedule is not None:
            failing.setdefault(result.variant, []).append(result)
    if trial is not None:
        found = [r for rs in failing.values() for r in rs if r.trial == trial]
        if not found:
            raise UserError(
                f"schedule {trial} of {' or '.join(keys)} did not fail (only failing schedules are stored)"
                + _which(failing)
            )
        if len(found) > 1:
            raise UserError(
                f"schedule {trial} failed in {', '.join(r.variant for r in found)}: pick one with --variant"
            )
        return found[0]
    if not failing:
        raise UserError(f"no schedule of {', '.join(keys)} failed in {info.run_dir}: there is nothing to replay")
    if len(failing) > 1:
        raise UserError(f"several variants failed ({', '.join(failing)}): pick one with --variant")
    return min(next(iter(failing.values())), key=lambda r: r.trial)


def _which(failing: dict[str, list[TrialResult]]) -> str:
    if not failing:
        return ""
    parts = [
        f"{key}: {', '.join(str(r.trial) for r in rs[:8])}{' …' if len(rs) > 8 else ''}" for key, rs in failing.items()
    ]
    return "; failing schedules: " + "; ".join(parts)


def expected_for(record: ScheduleRecord, result: TrialResult, *, original: bool) -> tuple[Schedule, Expected]:
    """The schedule replay runs by default — the shrunk one when there is one, it is the one the
    report shows — and what the run saw under it."""
    if record.minimal is not None and not original:
        return Schedule.parse(record.minimal), Expected(
            result.outcome.label, record.minimal_messages or (), record.minimal_steps
        )
    messages = result.evidence.messages if result.evidence is not None else ()
    return Schedule.parse(record.schedule or "v2:"), Expected(
        result.outcome.label, messages, record.steps, record.unscheduled
    )


def replay(
    variant: Variant,
    config: RunConfig,
    result: TrialResult,
    schedule: Schedule,
    *,
    debug: bool = False,
    times: int = 1,
    scope: Scope | None = None,
    each: Callable[[int, Replay], None] | None = None,
) -> list[Replay]:
    """Run ``variant`` under ``schedule`` ``times`` times, in this process, with the stored trial's
    plan (its randomness) and the run's size, actors, granularity, step limit and scope."""
    control = Control("forced", forced=schedule.forced, granularity=config.granularity, step_limit=config.step_limit)
    out = []
    with LocalRunner(variant, config, scope=scope) as runner:
        for index in range(times):
            run = runner.run(control, result.plan, on_failure=_stop_in_debugger if debug and index == 0 else None)
            done = Replay(schedule, run, build(run.trace))
            out.append(done)
            if each is not None:
                each(index, done)
    return out


def _stop_in_debugger(what: str, exc: BaseException | None) -> None:
    """`Trial.on_failure` for ``--pdb``: the debugger opens in the frame that failed — the variant
    at its failing check, or the frame an exception came from."""
    out = sys.__stderr__ or sys.stderr
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:  # the scheduler's per-instruction events would confuse pdb
        frame.f_trace_opcodes = False
        frame = frame.f_back
    if exc is None:
        print(f"\nstress: check failed: {what}\nstress: stopping in the debugger at the failing check", file=out)
        pdb.Pdb().set_trace(sys._getframe(2))
        return
    print(
        f"\nstress: {type(exc).__name__} in {what}: {exc}\nstress: stopping in the debugger where it was raised",
        file=out,
    )
    pdb.post_mortem(exc.__traceback__)

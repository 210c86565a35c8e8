"""What a trial can end as, and the record of one trial.

`Outcome` is a closed set. Each member carries its description and a severity: when several things
go wrong in one trial (an actor raises *and* a check fails), the most severe one names the outcome
and the evidence keeps the rest. One member is stress's own: ``undecided``, for a trial stress could
not judge (a machine too busy to tell a hang from a slow trial, a worker that never reached the
trial). It is neither a pass nor a failure, and never counts against the code under test. Nor is
``unsupported``: a controlled schedule the scheduler had to let go of, because a thread blocked where
it has no model of the wait (``select``, a socket, a subprocess).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from harness.controlled.schedule import ScheduleRecord
from harness.perturb.plan import ActorStart, Plan, compact_json

__all__ = ["Evidence", "Outcome", "TrialResult"]


class Outcome(enum.Enum):
    """How a trial ended."""

    PASSED = ("passed", 0, "every check held and every actor finished")
    UNDECIDED = ("undecided", -1, "stress could not judge the trial; it counts neither way")
    UNSUPPORTED = (
        "unsupported",
        -1,
        "controlled mode could not schedule the trial (a wait it has no model of); it counts neither way",
    )
    FAILED = ("failed", 1, "a check (invariant) was broken")
    ERROR = ("error", 2, "an actor or the variant raised an exception")
    STALLED = ("stalled", 3, "a coroutine step held the event loop: no other task could run meanwhile")
    DEADLOCKED = ("deadlocked", 4, "threads waited for each other in a cycle")
    HUNG = ("hung", 5, "the trial did not finish before its deadline")
    CRASHED = ("crashed", 6, "a process of the trial died: the worker running it, or a process actor")

    def __init__(self, label: str, severity: int, description: str) -> None:
        self.label = label
        self.severity = severity
        self.description = description

    def __str__(self) -> str:
        return self.label

    @property
    def is_failure(self) -> bool:
        return self is not Outcome.PASSED and self.severity >= 0

    @property
    def is_judged(self) -> bool:
        """Whether the trial says anything about the code under test (all but undecided and
        unsupported)."""
        return self.severity >= 0

    @classmethod
    def from_label(cls, label: str) -> Outcome:
        """The outcome named ``label``; raises `ValueError` for an unknown one."""
        try:
            return _BY_LABEL[label]
        except KeyError:
            raise ValueError(f"unknown outcome {label!r}") from None


_BY_LABEL = {outcome.label: outcome for outcome in Outcome}


@dataclass(frozen=True)
class Evidence:
    """What was seen of a failure. Every field is optional; text fields are already truncated.

    Attributes:
        messages: Broken checks' messages, in the order they were recorded.
        tracebacks: Exceptions raised by actors or the variant, formatted, in the order raised.
        dump: ``faulthandler`` dump of every thread (hung or crashed trials).
        blocked_at: For a dump, the innermost in-scope frame of each thread (``file:line in fn``).
        wait_for: For a deadlock, one line per thread involved: what it waits for, where, and who
            holds it since where.
        exit_status: How the worker died: exit code, or ``-N`` for signal N.
        output: The tail of what the trial printed.
    """

    messages: tuple[str, ...] = ()
    tracebacks: tuple[str, ...] = ()
    dump: str | None = None
    blocked_at: tuple[str, ...] = ()
    wait_for: tuple[str, ...] = ()
    exit_status: int | None = None
    output: str | None = None

    def summary(self) -> str:
        """The first thing to say about this failure, in one line."""
        if self.messages:
            return self.messages[0]
        if self.tracebacks:
            lines = [line for line in self.tracebacks[0].strip().splitlines() if line.strip()]
            return lines[-1] if lines else "exception"
        if self.blocked_at:
            return "blocked at " + self.blocked_at[0]
        if self.exit_status is not None:
            return _describe_exit(self.exit_status)
        return ""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if value not in (None, ()):
                out[name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Evidence | None:
        if not data:
            return None
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        for key in ("messages", "tracebacks", "blocked_at", "wait_for"):
            if key in known:
                known[key] = tuple(known[key])
        return cls(**known)


def _describe_exit(status: int) -> str:
    if status < 0:
        import signal

        try:
            name = signal.Signals(-status).name
        except ValueError:
            name = f"signal {-status}"
        return f"worker killed by {name}"
    return f"worker exited with status {status}"


@dataclass(frozen=True)
class TrialResult:
    """One trial, as written to ``results.jsonl``.

    Attributes:
        variant: ``scenario/variant``.
        seq: Position of this trial among the variant's trials in this run (0-based, unique).
        trial: Index the trial's plan was derived from (equals ``seq`` except when replaying).
        outcome: How it ended.
        duration: Seconds the trial ran, measured in the worker (for hung trials: until the deadline).
        plan: The perturbation plan.
        starts: How the actors were actually started (order and delay), per actor group.
        switches: Thread switches forced by preemption injection.
        delay_used: Whether the plan's ``delay`` had anything to act on (a multiprocessing
            operation, a process actor); False for a trial of threads only.
        timeout: The deadline the trial ran under, in seconds.
        evidence: What was seen, for any outcome but passed.
        lock_order: Lock-order edges ("held A while acquiring B") this trial showed its worker for
            the first time; merged across trials, their cycles are potential deadlocks.
        sweep: In a sweep, the value of the swept knob for this trial.
        schedule: Controlled mode: the schedule, and for a failure how to replay it.
        extra: Seconds the trial was given past its deadline because it was still working or
            sleeping on a timer (0: it finished in time).
        notes: Why earlier attempts at this trial were not judged and it was run again.
    """

    variant: str
    seq: int
    trial: int
    outcome: Outcome
    duration: float
    plan: Plan
    starts: tuple[tuple[ActorStart, ...], ...] = ()
    switches: int = 0
    delay_used: bool = True
    timeout: float | None = None
    evidence: Evidence | None = field(default=None)
    lock_order: tuple[dict[str, Any], ...] = ()
    sweep: float | None = None
    schedule: ScheduleRecord | None = None
    extra: float = 0.0
    notes: tuple[str, ...] = ()

    def to_dict(self, *, plan: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "variant": self.variant,
            "seq": self.seq,
            "trial": self.trial,
            "outcome": self.outcome.label,
            "duration": round(self.duration, 7),
            "starts": [[[s.actor, round(s.delay, 9)] for s in group] for group in self.starts],
            "switches": self.switches,
            "timeout": self.timeout,
        }
        if plan:
            out["plan"] = self.plan.to_dict()
        if self.evidence is not None:
            out["evidence"] = self.evidence.to_dict()
        if self.lock_order:
            out["lock_order"] = list(self.lock_order)
        if self.sweep is not None:
            out["sweep"] = self.sweep
        if self.schedule is not None:
            out["schedule"] = self.schedule.to_dict()
        if self.extra:
            out["extra"] = self.extra
        if self.notes:
            out["notes"] = list(self.notes)
        if not self.delay_used:
            out["delay_used"] = False
        return out

    def to_json(self) -> str:
        """`to_dict` as one compact line of JSON (no newline), the plan's part made once per plan."""
        out = self.to_dict(plan=False)
        text = compact_json(out)
        return f'{text[:-1]},"plan":{self.plan.as_json}}}'

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialResult:
        return cls(
            variant=data["variant"],
            seq=data["seq"],
            trial=data["trial"],
            outcome=Outcome.from_label(data["outcome"]),
            duration=data["duration"],
            plan=Plan.from_dict(data["plan"]),
            starts=tuple(tuple(ActorStart(a, d) for a, d in group) for group in data.get("starts", ())),
            switches=data.get("switches", 0),
            delay_used=bool(data.get("delay_used", True)),
            timeout=data.get("timeout"),
            evidence=Evidence.from_dict(data.get("evidence")),
            lock_order=tuple(data.get("lock_order", ())),
            sweep=data.get("sweep"),
            schedule=ScheduleRecord.from_dict(data.get("schedule")),
            extra=float(data.get("extra", 0.0)),
            notes=tuple(data.get("notes", ())),
        )

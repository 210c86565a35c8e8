"""A controlled schedule as data: the choices that differ from the default.

The default policy is non-preemptive: keep running the current thread while it can run; when it
blocks or finishes, run the lowest-numbered thread that can. A *choice point* is any moment when
more than one thread could run; they are numbered in the order they come. A schedule is the list of
*forced* choices on top of the default — at choice point C, run thread T — which is all that must be
stored to replay an interleaving exactly, and what shrinking removes. As a string: ``v2:12>1,30>0``
(at choice point 12 switch to thread 1, at 30 to thread 0); ``v2:`` is the default schedule. Thread 0
is the variant body; the others are numbered in the order they were started. (``v1`` schedules,
from before the body was a thread of the schedule, numbered the actors from 0: they no longer
replay.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.errors import UserError
from harness.text import untemp

__all__ = ["Decision", "Schedule", "ScheduleRecord"]

_VERSION = "v2"


@dataclass(frozen=True)
class Schedule:
    """Forced choices (choice point, thread), ordered by choice point."""

    forced: tuple[tuple[int, int], ...] = ()

    def __str__(self) -> str:
        return f"{_VERSION}:" + ",".join(f"{step}>{thread}" for step, thread in self.forced)

    @classmethod
    def parse(cls, text: str) -> Schedule:
        version, sep, body = str(text).strip().partition(":")
        if version == "v1" and sep:
            raise UserError(
                f"schedule {text!r} was recorded by an earlier stress, which numbered threads differently: "
                "run the variant again to get a schedule this one replays"
            )
        if version != _VERSION or not sep:
            raise UserError(f"schedule {text!r}: not a stress schedule (they look like 'v2:12>1,30>0')")
        forced = []
        for item in filter(None, body.split(",")):
            step, arrow, thread = item.partition(">")
            if not arrow or not step.isdigit() or not thread.isdigit():
                raise UserError(f"schedule {text!r}: {item!r} is not CHOICE>THREAD")
            forced.append((int(step), int(thread)))
        if [s for s, _ in forced] != sorted({s for s, _ in forced}):
            raise UserError(f"schedule {text!r}: the choice points must increase")
        return cls(tuple(forced))

    def as_dict(self) -> dict[int, int]:
        return dict(self.forced)


@dataclass(frozen=True)
class Decision:
    """One choice point: its number, the threads that could run, the current one (-1 when it could
    not continue), the default choice and the one taken."""

    choice: int
    enabled: tuple[int, ...]
    current: int
    default: int
    chosen: int

    @property
    def preemption(self) -> bool:
        """Taking the baton from a thread that could have gone on."""
        return self.current in self.enabled and self.chosen != self.current


@dataclass(frozen=True)
class ScheduleRecord:
    """What ``results.jsonl`` keeps of a controlled trial.

    Attributes:
        steps: Scheduling steps the schedule ran.
        schedule: For a failure: the executed schedule, as a string (`Schedule`).
        switches: For a failure: its context switches.
        minimal: For the first failure of each kind: the shrunk schedule that still fails so.
        trace: The shrunk schedule's interleaving (`harness.controlled.trace.Trace` as a dict).
        shrink_runs: Schedules run to shrink it.
        minimal_steps: The shrunk schedule's steps.
        minimal_messages: What the shrunk schedule's failure said.
        unscheduled: Why the schedule did not fix what happened (a process started, a signal
            timer armed, a wait the scheduler cannot see): the failure is real, but running the
            schedule again repeats it only by chance, so it is not shrunk. None: it is exact.
    """

    steps: int
    schedule: str | None = None
    switches: int | None = None
    minimal: str | None = None
    trace: dict[str, Any] | None = None
    shrink_runs: int | None = None
    minimal_steps: int | None = None
    minimal_messages: tuple[str, ...] | None = None
    unscheduled: str | None = None

    def shrunk_says(self, found: str | None) -> str | None:
        """What the shrunk schedule's failure says, when it is something else than ``found``, what
        the schedule as found said first (the same outcome, other details: ``value 2``, ``value
        3``); None when it says the same, or there is no shrunk schedule."""
        said = self.minimal_messages[0] if self.minimal is not None and self.minimal_messages else None
        if said is None or found is None or untemp(said) == untemp(found):
            return None
        return said

    @property
    def exact(self) -> bool:
        """Whether running the schedule again repeats the same interleaving (see ``unscheduled``)."""
        return self.unscheduled is None

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in vars(self).items() if v is not None}
        if self.minimal_messages is not None:
            out["minimal_messages"] = list(self.minimal_messages)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> ScheduleRecord | None:
        if not data:
            return None
        names = ("steps", "schedule", "switches", "minimal", "trace", "shrink_runs", "minimal_steps", "unscheduled")
        known: dict[str, Any] = {k: data[k] for k in names if k in data}
        known.setdefault("steps", 0)
        if "minimal_messages" in data:
            known["minimal_messages"] = tuple(data["minimal_messages"])
        return cls(**known)

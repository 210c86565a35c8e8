"""How long a trial may run, and how a trial past its deadline is judged: hung, or given more time.

**The deadline.** With ``--timeout`` it is the user's. Without, it adapts per variant: ten times a high
quantile of the variant's finished trials (never the slowest: one outlier must not make every later
hang ten times dearer), within a floor and a ceiling. Durations come from the trials themselves, so on
a machine that gets busier the deadlines follow it. A variant with no finished trial gets a generous
initial deadline until it has hung `AdaptiveTimeout.BORROW_AFTER` times; then it borrows from the
quickest other variant of its scenario (or, alone, takes the floor), so a variant that always hangs
stays cheap.

**The judgement** (`Watch`). A deadline on a loaded machine is a guess, so passing it proves nothing.
The trial's clock starts when its body starts in the worker (`harness.engine.beacon`), never before:
a worker still setting up, or between trials, cannot hang a trial. At the deadline the trial's
processes are looked at (`harness.engine.activity`), with a first look `PROBE` earlier, and the
trial is:

* **hung, blocked**, when in `CONFIRM` looks in a row no thread of it was put on a CPU at all, and
  each waits with no timeout in something inside the trial (a lock, a join, a pipe, a child): nothing
  can ever wake it, however busy the machine is;
* **given more time** while a thread sleeps with a timeout (``time.sleep``, a timed ``acquire``,
  ``select`` with a timeout) or a signal timer is armed: it is never judged before they fire (a
  timer that fires only past `Watch.hard_cap` is as good as none);
* **given more time** while it is still working — a thread running or waiting for a CPU, CPU used
  since the last look, stress's own pauses — until it has used `Watch.cpu_budget` of CPU past its
  deadline, where a livelock ends as **hung, busy**; load slows how fast a trial gets CPU, so a slow
  machine stretches this in wall time instead of turning slow trials into hangs;
* **undecided** — stress's own outcome, never counted against the code under test — when it waits on
  something outside the trial (a network socket, a terminal) or that stress cannot read, up to
  `Watch.hard_cap`; when its threads only wake briefly on timers for `Watch.sleep_grace` (polling
  for something stress cannot see); and when it is still working at `Watch.hard_cap` (starved, or
  slowed by stress's own pauses).

Before the body starts and after it ends, only stress runs: a worker that does not reach the body in
`SETUP_LIMIT`, or does not report in `AFTER_LIMIT` after it, is *stalled*, and the driver runs its
trial again on a fresh worker.
"""

from __future__ import annotations

import bisect
import enum
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from harness.engine.activity import Snapshot, describe
from harness.perturb.knobs import format_seconds

__all__ = ["AdaptiveTimeout", "Decision", "Verdict", "Watch", "high_quantile"]

#: Seconds between the first look at a trial and the one at its deadline.
PROBE = 0.02
#: The share of one CPU a trial must use between two looks to count as still computing.
BUSY = 0.05
#: CPU seconds a blocked trial may show between two looks (none, in practice: measurement noise).
NOISE = 0.001
#: Looks in a row in which no thread of a trial was put on a CPU, before it is blocked for good.
CONFIRM = 2
#: A worker that has not started a trial's body this long after it was sent is stuck in stress's code.
SETUP_LIMIT = 60.0
#: A worker that has not reported a trial this long after its body ended is stuck in stress's code.
AFTER_LIMIT = 60.0


def high_quantile(ordered: list[float], q: float = 0.9) -> float:
    """The nearest-rank ``q`` quantile of ``ordered`` (sorted, non-empty), never its largest value
    once there are two: a single outlier never sets it."""
    n = len(ordered)
    if n == 1:
        return ordered[0]
    rank = min(math.ceil(q * n), n - 1)
    return ordered[rank - 1]


@dataclass
class AdaptiveTimeout:
    """The deadline policy of one scenario (its variants' deadlines).

    Attributes:
        fixed: A deadline set by the user, in seconds; when given, nothing adapts.
        factor: Multiple of the high quantile of finished trials' durations.
        floor: The shortest adaptive deadline, in seconds.
        initial: The deadline before a variant has finished any trial, in seconds.
        ceiling: The longest adaptive deadline, in seconds.
        window: How many recent durations per variant the quantile is taken over.
    """

    fixed: float | None = None
    factor: float = 10.0
    floor: float = 0.05
    initial: float = 2.0
    ceiling: float = 10.0
    window: int = 500
    _recent: dict[str, deque[float]] = field(default_factory=dict, init=False, repr=False)
    _sorted: dict[str, list[float]] = field(default_factory=dict, init=False, repr=False)
    hangs: dict[str, int] = field(default_factory=dict, init=False)

    BORROW_AFTER = 2

    def observe(self, duration: float, variant: str = "") -> None:
        """Learn from a trial of ``variant`` whose body ran ``duration`` seconds and finished by itself."""
        recent = self._recent.setdefault(variant, deque())
        ordered = self._sorted.setdefault(variant, [])
        if len(recent) >= self.window:
            del ordered[bisect.bisect_left(ordered, recent.popleft())]
        recent.append(duration)
        bisect.insort(ordered, duration)

    def hung(self, variant: str = "") -> None:
        """Learn that a trial of ``variant`` hung."""
        self.hangs[variant] = self.hangs.get(variant, 0) + 1

    def typical(self, variant: str = "") -> float | None:
        """The high quantile of ``variant``'s recent durations (None before it finished a trial)."""
        ordered = self._sorted.get(variant)
        return high_quantile(ordered) if ordered else None

    def current(self, variant: str = "") -> float:
        """The deadline, in seconds, for a trial of ``variant`` starting now."""
        if self.fixed is not None:
            return self.fixed
        typical = self.typical(variant)
        if typical is None and self.hangs.get(variant, 0) >= self.BORROW_AFTER:
            # Its own trials never finish, so any sibling is as good a yardstick: take the
            # quickest (or, alone, the floor), to keep a variant that always hangs cheap. A short
            # deadline only means an earlier look: a trial still working gets more time.
            siblings = [high_quantile(v) for v in self._sorted.values() if v]
            typical = min(siblings) if siblings else 0.0
        if typical is None:
            return self.initial
        return min(self.ceiling, max(self.floor, self.factor * typical))


class Verdict(enum.Enum):
    """What `Watch.step` concluded."""

    WAIT = "wait"  #: nothing to decide yet: step again at `Decision.until`
    HUNG = "hung"  #: the trial is hung: `Decision.message` says why
    UNDECIDED = "undecided"  #: stress cannot tell: `Decision.message` says why
    STALLED = "stalled"  #: the worker is stuck in stress's own code, not in the trial


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    until: float = math.inf
    message: str = ""


@dataclass
class Watch:
    """The deadline of one trial, from its dispatch to its report, in the driver's clock.

    Args:
        timeout: The trial's deadline, in seconds from the start of its body.
        dispatched: When it was sent to its worker.
        fixed: The deadline is the user's (``--timeout``), not an adaptive one.
        probe: Seconds between the first look and the look at the deadline.
        real: The machine's monotonic clock. Whether stress itself is stuck (`SETUP_LIMIT`,
            `AFTER_LIMIT`) is a question about this process, not about the trial, so it is measured
            in real time even when the driver's clock is a test's.
    """

    timeout: float
    dispatched: float
    fixed: bool = False
    probe: float = PROBE
    real: Callable[[], float] = field(default=time.monotonic, repr=False)
    started: float | None = None
    ended: float | None = None
    #: Extra seconds stress allows after the body for its own slow work (shrinking a schedule).
    allowance: float = 0.0
    #: Seconds granted past the deadline while the trial was still working or sleeping.
    extra: float = 0.0
    _before: Snapshot | None = field(default=None, repr=False)
    _at_deadline: Snapshot | None = field(default=None, repr=False)
    _next: float = 0.0
    _used: float = 0.0
    _quiet: int = 0
    _last_busy: float = 0.0
    _sent_real: float = field(default=0.0, repr=False)
    _ended_real: float = field(default=0.0, repr=False)

    def __post_init__(self) -> None:
        self._sent_real = self.real()

    @property
    def cpu_budget(self) -> float:
        """CPU seconds a trial still computing may use past its deadline before it is a livelock: ten
        deadlines past an adaptive one (from 2 s to 5 s), which one slow path of safe code may need;
        the user's own deadline (1 s at least) past a fixed one."""
        return max(self.timeout, 1.0) if self.fixed else min(max(10 * self.timeout, 2.0), 5.0)

    @property
    def sleep_grace(self) -> float:
        """Seconds past its deadline a trial whose threads only sleep on timers is given."""
        return max(3 * self.timeout, 1.0)

    @property
    def hard_cap(self) -> float:
        """Seconds from the start of its body after which a trial is judged whatever it does: twenty
        deadlines, from 10 s to 30 s."""
        return max(10.0, min(20 * self.timeout, 30.0))

    def begin(self, at: float) -> None:
        """The trial's body started at ``at``."""
        if self.started is None:
            self.started = at

    def end(self, at: float) -> None:
        """The trial's body ended at ``at``: from here on only stress runs."""
        if self.ended is None:
            self.ended = at
            self._ended_real = self.real()

    def due(self) -> float:
        """When `step` should next be called (the driver may call it earlier: it then waits)."""
        if self.ended is not None:
            return max(self._next, self.ended)
        if self.started is None:
            # The body has not started yet, so the deadline cannot be near: look again soon.
            return max(self._next, self.dispatched + max(self.timeout - self.probe, 0.0))
        if self._before is None:
            return self.started + max(self.timeout - self.probe, 0.0)
        return max(self._next, self.started + self.timeout)

    def step(self, now: float, take: Callable[[], Snapshot]) -> Decision:
        """Decide what to do with the trial at ``now``; ``take()`` looks at its processes."""
        if self.ended is not None or self.started is None:
            took = self.real() - (self._ended_real if self.ended is not None else self._sent_real)
            if self.ended is not None and took >= AFTER_LIMIT + self.allowance:
                return Decision(Verdict.STALLED, message=f"stress's own work after the trial took over {took:.3g} s")
            if self.ended is None and took >= SETUP_LIMIT:
                return Decision(Verdict.STALLED, message=f"the worker did not start the trial in {took:.3g} s")
            self._next = now + max(self.probe, 0.05)
            return Decision(Verdict.WAIT, self._next)
        deadline = self.started + self.timeout
        if now < self.due():
            return Decision(Verdict.WAIT, self.due())
        if self._before is None:
            self._before = take()
            self._next = max(deadline, now + self.probe)
            return Decision(Verdict.WAIT, self._next)
        look = take()
        return self._judge(now, deadline, self._before, look)

    def _judge(self, now: float, deadline: float, before: Snapshot, look: Snapshot) -> Decision:
        if self._at_deadline is None:
            self._at_deadline = look  # CPU used past the deadline counts from here
            self._last_busy = now
        window = max(look.at - before.at, 1e-9)
        ran = look.cpu_since(before)
        self._used += ran
        elapsed = now - (self.started if self.started is not None else now)
        paused = look.paused != before.paused  # stress's own pauses: progress, only slowed
        busy = bool(look.active) or ran >= BUSY * window or paused
        if busy or look.moved_since(before):
            self._quiet = 0
        if busy:
            self._last_busy = now
            if self._used >= self.cpu_budget:
                return Decision(
                    Verdict.HUNG,
                    message=f"busy all along: still running after {elapsed:.3g} s, having used {self._used:.3g} s of "
                    f"CPU past its {self.timeout:.3g} s deadline (a livelock?)",
                )
            if elapsed >= self.hard_cap:
                return self._capped(elapsed, look)
            return self._more(now, look, step=max(self.probe, 0.1 * self.timeout))
        if look.moved_since(before):
            # Threads woke briefly (on timers, to poll) and did little else.
            if now - self._last_busy >= self.sleep_grace or elapsed >= self.hard_cap:
                return Decision(
                    Verdict.UNDECIDED,
                    message=f"still running after {elapsed:.3g} s; for the last {now - self._last_busy:.3g} s its "
                    "threads only woke briefly and did little else: polling for something outside the trial (a "
                    "file, a server), or for something that never happens? stress cannot tell",
                )
            step = min(max(look.wakes_in + 0.002, self.probe), max(self.probe, 0.25 * self.timeout))
            return self._more(now, look, step=step)
        # Nothing in the trial ran at all since the last look.
        self._quiet += 1
        # An instrumented waiter sleeps in slices of a few milliseconds: no timer of the trial's.
        timers = look.wakes_in if look.timed > look.waiters else math.inf
        wake = min(timers, look.alarm_in)
        if not math.isinf(wake):
            # A timer that fires soon keeps the trial waking, up to the cap and across it (a heartbeat
            # beside a trial that waits for good): too slow to judge, never hung for its sake.
            if elapsed + wake <= self.hard_cap or wake <= self.sleep_grace:
                if elapsed < self.hard_cap:
                    return self._more(now, look, step=max(wake + 0.005, self.probe))  # never before its timers fire
                return Decision(
                    Verdict.UNDECIDED,
                    message=f"still running after {elapsed:.3g} s, its threads sleeping on timers that keep coming "
                    f"back ({describe(look.waits)}): too slow to judge",
                )
            return Decision(
                Verdict.HUNG,
                message=f"blocked: still running after {elapsed:.3g} s, its threads waiting ({describe(look.waits)}); "
                f"the first of them to wake by itself would do so only in {format_seconds(wake)}",
            )
        if look.external or look.unknown:
            if elapsed >= self.hard_cap:
                reason = "something outside the trial" if look.external else "calls stress cannot read"
                return Decision(
                    Verdict.UNDECIDED,
                    message=f"still waiting after {elapsed:.3g} s ({describe(look.waits)}): it waits on {reason}, "
                    "and stress cannot tell a slow peer from a hang",
                )
            return self._more(now, look, step=max(self.probe, 0.25 * self.timeout))
        if self._quiet < CONFIRM:
            # See it twice (a snapshot is not an instant): stress's own look, not more time given.
            return self._more(now, look, step=self.probe, stretch=False)
        return Decision(
            Verdict.HUNG,
            message=f"blocked: still running after {elapsed:.3g} s, its threads waiting with no timeout "
            f"({describe(look.waits, ends=False) or 'none left'}), none of them put on a CPU for the last "
            f"{window * self._quiet * 1000:.0f} ms",
        )

    def _more(self, now: float, look: Snapshot, *, step: float, stretch: bool = True) -> Decision:
        """Look again in ``step`` seconds; with ``stretch``, the trial is given that time (`extra`)."""
        self._before = look
        self._next = now + step
        if stretch:
            start = self.started if self.started is not None else now
            self.extra = max(self.extra, self._next - (start + self.timeout))
        return Decision(Verdict.WAIT, self._next)

    def _capped(self, elapsed: float, look: Snapshot) -> Decision:
        mark = self._at_deadline or look
        waited = look.waited - mark.waited
        if waited > self._used:
            why = (
                f"its threads waited {waited:.3g} s for a CPU and ran {self._used:.3g} s: the machine is too busy to "
                "tell a hang from a slow trial"
            )
        else:
            why = (
                f"it kept working, but slowly ({self._used:.3g} s of CPU past its deadline, or slowed by stress's own "
                "pauses): too slow to judge"
            )
        return Decision(Verdict.UNDECIDED, message=f"still running after {elapsed:.3g} s; {why}")

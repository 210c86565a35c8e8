"""Failure rates with their uncertainty, and verdicts.

Rates come with a 95 % Wilson score interval, which behaves at 0 and at 100 % where the normal
approximation does not. Zero failures in N trials never reads as "safe": it reads as "< 3/N at 95 %"
(the rule of three), because that is all N clean trials can say.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from harness.detect.lock_order import LockOrder, PotentialDeadlock
from harness.results.outcome import Outcome, TrialResult
from harness.scenario import Expect

__all__ = ["Exploration", "VariantStats", "VariantSummary", "Verdict", "fisher_exact", "rule_of_three", "wilson"]

Z95 = 1.959963984540054


def wilson(failures: int, trials: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval for ``failures`` out of ``trials`` (``(0, 1)`` for no trials)."""
    if trials <= 0:
        return (0.0, 1.0)
    p = failures / trials
    z2 = z * z
    denominator = 1 + z2 / trials
    centre = (p + z2 / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials)) / denominator
    low = 0.0 if failures == 0 else max(0.0, centre - half)
    high = 1.0 if failures == trials else min(1.0, centre + half)
    return (low, high)


def rule_of_three(trials: int) -> float:
    """Upper 95 % bound on the failure rate after ``trials`` clean trials."""
    return min(1.0, 3.0 / trials) if trials > 0 else 1.0


class Verdict(enum.Enum):
    """How a variant's results compare with its ``expect`` tag."""

    EXPOSED = ("exposed", True, "expected unsafe, and failures (or a potential deadlock) were seen")
    NOT_EXPOSED = ("not exposed", True, "expected unsafe, but no failure was seen")
    HELD = ("held", True, "expected safe, and no failure was seen")
    UNDECIDED = ("undecided", True, "stress could not judge any of its trials")
    UNSUPPORTED = (
        "unsupported",
        True,
        "not checked in controlled mode: a thread waited where the scheduler cannot see (run it in stress mode)",
    )
    NOT_RUN = ("not run", True, "no trial of it finished (the run was stopped first)")
    BROKEN = ("FAILED", False, "expected safe, but failures were seen")
    RISKY = (
        "DEADLOCK-PRONE",
        False,
        "expected safe; no trial failed, but its locks are taken in an order that can deadlock",
    )

    def __init__(self, label: str, as_expected: bool, description: str) -> None:
        self.label = label
        self.as_expected = as_expected
        self.description = description

    @classmethod
    def judge(
        cls,
        expect: Expect,
        failures: int,
        *,
        potential: int = 0,
        judged: int | None = None,
        trials: int | None = None,
        unsupported: int = 0,
    ) -> Verdict:
        """The verdict. A failure always counts; a schedule controlled mode could not run
        (``unsupported``) stops a variant from being called safe or not exposed."""
        if trials == 0 and not potential:
            return cls.NOT_RUN
        if judged == 0 and not potential and not unsupported:
            return cls.UNDECIDED
        if expect is Expect.UNSAFE:
            if failures or potential:
                return cls.EXPOSED
            return cls.UNSUPPORTED if unsupported else cls.NOT_EXPOSED
        if failures:
            return cls.BROKEN
        if potential:
            return cls.RISKY
        return cls.UNSUPPORTED if unsupported else cls.HELD


#: Knobs of a plan whose effect on the failure rate the reports show.
KNOBS = ("preempt", "sync", "switch_interval", "jitter", "delay", "pause")
#: The lowest bin of each knob's chart: smaller values (but 0, a knob off) count in it. A knob drawn
#: uniformly from 0 (``--jitter 0:100us``) takes values of nanoseconds now and then; a bin per
#: quarter decade down to them would give a third of the chart to 1 % of the trials.
KNOB_FLOOR = {"preempt": 1e-4, "sync": 1e-4, "switch_interval": 1e-6, "jitter": 1e-6, "delay": 1e-6, "pause": 1e-6}
#: How many passing trials at the start and at the end of a run are compared to measure load.
LOAD_WINDOW = 25
ZERO = -1000  # the bin of the value 0 (a knob switched off)


def log_bin(value: float) -> int:
    """Quarter-decade bins: 1e-3 falls in bin -12, 2e-3 in -11; 0 in `ZERO`."""
    if value <= 0:
        return ZERO
    return math.floor(math.log10(value) * 4 + 1e-9)


def bin_bounds(index: int) -> tuple[float, float]:
    if index == ZERO:
        return (0.0, 0.0)
    return (10 ** (index / 4), 10 ** ((index + 1) / 4))


@dataclass
class VariantStats:
    """A running tally of one variant's trials, updated as results arrive.

    Besides the counts, it keeps what the reports draw: the distribution of trial durations, the
    failure rate per bin of each knob's value (which knob exposes the bug), per swept value, and a
    bounded set of examples (the earliest failure of each kind).
    """

    variant: str
    expect: Expect
    description: str = ""
    trials: int = 0
    by_outcome: dict[Outcome, int] = field(default_factory=lambda: dict.fromkeys(Outcome, 0))
    busy: float = 0.0
    slowest_pass: float = 0.0
    first_failure: TrialResult | None = None
    examples: dict[Outcome, TrialResult] = field(default_factory=dict)
    lock_order: LockOrder = field(default_factory=LockOrder)
    durations: dict[int, int] = field(default_factory=dict)
    knobs: dict[str, dict[int, list[int]]] = field(default_factory=lambda: {k: {} for k in KNOBS})
    sweep: dict[float, dict[Outcome, int]] = field(default_factory=dict)
    exploration: Exploration | None = None
    #: Trials given more time past their deadline because they were still working or sleeping.
    stretched: int = 0
    #: Trials run again because an earlier attempt could not be judged.
    rerun: int = 0
    #: Per swept value (None without a sweep): the first and the last passing trials' durations,
    #: and the trials seen. A sweep's values run one after the other, and a knob's value (the GIL
    #: off) changes how long a trial takes: the machine's load is judged within one value.
    passes: dict[float | None, tuple[list[float], deque[float], list[int]]] = field(default_factory=dict)

    def add(self, result: TrialResult) -> None:
        self.trials += 1
        outcome = result.outcome
        failed = outcome.is_failure
        self.stretched += result.extra > 0
        self.rerun += bool(result.notes)
        if result.lock_order:
            self.lock_order.add(result.lock_order)
        self.by_outcome[outcome] += 1
        self.busy += result.duration
        bin_ = log_bin(result.duration)
        self.durations[bin_] = self.durations.get(bin_, 0) + 1
        plan = result.plan
        for knob in KNOBS if outcome.is_judged else ():  # an undecided trial says nothing of a knob
            value = getattr(plan, knob)
            if value is None or (knob == "delay" and not result.delay_used):  # it did nothing here
                continue
            counts = self.knobs[knob].setdefault(log_bin(max(value, KNOB_FLOOR[knob]) if value > 0 else 0.0), [0, 0])
            counts[0] += 1
            counts[1] += failed
        if result.sweep is not None:
            per_value = self.sweep.setdefault(result.sweep, dict.fromkeys(Outcome, 0))
            per_value[outcome] += 1
        first, last, seen = self.passes.setdefault(result.sweep, ([], deque(maxlen=LOAD_WINDOW), [0]))
        seen[0] += 1
        if outcome is Outcome.PASSED:
            self.slowest_pass = max(self.slowest_pass, result.duration)
            if len(first) < LOAD_WINDOW:
                first.append(result.duration)
            last.append(result.duration)
        if outcome is Outcome.UNDECIDED or outcome is Outcome.UNSUPPORTED:
            kept = self.examples.get(outcome)
            if kept is None or result.seq < kept.seq:
                self.examples[outcome] = result  # shown, so a person can see why; never a failure
        if not failed:
            return
        if self.first_failure is None or result.seq < self.first_failure.seq:
            self.first_failure = result
        kept = self.examples.get(outcome)
        if kept is None or result.seq < kept.seq:
            self.examples[outcome] = result

    @property
    def failures(self) -> int:
        return self.judged - self.by_outcome[Outcome.PASSED]

    @property
    def judged(self) -> int:
        """Trials that say something about the code under test (all but the undecided and the
        unsupported)."""
        return self.trials - self.by_outcome[Outcome.UNDECIDED] - self.by_outcome[Outcome.UNSUPPORTED]

    def slowdown(self) -> float | None:
        """How many times slower the last passing trials ran than the first, medians of
        `LOAD_WINDOW` each; in a sweep, the largest such figure within one swept value (None: too
        few trials)."""
        ratios = []
        for first, last, (seen,) in self.passes.values():
            if len(first) < LOAD_WINDOW or seen < 4 * LOAD_WINDOW:
                continue
            start = sorted(first)[LOAD_WINDOW // 2]
            if start > 0:
                ratios.append(sorted(last)[len(last) // 2] / start)
        return max(ratios, default=None)

    def summary(self) -> VariantSummary:
        judged = self.judged
        low, high = wilson(self.failures, judged)
        potential = tuple(self.lock_order.cycles())
        return VariantSummary(
            variant=self.variant,
            expect=self.expect,
            description=self.description,
            trials=self.trials,
            failures=self.failures,
            by_outcome={o: n for o, n in self.by_outcome.items() if n},
            rate=self.failures / judged if judged else 0.0,
            low=low,
            high=high,
            verdict=Verdict.judge(
                self.expect,
                self.failures,
                potential=len(potential),
                judged=judged,
                trials=self.trials,
                unsupported=self.by_outcome[Outcome.UNSUPPORTED],
            ),
            trials_per_second=self.trials / self.busy if self.busy > 0 else 0.0,
            example=self.first_failure,
            potential_deadlocks=potential,
            examples=tuple(sorted(self.examples.values(), key=lambda r: -r.outcome.severity)),
            durations=dict(sorted(self.durations.items())),
            knobs={k: {b: (c[0], c[1]) for b, c in sorted(v.items())} for k, v in self.knobs.items()},
            sweep={value: {o: n for o, n in counts.items() if n} for value, counts in sorted(self.sweep.items())},
            exploration=self.exploration,
            undecided=self.by_outcome[Outcome.UNDECIDED],
            unsupported=self.by_outcome[Outcome.UNSUPPORTED],
            stretched=self.stretched,
            rerun=self.rerun,
            slowdown=self.slowdown(),
        )


@dataclass(frozen=True)
class Exploration:
    """A bounded-preemption exhaustive search of one variant (controlled mode).

    Attributes:
        preemptions: The bound: schedules with at most this many preemptions were explored.
        schedules: How many were run.
        complete: Every schedule within the bound was run (not stopped by ``--iterations`` or
            an interrupt).
    """

    preemptions: int
    schedules: int
    complete: bool

    def text(self) -> str:
        bound = f"{self.preemptions} preemption{'' if self.preemptions == 1 else 's'}"
        if self.complete:
            return f"all {self.schedules:,} schedules within {bound} explored"
        return f"{self.schedules:,} schedules within {bound} explored (search stopped early)"

    def to_dict(self) -> dict[str, Any]:
        return {"preemptions": self.preemptions, "schedules": self.schedules, "complete": self.complete}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Exploration | None:
        if not data:
            return None
        return cls(int(data["preemptions"]), int(data["schedules"]), bool(data["complete"]))


@dataclass(frozen=True)
class VariantSummary:
    """A variant's final figures.

    Attributes:
        trials: Trials run, undecided ones included.
        failures: Trials that failed (any outcome but passed and undecided).
        rate: Observed failure rate (failures / judged trials).
        low: Lower end of the 95 % Wilson interval.
        high: Upper end of the 95 % Wilson interval.
        trials_per_second: Trials per second of worker time spent on this variant (the run's
            variants are interleaved, so wall time cannot be split among them).
        example: The earliest failing trial, if any.
        potential_deadlocks: Cycles in the order the variant's locks were taken, over all trials.
        examples: The earliest failure of each kind, most severe first.
        durations: Trial durations: count per quarter-decade bin (see `log_bin`).
        knobs: Per knob, per bin of its value: (trials, failures).
        sweep: Per swept value: outcome counts.
        exploration: Controlled mode's exhaustive search, when one ran.
        undecided: Trials stress could not judge (they count neither way).
        unsupported: Controlled schedules the scheduler could not run (they count neither way).
        stretched: Trials given more time past their deadline while still working or sleeping.
        rerun: Trials run again because an earlier attempt could not be judged.
        slowdown: How many times slower the last passing trials ran than the first (the machine
            got busier, or the trials slower); None with too few.
    """

    variant: str
    expect: Expect
    description: str
    trials: int
    failures: int
    by_outcome: dict[Outcome, int]
    rate: float
    low: float
    high: float
    verdict: Verdict
    trials_per_second: float
    example: TrialResult | None
    potential_deadlocks: tuple[PotentialDeadlock, ...] = ()
    examples: tuple[TrialResult, ...] = ()
    durations: dict[int, int] = field(default_factory=dict)
    knobs: dict[str, dict[int, tuple[int, int]]] = field(default_factory=dict)
    sweep: dict[float, dict[Outcome, int]] = field(default_factory=dict)
    exploration: Exploration | None = None
    undecided: int = 0
    unsupported: int = 0
    stretched: int = 0
    rerun: int = 0
    slowdown: float | None = None

    @property
    def judged(self) -> int:
        return self.trials - self.undecided - self.unsupported

    def sweep_rates(self) -> list[tuple[float, int, int, float, float, float]]:
        """Per swept value: (value, trials, failures, rate, low, high)."""
        rows = []
        for value, counts in self.sweep.items():
            trials = sum(n for outcome, n in counts.items() if outcome.is_judged)
            failures = trials - counts.get(Outcome.PASSED, 0)
            low, high = wilson(failures, trials)
            rows.append((value, trials, failures, failures / trials if trials else 0.0, low, high))
        return rows

    def sweep_text(self, value: float) -> str | None:
        """Swept ``value``'s cell in a sweep table: ``5.0 % (4.1–6.0)``, ``0/2000`` when no trial
        failed; None when no trial ran at that value."""
        for swept, trials, failures, rate, low, high in self.sweep_rates():
            if swept == value:
                interval = f"{percent(low, unit=False)}–{percent(high, unit=False)}"
                return f"{percent(rate)} ({interval})" if failures else f"0/{trials}"
        return None

    @property
    def scenario(self) -> str:
        return self.variant.partition("/")[0]

    @property
    def name(self) -> str:
        return self.variant.partition("/")[2]

    def rate_text(self) -> str:
        """``"99.8 % (99.5–99.9)"``, ``"0 (< 0.15 %)"``, or ``"0 of 2 judged"`` when too few were."""
        if not self.trials:
            return "no trials"
        if not self.judged:
            return "none judged"
        if self.exploration is not None and self.exploration.complete:
            # Every schedule within the bound ran: the share is exact, not an estimate.
            return f"{_percent(self.rate)} of all" if self.failures else "0 of all"
        if not self.failures:
            bound = rule_of_three(self.judged)
            # Three or fewer judged bound nothing: "< 100 %" would read as a finding.
            return f"0 (< {_percent(bound)})" if bound < 1 else f"0 of {self.judged} judged"
        return f"{_percent(self.rate)} ({_percent(self.low, unit=False)}–{_percent(self.high, unit=False)})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "variant": self.variant,
            "scenario": self.scenario,
            "name": self.name,
            "description": self.description,
            "expect": self.expect.value,
            "trials": self.trials,
            "failures": self.failures,
            "outcomes": {o.label: n for o, n in self.by_outcome.items()},
            "failure_rate": self.rate,
            "ci95": [self.low, self.high],
            "upper_bound_if_clean": rule_of_three(self.judged) if not self.failures else None,
            "undecided": self.undecided,
            "unsupported": self.unsupported,
            "stretched": self.stretched,
            "rerun": self.rerun,
            "slowdown": round(self.slowdown, 2) if self.slowdown is not None else None,
            "verdict": self.verdict.label,
            "as_expected": self.verdict.as_expected,
            "trials_per_second": round(self.trials_per_second, 2),
            "example": self.example.to_dict() if self.example else None,
            "potential_deadlocks": [p.to_dict() for p in self.potential_deadlocks],
            "sweep": [
                {"value": value, "trials": trials, "failures": failures, "failure_rate": rate, "ci95": [low, high]}
                for value, trials, failures, rate, low, high in self.sweep_rates()
            ],
            "exploration": self.exploration.to_dict() if self.exploration else None,
        }


def fisher_exact(a: int, b: int, c: int, d: int) -> float:
    """Two-sided p-value of Fisher's exact test for the table ``[[a, b], [c, d]]`` (counts: a
    rate's failures and passes in one condition, then in the other)."""
    rows, cols, total = a + b, a + c, a + b + c + d
    if total == 0:
        return 1.0
    low, high = max(0, cols - (total - rows)), min(rows, cols)

    margins = (
        math.lgamma(rows + 1) + math.lgamma(total - rows + 1) + math.lgamma(cols + 1) + math.lgamma(total - cols + 1)
    )
    margins -= math.lgamma(total + 1)

    def log_p(x: int) -> float:
        cells = math.lgamma(x + 1) + math.lgamma(rows - x + 1) + math.lgamma(cols - x + 1)
        return margins - cells - math.lgamma(total - rows - cols + x + 1)

    observed = log_p(a) + 1e-7  # tables as likely as the observed one count too
    p = sum(math.exp(value) for value in map(log_p, range(low, high + 1)) if value <= observed)
    return min(1.0, p)


def percent(value: float, *, unit: bool = True) -> str:
    """A share as people read it, in one format everywhere: ``63.9 %``, ``0.15 %``."""
    return _percent(value, unit=unit)


def _percent(value: float, *, unit: bool = True) -> str:
    pct = value * 100
    text = f"{pct:.2g}" if 0 < pct < 1 else f"{pct:.1f}"
    return f"{text} %" if unit else text

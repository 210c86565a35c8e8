"""How long a trial may run before it counts as hung.

With ``--timeout`` the deadline is fixed. Without it, the deadline adapts: a multiple of the slowest
trial of the same variant that finished so far (any outcome but hung or crashed), never below a
floor; a slow strategy (spawning processes) does not make a fast one's hangs expensive. A variant
with no finished trial gets the generous initial deadline — its first trial may just be slow — until
it has hung `BORROW_AFTER` times; then it borrows from the quickest other variant of its scenario,
so a variant that always hangs costs little more than the others' trials instead of seconds.

An adaptive deadline is a guess, and a loaded machine can stretch a trial far past it. So when one
passes, the engine takes a short look (`PROBE`) at the CPU time of the worker's processes: a trial
that used next to none of it in that time is blocked, and hung; one that is still computing gets more
time, a look at a time, up to `STRETCH` times its deadline and at most `MAX_EXTRA` past it (where
a busy livelock ends).
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["AdaptiveTimeout"]


@dataclass
class AdaptiveTimeout:
    """The deadline policy of one scenario (its variants' deadlines).

    Attributes:
        fixed: A deadline set by the user; when given, nothing adapts.
        factor: Multiple of the slowest finished trial.
        floor: The shortest adaptive deadline: absorbs scheduling noise on a busy machine.
        initial: The deadline before any trial has finished.
        ceiling: The longest adaptive deadline, so one slow outlier cannot make hangs expensive.
    """

    fixed: float | None = None
    factor: float = 10.0
    floor: float = 0.05
    initial: float = 2.0
    ceiling: float = 10.0
    slowest: dict[str, float] = field(default_factory=dict, init=False)
    hangs: dict[str, int] = field(default_factory=dict, init=False)

    BORROW_AFTER = 2
    #: How long the engine watches a trial's CPU use once its adaptive deadline passed.
    PROBE = 0.03
    #: The share of one CPU a trial must use during a look to count as still working.
    BUSY = 0.05
    #: A trial that keeps working gets at most this many times its deadline...
    STRETCH = 5.0
    #: ... and at most this many seconds past it (a longer deadline already absorbs a busy machine).
    MAX_EXTRA = 0.5

    def observe(self, duration: float, variant: str = "") -> None:
        """Learn from a trial of ``variant`` that finished by itself in ``duration`` seconds."""
        if duration > self.slowest.get(variant, -1.0):
            self.slowest[variant] = duration

    def hung(self, variant: str = "") -> None:
        """Learn that a trial of ``variant`` ran into its deadline."""
        self.hangs[variant] = self.hangs.get(variant, 0) + 1

    def current(self, variant: str = "") -> float:
        """The deadline, in seconds, for a trial of ``variant`` starting now."""
        if self.fixed is not None:
            return self.fixed
        slowest = self.slowest.get(variant)
        if slowest is None and self.slowest and self.hangs.get(variant, 0) >= self.BORROW_AFTER:
            # Its own trials never finish, so any sibling is as good a yardstick: take the
            # quickest, to keep a variant that always hangs cheap.
            slowest = min(self.slowest.values())
        if slowest is None:
            return self.initial
        return min(self.ceiling, max(self.floor, self.factor * slowest))

    def limit(self, variant: str = "") -> float | None:
        """The most a trial of ``variant`` starting now may get while it keeps using CPU; None when
        the deadline is the user's (a fixed deadline is never stretched)."""
        if self.fixed is not None:
            return None
        deadline = self.current(variant)
        return deadline + min((self.STRETCH - 1) * deadline, self.MAX_EXTRA)

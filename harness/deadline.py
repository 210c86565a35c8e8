"""How long a trial may run before it counts as hung.

With ``--timeout`` the deadline is fixed. Without it, the deadline adapts to the scenario: a multiple
of the slowest trial of the scenario that finished so far (any variant, any outcome but hung or
crashed), never below a floor. A variant that always hangs then costs a few tens of milliseconds per
trial once any trial of its scenario has finished, instead of a fixed multi-second timeout. Until
then, a generous initial deadline applies.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["AdaptiveTimeout"]


@dataclass
class AdaptiveTimeout:
    """The deadline policy of one scenario.

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
    slowest: float | None = field(default=None, init=False)

    def observe(self, duration: float) -> None:
        """Learn from a trial that finished by itself in ``duration`` seconds."""
        if self.slowest is None or duration > self.slowest:
            self.slowest = duration

    def current(self) -> float:
        """The deadline, in seconds, for a trial starting now."""
        if self.fixed is not None:
            return self.fixed
        if self.slowest is None:
            return self.initial
        return min(self.ceiling, max(self.floor, self.factor * self.slowest))

"""Bounded-preemption exhaustive search (CHESS, Musuvathi & Qadeer, PLDI 2007), one variant at a time.

Most concurrency bugs need few preemptions — taking the baton from a thread that could have gone on.
Exploring *every* schedule with at most K of them is feasible when actors are small, and when it
finishes without a failure it proves something sampling cannot: "all N schedules within K
preemptions explored".

The search lives in the engine (the parent): each schedule is a prefix of forced choices run to the
end by the default policy in a worker, which reports back every choice point it met with the threads
that could have run. Each alternative after the prefix's last forced choice becomes a new prefix — if
it stays within the budget (switching when the current thread blocked or finished costs nothing).
Branching only after the last forced choice visits each schedule once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.controlled.schedule import Decision

__all__ = ["Explorer"]


@dataclass
class Explorer:
    """The depth-first frontier of one variant's schedules.

    Attributes:
        budget: The most preemptions a schedule may have.
        limit: Stop after this many schedules (the search is then not exhaustive).
    """

    budget: int
    limit: int
    frontier: list[tuple[tuple[tuple[int, int], ...], int]] = field(default_factory=lambda: [((), 0)])
    started: int = 0
    finished: int = 0
    abandoned: bool = False

    def next(self) -> tuple[tuple[int, int], ...] | None:
        """The next prefix to run, or None (none now: others may still be running)."""
        if not self.frontier or self.started >= self.limit:
            return None
        prefix, _ = self.frontier.pop()
        self.started += 1
        return prefix

    def abandon(self) -> None:
        """Stop the search: its variant cannot be scheduled (a schedule was unsupported)."""
        self.frontier.clear()
        self.abandoned = True

    def done(self) -> bool:
        return (not self.frontier or self.started >= self.limit) and self.finished >= self.started

    @property
    def complete(self) -> bool:
        """Every schedule within the budget was run."""
        return not self.frontier and not self.abandoned and self.done()

    def feed(self, prefix: tuple[tuple[int, int], ...], decisions: list[Decision]) -> None:
        """A schedule finished; push its unexplored alternatives."""
        self.finished += 1
        cost = sum(1 for choice, _ in prefix if self._was_preemption(decisions, choice))
        after = prefix[-1][0] if prefix else -1
        children = []
        for decision in decisions:
            if decision.choice <= after:
                continue
            for thread in decision.enabled:
                if thread == decision.chosen:
                    continue
                extra = 1 if decision.current in decision.enabled and thread != decision.current else 0
                if cost + extra > self.budget:
                    continue
                children.append(((*prefix, (decision.choice, thread)), cost + extra))
        # Depth-first, earliest alternatives explored first.
        self.frontier.extend(reversed(children))

    @staticmethod
    def _was_preemption(decisions: list[Decision], choice: int) -> bool:
        for decision in decisions:
            if decision.choice == choice:
                return decision.preemption
        return False

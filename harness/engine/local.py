"""Controlled trials in this process: for ``stress replay``, and for measuring how fast a strategy
finds a bug (schedules to the first failure) without the engine's workers in between."""

from __future__ import annotations

import time
from dataclasses import dataclass

from harness.config import RunConfig
from harness.controlled.session import Control, sampled_control
from harness.detect.instrument import Instrumenter
from harness.engine.driver import scope_for, trial_shape
from harness.engine.runner import TrialRun, run_trial
from harness.perturb.plan import Plan, make_plan
from harness.perturb.preempt import Preemptor
from harness.results.outcome import Outcome
from harness.scenario import Variant
from harness.scope import Scope

__all__ = ["FirstFailure", "LocalRunner", "first_failure"]


class LocalRunner:
    """Runs one variant's controlled trials here, shaped as ``config`` says (size, actors), with
    switches in ``scope`` (default: the variant's files)."""

    def __init__(self, variant: Variant, config: RunConfig, *, scope: Scope | None = None) -> None:
        self.variant = variant
        self.size, self.actors = trial_shape(variant, config)
        scope = scope or scope_for([variant])
        self.preemptor = Preemptor(scope)
        self.instrumenter = Instrumenter(scope)

    def run(self, control: Control, plan: Plan, **options: object) -> TrialRun:
        return run_trial(
            self.variant,
            plan,
            size=self.size,
            preemptor=self.preemptor,
            instrumenter=self.instrumenter,
            actors=self.actors,
            control=control,
            **options,  # type: ignore[arg-type]
        )

    def close(self) -> None:
        self.preemptor.close()

    def __enter__(self) -> LocalRunner:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


@dataclass(frozen=True)
class FirstFailure:
    """How many schedules it took to see the variant fail (None: not within the limit), and how
    long."""

    schedules: int | None
    seconds: float
    outcome: Outcome | None


def first_failure(variant: Variant, config: RunConfig, *, limit: int) -> FirstFailure:
    """Sample schedules as ``stress run --mode controlled`` does with ``config`` (same strategy mix,
    same seeds, same PCT length estimate) until the first failure."""
    started = time.perf_counter()
    length = Control.length
    with LocalRunner(variant, config) as runner:
        for number in range(limit):
            plan = make_plan(config.perturbation, seed=config.seed, trial=number)
            run = runner.run(sampled_control(config, number, plan.seed, length), plan)
            length = max(length if number else 0.0, run.progress)
            if run.outcome.is_failure:
                return FirstFailure(number + 1, time.perf_counter() - started, run.outcome)
    return FirstFailure(None, time.perf_counter() - started, None)

"""One trial, in this process: how what happens becomes an outcome."""

from __future__ import annotations

import re
import sys
import threading

import pytest

from harness.engine.runner import run_trial
from harness.perturb.knobs import Knob, Perturbation
from harness.perturb.plan import make_plan
from harness.perturb.preempt import Preemptor
from harness.results.outcome import Outcome
from harness.scenario import Scenario, Variant
from harness.scope import Scope
from harness.trial import Trial

PLAN = make_plan(Perturbation().with_(preempt=Knob()), seed=1, trial=0)


def variant_of(fn: object) -> Variant:
    scenario = Scenario("unit", "test scenario")
    scenario.variant("v", expect="safe")(fn)  # type: ignore[arg-type]
    return next(iter(scenario))


def run(fn: object, plan: object = PLAN) -> object:
    return run_trial(variant_of(fn), plan, size=10, preemptor=Preemptor(Scope(files=[__file__])))  # type: ignore[arg-type]


def test_clean_trial_passes() -> None:
    def body(trial: Trial) -> None:
        results = trial.run_threads(lambda: 7, count=3)
        trial.check(results == [7, 7, 7], "results in actor order")

    result = run(body)
    assert result.outcome is Outcome.PASSED  # type: ignore[attr-defined]
    assert result.evidence is None  # type: ignore[attr-defined]


def test_broken_check_fails_with_its_message() -> None:
    def body(trial: Trial) -> None:
        trial.check(1 + 1 == 2, "fine")
        trial.check(False, "balance is -10")

    result = run(body)
    assert result.outcome is Outcome.FAILED  # type: ignore[attr-defined]
    assert result.evidence.messages == ("balance is -10",)  # type: ignore[attr-defined]


def test_actor_exception_is_error_even_when_a_check_also_fails() -> None:
    def boom() -> None:
        raise KeyError("missing")

    def body(trial: Trial) -> None:
        trial.run_threads(boom, count=2)
        trial.check(False, "also broken")

    result = run(body)
    assert result.outcome is Outcome.ERROR  # type: ignore[attr-defined]
    assert len(result.evidence.tracebacks) == 2  # type: ignore[attr-defined]
    assert "KeyError: 'missing'" in result.evidence.tracebacks[0]  # type: ignore[attr-defined]
    headline, check = result.evidence.messages  # type: ignore[attr-defined]
    # The exception broke the trial: it heads the evidence, the body's later check comes second.
    assert re.fullmatch(r"KeyError: 'missing' — in boom#[01], at .*test_runner\.py:\d+ in boom", headline), headline
    assert check == "also broken"


@pytest.mark.parametrize("exc", [SystemExit(4), KeyboardInterrupt()])
def test_system_exit_and_keyboard_interrupt_in_an_actor_are_errors(exc: BaseException) -> None:
    def actor() -> None:
        raise exc

    result = run(lambda trial: trial.run_threads(actor, count=1))
    assert result.outcome is Outcome.ERROR  # type: ignore[attr-defined]
    assert type(exc).__name__ in result.evidence.tracebacks[0]  # type: ignore[attr-defined]


def test_exception_in_a_thread_the_variant_started_itself_is_caught_by_excepthook() -> None:
    def actor() -> None:
        raise ValueError("from a raw thread")

    def body(trial: Trial) -> None:
        thread = threading.Thread(target=actor)
        thread.start()
        thread.join()

    result = run(body)
    assert result.outcome is Outcome.ERROR  # type: ignore[attr-defined]
    assert "from a raw thread" in result.evidence.tracebacks[0]  # type: ignore[attr-defined]
    assert threading.excepthook is not None


def test_exception_in_the_variant_body_is_error() -> None:
    def body(trial: Trial) -> None:
        raise RuntimeError("setup failed")

    result = run(body)
    assert result.outcome is Outcome.ERROR  # type: ignore[attr-defined]
    assert "in variant" in result.evidence.tracebacks[0]  # type: ignore[attr-defined]


def test_plan_start_order_is_applied_and_recorded() -> None:
    plan = make_plan(Perturbation().with_(preempt=Knob(), barrier=False, jitter=Knob()), seed=5, trial=3)
    started: list[int] = []
    lock = threading.Lock()

    def body(trial: Trial) -> None:
        def actor(index: int) -> None:
            with lock:
                started.append(index)

        with trial.threads() as group:
            for index in range(6):
                group.start(actor, index)

    result = run(body, plan)
    order = [s.actor for s in result.starts[0]]  # type: ignore[attr-defined]
    assert order == [s.actor for s in plan.starts(6)]
    assert sorted(order) == list(range(6))
    assert order != list(range(6))  # seed 5, trial 3 shuffles; a fixed plan, not luck


def test_switch_interval_is_set_for_the_trial_and_restored() -> None:
    plan = make_plan(Perturbation().with_(preempt=Knob(), switch_interval=Knob.fixed(1e-4)), seed=1, trial=0)
    before = sys.getswitchinterval()
    seen: list[float] = []
    run(lambda trial: seen.append(sys.getswitchinterval()), plan)
    assert seen == [pytest.approx(1e-4)]
    assert sys.getswitchinterval() == before


def test_size_reaches_the_trial() -> None:
    sizes: list[int] = []
    run(lambda trial: sizes.append(trial.size))
    assert sizes == [10]


def test_trial_rng_is_seeded_from_the_plan() -> None:
    draws: list[float] = []
    run(lambda trial: draws.append(trial.rng.random()))
    run(lambda trial: draws.append(trial.rng.random()))
    assert draws[0] == draws[1]

from __future__ import annotations

import pytest

from harness.engine.deadline import AdaptiveTimeout


def test_fixed_timeout_never_adapts() -> None:
    policy = AdaptiveTimeout(fixed=0.3)
    policy.observe(5.0)
    assert policy.current() == 0.3


def test_initial_deadline_until_a_trial_finishes() -> None:
    assert AdaptiveTimeout().current() == 2.0


def test_adapts_to_a_multiple_of_the_slowest_with_floor_and_ceiling() -> None:
    policy = AdaptiveTimeout(factor=10, floor=0.05, ceiling=10)
    policy.observe(0.001)
    assert policy.current() == 0.05
    policy.observe(0.02)
    policy.observe(0.004)
    assert policy.current() == 0.2
    policy.observe(3.0)
    assert policy.current() == 10


def test_each_variant_adapts_to_itself() -> None:
    policy = AdaptiveTimeout(factor=10, floor=0.05, ceiling=10)
    policy.observe(0.3, "pool/spawn")
    policy.observe(0.01, "pool/fork")
    assert policy.current("pool/fork") == pytest.approx(0.1)  # its own, not the slow spawn's
    assert policy.current("pool/spawn") == pytest.approx(3.0)


def test_a_variant_that_keeps_hanging_borrows_its_scenarios_deadline() -> None:
    policy = AdaptiveTimeout(factor=10, floor=0.05, ceiling=10, initial=2.0)
    policy.observe(0.01, "pipe/end-message")
    policy.observe(0.2, "pipe/slow-strategy")
    assert policy.current("pipe/parent-keeps-ends") == 2.0  # its first trial may just be slow
    policy.hung("pipe/parent-keeps-ends")
    assert policy.current("pipe/parent-keeps-ends") == 2.0
    policy.hung("pipe/parent-keeps-ends")
    assert policy.current("pipe/parent-keeps-ends") == pytest.approx(0.1)


def test_an_adaptive_deadline_may_stretch_for_a_trial_still_working_a_fixed_one_never() -> None:
    assert AdaptiveTimeout(fixed=0.3).limit() is None
    policy = AdaptiveTimeout(factor=10, floor=0.05, ceiling=10, initial=2.0)
    policy.observe(0.001, "counter/lock")
    assert policy.limit("counter/lock") == pytest.approx(0.25)  # five times its 50 ms deadline
    assert policy.limit("counter/new") == pytest.approx(2.5)  # never more than 0.5 s past it

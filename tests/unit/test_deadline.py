from __future__ import annotations

from harness.deadline import AdaptiveTimeout


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

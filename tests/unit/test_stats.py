from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.perturb.knobs import Perturbation
from harness.perturb.plan import Plan, make_plan
from harness.results.outcome import Outcome, TrialResult
from harness.results.stats import ZERO, VariantStats, Verdict, log_bin, rule_of_three, wilson
from harness.scenario import Expect


def test_wilson_matches_known_values() -> None:
    # Reference: Wilson score interval, z = 1.96 (Newcombe 1998, table I: 81/263).
    low, high = wilson(81, 263)
    assert low == pytest.approx(0.2553, abs=1e-3)
    assert high == pytest.approx(0.3662, abs=1e-3)


def test_wilson_edges() -> None:
    assert wilson(0, 0) == (0.0, 1.0)
    low, high = wilson(0, 100)
    assert low == 0.0
    assert high == pytest.approx(0.037, abs=1e-3)
    low, high = wilson(100, 100)
    assert high == 1.0
    assert low == pytest.approx(0.963, abs=1e-3)


@given(st.integers(1, 10_000).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_wilson_contains_the_observed_rate(case: tuple[int, int]) -> None:
    failures, trials = case
    low, high = wilson(failures, trials)
    assert 0.0 <= low <= failures / trials <= high <= 1.0


def test_rule_of_three() -> None:
    assert rule_of_three(2000) == pytest.approx(0.0015)
    assert rule_of_three(1) == 1.0


@pytest.mark.parametrize(
    ("expect", "failures", "verdict"),
    [
        (Expect.UNSAFE, 3, Verdict.EXPOSED),
        (Expect.UNSAFE, 0, Verdict.NOT_EXPOSED),
        (Expect.SAFE, 0, Verdict.HELD),
        (Expect.SAFE, 1, Verdict.BROKEN),
    ],
)
def test_verdicts(expect: Expect, failures: int, verdict: Verdict) -> None:
    assert Verdict.judge(expect, failures) is verdict
    assert verdict.as_expected is (verdict is not Verdict.BROKEN)


def _result(seq: int, outcome: Outcome, duration: float = 0.001) -> TrialResult:
    plan = Plan(seq, 1, 0.0, 0.0, None, 0.0, False, False)
    return TrialResult("s/v", seq, seq, outcome, duration, plan)


def test_variant_stats_tally_and_earliest_example() -> None:
    stats = VariantStats("s/v", Expect.SAFE)
    for seq, outcome in [(3, Outcome.PASSED), (2, Outcome.HUNG), (1, Outcome.FAILED), (4, Outcome.PASSED)]:
        stats.add(_result(seq, outcome))
    summary = stats.summary()
    assert summary.trials == 4
    assert summary.failures == 2
    assert summary.by_outcome == {Outcome.PASSED: 2, Outcome.HUNG: 1, Outcome.FAILED: 1}
    assert summary.rate == 0.5
    assert summary.verdict is Verdict.BROKEN
    assert summary.example is not None
    assert summary.example.seq == 1
    assert summary.rate_text() == "50.0 % (15.0–85.0)"


def test_zero_failures_never_reads_as_safe() -> None:
    stats = VariantStats("s/v", Expect.SAFE)
    for seq in range(2000):
        stats.add(_result(seq, Outcome.PASSED))
    summary = stats.summary()
    assert summary.rate_text() == "0 (< 0.15 %)"
    assert summary.to_dict()["upper_bound_if_clean"] == pytest.approx(3 / 2000)
    assert "safe" not in summary.rate_text()

    few = VariantStats("s/v", Expect.SAFE)
    for seq in range(2):
        few.add(_result(seq, Outcome.PASSED))
    assert few.summary().rate_text() == "0 of 2 judged"  # not "0 (< 100.0 %)", which bounds nothing


def test_tiny_knob_values_count_in_the_lowest_bin_of_their_chart() -> None:
    # --jitter 0:100us now and then draws nanoseconds: they share the 1 µs bin, not a bin each.
    stats = VariantStats("x/y", Expect.UNSAFE)
    for trial, jitter in enumerate((5.6e-9, 3e-8, 4e-7, 1e-6, 5e-5, 0.0)):
        plan = replace(make_plan(Perturbation(), seed=1, trial=trial), jitter=jitter)
        stats.add(TrialResult("x/y", trial, trial, Outcome.FAILED if trial % 2 else Outcome.PASSED, 0.001, plan))
    assert sorted(stats.knobs["jitter"]) == [ZERO, log_bin(1e-6), log_bin(5e-5)]
    assert stats.knobs["jitter"][log_bin(1e-6)] == [4, 2]

from __future__ import annotations

import random
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.errors import ConfigError
from harness.perturb.knobs import Knob, Perturbation, format_seconds, parse_seconds
from harness.perturb.plan import Plan, make_plan


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("0.5", 0.5), ("200ms", 0.2), ("50us", 50e-6), ("50µs", 50e-6), ("3s", 3.0), ("1e-3", 1e-3), ("10ns", 1e-8)],
)
def test_parse_seconds(text: str, seconds: float) -> None:
    assert parse_seconds(text) == pytest.approx(seconds)


def test_format_seconds() -> None:
    assert format_seconds(0.0012) == "1.2 ms"
    assert format_seconds(35e-6) == "35 µs"
    assert format_seconds(0) == "0"
    assert format_seconds(2.5) == "2.5 s"


@pytest.mark.parametrize(
    ("text", "knob"),
    [("off", Knob()), ("0", Knob()), ("0.01", Knob(0.01, 0.01)), ("0.001:0.1", Knob(0.001, 0.1))],
)
def test_parse_probability_knob(text: str, knob: Knob) -> None:
    assert Knob.parse(text, unit="probability", where="--preempt") == knob


def test_parse_duration_knob_with_units() -> None:
    assert Knob.parse("1us:5ms", unit="seconds", where="--switch-interval") == Knob(1e-6, 5e-3)


@pytest.mark.parametrize(
    ("text", "message"),
    [("1.5", "probability in [0, 1]"), ("x", "not a probability"), ("0.1:0.01", "low end"), ("-1", "must be")],
)
def test_bad_knob_names_the_value(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)) as info:
        Knob.parse(text, unit="probability", where=f"--preempt {text}")
    assert str(info.value).startswith(f"--preempt {text}: ")


def test_log_uniform_sampling_stays_in_range_and_spreads_over_decades() -> None:
    knob = Knob(1e-6, 1e-2)
    rng = random.Random(0)
    values = [knob.sample(rng) for _ in range(4000)]
    assert all(1e-6 <= v <= 1e-2 for v in values)
    below_1e4 = sum(v < 1e-4 for v in values) / len(values)
    assert 0.4 < below_1e4 < 0.6  # half the decades, half the samples


def test_knob_text_round_trips() -> None:
    for knob in (Knob(), Knob(0.5, 0.5), Knob(1e-3, 2e-2)):
        assert Knob.parse(knob.to_text(), unit="probability", where="x") == knob


@given(seed=st.integers(0, 2**40), trial=st.integers(0, 10**7))
def test_same_seed_and_trial_give_the_same_plan(seed: int, trial: int) -> None:
    perturbation = Perturbation()
    first = make_plan(perturbation, seed=seed, trial=trial)
    assert first == make_plan(perturbation, seed=seed, trial=trial)
    assert first.starts(4) == make_plan(perturbation, seed=seed, trial=trial).starts(4)
    assert Plan.from_dict(first.to_dict()) == first


@given(seed=st.integers(0, 2**32))
def test_plans_differ_between_trials(seed: int) -> None:
    plans = {make_plan(Perturbation(), seed=seed, trial=t).seed for t in range(20)}
    assert len(plans) == 20


def test_switching_one_knob_off_leaves_the_others_alone() -> None:
    full = make_plan(Perturbation(), seed=3, trial=11)
    calm = make_plan(Perturbation().with_(switch_interval=Knob()), seed=3, trial=11)
    assert calm.switch_interval is None
    assert (calm.preempt, calm.jitter, calm.seed) == (full.preempt, full.jitter, full.seed)


def test_plan_values_respect_the_knobs() -> None:
    perturbation = Perturbation(preempt=Knob(0.01, 0.02), jitter=Knob(0, 1e-4), shuffle=True, barrier=False)
    for trial in range(200):
        plan = make_plan(perturbation, seed=1, trial=trial)
        assert 0.01 <= plan.preempt <= 0.02
        assert 0 <= plan.jitter <= 1e-4
        assert not plan.barrier
        starts = plan.starts(5)
        assert sorted(s.actor for s in starts) == [0, 1, 2, 3, 4]
        assert all(0 <= s.delay <= plan.jitter for s in starts)


def test_no_perturbation_means_in_order_and_no_delay() -> None:
    plan = make_plan(Perturbation.none(), seed=1, trial=0)
    assert plan.preempt == 0
    assert plan.switch_interval is None
    assert not plan.barrier
    assert [(s.actor, s.delay) for s in plan.starts(3)] == [(0, 0.0), (1, 0.0), (2, 0.0)]
    assert plan.describe() == "preempt off · in order · no barrier"


def test_a_long_duration_reads_in_minutes_hours_or_days() -> None:
    # A hang's evidence may name a wait's timeout of weeks: "50 days", never "4.3e+06 s".
    assert [format_seconds(s) for s in (4.3e6, 7200, 150, 100, 1.5, 0.0012, 3e-5)] == [
        "50 days", "2 h", "2.5 min", "100 s", "1.5 s", "1.2 ms", "30 µs",
    ]  # fmt: skip

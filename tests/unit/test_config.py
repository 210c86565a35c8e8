from __future__ import annotations

from typing import Any

import pytest

from harness.config import DEFAULT_ITERATIONS, REPLAY_ITERATIONS, Layer, build_config
from harness.errors import ConfigError
from harness.perturb.knobs import Knob, Perturbation


def flags(**values: Any) -> Layer:
    return Layer(values, lambda key, value: f"--{key.replace('_', '-')} {value}")


def toml(**values: Any) -> Layer:
    return Layer(values, lambda key, value: f"{key} = {value!r} in [tool.stress] of pyproject.toml")


def build(*layers: Layer) -> Any:
    return build_config(list(layers), random_seed=lambda: 1234, jobs=lambda: 2)


def test_defaults() -> None:
    config = build()
    assert config.iterations == DEFAULT_ITERATIONS
    assert config.seed == 1234
    assert config.jobs == 2
    assert config.timeout is None
    assert config.perturbation == Perturbation()


def test_first_layer_wins() -> None:
    config = build(flags(iterations="10"), toml(iterations=50, jobs=3))
    assert config.iterations == 10
    assert config.jobs == 3


def test_errors_name_the_value_and_its_source() -> None:
    with pytest.raises(ConfigError) as info:
        build(flags(), toml(iterations=-3))
    assert str(info.value) == "iterations = -3 in [tool.stress] of pyproject.toml: must be an integer >= 1"


def test_unknown_setting_suggests_a_name() -> None:
    with pytest.raises(ConfigError, match="did you mean 'iterations'"):
        build(toml(iteration=3))


def test_timeout_forms() -> None:
    assert build(flags(timeout="200ms")).timeout == pytest.approx(0.2)
    assert build(flags(timeout="auto")).timeout is None
    assert build(toml(timeout=2)).timeout == 2.0
    with pytest.raises(ConfigError, match="positive"):
        build(flags(timeout="-1"))


def test_knobs_and_switches() -> None:
    config = build(flags(preempt="0.05", switch_interval="off", shuffle=False))
    assert config.perturbation.preempt == Knob.fixed(0.05)
    assert config.perturbation.switch_interval.off
    assert config.perturbation.shuffle is False
    assert config.perturbation.barrier is True


def test_no_perturbation_overrides_knobs_of_lower_layers_only() -> None:
    config = build(flags(perturbation=False), toml(preempt="0.01"))
    assert config.perturbation == Perturbation.none()
    config = build(flags(preempt="0.01"), toml(perturbation=False))
    assert config.perturbation == Perturbation.none().with_(preempt=Knob.fixed(0.01))


def test_no_perturbation_with_a_knob_in_the_same_layer_conflicts() -> None:
    with pytest.raises(ConfigError, match="conflicts"):
        build(flags(perturbation=False, jitter="1ms"))


def test_replay_needs_a_seed_and_defaults_to_few_iterations() -> None:
    with pytest.raises(ConfigError, match="needs --seed"):
        build(flags(trial="4"))
    config = build(flags(trial="4", seed="9"))
    assert config.trial == 4
    assert config.iterations == REPLAY_ITERATIONS


def test_booleans_from_text() -> None:
    assert build(toml(strict="yes")).strict is True
    with pytest.raises(ConfigError, match="true or false"):
        build(toml(strict="maybe"))

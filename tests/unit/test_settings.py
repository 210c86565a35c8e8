"""Settings from the environment and [tool.stress]: precedence, and errors that name their source."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.config import FLAGS, Layer, build_config
from harness.errors import ConfigError
from harness.settings import environment_layer, find_pyproject, layers, pyproject_layer


def project(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "pyproject.toml"
    path.write_text(body)
    return path


def config_for(tmp_path: Path, flags: dict[str, object], environ: dict[str, str]) -> object:
    return build_config(layers(Layer(flags, FLAGS), start=tmp_path, environ=environ), random_seed=lambda: 0)


def test_flags_beat_environment_beats_pyproject_beats_defaults(tmp_path: Path) -> None:
    project(tmp_path, '[tool.stress]\niterations = 30\nseed = 9\njobs = 1\nsize = 4\npreempt = "0.5"\n')
    config = config_for(tmp_path, {"iterations": "10"}, {"STRESS_ITERATIONS": "20", "STRESS_SEED": "8"})
    assert config.iterations == 10  # flag
    assert config.seed == 8  # environment
    assert config.jobs == 1  # pyproject
    assert config.size == 4
    assert config.perturbation.preempt.low == 0.5
    assert config.timeout is None  # default


def test_pyproject_is_found_above_the_working_directory(tmp_path: Path) -> None:
    path = project(tmp_path, "[tool.stress]\niterations = 12\n")
    inner = tmp_path / "src" / "pkg"
    inner.mkdir(parents=True)
    assert find_pyproject(inner) == path
    assert config_for(inner, {}, {}).iterations == 12


def test_dashed_keys_and_booleans_in_pyproject(tmp_path: Path) -> None:
    project(tmp_path, "[tool.stress]\nswitch-interval = 'off'\nshuffle = false\nmode = 'controlled'\n")
    with pytest.raises(ConfigError, match=r"does nothing in controlled mode"):
        config_for(tmp_path, {}, {})
    project(tmp_path, "[tool.stress]\nswitch-interval = 'off'\nshuffle = false\n")
    config = config_for(tmp_path, {}, {})
    assert config.perturbation.switch_interval.off
    assert config.perturbation.shuffle is False


@pytest.mark.parametrize(
    ("body", "environ", "message"),
    [
        ("[tool.stress]\niterations = -3\n", {}, r"iterations = -3 in \[tool.stress\] of .*pyproject.toml: must be"),
        ("[tool.stress]\niteratons = 3\n", {}, r"iteratons = 3 in \[tool.stress\].*did you mean 'iterations'"),
        ("[tool.stress]\nseed = 'abc'\n", {}, r"seed = 'abc' in \[tool.stress\]"),
        ("[tool.stress]\npreempt = [1, 2]\n", {}, r"preempt in \[tool.stress\].*single value"),
        ("[tool.stress]\nsweep = ['preempt=0']\n", {}, r"write it as a string"),
        ("[tool.stress\n", {}, r"not valid TOML"),
        ("[tool]\nstress = 3\n", {}, r"must be a table of settings"),
        ("", {"STRESS_ITERATIONS": "0"}, r"STRESS_ITERATIONS=0 \(environment\): must be an integer >= 1"),
        ("", {"STRESS_TIMOUT": "1"}, r"STRESS_TIMOUT: unknown setting 'timout' \(did you mean 'timeout'\?\)"),
        ("", {"STRESS_MODE": "chaos"}, r"STRESS_MODE=chaos \(environment\): use one of stress, controlled"),
    ],
)
def test_a_bad_value_names_where_it_was_written(
    tmp_path: Path, body: str, environ: dict[str, str], message: str
) -> None:
    project(tmp_path, body)
    with pytest.raises(ConfigError, match=message):
        config_for(tmp_path, {}, environ)


def test_unrelated_stress_variables_are_left_alone(tmp_path: Path) -> None:
    layer = environment_layer({"STRESS_NG_WORKERS": "4", "STRESSED": "yes", "STRESS_": "x"})
    assert dict(layer.values) == {}


def test_no_pyproject_is_an_empty_layer() -> None:
    assert dict(pyproject_layer(None).values) == {}

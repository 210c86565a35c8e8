"""Bad input, generated: the command line, settings and scenario declarations never end in a
traceback — a user error is one line and exit 2, anything valid runs."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.cli import main
from harness.config import KNOWN, Layer, build_config
from harness.errors import ConfigError, ScenarioError
from harness.scenario import Scenario
from harness.settings import layers

FLAGS = [
    "--iterations", "-n", "--seed", "--timeout", "--jobs", "--size", "--preempt", "--pause", "--switch-interval",
    "--jitter", "--sync", "--delay", "--start-method", "--trial", "--sweep", "--actors", "--mode", "--strategy",
    "--pct-depth", "--max-preemptions", "--granularity", "--step-limit", "--variant",
]  # fmt: skip
SWITCHES = ["--shuffle", "--no-shuffle", "--barrier", "--no-barrier", "--no-perturbation", "--strict", "--quiet"]

values = st.one_of(
    st.integers(-10, 10**7).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.sampled_from(
        [
            "off",
            "auto",
            "0",
            "1:0",
            "1e-3:2e-2",
            "-1",
            "nan",
            "inf",
            "",
            " ",
            "10ms",
            "5us",
            "controlled",
            "stress",
            "random",
            "pct",
            "line",
            "opcode",
            "spawn",
            "fork",
            "preempt=0,0.1",
            "knob=1",
            "lock",
            "no-lock",
            "counter/lock",
            "1,2",
            "--",
            "-",
            "x" * 300,
        ]
    ),
    st.text(max_size=12),
)
tokens = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(FLAGS), values).map(list),
        st.sampled_from(SWITCHES).map(lambda switch: [switch]),
        st.text(max_size=10).map(lambda text: [text]),
    ),
    max_size=5,
).map(lambda groups: [token for group in groups for token in group])


@contextlib.contextmanager
def scratch() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="stress-fuzz-"))
    previous = os.getcwd()
    os.chdir(folder)
    try:
        yield folder
    finally:
        os.chdir(previous)
        shutil.rmtree(folder, ignore_errors=True)


def invoke(args: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(args)
    return code, out.getvalue(), err.getvalue()


def check(code: int, stderr: str) -> None:
    assert "Traceback" not in stderr, stderr
    assert code in (0, 1, 2), (code, stderr)
    if code == 2:
        lines = stderr.strip().splitlines()
        assert len(lines) == 1, stderr
        assert lines[0].startswith("stress: error: "), stderr


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tokens)
def test_stress_run_with_random_arguments_runs_or_says_why_in_one_line(extra: list[str]) -> None:
    # Whatever came before, the last words keep a valid run small: one trial, one worker.
    with scratch():
        code, _, stderr = invoke(["run", "counter", *extra, "--variant", "lock", "-n", "1", "-j", "1", "-q"])
    check(code, stderr)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(["list", "show", "report", "compare", "replay", "run", "bogus", "--bogus"]), tokens)
def test_every_command_with_random_arguments_never_shows_a_traceback(command: str, extra: list[str]) -> None:
    if command == "run":
        extra = [*extra, "--variant", "lock", "-n", "1", "-j", "1", "-q"]
    with scratch():
        code, _, stderr = invoke([command, *extra])
    check(code, stderr)


settings_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**12), 10**12),
    st.floats(),
    st.text(max_size=20),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.one_of(st.sampled_from(KNOWN), st.text(max_size=12)), settings_values, max_size=6))
def test_any_settings_layer_is_a_config_or_a_config_error(values: dict[str, Any]) -> None:
    message = None
    try:
        build_config([Layer(values, lambda key, value: f"{key}={value!r}")], random_seed=lambda: 1, jobs=lambda: 2)
    except ConfigError as exc:
        message = str(exc)
    assert message is None or message.strip()


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.encode("unicode_escape").decode("ascii").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    if isinstance(value, float) and value != value:
        return "nan"
    if isinstance(value, float) and value in (float("inf"), float("-inf")):
        return "inf" if value > 0 else "-inf"
    return str(value)


toml_values = st.one_of(st.booleans(), st.integers(-(10**6), 10**6), st.floats(), st.text(max_size=15),
                        st.lists(st.integers(0, 9), max_size=3))  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(st.sampled_from([*KNOWN, "nope", "switch-interval", "max-preemptions"]), toml_values, max_size=5)
)
def test_any_tool_stress_table_is_a_config_or_an_error_naming_the_file(table: dict[str, Any]) -> None:
    body = "[tool.stress]\n" + "".join(f'"{key}" = {_toml(value)}\n' for key, value in table.items())
    with scratch() as folder:
        (folder / "pyproject.toml").write_text(body)
        message = None
        try:
            build_config(layers(Layer({}, lambda k, v: k), start=folder, environ={}), random_seed=lambda: 1)
        except ConfigError as exc:
            message = str(exc)
    assert message is None or "pyproject.toml" in message or "tool.stress" in message, message


@settings(max_examples=300, deadline=None)
@given(
    name=st.one_of(st.text(max_size=15), st.integers(), st.none()),
    size=st.one_of(st.integers(-3, 5), st.floats(), st.text(max_size=3), st.booleans()),
    actors=st.one_of(st.none(), st.integers(-3, 5), st.text(max_size=3)),
    variant=st.one_of(st.text(max_size=15), st.none()),
    expect=st.one_of(st.sampled_from(["safe", "unsafe", "SAFE", " unsafe "]), st.text(max_size=8), st.integers()),
)
def test_any_scenario_declaration_is_accepted_or_a_scenario_error(
    name: Any, size: Any, actors: Any, variant: Any, expect: Any
) -> None:
    def body(trial: object) -> None:
        pass

    message = None
    try:
        Scenario(name, "fuzzed", size=size, actors=actors).variant(variant, expect=expect)(body)
    except ScenarioError as exc:
        message = str(exc)
    assert message is None or message.strip()

"""Named bad inputs, one by one: each is one line on stderr that says what is wrong, and exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import FIXTURES, stress

CASES: dict[str, tuple[list[str], str, dict[str, str]]] = {
    # name: (arguments, what the message must contain, files to write first)
    "no scenario": (["run"], "Missing argument 'SCENARIO...'", {}),
    "unknown scenario": (["run", "countr"], "did you mean 'counter'", {}),
    "unknown command": (["rn", "counter"], "No such command 'rn'", {}),
    "unknown flag": (["run", "counter", "--iteration", "5"], "No such option '--iteration'", {}),
    "zero iterations": (["run", "counter", "--iterations", "0"], "--iterations 0: must be an integer >= 1", {}),
    "iterations not a number": (["run", "counter", "-n", "abc"], "--iterations abc: not an integer", {}),
    "negative seed": (["run", "counter", "--seed", "-1"], "--seed -1: must be an integer >= 0", {}),
    "zero timeout": (["run", "counter", "--timeout", "0"], "--timeout 0: must be a positive duration", {}),
    "probability above 1": (["run", "counter", "--preempt", "2"], "--preempt 2", {}),
    "reversed range": (["run", "counter", "--preempt", "0.5:0.1"], "--preempt 0.5:0.1", {}),
    "negative duration": (["run", "counter", "--jitter", "-1ms"], "--jitter -1ms", {}),
    "unknown start method": (["run", "counter", "--start-method", "thread"], "use one of fork, spawn, forkserver", {}),
    "sweep of an unknown knob": (["run", "counter", "--sweep", "nope=1"], "--sweep nope=1", {}),
    "trial without seed": (["run", "counter", "--trial", "3"], "--trial 3 needs --seed", {}),
    "no-perturbation and a knob": (["run", "counter", "--no-perturbation", "--preempt", "0.1"], "conflicts with", {}),
    "unknown variant": (["run", "counter", "--variant", "nope"], "no variant 'nope'", {}),
    "zero size": (["run", "counter", "--size", "0"], "--size 0: must be an integer >= 1", {}),
    "missing file": (["run", "missing.py"], "scenario file 'missing.py' does not exist", {}),
    "file with a syntax error": (["run", str(FIXTURES / "broken_syntax.py")], "syntax error", {}),
    "file that raises on import": (["run", str(FIXTURES / "raises_on_import.py")], "importing it raised", {}),
    "file without scenarios": (["run", "empty.py"], "defines no scenario", {"empty.py": "x = 1\n"}),
    "variant with a bad expect": (["run", str(FIXTURES / "bad_expect.py")], "expect", {}),
    "bad [tool.stress] value": (
        ["run", "counter"],
        "iterations = -3 in [tool.stress] of",
        {"pyproject.toml": "[tool.stress]\niterations = -3\n"},
    ),
    "pyproject that is not TOML": (["run", "counter"], "not valid TOML", {"pyproject.toml": "[tool.stress\n"}),
    "controlled mode with a knob": (["run", "counter", "--mode", "controlled", "--sync", "0.1"], "controlled mode", {}),
    "controlled mode on processes": (["run", "shared-value", "--mode", "controlled"], "its actors are processes", {}),
    "strategy without controlled mode": (["run", "counter", "--strategy", "pct"], "needs --mode controlled", {}),
    "report of a folder that is not a run": (["report", "."], "is not a run folder", {}),
    "compare with a missing run": (["compare", "nowhere", "elsewhere"], "is not a run folder", {}),
    "replay of a folder that is not a run": (["replay", "."], "is not a run folder", {}),
    "show of an unknown scenario": (["show", "deadlok"], "did you mean 'deadlock'", {}),
    "module that does not exist": (["run", "no_such_pkg.checks:x"], "cannot import 'no_such_pkg.checks'", {}),
    "scenario with no variant": (
        ["run", "lonely.py"],
        "lonely.py:2: scenario 'lonely' declares no variant",
        {"lonely.py": "from harness import Scenario\nscenario = Scenario('lonely', 'no variant')\n"},
    ),
    "two scenarios with one name": (
        ["run", "twins.py"],
        "twins.py:3: two scenarios are named 'twin' (the other: twins.py:2)",
        {
            "twins.py": "from harness import Scenario\na = Scenario('twin', 'one')\nb = Scenario('twin', 'two')\n"
            "a.variant('x', expect='safe')(lambda trial: None)\nb.variant('y', expect='safe')(lambda trial: None)\n"
        },
    ),
    "variant that takes no trial": (
        ["run", "bare.py"],
        "bare.py:3: variant 'check' of scenario 'bare' must take the trial as its one parameter: def check(trial)",
        {
            "bare.py": "from harness import Scenario\ns = Scenario('bare', 'no parameter')\n@s.variant(expect='safe')\n"
            "def check():\n    pass\n"
        },
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, name: str) -> None:
    args, message, files = CASES[name]
    for file, text in files.items():
        (tmp_path / file).write_text(text)
    out = stress(*args, cwd=tmp_path)
    assert out.code == 2, (out.code, out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("stress: error: "), out.stderr
    assert message in lines[0], lines[0]
    assert not out.stdout.strip(), out.stdout


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("STRESS_JOBS", "zero", "STRESS_JOBS=zero (environment): not an integer"),
        ("STRESS_PREEMPT", "often", "STRESS_PREEMPT=often (environment)"),
        ("STRESS_SEDE", "1", "STRESS_SEDE: unknown setting 'sede' (did you mean 'seed'?)"),
    ],
)
def test_bad_environment_is_one_line_and_exit_2(tmp_path: Path, variable: str, value: str, message: str) -> None:
    out = stress("run", "counter", cwd=tmp_path, env={variable: value})
    assert out.code == 2, out.stdout
    assert out.stderr.strip().splitlines() == [out.stderr.strip()]
    assert message in out.stderr


def test_an_import_with_threads_that_fails_the_second_time_is_one_line_and_exit_2(tmp_path: Path) -> None:
    # A fork copies no thread, so each worker imports the file again; an import that cannot run
    # twice would leave the trials without the threads they count on. The run stops with the reason.
    (tmp_path / "once.py").write_text(
        "import os, threading, time\nfrom harness import Scenario\ns = Scenario('once', 'x')\n"
        "os.mkdir('made')\nthreading.Thread(target=time.sleep, args=(60,), name='ticker', daemon=True).start()\n"
        "s.variant('x', expect='safe')(lambda trial: None)\n"
    )
    out = stress("run", "once.py", "-n", "5", cwd=tmp_path)
    assert out.code == 2, (out.code, out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("stress: error: once.py:4: importing it raised FileExistsError"), lines[0]
    assert "imported again in a worker: the import starts threads (ticker)" in lines[0], lines[0]
    assert list((tmp_path / "reports").glob("*")) == []  # no run folder with nothing in it is left

"""The pytest plugin, as a user meets it: a test file of theirs, run by pytest in a fresh process —
alone, with pytest-repeat's --count, with pytest-xdist's -n and with pytest-timeout."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = """
import threading

import pytest


class Counter:
    def __init__(self):
        self.value = 0
        self.lock = threading.Lock()

    def increment(self, times=1):
        for _ in range(times):
            self.value += 1

    def locked_increment(self, times=1):
        for _ in range(times):
            with self.lock:
                self.value += 1


@pytest.mark.stress(iterations=150)
def test_unlocked(stress_trial):
    counter = Counter()
    stress_trial.run_threads(counter.increment, 10, count=4)
    assert counter.value == 40


@pytest.mark.stress(iterations=150)
def test_locked(stress_trial):
    counter = Counter()
    stress_trial.run_threads(counter.locked_increment, 10, count=4)
    assert counter.value == 40
"""

MORE = """
import pytest

from test_counter import Counter

shared = Counter()


@pytest.mark.stress(iterations=60, threads=4)
def test_each_thread_sees_its_own_increment():
    before = shared.value
    shared.locked_increment()
    assert shared.value > before


@pytest.mark.stress(iterations=60, mode="controlled")
def test_unlocked_controlled(stress_trial):
    counter = Counter()
    stress_trial.run_threads(counter.increment, count=2)
    assert counter.value == 2


@pytest.mark.stress(iterations=300, expect="unsafe")
def test_known_race_is_still_there(stress_trial):
    counter = Counter()
    stress_trial.run_threads(counter.increment, 10, count=4)
    stress_trial.check(counter.value == 40, "lost an increment")


@pytest.mark.stress(iterations=-1)
def test_bad_marker(stress_trial):
    pass


def test_trial_without_marker(stress_trial):
    pass
"""


def pytest_run(
    folder: Path, *args: str, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("STRESS_", "PYTEST_"))}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**inherited, "COLUMNS": "120", **(env or {})},  # a test's own COLUMNS wins, the shell's does not
        check=False,
    )


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "pyproject.toml").write_text("[tool.pytest.ini_options]\naddopts = []\n")
    (tmp_path / "test_counter.py").write_text(TESTS)
    return tmp_path


def replay_words(text: str, how: str) -> list[str]:
    """The words of the replay command printed after ``replay (how):``: on its line, or below it,
    broken between words with backslashes."""
    head = f"replay ({how}):"
    rest = text[text.index(head) + len(head) :]
    if rest.startswith(" "):
        return shlex.split(rest[1:].split("\n", 1)[0])
    parts = []
    for line in rest.split("\n")[1:]:
        parts.append(line.strip().removesuffix("\\"))
        if not line.rstrip().endswith("\\"):
            break
    return shlex.split(" ".join(parts))


def outcome_counts(text: str) -> dict[str, int]:
    return {kind: int(n) for n, kind in re.findall(r"(\d+) (passed|failed|error)", text.splitlines()[-1])}


def test_an_unlocked_counter_fails_with_rate_evidence_and_replay_and_the_locked_one_passes(project: Path) -> None:
    done = pytest_run(project, "--stress-seed", "7")
    assert outcome_counts(done.stdout) == {"failed": 1, "passed": 1}, done.stdout + done.stderr
    failure = done.stdout.split("_ test_unlocked _", 1)[1]
    assert re.search(r"stress: \d+ of 150 trials failed — failure rate \d.* · seed \d+\n", failure)  # no bare mode
    assert "assert " in failure  # the test's own assertion, with pytest's explanation
    assert (
        "replay (re-runs the plan 20 times): pytest test_counter.py::test_unlocked --stress-seed 7 --stress-trial "
        in (failure)
    )
    assert "report: " in failure
    assert "test_counter.py::test_locked: 150 trials, 0 failed" in done.stdout  # the summary section


def test_the_replay_command_fails_the_same_way(project: Path) -> None:
    first = pytest_run(project, "test_counter.py::test_unlocked", "--stress-seed", "7")
    words = replay_words(first.stdout, "re-runs the plan 20 times")[1:]
    again = pytest_run(project, *words)
    assert outcome_counts(again.stdout) == {"failed": 1}, again.stdout
    trial = words[words.index("--stress-trial") + 1]
    assert re.search(rf"re-ran trial {trial}'s plan 20 times: failed \d+ of 20", again.stdout), again.stdout


def test_actor_style_controlled_mode_expect_unsafe_and_bad_markers(project: Path) -> None:
    (project / "test_more.py").write_text(MORE)
    done = pytest_run(project, "test_more.py", "--stress-seed", "3")
    out = done.stdout
    assert outcome_counts(out) == {"failed": 2, "passed": 2, "error": 1}, out + done.stderr
    assert "PASSED" not in out
    controlled = out.split("_ test_unlocked_controlled _", 1)[1]
    assert "schedules failed" in controlled
    assert "⇄" in controlled  # the interleaving
    assert "--stress-mode controlled" in controlled
    assert "--stress-schedule" in controlled
    assert "stress: @pytest.mark.stress(iterations=-1): must be an integer >= 1" in out
    assert "the stress_trial fixture needs @pytest.mark.stress" in out
    words = replay_words(controlled, "exact")
    assert "--stress-schedule" in words
    again = pytest_run(project, *words[1:])
    assert outcome_counts(again.stdout) == {"failed": 1}, again.stdout
    assert "assert 1 == 2" in again.stdout


def test_a_controlled_failure_fits_the_terminal_and_a_schedule_naming_no_thread_is_refused(project: Path) -> None:
    (project / "test_more.py").write_text(MORE)
    test = "test_more.py::test_unlocked_controlled"
    done = pytest_run(project, test, "--stress-seed", "3", env={"COLUMNS": "80"})
    assert outcome_counts(done.stdout) == {"failed": 1}, done.stdout
    section = done.stdout.split("_ test_unlocked_controlled _", 1)[1].split("short test summary", 1)[0]
    assert "⇄" in section  # the interleaving, drawn to the terminal's width
    wide = [line for line in section.splitlines() if len(line) > 80 and not line.startswith("report: ")]
    assert not wide, "\n".join(wide)  # only the report's path is left whole, to be copied
    summary = done.stdout.split(" stress ", 1)[1]
    assert f"{test}:\n  60 schedules, " in summary
    words = replay_words(section, "exact")[1:]
    at = words.index("--stress-schedule") + 1
    words[at] = "v2:0>7"
    wrong = pytest_run(project, *words)
    assert wrong.returncode == 4, wrong.stdout + wrong.stderr  # a usage error, not a failed test
    said = wrong.stdout + wrong.stderr
    assert "stress: schedule v2:0>7: there is no thread 7 (the threads: 0 MainThread" in said


def test_settings_come_from_options_markers_ini_and_pyproject(project: Path) -> None:
    (project / "pyproject.toml").write_text("[tool.pytest.ini_options]\nstress_seed = '5'\n\n[tool.stress]\njobs = 1\n")
    (project / "test_plain.py").write_text(
        "import pytest\n\n@pytest.mark.stress(threads=2)\ndef test_nothing():\n    pass\n"
    )
    done = pytest_run(project, "test_plain.py", "--stress-iterations", "33")
    assert outcome_counts(done.stdout) == {"passed": 1}, done.stdout + done.stderr
    assert "test_plain.py::test_nothing: 33 trials, 0 failed" in done.stdout
    (project / "pyproject.toml").write_text("[tool.stress]\niterations = 0\n")
    bad = pytest_run(project, "test_plain.py")
    assert "iterations = 0 in [tool.stress] of" in bad.stdout


FIXTURES = """
import threading

import pytest


@pytest.fixture
def items():
    return []


@pytest.fixture(scope="module")
def lock():
    return threading.Lock()


@pytest.mark.stress(iterations=40, threads=1)
def test_appends_to_a_function_fixture(items):
    worker = threading.Thread(target=items.append, args=(1,))
    worker.start()
    worker.join()
    assert items == [1]


@pytest.mark.stress(iterations=40, threads=1, shared_fixtures=True)
def test_shares_it_on_purpose(items):
    items.append(1)


@pytest.mark.stress(iterations=40)
def test_a_wider_fixture_is_fine(stress_trial, lock):
    total = []

    def add():
        with lock:
            total.append(1)

    stress_trial.run_threads(add, count=2)
    assert len(total) == 2
"""


def test_a_test_with_function_scoped_fixtures_is_refused_not_failed_by_its_own_leftovers(project: Path) -> None:
    (project / "test_fixtures.py").write_text(FIXTURES)
    done = pytest_run(project, "test_fixtures.py", "--stress-seed", "4")
    out = done.stdout
    assert outcome_counts(out) == {"failed": 1, "passed": 2}, out + done.stderr
    refused = out.split("_ test_appends_to_a_function_fixture _", 1)[1]
    assert "takes function-scoped fixtures (items)" in refused
    assert "shared_fixtures=True" in refused
    assert "trials failed" not in refused  # refused before any trial: no failure rate to misread


def test_the_replay_command_is_typed_where_pytest_was_started(project: Path) -> None:
    (project / "sub").mkdir()
    (project / "sub" / "test_counter.py").write_text(TESTS)
    done = pytest_run(project / "sub", "test_counter.py::test_unlocked", "--stress-seed", "7")
    replay = re.search(r"replay \([^)]*\): (pytest .*)", done.stdout)
    assert replay, done.stdout
    assert replay.group(1).startswith("pytest test_counter.py::test_unlocked ")  # not sub/test_counter.py
    again = pytest_run(project / "sub", *shlex.split(replay.group(1))[1:])
    assert outcome_counts(again.stdout) == {"failed": 1}, again.stdout


def test_with_pytest_repeat(project: Path) -> None:
    done = pytest_run(project, "--count", "3", "--stress-iterations", "80", "--stress-seed", "11")
    assert outcome_counts(done.stdout) == {"failed": 3, "passed": 3}, done.stdout + done.stderr
    # Each repetition gets its own replay command (CI=true makes pytest repeat them in the short summary).
    replays = set(re.findall(r"^replay \([^)]*\): pytest .*$", done.stdout, re.MULTILINE))
    assert len(replays) == 3, done.stdout


def test_with_pytest_xdist(project: Path) -> None:
    done = pytest_run(
        project, "-n", "2", "--stress-iterations", "80", "--stress-seed", "12", "-W", "error::DeprecationWarning"
    )
    assert outcome_counts(done.stdout) == {"failed": 1, "passed": 1}, done.stdout + done.stderr
    assert re.search(r"stress: \d+ of 80 trials failed", done.stdout)
    assert "): pytest test_counter.py::test_unlocked" in done.stdout


def test_with_pytest_timeout(project: Path) -> None:
    done = pytest_run(project, "--timeout", "120", "--stress-iterations", "80", "--stress-seed", "13")
    assert outcome_counts(done.stdout) == {"failed": 1, "passed": 1}, done.stdout + done.stderr


def test_the_plugin_costs_nothing_to_tests_that_do_not_use_it() -> None:
    code = "import sys, harness.pytest.plugin; print(sorted(m for m in sys.modules if m.startswith('harness')))"
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRESS_")}  # as a fresh session has it
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert done.stdout.strip() == "['harness', 'harness.pytest', 'harness.pytest.plugin']"


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--stress-iterations", "-3"], "--stress-iterations -3: must be an integer >= 1"),
        (["--stress-mode", "fast"], "--stress-mode fast: use one of stress, controlled"),
        (["-o", "stress_jobs=many"], "stress_jobs = many in the pytest configuration"),
        (["--stress-schedule", "garbage"], "schedule 'garbage': not a stress schedule"),
        (
            ["--stress-schedule", "v2:1>1"],
            "test_counter.py::test_unlocked, test_counter.py::test_locked run in stress",
        ),
        (["--stress-trial", "2"], "--stress-trial 2 needs --stress-seed"),
        (["STRESS_ITERATIONS=abc"], "STRESS_ITERATIONS=abc (environment): not an integer"),
    ],
)
def test_a_bad_stress_option_is_a_usage_error_not_a_failed_test(project: Path, args: list[str], said: str) -> None:
    env = dict(arg.split("=", 1) for arg in args if arg.startswith("STRESS_"))
    done = pytest_run(project, *[arg for arg in args if arg not in {f"{k}={v}" for k, v in env.items()}], env=env)
    assert done.returncode == 4, done.stdout + done.stderr  # pytest's "usage error"
    assert said in done.stderr
    assert "failed" not in done.stdout


ASYNC_TESTS = """
import asyncio

import pytest


class Client:
    def __init__(self):
        self.connection = None
        self.opened = 0

    async def get(self):
        if self.connection is None:
            await asyncio.sleep(0)  # a real suspension: the other callers look meanwhile
            self.opened += 1
            self.connection = self.opened


@pytest.mark.stress(iterations=40)
async def test_connects_once(stress_trial):
    client = Client()
    await stress_trial.run_tasks(client.get, count=3)
    assert client.opened == 1


@pytest.mark.stress(iterations=40)
async def test_sleeps_fine(stress_trial):
    await asyncio.sleep(0)
"""


def test_an_async_test_runs_as_a_coroutine_variant_and_fails_when_it_should(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.pytest.ini_options]\naddopts = []\n")
    (tmp_path / "test_async.py").write_text(ASYNC_TESTS)
    out = pytest_run(tmp_path, "test_async.py")
    assert outcome_counts(out.stdout) == {"failed": 1, "passed": 1}, out.stdout + out.stderr
    assert re.search(r"test_async\.py::test_connects_once:\s+40 trials, [1-9]\d* failed", out.stdout), out.stdout
    assert re.search(r"assert [23] == 1", out.stdout), out.stdout
    assert re.search(r"test_async\.py::test_sleeps_fine:\s+40 trials, 0 failed", out.stdout), out.stdout


BESIDE_RUN_PARALLEL = """
import threading
import time

import pytest

guard = threading.Lock()
inside = 0
alone_busy = False
gate = threading.Barrier(3)


def _enter():
    global inside
    with guard:
        inside += 1
        seen = inside
    time.sleep(0.001)
    with guard:
        inside -= 1
    return seen


@pytest.mark.stress(iterations=30)
def test_two_actors_and_no_more():
    # stress's default: two threads run the test at once; pytest-run-parallel's wrapper would add more
    assert _enter() <= 2


@pytest.mark.stress(iterations=30)
@pytest.mark.thread_unsafe
def test_thread_unsafe_runs_alone():
    global alone_busy
    assert not alone_busy
    alone_busy = True
    time.sleep(0.001)
    alone_busy = False


@pytest.mark.stress(iterations=30)
@pytest.mark.force_parallel_threads(3)
def test_three_threads_as_its_marker_says():
    gate.wait(timeout=2)  # breaks unless three threads arrive in each trial


def test_plain_tests_are_run_parallel_s(num_parallel_threads):
    assert num_parallel_threads == 4
"""


def test_beside_pytest_run_parallel_its_markers_are_honoured_and_stress_tests_are_not_wrapped(tmp_path: Path) -> None:
    pytest.importorskip("pytest_run_parallel")
    (tmp_path / "pyproject.toml").write_text("[tool.pytest.ini_options]\naddopts = []\n")
    (tmp_path / "test_beside.py").write_text(BESIDE_RUN_PARALLEL)
    done = pytest_run(tmp_path, "--parallel-threads", "4", "--stress-seed", "5")
    assert outcome_counts(done.stdout) == {"passed": 4}, done.stdout + done.stderr

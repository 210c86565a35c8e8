"""Controlled mode on code as it is written: the threads the code starts itself, its module-level
locks, its executors and timers, its generated code and the installed packages it names — and what
it cannot schedule, said as such."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness import Outcome
from harness.config import Layer, build_config
from harness.controlled.session import Control
from harness.engine.local import LocalRunner, first_failure
from harness.loader import load_target
from harness.perturb.knobs import Perturbation
from harness.perturb.plan import make_plan
from harness.scenario import Variant
from tests.helpers import results, stress, summary, variant

FIXTURE = Path(__file__).parent / "fixtures" / "as_written.py"
UNSAFE = ["counter-without-lock", "bank-withdraw", "two-locks"]
SAFE = ["counter-with-lock", "bank-safe-withdraw", "two-locks-same-order", "semaphore", "event-signal", "executor"]


def config(**flags: object) -> object:
    return build_config([Layer({"mode": "controlled", **flags}, lambda key, value: f"--{key}")])


def chapter(name: str) -> Variant:
    # Loading a scenario file in this process tells the processes it would start where to find it
    # (STRESS_USER_FILES); the tests after this one start stress afresh, without it.
    before = os.environ.get("STRESS_USER_FILES")
    try:
        return load_target(str(FIXTURE))[0].get(name)
    finally:
        if before is None:
            os.environ.pop("STRESS_USER_FILES", None)
        else:
            os.environ["STRESS_USER_FILES"] = before


@pytest.mark.parametrize("name", UNSAFE)
def test_the_chapters_unsafe_examples_as_written_fail_within_five_schedules(name: str) -> None:
    counts = []
    for seed in range(50):
        found = first_failure(chapter(name), config(seed=seed), limit=200)
        counts.append(found.schedules if found.schedules is not None else 10**6)
    assert statistics.median(counts) <= 5, counts


@pytest.mark.parametrize("name", SAFE)
def test_the_chapters_safe_examples_as_written_hold_in_a_thousand_schedules(name: str) -> None:
    found = first_failure(chapter(name), config(seed=7), limit=1000)
    assert found.schedules is None, f"{name} failed ({found.outcome}) at schedule {found.schedules}"


@pytest.mark.parametrize("name", ["counter-with-lock", "bank-safe-withdraw", "two-locks-same-order"])
def test_exhaustive_search_of_a_module_level_lock_program_finds_nothing(tmp_path: Path, name: str) -> None:
    done = stress(
        "run",
        str(FIXTURE),
        "-V",
        name,
        "--mode",
        "controlled",
        "--max-preemptions",
        "2",
        "--out",
        "run",
        cwd=tmp_path,
        timeout=600,
    )
    assert done.code == 0, done.stdout + done.stderr
    data = variant(summary(tmp_path / "run"), f"as-written/{name}")
    assert data["exploration"]["complete"], data
    assert data["failures"] == 0
    assert f"✓ as-written/{name}: all" in done.stdout


def test_a_found_schedule_of_code_as_written_replays_ten_times_out_of_ten(tmp_path: Path) -> None:
    run = stress(
        "run",
        str(FIXTURE),
        "-V",
        "counter-without-lock",
        "-V",
        "two-locks",
        "--mode",
        "controlled",
        "-n",
        "30",
        "--seed",
        "3",
        "--out",
        "run",
        cwd=tmp_path,
    )
    assert run.code == 0, run.stdout + run.stderr  # unsafe, and exposed: as expected
    for name in ("counter-without-lock", "two-locks"):
        again = stress("replay", "run", "--variant", name, "--times", "10", cwd=tmp_path)
        assert again.code == 0, again.stdout + again.stderr
        assert "reproduced 10/10" in again.stdout


def test_threads_are_named_in_start_order_whatever_ran_before() -> None:
    plan = make_plan(Perturbation.none(), seed=1, trial=0)
    with LocalRunner(chapter("two-locks"), config(seed=1)) as runner:
        first = runner.run(Control("random", seed=5), plan)
        again = runner.run(Control("random", seed=5), plan)
    assert first.outcome is Outcome.DEADLOCKED
    assert first.evidence is not None
    assert again.evidence is not None
    assert first.evidence.messages == again.evidence.messages
    assert "Thread-1 (thread_1)" in first.evidence.messages[0]
    assert [step[0] for step in first.trace] == [step[0] for step in again.trace]


def test_a_nested_submit_into_a_one_worker_executor_is_a_deadlock_with_its_cycle() -> None:
    counts = []
    for seed in range(20):
        found = first_failure(chapter("nested-submit"), config(seed=seed), limit=50)
        counts.append(found.schedules if found.schedules is not None else 10**6)
        assert found.outcome is Outcome.DEADLOCKED
    assert max(counts) <= 5
    plan = make_plan(Perturbation.none(), seed=1, trial=0)
    with LocalRunner(chapter("nested-submit"), config(seed=1)) as runner:
        run = runner.run(Control("random", seed=1), plan)
    assert run.evidence is not None
    summary_line = run.evidence.messages[0]
    assert "ThreadPoolExecutor-0_0 waits for the result of" in summary_line
    assert "fetch()" in summary_line
    assert "behind itself, its only worker" in summary_line


def test_a_wait_in_select_is_unsupported_at_once_never_hung(tmp_path: Path) -> None:
    started = time.monotonic()
    done = stress(
        "run", str(FIXTURE), "-V", "asyncio-bridge", "--mode", "controlled", "-n", "200", "--out", "run", cwd=tmp_path
    )
    elapsed = time.monotonic() - started
    assert done.code == 0, done.stdout + done.stderr
    data = variant(summary(tmp_path / "run"), "as-written/asyncio-bridge")
    assert data["verdict"] == "unsupported"
    assert data["failures"] == 0
    outcomes = {r["outcome"] for r in results(tmp_path / "run")}
    assert outcomes <= {"passed", "unsupported"}, outcomes
    unsupported = [r for r in results(tmp_path / "run") if r["outcome"] == "unsupported"]
    assert unsupported
    message = unsupported[0]["evidence"]["messages"][0]
    assert "selectors.py" in message
    assert "as_written.py" in message
    assert "stress mode" in message
    assert all(r["duration"] < 1.0 for r in unsupported)
    assert "not checked in controlled mode" in done.stdout
    assert elapsed < 60  # start-up included; the schedules themselves take well under a second


def test_the_unsupported_verdict_reaches_every_report(tmp_path: Path) -> None:
    done = stress(
        "run",
        str(FIXTURE),
        "-V",
        "asyncio-bridge",
        "--mode",
        "controlled",
        "-n",
        "20",
        "--out",
        "run",
        "--junit-xml",
        "junit.xml",
        "--markdown",
        "summary.md",
        cwd=tmp_path,
    )
    assert done.code == 0, done.stdout + done.stderr
    assert "<skipped" in (tmp_path / "junit.xml").read_text()
    assert "unsupported" in (tmp_path / "summary.md").read_text()
    assert "unsupported" in (tmp_path / "run" / "report.html").read_text()


@pytest.mark.parametrize("mode", ["stress", "controlled"])
def test_a_lost_update_in_execd_code_is_found_in_both_modes(tmp_path: Path, mode: str) -> None:
    count = "2000" if mode == "stress" else "100"
    done = stress(
        "run",
        str(FIXTURE),
        "-V",
        "exec-lost-update",
        "--mode",
        mode,
        "-n",
        count,
        "--seed",
        "1",
        "--out",
        "run",
        cwd=tmp_path,
        timeout=300,
    )
    assert done.code == 0, done.stdout + done.stderr
    data = variant(summary(tmp_path / "run"), "as-written/exec-lost-update")
    assert data["verdict"] == "exposed", data


PACKAGE = '''"""A small cache with a lost update inside."""


class Cache:
    def __init__(self):
        self.data = {}
        self.size = 0

    def put(self, key, value):
        if key not in self.data:
            self.size = self.size + 1
        self.data[key] = value
'''

USER = """import threading

from harness import Scenario, Trial
from racycache import Cache

scenario = Scenario("shared-cache", "A cache from an installed package, shared by two threads")


@scenario.variant(expect="unsafe")
def unlocked(trial: Trial) -> None:
    cache = Cache()
    threads = [threading.Thread(target=cache.put, args=(key, key)) for key in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    trial.check(cache.size == 2, f"size is {cache.size}, expected 2")
"""


@pytest.fixture
def installed(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    site = tmp_path / "env" / "lib" / "site-packages"
    (site / "racycache").mkdir(parents=True)
    (site / "racycache" / "__init__.py").write_text(PACKAGE)
    (tmp_path / "use_cache.py").write_text(USER)
    return tmp_path, {"PYTHONPATH": str(site)}


def test_scope_puts_an_installed_package_under_test(installed: tuple[Path, dict[str, str]]) -> None:
    work, env = installed
    counts = []
    for seed in range(9):
        out = f"run{seed}"
        done = stress(
            "run",
            "use_cache.py",
            "--mode",
            "controlled",
            "-n",
            "60",
            "--seed",
            str(seed),
            "--scope",
            "racycache",
            "-j",
            "1",
            "--out",
            out,
            cwd=work,
            env=env,
        )
        assert done.code == 0, done.stdout + done.stderr
        failing = [r["seq"] for r in results(work / out) if r["outcome"] == "failed"]
        counts.append(min(failing) + 1 if failing else 10**6)
        forced = summary(work / out)["scope"]["forced"]
        assert any("racycache" in path for path in forced)
    assert statistics.median(counts) <= 10, counts


def test_without_scope_the_report_names_the_package_that_ran_atomically(installed: tuple[Path, dict[str, str]]) -> None:
    work, env = installed
    done = stress("run", "use_cache.py", "--mode", "controlled", "-n", "30", "--out", "run", cwd=work, env=env)
    assert "racycache" in done.stdout
    assert "--scope racycache" in done.stdout
    assert summary(work / "run")["ran_atomically"] == ["racycache"]
    explored = stress(
        "run", "use_cache.py", "--mode", "controlled", "--max-preemptions", "2", "--out", "search", cwd=work, env=env
    )
    assert "racycache ran as single steps" in explored.stdout, explored.stdout


def test_a_scope_that_names_nothing_is_refused(tmp_path: Path) -> None:
    (tmp_path / "s.py").write_text(
        "from harness import Scenario\nscenario = Scenario('s', 's')\n"
        "@scenario.variant(expect='safe')\ndef v(trial):\n    pass\n"
    )
    done = stress("run", "s.py", "--scope", "no_such_module_anywhere", "-n", "1", cwd=tmp_path)
    assert done.code == 2
    assert "--scope no_such_module_anywhere" in done.stderr


def test_a_threaded_pytest_test_runs_controlled_as_written(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.pytest.ini_options]\naddopts = []\n")
    (tmp_path / "test_threads.py").write_text(
        "import threading\n\nimport pytest\n\ncounter = 0\nlock = threading.Lock()\n\n\n"
        "def bump():\n    global counter\n    with lock:\n        counter += 1\n\n\n"
        "def bump_unlocked():\n    global counter\n    counter += 1\n\n\n"
        "def run(target):\n    global counter\n    counter = 0\n"
        "    threads = [threading.Thread(target=target) for _ in range(2)]\n"
        "    for t in threads:\n        t.start()\n    for t in threads:\n        t.join()\n    return counter\n\n\n"
        "@pytest.mark.stress(mode='controlled', iterations=200, threads=1)\n"
        "def test_locked():\n    assert run(bump) == 2\n\n\n"
        "@pytest.mark.stress(mode='controlled', iterations=200, threads=1)\n"
        "def test_unlocked():\n    assert run(bump_unlocked) == 2\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "test_threads.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    last = done.stdout.strip().splitlines()[-1]
    assert "1 failed, 1 passed" in last, done.stdout + done.stderr
    assert "test_unlocked" in done.stdout
    assert "FAILED" in done.stdout


def test_threads_left_joining_each_other_are_a_deadlock_with_the_cycle(tmp_path: Path) -> None:
    (tmp_path / "joins.py").write_text(
        "import threading\nfrom harness import Scenario\nscenario = Scenario('joins', 'each joins the other')\n"
        "@scenario.variant(expect='unsafe')\ndef cycle(trial):\n    both = threading.Event()\n    held = {}\n"
        "    def first():\n        both.wait()\n        held['second'].join()\n"
        "    def second():\n        both.wait()\n        held['first'].join()\n"
        "    held['first'] = threading.Thread(target=first)\n    held['second'] = threading.Thread(target=second)\n"
        "    held['first'].start()\n    held['second'].start()\n    both.set()\n"
        "    held['first'].join(timeout=1)\n    held['second'].join(timeout=1)\n"
    )
    stress("run", "joins.py", "--mode", "controlled", "-n", "10", "--out", "run", cwd=tmp_path)
    data = variant(summary(tmp_path / "run"), "joins/cycle")
    assert data["outcomes"] == {"deadlocked": 10}, data
    messages = [r["evidence"]["messages"][0] for r in results(tmp_path / "run")]
    assert all("waits in join() for" in m and " → " in m for m in messages), messages


def test_a_non_daemon_thread_left_blocked_at_the_end_is_an_error_not_a_hang(tmp_path: Path) -> None:
    (tmp_path / "left.py").write_text(
        "import threading\nfrom harness import Scenario\nscenario = Scenario('left', 'a thread left waiting')\n"
        "@scenario.variant(expect='unsafe')\ndef forgotten(trial):\n    event = threading.Event()\n"
        "    threading.Thread(target=event.wait).start()\n"
        "@scenario.variant(expect='safe')\ndef daemon(trial):\n    event = threading.Event()\n"
        "    threading.Thread(target=event.wait, daemon=True).start()\n"
    )
    done = stress("run", "left.py", "--mode", "controlled", "-n", "20", "--out", "run", cwd=tmp_path)
    data = summary(tmp_path / "run")
    forgotten = variant(data, "left/forgotten")
    assert forgotten["outcomes"] == {"error": 20}, forgotten
    assert variant(data, "left/daemon")["verdict"] == "held"
    messages = [m for r in results(tmp_path / "run") if r["outcome"] == "error" for m in r["evidence"]["messages"]]
    assert any("left 1 thread(s) blocked at its end (Thread-1 (wait))" in m for m in messages), messages
    assert done.code == 0, done.stdout + done.stderr
    json.dumps(data)

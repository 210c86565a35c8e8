"""Every fault a clean outcome: signals, full disks, limits, and what a decided trial leaves behind.

Signals go to a real ``stress`` process; the full disk is a real, small tmpfs where the machine lets
us mount one (and an injected writer otherwise, in tests/unit/test_results.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import FIXTURES, results, stress, stress_command, summary, variant

FAULTS = str(FIXTURES / "faults.py")
MISBEHAVING = str(FIXTURES / "misbehaving.py")


def start(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    environment = {**os.environ, "TERM": "dumb", "NO_COLOR": "1", "COLUMNS": "120", **(env or {})}
    return subprocess.Popen(
        [*stress_command(), *args], cwd=cwd, env=environment, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def wait_for_lines(path: Path, count: int, *, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if path.read_text().count("\n") >= count:
                return
        time.sleep(0.02)
    raise AssertionError(f"{path} never reached {count} lines")


def cpu_seconds(pid: int) -> float:
    return time.clock_gettime(((~pid) << 3) | 2)


# -- signals and interruption ------------------------------------------------------------------------


def test_sigterm_ends_the_run_like_a_first_ctrl_c_and_exits_143(tmp_path: Path) -> None:
    process = start("run", "counter", "-n", "100000", "--out", "run", cwd=tmp_path)
    wait_for_lines(tmp_path / "run" / "results.jsonl", 30)
    sent = time.monotonic()
    process.send_signal(signal.SIGTERM)
    _stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 143, stderr
    assert time.monotonic() - sent < 3.0
    data = summary(tmp_path / "run")
    assert data["interrupted"] is True
    assert data["stopped_by"] == "SIGTERM"
    assert data["exit_code"] == 143
    assert data["trials"] == len(results(tmp_path / "run"))
    assert (tmp_path / "run" / "report.html").is_file()
    assert "Traceback" not in stderr


def test_a_second_sigterm_stops_at_once(tmp_path: Path) -> None:
    process = start("run", "counter", "-n", "100000", "--out", "run", cwd=tmp_path)
    wait_for_lines(tmp_path / "run" / "results.jsonl", 30)
    process.send_signal(signal.SIGTERM)
    process.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 143, stderr
    # At once: not after the 100,000 trials (minutes). The exit itself took 2.05 s beside a
    # loaded suite and a review's busy loops (load average 18).
    assert time.monotonic() - sent < 5.0
    assert "Traceback" not in stderr
    for line in (tmp_path / "run" / "results.jsonl").read_text().splitlines():
        json.loads(line)


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_during_start_up_is_one_line_and_its_exit_code(tmp_path: Path, sig: int, code: int) -> None:
    # Enough trials that the run cannot be over before the signal lands, however the test is delayed.
    process = start("run", "counter", "-n", "100000", "--out", "run", cwd=tmp_path)
    # Interpreter start-up takes a few CPU milliseconds; importing the CLI and the engine many more:
    # a signal after 60 ms of CPU lands in the imports (or, on a very fast machine, in the run).
    deadline = time.monotonic() + 30
    while cpu_seconds(process.pid) < 0.06 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == code, stderr
    assert "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) <= 1, stderr


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_between_start_up_and_the_first_trial_stops_the_run(tmp_path: Path, sig: int, code: int) -> None:
    # Resolving `--scope noisy.core` imports the package `noisy`, which signals its own process: the
    # signal lands after the command's handlers are in place and before the engine's own are.
    (tmp_path / "noisy").mkdir()
    (tmp_path / "noisy" / "__init__.py").write_text(f"import os\nos.kill(os.getpid(), {int(sig)})\n")
    (tmp_path / "noisy" / "core.py").write_text("")
    process = start(
        "run",
        "counter",
        "-n",
        "100000",
        "--scope",
        "noisy.core",
        "--out",
        "run",
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path)},
    )
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == code, stderr
    data = summary(tmp_path / "run")
    assert data["stopped_by"] == signal.Signals(sig).name
    assert data["trials"] == 0
    assert "Traceback" not in stderr


def test_ctrl_c_does_not_wait_for_trials_that_keep_running(tmp_path: Path) -> None:
    (tmp_path / "slow.py").write_text(
        "import time\nfrom harness import Scenario\nscenario = Scenario('slow', 'A trial that computes for a minute')\n"
        "@scenario.variant(expect='safe')\ndef computes(trial):\n    end = time.perf_counter() + 60\n"
        "    while time.perf_counter() < end:\n        pass\n"
    )
    process = start("run", "slow.py", "-n", "10", "-j", "2", "--out", "run", cwd=tmp_path)
    deadline = time.monotonic() + 30
    while not (tmp_path / "run" / "results.jsonl").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(1.0)  # both workers are inside a trial that would run for a minute
    sent = time.monotonic()
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr
    assert time.monotonic() - sent < 2.0
    records = results(tmp_path / "run")
    assert {r["outcome"] for r in records} == {"undecided"}  # cut short: neither passed nor failed
    assert all("stopped by SIGINT" in r["evidence"]["messages"][0] for r in records)
    data = summary(tmp_path / "run")
    assert variant(data, "computes")["verdict"] == "undecided"
    assert "not exposed" not in stdout


# -- resources and limits ------------------------------------------------------------------------------


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 200 KB tmpfs, when this machine lets the test mount one."""
    folder = tmp_path / "tiny"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.decode().strip()}); the unit test injects ENOSPC")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True, check=False)


def test_a_full_disk_stops_the_run_with_one_line_and_whole_results(tmp_path: Path, tiny_disk: Path) -> None:
    out = stress("run", "counter", "-n", "3000", "--seed", "1", "--out", str(tiny_disk / "run"), cwd=tmp_path)
    assert out.code == 2, out.stdout + out.stderr
    assert "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "No space left on device" in out.stderr
    assert str(tiny_disk / "run") in out.stderr
    text = (tiny_disk / "run" / "results.jsonl").read_text()
    assert text.endswith("\n")
    for line in text.splitlines():
        json.loads(line)  # every line whole
    again = stress("report", str(tiny_disk / "run"), cwd=tmp_path)
    assert again.code in (0, 1, 2), again.stderr
    assert "Traceback" not in again.stderr
    assert len(again.stderr.strip().splitlines()) <= 1, again.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--jobs", "100000"], "at most"),
        (["--pause", "1e9"], "at most 100 ms"),
        (["--switch-interval", "1e9"], "at most"),
        (["-n", "99999999999999999999"], "at most 1,000,000,000"),
        (["--markdown", "/proc/x.md"], "--markdown '/proc/x.md' cannot be written"),
        (["--junit-xml", "/proc/j.xml"], "--junit-xml '/proc/j.xml' cannot be written"),
    ],
)
def test_values_that_cannot_mean_anything_are_refused_before_the_run(
    tmp_path: Path, args: list[str], expected: str
) -> None:
    out = stress("run", "counter", "-n", "5", *args, "--out", "run", cwd=tmp_path)
    assert out.code == 2, out.stdout + out.stderr
    assert expected in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run" / "results.jsonl").exists()  # refused before anything ran


def test_jobs_in_pyproject_above_the_bound_is_refused(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.stress]\njobs = 100000\n")
    out = stress("run", "counter", "-n", "5", cwd=tmp_path)
    assert out.code == 2
    assert "jobs = 100000 in [tool.stress]" in out.stderr
    assert "16 per CPU" in out.stderr


def test_out_naming_a_file_says_it_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("")
    out = stress("run", "counter", "-n", "5", "--out", "taken", cwd=tmp_path)
    assert out.code == 2
    assert "is a file, not a folder" in out.stderr


def test_a_stress_variable_naming_a_command_line_option_is_refused(tmp_path: Path) -> None:
    out = stress("run", "counter", "-n", "5", "--out", "run", cwd=tmp_path, env={"STRESS_VARIANT": "nonexist"})
    assert out.code == 2
    assert "STRESS_VARIANT" in out.stderr
    assert "command-line option only" in out.stderr


def _shm() -> set[str]:
    return set(os.listdir("/dev/shm"))


def _settle(before: set[str], *, within: float) -> set[str]:
    deadline = time.monotonic() + within
    left = _shm() - before
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = _shm() - before
    return left


@pytest.mark.slow
def test_a_killed_pool_run_leaves_no_named_semaphore(tmp_path: Path) -> None:
    before = _shm()
    # Killed at different moments: a worker cut off while it creates a pool's semaphores, before it
    # told multiprocessing's resource tracker of them, would leave them for good.
    for attempt, finished in enumerate((6, 20, 33)):
        process = start("run", "pool", "-n", "100000", "--out", f"run{attempt}", cwd=tmp_path)
        wait_for_lines(tmp_path / f"run{attempt}" / "results.jsonl", finished)
        process.kill()
        process.communicate(timeout=30)
    assert _settle(before, within=10.0) == set()


def test_a_complete_pool_run_leaves_no_named_semaphore(tmp_path: Path) -> None:
    before = _shm()
    out = stress("run", "pool", "-n", "10", "--seed", "1", "--out", "run", cwd=tmp_path)
    assert out.code == 0, out.stdout + out.stderr
    assert _settle(before, within=5.0) == set()


# -- what the code under test does -----------------------------------------------------------------


def run_faults(tmp_path: Path, name: str, *args: str) -> dict:
    out = stress("run", FAULTS, "--variant", name, "--seed", "3", "--out", "run", *args, cwd=tmp_path)
    assert "Traceback" not in out.stderr, out.stderr
    return variant(summary(tmp_path / "run"), name)


def test_a_trial_ends_at_its_deadlock_and_what_follows_is_not_blamed(tmp_path: Path) -> None:
    entry = run_faults(tmp_path, "drain-checking-empty", "-n", "200")
    assert set(entry["outcomes"]) <= {"passed", "deadlocked"}, entry["outcomes"]
    assert entry["outcomes"].get("deadlocked"), entry["outcomes"]
    for record in results(tmp_path / "run"):
        if record["outcome"] == "deadlocked":
            assert not record["evidence"].get("tracebacks"), record["evidence"]


def test_a_deadlock_in_a_child_process_is_the_trials_outcome_and_headline(tmp_path: Path) -> None:
    entry = run_faults(tmp_path, "child-process-deadlocks", "-n", "3")
    assert entry["outcomes"] == {"deadlocked": 3}
    evidence = entry["example"]["evidence"]
    assert evidence["messages"][0].startswith("in process locker")
    assert not evidence.get("tracebacks")  # the parent's assertion on the exit code is a consequence


def test_a_signal_handler_waiting_for_its_own_threads_lock_is_deadlocked_never_hung(tmp_path: Path) -> None:
    entry = run_faults(tmp_path, "handler-logs", "-n", "300")
    assert set(entry["outcomes"]) <= {"passed", "deadlocked"}, entry["outcomes"]
    assert entry["outcomes"].get("deadlocked"), entry["outcomes"]


def test_a_signal_handler_reentering_an_rlock_is_never_a_deadlock(tmp_path: Path) -> None:
    entry = run_faults(tmp_path, "handler-reenters-an-rlock", "-n", "300")
    assert entry["outcomes"] == {"passed": 300}


@pytest.mark.parametrize("name", ["alarm-sets-event", "raw-thread-sets-event"])
def test_a_wake_up_the_wait_for_graph_cannot_see_coming_is_no_deadlock(tmp_path: Path, name: str) -> None:
    # A signal timer's handler, or a thread `threading` does not list, will end the wait: nobody
    # the graph can see is left to run, yet the trial is not stuck.
    entry = run_faults(tmp_path, name, "-n", "60")
    assert entry["outcomes"] == {"passed": 60}


def test_a_process_actors_result_that_cannot_be_pickled_is_an_error(tmp_path: Path) -> None:
    entry = run_faults(tmp_path, "actor-returns-a-lock", "-n", "2")
    assert entry["outcomes"] == {"error": 2}
    traceback = entry["example"]["evidence"]["tracebacks"][0]
    assert "_a_lock" in traceback
    assert "returned a Lock, which cannot be pickled" in traceback


def test_a_process_group_can_talk_to_its_actors_while_they_run(tmp_path: Path) -> None:
    entry = run_faults(tmp_path, "read-while-running", "-n", "5")
    assert entry["outcomes"] == {"passed": 5}

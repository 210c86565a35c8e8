"""Nothing the code under test does takes the harness down, and nothing a run starts outlives it.

Every fault here is real: real signals to the real `stress` process, a real SIGKILL of the parent,
code that really closes the worker's pipes, forks, floods. (A segfault and an `os._exit` are in
test_watchdog.py; leftovers after every test are checked by the suite's conftest.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import child_pids
from tests.helpers import FIXTURES, results, stress, stress_command, summary, variant

HOSTILE = str(FIXTURES / "hostile.py")
MISBEHAVING = str(FIXTURES / "misbehaving.py")


def start(*args: str, cwd: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "TERM": "dumb", "NO_COLOR": "1", "COLUMNS": "120"}
    return subprocess.Popen(
        [*stress_command(), *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def wait_for_lines(path: Path, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().count("\n") >= count:
            return
        time.sleep(0.02)
    raise AssertionError(f"{path} did not reach {count} lines")


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as file:
            return file.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_hostile_code_under_test_is_recorded_trial_by_trial_and_the_run_completes(tmp_path: Path) -> None:
    out = stress("run", HOSTILE, "-n", "2", "-j", "2", "--seed", "1", "--out", "run", cwd=tmp_path, timeout=300)
    assert out.code == 1, out.stderr  # safe variants failed: findings, not a harness error
    assert "Traceback" not in out.stderr
    data = summary(tmp_path / "run")
    assert data["complete"]
    outcomes = {v["name"]: v["outcomes"] for v in data["variants"]}
    for name in (
        "memory-error", "recursion", "system-exit", "keyboard-interrupt", "forks", "spawns",
        "prints-megabytes", "huge-message", "binary", "leaves-threads", "closes-std",
    ):  # fmt: skip
        assert outcomes[name] == {"error": 2}, (name, outcomes[name])
    assert outcomes["closes-everything"] == {"crashed": 2}  # its worker lost its pipe: it died, was replaced
    assert outcomes["fine"] == {"passed": 2}  # every trial after the others started clean

    by_variant = {}
    for record in results(tmp_path / "run"):
        by_variant.setdefault(record["variant"].partition("/")[2], record)

    def evidence(name: str) -> str:
        return json.dumps(by_variant[name].get("evidence", {}))

    for name, clue in [
        ("memory-error", "MemoryError"),
        ("recursion", "RecursionError"),
        ("system-exit", "SystemExit: 3"),
        ("keyboard-interrupt", "KeyboardInterrupt"),
        ("forks", "left 1 process(es) of its own running; stress stopped them"),
        ("spawns", "left 1 process(es) of its own running; stress stopped them"),
        ("leaves-threads", "left 1000 daemon threads running; the worker was replaced"),
        ("closes-std", "closed or redirected fd 1, fd 2, sys.stdout; stress restored them"),
    ]:
        assert clue in evidence(name), name
    # Floods are cut with a marker and stay small; binary output and control characters are escaped.
    assert "characters cut by stress" in evidence("huge-message")
    assert len(evidence("huge-message")) < 40_000
    assert "characters cut by stress" in by_variant["prints-megabytes"]["evidence"]["output"]
    assert len(evidence("prints-megabytes")) < 40_000
    assert "\\\\x1b" in evidence("binary")  # an escape sequence from the code under test, escaped
    assert "\x1b" not in out.stdout
    assert (tmp_path / "run" / "report.html").stat().st_size < 2_000_000


def test_first_ctrl_c_reports_what_ran_within_two_seconds_and_exits_130(tmp_path: Path) -> None:
    process = start("run", MISBEHAVING, "--variant", "fine", "--variant", "blocks", "-n", "100000", "--out", "run",
                    cwd=tmp_path)  # fmt: skip
    wait_for_lines(tmp_path / "run" / "results.jsonl", 20)
    interrupted = time.monotonic()
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=30)
    elapsed = time.monotonic() - interrupted
    assert process.returncode == 130, stderr
    assert elapsed < 2.0, elapsed
    data = summary(tmp_path / "run")
    assert data["interrupted"] is True
    assert data["trials"] == len(results(tmp_path / "run")) >= 20
    assert (tmp_path / "run" / "report.html").is_file()
    assert "interrupted" in stdout


def test_second_ctrl_c_exits_at_once_and_results_stay_readable(tmp_path: Path) -> None:
    process = start("run", "counter", "-n", "100000", "--out", "run", cwd=tmp_path)
    wait_for_lines(tmp_path / "run" / "results.jsonl", 50)
    process.send_signal(signal.SIGINT)
    process.send_signal(signal.SIGINT)
    interrupted = time.monotonic()
    process.communicate(timeout=30)
    assert process.returncode == 130
    assert time.monotonic() - interrupted < 2.0
    records = results(tmp_path / "run")  # every line parses
    assert len(records) >= 50
    again = stress("report", "run", cwd=tmp_path)
    assert again.code in (0, 1), again.stderr


def test_kill_9_of_the_parent_keeps_finished_trials_and_leaves_no_worker(tmp_path: Path) -> None:
    process = start("run", "counter", "-n", "1000000", "-j", "2", "--out", "run", cwd=tmp_path)
    path = tmp_path / "run" / "results.jsonl"
    wait_for_lines(path, 200)
    workers = child_pids(process.pid)
    assert workers, "the run has no workers?"
    killed = time.time()
    process.kill()
    process.communicate(timeout=10)
    # Trials are flushed as they finish: the file was written to within ~100 ms of the kill.
    assert killed - path.stat().st_mtime < 0.25
    lines = path.read_text().splitlines(keepends=True)
    complete = [line for line in lines if line.endswith("\n")]
    assert len(lines) - len(complete) <= 1  # at most a torn last line
    for line in complete:
        json.loads(line)
    # The workers notice their parent is gone and exit.
    deadline = time.monotonic() + 3
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not [pid for pid in workers if alive(pid)]
    report = stress("report", "run", cwd=tmp_path)
    assert report.code == 0, report.stderr
    assert "incomplete" in report.stdout
    assert variant(summary(tmp_path / "run"), "no-lock")["trials"] >= 1


@pytest.mark.parametrize("mode", ["stress", "controlled"])
def test_runs_leak_no_descriptors(tmp_path: Path, mode: str) -> None:
    from harness import Registry, run
    from harness.config import Layer, build_config

    variants = Registry.builtin().select(["counter"], ["lock", "no-lock"])
    config = build_config([Layer({"iterations": 60, "seed": 1, "jobs": 2, "mode": mode}, lambda k, v: k)])
    run(variants, config, out=tmp_path / "warm")  # imports and first-use caches settle
    before = len(os.listdir("/proc/self/fd"))
    for index in range(3):
        run(variants, config, out=tmp_path / f"run{index}")
    assert len(os.listdir("/proc/self/fd")) == before


def test_daemon_workers_left_parked_on_a_queue_cost_no_grace_and_no_false_deadlock(tmp_path: Path) -> None:
    # Each trial leaves a daemon worker parked on get(): once the trial is over nothing judges that
    # wait, and every leftover waiting where nobody can wake it ends the grace at once. It used to
    # cost each trial its 0.2 s grace and every parked thread a wake-up each 8 ms (2 trials/s).
    (tmp_path / "parked.py").write_text(
        "import queue, threading\nfrom harness import Scenario\nscenario = Scenario('parked', 'daemon workers')\n"
        "@scenario.variant(expect='safe')\ndef join(trial):\n    q = queue.Queue()\n    out = []\n"
        "    def worker():\n        while True:\n            out.append(q.get())\n            q.task_done()\n"
        "    threading.Thread(target=worker, daemon=True).start()\n"
        "    q.put(1)\n    q.put(2)\n    q.join()\n    trial.check(out == [1, 2], f'{out}')\n"
    )
    started = time.monotonic()
    done = stress("run", "parked.py", "-n", "400", "--seed", "2", "--out", "run", cwd=tmp_path, timeout=300)
    took = time.monotonic() - started
    data = variant(summary(tmp_path / "run"), "parked/join")
    assert done.code == 0, done.stdout + done.stderr
    assert data["outcomes"] == {"passed": 400}, data
    assert took < 40, took  # 400 graces alone would be 80 s

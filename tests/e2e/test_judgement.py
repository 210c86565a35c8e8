"""A trial is hung only on evidence: safe code that waits or computes for long is never hung, real
hangs are, and what stress cannot judge it says so. Also the signals and files around a run's end."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import FIXTURES, results, stress, stress_command, summary, variant

PATIENT = str(FIXTURES / "patient.py")
STUCK = str(FIXTURES / "stuck.py")


@pytest.fixture
def slow_server() -> Iterator[int]:
    """A server outside the trials' processes (in this test's): it answers b"k" after 1 ms, or after
    0.8 s to b"S"."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def serve(connection: socket.socket) -> None:
        with connection:
            asked = connection.recv(1)
            time.sleep(0.8 if asked == b"S" else 0.001)
            connection.sendall(b"k")

    def accept() -> None:
        helpers = []
        while not stop.is_set():
            try:
                connection, _ = server.accept()
            except TimeoutError:
                continue
            helper = threading.Thread(target=serve, args=(connection,))
            helper.start()
            helpers.append(helper)
        for helper in helpers:
            helper.join()

    acceptor = threading.Thread(target=accept)
    acceptor.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        acceptor.join()
        server.close()


@pytest.mark.slow
def test_safe_code_that_waits_or_computes_for_long_is_never_hung(tmp_path: Path, slow_server: int) -> None:
    out = stress(
        "run", PATIENT, "-n", "30", "--seed", "5", "--out", "run", cwd=tmp_path,
        env={"STRESS_TEST_PORT": str(slow_server)}, timeout=600,
    )  # fmt: skip
    data = summary(tmp_path / "run")
    verdicts = {v["name"]: (v["verdict"], v["outcomes"]) for v in data["variants"]}
    assert all(verdict == "held" for verdict, _ in verdicts.values()), verdicts
    assert out.code == 0, out.stdout[-3000:]
    slow = [r for r in results(tmp_path / "run") if r["duration"] > 0.3]
    assert len(slow) >= 10  # the slow paths were taken, and waited for


@pytest.mark.slow
def test_real_hangs_are_still_found_and_what_cannot_be_judged_says_so(tmp_path: Path) -> None:
    out = stress("run", STUCK, "-n", "3", "--seed", "1", "--out", "run", cwd=tmp_path, timeout=600)
    assert "Traceback" not in out.stderr
    data = summary(tmp_path / "run")
    assert variant(data, "reads-a-silent-pipe")["outcomes"] == {"hung": 3}
    # An instrumented waiter wakes every few milliseconds to look for a deadlock: not progress.
    assert variant(data, "waits-beside-a-reader")["outcomes"] == {"hung": 3}
    # The wait-for graph sees the body's join(): a deadlock, at once, with the thread that waits.
    joins = variant(data, "joins-a-stuck-thread")
    assert joins["outcomes"] == {"deadlocked": 3}
    assert joins["example"]["duration"] < 1.0
    # Its target is a library's (``work.get``): the wait is that call, not "an unknown place".
    assert any(
        "waits for work at Queue.get(), the thread's target" in line
        for line in joins["example"]["evidence"]["wait_for"]
    ), joins["example"]
    # Polling looks the same whether it waits for nothing or for the world: stress does not guess.
    polls = variant(data, "polls-for-nothing")
    assert polls["outcomes"] == {"undecided": 3}
    assert polls["verdict"] == "undecided"
    records = {r["variant"]: r for r in results(tmp_path / "run")}
    assert "READS HERE" not in json.dumps(records)  # the dump names the line, not the marker
    assert any("stuck.py" in line for line in records["stuck/reads-a-silent-pipe"]["evidence"]["blocked_at"])
    # The dump's frames that only called the variant (stress's worker, multiprocessing, click) are one line.
    dump = records["stuck/waits-beside-a-reader"]["evidence"]["dump"]
    page = (tmp_path / "run" / "report.html").read_text()
    assert "popen_fork.py" in dump
    assert "popen_fork.py" not in page
    assert "frames that called it (stress, multiprocessing" in page


def _start(*args: str, cwd: Path) -> subprocess.Popen[str]:
    environment = {**os.environ, "TERM": "dumb", "NO_COLOR": "1"}
    return subprocess.Popen(
        [*stress_command(), *args], cwd=cwd, env=environment, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def test_a_signal_as_the_run_ends_leaves_a_summary_that_tells_the_exit_code(tmp_path: Path) -> None:
    process = _start("run", "counter", "-n", "100", "-j", "2", "--out", "run", cwd=tmp_path)
    path = tmp_path / "run" / "results.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if path.exists() and path.read_text().count("\n") >= 400:
            break
        time.sleep(0.001)
    process.send_signal(signal.SIGTERM)  # as the last trials land: clean-up, summary, reports
    _, stderr = process.communicate(timeout=60)
    assert "Traceback" not in stderr
    data = summary(tmp_path / "run")
    assert data["exit_code"] == process.returncode or process.returncode == -signal.SIGTERM
    assert process.returncode in (0, 143, -signal.SIGTERM)


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_process_actors_of_a_users_file_start_with_any_method(tmp_path: Path, method: str) -> None:
    (tmp_path / "double.py").write_text(
        "from harness import Scenario\nscenario = Scenario('double', 'A process actor doubles a number')\n"
        "def double(x):\n    return 2 * x\n"
        "@scenario.variant(expect='safe')\ndef actor(trial):\n"
        "    trial.check(trial.run_processes(double, 21, count=2) == [42, 42], 'wrong')\n"
    )
    out = stress("run", "double.py", "-n", "3", "--start-method", method, "--out", "run", cwd=tmp_path)
    assert out.code == 0, out.stdout + out.stderr
    assert variant(summary(tmp_path / "run"), "actor")["outcomes"] == {"passed": 3}


def test_a_signal_while_a_scenario_file_imports_is_an_interrupt(tmp_path: Path) -> None:
    (tmp_path / "slow_import.py").write_text(
        "import time\ntime.sleep(30)\nfrom harness import Scenario\nscenario = Scenario('s', 'slow to import')\n"
    )
    process = _start("run", "slow_import.py", cwd=tmp_path)
    time.sleep(2.0)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "slow_import.py" not in stderr  # not blamed on the file


def test_a_pyproject_whose_tool_is_not_a_table_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("tool = 5\n")
    out = stress("run", "counter", "-n", "2", cwd=tmp_path)
    assert out.code == 2
    assert "'tool' must be a table" in out.stderr
    assert "Traceback" not in out.stderr


def test_a_trial_that_signals_stress_itself_does_not_end_the_run(tmp_path: Path) -> None:
    (tmp_path / "rude.py").write_text(
        "import os, signal\nfrom harness import Scenario\nscenario = Scenario('rude', 'Signals its parent')\n"
        "@scenario.variant(expect='safe')\ndef pokes(trial):\n    os.kill(os.getppid(), signal.SIGUSR1)\n"
    )
    out = stress("run", "rude.py", "-n", "3", "--out", "run", cwd=tmp_path)
    assert (tmp_path / "run" / "summary.json").is_file(), out.stderr
    assert summary(tmp_path / "run")["complete"] is True

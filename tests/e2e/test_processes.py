"""Process actors as a user runs them: hangs across processes, crashes, start methods, cleanup.

Every test here also passes the suite's guard: no process and nothing in /dev/shm is left behind.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import FIXTURES, results, stress, summary, variant

MISBEHAVING = str(FIXTURES / "misbehaving.py")
SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"


def _line(file: Path, marker: str) -> int:
    return next(n for n, text in enumerate(file.read_text().splitlines(), 1) if marker in text)


def test_pipe_never_closed_hangs_with_the_receivers_recv_line_and_costs_little(tmp_path: Path) -> None:
    timeout, hangs = 0.3, 5
    out = stress(
        "run",
        "pipe",
        "--variant",
        "parent-keeps-ends",
        "--iterations",
        str(hangs),
        "--seed",
        "1",
        "--timeout",
        str(timeout),
        "--jobs",
        "1",
        "--out",
        "run",
        cwd=tmp_path,
    )
    assert out.code == 0, out.stdout + out.stderr  # expected unsafe, and exposed
    data = summary(tmp_path / "run")
    entry = variant(data, "parent-keeps-ends")
    assert entry["outcomes"] == {"hung": hangs}
    evidence = entry["example"]["evidence"]
    line = _line(SCENARIOS / "pipe.py", "RECEIVES HERE")
    assert any(
        where.startswith("receiver: ") and f"pipe.py:{line} in receiver" in where for where in evidence["blocked_at"]
    )
    assert f'pipe.py", line {line} in receiver' in evidence["dump"]
    # Each hang costs its timeout plus a worker replacement, not seconds: measured against as many trials
    # of the same scenario's fixed variant, run on this machine just now (a busy machine slows both).
    base = stress(
        "run", "pipe", "--variant", "close-unused-ends", "-n", str(hangs), "--seed", "1", "-j", "1",
        "--out", "base", cwd=tmp_path,
    )  # fmt: skip
    assert base.code == 0, base.stderr
    extra = data["wall_seconds"] - summary(tmp_path / "base")["wall_seconds"]
    assert extra <= hangs * (timeout + 0.3), (extra, data["wall_seconds"])


def test_process_actor_that_exits_is_crashed_with_its_status(tmp_path: Path) -> None:
    out = stress(
        "run", MISBEHAVING, "--variant", "process-exits", "-n", "2", "--seed", "1", "--out", "run", cwd=tmp_path
    )
    assert out.code == 1
    entry = variant(summary(tmp_path / "run"), "process-exits")
    assert entry["outcomes"] == {"crashed": 2}
    assert entry["example"]["evidence"]["messages"] == ["process _exit_with_3 exited with status 3"]


def test_process_actor_exception_is_an_error_with_its_traceback(tmp_path: Path) -> None:
    out = stress(
        "run", MISBEHAVING, "--variant", "process-raises", "-n", "2", "--seed", "1", "--out", "run", cwd=tmp_path
    )
    assert out.code == 1
    entry = variant(summary(tmp_path / "run"), "process-raises")
    assert entry["outcomes"] == {"error": 2}
    tracebacks = entry["example"]["evidence"]["tracebacks"]
    assert len(tracebacks) == 2
    assert all("ValueError: raised in a process actor" in tb for tb in tracebacks)


def test_a_process_left_running_is_stopped_and_reported(tmp_path: Path) -> None:
    out = stress(
        "run", MISBEHAVING, "--variant", "leaves-a-process", "-n", "2", "--seed", "1", "--out", "run", cwd=tmp_path
    )
    assert out.code == 1
    entry = variant(summary(tmp_path / "run"), "leaves-a-process")
    assert entry["outcomes"] == {"error": 2}
    assert "left 1 process(es) running" in entry["example"]["evidence"]["messages"][0]


def test_fork_while_another_thread_holds_a_lock_is_explained(tmp_path: Path) -> None:
    out = stress(
        "run", "pool", "--variant", "fork-while-logging", "-n", "40", "--seed", "3", "--out", "run", cwd=tmp_path
    )
    assert out.code == 0, out.stdout + out.stderr
    rows = [r for r in results(tmp_path / "run") if r["outcome"] == "deadlocked"]
    assert rows, "no trial forked while the logger held its lock"
    message = rows[0]["evidence"]["messages"][0]
    assert message.startswith("in process ForkPoolWorker")
    assert "LOGGER.lock held by logger, a thread this process does not have" in message


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_other_start_methods(tmp_path: Path, method: str) -> None:
    out = stress(
        "run",
        "shared-value",
        "--variant",
        "get-lock",
        "--variant",
        "plus-equals",
        "-n",
        "3",
        "--seed",
        "1",
        "--start-method",
        method,
        "--out",
        "run",
        cwd=tmp_path,
    )
    assert out.code == 0, out.stdout + out.stderr
    data = summary(tmp_path / "run")
    assert data["config"]["start_method"] == method
    assert variant(data, "get-lock")["outcomes"] == {"passed": 3}
    replay = variant(data, "plus-equals")["example"]
    if replay is not None:
        assert f"--start-method {method}" in replay["replay"]

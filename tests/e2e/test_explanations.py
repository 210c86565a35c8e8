"""A failure's headline says why: what each waiting thread would need to go on and why nobody left
can give it, and, when an actor raised, the exception, before anything the body checked after it.

The fixture's variants fail the same way in every trial (`tests/e2e/fixtures/explained.py`); the
headline is the first message of each failing trial's evidence, as the terminal and the reports
show it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import FIXTURES, results, stress


def _line_of(marker: str) -> int:
    lines = (FIXTURES / "explained.py").read_text().splitlines()
    return next(number for number, line in enumerate(lines, 1) if marker in line)


HEADLINES = {
    "short-of-parties": (
        "deadlocked",
        "attendee#0 and attendee#1 wait at meeting, which needs 3 parties: 2 have arrived; planner returned "
        f"from planner() (explained.py:{_line_of('def planner')}) without ever reaching it, and no other thread "
        "of the trial is left",
    ),
    "a-party-never-started": (
        "deadlocked",
        "wait#0 and wait#1 wait at gate, which needs 3 parties: 2 have arrived, and no other thread of the trial "
        f"is left to reach it; it was made for 3 at explained.py:{_line_of('MADE FOR THREE')}",
    ),
    "party-gives-up": (
        "deadlocked",
        "attendee#0 and attendee#1 wait at meeting, which needs 3 parties: 2 have arrived; quitter returned at "
        f"explained.py:{_line_of('GIVES UP HERE')} in quitter without reaching it (it had passed it 1 time)",
    ),
    "party-raises": (
        "deadlocked",
        "attendee#0 and attendee#1 wait at meeting, which needs 3 parties: 2 have arrived; clumsy (it raised "
        f"ValueError at explained.py:{_line_of('RAISES HERE')}) finished without reaching it",
    ),
    "task-waits-on-its-own-executor": (
        "deadlocked",
        "pool_0 waits for the result of lookup(), queued on its executor behind itself, its only worker",
    ),
    "permit-kept": (
        "deadlocked",
        "job waits for permits, whose count is 0: 2 acquires were never released, and no other thread of the "
        "trial is left to release it",
    ),
    "task-never-done": (
        "deadlocked",
        "producer waits in jobs.join() for 1 unfinished task: task_done() was not called for it, "
        "and no other thread of the trial is left to call it",
    ),
    "never-set": ("deadlocked", "waiter waits for ready to be set, and no other thread of the trial is left to set it"),
    "handler-takes-held-lock": (
        "deadlocked",
        "MainThread, in the signal handler on_signal(), waits for lock, which MainThread itself holds: "
        "the signal came while it held it",
    ),
    "raises-then-check-fails": (
        "error",
        f"FileExistsError: logs/run exists — in writer, at explained.py:{_line_of('raise FileExistsError')} in writer",
    ),
}


@pytest.mark.parametrize("variant", list(HEADLINES))
def test_the_headline_says_why_the_trial_broke(tmp_path: Path, variant: str) -> None:
    out = stress(
        "run",
        str(FIXTURES / "explained.py"),
        "--variant",
        variant,
        "-n",
        "3",
        "--seed",
        "1",
        "--out",
        "run",
        cwd=tmp_path,
    )
    assert out.code == 0, out.stdout + out.stderr  # expected unsafe, and exposed
    outcome, headline = HEADLINES[variant]
    records = results(tmp_path / "run")
    assert [r["outcome"] for r in records] == [outcome] * 3
    for record in records:
        assert record["evidence"]["messages"][0].startswith(headline), record["evidence"]
    if variant == "a-party-never-started":  # no line of the scenario's is on their stacks: the call is
        assert "wait#0 waits for gate at Barrier.wait(), the thread's target" in records[0]["evidence"]["wait_for"]


def test_the_check_made_after_an_exception_comes_second(tmp_path: Path) -> None:
    out = stress(
        "run",
        str(FIXTURES / "explained.py"),
        "--variant",
        "raises-then-check-fails",
        "-n",
        "1",
        "--out",
        "run",
        cwd=tmp_path,
    )
    assert out.code == 0, out.stdout + out.stderr
    messages = results(tmp_path / "run")[0]["evidence"]["messages"]
    assert messages[1] == "files written: ['b']"
    example = out.stdout.split("Example failures", 1)[1].splitlines()
    assert example[3].strip().startswith("FileExistsError: logs/run exists")


def test_a_semaphore_at_zero_lists_the_acquires_no_release_by_the_same_thread_answered(tmp_path: Path) -> None:
    out = stress(
        "run", str(FIXTURES / "explained.py"), "--variant", "permit-kept", "-n", "1", "--out", "run", cwd=tmp_path,
    )  # fmt: skip
    assert out.code == 0, out.stdout + out.stderr
    wait_for = results(tmp_path / "run")[0]["evidence"]["wait_for"]
    assert (
        "  permits was acquired, and not released by the same thread, by: "
        f"job#0 (finished) at explained.py:{_line_of('no release: the permit leaks')} in job; "
        f"job#1 (finished) at explained.py:{_line_of('no release: the permit leaks')} in job"
    ) in wait_for


def _left_held(tmp_path: Path, kind: str, takes: int) -> dict[str, list[str]]:
    """The evidence of a trial where one thread takes a lock ``takes`` times, finishes, and another waits."""
    (tmp_path / "leak.py").write_text(
        "import threading\nfrom harness import Scenario\ns = Scenario('leak', 'a lock left held')\n\n\n"
        f"@s.variant(expect='unsafe')\ndef left_held(trial):\n    lock = threading.{kind}()\n\n"
        "    def leaker():\n" + "        lock.acquire()\n" * takes + "\n    def victim():\n        lock.acquire()\n\n"
        "    trial.run_threads(leaker, count=1)\n    trial.run_threads(victim, count=1)\n"
    )
    out = stress("run", "leak.py", "-n", "2", "--out", "run", cwd=tmp_path)
    assert out.code == 0, out.stdout + out.stderr
    evidence: dict[str, list[str]] = results(tmp_path / "run")[0]["evidence"]
    return evidence


def test_a_lock_whose_holder_finished_is_not_blamed_on_a_fork(tmp_path: Path) -> None:
    evidence = _left_held(tmp_path, "Lock", 1)
    # Where the holder took it: a line of the code it ran, though its stack is gone.
    assert evidence["messages"][0].startswith(
        "victim waits for lock held by leaker, which took it at leak.py:11 in leaker and finished without releasing it"
    )
    assert "forked" not in " ".join(evidence.get("wait_for", []))
    # The place is the victim's; the line does not read as if the leaker finished there.
    assert evidence["wait_for"][0] == (
        "victim waits for lock at leak.py:14 in victim, held by leaker, which took it at leak.py:11 in leaker "
        "and finished without releasing it"
    )


def test_an_rlock_its_holder_took_twice_and_kept_says_both_lines(tmp_path: Path) -> None:
    assert _left_held(tmp_path, "RLock", 2)["messages"][0].startswith(
        "victim waits for lock held by leaker, which took it at leak.py:11 and 12 in leaker and finished without"
    )


# (The signal handler's self-deadlock has no actors to wait for: the body is the one stuck.)
# (A task that waits on its own executor: the body waits for the task's result, not in join().)
ACTORS_STUCK = [
    v for v, (outcome, _) in HEADLINES.items() if outcome == "deadlocked" and "handler" not in v and "executor" not in v
]


@pytest.mark.parametrize("variant", ACTORS_STUCK)
def test_a_controlled_schedule_that_deadlocks_says_why_too(tmp_path: Path, variant: str) -> None:
    # One thread at a time: the body waits in join() for the actors, which wait on the primitive.
    out = stress(
        "run", str(FIXTURES / "explained.py"), "--variant", variant, "--mode", "controlled",
        "-n", "2", "--seed", "1", "--out", "run", cwd=tmp_path,
    )  # fmt: skip
    assert out.code == 0, out.stdout + out.stderr
    _, headline = HEADLINES[variant]
    records = results(tmp_path / "run")
    assert [r["outcome"] for r in records] == ["deadlocked"] * 2
    for record in records:
        message = record["evidence"]["messages"][0]
        assert message.startswith(headline), message
        assert message.endswith("(MainThread waits in join() for them)"), message


def test_a_semaphore_leak_names_the_waiters_that_made_the_acquires(tmp_path: Path) -> None:
    # Two threads wait on a semaphore whose two permits one of them took and kept: the headline
    # names that one, not both of the waiters.
    (tmp_path / "keeper.py").write_text(
        "import threading\nfrom harness import Scenario\ns = Scenario('keeper', 'permits kept')\n\n\n"
        "@s.variant(expect='unsafe')\ndef kept(trial):\n    seats = threading.Semaphore(2)\n"
        "    taken = threading.Event()\n\n"
        "    def keeper():\n        seats.acquire()\n        seats.acquire()\n        taken.set()\n"
        "        seats.acquire()\n\n"
        "    def latecomer():\n        taken.wait()\n        seats.acquire()\n\n"
        "    with trial.threads() as group:\n        group.start(keeper)\n        group.start(latecomer)\n"
    )
    out = stress("run", "keeper.py", "-n", "3", "--seed", "1", "--out", "run", cwd=tmp_path)
    assert out.code == 0, out.stdout + out.stderr
    for record in results(tmp_path / "run"):
        headline = record["evidence"]["messages"][0]
        assert "2 acquires were never released, all by keeper itself" in headline, headline

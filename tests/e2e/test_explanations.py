"""A failure's headline says why: what each waiting thread would need to go on and why nobody left
can give it, and, when an actor raised, the exception, before anything the body checked after it.

The fixture's variants fail the same way in every trial (`tests/e2e/fixtures/explained.py`); the
headline is the first message of each failing trial's evidence, as the terminal and the reports
show it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import FIXTURES, results, stress

HEADLINES = {
    "short-of-parties": (
        "deadlocked",
        "attendee#0 and attendee#1 wait at meeting, which needs 3 parties: 2 are there, "
        "and no other thread of the trial is left to reach it",
    ),
    "permit-kept": (
        "deadlocked",
        "job waits for permits, whose count is 0: 2 acquires never released — "
        "job#0 at explained.py:34 in job (finished), job#1 at explained.py:34 in job (finished)",
    ),
    "task-never-done": (
        "deadlocked",
        "producer waits in jobs.join() for 1 unfinished task: task_done() was not called for it, "
        "and no thread left can call it",
    ),
    "never-set": ("deadlocked", "waiter waits for ready to be set, and no thread left can set it"),
    "raises-then-check-fails": (
        "error",
        "FileExistsError: logs/run exists — in writer, at explained.py:77 in writer",
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

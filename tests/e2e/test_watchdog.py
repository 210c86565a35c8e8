"""Hangs, crashes and errors end as the right outcome, with evidence, and the run goes on."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import FIXTURES, results, stress, summary, variant

MISBEHAVING = str(FIXTURES / "misbehaving.py")


def _line_of(marker: str) -> int:
    for number, line in enumerate((FIXTURES / "misbehaving.py").read_text().splitlines(), 1):
        if marker in line:
            return number
    raise AssertionError(marker)


def test_blocking_variant_is_hung_with_a_dump_naming_the_line(tmp_path: Path) -> None:
    timeout = 0.3
    hangs = 4
    out = stress(
        "run",
        MISBEHAVING,
        "--variant",
        "blocks",
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
    assert out.code == 1, out.stderr
    data = summary(tmp_path / "run")
    blocks = variant(data, "blocks")
    assert blocks["outcomes"] == {"hung": hangs}
    evidence = blocks["example"]["evidence"]
    line = _line_of("BLOCKS HERE")
    assert any(f"misbehaving.py:{line} in waiter" in where for where in evidence["blocked_at"])
    assert f'misbehaving.py", line {line} in waiter' in evidence["dump"]
    # The run went on to completion, and each hang cost at most its timeout plus 100 ms.
    assert data["complete"] is True
    assert data["wall_seconds"] <= hangs * (timeout + 0.1) + 0.2, data["wall_seconds"]
    assert f"misbehaving.py:{line} in waiter" in out.stdout


def test_adaptive_deadline_makes_hangs_cheap(tmp_path: Path) -> None:
    out = stress(
        "run",
        MISBEHAVING,
        "--variant",
        "fine",
        "--variant",
        "blocks",
        "--iterations",
        "12",
        "--seed",
        "1",
        "--jobs",
        "1",
        "--out",
        "run",
        cwd=tmp_path,
    )
    assert out.code == 1, out.stderr
    hung = [r for r in results(tmp_path / "run") if r["outcome"] == "hung"]
    assert len(hung) == 12
    # A variant's first trials may just be slow: they get the generous initial deadline. Once it
    # has hung twice without ever finishing, it borrows its scenario's deadline: a small multiple
    # of how long the scenario's other trials take.
    ordered = sorted(hung, key=lambda r: r["seq"])
    assert [r["timeout"] for r in ordered[:2]] == [2.0, 2.0]
    assert all(r["timeout"] <= 0.3 for r in ordered[2:]), [r["timeout"] for r in ordered]


def test_worker_that_exits_is_crashed_with_its_status_and_the_run_goes_on(tmp_path: Path) -> None:
    out = stress(
        "run",
        MISBEHAVING,
        "--variant",
        "exits",
        "--variant",
        "fine",
        "--iterations",
        "5",
        "--seed",
        "1",
        "--jobs",
        "2",
        "--out",
        "run",
        cwd=tmp_path,
    )
    assert out.code == 1, out.stderr
    data = summary(tmp_path / "run")
    exits = variant(data, "exits")
    assert exits["outcomes"] == {"crashed": 5}
    assert exits["example"]["evidence"]["exit_status"] == 3
    assert variant(data, "fine")["outcomes"] == {"passed": 5}
    assert "worker exited with status 3" in out.stdout


def test_segfault_is_crashed_with_the_fatal_error_dump(tmp_path: Path) -> None:
    out = stress(
        "run",
        MISBEHAVING,
        "--variant",
        "segfaults",
        "--iterations",
        "2",
        "--seed",
        "1",
        "--jobs",
        "1",
        "--out",
        "run",
        cwd=tmp_path,
    )
    assert out.code == 1, out.stderr
    segfaults = variant(summary(tmp_path / "run"), "segfaults")
    assert segfaults["outcomes"] == {"crashed": 2}
    evidence = segfaults["example"]["evidence"]
    assert evidence["exit_status"] == -11
    assert "Segmentation fault" in evidence["dump"]
    line = _line_of("SEGFAULT HERE")
    assert any(f"misbehaving.py:{line} in actor" in where for where in evidence["blocked_at"])


def test_exceptions_in_actors_are_errors_with_tracebacks(tmp_path: Path) -> None:
    out = stress(
        "run", MISBEHAVING, "--variant", "raises", "--iterations", "3", "--seed", "1", "--out", "run", cwd=tmp_path
    )
    assert out.code == 1
    raises = variant(summary(tmp_path / "run"), "raises")
    assert raises["outcomes"] == {"error": 3}
    tracebacks = raises["example"]["evidence"]["tracebacks"]
    assert len(tracebacks) == 2  # both actors raised
    assert all("ValueError: boom" in tb for tb in tracebacks)


def test_event_nobody_sets_is_deadlocked_at_once_not_hung(tmp_path: Path) -> None:
    out = stress(
        "run",
        MISBEHAVING,
        "--variant",
        "waits-for-nobody",
        "--iterations",
        "3",
        "--seed",
        "1",
        "--timeout",
        "30",
        "--out",
        "run",
        cwd=tmp_path,
    )
    assert out.code == 1, out.stderr
    entry = variant(summary(tmp_path / "run"), "waits-for-nobody")
    assert entry["outcomes"] == {"deadlocked": 3}
    example = entry["example"]
    assert example["duration"] < 1.0  # found by the wait-for graph, not by the 30 s watchdog
    line = _line_of("WAITS HERE")
    assert all(f"misbehaving.py:{line} in waiter" in where for where in example["evidence"]["wait_for"])
    assert "none of them can wake another" in example["evidence"]["messages"][0]

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
    assert data["complete"] is True
    assert f"misbehaving.py:{line} in waiter" in out.stdout
    # Its threads ran no process: the plan's process delay did nothing, and its plan says so.
    assert blocks["example"].get("delay_used") is False
    plan = next(line for line in out.stdout.splitlines() if line.strip().startswith("plan "))
    assert " delay " not in plan, plan
    # Each hang cost its timeout and little more: measured against the same number of quick trials run
    # on this machine just now, so a busy machine slows both alike.
    base = stress(
        "run", MISBEHAVING, "--variant", "fine", "-n", str(hangs), "--seed", "1", "-j", "1", "--out", "base",
        cwd=tmp_path,
    )  # fmt: skip
    assert base.code == 0, base.stderr
    extra = data["wall_seconds"] - summary(tmp_path / "base")["wall_seconds"]
    assert extra <= hangs * (timeout + 0.15), (extra, data["wall_seconds"])


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
    records = results(tmp_path / "run")
    hung = [r for r in records if r["outcome"] == "hung"]
    assert len(hung) == 12
    # A variant's first trials may just be slow: they get the generous initial deadline. Once it
    # has hung twice without ever finishing, it borrows its scenario's deadline: ten times how long
    # the scenario's other trials take (on a busy machine, longer: the deadline follows them).
    ordered = sorted(hung, key=lambda r: r["seq"])
    assert [r["timeout"] for r in ordered[:2]] == [2.0, 2.0]
    slowest_fine = max(r["duration"] for r in records if r["variant"].endswith("/fine"))
    for record in ordered[2:]:
        assert record["timeout"] <= max(0.05, 10 * slowest_fine) + 1e-9, (record["timeout"], slowest_fine)
    # Past the deadline, one short look at the worker's CPU use tells a blocked trial from a slow one.
    for record in ordered:
        assert record["duration"] < record["timeout"] + 0.25, record
        assert record["evidence"]["messages"][0].startswith("blocked: "), record["evidence"]


SLOW_OR_SPINNING = """
import time

from harness import Scenario, Trial

scenario = Scenario("slow", "Quick trials, then one that computes for a while; and one that spins for ever")


def compute(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


@scenario.variant(expect="safe")
def quick_then_slow(trial: Trial) -> None:
    \"\"\"Quick trials, then one that keeps a CPU busy for 0.15 s: far past 10x the others.\"\"\"
    trial.run_threads(compute, 0.15 if trial.plan.trial == 6 else 0.0, count=1)


@scenario.variant(expect="unsafe")
def spins(trial: Trial) -> None:
    \"\"\"Two quick trials, then busy for ever: a livelock.\"\"\"
    trial.run_threads(compute, 3600.0 if trial.plan.trial >= 2 else 0.0, count=1)
"""


def test_a_trial_still_computing_gets_more_time_and_a_livelock_ends_hung(tmp_path: Path) -> None:
    (tmp_path / "slow.py").write_text(SLOW_OR_SPINNING)
    out = stress("run", "slow.py", "-n", "8", "--seed", "1", "-j", "1", "--out", "run", "--preempt", "0", cwd=tmp_path)
    by_variant: dict[str, list[dict]] = {}
    for record in results(tmp_path / "run"):
        by_variant.setdefault(record["variant"], []).append(record)
    slow = {r["trial"]: r for r in by_variant["slow/quick-then-slow"]}
    assert {r["outcome"] for r in slow.values()} == {"passed"}, [r for r in slow.values() if r["outcome"] != "passed"]
    # Its deadline was well under its 0.15 s: it passed because it was seen working.
    assert slow[6]["duration"] > 0.15 > slow[6]["timeout"]
    spins = {r["trial"]: r for r in by_variant["slow/spins"]}
    assert [spins[t]["outcome"] for t in range(8)] == ["passed"] * 2 + ["hung"] * 6
    for t in range(2, 8):
        assert "busy all along" in spins[t]["evidence"]["messages"][0], spins[t]["evidence"]
        # A livelock ends once it has used half a second of CPU past its deadline (more wall time on a
        # busy machine, which gives it less CPU), and always before the hard cap of 10 s.
        assert spins[t]["timeout"] + 0.5 <= spins[t]["duration"] < 10.0
    assert out.code == 0, out.stdout + out.stderr


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
    assert (
        "wait for never to be set, and no other thread of the trial is left to set it"
        in (example["evidence"]["messages"][0])
    )


def test_a_hung_coroutine_trial_shows_where_each_task_waits(tmp_path: Path) -> None:
    """faulthandler sees threads only: a suspended task is on none of their stacks. The loop writes
    its tasks' chains of awaits into the dump, so a hang names the task lines (and is judged at all:
    without them, a livelock of tasks showed no frame of the code under test and ended undecided)."""
    fixture = FIXTURES / "hanging_async.py"
    source = fixture.read_text().splitlines()
    line = {marker: next(n for n, text in enumerate(source, 1) if marker in text) for marker in ("READER", "SPINS")}
    out = stress(
        "run", str(fixture), "-n", "1", "--seed", "1", "-j", "1", "--timeout", "0.3", "--out", "run", cwd=tmp_path
    )  # fmt: skip
    assert out.code == 0, out.stdout + out.stderr  # both unsafe, both exposed
    data = summary(tmp_path / "run")
    blocked = variant(data, "waits-for-a-blocked-thread")
    assert blocked["outcomes"] == {"hung": 1}, blocked
    where = blocked["example"]["evidence"]["blocked_at"]
    for task in ("reader#0", "reader#1"):
        assert any(w.startswith(f"task {task}: hanging_async.py:{line['READER']} in reader") for w in where), where
    assert any("hanging_async.py" in w and "in read_one_byte" in w and not w.startswith("task") for w in where), where
    spins = variant(data, "tasks-spin")
    assert spins["outcomes"] == {"hung": 1}, spins
    evidence = spins["example"]["evidence"]
    assert "busy all along" in evidence["messages"][0], evidence
    assert any(
        w.startswith(f"task spinner#0: hanging_async.py:{line['SPINS']} in spinner") for w in evidence["blocked_at"]
    )
    assert f"task spinner#1: hanging_async.py:{line['SPINS']}" in out.stdout

"""The engine in this process, with real workers and an injected clock."""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path

import pytest

import harness
from harness import Knob, Outcome, Perturbation, RunConfig, Scenario, Trial, TrialResult, run
from harness.engine.worker import WorkerHandle
from harness.results.run_dir import read_results
from harness.results.stats import VariantStats
from harness.results.summary import RunInfo, RunReport

scenario = Scenario("engine-test", "Variants for the engine's own tests")


@scenario.variant(expect="safe")
def quick(trial: Trial) -> None:
    trial.run_threads(lambda: None, count=2)


@scenario.variant(expect="safe")
def stuck(trial: Trial) -> None:
    time.sleep(3600)  # STUCK HERE: a wait no instrumented primitive sees


@scenario.variant(expect="unsafe")
def opposite_order(trial: Trial) -> None:
    lock_a = threading.Lock()
    lock_b = threading.Lock()
    both_hold_one = threading.Barrier(2)

    def take(first: threading.Lock, second: threading.Lock) -> None:
        with first:
            both_hold_one.wait()
            with second:
                pass

    with trial.threads() as group:
        group.start(take, lock_a, lock_b)
        group.start(take, lock_b, lock_a)


@scenario.variant(expect="unsafe")
def odd_trials_fail(trial: Trial) -> None:
    trial.check(trial.plan.trial % 2 == 0, f"trial {trial.plan.trial} is odd")


CALM = RunConfig(iterations=6, seed=3, jobs=2, perturbation=Perturbation.none())


class Recorder:
    def __init__(self) -> None:
        self.events: list[str] = []
        self.results: list[TrialResult] = []

    def started(self, info: RunInfo) -> None:
        self.events.append("started")

    def result(self, result: TrialResult, stats: VariantStats) -> None:
        self.results.append(result)

    def tick(self) -> None:
        pass

    def finished(self, report: RunReport) -> None:
        self.events.append("finished")


def test_run_reports_what_it_wrote(tmp_path: Path) -> None:
    recorder = Recorder()
    report = run([scenario.get("quick"), scenario.get("odd-trials-fail")], CALM, reports=tmp_path, observer=recorder)
    assert recorder.events == ["started", "finished"]
    assert len(recorder.results) == 12

    def key(r: TrialResult) -> tuple[str, int]:
        return (r.variant, r.seq)

    on_disk = [r.to_dict() for r in sorted(read_results(report.info.run_dir), key=key)]
    assert on_disk == [r.to_dict() for r in sorted(recorder.results, key=key)]
    by_name = {s.name: s for s in report.variants}
    assert by_name["quick"].failures == 0
    assert by_name["odd-trials-fail"].failures == 3
    assert report.variants[0].name == "odd-trials-fail"  # ranked first
    assert report.complete
    assert report.exit_code() == 0
    assert (report.info.run_dir / "summary.json").exists()


def test_hang_is_decided_by_the_injected_clock(tmp_path: Path) -> None:
    # Every reading of the clock advances it by a second: the 2 s initial deadline passes after a
    # few loop turns, however fast the real machine is, and nothing waits in real time.
    ticks = itertools.count()
    report = run(
        [scenario.get("stuck")],
        RunConfig(iterations=2, seed=1, jobs=1, perturbation=Perturbation.none()),
        reports=tmp_path,
        clock=lambda: float(next(ticks)),
    )
    (summary,) = report.variants
    assert summary.by_outcome == {Outcome.HUNG: 2}
    example = summary.example
    assert example is not None
    assert example.evidence is not None
    assert example.timeout == 2.0
    assert any("test_engine.py" in line and "in stuck" in line for line in example.evidence.blocked_at)


def test_fixed_timeout_is_used_and_recorded(tmp_path: Path) -> None:
    ticks = itertools.count()
    config = RunConfig(iterations=1, seed=1, jobs=1, timeout=5.0, perturbation=Perturbation.none())
    report = run([scenario.get("stuck")], config, reports=tmp_path, clock=lambda: float(next(ticks)))
    (result,) = read_results(report.info.run_dir)
    assert result.outcome is Outcome.HUNG
    assert result.timeout == 5.0
    assert result.duration >= 5.0


def test_plans_carry_the_run_seed_and_knobs(tmp_path: Path) -> None:
    config = RunConfig(iterations=4, seed=77, jobs=1, perturbation=Perturbation().with_(preempt=Knob.fixed(0.5)))
    report = run([scenario.get("quick")], config, reports=tmp_path)
    results = sorted(read_results(report.info.run_dir), key=lambda r: r.seq)
    assert [r.trial for r in results] == [0, 1, 2, 3]
    assert all(r.plan.preempt == 0.5 for r in results)
    assert len({r.plan.seed for r in results}) == 4


def test_opposite_order_deadlock_is_detected_with_its_cycle(tmp_path: Path) -> None:
    config = RunConfig(iterations=5, seed=1, jobs=1, timeout=30.0, perturbation=Perturbation.none())
    report = run([scenario.get("opposite-order")], config, reports=tmp_path)
    (summary,) = report.variants
    assert summary.by_outcome == {Outcome.DEADLOCKED: 5}
    example = summary.example
    assert example is not None
    assert example.evidence is not None
    assert example.duration < 1.0  # detected, not timed out
    summary_line = example.evidence.messages[0]
    assert "waits for lock_a" in summary_line or "waits for lock_b" in summary_line
    assert " held by " in summary_line
    assert len(example.evidence.wait_for) == 2
    assert all("test_engine.py" in line for line in example.evidence.wait_for)


@pytest.mark.parametrize(
    "dump",
    [
        "",
        # stress's own frames only: a worker caught between trials, or in its own set-up
        'Thread 0x00007f (most recent call first):\n  File "{harness}/engine/worker.py", line 500 in _worker_main\n',
    ],
    ids=["empty", "stress-only"],
)
def test_a_hang_without_evidence_is_never_hung(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dump: str) -> None:
    # The trial really blocks, but its dump shows no frame of the code under test: stress has no
    # evidence against the code, so it runs the trial again, and in the end says it cannot judge.
    harness_dir = str(Path(harness.__file__).parent)
    monkeypatch.setattr(WorkerHandle, "read_dump", lambda self: dump.format(harness=harness_dir))
    ticks = itertools.count()
    report = run(
        [scenario.get("stuck")],
        RunConfig(iterations=2, seed=1, jobs=1, perturbation=Perturbation.none()),
        reports=tmp_path,
        clock=lambda: float(next(ticks)),
    )
    (summary,) = report.variants
    assert summary.by_outcome == {Outcome.UNDECIDED: 2}
    assert summary.failures == 0
    assert summary.verdict.label == "undecided"
    assert report.exit_code() == 0
    example = summary.examples[0]
    assert len(example.notes) == 3
    assert all("no frame of the code under test" in note for note in example.notes)
    assert any("undecided" in note for note in report.health())

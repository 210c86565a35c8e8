"""``--sweep gil=on,off`` without an interpreter of each kind: the setting's parsing and labels, the
replay line of a trial of each side, which variants are safe only under the GIL, and the reports."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import pytest
from rich.console import Console

from harness.config import GIL, RunConfig, Sweep
from harness.errors import ConfigError
from harness.perturb.knobs import Perturbation
from harness.perturb.plan import Plan, make_plan
from harness.render import html, terminal
from harness.render.markdown import render_markdown
from harness.results.outcome import Evidence, Outcome, TrialResult
from harness.results.stats import LOAD_WINDOW, VariantStats
from harness.results.summary import RunInfo, RunReport, VariantInfo, ranked, replay_command
from harness.scenario import Expect

ON, OFF = 1.0, 0.0


def test_the_gil_is_swept_over_its_two_settings_in_the_order_given() -> None:
    assert Sweep.parse("gil=on,off", "--sweep") == Sweep(GIL, (ON, OFF))
    assert Sweep.parse("gil = off, on", "--sweep") == Sweep(GIL, (OFF, ON))
    sweep = Sweep.parse("gil=off,on", "--sweep")
    assert sweep.text() == "gil=off,on"
    assert [sweep.heading(v) for v in sweep.values] == ["GIL off", "GIL on"]
    assert sweep.title == "Failure rate with the GIL on and off"
    for bad in ("gil=on", "gil=on,on", "gil=on,off,on", "gil=0.5,1", "gil=yes,no"):
        with pytest.raises(ConfigError, match="gil=on,off"):
            Sweep.parse(bad, "--sweep")


def test_sweeping_the_gil_changes_no_knob_and_a_knob_sweep_reads_in_its_unit() -> None:
    config = RunConfig(iterations=10, seed=1, sweep=Sweep(GIL, (ON, OFF)))
    assert config.gil_sweep
    assert config.perturbation_for(OFF) == config.perturbation_for(ON) == config.perturbation
    pause = Sweep.parse("pause=0,50us", "--sweep")
    assert [pause.heading(v) for v in pause.values] == ["pause 0", "pause 50 µs"]
    assert Sweep.parse("cancel=0,0.2", "--sweep").label(0.2) == "0.2"  # a probability, not seconds
    assert not replace(config, sweep=pause).gil_sweep


def test_a_trial_replays_with_the_gil_of_its_side() -> None:
    swept = RunConfig(iterations=10, seed=7, sweep=Sweep(GIL, (ON, OFF)))
    assert replay_command(swept, "counter/no-lock", 3, sweep=OFF).endswith("--trial 3 --gil off")
    assert replay_command(swept, "counter/no-lock", 3, sweep=ON).endswith("--trial 3 --gil on")
    asked = RunConfig(iterations=10, seed=7, gil="off")
    assert replay_command(asked, "counter/no-lock", 3).endswith("--gil off")
    assert "--gil" not in replay_command(RunConfig(iterations=10, seed=7), "counter/no-lock", 3)


def _result(key: str, seq: int, value: float, failed: bool, duration: float = 0.002) -> TrialResult:
    plan = make_plan(Perturbation(), seed=1, trial=seq)
    return TrialResult(
        key,
        seq,
        seq,
        Outcome.FAILED if failed else Outcome.PASSED,
        duration,
        plan,
        evidence=Evidence(messages=("lost 3 increments",)) if failed else None,
        sweep=value,
    )


def _report(*, complete: bool = True) -> RunReport:
    """counter: no-lock held with the GIL and failed without it; split-lock failed with both; lock
    held with both. An interrupted run has the GIL-off side of none."""
    config = RunConfig(iterations=20, seed=1, sweep=Sweep(GIL, (ON, OFF)))
    keys = {"counter/no-lock": "unsafe", "counter/split-lock": "unsafe", "counter/lock": "safe"}
    info = RunInfo(
        run_id="RUN",
        run_dir=Path("reports/RUN"),
        config=config,
        variants=tuple(VariantInfo(key, expect, "") for key, expect in keys.items()),
        command="stress run counter --sweep gil=on,off",
        started="T0",
        python={"gil_enabled": True},
        jobs=2,
        scenarios={"counter": "Four threads add 1"},
        targets={"counter": "counter"},
    )
    stats = {key: VariantStats(key, Expect(expect)) for key, expect in keys.items()}
    for index, value in enumerate(config.sweep.values if complete else (ON,)):  # type: ignore[union-attr]
        for number in range(config.iterations):
            seq = index * config.iterations + number
            stats["counter/no-lock"].add(_result("counter/no-lock", seq, value, failed=not value and number % 4 == 0))
            stats["counter/split-lock"].add(_result("counter/split-lock", seq, value, failed=number % 2 == 0))
            stats["counter/lock"].add(_result("counter/lock", seq, value, failed=False))
    trials = sum(s.trials for s in stats.values())
    return RunReport(
        info=info,
        variants=ranked([s.summary() for s in stats.values()]),
        finished="T1",
        wall=2.0,
        trials=trials,
        complete=complete,
        interrupted=not complete,
        stopped_by=None if complete else "SIGINT",
    )


def test_a_variant_that_held_with_the_gil_and_failed_without_it_is_safe_only_under_it() -> None:
    report = _report()
    assert [s.variant for s in report.safe_only_under_gil()] == ["counter/no-lock"]
    data = report.to_dict()
    assert data["safe_only_under_gil"] == ["counter/no-lock"]
    entry = next(v for v in data["variants"] if v["variant"] == "counter/no-lock")
    rows = {row["value"]: row for row in entry["sweep"]}
    assert rows[ON]["failures"] == 0
    assert rows[OFF]["failures"] == 5
    assert entry["example"]["replay"].endswith("--gil off")
    # One failure in 20 against none in 20 is no evidence that the GIL matters (Fisher's test).
    few = replace(report.variants[0], sweep={ON: {Outcome.PASSED: 20}, OFF: {Outcome.PASSED: 19, Outcome.FAILED: 1}})
    assert replace(report, variants=(few,)).safe_only_under_gil() == []
    # Without a side, nothing is said either way.
    assert _report(complete=False).safe_only_under_gil() == []
    # Any other sweep says nothing of the GIL.
    preempt = replace(report.info.config, sweep=Sweep("preempt", (1.0, 0.0)))
    other = replace(report, info=replace(report.info, config=preempt))
    assert other.safe_only_under_gil() == []
    assert "safe_only_under_gil" not in other.to_dict()


def test_the_reports_show_the_gil_on_and_off_side_by_side() -> None:
    report = _report()
    out = io.StringIO()
    terminal.print_report(Console(file=out, width=100, color_system=None), report)
    text = out.getvalue()
    assert "Failure rate with the GIL on and off (swept)" in text
    row = next(line for line in text.splitlines() if line.startswith("no-lock "))
    assert row.split()[1] == "0/20", row
    assert "safe only under the GIL: no-lock" in text
    markdown = render_markdown(report)
    assert "| variant | GIL on | GIL off |" in markdown
    assert "| `counter/no-lock` | 0/20 | 25.0 % (" in markdown
    assert "**Safe only under the GIL** (held with it, failed without it): `counter/no-lock`" in markdown
    page = html.render_html(report)
    assert "Safe only under the GIL" in page
    assert "<code>counter/no-lock</code>" in page
    assert "GIL off" in page
    assert "swept: on and off" in page


def test_an_interrupted_sweep_does_not_say_no_variant_depends_on_the_gil() -> None:
    out = io.StringIO()
    terminal.print_report(Console(file=out, width=100, color_system=None), _report(complete=False))
    assert "no variant held with the GIL" not in out.getvalue()
    assert "Safe only under the GIL" not in render_markdown(_report(complete=False))


def test_a_sweeps_load_check_compares_trials_of_one_value() -> None:
    """The GIL-off side's trials take longer than the GIL-on side's: that is no busier machine."""
    stats = VariantStats("counter/lock", Expect.SAFE)
    plan = Plan(0, 1, 0.0, 0.0, None, 0.0, False, False)
    for seq in range(8 * LOAD_WINDOW):
        value, duration = (ON, 0.001) if seq < 4 * LOAD_WINDOW else (OFF, 0.010)
        stats.add(TrialResult("counter/lock", seq, seq, Outcome.PASSED, duration, plan, sweep=value))
    assert stats.slowdown() == pytest.approx(1.0)
    slower = VariantStats("counter/lock", Expect.SAFE)
    for seq in range(8 * LOAD_WINDOW):
        slower.add(TrialResult("counter/lock", seq, seq, Outcome.PASSED, 0.001 if seq < 100 else 0.01, plan))
    assert slower.slowdown() == pytest.approx(10.0)

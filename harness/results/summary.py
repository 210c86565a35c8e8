"""What a run was and what it found: `RunInfo`, `RunReport` and the ``summary.json`` document.

``summary.json`` is the machine-readable answer of a run; its schema is documented in the README
("Reading a report") and versioned by ``schema``. Renderers read a `RunReport`; nothing here draws.
"""

from __future__ import annotations

import platform
import shlex
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from harness.config import RunConfig
from harness.perturb import gil
from harness.perturb.knobs import Perturbation
from harness.results.outcome import Outcome, TrialResult
from harness.results.stats import VariantSummary, Verdict, fisher_exact

#: Significance level of the GIL comparison (`RunReport.safe_only_under_gil`), as `stress compare`'s.
ALPHA = 0.05

__all__ = ["SCHEMA", "RunInfo", "RunReport", "VariantInfo", "python_info", "ranked", "replay_command"]

SCHEMA = 1
#: How many times the replay command of a controlled schedule that did not fix what happened
#: runs it: such a failure comes back only by chance.
INEXACT_TIMES = 20


def python_info() -> dict[str, Any]:
    """The interpreter a run used: version, implementation, build, and whether the GIL is on."""
    return {
        "version": platform.python_version(),
        "implementation": platform.python_implementation(),
        "build": " ".join(platform.python_build()),
        "compiler": platform.python_compiler(),
        "free_threaded_build": gil.FREE_THREADED,
        "gil_enabled": gil.enabled(),
        "platform": platform.platform(),
    }


@dataclass(frozen=True)
class VariantInfo:
    key: str
    expect: str
    description: str


@dataclass(frozen=True)
class RunInfo:
    """What was asked of a run; written to ``run.json`` before the first trial."""

    run_id: str
    run_dir: Path
    config: RunConfig
    variants: tuple[VariantInfo, ...]
    command: str
    started: str
    python: dict[str, Any]
    jobs: int
    scenarios: dict[str, str]
    targets: dict[str, str]
    #: Where switches were forced: {"files": [...], "dirs": [...]} (replay needs the same).
    scope: dict[str, list[str]] = field(default_factory=dict)
    #: The folder the run was started in: a scenario file's path in ``targets`` is relative to it.
    cwd: str = ""

    @property
    def total_trials(self) -> int:
        """Trials the run was asked for (for an exhaustive search: its limit)."""
        return self.config.iterations * len(self.variants) * len(self.config.sweep_values)

    @property
    def exhaustive(self) -> bool:
        """A controlled run that explores every schedule within a preemption bound: how many
        trials it takes is found out by running them."""
        return self.config.controlled and self.config.max_preemptions is not None

    @property
    def mode_text(self) -> str:
        """``controlled (random walk + PCT d=3)``: how a controlled run picks its schedules."""
        config = self.config
        if not config.controlled:
            return "stress"
        if self.exhaustive:
            how = f"exhaustive, ≤ {config.max_preemptions} preemptions"
        elif config.strategy == "random":
            how = "random walk"
        elif config.strategy == "pct":
            how = f"PCT d={config.pct_depth}"
        else:
            how = f"random walk + PCT d={config.pct_depth}"
        if config.granularity == "line":
            how += ", line by line"
        return f"controlled ({how})"

    @property
    def unit(self) -> str:
        """What one trial is called: a schedule in controlled mode."""
        return "schedule" if self.config.controlled else "trial"

    def replay(self, result: TrialResult) -> str:
        """The command that re-runs ``result``'s trial: in controlled mode its schedule (``stress
        replay``; a schedule that did not fix what happened is run `INEXACT_TIMES` times), else its
        plan."""
        variant, trial = result.variant, result.trial
        if self.config.controlled:
            name = variant.partition("/")[2]
            words = ["stress", "replay", str(self.run_dir), "--variant", name, "--trial", str(trial)]
            if result.schedule is not None and not result.schedule.exact:
                words += ["--times", str(INEXACT_TIMES)]
            return shlex.join(words)
        sweep = result.sweep
        scenario = variant.partition("/")[0]
        return replay_command(self.config, variant, trial, target=self.targets.get(scenario), sweep=sweep)

    @classmethod
    def from_dict(cls, data: dict[str, Any], run_dir: Path) -> RunInfo:
        """Read back `to_dict` (a run folder's run.json)."""
        return cls(
            run_id=str(data["run_id"]),
            run_dir=run_dir,
            config=RunConfig.from_dict({**data["config"], "jobs": data.get("jobs", 1)}),
            variants=tuple(VariantInfo(v["variant"], v["expect"], v.get("description", "")) for v in data["variants"]),
            command=str(data.get("command", "")),
            started=str(data.get("started", "")),
            python=dict(data.get("python", {})),
            jobs=int(data.get("jobs", 1)),
            scenarios=dict(data.get("scenarios", {})),
            targets=dict(data.get("targets", {})),
            scope={k: list(v) for k, v in dict(data.get("scope", {})).items()},
            cwd=str(data.get("cwd", "")),
        )

    def target(self, scenario: str) -> str:
        """What reaches ``scenario`` again from here: its target as typed, a scenario file's path
        made to point at the file from the folder the run was started in, wherever that was."""
        target = self.targets.get(scenario, scenario)
        path, sep, name = target.partition("::")
        if self.cwd and path.endswith(".py") and not Path(path).is_absolute() and not Path(path).exists():
            there = Path(self.cwd) / path
            if there.exists():
                return f"{there}{sep}{name}"
        return target

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "run_id": self.run_id,
            "command": self.command,
            "started": self.started,
            "seed": self.config.seed,
            "config": self.config.to_dict(),
            "jobs": self.jobs,
            "python": self.python,
            "scenarios": self.scenarios,
            "targets": self.targets,
            "scope": self.scope,
            "cwd": self.cwd,
            "variants": [{"variant": v.key, "expect": v.expect, "description": v.description} for v in self.variants],
        }


def replay_command(
    config: RunConfig, variant: str, trial: int, *, target: str | None = None, sweep: float | None = None
) -> str:
    """The command that re-runs trial ``trial``'s plan of ``variant``: same seed, same knobs (in a
    sweep, the swept knob at the trial's value)."""
    scenario, _, name = variant.partition("/")
    words = ["stress", "run", target or scenario, "--variant", name, "--seed", str(config.seed), "--trial", str(trial)]
    defaults = Perturbation()
    current = config.perturbation_for(sweep)
    if replace(current, fresh_threads=False) == Perturbation.none():
        words.append("--no-perturbation")
        current = replace(defaults, fresh_threads=current.fresh_threads)
    for key, value in current.to_dict().items():
        if value != defaults.to_dict()[key]:
            flag = key.replace("_", "-")
            if isinstance(value, bool):
                words.append(f"--{flag}" if value else f"--no-{flag}")
            else:
                words += [f"--{flag}", value]
    if config.size is not None:
        words += ["--size", str(config.size)]
    if config.timeout is not None:
        words += ["--timeout", repr(config.timeout)]
    if config.start_method != "fork":
        words += ["--start-method", config.start_method]
    # The GIL the trial ran with: its side's in a GIL sweep, else the run's when it asked for one.
    setting = config.sweep.label(sweep) if config.gil_sweep and config.sweep and sweep is not None else config.gil
    if setting is not None:
        words += ["--gil", setting]
    return shlex.join(words)  # a path with a space in it stays one argument


def ranked(summaries: list[VariantSummary]) -> tuple[VariantSummary, ...]:
    """Highest failure rate first; ties broken by the interval's lower end, then by potential
    deadlocks (a finding without a failing trial still outranks a clean variant), then by name."""
    return tuple(sorted(summaries, key=lambda s: (-s.rate, -s.low, -len(s.potential_deadlocks), s.variant)))


@dataclass(frozen=True)
class RunReport:
    """A finished (or interrupted) run: its request and its figures, variants ranked."""

    info: RunInfo
    variants: tuple[VariantSummary, ...]
    finished: str
    wall: float
    trials: int
    complete: bool
    interrupted: bool = False
    #: The signal that stopped the run ("SIGINT", "SIGTERM"), when one did — early, or while its
    #: reports were being written.
    stopped_by: str | None = None
    #: Why the run folder could not be written (a full disk), when it could not: the run stopped.
    output_error: str | None = None
    #: Installed packages the code under test called, not in scope: their code ran with no switch
    #: inside (one step of a controlled schedule). ``--scope NAME`` puts one under test.
    atomic: tuple[str, ...] = ()

    @property
    def trials_per_second(self) -> float:
        return self.trials / self.wall if self.wall > 0 else 0.0

    @property
    def broken(self) -> list[VariantSummary]:
        return [s for s in self.variants if s.verdict is Verdict.BROKEN]

    @property
    def not_exposed(self) -> list[VariantSummary]:
        return [s for s in self.variants if s.verdict is Verdict.NOT_EXPOSED]

    def safe_only_under_gil(self) -> list[VariantSummary]:
        """In a GIL sweep (``--sweep gil=on,off``): the variants that never failed with the GIL on
        and failed with it off, significantly so (Fisher's exact test, two-sided, p < `ALPHA`:
        0 of 25 against 1 of 25 says nothing) — code that is correct only by accident of the GIL.
        Empty for any other run."""
        if not self.info.config.gil_sweep:
            return []
        found = []
        for summary in self.variants:
            rows = {value: (trials, failures) for value, trials, failures, *_ in summary.sweep_rates()}
            on, off = rows.get(1.0), rows.get(0.0)
            if on is None or off is None or on[1] or not off[1]:
                continue
            if fisher_exact(on[1], on[0] - on[1], off[1], off[0] - off[1]) < ALPHA:
                found.append(summary)
        return found

    def health(self) -> list[str]:
        """What the run says about itself, as Hypothesis's health checks do: a machine that got
        busier, trials given more time, trials run again or left undecided. Empty when none."""
        unit = self.info.unit
        notes = []
        slowdowns = [(s.slowdown, s.variant) for s in self.variants if s.slowdown is not None]
        if slowdowns and max(slowdowns)[0] >= 2.0:
            factor, variant = max(slowdowns)
            notes.append(
                f"{variant}'s {unit}s ran {factor:.1f}× slower at the end of the run than at its start "
                "(a busier machine?); the adaptive deadlines followed"
            )
        stretched = sum(s.stretched for s in self.variants)
        if stretched:
            notes.append(
                f"{_count(stretched, unit)} ran past the deadline while still working or sleeping on a timer, and "
                f"{'was' if stretched == 1 else 'were'} given more time before being judged (none by the clock alone)"
            )
        rerun = sum(s.rerun for s in self.variants)
        if rerun:
            notes.append(
                f"{_count(rerun, unit)} {'was' if rerun == 1 else 'were'} run again: an earlier attempt could not "
                "be judged (its worker was not "
                "inside the trial, or left no evidence of a hang)"
            )
        undecided = sum(s.undecided for s in self.variants)
        if undecided:
            them, count = ("it", "counts") if undecided == 1 else ("them", "count")
            notes.append(f"{_count(undecided, unit)} undecided: stress could not judge {them}; {count} neither way")
        for summary in [s for s in self.variants if s.unsupported]:
            why = next(
                (
                    e.evidence.messages[0]
                    for e in summary.examples
                    if e.outcome is Outcome.UNSUPPORTED and e.evidence and e.evidence.messages
                ),
                "a thread waited where the scheduler cannot see; run it in stress mode",
            )
            notes.append(f"{summary.variant} was not checked in controlled mode: {why}")
        if self.atomic:
            names = ", ".join(self.atomic)
            hint = " ".join(f"--scope {name}" for name in self.atomic)
            notes.append(
                f"installed code the variants called ran with no switch inside it ({names}): it was not under test; "
                f"{hint} puts it under test"
            )
        return notes

    def exit_code(self) -> int:
        """The exit code of the run: 130 or 143 when a Ctrl-C or a SIGTERM stopped it, else
        `findings_code`."""
        if self.output_error is not None:
            return 2
        if self.stopped_by is not None:
            return 143 if self.stopped_by == "SIGTERM" else 130
        return self.findings_code()

    def findings_code(self) -> int:
        """0: every verdict as expected; 1: a findings-level problem (see the README)."""
        unexpected = any(not s.verdict.as_expected for s in self.variants)
        if unexpected or (self.info.config.strict and self.not_exposed):
            return 1
        return 0

    def to_dict(self) -> dict[str, Any]:
        data = self.info.to_dict()
        data.update(
            {
                "finished": self.finished,
                "wall_seconds": round(self.wall, 3),
                "trials": self.trials,
                "trials_per_second": round(self.trials_per_second, 2),
                "complete": self.complete,
                "interrupted": self.interrupted,
                "stopped_by": self.stopped_by,
                "output_error": self.output_error,
                "ran_atomically": list(self.atomic),
                "exit_code": self.exit_code(),
                "health": self.health(),
                "variants": [self._variant_dict(s) for s in self.variants],
            }
        )
        if self.info.config.gil_sweep:
            data["safe_only_under_gil"] = [s.variant for s in self.safe_only_under_gil()]
        return data

    def _variant_dict(self, summary: VariantSummary) -> dict[str, Any]:
        data = summary.to_dict()
        if summary.example is not None:
            data["example"]["replay"] = self.info.replay(summary.example)
        return data


def _count(n: int, unit: str) -> str:
    return f"{n:,} {unit}{'s' if n != 1 else ''}"

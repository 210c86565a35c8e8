"""Run settings, validated once, with the source of every value.

Settings come in layers, highest precedence first: command-line flags, environment variables,
``[tool.stress]`` in ``pyproject.toml``, built-in defaults. `build_config` merges the layers and
validates each value where it came from, so an error names the value and its source
("--iterations -3: must be an integer >= 1"). Everything downstream receives a valid `RunConfig`.
"""

from __future__ import annotations

import math
import os
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.errors import ConfigError, did_you_mean
from harness.perturb.knobs import MAXIMA, UNITS, Knob, Perturbation, format_seconds, parse_seconds

__all__ = [
    "DEFAULT_ITERATIONS",
    "GIL",
    "REPLAY_ITERATIONS",
    "Layer",
    "RunConfig",
    "Sweep",
    "build_config",
    "default_jobs",
]

DEFAULT_ITERATIONS = 1000
#: Controlled mode's exhaustive search: schedules per variant at most, unless --iterations says.
EXPLORATION_LIMIT = 1_000_000
REPLAY_ITERATIONS = 20


def default_jobs() -> int:
    """CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


#: The sweep over the GIL (``--sweep gil=on,off``), on a free-threaded build: its values are 1.0
#: (on) and 0.0 (off), as every swept value is a number.
GIL = "gil"


@dataclass(frozen=True)
class Sweep:
    """Run the same variants once per value of one knob, that knob fixed at the value — or once
    with the GIL on and once with it off (knob `GIL`, values 1.0 and 0.0)."""

    knob: str
    values: tuple[float, ...]

    def text(self) -> str:
        return f"{self.knob.replace('_', '-')}=" + ",".join(
            self.label(v) if self.knob == GIL else repr(v) for v in self.values
        )

    def label(self, value: float) -> str:
        """How a swept value reads: ``on``/``off`` for the GIL, a time for a knob in seconds
        (``50 µs``), else the number (``0.01``)."""
        if self.knob == GIL:
            return "on" if value else "off"
        return format_seconds(value) if UNITS.get(self.knob) == "seconds" else f"{value:g}"

    def heading(self, value: float) -> str:
        """A column's heading for swept ``value``: ``GIL off``, ``preempt 0.01``."""
        return f"{'GIL' if self.knob == GIL else self.knob.replace('_', '-')} {self.label(value)}"

    @property
    def title(self) -> str:
        """What a table of the sweep shows: ``Failure rate with the GIL on and off``."""
        if self.knob == GIL:
            return "Failure rate with the GIL on and off"
        return f"Failure rate per value of {self.knob.replace('_', '-')}"

    @classmethod
    def parse(cls, text: str, where: str) -> Sweep:
        name, sep, values = str(text).partition("=")
        knob = name.strip().replace("-", "_")
        if sep and knob == GIL:
            settings = [v.strip().lower() for v in values.split(",")]
            if sorted(settings) != ["off", "on"]:
                raise ConfigError(f"{where}: the GIL is swept over its two settings, gil=on,off (or gil=off,on)")
            return cls(GIL, tuple(1.0 if v == "on" else 0.0 for v in settings))
        if not sep or knob not in UNITS:
            knobs = [*UNITS, GIL]
            raise ConfigError(
                f"{where}: give KNOB=V1,V2,... with KNOB one of {', '.join(k.replace('_', '-') for k in knobs)}"
                + (did_you_mean(knob, knobs) if sep else "")
            )
        parsed = []
        for value in values.split(","):
            knob_value = Knob.parse(value, unit=UNITS[knob], where=where, maximum=MAXIMA.get(knob))
            if knob_value.low != knob_value.high:
                raise ConfigError(f"{where}: each swept value is one value, not a range")
            parsed.append(knob_value.low)
        if len(parsed) < 2:
            raise ConfigError(f"{where}: a sweep needs at least two values")
        return cls(knob, tuple(parsed))


@dataclass(frozen=True)
class RunConfig:
    """Everything that shapes a run.

    Attributes:
        iterations: Trials per variant.
        seed: The run seed; with the trial index it determines every trial's plan.
        jobs: Worker processes.
        timeout: Seconds a trial may run before it counts as hung; None adapts it to the scenario.
        size: Work per actor; None uses each scenario's default.
        perturbation: The knobs.
        trial: Replay: run trial ``trial``'s plan on every iteration instead of trial ``i``'s.
        strict: An expected-unsafe variant that never failed makes the run fail too.
        start_method: How process actors (and plain ``multiprocessing.Process``) start in trials.
        sweep: Run every variant once per value of one knob (`Sweep`).
        actors: Actors per trial, for scenarios that let it vary; None uses each scenario's.
        mode: ``stress`` (real concurrency under perturbation) or ``controlled`` (one thread at a
            time, a scheduler choosing every switch: deterministic, replayable).
        strategy: In controlled mode, how schedules are chosen: ``random`` (random walk),
            ``pct`` (probabilistic concurrency testing), ``mixed`` (both, alternately).
        pct_depth: The bug depth PCT aims at (it forces depth - 1 priority changes).
        max_preemptions: In controlled mode, explore *every* schedule with at most this many
            preemptions (instead of sampling them).
        granularity: Where the controlled scheduler may switch: every ``opcode`` of the code under
            test, or every ``line``.
        step_limit: A controlled schedule longer than this many steps is a livelock (hung).
        scope: Code put under test besides the scenarios' own: module or package names (installed
            ones included) or paths (`harness.scope.resolve_patterns`).
        exclude: Code taken out of the code under test, in the same form.
        gil: ``on`` or ``off``: the GIL the run's interpreter and workers have (`harness.perturb.gil`);
            None leaves it as the interpreter started.
    """

    iterations: int = DEFAULT_ITERATIONS
    seed: int = 0
    jobs: int = field(default_factory=default_jobs)
    timeout: float | None = None
    size: int | None = None
    perturbation: Perturbation = field(default_factory=Perturbation)
    trial: int | None = None
    strict: bool = False
    start_method: str = "fork"
    sweep: Sweep | None = None
    actors: int | None = None
    mode: str = "stress"
    strategy: str = "mixed"
    pct_depth: int = 3
    max_preemptions: int | None = None
    granularity: str = "opcode"
    step_limit: int = 20_000
    scope: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    gil: str | None = None

    @property
    def controlled(self) -> bool:
        return self.mode == "controlled"

    @property
    def gil_sweep(self) -> bool:
        """Whether the run sweeps the GIL (``--sweep gil=on,off``): each setting runs in an
        interpreter of its own (`harness.engine.gil_sweep`)."""
        return self.sweep is not None and self.sweep.knob == GIL

    @property
    def sweep_values(self) -> tuple[float | None, ...]:
        return self.sweep.values if self.sweep is not None else (None,)

    def perturbation_for(self, value: float | None) -> Perturbation:
        """The knobs of a trial at swept ``value`` (or of any trial, without a sweep)."""
        if self.sweep is None or value is None or self.sweep.knob == GIL:
            return self.perturbation
        return self.perturbation.with_(**{self.sweep.knob: Knob.fixed(value)})

    def to_dict(self) -> dict[str, Any]:
        return {
            "iterations": self.iterations,
            "seed": self.seed,
            "jobs": self.jobs,
            "timeout": self.timeout,
            "size": self.size,
            "perturbation": self.perturbation.to_dict(),
            "trial": self.trial,
            "strict": self.strict,
            "start_method": self.start_method,
            "sweep": None if self.sweep is None else {"knob": self.sweep.knob, "values": list(self.sweep.values)},
            "actors": self.actors,
            "mode": self.mode,
            "strategy": self.strategy,
            "pct_depth": self.pct_depth,
            "max_preemptions": self.max_preemptions,
            "granularity": self.granularity,
            "step_limit": self.step_limit,
            "scope": list(self.scope),
            "exclude": list(self.exclude),
            "gil": self.gil,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        """Read back `to_dict` (a run folder's run.json)."""
        knobs = data.get("perturbation", {})
        fields_: dict[str, Any] = {}
        for key, value in knobs.items():
            if key in UNITS:
                fields_[key] = Knob.parse(str(value), unit=UNITS[key], where=f"run.json {key}")
            else:
                fields_[key] = bool(value)
        sweep = data.get("sweep")
        return cls(
            iterations=int(data["iterations"]),
            seed=int(data["seed"]),
            jobs=int(data.get("jobs", 1)),
            timeout=data.get("timeout"),
            size=data.get("size"),
            perturbation=Perturbation().with_(**fields_),
            trial=data.get("trial"),
            strict=bool(data.get("strict", False)),
            start_method=str(data.get("start_method", "fork")),
            sweep=None if not sweep else Sweep(str(sweep["knob"]), tuple(float(v) for v in sweep["values"])),
            actors=data.get("actors"),
            mode=str(data.get("mode", "stress")),
            strategy=str(data.get("strategy", "mixed")),
            pct_depth=int(data.get("pct_depth", 3)),
            max_preemptions=data.get("max_preemptions"),
            granularity=str(data.get("granularity", "opcode")),
            step_limit=int(data.get("step_limit", 20_000)),
            scope=tuple(data.get("scope", ())),
            exclude=tuple(data.get("exclude", ())),
            gil=data.get("gil"),
        )


@dataclass(frozen=True)
class Layer:
    """One source of settings. ``name(key, value)`` says where a value came from, for messages."""

    values: Mapping[str, Any]
    name: Callable[[str, Any], str]


def _flag_name(key: str, value: Any) -> str:
    return f"--{key.replace('_', '-')} {value}"


FLAGS = _flag_name

_KNOBS = ("preempt", "pause", "switch_interval", "jitter", "sync", "delay", "cancel")
_SWITCHES = ("shuffle", "barrier")
KNOWN = (
    "iterations",
    "seed",
    "jobs",
    "timeout",
    "size",
    "trial",
    "strict",
    "perturbation",
    "start_method",
    "sweep",
    "actors",
    "mode",
    "strategy",
    "pct_depth",
    "max_preemptions",
    "granularity",
    "step_limit",
    "scope",
    "exclude",
    "fresh_threads",
    "gil",
    *_KNOBS,
    *_SWITCHES,
)
START_METHODS = ("fork", "spawn", "forkserver")
CHOICES = {
    "mode": ("stress", "controlled"),
    "strategy": ("mixed", "random", "pct"),
    "granularity": ("opcode", "line"),
    "gil": ("on", "off"),
}
#: Perturbation has no meaning when a scheduler picks every switch.
_STRESS_ONLY = ("trial", "sweep", "start_method", "perturbation", *_KNOBS, *_SWITCHES)
_CONTROLLED_ONLY = ("strategy", "pct_depth", "max_preemptions", "granularity", "step_limit")


#: The largest value each integer setting takes: beyond it, a number cannot mean anything useful.
LIMITS = {
    "iterations": 1_000_000_000,
    "seed": 2**64 - 1,
    "size": 1_000_000_000,
    "trial": 1_000_000_000,
    "actors": 1_000,
    "pct_depth": 100,
    "max_preemptions": 100,
    "step_limit": 100_000_000,
}
#: The longest fixed deadline, in seconds (a day).
MAX_TIMEOUT = 86_400.0


def max_jobs() -> int:
    """The most worker processes a run may start: each is a whole interpreter, and beyond a few per
    CPU they only compete for it."""
    return max(64, 16 * default_jobs())


def _integer(value: Any, where: str, *, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, bool):
        raise ConfigError(f"{where}: must be an integer >= {minimum}")
    try:
        number = int(str(value).strip()) if not isinstance(value, int) else value
    except ValueError:
        raise ConfigError(f"{where}: not an integer; give a whole number >= {minimum}") from None
    if number < minimum:
        raise ConfigError(f"{where}: must be an integer >= {minimum}")
    if maximum is not None and number > maximum:
        raise ConfigError(f"{where}: at most {maximum:,}; a larger number cannot mean anything here")
    return number


def _jobs(value: Any, where: str) -> int:
    limit = max_jobs()
    number = _integer(value, where, minimum=1)
    if number > limit:
        raise ConfigError(
            f"{where}: at most {limit} workers here (16 per CPU, 64 at least); more only compete for the CPUs"
        )
    return number


def _bounded(key: str, got: tuple[Any, str], *, minimum: int) -> int:
    return _integer(*got, minimum=minimum, maximum=LIMITS.get(key))


def _timeout(value: Any, where: str) -> float | None:
    if value is None or str(value).strip().lower() in ("auto", "adaptive"):
        return None
    try:
        seconds = float(value) if isinstance(value, int | float) else parse_seconds(str(value))
    except ValueError:
        raise ConfigError(f"{where}: not a duration; give seconds (e.g. 0.5), a value like 200ms, or 'auto'") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise ConfigError(f"{where}: must be a positive duration (e.g. 0.5 or 200ms), or 'auto'")
    if seconds > MAX_TIMEOUT:
        raise ConfigError(f"{where}: at most {MAX_TIMEOUT:.0f} s (a day); or 'auto'")
    return seconds


def _boolean(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{where}: must be true or false")


def build_config(
    layers: Sequence[Layer],
    *,
    random_seed: Callable[[], int] = lambda: secrets.randbelow(2**32),
    jobs: Callable[[], int] = default_jobs,
) -> RunConfig:
    """Merge ``layers`` (highest precedence first) into a validated `RunConfig`."""
    chosen: dict[str, tuple[Any, str]] = {}
    depth: dict[str, int] = {}
    for index, layer in enumerate(layers):
        unknown = [key for key in layer.values if key not in KNOWN]
        if unknown:
            key = unknown[0]
            raise ConfigError(
                f"{layer.name(key, layer.values[key])}: unknown setting {key!r}" + did_you_mean(key, KNOWN)
            )
        _check_conflicts(layer)
        for key, value in layer.values.items():
            if value is not None and value != () and key not in chosen:
                chosen[key] = (value, layer.name(key, value))
                depth[key] = index

    def get(key: str) -> tuple[Any, str] | None:
        return chosen.get(key)

    perturbation = Perturbation()
    off = get("perturbation")
    if off is not None and not _boolean(*off):
        perturbation = Perturbation.none()
        # "Everything off" overrides knobs set by lower-precedence layers, not higher ones.
        for key in (*_KNOBS, *_SWITCHES):
            if key in chosen and depth[key] > depth["perturbation"]:
                del chosen[key]
    knobs: dict[str, Any] = {}
    for key in _KNOBS:
        got = get(key)
        if got is not None:
            value, where = got
            knobs[key] = Knob.parse(str(value), unit=UNITS[key], where=where, maximum=MAXIMA.get(key))
    for key in _SWITCHES:
        got = get(key)
        if got is not None:
            knobs[key] = _boolean(*got)
    fresh = get("fresh_threads")
    if fresh is not None:
        knobs["fresh_threads"] = _boolean(*fresh)
    perturbation = perturbation.with_(**knobs)

    mode = chosen.get("mode")
    controlled = mode is not None and str(mode[0]).strip().lower() == "controlled"
    if not controlled:
        stray = next((key for key in _CONTROLLED_ONLY if key in chosen), None)
        if stray is not None:
            raise ConfigError(f"{chosen[stray][1]} needs --mode controlled (it shapes controlled schedules)")
    else:
        stray = next((key for key in _STRESS_ONLY if key in chosen and depth[key] >= depth["mode"]), None)
        if stray is not None:
            hint = " (to replay a controlled schedule: stress replay RUN_DIR --trial K)" if stray == "trial" else ""
            raise ConfigError(
                f"{chosen[stray][1]} does nothing in controlled mode: one thread runs at a time and a scheduler "
                f"picks every switch{hint}"
            )
    trial = _bounded("trial", chosen["trial"], minimum=0) if "trial" in chosen else None
    if trial is not None and "seed" not in chosen:
        seed_flag = "--stress-seed" if str(chosen["trial"][1]).startswith("--stress-") else "--seed"
        raise ConfigError(
            f"{chosen['trial'][1]} needs {seed_flag}: a trial's plan is derived from the run seed, "
            "so replay with the seed of the run that failed"
        )
    if "iterations" in chosen:
        iterations = _bounded("iterations", chosen["iterations"], minimum=1)
    elif controlled and "max_preemptions" in chosen:
        iterations = EXPLORATION_LIMIT
    else:
        iterations = REPLAY_ITERATIONS if trial is not None else DEFAULT_ITERATIONS
    return RunConfig(
        iterations=iterations,
        seed=_bounded("seed", chosen["seed"], minimum=0) if "seed" in chosen else random_seed(),
        jobs=_jobs(*chosen["jobs"]) if "jobs" in chosen else jobs(),
        timeout=_timeout(*chosen["timeout"]) if "timeout" in chosen else None,
        size=_bounded("size", chosen["size"], minimum=1) if "size" in chosen else None,
        perturbation=perturbation,
        trial=trial,
        strict=_boolean(*chosen["strict"]) if "strict" in chosen else False,
        start_method=_start_method(*chosen["start_method"]) if "start_method" in chosen else "fork",
        sweep=Sweep.parse(*chosen["sweep"]) if "sweep" in chosen else None,
        actors=_bounded("actors", chosen["actors"], minimum=1) if "actors" in chosen else None,
        mode=_choice("mode", *chosen["mode"]) if "mode" in chosen else "stress",
        strategy=_choice("strategy", *chosen["strategy"]) if "strategy" in chosen else "mixed",
        pct_depth=_bounded("pct_depth", chosen["pct_depth"], minimum=1) if "pct_depth" in chosen else 3,
        max_preemptions=(
            _bounded("max_preemptions", chosen["max_preemptions"], minimum=0) if "max_preemptions" in chosen else None
        ),
        granularity=_choice("granularity", *chosen["granularity"]) if "granularity" in chosen else "opcode",
        step_limit=_bounded("step_limit", chosen["step_limit"], minimum=10) if "step_limit" in chosen else 20_000,
        scope=_patterns(*chosen["scope"]) if "scope" in chosen else (),
        exclude=_patterns(*chosen["exclude"]) if "exclude" in chosen else (),
        gil=_choice("gil", *chosen["gil"]) if "gil" in chosen else None,
    )


def _patterns(value: Any, where: str) -> tuple[str, ...]:
    """A list of module names or paths: a TOML array, repeated flags, or one comma-separated string."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(item, str) for item in items):
        raise ConfigError(f"{where}: a list of module names or paths")
    return tuple(item.strip() for item in items if item.strip())


def _choice(key: str, value: Any, where: str) -> str:
    text = str(value).strip().lower()
    options = CHOICES[key]
    if text not in options:
        raise ConfigError(f"{where}: use one of {', '.join(options)}" + did_you_mean(text, options))
    return text


def _start_method(value: Any, where: str) -> str:
    method = str(value).strip().lower()
    if method not in START_METHODS:
        raise ConfigError(
            f"{where}: not a start method; use one of {', '.join(START_METHODS)}" + did_you_mean(method, START_METHODS)
        )
    return method


def _check_conflicts(layer: Layer) -> None:
    values = {k: v for k, v in layer.values.items() if v is not None}
    if "sweep" in values:
        knob = str(values["sweep"]).partition("=")[0].strip().replace("-", "_")
        if knob in values:
            raise ConfigError(
                f"{layer.name('sweep', values['sweep'])} conflicts with {layer.name(knob, values[knob])}: "
                "the sweep sets that knob; drop one of them"
            )
    if "perturbation" not in values:
        return
    switch = values["perturbation"]
    if not _boolean(switch, layer.name("perturbation", switch)):
        clash = [key for key in (*_KNOBS, *_SWITCHES) if key in values]
        if clash:
            key = clash[0]
            raise ConfigError(
                f"{layer.name('perturbation', switch)} conflicts with {layer.name(key, values[key])}: "
                "the first switches every knob off; drop one of them"
            )

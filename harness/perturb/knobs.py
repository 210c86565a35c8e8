"""Perturbation knobs: how each one is set, parsed and sampled.

A knob is off, a fixed value, or a range sampled anew for every trial. Ranges with a positive lower
end are sampled log-uniformly, because what matters for a race is the order of magnitude (a switch
interval of 1 µs and of 1 ms behave differently; 1 ms and 2 ms hardly do). `Perturbation` groups the
knobs of a run; `harness.perturb.plan` turns it into one concrete plan per trial.
"""

from __future__ import annotations

import functools
import math
import random
import re
from dataclasses import dataclass, fields, replace
from typing import Any, Literal

from harness.errors import ConfigError

__all__ = ["UNITS", "Knob", "Perturbation", "format_seconds", "parse_seconds"]

Unit = Literal["probability", "seconds"]

_SUFFIX = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_DURATION = re.compile(r"^\s*([0-9.eE+-]+)\s*(s|ms|us|µs|ns)?\s*$")


def parse_seconds(text: str) -> float:
    """``"500us"`` -> 0.0005. A bare number is seconds. Raises `ValueError` on anything else."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(text)
    value = float(match.group(1)) * _SUFFIX[match.group(2) or "s"]
    if not math.isfinite(value):
        raise ValueError(text)
    return value


def format_seconds(value: float) -> str:
    """A short human form: ``1.2 ms``, ``35 µs``, ``0``; a long one in minutes, hours or days
    (``50 days``, not ``4.3e+06 s``)."""
    if value == 0:
        return "0"
    for unit, scale in (("days", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if abs(value) >= 2 * scale:
            number = value / scale
            return f"{number:.0f} {unit}" if abs(number) >= 10 else f"{number:.2g} {unit}"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9)):
        if abs(value) >= scale or unit == "ns":
            number = value / scale
            return f"{number:.0f} {unit}" if abs(number) >= 10 else f"{number:.2g} {unit}"
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class Knob:
    """One knob's setting: off (``0``), fixed (``low == high``) or a per-trial range."""

    low: float = 0.0
    high: float = 0.0

    def __post_init__(self) -> None:
        if self.low < 0 or self.high < self.low:
            raise ValueError(f"bad knob range {self.low}:{self.high}")

    @classmethod
    def fixed(cls, value: float) -> Knob:
        return cls(value, value)

    @property
    def off(self) -> bool:
        return self.high == 0

    def sample(self, rng: random.Random) -> float:
        """Draw this trial's value. Always consumes exactly one random number, so that switching
        one knob off never shifts the values the other knobs get."""
        u = rng.random()
        if self.low == self.high:
            return self.low
        if self.low > 0:
            log_low, log_span = self._log_range
            return math.exp(log_low + u * log_span)
        return self.low + u * (self.high - self.low)

    @functools.cached_property
    def _log_range(self) -> tuple[float, float]:
        """``log(low)`` and ``log(high) - log(low)``: a range with ``low > 0`` is sampled
        log-uniformly (computed once; the parent draws a plan per trial)."""
        log_low = math.log(self.low)
        return log_low, math.log(self.high) - log_low

    @classmethod
    def parse(cls, text: str, *, unit: Unit, where: str, maximum: float | None = None) -> Knob:
        """Parse ``off``, ``VALUE`` or ``LOW:HIGH``; durations take ``s``/``ms``/``us`` suffixes.

        ``where`` names the value and its source for error messages (``--preempt 2``); a value above
        ``maximum`` (seconds, for a duration) is refused.
        """
        raw = str(text).strip().lower()
        if raw in ("off", "0", "none", "no"):
            return cls()
        expected = "a probability in [0, 1]" if unit == "probability" else "a duration such as 0.001, 1ms or 50us"
        example = "0.01 or 0.001:0.05" if unit == "probability" else "1ms or 1us:5ms"
        try:
            parts = [_parse_value(part, unit) for part in raw.split(":")]
        except ValueError:
            raise ConfigError(f"{where}: not {expected}; use 'off', one value or LOW:HIGH, e.g. {example}") from None
        if len(parts) > 2:
            raise ConfigError(f"{where}: give 'off', one value or LOW:HIGH, e.g. {example}")
        low, high = parts[0], parts[-1]
        if any(v < 0 for v in parts) or (unit == "probability" and high > 1):
            raise ConfigError(f"{where}: must be {expected}")
        if high < low:
            raise ConfigError(f"{where}: the range's low end is above its high end")
        if maximum is not None and high > maximum:
            raise ConfigError(
                f"{where}: at most {format_seconds(maximum) if unit == 'seconds' else maximum}; a longer one only "
                "makes every trial wait, it exposes nothing more"
            )
        return cls(low, high)

    def describe(self, unit: Unit) -> str:
        if self.off:
            return "off"
        show = _format_probability if unit == "probability" else format_seconds
        if self.low == self.high:
            return show(self.low)
        return f"{show(self.low)} – {show(self.high)}"

    def to_text(self) -> str:
        """The form `parse` reads back (``off``, ``0.01``, ``0.001:0.05``)."""
        if self.off:
            return "off"
        if self.low == self.high:
            return repr(self.low)
        return f"{self.low!r}:{self.high!r}"


def _parse_value(part: str, unit: Unit) -> float:
    value = float(part) if unit == "probability" else parse_seconds(part)
    if not math.isfinite(value):
        raise ValueError(part)
    return value


UNITS: dict[str, Unit] = {
    "preempt": "probability",
    "pause": "seconds",
    "switch_interval": "seconds",
    "jitter": "seconds",
    "sync": "probability",
    "delay": "seconds",
    "cancel": "probability",
}


#: The longest value a duration knob may take: stress's own waits must stay small beside a trial.
MAXIMA: dict[str, float] = {"pause": 0.1, "switch_interval": 1.0, "jitter": 1.0, "delay": 1.0}


def _format_probability(value: float) -> str:
    return f"{value:.3g}"


@dataclass(frozen=True)
class Perturbation:
    """The perturbation knobs of a run (what ``stress run`` flags set).

    Attributes:
        preempt: Probability, per bytecode instruction executed in the code under test, of forcing
            a thread switch there. This is what exposes races inside one line on modern CPython.
        pause: How long a forced switch pauses the thread (``0``: just yield the GIL).
        switch_interval: `sys.setswitchinterval` for the trial; off keeps the interpreter's value.
        jitter: Upper bound of a random delay before each actor starts its work.
        sync: Probability of a forced thread switch just before and just after each operation on
            an instrumented primitive (acquire, release, wait, notify), and of a delay around each
            multiprocessing operation (queue, pipe, shared value, lock).
        delay: How long a forced switch pauses a *process* actor: yielding the interpreter does
            nothing for another process, time does.
        cancel: Probability, at each operation of a coroutine trial's task on an asyncio primitive,
            of cancelling the task there (`harness.detect.aio`): a ``CancelledError`` the code must
            survive. Off by default; thread trials ignore it.
        shuffle: Start the actors in a random order.
        barrier: Hold every actor at a barrier so that they all start together.
        fresh_threads: Start a new thread for every thread actor of every trial, instead of
            reusing the worker's parked actor threads (`harness.actors`). Not a perturbation:
            `none` keeps it off, and ``--no-perturbation`` leaves it as it is.
    """

    preempt: Knob = Knob(1e-3, 2e-2)
    pause: Knob = Knob()
    switch_interval: Knob = Knob(1e-5, 1e-2)
    jitter: Knob = Knob(0.0, 1e-4)
    sync: Knob = Knob(1e-2, 2e-1)
    delay: Knob = Knob(1e-5, 1e-3)
    cancel: Knob = Knob()
    shuffle: bool = True
    barrier: bool = True
    fresh_threads: bool = False

    @classmethod
    def none(cls) -> Perturbation:
        """Every knob off: plain repetition, as a baseline."""
        return cls(Knob(), Knob(), Knob(), Knob(), Knob(), Knob(), Knob(), shuffle=False, barrier=False)

    def with_(self, **changes: Any) -> Perturbation:
        return replace(self, **changes)

    def describe(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Knob):
                out[f.name] = value.describe(UNITS[f.name])
            else:
                out[f.name] = "on" if value else "off"
        return out

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = value.to_text() if isinstance(value, Knob) else value
        return out

"""Perturbation plans: the concrete knob values of one trial.

A plan is a pure function of the run's `Perturbation` settings, the run seed and the trial index,
so any trial can be re-run with exactly its plan (``stress run ... --seed S --trial K``). Plans are
independent of the variant: trial K of every variant of a run gets the same plan, which makes the
comparison between strategies a paired one.
"""

from __future__ import annotations

import functools
import json
import random
from dataclasses import dataclass, fields
from typing import Any

from harness.perturb.knobs import Perturbation, format_seconds

#: JSON in one line with no spaces: one encoder for every call (`json.dumps` with any option set
#: makes a new one each time, and a run writes a line per trial).
compact_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode

__all__ = ["ActorStart", "Plan", "make_plan"]


@dataclass(frozen=True)
class ActorStart:
    """When one actor starts: its position in the start order and its start delay."""

    actor: int
    delay: float


@dataclass(frozen=True)
class Plan:
    """The knob values of one trial.

    Attributes:
        trial: The trial index the plan was derived from.
        seed: Seed for everything random inside the trial (preemption points, `Trial.rng`).
        preempt: Probability of a forced thread switch per instruction of the code under test.
        pause: Length of the pause at a forced switch (0: a bare yield).
        switch_interval: Value for `sys.setswitchinterval`, or None to leave it alone.
        jitter: Upper bound of each actor's start delay.
        sync: Probability of a forced switch around each primitive operation.
        delay: Length of a forced switch in a process actor, and of a delay at a multiprocessing
            operation.
        shuffle: Whether actors start in a random order.
        barrier: Whether actors wait for each other before starting their work.
        fresh_threads: Whether thread actors ran on new threads (``--fresh-threads``) rather than
            on the worker's reused actor threads.
        cancel: Probability of cancelling a coroutine trial's task at an operation on an asyncio
            primitive (``--cancel``).
    """

    trial: int
    seed: int
    preempt: float
    pause: float
    switch_interval: float | None
    jitter: float
    shuffle: bool
    barrier: bool
    sync: float = 0.0
    delay: float = 0.0
    fresh_threads: bool = False
    cancel: float = 0.0

    def starts(self, count: int, *, group: int = 0) -> list[ActorStart]:
        """The start order and delays of ``count`` actors (the ``group``-th actor group of the
        trial). Deterministic in the plan, so a replay starts actors the same way.

        Each actor draws a delay up to ``jitter``; only the differences between them change who
        starts when, so the smallest is taken off all of them: the first actor starts at once, and
        no trial waits for a delay every actor shares."""
        order = list(range(count))
        if not self.shuffle and not self.jitter:
            return [ActorStart(actor, 0.0) for actor in order]
        rng = random.Random(f"stress-starts/{self.seed}/{group}/{count}")
        if self.shuffle:
            rng.shuffle(order)
        delays = [rng.uniform(0.0, self.jitter) if self.jitter else 0.0 for _ in order]
        first = min(delays)
        return [ActorStart(actor, delay - first) for actor, delay in zip(order, delays, strict=True)]

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _FIELDS}

    @functools.cached_property
    def as_json(self) -> str:
        """`to_dict` as compact JSON, made once: trial K of every variant of a run shares its plan,
        and each of their result lines carries it."""
        return compact_json(self.to_dict())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Plan:
        return cls(**{name: data[name] for name in cls.__dataclass_fields__ if name in data})

    def describe(self, *, delay: bool = True) -> str:
        """One line for people: ``preempt 0.012 · sync 0.05 · delay 0.2 ms · switch 1.3 ms · jitter ≤ 40 µs``
        (random start order and the barrier are the defaults; only their absence is mentioned;
        without ``delay``, the delay is left out: the trial had nothing it acts on)."""
        parts = [f"preempt {self.preempt:.2g}" if self.preempt else "preempt off"]
        if self.sync:
            parts.append(f"sync {self.sync:.2g}")
        if self.delay and delay:
            parts.append(f"delay {format_seconds(self.delay)}")
        if (self.preempt or self.sync) and self.pause:
            parts.append(f"pause {format_seconds(self.pause)}")
        if self.switch_interval is not None:
            parts.append(f"switch {format_seconds(self.switch_interval)}")
        if self.jitter:
            parts.append(f"jitter ≤ {format_seconds(self.jitter)}")
        if not self.shuffle:
            parts.append("in order")
        if not self.barrier:
            parts.append("no barrier")
        if self.fresh_threads:
            parts.append("fresh threads")
        if self.cancel:
            parts.append(f"cancel {self.cancel:.2g}")
        return " · ".join(parts)


def make_plan(perturbation: Perturbation, *, seed: int, trial: int) -> Plan:
    """Derive trial ``trial``'s plan from the run seed. Same inputs, same plan, on every machine
    and Python version (string seeds go through SHA-512 in `random.Random`)."""
    rng = random.Random(f"stress-plan/{seed}/{trial}")
    preempt = perturbation.preempt.sample(rng)
    pause = perturbation.pause.sample(rng)
    switch = perturbation.switch_interval.sample(rng)
    jitter = perturbation.jitter.sample(rng)
    seed = rng.getrandbits(63)
    sync = perturbation.sync.sample(rng)
    delay = perturbation.delay.sample(rng)
    cancel = perturbation.cancel.sample(rng)  # drawn last: the other knobs' values stay as they were
    return Plan(
        trial=trial,
        seed=seed,
        preempt=preempt,
        pause=pause,
        switch_interval=None if perturbation.switch_interval.off else switch,
        jitter=jitter,
        shuffle=perturbation.shuffle,
        barrier=perturbation.barrier,
        sync=sync,
        delay=delay,
        fresh_threads=perturbation.fresh_threads,
        cancel=cancel,
    )


_FIELDS = tuple(f.name for f in fields(Plan))

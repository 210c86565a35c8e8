"""BENCHMARK-ONLY: schedules-to-first-failure of two peer tools, frontrun and interleave-test.

Nothing in ``harness/`` imports this module, and neither peer is a dependency of ``stress``: they
are benchmark-only extras, imported lazily inside the functions below, so importing this module
without them works and a missing tool shows up as :class:`PeerUnavailable` when it is asked for.

Four scenarios, written the same way for both tools (shared state classes and worker functions
live in this file, so both tools trace the same code):

* ``counter``      -- 2 threads each run ``counter.value += 1`` once; failure: final value != 2.
* ``bank``         -- balance 100, 2 threads each run ``if acct.balance >= 60:`` then
                      ``acct.balance -= 60`` (separate statements); failure: balance < 0 or more than
                      100 withdrawn in total.
* ``deadlock``     -- 2 threads, two ``threading.Lock``\\s taken in opposite order; failure: deadlock.
* ``philosophers`` -- 5 threads, 5 locks, each takes its left then its right; failure: deadlock.

For each run we report the number of schedules (interleavings) executed up to and including the
first failing one -- ``None`` when none failed within ``cap`` -- and the wall time of the
exploration call. Counterexample replay (frontrun's ``reproduce_on_failure``) is switched off so
the time is the search alone.

Environments: frontrun 0.7.0 supports Python >= 3.10; interleave-test 0.1.0 needs Python >= 3.12
(it is built on ``sys.monitoring``). Run with ``/work/venv-peers/bin/python`` (3.11: frontrun only)
or ``/work/venv-peers312/bin/python`` (3.12: both)::

    python benchmarks/peers.py [--tools frontrun interleave-test] [--seeds 5] [--cap 1000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

SCENARIOS: tuple[str, ...] = ("counter", "bank", "deadlock", "philosophers")
TOOLS: tuple[str, ...] = ("frontrun", "interleave-test")
DEFAULT_CAP = 1000
DEFAULT_TIMEOUT = 10.0
PHILOSOPHERS = 5


class PeerUnavailable(RuntimeError):
    """The peer tool is not installed in this interpreter (or cannot run on this Python)."""


@dataclass(frozen=True)
class PeerRun:
    """One exploration by one peer tool.

    ``schedules`` counts schedules executed up to and including the first failing one (1 = the very
    first schedule failed); ``None`` when no failure was found within the cap. ``explored`` is the
    number of schedules the tool actually ran. ``kind`` is ``"invariant"``, ``"deadlock"``,
    ``"hang"`` (the tool gave up on a schedule that did not finish in time) or ``None``.
    """

    tool: str
    scenario: str
    strategy: str
    seed: int
    schedules: int | None
    wall: float
    kind: str | None
    explored: int
    detail: str


# --------------------------------------------------------------------------------------------------
# The scenarios, shared by both tools. Locks are made with ``threading.Lock()`` looked up at call
# time (never ``from threading import Lock``): both tools swap ``threading.Lock`` for a modelled
# lock while they run, and only locks created then are visible to their schedulers.
# --------------------------------------------------------------------------------------------------


class Counter:
    def __init__(self) -> None:
        self.value = 0


class Account:
    def __init__(self) -> None:
        self.balance = 100
        self.taken = [0, 0]  # what each customer withdrew: one slot each, so this record cannot race


class LockPair:
    def __init__(self) -> None:
        self.a = threading.Lock()
        self.b = threading.Lock()


class Table:
    def __init__(self) -> None:
        self.forks = [threading.Lock() for _ in range(PHILOSOPHERS)]


def increment(counter: Counter) -> None:
    counter.value += 1


def withdraw(acct: Account, who: int) -> None:
    if acct.balance >= 60:
        acct.balance -= 60
        acct.taken[who] = 60


def a_then_b(pair: LockPair) -> None:
    with pair.a:  # noqa: SIM117 -- the order the locks are taken in is the point
        with pair.b:
            pass


def b_then_a(pair: LockPair) -> None:
    with pair.b:  # noqa: SIM117
        with pair.a:
            pass


def dine(table: Table, seat: int) -> None:
    left = table.forks[seat]
    right = table.forks[(seat + 1) % PHILOSOPHERS]
    with left:  # noqa: SIM117
        with right:
            pass


def _counter_ok(counter: Counter) -> bool:
    return counter.value == 2


def _bank_ok(acct: Account) -> bool:
    return acct.balance >= 0 and sum(acct.taken) <= 100


def _no_invariant(_state: object) -> bool:
    return True  # deadlock scenarios: the failure is the deadlock itself


# (state factory, one worker per thread taking the state, invariant over the final state)
_Spec = tuple[Callable[[], Any], list[Callable[[Any], None]], Callable[[Any], bool]]


def _spec(scenario: str) -> _Spec:
    if scenario == "counter":
        return Counter, [increment, increment], _counter_ok
    if scenario == "bank":
        return Account, [lambda acct: withdraw(acct, 0), lambda acct: withdraw(acct, 1)], _bank_ok
    if scenario == "deadlock":
        return LockPair, [a_then_b, b_then_a], _no_invariant
    if scenario == "philosophers":
        seats = [_seat(i) for i in range(PHILOSOPHERS)]
        return Table, seats, _no_invariant
    raise ValueError(f"unknown scenario {scenario!r}; expected one of {', '.join(SCENARIOS)}")


def _seat(i: int) -> Callable[[Table], None]:
    return lambda table: dine(table, i)


def _parse(strategy: str) -> tuple[str, dict[str, str]]:
    """``"name:k=v,k=v"`` -> (``name``, {k: v}); the suffix overrides a strategy's parameters."""
    name, _, rest = strategy.partition(":")
    params = dict(item.split("=", 1) for item in rest.split(",") if item)
    return name, params


# --------------------------------------------------------------------------------------------------
# frontrun (https://pypi.org/project/frontrun/), tested with 0.7.0
# --------------------------------------------------------------------------------------------------

# name -> (frontrun strategy, DPOR search order or None, default preemption bound); "pb" may be
# overridden with ":pb=N" or ":pb=none". A "{seed}" in the search order is filled from the seed.
_FRONTRUN: dict[str, tuple[str, str | None, int | None]] = {
    "dpor": ("dpor", "dfs", 2),  # frontrun's defaults
    "dpor-full": ("dpor", "dfs", None),  # no preemption bound: full (optimal) DPOR
    "dpor-bitrev": ("dpor", "bit-reversal:{seed}", None),
    "dpor-stride": ("dpor", "stride:{seed}", None),
    "dpor-rr": ("dpor", "round-robin:{seed}", None),
    "dpor-conflict-first": ("dpor", "conflict-first", None),
    "random": ("random", None, None),
}


def frontrun_run(
    scenario: str, seed: int, strategy: str = "dpor", *, cap: int = DEFAULT_CAP, timeout: float = DEFAULT_TIMEOUT
) -> PeerRun:
    """Explore ``scenario`` with frontrun; see :class:`PeerRun`."""
    try:
        import frontrun
    except ImportError as exc:
        raise PeerUnavailable(f"frontrun is not installed for {sys.executable}: {exc}") from exc
    name, params = _parse(strategy)
    if name not in _FRONTRUN:
        raise ValueError(f"unknown frontrun strategy {strategy!r}; expected one of {', '.join(_FRONTRUN)}")
    kind_, search, bound = _FRONTRUN[name]
    if "pb" in params:
        bound = None if params["pb"].lower() == "none" else int(params["pb"])
    # explore() refuses to run unless the process is under the `frontrun` CLI (which sets
    # FRONTRUN_ACTIVE=1 and LD_PRELOADs a C-level I/O interceptor) or its pytest plugin patched the
    # locks. This code does no I/O, so the gate alone is enough; it has no other effect.
    os.environ.setdefault("FRONTRUN_ACTIVE", "1")
    setup, workers, invariant = _spec(scenario)
    options: dict[str, Any] = {
        "reproduce_on_failure": 0,  # do not replay the counterexample 10 times: we time the search
        "detect_io": False,  # no sockets/files here; spares a dispatcher thread per exploration
        "deadlock_timeout": timeout,  # fallback when a thread blocks somewhere frontrun cannot see
        "timeout_per_run": timeout,
    }
    if kind_ == "dpor":
        options.update(max_executions=cap, preemption_bound=bound, search=(search or "dfs").format(seed=seed))
    else:
        options.update(max_attempts=cap, seed=seed)
    start = time.perf_counter()
    result = frontrun.explore(setup=setup, workers=workers, invariant=invariant, strategy=kind_, **options)
    wall = time.perf_counter() - start
    text = result.explanation or result.inconclusive_reason or ""
    schedules: int | None
    if result.property_holds is False:
        # stop_on_first (the default) returns on the first failing execution, so the count of
        # executions run is the number of the failing one (DPOR also lists it in result.failures).
        schedules = result.failures[0][0] if result.failures else result.num_explored
        kind = "deadlock" if text.startswith("Deadlock detected") else "invariant"
    elif result.property_holds is None and "timed out" in text:
        schedules, kind = result.num_explored, "hang"  # inconclusive: a run did not finish in time
    else:
        schedules, kind = None, None
    return PeerRun(
        "frontrun", scenario, strategy, seed, schedules, wall, kind, result.num_explored, text.split("\n", 1)[0]
    )


def frontrun_schedules(
    scenario: str, seed: int, strategy: str = "dpor", cap: int = DEFAULT_CAP
) -> tuple[int | None, float]:
    """(schedules until the first failure, or None within ``cap``; wall seconds) under frontrun."""
    run = frontrun_run(scenario, seed, strategy, cap=cap)
    return run.schedules, run.wall


# --------------------------------------------------------------------------------------------------
# interleave-test (https://pypi.org/project/interleave-test/), tested with 0.1.0; Python >= 3.12
# --------------------------------------------------------------------------------------------------

_INTERLEAVE = ("random", "pct", "dfs")


def _interleave_model(scenario: str) -> Callable[[], None]:
    """The scenario as an interleave-test model: build state, spawn, join, assert."""
    import interleave_test as it

    setup, workers, invariant = _spec(scenario)

    def model() -> None:
        state = setup()
        tasks = [it.spawn(worker, state) for worker in workers]
        for task in tasks:
            task.join()
        assert invariant(state), f"{scenario}: invariant violated"

    model.__name__ = scenario
    return model


def interleave_run(
    scenario: str, seed: int, strategy: str = "random", *, cap: int = DEFAULT_CAP, timeout: float = DEFAULT_TIMEOUT
) -> PeerRun:
    """Explore ``scenario`` with interleave-test; see :class:`PeerRun`."""
    try:
        import interleave_test as it
    except ImportError as exc:
        raise PeerUnavailable(
            f"interleave-test is not installed for {sys.executable} (it needs Python >= 3.12): {exc}"
        ) from exc
    name, params = _parse(strategy)
    strat: Any
    if name == "random":
        strat = it.RandomStrategy()
    elif name == "pct":  # a fresh instance per run: PCTStrategy adapts its state across schedules
        strat = it.PCTStrategy(depth=int(params.get("d", 3)))
    elif name == "dfs":
        strat = it.DFSStrategy(max_preemptions=int(params.get("pb", 2)))
    else:
        raise ValueError(f"unknown interleave-test strategy {strategy!r}; expected one of {', '.join(_INTERLEAVE)}")
    model = _interleave_model(scenario)
    start = time.perf_counter()
    result = it.explore(model, iterations=cap, seed=seed, strategy=strat, timeout=timeout, raise_on_failure=False)
    wall = time.perf_counter() - start
    failure = result.failure
    if failure is None:
        return PeerRun("interleave-test", scenario, strategy, seed, None, wall, None, result.schedules_run, "")
    kind = {"exception": "invariant", "deadlock": "deadlock", "hang": "hang"}[failure.kind]
    detail = failure.format().split("\n", 1)[0]
    # failure.iteration is 0-based; schedules_run stops at the failing schedule.
    return PeerRun(
        "interleave-test", scenario, strategy, seed, failure.iteration + 1, wall, kind, result.schedules_run, detail
    )


def interleave_schedules(
    scenario: str, seed: int, strategy: str = "random", cap: int = DEFAULT_CAP
) -> tuple[int | None, float]:
    """(schedules until the first failure, or None within ``cap``; wall seconds) under interleave-test."""
    run = interleave_run(scenario, seed, strategy, cap=cap)
    return run.schedules, run.wall


# --------------------------------------------------------------------------------------------------
# Dispatch and the table
# --------------------------------------------------------------------------------------------------


def strategies(tool: str) -> list[str]:
    """The strategies worth benchmarking for ``tool`` (``":k=v"`` suffixes set parameters)."""
    if tool == "frontrun":
        return list(_FRONTRUN)
    if tool == "interleave-test":
        return ["random", "pct", "pct:d=5", "dfs", "dfs:pb=4"]
    raise ValueError(f"unknown tool {tool!r}; expected one of {', '.join(TOOLS)}")


def run_peer(
    tool: str, scenario: str, seed: int, strategy: str, *, cap: int = DEFAULT_CAP, timeout: float = DEFAULT_TIMEOUT
) -> PeerRun:
    if tool == "frontrun":
        return frontrun_run(scenario, seed, strategy, cap=cap, timeout=timeout)
    if tool == "interleave-test":
        return interleave_run(scenario, seed, strategy, cap=cap, timeout=timeout)
    raise ValueError(f"unknown tool {tool!r}; expected one of {', '.join(TOOLS)}")


def _fmt_count(run: PeerRun) -> str:
    if run.schedules is None:
        return "-"
    return f"{run.schedules}" + ("h" if run.kind == "hang" else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--tools", nargs="+", default=list(TOOLS), choices=TOOLS)
    parser.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=SCENARIOS)
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 (default 5)")
    parser.add_argument("--cap", type=int, default=DEFAULT_CAP, help="schedules per exploration (default 1000)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds per schedule before a hang")
    args = parser.parse_args(argv)

    seeds = range(args.seeds)
    print(f"Python {sys.version.split()[0]}; cap {args.cap} schedules; '-' = no failure within the cap")
    seed_cols = " ".join(f"{'s' + str(s):>5}" for s in seeds)
    header = (
        f"{'tool':<16} {'scenario':<13} {'strategy':<20} {seed_cols} {'found':>5} {'median':>7} {'ms/run':>8}  kind"
    )
    print(header)
    print("-" * len(header))
    for tool in args.tools:
        for scenario in args.scenarios:
            for strategy in strategies(tool):
                try:
                    runs = [run_peer(tool, scenario, s, strategy, cap=args.cap, timeout=args.timeout) for s in seeds]
                except PeerUnavailable as exc:
                    print(f"{tool:<16} unavailable: {exc}")
                    break
                found = [r.schedules for r in runs if r.schedules is not None]
                median = f"{statistics.median(found):g}" if found else "-"
                wall_ms = 1000 * statistics.mean(r.wall for r in runs)
                kinds = ",".join(sorted({r.kind for r in runs if r.kind})) or "-"
                cols = " ".join(f"{_fmt_count(r):>5}" for r in runs)
                print(
                    f"{tool:<16} {scenario:<13} {strategy:<20} {cols} {len(found):>2}/{len(runs):<2} "
                    f"{median:>7} {wall_ms:>8.1f}  {kinds}",
                    flush=True,
                )
            else:
                continue
            break
    return 0


if __name__ == "__main__":
    sys.exit(main())

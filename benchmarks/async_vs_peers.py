"""Controlled mode for coroutines against frontrun's async exploration: schedules to the first failure,
and false alarms on the fixed programs.

Four small asyncio programs, each a buggy and a fixed version, written once as (setup, tasks,
invariant) and run unchanged by both tools:

* ``connections`` — two callers each open the client's connection when they see none yet; the await
  between the check and the store (an unbounded queue's ``put``) never suspends in a plain run. Fixed:
  an ``asyncio.Lock`` around both.
* ``bank`` — two customers withdraw 10 from an account holding 10, auditing each withdrawal between
  the balance check and the debit. Fixed: the debit before the audit.
* ``locks`` — two ``asyncio.Lock``s taken in opposite orders (a deadlock; the invariant holds when
  both tasks finish). Fixed: one order.
* ``wakeup`` — a consumer waits on an Event, audits, clears it and takes one item per wake-up: a
  ``set()`` between its wake-up and its ``clear()`` is lost and it waits for ever. Fixed: clear,
  then take every item there is.

stress runs each as a coroutine variant in controlled mode (its default strategy mix, as
``stress run --mode controlled``), judged as if any await on a primitive may suspend
(``may_suspend``; frontrun, too, takes every await for a scheduling point); frontrun runs ``frontrun.explore`` with async workers, strategy
``random`` (seeded) and ``dpor`` (systematic: one run stands for all seeds). For the buggy versions:
the median number of schedules up to and including the first failing one over ``--seeds`` seeds, and
the median wall time. For the fixed versions: how many of ``--fixed`` schedules failed (any failure is
a false alarm). Both run in this process, one after the other.

frontrun is benchmark-only: install it in a virtualenv of its own (it registers a pytest plugin)::

    python -m venv /tmp/bench && /tmp/bench/bin/pip install -e ".[bench]"
    /tmp/bench/bin/python benchmarks/async_vs_peers.py            # --seeds 50 by default
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import io
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from harness import Scenario, Trial
from harness.config import Layer, build_config
from harness.engine.local import first_failure
from harness.scenario import Variant

Task = Callable[[Any], Awaitable[None]]


@dataclasses.dataclass
class Program:
    setup: Callable[[], Any]
    tasks: list[Task]
    invariant: Callable[[Any], bool]


# -- the programs ----------------------------------------------------------------------------------


class Client:
    def __init__(self) -> None:
        self.connection: str | None = None
        self.opened = 0
        self.lock = asyncio.Lock()
        self.log: asyncio.Queue[str] = asyncio.Queue()


async def _connect(client: Client) -> str:
    await client.log.put("connecting")
    client.opened += 1
    return f"connection {client.opened}"


async def get_unlocked(client: Client) -> None:
    if client.connection is None:
        client.connection = await _connect(client)


async def get_locked(client: Client) -> None:
    async with client.lock:
        if client.connection is None:
            client.connection = await _connect(client)


class Account:
    def __init__(self) -> None:
        self.balance = 10
        self.taken = 0
        self.audit: asyncio.Queue[int] = asyncio.Queue()


async def withdraw_check_then_act(account: Account) -> None:
    if account.balance >= 10:
        await account.audit.put(10)
        account.balance -= 10
        account.taken += 10


async def withdraw_act_then_audit(account: Account) -> None:
    if account.balance >= 10:
        account.balance -= 10
        account.taken += 10
        await account.audit.put(10)


class Locks:
    def __init__(self) -> None:
        self.a, self.b = asyncio.Lock(), asyncio.Lock()
        self.done = 0


async def a_then_b(state: Locks) -> None:
    async with state.a, state.b:
        state.done += 1


async def b_then_a(state: Locks) -> None:
    async with state.b, state.a:
        state.done += 1


class Handoff:
    def __init__(self) -> None:
        self.items: list[int] = []
        self.taken: list[int] = []
        self.ready = asyncio.Event()
        self.log: asyncio.Queue[str] = asyncio.Queue()


async def produce(state: Handoff) -> None:
    for item in range(2):
        state.items.append(item)
        state.ready.set()
        await asyncio.sleep(0)


async def consume_one_per_wake_up(state: Handoff) -> None:
    while len(state.taken) < 2:
        await state.ready.wait()
        await state.log.put("woken")
        state.ready.clear()
        state.taken.append(state.items.pop(0))


async def consume_drain(state: Handoff) -> None:
    while len(state.taken) < 2:
        await state.ready.wait()
        state.ready.clear()
        while state.items:
            state.taken.append(state.items.pop(0))


PROGRAMS: dict[str, tuple[Program, Program]] = {
    "connections": (
        Program(Client, [get_unlocked, get_unlocked], lambda c: c.opened == 1),
        Program(Client, [get_locked, get_locked], lambda c: c.opened == 1),
    ),
    "bank": (
        Program(Account, [withdraw_check_then_act] * 2, lambda a: a.balance >= 0 and a.taken <= 10),
        Program(Account, [withdraw_act_then_audit] * 2, lambda a: a.balance >= 0 and a.taken <= 10),
    ),
    "locks": (
        Program(Locks, [a_then_b, b_then_a], lambda s: s.done == 2),
        Program(Locks, [a_then_b, a_then_b], lambda s: s.done == 2),
    ),
    "wakeup": (
        Program(Handoff, [produce, consume_one_per_wake_up], lambda s: s.taken == [0, 1]),
        Program(Handoff, [produce, consume_drain], lambda s: s.taken == [0, 1]),
    ),
}


# -- stress ----------------------------------------------------------------------------------------

# Judged as if any await on a primitive may suspend, as frontrun treats every await as a point.
scenario = Scenario("async-peers", "The async peer benchmark's programs, run by stress", may_suspend=True)


def _body(name: str, program: Program) -> Callable[[Trial], Awaitable[None]]:
    async def body(trial: Trial) -> None:
        state = program.setup()
        async with trial.tasks() as group:
            for task in program.tasks:
                group.start(task, state)
        trial.check(program.invariant(state), f"{name}: invariant violated")

    body.__name__ = name.replace("-", "_")
    return body


for _name, (_buggy, _fixed) in PROGRAMS.items():
    scenario.variant(_name, expect="unsafe")(_body(_name, _buggy))
    scenario.variant(f"{_name}-fixed", expect="safe")(_body(f"{_name}-fixed", _fixed))


def _variant(label: str) -> Variant:
    return dataclasses.replace(scenario.get(label), files=(str(Path(__file__).resolve()),))


@dataclasses.dataclass
class Row:
    tool: str
    schedules: float | None  # median; None: most seeds found nothing within the cap
    wall: float  # median seconds
    found: int
    seeds: int


def _median(counts: list[int | None], cap: int) -> float | None:
    middle = statistics.median([c if c is not None else cap + 1 for c in counts])
    return None if middle > cap else middle


def stress_first(name: str, seeds: int, cap: int) -> Row:
    counts: list[int | None] = []
    walls = []
    for seed in range(seeds):
        config = build_config([Layer({"mode": "controlled", "seed": seed}, lambda key, value: key)])
        found = first_failure(_variant(name), config, limit=cap)
        counts.append(found.schedules)
        walls.append(found.seconds)
    return Row(
        "stress controlled", _median(counts, cap), statistics.median(walls), sum(c is not None for c in counts), seeds
    )


def stress_false_alarms(name: str, schedules: int) -> int:
    config = build_config([Layer({"mode": "controlled", "seed": 1}, lambda key, value: key)])
    found = first_failure(_variant(f"{name}-fixed"), config, limit=schedules)
    return 0 if found.schedules is None else 1


# -- frontrun --------------------------------------------------------------------------------------


def _frontrun(program: Program, strategy: str, seed: int, attempts: int) -> tuple[bool, int, float]:
    """(failed, schedules run, seconds) of one frontrun search."""
    import frontrun  # benchmark-only (see the module docstring)

    started = time.perf_counter()
    options: dict[str, Any] = {"deadlock_timeout": 0.5, "timeout_per_run": 2.0}
    if strategy == "random":
        options.update(max_attempts=attempts, seed=seed)
    else:
        options.update(max_executions=attempts)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        result = frontrun.explore(program.setup, list(program.tasks), program.invariant, strategy=strategy, **options)
    if asyncio.iscoroutine(result):
        result = asyncio.run(result)
    failed = result.property_holds is False
    return failed, int(result.num_explored or 0), time.perf_counter() - started


def frontrun_first(name: str, strategy: str, seeds: int, cap: int) -> Row | str:
    program = PROGRAMS[name][0]
    runs = 1 if strategy == "dpor" else seeds
    counts: list[int | None] = []
    walls = []
    for seed in range(runs):
        try:
            failed, explored, wall = _frontrun(program, strategy, seed, cap)
        except ImportError:
            return "not installed"
        except Exception as exc:  # a peer's own error is its result
            return f"error: {type(exc).__name__}"
        counts.append(explored if failed else None)
        walls.append(wall)
    return Row(
        f"frontrun {strategy}", _median(counts, cap), statistics.median(walls), sum(c is not None for c in counts), runs
    )


def frontrun_false_alarms(name: str, strategy: str, schedules: int) -> int | str:
    try:
        failed, _, _ = _frontrun(PROGRAMS[name][1], strategy, 1, schedules)
    except ImportError:
        return "not installed"
    except Exception as exc:
        return f"error: {type(exc).__name__}"
    return int(failed)


def _cell(row: Row | str) -> str:
    if isinstance(row, str):
        return row
    if row.schedules is None:
        return f"none ≤ cap ({row.found}/{row.seeds})"
    return f"{row.schedules:g} ({row.wall * 1e3:.0f} ms)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=50)
    parser.add_argument("--cap", type=int, default=200, help="schedules per search at most")
    parser.add_argument("--fixed", type=int, default=200, help="schedules run on each fixed version")
    args = parser.parse_args()
    print(f"median schedules to the first failure over {args.seeds} seeds (median wall time), cap {args.cap}")
    print(f"{'program':<12} {'stress controlled':<22} {'frontrun random':<22} {'frontrun dpor':<22}")
    for name in PROGRAMS:
        cells = [
            _cell(stress_first(name, args.seeds, args.cap)),
            _cell(frontrun_first(name, "random", args.seeds, args.cap)),
            _cell(frontrun_first(name, "dpor", args.seeds, args.cap)),
        ]
        print(f"{name:<12} " + " ".join(f"{cell:<22}" for cell in cells))
    print(f"\nfalse alarms: failing searches on the fixed versions ({args.fixed} schedules each)")
    print(f"{'program':<12} {'stress controlled':<22} {'frontrun random':<22} {'frontrun dpor':<22}")
    for name in PROGRAMS:
        cells = [
            str(stress_false_alarms(name, args.fixed)),
            str(frontrun_false_alarms(name, "random", args.fixed)),
            str(frontrun_false_alarms(name, "dpor", args.fixed)),
        ]
        print(f"{name:<12} " + " ".join(f"{cell:<22}" for cell in cells))


if __name__ == "__main__":
    main()

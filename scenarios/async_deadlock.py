"""Two tasks, two `asyncio.Lock`s: the deadlock chapter on an event loop.

``task_1`` takes ``lock_a`` then ``lock_b``; ``task_2`` takes ``lock_b`` then ``lock_a``. With nothing
awaited between the two acquisitions and the locks free, ``acquire`` never suspends and each task
takes both in one step: plain runs never deadlock. Once a task is suspended holding its first lock
(the other lock's ``acquire`` may suspend), both wait for ever, and so does the whole program: no
task is left to run. Stress notices the moment the loop has nothing left to do, and names the cycle.

The second form needs no second lock: a task awaits another task while holding a lock that task
needs.
"""

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from harness import Scenario, Trial

scenario = Scenario(
    "async-deadlock",
    "Two tasks each move money between the same two accounts, locking both; or a task awaits one that needs its lock",
    size=3,
    may_suspend=True,  # judged as if any await on a primitive may suspend: see the docstring
)


class Account:
    def __init__(self, balance: int) -> None:
        self.balance = balance


async def _transfers(trial: Trial, lock_a: asyncio.Lock, lock_b: asyncio.Lock, *, same_order: bool) -> None:
    """task_1 moves 1 from a to b, task_2 from b to a, `size` times each; money is conserved."""
    a, b = Account(100), Account(100)

    async def task_1() -> None:
        for _ in range(trial.size):
            async with lock_a:
                async with lock_b:
                    a.balance -= 1
                    b.balance += 1

    async def task_2() -> None:
        first, second = (lock_a, lock_b) if same_order else (lock_b, lock_a)
        for _ in range(trial.size):
            async with first:
                async with second:  # with lock_b held, waits for lock_a: task_1 does the opposite
                    b.balance -= 1
                    a.balance += 1

    async with trial.tasks() as group:
        group.start(task_1)
        group.start(task_2)
    trial.check(a.balance + b.balance == 200, f"money was created or lost: {a.balance} + {b.balance} != 200")


@scenario.variant(expect="unsafe")
async def opposite_order(trial: Trial) -> None:
    """task_1 locks a then b, task_2 locks b then a."""
    await _transfers(trial, asyncio.Lock(), asyncio.Lock(), same_order=False)


@scenario.variant(expect="safe")
async def global_order(trial: Trial) -> None:
    """Both tasks lock a then b: no cycle can form."""
    await _transfers(trial, asyncio.Lock(), asyncio.Lock(), same_order=True)


def _loader(cache: dict[str, int], lock: asyncio.Lock) -> Callable[[], Coroutine[Any, Any, int]]:
    """The loader task's work: load the value and store it in the cache, under the cache's lock."""

    async def load() -> int:
        async with lock:
            cache["value"] = 42
        return 42

    return load


@scenario.variant(expect="unsafe")
async def await_under_lock(trial: Trial) -> None:
    """A task refreshes a cache under its lock by awaiting a loader task, which takes the lock too
    (to store what it loaded) unless the refresh already finished."""
    cache: dict[str, int] = {}
    lock = asyncio.Lock()
    load = _loader(cache, lock)

    async def refresh() -> None:
        loader = asyncio.create_task(load())
        async with lock:
            if "value" not in cache:
                await loader  # holds the lock while the loader waits for it

    await trial.run_tasks(refresh, count=1)


@scenario.variant(expect="safe")
async def await_outside_lock(trial: Trial) -> None:
    """The refresh awaits the loader before it takes the lock."""
    cache: dict[str, int] = {}
    lock = asyncio.Lock()
    load = _loader(cache, lock)

    async def refresh() -> None:
        loader = asyncio.create_task(load())
        value = await loader
        async with lock:
            cache.setdefault("value", value)

    await trial.run_tasks(refresh, count=1)

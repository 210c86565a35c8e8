"""Coroutines hand items over with an `asyncio.Event` or `asyncio.Condition`: lost wake-ups.

An Event is a flag, not a count. A consumer that waits, then clears the flag and takes one item,
loses every ``set()`` that came between its wake-up and its ``clear()``: the items are there, the flag
is down, and the consumer waits for ever. A Condition's ``wait()`` under ``if`` instead of ``while``
(or ``wait_for``) trusts that the item it was woken for is still there when it gets the lock back; a
consumer that arrived meanwhile may have taken it. In plain runs each wake-up runs before anyone else
moves, and neither bug shows.
"""

import asyncio

from harness import Scenario, Trial

scenario = Scenario(
    "async-event",
    "A producer task hands `size` items to consumer tasks through an Event or a Condition",
    size=3,
    controlled_size=3,  # a lost wake-up needs two items; a stolen one, two consumers (three: found sooner)
    may_suspend=True,  # judged as if any await on a primitive may suspend: see the docstring
)


async def _with_event(trial: Trial, consume_one_per_wake_up: bool) -> None:
    items: list[int] = []
    taken: list[int] = []
    ready = asyncio.Event()
    log: asyncio.Queue[str] = asyncio.Queue()  # unbounded: put() never has to wait

    async def producer() -> None:
        for item in range(trial.size):
            items.append(item)
            ready.set()
            await asyncio.sleep(0)

    async def consumer() -> None:
        while len(taken) < trial.size:
            await ready.wait()
            if consume_one_per_wake_up:
                await log.put("woken")  # may suspend: a set() in between is lost by the clear()
                ready.clear()
                taken.append(items.pop(0))
            else:
                ready.clear()  # first clear, then drain: a set() after this one wakes us again
                while items:
                    taken.append(items.pop(0))
                await log.put("drained")

    async with trial.tasks() as group:
        group.start(producer)
        group.start(consumer)
    trial.check(taken == list(range(trial.size)), f"consumer took {taken} of {list(range(trial.size))}")


@scenario.variant(expect="unsafe")
async def clear_after_wait(trial: Trial) -> None:
    """Wait, clear, take one item: two sets before the clear leave an item nobody wakes up for."""
    await _with_event(trial, consume_one_per_wake_up=True)


@scenario.variant(expect="safe")
async def clear_then_drain(trial: Trial) -> None:
    """Wait, clear, then take every item there is: a set after the clear is never lost."""
    await _with_event(trial, consume_one_per_wake_up=False)


async def _with_condition(trial: Trial, use_wait_for: bool) -> None:
    items: list[int] = []
    taken: list[int] = []
    condition = asyncio.Condition()

    async def producer() -> None:
        for item in range(trial.size):
            async with condition:
                items.append(item)
                condition.notify_all()  # every waiting consumer wakes: the first takes the item

    async def consumer() -> None:
        async with condition:
            if use_wait_for:
                await condition.wait_for(lambda: items)
            elif not items:  # `if`, not `while`: the item may be gone when the lock is back
                await condition.wait()
            taken.append(items.pop(0))

    async with trial.tasks() as group:
        for _ in range(trial.size):
            group.start(consumer)
        group.start(producer)
    trial.check(sorted(taken) == list(range(trial.size)), f"consumers took {sorted(taken)}")


@scenario.variant(expect="unsafe")
async def wait_under_if(trial: Trial) -> None:
    """`if not items: await condition.wait()`: another consumer may take the item first."""
    await _with_condition(trial, use_wait_for=False)


@scenario.variant(expect="safe")
async def wait_for(trial: Trial) -> None:
    """`await condition.wait_for(lambda: items)`: the predicate is checked again under the lock."""
    await _with_condition(trial, use_wait_for=True)

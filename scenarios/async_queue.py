"""Worker tasks drain an `asyncio.Queue`; the producer waits for them with ``queue.join()``.

``join()`` returns once every item put was matched by a ``task_done()``. A worker that skips
``task_done()`` on its error path leaves ``join()`` waiting for ever, with every worker idle on an
empty queue: the program hangs with nothing left to run. Here an item fails when its work finds the
shared rate limit exhausted, which only happens when two workers are inside the work at once; plain
runs process one item at a time and never fail, so never skip.
"""

import asyncio

from harness import Scenario, Trial

scenario = Scenario(
    "async-queue",
    "Two worker tasks process `size` items from a queue under a shared budget; the producer joins the queue",
    size=4,
    controlled_size=2,  # two items, so that both workers can be inside the work at once
    may_suspend=True,  # judged as if any await on a primitive may suspend: see the docstring
)


class Budget:
    """At most one item in work at a time; a second one raises (a rate limit)."""

    def __init__(self) -> None:
        self.in_use = 0
        self.audit: asyncio.Queue[int] = asyncio.Queue()  # unbounded: put() never has to wait

    async def work(self, item: int) -> None:
        if self.in_use:
            raise RuntimeError(f"rate limited: item {item} started while another was in work")
        self.in_use += 1
        await self.audit.put(item)  # may suspend: another worker can start meanwhile
        self.in_use -= 1


async def _drain(trial: Trial, *, finally_done: bool) -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()
    budget = Budget()
    failed: list[int] = []

    async def worker() -> None:
        while True:
            item = await queue.get()
            if finally_done:
                try:
                    await budget.work(item)
                except RuntimeError:
                    failed.append(item)
                finally:
                    queue.task_done()
            else:
                try:
                    await budget.work(item)
                except RuntimeError:
                    failed.append(item)
                    continue  # skips task_done(): join() waits for this item for ever
                queue.task_done()

    async def producer() -> None:
        for item in range(trial.size):
            await queue.put(item)
        await queue.join()

    workers = [asyncio.create_task(worker(), name=f"worker#{number}") for number in range(2)]
    await trial.run_tasks(producer, count=1)
    for task in workers:
        task.cancel()
    await asyncio.gather(*workers, return_exceptions=True)


@scenario.variant(expect="unsafe")
async def skipped_task_done(trial: Trial) -> None:
    """The error path `continue`s past `task_done()`: `join()` never returns."""
    await _drain(trial, finally_done=False)


@scenario.variant(expect="safe")
async def task_done_in_finally(trial: Trial) -> None:
    """`task_done()` in `finally`: every item is accounted for, failed or not."""
    await _drain(trial, finally_done=True)

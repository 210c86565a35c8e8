"""A task is cancelled while it holds an `asyncio.Lock`: the lock stays held for ever.

``await lock.acquire()`` ... ``lock.release()`` with an ``await`` in between releases nothing when the
task is cancelled at that ``await`` (a timeout, a shutdown): ``CancelledError`` skips the release, and
every later ``acquire`` waits for ever. ``async with lock:`` releases on the way out, cancelled or
not. Here a client fetches under a lock, and a watchdog gives up on a fetch that has not finished
after a few turns of the loop; whether the cancellation lands inside the locked part depends on who
runs when. A second form: `asyncio.shield` keeps the inner work going, but the shielded task's own
result is still cancelled — a caller that takes "cancelled" to mean "not done" does it twice.
"""

import asyncio

from harness import Scenario, Trial

scenario = Scenario(
    "cancellation",
    "A watchdog task cancels a slow fetch while it holds a lock; or a shielded payment is retried after a cancel",
    size=2,
    cancellable=True,  # the checks look at what a cancelled task leaves behind: try --cancel 0.1
)
PATIENCE = 2  # loop turns the watchdog waits before cancelling a fetch


async def _fetches(trial: Trial, *, with_statement: bool) -> None:
    lock = asyncio.Lock()
    responses: asyncio.Queue[str] = asyncio.Queue()
    served: list[str] = []

    async def fetch(number: int) -> None:
        if with_statement:
            async with lock:
                served.append(await responses.get())
        else:
            await lock.acquire()
            served.append(await responses.get())  # cancelled here: the release below never runs
            lock.release()

    async def server() -> None:
        for number in range(trial.size):
            await responses.put(f"response {number}")

    async def client() -> None:
        for number in range(trial.size):
            attempt = asyncio.create_task(fetch(number), name=f"fetch#{number}")
            for _ in range(PATIENCE):
                if attempt.done():
                    break
                await asyncio.sleep(0)
            attempt.cancel()  # the watchdog: too slow, give up
            await asyncio.gather(attempt, return_exceptions=True)
        async with lock:  # the last word: every fetch is over, so the lock must be free
            pass

    async with trial.tasks() as group:
        group.start(client)
        group.start(server)


@scenario.variant(expect="unsafe")
async def acquire_release(trial: Trial) -> None:
    """`await lock.acquire()` ... `lock.release()`: a cancel in between leaves the lock held."""
    await _fetches(trial, with_statement=False)


@scenario.variant(expect="safe")
async def async_with(trial: Trial) -> None:
    """`async with lock`: released however the block is left."""
    await _fetches(trial, with_statement=True)


async def _payments(trial: Trial, *, trust_cancel: bool) -> None:
    charged: list[int] = []
    ledger: asyncio.Queue[int] = asyncio.Queue()

    async def charge(amount: int) -> None:
        await ledger.put(amount)  # may suspend
        charged.append(amount)

    async def pay(amount: int) -> None:
        inner = asyncio.ensure_future(charge(amount))
        try:
            await asyncio.shield(inner)
        except asyncio.CancelledError:
            if trust_cancel:
                await charge(amount)  # "it was cancelled, so it did not happen": it still does
            else:
                await inner  # the shielded work goes on: wait for its own outcome
        # (a real caller would go on cancelling; the scenario only checks what was charged)

    async def impatient() -> None:
        payment = asyncio.create_task(pay(10), name="pay")
        await asyncio.sleep(0)
        payment.cancel()
        await asyncio.gather(payment, return_exceptions=True)

    await trial.run_tasks(impatient, count=1)
    await asyncio.sleep(0)
    trial.check(sum(charged) <= 10, f"charged {charged} for one payment of 10")


@scenario.variant(expect="unsafe")
async def shield_then_retry(trial: Trial) -> None:
    """A cancelled `shield` is taken to mean the charge did not happen, and it is made again."""
    await _payments(trial, trust_cancel=True)


@scenario.variant(expect="safe")
async def shield_then_wait(trial: Trial) -> None:
    """After a cancelled `shield`, the caller waits for the shielded charge itself."""
    await _payments(trial, trust_cancel=False)

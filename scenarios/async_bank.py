"""Coroutines withdraw from one account: the bank's check-then-act race, across an ``await``.

A coroutine runs alone until it awaits, so ``if balance >= amount: balance -= amount`` with no
``await`` in between is safe on one event loop. Put an ``await`` between the check and the act — here
the withdrawal is first written to an audit queue — and another task may withdraw in between. Plain
runs never show it: the queue is unbounded, so ``await audit.put(...)`` never suspends, and asyncio
runs ready tasks first in, first out. Bound the queue, or make the audit a network call, and the
account goes below zero. Stress steps a task out at the ``put`` (it may suspend) to show that now.
"""

import asyncio
from collections.abc import Awaitable, Callable

from harness import Scenario, Trial

scenario = Scenario(
    "async-bank",
    "Three tasks (`actors`) each try to withdraw 10, `size` times, from an account that holds enough for one,"
    " writing each withdrawal to an audit queue",
    size=5,
    actors=3,
    may_suspend=True,  # judged as if any await on a primitive may suspend: see the docstring
)
AMOUNT = 10


class Account:
    def __init__(self, balance: int) -> None:
        self.balance = balance
        self.lock = asyncio.Lock()
        self.audit: asyncio.Queue[int] = asyncio.Queue()  # unbounded: put() never has to wait


async def _customers(trial: Trial, withdraw: Callable[[Account, int], Awaitable[bool]]) -> None:
    """The customers withdraw until the money runs out; then the books must balance."""
    initial = AMOUNT * trial.size
    account = Account(initial)

    async def customer() -> int:
        taken = 0
        for _ in range(trial.size):
            if await withdraw(account, AMOUNT):
                taken += AMOUNT
        return taken

    taken = sum(t or 0 for t in await trial.run_tasks(customer, count=trial.actors))
    trial.check(taken <= initial, f"overdrawn: customers withdrew {taken} from an account holding {initial}")
    trial.check(
        account.balance == initial - taken,
        f"{initial} - {taken} withdrawn should leave {initial - taken}, but the balance is {account.balance}",
    )


@scenario.variant(expect="unsafe")
async def check_then_act(trial: Trial) -> None:
    """Check the balance, await the audit, then withdraw: another task withdraws in the await."""

    async def withdraw(account: Account, amount: int) -> bool:
        if account.balance >= amount:
            await account.audit.put(amount)  # may suspend: the check above is stale after it
            account.balance -= amount
            return True
        return False

    await _customers(trial, withdraw)


@scenario.variant(expect="safe")
async def act_then_await(trial: Trial) -> None:
    """Check and withdraw with no await in between, then audit: nothing can get in."""

    async def withdraw(account: Account, amount: int) -> bool:
        if account.balance < amount:
            return False
        account.balance -= amount
        await account.audit.put(amount)
        return True

    await _customers(trial, withdraw)


@scenario.variant(expect="safe")
async def lock(trial: Trial) -> None:
    """Check, audit and withdraw under one `asyncio.Lock`."""

    async def withdraw(account: Account, amount: int) -> bool:
        async with account.lock:
            if account.balance >= amount:
                await account.audit.put(amount)
                account.balance -= amount
                return True
            return False

    await _customers(trial, withdraw)

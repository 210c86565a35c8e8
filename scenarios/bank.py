"""Threads withdraw from one account: the chapter's check-then-act race.

``if balance >= amount: balance -= amount`` checks, then acts. Another thread can withdraw between
the check and the act, and the account goes below zero; the subtraction itself can also lose an
update. The chapter's example adds ``time.sleep(0.001)`` between the two steps to make the race
visible; stress needs no such help, it forces the thread switch itself.
"""

import threading
from collections.abc import Callable

from harness import Scenario, Trial

scenario = Scenario(
    "bank",
    "Three threads (`actors`) each try to withdraw 10, `size` times, from an account that holds enough for one",
    size=25,
    actors=3,
)
AMOUNT = 10


class Account:
    def __init__(self, balance: int) -> None:
        self.balance = balance
        self.lock = threading.Lock()


def _customers(trial: Trial, withdraw: Callable[[Account, int], bool]) -> None:
    """The customers withdraw until the money runs out; then the books must balance."""
    initial = AMOUNT * trial.size
    account = Account(initial)

    def customer() -> int:
        taken = 0
        for _ in range(trial.size):
            if withdraw(account, AMOUNT):
                taken += AMOUNT
        return taken

    taken = sum(t or 0 for t in trial.run_threads(customer, count=trial.actors))
    # Two invariants: nobody gets more than the account held, and every withdrawal shows up in
    # the balance. Together they also imply the balance never goes below zero.
    trial.check(taken <= initial, f"overdrawn: customers withdrew {taken} from an account holding {initial}")
    trial.check(
        account.balance == initial - taken,
        f"lost update: {initial} - {taken} withdrawn should leave {initial - taken}, "
        f"but the balance is {account.balance}",
    )


@scenario.variant(expect="unsafe")
def unsafe(trial: Trial) -> None:
    """Check the balance, then withdraw, with no lock (the chapter's `withdraw`)."""

    def withdraw(account: Account, amount: int) -> bool:
        if account.balance >= amount:
            account.balance -= amount
            return True
        return False

    _customers(trial, withdraw)


@scenario.variant(expect="unsafe")
def check_locked_only(trial: Trial) -> None:
    """The check and the withdrawal are locked separately: another thread gets in between."""

    def withdraw(account: Account, amount: int) -> bool:
        with account.lock:
            enough = account.balance >= amount
        if enough:
            with account.lock:
                account.balance -= amount
            return True
        return False

    _customers(trial, withdraw)


@scenario.variant(expect="safe")
def lock(trial: Trial) -> None:
    """Check and withdraw under one lock (the chapter's `safe_withdraw`)."""

    def withdraw(account: Account, amount: int) -> bool:
        with account.lock:
            if account.balance >= amount:
                account.balance -= amount
                return True
            return False

    _customers(trial, withdraw)

"""Two threads, two locks: the chapter's deadlock, and the classic ways out of it.

``thread_1`` takes ``lock_a`` then ``lock_b``; ``thread_2`` takes ``lock_b`` then ``lock_a``. If each
gets its first lock before the other gets its second, both wait for ever. The chapter adds
``time.sleep(0.1)`` between the two acquisitions to make that likely; stress needs no sleep: it
forces thread switches around lock operations itself, detects the cycle the moment it closes, and
also flags the opposite lock order as a potential deadlock when no trial happens to deadlock.
"""

import random
import threading
import time

from harness import Scenario, Trial

scenario = Scenario(
    "deadlock",
    "Two threads each move money between the same two accounts, locking both (the chapter's Deadlock example)",
    size=5,
)


class Account:
    def __init__(self, balance: int) -> None:
        self.balance = balance


def _transfers(trial: Trial, transfer_ab, transfer_ba) -> None:  # type: ignore[no-untyped-def]
    """thread_1 moves 1 from a to b, thread_2 from b to a, `size` times each; money is conserved."""
    a, b = Account(100), Account(100)

    def thread_1() -> None:
        for _ in range(trial.size):
            transfer_ab(a, b)

    def thread_2() -> None:
        for _ in range(trial.size):
            transfer_ba(b, a)

    with trial.threads() as group:
        group.start(thread_1)
        group.start(thread_2)
    trial.check(a.balance + b.balance == 200, f"money was created or lost: {a.balance} + {b.balance} != 200")


@scenario.variant(expect="unsafe")
def opposite_order(trial: Trial) -> None:
    """thread_1 locks a then b, thread_2 locks b then a (the chapter's thread_1 and thread_2)."""
    lock_a = threading.Lock()
    lock_b = threading.Lock()

    def a_to_b(source: Account, target: Account) -> None:
        with lock_a:
            with lock_b:
                source.balance -= 1
                target.balance += 1

    def b_to_a(source: Account, target: Account) -> None:
        with lock_b:
            with lock_a:  # waits for lock_a while holding lock_b: the other thread does the opposite
                source.balance -= 1
                target.balance += 1

    _transfers(trial, a_to_b, b_to_a)


@scenario.variant(expect="safe")
def global_order(trial: Trial) -> None:
    """Both threads lock a, then b: with one global order no cycle can form (the chapter's fix)."""
    lock_a = threading.Lock()
    lock_b = threading.Lock()

    def transfer(source: Account, target: Account) -> None:
        with lock_a:
            with lock_b:
                source.balance -= 1
                target.balance += 1

    _transfers(trial, transfer, transfer)


@scenario.variant(expect="safe")
def timeout_backoff(trial: Trial) -> None:
    """Take the first lock, try the second with a timeout; on failure release, back off, retry."""
    lock_a = threading.Lock()
    lock_b = threading.Lock()

    def careful(first: threading.Lock, second: threading.Lock, rng: random.Random):  # type: ignore[no-untyped-def]
        def transfer(source: Account, target: Account) -> None:
            while True:
                with first:
                    if second.acquire(timeout=0.0002):
                        try:
                            source.balance -= 1
                            target.balance += 1
                            return
                        finally:
                            second.release()
                time.sleep(rng.uniform(0, 0.0002))  # back off a random while, so the two don't retry in step

        return transfer

    _transfers(
        trial,
        careful(lock_a, lock_b, random.Random(trial.rng.random())),
        careful(lock_b, lock_a, random.Random(trial.rng.random())),
    )


@scenario.variant(expect="safe")
def coarse_lock(trial: Trial) -> None:
    """One lock guards both accounts: nothing to order, at the price of all concurrency."""
    both = threading.Lock()

    def transfer(source: Account, target: Account) -> None:
        with both:
            source.balance -= 1
            target.balance += 1

    _transfers(trial, transfer, transfer)

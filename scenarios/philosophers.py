"""Dining philosophers: five threads, five forks, each philosopher needs both neighbouring forks.

The naive dinner (left fork, then right) deadlocks when all five pick up their left fork at once:
each then waits for a right fork its neighbour holds. The three classic cures each remove one
condition of that cycle: a global order on the forks (resource hierarchy), admitting at most four
to the table (a waiter), or never waiting while holding a fork (try-lock and back off).
"""

import random
import threading
import time
from collections.abc import Callable

from harness import Scenario, Trial

scenario = Scenario(
    "philosophers",
    "Five philosophers each eat `size` meals; a meal needs the forks on both sides",
    size=3,
)

SEATS = 5
Eat = Callable[[int, threading.Lock, threading.Lock], None]


def _dinner(trial: Trial, dine: Callable[[int, list[threading.Lock], list[int]], None]) -> None:
    forks = [threading.Lock() for _ in range(SEATS)]
    meals = [0] * SEATS

    def philosopher(seat: int) -> None:
        for _ in range(trial.size):
            dine(seat, forks, meals)

    with trial.threads() as table:
        for seat in range(SEATS):
            table.start(philosopher, seat, name=f"philosopher-{seat}")
    hungry = [seat for seat in range(SEATS) if meals[seat] != trial.size]
    trial.check(not hungry, f"philosophers {hungry} did not get their {trial.size} meals: {meals}")


@scenario.variant(expect="unsafe")
def naive(trial: Trial) -> None:
    """Take the left fork, then the right: five left forks taken at once is a cycle of five."""

    def dine(seat: int, forks: list[threading.Lock], meals: list[int]) -> None:
        left, right = forks[seat], forks[(seat + 1) % SEATS]
        with left:
            with right:
                meals[seat] += 1

    _dinner(trial, dine)


@scenario.variant(expect="safe")
def hierarchy(trial: Trial) -> None:
    """Resource hierarchy: always take the lower-numbered fork first, so no cycle can close."""

    def dine(seat: int, forks: list[threading.Lock], meals: list[int]) -> None:
        first, second = sorted((seat, (seat + 1) % SEATS))
        with forks[first]:
            with forks[second]:
                meals[seat] += 1

    _dinner(trial, dine)


@scenario.variant(expect="safe")
def waiter(trial: Trial) -> None:
    """A waiter (a semaphore of four) seats at most four: one of them always gets both forks."""
    seats = threading.Semaphore(SEATS - 1)

    def dine(seat: int, forks: list[threading.Lock], meals: list[int]) -> None:
        left, right = forks[seat], forks[(seat + 1) % SEATS]
        with seats:
            with left:
                with right:
                    meals[seat] += 1

    _dinner(trial, dine)


@scenario.variant(expect="safe")
def try_lock(trial: Trial) -> None:
    """Take the left fork, *try* the right; if it is taken, put the left back and retry later."""
    pauses = random.Random(trial.rng.random())

    def dine(seat: int, forks: list[threading.Lock], meals: list[int]) -> None:
        left, right = forks[seat], forks[(seat + 1) % SEATS]
        while True:
            with left:
                if right.acquire(blocking=False):
                    try:
                        meals[seat] += 1
                        return
                    finally:
                        right.release()
            time.sleep(pauses.uniform(0, 0.0002))  # back off a random while before trying again

    _dinner(trial, dine)

"""Threads increment a shared integer: the chapter's ``Lock`` example.

``counter += 1`` is three steps (read, add, write). Two threads that both read before either writes
lose an increment. On CPython 3.10+ the interpreter never switches threads between those steps by
itself, which is why the race "never happens" in a plain test and why stress forces switches there.
"""

import threading

from harness import Scenario, Trial

scenario = Scenario(
    "counter",
    "Four threads (`actors`) add 1 to a shared integer, `size` times each (the chapter's Lock example)",
    size=30,
    actors=4,
)


class Counter:
    def __init__(self) -> None:
        self.value = 0


def _check_total(trial: Trial, counter: Counter) -> None:
    expected = trial.actors * trial.size
    trial.check(
        counter.value == expected,
        f"counter is {counter.value}, expected {expected}: lost {_increments(expected - counter.value)}",
    )


def _increments(count: int) -> str:
    return f"{count} increment" if count == 1 else f"{count} increments"


@scenario.variant(expect="unsafe")
def no_lock(trial: Trial) -> None:
    """`counter.value += 1` with no lock: a switch between the read and the write loses an update."""
    counter = Counter()

    def increment() -> None:
        for _ in range(trial.size):
            counter.value += 1

    trial.run_threads(increment, count=trial.actors)
    _check_total(trial, counter)


@scenario.variant(expect="safe")
def lock(trial: Trial) -> None:
    """Every increment under one `threading.Lock`, as the chapter fixes it."""
    counter = Counter()
    guard = threading.Lock()

    def increment() -> None:
        for _ in range(trial.size):
            with guard:
                counter.value += 1

    trial.run_threads(increment, count=trial.actors)
    _check_total(trial, counter)


@scenario.variant(expect="unsafe")
def split_lock(trial: Trial) -> None:
    """The read and the write are each locked, but separately: the update is still lost in between."""
    counter = Counter()
    guard = threading.Lock()

    def increment() -> None:
        for _ in range(trial.size):
            with guard:
                current = counter.value
            with guard:
                counter.value = current + 1

    trial.run_threads(increment, count=trial.actors)
    _check_total(trial, counter)


@scenario.variant(expect="safe")
def local_sum(trial: Trial) -> None:
    """Each thread counts privately and adds its total once, under the lock: one short critical section."""
    counter = Counter()
    guard = threading.Lock()

    def increment() -> None:
        mine = 0
        for _ in range(trial.size):
            mine += 1
        with guard:
            counter.value += mine

    trial.run_threads(increment, count=trial.actors)
    _check_total(trial, counter)

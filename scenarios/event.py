"""Waiting for a signal: the chapter's Event example, and two ways to lose or misread a wake-up.

Three waiters wait for one signaller. Checking a flag and then going to sleep on a condition, as two
separate steps, loses the wake-up when the signal falls between them: the waiter sleeps for ever.
`Event` does the check and the sleep as one step. With a condition and shared items, `wait()` under
an ``if`` misreads a wake-up: another consumer may have taken the item by the time this one runs,
which `wait_for` (a ``while`` loop) re-checks.
"""

import threading

from harness import Scenario, Trial

scenario = Scenario(
    "event",
    "Waiters wait for a signaller (the chapter's Event example); consumers wait for items",
    size=3,
)

WAITERS = 3


def _signal(trial: Trial, wait, signal) -> None:  # type: ignore[no-untyped-def]
    woken = []

    def waiter(index: int) -> None:
        wait()
        woken.append(index)

    with trial.threads() as group:
        for index in range(WAITERS):
            group.start(waiter, index, name=f"waiter-{index}")
        group.start(signal, name="signaller")
    trial.check(len(woken) == WAITERS, f"only {len(woken)} of {WAITERS} waiters saw the signal")


@scenario.variant(expect="unsafe")
def flag_then_wait(trial: Trial) -> None:
    """Check a flag, then sleep on a condition: a signal between the two is lost (lost wake-up)."""
    ready = [False]
    changed = threading.Condition()

    def wait() -> None:
        if not ready[0]:  # the check ...
            with changed:
                changed.wait()  # ... and the sleep are two steps: the notify can fall in between

    def signal() -> None:
        ready[0] = True
        with changed:
            changed.notify_all()

    _signal(trial, wait, signal)


@scenario.variant(expect="safe")
def event(trial: Trial) -> None:
    """`Event.wait()` / `Event.set()` (the chapter's version): the flag and the sleep are one step."""
    ready = threading.Event()
    _signal(trial, ready.wait, ready.set)


def _consume(trial: Trial, take) -> None:  # type: ignore[no-untyped-def]
    """One producer puts 2·size items, two consumers take size each, waiting while it is empty."""
    items: list[int] = []
    changed = threading.Condition()
    taken: list[int] = []

    def producer() -> None:
        for item in range(2 * trial.size):
            with changed:
                items.append(item)
                changed.notify_all()

    def consumer() -> None:
        for _ in range(trial.size):
            with changed:
                taken.append(take(items, changed))

    with trial.threads() as group:
        group.start(producer)
        group.start(consumer)
        group.start(consumer)
    trial.check(sorted(taken) == list(range(2 * trial.size)), f"items taken: {sorted(taken)}")


@scenario.variant(expect="unsafe")
def wait_under_if(trial: Trial) -> None:
    """`if not items: wait()`: woken with the others, a consumer takes from an emptied list."""

    def take(items: list[int], changed: threading.Condition) -> int:
        if not items:
            changed.wait()
        return items.pop(0)  # another consumer may have emptied it since the notify

    _consume(trial, take)


@scenario.variant(expect="safe")
def wait_for(trial: Trial) -> None:
    """`wait_for(lambda: items)`: the predicate is checked again after every wake-up."""

    def take(items: list[int], changed: threading.Condition) -> int:
        changed.wait_for(lambda: items)
        return items.pop(0)

    _consume(trial, take)

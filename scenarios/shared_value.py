"""Processes share memory: the chapter's `Value` and `Array` example.

A synchronized ``Value('i')`` locks each read and each write of ``.value`` — but separately, so
``counter.value += 1`` (a read, then a write) still loses updates when another process writes in
between. The chapter's version takes a separate ``multiprocessing.Lock`` around the whole increment;
``counter.get_lock()`` does the same with the value's own lock. ``Value(..., lock=False)`` has no lock
at all. Filling an ``Array`` from one child is the chapter's baseline: nothing to race with.
"""

from harness import Scenario, Trial

scenario = Scenario(
    "shared-value",
    "Four processes add 1 to a shared Value('i'), `size` times each (the chapter's shared-memory example)",
    size=30,
    stress_only="its actors are processes",
)

PROCESSES = 4


def increment(counter, times):  # type: ignore[no-untyped-def]
    for _ in range(times):
        counter.value += 1  # a locked read, then a locked write: not one step


def increment_under_get_lock(counter, times):  # type: ignore[no-untyped-def]
    for _ in range(times):
        with counter.get_lock():
            counter.value += 1


def increment_counter(counter, lock, times):  # type: ignore[no-untyped-def]
    """The chapter's `increment_counter(counter, lock)`."""
    for _ in range(times):
        with lock:
            counter.value += 1


def fill_array(arr):  # type: ignore[no-untyped-def]
    """The chapter's `fill_array`."""
    for i in range(len(arr)):
        arr[i] = i * 2


def _check_total(trial: Trial, counter) -> None:  # type: ignore[no-untyped-def]
    expected = PROCESSES * trial.size
    trial.check(
        counter.value == expected,
        f"counter is {counter.value}, expected {expected}: lost {_increments(expected - counter.value)}",
    )


def _increments(count: int) -> str:
    return f"{count} increment" if count == 1 else f"{count} increments"


@scenario.variant(expect="unsafe")
def plus_equals(trial: Trial) -> None:
    """`counter.value += 1` on a synchronized Value: each access is locked, the increment is not."""
    counter = trial.mp.Value("i", 0)
    trial.run_processes(increment, counter, trial.size, count=PROCESSES)
    _check_total(trial, counter)


@scenario.variant(expect="safe")
def get_lock(trial: Trial) -> None:
    """`with counter.get_lock(): counter.value += 1`: the value's own lock around the increment."""
    counter = trial.mp.Value("i", 0)
    trial.run_processes(increment_under_get_lock, counter, trial.size, count=PROCESSES)
    _check_total(trial, counter)


@scenario.variant(expect="safe")
def separate_lock(trial: Trial) -> None:
    """A `multiprocessing.Lock` passed to every process (the chapter's version)."""
    counter = trial.mp.Value("i", 0)
    lock = trial.mp.Lock()
    trial.run_processes(increment_counter, counter, lock, trial.size, count=PROCESSES)
    _check_total(trial, counter)


@scenario.variant(expect="unsafe")
def lock_false(trial: Trial) -> None:
    """`Value('i', 0, lock=False)`: raw shared memory, nothing serializes the processes."""
    counter = trial.mp.Value("i", 0, lock=False)
    trial.run_processes(increment, counter, trial.size, count=PROCESSES)
    _check_total(trial, counter)


@scenario.variant(expect="safe")
def array_fill(trial: Trial) -> None:
    """One child fills an `Array('d')` (the chapter's baseline): the parent sees every value."""
    shared_array = trial.mp.Array("d", [0.0] * 10)
    trial.run_processes(fill_array, shared_array, count=1)
    trial.check(list(shared_array) == [i * 2.0 for i in range(10)], f"array is {list(shared_array)}")

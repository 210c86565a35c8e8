"""Process pools: the chapter's `Pool.map`, and forking while another thread holds a lock.

``fork`` copies the whole process — including every lock, in whatever state it is at that instant,
but only the thread that forked. If another thread held a lock (a logging lock, say), the child's
copy is held by a thread that does not exist there: the first time the child needs it, it waits for
ever. ``spawn`` and ``forkserver`` start children that never saw that lock held (a fresh interpreter,
or a fork of a clean single-threaded server), so the same program is safe with them.
"""

import multiprocessing
import threading

from harness import Scenario, Trial

scenario = Scenario(
    "pool",
    "A Pool squares a few numbers while a thread of the parent keeps logging (the chapter's Pool example)",
    size=4,
    stress_only="its tasks run in a process Pool",
)


class Logger:
    """A stand-in for a logging library: one lock around every record it writes."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.records: list[str] = []

    def log(self, message: str) -> None:
        with self.lock:  # a child forked while another thread was here waits for ever
            self.records.append(message)
            del self.records[:-100]


LOGGER = Logger()


def square(x: int) -> int:
    LOGGER.log(f"squaring {x}")
    return x * x


def compute(x: int) -> int:
    """The chapter's `compute`: CPU-bound work (smaller)."""
    return sum(i**2 for i in range(x))


def _logging_thread(stop: threading.Event) -> None:
    while not stop.is_set():
        LOGGER.log("tick")


def _squares_while_logging(trial: Trial, method: str) -> None:
    LOGGER.lock = threading.Lock()  # this trial's logger (a spawned child imports its own)
    stop = threading.Event()
    logger = threading.Thread(target=_logging_thread, args=(stop,), name="logger")
    logger.start()
    try:
        with multiprocessing.get_context(method).Pool(processes=1) as pool:
            results = pool.map(square, range(trial.size))
    finally:
        stop.set()
        logger.join()
    trial.check(results == [x * x for x in range(trial.size)], f"pool.map returned {results}")


@scenario.variant(expect="unsafe")
def fork_while_logging(trial: Trial) -> None:
    """`fork` while the logger thread may hold the lock: the child that needs it waits for ever."""
    _squares_while_logging(trial, "fork")


@scenario.variant(expect="safe")
def spawn(trial: Trial) -> None:
    """The same with `spawn`: each child is a fresh interpreter with a fresh, free lock."""
    _squares_while_logging(trial, "spawn")


@scenario.variant(expect="safe")
def forkserver(trial: Trial) -> None:
    """The same with `forkserver`: children are forked from a server that has no other thread."""
    _squares_while_logging(trial, "forkserver")


@scenario.variant(expect="safe")
def pool_map(trial: Trial) -> None:
    """The chapter's `Pool.map`, with no other thread: a baseline."""
    numbers = [100, 200, 300, 400]
    with trial.mp.Pool(processes=2) as pool:
        results = pool.map(compute, numbers)
    trial.check(results == [compute(x) for x in numbers], f"pool.map returned {results}")

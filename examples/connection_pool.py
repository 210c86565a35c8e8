"""A connection pool, as a web service might write one: hand out at most `limit` connections.

The unsafe pool checks how many connections are out, then opens one: two requests can both see
"one left" and both open one, so more connections are open than the database allows. The safe pools
make the check and the act one step, with a lock or with a semaphore.

    stress run examples/connection_pool.py
    stress run examples/connection_pool.py --mode controlled     # the exact interleaving
"""

import threading

from harness import Scenario, Trial

scenario = Scenario(
    "connection-pool",
    "Requests (`actors`) borrow a connection, query, and give it back; at most two may be open",
    size=3,
    actors=4,
    controlled_actors=3,  # two fit in the pool: the third request is the one that must wait
)

LIMIT = 2


class Database:
    """Counts open connections; more than LIMIT at once is a failure the database reports."""

    def __init__(self) -> None:
        self.open = 0
        self.peak = 0
        self.lock = threading.Lock()

    def connect(self) -> int:
        with self.lock:
            self.open += 1
            self.peak = max(self.peak, self.open)
            return self.open

    def disconnect(self) -> None:
        with self.lock:
            self.open -= 1


class CheckThenOpenPool:
    """Keeps a count of connections out; checks it, then opens (two separate steps)."""

    def __init__(self, db: Database, limit: int) -> None:
        self.db = db
        self.limit = limit
        self.out = 0
        self.changed = threading.Condition()

    def acquire(self) -> int:
        while self.out >= self.limit:  # check ...
            with self.changed:
                self.changed.wait(timeout=0.01)
        self.out += 1  # ... then act: another request may have passed the check meanwhile
        return self.db.connect()

    def release(self) -> None:
        self.db.disconnect()
        self.out -= 1
        with self.changed:
            self.changed.notify()


class LockedPool(CheckThenOpenPool):
    """The same pool with the check and the act under the condition's lock."""

    def acquire(self) -> int:
        with self.changed:
            while self.out >= self.limit:
                self.changed.wait()
            self.out += 1
        return self.db.connect()

    def release(self) -> None:
        self.db.disconnect()
        with self.changed:
            self.out -= 1
            self.changed.notify()


class SemaphorePool:
    """A BoundedSemaphore holds the permits: acquiring one is the check and the act at once."""

    def __init__(self, db: Database, limit: int) -> None:
        self.db = db
        self.permits = threading.BoundedSemaphore(limit)

    def acquire(self) -> int:
        self.permits.acquire()
        return self.db.connect()

    def release(self) -> None:
        self.db.disconnect()
        self.permits.release()


def _requests(trial: Trial, make_pool) -> None:  # type: ignore[no-untyped-def]
    db = Database()
    pool = make_pool(db, LIMIT)

    def request() -> None:
        for _ in range(trial.size):
            pool.acquire()
            try:
                pass  # the query
            finally:
                pool.release()

    trial.run_threads(request, count=trial.actors)
    trial.check(db.peak <= LIMIT, f"{db.peak} connections were open at once (the limit is {LIMIT})")
    trial.check(db.open == 0, f"{db.open} connections were never closed")


@scenario.variant(expect="unsafe")
def check_then_open(trial: Trial) -> None:
    """Check the count, then open: two requests both see a free slot."""
    _requests(trial, CheckThenOpenPool)


@scenario.variant(expect="safe")
def locked(trial: Trial) -> None:
    """Check and count under the condition's lock; wait on it while the pool is full."""
    _requests(trial, LockedPool)


@scenario.variant(expect="safe")
def semaphore(trial: Trial) -> None:
    """A bounded semaphore of `limit` permits."""
    _requests(trial, SemaphorePool)

"""At most three at once: the chapter's Semaphore example, and what breaks its guarantee.

Six threads use a resource that allows three concurrent users (the chapter's connection limit).
Without a semaphore, more than three get in. With one, the limit holds — unless some code path
releases without having acquired: a plain `Semaphore` then silently holds four permits, while a
`BoundedSemaphore` refuses the extra release with ``ValueError`` right where the bug is.
"""

import _thread
import threading
from collections.abc import Callable

from harness import Scenario, Trial, atomic

scenario = Scenario(
    "semaphore",
    "Six threads use a resource `size` times each; at most three may use it at once",
    size=2,
)

THREADS = 6
LIMIT = 3


class Resource:
    """Counts its concurrent users. The counting uses a raw lock and runs `atomic`-ally: it is
    measurement, not the code under test, so it is never instrumented, perturbed or scheduled."""

    def __init__(self) -> None:
        self.inside = 0
        self.peak = 0
        self._count = _thread.allocate_lock()

    def use(self) -> None:
        with atomic(), self._count:
            self.inside += 1
            self.peak = max(self.peak, self.inside)
        work = 0
        for step in range(20):  # the time spent using the resource
            work += step
        with atomic(), self._count:
            self.inside -= 1


def _crowd(trial: Trial, use: Callable[[Resource], None]) -> None:
    resource = Resource()

    def user() -> None:
        for _ in range(trial.size):
            use(resource)

    trial.run_threads(user, count=THREADS)
    trial.check(resource.peak <= LIMIT, f"{resource.peak} threads used the resource at once (limit {LIMIT})")


def _limited(limit: threading.Semaphore) -> Callable[[Resource], None]:
    def use(resource: Resource) -> None:
        with limit:
            resource.use()

    return use


def _failed_connect(limit: threading.Semaphore) -> None:
    """A connection attempt that fails before it acquired a permit, with cleanup that returns the
    permit anyway: a release without an acquire."""
    try:
        raise ConnectionError("server unreachable")
    except ConnectionError:
        pass
    finally:
        limit.release()


@scenario.variant(expect="unsafe")
def no_limit(trial: Trial) -> None:
    """Nothing limits the users: the observed peak goes above three."""
    _crowd(trial, Resource.use)


@scenario.variant(expect="safe")
def semaphore(trial: Trial) -> None:
    """`with Semaphore(3)` around every use (the chapter's connection_semaphore)."""
    _crowd(trial, _limited(threading.Semaphore(LIMIT)))


@scenario.variant(expect="unsafe")
def release_without_acquire(trial: Trial) -> None:
    """One failed connect returns a permit it never took: the Semaphore silently admits four."""
    limit = threading.Semaphore(LIMIT)
    _failed_connect(limit)
    _crowd(trial, _limited(limit))


@scenario.variant(expect="safe")
def bounded(trial: Trial) -> None:
    """The same failed connect with a BoundedSemaphore: the extra release raises and changes nothing."""
    limit = threading.BoundedSemaphore(LIMIT)
    try:
        _failed_connect(limit)
    except ValueError:
        pass  # "Semaphore released too many times": the bound caught the bug where it happened
    _crowd(trial, _limited(limit))

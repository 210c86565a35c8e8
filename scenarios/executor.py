"""A thread pool that waits on itself: `ThreadPoolExecutor` (the chapter's executor) and nested tasks.

A task that submits another task to the same executor and waits for its result needs a second
worker thread. With ``max_workers=1`` the only worker is busy waiting, so the inner task never
starts: the pool deadlocks. Submitting both from outside (flat) needs no second worker.
"""

from concurrent.futures import ThreadPoolExecutor

from harness import Scenario, Trial

scenario = Scenario(
    "executor",
    "Tasks on a one-thread ThreadPoolExecutor, one of which needs another's result (the chapter's executor)",
    stress_only="its tasks run on an executor's threads",
)


def fetch(name: str) -> str:
    """Stands in for the chapter's `fetch_url`: some work with a result."""
    return name.upper()


@scenario.variant(expect="unsafe")
def nested_wait(trial: Trial) -> None:
    """The task submits to its own executor and waits: the only worker waits for itself."""
    with ThreadPoolExecutor(max_workers=1) as executor:

        def outer() -> str:
            inner = executor.submit(fetch, "inner")
            return fetch("outer") + inner.result()  # WAITS HERE for a task that cannot start

        result = executor.submit(outer).result()
    trial.check(result == "OUTERINNER", f"got {result!r}")


@scenario.variant(expect="safe")
def flat(trial: Trial) -> None:
    """Both tasks submitted from outside; the caller combines their results."""
    with ThreadPoolExecutor(max_workers=1) as executor:
        outer = executor.submit(fetch, "outer")
        inner = executor.submit(fetch, "inner")
        result = outer.result() + inner.result()
    trial.check(result == "OUTERINNER", f"got {result!r}")

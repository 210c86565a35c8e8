"""Threads and an event loop talking to each other: the two bridges, used right and wrong.

A thread that wants the loop to run something must use ``loop.call_soon_threadsafe``:
``loop.call_soon`` from another thread queues the callback without waking the loop, which may sleep in
its selector with the callback waiting for ever (asyncio checks this only in debug mode; stress always
does). And code on the loop's thread that submits a coroutine to its own loop with
``asyncio.run_coroutine_threadsafe`` must ``await asyncio.wrap_future(...)`` it: calling ``.result()``
blocks the only thread that could ever run the coroutine.
"""

import asyncio
import threading

from harness import Scenario, Trial

scenario = Scenario(
    "loop-bridge",
    "A worker thread hands its result to the event loop; or a task waits for a coroutine it sent to its own loop",
    size=2,
)


async def _from_thread(trial: Trial, *, threadsafe: bool) -> None:
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    results: list[int] = []

    def worker() -> None:
        results.append(sum(range(trial.size * 10)))
        if threadsafe:
            loop.call_soon_threadsafe(done.set)
        else:
            loop.call_soon(done.set)  # not thread-safe: the loop is not woken

    thread = threading.Thread(target=worker, name="worker")
    thread.start()
    await done.wait()
    thread.join()
    trial.check(results == [sum(range(trial.size * 10))], f"results {results}")


@scenario.variant(expect="unsafe")
async def call_soon_from_thread(trial: Trial) -> None:
    """The worker thread calls `loop.call_soon(done.set)`."""
    await _from_thread(trial, threadsafe=False)


@scenario.variant(expect="safe")
async def call_soon_threadsafe(trial: Trial) -> None:
    """The worker thread calls `loop.call_soon_threadsafe(done.set)`."""
    await _from_thread(trial, threadsafe=True)


async def _lookup() -> int:
    await asyncio.sleep(0)
    return 42


@scenario.variant(expect="unsafe")
async def result_on_loop_thread(trial: Trial) -> None:
    """A task sends a coroutine to its own loop and blocks on `.result()`: the loop never runs it."""
    future = asyncio.run_coroutine_threadsafe(_lookup(), asyncio.get_running_loop())
    trial.check(future.result() == 42, "lookup failed")


@scenario.variant(expect="safe")
async def wrap_future(trial: Trial) -> None:
    """The same coroutine, awaited through `asyncio.wrap_future`: the loop runs it meanwhile."""
    future = asyncio.run_coroutine_threadsafe(_lookup(), asyncio.get_running_loop())
    trial.check(await asyncio.wrap_future(future) == 42, "lookup failed")

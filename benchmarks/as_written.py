"""BENCHMARK-ONLY: programs that start their own threads, each written once and run unchanged by
every tool (``benchmarks/controlled_vs_peers.py --tables as-written``).

Each program is a plain zero-argument function: it makes its state, starts its own threads with
``threading.Thread``, a ``threading.Timer``, a ``ThreadPoolExecutor`` or around a ``queue.Queue``,
joins them, and returns whether its invariant held (a deadlock is the failure of the programs that
can hang). No tool's API appears in them. Each bug has a fixed version that must never fail.

* ``counter``   -- the chapter's counter: 2 threads each run ``counter += 1`` on a ``global``;
                   fixed: under the chapter's module-level ``lock``.
* ``bank``      -- the chapter's withdrawal: balance 1000, 2 threads withdraw 600 each, check then
                   (after ``time.sleep(0.001)``) act, on a ``global``; fixed: under the chapter's
                   module-level ``balance_lock``.
* ``nested``    -- a task on a one-worker ``ThreadPoolExecutor`` submits another to the same pool
                   and waits for its result: deadlock; fixed: the caller submits both.
* ``timer``     -- a ``threading.Timer(0.01, ...)`` adds 1 to a shared total while the main thread,
                   after working (sleeping) as long, adds 10: a lost update when they meet; fixed:
                   both under a lock.
* ``queue``     -- a worker drains whatever is already queued into one batch but calls
                   ``task_done()`` once per batch, so ``q.join()`` hangs when the main thread queued
                   both items before the worker took the first; fixed: one ``task_done()`` per item.

Module-level locks are made when this module is imported, before any tool starts: as the chapter
writes them.
"""

from __future__ import annotations

import queue as queue_module
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

# -- counter: the chapter's Lock example -----------------------------------------------------------

counter = 0
lock = threading.Lock()


def increment_without_lock() -> None:
    global counter
    counter += 1  # Race condition!


def increment_with_lock() -> None:
    global counter
    with lock:  # Safe
        counter += 1


def counter_unlocked() -> bool:
    global counter
    counter = 0
    threads = [threading.Thread(target=increment_without_lock) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return counter == 2


def counter_locked() -> bool:
    global counter
    counter = 0
    threads = [threading.Thread(target=increment_with_lock) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return counter == 2


# -- bank: the chapter's race-condition example ------------------------------------------------------

balance = 1000
balance_lock = threading.Lock()


def withdraw(amount: int) -> bool:
    global balance
    if balance >= amount:
        time.sleep(0.001)  # Simulated delay
        balance -= amount
        return True
    return False


def safe_withdraw(amount: int) -> bool:
    global balance
    with balance_lock:
        if balance >= amount:
            time.sleep(0.001)
            balance -= amount
            return True
        return False


def bank_unlocked() -> bool:
    global balance
    balance = 1000
    threads = [threading.Thread(target=withdraw, args=(600,)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return balance >= 0


def bank_locked() -> bool:
    global balance
    balance = 1000
    threads = [threading.Thread(target=safe_withdraw, args=(600,)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return balance == 400


# -- nested: a task waits for a task queued behind it on its own executor ---------------------------


def fetch() -> int:
    return 1


def nested_submit() -> bool:
    with ThreadPoolExecutor(max_workers=1) as pool:

        def outer() -> int:
            return pool.submit(fetch).result()  # the only worker is running outer: deadlock

        return pool.submit(outer).result() == 1


def caller_submits() -> bool:
    with ThreadPoolExecutor(max_workers=1) as pool:
        first = pool.submit(fetch)
        second = pool.submit(fetch)
        return first.result() + second.result() == 2


# -- timer: a Timer's write meets the main thread's --------------------------------------------------


class Total:
    def __init__(self) -> None:
        self.value = 0


def timer_race() -> bool:
    total = Total()

    def expire() -> None:
        total.value += 1

    timer = threading.Timer(0.01, expire)
    timer.start()
    time.sleep(0.01)  # the main thread's work takes about as long as the delay
    total.value += 10
    timer.join()
    return total.value == 11


def timer_locked() -> bool:
    total = Total()
    guard = threading.Lock()

    def expire() -> None:
        with guard:
            total.value += 1

    timer = threading.Timer(0.01, expire)
    timer.start()
    time.sleep(0.01)
    with guard:
        total.value += 10
    timer.join()
    return total.value == 11


# -- queue: join() waits for a task_done() that never comes -----------------------------------------


def _drain(q: queue_module.Queue[int | None], done: list[int], *, per_item: bool) -> None:
    while True:
        item = q.get()
        if item is None:
            q.task_done()
            return
        batch = [item]
        while not q.empty():  # take whatever else is already queued
            batch.append(q.get())  # type: ignore[arg-type]
        done.extend(batch)
        if per_item:
            for _ in batch:
                q.task_done()
        else:
            q.task_done()  # one for the batch: a batch of two leaves join() waiting forever


def _queue_program(*, per_item: bool) -> bool:
    q: queue_module.Queue[int | None] = queue_module.Queue()
    done: list[int] = []
    worker = threading.Thread(target=_drain, args=(q, done), kwargs={"per_item": per_item})
    worker.start()
    q.put(1)
    q.put(2)
    q.join()
    q.put(None)
    worker.join()
    return sorted(done) == [1, 2]


def queue_batch_leak() -> bool:
    return _queue_program(per_item=False)


def queue_per_item() -> bool:
    return _queue_program(per_item=True)


# -- the table ---------------------------------------------------------------------------------------

#: name -> (what it is, the buggy program, its fixed version)
PROGRAMS: dict[str, tuple[str, Callable[[], bool], Callable[[], bool]]] = {
    "counter": ("the chapter's counter, global, 2 threads", counter_unlocked, counter_locked),
    "bank": ("the chapter's check-then-act withdrawal, 2 threads", bank_unlocked, bank_locked),
    "nested": ("a task submits to its own 1-worker executor", nested_submit, caller_submits),
    "timer": ("a Timer's += meets the main thread's", timer_race, timer_locked),
    "queue": ("task_done once per batch, q.join() hangs", queue_batch_leak, queue_per_item),
}

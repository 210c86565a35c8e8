"""The lock-order analysis: which cycles of "held A, then took B" edges could close."""

from __future__ import annotations

import threading
from typing import Any

from harness.detect.lock_order import LockOrder
from harness.detect.primitives import Session, _ThreadState


def _edge(held: int, acquiring: int, thread: str | None) -> dict[str, Any]:
    record: dict[str, Any] = {
        "held": {"file": "locks.py", "line": held, "ordinal": 0},
        "acquiring": {"file": "locks.py", "line": acquiring, "ordinal": 0},
        "held_at": f"locks.py:{held} in work",
        "acquiring_at": f"locks.py:{acquiring} in work",
        "gates": [],
    }
    if thread is not None:
        record["thread"] = thread
    return record


def _cycles(*edges: dict[str, Any]) -> list[tuple[str, ...]]:
    order = LockOrder()
    order.add(edges)
    return [cycle.paths for cycle in order.cycles()]


def test_two_threads_taking_two_locks_in_opposite_orders_can_deadlock() -> None:
    (paths,) = _cycles(_edge(1, 2, "thread_1"), _edge(2, 1, "thread_2"))
    assert paths[0].startswith("thread_1 took")
    assert paths[1].startswith("thread_2 took")


def test_one_thread_taking_two_locks_in_both_orders_cannot() -> None:
    # A plain Lock released by another thread lets one thread take both orders: it holds one lock
    # of the cycle while waiting for the other, so the cycle needs a second thread.
    assert _cycles(_edge(1, 2, "MainThread"), _edge(2, 1, "MainThread")) == []


def test_a_cycle_is_explained_by_threads_that_can_close_it_together() -> None:
    # thread_1 took both orders; thread_2 only the second: thread_1 must be the first edge's.
    (paths,) = _cycles(_edge(1, 2, "thread_1"), _edge(2, 1, "thread_1"), _edge(2, 1, "thread_2"))
    assert paths[0].startswith("thread_1 took")
    assert paths[1].startswith("thread_2 took")


def test_a_cycle_of_three_locks_needs_three_threads() -> None:
    two = (_edge(1, 2, "a"), _edge(2, 3, "a"), _edge(2, 3, "b"), _edge(3, 1, "b"))
    assert _cycles(*two) == []
    assert len(_cycles(*two, _edge(2, 3, "c"))) == 1


def test_an_edge_many_threads_took_or_with_no_thread_named_may_be_anyones() -> None:
    many = [_edge(2, 1, f"worker#{n}") for n in range(LockOrder.MAX_THREADS + 1)]
    assert len(_cycles(_edge(1, 2, "worker#0"), *many)) == 1
    assert len(_cycles(_edge(1, 2, "MainThread"), _edge(2, 1, None))) == 1


def test_two_threads_named_alike_are_two_threads() -> None:
    session = Session()
    first, second = _ThreadState(), _ThreadState()
    first.name = second.name = "worker"
    second.thread = threading.Thread(name="worker")  # same ident (unstarted), another thread
    assert session.thread_key(first) == "worker"
    assert session.thread_key(second) == "worker·2"
    assert session.thread_key(first) == "worker"

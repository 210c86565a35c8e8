"""The lock-order analysis: which cycles of "held A, then took B" edges could close."""

from __future__ import annotations

import threading
import time
from typing import Any

from harness.detect.happens_before import StartJoinOrder, parallel
from harness.detect.lock_order import LockOrder


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
    order = StartJoinOrder()
    first, second = threading.Thread(name="worker"), threading.Thread(name="worker")
    assert order.role(first) == "worker"
    assert order.role(second) == "worker·2"
    assert order.role(first) == "worker"


def test_a_started_threads_role_is_the_same_in_every_trial() -> None:
    # Thread-N and ThreadPoolExecutor-N_M count threads over the whole process: the role does not.
    roles = []
    for first, second in (("Thread-3 (forward)", "Thread-4 (forward)"), ("Thread-9 (forward)", "Thread-12 (forward)")):
        order, body = StartJoinOrder(), threading.main_thread()
        one, two = threading.Thread(name=first), threading.Thread(name=second)
        order.started(body, one)
        order.started(body, two)
        roles.append((order.role(one), order.role(two)))
    assert roles == [("Thread-# (forward)", "Thread-# (forward)·2")] * 2


def test_a_start_orders_what_the_starter_did_before_it_and_a_join_what_the_thread_did() -> None:
    order, body = StartJoinOrder(), threading.main_thread()
    before = order.taker(body)[1]
    first, second = threading.Thread(name="first"), threading.Thread(name="second")
    order.started(body, first)
    concurrent_with_first = order.taker(body)[1]
    in_first = order.taker(first)[1]
    order.joined(body, first)
    order.started(body, second)
    in_second = order.taker(second)[1]
    assert not parallel(before, in_first)
    assert parallel(concurrent_with_first, in_first)
    assert not parallel(in_first, in_second)  # first was joined before second started
    assert parallel(in_first, ())  # a record without a clock is never ordered


def _timed(held: int, acquiring: int, role: str, clock: dict[str, int]) -> dict[str, Any]:
    return {**_edge(held, acquiring, role), "role": role, "clock": sorted(clock.items())}


def test_opposite_orders_in_phases_joined_before_the_next_starts_cannot_deadlock() -> None:
    forward = _timed(1, 2, "forward", {"MainThread": 1, "forward": 1})
    backward = _timed(2, 1, "backward", {"MainThread": 3, "forward": 1, "backward": 1})
    assert _cycles(forward, backward) == []
    overlapping = _timed(2, 1, "backward", {"MainThread": 2, "backward": 1})  # started before the join
    assert len(_cycles(forward, overlapping)) == 1
    # One thread of each role ran in two phases: the later two overlap, so the cycle stands.
    later = _timed(1, 2, "forward", {"MainThread": 3, "forward": 1})
    assert len(_cycles(forward, backward, later, overlapping)) == 1


def test_actors_of_one_group_overlap_and_a_later_group_follows_them() -> None:
    order, body = StartJoinOrder(), threading.main_thread()
    first = order.spawn(body, ["transfer#0", "transfer#1"])
    one, two = threading.Thread(name="transfer#0"), threading.Thread(name="transfer#1")
    in_one, in_two = order.taker(one)[1], order.taker(two)[1]
    order.gather(body, first)
    order.spawn(body, ["transfer#0", "audit"])  # audit never takes a lock: its entry is never claimed
    again = threading.Thread(name="transfer#0")
    in_again = order.taker(again)[1]
    assert parallel(in_one, in_two)
    assert not parallel(in_one, in_again)
    assert not parallel(in_two, in_again)
    assert (order.role(one), order.role(again)) == ("transfer#0", "transfer#0·2")  # two threads of the trial


def test_many_locks_always_taken_in_one_order_are_judged_at_once() -> None:
    # Forty locks taken nested in one global order: 780 edges and no cycle. A search of every path
    # through them never ended; only locks that reach each other back are searched now.
    edges = [_edge(i, j, "worker") for i in range(40) for j in range(i + 1, 40)]
    started = time.perf_counter()
    assert _cycles(*edges) == []
    assert time.perf_counter() - started < 5
    (cycle,) = _cycles(*edges, _edge(39, 0, "other"))[:1]  # one edge back closes cycles again
    assert cycle[-1].startswith("other took")

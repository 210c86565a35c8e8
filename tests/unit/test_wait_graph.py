"""The wait-for graph's decisions, on hand-built states (no real blocking but in the last test)."""

from __future__ import annotations

import _thread
import os
import signal
import sys
import threading
import time
from _thread import allocate_lock
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from harness.actors import ActorPool
from harness.detect import primitives
from harness.detect.wait_graph import (
    WaitGraph,
    Waiting,
    _line,
    _unseen,
    _unseen_at_start,
    describe_primitive,
    describe_site,
)
from harness.scope import Scope


def _graph(*, now: bool = False) -> WaitGraph:
    """A graph for this test file; with ``now``, the threads running now are not the trial's."""
    preexisting = {t.ident for t in threading.enumerate() if t.ident is not None} if now else set()
    return WaitGraph(scope=Scope(files=[__file__]), main=threading.get_ident(), preexisting=preexisting)


def _lock(owner: int | None, *, owner_only: bool = True) -> Any:
    """A lock held by thread ``owner``; only its holder may release it (an RLock), unless not
    ``owner_only`` (a plain Lock, which any thread may release)."""
    return SimpleNamespace(
        _owner=None if owner is None else SimpleNamespace(ident=owner), _created=None, owner_release_only=owner_only
    )


def test_a_cycle_is_a_candidate_first_and_a_deadlock_when_seen_again() -> None:
    graph = _graph()
    lock_a, lock_b = _lock(owner=2), _lock(owner=1)
    graph.enter(1, Waiting(lock_a, lock=lock_a, timed=False))
    graph.enter(2, Waiting(lock_b, lock=lock_b, timed=False))
    candidate = graph.check(1, None)
    assert candidate is not None
    assert candidate[0] == "cycle"
    assert not graph.aborting
    assert graph.check(1, candidate) == candidate
    assert graph.aborting
    assert graph.finding is not None
    assert graph.finding.kind == "cycle"
    assert len(graph.finding.lines) == 2
    assert graph.deadlocked_on == {id(lock_a), id(lock_b)}


def test_a_changed_graph_is_not_confirmed() -> None:
    graph = _graph()
    lock_a, lock_b = _lock(owner=2), _lock(owner=1)
    graph.enter(1, Waiting(lock_a, lock=lock_a, timed=False))
    graph.enter(2, Waiting(lock_b, lock=lock_b, timed=False))
    candidate = graph.check(1, None)
    graph.leave(2)  # thread 2 got its lock meanwhile
    graph.enter(2, Waiting(lock_b, lock=lock_b, timed=False))
    assert graph.check(1, candidate) != candidate
    assert not graph.aborting


@pytest.mark.parametrize("timed", [True, False])
def test_no_cycle_when_a_lock_is_free_or_a_wait_has_a_timeout(timed: bool) -> None:
    graph = _graph()
    lock_a = _lock(owner=2)
    lock_b = _lock(owner=None if not timed else 1)
    graph.enter(1, Waiting(lock_a, lock=lock_a, timed=False))
    graph.enter(2, Waiting(lock_b, lock=lock_b, timed=timed))
    assert graph._cycle_through(1) is None


def test_a_notified_waiter_is_runnable() -> None:
    token = allocate_lock()
    token.acquire()
    waiting = Waiting(object(), token=token, timed=False)
    assert not waiting.runnable()
    token.release()  # what notify() does
    assert waiting.runnable()


def test_a_notified_waiter_that_took_its_token_back_is_still_runnable() -> None:
    # The window of a false "everyone waits": the notified thread has its token back (locked
    # again) but has not yet left its wait, and the OS keeps it off the CPU a long while.
    condition = threading.Condition()
    token = allocate_lock()
    token.acquire()
    condition._waiters.append(token)  # type: ignore[attr-defined]
    waiting = Waiting(condition, token=token, waiters=condition._waiters, timed=False)  # type: ignore[attr-defined]
    assert not waiting.runnable()
    with condition:
        condition.notify()  # releases the token and takes it off the list
    assert token.acquire(False)  # the waiter takes it back...
    assert waiting.runnable()  # ...and still counts as moving, not stuck


def test_evidence_failure_still_reports_the_deadlock(monkeypatch: pytest.MonkeyPatch) -> None:
    graph = _graph()
    lock_a, lock_b = _lock(owner=2), _lock(owner=1)
    graph.enter(1, Waiting(lock_a, lock=lock_a, timed=False))
    graph.enter(2, Waiting(lock_b, lock=lock_b, timed=False))

    def broken(candidate: object) -> None:
        raise TypeError("a frame without a line")

    monkeypatch.setattr(graph, "_describe", broken)
    candidate = graph.check(1, None)
    graph.check(1, candidate)
    assert graph.aborting
    assert graph.finding is not None
    assert "a frame without a line" in graph.finding.lines[0]


def test_a_frame_between_lines_counts_as_its_first_line() -> None:
    frame = SimpleNamespace(f_lineno=None, f_code=SimpleNamespace(co_firstlineno=12))
    assert _line(frame) == 12  # type: ignore[arg-type]


@pytest.mark.timeout(30, method="thread")
def test_a_signal_handler_that_waits_inside_the_graphs_own_bookkeeping_does_not_hang(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A handler runs on the main thread between two bytecodes, here inside the deadlock check
    # that the main thread's own wait started; the handler then waits for a lock another thread
    # holds for a moment. Safe code: the wait ends when that thread lets go.
    graph = _graph()
    primitives.activate(primitives.Session(graph=graph))
    try:
        lock = primitives.Lock()
        gate = primitives.Lock()
        holding, release = threading.Event(), threading.Event()
        handled: list[bool] = []
        raised: list[bool] = []

        def holder() -> None:
            with lock, gate:
                holding.set()
                release.wait(5)

        def on_alarm(signum: int, frame: object) -> None:
            release.set()  # the holder lets go soon: the handler's wait is a short one
            with lock:
                handled.append(True)

        cycle_through = graph._cycle_through

        def interrupted(ident: int) -> Any:
            if not raised:
                raised.append(True)
                signal.raise_signal(signal.SIGALRM)  # the handler runs before this check goes on
            return cycle_through(ident)

        monkeypatch.setattr(graph, "_cycle_through", interrupted)
        previous = signal.signal(signal.SIGALRM, on_alarm)
        other = threading.Thread(target=holder)
        try:
            other.start()
            holding.wait(5)
            with gate:  # waits for the holder: the check at the start of that wait is interrupted
                pass
        finally:
            signal.signal(signal.SIGALRM, previous)
            release.set()
            other.join(5)
    finally:
        primitives.deactivate()
    assert handled == [True]
    assert graph.waiting == {}


def test_a_joiner_whose_thread_has_ended_is_about_to_go_on() -> None:
    # Thread a holds a lock while it joins a helper; thread b waits for the lock. While the helper
    # runs, nobody else can move; once the helper has ended, a is on its way out of join() —
    # however long a loaded machine keeps it off the CPU — and nothing is stuck.
    hold = threading.Event()
    graph = _graph(now=True)
    helper_done = threading.Event()
    a, b = (threading.Thread(target=hold.wait, daemon=True) for _ in range(2))
    helper = threading.Thread(target=helper_done.wait, daemon=True)
    for thread in (a, b, helper):
        thread.start()
    try:
        assert a.ident is not None
        assert b.ident is not None
        lock = _lock(owner=a.ident)
        graph.set_joining(True)
        graph.enter(b.ident, Waiting(lock, lock=lock, timed=False))
        graph.add_joiner(a.ident, helper)
        graph.enter(helper.ident or 0, Waiting(lock, lock=lock, timed=False))  # the helper waits too
        assert graph._everyone_stuck() is not None  # the joined thread is stuck: so is its joiner
        graph.leave(helper.ident or 0)
        helper_done.set()
        helper.join()
        assert a.is_alive()
        assert b.is_alive()
        assert graph._everyone_stuck() is None
    finally:
        hold.set()
        helper_done.set()
        a.join()
        b.join()


def test_a_condition_and_the_lock_made_for_it_on_one_line_go_by_the_lines_name() -> None:
    primitives.activate(primitives.Session(graph=_graph()))
    try:
        guard = primitives.Condition(primitives.RLock())
        mutex = primitives.Lock()
        plain = primitives.Condition(mutex)  # a lock made on another line keeps its own name
    finally:
        primitives.deactivate()
    assert describe_primitive(guard) == "guard"
    assert describe_primitive(guard._lock) == "guard"  # type: ignore[attr-defined]
    assert describe_primitive(mutex) == "mutex"
    assert describe_primitive(plain) == "plain"


def test_a_plain_lock_may_be_released_by_any_thread_so_its_cycle_waits_for_the_others() -> None:
    # A latch: thread a took the lock and waits to take it again; b, still running, will release
    # it (a plain Lock may be released by any thread). No deadlock until b is stuck too; a lock only
    # its holder may release (an RLock) is a deadlock at once.
    hold = threading.Event()
    graph = _graph(now=True)
    graph.set_joining(True)
    a, b = (threading.Thread(target=hold.wait, daemon=True) for _ in range(2))
    for thread in (a, b):
        thread.start()
    try:
        assert a.ident is not None
        assert b.ident is not None
        latch = _lock(owner=a.ident, owner_only=False)
        graph.enter(a.ident, Waiting(latch, lock=latch, timed=False))
        assert graph.check(a.ident, None) is None  # b may release it
        other = _lock(owner=a.ident, owner_only=False)
        graph.enter(b.ident, Waiting(other, lock=other, timed=False))
        assert graph.check(a.ident, None) is not None  # b waits for a: nobody is left to release it
        graph.leave(b.ident)
        owned = _lock(owner=a.ident)
        graph.enter(a.ident, Waiting(owned, lock=owned, timed=False))
        assert graph.check(a.ident, None) is not None  # only a could release it
    finally:
        hold.set()
        a.join()
        b.join()


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs /proc")
def test_threads_threading_does_not_know_are_unseen_and_the_others_are_not() -> None:
    # A trial asks at its start, cheaply: threading's threads and parked actors are accounted for
    # without listing /proc. Whoever asks later who may wake a waiter lists them: threading keeps
    # the record of a raw thread that asked for its Thread object after the thread has ended, and
    # such records may outnumber the threads (a raw thread setting an Event was then unseen, and
    # its waiter called deadlocked in 43 of 60 trials).
    pool = ActorPool()
    release = threading.Event()
    known = threading.Thread(target=release.wait, daemon=True)
    stale: list[int | None] = []
    try:
        baseline = _unseen()  # whatever earlier tests left on their way out
        assert baseline is not None
        pool.run(pool.take(2), ["a", "b"], [lambda: None, lambda: None])
        assert (_unseen() or set()) <= baseline  # two parked actors
        known.start()
        assert (_unseen() or set()) <= baseline
        gone = threading.Event()
        for _ in range(8):  # at once, so that each has an ident of its own
            _thread.start_new_thread(lambda: (stale.append(threading.current_thread().ident), gone.wait()), ())
        while len(stale) < 8:
            time.sleep(0.001)
        gone.set()
        while len(os.listdir("/proc/self/task")) > len(baseline) + 5:  # main, known, 2 actors: gone
            time.sleep(0.001)
        started = threading.Event()
        native: list[int] = []

        def raw() -> None:
            native.append(threading.get_native_id())
            started.set()
            release.wait()

        _thread.start_new_thread(raw, ())
        started.wait()
        assert (_unseen() or set()) - baseline == set(native)
        assert (_unseen_at_start() or set()) <= set(native) | baseline  # may leave it out: see above
    finally:
        release.set()
        known.join()
        pool.close()
        for ident in stale:
            threading._active.pop(ident, None)  # type: ignore[attr-defined]


def test_a_primitive_goes_by_the_name_its_line_assigns_it_to(tmp_path: Path) -> None:
    source = tmp_path / "made.py"
    source.write_text(
        "lock_a = Lock()\n"
        "a, b = Lock(), Lock()\n"
        "lock, count = Lock(), 0\n"
        "self.x, self.y = Lock(), RLock()\n"
        "a, b = make_pair()\n"
        "forks = [Lock() for _ in range(5)]\n"
    )
    file = str(source)
    assert describe_site(file, 1, 0, count=1) == "lock_a"
    assert [describe_site(file, 2, k, count=2) for k in range(2)] == ["a", "b"]
    assert [describe_site(file, 2, k, count=4) for k in range(4)] == ["a#0", "b#0", "a#1", "b#1"]
    assert [describe_site(file, 3, k, count=3) for k in range(3)] == ["lock#0", "lock#1", "lock#2"]
    assert [describe_site(file, 4, k, count=2) for k in range(2)] == ["x", "y"]
    assert describe_site(file, 5, 1, count=2) == "lock#1 created at made.py:5"
    assert describe_site(file, 6, 3, count=5) == "forks[3]"  # as the code names it


def test_a_primitive_is_named_by_its_own_target_however_the_assignment_is_written(tmp_path: Path) -> None:
    source = tmp_path / "written.py"
    source.write_text(
        "a, b = make(), Lock()\n"  # make() makes its lock on a line of its own
        "m = Lock(); n = threading.RLock()\n"
        "(p, q), r = (Lock(), Lock()), Lock()\n"
        "first, second = (\n"
        "    Lock(),\n"
        "    Semaphore(2),\n"
        ")\n"
        "class Account:\n"
        "    def __init__(self):\n"
        "        self.guard = Lock() if fair else RLock()\n"
    )
    file = str(source)
    assert describe_site(file, 1, 0, count=1) == "b"
    assert [describe_site(file, 2, k, count=2) for k in range(2)] == ["m", "n"]
    assert [describe_site(file, 3, k, count=3) for k in range(3)] == ["p", "q", "r"]
    assert (describe_site(file, 5, 0, count=1), describe_site(file, 6, 0, count=1)) == ("first", "second")
    assert describe_site(file, 10, 0, count=1) == "guard"


def test_a_thread_the_trial_starts_is_the_trials_even_with_an_ident_an_earlier_thread_had() -> None:
    # The OS reuses a thread's ident once it ends: a pool thread of the last trial, still ending as
    # this one began, gave its ident to this trial's new executor thread, which then counted as
    # "from before the trial" and was never unwound (the executor's nested wait hung, 5 % of trials).
    from harness.detect.instrument import Instrumenter

    class EveryIdent(set[int]):
        """Idents of threads from before the trial: as if each new thread reused one of them."""

        def __init__(self) -> None:
            super().__init__()
            self.dropped: set[int] = set()

        def __contains__(self, ident: object) -> bool:
            return ident not in self.dropped

        def discard(self, ident: int) -> None:
            self.dropped.add(ident)

    instrumenter = Instrumenter(Scope(files=[__file__]))
    instrumenter.install()
    graph = _graph()
    graph.preexisting = EveryIdent()
    primitives.activate(primitives.Session(graph=graph))
    try:
        thread = threading.Thread(target=lambda: None)
        thread.start()
        thread.join()
        assert thread.ident not in graph.preexisting
        assert threading.get_ident() in graph.preexisting  # (the test's own thread was there before)
    finally:
        primitives.deactivate()
        instrumenter.uninstall()


def test_a_signal_timer_that_fired_before_its_noted_time_may_still_wake(monkeypatch: pytest.MonkeyPatch) -> None:
    # The timer's due time is noted just after it is armed; on a loaded machine the note can come
    # later than the timer fires. Between the two, the timer reads 0 and its handler has not run:
    # the actors waiting for the event it sets were called deadlocked (1 of 300 trials).
    from harness.detect import wait_graph

    monkeypatch.setattr(wait_graph, "_alarm_due", time.monotonic() + 0.5)
    previous = signal.signal(signal.SIGALRM, lambda signum, frame: None)
    try:
        assert signal.getitimer(signal.ITIMER_REAL)[0] == 0
        assert wait_graph._unseen_waker(set()) == "a signal timer's handler, which may not have run yet"
    finally:
        signal.signal(signal.SIGALRM, previous)


def test_a_pool_worker_with_a_task_taken_but_not_started_is_not_idle() -> None:
    # Back from its queue's get with a task, a worker may wait for the interpreter (on 3.13 under
    # load, for tens of milliseconds) before it runs it: the queue is empty and the task's future
    # still pending. Taken for idle, it made a safe trial deadlocked in 1 of 200.
    from concurrent.futures import Future, ThreadPoolExecutor
    from weakref import WeakSet

    from harness.detect.wait_graph import idle_executor_worker

    with ThreadPoolExecutor(max_workers=1) as executor:
        executor.submit(lambda: None).result()
        (worker,) = executor._threads  # type: ignore[attr-defined]
        deadline = time.monotonic() + 10
        while not idle_executor_worker(worker, sys._current_frames()):  # back in its get
            assert time.monotonic() < deadline
            time.sleep(0.001)
        taken: Future[None] = Future()  # submitted, no longer queued, not started
        executor._stress_submitted = WeakSet([taken])  # type: ignore[attr-defined]
        assert not idle_executor_worker(worker, sys._current_frames())
        taken.set_running_or_notify_cancel()
        assert idle_executor_worker(worker, sys._current_frames())  # running elsewhere: not this one's

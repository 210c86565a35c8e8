"""The instrumented primitives behave exactly like the standard library's.

Every check runs three times: against the originals (`threading`, `queue`), against
`harness.detect.primitives` outside any trial, and against `harness.detect.primitives` inside an active session
(a trial's wait-for graph), where blocking waits take the sliced, registered path.

House rules: every helper thread is joined; hand-offs use the *standard library's* Event and Queue
(captured below, never the primitives under test); every wait is bounded; a timeout under test is
`SHORT` and is only asserted to last at least 80 % of it and well under `UPPER`. A check that
something must *not* happen (a waiter stays blocked) is a bounded wait of `ABSENT` for it. The only
polling is `eventually`, for a barrier's ``n_waiting``, which no hand-off can announce.
"""

from __future__ import annotations

import contextlib
import math
import queue
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from harness.detect import primitives
from harness.detect.wait_graph import DeadlockError, WaitGraph, Waiting
from harness.scope import Scope

# The standard library's own primitives, for the tests' hand-offs.
StdEvent = threading.Event
StdQueue = queue.Queue
StdThread = threading.Thread

SHORT = 0.05  # a timeout that is expected to expire
LOWER = SHORT * 0.8  # ... and must not expire earlier than this
UPPER = 2.0  # ... nor later than this
WAIT = 5.0  # bound for something that must happen
ABSENT = 0.02  # how long something that must not happen is given to happen anyway
PROMPT = 0.1  # how long something that must happen at once is given before we intervene
HUGE = threading.TIMEOUT_MAX * 2  # a timeout the platform cannot represent


# -- the three kits ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Kit:
    """Constructors of one family of primitives."""

    name: str
    Lock: Callable[..., Any]
    RLock: Callable[..., Any]
    Condition: Callable[..., Any]
    Semaphore: Callable[..., Any]
    BoundedSemaphore: Callable[..., Any]
    Event: Callable[..., Any]
    Barrier: Callable[..., Any]
    Queue: Callable[..., Any]

    @property
    def in_session(self) -> bool:
        return self.name == "instrumented-in-session"


def _originals() -> Kit:
    return Kit(
        "original",
        threading.Lock,
        threading.RLock,
        threading.Condition,
        threading.Semaphore,
        threading.BoundedSemaphore,
        threading.Event,
        threading.Barrier,
        queue.Queue,
    )


def _instrumented(name: str) -> Kit:
    return Kit(
        name,
        primitives.Lock,
        primitives.RLock,
        primitives.Condition,
        primitives.Semaphore,
        primitives.BoundedSemaphore,
        primitives.Event,
        primitives.Barrier,
        primitives.Queue,
    )


KITS = ["original", "instrumented", "instrumented-in-session"]


@pytest.fixture(params=KITS)
def kit(request: pytest.FixtureRequest) -> Iterator[Kit]:
    if request.param == "original":
        yield _originals()
        return
    if request.param == "instrumented":
        primitives.deactivate()
        yield _instrumented(request.param)
        return
    graph = WaitGraph(
        scope=Scope(files=[__file__]),
        main=threading.get_ident(),
        preexisting={t.ident for t in threading.enumerate() if t.ident is not None},
    )
    primitives.activate(primitives.Session(graph=graph))
    try:
        yield _instrumented(request.param)
    finally:
        primitives.deactivate()
    # The session saw no deadlock in these well-behaved tests, and every wait deregistered.
    assert graph.finding is None
    assert not graph.aborting
    assert graph.waiting == {}


# -- helper threads ------------------------------------------------------------------------------


class Helper:
    """A thread running one call; its return value or exception comes back to the test."""

    def __init__(self, target: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], name: str) -> None:
        self.finished = StdEvent()
        self._outcome: queue.Queue[tuple[bool, Any]] = StdQueue()
        self.thread = StdThread(target=self._run, args=(target, args, kwargs), name=name, daemon=True)

    def _run(self, target: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        try:
            value = target(*args, **kwargs)
        except BaseException as exc:
            self._outcome.put((False, exc))
        else:
            self._outcome.put((True, value))
        finally:
            self.finished.set()

    def blocked_for(self, seconds: float = ABSENT) -> bool:
        """True if the call is still running after ``seconds`` (it must be blocked)."""
        return not self.finished.wait(seconds)

    def result(self, timeout: float = WAIT) -> Any:
        """The call's return value (its exception is raised here); the thread is joined."""
        try:
            ok, value = self._outcome.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"{self.thread.name} did not finish within {timeout} s") from None
        self.thread.join(WAIT)
        assert not self.thread.is_alive()
        if not ok:
            raise value
        return value


Spawn = Callable[..., Helper]


@pytest.fixture
def spawn(kit: Kit) -> Iterator[Spawn]:
    """Start a helper thread running ``target(*args, **kwargs)``; all are joined at teardown
    (before the kit's session ends: this fixture depends on it)."""
    helpers: list[Helper] = []

    def start(target: Callable[..., Any], *args: Any, **kwargs: Any) -> Helper:
        helper = Helper(target, args, kwargs, name=f"{kit.name}-helper-{len(helpers)}")
        helpers.append(helper)
        helper.thread.start()
        return helper

    yield start
    for helper in helpers:
        helper.thread.join(WAIT)


def timed(call: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, float]:
    """``call(*args, **kwargs)`` and how long it took."""
    start = time.monotonic()
    value = call(*args, **kwargs)
    return value, time.monotonic() - start


def timed_raise(expected: type[BaseException], call: Callable[..., Any], *args: Any, **kwargs: Any) -> float:
    """How long ``call`` took to raise ``expected``."""
    start = time.monotonic()
    with pytest.raises(expected):
        call(*args, **kwargs)
    return time.monotonic() - start


def assert_timed_out(elapsed: float) -> None:
    assert LOWER <= elapsed < UPPER, f"a {SHORT} s timeout took {elapsed:.3f} s"


def assert_prompt(elapsed: float) -> None:
    assert elapsed < UPPER, f"an immediate call took {elapsed:.3f} s"


def try_hold(lock: Any) -> bool:
    """Whether ``lock`` (a Lock, RLock or Condition) can be taken right now; it is given back."""
    got = bool(lock.acquire(False))
    if got:
        lock.release()
    return got


def try_hold_elsewhere(lock: Any) -> bool:
    """`try_hold` from a fresh thread (for an RLock, the owner could always re-enter)."""
    box: queue.Queue[bool] = StdQueue()
    thread = StdThread(target=lambda: box.put(try_hold(lock)), daemon=True)
    thread.start()
    thread.join(WAIT)
    return box.get(timeout=WAIT)


def release_if_held(lock: Any) -> None:
    """Give back whatever this thread holds of ``lock`` (cleanup after a failed check)."""
    if hasattr(lock, "_is_owned"):
        release_fully(lock)
    elif lock.locked():
        lock.release()


def acquire_and_release(lock: Any, timeout: float = -1) -> bool:
    got = bool(lock.acquire(True, timeout))
    if got:
        lock.release()
    return got


def notify_under_lock(cond: Any) -> bool:
    if not cond.acquire(timeout=WAIT):
        return False
    try:
        cond.notify()
    finally:
        cond.release()
    return True


def release_fully(rlock: Any) -> None:
    while rlock._is_owned():
        rlock.release()


def eventually(predicate: Callable[[], bool], timeout: float = WAIT) -> bool:
    """Poll, bounded, for a state no hand-off can announce (a barrier's ``n_waiting``)."""
    tick = StdEvent()
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        tick.wait(0.001)
    return True


def nothing_arrives(inbox: queue.Queue[Any]) -> bool:
    """True if nothing is put in ``inbox`` within ``ABSENT``."""
    try:
        inbox.get(timeout=ABSENT)
    except queue.Empty:
        return True
    return False


# -- isinstance sanity ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("instrumented", "standard"),
    [
        (primitives.Condition, threading.Condition),
        (primitives.Semaphore, threading.Semaphore),
        (primitives.BoundedSemaphore, threading.BoundedSemaphore),
        (primitives.BoundedSemaphore, threading.Semaphore),
        (primitives.Event, threading.Event),
        (primitives.Barrier, threading.Barrier),
        (primitives.Queue, queue.Queue),
    ],
)
def test_instrumented_classes_subclass_the_standard_ones(instrumented: type, standard: type) -> None:
    assert issubclass(instrumented, standard)


def test_instances_are_instances_of_the_standard_classes(kit: Kit) -> None:
    assert isinstance(kit.Condition(), threading.Condition)
    assert isinstance(kit.Condition(kit.Lock()), threading.Condition)
    assert isinstance(kit.Semaphore(), threading.Semaphore)
    assert isinstance(kit.BoundedSemaphore(), threading.BoundedSemaphore)
    assert isinstance(kit.BoundedSemaphore(), threading.Semaphore)
    assert isinstance(kit.Event(), threading.Event)
    assert isinstance(kit.Barrier(1), threading.Barrier)
    assert isinstance(kit.Queue(), queue.Queue)


@pytest.mark.parametrize("kind", ["Lock", "RLock"])
def test_locks_support_weak_references(kit: Kit, kind: str) -> None:
    lock = getattr(kit, kind)()
    assert weakref.ref(lock)() is lock


# -- Lock ----------------------------------------------------------------------------------------


def test_lock_acquire_and_release(kit: Kit) -> None:
    lock = kit.Lock()
    assert lock.locked() is False
    assert lock.acquire() is True
    assert lock.locked() is True
    lock.release()
    assert lock.locked() is False
    for args, kwargs in [((True,), {}), ((True, -1), {}), ((), {"timeout": 0}), ((), {"timeout": WAIT})]:
        assert lock.acquire(*args, **kwargs) is True, (args, kwargs)
        assert lock.locked()
        lock.release()
    assert lock.acquire(False) is True
    lock.release()
    assert not lock.locked()


def test_lock_with_statement(kit: Kit) -> None:
    lock = kit.Lock()
    with lock as entered:
        assert entered is True
        assert lock.locked()
    assert not lock.locked()
    with pytest.raises(KeyError), lock:
        raise KeyError("inside")
    assert not lock.locked()


def test_lock_is_not_reentrant_and_nonblocking_acquire_of_a_held_lock_fails(kit: Kit, spawn: Spawn) -> None:
    lock = kit.Lock()
    lock.acquire()
    try:
        assert lock.acquire(False) is False
        assert lock.acquire(blocking=False) is False
        got, elapsed = timed(lock.acquire, timeout=0)
        assert got is False
        assert_prompt(elapsed)
        assert spawn(lock.acquire, False).result() is False
        assert lock.locked()
    finally:
        lock.release()
    assert lock.acquire(False) is True
    lock.release()


@pytest.mark.parametrize("where", ["same thread", "other thread"])
def test_lock_acquire_times_out(kit: Kit, spawn: Spawn, where: str) -> None:
    lock = kit.Lock()
    lock.acquire()
    try:
        if where == "same thread":
            got, elapsed = timed(lock.acquire, timeout=SHORT)
        else:
            got, elapsed = spawn(timed, lock.acquire, True, SHORT).result()
        assert lock.locked()
    finally:
        lock.release()
    assert got is False
    assert_timed_out(elapsed)
    assert not lock.locked()


@pytest.mark.parametrize("timeout", [-1, WAIT], ids=["untimed", "timed"])
def test_lock_blocked_acquire_succeeds_when_another_thread_releases(kit: Kit, spawn: Spawn, timeout: float) -> None:
    lock = kit.Lock()
    lock.acquire()
    waiter = spawn(timed, lock.acquire, True, timeout)
    try:
        blocked = waiter.blocked_for()
    finally:
        lock.release()
    got, elapsed = waiter.result()
    assert blocked
    assert got is True
    assert elapsed >= ABSENT
    assert lock.locked()  # the waiter holds it (and has exited)
    lock.release()  # a Lock may be released by any thread
    assert not lock.locked()


def test_lock_releasing_an_unlocked_lock_raises(kit: Kit) -> None:
    lock = kit.Lock()
    with pytest.raises(RuntimeError):
        lock.release()
    lock.acquire()
    lock.release()
    with pytest.raises(RuntimeError):
        lock.release()
    assert not lock.locked()


INVALID_ACQUIRES: list[tuple[tuple[Any, ...], dict[str, Any], type[Exception]]] = [
    ((False, 1), {}, ValueError),  # a non-blocking call with a timeout
    ((), {"blocking": False, "timeout": 0}, ValueError),
    ((), {"timeout": -2}, ValueError),
    ((), {"timeout": -0.5}, ValueError),
    ((), {"timeout": HUGE}, OverflowError),
    ((), {"timeout": None}, TypeError),
]


def test_lock_rejects_invalid_acquire_arguments(kit: Kit) -> None:
    for held in (False, True):
        lock = kit.Lock()
        if held:
            lock.acquire()
        for args, kwargs, error in INVALID_ACQUIRES:
            with pytest.raises(error):
                lock.acquire(*args, **kwargs)
            assert lock.locked() is held, (args, kwargs)
        if held:
            lock.release()


@pytest.mark.parametrize("kind", ["Lock", "RLock"])
@pytest.mark.parametrize("held", [False, True], ids=["free", "held-elsewhere"])
def test_lock_acquire_with_a_nan_timeout_raises_value_error(kit: Kit, spawn: Spawn, kind: str, held: bool) -> None:
    lock = getattr(kit, kind)()
    if not held:
        try:
            with pytest.raises(ValueError, match="NaN"):
                lock.acquire(timeout=math.nan)
        finally:
            release_if_held(lock)
        return
    holding, release_now = StdEvent(), StdEvent()

    def hold() -> None:
        with lock:
            holding.set()
            release_now.wait(WAIT)

    keeper = spawn(hold)
    assert holding.wait(WAIT)
    attempt = spawn(lock.acquire, timeout=math.nan)
    attempt.finished.wait(PROMPT)  # it should fail at once; if it waits instead, let it go
    release_now.set()
    keeper.result()
    with pytest.raises(ValueError, match="NaN"):
        attempt.result()


@pytest.mark.parametrize("kind", ["Lock", "RLock"])
def test_lock_acquire_takes_at_most_two_arguments(kit: Kit, kind: str) -> None:
    lock = getattr(kit, kind)()
    try:
        with pytest.raises(TypeError):
            lock.acquire(True, -1, None)
        assert try_hold_elsewhere(lock)  # the bad call took nothing
    finally:
        release_if_held(lock)


@pytest.mark.parametrize("kind", ["Lock", "RLock"])
def test_lock_release_takes_no_arguments_but_exit_takes_the_exception_triple(kit: Kit, kind: str) -> None:
    lock = getattr(kit, kind)()
    lock.acquire()
    try:
        with pytest.raises(TypeError):
            lock.release(None)
        assert not try_hold_elsewhere(lock)  # still held: the bad call released nothing
    finally:
        release_if_held(lock)
    assert lock.acquire() is True
    assert lock.__exit__(None, None, None) is None
    assert try_hold_elsewhere(lock)


def test_lock_may_be_released_by_a_thread_that_does_not_hold_it(kit: Kit, spawn: Spawn) -> None:
    lock = kit.Lock()
    lock.acquire()
    spawn(lock.release).result()
    assert not lock.locked()
    assert lock.acquire(False) is True
    lock.release()

    assert spawn(lock.acquire).result() is True
    assert lock.locked()
    lock.release()
    assert not lock.locked()

    # Released out of order, and one of them by another thread, while holding a third.
    first, second, third = kit.Lock(), kit.Lock(), kit.Lock()
    first.acquire()
    second.acquire()
    third.acquire()
    spawn(second.release).result()
    first.release()
    third.release()
    assert [lock.locked() for lock in (first, second, third)] == [False, False, False]
    for lock in (first, second, third):
        assert acquire_and_release(lock, WAIT)


# -- RLock ---------------------------------------------------------------------------------------


def test_rlock_is_reentrant(kit: Kit) -> None:
    rlock = kit.RLock()
    assert rlock.acquire() is True
    assert rlock.acquire() is True
    assert rlock.acquire(False) is True
    assert rlock.acquire(timeout=SHORT) is True  # owned: no wait at all
    assert rlock.acquire(True, 0) is True
    for _ in range(4):
        rlock.release()
        assert not try_hold_elsewhere(rlock)
    rlock.release()
    assert try_hold_elsewhere(rlock)
    with pytest.raises(RuntimeError):
        rlock.release()

    with rlock as entered:
        assert entered is True
        with rlock:
            assert not try_hold_elsewhere(rlock)
        assert not try_hold_elsewhere(rlock)
    assert try_hold_elsewhere(rlock)


def test_rlock_release_by_a_non_owner_raises(kit: Kit, spawn: Spawn) -> None:
    rlock = kit.RLock()
    rlock.acquire()
    try:
        with pytest.raises(RuntimeError):
            spawn(rlock.release).result()
        assert spawn(try_hold, rlock).result() is False  # still ours
    finally:
        rlock.release()
    assert spawn(try_hold, rlock).result() is True


def test_rlock_release_of_an_unacquired_rlock_raises(kit: Kit) -> None:
    rlock = kit.RLock()
    with pytest.raises(RuntimeError):
        rlock.release()
    rlock.acquire()
    rlock.release()
    with pytest.raises(RuntimeError):
        rlock.release()


def test_rlock_another_thread_cannot_acquire_while_held(kit: Kit, spawn: Spawn) -> None:
    rlock = kit.RLock()
    rlock.acquire()
    try:
        assert spawn(rlock.acquire, False).result() is False
        got, elapsed = spawn(timed, rlock.acquire, True, 0).result()
        assert got is False
        assert_prompt(elapsed)
        got, elapsed = spawn(timed, rlock.acquire, timeout=SHORT).result()
        assert got is False
        assert_timed_out(elapsed)
    finally:
        rlock.release()


@pytest.mark.parametrize("timeout", [-1, WAIT], ids=["untimed", "timed"])
def test_rlock_blocked_acquire_succeeds_once_the_owner_releases_fully(kit: Kit, spawn: Spawn, timeout: float) -> None:
    rlock = kit.RLock()
    rlock.acquire()
    rlock.acquire()
    waiter = spawn(acquire_and_release, rlock, timeout)
    try:
        blocked_while_held = waiter.blocked_for()
        rlock.release()  # held once still
        blocked_while_held_once = waiter.blocked_for()
    finally:
        release_fully(rlock)
    assert waiter.result() is True
    assert blocked_while_held
    assert blocked_while_held_once


def test_rlock_rejects_invalid_acquire_arguments(kit: Kit) -> None:
    for held in (False, True):
        rlock = kit.RLock()
        if held:
            rlock.acquire()
        for args, kwargs, error in INVALID_ACQUIRES:
            with pytest.raises(error):
                rlock.acquire(*args, **kwargs)
        if held:
            rlock.release()  # the failed calls did not count as acquisitions
        assert try_hold_elsewhere(rlock), held


# -- Condition -----------------------------------------------------------------------------------


CONDITION_LOCKS = ["default", "Lock", "RLock"]


@pytest.fixture(params=CONDITION_LOCKS)
def make_condition(kit: Kit, request: pytest.FixtureRequest) -> Callable[[], Any]:
    """A Condition over its default RLock, an explicit Lock, or an explicit RLock."""
    if request.param == "default":
        return lambda: kit.Condition()
    lock_kind = getattr(kit, request.param)
    return lambda: kit.Condition(lock_kind())


def park(cond: Any, spawn: Spawn, count: int, timeout: float | None, woken: queue.Queue[int]) -> list[Helper]:
    """Start ``count`` threads waiting on ``cond``; returns once all of them are inside ``wait``.

    Each announces itself while holding the lock, and ``wait`` registers before it releases the
    lock: so once we get the lock after all the announcements, every one of them is waiting.
    """
    ready: queue.Queue[int] = StdQueue()

    def waiter(number: int) -> bool:
        with cond:
            ready.put(number)
            notified = bool(cond.wait(timeout))
            woken.put(number)
            return notified

    helpers = [spawn(waiter, number) for number in range(count)]
    for _ in range(count):
        ready.get(timeout=WAIT)
    with cond:
        pass
    return helpers


@pytest.mark.parametrize("timeout", [None, WAIT], ids=["untimed", "timed"])
def test_condition_notify_hands_off_to_a_waiting_thread(
    make_condition: Callable[[], Any], spawn: Spawn, timeout: float | None
) -> None:
    cond = make_condition()
    box: list[str] = []
    ready = StdEvent()

    def consume() -> tuple[bool, list[str]]:
        with cond:
            ready.set()
            notified = cond.wait(timeout)
            return notified, list(box)

    consumer = spawn(consume)
    assert ready.wait(WAIT)
    with cond as entered:  # the consumer is inside wait() once we hold the lock
        assert entered is True
        box.append("item")
        cond.notify()
    assert consumer.result() == (True, ["item"])


def test_condition_wait_returns_true_when_notified_by_another_thread(
    make_condition: Callable[[], Any], spawn: Spawn
) -> None:
    cond = make_condition()
    box: list[str] = []

    def produce() -> None:
        with cond:
            box.append("item")
            cond.notify()

    with cond:
        producer = spawn(produce)  # it cannot notify before we wait: we hold the lock
        notified = cond.wait(WAIT)
        assert box == ["item"]
    producer.result()
    assert notified is True


def test_condition_wait_times_out_and_holds_the_lock_again(make_condition: Callable[[], Any], spawn: Spawn) -> None:
    cond = make_condition()
    with cond:
        notified, elapsed = timed(cond.wait, SHORT)
        assert spawn(try_hold, cond).result() is False  # held again, by us
        at_once = [timed(cond.wait, timeout) for timeout in (0, -1, -0.5, math.nan)]
        assert spawn(try_hold, cond).result() is False
    assert notified is False
    assert_timed_out(elapsed)
    assert [notified for notified, _ in at_once] == [False, False, False, False]
    for _, elapsed in at_once:
        assert_prompt(elapsed)
    assert spawn(try_hold, cond).result() is True

    # The timed-out waits left nothing behind that could absorb a later notify.
    woken: queue.Queue[int] = StdQueue()
    (waiter,) = park(cond, spawn, 1, WAIT, woken)
    with cond:
        cond.notify()
    assert waiter.result() is True
    assert woken.get(timeout=WAIT) == 0


@pytest.mark.parametrize("timeout", [None, WAIT], ids=["untimed", "timed"])
def test_condition_notify_n_wakes_at_most_n(
    make_condition: Callable[[], Any], spawn: Spawn, timeout: float | None
) -> None:
    cond = make_condition()
    with cond:  # nobody waits: nothing to do
        cond.notify()
        cond.notify(5)
        cond.notify_all()
    woken: queue.Queue[int] = StdQueue()
    waiters = park(cond, spawn, 4, timeout, woken)
    arrived: list[int] = []
    still_waiting: list[int] = []
    try:
        for n in (0, 1, 2):
            with cond:
                cond.notify(n)
            arrived.append(len({woken.get(timeout=WAIT) for _ in range(n)}))
            with cond:
                still_waiting.append(len(cond._waiters))
        no_more = nothing_arrives(woken)
    finally:
        with cond:
            cond.notify_all()
    results = [waiter.result() for waiter in waiters]
    assert arrived == [0, 1, 2]
    assert still_waiting == [4, 3, 1]
    assert no_more
    assert results == [True, True, True, True]


@pytest.mark.parametrize("timeout", [None, WAIT], ids=["untimed", "timed"])
def test_condition_notify_all_wakes_every_waiter(
    make_condition: Callable[[], Any], spawn: Spawn, timeout: float | None
) -> None:
    cond = make_condition()
    woken: queue.Queue[int] = StdQueue()
    waiters = park(cond, spawn, 3, timeout, woken)
    with cond:
        cond.notify_all()
        assert len(cond._waiters) == 0
    assert [waiter.result() for waiter in waiters] == [True, True, True]
    assert sorted(woken.get(timeout=WAIT) for _ in range(3)) == [0, 1, 2]


def test_condition_wait_for_returns_the_predicate_value(make_condition: Callable[[], Any]) -> None:
    cond = make_condition()
    calls: list[int] = []

    def falsy() -> list[int]:
        calls.append(1)
        return []

    with cond:
        assert cond.wait_for(lambda: "ready") == "ready"  # already true: no wait
        assert cond.wait_for(lambda: 42, timeout=0) == 42
        assert cond.wait_for(lambda: 0, timeout=0) == 0
        assert cond.wait_for(lambda: None, timeout=-1) is None
        value, elapsed = timed(cond.wait_for, falsy, SHORT)
    assert value == []
    assert isinstance(value, list)
    assert len(calls) >= 2  # once before waiting, once after the wait timed out
    assert_timed_out(elapsed)


@pytest.mark.parametrize("timeout", [None, WAIT], ids=["untimed", "timed"])
def test_condition_wait_for_returns_once_another_thread_makes_the_predicate_true(
    make_condition: Callable[[], Any], spawn: Spawn, timeout: float | None
) -> None:
    cond = make_condition()
    state = [0]
    checked: queue.Queue[int] = StdQueue()

    def predicate() -> int:
        checked.put(state[0])  # called with the lock held
        return state[0] if state[0] >= 2 else 0

    def consume() -> int:
        with cond:
            return int(cond.wait_for(predicate, timeout))

    consumer = spawn(consume)
    try:
        assert checked.get(timeout=WAIT) == 0  # the first check; the consumer is about to wait
        with cond:  # ... and is waiting once we hold the lock
            state[0] = 1
            cond.notify()
        assert checked.get(timeout=WAIT) == 1  # woken, not satisfied: it waits again
        with cond:
            state[0] = 2
            cond.notify()
        assert checked.get(timeout=WAIT) == 2
    finally:
        with cond:
            state[0] = 2
            cond.notify_all()
    assert consumer.result() == 2


def test_condition_requires_its_lock_to_be_held(make_condition: Callable[[], Any]) -> None:
    cond = make_condition()
    with pytest.raises(RuntimeError):
        cond.wait()
    with pytest.raises(RuntimeError):
        cond.wait(SHORT)
    with pytest.raises(RuntimeError):
        cond.wait_for(lambda: False, timeout=SHORT)
    with pytest.raises(RuntimeError):
        cond.notify()
    with pytest.raises(RuntimeError):
        cond.notify_all()
    assert try_hold(cond)  # nothing was left held


@pytest.mark.parametrize("explicit", [False, True], ids=["default", "RLock"])
def test_condition_over_an_rlock_held_by_another_thread_refuses_wait_and_notify(
    kit: Kit, spawn: Spawn, explicit: bool
) -> None:
    cond = kit.Condition(kit.RLock()) if explicit else kit.Condition()
    cond.acquire()
    try:
        with pytest.raises(RuntimeError):
            spawn(cond.wait, SHORT).result()
        with pytest.raises(RuntimeError):
            spawn(cond.notify).result()
        with pytest.raises(RuntimeError):
            spawn(cond.notify_all).result()
    finally:
        cond.release()


@pytest.mark.parametrize("explicit", [False, True], ids=["default", "RLock"])
def test_condition_wait_releases_a_recursively_held_rlock_fully_and_restores_it(
    kit: Kit, spawn: Spawn, explicit: bool
) -> None:
    cond = kit.Condition(kit.RLock()) if explicit else kit.Condition()
    cond.acquire()
    cond.acquire()
    try:
        producer = spawn(notify_under_lock, cond)
        notified = cond.wait(WAIT)  # the producer can only notify if this released both levels
        producer_result = producer.result()
        cond.release()
        held_once_more = not spawn(try_hold, cond).result()
    finally:
        release_fully(cond)
    assert notified is True
    assert producer_result is True
    assert held_once_more
    assert spawn(try_hold, cond).result() is True


def test_condition_acquire_and_release_delegate_to_the_lock(kit: Kit) -> None:
    lock = kit.Lock()
    cond = kit.Condition(lock)
    assert cond.acquire() is True
    assert lock.locked()
    assert cond.acquire(False) is False
    cond.release()
    assert not lock.locked()
    assert cond.acquire(True, SHORT) is True
    cond.release()


# -- Semaphore -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["Semaphore", "BoundedSemaphore"])
def test_semaphore_initial_value(kit: Kit, kind: str) -> None:
    make = getattr(kit, kind)
    default = make()
    assert default.acquire(False) is True
    assert default.acquire(False) is False
    default.release()

    sem = make(3)
    assert [sem.acquire(blocking=False) for _ in range(4)] == [True, True, True, False]
    sem.release(3)

    empty = make(value=0)
    assert empty.acquire(False) is False
    got, elapsed = timed(empty.acquire, timeout=0)
    assert got is False
    assert_prompt(elapsed)

    with sem as entered:
        assert entered is True
    assert [sem.acquire(False) for _ in range(4)] == [True, True, True, False]


@pytest.mark.parametrize("kind", ["Semaphore", "BoundedSemaphore"])
def test_semaphore_acquire_times_out(kit: Kit, kind: str) -> None:
    sem = getattr(kit, kind)(0)
    got, elapsed = timed(sem.acquire, True, SHORT)
    assert got is False
    assert_timed_out(elapsed)


@pytest.mark.parametrize("timeout", [None, WAIT], ids=["untimed", "timed"])
def test_semaphore_blocking_acquire_waits_for_a_release(kit: Kit, spawn: Spawn, timeout: float | None) -> None:
    sem = kit.Semaphore(1)
    assert sem.acquire() is True
    waiter = spawn(timed, sem.acquire, timeout=timeout)
    try:
        blocked = waiter.blocked_for()
    finally:
        sem.release()
    got, elapsed = waiter.result()
    assert blocked
    assert got is True
    assert elapsed >= ABSENT
    assert sem.acquire(False) is False  # the waiter took the one release


@pytest.mark.parametrize("timeout", [None, WAIT], ids=["untimed", "timed"])
def test_semaphore_release_n_wakes_n_waiters(kit: Kit, spawn: Spawn, timeout: float | None) -> None:
    sem = kit.Semaphore(0)
    acquired: queue.Queue[int] = StdQueue()

    def take(number: int) -> bool:
        got = bool(sem.acquire(timeout=timeout))
        acquired.put(number)
        return got

    takers = [spawn(take, number) for number in range(3)]
    try:
        none_before = nothing_arrives(acquired)
        sem.release(2)
        first = {acquired.get(timeout=WAIT) for _ in range(2)}
        no_third = nothing_arrives(acquired)
    finally:
        sem.release()
    last = acquired.get(timeout=WAIT)
    results = [taker.result() for taker in takers]
    assert none_before
    assert len(first) == 2
    assert no_third
    assert {*first, last} == {0, 1, 2}
    assert results == [True, True, True]
    assert sem.acquire(False) is False


def test_semaphore_rejects_invalid_arguments(kit: Kit) -> None:
    with pytest.raises(ValueError, match="initial value"):
        kit.Semaphore(-1)
    with pytest.raises(ValueError, match="initial value"):
        kit.BoundedSemaphore(-1)
    sem = kit.Semaphore(0)
    with pytest.raises(ValueError, match="timeout"):
        sem.acquire(False, 1)
    with pytest.raises(ValueError, match="one or more"):
        sem.release(0)
    assert sem.acquire(False) is False


def test_semaphore_may_be_released_above_its_initial_value(kit: Kit) -> None:
    sem = kit.Semaphore(1)
    sem.release()
    sem.release(2)
    assert [sem.acquire(False) for _ in range(5)] == [True, True, True, True, False]


def test_bounded_semaphore_refuses_a_release_beyond_its_initial_value(kit: Kit) -> None:
    sem = kit.BoundedSemaphore(2)
    with pytest.raises(ValueError, match="too many"):
        sem.release()
    assert sem.acquire(False) is True
    with pytest.raises(ValueError, match="too many"):
        sem.release(2)
    sem.release()  # back to 2: allowed
    with pytest.raises(ValueError, match="too many"):
        sem.release()
    assert [sem.acquire(False) for _ in range(3)] == [True, True, False]


# -- Event ---------------------------------------------------------------------------------------


def test_event_set_clear_and_is_set(kit: Kit) -> None:
    event = kit.Event()
    assert event.is_set() is False
    event.set()
    assert event.is_set() is True
    event.set()
    assert event.is_set() is True
    assert event.wait() is True
    assert event.wait(0) is True
    assert event.wait(SHORT) is True
    event.clear()
    assert event.is_set() is False
    event.clear()
    assert event.is_set() is False


def test_event_wait_times_out_when_not_set(kit: Kit) -> None:
    event = kit.Event()
    got, elapsed = timed(event.wait, 0)
    assert got is False
    assert_prompt(elapsed)
    event.set()
    event.clear()
    got, elapsed = timed(event.wait, timeout=SHORT)
    assert got is False
    assert_timed_out(elapsed)


def test_event_wait_returns_true_when_another_thread_sets_it(kit: Kit, spawn: Spawn) -> None:
    event = kit.Event()
    go = StdEvent()

    def setter() -> None:
        assert go.wait(WAIT)
        event.set()

    helper = spawn(setter)
    go.set()
    got = event.wait(WAIT)
    helper.result()
    assert got is True


@pytest.mark.parametrize("timeout", [None, WAIT], ids=["untimed", "timed"])
def test_event_set_wakes_every_waiter(kit: Kit, spawn: Spawn, timeout: float | None) -> None:
    event = kit.Event()
    waiters = [spawn(event.wait, timeout) for _ in range(3)]
    try:
        blocked = waiters[0].blocked_for()
    finally:
        event.set()
    assert blocked
    assert [waiter.result() for waiter in waiters] == [True, True, True]


# -- Barrier -------------------------------------------------------------------------------------


def test_barrier_parties_and_n_waiting(kit: Kit, spawn: Spawn) -> None:
    barrier = kit.Barrier(3)
    assert barrier.parties == 3
    assert barrier.n_waiting == 0
    assert barrier.broken is False
    first = spawn(barrier.wait, WAIT)
    reached_one = eventually(lambda: barrier.n_waiting == 1)
    second = spawn(barrier.wait, WAIT)
    reached_two = eventually(lambda: barrier.n_waiting == 2)
    index = barrier.wait(WAIT)
    indices = sorted([first.result(), second.result(), index])
    assert reached_one
    assert reached_two
    assert indices == [0, 1, 2]
    assert barrier.n_waiting == 0
    assert barrier.broken is False


def test_barrier_returns_distinct_indices_and_runs_the_action_once_per_generation(kit: Kit, spawn: Spawn) -> None:
    runs: list[str] = []
    barrier = kit.Barrier(3, action=lambda: runs.append(threading.current_thread().name))

    def two_rounds() -> tuple[int, int]:
        return barrier.wait(WAIT), barrier.wait(WAIT)

    helpers = [spawn(two_rounds) for _ in range(3)]
    rounds = [helper.result() for helper in helpers]
    assert sorted(first for first, _ in rounds) == [0, 1, 2]
    assert sorted(second for _, second in rounds) == [0, 1, 2]
    assert len(runs) == 2
    assert barrier.broken is False


def test_barrier_timeout_breaks_it(kit: Kit, spawn: Spawn) -> None:
    barrier = kit.Barrier(3)
    other = spawn(barrier.wait)  # untimed: the barrier's breaking releases it
    elapsed = timed_raise(threading.BrokenBarrierError, barrier.wait, SHORT)
    assert_timed_out(elapsed)
    with pytest.raises(threading.BrokenBarrierError):
        other.result()
    assert barrier.broken is True
    assert barrier.n_waiting == 0
    elapsed = timed_raise(threading.BrokenBarrierError, barrier.wait, WAIT)
    assert_prompt(elapsed)


def test_barrier_default_timeout_breaks_it(kit: Kit) -> None:
    barrier = kit.Barrier(2, timeout=SHORT)
    elapsed = timed_raise(threading.BrokenBarrierError, barrier.wait)
    assert_timed_out(elapsed)
    assert barrier.broken is True


def test_barrier_abort_breaks_it_and_reset_repairs_it(kit: Kit, spawn: Spawn) -> None:
    barrier = kit.Barrier(2)
    waiter = spawn(barrier.wait)  # untimed: abort releases it, whether it waits already or not
    barrier.abort()
    with pytest.raises(threading.BrokenBarrierError):
        waiter.result()
    assert barrier.broken is True
    with pytest.raises(threading.BrokenBarrierError):
        barrier.wait(WAIT)
    barrier.reset()
    assert barrier.broken is False
    assert barrier.n_waiting == 0
    partner = spawn(barrier.wait, WAIT)
    assert sorted([barrier.wait(WAIT), partner.result()]) == [0, 1]


def test_barrier_reset_breaks_the_current_waiters_but_not_the_barrier(kit: Kit, spawn: Spawn) -> None:
    barrier = kit.Barrier(2)
    waiter = spawn(barrier.wait, WAIT)
    try:
        waiting = eventually(lambda: barrier.n_waiting == 1)
    finally:
        barrier.reset()
    assert waiting
    with pytest.raises(threading.BrokenBarrierError):
        waiter.result()
    assert barrier.broken is False
    partner = spawn(barrier.wait, WAIT)
    assert sorted([barrier.wait(WAIT), partner.result()]) == [0, 1]


def test_barrier_action_failure_breaks_it(kit: Kit, spawn: Spawn) -> None:
    def fail() -> None:
        raise ZeroDivisionError("action")

    barrier = kit.Barrier(2, action=fail)
    helpers = [spawn(barrier.wait, WAIT) for _ in range(2)]
    errors: list[type[BaseException]] = []
    for helper in helpers:
        try:
            helper.result()
        except (ZeroDivisionError, threading.BrokenBarrierError) as exc:
            errors.append(type(exc))
    assert sorted(error.__name__ for error in errors) == ["BrokenBarrierError", "ZeroDivisionError"]
    assert barrier.broken is True


# -- Queue ---------------------------------------------------------------------------------------


def test_queue_is_fifo_and_reports_its_size(kit: Kit) -> None:
    q = kit.Queue()
    assert q.empty() is True
    assert q.full() is False
    assert q.qsize() == 0
    for item in range(5):
        q.put(item)
    q.put_nowait(5)
    q.put("six", block=False)
    q.put(7, timeout=SHORT)
    assert q.qsize() == 8
    assert q.empty() is False
    assert q.full() is False  # maxsize 0: never full
    got = [q.get(), q.get(False), q.get_nowait(), q.get(timeout=SHORT), q.get(True, SHORT)]
    got += [q.get() for _ in range(3)]
    assert got == [0, 1, 2, 3, 4, 5, "six", 7]
    assert q.empty()


def test_queue_with_maxsize_becomes_full(kit: Kit) -> None:
    q = kit.Queue(maxsize=2)
    q.put("a")
    assert q.full() is False
    q.put("b")
    assert q.full() is True
    assert q.qsize() == 2
    with pytest.raises(queue.Full):
        q.put("c", block=False)
    with pytest.raises(queue.Full):
        q.put_nowait("c")
    elapsed = timed_raise(queue.Full, q.put, "c", timeout=SHORT)
    assert_timed_out(elapsed)
    elapsed = timed_raise(queue.Full, q.put, "c", True, 0)
    assert_prompt(elapsed)
    assert [q.get(), q.get()] == ["a", "b"]


@pytest.mark.parametrize("timeout", [None, WAIT], ids=["untimed", "timed"])
def test_queue_put_blocks_until_a_get_frees_space(kit: Kit, spawn: Spawn, timeout: float | None) -> None:
    q = kit.Queue(1)
    q.put("first")
    putter = spawn(timed, q.put, "second", timeout=timeout)
    try:
        blocked = putter.blocked_for()
        assert q.qsize() == 1
    finally:
        first = q.get(timeout=WAIT)
    _, elapsed = putter.result()
    assert blocked
    assert elapsed >= ABSENT
    assert first == "first"
    assert q.get(timeout=WAIT) == "second"


def test_queue_get_from_an_empty_queue_raises_empty(kit: Kit) -> None:
    q = kit.Queue()
    with pytest.raises(queue.Empty):
        q.get(block=False)
    with pytest.raises(queue.Empty):
        q.get_nowait()
    elapsed = timed_raise(queue.Empty, q.get, timeout=SHORT)
    assert_timed_out(elapsed)
    elapsed = timed_raise(queue.Empty, q.get, True, 0)
    assert_prompt(elapsed)


@pytest.mark.parametrize("timeout", [None, WAIT], ids=["untimed", "timed"])
def test_queue_get_blocks_until_another_thread_puts(kit: Kit, spawn: Spawn, timeout: float | None) -> None:
    q = kit.Queue()
    getter = spawn(q.get, timeout=timeout)
    try:
        blocked = getter.blocked_for()
    finally:
        q.put("item")
    assert getter.result() == "item"
    assert blocked
    assert q.empty()


@pytest.mark.parametrize("kit", ["instrumented", "instrumented-in-session"], indirect=True)
def test_simplequeue_put_is_reentrant_as_a_signal_handler_needs(kit: Kit, spawn: Spawn) -> None:
    # `queue.SimpleQueue.put` is documented reentrant: a signal handler may put while its own
    # thread is inside the queue's get or put, holding the queue's lock. A helper thread plays both
    # parts: it holds the lock (where an interrupted get is) and puts, as its handler would.
    q = primitives.SimpleQueue()
    getter = spawn(q.get)
    assert getter.blocked_for()

    def put_inside_its_own_operation(item: str) -> None:
        with q.mutex:
            q.put(item)
            q.put_nowait(item.upper())

    spawn(put_inside_its_own_operation, "from the handler").result()
    assert getter.result() == "from the handler"  # woken by the put that did not take the lock
    assert q.get(timeout=WAIT) == "FROM THE HANDLER"
    assert q.empty()


def test_queue_rejects_a_negative_timeout(kit: Kit) -> None:
    q = kit.Queue(1)
    with pytest.raises(ValueError, match="non-negative"):
        q.get(timeout=-1)
    q.put(1)
    with pytest.raises(ValueError, match="non-negative"):
        q.put(2, timeout=-1)


def test_queue_join_returns_once_every_task_is_done(kit: Kit, spawn: Spawn) -> None:
    q = kit.Queue()
    assert spawn(q.join).result() is None  # no unfinished task: at once
    q.put("a")
    q.put("b")
    joiner = spawn(q.join)
    try:
        assert q.get(timeout=WAIT) == "a"
        q.task_done()
        blocked_with_one_left = joiner.blocked_for()
        assert q.get(timeout=WAIT) == "b"
    finally:
        q.task_done()
    assert joiner.result() is None
    assert blocked_with_one_left
    with pytest.raises(ValueError, match="too many"):
        q.task_done()


def test_queue_task_done_too_many_times_raises(kit: Kit) -> None:
    q = kit.Queue()
    with pytest.raises(ValueError, match="too many"):
        q.task_done()
    q.put(1)
    q.get()
    q.task_done()
    with pytest.raises(ValueError, match="too many"):
        q.task_done()


needs_shutdown = pytest.mark.skipif(sys.version_info < (3, 13), reason="Queue.shutdown is new in Python 3.13")
ShutDown: type[BaseException] = getattr(queue, "ShutDown", Exception)


@needs_shutdown
def test_queue_shutdown_lets_the_items_out_then_refuses(kit: Kit) -> None:
    q = kit.Queue()
    q.put(1)
    q.put(2)
    assert q.is_shutdown is False
    q.shutdown()
    assert q.is_shutdown is True
    with pytest.raises(ShutDown):
        q.put(3)
    assert [q.get(), q.get(timeout=SHORT)] == [1, 2]
    with pytest.raises(ShutDown):
        q.get()
    with pytest.raises(ShutDown):
        q.get(timeout=WAIT)
    with pytest.raises(ShutDown):
        q.get_nowait()


@needs_shutdown
@pytest.mark.parametrize("timeout", [None, WAIT], ids=["untimed", "timed"])
def test_queue_shutdown_wakes_blocked_getters_and_putters(kit: Kit, spawn: Spawn, timeout: float | None) -> None:
    empty = kit.Queue()
    full = kit.Queue(1)
    full.put("x")
    getter = spawn(empty.get, timeout=timeout)
    putter = spawn(full.put, "y", timeout=timeout)
    try:
        blocked = getter.blocked_for() and putter.blocked_for(0)
    finally:
        empty.shutdown()
        full.shutdown()
    with pytest.raises(ShutDown):
        getter.result()
    with pytest.raises(ShutDown):
        putter.result()
    assert blocked
    assert full.get(timeout=WAIT) == "x"


@needs_shutdown
def test_queue_immediate_shutdown_drops_the_items_and_releases_join(kit: Kit, spawn: Spawn) -> None:
    q = kit.Queue()
    q.put(1)
    q.put(2)
    joiner = spawn(q.join)
    try:
        blocked = joiner.blocked_for()
    finally:
        q.shutdown(immediate=True)
    assert joiner.result() is None
    assert blocked
    assert q.empty()
    with pytest.raises(ShutDown):
        q.get(timeout=WAIT)
    q.join()  # nothing unfinished any more


# -- timeouts the platform cannot represent ------------------------------------------------------


BEYOND_TIMEOUT_MAX = pytest.mark.parametrize("timeout", [HUGE, math.inf], ids=["2*TIMEOUT_MAX", "inf"])


@BEYOND_TIMEOUT_MAX
def test_condition_wait_with_a_timeout_beyond_timeout_max_raises_overflow_error(
    kit: Kit, spawn: Spawn, timeout: float
) -> None:
    cond = kit.Condition()
    ready = StdEvent()

    def wait() -> Any:
        with cond:
            ready.set()
            return cond.wait(timeout)

    waiter = spawn(wait)
    assert ready.wait(WAIT)
    with cond:  # the waiter is inside wait() once we hold the lock
        pass
    deadline = time.monotonic() + WAIT
    while not waiter.finished.wait(PROMPT) and time.monotonic() < deadline:
        with cond:  # it should have failed at once; if it waits instead, let it go
            cond.notify_all()
    with pytest.raises(OverflowError):
        waiter.result()


@BEYOND_TIMEOUT_MAX
def test_event_wait_with_a_timeout_beyond_timeout_max_raises_overflow_error(
    kit: Kit, spawn: Spawn, timeout: float
) -> None:
    event = kit.Event()
    waiter = spawn(event.wait, timeout)
    deadline = time.monotonic() + WAIT
    while not waiter.finished.wait(PROMPT) and time.monotonic() < deadline:
        # It should have failed at once; if it waits instead, let it go without setting the
        # event (a set event would be a different call: wait() would return True at once).
        with event._cond:
            event._cond.notify_all()
    with pytest.raises(OverflowError):
        waiter.result()


def _trial() -> primitives.Session:
    """A trial's session, made the current one (the caller deactivates it)."""
    graph = WaitGraph(scope=Scope(files=[__file__]), main=threading.get_ident(), preexisting=set())
    session = primitives.Session(graph=graph)
    primitives.activate(session)
    return session


@contextlib.contextmanager
def _trial_switching_often() -> Iterator[None]:
    """A trial, with the interpreter switching threads every microsecond."""
    _trial()
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(interval)
        primitives.deactivate()


@pytest.mark.timeout(60)
def test_a_semaphore_shared_by_many_threads_never_fails_its_users_for_stress_own_bookkeeping() -> None:
    # The instrumented Semaphore remembers which acquires are not released yet (a deadlock's
    # explanation names them); that bookkeeping, done by every thread at once, must never raise
    # into the code under test, nor lose count.
    errors: list[BaseException] = []
    with _trial_switching_often():
        seats = primitives.Semaphore(3)

        def diner() -> None:
            try:
                for _ in range(3000):
                    with seats:
                        pass
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=diner) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    assert errors == []
    assert seats._taken == []


@pytest.mark.timeout(60)
def test_plain_locks_another_thread_keeps_releasing_never_stall_their_taker() -> None:
    # Each thread's list of held locks (for lock order) is changed by any thread that releases a
    # plain Lock it holds. A linked chain through the locks looped when such a release raced with
    # the holder's next acquire: the holder spun for ever in its next nested acquire.
    done = threading.Event()
    with _trial_switching_often():
        a, b, c = primitives.Lock(), primitives.Lock(), primitives.Lock()

        def taker() -> None:
            for i in range(5000):
                first, second = (a, b) if i % 2 else (b, a)
                first.acquire()
                second.acquire()
                with c:
                    pass

        def releaser() -> None:
            while not done.is_set():
                for lock in (a, b):
                    if lock.locked():  # only this thread releases them
                        lock.release()

        taking = threading.Thread(target=taker, daemon=True)
        releasing = threading.Thread(target=releaser, daemon=True)
        taking.start()
        releasing.start()
        taking.join(30)
        stalled = taking.is_alive()
        done.set()
        releasing.join(30)
    assert not stalled


def test_a_lock_an_earlier_trial_left_held_takes_no_part_in_the_next_trials_lock_order() -> None:
    # The body's thread runs every trial of a worker: a lock one trial's body left held (dropped
    # with the trial) made lock-order edges in every later trial, of other variants too, and each
    # nested acquire walked all of them.
    _trial()
    try:
        primitives.Lock().acquire()  # left held
    finally:
        primitives.deactivate()
    session = _trial()
    try:
        outer, inner = primitives.Lock(), primitives.Lock()
        with outer, inner:
            pass
    finally:
        primitives.deactivate()
    assert [(edge["held"]["line"], edge["acquiring"]["line"]) for edge in session.new_order] == [
        (outer._created[1], inner._created[1])
    ]


@pytest.mark.timeout(30)
def test_a_wait_for_a_lock_an_earlier_trial_left_held_says_so() -> None:
    # A lock that outlives its trial (kept in a module) and was never released: the thread that
    # waits for it in a later trial waits for that trial, not for itself at its current line.
    _trial()
    try:
        kept = primitives.RLock()  # only its owner may release it: the wait is a deadlock at once
        kept.acquire()
    finally:
        primitives.deactivate()
    _trial()
    try:
        with pytest.raises(DeadlockError) as raised:
            kept.acquire()
    finally:
        primitives.deactivate()
    assert "held by MainThread in an earlier trial, which never released it" in str(raised.value)


@pytest.mark.timeout(60, method="thread")  # a signal timer's handler could end any wait: no deadlock then
def test_once_a_deadlock_is_confirmed_the_trial_threads_asking_for_its_locks_again_unwind() -> None:
    # The trial is over at the deadlock: the thread that got its lock when the other unwound does
    # not run the rest of its work, but a thread from before the trial (a module pool's worker)
    # still takes the lock, and a lock the deadlock does not wait on is unaffected.
    graph = WaitGraph(
        scope=Scope(files=[__file__]),
        main=threading.get_ident(),
        preexisting={t.ident for t in threading.enumerate() if t.ident is not None},
    )
    primitives.activate(primitives.Session(graph=graph))
    # RLocks: only their holders may release them, so their cycle is a deadlock whatever the test
    # runner's own threads do.
    a, b, outside = primitives.RLock(), primitives.RLock(), primitives.Lock()
    both_hold_one = threading.Barrier(2)
    ended: dict[str, str] = {}
    rounds = {"a_then_b": 0, "b_then_a": 0}

    def actor(first: primitives.RLock, second: primitives.RLock, name: str) -> None:
        try:
            with first:
                both_hold_one.wait(10)
                with second:
                    pass
            for _ in range(1000):
                with first, second:
                    rounds[name] += 1
            ended[name] = "finished"
        except DeadlockError:
            ended[name] = "unwound"
        if name == "a_then_b":
            with outside:
                ended["outside"] = "taken"

    go_on = threading.Event()
    before: list[str] = []

    def earlier_thread() -> None:
        go_on.wait(30)
        with a:
            before.append("took a")

    actors = [
        threading.Thread(target=actor, args=(a, b, "a_then_b"), daemon=True),
        threading.Thread(target=actor, args=(b, a, "b_then_a"), daemon=True),
    ]
    try:
        for thread in actors:
            thread.start()
        graph.set_joining(True)
        for thread in actors:
            thread.join(30)
        graph.set_joining(False)
        # As if it had been running before the trial: the deadlock is not its to unwind.
        earlier = threading.Thread(target=earlier_thread, daemon=True)
        earlier.start()
        assert earlier.ident is not None
        graph.preexisting.add(earlier.ident)
        go_on.set()
        earlier.join(30)
    finally:
        primitives.deactivate()
    assert graph.finding is not None
    assert ended == {"a_then_b": "unwound", "b_then_a": "unwound", "outside": "taken"}
    assert rounds == {"a_then_b": 0, "b_then_a": 0}
    assert before == ["took a"]


def test_a_timed_wait_waits_out_its_timeout_in_one_slice() -> None:
    # A timed wait is never judged a deadlock; cut into the short slices an untimed wait starts
    # with, each ending up to the kernel's timer slack late, a 200 µs timeout lasted 300 µs.
    calls: list[float] = []

    def never(blocking: bool = True, timeout: float = -1) -> bool:
        calls.append(timeout if blocking else 0.0)
        time.sleep(max(timeout, 0.0) if blocking else 0.0)
        return False

    lock = primitives.Lock()
    _trial()
    try:
        got = primitives._block(never, 0.0002, Waiting(lock, lock=lock, timed=True))
    finally:
        primitives.deactivate()
    assert got is False
    assert len(calls) == 2, calls  # one wait for the whole timeout, then one last try
    assert calls[0] == pytest.approx(0.0002, abs=5e-5)
    assert calls[1] == 0.0

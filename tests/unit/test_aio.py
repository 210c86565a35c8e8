"""Coroutine trials (`harness.detect.aio`): the loop's perturbation, its deadlock finding, and what a
coroutine variant's trial records."""

from __future__ import annotations

import _thread
import asyncio
import contextlib
import dataclasses
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from time import sleep as _sleep_by_name

import pytest

from harness import Knob, Perturbation, Scenario, Trial
from harness.controlled.schedule import Schedule
from harness.controlled.session import Control
from harness.detect import aio
from harness.detect.instrument import Instrumenter
from harness.detect.thread_dump import blocked_at, parse_dump
from harness.engine.runner import TrialRun, run_trial
from harness.perturb import pause
from harness.perturb.plan import Plan, make_plan
from harness.perturb.preempt import Preemptor
from harness.registry import Registry
from harness.results.outcome import Outcome
from harness.scope import Scope

HERE = str(Path(__file__).resolve())
demo = Scenario("aio-demo", "coroutine trials, for the tests", size=1, may_suspend=True)


def _plan(trial: int = 0, **changes: object) -> Plan:
    return dataclasses.replace(make_plan(Perturbation(), seed=5, trial=trial), **changes)  # type: ignore[arg-type]


def _outcomes(name: str, trials: int = 200, **changes: object) -> tuple[Counter[str], list[object]]:
    variant = dataclasses.replace(demo.get(name), files=(HERE,))
    scope = Scope(files=[HERE])
    preemptor, instrumenter = Preemptor(scope), Instrumenter(scope)
    instrumenter.hold()
    seen: Counter[str] = Counter()
    evidence = []
    try:
        for number in range(trials):
            run = run_trial(variant, _plan(number, **changes), size=1, preemptor=preemptor, instrumenter=instrumenter)
            seen[run.outcome.label] += 1
            if run.outcome.is_failure:
                evidence.append(run.evidence)
    finally:
        preemptor.close()
    return seen, evidence


@demo.variant(expect="unsafe")
async def opposite(trial: Trial) -> None:
    lock_a, lock_b = asyncio.Lock(), asyncio.Lock()

    async def ab() -> None:
        async with lock_a, lock_b:
            pass

    async def ba() -> None:
        async with lock_b, lock_a:
            pass

    async with trial.tasks() as group:
        group.start(ab)
        group.start(ba)


def test_a_lock_cycle_of_tasks_is_deadlocked_with_the_cycle_and_where_each_lock_was_taken() -> None:
    seen, evidence = _outcomes("opposite", sync=0.2)
    assert seen["deadlocked"] >= 10, seen
    assert set(seen) <= {"deadlocked", "passed"}, seen
    first = evidence[0]
    assert first.messages[0] in (  # type: ignore[attr-defined]
        "ab waits for lock_b held by ba → ba waits for lock_a held by ab",
        "ba waits for lock_a held by ab → ab waits for lock_b held by ba",
    )
    lines = first.wait_for  # type: ignore[attr-defined]
    assert any(
        line.startswith("ab waits for lock_b at ") and "test_aio.py:" in line and " in ab; ba took it at " in line
        for line in lines
    ), lines


def test_without_step_outs_the_lock_cycle_never_closes() -> None:
    seen, _ = _outcomes("opposite", trials=100, sync=0.0, shuffle=False, jitter=0.0)
    assert seen == Counter(passed=100)


@demo.variant(expect="unsafe")
async def waits_for_itself(trial: Trial) -> None:
    event = asyncio.Event()

    async def waiter() -> None:
        await event.wait()

    await trial.run_tasks(waiter, count=2)


def test_tasks_waiting_for_what_nobody_can_set_are_deadlocked_at_once() -> None:
    seen, evidence = _outcomes("waits-for-itself", trials=5)
    assert seen == Counter(deadlocked=5)
    first = evidence[0]
    assert first.messages[0] == (  # type: ignore[attr-defined]
        "every task waits and nothing can wake them: waiter#0 in event.wait(), waiter#1 in event.wait()"
    )
    assert any(
        line.startswith("waiter#0 waits in event.wait() at ") and line.endswith(": nobody is left to set it")
        for line in first.wait_for  # type: ignore[attr-defined]
    ), first.wait_for  # type: ignore[attr-defined]


@demo.variant(expect="safe")
async def woken_by_a_thread(trial: Trial) -> None:
    loop = asyncio.get_running_loop()
    event = asyncio.Event()

    def later() -> None:
        threading.Event().wait(0.02)
        loop.call_soon_threadsafe(event.set)

    thread = threading.Thread(target=later)
    thread.start()
    await event.wait()
    thread.join()


@demo.variant(expect="safe")
async def woken_by_a_thread_at_once(trial: Trial) -> None:
    loop = asyncio.get_running_loop()
    event = asyncio.Event()
    thread = threading.Thread(target=loop.call_soon_threadsafe, args=(event.set,))
    thread.start()
    await event.wait()
    thread.join()


def test_an_idle_loop_that_a_thread_of_the_trial_will_wake_is_not_deadlocked() -> None:
    seen, _ = _outcomes("woken-by-a-thread", trials=10)
    assert seen == Counter(passed=10)
    # The thread may call into the loop and end between two looks at the loop: never a deadlock.
    seen, _ = _outcomes("woken-by-a-thread-at-once", trials=300)
    assert seen == Counter(passed=300)


@demo.variant(expect="safe")
async def sleeps(trial: Trial) -> None:
    await asyncio.sleep(0.005)
    await asyncio.wait_for(asyncio.sleep(0.001), timeout=1)


def test_a_loop_waiting_for_a_timer_is_not_deadlocked() -> None:
    seen, _ = _outcomes("sleeps", trials=10)
    assert seen == Counter(passed=10)


@demo.variant(expect="unsafe")
async def forgotten(trial: Trial) -> None:
    async def fails() -> None:
        raise ValueError("nobody looks at me")

    task = asyncio.get_running_loop().create_task(fails())
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert task.done()


def test_a_task_exception_nobody_retrieved_is_an_error() -> None:
    seen, evidence = _outcomes("forgotten", trials=3)
    assert seen == Counter(error=3)
    text = "\n".join(evidence[0].tracebacks)  # type: ignore[attr-defined]
    assert "fails (its exception was never retrieved)" in text
    assert "ValueError: nobody looks at me" in text


@demo.variant(expect="safe")
async def results_in_order(trial: Trial) -> None:
    async def square(number: int) -> int:
        await asyncio.sleep(0)
        return number * number

    async with trial.tasks() as group:
        for number in range(4):
            group.start(square, number, name=f"square-{number}")
    trial.check(group.results == [0, 1, 4, 9], f"results {group.results}")
    raised = await trial.run_tasks(_raises, count=2)
    trial.check(raised == [None, None], f"raised {raised}")


async def _raises() -> int:
    raise KeyError("x")


def test_tasks_return_in_task_order_and_a_raising_task_is_recorded() -> None:
    seen, evidence = _outcomes("results-in-order", trials=5)
    assert seen == Counter(error=5)
    assert "in task _raises#0" in evidence[0].tracebacks[0]  # type: ignore[attr-defined]


def test_the_primitives_are_their_own_again_after_a_trial() -> None:
    originals = {name: asyncio.Lock.__dict__[name] for name in ("acquire", "release")}
    _outcomes("opposite", trials=2)
    assert {name: asyncio.Lock.__dict__[name] for name in originals} == originals

    async def plain() -> bool:
        lock = asyncio.Lock()
        async with lock:
            return lock.locked()

    assert asyncio.run(plain())


def test_a_start_delay_is_whole_loop_iterations() -> None:
    assert aio.start_iterations(0.0) == 0
    assert aio.start_iterations(1e-6) == 1
    assert aio.start_iterations(60e-6) == 3
    assert aio.start_iterations(1.0) == aio.START_MOST


def _controlled(key: str, control: Control) -> TrialRun:
    scenario, _, name = key.partition("/")
    variant = Registry.builtin().get(scenario).get(name)
    scope = Scope(files=list(variant.files))
    preemptor = Preemptor(scope)
    try:
        plan = make_plan(Perturbation.none(), seed=1, trial=0)
        actors = variant.controlled_actors if variant.actors else None
        return run_trial(
            variant, plan, size=variant.controlled_size, actors=actors, preemptor=preemptor, control=control
        )
    finally:
        preemptor.close()


@pytest.mark.parametrize(
    "key",
    [
        "async-bank/check-then-act",
        "async-deadlock/opposite-order",
        "async-event/clear-after-wait",
        "async-event/wait-under-if",
        "async-queue/skipped-task-done",
        "cancellation/acquire-release",
    ],
)
def test_a_controlled_schedule_of_tasks_finds_the_bug_and_replays_it_exactly(key: str) -> None:
    failing = next(
        run
        for seed in range(40)
        if (run := _controlled(key, Control("random", seed=seed, record_decisions=True))).outcome.is_failure
    )
    assert failing.unscheduled is None
    assert failing.choices >= 1
    assert failing.schedule is not None
    forced = Control("forced", forced=Schedule.parse(failing.schedule).forced)
    for _ in range(10):
        again = _controlled(key, forced)
        assert again.outcome is failing.outcome
        assert again.evidence is not None
        assert failing.evidence is not None
        assert again.evidence.messages == failing.evidence.messages
        assert [step[0] + step[3] for step in again.trace] == [step[0] + step[3] for step in failing.trace]
        assert again.diverged is None


def test_a_task_cancelled_as_it_took_a_lock_gets_the_cancellation_at_its_next_await() -> None:
    """asyncio's acquire() is not cancelled once the lock is the task's; a schedule that switches
    right after the take must not make it so (a lock left held by `async with`: a false deadlock)."""
    seen = Counter(
        _controlled("cancellation/async-with", Control("random", seed=seed)).outcome.label for seed in range(300)
    )
    assert seen == Counter(passed=300)


@pytest.mark.parametrize("key", ["async-bank/lock", "async-deadlock/global-order", "async-deadlock/await-outside-lock"])
def test_builtin_safe_coroutine_variants_hold_at_the_strongest_step_outs(key: str) -> None:
    scenario, _, name = key.partition("/")
    variant = Registry.builtin().get(scenario).get(name)
    scope = Scope(files=list(variant.files))
    preemptor = Preemptor(scope)
    try:
        for number in range(100):
            run = run_trial(
                variant, _plan(number, sync=1.0), size=variant.size, actors=variant.actors, preemptor=preemptor
            )
            assert run.outcome is Outcome.PASSED, (number, run.evidence)
    finally:
        preemptor.close()


@demo.variant(expect="safe")
async def waits_for_good(trial: Trial) -> None:
    never = asyncio.Event()

    async def waiter() -> None:
        await never.wait()

    await trial.run_tasks(waiter, count=2)


def test_an_injected_cancellation_ends_a_task_without_a_finding_of_its_own() -> None:
    assert _outcomes("waits-for-good", trials=5)[0] == Counter(deadlocked=5)
    # Every operation cancels its task: both end cancelled before they wait, and nothing is left.
    assert _outcomes("waits-for-good", trials=5, cancel=1.0)[0] == Counter(passed=5)


def test_cancel_is_drawn_last_so_every_other_knob_keeps_its_value() -> None:
    plain = make_plan(Perturbation(), seed=9, trial=4)
    cancelling = make_plan(Perturbation(cancel=Knob(0.1, 0.1)), seed=9, trial=4)
    assert dataclasses.replace(cancelling, cancel=0.0) == plain
    assert cancelling.cancel == 0.1
    assert "cancel 0.1" in cancelling.describe()


@demo.variant(expect="safe")
async def cancelled_after_join(trial: Trial) -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()

    async def worker() -> None:
        while True:
            await queue.get()
            queue.task_done()

    running = asyncio.get_running_loop().create_task(trial.run_tasks(worker, count=2))
    for item in range(3):
        await queue.put(item)
    await queue.join()
    running.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await running


def test_tasks_of_the_trial_cancelled_by_the_code_are_no_finding() -> None:
    assert _outcomes("cancelled-after-join", trials=20)[0] == Counter(passed=20)


@demo.variant(expect="safe")
async def woken_by_a_raw_thread(trial: Trial) -> None:
    loop = asyncio.get_running_loop()
    future = loop.create_future()

    def later() -> None:
        time.sleep(0.002)
        loop.call_soon_threadsafe(future.set_result, 1)

    _thread.start_new_thread(later, ())
    trial.check(await future == 1)
    await asyncio.sleep(0.005)  # the thread ends before the loop closes


@demo.variant(expect="safe")
async def woken_by_a_signal_timer(trial: Trial) -> None:
    loop = asyncio.get_running_loop()
    future = loop.create_future()
    old = signal.signal(signal.SIGALRM, lambda *_: loop.call_soon_threadsafe(future.set_result, "alarm"))
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.002)
        trial.check(await future == "alarm")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@pytest.mark.parametrize("name", ["woken-by-a-raw-thread", "woken-by-a-signal-timer"])
def test_an_idle_loop_that_a_thread_threading_does_not_list_or_a_signal_may_wake_is_not_deadlocked(name: str) -> None:
    assert _outcomes(name, trials=20)[0] == Counter(passed=20)


drain = Scenario("aio-drain", "asyncio's own model: a ready primitive's operation returns at once", size=4)


@drain.variant(expect="safe")
async def drain_prefilled(trial: Trial) -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for item in range(trial.size):
        queue.put_nowait(item)
    done: list[int] = []

    async def worker() -> None:
        while not queue.empty():
            item = await queue.get()  # not empty: returns at once, as asyncio documents
            await asyncio.sleep(0)
            done.append(item)

    await trial.run_tasks(worker, count=2)
    trial.check(sorted(done) == list(range(trial.size)), f"{done}")


@drain.variant(expect="safe")
async def set_then_wait(trial: Trial) -> None:
    event = asyncio.Event()
    seen: list[bool] = []

    async def setter() -> None:
        event.set()
        await event.wait()  # set: returns at once
        event.clear()

    async def looker() -> None:
        seen.append(event.is_set())

    async with trial.tasks() as group:
        group.start(setter)
        group.start(looker)
    trial.check(seen in ([False], [True]), f"{seen}")


@pytest.mark.parametrize("name", ["drain-prefilled", "set-then-wait"])
def test_code_relying_on_a_ready_primitive_returning_at_once_holds_under_asyncio_s_model(name: str) -> None:
    variant = dataclasses.replace(drain.get(name), files=(HERE,))
    assert not variant.may_suspend
    scope = Scope(files=[HERE])
    preemptor = Preemptor(scope)
    seen: Counter[str] = Counter()
    try:
        for number in range(200):
            plan = _plan(number, sync=0.2)
            seen[run_trial(variant, plan, size=variant.size, preemptor=preemptor).outcome.label] += 1
    finally:
        preemptor.close()
    assert seen == Counter(passed=200)


MODULE_LOCK = asyncio.Lock()


@demo.variant(expect="safe")
async def module_level_lock(trial: Trial) -> None:
    count = 0

    async def add() -> None:
        nonlocal count
        async with MODULE_LOCK:
            current = count
            await asyncio.sleep(0)
            count = current + 1

    await trial.run_tasks(add, count=3)
    trial.check(count == 3, f"count {count}")


def test_a_module_level_primitive_serves_every_trial_s_loop() -> None:
    assert _outcomes("module-level-lock", trials=20)[0] == Counter(passed=20)


@demo.variant(expect="unsafe")
async def forgets_to_await(trial: Trial) -> None:
    async def work() -> None:
        await asyncio.sleep(0)

    trial.run_tasks(work, count=2)  # type: ignore[unused-coroutine]


def test_tasks_never_awaited_are_an_error() -> None:
    seen, evidence = _outcomes("forgets-to-await", trials=3)
    assert seen == Counter(error=3)
    assert "was never awaited" in evidence[0].tracebacks[0]  # type: ignore[attr-defined]


@demo.variant(expect="safe")
async def sleeps_a_while(trial: Trial) -> None:
    await asyncio.sleep(0.05)


def test_the_loop_tells_the_watchdog_when_its_next_timer_wakes_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """A trial awaiting a long timer is waiting, not blocked: the worker's beacon hears when the loop
    wakes by itself (with other threads in instrumented waits, the watchdog cannot tell otherwise)."""
    told: list[float | None] = []
    monkeypatch.setattr(pause, "timer_hook", told.append)
    before = time.monotonic()
    assert _outcomes("sleeps-a-while", trials=1, jitter=0.0)[0] == Counter(passed=1)
    timers = [when for when in told if when is not None]
    assert timers, told
    assert any(0.04 <= when - before <= 1.0 for when in timers), (before, told)
    assert told[-1] is None  # the trial is over: no timer of it is awaited


@demo.variant(expect="unsafe")
async def blocks_in_time_sleep(trial: Trial) -> None:
    async def fetch() -> None:
        time.sleep(0.12)  # BLOCKS THE LOOP

    await trial.run_tasks(fetch, count=2)


@demo.variant(expect="unsafe")
async def blocks_in_sleep_imported_by_name(trial: Trial) -> None:
    async def fetch() -> None:
        _sleep_by_name(0.06)
        _sleep_by_name(0.06)  # the sleeps of one step add up
        await asyncio.sleep(0)

    await trial.run_tasks(fetch, count=1)


@demo.variant(expect="safe")
async def sleeps_where_the_loop_is_not_blocked(trial: Trial) -> None:
    async def fetch() -> None:
        await asyncio.sleep(0.06)
        await asyncio.to_thread(time.sleep, 0.12)  # another thread's sleep
        pause.pause(0.12)  # stress's own pause (a forced switch): not the code's
        for _ in range(3):
            time.sleep(0.04)  # under 0.1 s in each step
            await asyncio.sleep(0)

    await trial.run_tasks(fetch, count=1)


@demo.variant(expect="unsafe")
async def computes_without_an_await(trial: Trial) -> None:
    async def crunch() -> None:
        began = time.thread_time()
        while time.thread_time() - began < 0.08:
            pass
        await asyncio.sleep(0)  # CRUNCHED UP TO HERE

    await trial.run_tasks(crunch, count=1)


def test_a_step_that_sleeps_in_time_sleep_stalls_the_loop_with_the_stack_of_the_call() -> None:
    seen, evidence = _outcomes("blocks-in-time-sleep", trials=2)
    assert seen == Counter(stalled=2), (seen, evidence)
    line = _line("# BLOCKS THE LOOP")
    first = evidence[0]
    assert "blocked the event loop for 0.12 s in time.sleep() at " in first.messages[0]
    assert f"test_aio.py:{line} in fetch: no other task could run" in first.messages[0]
    assert first.messages[0].startswith("task fetch#"), first.messages
    # The stack is the task's own: no frame of the loop's or of the worker that ran it.
    stack = first.tracebacks[0]
    assert f'test_aio.py", line {line}, in fetch' in stack, stack
    assert "time.sleep(0.12)" in stack, stack
    assert "asyncio" not in stack, stack
    assert "harness" not in stack, stack


def test_a_sleep_bound_by_name_is_seen_and_sleeps_add_up_within_a_step() -> None:
    seen, evidence = _outcomes("blocks-in-sleep-imported-by-name", trials=1)
    assert seen == Counter(stalled=1), (seen, evidence)
    assert "for 0.12 s in time.sleep()" in evidence[0].messages[0]  # type: ignore[attr-defined]


def test_sleeps_that_do_not_block_the_loop_are_no_finding() -> None:
    assert _outcomes("sleeps-where-the-loop-is-not-blocked", trials=1) == (Counter(passed=1), [])
    assert time.sleep is aio._real_sleep  # the wrapper (3.11, 3.12) is gone after the trial


def test_a_step_computing_long_stalls_the_loop_only_where_stress_did_not_slow_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(aio, "STALL_CPU", 0.05)
    monkeypatch.setattr(aio, "STALL", 0.05)
    seen, evidence = _outcomes("computes-without-an-await", trials=1, preempt=0.0)
    assert seen == Counter(stalled=1), (seen, evidence)
    message = evidence[0].messages[0]  # type: ignore[attr-defined]
    assert message.startswith("task crunch ran 0.0"), message
    assert "s of CPU without an await" in message, message
    assert "up to its await at " in message, message
    assert f"test_aio.py:{_line('# CRUNCHED UP TO HERE')} in crunch: no other task" in message, message
    # Forced preemption makes the same step many times slower: its CPU time is not the code's.
    assert _outcomes("computes-without-an-await", trials=1, preempt=0.01)[0] == Counter(passed=1)


def _line(marker: str) -> int:
    return next(n for n, text in enumerate(Path(HERE).read_text().splitlines(), 1) if marker in text)


@demo.variant(expect="safe")
async def waits_for_a_late_event(trial: Trial) -> None:
    event = asyncio.Event()

    async def waiter() -> None:
        await event.wait()  # WAITS FOR THE EVENT

    async def setter() -> None:
        await asyncio.sleep(0.02)
        event.set()

    async with trial.tasks() as group:
        group.start(waiter)
        group.start(waiter)
        group.start(setter)


def test_a_loop_writes_its_tasks_stacks_into_the_dump_where_a_hang_reads_them(monkeypatch: pytest.MonkeyPatch) -> None:
    written: list[str] = []
    monkeypatch.setattr(pause, "dump_hook", written.append)
    monkeypatch.setattr(aio, "SNAPSHOT_FIRST", 0.0)  # at every iteration
    assert _outcomes("waits-for-a-late-event", trials=1) == (Counter(passed=1), [])
    line = _line("# WAITS FOR THE EVENT")
    dump = next(text for text in written if text.count(", waiting in event.wait():") == 2)
    tasks = [t for t in parse_dump(dump) if t.task]
    assert {t.task for t in tasks} >= {"waiter#0", "waiter#1", "setter"}, dump
    where = blocked_at(dump, Scope(files=[HERE]))
    assert any(
        w.startswith("task waiter#0: ") and f"test_aio.py:{line} in waiter (waiting in wait," in w for w in where
    ), where
    # A later block replaces an earlier one: the tasks as they were last seen.
    assert [t.task for t in parse_dump(dump + written[-1]) if t.task] == [
        t.task for t in parse_dump(written[-1]) if t.task
    ]


def test_after_a_coroutine_trial_thread_trials_in_the_same_process_hold() -> None:
    """stress's primitives call ``sys.settrace`` in every thread (`harness.perturb.preempt`); on 3.11
    a Python audit hook makes two such calls at once raise RuntimeError, blamed on the user's ``with
    lock:``. A coroutine trial must leave nothing of the kind behind in its worker: counter/lock,
    after it, failed about 1 trial in 80."""
    assert _outcomes("blocks-in-time-sleep", trials=1)[0] == Counter(stalled=1)
    variant = Registry.builtin().select(["counter"], ["lock"])[0]
    scope = Scope(files=[variant.fn.__code__.co_filename])
    preemptor, instrumenter = Preemptor(scope), Instrumenter(scope)
    instrumenter.hold()
    seen: Counter[str] = Counter()
    try:
        for number in range(800):
            run = run_trial(variant, _plan(number), size=200, preemptor=preemptor, instrumenter=instrumenter)
            seen[run.outcome.label] += 1
    finally:
        preemptor.close()
    assert seen == Counter(passed=800)


@demo.variant(expect="safe")
async def sleeps_before_any_task(trial: Trial) -> None:
    time.sleep(0.12)  # nothing else is on the loop yet: nobody is kept waiting

    async def fetch() -> None:
        await asyncio.sleep(0)

    await trial.run_tasks(fetch, count=2)


def test_a_body_that_sleeps_before_it_starts_any_task_keeps_nobody_waiting() -> None:
    assert _outcomes("sleeps-before-any-task", trials=1) == (Counter(passed=1), [])

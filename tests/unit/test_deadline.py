"""Deadlines and the judgement of a trial past one, against an injected clock and made-up snapshots."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from harness.engine.activity import Snapshot
from harness.engine.deadline import (
    AFTER_LIMIT,
    CONFIRM,
    PROBE,
    SETUP_LIMIT,
    AdaptiveTimeout,
    Verdict,
    Watch,
    high_quantile,
)

# -- the adaptive deadline --------------------------------------------------------------------------


def test_fixed_timeout_never_adapts() -> None:
    policy = AdaptiveTimeout(fixed=0.3)
    policy.observe(5.0)
    assert policy.current() == 0.3


def test_initial_deadline_until_a_trial_finishes() -> None:
    assert AdaptiveTimeout().current() == 2.0


def test_adapts_to_a_high_quantile_with_floor_and_ceiling() -> None:
    policy = AdaptiveTimeout(factor=10, floor=0.05, ceiling=10)
    policy.observe(0.001)
    assert policy.current() == 0.05
    for _ in range(20):
        policy.observe(0.02)
    assert policy.current() == pytest.approx(0.2)
    for _ in range(30):
        policy.observe(3.0)
    assert policy.current() == 10


def test_one_slow_outlier_does_not_raise_the_deadline_tenfold() -> None:
    policy = AdaptiveTimeout(factor=10, floor=0.05, ceiling=10)
    for _ in range(5):
        policy.observe(0.01)
    before = policy.current()
    policy.observe(0.45)  # one trial stalled by a burst of load
    assert policy.current() == pytest.approx(before)
    policy = AdaptiveTimeout(factor=10, floor=0.05, ceiling=10)
    policy.observe(0.01)
    policy.observe(0.45)  # even the second trial of all
    assert policy.current() < 0.5


def test_the_quantile_never_takes_the_largest_once_there_are_two() -> None:
    assert high_quantile([1.0]) == 1.0
    assert high_quantile([1.0, 100.0]) == 1.0
    assert high_quantile(sorted([float(i) for i in range(100)])) == 89.0
    assert high_quantile([1.0, 2.0, 100.0, 100.0]) == 100.0  # two slow trials are not an outlier


def test_the_deadline_follows_the_machine_over_a_window() -> None:
    policy = AdaptiveTimeout(factor=10, floor=0.001, ceiling=100, window=50)
    for _ in range(50):
        policy.observe(0.01)
    for _ in range(50):
        policy.observe(0.04)  # the machine got four times busier
    assert policy.current() == pytest.approx(0.4)


def test_each_variant_adapts_to_itself() -> None:
    policy = AdaptiveTimeout(factor=10, floor=0.05, ceiling=10)
    policy.observe(0.3, "pool/spawn")
    policy.observe(0.01, "pool/fork")
    assert policy.current("pool/fork") == pytest.approx(0.1)  # its own, not the slow spawn's
    assert policy.current("pool/spawn") == pytest.approx(3.0)


def test_a_variant_that_keeps_hanging_borrows_its_scenarios_deadline() -> None:
    policy = AdaptiveTimeout(factor=10, floor=0.05, ceiling=10, initial=2.0)
    policy.observe(0.01, "pipe/end-message")
    policy.observe(0.2, "pipe/slow-strategy")
    assert policy.current("pipe/parent-keeps-ends") == 2.0  # its first trial may just be slow
    policy.hung("pipe/parent-keeps-ends")
    assert policy.current("pipe/parent-keeps-ends") == 2.0
    policy.hung("pipe/parent-keeps-ends")
    assert policy.current("pipe/parent-keeps-ends") == pytest.approx(0.1)


# -- judging a trial past its deadline ----------------------------------------------------------------


def snap(at: float, cpu: float = 0.0, runs: int = 0, **kw: object) -> Snapshot:
    """A one-process, one-thread tree at ``at`` that has used ``cpu`` seconds of CPU and been put on
    a CPU ``runs`` times."""
    fields: dict[str, object] = {"waited": 0.0, "threads": 1, "active": 0, "wakes_in": math.inf, "unknown": 0}
    fields.update(kw)
    if "timed" not in kw and not math.isinf(float(fields["wakes_in"])):  # type: ignore[arg-type]
        fields["timed"] = 1
    return Snapshot(at=at, cpu={1: cpu}, runs={1: (runs, 0)}, **fields)  # type: ignore[arg-type]


class Machine:
    """A fake trial: `state(now)` says what its processes look like at ``now`` (engine clock = snapshot clock)."""

    def __init__(self, state: Callable[[float], Snapshot], *, clock: list[float] | None = None) -> None:
        self.state = state
        self.looks = 0
        self.clock = clock  # the watch's real clock, when the test gives it one: kept at `now`

    def run(self, watch: Watch, *, until: float = 1000.0, start: float = 0.0) -> tuple[Verdict, float, str]:
        now = start
        while now <= until:
            if self.clock is not None:
                self.clock[0] = now
            decision = watch.step(now, lambda now=now: self._take(now))  # type: ignore[misc]
            if decision.verdict is not Verdict.WAIT:
                return decision.verdict, now, decision.message
            assert decision.until > now, "a watch must never ask to be called again at once"
            now = decision.until
        return Verdict.WAIT, now, ""

    def _take(self, now: float) -> Snapshot:
        self.looks += 1
        return self.state(now)


LOCKED = ("a lock, condition or join",)


def test_a_deadline_cannot_start_before_the_trial() -> None:
    clock = [0.0]
    watch = Watch(timeout=0.05, dispatched=0.0, real=lambda: clock[0])
    blocked = Machine(lambda now: snap(now, waits=LOCKED), clock=clock)
    # A worker that never reaches the trial's body (still setting up, or between trials) cannot hang it.
    verdict, _, _ = blocked.run(watch, until=SETUP_LIMIT - 1)
    assert verdict is Verdict.WAIT
    assert blocked.looks == 0
    verdict, _, message = blocked.run(watch, start=SETUP_LIMIT, until=SETUP_LIMIT + 1)
    assert verdict is Verdict.STALLED  # stress's fault: the trial is run again, never called hung
    assert "did not start the trial" in message


def test_the_deadline_counts_from_the_start_of_the_body() -> None:
    watch = Watch(timeout=0.05, dispatched=0.0)
    watch.begin(7.0)  # the worker took 7 s to set up on a loaded machine
    blocked = Machine(lambda now: snap(now, waits=LOCKED))
    verdict, at, message = blocked.run(watch)
    assert verdict is Verdict.HUNG
    assert 7.05 <= at <= 7.05 + CONFIRM * PROBE + 1e-9  # seen blocked in two looks in a row
    assert message.startswith("blocked: ")
    assert "1 in a lock, condition or join" in message
    # Seeing it blocked twice is stress's own look, not more time given it (the report counted
    # every blocked hang among the trials "given more time").
    assert watch.extra == 0.0


def test_a_trial_whose_body_ended_is_never_hung() -> None:
    clock = [1.04]
    watch = Watch(timeout=0.05, dispatched=0.0, real=lambda: clock[0])
    watch.begin(1.0)
    watch.end(1.04)  # now stress checks for leaks, or shrinks a schedule: its own business
    busy = Machine(lambda now: snap(now, cpu=now, runs=int(now * 1000), active=2), clock=clock)
    verdict, _, _ = busy.run(watch, start=1.04, until=1.04 + AFTER_LIMIT - 1)
    assert verdict is Verdict.WAIT
    assert busy.looks == 0
    verdict, _, message = busy.run(watch, start=1.04 + AFTER_LIMIT, until=1.04 + AFTER_LIMIT + 1)
    assert verdict is Verdict.STALLED  # stuck in stress's own code: run again, never hung
    assert "stress's own work" in message


def test_a_thread_that_ran_between_two_looks_is_not_blocked() -> None:
    watch = Watch(timeout=0.05, dispatched=0.0)
    watch.begin(0.0)
    # Each look catches the thread asleep and using no CPU we can measure, but it was put on a CPU
    # in between (a ping-pong, a wake-up): the tree is not blocked.
    woke = Machine(lambda now: snap(now, runs=int(now * 100), waits=LOCKED))
    verdict, _, _ = woke.run(watch, until=0.5)
    assert verdict is Verdict.WAIT


def test_a_livelock_is_hung_once_it_used_its_cpu_budget() -> None:
    watch = Watch(timeout=0.05, dispatched=0.0)
    watch.begin(0.0)
    spinning = Machine(lambda now: snap(now, cpu=now, runs=int(now * 1000), active=1))
    verdict, at, message = spinning.run(watch)
    assert verdict is Verdict.HUNG
    assert "busy all along" in message
    assert watch.timeout + watch.cpu_budget - PROBE <= at <= watch.timeout + watch.cpu_budget + 0.1


def test_one_slow_path_of_safe_code_gets_ten_deadlines_of_cpu_at_least_two_seconds() -> None:
    watch = Watch(timeout=0.05, dispatched=0.0)
    watch.begin(0.0)
    # One trial in twenty takes 0.8 s of CPU where the others take half a millisecond: slow, not hung.
    slow = Machine(lambda now: snap(now, cpu=now, runs=int(now * 1000), active=1))
    verdict, _, _ = slow.run(watch, until=0.85)
    assert verdict is Verdict.WAIT
    assert watch.cpu_budget >= 2.0


def test_a_fixed_deadline_gives_its_own_length_of_cpu() -> None:
    assert Watch(timeout=0.2, dispatched=0.0, fixed=True).cpu_budget == 1.0
    assert Watch(timeout=3.0, dispatched=0.0, fixed=True).cpu_budget == 3.0


def test_a_starved_trial_is_undecided_never_hung() -> None:
    watch = Watch(timeout=0.05, dispatched=0.0)
    watch.begin(0.0)
    # Runnable all along, but the machine gives it 2 % of a CPU: wall time says nothing.
    starved = Machine(lambda now: snap(now, cpu=0.02 * now, runs=int(now * 50), waited=0.98 * now, active=1))
    verdict, at, message = starved.run(watch)
    assert verdict is Verdict.UNDECIDED  # stress's own outcome: it cannot tell, so it does not guess
    assert at >= watch.hard_cap
    assert "too busy" in message


def test_a_slow_trial_on_a_busy_machine_gets_the_time_it_needs() -> None:
    watch = Watch(timeout=0.05, dispatched=0.0)
    watch.begin(0.0)
    # It needs 0.2 s of CPU (four times its deadline: an outlier) and gets 10 % of a CPU: 2 s of wall time.
    slow = Machine(lambda now: snap(now, cpu=0.1 * now, runs=int(now * 100), waited=0.9 * now, active=1))
    verdict, _, _ = slow.run(watch, until=2.0)
    assert verdict is Verdict.WAIT  # still being given time at 40x its deadline
    assert watch.extra > 1.9


def test_a_trial_is_never_judged_before_its_timers_fire() -> None:
    watch = Watch(timeout=0.05, dispatched=0.0)
    watch.begin(0.0)
    # One trial in twenty backs off for 1.5 s: a sleep that ends is not a hang, however long past the deadline.
    sleeper = Machine(lambda now: snap(now, wakes_in=max(0.0, 1.5 - now), waits=("a sleep",)))
    verdict, _, _ = sleeper.run(watch, until=1.49)
    assert verdict is Verdict.WAIT


def test_a_signal_timer_counts_as_a_timer() -> None:
    watch = Watch(timeout=0.05, dispatched=0.0)
    watch.begin(0.0)
    # The main thread waits for a lock that a SIGALRM handler will release in 0.3 s.
    waiting = Machine(lambda now: snap(now, alarm_in=max(0.0, 0.3 - now), waits=LOCKED))
    verdict, _, _ = waiting.run(watch, until=0.29)
    assert verdict is Verdict.WAIT


def test_a_timer_that_fires_only_past_the_hard_cap_is_as_good_as_none() -> None:
    watch = Watch(timeout=0.05, dispatched=0.0)
    watch.begin(0.0)
    # time.sleep(3600)
    sleeps = Machine(lambda now: snap(now, wakes_in=3600.0 - now, waits=("a sleep that ends in 60 min",)))
    verdict, at, message = sleeps.run(watch)
    assert verdict is Verdict.HUNG
    assert at == pytest.approx(0.05)
    assert "(1 in a sleep that ends in 60 min)" in message


def test_polling_for_what_stress_cannot_see_is_undecided_not_hung() -> None:
    watch = Watch(timeout=0.05, dispatched=0.0)
    watch.begin(0.0)
    # Woken every 10 ms by a timer, checks something, sleeps again: a flag nobody sets, or a file
    # another program will write. Nobody can tell which.
    poller = Machine(lambda now: snap(now, cpu=now * 0.0001, runs=int(now * 100), wakes_in=0.01 - (now % 0.01)))
    verdict, at, message = poller.run(watch)
    assert verdict is Verdict.UNDECIDED
    assert "only woke briefly" in message
    assert at == pytest.approx(watch.timeout + watch.sleep_grace, abs=0.05)


def test_a_wait_on_something_outside_the_trial_is_undecided_not_hung() -> None:
    watch = Watch(timeout=0.05, dispatched=0.0)
    watch.begin(0.0)
    # A server outside stress that is slow to answer looks exactly like one that never will.
    client = Machine(lambda now: snap(now, external=1, waits=("a socket (on a socket or terminal outside the trial)",)))
    verdict, at, message = client.run(watch)
    assert verdict is Verdict.UNDECIDED
    assert at >= watch.hard_cap
    assert "outside the trial" in message


def test_an_unreadable_wait_is_given_the_benefit_of_the_doubt() -> None:
    watch = Watch(timeout=0.05, dispatched=0.0)
    watch.begin(0.0)
    unknown = Machine(lambda now: snap(now, unknown=1))
    verdict, at, _ = unknown.run(watch)
    assert verdict is Verdict.UNDECIDED
    assert at >= watch.hard_cap


def test_an_instrumented_waiter_looking_for_deadlocks_is_not_progress() -> None:
    watch = Watch(timeout=0.05, dispatched=0.0)
    watch.begin(0.0)
    # One thread waits on an instrumented Event nobody sets (it wakes every few ms to look for a
    # deadlock), another reads a pipe nobody writes: blocked for good, whatever the slices do.
    mixed = Machine(
        lambda now: snap(now, runs=int(now * 200), wakes_in=0.004, timed=1, waiters=1, wait_ends=0, waits=LOCKED)
    )
    verdict, at, message = mixed.run(watch)
    assert verdict is Verdict.HUNG
    assert at < 0.2
    assert message.startswith("blocked: ")


def test_stress_s_own_pauses_are_progress() -> None:
    watch = Watch(timeout=0.05, dispatched=0.0)
    watch.begin(0.0)
    # Every "sleep" is a --pause of stress's at a forced switch: slow, never sleeping by itself.
    paused = Machine(lambda now: snap(now, runs=int(now * 100), paused=int(now * 100), wakes_in=0.001))
    verdict, at, message = paused.run(watch)
    assert verdict is Verdict.UNDECIDED
    assert at >= watch.hard_cap
    assert "too slow to judge" in message


def test_a_timer_that_keeps_coming_back_at_the_cap_is_undecided_never_hung() -> None:
    # Nothing of the trial runs, but a timer fires every 0.8 s (a heartbeat thread beside a trial
    # that waits for good): when the cap comes between two of its wake-ups, the trial was called
    # hung, "the first of them to wake by itself would do so only in 0.6 s".
    watch = Watch(timeout=0.05, dispatched=0.0)
    watch.begin(0.0)
    ticking = Machine(lambda now: snap(now, wakes_in=0.8 - (now % 0.8), waits=("a sleep that ends in 0.8 s",)))
    verdict, at, message = ticking.run(watch)
    assert verdict is Verdict.UNDECIDED, message
    assert at >= watch.hard_cap

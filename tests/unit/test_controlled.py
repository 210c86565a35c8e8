"""Controlled mode's parts on their own: schedules as strings, the strategies, the exhaustive
search (against a brute-force count), shrinking, and the scheduler on real threads."""

from __future__ import annotations

import dataclasses
import dis
import itertools
import random
import statistics
import sys
import time
from pathlib import Path

import pytest

from harness import Outcome, Registry
from harness.config import Layer, build_config
from harness.controlled.explore import Explorer
from harness.controlled.schedule import Decision, Schedule
from harness.controlled.session import Control, visible_offsets
from harness.controlled.shrink import Attempt, shrink
from harness.controlled.strategies import PCT, Forced, RandomWalk, default_choice
from harness.controlled.trace import Row, Trace, build
from harness.engine.local import LocalRunner, first_failure
from harness.errors import UserError
from harness.loader import load_target
from harness.perturb.knobs import Perturbation
from harness.perturb.plan import make_plan
from harness.scenario import Variant

FIXTURE = Path(__file__).parent.parent / "e2e" / "fixtures" / "controlled_cases.py"


def controlled_config(**flags: object) -> object:
    return build_config([Layer({"mode": "controlled", **flags}, lambda key, value: f"--{key}")])


def builtin(key: str) -> Variant:
    scenario, _, name = key.partition("/")
    return Registry.builtin().get(scenario).get(name)


def fixture(name: str) -> Variant:
    return load_target(str(FIXTURE))[0].get(name)


# -- schedules as data ------------------------------------------------------------------------------


def test_schedule_round_trips_through_its_string() -> None:
    schedule = Schedule(((3, 1), (9, 0), (12, 2)))
    assert str(schedule) == "v2:3>1,9>0,12>2"
    assert Schedule.parse(str(schedule)) == schedule
    assert Schedule.parse("v2:") == Schedule()


@pytest.mark.parametrize(
    "text",
    ["", "3>1", "v3:3>1", "v1:3>1", "v2:3-1", "v2:a>1", "v2:3>x", "v2:5>1,5>0", "v2:9>1,3>0"],
)
def test_schedule_rejects_what_it_did_not_write(text: str) -> None:
    with pytest.raises(UserError, match="schedule"):
        Schedule.parse(text)


# -- strategies -------------------------------------------------------------------------------------


def test_default_choice_keeps_the_running_thread() -> None:
    assert default_choice(1, (0, 1, 2)) == 1
    assert default_choice(-1, (2, 0)) == 2  # the current one cannot go on: the first that can


def test_forced_strategy_follows_the_schedule_and_notes_divergence() -> None:
    forced = Forced({2: 1, 5: 3})
    assert forced.choose(0, 0.0, 0, (0, 1)) == 0
    assert forced.choose(2, 0.0, 0, (0, 1)) == 1
    assert forced.diverged is None
    assert forced.choose(5, 0.0, 0, (0, 1)) == 0  # thread 3 cannot run: the code changed
    assert forced.diverged == 5


def test_random_walk_is_a_function_of_its_seed() -> None:
    def walk(seed: int) -> list[int]:
        strategy = RandomWalk(random.Random(seed))
        return [strategy.choose(i, 0.0, 0, (0, 1, 2)) for i in range(50)]

    assert walk(7) == walk(7)
    assert walk(7) != walk(8)
    assert set(walk(7)) == {0, 1, 2}


def test_random_walk_gives_the_first_of_threads_woken_together_a_head_start() -> None:
    def keeps_going(woken: bool) -> float:
        kept = 0
        for seed in range(2000):
            strategy = RandomWalk(random.Random(seed))
            if woken:
                strategy.woke_together(1)
            kept += strategy.choose(0, 0.0, 1, (0, 1)) == 1
        return kept / 2000

    assert 0.45 < keeps_going(False) < 0.55
    assert 0.78 < keeps_going(True) < 0.88  # 2/3, and half of the other third
    # the head start ends the first time the thread yields
    strategy = RandomWalk(random.Random(0))
    strategy.woke_together(1)
    walk = [strategy.choose(i, 0.0, 1, (0, 1)) for i in range(200)]
    assert 0.4 < walk.count(1) / 200 < 0.6


def test_pct_runs_the_highest_priority_and_lowers_it_at_change_points() -> None:
    strategy = PCT(random.Random(3), depth=2, length=10.0)
    strategy.begin(2)
    first = strategy.choose(0, 0.0, -1, (0, 1))
    assert strategy.choose(1, 0.5, first, (0, 1)) == first  # no change yet: keep the leader
    assert strategy.choose(2, 11.0, first, (0, 1)) == 1 - first  # past the change point: the other


# -- exhaustive search, against brute force ---------------------------------------------------------


def simulate(lengths: list[int], forced: dict[int, int]) -> list[Decision]:
    """The controlled scheduler's choices on a model program: thread i passes ``lengths[i]``
    scheduling points and ends. Mirrors `Scheduler`: a choice when the group starts, at every point,
    and when a thread ends; a choice point only where more than one thread could run."""
    passed = [0] * len(lengths)
    decisions: list[Decision] = []
    number = 0

    def choose(current: int) -> int:
        nonlocal number
        enabled = tuple(i for i in range(len(lengths)) if passed[i] <= lengths[i] and i not in done)
        if len(enabled) == 1:
            return enabled[0]
        default = default_choice(current, enabled)
        chosen = forced.get(number, default)
        decisions.append(Decision(number, enabled, current, default, chosen))
        number += 1
        return chosen

    done: set[int] = set()
    running = choose(-1)
    while len(done) < len(lengths):
        if passed[running] < lengths[running]:
            passed[running] += 1
            running = choose(running)
        else:
            done.add(running)
            if len(done) < len(lengths):
                running = choose(-1)
    return decisions


def brute_force(lengths: list[int], bound: int) -> int:
    """Interleavings of the threads' segments (a thread with n points runs n + 1 segments) with at
    most ``bound`` preemptions: switches away from a thread that had segments left."""
    segments = [n + 1 for n in lengths]
    order = [i for i, n in enumerate(segments) for _ in range(n)]
    count = 0
    for perm in set(itertools.permutations(order)):
        left = list(segments)
        preemptions = 0
        for position, thread in enumerate(perm):
            if position and perm[position - 1] != thread and left[perm[position - 1]]:
                preemptions += 1
            left[thread] -= 1
        count += preemptions <= bound
    return count


@pytest.mark.parametrize(("lengths", "bound"), [([2, 2], 0), ([2, 3], 1), ([3, 3], 2), ([1, 2, 2], 1), ([2, 2, 1], 2)])
def test_exploration_visits_every_schedule_within_the_bound_exactly_once(lengths: list[int], bound: int) -> None:
    explorer = Explorer(bound, limit=100_000)
    seen = set()
    while not explorer.done():
        prefix = explorer.next()
        assert prefix is not None
        decisions = simulate(lengths, dict(prefix))
        run = tuple(d.chosen for d in decisions)
        assert run not in seen, "a schedule was explored twice"
        seen.add(run)
        explorer.feed(prefix, decisions)
    assert explorer.complete
    assert len(seen) == brute_force(lengths, bound)


def test_exploration_stops_at_its_limit_and_says_it_is_incomplete() -> None:
    explorer = Explorer(3, limit=5)
    while not explorer.done():
        prefix = explorer.next()
        assert prefix is not None
        explorer.feed(prefix, simulate([3, 3], dict(prefix)))
    assert explorer.finished == 5
    assert not explorer.complete


# -- shrinking ----------------------------------------------------------------------------------------


def test_shrinking_keeps_only_the_choices_the_failure_needs() -> None:
    """A model failure that needs choice 4 forced to thread 1 and nothing else: ddmin finds it among
    the noise and the result still fails."""

    def run(candidate: Schedule) -> Attempt:
        forced = dict(candidate.forced)
        fails = forced.get(4) == 1
        return Attempt(fails, candidate, switches=len(candidate.forced) + 1, preemptions=len(candidate.forced))

    noisy = Schedule(((0, 1), (2, 0), (4, 1), (5, 0), (7, 1), (9, 0)))
    result = shrink(noisy, switches=7, preemptions=6, run=run)
    assert result.schedule == Schedule(((4, 1),))
    assert result.switches == 2


# -- the scheduler on real threads ----------------------------------------------------------------


def test_instructions_that_only_touch_the_frame_are_not_scheduling_points() -> None:
    def body(box: object) -> None:
        local = 1
        local += 2
        box.value = local  # type: ignore[attr-defined]

    import dis

    kinds = {i.opname for i in dis.get_instructions(body) if i.offset in visible_offsets(body.__code__)}
    assert "STORE_ATTR" in kinds
    assert not kinds & {"LOAD_FAST", "STORE_FAST", "LOAD_CONST", "RESUME", "POP_TOP"}


def test_the_same_schedule_replays_the_same_interleaving() -> None:
    config = controlled_config(seed=4)
    variant = builtin("counter/no-lock")
    plan = make_plan(Perturbation.none(), seed=4, trial=0)
    with LocalRunner(variant, config) as runner:
        found = runner.run(Control("random", seed=11), plan)
        again = [
            runner.run(Control("forced", forced=Schedule.parse(found.schedule or "").forced), plan) for _ in range(5)
        ]
    assert {r.schedule for r in again} == {found.schedule}
    assert {tuple(t[:1] + t[2:] for t in r.trace) for r in again} == {tuple(t[:1] + t[2:] for t in found.trace)}
    assert {r.outcome for r in again} == {found.outcome}


def test_a_write_switched_out_is_drawn_after_the_switch_in_the_trace() -> None:
    # A scheduling point comes before its instruction runs: the thread switched out there runs it
    # only once it has the baton again. A trace that put the write before the switch showed every
    # increment whole while the counter lost one.
    config = controlled_config(seed=1, size=1)
    plan = make_plan(Perturbation.none(), seed=1, trial=0)
    split = 0
    with LocalRunner(builtin("counter/no-lock"), config) as runner:
        for choice in range(40):
            run = runner.run(Control("forced", forced=((choice, 2),)), plan)
            if run.outcome is not Outcome.FAILED:
                continue
            rows = build(run.trace).rows
            # The lost update: a read row of one thread, the other thread's rows, then its write.
            reads = [
                i
                for i, row in enumerate(rows)
                if "read .value" in row.effects() and "write .value" not in row.effects()
            ]
            assert reads, rows
            first = reads[0]
            after = next(i for i in range(first + 1, len(rows)) if rows[i].thread == rows[first].thread)
            assert rows[after].switch
            assert "write .value" in rows[after].effects(), rows
            split += 1
    assert split  # some schedule lost an update


def test_a_deadlock_is_found_the_moment_nobody_can_run() -> None:
    config = controlled_config(seed=1)
    plan = make_plan(Perturbation.none(), seed=1, trial=0)
    with LocalRunner(builtin("deadlock/opposite-order"), config) as runner:
        # thread_1 runs until some choice point, then thread_2 takes over: once thread_1 holds lock_a
        # and has not taken lock_b yet, that ends with both waiting.
        for choice in range(60):
            started = time.perf_counter()
            run = runner.run(Control("forced", forced=((choice, 2),)), plan)
            elapsed = time.perf_counter() - started
            if run.outcome is Outcome.DEADLOCKED:
                break
    assert run.outcome is Outcome.DEADLOCKED
    assert run.evidence is not None
    assert "lock_a" in run.evidence.messages[0]
    assert "lock_b" in run.evidence.messages[0]
    assert any("waits for" in line for line in run.evidence.wait_for)
    assert elapsed < 1.0


def test_a_schedule_past_the_step_limit_is_a_livelock_with_each_threads_position() -> None:
    config = controlled_config(seed=1, step_limit=500)
    plan = make_plan(Perturbation.none(), seed=1, trial=0)
    with LocalRunner(fixture("spin"), config) as runner:
        run = runner.run(Control("random", seed=1, step_limit=500), plan)
    assert run.outcome is Outcome.HUNG
    assert run.evidence is not None
    assert "livelock" in run.evidence.messages[0]
    assert len(run.evidence.blocked_at) == 2
    assert all("controlled_cases.py:41 in waiter" in where for where in run.evidence.blocked_at)


def test_a_long_computation_past_the_step_limit_is_too_long_to_judge_not_a_livelock() -> None:
    # The summing thread changes only its locals; the other polls a list, sleeping. Stopped at the
    # step limit, the schedule was still computing: undecided, never a failure of safe code.
    config = controlled_config(seed=1, step_limit=2000)
    plan = make_plan(Perturbation.none(), seed=1, trial=0)
    with LocalRunner(fixture("long-sum"), config) as runner:
        run = runner.run(Control("random", seed=1, step_limit=2000), plan)
    assert run.outcome is Outcome.UNDECIDED, run.evidence
    assert run.evidence is not None
    assert "still changing state" in run.evidence.messages[0]


def test_sleep_is_virtual_time() -> None:
    config = controlled_config(seed=1)
    plan = make_plan(Perturbation.none(), seed=1, trial=0)
    started = time.perf_counter()
    with LocalRunner(fixture("long-sleeps"), config) as runner:
        runs = [runner.run(Control("random", seed=seed), plan) for seed in range(5)]
    assert time.perf_counter() - started < 5.0  # the threads "sleep" 420 s each time
    assert {r.outcome for r in runs} == {Outcome.PASSED}  # the shorter sleep always wakes first


def test_garbage_collection_is_off_while_a_schedule_runs() -> None:
    import gc

    seen = []

    class Probe:
        def check(self, trial: object) -> None:
            seen.append(gc.isenabled())

    variant = builtin("counter/no-lock")
    probe = Probe()
    wrapped = dataclasses.replace(variant, fn=lambda trial: (probe.check(trial), variant.fn(trial)))
    with LocalRunner(wrapped, controlled_config(seed=1)) as runner:
        runner.run(Control("random", seed=1), make_plan(Perturbation.none(), seed=1, trial=0))
    assert seen == [False]
    assert gc.isenabled()


def test_stress_keeps_its_own_real_sleep_while_the_code_under_tests_is_virtual() -> None:
    # The watchdog's raw thread sleeping through the virtual sleep was taken for the running thread
    # the moment that one finished: a dummy thread, a crashed run, or a schedule called unsupported.
    import types

    from harness.controlled import scheduler as scheduler_module
    from harness.controlled import watchdog

    real = time.sleep
    user = types.ModuleType("user_code_with_its_own_sleep")
    user.sleep = real  # type: ignore[attr-defined]  # ``from time import sleep``
    sys.modules[user.__name__] = user
    seen = []
    variant = builtin("counter/no-lock")

    def body(trial: object) -> None:
        seen.append((watchdog._real_sleep is real, scheduler_module._real_sleep is real, user.sleep is real))
        variant.fn(trial)

    try:
        with LocalRunner(dataclasses.replace(variant, fn=body), controlled_config(seed=1)) as runner:
            runner.run(Control("random", seed=1), make_plan(Perturbation.none(), seed=1, trial=0))
    finally:
        del sys.modules[user.__name__]
    assert seen == [(True, True, False)]
    assert user.sleep is real


# -- how fast bugs are found (seeded; the acceptance figures, with room to spare) ------------------


def median_schedules(variant: Variant, seeds: int = 50, **flags: object) -> float:
    counts = []
    for seed in range(seeds):
        found = first_failure(variant, controlled_config(seed=seed, **flags), limit=400)
        counts.append(found.schedules if found.schedules is not None else 10**6)
    return statistics.median(counts)


@pytest.mark.parametrize(("key", "most"), [("counter/no-lock", 3), ("bank/unsafe", 5), ("deadlock/opposite-order", 5)])
def test_median_schedules_to_the_first_failure(key: str, most: int) -> None:
    assert median_schedules(builtin(key)) <= most


def test_threads_woken_together_overdraw_in_the_first_schedule_and_still_lose_updates() -> None:
    # The head start makes the uninterrupted withdrawals (the overdraft) the likelier order...
    variant = fixture("overdraft-after-a-nap")
    first = [first_failure(variant, controlled_config(seed=seed), limit=50) for seed in range(200)]
    assert sum(found.schedules == 1 for found in first) > 122  # 140; without it, 99
    assert all(found.schedules is not None for found in first)
    # ...and leaves the interrupted ones, the lost update, within easy reach.
    assert median_schedules(fixture("lost-update-after-a-nap")) <= 4


def test_pct_finds_a_race_that_follows_twenty_loop_iterations() -> None:
    variant = fixture("late-race")
    assert median_schedules(variant, strategy="pct") <= 40
    # and within 100 schedules for every seed
    for seed in range(20):
        found = first_failure(variant, controlled_config(seed=seed, strategy="pct"), limit=100)
        assert found.schedules is not None, f"seed {seed}"


# -- the trace ----------------------------------------------------------------------------------------


def test_trace_rows_merge_a_threads_steps_on_a_line_and_mark_switches() -> None:
    code = test_trace_rows_merge_a_threads_steps_on_a_line_and_mark_switches.__code__
    line = code.co_firstlineno
    steps = [("a", None, -line, ""), ("a", None, -line, ""), ("b", None, -line, "x.acquire()"), ("a", None, -line, "")]
    trace = build([(t, code, off, what) for t, _, off, what in steps])
    assert trace.threads == ("a", "b")
    assert [(r.thread, r.steps, r.switch) for r in trace.rows] == [("a", 2, False), ("b", 1, True), ("a", 1, True)]
    assert trace.switches == 2
    assert trace.rows[1].effects() == ("x.acquire()",)
    assert Trace.from_dict(trace.to_dict()) == trace


def test_a_lock_asked_for_and_had_is_told_apart_from_one_only_asked_for() -> None:
    # The acquire's two points — asked for, had — fell in one row each side of a switch and both
    # read "lock_a.acquire()": whether the thread held the lock across the switch did not show.
    asked = Row("a", "f.py", 1, "with lock_a:", 1, False, ("lock_a.acquire()",))
    had = Row("a", "f.py", 1, "with lock_a:", 2, False, ("lock_a.acquire()", "took lock_a"))
    later = Row("a", "f.py", 1, "with lock_a:", 1, True, ("took lock_a",))
    assert asked.effects() == ("lock_a.acquire()",)
    assert had.effects() == ("took lock_a",)
    assert later.effects() == ("took lock_a",)
    # In a deadlock's trace: each thread took its first lock and only asked for its second.
    plan = make_plan(Perturbation.none(), seed=2, trial=0)
    with LocalRunner(builtin("deadlock/opposite-order"), controlled_config(seed=2)) as runner:
        for choice in range(60):
            run = runner.run(Control("forced", forced=((choice, 2),)), plan)
            if run.outcome is Outcome.DEADLOCKED:
                break
    assert run.outcome is Outcome.DEADLOCKED
    said = [effect for row in build(run.trace).rows for effect in row.effects() if "lock" in effect]
    assert sorted(said[-4:]) == ["lock_a.acquire()", "lock_b.acquire()", "took lock_a", "took lock_b"], said


def test_row_effects_say_reads_and_writes_in_words() -> None:
    row = Row(
        "t",
        "f.py",
        3,
        "c.value += 1",
        3,
        False,
        ("LOAD_DEREF c", "LOAD_ATTR value", "BINARY_OP +=", "STORE_ATTR value"),
    )
    assert row.effects() == ("read .value", "write .value")


def _bump(box: list[int], slots: dict[str, int]) -> None:
    box[0] += 1
    del slots["a-key-longer-than-a-note-has-room-for"]


def test_row_effects_name_the_item_a_subscript_reads_or_writes() -> None:
    code = _bump.__code__
    first = code.co_firstlineno
    steps = [("t", code, i.offset, "") for i in dis.get_instructions(code) if i.opname.endswith("_SUBSCR")]
    rows = {row.line - first: row for row in build(steps).rows}
    assert rows[1].effects() == ("read box[0]", "write box[0]")
    assert rows[2].effects() == ("delete an item",)  # too long to show in a note

"""Reused actor threads: a trial sees what a new thread would, and a thread that did not come back is
never handed another trial."""

from __future__ import annotations

import contextvars
import os
import signal
import sys
import threading
import time
import weakref
from pathlib import Path

import pytest

from harness import Perturbation, RunConfig, Scenario, Trial, make_plan, run
from harness.actors import ActorPool, forget_thread_locals
from harness.engine.runner import run_trial
from harness.perturb.preempt import Preemptor
from harness.scope import Scope

module_local = threading.local()


class Counted(threading.local):
    """A local whose ``__init__`` runs once per thread that touches it."""

    def __init__(self) -> None:
        self.visits = 0


counted = Counted()
request_id: contextvars.ContextVar[int] = contextvars.ContextVar("request_id", default=0)


def _round(pool: ActorPool, work: list, names: list[str] | None = None) -> list[threading.Thread]:  # type: ignore[type-arg]
    actors = pool.take(len(work))
    pool.run(actors, names or [f"actor#{i}" for i in range(len(work))], work)
    return actors


def test_a_thread_local_set_in_one_trial_is_not_seen_in_the_next() -> None:
    pool = ActorPool()
    seen: list[tuple[object, int]] = []

    def actor() -> None:
        seen.append((getattr(module_local, "value", None), counted.visits))
        module_local.value = "from an earlier trial"
        counted.visits += 1

    first = _round(pool, [actor, actor])
    second = _round(pool, [actor, actor])
    assert {t.ident for t in first} == {t.ident for t in second}, "the same threads ran both trials"
    assert pool.reused == 2
    assert seen == [(None, 0)] * 4, "every trial's actors start with fresh thread-locals"
    pool.close()


def test_forgetting_locals_runs_a_subclass_init_again() -> None:
    done: list[bool] = []

    def in_a_thread() -> None:
        counted.visits = 5
        module_local.value = 1
        done.append(forget_thread_locals())
        done.append(counted.visits == 0 and not hasattr(module_local, "value"))

    thread = threading.Thread(target=in_a_thread)
    thread.start()
    thread.join()
    assert done == [True, True]


def test_pure_python_thread_locals_are_fresh_too() -> None:
    from _threading_local import local as pure_local

    class Counted(pure_local):
        def __init__(self) -> None:
            self.visits = 0

    plain, counted_here = pure_local(), Counted()
    pool = ActorPool()
    seen: list[tuple[object, int]] = []

    def actor() -> None:
        seen.append((getattr(plain, "value", None), counted_here.visits))
        plain.value = "from an earlier trial"
        counted_here.visits += 1

    for _ in range(3):
        _round(pool, [actor, actor])
    assert seen == [(None, 0)] * 6
    assert pool.reused == 4
    pool.close()


def test_each_trial_has_a_thread_object_of_its_own() -> None:
    pool = ActorPool()
    kept: list[threading.Thread] = []
    marks: list[object] = []
    by_thread: weakref.WeakKeyDictionary[threading.Thread, int] = weakref.WeakKeyDictionary()

    def actor() -> None:
        me = threading.current_thread()
        marks.append(getattr(me, "request_id", None))
        me.request_id = 7  # type: ignore[attr-defined]
        marks.append(by_thread.get(me))
        by_thread[me] = 7
        kept.append(me)

    for _ in range(3):
        _round(pool, [actor])
    assert marks == [None] * 6
    assert pool.reused == 2
    assert len({id(t) for t in kept}) == 3
    assert not any(t.is_alive() for t in kept), "a trial's thread object is dead once its work is done"
    for thread in kept:
        thread.join(1)  # returns at once
    pool.close()


def test_joining_another_actors_thread_waits_for_its_work_not_for_ever() -> None:
    pool = ActorPool()
    ready = threading.Event()
    others: list[threading.Thread] = []
    order: list[str] = []

    def worker() -> None:
        others.append(threading.current_thread())
        ready.set()
        time.sleep(0.05)
        order.append("worker done")

    def coordinator() -> None:
        ready.wait(5)
        others[0].join(5)
        order.append("joined")

    for _ in range(3):
        others.clear()
        ready.clear()
        start = time.monotonic()
        _round(pool, [worker, coordinator], ["worker", "coordinator"])
        assert time.monotonic() - start < 2
    assert order == ["worker done", "joined"] * 3
    assert pool.reused >= 2
    pool.close()


def test_context_variables_are_fresh_in_every_trial() -> None:
    pool = ActorPool()
    seen: list[int] = []

    def actor() -> None:
        seen.append(request_id.get())
        request_id.set(42)

    _round(pool, [actor])
    _round(pool, [actor])
    assert seen == [0, 0]
    pool.close()


def test_names_and_enumerate_are_the_trials_own() -> None:
    pool = ActorPool()
    _round(pool, [lambda: None] * 3)  # three parked threads from now on
    listed: list[list[str]] = []
    names: list[str] = []

    def actor() -> None:
        names.append(threading.current_thread().name)
        listed.append(sorted(t.name for t in threading.enumerate() if t.name.startswith(("increment", "stress"))))

    _round(pool, [actor, actor], ["increment#0", "increment#1"])
    assert sorted(names) == ["increment#0", "increment#1"]
    assert listed[0] == ["increment#0", "increment#1"], "a parked thread is not listed while another trial runs"
    assert not [t for t in threading.enumerate() if t.name.startswith("stress-actor")], "parked threads are hidden"
    pool.close()


def test_a_trace_hook_set_before_the_trial_applies_to_its_actors() -> None:
    pool = ActorPool()
    calls: list[str] = []

    def tracer(frame, event, arg):  # type: ignore[no-untyped-def]
        if event == "call" and frame.f_code.co_name == "traced_work":
            calls.append(threading.current_thread().name)
        return None

    def traced_work() -> None:
        pass

    threading.settrace(tracer)
    try:
        _round(pool, [traced_work])
    finally:
        threading.settrace(None)  # type: ignore[arg-type]
    _round(pool, [traced_work])
    assert calls == ["actor#0"], "traced while the hook was set, not after"
    pool.close()


class _GiveUp(Exception):
    pass


@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="needs signal.pthread_kill")
def test_a_thread_that_did_not_come_back_is_retired_not_reused() -> None:
    pool = ActorPool()
    blocked = threading.Event()
    release = threading.Event()

    def stuck() -> None:
        blocked.set()
        release.wait(10)

    given_up = threading.Event()

    def give_up(signum: int, frame: object) -> None:
        given_up.set()
        raise _GiveUp

    def interrupt() -> None:
        blocked.wait(10)
        # Again until it lands: a signal that arrives while the main thread is between two waits
        # may be merged with one already pending.
        deadline = time.monotonic() + 10
        while not given_up.wait(0.05) and time.monotonic() < deadline:
            signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGUSR1)

    previous = signal.signal(signal.SIGUSR1, give_up)
    helper = threading.Thread(target=interrupt)
    helper.start()
    actors = pool.take(1)
    try:
        with pytest.raises(_GiveUp):
            pool.run(actors, ["stuck"], [stuck])  # the wait is given up while the actor still runs
    finally:
        signal.signal(signal.SIGUSR1, previous)
        helper.join()
    left = actors[0]
    assert left.is_alive()
    assert not release.is_set()
    listed = {t.ident: t.name for t in threading.enumerate()}
    assert listed.get(left.ident) == "stuck", "a thread still running stays listed, as a leaked thread would"
    release.set()
    left.join(5)
    assert not left.is_alive(), "it ended when its work did"
    again = pool.take(1)
    assert again[0] is not left
    assert pool.created == 2
    pool.run(again, ["next"], [lambda: None])
    pool.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_starts_with_no_parked_threads() -> None:
    pool = ActorPool()
    _round(pool, [lambda: None])
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        ok = True
        try:
            taken = pool.take(1)
            pool.run(taken, ["child"], [lambda: None])
            ok = pool.created == 2
        except BaseException:
            ok = False
        os.write(write, b"1" if ok else b"0")
        os._exit(0)
    os.close(write)
    answer = os.read(read, 1)
    os.waitpid(pid, 0)
    os.close(read)
    assert answer == b"1", "the child made a thread of its own instead of waiting on its parent's"
    pool.close()


# -- through the trial runner, as in a worker ---------------------------------------------------

fresh = Scenario("fresh", "Actors that would see an earlier trial's thread-locals if threads were reused")


@fresh.variant(expect="safe")
def local_is_unset(trial: Trial) -> None:
    def actor() -> None:
        earlier = getattr(module_local, "trial", None)
        trial.check(earlier is None, f"saw trial {earlier}'s value")
        trial.check(counted.visits == 0, f"a local subclass kept {counted.visits} visits")
        module_local.trial = trial.plan.trial
        counted.visits += 1

    trial.run_threads(actor, count=2)


def _runs(perturbation: Perturbation, trials: int = 20) -> list[tuple[str, set[int]]]:
    variant = next(iter(fresh))
    scope = Scope(files=list(variant.files))
    preemptor, pool = Preemptor(scope), ActorPool()
    seen = []
    try:
        for number in range(trials):
            plan = make_plan(perturbation, seed=3, trial=number)
            before = {t.ident for t in threading.enumerate()}
            result = run_trial(variant, plan, size=1, preemptor=preemptor, pool=pool)
            seen.append((result.outcome.label, before))
    finally:
        preemptor.close()
        pool.close()
    return seen


def test_trials_on_reused_threads_see_fresh_locals_with_every_knob() -> None:
    outcomes = {label for label, _ in _runs(Perturbation())}
    assert outcomes == {"passed"}


def test_fresh_threads_is_recorded_in_the_plan_and_honoured() -> None:
    plan = make_plan(Perturbation(fresh_threads=True), seed=1, trial=0)
    assert plan.fresh_threads
    assert "fresh threads" in plan.describe()
    variant = next(iter(fresh))
    pool = ActorPool()
    preemptor = Preemptor(Scope(files=list(variant.files)))
    try:
        run_trial(variant, plan, size=1, preemptor=preemptor, pool=pool)
    finally:
        preemptor.close()
    assert pool.created == 0, "with fresh threads the pool is not used"


def test_a_whole_run_reuses_threads_and_keeps_them_fresh(tmp_path: Path) -> None:
    report = run(list(fresh), RunConfig(iterations=200, seed=1, jobs=1), reports=tmp_path)
    summary = report.variants[0]
    assert summary.trials == 200, summary
    assert summary.failures == 0, summary


def test_forgetting_is_fast_enough_to_do_after_every_trial() -> None:
    # A reused thread pays this once per trial; a new thread costs tens of microseconds.
    results: list[float] = []

    def measure() -> None:
        module_local.value = 1
        start = time.perf_counter()
        for _ in range(200):
            module_local.value = 1
            forget_thread_locals()
        results.append((time.perf_counter() - start) / 200)

    thread = threading.Thread(target=measure)
    thread.start()
    thread.join()
    assert results[0] < 0.001, f"{results[0] * 1e6:.0f} µs per call on {sys.version}"


@pytest.mark.skipif(not hasattr(signal, "pthread_sigmask"), reason="no per-thread signal masks")
def test_a_parked_actor_takes_no_signal_and_its_work_takes_them_as_a_new_thread_would() -> None:
    # A timer the code under test arms must reach a thread of the trial (the main thread, blocked,
    # hears of a signal only when it is the one that gets it), never a parked thread of stress's.
    pool = ActorPool()
    masks: list[set[int]] = []

    def actor() -> None:
        masks.append({int(s) for s in signal.pthread_sigmask(signal.SIG_BLOCK, [])})

    actors = _round(pool, [actor])
    assert masks == [set()]  # at work: the mask a new thread would have
    parked = actors[0].native_id
    with open(f"/proc/self/task/{parked}/status") as status:
        blocked = int(next(line for line in status if line.startswith("SigBlk:")).split()[1], 16)
    assert blocked & (1 << (signal.SIGALRM - 1))  # parked: SIGALRM goes elsewhere
    pool.close()


@pytest.mark.skipif(not hasattr(signal, "pthread_sigmask"), reason="threads have no signal masks here")
def test_an_actor_starts_its_work_with_the_signal_mask_of_the_thread_that_runs_the_trial() -> None:
    # As a new thread inherits its creator's mask: an actor first made while the body blocked a
    # signal must not keep it blocked in later trials (a handler would never run there).
    pool = ActorPool()

    def mask() -> set[int]:
        return {int(s) for s in signal.pthread_sigmask(signal.SIG_BLOCK, [])}

    seen: list[set[int]] = []
    try:
        old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
        try:
            pool.run(pool.take(1), ["a"], [lambda: seen.append(mask())])
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
        pool.run(pool.take(1), ["a"], [lambda: seen.append(mask())])
    finally:
        pool.close()
    assert int(signal.SIGUSR1) in seen[0]
    assert int(signal.SIGUSR1) not in seen[1]

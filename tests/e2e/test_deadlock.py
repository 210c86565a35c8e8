"""`stress run deadlock`, as a user types it: the cycle, the lock-order analysis, and the costs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import FIXTURES, stress, summary, variant


def test_opposite_order_deadlocks_with_the_cycle_and_safe_strategies_hold(tmp_path: Path) -> None:
    out = stress("run", "deadlock", "--iterations", "300", "--seed", "1", "--out", "run", cwd=tmp_path)
    assert out.code == 0, out.stdout + out.stderr
    data = summary(tmp_path / "run")
    opposite = variant(data, "opposite-order")
    assert opposite["outcomes"].get("deadlocked", 0) >= 0.2 * 300
    assert opposite["ci95"][0] >= 0.2
    evidence = opposite["example"]["evidence"]
    assert "thread_1 waits for lock_" in evidence["messages"][0]
    assert "held by thread_2" in evidence["messages"][0]
    assert any("deadlock.py:" in line and "took it at" in line for line in evidence["wait_for"])
    assert opposite["example"]["duration"] < 0.5  # detected when the cycle closed, not timed out
    for safe in ("global-order", "timeout-backoff", "coarse-lock"):
        assert variant(data, safe)["failures"] == 0
        assert variant(data, safe)["potential_deadlocks"] == []
    assert "thread_1 waits for lock_" in out.stdout


SEQUENTIAL = """
import threading

from harness import Scenario, Trial

scenario = Scenario("turns", "Opposite lock orders, but the threads take turns")


@scenario.variant(expect="unsafe")
def opposite_order_in_turns(trial: Trial) -> None:
    \"\"\"thread_2 starts its transfer only after thread_1 finished: no trial can deadlock.\"\"\"
    lock_a = threading.Lock()
    lock_b = threading.Lock()
    first_done = threading.Event()

    def thread_1() -> None:
        with lock_a:
            with lock_b:
                pass
        first_done.set()

    def thread_2() -> None:
        first_done.wait()
        with lock_b:
            with lock_a:
                pass

    with trial.threads() as group:
        group.start(thread_1)
        group.start(thread_2)


@scenario.variant(expect="unsafe")
def same_name_in_turns(trial: Trial) -> None:
    \"\"\"Two threads the code names alike, taking turns: still two threads.\"\"\"
    lock_a = threading.Lock()
    lock_b = threading.Lock()
    first_done = threading.Event()

    def forward() -> None:
        with lock_a:
            with lock_b:
                pass
        first_done.set()

    def backward() -> None:
        first_done.wait()
        with lock_b:
            with lock_a:
                pass

    threads = [threading.Thread(target=work, name="worker") for work in (forward, backward)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
"""


def test_lock_order_flags_opposite_order_even_when_no_trial_deadlocks(tmp_path: Path) -> None:
    (tmp_path / "turns.py").write_text(SEQUENTIAL)
    out = stress("run", "turns.py", "--iterations", "200", "--seed", "1", "--out", "run", cwd=tmp_path)
    assert out.code == 0, out.stdout + out.stderr
    data = summary(tmp_path / "run")
    for name, threads in (("opposite-order-in-turns", ["thread_1", "thread_2"]), ("same-name-in-turns", ["worker"])):
        turns = variant(data, name)
        assert turns["failures"] == 0  # the threads never hold a lock at the same time
        (potential,) = turns["potential_deadlocks"]
        assert sorted(potential["cycle"]) == ["lock_a", "lock_b"]
        assert len(potential["paths"]) == 2
        assert all("turns.py:" in path for path in potential["paths"])
        assert all(path.startswith(tuple(threads)) for path in potential["paths"])
        assert turns["verdict"] == "exposed"
    assert "Potential deadlocks" in out.stdout


def test_the_built_in_opposite_order_is_flagged_without_perturbation(tmp_path: Path) -> None:
    out = stress(
        "run", "deadlock", "--iterations", "100", "--seed", "1", "--no-perturbation", "--out", "run", cwd=tmp_path
    )
    assert out.code == 0, out.stdout + out.stderr
    opposite = variant(summary(tmp_path / "run"), "opposite-order")
    (potential,) = opposite["potential_deadlocks"]
    assert sorted(potential["cycle"]) == ["lock_a", "lock_b"]
    assert opposite["verdict"] == "exposed"


def test_opposite_orders_a_start_or_join_keeps_apart_are_no_potential_deadlock(tmp_path: Path) -> None:
    # Phases joined before the next starts, the body's locks before it starts its actor, one
    # executor worker, tasks awaited before the next is submitted, one thread handed both orders:
    # no interleaving lets two threads hold one lock each of the cycle. All were called
    # DEADLOCK-PRONE; the hand-off also stalled its taker, and a module-level executor's idle worker
    # was called a leaked thread (every trial an error). And a module's lock one variant keeps
    # held is not held in another variant's trials (they were called deadlocked).
    out = stress(
        "run", str(FIXTURES / "lock_phases.py"), "-n", "300", "--seed", "4", "--out", "run", cwd=tmp_path
    )  # fmt: skip
    data = summary(tmp_path / "run")
    found = {v["name"]: (v["verdict"], len(v["potential_deadlocks"]), v["outcomes"]) for v in data["variants"]}
    beside = found.pop("body-beside-its-actor")
    assert beside[:2] == ("exposed", 1), beside  # the cycle the body and its actor can close
    assert all(verdict == "held" and not potential for verdict, potential, _ in found.values()), found
    assert out.code == 0, out.stdout[-3000:]


def test_a_variant_that_leaves_a_module_pools_workers_deadlocked_does_not_hang_the_next(tmp_path: Path) -> None:
    # The workers of a module-level executor outlive every trial: two of them left deadlocked by
    # one variant made a later trial of a safe variant, on the same worker process, hang (17 of
    # 200). The worker process is replaced after such a trial.
    out = stress("run", str(FIXTURES / "stranded.py"), "-n", "200", "--seed", "2", "--out", "run", cwd=tmp_path)
    data = summary(tmp_path / "run")
    verdicts = {v["name"]: (v["verdict"], v["outcomes"]) for v in data["variants"]}
    assert verdicts["one-task-at-a-time"] == ("held", {"passed": 200}), verdicts
    assert verdicts["opposite-orders-on-the-pool"][0] == "exposed", verdicts
    assert out.code == 0, out.stdout[-3000:]


@pytest.mark.parametrize("knobs", [(), ("--no-perturbation",)], ids=["default", "no-perturbation"])
def test_a_lock_another_thread_releases_is_no_deadlock(tmp_path: Path, knobs: tuple[str, ...]) -> None:
    # A thread waiting for a plain lock it took itself is stuck only if nobody else can release it:
    # a Timer, a raw `_thread` thread or another actor here does (964 of 1000 trials were called
    # deadlocked before).
    out = stress(
        "run", str(FIXTURES / "handoffs.py"), "-n", "300", "--seed", "9", *knobs, "--out", "run", cwd=tmp_path
    )  # fmt: skip
    data = summary(tmp_path / "run")
    verdicts = {v["name"]: (v["verdict"], v["outcomes"]) for v in data["variants"]}
    assert all(verdict == "held" for verdict, _ in verdicts.values()), verdicts
    assert out.code == 0, out.stdout[-3000:]


def test_controlled_mode_calls_a_wait_only_an_unscheduled_thread_can_end_unsupported(tmp_path: Path) -> None:
    # A raw `_thread` thread and a signal handler run outside the schedule: when every thread the
    # scheduler runs waits, one of them may still end a wait. Not a deadlock: unsupported.
    # Those that visibly arm a signal timer are refused before anything runs.
    refused = stress("run", str(FIXTURES / "handoffs.py"), "--mode", "controlled", "-n", "3", cwd=tmp_path)
    assert refused.code == 2
    assert "handoffs/signal-handler-releases, which arms a signal timer at handoffs.py:" in refused.stderr
    assert "handoffs/timer-sets-event-actors-wait, which arms a signal timer at handoffs.py:" in refused.stderr
    others = refused.stderr.rsplit(" with ", 1)[1].split()
    out = stress(
        "run", str(FIXTURES / "handoffs.py"), *others, "--mode", "controlled", "-n", "20", "--seed", "3",
        "--out", "run", cwd=tmp_path,
    )  # fmt: skip
    data = summary(tmp_path / "run")
    verdicts = {v["name"]: v["verdict"] for v in data["variants"]}
    assert verdicts == {
        "timer-releases": "held",
        "raw-thread-latch": "unsupported",
        "raw-thread-known-to-threading": "unsupported",
        "actor-hands-off": "held",
        "one-thread-both-orders": "unsupported",
        "actor-signals-the-process": "unsupported",
    }, verdicts
    assert out.code == 0, out.stdout[-3000:]


def test_a_thread_from_before_the_trial_that_will_set_the_event_is_no_deadlock(tmp_path: Path) -> None:
    # A module starts a background flusher on first use; each actor asks it to flush and waits
    # for its event. The flusher is not the trial's thread, but it is not stuck either: with the
    # deadlock's second look 0.1 ms after the first, this was called deadlocked in 198 of 200 trials.
    args = ("-V", "flush-and-wait", "-n", "200", "--seed", "1", "--out", "run")
    out = stress("run", str(FIXTURES / "flusher.py"), *args, cwd=tmp_path)
    entry = variant(summary(tmp_path / "run"), "flush-and-wait")
    assert entry["verdict"] == "held", out.stdout
    assert entry["failures"] == 0, out.stdout


def test_threads_a_module_starts_at_import_run_in_every_worker(tmp_path: Path) -> None:
    # Workers are forked after the scenario file is imported, and a fork copies no thread: each
    # trial waited for a server that was not there (deadlocked, 300 of 300), or for a lock the fork
    # copied held. Each worker imports the project again, the modules that start no thread too:
    # re-running only the importers of the threads added the scenario file's handler to a helper's
    # registry twice, and each event was handled twice (failed, 200 of 200).
    out = stress("run", str(FIXTURES / "import_threads.py"), "-n", "200", "--seed", "1", "--out", "run", cwd=tmp_path)
    data = summary(tmp_path / "run")
    for name in ("reply", "share-the-ticker-lock", "reply-through-a-helper", "publish-to-the-registry"):
        assert variant(data, name)["verdict"] == "held", out.stdout


@pytest.mark.parametrize("mode", ["stress", "controlled"])
def test_a_deadlock_beside_a_module_thread_leaves_it_to_the_next_trial(tmp_path: Path, mode: str) -> None:
    # A deadlock's abort unwound every wait of the trial, the module's flusher's too: every later
    # trial of its process put work into a queue nobody read, and a safe variant was deadlocked in
    # 100 of 100 trials. A thread from before the trial is left waiting; one the trial started and
    # the abort ended sends the next trial to a fresh worker.
    args = ("-n", "15", "--seed", "2", "--mode", mode, "--out", "run")
    out = stress("run", str(FIXTURES / "flusher.py"), *args, cwd=tmp_path)
    data = summary(tmp_path / "run")
    assert variant(data, "wait-for-nobody")["verdict"] == "exposed", out.stdout
    assert variant(data, "flush-and-wait")["verdict"] == "held", out.stdout


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_task_waiting_on_its_own_executor_is_a_deadlock_and_safe_futures_are_not(tmp_path: Path, jobs: str) -> None:
    # A future's result() is a wait the graph sees: a task waiting for a task queued behind it on
    # its one-worker executor was a hang at the deadline (2 s a trial); it is a deadlock at once.
    # The module pool's worker is not the trial's to unwind: its worker process is replaced, or
    # every later trial of it (the safe flat variant's) waited behind the stuck task.
    args = ("-n", "30", "--seed", "3", "-j", jobs, "--out", "run")
    out = stress("run", str(FIXTURES / "futures.py"), *args, cwd=tmp_path, timeout=600)
    data = summary(tmp_path / "run")
    nested = variant(data, "nested-on-the-module-pool")
    assert nested["outcomes"] == {"deadlocked": 30}, out.stdout
    assert (
        "queued on ThreadPoolExecutor-0 behind itself, its only worker" in nested["example"]["evidence"]["messages"][0]
    )
    assert variant(data, "never-set")["outcomes"] == {"deadlocked": 30}, out.stdout
    assert variant(data, "waits-for-all-on-its-own-pool")["outcomes"] == {"deadlocked": 30}, out.stdout
    for name in ("flat-on-the-module-pool", "nested-on-two-workers", "set-by-a-timer",
                 "set-by-an-actor-after-an-event", "process-pool", "waits-for-the-first-from-outside"):  # fmt: skip
        entry = variant(data, name)
        assert entry["verdict"] == "held", (name, out.stdout)
        assert entry["outcomes"] == {"passed": 30}, (name, out.stdout)

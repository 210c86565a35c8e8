"""Controlled mode from the command line: find, shrink, show, replay, and explore exhaustively."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import FIXTURES, results, stress, summary, variant


@pytest.fixture(scope="module")
def counter_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    work = tmp_path_factory.mktemp("controlled")
    out = stress(
        "run", "counter", "--mode", "controlled", "-n", "60", "--seed", "3", "-j", "2", "--out", "run", cwd=work
    )
    return work, out


def failing_record(run_dir: Path, name: str) -> dict[str, Any]:
    return next(r for r in results(run_dir) if r["variant"] == name and r.get("schedule", {}).get("minimal"))


def test_a_controlled_run_finds_shrinks_and_shows_the_interleaving(counter_run: tuple[Path, Any]) -> None:
    work, out = counter_run
    assert out.code == 0, out.stderr
    assert "controlled (random walk + PCT d=3)" in out.stdout
    assert "shrunk" in out.stdout
    assert "⇄" in out.stdout  # the context switches of the trace
    assert "stress replay run --variant no-lock --trial" in out.stdout
    data = summary(work / "run")
    assert variant(data, "no-lock")["verdict"] == "exposed"
    assert variant(data, "lock")["failures"] == 0
    assert variant(data, "local-sum")["failures"] == 0
    html = (work / "run" / "report.html").read_text()
    assert '<table class="trace">' in html
    assert "stress replay run --variant no-lock" in re.sub(r"<[^>]+>", "", html)  # the page's text


def test_the_shrunk_lost_update_is_read_then_whole_increment_then_write(counter_run: tuple[Path, Any]) -> None:
    work, _ = counter_run
    record = failing_record(work / "run", "counter/no-lock")["schedule"]
    trace = record["trace"]
    assert trace["switches"] <= 2
    rows = [(thread, switch, ops) for thread, _file, _line, _code, _steps, switch, ops in trace["rows"]]
    first = rows[0][0]
    # first thread: reads the value, then is switched out before it writes
    before = [ops for thread, _, ops in rows[: next(i for i, r in enumerate(rows) if r[1])]]
    assert any("LOAD_ATTR value" in ops for ops in before)
    assert not any("STORE_ATTR value" in ops for ops in before)
    # the other thread runs its whole increment; the first then writes its stale value
    other = [ops for thread, _, ops in rows if thread != first]
    assert any("LOAD_ATTR value" in ops for ops in other)
    assert any("STORE_ATTR value" in ops for ops in other)
    last_first = [ops for thread, _, ops in rows if thread == first][-2:]
    assert any("STORE_ATTR value" in ops for ops in last_first)


def test_replay_reproduces_ten_times_out_of_ten(counter_run: tuple[Path, Any]) -> None:
    work, _ = counter_run
    for name in ("no-lock", "split-lock"):
        out = stress("replay", "run", "--variant", name, "--times", "10", cwd=work)
        assert out.code == 0, out.stdout + out.stderr
        assert "reproduced 10/10" in out.stdout
        assert "lost 1 increment" in out.stdout


def test_replay_of_the_original_schedule_and_of_a_given_one(counter_run: tuple[Path, Any]) -> None:
    work, _ = counter_run
    record = failing_record(work / "run", "counter/no-lock")
    out = stress("replay", "run", "--variant", "no-lock", "--trial", str(record["trial"]), "--original", cwd=work)
    assert out.code == 0, out.stdout + out.stderr
    assert record["schedule"]["schedule"] in out.stdout
    assert "reproduced 1/1" in out.stdout
    # One count of switches everywhere: the replay of the shrunk schedule says as many as the run's
    # "shrunk" line and its trace's marks (it said 4 where they said 2: it also counted the scheduler's
    # hand-overs to and from the variant body).
    assert record["switches"] == record["schedule"]["switches"]  # results.jsonl's two fields agree
    shrunk = stress("replay", "run", "--variant", "no-lock", "--trial", str(record["trial"]), cwd=work)
    switches = record["schedule"]["trace"]["switches"]
    assert f"{switches} context switch{'es' if switches != 1 else ''}" in shrunk.stdout, shrunk.stdout
    assert shrunk.stdout.count("⇄") == switches, shrunk.stdout
    default = stress("replay", "run", "--variant", "no-lock", "--schedule", "v2:", cwd=work)
    assert default.code == 0, default.stderr
    assert "passed" in default.stdout  # the non-preemptive schedule loses nothing
    assert "nothing to compare" in default.stdout


def test_replay_pdb_stops_at_the_failing_check(counter_run: tuple[Path, Any], tmp_path: Path) -> None:
    import subprocess

    from tests.helpers import stress_command

    work, _ = counter_run
    done = subprocess.run(
        [*stress_command(), "replay", "run", "--variant", "no-lock", "--pdb"],
        cwd=work,
        input="p counter.value\np expected\nc\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "stopping in the debugger at the failing check" in done.stderr
    assert re.search(r"\(Pdb\) 1\n", done.stdout)  # the counter lost an increment: 1, not 2
    assert re.search(r"\(Pdb\) 2\n", done.stdout)


def test_exhaustive_search_proves_the_safe_variants_within_two_preemptions(tmp_path: Path) -> None:
    safe = ["counter/lock", "counter/local-sum", "bank/lock", "deadlock/coarse-lock", "deadlock/global-order"]
    flags = [arg for name in safe for arg in ("--variant", name)]
    out = stress(
        "run", "counter", "bank", "deadlock", *flags, "--mode", "controlled", "--max-preemptions", "2", "--out", "x",
        cwd=tmp_path,
        timeout=300,
    )  # fmt: skip
    assert out.code == 0, out.stdout + out.stderr
    data = summary(tmp_path / "x")
    assert data["complete"]
    for name in safe:
        entry = variant(data, name)
        assert entry["failures"] == 0
        assert entry["exploration"]["complete"]
        schedules = entry["exploration"]["schedules"]
        assert schedules == entry["trials"] > 10
        assert f"{name}: all {schedules:,} schedules within 2 preemptions explored, none failed" in out.stdout


def test_exhaustive_search_of_an_unsafe_variant_counts_its_failing_schedules(tmp_path: Path) -> None:
    out = stress(
        "run", "counter", "--variant", "no-lock", "--mode", "controlled", "--max-preemptions", "1", "--out", "x",
        cwd=tmp_path,
    )  # fmt: skip
    assert out.code == 0, out.stderr
    entry = variant(summary(tmp_path / "x"), "no-lock")
    assert entry["exploration"] == {"preemptions": 1, "schedules": entry["trials"], "complete": True}
    assert 0 < entry["failures"] < entry["trials"]
    assert "of all" in out.stdout  # an exact share, not an estimate


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("run", "counter", "--mode", "chaos"), "--mode chaos: use one of stress, controlled"),
        (("run", "counter", "--mode", "controlled", "--strategy", "dfs"), "use one of mixed, random, pct"),
        (("run", "counter", "--max-preemptions", "2"), "needs --mode controlled"),
        (("run", "counter", "--mode", "controlled", "--preempt", "0.1"), "does nothing in controlled mode"),
        (("run", "pipe", "--mode", "controlled"), "pipe: its actors are processes"),
        (("run", "counter", "--mode", "controlled", "--max-preemptions", "-1"), "must be an integer >= 0"),
        (("replay", "nowhere"), "is not a run folder"),
    ],
)
def test_controlled_mode_refuses_what_it_cannot_do(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    out = stress(*args, cwd=tmp_path)
    assert out.code == 2, out.stdout
    assert message in out.stderr
    assert "Traceback" not in out.stderr


def test_replay_refuses_a_stress_mode_run_and_bad_schedules(counter_run: tuple[Path, Any], tmp_path: Path) -> None:
    plain = stress("run", "counter", "--variant", "lock", "-n", "5", "--out", "plain", cwd=tmp_path)
    assert plain.code == 0, plain.stderr
    refused = stress("replay", "plain", cwd=tmp_path)
    assert refused.code == 2
    assert "stress-mode run" in refused.stderr
    work, _ = counter_run
    garbage = stress("replay", "run", "--variant", "no-lock", "--schedule", "v2:9-1", cwd=work)
    assert garbage.code == 2
    assert "is not CHOICE>THREAD" in garbage.stderr
    clean = stress("replay", "run", "--variant", "lock", cwd=work)
    assert clean.code == 2
    assert "nothing to replay" in clean.stderr
    for schedule, said in (
        ("v2:9999>1", "choice point 9999 is past the end: the run had "),
        ("v2:3>7", "there is no thread 7 (the threads: 0 MainThread, 1 increment#0, 2 increment#1)"),
        ("v2:3>0", "thread 0 (MainThread) cannot run at choice point 3"),
    ):
        wrong = stress("replay", "run", "--variant", "no-lock", "--schedule", schedule, cwd=work)
        assert wrong.code == 2, wrong.stdout + wrong.stderr
        assert said in wrong.stderr
        assert len(wrong.stderr.strip().splitlines()) == 1


def test_line_granularity_cannot_split_a_line_but_still_splits_lines(tmp_path: Path) -> None:
    """`counter.value += 1` is one line: switching only at line starts can never interleave inside
    it, so the lost update needs opcode granularity; split-lock's read and write are on two lines."""
    out = stress(
        "run", "counter", "--variant", "no-lock", "--variant", "split-lock", "--mode", "controlled",
        "--granularity", "line", "--max-preemptions", "2", "--out", "x",
        cwd=tmp_path,
    )  # fmt: skip
    assert out.code == 0, out.stderr
    data = summary(tmp_path / "x")
    assert variant(data, "no-lock")["failures"] == 0
    assert variant(data, "split-lock")["failures"] > 0
    assert "line by line" in out.stdout


def test_a_schedule_that_fails_before_any_step_shows_no_empty_interleaving(tmp_path: Path) -> None:
    (tmp_path / "at_once.py").write_text(
        "from harness import Scenario\n\n"
        "scenario = Scenario('at-once', 'Fails before any thread runs')\n\n\n"
        "@scenario.variant(expect='unsafe')\n"
        "def fails(trial):\n"
        "    trial.check(False, 'broken from the start')\n"
    )
    out = stress(
        "run", "at_once.py", "--mode", "controlled", "-n", "2", "--seed", "1", "--out", "run",
        "--markdown", "summary.md", cwd=tmp_path,
    )  # fmt: skip
    assert out.code == 0, out.stdout + out.stderr
    markdown = (tmp_path / "summary.md").read_text()  # counts schedules, as the terminal does
    assert "2 schedules in" in markdown
    assert "| expect | schedules |" in markdown
    assert "Replay a failing schedule" in markdown
    assert "trials" not in markdown  # (stress replay's option is still --trial)
    assert "broken from the start" in out.stdout
    assert "schedules tried" not in out.stdout  # one was: "1 schedule tried"
    assert "─" * 20 not in out.stdout.split("Example failures", 1)[1].split("replay", 1)[0]  # no empty table
    html = (tmp_path / "run" / "report.html").read_text()
    assert '<table class="trace">' not in html


_BY_MULTIPROCESSING = (
    "def work(results):\n"
    "    results.put(1)\n\n\n"
    "@scenario.variant(expect='safe')\n"
    "def get_then_join(trial):\n"
    "    results = trial.mp.Queue()\n"
    "    child = trial.mp.Process(target=work, args=(results,))\n"
    "    child.start()\n"
    "    trial.check(results.get() == 1, 'no result')\n"
    "    child.join()\n"
)
_BY_A_NAME_BOUND_AT_IMPORT = (
    "import os\n"
    "from os import fork\n\n\n"
    "@scenario.variant(expect='safe')\n"
    "def get_then_join(trial):\n"
    "    pid = fork()\n"
    "    if pid == 0:\n"
    "        os._exit(0)\n"
    "    trial.check(os.waitpid(pid, 0)[1] == 0, 'the child failed')\n"
)


@pytest.mark.parametrize("body", [_BY_MULTIPROCESSING, _BY_A_NAME_BOUND_AT_IMPORT], ids=["mp", "from-os-import-fork"])
def test_a_variant_that_starts_a_process_is_not_offered_and_refused(tmp_path: Path, body: str) -> None:
    # The child would run outside every schedule: they would prove nothing about it.
    (tmp_path / "child.py").write_text(
        "from harness import Scenario\n\nscenario = Scenario('child', 'The body starts a process and waits')\n\n\n"
        + body
    )
    listed = stress("list", "child.py", cwd=tmp_path)
    assert listed.code == 0, listed.stderr
    assert "(stress mode only)" in listed.stdout
    assert "--mode controlled" not in listed.stdout
    out = stress("run", "child.py", "--mode", "controlled", "-n", "3", "--out", "run", cwd=tmp_path)
    assert out.code == 2, out.stdout
    assert "cannot run child/get-then-join, which starts a process at child.py:" in out.stderr
    assert "Run it in stress mode" in out.stderr
    assert not (tmp_path / "run").exists()


def test_a_file_offers_controlled_mode_for_its_thread_scenarios_and_refuses_only_its_process_variants(
    tmp_path: Path,
) -> None:
    (tmp_path / "mixed.py").write_text(
        "import multiprocessing\nimport threading\n\nfrom harness import Scenario\n\n"
        "threads = Scenario('threads', 'Only threads')\nmixed = Scenario('mixed', 'Threads and a process')\n\n\n"
        "@threads.variant(expect='safe')\ndef locked(trial):\n    with threading.Lock():\n        pass\n\n\n"
        "@mixed.variant(expect='safe')\ndef thread(trial):\n    trial.run_threads(lambda: None)\n\n\n"
        "def _spawn():\n    child = multiprocessing.Process(target=print)\n    child.start()\n    child.join()\n\n\n"
        "@mixed.variant(expect='safe')\ndef process(trial):\n    _spawn()\n"
    )
    listed = stress("list", "mixed.py", cwd=tmp_path)
    assert "Only threads" in listed.stdout
    assert "(stress mode only)" not in listed.stdout.split("process", 1)[0]  # no scenario as a whole
    assert re.search(r"process +safe +\(stress mode only\)", listed.stdout), listed.stdout  # the variant
    assert "stress run mixed.py::threads --mode controlled" in listed.stdout  # a command that runs
    out = stress("run", "mixed.py", "--mode", "controlled", "-n", "3", cwd=tmp_path)
    assert out.code == 2
    assert "cannot run mixed/process, which starts a process at mixed.py:22 (multiprocessing.Process)" in out.stderr
    others = "--variant mixed/thread --variant threads/locked"
    assert f"the others run in controlled mode with {others}" in out.stderr
    ok = stress("run", "mixed.py", "--mode", "controlled", "-n", "3", *others.split(), cwd=tmp_path)
    assert ok.code == 0, ok.stdout + ok.stderr


def test_a_variant_that_arms_a_signal_timer_is_refused(tmp_path: Path) -> None:
    # Its handler runs when the timer fires, where no schedule put it: replaying a schedule of it
    # differed 8 times in 10, and schedules that never chose when it ran called it "held".
    (tmp_path / "timer.py").write_text(
        "import signal\n\nfrom harness import Scenario\n\nscenario = Scenario('timer', 'A timer guards the work')\n\n\n"
        "@scenario.variant(expect='safe')\ndef guarded(trial):\n    signal.setitimer(signal.ITIMER_REAL, 30)\n"
        "    signal.setitimer(signal.ITIMER_REAL, 0)\n"
    )
    assert "(stress mode only)" in stress("list", "timer.py", cwd=tmp_path).stdout
    out = stress("run", "timer.py", "--mode", "controlled", "-n", "3", cwd=tmp_path)
    assert out.code == 2
    assert "cannot run timer/guarded, which arms a signal timer at timer.py:10 (signal.setitimer)" in out.stderr


UNSCHEDULED = str(FIXTURES / "unscheduled.py")


@pytest.fixture(scope="module")
def unscheduled_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    work = tmp_path_factory.mktemp("unscheduled")
    out = stress("run", UNSCHEDULED, "--mode", "controlled", "-n", "6", "--seed", "1", "--out", "run", cwd=work)
    return work, out


def test_a_schedule_that_a_process_or_a_signal_timer_decides_is_unsupported_not_held(
    unscheduled_run: tuple[Path, Any],
) -> None:
    # What the scheduler does not run or time — a process started out of the code's sight, the
    # handler of a signal timer — makes the schedule prove nothing: never "held".
    work, out = unscheduled_run
    report = summary(work / "run")
    assert variant(report, "process-started-out-of-sight")["verdict"] == "unsupported", out.stdout
    assert variant(report, "timer-then-one-order")["verdict"] == "unsupported", out.stdout
    assert variant(report, "ignored-timer")["verdict"] == "held"  # an ignored signal runs no handler
    words = " ".join(out.stdout.split())
    assert (
        "armed a signal timer (signal.setitimer(ITIMER_REAL)) whose handler is Python code at unscheduled.py:" in words
    )
    assert "the controlled scheduler does not choose when a signal's handler runs" in words


def test_a_deadlock_after_the_scheduler_let_go_is_found_and_its_replay_is_not_called_exact(
    unscheduled_run: tuple[Path, Any],
) -> None:
    # Let go of, the threads wait as in stress mode, judged by the wait-for graph: the deadlock is
    # found at once (it was left to the deadline, and judged undecided). Its schedule did not fix
    # it, so it is not shrunk, and a replay says how often it failed, not "exact".
    work, out = unscheduled_run
    entry = variant(summary(work / "run"), "process-then-opposite-orders")
    assert entry["verdict"] == "exposed", out.stdout
    assert entry["outcomes"].get("deadlocked", 0) == entry["trials"], entry
    record = next(r for r in results(work / "run") if r["variant"] == "unscheduled/process-then-opposite-orders")
    assert "started the process" in record["schedule"]["unscheduled"]
    assert "minimal" not in record["schedule"]
    assert record["duration"] < 5, record  # not left to a deadline
    text = " ".join(out.stdout.split())
    assert "inexact MainThread started the process" in text
    assert "a replay repeats this failure only by chance" in text
    assert "--trial 0 --times 20" in text
    again = stress("replay", "run", "--variant", "process-then-opposite-orders", "--times", "3", cwd=work)
    assert again.code == 0, again.stdout + again.stderr
    assert "deadlocked in 3 of 3 replays, as stored" in again.stdout
    assert "not exact: MainThread started the process" in " ".join(again.stdout.split())
    assert "reproduced" not in again.stdout


def test_a_thread_the_code_left_running_ends_with_its_schedule_and_its_worker(tmp_path: Path) -> None:
    # A module's flusher, started on first use, is ended when the schedule that started it ends;
    # the module still counted on it, and every later schedule in that process was deadlocked
    # (98 of 100). The worker is replaced instead.
    args = ("-V", "flush-and-wait", "--mode", "controlled", "-n", "20", "--seed", "1", "--out", "run")
    out = stress("run", str(FIXTURES / "flusher.py"), *args, cwd=tmp_path)
    entry = variant(summary(tmp_path / "run"), "flush-and-wait")
    assert entry["verdict"] == "held", out.stdout
    assert entry["failures"] == 0, out.stdout


def test_replay_finds_a_scenario_file_from_any_folder(tmp_path: Path) -> None:
    # The run stored the file as typed, relative to where it started: replay looked for it in the
    # current folder, and failed from any other one.
    work = tmp_path / "project"
    work.mkdir()
    (work / "lost.py").write_text(
        "from harness import Scenario\n\nscenario = Scenario('lost', 'A lost update')\n\n\n"
        "@scenario.variant(expect='unsafe')\ndef unlocked(trial):\n    box = [0]\n\n"
        "    def add():\n        box[0] += 1\n\n    trial.run_threads(add, count=2)\n"
        "    trial.check(box[0] == 2, f'box {box[0]}')\n"
    )
    out = stress("run", "lost.py", "--mode", "controlled", "-n", "30", "--seed", "1", "--out", "run", cwd=work)
    assert out.code == 0, out.stdout + out.stderr
    again = stress("replay", str(work / "run"), cwd=tmp_path)
    assert again.code == 0, again.stdout + again.stderr
    assert "reproduced 1/1" in again.stdout


def test_a_lock_left_held_by_a_finished_thread_is_explained_in_controlled_mode_too(tmp_path: Path) -> None:
    # It said "all 2 threads wait, and none of them can wake another": the holder and where it
    # took the lock are the explanation, as in stress mode.
    (tmp_path / "kept.py").write_text(
        "import threading\nfrom harness import Scenario\ns = Scenario('kept', 'a lock left held')\n\n\n"
        "@s.variant(expect='unsafe')\ndef left_held(trial):\n    lock = threading.Lock()\n\n"
        "    def taker():\n        lock.acquire()\n\n    def waiter():\n        with lock:\n            pass\n\n"
        "    with trial.threads() as group:\n        group.start(taker)\n        group.start(waiter)\n"
    )
    out = stress("run", "kept.py", "--mode", "controlled", "-n", "30", "--seed", "3", "--out", "run", cwd=tmp_path)
    assert out.code == 0, out.stdout + out.stderr
    deadlocked = [r for r in results(tmp_path / "run") if r["outcome"] == "deadlocked"]
    assert deadlocked
    assert deadlocked[0]["evidence"]["messages"][0].startswith(
        "waiter waits for lock held by taker, which took it at kept.py:11 in taker and finished without releasing it"
    ), deadlocked[0]["evidence"]


def test_actors_keep_their_names_in_the_potential_deadlocks_of_a_controlled_run(tmp_path: Path) -> None:
    # Their names' numbers were taken for the process's thread count ("Thread-3"): thread_1 and
    # thread_2 were one role, and the second was shown as "thread_2·2".
    out = stress(
        "run", "deadlock", "--variant", "opposite-order", "--mode", "controlled", "-n", "50", "--seed", "2",
        cwd=tmp_path,
    )  # fmt: skip
    assert out.code == 0, out.stdout + out.stderr
    assert "thread_2 took lock_b at deadlock.py:" in out.stdout
    assert "·2" not in out.stdout

"""The command line as a user types it: listing, showing, running, exit codes, bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.helpers import FIXTURES, results, stress, summary, variant


def test_list_shows_every_builtin_scenario_and_variant(tmp_path: Path) -> None:
    out = stress("list", cwd=tmp_path)
    assert out.code == 0, out.stderr
    for name in ("counter", "no-lock", "lock", "bank", "unsafe", "check-locked-only"):
        assert name in out.stdout
    assert "safe" in out.stdout
    assert "unsafe" in out.stdout


def test_list_of_a_user_file(tmp_path: Path) -> None:
    out = stress("list", str(FIXTURES / "misbehaving.py"), cwd=tmp_path)
    assert out.code == 0, out.stderr
    assert "misbehaving" in out.stdout
    assert "never-fails" in out.stdout


def test_show_prints_description_and_each_variants_source(tmp_path: Path) -> None:
    out = stress("show", "counter", cwd=tmp_path)
    assert out.code == 0, out.stderr
    assert "Four threads (actors) add 1" in out.stdout  # inline code, shown without its backticks
    assert "def no_lock(trial" in out.stdout
    assert "counter.value += 1" in out.stdout
    assert "def local_sum(trial" in out.stdout


def test_run_writes_results_and_summary(tmp_path: Path) -> None:
    out = stress("run", "counter", "--iterations", "20", "--seed", "5", "--out", "run", "--jobs", "2", cwd=tmp_path)
    assert out.code == 0, out.stderr
    run_dir = tmp_path / "run"
    lines = results(run_dir)
    assert len(lines) == 4 * 20
    first = lines[0]
    assert {"variant", "seq", "trial", "outcome", "duration", "plan", "starts", "timeout"} <= first.keys()
    assert {"seed", "preempt", "switch_interval", "jitter", "shuffle", "barrier"} <= first["plan"].keys()
    data = summary(run_dir)
    assert data["seed"] == 5
    assert data["complete"] is True
    assert data["python"]["version"]
    assert isinstance(data["python"]["gil_enabled"], bool)
    lock = variant(data, "counter/lock")
    assert lock["expect"] == "safe"
    assert lock["trials"] == 20
    assert lock["failures"] == 0
    assert lock["verdict"] == "held"
    assert lock["upper_bound_if_clean"] == pytest.approx(3 / 20)
    assert 0 <= lock["ci95"][0] <= lock["ci95"][1] <= 1
    # The terminal table ranks the variants and says where the run is.
    assert "Ranked by failure rate" in out.stdout
    assert str(run_dir.name) in out.stdout


def test_default_run_folder_is_under_reports(tmp_path: Path) -> None:
    out = stress("run", "bank", "--variant", "lock", "--iterations", "5", "--seed", "1", cwd=tmp_path)
    assert out.code == 0, out.stderr
    (run_dir,) = (tmp_path / "reports").iterdir()
    assert run_dir.name.endswith("-bank")
    assert (run_dir / "results.jsonl").exists()
    assert (run_dir / "summary.json").exists()


def test_failing_safe_variant_exits_1_with_example_and_replay(tmp_path: Path) -> None:
    fixture = str(FIXTURES / "misbehaving.py")
    out = stress("run", fixture, "--variant", "raises", "--iterations", "3", "--seed", "9", "--out", "r", cwd=tmp_path)
    assert out.code == 1, out.stderr
    assert "ValueError: boom" in out.stdout
    assert f"stress run {fixture} --variant raises --seed 9 --trial 0" in out.stdout
    example = variant(summary(tmp_path / "r"), "raises")["example"]
    assert example["outcome"] == "error"
    assert "ValueError: boom <script>alert(1)</script>" in example["evidence"]["tracebacks"][0]
    assert "harness/trial.py" not in example["evidence"]["tracebacks"][0]
    assert example["replay"].endswith("--variant raises --seed 9 --trial 0")


def test_unexposed_unsafe_variant_warns_and_fails_only_with_strict(tmp_path: Path) -> None:
    fixture = str(FIXTURES / "misbehaving.py")
    args = ("run", fixture, "--variant", "never-fails", "--iterations", "10", "--seed", "1")
    relaxed = stress(*args, "--out", "a", cwd=tmp_path)
    assert relaxed.code == 0, relaxed.stderr
    assert "not exposed in 10 trials" in relaxed.stdout
    strict = stress(*args, "--out", "b", "--strict", cwd=tmp_path)
    assert strict.code == 1, strict.stderr


BAD_INPUT = [
    (["run", "countr"], "did you mean 'counter'"),
    (["run", "counter", "--variant", "nolock"], "did you mean 'no-lock'"),
    (["run", "counter", "--variant", "bank/lock"], "not being run"),
    (["run", "counter", "--iterations", "0"], "--iterations 0"),
    (["run", "counter", "--iterations", "-3"], "must be an integer >= 1"),
    (["run", "counter", "--iterations", "many"], "not an integer"),
    (["run", "counter", "--timeout", "soon"], "not a duration"),
    (["run", "counter", "--timeout", "-1"], "positive duration"),
    (["run", "counter", "--timeout", "0"], "positive duration"),
    (["run", "counter", "--jobs", "0"], "--jobs 0"),
    (["run", "counter", "--seed", "-1"], "--seed -1"),
    (["run", "counter", "--preempt", "2"], "probability"),
    (["run", "counter", "--preempt", "often"], "probability"),
    (["run", "counter", "--switch-interval", "5ms:1ms"], "low end is above"),
    (["run", "counter", "--jitter", "1:2:3"], "LOW:HIGH"),
    (["run", "counter", "--start-method", "vfork"], "did you mean 'fork'"),
    (["run", "counter", "--delay", "soon"], "not a duration"),
    (["run", "counter", "--no-perturbation", "--preempt", "0.01"], "--no-perturbation conflicts with --preempt 0.01"),
    (["run", "counter", "--trial", "3"], "needs --seed"),
    (["run", "counter", "--out", "/proc/stress-cannot-write-here"], "not writable"),
    (["run", "counter", "--bogus"], "No such option"),
    (["run"], "Missing argument"),
    (["frobnicate"], "No such command"),
    (["show", "nope"], "unknown scenario 'nope'"),
    (["run", "missing.py"], "does not exist"),
    (["run", str(FIXTURES / "broken_syntax.py")], "broken_syntax.py:5: syntax error"),
    (["run", str(FIXTURES / "raises_on_import.py")], "raises_on_import.py:5: importing it raised RuntimeError"),
    (["run", str(FIXTURES / "bad_expect.py")], "must be 'safe' or 'unsafe' (did you mean 'unsafe'?)"),
    (["run", str(FIXTURES / "misbehaving.py") + "::misbehavin"], "did you mean 'misbehaving'"),
]


@pytest.mark.parametrize(("args", "expected"), BAD_INPUT, ids=[" ".join(a) for a, _ in BAD_INPUT])
def test_bad_input_is_one_clear_line_and_exit_2(tmp_path: Path, args: list[str], expected: str) -> None:
    out = stress(*args, cwd=tmp_path)
    assert out.code == 2, (out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("stress: error: ")
    assert expected in lines[0]
    assert "Traceback" not in out.stderr + out.stdout


def test_existing_run_folder_is_refused(tmp_path: Path) -> None:
    first = stress("run", "bank", "--variant", "lock", "-n", "2", "--seed", "1", "--out", "x", cwd=tmp_path)
    assert first.code == 0, first.stderr
    second = stress("run", "bank", "--variant", "lock", "-n", "2", "--seed", "1", "--out", "x", cwd=tmp_path)
    assert second.code == 2
    assert "already holds a run" in second.stderr


def test_summary_json_is_valid_json_with_schema_version(tmp_path: Path) -> None:
    out = stress("run", "bank", "-n", "5", "--seed", "2", "--out", "s", cwd=tmp_path)
    assert out.code == 0, out.stderr
    data = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert data["schema"] == 1
    assert [v["variant"] for v in data["variants"]] != []
    rates = [v["failure_rate"] for v in data["variants"]]
    assert rates == sorted(rates, reverse=True)


def test_list_offers_controlled_mode_only_where_it_can_run(tmp_path: Path) -> None:
    scenarios = Path(__file__).parents[2] / "scenarios"
    processes = stress("list", str(scenarios / "pool.py"), cwd=tmp_path)
    assert processes.code == 0, processes.stderr
    assert "(stress mode only)" in " ".join(processes.stdout.split())  # wherever its line wraps
    assert "--mode controlled" not in processes.stdout
    threads = stress("list", str(scenarios / "counter.py"), cwd=tmp_path)
    # The command to paste names the file: a file's scenarios are not built in.
    assert f"stress run {scenarios / 'counter.py'} --mode controlled" in " ".join(threads.stdout.split())


def test_show_gives_each_variants_place_its_docstring_once_and_the_helpers_it_calls(tmp_path: Path) -> None:
    out = stress("show", "deadlock", cwd=tmp_path, env={"COLUMNS": "200"})
    assert out.code == 0, out.stderr
    assert re.search(r"● opposite-order  unsafe  deadlock\.py:\d+", out.stdout)
    assert out.stdout.count("thread_1 locks a then b") == 1  # the docstring, not also a description line
    helpers = out.stdout.split("What the variants call, from the same file", 1)[1]
    assert "def _transfers(trial" in helpers  # where the invariant is checked
    assert "money was created or lost" in helpers
    assert "class Account" in helpers
    assert "def opposite_order" not in helpers  # variants are not helpers


def test_run_help_gives_the_knobs_defaults_as_the_readme_does(tmp_path: Path) -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    table = dict(re.findall(r"^\| `(--[a-z-]+) [A-Z]` \| `([^`]+)` \|", readme, re.MULTILINE))
    assert {"--preempt", "--sync", "--jitter", "--delay", "--switch-interval", "--pause"} <= set(table)
    out = stress("run", "--help", cwd=tmp_path, env={"COLUMNS": "250"})
    assert out.code == 0, out.stderr
    helps = " ".join(out.stdout.split()).split(" --")  # each option's text, its wrapped lines joined
    for flag, default in table.items():
        text = next(help for help in helps if help.startswith(flag[2:] + " "))
        assert f"[default: {default}" in text, (flag, default, text)


def test_cancel_is_refused_for_scenarios_whose_checks_assume_tasks_finish(tmp_path: Path) -> None:
    out = stress("run", "async-bank", "cancellation", "--cancel", "0.1", "--iterations", "5", cwd=tmp_path)
    assert out.code == 2, out.stdout + out.stderr
    assert "the checks of async-bank assume every task runs to its end" in out.stderr
    assert "it applies to cancellation" in out.stderr
    assert not (tmp_path / "reports").exists()
    swept = stress("run", "async-event", "--sweep", "cancel=0,0.2", "--iterations", "5", cwd=tmp_path)
    assert swept.code == 2, swept.stdout + swept.stderr
    fine = stress("run", "cancellation", "--cancel", "0.3", "--iterations", "200", "--seed", "1", "-q", cwd=tmp_path)
    assert fine.code == 0, fine.stdout + fine.stderr


def test_show_says_which_model_of_awaits_a_coroutine_scenario_is_judged_by(tmp_path: Path) -> None:
    strict = stress("show", "async-bank", cwd=tmp_path)
    assert strict.code == 0, strict.stderr
    assert "coroutines: any await on a primitive may suspend (may_suspend)" in strict.stdout
    default = stress("show", "cancellation", cwd=tmp_path)
    assert "coroutines: asyncio's model (a ready primitive's operation returns at once)" in default.stdout
    assert "takes --cancel" in default.stdout
    threads = stress("show", "counter", cwd=tmp_path)
    assert "coroutines:" not in threads.stdout


THREAD_AND_TASK = """
import asyncio
import threading

from harness import Scenario, Trial

scenario = Scenario("bridge-wait", "a task awaits a future its thread never completes")


@scenario.variant(expect="unsafe")
async def never_completed(trial: Trial) -> None:
    future = asyncio.get_running_loop().create_future()
    never = threading.Event()

    def forgets() -> None:
        never.wait()  # should have completed the future: it waits for the loop's tasks instead

    threading.Thread(target=forgets, daemon=True).start()

    async def waiter() -> None:
        await future

    await trial.run_tasks(waiter, count=1)
"""


def test_tasks_and_a_thread_waiting_for_each_other_are_deadlocked_in_milliseconds(tmp_path: Path) -> None:
    """The thread waits, untimed, where the wait-for graph sees it, and only the loop's tasks could
    end its wait: seen twice, that is a deadlock (not a trial left to its deadline, undecided)."""
    (tmp_path / "bridge.py").write_text(THREAD_AND_TASK)
    out = stress("run", "bridge.py", "--iterations", "20", "--seed", "1", "--out", "run", "-q", cwd=tmp_path)
    assert out.code == 0, out.stdout + out.stderr
    entry = variant(summary(tmp_path / "run"), "never-completed")
    assert entry["outcomes"].get("deadlocked", 0) >= 15, entry["outcomes"]
    assert set(entry["outcomes"]) <= {"deadlocked", "hung"}, entry["outcomes"]
    first = next(r for r in results(tmp_path / "run") if r["outcome"] == "deadlocked")
    assert any(line.startswith("thread ") and "waits for never at " in line for line in first["evidence"]["wait_for"])

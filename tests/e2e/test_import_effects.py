"""What a scenario file's import starts, the trials have, as its program has: threads (also ones
`threading` does not list), helper processes, a module-level `multiprocessing.Pool`. Workers are
forked after the import and a fork copies no thread, so each worker imports the project again;
what that import starts is the program's, never blamed on a trial nor stopped by stress. An
import that cannot run twice stops the run with one line, and a thread the import started that
never ends does not keep stress from exiting.

Each of these was a false alarm or a hang before: the safe variant failed in every trial."""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import pytest

from tests.helpers import stress, summary, variant


def _project(tmp_path: Path, name: str, source: str) -> Path:
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'app'\n")
    (tmp_path / name).write_text(textwrap.dedent(source))
    return tmp_path / name


RAW_THREAD = """
    import _thread, queue, threading
    from harness import Scenario
    scenario = Scenario("raw", "a server started with _thread at import", size=2)
    jobs = queue.Queue()

    def _serve():
        while True:
            jobs.get()()

    _thread.start_new_thread(_serve, ())

    @scenario.variant(expect="safe")
    def post(trial):
        def actor():
            done = threading.Event()
            jobs.put(done.set)
            done.wait()
        trial.run_threads(actor, count=2)
"""

SIDECAR = """
    import subprocess, sys, threading
    from harness import Scenario
    helper = subprocess.Popen(
        [sys.executable, "-c", "import time\\nwhile True:\\n    print('beat', flush=True)\\n    time.sleep(0.005)"],
        stdout=subprocess.PIPE, text=True,
    )
    beats = [0]
    heard = threading.Condition()

    def _relay():
        for _ in helper.stdout:
            with heard:
                beats[0] += 1
                heard.notify_all()

    threading.Thread(target=_relay, daemon=True, name="relay").start()
    scenario = Scenario("sidecar", "heartbeats of a helper process started at import", size=1)

    @scenario.variant(expect="safe")
    def next_beat(trial):
        def actor():
            with heard:
                seen = beats[0]
                return heard.wait_for(lambda: beats[0] > seen, timeout=5)
        trial.check(all(trial.run_threads(actor, count=2)), f"no beat; helper exited {helper.poll()}")
"""

MODULE_POOL = """
    import multiprocessing
    from harness import Scenario
    from helper import square
    pool = multiprocessing.Pool(2)
    scenario = Scenario("modpool", "a module-level multiprocessing Pool", size=3)

    @scenario.variant(expect="safe")
    def map_from_threads(trial):
        results = trial.run_threads(lambda: pool.map(square, range(trial.size)), count=2)
        trial.check(results == [[0, 1, 4]] * 2, f"{results}")
"""


@pytest.mark.parametrize(
    ("source", "name"), [(RAW_THREAD, "post"), (SIDECAR, "next-beat"), (MODULE_POOL, "map-from-threads")]
)
def test_what_an_import_starts_is_the_programs(tmp_path: Path, source: str, name: str) -> None:
    (tmp_path / "helper.py").write_text("def square(x):\n    return x * x\n")
    file = _project(tmp_path, "scen.py", source)
    out = stress("run", str(file), "-n", "40", "--seed", "1", "--out", "run", cwd=tmp_path, timeout=300)
    entry = variant(summary(tmp_path / "run"), name)
    assert entry["verdict"] == "held", out.stdout
    assert entry["outcomes"] == {"passed": 40}, out.stdout


def test_a_thread_an_import_started_that_never_ends_does_not_keep_stress_running(tmp_path: Path) -> None:
    file = _project(tmp_path, "serve.py", """
        import queue, threading
        from harness import Scenario
        jobs = queue.Queue()
        threading.Thread(target=lambda: [job() for job in iter(jobs.get, None)], name="server").start()  # not daemon
        scenario = Scenario("serve", "a non-daemon server at import", size=1)

        @scenario.variant(expect="safe")
        def post(trial):
            def actor():
                done = threading.Event()
                jobs.put(done.set)
                done.wait()
            trial.run_threads(actor, count=2)
    """)  # fmt: skip
    started = time.monotonic()
    out = stress("run", str(file), "-n", "20", "--seed", "1", "--out", "run", cwd=tmp_path, timeout=120)
    assert out.code == 0, out.stdout + out.stderr
    assert variant(summary(tmp_path / "run"), "post")["verdict"] == "held"
    listed = stress("list", str(file), cwd=tmp_path, timeout=60)
    assert listed.code == 0, listed.stderr
    assert time.monotonic() - started < 100


@pytest.mark.slow
def test_an_import_that_waits_for_the_first_one_stops_the_run_with_where(tmp_path: Path) -> None:
    # A file lock taken at import: the worker's second import waits for stress's own process.
    lock = tmp_path / "app.lock"
    file = _project(tmp_path, "single.py", f"""
        import fcntl, threading, time
        from harness import Scenario
        held = open({str(lock)!r}, "w")
        fcntl.flock(held, fcntl.LOCK_EX)
        threading.Thread(target=time.sleep, args=(600,), daemon=True, name="heartbeat").start()
        scenario = Scenario("single", "one instance at a time", size=1)
        scenario.variant("nothing", expect="safe")(lambda trial: None)
    """)  # fmt: skip
    out = stress("run", str(file), "-n", "5", "--out", "run", cwd=tmp_path, timeout=120)
    assert out.code == 2, out.stdout + out.stderr
    line = out.stderr.strip().splitlines()[-1]
    assert line.startswith("stress: error: importing the project again in a worker did not end in 30 s"), line
    assert "it waits at single.py:5 in <module>" in line, line
    assert "(heartbeat)" in line, line
    assert not (tmp_path / "run").exists()  # nothing ran: no folder is left

"""Verdicts under load: no false failure, every bug still found, and hangs that cost milliseconds.

Runs, once on the machine as it is and once under a bounded load it makes itself (busy-loop
processes, `--busy-per-core` per core, and `--idle` sleeping processes, all stopped when it ends):

1. every built-in scenario's safe variants, `--trials` trials each, with the adaptive deadline and
   with `--timeout 0.2`: false failures must be 0;
2. every built-in scenario's unsafe variants (adaptive deadline): each must still be exposed;
3. a fixture set: a safe variant run beside a sibling that always hangs, a variant whose first trials
   are slow (0.5 s) and the rest fast, and ``executor/flat``: false failures must be 0;
4. the cost of a hang beyond its deadline, median and p90 (one worker, a variant that always blocks,
   the time between consecutive results minus the deadline), with each deadline mode; and what a
   variant that always blocks costs per trial in all.

Every run goes through the ``stress`` command but (4), which needs the arrival time of each result
and uses the API. Prints one table per condition and a verdict line; exits 1 if a check failed.

Usage: ``python benchmarks/under_load.py [--trials N] [--only quiet|loaded] [--scenarios a,b]``
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from harness import Registry, RunConfig, Scenario, TrialResult, run
from harness.perturb.knobs import Perturbation
from harness.results.stats import VariantStats
from harness.results.summary import RunInfo, RunReport

FIXTURES = '''
import os
import threading
import time

from harness import Scenario

scenario = Scenario("fixtures", "Safe variants in hard company")


@scenario.variant(expect="unsafe")
def always_hangs(trial):
    """Reads a pipe nobody writes to: a wait no instrumented primitive sees, so only the deadline ends it."""
    read, write = os.pipe()

    def stuck():
        os.read(read, 1)

    try:
        trial.run_threads(stuck, count=1)
    finally:
        os.close(read)
        os.close(write)


@scenario.variant(expect="safe")
def locked_counter(trial):
    """A lock-protected counter, run beside a sibling that hangs (its workers keep being replaced)."""
    box = [0]
    lock = threading.Lock()

    def add():
        for _ in range(trial.size):
            with lock:
                box[0] += 1

    trial.run_threads(add, count=2)
    trial.check(box[0] == 2 * trial.size, "lost updates")


@scenario.variant(expect="safe")
def slow_then_fast(trial):
    """The first trials take half a second (sleeping, then computing), the rest a millisecond."""
    if trial.plan.trial < 4:
        time.sleep(0.25)
        end = time.perf_counter() + 0.25
        while time.perf_counter() < end:
            pass
    trial.run_threads(lambda: None, count=2)
'''

_PR_SET_PDEATHSIG = 1


def _die_with_us() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


@contextmanager
def load(busy_per_core: int, idle: int) -> Iterator[str]:
    """Busy loops on every core and a crowd of sleeping processes; all gone on exit."""
    cores = os.cpu_count() or 1
    procs: list[subprocess.Popen[bytes]] = []
    try:
        busy = [sys.executable, "-c", "while True: pass"]
        procs.extend(subprocess.Popen(busy, preexec_fn=_die_with_us) for _ in range(busy_per_core * cores))
        procs.extend(subprocess.Popen(["sleep", "100000"], preexec_fn=_die_with_us) for _ in range(idle))
        time.sleep(2.0)
        yield (
            f"{busy_per_core * cores} busy loops on {cores} cores, {idle} sleeping processes, "
            f"load {os.getloadavg()[0]:.1f}"
        )
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait()


def stress(*args: str, out: Path) -> dict:
    command = [str(Path(sys.executable).parent / "stress"), "run", *args, "--out", str(out), "--quiet"]
    subprocess.run(command, capture_output=True, text=True, check=False, timeout=3600)
    for line in unjudged(out):
        print(f"  not judged at once: {line}")
    return json.loads((out / "summary.json").read_text())


def unjudged(out: Path) -> list[str]:
    """Why trials of the run in ``out`` were run again or left undecided (stress's own troubles)."""
    lines = []
    for line in (out / "results.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record.get("notes") or record["outcome"] == "undecided":
            messages = record.get("evidence", {}).get("messages", [])
            lines.append(
                f"{record['variant']} trial {record['trial']}: {record['outcome']}; {record.get('notes')} {messages}"
            )
    return lines


def false_failures(summary: dict) -> list[str]:
    return [f"{v['variant']}: {v['outcomes']}" for v in summary["variants"] if v["expect"] == "safe" and v["failures"]]


class Arrivals:
    """Records when each result arrived (for the cost of each hang)."""

    def __init__(self) -> None:
        self.times: list[tuple[float, TrialResult]] = []

    def started(self, info: RunInfo) -> None:
        self.start = time.monotonic()

    def result(self, result: TrialResult, stats: VariantStats) -> None:
        self.times.append((time.monotonic(), result))

    def tick(self) -> None:
        pass

    def finished(self, report: RunReport) -> None:
        pass


def hang_costs(fixtures: Scenario, hangs: int, timeout: float | None, out: Path) -> tuple[list[float], float, int]:
    """Per-hang cost beyond the deadline (s), cost per trial in all once the deadline is learnt (s:
    the first two trials of a variant that never finished get the generous initial deadline), and
    how many trials hung."""
    arrivals = Arrivals()
    config = RunConfig(iterations=hangs, seed=1, jobs=1, timeout=timeout, perturbation=Perturbation.none())
    report = run([fixtures.get("always-hangs")], config, reports=out, observer=arrivals)
    costs = []
    previous = arrivals.start
    for at, result in arrivals.times:
        if result.outcome.label == "hung" and result.timeout is not None and result.seq >= 2:
            costs.append(at - previous - result.timeout)  # the first two get the initial deadline
        previous = at
    hung = sum(1 for _, r in arrivals.times if r.outcome.label == "hung")
    later = [at for at, r in arrivals.times if r.seq >= 2]
    steady = (later[-1] - later[0]) / (len(later) - 1) if len(later) > 1 else report.wall
    return costs, steady, hung


def condition(
    label: str, trials: int, scenarios: list[str], folder: Path, fixtures_file: Path, *, hangs_only: bool = False
) -> bool:
    print(f"\n== {label}")
    ok = True
    if hangs_only:
        return hang_cost_lines(trials, folder, fixtures_file)
    registry = Registry.builtin()
    rows = []
    for deadline in ("adaptive", "0.2"):
        extra = [] if deadline == "adaptive" else ["--timeout", "0.2"]
        for name in scenarios:
            scenario = registry.get(name)
            safe = [v.name for v in scenario if v.expect.value == "safe"]
            words = [name, *[w for v in safe for w in ("--variant", v)], "-n", str(trials), "--seed", "7", *extra]
            started = time.monotonic()
            summary = stress(*words, out=folder / f"{label}-{name}-{deadline}")
            bad = false_failures(summary)
            ok &= not bad
            rows.append(
                (f"{name} safe", deadline, summary["trials"], time.monotonic() - started, bad, summary["health"])
            )
        words = [str(fixtures_file), "-n", str(trials), "--seed", "7", *extra]
        started = time.monotonic()
        summary = stress(*words, out=folder / f"{label}-fixtures-{deadline}")
        bad = false_failures(summary)
        ok &= not bad
        rows.append(("fixtures", deadline, summary["trials"], time.monotonic() - started, bad, summary["health"]))
        summary = stress("executor", "--variant", "flat", "-n", str(trials), "--seed", "42", *extra,
                         out=folder / f"{label}-executor-{deadline}")  # fmt: skip
        bad = false_failures(summary)
        ok &= not bad
        rows.append(("executor/flat", deadline, summary["trials"], summary["wall_seconds"], bad, summary["health"]))
    print(f"{'what':24} {'deadline':9} {'trials':>7} {'wall s':>7}  false failures")
    for what, deadline, count, wall, bad, _ in rows:
        print(f"{what:24} {deadline:9} {count:7} {wall:7.1f}  {'; '.join(bad) if bad else 0}")
    notes = {note for *_, health in rows for note in health}
    for note in sorted(notes):
        print(f"  health: {note}")
    unexposed = []
    for name in scenarios:
        scenario = registry.get(name)
        unsafe = [v.name for v in scenario if v.expect.value == "unsafe"]
        if not unsafe:
            continue
        words = [name, *[w for v in unsafe for w in ("--variant", v)], "-n", str(trials), "--seed", "7"]
        summary = stress(*words, out=folder / f"{label}-{name}-unsafe")
        unexposed += [v["variant"] for v in summary["variants"] if v["verdict"] == "not exposed"]
    print(f"unsafe variants not exposed: {', '.join(unexposed) if unexposed else 'none'}")
    ok &= not unexposed
    return hang_cost_lines(trials, folder, fixtures_file) and ok


def hang_cost_lines(trials: int, folder: Path, fixtures_file: Path) -> bool:
    ok = True
    spec = __import__("importlib.util").util.spec_from_file_location("fixtures_module", fixtures_file)
    module = __import__("importlib.util").util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for timeout in (None, 0.2):
        costs, per_trial, hung = hang_costs(module.scenario, trials, timeout, folder)
        mode = "adaptive" if timeout is None else f"--timeout {timeout}"
        if not costs:
            print(f"hang cost ({mode}): no hang to measure ({hung} hung)")
            ok = False
            continue
        median = statistics.median(costs) * 1000
        p90 = statistics.quantiles(costs, n=10)[-1] * 1000 if len(costs) >= 10 else max(costs) * 1000
        print(
            f"hang cost beyond the deadline ({mode}): median {median:.0f} ms, p90 {p90:.0f} ms over "
            f"{len(costs)} hangs; an always-blocking variant costs {per_trial * 1000:.0f} ms per trial in all "
            f"({hung} hung)"
        )
        ok &= median <= 50
        if timeout is None:
            ok &= per_trial <= 0.1  # a variant that always blocks: its deadline is learnt, hangs are cheap
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=300, help="trials per variant and per check")
    parser.add_argument("--only", choices=("quiet", "loaded"), help="run one condition only")
    parser.add_argument("--scenarios", default="", help="comma-separated built-in scenarios (default: all)")
    parser.add_argument("--busy-per-core", type=int, default=4, help="busy-loop processes per core in the load")
    parser.add_argument("--idle", type=int, default=1000, help="sleeping processes in the load")
    parser.add_argument("--hangs-only", action="store_true", help="measure only the cost of hangs")
    args = parser.parse_args()
    names = [s.name for s in Registry.builtin()]
    scenarios = args.scenarios.split(",") if args.scenarios else names
    ok = True
    with tempfile.TemporaryDirectory(prefix="stress-under-load-") as tmp:
        folder = Path(tmp)
        fixtures_file = folder / "fixtures.py"
        fixtures_file.write_text(FIXTURES)
        if args.only != "loaded":
            ok &= condition("quiet", args.trials, scenarios, folder, fixtures_file, hangs_only=args.hangs_only)
        if args.only != "quiet":
            with load(args.busy_per_core, args.idle) as what:
                ok &= condition(
                    f"loaded: {what}", args.trials, scenarios, folder, fixtures_file, hangs_only=args.hangs_only
                )
    print("\nall checks held" if ok else "\nA CHECK FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""Harness throughput against a bare loop, worker scaling, and bugs found per second.

Prints, from one run (these machines are shared; only ratios measured together mean anything):

1. trials/s of a bare loop that starts and joins two threads doing nothing (the baseline);
2. trials/s of the harness running a variant that does the same, one worker, with perturbation
   off and with the default knobs, each as a ratio to (1);
3. the scaling from one worker to two (default knobs);
4. failures per second of ``counter/no-lock`` and ``bank/unsafe`` with the default knobs (the
   failure rate times trials/s: what a minute of stress finds), and the counter's failure rate
   with injection off (``--preempt 0``), to show what preemption buys.

The throughput figures are medians over ``--rounds`` rounds (3), each round measuring all of them
one after the other.

Usage: ``python benchmarks/throughput.py [--trials N] [--bug-trials N] [--rounds R] [--json]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

from harness import Knob, Perturbation, Registry, RunConfig, Scenario, Trial, run

trivial = Scenario("trivial", "Two threads that do nothing")


@trivial.variant(expect="safe")
def two_threads(trial: Trial) -> None:
    trial.run_threads(_nothing, count=2)


def _nothing() -> None:
    pass


def bare_loop(trials: int) -> float:
    """Trials/s of starting and joining two threads in a plain loop."""
    start = time.perf_counter()
    for _ in range(trials):
        threads = [threading.Thread(target=_nothing) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    return trials / (time.perf_counter() - start)


def harness_rate(trials: int, out: Path, *, perturbation: Perturbation, jobs: int = 1) -> float:
    config = RunConfig(iterations=trials, seed=1, jobs=jobs, perturbation=perturbation)
    report = run(list(trivial), config, reports=out)
    return report.trials / report.wall


def bug_rate(key: str, trials: int, out: Path, perturbation: Perturbation) -> dict[str, float]:
    """Failure rate (with its Wilson lower bound), trials/s and failures/s of a built-in variant."""
    scenario, _, variant = key.partition("/")
    chosen = Registry.builtin().select([scenario], [variant])
    report = run(chosen, RunConfig(iterations=trials, seed=1, perturbation=perturbation), reports=out)
    summary = report.variants[0]
    per_second = report.trials / report.wall
    return {
        "rate": summary.rate,
        "low": summary.low,
        "trials_per_second": per_second,
        "failures_per_second": summary.failures / report.wall,
    }


def measure(trials: int, bug_trials: int, rounds: int = 3) -> dict[str, object]:
    """Each figure's median over ``rounds`` rounds; within a round the bare loop, the harness with
    perturbation off, with the default knobs and with two workers run one after the other, so a
    change in the machine's load reaches all of them alike."""
    bare: list[float] = []
    off: list[float] = []
    default: list[float] = []
    two: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        bare_loop(200)  # warm up
        for _ in range(rounds):
            bare.append(bare_loop(trials))
            off.append(harness_rate(trials, out, perturbation=Perturbation.none()))
            default.append(harness_rate(trials, out, perturbation=Perturbation()))
            two.append(harness_rate(trials, out, perturbation=Perturbation(), jobs=2))
        bare.append(bare_loop(trials))  # the machine may have changed meanwhile
        bugs = {key: bug_rate(key, bug_trials, out, Perturbation()) for key in ("counter/no-lock", "bank/unsafe")}
        no_injection = bug_rate("counter/no-lock", bug_trials, out, Perturbation().with_(preempt=Knob()))
    baseline = statistics.median(bare)
    return {
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg()[0],
        "rounds": rounds,
        "bare_loop_trials_per_second": baseline,
        "bare_loop_runs": bare,
        "harness_off_trials_per_second": statistics.median(off),
        "harness_default_trials_per_second": statistics.median(default),
        "harness_off_runs": off,
        "harness_default_runs": default,
        "ratio_off": statistics.median(off) / baseline,
        "ratio_default": statistics.median(default) / baseline,
        "two_workers_trials_per_second": statistics.median(two),
        "two_workers_runs": two,
        "scaling_1_to_2": statistics.median(two) / statistics.median(default),
        "bugs": bugs,
        "counter_no_injection": no_injection,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5000, help="trials of the bare loop and the trivial variant")
    parser.add_argument("--bug-trials", type=int, default=2000, help="trials of counter/no-lock and bank/unsafe")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the throughput figures (medians)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")
    args = parser.parse_args()
    m = measure(args.trials, args.bug_trials, args.rounds)
    if args.json:
        print(json.dumps(m))
        return
    bare = m["bare_loop_runs"]
    assert isinstance(bare, list)
    print(f"{m['cpus']} CPUs, load average {m['load_average']:.1f} at the end; medians of {m['rounds']} rounds")
    print(
        f"bare loop (start+join 2 threads):      {m['bare_loop_trials_per_second']:9.0f} trials/s  "
        f"({min(bare):.0f} to {max(bare):.0f})"
    )
    print(
        f"harness, perturbation off, 1 worker:   {m['harness_off_trials_per_second']:9.0f} trials/s   "
        f"{m['ratio_off']:.2f}× the bare loop"
    )
    print(
        f"harness, default knobs, 1 worker:      {m['harness_default_trials_per_second']:9.0f} trials/s   "
        f"{m['ratio_default']:.2f}× the bare loop"
    )
    print(
        f"harness, default knobs, 2 workers:     {m['two_workers_trials_per_second']:9.0f} trials/s   "
        f"{m['scaling_1_to_2']:.2f}× one worker"
    )
    bugs = m["bugs"]
    assert isinstance(bugs, dict)
    for key, b in bugs.items():
        print(
            f"{key + ', default knobs:':38} {b['rate']:9.1%} failed (lower bound {b['low']:.1%}), "
            f"{b['trials_per_second']:.0f} trials/s, {b['failures_per_second']:.1f} failures/s"
        )
    c = m["counter_no_injection"]
    assert isinstance(c, dict)
    print(
        f"{'counter/no-lock, --preempt 0:':38} {c['rate']:9.1%} failed (lower bound {c['low']:.1%}), "
        f"{c['failures_per_second']:.1f} failures/s"
    )


if __name__ == "__main__":
    main()

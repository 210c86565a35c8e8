"""Harness throughput against a bare loop, and what preemption injection buys.

Prints, from one run (these machines are shared; only ratios measured together mean anything):

1. trials/s of a bare loop that starts and joins two threads doing nothing;
2. trials/s of the harness running a variant that does the same, perturbation off, one worker,
   and its ratio to (1);
3. the failure rate of ``counter/no-lock`` with injection on (the defaults) and off (``--preempt 0``).

Usage: ``python benchmarks/throughput.py [--trials N] [--counter-trials N]``
"""

from __future__ import annotations

import argparse
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


def harness_rate(trials: int, out: Path) -> float:
    config = RunConfig(iterations=trials, seed=1, jobs=1, perturbation=Perturbation.none())
    report = run(list(trivial), config, reports=out)
    return report.trials / report.wall


def counter_rates(trials: int, out: Path) -> tuple[float, float, float, float]:
    no_lock = Registry.builtin().select(["counter"], ["no-lock"])
    rates = []
    for perturbation in (Perturbation(), Perturbation().with_(preempt=Knob())):
        report = run(no_lock, RunConfig(iterations=trials, seed=1, perturbation=perturbation), reports=out)
        summary = report.variants[0]
        rates += [summary.rate, summary.low]
    return rates[0], rates[1], rates[2], rates[3]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5000)
    parser.add_argument("--counter-trials", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        bare_loop(200)  # warm up
        bare = bare_loop(args.trials)
        harness = harness_rate(args.trials, out)
        bare_again = bare_loop(args.trials)  # the machine may have changed meanwhile
        baseline = (bare + bare_again) / 2
        print(f"bare loop (start+join 2 threads):      {baseline:9.0f} trials/s  ({bare:.0f}, {bare_again:.0f})")
        print(f"harness, perturbation off, 1 worker:   {harness:9.0f} trials/s")
        print(f"ratio harness / bare loop:             {harness / baseline:9.2f}   (acceptance: >= 0.50)")
        on, on_low, off, off_low = counter_rates(args.counter_trials, out)
        print(f"counter/no-lock, injection on:         {on:9.1%} failed (95 % lower bound {on_low:.1%})")
        print(f"counter/no-lock, --preempt 0:          {off:9.1%} failed (95 % lower bound {off_low:.1%})")


if __name__ == "__main__":
    main()

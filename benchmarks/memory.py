"""Long runs stay flat: memory and open descriptors of the parent and the workers over 100 000 trials.

Runs ``counter`` (all four variants) for 100 000 trials through the public API, sampling the
resident memory (VmRSS) and the open descriptors of the parent and of every worker at each 5 % of
the run. Growth is measured from the first sample after warm-up (10 % of the run: imports, caches
and the first report structures are in place by then) to the last. Acceptance: each process grows
by at most 20 MB, and no descriptor leaks.

Usage: ``python benchmarks/memory.py [--trials N] [--jobs J]``
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from harness import Registry, run
from harness.config import Layer, build_config
from harness.results.outcome import TrialResult
from harness.results.stats import VariantStats
from harness.results.summary import RunInfo, RunReport


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as file:
        for line in file:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def workers() -> list[int]:
    found = []
    for task in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{task}/children", encoding="ascii") as file:
            found.extend(int(pid) for pid in file.read().split())
    return found


class Sampler:
    """A run observer: samples the processes every ``every`` trials."""

    def __init__(self, total: int) -> None:
        self.every = max(total // 20, 1)
        self.done = 0
        self.samples: list[tuple[int, float, int, dict[int, tuple[float, int]]]] = []

    def started(self, info: RunInfo) -> None:
        pass

    def result(self, result: TrialResult, stats: VariantStats) -> None:
        self.done += 1
        if self.done % self.every == 0:
            me = os.getpid()
            kids = {}
            for pid in workers():
                try:
                    kids[pid] = (rss_mb(pid), descriptors(pid))
                except OSError:
                    continue  # it ended meanwhile
            self.samples.append((self.done, rss_mb(me), descriptors(me), kids))

    def tick(self) -> None:
        pass

    def finished(self, report: RunReport) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--trials", type=int, default=100_000)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    variants = Registry.builtin().select(["counter"], [])
    iterations = args.trials // len(variants)
    config = build_config([Layer({"iterations": iterations, "seed": 1, "jobs": args.jobs}, lambda k, v: k)])
    sampler = Sampler(iterations * len(variants))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        report = run(variants, config, out=Path(folder) / "run", observer=sampler)
    wall = time.perf_counter() - started
    samples = sampler.samples
    first = next(s for s in samples if s[0] >= report.trials // 10)
    last = samples[-1]
    print(f"{report.trials:,} trials in {wall:.0f} s ({report.trials / wall:,.0f} trials/s), {args.jobs} workers")
    print(f"{'trials':>9} {'parent MB':>10} {'fds':>5}   workers (MB/fds)")
    for done, parent, fds, kids in samples:
        shown = "  ".join(f"{rss:.1f}/{count}" for rss, count in kids.values())
        print(f"{done:>9,} {parent:>10.1f} {fds:>5}   {shown}")
    parent_growth = last[1] - first[1]
    common = set(first[3]) & set(last[3])
    worker_growth = max((last[3][pid][0] - first[3][pid][0] for pid in common), default=0.0)
    fd_growth = max([last[2] - first[2], *(last[3][pid][1] - first[3][pid][1] for pid in common)])
    print(f"growth after warm-up: parent {parent_growth:+.1f} MB, workers at most {worker_growth:+.1f} MB "
          f"(acceptance: <= 20 MB each); descriptors {fd_growth:+d} (acceptance: 0)")  # fmt: skip


if __name__ == "__main__":
    main()

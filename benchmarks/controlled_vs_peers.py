"""Controlled mode against its peers: schedules and wall time to the first failure.

The same four programs (``benchmarks/peers.py``: a lost update, a check-then-act withdrawal, two
locks taken in opposite orders, five dining philosophers) are explored by ``stress --mode
controlled`` (its default strategy: random walk + PCT) and by frontrun's ``explore`` and
interleave-test, every strategy each offers. For each, over ``--seeds`` seeds: the median number of
schedules run up to and including the first failing one, and the median wall time of that search.
A strategy that ignores the seed (a depth-first search) runs once. The table compares stress with
the best strategy of each peer (fewest schedules, then least time) and prints the ratios
(stress / peer: below 1 means stress needed fewer).

The peers are benchmark-only: install them in a separate virtualenv, never in the project's own
(frontrun also registers a pytest plugin)::

    python -m venv /tmp/bench && /tmp/bench/bin/pip install -e ".[bench]"
    /tmp/bench/bin/python benchmarks/controlled_vs_peers.py            # --seeds 50 by default

interleave-test needs Python >= 3.12; on 3.11 its column says so. Schedules are counted the same
way by all three (the failing one included); times are measured in this process, one after the
other, so their ratios are fair even on a noisy machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import peers

from harness import Scenario, Trial
from harness.config import Layer, build_config
from harness.engine.local import first_failure
from harness.scenario import Variant

scenario = Scenario("peers", "The peer benchmark's four programs, run by stress")
#: Strategies that do not depend on the seed: one run stands for all seeds.
DETERMINISTIC = {"dpor", "dpor-full", "dpor-conflict-first", "dfs", "dfs:pb=4"}


def _variant(name: str) -> Callable[[Trial], None]:
    setup, workers, invariant = peers._spec(name)

    def body(trial: Trial) -> None:
        state = setup()
        with trial.threads() as group:
            for worker in workers:
                group.start(worker, state)
        trial.check(invariant(state), f"{name}: invariant violated")

    body.__name__ = name
    return body


for _name in peers.SCENARIOS:
    scenario.variant(_name, expect="unsafe", description=f"peers.py's {_name}")(_variant(_name))


def stress_variant(name: str) -> Variant:
    """The program as a stress variant; peers.py is in scope (its code is what runs)."""
    variant = scenario.get(name)
    return dataclasses.replace(variant, files=(*variant.files, str(Path(peers.__file__).resolve())))


@dataclasses.dataclass
class Row:
    tool: str
    strategy: str
    schedules: float | None  # median; None: no failure within the cap for most seeds
    wall: float  # median seconds
    found: int  # seeds that found a failure
    seeds: int


def _median(values: list[int | None], cap: int) -> float | None:
    counted = [v if v is not None else cap + 1 for v in values]
    middle = statistics.median(counted)
    return None if middle > cap else middle


def run_stress(name: str, seeds: int, cap: int) -> Row:
    variant = stress_variant(name)
    counts: list[int | None] = []
    walls = []
    for seed in range(seeds):
        config = build_config([Layer({"mode": "controlled", "seed": seed}, lambda key, value: key)])
        found = first_failure(variant, config, limit=cap)
        counts.append(found.schedules)
        walls.append(found.seconds)
    return Row("stress", "controlled (default)", _median(counts, cap), statistics.median(walls), _found(counts), seeds)


def run_peer(tool: str, strategy: str, name: str, seeds: int, cap: int) -> Row | str:
    runs = 1 if strategy in DETERMINISTIC else seeds
    counts: list[int | None] = []
    walls = []
    for seed in range(runs):
        try:
            result = peers.run_peer(tool, name, seed, strategy, cap=cap)
        except peers.PeerUnavailable as exc:
            return str(exc).split(":")[0]
        counts.append(result.schedules if result.kind != "hang" else None)
        walls.append(result.wall)
    return Row(tool, strategy, _median(counts, cap), statistics.median(walls), _found(counts), runs)


def _found(counts: list[int | None]) -> int:
    return sum(c is not None for c in counts)


def best(rows: list[Row]) -> Row | None:
    ranked = [r for r in rows if r.schedules is not None]
    return min(ranked, key=lambda r: (r.schedules, r.wall)) if ranked else None


def _count(row: Row | None) -> str:
    if row is None:
        return "—"
    if row.schedules is None:
        return f"none ≤ cap ({row.found}/{row.seeds})"
    return f"{row.schedules:g}"


def _ratio(ours: Row, theirs: Row | None) -> str:
    if theirs is None or theirs.schedules is None or ours.schedules is None:
        return "—"
    return f"{ours.schedules / theirs.schedules:.2f}× schedules, {ours.wall / theirs.wall:.2f}× time"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seeds", type=int, default=50)
    parser.add_argument("--cap", type=int, default=1000, help="schedules per search at most")
    parser.add_argument("--scenarios", nargs="+", default=list(peers.SCENARIOS), choices=peers.SCENARIOS)
    args = parser.parse_args(argv)
    print(f"python {sys.version.split()[0]} · {args.seeds} seeds · cap {args.cap} schedules\n")
    summary: list[tuple[str, Row, dict[str, Row | None]]] = []
    wins = 0
    for name in args.scenarios:
        ours = run_stress(name, args.seeds, args.cap)
        print(f"{name}")
        print(f"  {'stress':16} {'controlled':22} median {_count(ours):>6} schedules  {ours.wall * 1000:8.1f} ms")
        bests: dict[str, Row | None] = {}
        for tool in peers.TOOLS:
            rows: list[Row] = []
            for strategy in peers.strategies(tool):
                got = run_peer(tool, strategy, name, args.seeds, args.cap)
                if isinstance(got, str):
                    print(f"  {tool:16} unavailable: {got}")
                    break
                rows.append(got)
                print(f"  {tool:16} {strategy:22} median {_count(got):>6} schedules  {got.wall * 1000:8.1f} ms")
            bests[tool] = best(rows) if rows else None
        frontrun = bests.get("frontrun")
        if frontrun is not None and frontrun.schedules is not None and ours.schedules is not None:
            wins += ours.schedules <= frontrun.schedules
        summary.append((name, ours, bests))
        print()
    print("Schedules to the first failure (median), stress against each peer's best strategy")
    header = f"{'scenario':14} {'stress':>7} " + " ".join(f"{tool + ' (best)':>30}" for tool in peers.TOOLS)
    print(header)
    for name, ours, bests in summary:
        cells = []
        for tool in peers.TOOLS:
            row = bests.get(tool)
            cells.append(f"{(_count(row) + ' ' + row.strategy) if row else 'unavailable':>30}")
        print(f"{name:14} {_count(ours):>7} " + " ".join(cells))
    print("\nratios, stress / peer's best (below 1: stress needed fewer)")
    for name, ours, bests in summary:
        print(f"  {name:14} " + " · ".join(f"{tool}: {_ratio(ours, bests.get(tool))}" for tool in peers.TOOLS))
    if any(bests.get("frontrun") is not None for _, _, bests in summary):
        print(f"\nstress needs no more schedules than frontrun's best on {wins} of {len(summary)} programs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

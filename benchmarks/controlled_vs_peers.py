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

A second table, "as written", runs programs that start their own threads (``benchmarks/
as_written.py``: the chapter's counter and bank with ``threading.Thread`` and module-level locks, a
nested ``ThreadPoolExecutor`` submit, a ``threading.Timer`` race, a ``queue.Queue`` join/task_done
leak), each a plain function written once and run unchanged: by stress as the body of a variant
(``trial.check(program())``), by interleave-test as its model (``explore(model)``, which patches
``threading``'s classes and ``time`` for the run), every strategy it offers. Both switch only in
as_written.py's code, and interleave-test runs a copy of the module imported afresh (stress adopts
a module's idle module-level locks for good; interleave-test must see them as the program made
them). The same medians over ``--seeds`` seeds, stress against interleave-test's best strategy.
Only a failure of the program's own kind counts as finding the bug (a broken invariant, or a
deadlock for the two that hang); anything else a tool reports on the buggy version (its own error,
a hang it cannot schedule) is named in the cell. Each program's fixed version is then run for
``--fixed-seeds`` seeds (5) × ``--fixed-schedules`` schedules (200), stopping at the first failure,
by stress and by every interleave-test strategy: any failure there is a false alarm. frontrun's
``explore`` schedules only the worker threads it starts itself (threads a worker starts run
unscheduled), so it cannot run these programs unchanged and its column says so::

    /tmp/bench/bin/python benchmarks/controlled_vs_peers.py --tables as-written   # that table only
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import importlib.util
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import as_written
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


# --------------------------------------------------------------------------------------------------
# As written: programs that start their own threads, run unchanged by every tool
# --------------------------------------------------------------------------------------------------

written = Scenario("peers-as-written", "Programs that start their own threads, run as written")
#: What each buggy program's failure is: anything else a tool reports on it is not the bug.
EXPECTED = {"counter": "failed", "bank": "failed", "nested": "deadlocked", "timer": "failed", "queue": "deadlocked"}
FRONTRUN_NA = "n/a: explore() schedules only the worker threads it starts; threads a worker starts run unscheduled"


def _written_body(label: str, program: Callable[[], bool]) -> Callable[[Trial], None]:
    def body(trial: Trial) -> None:
        trial.check(program(), f"{label}: invariant violated")

    body.__name__ = label.replace("-", "_")
    return body


for _name, (_what, _buggy, _fixed) in as_written.PROGRAMS.items():
    written.variant(_name, expect="unsafe", description=_what)(_written_body(_name, _buggy))
    written.variant(f"{_name}-fixed", expect="safe", description=f"{_what}, fixed")(
        _written_body(f"{_name}-fixed", _fixed)
    )


def written_variant(label: str) -> Variant:
    """``as_written``'s program as a stress variant. Only as_written.py is in scope (switches happen
    in the program's code, not in the body around it), as it is the only file interleave-test traces."""
    return dataclasses.replace(written.get(label), files=(str(Path(as_written.__file__).resolve()),))


def _fresh_programs() -> Any:
    """A copy of ``as_written`` of interleave-test's own, imported afresh and not registered in
    ``sys.modules``: its module-level locks are plain ones, as the program's, whatever stress did to
    the copy it ran (it adopts a module's idle module-level primitives for good)."""
    spec = importlib.util.spec_from_file_location("as_written_for_peers", as_written.__file__)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclasses.dataclass(frozen=True)
class Search:
    """One search: the number of the first failing schedule (None: none within the cap), how it
    failed ("failed", "deadlocked", "hung", "error: ..."), and its wall time."""

    schedules: int | None
    kind: str | None
    wall: float


@dataclasses.dataclass
class WrittenRow(Row):
    #: Seeds whose first failure was not the program's bug, by what the tool reported instead.
    other: dict[str, int] = dataclasses.field(default_factory=dict)


class Violated(Exception):
    """The program returned False: its invariant broke (told apart from a tool's own errors)."""


def stress_search(label: str, seed: int, cap: int) -> Search:
    config = build_config([Layer({"mode": "controlled", "seed": seed}, lambda key, value: key)])
    found = first_failure(written_variant(label), config, limit=cap)
    return Search(found.schedules, str(found.outcome) if found.outcome is not None else None, found.seconds)


def _interleave_strategy(strategy: str) -> Any:
    import interleave_test as it

    name, params = peers._parse(strategy)
    if name == "random":
        return it.RandomStrategy()
    if name == "pct":  # a fresh instance per exploration, as peers.py does
        return it.PCTStrategy(depth=int(params.get("d", 3)))
    if name == "dfs":
        return it.DFSStrategy(max_preemptions=int(params.get("pb", 2)))
    raise ValueError(f"unknown interleave-test strategy {strategy!r}")


def interleave_search(
    label: str, program: Callable[[], bool], seed: int, strategy: str, cap: int, timeout: float
) -> Search:
    """``program`` as interleave-test's model, unchanged: it starts its own threads, which
    ``explore`` schedules while it patches ``threading``."""
    try:
        import interleave_test as it
    except ImportError as exc:
        raise peers.PeerUnavailable(f"interleave-test is not installed (it needs Python >= 3.12): {exc}") from exc

    def model() -> None:
        if not program():
            raise Violated(label)

    model.__name__ = label.replace("-", "_")
    strat = _interleave_strategy(strategy)
    start = time.perf_counter()
    result = it.explore(
        model,
        iterations=cap,
        seed=seed,
        strategy=strat,
        timeout=timeout,
        exclude=[str(Path(__file__).resolve())],  # trace the program, not this wrapper (as stress's scope)
        raise_on_failure=False,
    )
    wall = time.perf_counter() - start
    failure = result.failure
    if failure is None:
        return Search(None, None, wall)
    if failure.kind == "exception":
        exc = failure.exception
        kind = "failed" if isinstance(exc, Violated) else f"error: {type(exc).__name__}: {exc}"
    else:
        kind = {"deadlock": "deadlocked", "hang": "hung"}.get(failure.kind, failure.kind)
    return Search(failure.iteration + 1, kind, wall)  # iteration is 0-based


def _collect(tool: str, strategy: str, searches: list[Search], expected: str, cap: int) -> WrittenRow:
    counts = [s.schedules if s.kind == expected else None for s in searches]
    other = collections.Counter(s.kind for s in searches if s.kind is not None and s.kind != expected)
    wall = statistics.median(s.wall for s in searches)
    return WrittenRow(tool, strategy, _median(counts, cap), wall, _found(counts), len(searches), dict(other))


def _false_alarm(search: Callable[[int], Search], seeds: int) -> Search | None:
    """The first failure of a fixed program over ``seeds`` seeds (None: there was none)."""
    for seed in range(seeds):
        got = search(seed)
        if got.schedules is not None:
            return got
    return None


def _short(kind: str | None, width: int = 60) -> str:
    text = (kind or "").split("\n", 1)[0]
    return text if len(text) <= width else text[: width - 1] + "…"


def _written_count(row: WrittenRow | None) -> str:
    if row is None:
        return "—"
    if row.found == 0 and row.other:
        return f"n/a: {_short(max(row.other, key=row.other.__getitem__), 48)}"
    return _count(row)


def _alarms(alarms: dict[str, Search | None]) -> str:
    """The false alarms of a tool's strategies, grouped by what they were."""
    by_kind: dict[str, list[str]] = {}
    for strategy, alarm in alarms.items():
        if alarm is not None:
            by_kind.setdefault(_short(alarm.kind, 48), []).append(f"{strategy} at {alarm.schedules}")
    return "; ".join(f"{kind} ({', '.join(where)})" for kind, where in by_kind.items()) or "none"


def _drop_peer_teardown(original: Callable[[Any], None], dropped: list[int]) -> Callable[[Any], None]:
    """An unraisable hook that drops what interleave-test's teardown of an aborted schedule leaves
    (an executor's weakref callback meeting a dead scheduler) and passes on the rest."""

    def hook(unraisable: Any) -> None:
        exc = unraisable.exc_value
        if type(exc).__module__.startswith("interleave_test") or "interleave_test" in str(exc):
            dropped[0] += 1
            return
        original(unraisable)

    return hook


@dataclasses.dataclass
class WrittenResult:
    name: str
    stress: WrittenRow
    stress_alarm: Search | None
    peer: WrittenRow | None  # interleave-test's best strategy (None: unavailable or nothing found)
    peer_note: str  # what interleave-test did instead, when it found nothing
    peer_alarms: str


def as_written_table(args: argparse.Namespace) -> None:
    print(
        "As written: programs that start their own threads (benchmarks/as_written.py), run unchanged\n"
        f"python {sys.version.split()[0]} · {args.seeds} seeds · cap {args.cap} schedules · fixed versions: "
        f"{args.fixed_seeds} seeds × {args.fixed_schedules} schedules, any failure = false alarm\n"
    )
    dropped = [0]
    saved_hook = sys.unraisablehook
    sys.unraisablehook = _drop_peer_teardown(saved_hook, dropped)
    results: list[WrittenResult] = []
    try:
        for name in args.programs:
            results.append(_as_written_program(name, args))
            print()
    finally:
        sys.unraisablehook = saved_hook
    _print_written_summary(results, args)
    if dropped[0]:
        print(f"({dropped[0]} exceptions left by interleave-test's teardown of aborted schedules were dropped)")


def _as_written_program(name: str, args: argparse.Namespace) -> WrittenResult:
    expected = EXPECTED[name]
    what, buggy, fixed = _fresh_programs().PROGRAMS[name]  # interleave-test's copy
    print(f"{name}: {what} (the bug: {expected})")
    searches = [stress_search(name, seed, args.cap) for seed in range(args.seeds)]
    ours = _collect("stress", "controlled (default)", searches, expected, args.cap)
    ours_alarm = _false_alarm(lambda seed: stress_search(f"{name}-fixed", seed, args.fixed_schedules), args.fixed_seeds)
    _print_written(ours, ours_alarm)
    rows: list[WrittenRow] = []
    alarms: dict[str, Search | None] = {}
    for strategy in peers.strategies("interleave-test"):
        runs, fixed_seeds = (1, 1) if strategy in DETERMINISTIC else (args.seeds, args.fixed_seeds)
        try:
            got = [interleave_search(name, buggy, seed, strategy, args.cap, args.timeout) for seed in range(runs)]
        except peers.PeerUnavailable as exc:
            print(f"  {'interleave-test':16} unavailable: {str(exc).split(':')[0]}")
            return WrittenResult(name, ours, ours_alarm, None, "unavailable", "unavailable")
        row = _collect("interleave-test", strategy, got, expected, args.cap)
        alarms[strategy] = _false_alarm(
            lambda seed, strategy=strategy: interleave_search(
                f"{name}-fixed", fixed, seed, strategy, args.fixed_schedules, args.timeout
            ),
            fixed_seeds,
        )
        rows.append(row)
        _print_written(row, alarms[strategy])
    print(f"  {'frontrun':16} {FRONTRUN_NA}")
    theirs = best(rows)  # type: ignore[arg-type]
    note = "" if theirs is not None else _written_count(rows[0])
    return WrittenResult(name, ours, ours_alarm, theirs, note, _alarms(alarms))  # type: ignore[arg-type]


def _print_written(row: WrittenRow, alarm: Search | None) -> None:
    count = _written_count(row)
    head = f"  {row.tool:16} {row.strategy:22} "
    if count.startswith("n/a"):
        print(f"{head}{count}  ({row.seeds - row.found}/{row.seeds} runs)")
    else:
        other = ", ".join(f"{n}× {_short(k, 48)}" for k, n in row.other.items())
        print(
            f"{head}median {count:>6} schedules  {row.wall * 1000:8.1f} ms  found {row.found}/{row.seeds}"
            + (f"  (other first failures: {other})" if other else "")
        )
    fixed = "no failure" if alarm is None else f"{_short(alarm.kind)} at schedule {alarm.schedules}"
    print(f"  {'':16} {'':22} fixed version: {fixed}")


def _print_written_summary(results: list[WrittenResult], args: argparse.Namespace) -> None:
    print("As written: schedules to the first failure (median), stress against interleave-test's best strategy")
    print(f"{'program':8} {'stress':>7} {'interleave-test (best)':>58} {'ratio':>7}  frontrun")
    wins = compared = 0
    for r in results:
        cell = f"{_count(r.peer)} {r.peer.strategy}" if r.peer is not None else r.peer_note
        ratio = "—"
        if r.peer is not None and r.peer.schedules is not None and r.stress.schedules is not None:
            ratio = f"{r.stress.schedules / r.peer.schedules:.2f}×"
            compared += 1
            wins += r.stress.schedules <= r.peer.schedules
        print(f"{r.name:8} {_written_count(r.stress):>7} {cell:>58} {ratio:>7}  n/a")
    runs = f"{args.fixed_seeds} seeds × {args.fixed_schedules} schedules; DFS: 1 × {args.fixed_schedules}"
    print(f"\nFalse alarms on the fixed versions ({runs}; the schedule of the first)")
    for r in results:
        ours = "none" if r.stress_alarm is None else f"{_short(r.stress_alarm.kind)} at {r.stress_alarm.schedules}"
        print(f"  {r.name:8} stress: {ours} · interleave-test: {r.peer_alarms}")
    if any("hung" in r.peer_alarms for r in results):
        print(
            "  (hung: a schedule ran past --timeout blocked where interleave-test does not schedule: a lock made"
            " at import, before explore() patched threading, is a real lock to it)"
        )
    print(f"\nfrontrun: {FRONTRUN_NA}")
    alarmed = sum(r.stress_alarm is not None for r in results)
    print(
        f"stress needs no more schedules than interleave-test's best on {wins} of the {compared} programs both "
        f"found the bug in; stress's false alarms: {alarmed} of {len(results)} fixed programs"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seeds", type=int, default=50)
    parser.add_argument("--cap", type=int, default=1000, help="schedules per search at most")
    parser.add_argument("--scenarios", nargs="+", default=list(peers.SCENARIOS), choices=peers.SCENARIOS)
    parser.add_argument(
        "--tables", nargs="+", default=["peers", "as-written"], choices=["peers", "as-written"], help="what to run"
    )
    parser.add_argument("--programs", nargs="+", default=list(as_written.PROGRAMS), choices=list(as_written.PROGRAMS))
    parser.add_argument("--fixed-seeds", type=int, default=5, help="seeds each fixed program is run for")
    parser.add_argument("--fixed-schedules", type=int, default=200, help="schedules per seed of a fixed program")
    parser.add_argument(
        "--timeout", type=float, default=peers.DEFAULT_TIMEOUT, help="interleave-test's seconds per schedule"
    )
    args = parser.parse_args(argv)
    if "peers" in args.tables:
        peers_table(args)
    if "as-written" in args.tables:
        if "peers" in args.tables:
            print("\n")
        as_written_table(args)
    return 0


def peers_table(args: argparse.Namespace) -> None:
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


if __name__ == "__main__":
    raise SystemExit(main())

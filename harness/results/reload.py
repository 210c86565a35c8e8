"""Rebuilding a run's report from its folder alone.

``run.json`` says what was asked; ``results.jsonl`` holds every trial that finished. Feeding the
trials through the same tallies the engine used gives the same report — also for a run that was
interrupted (Ctrl-C: ``summary.json`` says so) or killed (no ``summary.json``: the report is marked
incomplete, and covers every trial that reached the disk).
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

from harness.errors import UserError
from harness.results.outcome import Outcome
from harness.results.run_dir import RESULTS, RUN, SUMMARY, read_results
from harness.results.stats import Exploration, VariantStats
from harness.results.summary import RunInfo, RunReport, ranked
from harness.scenario import Expect

__all__ = ["load_report", "ran_atomically"]


def load_report(run_dir: Path) -> RunReport:
    """The report of the run in ``run_dir``, recomputed from its trials."""
    if not (run_dir / RUN).is_file() or not (run_dir / RESULTS).is_file():
        raise UserError(f"{str(run_dir)!r} is not a run folder (it needs {RUN} and {RESULTS}); see 'stress run --out'")
    try:
        info = RunInfo.from_dict(json.loads((run_dir / RUN).read_text(encoding="utf-8")), run_dir)
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{run_dir / RUN}: not a run description stress can read ({exc})") from None
    stats = {v.key: VariantStats(v.key, Expect(v.expect), v.description) for v in info.variants}
    trials = 0
    for result in read_results(run_dir):
        tally = stats.get(result.variant)
        if tally is not None:
            tally.add(result)
            trials += 1
    finished, wall, interrupted, stopped_by = _ending(run_dir, info)
    # A variant with an unsupported schedule had its other schedules skipped.
    per_variant = info.total_trials // max(1, len(stats))
    skipped = sum(per_variant - s.trials for s in stats.values() if s.by_outcome[Outcome.UNSUPPORTED])
    complete = trials + skipped == info.total_trials
    if info.exhaustive:
        # How many schedules a search takes is known only at its end, from summary.json.
        searches = _explorations(run_dir)
        for key, exploration in searches.items():
            if key in stats:
                stats[key].exploration = exploration
        complete = bool(searches) and all(e.complete for e in searches.values()) and not interrupted
    return RunReport(
        info=info,
        variants=ranked([s.summary() for s in stats.values()]),
        finished=finished,
        wall=wall,
        trials=trials,
        complete=complete,
        interrupted=interrupted,
        stopped_by=stopped_by,
        atomic=ran_atomically(run_dir),
    )


def ran_atomically(run_dir: Path) -> tuple[str, ...]:
    """The installed packages a run's ``summary.json`` says ran with no switch inside (none when
    it has no summary)."""
    try:
        found = json.loads((run_dir / SUMMARY).read_text(encoding="utf-8")).get("ran_atomically", [])
    except (OSError, ValueError, AttributeError):
        return ()
    return tuple(str(name) for name in found) if isinstance(found, list) else ()


def _explorations(run_dir: Path) -> dict[str, Exploration]:
    try:
        data = json.loads((run_dir / SUMMARY).read_text(encoding="utf-8"))
        found = {v["variant"]: Exploration.from_dict(v.get("exploration")) for v in data["variants"]}
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return {key: exploration for key, exploration in found.items() if exploration is not None}


def _ending(run_dir: Path, info: RunInfo) -> tuple[str, float, bool, str | None]:
    """When the run ended, how long it took, whether it was interrupted and by which signal.
    Without a summary.json (the run was killed), the last write to results.jsonl is the end."""
    summary = run_dir / SUMMARY
    if summary.is_file():
        try:
            data = json.loads(summary.read_text(encoding="utf-8"))
            stopped_by = data.get("stopped_by")
            return (
                str(data["finished"]),
                float(data["wall_seconds"]),
                bool(data.get("interrupted", False)),
                stopped_by if isinstance(stopped_by, str) else None,
            )
        except (ValueError, KeyError, TypeError):
            pass
    ended = _dt.datetime.fromtimestamp((run_dir / RESULTS).stat().st_mtime, _dt.UTC)
    try:
        wall = (ended - _dt.datetime.fromisoformat(info.started)).total_seconds()
    except ValueError:
        wall = 0.0
    return ended.isoformat(timespec="seconds"), max(wall, 0.0), False, None

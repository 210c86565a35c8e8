"""The HTML report: one self-contained file that answers, at a glance, which strategy is safe, how
sure we are, and what exactly went wrong.

It reads a `RunReport` (from a finished run, or rebuilt from a run folder) and renders the template
``templates/report.html.j2`` with inline CSS and inline SVG charts: nothing is fetched, nothing runs.
Everything that comes from code under test goes through Jinja's autoescaping (or Pygments, which
escapes what it highlights), and long evidence is clipped with a marker.
"""

from __future__ import annotations

import platform
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup, escape
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import PythonTracebackLexer

from harness.config import GIL
from harness.controlled.trace import Trace
from harness.perturb.knobs import format_seconds
from harness.render import svg
from harness.results.outcome import Outcome, TrialResult
from harness.results.run_dir import write_text
from harness.results.stats import KNOBS, ZERO, VariantSummary, bin_bounds, rule_of_three, wilson
from harness.results.summary import INEXACT_TIMES, RunReport
from harness.scope import HARNESS_DIR
from harness.text import EMPHASIS, clip, fold_frames, per_second, short_where

__all__ = ["render_html", "write_html"]

BLOCK_LIMIT = 12_000
KNOB_TITLES = {
    "preempt": "forced-switch probability per instruction (--preempt)",
    "sync": "forced-switch probability per primitive operation (--sync)",
    "switch_interval": "sys.setswitchinterval (--switch-interval)",
    "jitter": "start jitter bound (--jitter)",
    "delay": "process pause (--delay)",
    "pause": "thread pause (--pause)",
}
_TRACEBACK_FORMAT = HtmlFormatter(noclasses=True, nowrap=True, style="friendly")


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("harness.render", "templates"),
        autoescape=select_autoescape(["html", "j2"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["percent"] = lambda value: f"{value * 100:.3g} %"
    env.filters["code"] = inline_code
    env.filters["command"] = command_words
    env.filters["schedule"] = schedule_breaks
    return env


def command_words(text: str) -> Markup:
    """A shell command for the page, one ``<span class="word">`` per word (an option with its
    value, ``--trial 4``, counts as one): the browser wraps it between words only, never at a
    word's own hyphens (``--variant`` stays whole); a word wider than the page wraps inside
    itself. Copied, it is the command as written."""
    words: list[str] = []
    for word in str(text).split(" "):
        if words and words[-1].startswith("-") and " " not in words[-1] and not word.startswith("-"):
            words[-1] += " " + word
        else:
            words.append(word)
    return Markup(" ").join(Markup('<span class="word">%s</span>') % word for word in words)


def schedule_breaks(text: str) -> Markup:
    """A schedule (``v2:2>2,9>1,...``) that the browser may wrap after any comma, never inside a
    switch: one long line otherwise runs out of its box."""
    return Markup(",<wbr>").join(escape(part) for part in str(text).split(","))


def inline_code(text: str) -> Markup:
    """A description's inline code (a name between backticks, as in Markdown) as ``<code>``, the
    rest escaped."""
    parts = str(text).split("`")
    if len(parts) % 2 == 0:  # an unpaired backtick: not code, shown as written
        return escape(text)
    return Markup("").join(
        _emphasis(part) if n % 2 == 0 else Markup("<code>%s</code>") % part for n, part in enumerate(parts)
    )


def _emphasis(text: str) -> Markup:
    """Markdown's ``*emphasis*`` as ``<em>``, the rest escaped."""
    pieces = EMPHASIS.split(text)
    return Markup("").join(escape(p) if k % 2 == 0 else Markup("<em>%s</em>") % p for k, p in enumerate(pieces))


def write_html(report: RunReport, path: Path | None = None) -> Path:
    """Render ``report`` to ``path`` (default: ``report.html`` in its run folder)."""
    target = path or report.info.run_dir / "report.html"
    write_text(target, render_html(report))
    return target


def render_html(report: RunReport) -> str:
    return _environment().get_template("report.html.j2").render(**_context(report))


def _context(report: RunReport) -> dict[str, Any]:
    info = report.info
    config = info.config
    return {
        "report": report,
        "info": info,
        "inexact_times": INEXACT_TIMES,
        "atomic": report.atomic,
        "status": _status(report),
        "variants": [_variant(report, summary) for summary in report.variants],
        # Controlled mode has schedules, not knobs.
        "knob_charts": [] if config.controlled else list(_knob_charts(report.variants)),
        "flat_variants": [] if config.controlled else _flat_variants(report.variants),
        "sweep_chart": _sweep_chart(report),
        "gil_sweep": config.gil_sweep,
        "safe_only_under_gil": [s.variant for s in report.safe_only_under_gil()],
        "potential": [(s.variant, p) for s in report.variants for p in s.potential_deadlocks],
        "meta": _metadata(report),
        "outcome_colors": svg.OUTCOME_COLORS,
        "single": len(info.scenarios) == 1,
        "config": config,
        "unit": info.unit,
        "mode": info.mode_text if config.controlled else None,
        "health": report.health(),
    }


def _status(report: RunReport) -> dict[str, str]:
    total = report.info.total_trials
    unit = report.info.unit
    if report.info.exhaustive:
        if report.complete:
            return {"kind": "complete", "text": f"complete: every schedule within the bound, {report.trials} in all"}
        ran = f"search stopped early: {report.trials} {unit}s ran; the figures cover those"
        return {"kind": "partial", "text": ran}
    if report.complete:
        return {"kind": "complete", "text": f"complete: {report.trials} {unit}s"}
    if report.interrupted:
        return {
            "kind": "partial",
            "text": f"interrupted: {report.trials} of {total} trials ran; the figures cover those",
        }
    return {
        "kind": "partial",
        "text": f"incomplete: the run stopped without finishing (killed?); {report.trials} of {total} trials "
        "reached the disk, and the figures cover those",
    }


def _variant(report: RunReport, summary: VariantSummary) -> dict[str, Any]:
    kinds = [(o.label, summary.by_outcome.get(o, 0)) for o in sorted(Outcome, key=lambda o: o.severity)]
    durations = [(_seconds_bin(b), n) for b, n in summary.durations.items()]
    bins = list(summary.durations)
    return {
        "summary": summary,
        "name": summary.name if len(report.info.scenarios) == 1 else summary.variant,
        "verdict_class": summary.verdict.name.lower(),
        "rate_text": summary.rate_text(),
        "clean_bound": rule_of_three(summary.judged) if not summary.failures else None,
        "ci": svg.ci_bar(summary.rate, summary.low, summary.high, label=summary.variant),
        "kinds": svg.stacked_bar(kinds, label=summary.variant),
        "kind_counts": [(label, count) for label, count in kinds if count],
        "durations": svg.histogram(durations, label=summary.variant, unit=report.info.unit),
        "duration_range": (
            f"{format_seconds(bin_bounds(bins[0])[0])} – {format_seconds(bin_bounds(bins[-1])[1])}" if bins else ""
        ),
        "examples": [_example(report, r) for r in summary.examples],
        # For links from the ranking: its first failure, and the knob charts it is drawn in.
        "anchor": re.sub(r"[^A-Za-z0-9_-]+", "-", summary.variant),
        "charted": 0 < summary.failures < summary.judged,
    }


def _seconds_bin(index: int) -> str:
    low, high = bin_bounds(index)
    return f"{format_seconds(low)}–{format_seconds(high)}"


def _value_bin(knob: str, index: int) -> str:
    if index == ZERO:
        return "off"
    low, _ = bin_bounds(index)
    if knob in ("preempt", "sync"):
        return f"{low:.2g}"
    return format_seconds(low)


def _knobs_that_acted(report: RunReport) -> dict[str, str]:
    """The run's knob settings, as ``--help`` names them, but for ``delay`` when no trial had
    anything it acts on (no process actor, no multiprocessing operation: threads only)."""
    knobs = report.info.config.perturbation.describe()
    if report.info.config.perturbation.cancel.off:
        knobs.pop("cancel", None)  # opt-in, for coroutine trials: off says nothing
    if report.variants and not any(summary.knobs.get("delay") for summary in report.variants):
        knobs.pop("delay", None)
    return knobs


def _knob_charts(summaries: Iterable[VariantSummary]) -> Iterable[Markup]:
    """For each knob whose value varied, the failure rate of each failing variant per bin of the
    knob. A variant that never failed, or failed every trial, would be a flat line (at zero, at
    100 %): it is left out (`_flat_variants` names them). A knob that did nothing in a variant's
    trials (``delay`` with threads only) has no bins for it."""
    summaries = [s for s in summaries if 0 < s.failures < s.judged]
    for knob in KNOBS:
        bins = sorted({b for s in summaries for b in s.knobs.get(knob, {})})
        if len(bins) < 2:
            continue
        series = []
        for summary in summaries:
            counts = summary.knobs.get(knob, {})
            points: list[tuple[float, float, float, int] | None] = []
            for b in bins:
                trials, failures = counts.get(b, (0, 0))
                if not trials:
                    points.append(None)
                    continue
                low, high = wilson(failures, trials)
                points.append((failures / trials, low, high, trials))
            series.append(svg.Series(summary.variant, points))
        yield svg.line_chart(
            f"knob-{knob.replace('_', '-')}",
            f"failure rate by {KNOB_TITLES[knob]}",
            [_value_bin(knob, b) for b in bins],
            series,
            x_title=KNOB_TITLES[knob] + " — lower end of each bin",
        )


def _flat_variants(summaries: Iterable[VariantSummary]) -> list[str]:
    """Failing variants left out of the knob charts: they failed every trial, whatever the knobs."""
    return [s.variant for s in summaries if s.failures and s.failures == s.judged]


def _sweep_chart(report: RunReport) -> Markup | None:
    sweep = report.info.config.sweep
    if sweep is None:
        return None
    values = list(sweep.values)
    series = []
    for summary in report.variants:
        by_value = {row[0]: row for row in summary.sweep_rates()}
        points: list[tuple[float, float, float, int] | None] = []
        for value in values:
            row = by_value.get(value)
            points.append(None if row is None else (row[3], row[4], row[5], row[1]))
        series.append(svg.Series(summary.variant, points))
    gil = report.info.config.gil_sweep
    return svg.line_chart(
        "sweep",
        sweep.title.lower(),
        [sweep.heading(v) if gil else sweep.label(v) for v in values],
        series,
        x_title=f"{'the GIL' if gil else KNOB_TITLES.get(sweep.knob, sweep.knob)} (swept)",
    )


def _example(report: RunReport, result: TrialResult) -> dict[str, Any]:
    evidence = result.evidence
    blocks: list[tuple[str, Markup | str]] = []
    messages: tuple[str, ...] = ()
    wait_for: tuple[str, ...] = ()
    blocked: tuple[str, ...] = ()
    if evidence is not None:
        messages = evidence.messages
        wait_for = evidence.wait_for
        blocked = evidence.blocked_at

        def own(file: str) -> bool:  # stress's own frames, folded
            return file.startswith(HARNESS_DIR)

        blocks.extend(("traceback", _highlighted(fold_frames(text, own))) for text in evidence.tracebacks[:2])
        if evidence.dump:
            blocks.append(("thread dump", clip(fold_frames(evidence.dump, own), BLOCK_LIMIT)))
        if evidence.output:
            blocks.append(("printed", clip(evidence.output, BLOCK_LIMIT)))
        if evidence.exit_status is not None:
            messages = (*messages, evidence.summary())
    example: dict[str, Any] = {
        "result": result,
        "outcome": result.outcome.label,
        "duration": format_seconds(result.duration),
        "messages": messages,
        "wait_for": [short_where(line) for line in wait_for],
        "blocked": blocked,
        "blocks": blocks,
        "replay": report.info.replay(result),
    }
    if result.schedule is not None:
        example["schedule"] = result.schedule
        found = result.evidence.messages[0] if result.evidence is not None and result.evidence.messages else None
        example["shrunk_says"] = result.schedule.shrunk_says(found)
        example["trace"] = _trace(Trace.from_dict(result.schedule.trace))
        return example
    plan = result.plan
    example["plan"] = [
        ("trial", str(result.trial)),
        ("preempt", f"{plan.preempt:.3g}"),
        ("sync", f"{plan.sync:.3g}"),
        *([("delay", format_seconds(plan.delay))] if result.delay_used else []),  # else it did nothing
        *([("pause", format_seconds(plan.pause))] if plan.pause else []),
        *([("cancel", f"{plan.cancel:.3g}")] if plan.cancel else []),
        ("switch interval", "unchanged" if plan.switch_interval is None else format_seconds(plan.switch_interval)),
        ("jitter bound", format_seconds(plan.jitter)),
        ("start order", "shuffled" if plan.shuffle else "in order"),
        ("barrier", "yes" if plan.barrier else "no"),
        ("plan seed", str(plan.seed)),
    ]
    sweep = report.info.config.sweep
    if result.sweep is not None and sweep is not None:
        example["plan"].insert(1, ("GIL" if sweep.knob == GIL else "swept value", sweep.label(result.sweep)))
    return example


def _trace(trace: Trace | None) -> dict[str, Any] | None:
    """The interleaving as table rows: for each, the step it starts at, whether the running thread
    changed there, and one cell per thread (empty but the one that ran)."""
    if trace is None:
        return None
    column = {thread: index for index, thread in enumerate(trace.threads)}
    rows = []
    step = 1
    files: dict[str, str] = {}
    for row in trace.rows:
        cells: list[dict[str, Any] | None] = [None] * len(trace.threads)
        show_file = files.get(row.thread) != row.file
        files[row.thread] = row.file
        cells[column[row.thread]] = {
            "line": f"{row.file}:{row.line}" if show_file else row.line,
            "file": row.file,
            "code": row.code,
            "effects": row.effects(),
            "steps": row.steps,
        }
        rows.append({"step": step, "switch": row.switch, "cells": cells})
        step += row.steps
    return {"threads": trace.threads, "rows": rows, "switches": trace.switches, "elided": trace.elided}


def _highlighted(traceback: str) -> Markup:
    """A traceback, coloured by Pygments (which escapes what it highlights)."""
    return Markup(highlight(clip(traceback, BLOCK_LIMIT), PythonTracebackLexer(), _TRACEBACK_FORMAT))


def _metadata(report: RunReport) -> list[tuple[str, str]]:
    info = report.info
    python = info.python
    config = info.config
    rows = [
        ("run", info.run_id),
        ("command", info.command or "(API)"),
        ("seed", str(config.seed)),
        (
            f"{info.unit}s per variant",
            "every one within the bound"
            if info.exhaustive
            else str(config.iterations) + (f" × {len(config.sweep.values)} swept values" if config.sweep else ""),
        ),
        ("workers", str(info.jobs)),
        ("timeout", "adaptive" if config.timeout is None else format_seconds(config.timeout)),
        ("start method", config.start_method),
        (
            ("mode", info.mode_text)
            if config.controlled
            else ("knobs", ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in _knobs_that_acted(report).items()))
        ),
        ("started", info.started),
        ("finished", report.finished),
        ("wall time", f"{report.wall:.1f} s ({per_second(report.trials_per_second)} {info.unit}s/s)"),
        (
            "python",
            f"{python.get('implementation', platform.python_implementation())} {python.get('version', '?')}"
            f" ({python.get('build', '')}; {python.get('compiler', '')})",
        ),
        (
            "GIL",
            "swept: on and off, each in an interpreter of its own"
            if config.gil_sweep
            else "enabled"
            if python.get("gil_enabled", True)
            else "disabled (free-threaded)",
        ),
        ("platform", str(python.get("platform", platform.platform()))),
    ]
    if config.sweep is not None:
        rows.insert(4, ("sweep", config.sweep.text()))
    return rows

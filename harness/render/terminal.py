"""The terminal: scenario listings, the live progress display, and the final ranking.

Everything here reads engine objects (`RunInfo`, `TrialResult`, `RunReport`) and draws them with
rich. The live display redraws from the engine's own loop (``auto_refresh=False``), so the parent
process never starts a thread and can fork replacement workers safely.
"""

from __future__ import annotations

import inspect
import io
import os
import re
import shlex
import textwrap
import time
from typing import IO, TYPE_CHECKING, Any, cast

from rich import box
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.live import Live
from rich.padding import Padding
from rich.progress_bar import ProgressBar
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from harness.controlled.schedule import Schedule, ScheduleRecord
from harness.controlled.trace import Trace
from harness.perturb.knobs import format_seconds
from harness.results.outcome import Outcome, TrialResult
from harness.results.stats import VariantStats, VariantSummary, Verdict, percent, rule_of_three
from harness.results.summary import RunInfo, RunReport
from harness.scenario import Expect, Scenario, Variant
from harness.scope import HARNESS_DIR
from harness.text import EMPHASIS, fold_frames, per_second, plural, short_path

if TYPE_CHECKING:
    from harness.engine.replay import Expected, Replay
    from harness.registry import Registry
    from harness.results.compare import Change

__all__ = ["LiveProgress", "make_console", "print_list", "print_report", "print_show", "trace_table"]

REFRESH = 0.1
#: Off a terminal (a CI log, a pipe), seconds between progress lines.
LOG_EVERY = 5.0
#: Rows of an interleaving trace shown per example failure (the HTML report shows them all).
TRACE_ROWS = 40
_OUTCOME_STYLE = {
    Outcome.PASSED: "green",
    Outcome.FAILED: "red",
    Outcome.ERROR: "magenta",
    Outcome.STALLED: "bright_magenta",
    Outcome.DEADLOCKED: "bright_red",
    Outcome.HUNG: "yellow",
    Outcome.CRASHED: "bold red",
    Outcome.UNDECIDED: "cyan",
    Outcome.UNSUPPORTED: "cyan",
}
_VERDICT_STYLE = {
    Verdict.EXPOSED: "green",
    Verdict.HELD: "green",
    Verdict.NOT_EXPOSED: "yellow",
    Verdict.BROKEN: "bold red",
    Verdict.RISKY: "bold red",
    Verdict.UNDECIDED: "cyan",
    Verdict.UNSUPPORTED: "cyan",
    Verdict.NOT_RUN: "dim",
}


#: Spaces at the end of a line, before any colour codes that close it.
_TRAILING = re.compile(r" +((?:\x1b\[[0-9;]*m)*)$")


class TrimmedLines(io.TextIOBase):
    """A text stream that writes to ``out`` every line without the spaces at its end: rich pads
    table cells and indented blocks to their full width, which a terminal never shows but a log
    file, a pipe or a diff keeps. A line is written once its newline comes."""

    def __init__(self, out: IO[str]) -> None:
        super().__init__()
        self._out = out
        self._pending = ""

    def write(self, text: str) -> int:
        lines = (self._pending + text).split("\n")
        self._pending = lines.pop()
        if lines:
            self._out.write("\n".join(_TRAILING.sub(r"\1", line) for line in lines) + "\n")
        return len(text)

    def flush(self) -> None:
        self._out.flush()

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self._out.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._out, "encoding", None) or "utf-8"


def make_console(*, width: int | None = None) -> Console:
    """The console stress prints to: standard output, through `TrimmedLines` when it is not a
    terminal, ``width`` columns wide (default: the terminal's; off a terminal, ``COLUMNS`` or 100)."""
    console = Console(highlight=False)
    if not console.is_terminal:
        console.file = cast(IO[str], TrimmedLines(console.file))
        if width is None and "COLUMNS" not in os.environ:
            width = 100
    if width is not None:
        console.width = width
    return console


def inline_code(text: str, style: str = "") -> Text:
    """A description's inline code (a name between backticks, as in Markdown) styled as code,
    without the backticks (with no colour, the name is left plain)."""
    parts = text.split("`")
    if len(parts) % 2 == 0:  # an unpaired backtick: not code, shown as written
        return Text(text, style=style)
    out = Text(style=style)
    for n, part in enumerate(parts):
        if n % 2:
            out.append(part, style="bold cyan")
            continue
        for k, piece in enumerate(EMPHASIS.split(part)):  # *try*: emphasis, as in Markdown
            out.append(piece, style="italic" if k % 2 else "")
    return out


def _expect_text(expect: Expect) -> Text:
    return Text(expect.value, style="red" if expect is Expect.UNSAFE else "green")


#: Least width of a variant's description beside its name in `stress list` (narrower: below it).
_DESCRIPTION_MIN = 30


def print_list(console: Console, registry: Registry, *, target: str = "SCENARIO") -> None:
    """Each scenario, its description wrapped under itself, and its variants below it: name,
    expectation and description in columns, or the description under the name where the terminal
    is too narrow for three columns. The footer's commands run ``target`` (a scenario file, when
    the scenarios came from one)."""
    names = max((len(variant.name) for scenario in registry for variant in scenario), default=7)
    side_by_side = console.width - 2 - names - 2 - 6 - 2 >= _DESCRIPTION_MIN
    for number, scenario in enumerate(registry):
        if number:
            console.print()
        description = inline_code(scenario.description, "italic")
        refused = {v.name for v in scenario if scenario.stress_only or v.outside_schedules()}
        if refused and len(refused) == len(scenario):
            description.append(" (stress mode only)", style="dim")
        heading = Table.grid(padding=(0, 2))
        heading.add_column(no_wrap=True, style="bold cyan")
        heading.add_column()
        heading.add_row(scenario.name, description)
        console.print(heading)
        # Some variants only, where others can run in controlled mode: marked one by one.
        only = refused if len(refused) < len(scenario) else set()

        def said(variant: Variant, only: set[str] = only) -> Text:
            text = inline_code(variant.description)
            if variant.name in only:
                text.append(" (stress mode only)", style="dim")
            return text

        if not side_by_side:
            for variant in scenario:
                console.print(Text.assemble("  ", variant.name, ("  expect ", "dim"), _expect_text(variant.expect)))
                console.print(Padding(said(variant), (0, 0, 0, 4)))
            continue
        variants = Table.grid(padding=(0, 2))
        variants.add_column(no_wrap=True, min_width=names)
        variants.add_column(no_wrap=True, min_width=6)
        variants.add_column()
        for variant in scenario:
            variants.add_row(variant.name, _expect_text(variant.expect), said(variant))
        console.print(Padding(variants, (0, 0, 0, 2)))
    console.print()
    hints = [("Run one with:", f"stress run {target} --iterations 2000")]
    controlled = _controlled_command(registry, target)
    if controlled is not None:
        hints.append(("Find the exact failing interleaving with:", controlled))
    for words, command in hints:
        if len(words) + 2 + len(command) <= console.width:
            console.print(Text.assemble(words, "  ", command, style="dim"))
        else:  # a command is never broken in the middle
            console.print(Text(words, style="dim"))
            print_command(console, Text("  "), command)


def _controlled_command(registry: Registry, target: str) -> str | None:
    """The ``--mode controlled`` command to offer for what ``stress list`` showed — one that runs,
    not one refused: the whole target when every variant can; else a scenario of a file that can
    (``FILE::NAME``), else the variants that can (``--variant``); None when none can."""
    ok = {v.key for s in registry for v in s if not s.stress_only and v.outside_schedules() is None}
    every = [v.key for s in registry for v in s]
    if not ok:
        return None
    if len(ok) == len(every) or target == "SCENARIO":
        return f"stress run {target} --mode controlled"
    whole = [s.name for s in registry if all(v.key in ok for v in s)]
    if whole and target.endswith(".py"):
        return shlex.join(["stress", "run", f"{target}::{whole[0]}", "--mode", "controlled"])
    flags = [word for key in every if key in ok for word in ("--variant", key)]
    return shlex.join(["stress", "run", target, "--mode", "controlled", *flags])


def print_show(console: Console, scenario: Scenario) -> None:
    console.print(Text.assemble((scenario.name, "bold cyan"), "  ", inline_code(scenario.description)))
    shape = [f"default size (work per actor): {scenario.size}"]
    if scenario.actors is not None:
        shape.append(f"actors: {scenario.actors} (--actors)")
    controlled = f"controlled mode: size {scenario.controlled_size}"
    if scenario.actors is not None:
        controlled += f", {scenario.controlled_actors} actors"
    shape.append(controlled)
    if any(variant.is_coroutine for variant in scenario):
        # Which model of awaits its coroutine variants are judged by (README: Coroutines: asyncio).
        shape.append(
            "coroutines: any await on a primitive may suspend (may_suspend)"
            if scenario.may_suspend
            else "coroutines: asyncio's model (a ready primitive's operation returns at once)"
        )
    if scenario.cancellable:
        shape.append("takes --cancel")
    console.print(_fold(shape, console.width), style="dim")
    variants = {id(variant.fn) for variant in scenario}
    helpers: dict[int, Any] = {}
    for variant in scenario:
        console.print()
        console.print(
            Text.assemble(
                ("● ", "dim"),
                (variant.name, "bold"),
                "  ",
                _expect_text(variant.expect),
                (f"  {variant.where()}", "dim"),
            )
        )
        source = variant.source()
        if variant.description and variant.description.split("`")[0] not in source:  # else the docstring says it
            console.print(_indented(inline_code(variant.description, "italic"), 2))
        console.print(_indented(_python(console, source, console.width - 2), 2))
        helpers.update((id(h), h) for h in variant.helpers() if id(h) not in variants)
    if helpers:
        console.print()
        console.print(Text("What the variants call, from the same file", style="bold"))
        for helper in helpers.values():
            code = getattr(helper, "__code__", None) or getattr(getattr(helper, "__init__", None), "__code__", None)
            where = f"{short_path(code.co_filename)}" if code is not None else ""
            try:
                text = inspect.getsource(helper)
                line = inspect.getsourcelines(helper)[1]
                where = f"{where}:{line}" if where else ""
            except (OSError, TypeError):
                text = f"# source of {helper.__name__} is not available\n"
            console.print()
            console.print(Text.assemble(("● ", "dim"), (helper.__name__, "bold"), (f"  {where}", "dim")))
            console.print(_indented(_python(console, text, console.width - 2), 2))


def _python(console: Console, source: str, width: int) -> Text:
    """Source code, highlighted, in ``width`` columns: a line longer than that wraps (never cut
    off) under its own indentation and four more, after a dim ``↪`` that says it is the same line
    (not a line break in the code), so the code's shape stays readable."""
    code = source.rstrip("\n")
    highlighted = Syntax(code, "python", theme="ansi_dark", background_color="default").highlight(code)
    out: list[Text] = []
    for line in highlighted.split("\n", allow_blank=True):
        line.rstrip()
        indent = len(line.plain) - len(line.plain.lstrip(" "))
        if indent + len(line.plain[indent:]) <= width:
            out.append(line)
            continue
        hanging = min(indent + 4, width // 2)
        pieces = line[indent:].wrap(console, max(10, width - hanging), overflow="fold")
        for number, piece in enumerate(pieces):
            lead = Text(" " * indent) if number == 0 else Text.assemble(" " * (hanging - 2), ("↪ ", "dim"))
            out.append(lead + piece)
    while out and not out[-1].plain:
        out.pop()
    return Text("\n").join(out)


class LiveProgress:
    """A `harness.engine.driver.RunObserver` that draws per-variant progress while the run goes on.

    On a terminal it redraws in place at most every `REFRESH` seconds; otherwise (a pipe, CI) it
    prints, every `LOG_EVERY` seconds, a line per variant still running (trials done, failures,
    rate, time left), as a log can show. Either way it prints one line the first time each variant
    fails.
    """

    def __init__(self, console: Console, *, quiet: bool = False) -> None:
        self.console = console
        self.quiet = quiet
        self._live: Live | None = None
        self._stats: dict[str, VariantStats] = {}
        self._info: RunInfo | None = None
        self._started = 0.0
        self._last = 0.0
        self._announced: set[str] = set()
        #: Per variant: every trial numbered (``seq``) below this has finished, and the ones past
        #: it that have too. A failure is announced once no earlier trial can still fail: the
        #: line and the report's example are the same trial, the first by number.
        self._finished_below: dict[str, int] = {}
        self._finished_past: dict[str, set[int]] = {}
        self._next_log = 0.0
        #: Variants whose last progress line said they were done (not repeated).
        self._logged_done: set[str] = set()

    def started(self, info: RunInfo) -> None:
        self._info = info
        self._started = time.monotonic()
        if self.quiet:
            return
        self.console.print(_run_heading(info))
        if self.console.is_terminal:
            self._live = Live(console=self.console, auto_refresh=False, transient=True)
            self._live.start()
            self._redraw()
        else:
            self._next_log = self._started + LOG_EVERY

    def result(self, result: TrialResult, stats: VariantStats) -> None:
        variant = result.variant
        self._stats[variant] = stats
        below = self._finished_below.get(variant, 0)
        past = self._finished_past.setdefault(variant, set())
        if result.seq == below:
            below += 1
            while below in past:
                past.discard(below)
                below += 1
            self._finished_below[variant] = below
        elif result.seq > below:
            past.add(result.seq)
        first = stats.first_failure
        if first is not None and first.seq < below and variant not in self._announced and not self.quiet:
            self._announce(first, stats)

    def _announce(self, result: TrialResult, stats: VariantStats) -> None:
        """A variant's first failure by number (the report's example), as soon as it is certain."""
        self._announced.add(result.variant)
        expect = stats.expect
        style = "bold red" if expect is Expect.SAFE else "yellow"
        what = "expected safe, but" if expect is Expect.SAFE else "fails:"
        summary = result.evidence.summary() if result.evidence else ""
        sweep = self._info.config.sweep if self._info else None
        swept = f"({sweep.heading(result.sweep)}) " if sweep is not None and result.sweep is not None else ""
        self.console.print(
            _marked(
                Text("✗", style=style),
                Text.assemble(
                    (result.variant, "bold"),
                    f" {what} {self._info.unit if self._info else 'trial'} {result.trial} {swept}",
                    (result.outcome.label, _OUTCOME_STYLE[result.outcome]),
                    f" — {summary}" if summary else "",
                ),
            )
        )

    def tick(self) -> None:
        now = time.monotonic()
        if self._live is not None and now - self._last >= REFRESH:
            self._last = now
            self._redraw()
        elif self._next_log and now >= self._next_log and not self.quiet:
            self._next_log = now + LOG_EVERY
            self._log(now)

    def _log(self, now: float) -> None:
        """Progress as lines (a log): the whole run's, then each variant's that is not done."""
        info = self._info
        if info is None:
            return
        unit = info.unit
        per_variant = None if info.exhaustive else info.total_trials // max(len(info.variants), 1)
        done = sum(stats.trials for stats in self._stats.values())
        elapsed = now - self._started
        of = f"/{info.total_trials:,}" if not info.exhaustive else ""
        left = ""
        if not info.exhaustive and done:
            left = f" · about {format_seconds(elapsed * (info.total_trials - done) / done)} left"
        lines: list[RenderableType] = [Text(f"progress · {done:,}{of} {unit}s · {elapsed:.0f} s{left}", style="dim")]
        for variant in info.variants:
            stats = self._stats.get(variant.key)
            if stats is None or variant.key in self._logged_done:
                continue
            trials, failures = stats.trials, stats.failures
            if per_variant is not None and trials >= per_variant:
                self._logged_done.add(variant.key)
            total = f"/{per_variant:,}" if per_variant is not None else ""
            rate = f" ({percent(failures / trials)})" if trials else ""
            style = "red" if failures and variant.expect == "safe" else ("yellow" if failures else "")
            lines.append(
                _indented(
                    Text.assemble(
                        (variant.key, "bold"), f"  {trials:,}{total} {unit}s · ", (f"{failures:,} failed{rate}", style)
                    ),
                    2,
                )
            )
        for line in lines:
            self.console.print(line)

    def finished(self, report: RunReport) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def _redraw(self) -> None:
        if self._live is None or self._info is None:
            return
        info = self._info
        total: int | None = info.total_trials // max(len(info.variants), 1)
        if info.exhaustive:
            total = None  # unknown until the search ends
        table = Table(box=None, show_header=False, pad_edge=False)
        table.add_column(no_wrap=True)
        table.add_column(width=30)
        table.add_column(justify="right", no_wrap=True)
        table.add_column(no_wrap=True)
        done = 0
        for variant in info.variants:
            stats = self._stats.get(variant.key)
            trials = stats.trials if stats else 0
            failures = stats.failures if stats else 0
            done += trials
            style = "red" if failures and variant.expect == "safe" else ("yellow" if failures else "green")
            table.add_row(
                variant.key,
                ProgressBar(total=total, completed=trials, width=30),
                f"{trials}/{total}" if total is not None else f"{trials:,}",
                Text(f"{failures} failed ({percent(failures / trials)})" if trials else "", style=style),
            )
        elapsed = time.monotonic() - self._started
        rate = done / elapsed if elapsed > 0 else 0.0
        of = "" if info.exhaustive else f"/{info.total_trials}"
        footer = Text(f"{done}{of} {info.unit}s · {elapsed:.1f} s · {rate:,.0f} {info.unit}s/s", style="dim")
        self._live.update(Group(table, footer), refresh=True)


def _run_heading(info: RunInfo) -> Text:
    config = info.config
    names = ", ".join(info.scenarios)
    replay = f" · replaying the plan of trial {config.trial}" if config.trial is not None else ""
    if info.exhaustive:
        amount = f"every schedule within {config.max_preemptions} preemptions"
    else:
        amount = f"{plural(config.iterations, info.unit)} per variant"
    if config.sweep is not None:
        # Each value in turn; a GIL sweep's values each in an interpreter of its own.
        order = ", then ".join(config.sweep.heading(v) for v in config.sweep.values)
        amount += f" per value ({order})"
    return Text.assemble(
        ("stress ", "bold"),
        (names, "bold cyan"),
        (f" · {info.mode_text}", "magenta") if config.controlled else "",
        f" · seed {config.seed} · {amount}",
        f" · {info.jobs} worker{'s' if info.jobs != 1 else ''}{replay}",
        style="",
    )


def _outcomes(summary: VariantSummary) -> Text:
    """Failures by kind, most severe first (passed trials are the rest)."""
    text = Text()
    for outcome, count in sorted(summary.by_outcome.items(), key=lambda item: -item[0].severity):
        if outcome is Outcome.PASSED or not outcome.is_judged:
            continue
        if text:
            text.append("\n")
        text.append(f"{outcome.label} {count}", style=_OUTCOME_STYLE[outcome])
    undecided = summary.by_outcome.get(Outcome.UNDECIDED, 0)
    if undecided:  # not a failure: set apart, and said so
        if text:
            text.append("\n")
        text.append(f"({undecided} undecided)", style="dim cyan")
    unsupported = summary.by_outcome.get(Outcome.UNSUPPORTED, 0)
    if unsupported:
        if text:
            text.append("\n")
        text.append(f"({unsupported} unsupported)", style="dim cyan")
    if summary.potential_deadlocks:
        if text:
            text.append("\n")
        count = len(summary.potential_deadlocks)
        text.append(f"potential deadlock{'s' if count > 1 else ''} {count}", style="bright_red")
    return text or Text("—", style="dim")


def _stacked_ranking(report: RunReport, names: list[str]) -> Table:
    """The ranking for a terminal too narrow for its table: a block per variant, its name, what
    was expected and the verdict on the first line, the rate and the failures below."""
    grid = Table.grid(padding=(0, 1))
    grid.add_column(justify="right", no_wrap=True)
    grid.add_column()
    unit = report.info.unit
    for rank, (summary, name) in enumerate(zip(report.variants, names, strict=True), 1):
        block = Text.assemble(
            (name, "bold"),
            " · ",
            _expect_text(summary.expect),
            " · ",
            (summary.verdict.label, _VERDICT_STYLE[summary.verdict]),
            "\n",
            f"{summary.rate_text()} of {plural(summary.trials, unit)}",
        )
        failures = _outcomes(summary)
        if failures.plain != "—":
            block.append("\n")
            block.append_text(Text(" · ").join(failures.split("\n")))
        grid.add_row(str(rank), block)
    return grid


def _failures_width(text: Text) -> int:
    """Columns a failures cell needs: each of its lines whole, but that ``potential deadlock 1``
    may break after its first word."""
    need = 0
    for line in text.plain.splitlines():
        words = line.split(" ")
        need = max(need, len(" ".join(words[-2:])), *(len(word) for word in words[:-2]))
    return need


def _ranking_table(report: RunReport, names: list[str], width: int) -> Table | None:
    """The ranking as a table, if one fits in ``width`` columns with every cell readable (every
    name whole; the failures may break after a word); else None."""
    info = report.info
    summaries = report.variants
    failures = [_outcomes(summary) for summary in summaries]
    needs = [
        len(str(len(summaries))),
        max(6, *(len(_expect_text(s.expect)) for s in summaries)),
        max(len(f"{info.unit}s"), *(len(str(s.trials)) for s in summaries)),
        max(len("failure rate"), *(len(s.rate_text()) for s in summaries)),
        max(len("verdict"), *(len(s.verdict.label) for s in summaries)),
        max(len("failures"), *(_failures_width(text) for text in failures)),
    ]
    room = width - sum(needs) - 2 * len(needs)  # two columns between each of the 7
    if room < max(len("variant"), *map(len, names)):
        return None  # a name is never broken: the stacked layout has room for it
    table = Table(header_style="bold", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("variant", style="bold", no_wrap=True)
    table.add_column("expect", no_wrap=True, min_width=needs[1])
    table.add_column(f"{info.unit}s", justify="right", no_wrap=True)
    table.add_column("failure rate", no_wrap=True)
    table.add_column("verdict", no_wrap=True)
    table.add_column("failures", min_width=needs[5])
    for rank, (summary, name, text) in enumerate(zip(summaries, names, failures, strict=True), 1):
        table.add_row(
            str(rank),
            name,
            _expect_text(summary.expect),
            str(summary.trials),
            summary.rate_text(),
            Text(summary.verdict.label, style=_VERDICT_STYLE[summary.verdict]),
            text,
        )
    return table


def print_report(console: Console, report: RunReport) -> None:
    """The final ranking, one example per failing variant, and what to worry about."""
    info = report.info
    single = len(info.scenarios) == 1
    names = [summary.name if single else summary.variant for summary in report.variants]
    # A table where it fits; else a block per variant (rich would drop columns, or cut words to a
    # letter a line, to make a table fit).
    ranking = _ranking_table(report, names, console.width) or _stacked_ranking(report, names)
    console.print()
    for name, description in info.scenarios.items():
        console.print(Text.assemble((name, "bold cyan"), ": ", inline_code(description)))
    # Broken between its parts, never inside one ("PCT" / "d=3").
    parts = [
        "Ranked by failure rate",
        f"{plural(report.trials, info.unit)} in {report.wall:.1f} s ({per_second(report.trials_per_second)} "
        f"{info.unit}s/s)",
        f"seed {info.config.seed}",
        *([info.mode_text] if info.config.controlled else []),
    ]
    footer = _fold(parts, console.width)
    footer.stylize("bold", 0, len(parts[0]))
    console.print(footer)
    console.print(ranking)
    for summary in report.variants:
        if summary.exploration is not None:
            exploration = summary.exploration
            clean = exploration.complete and not summary.failures
            console.print(
                Text.assemble(
                    ("✓ " if clean else "· ", "green" if clean else "dim"),
                    (summary.variant, "bold"),
                    f": {exploration.text()}",
                    ", none failed" if not summary.failures else f", {summary.failures:,} failed",
                    (f" ({', '.join(report.atomic)} ran as single steps)", "yellow") if report.atomic else "",
                )
            )
    config = info.config
    if config.trial is not None and not config.controlled:
        for summary in report.variants:
            console.print(
                Text(
                    f"{summary.variant}: re-ran {info.unit} {config.trial}'s plan {plural(summary.trials, 'time')}: "
                    "failed "
                    f"{summary.failures} of {summary.trials} (a plan fixes stress's perturbation, not how the "
                    "operating system schedules threads: a failure comes back some of the time)",
                    style="cyan",
                )
            )
    # Broken between its clauses only: rich would break "95 %" before its unit at some widths.
    legend = ["failure rate: observed (95 % Wilson interval);", "none in N means < 3/N at 95 %"]
    if info.exhaustive:
        legend = ["failure rate: the share of all schedules within the preemption bound that fail (exact)"]
    console.print(_fold(legend, console.width, separator=" "), style="dim")
    examples = [s for s in report.variants if s.example is not None]
    if examples:
        console.print()
        console.print(Text("Example failures", style="bold underline"))
        for summary in examples:
            assert summary.example is not None
            _print_example(console, report, summary.example)
    _print_sweep(console, report)
    _print_potential_deadlocks(console, report)
    _print_verdicts(console, report)
    _print_health(console, report)
    state = (
        ""
        if report.complete
        else f" (stopped: {report.trials} {info.unit}s ran; results.jsonl holds those that fitted on the disk)"
        if report.output_error is not None
        else (
            f" (interrupted: {report.trials} of {plural(info.total_trials, info.unit)} ran)"
            if report.interrupted
            else f" (incomplete: {report.trials} of {plural(info.total_trials, info.unit)} reached the disk)"
        )
    )
    print_unbroken(console, Text.assemble(("results: ", "dim"), str(info.run_dir), (state, "yellow")))


def _print_sweep(console: Console, report: RunReport) -> None:
    sweep = report.info.config.sweep
    if sweep is None:
        return
    table = Table(header_style="bold", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)
    table.add_column("variant", style="bold", no_wrap=True)
    for value in sweep.values:
        table.add_column(sweep.heading(value), no_wrap=True)
    for summary in report.variants:
        texts = [summary.sweep_text(value) for value in sweep.values]
        cells = [Text("—", style="dim") if text is None else Text(text) for text in texts]
        table.add_row(summary.name if len(report.info.scenarios) == 1 else summary.variant, *cells)
    console.print()
    console.print(Text(f"{sweep.title} (swept)", style="bold underline"))
    console.print(table)
    only = report.safe_only_under_gil()
    if only:
        names = ", ".join(s.name if len(report.info.scenarios) == 1 else s.variant for s in only)
        console.print(Text.assemble(("safe only under the GIL: ", "bold"), (names, "bold red")))
    elif report.info.config.gil_sweep and report.complete:  # an interrupted run may lack a side
        console.print(Text("no variant held with the GIL and failed without it", style="dim"))


def print_comparison(
    console: Console,
    before: RunReport,
    after: RunReport,
    changes: list[Change],
    gone: list[str],
    added: list[str],
) -> None:
    """Per variant: failure rate before and after, the change, and whether it is significant."""
    console.print(
        Text.assemble(
            ("Comparing ", "bold"),
            (before.info.run_id, "cyan"),
            " → ",
            (after.info.run_id, "cyan"),
            " (Fisher's exact test, two-sided, significant below p = 0.05)",
        )
    )
    rows = [
        (
            change.variant,
            f"{change.rate_before * 100:.1f} % of {change.before[1]}",
            f"{change.rate_after * 100:.1f} % of {change.after[1]}",
            f"{(change.rate_after - change.rate_before) * 100:+.1f} pts",
            f"{change.p_value:.2g}",
            Text(change.verdict, style={"REGRESSION": "bold red", "improved": "green"}.get(change.verdict, "dim")),
        )
        for change in changes
    ]
    headers = ("variant", "before", "after", "change", "p", "verdict")
    needs = [max(len(header), *(len(str(row[n])) for row in rows)) for n, header in enumerate(headers)] if rows else []
    if sum(needs) + 2 * (len(needs) - 1) <= console.width:
        table = Table(header_style="bold", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)
        for column in headers:
            table.add_column(column, no_wrap=True, justify="right" if column in ("p", "change") else "left")
        for row in rows:
            table.add_row(*row)
        console.print(table)
    else:  # too narrow for the table: a block per variant, nothing cut short
        for variant, was, now, change, p, verdict in rows:
            console.print(Text.assemble((variant, "bold"), " · ", verdict))
            console.print(Padding(_fold([f"{was} → {now}", change, f"p {p}"], console.width - 2), (0, 0, 0, 2)))
    for key in gone:
        console.print(Text(f"only in {before.info.run_id}: {key}", style="dim"))
    for key in added:
        console.print(Text(f"only in {after.info.run_id}: {key}", style="dim"))


def _print_potential_deadlocks(console: Console, report: RunReport) -> None:
    risky = [s for s in report.variants if s.potential_deadlocks]
    if not risky:
        return
    console.print()
    console.print(Text(f"Potential deadlocks (lock order, over all {report.info.unit}s)", style="bold underline"))
    for summary in risky:
        for potential in summary.potential_deadlocks:
            console.print()
            heading = Text.assemble((summary.variant, "bold"), " · ", (potential.summary(), "bright_red"))
            console.print(_Hanging(heading, 0))  # a long cycle wraps under itself, not at the margin
            paths = (_hanging(console, Text(path), console.width - 2) for path in potential.paths)
            console.print(_indented(Group(*paths), 2))  # a wrapped path hangs under its own start


#: Width of the labels of an example failure's lines (``plan``, ``replay``), with their gap.
_LABEL = 9


def _indented(renderable: RenderableType, columns: int) -> Padding:
    """``renderable`` moved right by ``columns``, its wrapped lines too (and no padding on the right)."""
    return Padding(renderable, (0, 0, 0, columns), expand=False)


def print_marked(console: Console, marker: str, text: str, *, style: str = "") -> None:
    """``! text`` with the text's wrapped lines under its first character."""
    console.print(_marked(Text(marker, style=style), Text(text, style=style)))


def _marked(marker: Text, text: Text) -> Table:
    """``marker text``, the text's wrapped lines starting under its first character."""
    grid = Table.grid(padding=(0, 1, 0, 0))
    grid.add_column(no_wrap=True)
    grid.add_column()
    grid.add_row(marker, text)
    return grid


def _labelled(label: str, value: RenderableType) -> Table:
    """``label  value``, the value's wrapped lines starting under its first character."""
    grid = Table.grid()
    grid.add_column(no_wrap=True, width=_LABEL, style="dim")
    grid.add_column()
    grid.add_row(label, value)
    return grid


def _hanging(console: Console, text: Text, width: int, indent: int = 2) -> Text:
    """``text`` wrapped to ``width`` columns, its continuation lines ``indent`` columns further in,
    so that where one evidence line ends and the next begins shows at a glance."""
    if width <= indent + 10 or text.cell_len <= width:
        return text
    lines = text.wrap(console, width)
    if len(lines) <= 1:
        return text
    first = lines[0]
    rest = text[len(first.plain) :]
    rest = rest[len(rest.plain) - len(rest.plain.lstrip()) :]
    folded = [first, *(Text(" " * indent) + line for line in rest.wrap(console, width - indent))]
    return Text("\n").join(folded)


def _duration(seconds: float) -> str:
    """How long a trial ran: ``2.3 ms`` below a second, ``2.02 s`` from one on."""
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.3g} s"


def _fold(parts: list[str], width: int, separator: str = " · ") -> Text:
    """``parts`` joined by ``separator``, lines broken between parts only (a part such as
    ``jitter ≤ 42 µs`` stays whole) where the next would pass ``width`` columns."""
    lines: list[str] = []
    for part in parts:
        if lines and len(lines[-1]) + len(separator) + len(part) <= width:
            lines[-1] += separator + part
        else:
            lines.append(part)
    return Text("\n".join(lines))


def _fold_command(command: str, width: int) -> Text:
    """A shell command in lines of at most ``width`` columns, broken between words with ``\\`` at
    the end of each line but the last: pasted into a shell, it is still one command. An option
    stays on the line of its value (``--trial 4``)."""
    words: list[str] = []
    for word in map(shlex.quote, shlex.split(command)):
        if words and words[-1].startswith("-") and " " not in words[-1] and not word.startswith("-"):
            words[-1] += " " + word
        else:
            words.append(word)
    lines: list[str] = []
    for word in words:
        if lines and len(lines[-1]) + 1 + len(word) + 2 <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return Text(" \\\n".join(lines), style="cyan", overflow="fold")  # a word wider than the page folds


def print_unbroken(console: Console, text: Text) -> None:
    """Print ``text`` wrapped between words; but if one of its words (a path) is wider than the
    console, as one line for the terminal to wrap: folded, the path would no longer copy whole."""
    console.print(text, soft_wrap=max(map(len, text.plain.split()), default=0) > console.width)


def print_command(console: Console, lead: Text, command: str) -> None:
    """``lead`` and the shell ``command`` after it, in lines that fit the console (`_fold_command`)
    — but a command with a word wider than the room left (a long path) is printed as one line
    for the terminal to wrap: broken inside a word, it would no longer paste into a shell."""
    room = console.width - lead.cell_len
    if max(map(len, map(shlex.quote, shlex.split(command))), default=0) + 2 > room:
        # Broken between words all the same, the long one on a line of its own, for the terminal
        # to wrap.
        for number, line in enumerate(_fold_command(command, room).plain.split("\n")):
            head = lead if number == 0 else Text(" " * lead.cell_len)
            console.print(Text.assemble(head, (line, "cyan")), soft_wrap=True)
        return
    grid = Table.grid()
    grid.add_column(no_wrap=True, width=lead.cell_len)
    grid.add_column()
    grid.add_row(lead, _fold_command(command, room))
    console.print(grid)


def _print_example(console: Console, report: RunReport, result: TrialResult) -> None:
    evidence = result.evidence
    console.print()
    console.print(
        Text.assemble(
            (result.variant, "bold"),
            f" · {report.info.unit} {result.trial} · ",
            (result.outcome.label, _OUTCOME_STYLE[result.outcome]),
            f" after {_duration(result.duration)}",
        )
    )
    body: list[RenderableType] = []
    width = console.width - 2
    if evidence is not None:
        body.extend(_hanging(console, Text(message), width) for message in evidence.messages[:3])
        body.extend(
            _hanging(console, Text.assemble(("at ", "yellow"), line), width) for line in evidence.blocked_at[:6]
        )
        for line in evidence.wait_for[:8]:  # a line indented in the evidence says more of the one above
            if line.startswith(" "):
                body.append(_indented(_hanging(console, Text(line.strip(), style="red"), width - 2), 2))
            else:
                body.append(_marked(Text("·", style="dim"), Text(line, style="bright_red")))
        if evidence.exit_status is not None:
            body.append(Text(evidence.summary(), style="red"))
        if evidence.tracebacks:
            body.append(_own_indents(_tail(_folded(evidence.tracebacks[0]), 12, "magenta")))
            if len(evidence.tracebacks) > 1:
                more = plural(len(evidence.tracebacks) - 1, "more exception")
                body.append(Text(f"(and {more} in this {report.info.unit})", style="dim"))
        elif evidence.dump and not evidence.blocked_at:
            body.append(_own_indents(_tail(_folded(evidence.dump), 12, "yellow")))
        if evidence.output:
            body.append(Text.assemble(("printed: ", "dim"), _tail(evidence.output, 3, "")))
    if result.schedule is not None:
        found = evidence.messages[0] if evidence is not None and evidence.messages else None
        body.extend(_schedule_lines(result.schedule, console.width - 2, found=found))
    else:
        plan = result.plan.describe(delay=result.delay_used)
        body.append(_labelled("plan", _fold(plan.split(" · "), console.width - 2 - _LABEL)))
    console.print(_indented(Group(*body), 2))
    print_command(
        console, Text.assemble("  ", ("replay", "dim"), " " * (_LABEL - len("replay"))), report.info.replay(result)
    )


def _schedule_text(schedule: str, width: int | None) -> Text:
    """A schedule (``v2:2>2,9>1,...``) in lines of at most ``width`` columns, broken after a comma:
    never inside one switch (``40>`` / ``1``)."""
    if width is None:
        return Text(schedule)
    items = schedule.split(",")
    return _fold([*(item + "," for item in items[:-1]), items[-1]], width, separator="")


def _schedule_lines(
    record: ScheduleRecord, width: int | None = None, *, found: str | None = None
) -> list[RenderableType]:
    """The schedule as found, and the shrunk one with its interleaving. The shrunk schedule fails
    the same way (the same outcome), but maybe with other details (``value 2`` where the one found
    said ``value 3``): then what it says is printed with it, so that the trace below is read with
    its own failure."""
    lines: list[RenderableType] = []
    room = width - _LABEL if width is not None else None
    if record.schedule is not None:
        switches = (
            f" ({plural(record.switches, 'switch')}, {plural(record.steps, 'step')})"
            if record.switches is not None
            else ""
        )
        schedule = Text.assemble(_schedule_text(record.schedule, room), (switches, "dim"), overflow="fold")
        lines.append(_labelled("schedule", schedule))
    if record.unscheduled is not None:
        lines.append(_labelled("inexact", Text(f"{record.unscheduled}: a replay repeats this failure only by chance")))
    trace = Trace.from_dict(record.trace)
    if record.minimal is not None and trace is not None:
        lines.append(
            _labelled(
                "shrunk",
                Text.assemble(
                    _schedule_text(record.minimal, room),
                    (
                        f" ({trace.switches} switch{'es' if trace.switches != 1 else ''}; "
                        f"{record.shrink_runs} schedule{'s' if record.shrink_runs != 1 else ''} tried)",
                        "dim",
                    ),
                    overflow="fold",
                ),
            )
        )
        says = record.shrunk_says(found)
        if says is not None:
            lines.append(_labelled("it says", Text(says)))
        if trace.rows:  # else it failed before any thread took a step: there is no interleaving
            lines.append(trace_table(trace, max_rows=TRACE_ROWS, width=width - 2 if width else None))
    return lines


def trace_table(trace: Trace, *, max_rows: int | None = None, width: int | None = None) -> RenderableType:
    """The interleaving: one column per thread, a rule at every context switch, the line each
    thread ran and (dim) the instructions of it that ran there — a read and its write can fall on
    either side of a switch. Drawn ``width`` columns wide (None: the console's), a line's note
    (``← read .value``) goes under it, whole, when the two do not fit side by side."""
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold")
    count = max(len(trace.threads), 1)
    steps = max(len(str(sum(row.steps for row in trace.rows))), 1)
    # Each thread's share of the width, less the step column, and a gap and padding per column;
    # fixed, so that what is laid out to fit it (a wrapped line, a note under it) does.
    room = max((width - steps - 3 * count) // count, 8) if width else None
    table.add_column("", justify="right", style="dim", no_wrap=True, width=steps if width else None)
    for thread in trace.threads:
        table.add_column(thread, overflow="fold", ratio=None if width else 1, width=room)
    column = {thread: index for index, thread in enumerate(trace.threads)}
    rows = trace.rows
    cut, half = 0, -1
    if max_rows is not None and len(rows) > max_rows:
        cut, half = len(rows) - max_rows, max_rows // 2
        rows = rows[:half] + rows[-(max_rows - half) :]
    step = 0
    files: dict[str, str] = {}
    for index, row in enumerate(rows):
        if index == half:
            table.add_row("", *[Text(f"… {cut} rows …", style="dim")] * len(trace.threads))
        # A thread's first line, and every line in another file than its previous one, says where.
        where = f"{row.file}:{row.line}" if files.get(row.thread) != row.file else f"{row.line:>3}"
        lead = ""
        if room is not None and len(where) + 1 > room // 2:
            # A long file name on a line of its own, the line number before the code as below it.
            lead, where = row.file + "\n", f"{row.line:>3}"
        files[row.thread] = row.file
        code = row.code or "(no source)"
        last = len(where) + 1 + len(code)  # the length of the cell's last line
        if room is not None and last > room and room - len(where) - 1 >= 12:
            # Wrapped under the code, not under the line number: the number stays alone at left.
            lines = textwrap.wrap(code, room - len(where) - 1, break_long_words=True) or [code]
            code = ("\n" + " " * (len(where) + 1)).join(lines)
            last = len(where) + 1 + len(lines[-1])
        cell = Text.assemble((lead, "dim"), (f"{where} ", "dim"), code)
        effects = row.effects()
        if effects:
            note = "← " + ", ".join(effects)
            fits = room is None or last + 2 + len(note) <= room
            # Under the code, indented under it as far as the note still fits on its line.
            indent = len(where) + 1 if room is None else max(0, min(len(where) + 1, room - len(note)))
            cell.append(("  " if fits else "\n" + " " * indent) + note, style="cyan")
        cells: list[RenderableType] = [Text("")] * len(trace.threads)
        cells[column[row.thread]] = cell
        marker = Text("⇄", style="bold magenta") if row.switch else Text(str(step + 1))
        step += row.steps
        table.add_row(marker, *cells, end_section=index + 1 < len(rows) and rows[index + 1].switch)
    if trace.elided:
        table.caption = f"({trace.elided} more rows in the middle of this schedule were not stored)"
    return table


def replay_heading(
    result: TrialResult, schedule: Schedule, record: ScheduleRecord, *, times: int, width: int | None = None
) -> RenderableType:
    """``replaying counter/no-lock schedule 3: v2:9>1 · 10 times``, and under it, for a shrunk
    schedule, ``shrunk from v2:2>1,…`` broken after commas to ``width`` columns."""
    shrunk = record.minimal is not None and str(schedule) == record.minimal and record.schedule != record.minimal
    heading = Text.assemble(
        ("replaying ", "bold"),
        (result.variant, "bold cyan"),
        f" schedule {result.trial}: ",
        (str(schedule), "bold"),
        (f" · {times} times" if times > 1 else "", "dim"),
    )
    if not shrunk or record.schedule is None:
        return _Hanging(heading, 0)
    label = "shrunk from "
    found = _schedule_text(record.schedule, width - 2 - len(label) if width else None)
    grid = Table.grid()
    grid.add_column(no_wrap=True, style="dim")
    grid.add_column(style="dim")
    grid.add_row(label, found)
    return Group(_Hanging(heading, 0), _indented(grid, 2))


def print_replay(console: Console, replay: Replay) -> None:
    """What one replay did: its interleaving, its outcome and what it said."""
    if replay.trace.rows:  # else no thread took a step: there is no interleaving to draw
        console.print(trace_table(replay.trace, width=console.width))
    run = replay.run
    line = Text.assemble(
        (run.outcome.label, _OUTCOME_STYLE[run.outcome]),
        f" after {run.steps} steps, {replay.trace.switches} context switch{'es' if replay.trace.switches != 1 else ''}",
    )
    console.print(line)
    evidence = run.evidence
    if evidence is not None:
        # Each line wraps under its own indentation, never back to the first column.
        for message in evidence.messages[:3]:
            console.print(Padding(Text(message), (0, 0, 0, 2)))
        for wait in evidence.wait_for[:8]:  # a line's own indent is kept on its wrapped lines
            indent = len(wait) - len(wait.lstrip(" "))
            console.print(Padding(Text(wait.lstrip(" "), style="bright_red"), (0, 0, 0, 4 + indent)))
        for where in evidence.blocked_at[:6]:
            console.print(Padding(Text.assemble(("at ", "yellow"), where), (0, 0, 0, 2)))
        if evidence.tracebacks:
            console.print(Padding(_own_indents(_tail(evidence.tracebacks[0], 12, "magenta")), (0, 0, 0, 2)))


def replay_verdict(runs: list[Replay], expected: Expected | None, mismatches: int) -> Text:
    if expected is None:
        return Text(
            f"ran {len(runs)} time{'s' if len(runs) > 1 else ''} (a schedule given by hand: nothing to compare)"
        )
    if expected.unscheduled is not None:
        same = len(runs) - mismatches
        verdict = Text(
            f"{'✓' if same else '✗'} {expected.outcome} in {same} of {len(runs)} replays, as stored",
            style="bold green" if same else "bold red",
        )
        verdict.append(
            f"\nnot exact: {expected.unscheduled}, so the schedule repeats this failure only by chance"
            + ("" if len(runs) > 1 else " (--times N runs it N times)"),
            style="yellow",
        )
        return verdict
    if mismatches:
        return Text(f"✗ {mismatches} of {len(runs)} replays differed from the stored run", style="bold red")
    what = f"same outcome ({expected.outcome})"
    if expected.messages:
        what += ", same failure message"
    if expected.steps is not None:
        what += f", same {expected.steps} steps"
    return Text(f"✓ reproduced {len(runs)}/{len(runs)}: {what}, same interleaving", style="bold green")


def _folded(text: str) -> str:
    """``text`` (a traceback, a thread dump) with stress's own frames folded."""
    return fold_frames(text, lambda file: file.startswith(HARNESS_DIR))


def _tail(text: str, lines: int, style: str) -> Text:
    """The last ``lines`` lines of ``text``, and its first when that says whose it is (``in worker#0:``)."""
    kept = text.rstrip().splitlines()
    head = kept[:1] if kept and kept[0].startswith("in ") and kept[0].endswith(":") else []
    cut = len(kept) - lines
    shown = "\n".join(kept[-lines:])

    def more(count: int) -> str:
        return f"[{count} more line{'s' if count != 1 else ''} in results.jsonl]\n" if count > 0 else ""

    prefix = more(cut)
    if cut > 0 and head:
        prefix = f"{head[0]}\n{more(cut - 1)}"
    return Text(prefix + shown, style=style)


class _Hanging:
    """One line of text, ``indent`` columns in, wrapped to the width it is drawn at with its
    continuation lines ``deeper`` columns further in: a wrapped line never looks like the start of
    the next one."""

    def __init__(self, text: Text, indent: int, deeper: int = 2) -> None:
        self.text, self.indent, self.deeper = text, indent, deeper

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        room = options.max_width - self.indent
        if room - self.deeper < 10 or self.text.cell_len <= room:
            yield _indented(self.text, self.indent)
            return
        first = self.text.wrap(console, room)[0]
        rest = self.text[len(first.plain) :]
        rest = rest[len(rest.plain) - len(rest.plain.lstrip()) :]
        yield _indented(first, self.indent)
        yield _indented(rest, self.indent + self.deeper)


def _own_indents(text: Text) -> Group:
    """Each line of ``text`` (a traceback, a thread dump) wrapped under its own indentation, its
    continuation two columns deeper: a frame's long source line folds under itself, not at the
    left edge among the frames, and not where the next line of the traceback would start."""
    lines = []
    for line in text.split("\n"):
        indent = len(line.plain) - len(line.plain.lstrip(" "))
        lines.append(_Hanging(line[indent:], indent))
    return Group(*lines)


def _print_health(console: Console, report: RunReport) -> None:
    """What the run says about itself (a busy machine, trials given more time, undecided trials)."""
    notes = report.health()
    if not notes:
        return
    console.print(Text("Health", style="bold"))
    for note in notes:
        console.print(_marked(Text("·", style="cyan"), Text(note, style="dim")))
    console.print()


def _print_verdicts(console: Console, report: RunReport) -> None:
    out = [
        Text.assemble(
            ("✗ ", "bold red"),
            (summary.variant, "bold"),
            f" is expected safe but failed {summary.failures} of {plural(summary.trials, report.info.unit)}",
            style="red",
        )
        for summary in report.broken
    ]
    out.extend(
        Text.assemble(
            ("✗ ", "bold red"),
            (summary.variant, "bold"),
            " is expected safe but takes its locks in an order that can deadlock (see above)",
            style="red",
        )
        for summary in report.variants
        if summary.verdict is Verdict.RISKY
    )
    replaying = report.info.config.trial is not None  # one plan again: the line above says how it went
    for summary in [] if replaying else report.not_exposed:
        bound = rule_of_three(summary.judged)
        out.append(
            Text.assemble(
                ("! ", "bold yellow"),
                (summary.variant, "bold"),
                f" is expected unsafe but was not exposed in {plural(summary.trials, report.info.unit)} "
                f"(failure rate < {percent(bound)} at 95 %); more iterations or stronger perturbation may expose it",
                style="yellow",
            )
        )
    if not report.trials:
        out.append(Text("· nothing ran: the run was stopped before its first trial finished", style="yellow"))
    if out:
        console.print()
        for line in out:
            console.print(line)
    console.print()

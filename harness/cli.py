"""The ``stress`` command line: parse, validate, call the API, choose an exit code.

Exit codes: 0 every verdict as expected; 1 findings (a variant expected safe failed, or, with
``--strict``, one expected unsafe was never exposed); 2 bad usage or configuration; 3 a bug in stress;
130 interrupted (Ctrl-C), 143 terminated (SIGTERM). A user error is one line on stderr, never a
traceback.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shlex
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import click

from harness import __version__
from harness.errors import InternalError, OutputError, StressError, Terminated, UserError
from harness.perturb import gil

if TYPE_CHECKING:
    from rich.console import Console

    from harness.config import RunConfig
    from harness.registry import Registry
    from harness.results.summary import RunReport
    from harness.scenario import Variant
    from harness.scope import Scope

# The engine, the renderers and rich are imported by the commands that use them, not here:
# `stress --help` and `stress list` start in a fraction of the time.

__all__ = ["cli", "main"]

EXIT_OK, EXIT_FINDINGS, EXIT_USAGE, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 3, 130, 143

_BOOLEAN_FLAGS = {
    "shuffle": ("--shuffle", "--no-shuffle"),
    "barrier": ("--barrier", "--no-barrier"),
    "fresh_threads": ("--fresh-threads", "--no-fresh-threads"),
    "perturbation": ("--perturbation", "--no-perturbation"),
    "strict": ("--strict", "--no-strict"),
}


def _flag_name(key: str, value: Any) -> str:
    if key in _BOOLEAN_FLAGS:
        on, off = _BOOLEAN_FLAGS[key]
        return on if value else off
    return f"--{key.replace('_', '-')} {value}"


def _console() -> Console:
    from harness.render.terminal import make_console

    return make_console()


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="stress")
def cli() -> None:
    """Find and measure concurrency bugs in Python synchronization code.

    Each scenario has variants (strategies) tagged safe or unsafe. stress run executes every
    variant thousands of times under perturbation and ranks them by how often they fail.
    """


def _registry(targets: tuple[str, ...]) -> tuple[Registry, list[str], dict[str, str]]:
    """The scenarios the targets name (built-in names, files or modules), the names to run, and
    for each name the target that reaches it again (for replay commands)."""
    from harness.loader import is_file_target, is_module_target, load_module, load_target
    from harness.registry import Registry

    registry = Registry()
    names: list[str] = []
    reach: dict[str, str] = {}
    builtin: Registry | None = None
    for target in targets:
        if is_file_target(target) or is_module_target(target):
            found = load_target(target) if is_file_target(target) else load_module(target)
            single = len(found) == 1
            for scenario in found:
                registry.add(scenario)
                names.append(scenario.name)
                if is_file_target(target):
                    file = target.partition("::")[0]
                    reach[scenario.name] = target if single else f"{file}::{scenario.name}"
                else:
                    module = target.partition(":")[0]
                    reach[scenario.name] = target if single else f"{module}:{scenario.name}"
        else:
            builtin = builtin or Registry.builtin()
            scenario = builtin.get(target)
            registry.add(scenario)
            names.append(scenario.name)
            reach[scenario.name] = scenario.name
    return registry, names, reach


def _scope(selected: list[Variant], reach: dict[str, str], config: RunConfig) -> Scope:
    """Where switches are forced: the variants' files, and for a user's scenario all of the project
    it lives in (the code under test is usually imported from there), never installed packages —
    unless ``--scope`` names them; ``--exclude`` takes code out."""
    from harness.loader import project_root
    from harness.scope import Scope, resolve_patterns

    users = {v.scenario for v in selected if reach.get(v.scenario, v.scenario) != v.scenario}
    dirs = sorted({str(project_root(f)) for v in selected if v.scenario in users for f in v.files})
    return Scope(
        files=[f for v in selected for f in v.files],
        dirs=dirs,
        forced=resolve_patterns(config.scope, flag="--scope"),
        excluded=resolve_patterns(config.exclude, flag="--exclude"),
    )


@cli.command("list")
@click.argument("files", nargs=-1, metavar="[FILE.py]...")
def list_command(files: tuple[str, ...]) -> None:
    """List the scenarios (built-in, or those in FILE.py), their variants and expectations."""
    from harness.registry import Registry
    from harness.render import terminal

    registry = _registry(files)[0] if files else Registry.builtin()
    # From a file, the command to paste names the file: its scenarios are not built in.
    target = shlex.join(files) if files else "SCENARIO"
    terminal.print_list(_console(), registry, target=target)


@cli.command("show")
@click.argument("scenario")
def show_command(scenario: str) -> None:
    """Describe SCENARIO (a name or FILE.py::NAME) and print each variant's source."""
    from harness.render import terminal

    registry, names, _ = _registry((scenario,))
    for name in names:
        terminal.print_show(_console(), registry.get(name))


@cli.command("run")
@click.argument("scenarios", nargs=-1, required=True, metavar="SCENARIO...")
@click.option(
    "--variant",
    "-V",
    "variants",
    multiple=True,
    metavar="NAME",
    help="Run only this variant (repeatable); NAME or SCENARIO/NAME.",
)
@click.option("--iterations", "-n", metavar="N", help="Trials per variant [default: 1000; 20 with --trial].")
@click.option("--seed", "-s", metavar="S", help="Run seed; fixes every trial's plan [default: random].")
@click.option(
    "--timeout", "-t", metavar="T", help="Seconds before a trial counts as hung (e.g. 0.5, 200ms) [default: auto]."
)
@click.option("--jobs", "-j", metavar="J", help="Worker processes [default: CPU count].")
@click.option("--out", "-o", metavar="DIR", help="Write the run here instead of reports/<run-id>/.")
@click.option("--size", metavar="N", help="Work per actor [default: the scenario's].")
@click.option(
    "--preempt",
    metavar="P|LO:HI|off",
    help="Forced thread-switch probability per instruction of the code under test "
    "[default: 0.001:0.02, sampled per trial].",
)
@click.option("--pause", metavar="S|LO:HI|off", help="Pause at a forced switch, e.g. 50us [default: off = just yield].")
@click.option("--switch-interval", metavar="S|LO:HI|off", help="sys.setswitchinterval per trial [default: 10us:10ms].")
@click.option("--jitter", metavar="S|LO:HI|off", help="Random start delay of each actor, up to S [default: 0:100us].")
@click.option(
    "--sync",
    metavar="P|LO:HI|off",
    help="Forced thread-switch probability just before and after each lock, condition, semaphore, event, "
    "barrier or queue operation, and of a delay around each multiprocessing operation [default: 0.01:0.2].",
)
@click.option(
    "--delay",
    metavar="S|LO:HI|off",
    help="How long a forced switch pauses a process actor, and a delay at a multiprocessing operation "
    "[default: 10us:1ms].",
)
@click.option(
    "--cancel",
    metavar="P|LO:HI|off",
    help="Coroutine trials: probability of cancelling a task at each operation on an asyncio primitive, "
    "a CancelledError the code must survive [default: off].",
)
@click.option(
    "--gil",
    metavar="on|off",
    help="On a free-threaded build (3.13t): run with the GIL on or off; stress starts itself again "
    "with PYTHON_GIL set when it differs [default: as the interpreter started].",
)
@click.option(
    "--start-method",
    metavar="fork|spawn|forkserver",
    help="How process actors and multiprocessing.Process start in trials [default: fork].",
)
@click.option("--shuffle/--no-shuffle", default=None, help="Start actors in random order [default: on].")
@click.option("--barrier/--no-barrier", default=None, help="Start actors together at a barrier [default: on].")
@click.option(
    "--fresh-threads/--no-fresh-threads",
    default=None,
    help="Start a new thread for every thread actor of every trial, instead of reusing parked actor "
    "threads (slower; what a trial can see is fresh either way) [default: reuse].",
)
@click.option(
    "--no-perturbation",
    "perturbation",
    flag_value=False,
    default=None,
    help="Switch every knob off: plain repetition, as a baseline.",
)
@click.option("--trial", metavar="K", help="Replay: run trial K's plan on every iteration (needs --seed).")
@click.option(
    "--strict", is_flag=True, default=None, help="Exit 1 also when a variant expected unsafe is never exposed."
)
@click.option(
    "--sweep",
    metavar="KNOB=V1,V2,...",
    help="Run every variant once per value of one knob (e.g. preempt=0,0.001,0.01), that knob fixed; "
    "gil=on,off (free-threaded build): with the GIL and without, side by side.",
)
@click.option(
    "--actors",
    metavar="N",
    help="Actors per trial, for scenarios that let it vary [default: the scenario's; 2 controlled].",
)
@click.option(
    "--mode",
    metavar="stress|controlled",
    help="stress: real concurrency under perturbation, measures how often; controlled: one thread at a "
    "time, a scheduler picks every switch: finds, replays and shrinks the failing interleaving [default: stress].",
)
@click.option(
    "--strategy",
    metavar="mixed|random|pct",
    help="Controlled: how schedules are chosen: random walk, PCT, or both [default: mixed].",
)
@click.option("--pct-depth", metavar="D", help="Controlled: the bug depth PCT aims at [default: 3].")
@click.option(
    "--max-preemptions",
    metavar="K",
    help="Controlled: explore every schedule with at most K preemptions, instead of sampling.",
)
@click.option(
    "--granularity",
    metavar="opcode|line",
    help="Controlled: switch before any shared-state instruction, or only at line starts [default: opcode].",
)
@click.option(
    "--step-limit", metavar="N", help="Controlled: a schedule longer than N steps is a livelock [default: 20000]."
)
@click.option(
    "--scope",
    metavar="PATTERN",
    multiple=True,
    help="Also test this code: a module or package (installed ones too: --scope cachetools) or a path. Repeatable.",
)
@click.option(
    "--exclude", metavar="PATTERN", multiple=True, help="Do not test this code (a module, package or path). Repeatable."
)
@click.option("--junit-xml", "junit_xml", metavar="PATH", help="Also write a JUnit XML report (one case per variant).")
@click.option("--markdown", metavar="PATH", help="Also write a Markdown summary (for a PR comment or CI summary).")
@click.option("--quiet", "-q", is_flag=True, help="Print only the final report.")
def run_command(
    scenarios: tuple[str, ...],
    variants: tuple[str, ...],
    out: str | None,
    junit_xml: str | None,
    markdown: str | None,
    quiet: bool,
    **flags: Any,
) -> int:
    """Run every variant of SCENARIO under perturbation (or those picked with --variant).

    SCENARIO is a built-in name (see stress list), a file of scenarios (FILE.py) or one
    scenario in a file (FILE.py::NAME).
    """
    # From here on a first Ctrl-C or SIGTERM is noted, never raised: raised in the middle of an
    # import it can land in a finaliser, where Python reports it and carries on.
    with _finish_first() as late:
        from harness import settings
        from harness.config import Layer, build_config
        from harness.engine import gil_sweep
        from harness.engine.driver import run as run_engine
        from harness.render import terminal
        from harness.results.run_dir import SUMMARY, write_json

        side = gil_sweep.side()  # one setting of a GIL sweep, started by the sweep's own run
        if side is not None:
            config = side.config
        else:
            config = build_config(settings.layers(Layer(flags, _flag_name)))
            if config.gil_sweep:
                gil.require_free_threaded("--sweep gil=on,off")
        # In a GIL sweep, each setting starts an interpreter of its own; the sweep's own has either.
        gil.ensure(None if config.gil_sweep else config.gil, _ARGV)
        if (noted := late.pending()) is not None:
            raise Terminated if noted == signal.SIGTERM else KeyboardInterrupt
        late.raising = True  # a scenario file may take its time to import: a Ctrl-C stops it
        try:
            registry, names, reach = _registry(scenarios)
        finally:
            late.raising = False
        selected = registry.select(names, variants)
        _refuse_uncancellable(selected, config)
        if config.controlled:
            _refuse_unschedulable(selected)
        for path, flag in ((junit_xml, "--junit-xml"), (markdown, "--markdown")):
            if path:
                _check_writable(Path(path), flag)
        console = _console()
        if (noted := late.pending()) is not None:  # before any run began: stop, as in start-up
            raise Terminated if noted == signal.SIGTERM else KeyboardInterrupt
        command = shlex.join(["stress", *sys.argv[1:]]) if sys.argv else "stress"
        if side is not None:  # the sweep's run reports; a side writes its run folder alone
            return run_engine(
                selected,
                config,
                out=side.out,
                scope=_scope(selected, reach, config),
                targets=reach,
                command=command,
                noted_signal=late.pending,
            ).exit_code()
        # A GIL sweep runs each setting in an interpreter of its own, with these arguments.
        start = functools.partial(gil_sweep.run, argv=_ARGV) if config.gil_sweep else run_engine
        report = start(
            selected,
            config,
            out=Path(out) if out else None,
            observer=terminal.LiveProgress(console, quiet=quiet),
            scope=_scope(selected, reach, config),
            targets=reach,
            command=command,
            noted_signal=late.pending,
        )
        late.decided = report.stopped_by is not None
        written = report.exit_code()  # what summary.json says
        terminal.print_report(console, report)
        problem = _write_artifacts(console, report, junit_xml=junit_xml, markdown=markdown)
        if late.signal is not None and report.stopped_by is None:
            report = replace(report, stopped_by=signal.Signals(late.signal).name)
        if problem is not None and report.output_error is None:
            report = replace(report, output_error=str(problem))
        if report.exit_code() != written:
            with contextlib.suppress(OutputError):  # summary.json tells the exit code the run had
                write_json(report.info.run_dir / SUMMARY, report.to_dict())
    if report.output_error is not None:
        finished = report.complete and not report.interrupted
        where = "the run finished, but" if finished else "the run stopped there:"
        _error(
            f"{where} {report.output_error}. Every line of results.jsonl is whole: "
            f"'stress report {report.info.run_dir}' renders what reached the disk once there is room"
        )
    return report.exit_code()


@cli.command("replay")
@click.argument("run_dir", metavar="RUN_DIR")
@click.option(
    "--variant", "-V", metavar="NAME", help="The variant (NAME or SCENARIO/NAME) [default: the one that failed]."
)
@click.option("--trial", "-k", metavar="K", type=int, help="The failing schedule K [default: the variant's first].")
@click.option("--schedule", metavar="STRING", help="Run this schedule (e.g. 'v2:9>1') instead of a stored one.")
@click.option("--original", is_flag=True, help="Replay the schedule as found, not its shrunk form.")
@click.option("--times", metavar="N", type=click.IntRange(1, 10_000), default=1, help="Replay N times; all must agree.")
@click.option("--pdb", "debug", is_flag=True, help="Stop in the debugger at the failing check (or exception).")
def replay_command(
    run_dir: str,
    variant: str | None,
    trial: int | None,
    schedule: str | None,
    original: bool,
    times: int,
    debug: bool,
) -> int:
    """Re-run a failing schedule of a controlled run (RUN_DIR) exactly, in this process.

    Same interleaving, same final state, same failure, every time: the trace shows it step by step,
    and --pdb opens the debugger where the check failed. Exit 0 when every replay matched the
    stored run, 1 when one did not. A schedule that did not fix what happened (a process or a
    signal timer decided it) repeats its failure only by chance: exit 0 when one replay did.
    """
    from harness.controlled.schedule import Schedule
    from harness.engine import replay as rp
    from harness.render import terminal
    from harness.scope import Scope

    info = rp.load_run(Path(run_dir))
    result = rp.find_trial(info, variant, trial)
    record = result.schedule
    assert record is not None
    chosen, stored = rp.expected_for(record, result, original=original)
    expected: rp.Expected | None = stored
    if schedule is not None:
        chosen, expected = Schedule.parse(schedule), None
    scenario, _, name = result.variant.partition("/")
    registry, _, _ = _registry((info.target(scenario),))
    target = registry.get(scenario).get(name)
    console = _console()
    mismatches = 0
    by_chance = expected is not None and expected.unscheduled is not None
    shown: list[rp.Replay] = []

    def each(index: int, done: rp.Replay) -> None:
        nonlocal mismatches
        differences = done.differences(expected) if expected is not None else []
        mismatches += bool(differences)
        if not by_chance:
            if index == 0:
                terminal.print_replay(console, done)
            if differences:
                terminal.print_marked(console, f"replay {index + 1} differs:", "; ".join(differences), style="red")
        elif not shown and not differences:  # the first replay that failed as stored
            shown.append(done)
            terminal.print_replay(console, done)

    scope = Scope.from_dict(info.scope) if info.scope else None
    if expected is None:  # a schedule given by hand: check it can be followed before showing a run of it
        problem = rp.replay(target, info.config, result, chosen, times=1, scope=scope)[0].unfollowed()
        if problem is not None:
            raise UserError(f"schedule {chosen}: {problem}")
    console.print(terminal.replay_heading(result, chosen, record, times=times, width=console.width))
    runs = rp.replay(target, info.config, result, chosen, debug=debug, times=times, each=each, scope=scope)
    if by_chance and not shown:
        terminal.print_replay(console, runs[0])
    console.print(terminal.replay_verdict(runs, expected, mismatches))
    if expected is not None and expected.unscheduled is not None:
        return EXIT_FINDINGS if mismatches == len(runs) else EXIT_OK  # by chance: once is a reproduction
    return EXIT_FINDINGS if mismatches else EXIT_OK


def _refuse_uncancellable(selected: Sequence[Variant], config: RunConfig) -> None:
    """``--cancel`` cancels tasks midway: refuse it for scenarios whose checks assume every task
    ran to its end (they would report a correct program broken), unless they say they hold."""
    values = [config.perturbation.cancel.high]
    if config.sweep is not None and config.sweep.knob == "cancel":
        values += list(config.sweep.values)
    if not any(values):
        return
    refused = sorted({v.scenario for v in selected if not v.cancellable})
    if not refused:
        return
    fit = sorted({v.scenario for v in selected if v.cancellable})
    rest = f"; it applies to {', '.join(fit)}" if fit else ""
    raise UserError(
        f"--cancel cancels tasks midway, and the checks of {', '.join(refused)} assume every task runs to its "
        f"end: run {'them' if len(refused) > 1 else 'it'} without --cancel{rest} "
        "(a scenario whose checks hold under cancellation says so: Scenario(..., cancellable=True))"
    )


def _refuse_unschedulable(selected: Sequence[Variant]) -> None:
    """Controlled mode runs the trial's threads one at a time: refuse, before anything runs, the
    scenarios that say they cannot run there and the variants whose code visibly does what no
    schedule decides (starts a process, arms a signal timer: `Variant.outside_schedules`)."""
    refused = {v.scenario: v.stress_only for v in selected if v.stress_only}
    starting = {v.key: what for v in selected if v.scenario not in refused and (what := v.outside_schedules())}
    if not refused and not starting:
        return
    why = [f"{name}: {reason}" for name, reason in refused.items()]
    why += [f"{key}, which {what}" for key, what in starting.items()]
    others = sorted({v.key for v in selected} - set(starting) - {v.key for v in selected if v.scenario in refused})
    rest = (
        f"; the others run in controlled mode with {' '.join(f'--variant {key}' for key in others)}" if others else ""
    )
    raise UserError(
        f"controlled mode runs the trial's own threads, one at a time, and cannot run {'; '.join(why)}. "
        f"Run {'those' if len(why) > 1 else 'it'} in stress mode{rest}"
    )


@cli.command("report")
@click.argument("run_dir", metavar="RUN_DIR")
@click.option("--junit-xml", "junit_xml", metavar="PATH", help="Also write a JUnit XML report.")
@click.option("--markdown", metavar="PATH", help="Also write a Markdown summary.")
@click.option("--quiet", "-q", is_flag=True, help="Write the files, print nothing but their paths.")
def report_command(run_dir: str, junit_xml: str | None, markdown: str | None, quiet: bool) -> int:
    """Re-render every report of RUN_DIR from its results.jsonl (also an interrupted or killed run)."""
    from harness.render import terminal
    from harness.results.reload import load_report
    from harness.results.run_dir import SUMMARY, write_json

    report = load_report(Path(run_dir))
    console = _console()
    if not quiet:
        terminal.print_report(console, report)
    problem: OutputError | None = None
    try:
        write_json(report.info.run_dir / SUMMARY, report.to_dict())
    except OutputError as exc:
        problem = exc
    problem = _write_artifacts(console, report, junit_xml=junit_xml, markdown=markdown) or problem
    if problem is not None:
        raise problem
    return report.findings_code()


@cli.command("compare")
@click.argument("before", metavar="RUN_A")
@click.argument("after", metavar="RUN_B")
def compare_command(before: str, after: str) -> int:
    """Compare two runs variant by variant: did the failure rate change, significantly?

    Exit status 1 if any variant got significantly worse (a regression), for CI.
    """
    from harness.render import terminal
    from harness.results.compare import comparable, compare
    from harness.results.reload import load_report

    old, new = load_report(Path(before)), load_report(Path(after))
    refusal, warnings = comparable(old, new)
    if refusal is not None:
        raise UserError(f"cannot compare: {refusal}")
    changes, gone, added = compare(old, new)
    console = _console()
    terminal.print_comparison(console, old, new, changes, gone, added)
    for warning in warnings:  # wrapped under its own start, not at the margin
        terminal.print_marked(console, "!", warning, style="yellow")
    return EXIT_FINDINGS if any(c.verdict == "REGRESSION" for c in changes) else EXIT_OK


class _Late:
    signal: int | None = None
    #: The run was stopped by a signal already: the next one is a second one.
    decided = False
    #: The user's own code is importing: a signal interrupts it as it would any program.
    raising = False

    def pending(self) -> int | None:
        """The signal noted so far (read anew: a handler sets it at any moment)."""
        return self.signal


@contextlib.contextmanager
def _finish_first() -> Iterator[_Late]:
    """Around a run and the writing of its reports, a first Ctrl-C or SIGTERM lets them finish (and
    sets the exit code); a second one stops at once. During the run itself the engine has handlers
    of its own; these cover the moments before (the command's imports and checks: the caller stops
    there if a signal came) and after it."""
    late = _Late()
    if threading.current_thread() is not threading.main_thread():
        yield late
        return

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if late.raising or late.signal is not None or late.decided:
            raise Terminated if signum == signal.SIGTERM else KeyboardInterrupt
        late.signal = signum

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield late
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _write_artifacts(
    console: Console, report: RunReport, *, junit_xml: str | None, markdown: str | None
) -> OutputError | None:
    """Write every report file that can be written; the first that could not, if any."""
    from rich.text import Text

    from harness.render import terminal
    from harness.render.html import write_html
    from harness.render.junit import write_junit
    from harness.render.markdown import write_markdown

    problem: OutputError | None = None
    writers: list[tuple[Path, Callable[[], Path]]] = [(report.info.run_dir / "report.html", lambda: write_html(report))]
    if junit_xml:
        writers.append((Path(junit_xml), lambda: write_junit(report, Path(junit_xml))))
    if markdown:
        writers.append((Path(markdown), lambda: write_markdown(report, Path(markdown))))
    for target, write in writers:
        try:
            path = write()
        except OutputError as exc:
            problem = problem or exc
            continue
        except OSError as exc:
            problem = problem or OutputError(target, exc)
            continue
        terminal.print_unbroken(console, Text.assemble(("wrote ", "dim"), str(path)))
    return problem


def _check_writable(path: Path, flag: str) -> None:
    """Fail before the run, not after it, when a report file cannot be written where asked."""
    if path.is_dir():
        raise UserError(f"{flag} {str(path)!r} is a folder; name a file")
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if path.exists():
            with path.open("a"):
                pass
        else:
            probe = folder / f".{path.name}.stress-write-test"
            probe.write_bytes(b"")
            probe.unlink()
    except OSError as exc:
        raise UserError(
            f"{flag} {str(path)!r} cannot be written ({exc.strerror or exc}); choose another path"
        ) from None


# click 8.2+ raises this for a group called without a command; older versions print the help.
_NoArgsIsHelp: type[click.UsageError] = getattr(
    click.exceptions, "NoArgsIsHelpError", type("_Never", (click.UsageError,), {})
)


def _said(what: str) -> None:
    with contextlib.suppress(OSError, ValueError):
        click.echo(f"stress: {what}", err=True)


def _error(message: str) -> None:
    line = " ".join(str(message).split())
    click.echo(click.style(f"stress: error: {line}", fg="red"), err=True)


#: The command's arguments (`main`): a run that must start again with another GIL passes them on.
_ARGV: list[str] = []


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (the console script calls `entry`)."""
    global _ARGV
    args = _ARGV = list(sys.argv[1:] if argv is None else argv)
    try:
        # Not click's own main(): it turns any EPIPE into a silent exit 1, which would hide a
        # broken worker pipe. We handle click's exceptions ourselves.
        with cli.make_context("stress", args) as ctx:
            result = cli.invoke(ctx)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except _NoArgsIsHelp as exc:  # bare `stress`: the help is the answer
        click.echo(exc.ctx.get_help() if exc.ctx else "")
        return EXIT_OK
    except click.exceptions.Abort:
        return EXIT_INTERRUPTED
    except click.UsageError as exc:
        hint = f" (see 'stress {exc.ctx.info_name} --help')" if exc.ctx and exc.ctx.parent else ""
        _error(exc.format_message() + hint)
        return EXIT_USAGE
    except UserError as exc:
        _error(str(exc))
        return EXIT_USAGE
    except KeyboardInterrupt:
        _said("interrupted")
        return EXIT_INTERRUPTED
    except Terminated:
        _said("terminated (SIGTERM)")
        return EXIT_TERMINATED
    except BrokenPipeError:
        # Our output was closed early (`stress list | head`): stop quietly, as other tools do.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FINDINGS
    except InternalError as exc:
        traceback.print_exc()
        _error(str(exc))
        return EXIT_INTERNAL
    except StressError as exc:
        _error(str(exc))
        return EXIT_INTERNAL
    except Exception:
        traceback.print_exc()
        _error("unexpected internal error (this is a bug in stress, please report it)")
        return EXIT_INTERNAL
    return result if isinstance(result, int) else EXIT_OK

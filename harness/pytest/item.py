"""Running one ``@pytest.mark.stress`` test as stress trials (the plugin's heavy half).

The test becomes a variant of a one-variant run: with a ``stress_trial`` argument the test body is
the variant (it starts the threads); without one, ``threads`` threads run the test body at once in
every trial. Either way the trials run in stress's worker processes — a hang, a deadlock or a crash
costs one trial, not the test session — and the test fails with the failure rate, one example with
its evidence, and the exact pytest command that replays it.
"""

from __future__ import annotations

import inspect
import io
import re
import shlex
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console, Group, RenderableType
from rich.padding import Padding
from rich.text import Text

from harness import settings
from harness.config import REPLAY_ITERATIONS, Layer, RunConfig, build_config
from harness.controlled.schedule import Schedule
from harness.engine.driver import run as run_engine
from harness.errors import StressError
from harness.loader import project_root
from harness.perturb.knobs import Perturbation
from harness.perturb.plan import make_plan
from harness.pytest import PARALLEL_THREADS
from harness.render.terminal import print_command, trace_table
from harness.results.outcome import Outcome, TrialResult
from harness.results.stats import VariantSummary
from harness.results.summary import RunReport
from harness.scenario import Expect, Variant
from harness.scope import Scope, resolve_patterns
from harness.text import plural
from harness.trial import Trial

__all__ = ["run_item"]

#: Trials per stress test unless something says otherwise: a test suite runs many tests.
DEFAULT_ITERATIONS = 200
_MARKER_ONLY = ("threads", "expect", "shared_fixtures")
_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


def run_item(item: pytest.Function, marker: pytest.Mark, *, lines: list[tuple[str, str]]) -> None:
    """Run ``item`` as stress trials; `pytest.fail` with the evidence if it fails.

    Args:
        item: The marked test.
        marker: Its ``@pytest.mark.stress``.
        lines: The session's terminal summary: a test's node id and its figures are appended per
            completed run.
    """
    if marker.args:
        pytest.fail(f"@pytest.mark.stress takes keyword arguments only, not {marker.args!r}", pytrace=False)
    problem = _function_scoped_fixtures(item, marker)
    try:
        config = stress_config(item, marker)
        expect = Expect.parse(marker.kwargs.get("expect", "safe"), where="@pytest.mark.stress(expect=...)")
    except StressError as exc:
        problem = problem or f"stress: {exc}"
    if problem is not None:
        pytest.fail(problem, pytrace=False)
    variant = _variant(item, marker, expect)
    try:
        scope = Scope(
            files=[str(item.path)],
            dirs=[str(project_root(item.path))],
            forced=resolve_patterns(config.scope, flag="scope"),
            excluded=resolve_patterns(config.exclude, flag="exclude"),
        )
    except StressError as exc:
        pytest.fail(f"stress: {exc}", pytrace=False)
    schedule = item.config.getoption("stress_schedule")
    if schedule is not None:
        _replay_schedule(item, variant, config, scope, schedule)
        return
    out = Path(str(item.config._tmp_path_factory.getbasetemp())) / "stress" / _NAME.sub("-", item.nodeid)[-100:]  # type: ignore[attr-defined]
    report = run_engine(
        [variant],
        config,
        out=out,
        scope=scope,
        command=shlex.join(["pytest", item.nodeid]),
        targets={variant.scenario: item.nodeid},
    )
    summary = report.variants[0]
    item.user_properties.append(("stress", f"{summary.failures}/{summary.trials} {report.info.unit}s failed"))
    _remember(item, summary, report, lines)
    if expect is Expect.SAFE and summary.failures:
        pytest.fail(_failure_text(item, report, summary), pytrace=False)
    if expect is Expect.UNSAFE and not summary.failures:
        pytest.fail(
            f"stress: expected to fail (expect='unsafe') but no {report.info.unit} of {summary.trials} did "
            f"(failure rate {summary.rate_text()}); more iterations may expose it · seed {config.seed}",
            pytrace=False,
        )


def _function_scoped_fixtures(item: pytest.Function, marker: pytest.Mark) -> str | None:
    """Refuse a test that takes function-scoped fixtures, unless the marker says sharing them is
    meant (``shared_fixtures=True``): pytest makes them once per test, and every trial of a worker
    would see what the trials before it left in them — a list grown by each, a file appended to —
    and fail for it, though the code under test did nothing wrong. Hypothesis refuses ``@given``
    tests with such fixtures for the same reason (its ``function_scoped_fixture`` health check)."""
    if marker.kwargs.get("shared_fixtures"):
        return None
    definitions = item._fixtureinfo.name2fixturedefs
    names = [
        name
        for name in item._fixtureinfo.argnames
        if name != "stress_trial" and definitions.get(name) and definitions[name][-1].scope == "function"
    ]
    if not names:
        return None
    listed = ", ".join(names)
    return (
        f"stress: {item.name} takes function-scoped fixtures ({listed}): pytest makes them once per test, "
        "and every trial would see what the trials before it left in them — a false failure waiting to happen. "
        "Make the state inside the test, use a fixture of a wider scope that the test resets, or, if sharing "
        "them across trials is what you mean, say @pytest.mark.stress(shared_fixtures=True)"
    )


# -- settings ---------------------------------------------------------------------------------------


def stress_config(item: pytest.Function, marker: pytest.Mark) -> RunConfig:
    """The run's settings for ``item``: options, then its marker, the environment, the ini values
    and ``[tool.stress]``, in that order of precedence. Raises `StressError` on a bad value."""
    options = item.config
    flags = {
        key: options.getoption(f"stress_{key}")
        for key in ("iterations", "seed", "mode", "trial", "jobs", "timeout")
        if options.getoption(f"stress_{key}") is not None
    }
    if options.getoption("stress_schedule") is not None:
        flags.pop("trial", None)  # a schedule's replay takes its trial number itself
    elif "trial" in flags and "iterations" not in flags:
        flags["iterations"] = REPLAY_ITERATIONS  # a replay repeats one plan, whatever the marker says
    kwargs = {k: v for k, v in marker.kwargs.items() if k not in _MARKER_ONLY}
    if marker.kwargs.get("threads") is not None:
        kwargs["actors"] = marker.kwargs["threads"]
    parallel = item.stash.get(PARALLEL_THREADS, None)  # pytest-run-parallel's markers
    if parallel is not None and (parallel == 1 or "actors" not in kwargs):
        kwargs["actors"] = parallel  # thread_unsafe: one actor, whatever else says
    ini = {}
    for key in ("iterations", "seed", "mode", "jobs", "timeout"):
        value = options.getini(f"stress_{key}")
        if value not in (None, ""):
            ini[key] = value
    layers = [
        Layer(flags, lambda key, value: f"--stress-{key} {value}"),
        Layer(kwargs, lambda key, value: f"@pytest.mark.stress({'threads' if key == 'actors' else key}={value!r})"),
        settings.environment_layer(),
        Layer(ini, lambda key, value: f"stress_{key} = {value} in the pytest configuration"),
        settings.pyproject_layer(settings.find_pyproject(Path(str(options.rootpath)))),
    ]
    if options.getoption("stress_trial") is None:
        layers.append(Layer({"iterations": DEFAULT_ITERATIONS}, lambda key, value: f"the plugin's default {key}"))
    return build_config(layers)


# -- the test as a variant --------------------------------------------------------------------------


def _assertion_failed(trial: Trial, exc: AssertionError) -> None:
    """An assert is the test's invariant: a failed trial, with pytest's explanation."""
    text = str(exc).strip() or "assertion failed"
    said = " / ".join(line.strip() for line in text.splitlines()[:6])
    trial.check(False, said if said.startswith("assert") else f"assert: {said}")


def _variant(item: pytest.Function, marker: pytest.Mark, expect: Expect) -> Variant:
    function: Callable[..., Any] = item.obj
    names = list(item._fixtureinfo.argnames)
    uses_trial = "stress_trial" in names
    funcargs: Mapping[str, Any] = item.funcargs

    def call(trial: Trial) -> None:
        kwargs = {name: trial if name == "stress_trial" else funcargs[name] for name in names}
        try:
            function(**kwargs)
        except AssertionError as exc:
            _assertion_failed(trial, exc)

    def body(trial: Trial) -> None:
        if uses_trial:
            call(trial)
        else:
            trial.run_threads(call, trial, count=trial.actors)

    async def call_async(trial: Trial) -> None:
        kwargs = {name: trial if name == "stress_trial" else funcargs[name] for name in names}
        try:
            await function(**kwargs)
        except AssertionError as exc:
            _assertion_failed(trial, exc)

    async def body_async(trial: Trial) -> None:
        # An ``async def`` test is a coroutine variant: on the trial's event loop, as tasks.
        if uses_trial:
            await call_async(trial)
        else:
            await trial.run_tasks(call_async, trial, count=trial.actors)

    if inspect.iscoroutinefunction(function):
        body = body_async  # type: ignore[assignment]
    # A task is named after its coroutine's function: findings name the test, not this wrapper.
    for wrapper in (body, call_async):
        wrapper.__name__ = wrapper.__qualname__ = function.__name__
    name = _NAME.sub("-", item.name).strip("-.") or "test"
    if not name[0].isalnum():
        name = "t" + name
    return Variant(
        scenario="pytest",
        name=name,
        description=item.nodeid,
        expect=expect,
        fn=body,
        files=(str(Path(str(item.path)).resolve()),),
        size=1,
        scenario_description=f"pytest {item.nodeid}",
        actors=None if uses_trial else 2,
    )


# -- what a failing test says -----------------------------------------------------------------------


def _test_id(item: pytest.Function) -> str:
    """The test as pytest takes it on a command line typed where this session was started: the
    node id is relative to the rootdir, which may be a folder above."""
    node = item.nodeid
    _, sep, rest = node.partition("::")
    started = Path(str(item.config.invocation_params.dir))
    path = Path(str(item.path))
    try:
        where = str(path.relative_to(started))
    except ValueError:
        where = str(path)
    return f"{where}{sep}{rest}" if sep else node


def replay_command(item: pytest.Function, report: RunReport, result: TrialResult) -> str:
    config = report.info.config
    words = ["pytest", _test_id(item), "--stress-seed", str(config.seed), "--stress-trial", str(result.trial)]
    if config.controlled:
        words[2:2] = ["--stress-mode", "controlled"]
        record = result.schedule
        if record is not None:
            words += ["--stress-schedule", record.minimal or record.schedule or "v2:"]
    return shlex.join(words)


def _failure_text(item: pytest.Function, report: RunReport, summary: VariantSummary) -> str:
    unit = report.info.unit
    console = _console(item)
    config = report.info.config
    if config.trial is not None and not config.controlled:
        console.print(
            f"stress: re-ran trial {config.trial}'s plan {plural(summary.trials, 'time')}: "
            f"failed {summary.failures} of "
            f"{summary.trials} · seed {config.seed} (a plan fixes stress's perturbation, not how the operating "
            "system schedules threads: a failure comes back some of the time)"
        )
    else:
        console.print(
            f"stress: {summary.failures} of {plural(summary.trials, unit)} failed — failure rate {summary.rate_text()} "
            f"· seed {config.seed}" + (f" · {report.info.mode_text}" if config.controlled else "")
        )
    example = summary.example
    if example is not None:
        console.print(f"example: {unit} {example.trial}, {example.outcome.label}")
        console.print(Padding(Group(*_evidence(example, console.width)), (0, 0, 0, 2)))
        if not config.controlled:
            how = f"re-runs the plan {REPLAY_ITERATIONS} times"
        elif example.schedule is not None and example.schedule.unscheduled is not None:
            console.print(f"not exact: {example.schedule.unscheduled}; the schedule fails again only by chance")
            how = "once; it may pass"
        else:
            how = "exact"
        command = replay_command(item, report, example)
        if len(how) + len(command) + 10 <= console.width:
            console.print(f"replay ({how}): {command}", soft_wrap=True)
        else:  # under its label, broken between words with a backslash: it still pastes as one command
            console.print(f"replay ({how}):")
            print_command(console, Text("  "), command)
    console.print(f"report: {report.info.run_dir / 'report.html'}", soft_wrap=True)
    return _text(console)


def _console(item: pytest.Item) -> Console:
    """A console for a failure's text, as wide as pytest's terminal (80 columns when its output
    is not one), to be read in its failure section."""
    try:
        width = item.config.get_terminal_writer().fullwidth
    except (AttributeError, AssertionError):  # no terminal reporter (-p no:terminal)
        width = 80
    return Console(file=io.StringIO(), width=max(width, 40), no_color=True, highlight=False, emoji=False)


def _text(console: Console) -> str:
    """What the console printed, without the padding Rich adds to the right of short lines."""
    file = console.file
    assert isinstance(file, io.StringIO)
    return "\n".join(line.rstrip() for line in file.getvalue().rstrip().splitlines())


def _evidence(result: TrialResult, width: int | None = None) -> list[RenderableType]:
    out: list[RenderableType] = []
    evidence = result.evidence
    if evidence is not None:
        out.extend(Text(message) for message in evidence.messages[:3])
        out.extend(Text("  " + line) for line in evidence.wait_for[:8])
        out.extend(Text("blocked " + line) for line in evidence.blocked_at[:6])
        if evidence.tracebacks:
            out.append(Text("\n".join(evidence.tracebacks[0].rstrip().splitlines()[-10:])))
    if result.schedule is not None and result.schedule.trace:
        from harness.controlled.trace import Trace

        trace = Trace.from_dict(result.schedule.trace)
        if trace is not None:
            out.append(trace_table(trace, max_rows=30, width=width - 2 if width else None))
    elif result.plan is not None and result.schedule is None:
        out.append(Text("plan " + result.plan.describe(delay=result.delay_used)))
    return out


def _remember(item: pytest.Function, summary: VariantSummary, report: RunReport, lines: list[tuple[str, str]]) -> None:
    lines.append(
        (
            item.nodeid,
            f"{plural(summary.trials, report.info.unit)}, {summary.failures} failed, "
            f"failure rate {summary.rate_text()}, {report.wall:.1f} s",
        )
    )


# -- replaying one controlled schedule --------------------------------------------------------------


def _replay_schedule(item: pytest.Function, variant: Variant, config: RunConfig, scope: Scope, text: str) -> None:
    from harness.controlled.session import Control
    from harness.controlled.trace import build
    from harness.engine.local import LocalRunner
    from harness.engine.replay import Replay, _stop_in_debugger

    if not config.controlled:
        pytest.fail(
            "stress: --stress-schedule replays a controlled schedule: add --stress-mode controlled", pytrace=False
        )
    problem = None
    try:
        schedule = Schedule.parse(text)
        trial = int(item.config.getoption("stress_trial") or 0)
    except (StressError, ValueError) as exc:
        problem = f"stress: {exc}"
    if problem is not None:
        pytest.fail(problem, pytrace=False)
    plan = make_plan(Perturbation.none(), seed=config.seed, trial=trial)
    control = Control("forced", forced=schedule.forced, granularity=config.granularity, step_limit=config.step_limit)
    debug = bool(item.config.getoption("usepdb", False))
    with LocalRunner(variant, config, scope=scope) as runner:
        run = runner.run(control, plan, on_failure=_stop_in_debugger if debug else None)
    unfollowed = Replay(schedule, run, build(run.trace)).unfollowed()
    if unfollowed is not None:  # a bad option value, known only once the test ran: pytest's usage error
        pytest.exit(f"stress: schedule {schedule}: {unfollowed}", returncode=pytest.ExitCode.USAGE_ERROR)
    if run.outcome is Outcome.UNSUPPORTED:
        pytest.skip(f"stress: schedule {schedule} was not checked: {run.unscheduled}")
    if run.outcome is Outcome.PASSED:
        return
    console = _console(item)
    console.print(f"stress: schedule {schedule} {run.outcome.label} after {run.steps} steps")
    if run.unscheduled is not None:
        console.print(f"  not exact: {run.unscheduled}; the schedule fails so only by chance")
    if run.evidence is not None:
        for message in run.evidence.messages[:3]:
            console.print("  " + message)
    if run.trace:
        console.print(trace_table(build(run.trace), max_rows=60, width=console.width))
    pytest.fail(_text(console), pytrace=False)

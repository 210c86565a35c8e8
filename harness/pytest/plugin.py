"""stress as a pytest plugin: ``@pytest.mark.stress`` runs a test as thousands of concurrency trials.

Registered through the ``pytest11`` entry point, so installing stress is enough. This module imports
nothing but pytest: a test session that marks no test pays nothing for it. The work happens in
`harness.pytest.item`, imported the first time a marked test runs.

Two ways to write a stress test::

    @pytest.mark.stress(iterations=300)
    def test_counter(stress_trial):            # the test is the trial: it starts the threads
        counter = Counter()
        stress_trial.run_threads(counter.increment, count=4)
        assert counter.value == 4

    @pytest.mark.stress(threads=4)
    def test_cache_get(cache):                  # the test is the actor: four threads run it at once
        assert cache.get("k") == "v"

Settings, highest precedence first: ``--stress-*`` options, the marker's arguments, ``STRESS_*``
environment variables, ``stress_*`` ini options, ``[tool.stress]`` of the project's pyproject.toml.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from harness.pytest import PARALLEL_THREADS

__all__ = [
    "pytest_addoption",
    "pytest_collection_modifyitems",
    "pytest_configure",
    "pytest_pyfunc_call",
    "pytest_terminal_summary",
    "stress_trial",
]

#: One line per stress test that ran in this process, for the terminal summary.
_LINES: pytest.StashKey[list[tuple[str, str]]] = pytest.StashKey()

_OPTIONS = {
    "iterations": "trials per stress test (stress mode) or schedules (controlled mode)",
    "seed": "run seed: fixes every trial's plan and schedule",
    "mode": "stress (real concurrency under perturbation) or controlled (one thread at a time)",
    "trial": "replay: run only trial K's plan (needs --stress-seed)",
    "schedule": "controlled mode, replay: run exactly this schedule (with --stress-seed and --stress-trial)",
    "jobs": "worker processes per stress test",
    "timeout": "seconds before a trial counts as hung (default: adaptive)",
}
_INI = ("iterations", "seed", "mode", "jobs", "timeout")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("stress", "stress: run tests as concurrency trials (@pytest.mark.stress)")
    for name, text in _OPTIONS.items():
        group.addoption(f"--stress-{name}", dest=f"stress_{name}", default=None, metavar=name.upper(), help=text)
    for name in _INI:
        parser.addini(f"stress_{name}", f"default for --stress-{name}", default=None)


def pytest_configure(config: pytest.Config) -> None:
    _check_options(config)
    config.addinivalue_line(
        "markers",
        "stress(iterations=None, threads=None, mode=None, expect='safe', **settings): run the test as "
        "concurrency trials under stress; with a `stress_trial` argument the test starts the threads, "
        "without one `threads` threads run the test itself at once",
    )


def _check_options(config: pytest.Config) -> None:
    """A bad ``--stress-*`` value (or ``stress_*`` ini value) is a usage error before any test runs
    (pytest exits 4), not a failure of every stress test. Only the values are checked here, when
    given: the markers and ``[tool.stress]`` are checked with each test that uses them."""
    flags = {key: config.getoption(f"stress_{key}") for key in _OPTIONS if key != "schedule"}
    flags = {key: value for key, value in flags.items() if value is not None}
    if config.getoption("stress_schedule") is not None:
        flags.pop("trial", None)  # a schedule's replay takes its trial number itself, as each test does
    ini = {key: config.getini(f"stress_{key}") for key in _INI}
    ini = {key: value for key, value in ini.items() if value not in (None, "")}
    schedule = config.getoption("stress_schedule")
    environment = any(name.startswith("STRESS_") for name in os.environ)
    if not flags and not ini and schedule is None and not environment:
        return
    from harness import settings  # only when stress options are used
    from harness.config import Layer, build_config
    from harness.controlled.schedule import Schedule
    from harness.errors import UserError

    try:
        if schedule is not None:
            Schedule.parse(schedule)
        build_config(
            [
                Layer(flags, lambda key, value: f"--stress-{key} {value}"),
                settings.environment_layer(),
                Layer(ini, lambda key, value: f"stress_{key} = {value} in the pytest configuration"),
            ]
        )
    except UserError as exc:
        raise pytest.UsageError(f"stress: {exc}") from None


def _run_parallel_threads(test: pytest.Item) -> int | None:
    """What pytest-run-parallel's markers ask of ``test``: 1 for ``thread_unsafe`` (never run by two
    threads at once), ``n`` for ``force_parallel_threads(n)`` or ``parallel_threads(n)``, capped by
    ``parallel_threads_limit(n)``; None when none is there. ``auto`` is this machine's CPUs."""

    def count(mark: pytest.Mark | None) -> int | None:
        if mark is None or not mark.args:
            return None
        value = mark.args[0]
        return max(1, os.cpu_count() or 1) if value == "auto" else int(value)

    if test.get_closest_marker("thread_unsafe") is not None:
        return 1
    threads = count(test.get_closest_marker("force_parallel_threads")) or count(
        test.get_closest_marker("parallel_threads")
    )
    limit = count(test.get_closest_marker("parallel_threads_limit"))
    if threads is not None and limit is not None:
        threads = min(threads, limit)
    return threads


def _share_with_run_parallel(config: pytest.Config, items: list[pytest.Item]) -> None:
    """pytest-run-parallel runs a test's function in N threads at once by wrapping it when
    collection ends. A stress test's threads are stress's: its markers say how many actors run the
    test (`PARALLEL_THREADS`), and the test is marked single-threaded for pytest-run-parallel, so
    that it does not wrap it too (its summary lists the test as not run in parallel)."""
    if not config.pluginmanager.hasplugin("run-parallel"):
        return
    for test in items:
        if isinstance(test, pytest.Function) and test.get_closest_marker("stress") is not None:
            test.stash[PARALLEL_THREADS] = _run_parallel_threads(test)
            test.add_marker(pytest.mark.force_parallel_threads(1), append=False)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Stress tests are shared with pytest-run-parallel (`_share_with_run_parallel`).

    ``--stress-schedule`` replays a controlled schedule: given to a selection whose stress tests
    run in stress mode (by option, marker or configuration), it is a usage error (pytest exits 4),
    not a failure of each of them."""
    _share_with_run_parallel(config, items)
    if config.getoption("stress_schedule") is None:
        return
    from harness.errors import StressError
    from harness.pytest import item as run

    plain = []
    for test in items:
        marker = test.get_closest_marker("stress")
        if marker is None or not isinstance(test, pytest.Function):
            continue
        try:
            controlled = run.stress_config(test, marker).controlled
        except StressError:
            continue  # a bad marker is the test's own failure, said when it runs
        if not controlled:
            plain.append(test.nodeid)
    if plain:
        raise pytest.UsageError(
            f"stress: --stress-schedule replays a controlled schedule, and {', '.join(plain)} "
            f"{'run' if len(plain) > 1 else 'runs'} in stress mode: add --stress-mode controlled"
        )


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    marker = pyfuncitem.get_closest_marker("stress")
    if marker is None:
        return None
    from harness.pytest import item  # heavy: only when a stress test runs

    item.run_item(pyfuncitem, marker, lines=pyfuncitem.config.stash.setdefault(_LINES, []))
    return True


def pytest_terminal_summary(terminalreporter: Any) -> None:
    lines = terminalreporter.config.stash.get(_LINES, [])
    if lines:
        terminalreporter.section("stress")
        width = terminalreporter.config.get_terminal_writer().fullwidth
        for test, figures in lines:
            if len(test) + 2 + len(figures) <= width:
                terminalreporter.write_line(f"{test}: {figures}")
            else:  # the figures under the test's id, not folded into it
                terminalreporter.write_line(f"{test}:")
                terminalreporter.write_line(f"  {figures}")


class _Placeholder:
    """What the `stress_trial` fixture holds until a trial runs (each trial gets its own Trial)."""

    def __repr__(self) -> str:
        return "<stress_trial: replaced by each trial's harness.Trial>"


@pytest.fixture
def stress_trial(request: pytest.FixtureRequest) -> Any:
    """The `harness.Trial` of the running trial: start threads with it (``run_threads``,
    ``threads()``), draw randomness from ``stress_trial.rng``, check invariants with ``check`` or
    ``assert``. Only for tests marked ``@pytest.mark.stress``."""
    if request.node.get_closest_marker("stress") is None:
        pytest.fail("the stress_trial fixture needs @pytest.mark.stress on the test", pytrace=False)
    return _Placeholder()

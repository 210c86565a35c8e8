"""Declaring scenarios and their variants.

A `Scenario` is a family of code under test (``counter``, ``bank``, ...). Each of its variants is one
implementation strategy, declared with the `Scenario.variant` decorator on a function that receives a
`harness.Trial`. The variant's ``expect`` tag records what its author believes ("safe" or
"unsafe"); the harness uses the tag only to judge the verdict, never to steer a trial.
"""

from __future__ import annotations

import ast
import contextlib
import enum
import functools
import inspect
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.errors import ScenarioError, ScenarioNotFound, did_you_mean
from harness.text import short_path

if TYPE_CHECKING:
    from harness.trial import Trial

__all__ = ["DEFAULT_SIZE", "Expect", "Scenario", "Variant", "VariantFn"]

VariantFn = Callable[["Trial"], Any]
DEFAULT_SIZE = 100
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class Expect(enum.Enum):
    """What the author of a variant expects of it."""

    SAFE = "safe"
    UNSAFE = "unsafe"

    @classmethod
    def parse(cls, value: Expect | str, *, where: str) -> Expect:
        if isinstance(value, Expect):
            return value
        try:
            return cls(value)
        except ValueError:
            raise ScenarioError(
                f"expect={value!r} in {where}: must be 'safe' or 'unsafe'"
                + did_you_mean(str(value), [m.value for m in cls])
            ) from None


@dataclass(frozen=True)
class Variant:
    """One implementation strategy of a scenario."""

    scenario: str
    name: str
    description: str
    expect: Expect
    fn: VariantFn
    #: Files whose code is in scope for preemption injection by default.
    files: tuple[str, ...]
    #: The scenario's default work per actor.
    size: int = DEFAULT_SIZE
    scenario_description: str = ""
    #: The scenario's default number of actors (None: fixed by the variants).
    actors: int | None = None
    #: The scenario's default size and actors in controlled mode.
    controlled_size: int = 1
    controlled_actors: int = 2
    #: Why the scenario cannot run in controlled mode (None: it can).
    stress_only: str | None = None
    #: Whether the scenario's checks hold when its tasks are cancelled midway (``--cancel``).
    cancellable: bool = False
    #: The scenario's model of awaits: an operation on a ready asyncio primitive may suspend.
    may_suspend: bool = False

    @property
    def key(self) -> str:
        """``scenario/variant``: the name used in results and on the command line."""
        return f"{self.scenario}/{self.name}"

    @property
    def is_coroutine(self) -> bool:
        """Whether the variant is an ``async def``, run on an event loop (`harness.detect.aio`)."""
        fn: Any = self.fn
        while isinstance(fn, functools.partial):
            fn = fn.func
        return inspect.iscoroutinefunction(fn)

    def source(self) -> str:
        """The variant function's source code, for ``stress show``."""
        try:
            return inspect.getsource(self.fn)
        except (OSError, TypeError):
            return f"# source of {self.key} is not available\n"

    def where(self) -> str:
        """``scenarios/counter.py:42``: where the variant's function is defined ('' if unknown)."""
        code = getattr(self.fn, "__code__", None)
        return f"{short_path(code.co_filename)}:{code.co_firstlineno}" if code is not None else ""

    def helpers(self) -> list[Callable[..., Any] | type]:
        """The functions and classes of the variant's own module that it uses, directly or through
        one another (``_check_total``, ``Counter``), in the order first met: what ``stress show``
        prints with it so that the invariant it checks is in view."""
        fn = self.fn
        module = getattr(fn, "__module__", None)
        namespace: dict[str, Any] = getattr(fn, "__globals__", {})
        found: dict[str, Callable[..., Any] | type] = {}
        pending = [getattr(fn, "__code__", None)]
        while pending:
            code = pending.pop(0)
            if code is None:
                continue
            pending.extend(const for const in code.co_consts if inspect.iscode(const))  # nested functions
            for name in code.co_names:
                value = namespace.get(name)
                if name in found or getattr(value, "__module__", None) != module:
                    continue
                if inspect.isfunction(value):
                    found[name] = value
                    pending.append(value.__code__)
                elif inspect.isclass(value):
                    found[name] = value
        return [value for value in found.values() if value is not fn]

    def outside_schedules(self) -> str | None:
        """What the variant, or a function or class of its module that it uses (`helpers`),
        visibly does that no controlled schedule decides, and where — ``starts a process at
        procs.py:14 (mp.Process)``, ``arms a signal timer at logs.py:9 (signal.setitimer)`` — or
        None. A process: ``trial.mp`` or process actors, ``multiprocessing``'s processes, pools and
        managers, ``ProcessPoolExecutor``, ``subprocess``, ``os.fork``, ``forkpty``, ``posix_spawn``,
        ``system`` or ``popen``; a signal timer: ``signal.setitimer`` or ``signal.alarm``; however
        imported. Read from the code, not run: what is done some other way is still seen when it
        happens (the schedule is then unsupported, `harness.controlled.session`)."""
        code = getattr(self.fn, "__code__", None)
        if code is None:
            return None
        tree = _parsed(code.co_filename)
        if tree is None:
            return None
        imported = _imports(tree)
        firsts = {code.co_firstlineno}
        for helper in self.helpers():
            with contextlib.suppress(OSError, TypeError):
                firsts.add(inspect.getsourcelines(helper)[1])
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                continue
            first = node.decorator_list[0].lineno if node.decorator_list else node.lineno
            if first not in firsts and node.lineno not in firsts:
                continue
            for inner in ast.walk(node):
                what = _outside_schedules(inner, imported)
                if what is not None:
                    where = f"{short_path(code.co_filename)}:{inner.lineno}"  # type: ignore[attr-defined]
                    return f"{what} at {where} ({ast.unparse(inner)})"
        return None


def _check_name(name: str, what: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ScenarioError(
            f"{what} name {name!r}: use letters, digits, '-', '_' or '.', starting with a letter or digit"
        )
    return name


def _check_takes_the_trial(fn: Callable[..., Any], name: str, where: str) -> None:
    """Refuse, at load, a variant that cannot be called with the trial alone (else every trial
    of it would fail with the same TypeError, blamed on the code under test)."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # a callable Python cannot describe: let the first trial say
        return
    try:
        signature.bind(None)
    except TypeError:
        raise ScenarioError(  # raised at the decorator: the loader says where
            f"variant {name!r} of {where} must take the trial as its one parameter: "
            f"def {getattr(fn, '__name__', name)}(trial)"
        ) from None


def _caller_file(depth: int) -> str | None:
    frame = sys._getframe(depth + 1)
    file = frame.f_globals.get("__file__")
    return str(Path(file).resolve()) if isinstance(file, str) else None


class Scenario:
    """A named family of variants that exercise the same shared state.

    Args:
        name: The name used on the command line (``stress run NAME``).
        description: One line saying what the actors do.
        size: The default amount of work per actor (``trial.size``); ``--size`` overrides it. Keep it
            small: many cheap trials find more interleavings than a few long ones.
        actors: The default number of actors (``trial.actors``), for scenarios whose variants let
            it vary; ``--actors`` overrides it. None: the variants decide for themselves. Controlled
            mode starts two.
        controlled_size: The default size in controlled mode, which explores small instances
            (every extra step multiplies the schedules): 1 unless the variants need more.
        controlled_actors: The default number of actors in controlled mode, for scenarios that
            let it vary: 2 unless the bug needs more.
        stress_only: Why the scenario cannot run in controlled mode, if it cannot (its actors are
            processes, or threads of an executor: the controlled scheduler runs the trial's own
            thread actors only).
        cancellable: Whether the checks of its coroutine variants hold when a task is cancelled
            midway — they check what the code leaves behind (a lock free, a count kept), not that
            every task did all its work. Only such scenarios take ``--cancel``.
        may_suspend: The model its coroutine variants are judged under. False (asyncio's own): an
            operation on a ready asyncio primitive (a free lock's ``acquire``, a set event's
            ``wait``, ``put`` on a queue with room) returns at once, as asyncio documents, and only
            task starts, timers and what runs outside the loop are perturbed. True: any such
            operation may suspend (Trio's rule for every await) — a task steps out before it, and
            code correct only because it does not is reported; for code that must stay correct
            when a queue gets a bound, a lock gets contended, a call becomes I/O.
    """

    def __init__(
        self,
        name: str,
        description: str,
        *,
        size: int = DEFAULT_SIZE,
        actors: int | None = None,
        controlled_size: int = 1,
        controlled_actors: int = 2,
        stress_only: str | None = None,
        cancellable: bool = False,
        may_suspend: bool = False,
    ) -> None:
        self.name = _check_name(name, "scenario")
        self.description = description.strip()
        checked = (
            ("size", size),
            ("actors", actors),
            ("controlled_size", controlled_size),
            ("controlled_actors", controlled_actors),
        )
        for label, value in checked:
            if value is None and label == "actors":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ScenarioError(f"{label}={value!r} in scenario {name!r}: must be an integer >= 1")
        self.size = size
        self.actors = actors
        self.controlled_size = controlled_size
        self.controlled_actors = controlled_actors
        self.stress_only = stress_only
        self.cancellable = cancellable
        self.may_suspend = may_suspend
        self.file = _caller_file(1)
        #: ``file:line`` where the scenario was made, for errors found after (no variant, a name taken).
        self.where = f"{short_path(self.file)}:{sys._getframe(1).f_lineno}" if self.file else f"scenario {name!r}"
        self._variants: dict[str, Variant] = {}

    def __repr__(self) -> str:
        return f"Scenario({self.name!r}, variants={list(self._variants)})"

    def variant(
        self,
        name: str | None = None,
        *,
        expect: Expect | str,
        description: str | None = None,
    ) -> Callable[[VariantFn], VariantFn]:
        """Declare the decorated function as a variant of this scenario.

        Args:
            name: The variant's name; defaults to the function name with ``_`` turned into ``-``.
            expect: ``"safe"`` or ``"unsafe"``: what you believe of this strategy.
            description: One line; defaults to the first line of the function's docstring.
        """
        where = f"scenario {self.name!r}"
        tag = Expect.parse(expect, where=where)

        def register(fn: VariantFn) -> VariantFn:
            if not callable(fn):
                raise ScenarioError(f"variant of {where} must decorate a function, not {fn!r}")
            vname = _check_name(name or fn.__name__.replace("_", "-"), "variant")
            if vname in self._variants:
                raise ScenarioError(f"variant {vname!r} is declared twice in {where}")
            _check_takes_the_trial(fn, vname, where)
            doc = description if description is not None else inspect.getdoc(fn) or ""
            files = {f for f in (self.file, _code_file(fn)) if f}
            self._variants[vname] = Variant(
                scenario=self.name,
                name=vname,
                description=doc.strip().splitlines()[0] if doc.strip() else "",
                expect=tag,
                fn=fn,
                files=tuple(sorted(files)),
                size=self.size,
                scenario_description=self.description,
                actors=self.actors,
                controlled_size=self.controlled_size,
                controlled_actors=self.controlled_actors,
                stress_only=self.stress_only,
                cancellable=self.cancellable,
                may_suspend=self.may_suspend,
            )
            return fn

        return register

    @property
    def variants(self) -> Mapping[str, Variant]:
        return dict(self._variants)

    @property
    def outside_schedules(self) -> bool:
        """Whether a variant of the scenario visibly does what no controlled schedule decides (starts
        a process, arms a signal timer: `Variant.outside_schedules`)."""
        return any(variant.outside_schedules() is not None for variant in self)

    def __iter__(self) -> Iterator[Variant]:
        return iter(self._variants.values())

    def __len__(self) -> int:
        return len(self._variants)

    def get(self, name: str) -> Variant:
        """The variant called ``name``, or `ScenarioNotFound` with a suggestion."""
        try:
            return self._variants[name]
        except KeyError:
            raise ScenarioNotFound(
                f"scenario {self.name!r} has no variant {name!r}"
                + did_you_mean(name, self._variants)
                + f"; its variants: {', '.join(sorted(self._variants))}"
            ) from None


#: Attributes that start a process whatever they are read from (``ctx.Process``, ``os.fork``).
_PROCESS_ATTRIBUTES = frozenset(
    {"Process", "ProcessPoolExecutor", "Popen", "fork", "forkpty", "posix_spawn", "posix_spawnp"}
)
#: Names that start a process when they come from these modules (``mp.Pool``, ``from subprocess
#: import run``); by the module's top-level package.
_MODULE_STARTERS = {
    "multiprocessing": frozenset({"Process", "Pool", "Manager", "get_context", "ProcessPoolExecutor"}),
    "concurrent": frozenset({"ProcessPoolExecutor"}),
    "subprocess": frozenset({"Popen", "run", "call", "check_call", "check_output", "getoutput", "getstatusoutput"}),
    "os": frozenset({"fork", "forkpty", "posix_spawn", "posix_spawnp", "system", "popen"}),
}
#: The trial's own ways to start processes (``trial.mp``, ``trial.processes()``).
_TRIAL_PROCESSES = frozenset({"mp", "processes", "run_processes"})
#: ``signal``'s timers: their handler runs when the timer fires, not where a schedule puts it.
_SIGNAL_TIMERS = frozenset({"setitimer", "alarm"})
_TIMER_IMPORTS = frozenset(("signal", name) for name in _SIGNAL_TIMERS)


def _outside_schedules(node: ast.AST, imported: Mapping[str, tuple[str, str | None]]) -> str | None:
    if _starts_a_process(node, imported):
        return "starts a process"
    timer = (
        isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.attr in _SIGNAL_TIMERS
        and imported.get(node.value.id) == ("signal", None)
    ) or (isinstance(node, ast.Name) and node.id in imported and imported[node.id] in _TIMER_IMPORTS)
    return "arms a signal timer" if timer else None


def _parsed(path: str) -> ast.Module | None:
    try:
        return ast.parse(Path(path).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return None


def _imports(tree: ast.Module) -> dict[str, tuple[str, str | None]]:
    """Every name an import in ``tree`` binds: the top-level package it comes from, and the name
    imported from it (None for a module: ``import multiprocessing as mp``)."""
    bound: dict[str, tuple[str, str | None]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                bound[alias.asname or alias.name.partition(".")[0]] = (alias.name.partition(".")[0], None)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                bound[alias.asname or alias.name] = (node.module.partition(".")[0], alias.name)
    return bound


def _starts_a_process(node: ast.AST, imported: Mapping[str, tuple[str, str | None]]) -> bool:
    if isinstance(node, ast.Attribute):
        if node.attr in _PROCESS_ATTRIBUTES:
            return True
        if not isinstance(node.value, ast.Name):
            return False
        if node.value.id == "trial":
            return node.attr in _TRIAL_PROCESSES
        module, name = imported.get(node.value.id, ("", ""))
        # ``mp.Pool``; and ``concurrent.futures.ProcessPoolExecutor`` by its last name above.
        return name is None and node.attr in _MODULE_STARTERS.get(module, ())
    if isinstance(node, ast.Name) and node.id in imported:
        module, name = imported[node.id]
        return name is not None and name in _MODULE_STARTERS.get(module, ())
    return False


def _code_file(fn: Callable[..., Any]) -> str | None:
    code = getattr(fn, "__code__", None)
    if code is None:
        return None
    return str(Path(code.co_filename).resolve())

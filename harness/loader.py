"""Loading scenarios from a user's file or module.

``stress run path/to/file.py`` runs every scenario the file defines; ``path/to/file.py::name``
picks one. The file is imported as a module of its own (its folder and its project's root go on
``sys.path`` first, so it can import its neighbours and its project's packages).

``stress run package.module:name`` imports a module of the user's project (the working directory
goes on ``sys.path``, as ``python -m`` does) and takes the scenario bound to ``name`` there (or
called ``name``); without ``:name``, all of the module's. Any failure while importing becomes a
one-line error naming the file and line, never a traceback.

`project_root` says where the user's project starts: stress forces switches in all of its code, not
just in the scenario file, since the code under test is usually imported from elsewhere in it.
"""

from __future__ import annotations

import _thread
import contextlib
import hashlib
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import re
import sys
import sysconfig
import threading
import traceback
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from harness.errors import ScenarioError, ScenarioNotFound, Terminated, did_you_mean
from harness.registry import scenarios_in
from harness.scenario import Scenario

__all__ = [
    "STARTED_AT_IMPORT",
    "import_again",
    "is_file_target",
    "is_module_target",
    "load_file",
    "load_module",
    "load_target",
    "project_root",
]

_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_ROOT_MARKERS = ("pyproject.toml", "setup.py", "setup.cfg", ".git")


def is_file_target(target: str) -> bool:
    """Whether a command-line target names a file (``x.py``, ``x.py::name``) rather than a scenario."""
    path = target.split("::", 1)[0]
    return path.endswith(".py") or "/" in path or "::" in target


def is_module_target(target: str) -> bool:
    """Whether a target names a module of the user's project (``pkg.mod`` or ``pkg.mod:name``)."""
    if is_file_target(target):
        return False
    module = target.partition(":")[0]
    return ":" in target or "." in module


def project_root(file: str | Path) -> Path:
    """The folder of the nearest ``pyproject.toml``, ``setup.py``, ``setup.cfg`` or ``.git`` at or
    above ``file``; else the file's own folder."""
    start = Path(file).resolve().parent
    for folder in (start, *start.parents):
        if any((folder / marker).exists() for marker in _ROOT_MARKERS):
            return folder
    return start


def load_module(target: str) -> list[Scenario]:
    """The scenarios ``package.module[:name]`` names."""
    module_name, _, wanted = target.partition(":")
    if not _MODULE.match(module_name) or (wanted and not wanted.replace("-", "_").isidentifier()):
        raise ScenarioNotFound(
            f"{target!r} is not a scenario target (a name, FILE.py[::NAME] or package.module[:NAME])"
        )
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        with _threads_started(module_name, ("module", target)):
            module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise ScenarioNotFound(
                f"cannot import {module_name!r}: no module named {exc.name!r} (run stress from your project's folder)"
            ) from None
        raise ScenarioError(_import_failure(module_name, exc)) from None
    except SyntaxError as exc:
        where = f"{exc.filename}:{exc.lineno}" if exc.filename else module_name
        raise ScenarioError(f"{where}: syntax error: {exc.msg}") from None
    except (KeyboardInterrupt, Terminated):
        raise  # the user stopped stress: not the module's fault
    except BaseException as exc:
        raise ScenarioError(_import_failure(module_name, exc)) from None
    return _pick(module, wanted, module_name)


def _import_failure(module_name: str, exc: BaseException) -> str:
    """``pkg/mod.py:12: importing it raised ValueError: bad`` — the deepest frame of the user's."""
    where = module_name
    for frame in traceback.extract_tb(exc.__traceback__):
        if not frame.filename.startswith("<") and "importlib" not in frame.filename:
            where = f"{frame.filename}:{frame.lineno}"
    detail = str(exc).splitlines()[0] if str(exc) else ""
    return f"{where}: importing {module_name} raised {type(exc).__name__}" + (f": {detail}" if detail else "")


def load_file(path: Path) -> ModuleType:
    """Import ``path`` as a fresh module; user errors come out as `ScenarioError`."""
    resolved = path.resolve()
    if not resolved.is_file():
        raise ScenarioNotFound(f"scenario file {str(path)!r} does not exist")
    digest = hashlib.sha1(str(resolved).encode()).hexdigest()[:8]
    name = f"stress_user_{resolved.stem}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, resolved)
    if spec is None or spec.loader is None:
        raise ScenarioError(f"{path}: cannot be imported as a Python file")
    module = importlib.util.module_from_spec(spec)
    # The file imports its neighbours, and the rest of its project (from the project's root).
    for folder in (str(project_root(resolved)), str(resolved.parent)):
        if folder not in sys.path:
            sys.path.insert(0, folder)
    sys.modules[name] = module
    try:
        with _threads_started(name, ("file", str(path))):
            spec.loader.exec_module(module)
    except (KeyboardInterrupt, Terminated):
        del sys.modules[name]
        raise  # the user stopped stress: not the file's fault
    except SyntaxError as exc:
        del sys.modules[name]
        where = f"{path}:{exc.lineno}" if exc.lineno else str(path)
        raise ScenarioError(f"{where}: syntax error: {exc.msg}") from None
    except ScenarioError as exc:
        del sys.modules[name]
        raise ScenarioError(f"{path}:{_line_in(exc, resolved)}: {exc}") from None
    except BaseException as exc:  # the file's own code raised (or called sys.exit) while importing
        del sys.modules[name]
        detail = str(exc).splitlines()[0] if str(exc) else ""
        raise ScenarioError(
            f"{path}:{_line_in(exc, resolved)}: importing it raised {type(exc).__name__}"
            + (f": {detail}" if detail else "")
        ) from None
    _remember_for_children(name, resolved)
    return module


#: The loads of this process whose import started threads (a server, a ticker, a flusher at the top
#: of a file), with the threads' names: ``load name -> [thread name, ...]``. A worker is forked after
#: the import, and a fork copies no thread: it imports the user's project again (`import_again`), or
#: the trials would wait for threads that are not there, in code that is safe where they are.
STARTED_AT_IMPORT: dict[str, list[str]] = {}

#: Every load of this process, in order: ``("file", path)`` or ``("module", name)``.
_LOADS: list[tuple[str, str]] = []

#: The names of the modules of the user's project that the loads imported.
_PROJECT_MODULES: list[str] = []

#: True while `import_again` runs the loads again: they record nothing.
_again = False


@contextlib.contextmanager
def _threads_started(loaded: str, load: tuple[str, str]) -> Iterator[None]:
    """Note the load, the modules of the user's project it imports (``loaded`` among them) and, in
    `STARTED_AT_IMPORT`, the threads it starts."""
    if _again:
        yield
        return
    threads = set(threading.enumerate())
    modules = set(sys.modules) - {loaded}
    # A thread started with ``_thread.start_new_thread`` is in no list of `threading`'s (and may
    # not have run yet when the import returns): count the calls (threading's own go through its
    # private alias, not through the module's name).
    raw: list[object] = []
    real = _thread.start_new_thread

    def counted(*args: Any, **kwargs: Any) -> Any:
        raw.append(args[0] if args else None)
        return real(*args, **kwargs)

    _thread.start_new_thread = counted
    try:
        yield
    finally:
        if _thread.start_new_thread is counted:
            _thread.start_new_thread = real
        _LOADS.append(load)
        for name in [n for n in sys.modules if n not in modules]:
            if name not in _PROJECT_MODULES and _in_project(sys.modules[name]):
                _PROJECT_MODULES.append(name)
        started = [thread.name for thread in threading.enumerate() if thread not in threads]
        started += [f"{getattr(target, '__name__', 'a function')} started with _thread" for target in raw]
        if started:
            STARTED_AT_IMPORT.setdefault(loaded, []).extend(started)


def _in_project(module: ModuleType) -> bool:
    """Whether ``module`` is the user's Python source (not the standard library's, an installed
    package's or stress's own): only such a module is imported again in a worker."""
    file = getattr(module, "__file__", None)
    if not isinstance(file, str) or not file.endswith(".py"):
        return False
    installed = {sysconfig.get_paths()[key] for key in ("stdlib", "platstdlib", "purelib", "platlib")}
    path = str(Path(file).resolve())
    harness_dir = str(Path(__file__).resolve().parent)
    return not path.startswith(harness_dir) and not any(path.startswith(str(Path(p).resolve())) for p in installed)


def import_again() -> dict[str, Scenario]:
    """In a forked worker, when a load started threads (`STARTED_AT_IMPORT`): import the user's
    project again from scratch, as the program would in a process of its own, and return the fresh
    scenarios by name ({} when no load started threads).

    Every module of the project the loads imported is dropped from ``sys.modules`` and the loads
    run again in their order, so the module-level threads the code under test counts on run here,
    with fresh module-level state everywhere in the project: a lock copied held by the fork is made
    anew, and an entry the scenario file adds to a helper's registry is added once, not twice. What
    the import did to the standard library or an installed package (a handler added to ``logging``)
    is done twice.

    Raises:
        ScenarioError: importing again failed (the import made a folder that now exists); the first
            import's modules are back in ``sys.modules``.
    """
    global _again
    if not STARTED_AT_IMPORT:
        return {}
    first = {name: sys.modules.pop(name) for name in _PROJECT_MODULES if name in sys.modules}
    _again = True
    try:
        fresh = [s for kind, target in _LOADS for s in (load_target(target) if kind == "file" else load_module(target))]
    except ScenarioError as exc:
        for name in [n for n in sys.modules if n not in first and _in_project(sys.modules[n])]:
            del sys.modules[name]
        sys.modules.update(first)
        raise ScenarioError(
            f"{exc} when imported again in a worker: the import starts threads "
            f"({', '.join(n for names in STARTED_AT_IMPORT.values() for n in names)}), and a fork copies none, "
            "so each worker imports the project again; the import must succeed twice"
        ) from None
    finally:
        _again = False
    return {s.name: s for s in fresh}


#: Where a process started with ``spawn`` or ``forkserver`` (a fresh interpreter) finds the user's
#: scenario files, which are imported under names of stress's own: ``name=path`` entries.
USER_FILES = "STRESS_USER_FILES"


def _remember_for_children(name: str, path: Path) -> None:
    entries = [e for e in os.environ.get(USER_FILES, "").split(os.pathsep) if e]
    entry = f"{name}={path}"
    if entry not in entries:
        os.environ[USER_FILES] = os.pathsep.join([*entries, entry])


class UserFiles(importlib.abc.MetaPathFinder):
    """Finds the user's scenario files under the names stress imported them as, in a process that
    did not import them itself: a process actor started with ``spawn`` unpickles its function by
    module name before anything of stress runs in it."""

    def __init__(self, entries: str) -> None:
        self.files = dict(e.split("=", 1) for e in entries.split(os.pathsep) if "=" in e)

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        file = self.files.get(fullname)
        return importlib.util.spec_from_file_location(fullname, file) if file else None


def install_user_files() -> None:
    """Make the user's scenario files importable here, if this process was started by a worker."""
    entries = os.environ.get(USER_FILES)
    if entries and not any(isinstance(finder, UserFiles) for finder in sys.meta_path):
        sys.meta_path.append(UserFiles(entries))


def _line_in(exc: BaseException, file: Path) -> str:
    """The innermost line of ``file`` in the exception's traceback, as text (``?`` if none)."""
    line = "?"
    for frame in traceback.extract_tb(exc.__traceback__):
        if Path(frame.filename).resolve() == file and frame.lineno is not None:
            line = str(frame.lineno)
    return line


def load_target(target: str) -> list[Scenario]:
    """The scenarios a file target names: all of the file's, or the one after ``::``."""
    file, _, wanted = target.partition("::")
    return _pick(load_file(Path(file)), wanted, file)


def _pick(module: ModuleType, wanted: str, source: str) -> list[Scenario]:
    """All of ``module``'s scenarios, or the one bound to or called ``wanted``."""
    found = scenarios_in(module)
    if not found:
        raise ScenarioNotFound(f"{source} defines no scenario (a module-level harness.Scenario)")
    if not wanted:
        return found
    bound = getattr(module, wanted, None)
    if isinstance(bound, Scenario):
        return [bound]
    for scenario in found:
        if scenario.name == wanted:
            return [scenario]
    names = [s.name for s in found]
    raise ScenarioNotFound(
        f"{source} has no scenario {wanted!r}" + did_you_mean(wanted, names) + f"; it defines: {', '.join(names)}"
    )

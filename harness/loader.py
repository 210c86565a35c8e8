"""Loading scenarios from a user's file.

``stress run path/to/file.py`` runs every scenario the file defines; ``path/to/file.py::name`` picks
one. The file is imported as a module of its own (its folder goes on ``sys.path`` first, so it can
import its neighbours), and any failure while importing it becomes a one-line error naming the file
and line, never a traceback.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
import traceback
from pathlib import Path
from types import ModuleType

from harness.errors import ScenarioError, ScenarioNotFound, did_you_mean
from harness.registry import scenarios_in
from harness.scenario import Scenario

__all__ = ["is_file_target", "load_file", "load_target"]


def is_file_target(target: str) -> bool:
    """Whether a command-line target names a file (``x.py``, ``x.py::name``) rather than a scenario."""
    path = target.split("::", 1)[0]
    return path.endswith(".py") or "/" in path or "::" in target


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
    folder = str(resolved.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
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
    return module


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
    module = load_file(Path(file))
    found = scenarios_in(module)
    if not found:
        raise ScenarioNotFound(f"{file} defines no scenario (a module-level harness.Scenario)")
    if not wanted:
        return found
    for scenario in found:
        if scenario.name == wanted:
            return [scenario]
    names = [s.name for s in found]
    raise ScenarioNotFound(
        f"{file} has no scenario {wanted!r}" + did_you_mean(wanted, names) + f"; it defines: {', '.join(names)}"
    )

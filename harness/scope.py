"""The code under test: which code objects stress perturbs, instruments and reports on.

Forced switches (`harness.perturb.preempt`), instrumented primitives (`harness.detect.instrument`),
the wait-for graph's "where" and controlled mode's scheduling points all look at the same question:
is this frame's code the user's code, or the interpreter's, an installed package's, stress's own?
`Scope` answers it by file name, once per file (the answer is cached, so asking it on every traced
instruction costs a dictionary lookup). `HARNESS_DIR` is how the rest of the harness recognises, and
hides, its own frames.
"""

from __future__ import annotations

import fnmatch
import functools
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from types import FrameType
from typing import Any

__all__ = ["HARNESS_DIR", "Scope", "generated", "installed_package", "resolve_patterns"]

#: The harness package's folder as code objects name its files (``co_filename``: absolute, not
#: resolved), with a trailing separator, for ``startswith`` tests on frames.
HARNESS_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
#: The same folder with symbolic links resolved, for comparing resolved paths.
_HARNESS_RESOLVED = str(Path(__file__).resolve().parent) + os.sep
_ENVIRONMENT = tuple(
    {str(Path(p).resolve()).rstrip(os.sep) + os.sep for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
)
_INSTALLED = (f"{os.sep}site-packages{os.sep}", f"{os.sep}dist-packages{os.sep}")


class Scope:
    """Which code is under test: code objects whose file is one of ``files`` or lies under one of
    ``dirs``, or matches one of ``forced``, and matches none of ``excluded``. The harness's own code
    is never in scope. Decisions are cached per file name.

    Args:
        files: Files in scope (a scenario's own file).
        dirs: Folders in scope (a user's project); the interpreter's files and installed packages
            under them stay out, even when a virtualenv lives inside the project.
        forced: Paths put in scope even when installed (``--scope cachetools``): folders (ending
            in a separator), files, or glob patterns, absolute (see `resolve_patterns`).
        excluded: Paths taken out of scope (``--exclude``), in the same form.
    """

    def __init__(
        self,
        files: Iterable[str] = (),
        dirs: Iterable[str] = (),
        *,
        forced: Iterable[str] = (),
        excluded: Iterable[str] = (),
    ) -> None:
        self.files = frozenset(str(Path(f).resolve()) for f in files)
        self.dirs = tuple(str(Path(d).resolve()).rstrip(os.sep) + os.sep for d in dirs)
        self.forced = tuple(forced)
        self.excluded = tuple(excluded)
        self._decided: dict[str, bool] = {}

    def __repr__(self) -> str:
        return (
            f"Scope(files={sorted(self.files)}, dirs={list(self.dirs)}, forced={self.forced}, excluded={self.excluded})"
        )

    def to_dict(self) -> dict[str, list[str]]:
        """The scope as a run records it (``summary.json``) and a child process rebuilds it."""
        return {
            "files": sorted(self.files),
            "dirs": list(self.dirs),
            "forced": list(self.forced),
            "excluded": list(self.excluded),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Scope:
        return cls(
            data.get("files", ()),
            data.get("dirs", ()),
            forced=data.get("forced", ()),
            excluded=data.get("excluded", ()),
        )

    def contains_file(self, filename: str) -> bool:
        """Whether code from ``filename`` (a ``co_filename``) is under test."""
        decided = self._decided.get(filename)
        if decided is None:
            decided = self._decided[filename] = self._decide(filename)
        return decided

    def contains_frame(self, frame: FrameType) -> bool:
        """Whether the code ``frame`` runs is under test. Code generated at run time — ``exec``,
        ``eval``, ``compile`` of text, whose file name is ``<string>`` or any name not on disk —
        belongs to the code that runs it: it is in scope when the nearest caller with a file on
        disk is."""
        filename = frame.f_code.co_filename
        if self.contains_file(filename):
            return True
        if not generated(filename):
            return False
        caller = frame.f_back
        while caller is not None and generated(caller.f_code.co_filename):
            caller = caller.f_back
        return caller is not None and self.contains_file(caller.f_code.co_filename)

    def decide_all(self, filenames: Iterable[object]) -> None:
        """Decide now for every file of ``filenames`` (non-strings are skipped): a process forked
        afterwards inherits the answers instead of resolving hundreds of paths in its first trial."""
        for filename in filenames:
            if isinstance(filename, str):
                self.contains_file(filename)

    def _decide(self, filename: str) -> bool:
        if filename.startswith("<"):
            return False
        path = _resolved(filename)
        if path.startswith(_HARNESS_RESOLVED):
            return False
        if self.excluded and _matches(path, self.excluded):
            return False
        if path in self.files:
            return True
        if self.forced and _matches(path, self.forced):
            return True
        return (
            path.startswith(self.dirs) and not path.startswith(_ENVIRONMENT) and not any(i in path for i in _INSTALLED)
        )


def _matches(path: str, patterns: tuple[str, ...]) -> bool:
    for pattern in patterns:
        if any(c in pattern for c in "*?["):
            if fnmatch.fnmatch(path, pattern):
                return True
        elif path == pattern or (pattern.endswith(os.sep) and path.startswith(pattern)):
            return True
    return False


def resolve_patterns(patterns: Iterable[str], *, flag: str, base: Path | None = None) -> tuple[str, ...]:
    """``--scope``/``--exclude`` patterns as absolute paths a `Scope` matches: a module or package
    name (``cachetools``, ``myapp.cache``) becomes its file or folder, found the way ``import``
    would find it; a path (``src/legacy``, ``*/generated/*.py``) is taken relative to ``base``
    (the current folder). Raises `UserError` for a name that is neither."""
    import importlib.util

    from harness.errors import UserError

    base = base or Path.cwd()
    out: list[str] = []
    for raw in patterns:
        pattern = str(raw).strip()
        if not pattern:
            continue
        if any(c in pattern for c in "*?["):
            out.append(pattern if os.path.isabs(pattern) else str(base / pattern))
            continue
        path = Path(pattern) if os.path.isabs(pattern) else base / pattern
        if os.sep in pattern or pattern.endswith(".py") or (path.exists() and not pattern.isidentifier()):
            if not path.exists():
                raise UserError(f"{flag} {pattern}: no such file or folder")
            resolved = path.resolve()
            out.append(str(resolved) + os.sep if resolved.is_dir() else str(resolved))
            continue
        try:
            spec = importlib.util.find_spec(pattern)
        except (ImportError, ValueError):
            spec = None
        if spec is None:
            raise UserError(f"{flag} {pattern}: no module, package, file or folder of that name")
        if spec.submodule_search_locations:
            out.extend(str(Path(p).resolve()) + os.sep for p in spec.submodule_search_locations)
        elif spec.origin and os.path.isfile(spec.origin):
            out.append(str(Path(spec.origin).resolve()))
        else:
            raise UserError(f"{flag} {pattern}: a built-in module, with no Python code to schedule")
    return tuple(dict.fromkeys(out))


def installed_package(filename: str) -> str | None:
    """The top-level name of the installed package ``filename`` belongs to (None: not installed)."""
    for marker in _INSTALLED:
        _, sep, rest = filename.partition(marker)
        if sep:
            first = rest.split(os.sep, 1)[0]
            return first[:-3] if first.endswith(".py") else first
    return None


@functools.lru_cache(maxsize=4096)
def generated(filename: str) -> bool:
    """Whether ``filename`` (a ``co_filename``) names no file: code compiled from a string at run
    time (``<string>``, ``<generated>``, a template's name). The interpreter's frozen modules are
    not generated code."""
    if filename.startswith("<frozen "):
        return False
    return filename.startswith("<") or not os.path.isfile(filename)


@functools.lru_cache(maxsize=8192)
def _resolved(filename: str) -> str:
    """A code object's file name, resolved (cached: scopes are made often, files rarely move)."""
    return str(Path(filename).resolve())

"""The code under test: which code objects stress perturbs, instruments and reports on.

Forced switches (`harness.perturb.preempt`), instrumented primitives (`harness.detect.instrument`),
the wait-for graph's "where" and controlled mode's scheduling points all look at the same question:
is this frame's code the user's code, or the interpreter's, an installed package's, stress's own?
`Scope` answers it by file name, once per file (the answer is cached, so asking it on every traced
instruction costs a dictionary lookup). `HARNESS_DIR` is how the rest of the harness recognises, and
hides, its own frames.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Iterable
from pathlib import Path

__all__ = ["HARNESS_DIR", "Scope"]

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
    ``dirs``. The harness's own code is never in scope. Decisions are cached per file name.

    Args:
        files: Files in scope (a scenario's own file).
        dirs: Folders in scope (a user's project); the interpreter's files and installed packages
            under them stay out, even when a virtualenv lives inside the project.
    """

    def __init__(self, files: Iterable[str] = (), dirs: Iterable[str] = ()) -> None:
        self.files = frozenset(str(Path(f).resolve()) for f in files)
        self.dirs = tuple(str(Path(d).resolve()).rstrip(os.sep) + os.sep for d in dirs)
        self._decided: dict[str, bool] = {}

    def __repr__(self) -> str:
        return f"Scope(files={sorted(self.files)}, dirs={list(self.dirs)})"

    def contains_file(self, filename: str) -> bool:
        """Whether code from ``filename`` (a ``co_filename``) is under test."""
        decided = self._decided.get(filename)
        if decided is None:
            decided = self._decided[filename] = self._decide(filename)
        return decided

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
        if path in self.files:
            return True
        return (
            path.startswith(self.dirs) and not path.startswith(_ENVIRONMENT) and not any(i in path for i in _INSTALLED)
        )


@functools.lru_cache(maxsize=8192)
def _resolved(filename: str) -> str:
    """A code object's file name, resolved (cached: scopes are made often, files rarely move)."""
    return str(Path(filename).resolve())

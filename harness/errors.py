"""Errors that `stress` raises, split by whose fault they are.

Everything derives from `StressError`. `UserError` and its subclasses mean the input was wrong (a
flag, a config value, a scenario name, a scenario declaration): the CLI prints their one-line message
and exits with 2. `InternalError` means the harness itself misbehaved; its message says so and asks
for a report, and the CLI exits with 3.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "ConfigError",
    "InternalError",
    "OutputError",
    "ScenarioError",
    "ScenarioNotFound",
    "StressError",
    "Terminated",
    "UserError",
    "did_you_mean",
]


class StressError(Exception):
    """Root of every error `stress` raises on purpose."""


class UserError(StressError):
    """The input was wrong; the message says which value, where it came from, and the fix."""


class ConfigError(UserError):
    """A run setting (flag, environment, `[tool.stress]`, scenario default) has a bad value."""


class ScenarioNotFound(UserError):
    """A scenario or variant name matches nothing that is registered."""


class ScenarioError(UserError):
    """A scenario is declared wrongly (duplicate variant, bad `expect` tag, bad size, ...)."""


class OutputError(UserError):
    """A file or folder stress writes to cannot be written (a full disk, a read-only folder)."""

    def __init__(self, path: object, exc: OSError) -> None:
        reason = exc.strerror or str(exc)
        super().__init__(f"cannot write {str(path)!r}: {reason}")
        self.path = path
        self.reason = reason


class InternalError(StressError):
    """A bug in stress itself, never the user's fault."""

    def __init__(self, message: str) -> None:
        super().__init__(f"{message} (this is a bug in stress, please report it)")


class Terminated(BaseException):
    """SIGTERM (what a CI job's timeout sends), raised where Python would raise `KeyboardInterrupt`
    for Ctrl-C: not an `Exception`, so no ``except Exception`` in the way swallows it."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest choice, or ``""`` when none is close."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""

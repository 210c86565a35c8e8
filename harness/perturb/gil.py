"""The GIL of the interpreter stress runs on, and a run's choice of it (``--gil on|off``).

CPython 3.13 can be built without the GIL (``./configure --disable-gil``: ``python3.13t``; the
project's ``.ci/freethreaded`` builds one). On such a build the GIL is off unless asked for
(``PYTHON_GIL=1`` or ``-X gil=1``, PEP 703), and a running interpreter cannot switch it off again.
So a run that asks for the setting its interpreter does not have starts over as a fresh interpreter
that has it (`ensure`); its workers, forked from that one, have it too, and so do the processes its
trials start (they inherit ``PYTHON_GIL``). On a build with a GIL, asking for none is an error.
"""

from __future__ import annotations

import os
import platform
import sys
import sysconfig
from collections.abc import Sequence

from harness.errors import UserError

__all__ = ["FREE_THREADED", "describe", "enabled", "ensure", "require_free_threaded"]

#: Whether this interpreter was built without the GIL (``Py_GIL_DISABLED``).
FREE_THREADED = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))

#: Set in the environment of the interpreter `ensure` starts: if it still has the other setting (a
#: module it imports turned the GIL back on), stress stops instead of starting itself again.
_RESTARTED = "STRESS_GIL_RESTARTED"


def enabled() -> bool:
    """Whether the GIL is on in this process (always, on a build with one)."""
    check = getattr(sys, "_is_gil_enabled", None)
    return True if check is None else bool(check())


def describe() -> str:
    """``CPython 3.13.5, free-threaded, GIL off``: the build and the GIL's state, for reports."""
    build = "free-threaded" if FREE_THREADED else "with the GIL"
    state = f", GIL {'on' if enabled() else 'off'}" if FREE_THREADED else ""
    return f"{platform.python_implementation()} {platform.python_version()}, {build}{state}"


def require_free_threaded(what: str) -> None:
    """Raise `UserError` naming this build unless it is free-threaded: ``what`` (``--gil off``,
    ``--sweep gil=on,off``) needs one."""
    if not FREE_THREADED:
        raise UserError(
            f"{what} needs a free-threaded build of CPython (3.13t, built with --disable-gil); "
            f"this is {describe()} ({sys.executable}): .ci/freethreaded builds one"
        )


def ensure(wanted: str | None, argv: Sequence[str]) -> None:
    """Make this process's GIL ``wanted`` (``on``, ``off``; None: as it is) before a run starts.

    Returns when it already is. On a free-threaded build that has the other setting, replaces the
    process (`os.execve`) with ``python -X gil=N -m harness ARGV``: this never returns.

    Raises:
        UserError: ``off`` on a build with a GIL (naming the build), or a restarted interpreter
            that still has the other setting.
    """
    if wanted is None:
        return
    want_on = wanted == "on"
    if not FREE_THREADED:
        if not want_on:
            require_free_threaded("--gil off")
        return
    if enabled() == want_on:
        return
    if os.environ.get(_RESTARTED):
        raise UserError(
            f"--gil {wanted}: started again with PYTHON_GIL={int(want_on)}, the GIL is still "
            f"{'off' if want_on else 'on'} (a module imported at start-up switched it?)"
        )
    env = {**os.environ, "PYTHON_GIL": str(int(want_on)), _RESTARTED: "1"}
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os.execve(sys.executable, [sys.executable, "-X", f"gil={int(want_on)}", "-m", "harness", *argv], env)

"""The ``stress`` command's entry point (``python -m harness`` too).

The console script starts here rather than in `harness.cli`: importing the CLI (click, rich, the
engine) can take seconds on a loaded machine, and a Ctrl-C or a SIGTERM meanwhile must end stress
with one line and its exit code — 130 or 143, as a shell reports a process stopped by that signal —
not a traceback from whichever import it interrupted.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from types import FrameType

from harness.errors import Terminated

__all__ = ["entry"]

EXIT_INTERRUPTED, EXIT_TERMINATED = 130, 143


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise Terminated


_noted: list[int] = []


def _note(signum: int, frame: FrameType | None) -> None:
    _noted.append(signum)


def entry() -> None:
    """Run ``stress`` and exit with its code."""
    # While the CLI is imported a signal is only noted: raised there, it can land in a finaliser
    # (a ``__del__``, a weakref callback), where Python prints it and goes on importing.
    previous = {sig: signal.signal(sig, _note) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        from harness.cli import main

        signal.signal(signal.SIGINT, previous[signal.SIGINT])
        signal.signal(signal.SIGTERM, _terminate)
        if _noted:
            raise Terminated if _noted[0] == signal.SIGTERM else KeyboardInterrupt
        code = main()
    except KeyboardInterrupt:
        code = _stopped("interrupted", EXIT_INTERRUPTED)
    except Terminated:
        code = _stopped("terminated (SIGTERM)", EXIT_TERMINATED)
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        # A module of the code under test started a thread that never ends (a server, at import):
        # its program would wait for it at exit; stress, done, does not.
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        os._exit(code if isinstance(code, int) else 1)
    sys.exit(code)


def _stopped(what: str, code: int) -> int:
    try:
        sys.stderr.write(f"stress: {what}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    return code


if __name__ == "__main__":
    entry()

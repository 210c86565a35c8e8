"""Deadlocks found anywhere in a trial's process tree, shared through one file.

A process a trial forks — a plain ``multiprocessing.Process`` of the code under test, a ``Pool``
worker — inherits the trial's instrumented primitives and gets a wait-for graph of its own
(`harness.detect.primitives`). When that graph finds a deadlock, the child cannot tell the trial
through a return value: it may be joined, asserted on, or forgotten by code that knows nothing of
stress. So it appends its finding to a file every process of the trial shares (an unlinked temporary
file, opened for appending before the worker forked anything), and the trial reads it: a deadlock in
any process is the trial's outcome and headline, and what the parent does about the child afterwards
(an assertion on its exit code, say) is a consequence, not a second finding.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile

__all__ = ["Findings"]


#: Processes this process has forked (``os.fork``, multiprocessing): a trial that forked none has
#: no finding of its own to read, and its trial pays no system call for it.
_forks = 0


def _count_fork() -> None:
    global _forks
    _forks += 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_parent=_count_fork)


class Findings:
    """The findings file of one worker: `reset` before each trial, `report` from any process."""

    def __init__(self, folder: str | None = None) -> None:
        self._file = tempfile.TemporaryFile(prefix="stress-findings-", dir=folder)  # noqa: SIM115 (lives with the worker)
        self.fd = self._file.fileno()
        # O_APPEND: each write lands whole at the end, whichever process makes it.
        fcntl.fcntl(self.fd, fcntl.F_SETFL, fcntl.fcntl(self.fd, fcntl.F_GETFL) | os.O_APPEND)
        #: Which trial the file is for now; a process forked during a trial keeps that trial's number,
        #: so a report that comes late (from a process of an earlier trial) is never this trial's.
        self.generation = 0
        self._forks = -1

    def reset(self) -> None:
        """Empty the file for a new trial."""
        self.generation += 1
        self._forks = _forks
        if os.fstat(self.fd).st_size:
            os.ftruncate(self.fd, 0)

    def report(self, where: str, summary: str, lines: list[str]) -> None:
        """Record a deadlock found in process ``where``: one line, written in one call, so that
        reports from several processes never interleave."""
        record = {"trial": self.generation, "where": where, "summary": summary, "lines": lines}
        line = json.dumps(record, ensure_ascii=False) + "\n"
        # On failure the trial still ends by itself: the child's own exit tells the rest.
        with contextlib.suppress(OSError):
            os.write(self.fd, line.encode("utf-8", "backslashreplace"))

    def any(self) -> bool:
        """Whether some process of the trial has reported a deadlock."""
        if _forks == self._forks:
            return False
        try:
            empty = os.fstat(self.fd).st_size == 0
        except OSError:
            return False
        return not empty and bool(self.read())

    def read(self) -> list[tuple[str, list[str]]]:
        """Every reported deadlock: (summary, lines), in the order reported."""
        if _forks == self._forks:
            return []
        try:
            size = os.fstat(self.fd).st_size
            data = os.pread(self.fd, size, 0) if size else b""
        except OSError:
            return []
        found = []
        for line in data.decode("utf-8", "replace").splitlines():
            try:
                record = json.loads(line)
                if record["trial"] == self.generation:
                    found.append((str(record["summary"]), [str(x) for x in record["lines"]]))
            except (ValueError, KeyError, TypeError):
                continue
        return found

    def close(self) -> None:
        self._file.close()

"""The run folder: where results land as they arrive.

A run folder holds ``run.json`` (what was asked: written before the first trial), ``results.jsonl``
(one line per finished trial, appended as trials finish and flushed at least every
`FLUSH_INTERVAL`), and ``summary.json`` (written when the run ends). Everything a report shows can be
recomputed from ``run.json`` and ``results.jsonl`` alone, so a run that was interrupted or killed can
still be rendered.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from harness.errors import ConfigError, OutputError
from harness.results.outcome import TrialResult

__all__ = ["FLUSH_INTERVAL", "ResultsWriter", "make_run_dir", "read_results", "write_json", "write_text"]

FLUSH_INTERVAL = 0.05
RESULTS = "results.jsonl"
RUN = "run.json"
SUMMARY = "summary.json"


def make_run_dir(base: Path, run_id: str, *, exact: bool) -> Path:
    """Create the run folder. ``exact``: use ``base`` itself (``--out``); else ``base/run_id``,
    with a numeric suffix if a run of that id exists already."""
    target = base if exact else base / run_id
    if exact and target.exists() and not target.is_dir():
        raise ConfigError(f"--out {str(target)!r} is a file, not a folder; name a folder (new or empty)")
    if not exact:
        suffix = 1
        while target.exists():
            suffix += 1
            target = base / f"{run_id}-{suffix}"
    try:
        target.mkdir(parents=True, exist_ok=exact)
        probe = target / ".stress-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(
            f"output folder {str(target)!r} is not writable ({exc.strerror or exc}); choose another with --out"
        ) from None
    if exact and (target / RESULTS).exists():
        raise ConfigError(f"output folder {str(target)!r} already holds a run; choose an empty folder with --out")
    return target


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as JSON, atomically (see `write_text`)."""
    write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def write_text(path: Path, text: str) -> None:
    """Write atomically: a reader never sees half a file, and a full disk leaves no truncated one.

    Raises:
        OutputError: The file cannot be written (a full disk, say); the old file, if any, is intact.
    """
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise OutputError(path, exc) from None


class ResultsWriter:
    """Appends trial results to ``results.jsonl``; flushes to the OS at least every interval.

    Every line in the file is whole, whatever happens: when a write fails (a full disk), the part of
    a line that made it is cut off again, and `OutputError` is raised. Lines not yet written stay
    queued; nothing else is lost.
    """

    def __init__(self, run_dir: Path, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = run_dir / RESULTS
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise OutputError(self.path, exc) from None
        self._size = os.fstat(self._fd).st_size
        self._pending = bytearray()
        self._clock = clock
        self._last_flush = clock()

    def fileno(self) -> int:
        return self._fd

    def write(self, result: TrialResult) -> None:
        """Queue ``result``'s line; flush if it is time. Raises `OutputError` (see the class)."""
        line = result.to_json() + "\n"
        self._pending += line.encode("utf-8")
        self.tick()

    def tick(self) -> None:
        """Flush if the last flush is older than `FLUSH_INTERVAL`; call this often."""
        now = self._clock()
        if now - self._last_flush >= FLUSH_INTERVAL:
            self.flush(now)

    def flush(self, now: float | None = None) -> None:
        self._last_flush = self._clock() if now is None else now
        if not self._pending:
            return
        data = bytes(self._pending)
        written = 0
        try:
            while written < len(data):
                written += os.write(self._fd, data[written:])
        except OSError as exc:
            whole = data.rfind(b"\n", 0, written) + 1  # the lines that made it whole
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._size + whole)
            self._size += whole
            del self._pending[:whole]
            raise OutputError(self.path, exc) from None
        self._size += written
        self._pending.clear()

    def close(self) -> None:
        """Flush what is queued (raising `OutputError` if it cannot be) and close the file."""
        if self._fd < 0:
            return
        try:
            self.flush()
        finally:
            os.close(self._fd)
            self._fd = -1


def read_results(run_dir: Path) -> Iterator[TrialResult]:
    """Every complete line of ``results.jsonl``; a torn last line (a killed run) is skipped."""
    path = run_dir / RESULTS
    with path.open(encoding="utf-8") as file:
        for line in file:
            if not line.endswith("\n"):
                break
            try:
                yield TrialResult.from_dict(json.loads(line))
            except (ValueError, KeyError, TypeError):
                continue

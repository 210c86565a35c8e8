"""``--sweep gil=on,off``: the same trials with the GIL on and with it off, in one run and one report.

A running interpreter cannot switch its GIL (PEP 703: ``PYTHON_GIL`` and ``-X gil`` are read at
start-up), and a run's workers are forked from the process that runs it. So each setting of the
sweep is run by a fresh interpreter of its own, started with ``-X gil=1`` or ``-X gil=0``: the
*side* of that setting. A side is ``stress run`` again with the same arguments and the parent's
settings (passed in `SIDE_ENV`, the run seed included), writing its run folder inside the parent's
(``gil-on/``, ``gil-off/``) and printing nothing. The sides run one after the other, each with all the
workers; the parent reads each side's ``results.jsonl`` as it grows, marks every trial with its
setting (the swept value: 1.0 on, 0.0 off) and records it in its own run folder, so the progress
display, ``results.jsonl``, ``summary.json`` and every report are those of one sweep. A replay line
of a trial names its side's setting (``--gil off``).

The parent forwards a Ctrl-C or SIGTERM to the side running (which ends its trials in flight and
writes what ran) and starts no other; a side whose parent dies is sent SIGTERM by the kernel.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from harness.config import RunConfig
from harness.errors import OutputError, Terminated, UserError
from harness.results.outcome import TrialResult
from harness.results.reload import ran_atomically
from harness.results.run_dir import RESULTS, RUN, SUMMARY, ResultsWriter, write_json
from harness.results.stats import VariantStats
from harness.results.summary import RunReport, ranked
from harness.scenario import Variant
from harness.scope import Scope

__all__ = ["SIDE_ENV", "Side", "run", "side"]

#: The environment variable that makes ``stress run`` one side of a GIL sweep: JSON with the
#: side's setting (``gil``), its run folder (``out``) and the parent's settings (``config``).
SIDE_ENV = "STRESS_GIL_SIDE"
#: Seconds between reads of the running side's results.
POLL = 0.05
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class Side:
    """What a side of a GIL sweep is told by its parent."""

    gil: str
    out: Path
    config: RunConfig


def side() -> Side | None:
    """This process's part in a GIL sweep, when it is a side (the variable is taken out of the
    environment, so the trials' own processes do not see it); None otherwise. A side ends when
    its parent does (SIGTERM from the kernel, which the run takes as a stop)."""
    text = os.environ.pop(SIDE_ENV, None)
    if text is None:
        return None
    data = json.loads(text)
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    config = replace(RunConfig.from_dict(data["config"]), sweep=None, gil=str(data["gil"]))
    return Side(gil=config.gil or "on", out=Path(data["out"]), config=config)


class _Tail:
    """The complete lines a side has appended to its ``results.jsonl`` since the last read."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""

    def read(self) -> list[TrialResult]:
        try:
            with self.path.open("rb") as file:
                file.seek(self._offset)
                data = file.read()
        except FileNotFoundError:
            return []  # the side has not made its run folder yet
        self._offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        return [TrialResult.from_dict(json.loads(line)) for line in lines if line.strip()]


def run(
    variants: Sequence[Variant],
    config: RunConfig,
    *,
    argv: Sequence[str],
    reports: Path = Path("reports"),
    out: Path | None = None,
    observer: Any = None,
    scope: Scope,
    command: str,
    targets: dict[str, str],
    noted_signal: Callable[[], int | None] = lambda: None,
) -> RunReport:
    """Run ``variants`` once per setting of ``config.sweep`` (the GIL on, off), each setting in an
    interpreter of its own running ``python -X gil=N -m harness ARGV``, and report them as one run.

    Args:
        argv: The ``stress`` command's arguments, for the sides (they select the same variants).
        observer: Told of the run as it goes (`harness.engine.driver.RunObserver`).
        noted_signal: The signal (SIGINT, SIGTERM) the caller's handler noted since the run began,
            if any: it is passed on to the side running, and no other side starts.

    Raises:
        UserError: A side could not run (its own error is printed above, on standard error).
        OutputError: The run folder cannot be made.
    """
    import datetime as _dt

    from harness.engine.driver import _NoObserver, open_run

    assert config.sweep is not None
    observer = observer or _NoObserver()
    info = open_run(
        variants,
        config,
        reports=reports,
        out=out,
        scope=scope,
        command=command,
        targets=targets,
        started=_dt.datetime.now(_dt.UTC),
    )
    write_json(info.run_dir / RUN, info.to_dict())
    writer = ResultsWriter(info.run_dir)
    stats = {v.key: VariantStats(v.key, v.expect, v.description) for v in variants}
    start = time.monotonic()
    observer.started(info)
    done = 0
    stopped_by: str | None = None
    output_error: str | None = None
    atomic: set[str] = set()
    process: subprocess.Popen[bytes] | None = None
    try:
        for index, value in enumerate(config.sweep.values):
            if stopped_by is not None or output_error is not None:
                break
            label = config.sweep.label(value)
            folder = info.run_dir / f"gil-{label}"
            spec = {"gil": label, "out": str(folder), "config": config.to_dict()}
            env = {**os.environ, SIDE_ENV: json.dumps(spec), "PYTHON_GIL": str(int(bool(value)))}
            env["STRESS_GIL_RESTARTED"] = "1"  # the side says so if an import turned the GIL back on
            process = subprocess.Popen(
                [sys.executable, "-X", f"gil={int(bool(value))}", "-m", "harness", *argv],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                process_group=0,  # a Ctrl-C at the terminal reaches the parent, which passes it on
            )
            tail = _Tail(folder / RESULTS)
            forwarded = 0
            while True:
                ended = process.poll() is not None
                for result in tail.read():
                    result = replace(result, sweep=value, seq=index * config.iterations + result.seq)
                    if output_error is None:
                        try:
                            writer.write(result)
                        except OutputError as exc:
                            output_error = str(exc)
                    stats[result.variant].add(result)
                    done += 1
                    observer.result(result, stats[result.variant])
                observer.tick()
                if ended:
                    break
                signum = noted_signal()
                if output_error is not None and signum is None:
                    signum = signal.SIGTERM
                if signum is not None and forwarded < 1:
                    stopped_by = stopped_by or signal.Signals(signum).name
                    process.send_signal(signum)  # the side ends its trials in flight, writes what ran
                    forwarded += 1
                try:
                    process.wait(POLL)
                except subprocess.TimeoutExpired:
                    pass
                except (KeyboardInterrupt, Terminated) as exc:
                    # A second signal: the side stops at once too; what it wrote is still read.
                    again = signal.SIGTERM if isinstance(exc, Terminated) else signal.SIGINT
                    stopped_by = stopped_by or again.name
                    process.send_signal(again)
                    forwarded = 2
            if process.returncode not in (0, 1, 130, 143, -signal.SIGTERM, -signal.SIGINT):
                ran = f"; what ran is in {folder}" if (folder / RESULTS).exists() else ""
                raise UserError(
                    f"the run with the GIL {label} ended with exit status {process.returncode} "
                    f"(its error is above){ran}"
                )
            atomic.update(ran_atomically(folder))
    except BaseException:
        # stress's own failure here: the side does not run on without its parent.
        if process is not None and process.poll() is None:
            with contextlib.suppress(OSError):
                process.kill()
                process.wait()
        raise
    finally:
        with contextlib.suppress(OutputError):
            writer.close()
    report = RunReport(
        info=info,
        variants=ranked([s.summary() for s in stats.values()]),
        finished=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        wall=time.monotonic() - start,
        trials=done,
        complete=done == info.total_trials,
        interrupted=stopped_by is not None,
        stopped_by=stopped_by,
        output_error=output_error,
        atomic=tuple(sorted(atomic)),
    )
    with contextlib.suppress(OutputError):
        write_json(info.run_dir / SUMMARY, report.to_dict())
    observer.finished(report)
    return report

"""Forced thread switches inside the code under test.

Since CPython 3.10 a thread only gives up the GIL at a few kinds of instruction (backward jumps,
calls), so a read-modify-write such as ``box[0] += 1`` is never interrupted between its read and its
write, however small the switch interval: plain repetition finds nothing. The `Preemptor` makes the
interpreter stop at individual bytecode instructions of the code under test and, with a small
probability at each, yields the GIL (``time.sleep``), which is what exposes such races.

Two mechanisms, one per interpreter, never both in one process (mixing them loses events on 3.12
and 3.13):

* 3.12+: `sys.monitoring`. ``PY_START`` finds each code object once; the ones in `Scope` get local
  ``LINE`` events (``INSTRUCTION`` events in the code where the countdown is about to run out, and
  in controlled mode), every other code location is disabled, so code outside the scope runs at
  full speed.
* 3.11: `sys.settrace` in each actor thread, for frames whose code is in scope. A trace event is a
  Python call, so the countdown goes down a line at a time (each line event takes the number of
  instructions the line runs before it ends or jumps); instruction events are turned on
  (``f_trace_opcodes``) only for the line where the countdown runs out.

Switch points are spaced by a geometric countdown rather than a coin flip per instruction, so the
per-instruction cost is one decrement. A forced switch is `harness.perturb.pause.switch`.
"""

from __future__ import annotations

import dis
import random
import sys
import sysconfig
import threading
from collections.abc import Callable
from types import CodeType, FrameType
from typing import Any

from harness.perturb.pause import gaps, switch
from harness.scope import Scope, generated, installed_package

__all__ = ["HAS_MONITORING", "Preemptor", "active", "current_tracer", "resume", "suspend"]

# Typed loosely: mypy checks against 3.11, which has no _monitoring.
_monitoring: Any = getattr(sys, "monitoring", None)
HAS_MONITORING = _monitoring is not None
#: A free-threaded build (3.13t): there, turning a code object's monitoring events on or off stops
#: every thread of the process until each has paused, waiting for running ones in 1 ms steps.
_STOPS_THE_WORLD = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
_TOOL_NAME = "stress"


_active: Preemptor | None = None

#: 3.11: the trace function a stress-mode `Preemptor.start` set for the running trial (None when
#: none is). Under ``sys.settrace`` CPython 3.11 runs every instruction of a traced thread through
#: its tracing path, unspecialised, called frame or not: stress's own code three times slower.
#: The instrumented primitives suspend this tracer while their own code runs on behalf of the code
#: under test (`harness.detect.primitives`); no switch is ever forced there.
current_tracer: Callable[[FrameType, str, Any], Any] | None = None


def suspend() -> Any:
    """3.11: take `current_tracer` off the calling thread while stress's own code runs there on
    behalf of the code under test. Returns what `resume` puts back: None when the thread had no
    such tracer (3.12+, no preemption, or another tool's tracer, which is left alone)."""
    trace = sys.gettrace()
    if trace is None or trace is not current_tracer:
        return None
    sys.settrace(None)
    return trace


def resume(trace: Any) -> None:
    """Put back what `suspend` took off, unless the trial is over meanwhile (a thread a trial left
    behind does not go on counting toward the next trial's switches)."""
    if trace is not None and trace is current_tracer:
        sys.settrace(trace)


def active() -> Preemptor | None:
    """The preemptor forcing switches in this process now, if any (a forked process actor takes
    over its worker's, rather than stacking a second one on it)."""
    return _active


#: Instructions after which the next one is not the one that follows (a line's run ends there).
_TRANSFERS = frozenset(
    {"JUMP_FORWARD", "JUMP_BACKWARD", "JUMP_BACKWARD_NO_INTERRUPT", "RETURN_VALUE", "RAISE_VARARGS", "RERAISE"}
)


class _Runs(dict[int, int]):
    """For one code object: offset of an instruction -> how many instructions run from there, in
    order, before the line changes or control jumps (what a ``line`` trace event at that offset
    is followed by). Computed on first use of each offset."""

    def __init__(self, code: CodeType) -> None:
        super().__init__()
        self._code: list[tuple[int, int | None, str]] = [
            (i.offset, i.positions.lineno if i.positions else None, i.opname) for i in dis.get_instructions(code)
        ]
        self._index = {offset: n for n, (offset, _, _) in enumerate(self._code)}

    def __missing__(self, offset: int) -> int:
        start = self._index.get(offset)
        count = 1
        if start is not None:
            line = self._code[start][1]
            previous = self._code[start][2]
            for _, other, name in self._code[start + 1 :]:
                if previous in _TRANSFERS or (other is not None and other != line):
                    break
                count += 1
                previous = name
        self[offset] = count
        return count


#: 3.12+: a countdown this short keeps instruction events on after a switch (a line rarely runs more
#: instructions): two switches close together both land on their instructions.
_ARMED_RUN = 32


def _line_runs(code: CodeType) -> dict[int, int]:
    """For one code object: line -> how many instructions a LINE event there is followed by. A
    line entered at more than one place (a loop's header: its set-up once, its ``FOR_ITER`` at
    every turn) takes its shortest run: the countdown then errs toward a switch a little later,
    never toward more switches than asked."""
    runs = _Runs(code)
    counts: dict[int, int] = {}
    previous: int | None = None
    for offset, line, _ in runs._code:
        if line is not None and line != previous:
            counts[line] = min(counts.get(line, runs[offset]), runs[offset])
        previous = line if line is not None else previous
    return counts


#: A countdown that does not run out within a trial.
_NEVER = sys.maxsize


def _never() -> int:
    return _NEVER


class Preemptor:
    """Injects forced thread switches into in-scope code during a trial.

    Per trial: `start` before the variant runs, `stop` after its actors are joined. One countdown is
    shared by all threads, so switches land wherever in-scope code is running.
    """

    def __init__(self, scope: Scope, *, backend: str | None = None) -> None:
        self.scope = scope
        self.backend = backend or ("monitoring" if HAS_MONITORING else "settrace")
        if self.backend == "monitoring" and not HAS_MONITORING:
            raise ValueError("sys.monitoring needs Python 3.12 or newer")
        self._active = False
        self._tool: int | None = None
        self._instrumented: set[CodeType] = set()
        #: 3.12+, stress mode: code objects with INSTRUCTION events on, the countdown about to end
        #: (by id: each is also held by `_instrumented`).
        self._armed: dict[int, CodeType] = {}
        #: 3.12+, stress mode: instructions each line runs, per in-scope code object's id.
        self._line_runs: dict[int, dict[int, int]] = {}
        #: Free-threaded build: each in-scope code object's events are set once and kept between
        #: trials (by id: each is also held by `_instrumented`); the callbacks do nothing while no
        #: trial runs. In stress mode that is every instruction, counted off one by one, instead
        #: of lines with the instructions of the line where the countdown ends turned on in the
        #: middle of a trial: same switch points, more callbacks, no thread ever stopped.
        self._steady: dict[int, int] | None = {} if _STOPS_THE_WORLD else None
        #: 3.11: whether each code object seen is in scope, by ``id`` (a code object's hash is
        #: computed afresh at each lookup, from its bytecode and constants; generated code is
        #: decided per call, and held by `_generated`). `_kept` holds the others, so that no id is
        #: reused meanwhile.
        self._decided: dict[int, bool] = {}
        self._kept: list[CodeType] = []
        self._generated: set[CodeType] = set()
        #: 3.11, stress mode: each in-scope code object's tracer (see `_make_tracer`).
        self._runs: dict[int, Callable[[FrameType, str, Any], Any]] = {}
        self._switches = 0
        self._countdown = 0
        self._gap: Callable[[], int] = lambda: 1
        self._pause = 0.0
        #: Controlled mode: called at every event instead of the random countdown.
        self._callback: Callable[[CodeType, int], None] | None = None
        self._lines = False
        #: Installed packages the code under test called while switches were being forced: their
        #: code ran with no switch inside it (one step, in controlled mode).
        self.atomic: set[str] = set()

    def _note_atomic(self, filename: str, caller: FrameType | None) -> None:
        package = installed_package(filename)
        if package is None or package in self.atomic or caller is None:
            return
        if self.scope.contains_frame(caller):
            self.atomic.add(package)

    @property
    def active(self) -> bool:
        return self._active

    @property
    def switches(self) -> int:
        """Switches forced since the last `start`."""
        return self._switches

    def start(self, probability: float, *, pause: float = 0.0, seed: int = 0) -> None:
        """Begin forcing switches, in every thread, for code in scope (no-op at probability 0)."""
        global _active, current_tracer
        self._switches = 0
        self._active = probability > 0
        if not self._active:
            return
        _active = self
        self._gap = gaps(probability, random.Random(seed))
        self._countdown = self._gap()
        self._pause = pause
        if self.backend == "monitoring":
            self._monitoring_on()
        else:
            current_tracer = self._make_tracer()
            threading.settrace(current_tracer)  # threads started from now on (the actors)
            sys.settrace(current_tracer)  # and the thread running the variant body

    def start_controlled(self, callback: Callable[[CodeType, int], None], *, granularity: str = "opcode") -> None:
        """Call ``callback(code, offset)`` at every instruction of code in scope — or, with
        ``granularity="line"``, ``callback(code, -line)`` at every line — in every thread, until
        `stop`. Controlled mode's scheduling points."""
        global _active
        self._switches = 0
        self._callback = callback
        self._lines = granularity == "line"
        self._active = True
        _active = self
        if self.backend == "monitoring":
            self._monitoring_on()
        else:
            tracer = self._make_tracer()
            threading.settrace(tracer)
            sys.settrace(tracer)

    def stop(self) -> int:
        """Stop forcing switches; returns how many were forced since `start`."""
        global _active, current_tracer
        if _active is self:
            _active = None
            current_tracer = None
        if self._active:
            if self.backend == "monitoring":
                self._monitoring_off()
            else:
                sys.settrace(None)
                threading.settrace(None)  # type: ignore[arg-type,unused-ignore]
        self._active = False
        self._callback = None
        return self._switches

    def close(self) -> None:
        """Release the monitoring tool id (workers call this on exit)."""
        if self._tool is not None:
            mon = _monitoring
            self._steady = None  # every code object's events off, kept ones too
            self._monitoring_off()
            mon.set_events(self._tool, 0)
            mon.register_callback(self._tool, mon.events.INSTRUCTION, None)
            mon.register_callback(self._tool, mon.events.LINE, None)
            mon.register_callback(self._tool, mon.events.PY_START, None)
            mon.free_tool_id(self._tool)
            self._tool = None

    def hold_off(self) -> None:
        """Force no more switches until the next `start` (the trial's outcome is decided: its threads
        are unwinding a deadlock, and a switch would only keep them longer). The tracing stays on."""
        self._gap = _never
        self._countdown = _NEVER

    def _switch(self) -> None:
        self._countdown = self._gap()
        self._switches += 1
        switch(self._pause)

    # -- sys.monitoring (3.12+) ------------------------------------------------------------------
    #
    # Global events are set once per process and left on: changing them makes the interpreter
    # re-instrument every function it runs afterwards, which would cost each trial far more than
    # the trial itself. Per trial, only the local INSTRUCTION events of in-scope code are toggled.

    def _claim_tool(self) -> int:
        mon = _monitoring
        for tool in (4, 3, 5):
            if mon.get_tool(tool) is None:
                mon.use_tool_id(tool, _TOOL_NAME)
                return tool
        raise RuntimeError("no free sys.monitoring tool id for stress's preemption injection")

    def _monitoring_setup(self) -> int:
        mon = _monitoring
        events = mon.events
        tool = self._claim_tool()
        contains = self.scope.contains_file
        in_scope = self.scope.contains_frame
        instrumented = self._instrumented
        disable = mon.DISABLE
        set_local = mon.set_local_events

        def on_start(code: CodeType, offset: int) -> Any:
            if contains(code.co_filename) or (generated(code.co_filename) and in_scope(sys._getframe(1))):
                instrumented.add(code)
                if self._active:
                    self._set_events(code, self._local_events())
            elif self._active:
                self._note_atomic(code.co_filename, sys._getframe(1).f_back)
            return disable  # each code object is looked at once

        armed = self._armed
        line_runs = self._line_runs
        line_events = events.LINE
        both = events.LINE | events.INSTRUCTION

        def on_instruction(code: CodeType, offset: int) -> None:
            if not self._active:
                return  # events kept on between trials (`_steady`)
            callback = self._callback
            if callback is not None:
                callback(code, offset)
                return
            self._countdown -= 1
            if self._countdown <= 0:
                self._switch()
                if self._countdown > _ARMED_RUN:  # else the next switch may fall in this line
                    # Other threads arm code while this one is switched out: one at a time (a
                    # callback that raises would raise in the code under test).
                    while armed:
                        try:
                            _, other = armed.popitem()
                        except KeyError:
                            break
                        set_local(tool, other, line_events)

        def on_line(code: CodeType, line: int) -> None:
            if not self._active:
                return
            callback = self._callback
            if callback is not None:
                callback(code, -line)
                return
            key = id(code)  # a code object's hash is made afresh from its contents at each lookup
            if key in armed:
                return  # counted instruction by instruction
            counts = line_runs.get(key)
            if counts is None:
                counts = line_runs[key] = _line_runs(code)
            count = counts.get(line, 1)
            if self._countdown > count:
                self._countdown -= count
            else:
                armed[key] = code
                set_local(tool, code, both)

        mon.register_callback(tool, events.PY_START, on_start)
        mon.register_callback(tool, events.INSTRUCTION, on_instruction)
        mon.register_callback(tool, events.LINE, on_line)
        # Code locations an earlier user of this tool id disabled stay disabled; start afresh so
        # PY_START sees every code object again (once per process: a worker sets up once).
        mon.restart_events()
        mon.set_events(tool, events.PY_START)
        return tool

    def _monitoring_on(self) -> None:
        if self._tool is None:
            self._tool = self._monitoring_setup()
        wanted = self._local_events()
        for code in self._instrumented:
            self._set_events(code, wanted)

    def _set_events(self, code: CodeType, events: int) -> None:
        steady = self._steady
        if steady is not None:
            if steady.get(id(code)) == events:
                return
            steady[id(code)] = events
        _monitoring.set_local_events(self._tool, code, events)

    def _local_events(self) -> int:
        """Controlled mode: every instruction (or line); stress mode: every line, each taking its
        run of instructions off the countdown, and instructions only in the code where the
        countdown is about to run out (`_armed`), so the switch still lands on one instruction.
        An INSTRUCTION event per instruction cost 8 µs an iteration of a two-lock transfer, five
        times a LINE event per line."""
        events = _monitoring.events
        if self._callback is not None:
            return int(events.LINE if self._lines else events.INSTRUCTION)
        return int(events.INSTRUCTION if self._steady is not None else events.LINE)

    def _monitoring_off(self) -> None:
        if self._tool is None:
            return
        self._armed.clear()
        if self._steady is not None:
            return  # kept for the next trial; the callbacks see the trial is over
        for code in self._instrumented:
            _monitoring.set_local_events(self._tool, code, 0)

    # -- sys.settrace (3.11) ---------------------------------------------------------------------

    def _make_tracer(self) -> Callable[[FrameType, str, Any], Any]:
        contains = self.scope.contains_frame
        callback = self._callback
        lines = self._lines
        # Per code object: in scope or not (code generated at run time is decided per call, by its
        # caller). Every call of every thread comes through `on_call`: one lookup, not a path test.
        decided = self._decided
        kept = self._kept
        generated_code = self._generated

        def local(frame: FrameType, event: str, arg: Any) -> Any:
            if event == "opcode":
                callback(frame.f_code, frame.f_lasti)  # type: ignore[misc]
            elif event == "line":
                callback(frame.f_code, -frame.f_lineno)  # type: ignore[misc]
            return local

        runs = self._runs

        def counting(code: CodeType) -> Callable[[FrameType, str, Any], Any]:
            """Stress mode's tracer for frames of ``code``: a call per line, not per instruction.
            A line event takes the line's run of instructions off the countdown at once; only
            the line the countdown ends in is traced instruction by instruction, so the switch
            still lands on one instruction (between a read and its write, say)."""
            lengths = _Runs(code)

            def tracer(frame: FrameType, event: str, arg: Any) -> Any:
                if event == "line":
                    count = lengths[frame.f_lasti]
                    if self._countdown > count:
                        self._countdown -= count
                        frame.f_trace_opcodes = False
                    else:
                        frame.f_trace_opcodes = True  # the line's first instruction comes next
                elif event == "opcode":
                    self._countdown -= 1
                    if self._countdown <= 0:
                        self._switch()
                return tracer

            runs[id(code)] = tracer  # the code object is held by `kept` or by `generated_code`
            return tracer

        def on_call(frame: FrameType, event: str, arg: Any) -> Any:
            code = frame.f_code
            inside = decided.get(id(code))
            if inside is None:
                inside = contains(frame)
                if code in generated_code or generated(code.co_filename):
                    generated_code.add(code)
                else:
                    kept.append(code)
                    decided[id(code)] = inside
                    if not inside:
                        self._note_atomic(code.co_filename, frame.f_back)
            if not inside:
                return None
            if callback is None:
                frame.f_trace_opcodes = False
                return runs.get(id(code)) or counting(code)
            frame.f_trace_opcodes = not lines
            frame.f_trace_lines = lines
            return local

        return on_call

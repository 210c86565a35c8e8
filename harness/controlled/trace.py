"""An interleaving as people read it: one column per thread, one row per source line run.

A controlled schedule executes as a sequence of steps, each by one thread at one instruction. The
trace merges consecutive steps of the same thread on the same line into one row, keeps the source
text of the line, and marks every row where the running thread changed — the context switches that
make the failure happen. Rows are plain data, stored in ``results.jsonl`` and drawn by the terminal
and HTML reports alike.
"""

from __future__ import annotations

import dis
import linecache
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from types import CodeType
from typing import Any

from harness.controlled.scheduler import Step

__all__ = ["MAX_ROWS", "Row", "Trace", "build"]

#: Rows kept in a stored trace; a longer interleaving keeps its first and last rows.
MAX_ROWS = 400


_EFFECTS = {
    "LOAD_ATTR": "read .{}",
    "STORE_ATTR": "write .{}",
    "DELETE_ATTR": "delete .{}",
    "BINARY_SUBSCR": "read {}",
    "STORE_SUBSCR": "write {}",
    "DELETE_SUBSCR": "delete {}",
    "STORE_GLOBAL": "write {}",
    "STORE_DEREF": "write {}",
    "DELETE_GLOBAL": "delete {}",
}


@dataclass(frozen=True)
class Row:
    """Consecutive steps of one thread on one line.

    Attributes:
        thread: The thread's name.
        file: The file's base name.
        line: The line number (0 when unknown).
        code: The line's source text, stripped.
        steps: How many scheduling steps it covers.
        switch: The running thread changed at this row.
        ops: The instructions those steps ran (``LOAD_ATTR value``, ``STORE_ATTR value``): the
            read and the write of one line can fall on either side of a switch.
    """

    thread: str
    file: str
    line: int
    code: str
    steps: int
    switch: bool
    ops: tuple[str, ...] = ()

    def effects(self) -> tuple[str, ...]:
        """What the row's steps did to shared state, in words: ``read .value``, ``write .value``,
        ``took lock_a`` (asked for and had), ``lock_a.acquire()`` (asked for, not had: a switch
        came first, or the thread waits); loads of names and calls are left out: they are how,
        not what."""
        out: list[str] = []
        for op in self.ops:
            name, _, argument = op.partition(" ")
            said = _EFFECTS.get(name)
            if op.endswith(".acquire()") and f"took {op[: -len('.acquire()')]}" in self.ops:
                said = None  # asked for and had in the same row: ``took lock_a`` says both
            elif op.endswith("()"):
                said = op  # ``lock_a.acquire()`` alone: asked for, not had (yet)
            elif name == "took":
                said = op
            elif said is not None:
                said = said.format(argument or "an item")  # a subscript too long to show
            if said and said not in out:
                out.append(said)
        return tuple(out)

    def to_list(self) -> list[Any]:
        return [self.thread, self.file, self.line, self.code, self.steps, int(self.switch), list(self.ops)]

    @classmethod
    def from_list(cls, data: Sequence[Any]) -> Row:
        thread, file, line, code, steps, switch, *rest = data
        ops = tuple(str(op) for op in rest[0]) if rest else ()
        return cls(str(thread), str(file), int(line), str(code), int(steps), bool(switch), ops)


@dataclass(frozen=True)
class Trace:
    """The rows of one schedule, the threads in order of first appearance, and the switch count.

    ``elided`` rows were dropped from the middle of a very long trace."""

    threads: tuple[str, ...]
    rows: tuple[Row, ...]
    switches: int
    elided: int = 0

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "threads": list(self.threads),
            "rows": [row.to_list() for row in self.rows],
            "switches": self.switches,
        }
        if self.elided:
            out["elided"] = self.elided
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Trace | None:
        if not data:
            return None
        return cls(
            threads=tuple(data.get("threads", ())),
            rows=tuple(Row.from_list(row) for row in data.get("rows", ())),
            switches=int(data.get("switches", 0)),
            elided=int(data.get("elided", 0)),
        )


def build(steps: Iterable[Step], *, limit: int = MAX_ROWS) -> Trace:
    """Merge ``steps`` into rows (see the module docstring)."""
    rows: list[Row] = []
    threads: list[str] = []
    switches = 0
    last_thread: str | None = None
    lines: dict[tuple[CodeType, int], int] = {}
    for thread, code, offset, what in steps:
        if thread not in threads:
            threads.append(thread)
        line = _line(code, offset, lines)
        file = _base(code.co_filename) if code is not None else ""
        op = what or _op(code, offset)
        switch = last_thread is not None and thread != last_thread
        switches += switch
        last_thread = thread
        last = rows[-1] if rows else None
        if last is not None and not switch and (last.thread, last.file, last.line) == (thread, file, line):
            ops = last.ops if not op or op in last.ops else (*last.ops, op)
            rows[-1] = Row(last.thread, last.file, last.line, last.code, last.steps + 1, last.switch, ops)
            continue
        text = _source(code.co_filename, line) if code is not None and line else ""
        rows.append(Row(thread, file, line, text, 1, switch, (op,) if op else ()))
    elided = 0
    if len(rows) > limit:
        head = limit // 2
        elided = len(rows) - limit
        rows = rows[:head] + rows[-(limit - head) :]
    return Trace(tuple(threads), tuple(rows), switches, elided)


def _source(file: str, line: int) -> str:
    """The line's code, without a trailing comment (the trace has little room)."""
    text = linecache.getline(file, line).strip()
    code, hash_, _ = text.partition("  #")
    return code.rstrip() if hash_ and "'" not in code and '"' not in code else text


_ops: dict[CodeType, dict[int, str]] = {}


def _op(code: CodeType | None, offset: int) -> str:
    """``LOAD_ATTR value`` for the instruction at ``offset`` ("" for a line or a primitive)."""
    if code is None or offset < 0:
        return ""
    table = _ops.get(code)
    if table is None:
        table = {i.offset: _describe(i, code.co_filename) for i in dis.get_instructions(code)}
        _ops[code] = table
    return table.get(offset, "")


#: Longest subscript shown in a note (``box[0]``, ``self.slots[index]``); a longer one is "an item".
_SUBSCRIPT_SHOWN = 24


def _describe(instruction: dis.Instruction, file: str) -> str:
    if instruction.opcode in dis.hasjrel or instruction.opcode in dis.hasjabs:
        return instruction.opname  # where it jumps says nothing about the race
    if instruction.opname.endswith("_SUBSCR"):
        return f"{instruction.opname} {_subscript(instruction, file)}".strip()
    argument = instruction.argrepr.replace("NULL|self + ", "").replace("NULL + ", "").replace(" + NULL|self", "")
    return f"{instruction.opname} {argument}".strip()


def _subscript(instruction: dis.Instruction, file: str) -> str:
    """The source of the item a subscript instruction reads or writes (``box[0]``): its span in
    the line, which CPython 3.11+ records per instruction (columns in UTF-8 bytes); "" if unknown
    or too long to show."""
    where = instruction.positions
    if where is None or where.lineno is None or where.lineno != where.end_lineno:
        return ""
    if where.col_offset is None or where.end_col_offset is None:
        return ""
    text = linecache.getline(file, where.lineno).encode()[where.col_offset : where.end_col_offset]
    shown = text.decode(errors="replace").strip()
    return shown if 0 < len(shown) <= _SUBSCRIPT_SHOWN and "\n" not in shown else ""


def _base(file: str) -> str:
    return os.path.basename(file) if file else ""


def _line(code: CodeType | None, offset: int, cache: dict[tuple[CodeType, int], int]) -> int:
    if code is None:
        return 0
    if offset < 0:
        return -offset
    found = cache.get((code, offset))
    if found is None:
        found = next(
            (line for start, end, line in code.co_lines() if start <= offset < end and line is not None),
            code.co_firstlineno,
        )
        cache[(code, offset)] = found
    return found

"""Reading ``faulthandler`` dumps.

A dump lists every thread with its frames, innermost first. For a person, the interesting frame of
each thread is the innermost one in the code under test (the line that is blocked), plus the call it
is waiting in when that is somewhere else (``threading.py``'s ``wait``, say). `blocked_at` extracts
exactly that, one line per thread, threads of the code under test first.

A trial with process actors dumps every process into the same file, each after a header the engine
writes (``--- process 4242 ---``); each process actor announced at its start which actor it is
(``stress: process 4242 is receiver``), so its threads' lines are labelled with that name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from harness.scope import HARNESS_DIR, Scope
from harness.text import short_path

__all__ = ["Frame", "ThreadStack", "blocked_at", "parse_dump"]

#: The line a worker writes at a trial's start, before any dump: the threads running before it.
BEFORE = "stress: threads from before the trial: "
#: How a coroutine trial's loop begins writing its tasks' stacks (`harness.detect.aio`): each
#: ``Task name (most recent call first), waiting ...:`` and its frames, as a thread's.
TASKS = "stress: tasks of the event loop "

_THREAD = re.compile(r"^(Current thread|Thread) (0x[0-9a-fA-F]+)")
_HEADER = re.compile(r"^--- (process|worker) (\d+) ---$")
_ANNOUNCE = re.compile(r"^stress: process (\d+) is (.+)$")
_TASK = re.compile(r"^Task (.+?) \(most recent call first\)")
_FRAME = re.compile(r'^\s+File "(?P<file>.*)", line (?P<line>\d+|\?\?\?) in (?P<function>.*)$')


@dataclass(frozen=True)
class Frame:
    file: str
    line: int
    function: str

    def where(self) -> str:
        return f"{short_path(self.file)}:{self.line} in {self.function}"


@dataclass(frozen=True)
class ThreadStack:
    ident: str
    current: bool
    frames: tuple[Frame, ...]
    #: The process actor the thread belongs to ("" for the worker's own threads).
    process: str = ""
    #: Whether it was running before the trial began (a module's server, not the trial's).
    before: bool = False
    #: For a task of a coroutine trial's event loop, its name (its frames are its chain of awaits).
    task: str = ""


def parse_dump(text: str) -> list[ThreadStack]:
    """The threads of a dump, in the order faulthandler wrote them, then the tasks of the last
    block a coroutine trial's loop wrote (``TASKS``: what they were doing then)."""
    threads = _parse_threads(text)
    tasks: list[ThreadStack] = []
    name: str | None = None
    for line in text.splitlines():
        if line.startswith(TASKS):
            tasks, name = [], None  # a later block says more of the same tasks
            continue
        if line.startswith("---") or _THREAD.match(line):
            name = None
            continue
        task = _TASK.match(line)
        if task:
            name = task.group(1)
            tasks.append(ThreadStack(f"task {name}", False, (), task=name))
            continue
        frame = _FRAME.match(line)
        if frame and name is not None:
            last = tasks[-1]
            tasks[-1] = ThreadStack(last.ident, False, (*last.frames, _frame(frame)), task=name)
    return threads + tasks


def _frame(match: re.Match[str]) -> Frame:
    number = match.group("line")
    return Frame(match.group("file"), int(number) if number.isdigit() else 0, match.group("function"))


def _parse_threads(text: str) -> list[ThreadStack]:
    names: dict[str, str] = {}
    before: set[str] = set()
    for line in text.splitlines():
        announced = _ANNOUNCE.match(line)
        if announced:
            names[announced.group(1)] = announced.group(2)
        if line.startswith(BEFORE):
            before.update(ident.strip().lower() for ident in line[len(BEFORE) :].split(","))
    threads: list[ThreadStack] = []
    ident: str | None = None
    current = False
    process = ""
    frames: list[Frame] = []
    for line in text.splitlines():
        header = _HEADER.match(line)
        head = _THREAD.match(line)
        if (header or head) and ident is not None:
            threads.append(ThreadStack(ident, current, tuple(frames), process, not process and ident.lower() in before))
            ident = None
        if header:
            kind, pid = header.groups()
            process = "" if kind == "worker" else names.get(pid, f"process {pid}")
            continue
        if head:
            ident, current, frames = head.group(2), head.group(1) == "Current thread", []
            continue
        if (_TASK.match(line) or line.startswith(TASKS)) and ident is not None:
            threads.append(ThreadStack(ident, current, tuple(frames), process, not process and ident.lower() in before))
            ident = None  # a task's frames are not the thread's before them
            continue
        frame = _FRAME.match(line)
        if frame and ident is not None:
            frames.append(_frame(frame))
    if ident is not None:
        threads.append(ThreadStack(ident, current, tuple(frames), process, not process and ident.lower() in before))
    return threads


def blocked_at(text: str, scope: Scope) -> tuple[str, ...]:
    """One line per thread that is inside the code under test: where it is, and what it waits in."""
    lines: list[tuple[tuple[bool, bool], str]] = []
    for thread in parse_dump(text):
        inside = next((f for f in thread.frames if scope.contains_file(f.file)), None)
        if inside is None:
            continue
        line = inside.where()
        # stress's own frames (a forced switch, an instrumented primitive) say nothing about the code
        innermost = next((f for f in thread.frames if not f.file.startswith(HARNESS_DIR)), inside)
        if innermost is not inside:
            line += f" (waiting in {innermost.function}, {Path(innermost.file).name}:{innermost.line})"
        if thread.process:
            line = f"{thread.process}: {line}"
        if thread.before:
            line += " (a thread from before the trial)"
        if thread.task:
            line = f"task {thread.task}: {line}"
        lines.append(((thread.before, not thread.process and thread.current and not thread.task), line))
    # Process actors and actor threads first; then the thread that ran the variant body (the
    # worker's faulthandler "current" thread); threads from before the trial last.
    return tuple(line for _, line in sorted(lines, key=lambda item: item[0]))

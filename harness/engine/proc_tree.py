"""The processes of a worker, read from ``/proc``, and how to take them down.

Each worker leads its own process group, so every process a trial starts — actor processes,
``multiprocessing.Pool`` workers, the children of a forkserver — belongs to that group even after
its parent died. Two of them are not the trial's: multiprocessing's resource tracker and forkserver
are helpers that clean up after the others (named semaphores, shared memory) and exit on their own
once the worker is gone; killing them would leak what they track.

Linux only: other platforms get empty lists, and the harness falls back to killing the worker.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

__all__ = [
    "ProcessInfo",
    "alive",
    "children",
    "descendants",
    "group_members",
    "is_helper",
    "kill_all",
    "members_of",
    "signal_and_wait",
]

_HELPERS = (b"multiprocessing.resource_tracker", b"multiprocessing.forkserver", b"multiprocessing.semaphore_tracker")


@dataclass(frozen=True)
class ProcessInfo:
    pid: int
    ppid: int
    pgid: int
    state: str


def _stat(pid: int) -> ProcessInfo | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            stat = file.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2 :].split()
    return ProcessInfo(pid, int(fields[1]), int(fields[2]), fields[0].decode())


def _all() -> Iterable[ProcessInfo]:
    try:
        entries = os.listdir("/proc")
    except OSError:
        return
    for entry in entries:
        if entry.isdigit():
            info = _stat(int(entry))
            if info is not None:
                yield info


def group_members(pgid: int) -> list[ProcessInfo]:
    """Every live (non-zombie) process of process group ``pgid``."""
    return members_of({pgid})


def members_of(groups: set[int]) -> list[ProcessInfo]:
    """Every live (non-zombie) process of any of the process ``groups``. One pass over every process
    of the machine (tens of milliseconds on a busy one): for sweeps, never on a trial's hot path."""
    return [p for p in _all() if p.pgid in groups and p.state != "Z"]


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (cheap: the kernel's list, not a scan of /proc)."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/children", encoding="ascii") as file:
                found.extend(int(child) for child in file.read().split())
    return found


def descendants(pid: int) -> list[int]:
    """Children, grandchildren, ... of ``pid``, deepest first. Follows the kernel's own lists of
    each thread's children, so it costs microseconds, not a scan of every process of the machine.
    A process that left the tree (its parent died before it) is not found: see `members_of`."""
    found: list[int] = []
    seen = {pid}

    def walk(parent: int) -> None:
        for child in children(parent):
            if child not in seen:
                seen.add(child)
                walk(child)
                found.append(child)

    walk(pid)
    return found


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as file:
            return file.read()
    except OSError:
        return b""


def is_helper(pid: int) -> bool:
    """multiprocessing's resource tracker or forkserver (not one of the trial's processes). The
    forkserver's children share its command line, so a helper's child is not a helper."""
    if not any(helper in _cmdline(pid) for helper in _HELPERS):
        return False
    info = _stat(pid)
    return info is None or not any(helper in _cmdline(info.ppid) for helper in _HELPERS)


def alive(pid: int) -> bool:
    info = _stat(pid)
    return info is not None and info.state != "Z"


def signal_and_wait(
    pid: int,
    sig: int,
    *,
    grace: float,
    clock: Callable[[], float] = time.monotonic,
    before: Callable[[int], None] | None = None,
) -> bool:
    """Send ``sig`` to ``pid`` and wait (polling /proc) until it is dead or a zombie. Returns
    whether it died within ``grace``. ``before(pid)`` runs just before the signal."""
    if before is not None:
        before(pid)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)
    deadline = clock() + grace
    while clock() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.001)
    return not alive(pid)


def kill_all(pids: Iterable[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
